//! Conversions between the owner API's types and the cluster protocol's, and between errors and
//! gRPC statuses. Validation happens here too: an ID that arrives over the wire is parsed like
//! one from a client.

use std::collections::BTreeMap;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::attributes::AttributeOp;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_proto::cluster::v1 as wire;
use parley_store::Conversation;
use parley_store::EventStream;
use parley_store::Restriction;
use parley_store::Scope;
use parley_store::StoredEvent;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::api::ChannelKey;
use crate::api::Interest;
use crate::api::Moderation;
use crate::api::PeerOutcome;
use crate::api::RegionOrigin;
use crate::api::UserKey;

const ERROR_CODE_KEY: &str = "parley-error-code";
/// Metadata naming the node that owns a key, on a FAILED_PRECONDITION answer.
pub(crate) const OWNER_KEY: &str = "parley-owner";

pub(crate) fn status_of(error: Error) -> Status {
    let code = match error.code {
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::InvalidArgument,
    };
    let mut status = Status::new(code, error.message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_KEY, MetadataValue::from(error.code as i32));
    status
}

pub(crate) fn error_of(status: &Status) -> Error {
    let code = status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .and_then(|value| ErrorCode::try_from(value).ok());
    match code {
        Some(code) => Error::new(code, status.message()),
        None => {
            tracing::warn!(status = %status, "cluster call failed");
            Error::new(
                ErrorCode::Unavailable,
                "a cluster node did not answer, retry",
            )
        }
    }
}

/// A malformed request between nodes: a bug or a version mismatch, never a client's fault.
/// A `traceparent` field: empty when the message is not traced.
pub fn trace_of(traceparent: String) -> Option<String> {
    (!traceparent.is_empty()).then_some(traceparent)
}

pub(crate) fn malformed(what: &str) -> Status {
    status_of(Error::internal(format!(
        "malformed cluster request: {what}"
    )))
}

pub(crate) fn user_key(user: &UserKey) -> wire::UserKey {
    wire::UserKey {
        app_id: user.app.to_string(),
        uid: user.uid.to_string(),
    }
}

pub(crate) fn from_user_key(user: Option<wire::UserKey>) -> Result<UserKey, Status> {
    let user = user.ok_or_else(|| malformed("user"))?;
    Ok(UserKey {
        app: AppId::parse(&user.app_id).map_err(status_of)?,
        uid: UserId::parse(&user.uid).map_err(status_of)?,
    })
}

pub(crate) fn channel_key(channel: &ChannelKey) -> wire::ChannelKey {
    wire::ChannelKey {
        app_id: channel.app.to_string(),
        channel_id: channel.channel.to_string(),
    }
}

pub(crate) fn from_channel_key(channel: Option<wire::ChannelKey>) -> Result<ChannelKey, Status> {
    let channel = channel.ok_or_else(|| malformed("channel"))?;
    Ok(ChannelKey {
        app: AppId::parse(&channel.app_id).map_err(status_of)?,
        channel: ChannelId::parse(&channel.channel_id).map_err(status_of)?,
    })
}

pub(crate) fn session_ref(session: SessionRef) -> wire::SessionRef {
    wire::SessionRef {
        edge: session.edge.0,
        session: session.session.0,
    }
}

pub(crate) fn from_session_ref(session: Option<wire::SessionRef>) -> Result<SessionRef, Status> {
    let session = session.ok_or_else(|| malformed("session"))?;
    Ok(SessionRef {
        edge: NodeId(session.edge),
        session: SessionId(session.session),
    })
}

pub(crate) fn uid(raw: &str) -> Result<UserId, Status> {
    UserId::parse(raw).map_err(status_of)
}

pub(crate) fn attribute_op(op: &AttributeOp) -> wire::AttributeOp {
    use wire::attribute_op::Op;
    let pairs = |pairs: &BTreeMap<String, String>| wire::Pairs {
        pairs: pairs.clone().into_iter().collect(),
    };
    wire::AttributeOp {
        op: Some(match op {
            AttributeOp::Set(set) => Op::Set(pairs(set)),
            AttributeOp::AddOrUpdate(add) => Op::AddOrUpdate(pairs(add)),
            AttributeOp::DeleteKeys(keys) => Op::DeleteKeys(wire::Keys { keys: keys.clone() }),
            AttributeOp::Clear => Op::Clear(wire::Done {}),
        }),
    }
}

pub(crate) fn from_attribute_op(op: Option<wire::AttributeOp>) -> Result<AttributeOp, Status> {
    use wire::attribute_op::Op;
    Ok(
        match op
            .and_then(|op| op.op)
            .ok_or_else(|| malformed("attribute op"))?
        {
            Op::Set(set) => AttributeOp::Set(set.pairs.into_iter().collect()),
            Op::AddOrUpdate(add) => AttributeOp::AddOrUpdate(add.pairs.into_iter().collect()),
            Op::DeleteKeys(keys) => AttributeOp::DeleteKeys(keys.keys),
            Op::Clear(_) => AttributeOp::Clear,
        },
    )
}

pub(crate) fn conversation(conversation: &Conversation) -> wire::Conversation {
    use wire::conversation::With;
    wire::Conversation {
        with: Some(match conversation {
            Conversation::Peer(a, b) => With::Peers(wire::PeerPair {
                a: a.to_string(),
                b: b.to_string(),
            }),
            Conversation::Channel(channel) => With::ChannelId(channel.to_string()),
        }),
    }
}

pub(crate) fn from_conversation(
    conversation: Option<wire::Conversation>,
) -> Result<Conversation, Status> {
    use wire::conversation::With;
    match conversation
        .and_then(|conversation| conversation.with)
        .ok_or_else(|| malformed("conversation"))?
    {
        With::Peers(pair) => Ok(Conversation::peers(uid(&pair.a)?, uid(&pair.b)?)),
        With::ChannelId(channel) => Ok(Conversation::Channel(
            ChannelId::parse(&channel).map_err(status_of)?,
        )),
    }
}

pub fn region_interest(interest: Interest) -> wire::RegionInterest {
    wire::RegionInterest {
        members: interest.members,
        fresh: interest.fresh,
    }
}

pub fn from_region_interest(interest: wire::RegionInterest) -> Interest {
    Interest {
        members: interest.members,
        fresh: interest.fresh,
    }
}

pub(crate) fn region_origin(origin: RegionOrigin) -> wire::RegionOrigin {
    wire::RegionOrigin {
        region: origin.region,
        message_id: origin.message_id.0,
        server_received_ts: origin.server_received_ts,
    }
}

pub(crate) fn from_region_origin(origin: wire::RegionOrigin) -> RegionOrigin {
    RegionOrigin {
        region: origin.region,
        message_id: MessageId(origin.message_id),
        server_received_ts: origin.server_received_ts,
    }
}

pub fn peer_outcome(outcome: PeerOutcome) -> wire::PeerOutcome {
    match outcome {
        PeerOutcome::Received => wire::PeerOutcome::Received,
        PeerOutcome::Cached => wire::PeerOutcome::Cached,
        PeerOutcome::Unreachable => wire::PeerOutcome::Unreachable,
        PeerOutcome::TimedOut => wire::PeerOutcome::TimedOut,
    }
}

pub fn from_peer_outcome(outcome: wire::PeerOutcome) -> PeerOutcome {
    match outcome {
        wire::PeerOutcome::Received => PeerOutcome::Received,
        wire::PeerOutcome::Cached => PeerOutcome::Cached,
        wire::PeerOutcome::TimedOut => PeerOutcome::TimedOut,
        wire::PeerOutcome::Unreachable | wire::PeerOutcome::Unspecified => PeerOutcome::Unreachable,
    }
}

pub(crate) fn moderate_request(action: &Moderation) -> wire::ModerateRequest {
    use wire::moderate_request::Action;
    let (action, app, uid, channel, until_ms, reason) = match action {
        Moderation::Ban {
            user,
            until_ms,
            reason,
        } => (
            Action::Ban,
            &user.app,
            &user.uid,
            None,
            *until_ms,
            reason.as_str(),
        ),
        Moderation::Unban { user } => (Action::Unban, &user.app, &user.uid, None, 0, ""),
        Moderation::Mute {
            channel,
            uid,
            until_ms,
            reason,
        } => (
            Action::Mute,
            &channel.app,
            uid,
            Some(&channel.channel),
            *until_ms,
            reason.as_str(),
        ),
        Moderation::Unmute { channel, uid } => (
            Action::Unmute,
            &channel.app,
            uid,
            Some(&channel.channel),
            0,
            "",
        ),
        Moderation::Kick {
            channel,
            uid,
            reason,
        } => (
            Action::Kick,
            &channel.app,
            uid,
            Some(&channel.channel),
            0,
            reason.as_str(),
        ),
    };
    wire::ModerateRequest {
        epoch: 0,
        action: action as i32,
        app_id: app.to_string(),
        uid: uid.to_string(),
        channel_id: channel.map(ToString::to_string).unwrap_or_default(),
        until_ms,
        reason: reason.to_owned(),
    }
}

pub(crate) fn from_moderate_request(request: wire::ModerateRequest) -> Result<Moderation, Status> {
    use wire::moderate_request::Action;
    let app = AppId::parse(&request.app_id).map_err(status_of)?;
    let uid = uid(&request.uid)?;
    let user = || UserKey {
        app: app.clone(),
        uid: uid.clone(),
    };
    let channel = || -> Result<ChannelKey, Status> {
        Ok(ChannelKey {
            app: app.clone(),
            channel: ChannelId::parse(&request.channel_id).map_err(status_of)?,
        })
    };
    Ok(match Action::try_from(request.action) {
        Ok(Action::Ban) => Moderation::Ban {
            user: user(),
            until_ms: request.until_ms,
            reason: request.reason,
        },
        Ok(Action::Unban) => Moderation::Unban { user: user() },
        Ok(Action::Mute) => Moderation::Mute {
            channel: channel()?,
            uid,
            until_ms: request.until_ms,
            reason: request.reason,
        },
        Ok(Action::Unmute) => Moderation::Unmute {
            channel: channel()?,
            uid,
        },
        Ok(Action::Kick) => Moderation::Kick {
            channel: channel()?,
            uid,
            reason: request.reason,
        },
        _ => return Err(malformed("moderation action")),
    })
}

pub(crate) fn scope_of(channel_id: &str) -> Result<Scope, Status> {
    if channel_id.is_empty() {
        Ok(Scope::Login)
    } else {
        Ok(Scope::Channel(
            ChannelId::parse(channel_id).map_err(status_of)?,
        ))
    }
}

pub(crate) fn restriction(restriction: Restriction) -> wire::Restriction {
    wire::Restriction {
        uid: restriction.uid,
        since_ms: restriction.since_ms,
        until_ms: restriction.until_ms,
        reason: restriction.reason,
    }
}

pub(crate) fn from_restriction(restriction: wire::Restriction) -> Restriction {
    Restriction {
        uid: restriction.uid,
        since_ms: restriction.since_ms,
        until_ms: restriction.until_ms,
        reason: restriction.reason,
    }
}

pub(crate) fn stream_of(raw: &str) -> Result<EventStream, Status> {
    match raw {
        "users" => Ok(EventStream::Users),
        "channels" => Ok(EventStream::Channels),
        _ => Err(malformed("event stream")),
    }
}

pub(crate) fn event(event: StoredEvent) -> wire::StoredEvent {
    wire::StoredEvent {
        id: event.id,
        ts_ms: event.ts_ms,
        kind: event.kind,
        uid: event.uid,
        channel_id: event.channel_id,
        reason: event.reason,
    }
}

pub(crate) fn from_event(event: wire::StoredEvent) -> StoredEvent {
    StoredEvent {
        id: event.id,
        ts_ms: event.ts_ms,
        kind: event.kind,
        uid: event.uid,
        channel_id: event.channel_id,
        reason: event.reason,
    }
}
