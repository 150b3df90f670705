//! What a shard's decisions produce, as data: deliveries to edges, app events, records for the
//! other regions, and store work. The runtime (`runtime.rs`) carries them out; tests read them.

use std::sync::Arc;
use std::time::Instant;

use futures_channel::oneshot;
use parley_core::attributes::AttributeOp;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::storage::HistoryQuery;
use parley_core::storage::Restriction;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;

use super::Key;
use super::Respond;
use super::channels::Joining;
use super::channels::Numbered;
use super::peers::PeerSending;
use crate::api::AppEvent;
use crate::api::ChannelKey;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;

/// The time a shard decides by, read once per input by its runtime.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For timers.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch, for what clients and the store see.
    pub unix_ms: i64,
}

/// One thing the shard wants done outside itself.
pub enum Effect {
    /// One frame to several sessions of one edge.
    Deliver {
        edge: NodeId,
        sessions: Vec<SessionId>,
        frame: Arc<SharedFrame>,
    },
    /// A frame the client acknowledges with a receipt for `receipt_id`; `then` says what the
    /// receipt means.
    DeliverPeer {
        session: SessionRef,
        receipt_id: MessageId,
        frame: Arc<SharedFrame>,
        then: OnReceipt,
    },
    /// Ends a session from the server side.
    EndSession {
        session: SessionRef,
        reason: Reason,
    },
    Event(AppEvent),
    Region(RegionRecord),
    /// Store work whose answer comes back to the shard ([`super::Resumed`]); while it runs,
    /// `key` (if any) takes no other command.
    Store {
        key: Option<Key>,
        work: Box<StoreWork>,
    },
    /// A session directory write: done in order with the others, never waited for.
    Directory(DirectoryWrite),
}

/// What a client's receipt of a frame leads to.
pub enum OnReceipt {
    /// The caller that sent the peer message waits for it.
    Caller(oneshot::Sender<()>),
    /// An offline message was delivered: it leaves the inbox.
    LeaveInbox {
        user: UserKey,
        stored: v1::HistoryMessage,
    },
    /// The callee has the invitation: the shard hears of it.
    Invitation { callee: UserKey, invitation_id: u64 },
    /// The callee has an invitation from another region: that region hears of it.
    RegionInvitation { callee: UserKey, invitation_id: u64 },
}

#[derive(Debug)]
pub enum DirectoryWrite {
    Register { user: UserKey, session: SessionRef },
    Unregister { user: UserKey, session: SessionRef },
}

/// Store work, with what the operation that waits for it needs to go on. Reads that only
/// answer their caller answer it from the runtime.
pub enum StoreWork {
    /// A login: is the user banned?
    CheckBan {
        open: ops::OpenSession,
        now_ms: i64,
        reply: Respond<ops::OpenSession>,
    },
    /// A new session: its offline inbox.
    ListInbox {
        user: UserKey,
        session: SessionRef,
        max_age_ms: i64,
        now_ms: i64,
        reply: Respond<ops::SessionReady>,
    },
    ClearUserAttributes {
        user: UserKey,
    },
    /// A peer message kept in history before it is routed.
    AppendPeer {
        peer: PeerSending,
        retention_ms: i64,
    },
    /// Which region the receiver of a peer message is in.
    LocatePeer {
        peer: PeerSending,
    },
    /// A peer message kept in the offline receiver's inbox.
    CachePeer {
        peer: PeerSending,
    },
    /// Takes a channel up: its numbering (reserving the next block of `block`), its attributes'
    /// expiry lifted, its mutes.
    LoadChannel {
        join: Joining,
        block: u64,
        now_ms: i64,
    },
    /// The channel's history a re-joining session missed.
    Replay {
        join: Joining,
        is_new_member: bool,
        after: u64,
        announce: bool,
        /// The oldest message the recovery window still has.
        oldest_kept: u64,
        query: HistoryQuery,
    },
    /// A channel message's new block of numbers and history, as it needs.
    StoreNumbered {
        message: Numbered,
        retention_ms: i64,
    },
    /// A backend's message to a channel without members: a mute check, then history if asked.
    SendToEmptyChannel {
        send: ops::ChannelSend,
        message_id: MessageId,
        server_received_ts: i64,
        retention_ms: i64,
        reply: Respond<ops::ChannelSend>,
    },
    /// When the channel's stored attributes expire (0: never).
    ExpireAttributes {
        channel: ChannelKey,
        expires_at_ms: i64,
    },
    /// The channel's attributes, for a region that has just taken it up.
    AttributesForRegion {
        channel: ChannelKey,
    },
    /// Where the callee of an invitation is.
    LocateCallee {
        send: ops::InvitationSend,
        callee: UserKey,
        reply: Respond<ops::InvitationSend>,
    },
    Ban {
        user: UserKey,
        ban: Restriction,
        reply: Respond<ops::Moderate>,
    },
    Unban {
        user: UserKey,
        now_ms: i64,
        reply: Respond<ops::Moderate>,
    },
    Mute {
        channel: ChannelKey,
        uid: UserId,
        mute: Restriction,
        reply: Respond<ops::Moderate>,
    },
    Unmute {
        channel: ChannelKey,
        uid: UserId,
        now_ms: i64,
        reply: Respond<ops::Moderate>,
    },
    /// Read, apply and write the user's attributes (its owner is their only writer).
    UpdateUserAttributes {
        user: UserKey,
        op: AttributeOp,
        reply: Respond<ops::UpdateUserAttributes>,
    },
    /// Read, apply and compare-and-set the channel's attributes; `ttl_ms`: the channel has no
    /// members, so they expire.
    UpdateChannelAttributes {
        channel: ChannelKey,
        by: UserId,
        op: AttributeOp,
        ttl_ms: Option<i64>,
        notify_members: bool,
        now_ms: i64,
        reply: Respond<ops::UpdateChannelAttributes>,
    },
    /// Another region's attribute set, stored as it is.
    PutRegionAttributes {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
        expires_at_ms: i64,
        reply: Respond<ops::RegionAttributes>,
    },
    UserAttributes {
        read: ops::UserAttributes,
        reply: Respond<ops::UserAttributes>,
    },
    ChannelAttributes {
        read: ops::ChannelAttributes,
        reply: Respond<ops::ChannelAttributes>,
    },
    QueryHistory {
        read: ops::QueryHistory,
        reply: Respond<ops::QueryHistory>,
    },
    CountHistory {
        read: ops::CountHistory,
        reply: Respond<ops::CountHistory>,
    },
    Restrictions {
        read: ops::Restrictions,
        now_ms: i64,
        reply: Respond<ops::Restrictions>,
    },
    Events {
        read: ops::Events,
        reply: Respond<ops::Events>,
    },
}
