//! The server API's operations, whatever the transport: authentication, the rules each request
//! must meet, and the calls to the owners. `rest.rs` (JSON over HTTP) and `grpc.rs` only decode
//! requests and encode answers around these.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::UserId;
use parley_core::time::unix_ms;
use parley_owner::ChannelKey;
use parley_owner::ChannelSend;
use parley_owner::ChannelSent;
use parley_owner::Moderation;
use parley_owner::PeerOutcome;
use parley_owner::PeerSend;
use parley_owner::UserKey;
use parley_owner::ops;
use parley_proto::v1;
use parley_store::Conversation;
use parley_store::EventStream;
use parley_store::HistoryQuery;
use parley_store::Order;
use parley_store::Restriction;
use parley_store::Scope;
use parley_store::StoredEvent;
use tracing::Instrument;

use crate::edge::Edge;
use crate::validate;

/// What kind of failure an error code is; each transport names it its own way (an HTTP status,
/// a gRPC code).
pub(crate) enum Failure {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadRequest,
    /// The request conflicts with the state of things (not joined, muted…).
    Conflict,
    TooOften,
    Timeout,
    Unavailable,
    Internal,
}

pub(crate) fn failure(code: ErrorCode) -> Failure {
    match code {
        ErrorCode::Unauthorized | ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
            Failure::Unauthenticated
        }
        ErrorCode::Forbidden | ErrorCode::Banned => Failure::Forbidden,
        ErrorCode::InvalidAppId => Failure::NotFound,
        ErrorCode::TooOften => Failure::TooOften,
        ErrorCode::Timeout => Failure::Timeout,
        ErrorCode::Unavailable => Failure::Unavailable,
        ErrorCode::Internal | ErrorCode::Unspecified => Failure::Internal,
        ErrorCode::NotJoined
        | ErrorCode::AlreadyJoined
        | ErrorCode::Muted
        | ErrorCode::AlreadyLoggedIn
        | ErrorCode::NotLoggedIn
        | ErrorCode::InvitationNotStarted
        | ErrorCode::InvitationAlreadyEnded
        | ErrorCode::InvitationAlreadyAccepted
        | ErrorCode::InvitationAlreadySent => Failure::Conflict,
        ErrorCode::InvalidArgument
        | ErrorCode::InvalidUserid
        | ErrorCode::InvalidChannelId
        | ErrorCode::InvalidMessage
        | ErrorCode::ExceedLimit
        | ErrorCode::SizeOverflow => Failure::BadRequest,
    }
}

/// Who is calling.
pub(crate) enum Caller {
    /// A backend with a customer key: may act as any uid.
    Backend,
    /// A user with its token: may act only as itself.
    User(UserId),
}

impl Caller {
    /// Moderation, channel history and the event logs are for the app's backend only.
    pub(crate) fn must_be_backend(&self, what: &str) -> Result<(), Error> {
        match self {
            Caller::Backend => Ok(()),
            Caller::User(_) => Err(Error::new(
                ErrorCode::Forbidden,
                format!("{what} needs a customer key"),
            )),
        }
    }

    pub(crate) fn may_act_as(&self, uid: &UserId) -> Result<(), Error> {
        match self {
            Caller::User(me) if me != uid => Err(Error::new(
                ErrorCode::Forbidden,
                "a user token may act only as its own uid",
            )),
            _ => Ok(()),
        }
    }
}

/// An authorized request: the app it is for and who makes it.
pub(crate) struct Call {
    pub app: Arc<AppConfig>,
    pub caller: Caller,
}

impl Call {
    fn app_id(&self) -> AppId {
        self.app.app_id.clone()
    }

    fn user(&self, uid: UserId) -> UserKey {
        UserKey {
            app: self.app_id(),
            uid,
        }
    }

    fn channel(&self, channel: ChannelId) -> ChannelKey {
        ChannelKey {
            app: self.app_id(),
            channel,
        }
    }
}

/// Checks the caller's credentials (read with `header`, by lowercase name) against `app_id`, and
/// the app's request rate.
pub(crate) fn authorize<'a>(
    edge: &Edge,
    app_id: &str,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<Call, Error> {
    let unauthorized = |why: &str| Error::new(ErrorCode::Unauthorized, why);
    let first = |names: &[&str]| names.iter().find_map(|name| header(name));
    let app = edge.apps().get(app_id)?;
    let caller = if let Some(token) = first(&["x-parley-token", "x-agora-token"]) {
        let uid = first(&["x-parley-uid", "x-agora-uid"])
            .ok_or_else(|| unauthorized("a user token needs its uid in x-parley-uid"))?;
        let uid = UserId::parse(uid)?;
        let now_secs = parley_core::time::unix_secs();
        app.authenticate(uid.as_str(), token, now_secs)?;
        Caller::User(uid)
    } else {
        let basic = first(&["authorization"])
            .and_then(|value| value.strip_prefix("Basic "))
            .ok_or_else(|| unauthorized("send HTTP Basic credentials or a user token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
        let (key, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
        if !app.accepts_customer(key, secret) {
            let elsewhere = edge
                .apps()
                .all()
                .iter()
                .any(|other| other.accepts_customer(key, secret));
            return Err(if elsewhere {
                Error::new(
                    ErrorCode::Forbidden,
                    "this customer key is not for this app",
                )
            } else {
                unauthorized("unknown customer key or wrong secret")
            });
        }
        Caller::Backend
    };
    if !edge.allow_api_call(&app.app_id, app.limits.server_api_rate, Instant::now()) {
        return Err(Error::too_often("server API request"));
    }
    Ok(Call { app, caller })
}

/// A peer message to send, as a request states it.
pub(crate) struct PeerMessage {
    pub from: String,
    pub to: String,
    pub message: Option<v1::MessageBody>,
    pub enable_offline: bool,
    pub enable_history: bool,
    pub wait_for_ack: bool,
}

/// A sent peer message: its id, time, and `SENT` or how it ended.
pub(crate) struct PeerSent {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    pub result: &'static str,
}

pub(crate) async fn send_peer(
    edge: &Edge,
    call: &Call,
    send: PeerMessage,
) -> Result<PeerSent, Error> {
    let from = UserId::parse(&send.from)?;
    call.caller.may_act_as(&from)?;
    let to = UserId::parse(&send.to)?;
    let message = validate::message(send.message)?;
    let (span, trace) = crate::telemetry::sent("peer", call.app.app_id.as_str());
    let dispatch = edge
        .owner()
        .send_peer(PeerSend {
            from: call.user(from),
            to,
            message,
            enable_offline: send.enable_offline,
            enable_history: send.enable_history,
            origin: None,
            trace,
        })
        .instrument(span)
        .await?;
    let result = if send.wait_for_ack {
        match dispatch.outcome.await {
            PeerOutcome::Received => "RECEIVED_BY_PEER",
            PeerOutcome::Cached => "CACHED_BY_SERVER",
            PeerOutcome::Unreachable => "PEER_UNREACHABLE",
            PeerOutcome::TimedOut => {
                return Err(Error::new(
                    ErrorCode::Timeout,
                    "the peer did not acknowledge in time",
                ));
            }
        }
    } else {
        // The delivery goes on without the caller.
        tokio::spawn(dispatch.outcome);
        "SENT"
    };
    Ok(PeerSent {
        message_id: dispatch.message_id,
        server_received_ts: dispatch.server_received_ts,
        result,
    })
}

pub(crate) async fn send_channel(
    edge: &Edge,
    call: &Call,
    from: &str,
    channel_id: &str,
    message: Option<v1::MessageBody>,
    enable_history: bool,
) -> Result<ChannelSent, Error> {
    let from = UserId::parse(from)?;
    call.caller.may_act_as(&from)?;
    let channel = ChannelId::parse(channel_id)?;
    let message = validate::message(message)?;
    let (span, trace) = crate::telemetry::sent("channel", call.app.app_id.as_str());
    edge.owner()
        .ask(ChannelSend {
            channel: call.channel(channel),
            from,
            session: None,
            message,
            enable_history,
            origin: None,
            trace,
        })
        .instrument(span)
        .await
}

pub(crate) async fn user_status(
    edge: &Edge,
    call: &Call,
    uid: &str,
) -> Result<(UserId, v1::PeerOnlineState), Error> {
    let uid = UserId::parse(uid)?;
    let state = edge
        .owner()
        .ask(ops::Presence {
            user: call.user(uid.clone()),
        })
        .await?;
    Ok((uid, state))
}

pub(crate) async fn member_count(edge: &Edge, call: &Call, channel_id: &str) -> Result<u32, Error> {
    let channel = ChannelId::parse(channel_id)?;
    edge.owner()
        .ask(ops::MemberCount {
            channel: call.channel(channel),
        })
        .await
}

pub(crate) async fn members(
    edge: &Edge,
    call: &Call,
    channel_id: &str,
) -> Result<Vec<UserId>, Error> {
    let channel = ChannelId::parse(channel_id)?;
    edge.owner()
        .ask(ops::Members {
            channel: call.channel(channel),
            asker: None,
        })
        .await
}

/// A channel's history: for backends (a user reads it through a session it joined with).
pub(crate) fn channel_conversation(call: &Call, channel_id: &str) -> Result<Conversation, Error> {
    call.caller.must_be_backend("channel history")?;
    Ok(Conversation::Channel(ChannelId::parse(channel_id)?))
}

/// The conversation between `uid` and `peer_id`; a user may read only its own.
pub(crate) fn peer_conversation(
    call: &Call,
    uid: &str,
    peer_id: &str,
) -> Result<Conversation, Error> {
    let uid = UserId::parse(uid)?;
    call.caller.may_act_as(&uid)?;
    Ok(Conversation::peers(uid, UserId::parse(peer_id)?))
}

/// A history page request: time range (ms, start inclusive, end exclusive, 0 = open), page
/// size (0: the default), order, and the `next` of the previous page.
pub(crate) struct HistoryRange {
    pub start: i64,
    pub end: i64,
    pub limit: usize,
    pub descending: bool,
    pub cursor: Option<String>,
}

impl HistoryRange {
    /// Whether the range holds nothing at all (it ends where, or before, it starts).
    fn is_empty(&self) -> Result<bool, Error> {
        validate::time_range_is_empty(self.start, self.end)
    }
}

/// One page of history and the `next` cursor (empty on the last page).
pub(crate) async fn history_page(
    edge: &Edge,
    call: &Call,
    conversation: Conversation,
    range: HistoryRange,
) -> Result<(Vec<v1::HistoryMessage>, String), Error> {
    if range.is_empty()? {
        return Ok((Vec::new(), String::new()));
    }
    let limit = validate::history_limit(range.limit)?;
    let after = validate::cursor(range.cursor.as_deref().unwrap_or_default())?;
    let messages = edge
        .owner()
        .ask(ops::QueryHistory {
            app: call.app_id(),
            conversation,
            query: HistoryQuery {
                start_ms: range.start,
                end_ms: range.end,
                limit,
                order: if range.descending {
                    Order::Descending
                } else {
                    Order::Ascending
                },
                after,
            },
        })
        .await?;
    let next = validate::next_cursor(&messages, limit);
    Ok((messages, next))
}

pub(crate) async fn history_count(
    edge: &Edge,
    call: &Call,
    conversation: Conversation,
    range: HistoryRange,
) -> Result<u64, Error> {
    if range.is_empty()? {
        return Ok(0);
    }
    edge.owner()
        .ask(ops::CountHistory {
            app: call.app_id(),
            conversation,
            start_ms: range.start,
            end_ms: range.end,
        })
        .await
}

/// The scope of a channel's mutes.
pub(crate) fn channel_scope(channel_id: &str) -> Result<Scope, Error> {
    Ok(Scope::Channel(ChannelId::parse(channel_id)?))
}

/// Bans `uid` (`Scope::Login`) or mutes it in a channel. Returns when it ends.
pub(crate) async fn restrict(
    edge: &Edge,
    call: &Call,
    scope: Scope,
    uid: &str,
    duration_seconds: u64,
    reason: String,
) -> Result<i64, Error> {
    call.caller.must_be_backend("banning and muting")?;
    let uid = UserId::parse(uid)?;
    validate::restriction_seconds(duration_seconds)?;
    validate::reason(&reason)?;
    let until_ms = unix_ms() + duration_seconds as i64 * 1000;
    let action = match scope {
        Scope::Login => Moderation::Ban {
            user: call.user(uid),
            until_ms,
            reason,
        },
        Scope::Channel(channel) => Moderation::Mute {
            channel: call.channel(channel),
            uid,
            until_ms,
            reason,
        },
    };
    edge.owner().ask(ops::Moderate { action }).await?;
    Ok(until_ms)
}

/// Lifts a ban or a mute. Returns whether one was in force.
pub(crate) async fn lift(edge: &Edge, call: &Call, scope: Scope, uid: &str) -> Result<bool, Error> {
    call.caller.must_be_backend("lifting bans and mutes")?;
    let uid = UserId::parse(uid)?;
    let action = match scope {
        Scope::Login => Moderation::Unban {
            user: call.user(uid),
        },
        Scope::Channel(channel) => Moderation::Unmute {
            channel: call.channel(channel),
            uid,
        },
    };
    edge.owner().ask(ops::Moderate { action }).await
}

/// The bans (`Scope::Login`) or a channel's mutes in force, by uid.
pub(crate) async fn restrictions(
    edge: &Edge,
    call: &Call,
    scope: Scope,
) -> Result<Vec<Restriction>, Error> {
    call.caller.must_be_backend("listing bans and mutes")?;
    edge.owner()
        .ask(ops::Restrictions {
            app: call.app_id(),
            scope,
        })
        .await
}

/// Takes `uid` out of the channel, telling it `reason`. Returns whether it was a member.
pub(crate) async fn kick(
    edge: &Edge,
    call: &Call,
    channel_id: &str,
    uid: &str,
    reason: String,
) -> Result<bool, Error> {
    call.caller.must_be_backend("kicking")?;
    let channel = ChannelId::parse(channel_id)?;
    let uid = UserId::parse(uid)?;
    validate::reason(&reason)?;
    edge.owner()
        .ask(ops::Moderate {
            action: Moderation::Kick {
                channel: call.channel(channel),
                uid,
                reason,
            },
        })
        .await
}

/// A page of an event log (`users` or `channels`) after `after`, and the cursor to poll with next.
pub(crate) async fn events(
    edge: &Edge,
    call: &Call,
    stream: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<StoredEvent>, u64), Error> {
    call.caller.must_be_backend("reading events")?;
    let stream = match stream {
        "users" => EventStream::Users,
        "channels" => EventStream::Channels,
        _ => {
            return Err(Error::invalid_argument(
                "the event logs are users and channels",
            ));
        }
    };
    let limit = validate::page_limit(
        limit,
        validate::DEFAULT_EVENT_PAGE,
        validate::MAX_EVENT_PAGE,
    )?;
    let page = edge
        .owner()
        .ask(ops::Events {
            app: call.app_id(),
            stream,
            after,
            limit,
        })
        .await?;
    let next = page.last().map_or(after, |event| event.id);
    Ok((page, next))
}
