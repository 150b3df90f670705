//! The seam between the owner and the world around it: what an owner may ask of an edge
//! ([`EdgeSink`]), where its app events go ([`EventSink`]) and what it tells other regions
//! ([`RegionLink`]). The types they carry are the engine's (`parley_engine::api`).

use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::future::BoxFuture;
use parley_core::ids::MessageId;
use parley_core::ids::SessionId;
use parley_proto::SharedFrame;
use parley_proto::v1::connection_state_changed::Reason;

pub use parley_engine::api::*;

/// A peer message handed to the peer's sessions, whose outcome is still coming. Splitting the two
/// lets an edge keep a client's messages in order without waiting for each receipt.
pub struct PeerDispatch {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    pub outcome: BoxFuture<'static, PeerOutcome>,
}

/// Where owners publish what other regions must hear (a Kafka topic per region). Never blocks:
/// a link that cannot keep up drops and counts.
pub trait RegionLink: Send + Sync + 'static {
    fn publish(&self, record: RegionRecord);
    /// Whether there are other regions at all (without, owners skip the region directory).
    fn spans_regions(&self) -> bool {
        true
    }
}

/// The link of a node that is the only region.
pub struct NoRegions;

impl RegionLink for NoRegions {
    fn publish(&self, _record: RegionRecord) {}

    fn spans_regions(&self) -> bool {
        false
    }
}

/// Where owners send app events (to the event logs, webhooks, Kafka). Never blocks: a sink
/// that cannot keep up drops events and counts them.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: AppEvent);
}

/// A sink for nodes that publish no events.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: AppEvent) {}
}

/// What an owner asks of an edge. Calls never block: an edge queues and returns.
pub trait EdgeSink: Send + Sync + 'static {
    /// Sends one event to several sessions of this edge (one call per edge per fan-out).
    fn deliver(&self, sessions: &[SessionId], frame: Arc<SharedFrame>);
    /// Sends a frame that the client acknowledges with a receipt for `receipt_id` (a peer message
    /// or an invitation). `receipt` is completed on the receipt and dropped if the session ends
    /// first.
    fn deliver_peer(
        &self,
        session: SessionId,
        receipt_id: MessageId,
        frame: Arc<SharedFrame>,
        receipt: oneshot::Sender<()>,
    );
    /// Ends a session from the server side (for example REMOTE_LOGIN).
    fn end_session(&self, session: SessionId, reason: Reason);
}
