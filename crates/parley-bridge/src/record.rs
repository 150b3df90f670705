//! Records on a region's topic: what owners publish and what a receiving region makes of them.
//! Pure: no Kafka here.

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::UserId;
use parley_owner::ChannelKey;
use parley_owner::ChannelSend;
use parley_owner::RegionOrigin;
use parley_owner::RegionRecord;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::region_record::Record;
use prost::Message;

/// The topic `region` publishes on.
pub fn topic(region: &str) -> String {
    format!("parley-region-{region}")
}

/// The key (`appId/channelId`: one channel, one partition) and payload of `record`, published
/// by `region`.
pub(crate) fn encode(region: &str, record: &RegionRecord) -> (String, Vec<u8>) {
    let (channel, body) = match record {
        RegionRecord::Message {
            channel,
            from,
            message,
            enable_history,
            message_id,
            server_received_ts,
        } => (
            channel,
            Record::Message(wire::RegionMessage {
                from: from.to_string(),
                message: Some(message.clone()),
                enable_history: *enable_history,
                message_id: message_id.0,
                server_received_ts: *server_received_ts,
            }),
        ),
        RegionRecord::Interest {
            channel,
            interested,
            fresh,
        } => (
            channel,
            Record::Interest(wire::RegionInterest {
                interested: *interested,
                fresh: *fresh,
            }),
        ),
    };
    let key = format!("{}/{}", channel.app, channel.channel);
    let payload = wire::RegionRecord {
        region: region.to_owned(),
        channel: Some(wire::ChannelKey {
            app_id: channel.app.to_string(),
            channel_id: channel.channel.to_string(),
        }),
        record: Some(body),
    }
    .encode_to_vec();
    (key, payload)
}

/// What a record from another region asks of this one's owners.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Deliver a message to the channel's members here.
    Deliver(ChannelSend),
    Interest {
        channel: ChannelKey,
        region: String,
        interested: bool,
        fresh: bool,
    },
}

/// Reads a record; a malformed one is named, to be logged and skipped.
pub(crate) fn decode(payload: &[u8]) -> Result<Action, String> {
    let record = wire::RegionRecord::decode(payload).map_err(|error| error.to_string())?;
    let key = record.channel.ok_or("no channel")?;
    let channel = ChannelKey {
        app: AppId::parse(&key.app_id).map_err(|error| error.message)?,
        channel: ChannelId::parse(&key.channel_id).map_err(|error| error.message)?,
    };
    match record.record.ok_or("no record")? {
        Record::Message(message) => Ok(Action::Deliver(ChannelSend {
            channel,
            from: UserId::parse(&message.from).map_err(|error| error.message)?,
            session: None,
            message: message.message.ok_or("no message body")?,
            enable_history: message.enable_history,
            origin: Some(RegionOrigin {
                region: record.region,
                message_id: MessageId(message.message_id),
                server_received_ts: message.server_received_ts,
            }),
        })),
        Record::Interest(interest) => Ok(Action::Interest {
            channel,
            region: record.region,
            interested: interest.interested,
            fresh: interest.fresh,
        }),
    }
}

/// Whether an owner's refusal may pass (the owner is moving, storage is down): the record is
/// tried again rather than skipped.
pub(crate) fn retryable(error: &Error) -> bool {
    matches!(
        error.code,
        ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Internal
    )
}

#[cfg(test)]
mod tests {
    use parley_proto::v1;

    use super::*;

    fn channel() -> ChannelKey {
        ChannelKey {
            app: AppId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            channel: ChannelId::parse("room").unwrap(),
        }
    }

    #[test]
    fn a_message_crosses_with_its_id_time_and_origin() {
        let body = v1::MessageBody {
            content: Some(v1::message_body::Content::Text("hi".into())),
            ..v1::MessageBody::default()
        };
        let (key, payload) = encode(
            "eu",
            &RegionRecord::Message {
                channel: channel(),
                from: UserId::parse("alice").unwrap(),
                message: body.clone(),
                enable_history: true,
                message_id: MessageId(42),
                server_received_ts: 1_700_000_000_000,
            },
        );
        assert_eq!(key, "0123456789abcdef0123456789abcdef/room");
        assert_eq!(
            decode(&payload).unwrap(),
            Action::Deliver(ChannelSend {
                channel: channel(),
                from: UserId::parse("alice").unwrap(),
                session: None,
                message: body,
                enable_history: true,
                origin: Some(RegionOrigin {
                    region: "eu".into(),
                    message_id: MessageId(42),
                    server_received_ts: 1_700_000_000_000,
                }),
            })
        );
    }

    #[test]
    fn interest_names_the_region_it_came_from() {
        let (_, payload) = encode(
            "us",
            &RegionRecord::Interest {
                channel: channel(),
                interested: true,
                fresh: true,
            },
        );
        assert_eq!(
            decode(&payload).unwrap(),
            Action::Interest {
                channel: channel(),
                region: "us".into(),
                interested: true,
                fresh: true,
            }
        );
    }

    #[test]
    fn malformed_records_are_named_not_delivered() {
        assert!(decode(b"\xff\xff\xff").is_err());
        let no_channel = wire::RegionRecord {
            region: "us".into(),
            channel: None,
            record: Some(Record::Interest(wire::RegionInterest::default())),
        };
        assert!(decode(&no_channel.encode_to_vec()).is_err());
        let bad_app = wire::RegionRecord {
            region: "us".into(),
            channel: Some(wire::ChannelKey {
                app_id: "nope".into(),
                channel_id: "room".into(),
            }),
            record: Some(Record::Interest(wire::RegionInterest::default())),
        };
        assert!(decode(&bad_app.encode_to_vec()).is_err());
    }

    #[test]
    fn only_passing_refusals_are_retried() {
        assert!(retryable(&Error::new(ErrorCode::Unavailable, "moving")));
        assert!(!retryable(&Error::new(ErrorCode::InvalidArgument, "bad")));
    }
}
