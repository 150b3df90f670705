//! What a request must hold, checked the same way on every surface: the WebSocket protocol
//! (`requests.rs`) and the server API (`server_api.rs`, for REST and gRPC). Pure functions of
//! their input; IDs are checked where they are parsed (`parley_core::ids`), limits are named in
//! `parley_core::limits`.

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::ids::UserId;
use parley_core::limits::MAX_HISTORY_PAGE;
use parley_core::limits::MAX_INVITATION_TEXT_BYTES;
use parley_core::limits::MAX_MESSAGE_BYTES;
use parley_proto::v1;

/// History page size when the request names none.
pub(crate) const DEFAULT_HISTORY_PAGE: usize = 20;
/// Longest ban or mute the server API takes.
pub(crate) const MAX_RESTRICTION_SECONDS: u64 = 365 * 24 * 3600;
/// Longest reason of a ban, mute or kick, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 256;
/// Event log page size when the request names none, and the most a page may hold.
pub(crate) const DEFAULT_EVENT_PAGE: usize = 100;
pub(crate) const MAX_EVENT_PAGE: usize = 1000;

/// A message to send: text or raw content, not empty, at most 32 KB with its description.
pub(crate) fn message(message: Option<v1::MessageBody>) -> Result<v1::MessageBody, Error> {
    let invalid = |why: &str| Error::new(ErrorCode::InvalidMessage, why);
    let message = message.ok_or_else(|| invalid("message is missing"))?;
    let content_len = match &message.content {
        None => return Err(invalid("message has neither text nor raw content")),
        Some(v1::message_body::Content::Text(text)) if text.is_empty() => {
            return Err(invalid("text message is empty"));
        }
        Some(v1::message_body::Content::Raw(raw)) if raw.is_empty() => {
            return Err(invalid("raw message is empty"));
        }
        Some(v1::message_body::Content::Text(text)) => text.len(),
        Some(v1::message_body::Content::Raw(raw)) => raw.len(),
    };
    if content_len + message.description.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(&format!(
            "message is larger than {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(message)
}

/// An invitation's content or response.
pub(crate) fn invitation_text(what: &str, text: &str) -> Result<(), Error> {
    if text.len() > MAX_INVITATION_TEXT_BYTES {
        Err(Error::new(
            ErrorCode::SizeOverflow,
            format!("invitation {what} is larger than {MAX_INVITATION_TEXT_BYTES} bytes"),
        ))
    } else {
        Ok(())
    }
}

/// Between 1 and `max` user IDs, each valid.
pub(crate) fn peer_ids(raw: &[String], max: usize) -> Result<Vec<UserId>, Error> {
    if raw.is_empty() || raw.len() > max {
        return Err(Error::invalid_argument(format!(
            "between 1 and {max} peer ids are needed"
        )));
    }
    raw.iter().map(|id| UserId::parse(id)).collect()
}

/// A history time range, ms since the epoch (0: open): whether it holds nothing at all (it ends
/// where, or before, it starts). Negative times are refused.
pub(crate) fn time_range_is_empty(start: i64, end: i64) -> Result<bool, Error> {
    if start < 0 || end < 0 {
        return Err(Error::invalid_argument(
            "times are ms since the epoch, not negative",
        ));
    }
    Ok(end > 0 && end <= start)
}

/// A page size: the default for 0, at most `max`.
pub(crate) fn page_limit(requested: usize, default: usize, max: usize) -> Result<usize, Error> {
    match requested {
        0 => Ok(default),
        limit if limit <= max => Ok(limit),
        _ => Err(Error::invalid_argument(format!(
            "limit must be at most {max}"
        ))),
    }
}

/// A history page size (0: the default).
pub(crate) fn history_limit(requested: usize) -> Result<usize, Error> {
    page_limit(requested, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE)
}

/// A paging cursor, `timestamp:messageId` of the last message of the previous page; empty: the
/// first page.
pub(crate) fn cursor(cursor: &str) -> Result<Option<(i64, u64)>, Error> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid_argument("cursor is not one this server gave out");
    let (ts, id) = cursor.split_once(':').ok_or_else(invalid)?;
    Ok(Some((
        ts.parse().map_err(|_| invalid())?,
        id.parse().map_err(|_| invalid())?,
    )))
}

/// The cursor of the page after `page` (empty when `page` was the last: fewer than `limit`).
pub(crate) fn next_cursor(page: &[v1::HistoryMessage], limit: usize) -> String {
    match page.last() {
        Some(last) if page.len() == limit => {
            format!("{}:{}", last.server_received_ts, last.message_id)
        }
        _ => String::new(),
    }
}

/// A ban's or mute's length.
pub(crate) fn restriction_seconds(seconds: u64) -> Result<u64, Error> {
    if (1..=MAX_RESTRICTION_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(Error::invalid_argument(format!(
            "durationSeconds must be 1 to {MAX_RESTRICTION_SECONDS}"
        )))
    }
}

/// The reason of a ban, mute or kick.
pub(crate) fn reason(reason: &str) -> Result<(), Error> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::new(
            ErrorCode::SizeOverflow,
            format!("a reason is at most {MAX_REASON_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Option<v1::MessageBody> {
        Some(v1::MessageBody {
            content: Some(v1::message_body::Content::Text(text.into())),
            description: String::new(),
        })
    }

    #[test]
    fn messages_up_to_32_kb_pass_and_larger_ones_do_not() {
        assert!(message(text(&"x".repeat(MAX_MESSAGE_BYTES))).is_ok());
        let too_big = message(text(&"x".repeat(MAX_MESSAGE_BYTES + 1))).unwrap_err();
        assert_eq!(too_big.code, ErrorCode::InvalidMessage);
        assert_eq!(
            message(text("")).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(message(None).unwrap_err().code, ErrorCode::InvalidMessage);
        let raw_with_description = Some(v1::MessageBody {
            content: Some(v1::message_body::Content::Raw(vec![1; 32_000].into())),
            description: "d".repeat(769),
        });
        assert!(message(raw_with_description).is_err(), "description counts");
    }

    #[test]
    fn invitation_texts_and_reasons_have_their_limits() {
        assert!(invitation_text("content", &"x".repeat(MAX_INVITATION_TEXT_BYTES)).is_ok());
        let over = invitation_text("content", &"x".repeat(MAX_INVITATION_TEXT_BYTES + 1));
        assert_eq!(over.unwrap_err().code, ErrorCode::SizeOverflow);
        assert!(reason(&"r".repeat(MAX_REASON_BYTES)).is_ok());
        assert_eq!(
            reason(&"r".repeat(MAX_REASON_BYTES + 1)).unwrap_err().code,
            ErrorCode::SizeOverflow
        );
        assert!(restriction_seconds(0).is_err());
        assert_eq!(restriction_seconds(1), Ok(1));
        assert_eq!(
            restriction_seconds(MAX_RESTRICTION_SECONDS),
            Ok(MAX_RESTRICTION_SECONDS)
        );
        assert!(restriction_seconds(MAX_RESTRICTION_SECONDS + 1).is_err());
    }

    #[test]
    fn peer_id_lists_are_between_one_and_the_most() {
        let ids = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        assert!(peer_ids(&ids(0), 3).is_err());
        assert_eq!(peer_ids(&ids(3), 3).map(|ids| ids.len()), Ok(3));
        assert!(peer_ids(&ids(4), 3).is_err());
        let too_long = "u".repeat(65);
        assert_eq!(
            peer_ids(&[too_long], 3).unwrap_err().code,
            ErrorCode::InvalidUserid
        );
    }

    #[test]
    fn pages_and_ranges() {
        assert_eq!(history_limit(0), Ok(DEFAULT_HISTORY_PAGE));
        assert_eq!(history_limit(MAX_HISTORY_PAGE), Ok(MAX_HISTORY_PAGE));
        assert!(history_limit(MAX_HISTORY_PAGE + 1).is_err());
        assert_eq!(time_range_is_empty(0, 0), Ok(false));
        assert_eq!(time_range_is_empty(10, 20), Ok(false));
        assert_eq!(time_range_is_empty(20, 20), Ok(true));
        assert!(time_range_is_empty(-1, 0).is_err());
    }

    #[test]
    fn cursors_are_read_back_as_they_were_given() {
        let page = vec![v1::HistoryMessage {
            message_id: 42,
            server_received_ts: 1700,
            ..Default::default()
        }];
        let next = next_cursor(&page, 1);
        assert_eq!(cursor(&next), Ok(Some((1700, 42))));
        assert_eq!(next_cursor(&page, 2), "", "a short page is the last");
        assert_eq!(cursor(""), Ok(None));
        for bad in ["x", "1:", ":2", "a:b"] {
            assert!(cursor(bad).is_err(), "{bad}");
        }
    }
}
