//! The seam between edges and owners.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use parley_core::Error;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use tokio::sync::oneshot;

/// A channel, named within its app.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub app: AppId,
    pub channel: ChannelId,
}

/// A user, named within its app.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub app: AppId,
    pub uid: UserId,
}

#[derive(Clone, Debug)]
pub struct OpenSession {
    pub user: UserKey,
    pub session: SessionRef,
    pub multi_login: MultiLogin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// `leave` or `logout`: MemberLeft at once.
    Left,
    /// The connection ended without a logout: the membership lingers for the grace period.
    ConnectionLost,
}

#[derive(Clone, Debug)]
pub struct PeerSend {
    pub from: UserKey,
    pub to: UserId,
    pub message: v1::MessageBody,
}

/// How a peer message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerOutcome {
    /// A client of the peer sent a receipt.
    Received,
    /// The peer has no session, or every session ended before acknowledging.
    Unreachable,
    /// The peer's sessions did not acknowledge in time.
    TimedOut,
}

/// A peer message handed to the peer's sessions, whose outcome is still coming. Splitting the two
/// lets an edge keep a client's messages in order without waiting for each receipt.
pub struct PeerDispatch {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    pub outcome: BoxFuture<'static, PeerOutcome>,
}

#[derive(Clone, Debug)]
pub struct ChannelSend {
    pub channel: ChannelKey,
    pub from: UserId,
    pub session: SessionRef,
    pub message: v1::MessageBody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSent {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    pub seq: u64,
}

/// What an edge asks of the owners. Every method is answered by the owner of the key it names.
#[async_trait]
pub trait OwnerApi: Send + Sync + 'static {
    /// Records a new session of a user; with [`MultiLogin::Replace`] ends the user's other sessions.
    async fn open_session(&self, open: OpenSession) -> Result<(), Error>;
    /// Forgets a session. Idempotent.
    async fn close_session(&self, user: UserKey, session: SessionRef) -> Result<(), Error>;
    async fn send_peer(&self, send: PeerSend) -> Result<PeerDispatch, Error>;
    async fn join(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
    ) -> Result<(), Error>;
    async fn leave(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error>;
    async fn send_channel(&self, send: ChannelSend) -> Result<ChannelSent, Error>;
    /// Members of a channel that `session` has joined.
    async fn members(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
    ) -> Result<Vec<UserId>, Error>;
    /// Members of any channel; 0 for one nobody is in.
    async fn member_count(&self, channel: ChannelKey) -> Result<u32, Error>;
}

/// What an owner asks of an edge. Calls never block: an edge queues and returns.
pub trait EdgeSink: Send + Sync + 'static {
    /// Sends one event to several sessions of this edge (one call per edge per fan-out).
    fn deliver(&self, sessions: &[SessionId], frame: Arc<SharedFrame>);
    /// Sends a peer message to one session; the receiver completes when its client acknowledges
    /// and is dropped if the session ends first.
    fn deliver_peer(
        &self,
        session: SessionId,
        message_id: MessageId,
        frame: Arc<SharedFrame>,
    ) -> oneshot::Receiver<()>;
    /// Ends a session from the server side (for example REMOTE_LOGIN).
    fn end_session(&self, session: SessionId, reason: Reason);
}
