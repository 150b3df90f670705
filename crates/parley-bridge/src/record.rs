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
use parley_owner::Interest;
use parley_owner::PeerOutcome;
use parley_owner::PeerSend;
use parley_owner::RegionOrigin;
use parley_owner::RegionRecord;
use parley_owner::UserKey;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::region_record::Record;
use parley_proto::v1;
use prost::Message;

/// The topic `region` publishes on.
pub fn topic(region: &str) -> String {
    format!("parley-region-{region}")
}

/// The key (`appId/channelId`: one channel, one partition) and payload of `record`, published
/// by `region`.
pub(crate) fn encode(region: &str, record: &RegionRecord) -> (String, Vec<u8>) {
    let (key, body) = match record {
        RegionRecord::Message {
            channel,
            from,
            message,
            enable_history,
            message_id,
            server_received_ts,
            trace,
        } => (
            Key::Channel(channel),
            Record::Message(wire::RegionMessage {
                from: from.to_string(),
                message: Some(message.clone()),
                enable_history: *enable_history,
                message_id: message_id.0,
                server_received_ts: *server_received_ts,
                traceparent: trace.clone().unwrap_or_default(),
            }),
        ),
        RegionRecord::Interest { channel, interest } => (
            Key::Channel(channel),
            Record::Interest(parley_owner::region_interest(*interest)),
        ),
        RegionRecord::User { user, online } => (
            Key::User(user),
            Record::User(wire::RegionUser {
                uid: user.uid.to_string(),
                online: *online,
            }),
        ),
        RegionRecord::Peer {
            from,
            to,
            message,
            enable_offline,
            enable_history,
            message_id,
            server_received_ts,
            trace,
        } => (
            Key::Receiver(&from.app, to),
            Record::Peer(wire::RegionPeer {
                from: from.uid.to_string(),
                to: to.to_string(),
                message: Some(message.clone()),
                enable_offline: *enable_offline,
                enable_history: *enable_history,
                message_id: message_id.0,
                server_received_ts: *server_received_ts,
                traceparent: trace.clone().unwrap_or_default(),
            }),
        ),
        RegionRecord::Attributes {
            channel,
            attributes,
            notify_members,
        } => (
            Key::Channel(channel),
            Record::Attributes(wire::RegionAttributes {
                attributes: attributes.clone(),
                notify_members: *notify_members,
            }),
        ),
        RegionRecord::CalleeEvent {
            callee,
            event,
            receipt,
        } => (
            Key::User(callee),
            Record::CalleeEvent(wire::RegionCalleeEvent {
                callee: callee.uid.to_string(),
                event: Some(event.clone()),
                receipt_invitation_id: receipt.unwrap_or(0),
            }),
        ),
        RegionRecord::InvitationReceipt {
            callee,
            invitation_id,
        } => (
            Key::User(callee),
            Record::InvitationReceipt(wire::RegionInvitationReceipt {
                callee: callee.uid.to_string(),
                invitation_id: *invitation_id,
            }),
        ),
        RegionRecord::InvitationAnswer {
            callee,
            invitation_id,
            accept,
            response,
        } => (
            Key::User(callee),
            Record::InvitationAnswer(wire::RegionInvitationAnswer {
                callee: callee.uid.to_string(),
                invitation_id: *invitation_id,
                accept: *accept,
                response: response.clone(),
            }),
        ),
        RegionRecord::PeerOutcome {
            to,
            message_id,
            outcome,
        } => (
            Key::User(to),
            Record::PeerOutcome(wire::RegionPeerResult {
                to: to.uid.to_string(),
                message_id: message_id.0,
                outcome: parley_owner::peer_outcome(*outcome) as i32,
            }),
        ),
    };
    // A channel's records, and a user's, keep their order in one partition.
    let (app, name, channel_id) = match key {
        Key::Channel(channel) => (
            &channel.app,
            channel.channel.as_str(),
            channel.channel.as_str(),
        ),
        Key::User(user) => (&user.app, user.uid.as_str(), ""),
        Key::Receiver(app, uid) => (app, uid.as_str(), ""),
    };
    let payload = wire::RegionRecord {
        region: region.to_owned(),
        // The app travels in the channel key; a user's records leave the channel empty.
        channel: Some(wire::ChannelKey {
            app_id: app.to_string(),
            channel_id: channel_id.to_owned(),
        }),
        record: Some(body),
    }
    .encode_to_vec();
    (format!("{app}/{name}"), payload)
}

/// What a record is keyed by.
enum Key<'a> {
    Channel(&'a ChannelKey),
    User(&'a UserKey),
    Receiver(&'a AppId, &'a UserId),
}

/// What a record from another region asks of this one's owners.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Deliver a message to the channel's members here.
    Deliver(ChannelSend),
    Interest {
        channel: ChannelKey,
        region: String,
        interest: Interest,
    },
    /// Note where a user is (or no longer is).
    User {
        user: UserKey,
        region: String,
        online: bool,
    },
    /// Deliver a peer message to its receiver here, and say back how that ended.
    Peer(PeerSend),
    /// Replace the channel's attributes here.
    Attributes {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
    },
    /// Give an invitation's event to its callee here (`receipt`: the invitation itself).
    CalleeEvent {
        callee: UserKey,
        region: String,
        event: v1::Event,
        receipt: Option<u64>,
    },
    /// The callee acknowledged an invitation made here.
    InvitationReceipt { callee: UserKey, invitation_id: u64 },
    /// The callee answered an invitation made here.
    InvitationAnswer {
        callee: UserKey,
        invitation_id: u64,
        accept: bool,
        response: String,
    },
    /// Tell the waiting owner how its peer message ended in the receiver's region.
    PeerOutcome {
        to: UserKey,
        message_id: MessageId,
        outcome: PeerOutcome,
    },
}

impl Action {
    /// Whether the record says how things are (where a user is, which channels a region
    /// wants) rather than carrying traffic: what a region reading another's topic for the
    /// first time takes from the records that were there before.
    pub(crate) fn is_state(&self) -> bool {
        matches!(
            self,
            Action::Interest { .. } | Action::User { .. } | Action::Attributes { .. }
        )
    }
}

/// Reads a record; a malformed one is named, to be logged and skipped.
pub(crate) fn decode(payload: &[u8]) -> Result<Action, String> {
    let record = wire::RegionRecord::decode(payload).map_err(|error| error.to_string())?;
    let key = record.channel.ok_or("no app")?;
    let app = AppId::parse(&key.app_id).map_err(|error| error.message)?;
    let user = |uid: &str| -> Result<UserKey, String> {
        Ok(UserKey {
            app: app.clone(),
            uid: UserId::parse(uid).map_err(|error| error.message)?,
        })
    };
    let channel = || -> Result<ChannelKey, String> {
        Ok(ChannelKey {
            app: app.clone(),
            channel: ChannelId::parse(&key.channel_id).map_err(|error| error.message)?,
        })
    };
    match record.record.ok_or("no record")? {
        Record::User(found) => Ok(Action::User {
            user: user(&found.uid)?,
            region: record.region,
            online: found.online,
        }),
        Record::Peer(peer) => Ok(Action::Peer(PeerSend {
            from: user(&peer.from)?,
            to: user(&peer.to)?.uid,
            message: peer.message.ok_or("no message body")?,
            enable_offline: peer.enable_offline,
            enable_history: peer.enable_history,
            origin: Some(RegionOrigin {
                region: record.region,
                message_id: MessageId(peer.message_id),
                server_received_ts: peer.server_received_ts,
            }),
            trace: parley_owner::trace_of(peer.traceparent),
        })),
        Record::PeerOutcome(result) => Ok(Action::PeerOutcome {
            to: user(&result.to)?,
            message_id: MessageId(result.message_id),
            outcome: parley_owner::from_peer_outcome(
                wire::PeerOutcome::try_from(result.outcome).map_err(|error| error.to_string())?,
            ),
        }),
        Record::Message(message) => Ok(Action::Deliver(ChannelSend {
            channel: channel()?,
            from: UserId::parse(&message.from).map_err(|error| error.message)?,
            session: None,
            message: message.message.ok_or("no message body")?,
            enable_history: message.enable_history,
            origin: Some(RegionOrigin {
                region: record.region,
                message_id: MessageId(message.message_id),
                server_received_ts: message.server_received_ts,
            }),
            trace: parley_owner::trace_of(message.traceparent),
        })),
        Record::CalleeEvent(found) => Ok(Action::CalleeEvent {
            callee: user(&found.callee)?,
            region: record.region,
            event: found.event.ok_or("no event")?,
            receipt: (found.receipt_invitation_id != 0).then_some(found.receipt_invitation_id),
        }),
        Record::InvitationReceipt(receipt) => Ok(Action::InvitationReceipt {
            callee: user(&receipt.callee)?,
            invitation_id: receipt.invitation_id,
        }),
        Record::InvitationAnswer(answer) => Ok(Action::InvitationAnswer {
            callee: user(&answer.callee)?,
            invitation_id: answer.invitation_id,
            accept: answer.accept,
            response: answer.response,
        }),
        Record::Attributes(set) => Ok(Action::Attributes {
            channel: channel()?,
            attributes: set.attributes,
            notify_members: set.notify_members,
        }),
        Record::Interest(interest) => Ok(Action::Interest {
            channel: channel()?,
            region: record.region,
            interest: parley_owner::from_region_interest(interest),
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
    use super::*;

    fn channel() -> ChannelKey {
        ChannelKey {
            app: AppId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            channel: ChannelId::parse("room").unwrap(),
        }
    }

    #[test]
    fn a_message_crosses_with_its_id_time_origin_and_trace() {
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
                trace: Some(TRACEPARENT.into()),
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
                trace: Some(TRACEPARENT.into()),
            })
        );
    }

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn interest_names_the_region_it_came_from() {
        let (_, payload) = encode(
            "us",
            &RegionRecord::Interest {
                channel: channel(),
                interest: Interest {
                    members: 3,
                    fresh: true,
                },
            },
        );
        assert_eq!(
            decode(&payload).unwrap(),
            Action::Interest {
                channel: channel(),
                region: "us".into(),
                interest: Interest {
                    members: 3,
                    fresh: true,
                },
            }
        );
    }

    #[test]
    fn users_peer_messages_and_their_outcomes_cross_keyed_by_user() {
        let app = channel().app;
        let user = |uid: &str| UserKey {
            app: app.clone(),
            uid: UserId::parse(uid).unwrap(),
        };
        let (key, payload) = encode(
            "us",
            &RegionRecord::User {
                user: user("bob"),
                online: true,
            },
        );
        assert_eq!(key, format!("{app}/bob"));
        let action = decode(&payload).unwrap();
        assert!(action.is_state());
        assert_eq!(
            action,
            Action::User {
                user: user("bob"),
                region: "us".into(),
                online: true,
            }
        );

        let body = v1::MessageBody {
            content: Some(v1::message_body::Content::Text("hi bob".into())),
            ..v1::MessageBody::default()
        };
        let (key, payload) = encode(
            "eu",
            &RegionRecord::Peer {
                from: user("alice"),
                to: UserId::parse("bob").unwrap(),
                message: body.clone(),
                enable_offline: true,
                enable_history: false,
                message_id: MessageId(7),
                server_received_ts: 1_700_000_000_000,
                trace: Some(TRACEPARENT.into()),
            },
        );
        assert_eq!(
            key,
            format!("{app}/bob"),
            "a peer message goes with its receiver"
        );
        let action = decode(&payload).unwrap();
        assert!(!action.is_state());
        assert_eq!(
            action,
            Action::Peer(PeerSend {
                from: user("alice"),
                to: UserId::parse("bob").unwrap(),
                message: body,
                enable_offline: true,
                enable_history: false,
                origin: Some(RegionOrigin {
                    region: "eu".into(),
                    message_id: MessageId(7),
                    server_received_ts: 1_700_000_000_000,
                }),
                trace: Some(TRACEPARENT.into()),
            })
        );

        let (_, payload) = encode(
            "us",
            &RegionRecord::PeerOutcome {
                to: user("bob"),
                message_id: MessageId(7),
                outcome: PeerOutcome::Cached,
            },
        );
        assert_eq!(
            decode(&payload).unwrap(),
            Action::PeerOutcome {
                to: user("bob"),
                message_id: MessageId(7),
                outcome: PeerOutcome::Cached,
            }
        );
    }

    #[test]
    fn invitation_records_cross_keyed_by_callee() {
        let callee = UserKey {
            app: channel().app,
            uid: UserId::parse("bob").unwrap(),
        };
        let event = v1::Event {
            kind: Some(v1::event::Kind::RemoteInvitationReceived(
                v1::RemoteInvitationReceived {
                    invitation_id: 9,
                    caller_id: "alice".into(),
                    content: "call me".into(),
                    channel_id: "call-room".into(),
                },
            )),
        };
        let (key, payload) = encode(
            "eu",
            &RegionRecord::CalleeEvent {
                callee: callee.clone(),
                event: event.clone(),
                receipt: Some(9),
            },
        );
        assert_eq!(key, format!("{}/bob", callee.app));
        assert_eq!(
            decode(&payload).unwrap(),
            Action::CalleeEvent {
                callee: callee.clone(),
                region: "eu".into(),
                event,
                receipt: Some(9),
            }
        );
        let (_, payload) = encode(
            "us",
            &RegionRecord::InvitationAnswer {
                callee: callee.clone(),
                invitation_id: 9,
                accept: false,
                response: "busy".into(),
            },
        );
        let action = decode(&payload).unwrap();
        assert!(!action.is_state());
        assert_eq!(
            action,
            Action::InvitationAnswer {
                callee: callee.clone(),
                invitation_id: 9,
                accept: false,
                response: "busy".into(),
            }
        );
        let (_, payload) = encode(
            "us",
            &RegionRecord::InvitationReceipt {
                callee: callee.clone(),
                invitation_id: 9,
            },
        );
        assert_eq!(
            decode(&payload).unwrap(),
            Action::InvitationReceipt {
                callee,
                invitation_id: 9,
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
