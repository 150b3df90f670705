//! Shorthands for building requests and reading replies in protocol tests.

use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;

pub fn text(text: &str) -> Option<v1::MessageBody> {
    Some(v1::MessageBody {
        content: Some(v1::message_body::Content::Text(text.into())),
        description: String::new(),
    })
}

/// The text of a message body, or "" for a raw one.
pub fn text_of(body: &Option<v1::MessageBody>) -> String {
    match body.as_ref().and_then(|body| body.content.as_ref()) {
        Some(v1::message_body::Content::Text(text)) => text.clone(),
        _ => String::new(),
    }
}

pub fn join(channel: &str) -> Op {
    Op::Join(v1::JoinRequest {
        channel_id: channel.into(),
        resume_after_seq: None,
    })
}

pub fn leave(channel: &str) -> Op {
    Op::Leave(v1::LeaveRequest {
        channel_id: channel.into(),
    })
}

pub fn to_peer(peer: &str, body: &str) -> Op {
    Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
        peer_id: peer.into(),
        message: text(body),
        ..Default::default()
    })
}

pub fn to_channel(channel: &str, body: &str) -> Op {
    Op::SendMessage(v1::SendMessageRequest {
        channel_id: channel.into(),
        message: text(body),
        ..Default::default()
    })
}

pub fn error_code(reply: &v1::Reply) -> Option<ErrorCode> {
    reply.error.as_ref().map(|error| error.code())
}

/// The result of a reply that must have succeeded.
pub fn ok(reply: v1::Reply) -> ReplyResult {
    assert!(reply.error.is_none(), "request failed: {:?}", reply.error);
    reply.result.expect("a successful reply carries a result")
}
