//! Peer messages: to the receiver's sessions here, to its region, or to its offline inbox.

use std::sync::Arc;

use futures_channel::oneshot;
use parley_core::Error;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::storage::InboxLimits;
use parley_core::storage::StoreResult;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::PeerRouted;
use super::REGION_PEER_MARGIN;
use super::Reply;
use super::Shard;
use super::effects::OnReceipt;
use super::effects::StoreWork;
use super::hold_reply;
use crate::api::AppEventKind;
use crate::api::PeerSend;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::storage_error;

/// A peer message on its way, between store operations.
pub struct PeerSending {
    pub send: PeerSend,
    pub receiver: UserKey,
    pub limits: InboxLimits,
    pub message_id: MessageId,
    pub server_received_ts: i64,
    /// The message as history and the inbox keep it.
    pub stored: v1::HistoryMessage,
    reply: Reply<Result<PeerRouted, Error>>,
}

impl PeerSending {
    /// The receiver's key: its store work and its other messages keep their order.
    fn receiver_key(&self) -> Key {
        Key::User(self.receiver.clone())
    }
}

impl Shard {
    /// Numbers the message, keeps it in history if asked (delivery waits for that), then routes
    /// it.
    pub(super) fn send_peer(
        &mut self,
        send: PeerSend,
        limits: InboxLimits,
        reply: Reply<Result<PeerRouted, Error>>,
    ) {
        let (message_id, server_received_ts) = match &send.origin {
            Some(origin) => {
                if !self.crossed_peers.first_time(origin.message_id) {
                    hold_reply(&self.held, reply, Ok(PeerRouted::Repeat));
                    return;
                }
                (origin.message_id, origin.server_received_ts)
            }
            None => {
                let now = self.now.unix_ms;
                (self.message_ids.next(now as u64), now)
            }
        };
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to.clone(),
        };
        let stored = v1::HistoryMessage {
            message_id: message_id.0,
            from: send.from.uid.to_string(),
            message: Some(send.message.clone()),
            server_received_ts,
            seq: 0,
        };
        let peer = PeerSending {
            send,
            receiver,
            limits,
            message_id,
            server_received_ts,
            stored,
            reply,
        };
        if !peer.send.enable_history {
            self.route_peer(peer);
            return;
        }
        let retention_ms = self
            .limits(&peer.receiver.app)
            .history_retention
            .as_millis() as i64;
        self.wait(
            Some(peer.receiver_key()),
            StoreWork::AppendPeer { peer, retention_ms },
        );
    }

    pub(super) fn peer_stored(&mut self, peer: PeerSending, stored: StoreResult<()>) {
        match stored {
            Ok(()) => self.route_peer(peer),
            Err(error) => {
                hold_reply(&self.held, peer.reply, Err(storage_error(error)));
            }
        }
    }

    /// To the receiver's sessions here; without any, the region directory is asked whether it
    /// is in another region (one that crossed in stays here).
    fn route_peer(&mut self, peer: PeerSending) {
        if self.sessions_of(&peer.receiver).is_empty()
            && peer.send.origin.is_none()
            && self.spans_regions
        {
            self.wait(Some(peer.receiver_key()), StoreWork::LocatePeer { peer });
            return;
        }
        self.deliver_peer(peer);
    }

    pub(super) fn peer_located(&mut self, peer: PeerSending, region: Option<String>) {
        if region.is_none() {
            self.deliver_peer(peer);
            return;
        }
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let until = self.now.instant + self.config.peer_receipt_timeout + REGION_PEER_MARGIN;
        self.remote_peers
            .insert(peer.message_id.0, (outcome_tx, until));
        let send = peer.send;
        self.publish(RegionRecord::Peer {
            from: send.from,
            to: peer.receiver.uid,
            message: send.message,
            enable_offline: send.enable_offline,
            enable_history: send.enable_history,
            message_id: peer.message_id,
            server_received_ts: peer.server_received_ts,
            trace: send.trace,
        });
        hold_reply(
            &self.held,
            peer.reply,
            Ok(PeerRouted::Remote {
                message_id: peer.message_id,
                server_received_ts: peer.server_received_ts,
                outcome: outcome_rx,
            }),
        );
    }

    /// Hands the message to the receiver's sessions, or keeps it in the inbox of a receiver
    /// without any (when asked).
    fn deliver_peer(&mut self, peer: PeerSending) {
        let sessions = self.sessions_of(&peer.receiver);
        if sessions.is_empty() && peer.send.enable_offline {
            self.wait(Some(peer.receiver_key()), StoreWork::CachePeer { peer });
            return;
        }
        let frame = Arc::new(
            SharedFrame::event(EventKind::MessageFromPeer(v1::MessageFromPeer {
                peer_id: peer.send.from.uid.to_string(),
                message: Some(peer.send.message),
                message_id: peer.message_id.0,
                server_received_ts: peer.server_received_ts,
                is_offline_message: false,
            }))
            .with_trace(peer.send.trace),
        );
        let mut receipts = Vec::with_capacity(sessions.len());
        for session in sessions {
            let (receipt_tx, receipt_rx) = oneshot::channel();
            receipts.push(receipt_rx);
            let then = OnReceipt::Caller(receipt_tx);
            self.send_with_receipt(session, peer.message_id, frame.clone(), then);
        }
        hold_reply(
            &self.held,
            peer.reply,
            Ok(PeerRouted::Delivered {
                message_id: peer.message_id,
                server_received_ts: peer.server_received_ts,
                receipts,
            }),
        );
    }

    pub(super) fn peer_cached(&mut self, peer: PeerSending, stored: StoreResult<()>) {
        if let Err(error) = stored {
            hold_reply(&self.held, peer.reply, Err(storage_error(error)));
            return;
        }
        self.emit(
            &peer.receiver.app,
            AppEventKind::PeerMessageCached {
                from: peer.send.from.uid.clone(),
                to: peer.receiver.uid.clone(),
                message_id: peer.message_id,
                message: peer.send.message,
            },
        );
        hold_reply(
            &self.held,
            peer.reply,
            Ok(PeerRouted::Cached {
                message_id: peer.message_id,
                server_received_ts: peer.server_received_ts,
            }),
        );
    }

    pub(super) fn sessions_of(&self, user: &UserKey) -> Vec<SessionRef> {
        self.users
            .get(user)
            .map(|entry| entry.sessions.iter().map(|known| known.session).collect())
            .unwrap_or_default()
    }
}
