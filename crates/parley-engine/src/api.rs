//! The types edges, owners and the other regions speak in: keys, peer messages, region records,
//! app events.

use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::UserId;
use parley_proto::v1;
use serde::Deserialize;
use serde::Serialize;

/// A channel, named within its app.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelKey {
    pub app: AppId,
    pub channel: ChannelId,
}

/// A user, named within its app.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserKey {
    pub app: AppId,
    pub uid: UserId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    /// `leave` or `logout`: MemberLeft at once, OFFLINE at once.
    Left,
    /// The connection ended without a logout: the membership lingers for the grace period and the
    /// user is UNREACHABLE until it ends.
    ConnectionLost,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSend {
    pub from: UserKey,
    pub to: UserId,
    pub message: v1::MessageBody,
    /// Store the message for an offline receiver.
    pub enable_offline: bool,
    pub enable_history: bool,
    /// Set when the message was accepted in another region (its receiver has sessions here, by
    /// this region's word): it keeps its ID and time, and never crosses again.
    pub origin: Option<RegionOrigin>,
    /// The W3C `traceparent` of the sender's span when the message is traced.
    pub trace: Option<String>,
}

/// How a peer message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerOutcome {
    /// A client of the peer sent a receipt.
    Received,
    /// The peer was offline; the message waits in its inbox.
    Cached,
    /// The peer has no session, or every session ended before acknowledging.
    Unreachable,
    /// The peer's sessions did not acknowledge in time.
    TimedOut,
}

/// Where a channel message that crossed regions was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionOrigin {
    pub region: String,
    pub message_id: MessageId,
    pub server_received_ts: i64,
}

/// What a region says of its members in a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// Its members there; 0: none (it no longer wants the channel's messages).
    pub members: u32,
    /// Its owner has just taken the channel up and asks the others to say whether they have
    /// members (and what the channel's attributes are).
    pub fresh: bool,
}

/// What an owner tells the other regions about a channel it owns (see [`RegionLink`]).
#[derive(Clone, Debug, PartialEq)]
pub enum RegionRecord {
    /// A message accepted here, for the members the channel has elsewhere.
    Message {
        channel: ChannelKey,
        from: UserId,
        message: v1::MessageBody,
        enable_history: bool,
        message_id: MessageId,
        server_received_ts: i64,
        /// The sending owner's span, when the message is traced.
        trace: Option<String>,
    },
    /// How many members this region has in the channel (none: it no longer wants its
    /// messages).
    Interest {
        channel: ChannelKey,
        interest: Interest,
    },
    /// The user has sessions here (`online`: the first came), or no longer has.
    User { user: UserKey, online: bool },
    /// A peer message accepted here for a user with sessions in another region.
    Peer {
        from: UserKey,
        to: UserId,
        message: v1::MessageBody,
        enable_offline: bool,
        enable_history: bool,
        message_id: MessageId,
        server_received_ts: i64,
        /// The sending owner's span, when the message is traced.
        trace: Option<String>,
    },
    /// A channel's whole attribute set after a change here (or, to a region that has just
    /// taken the channel up, as it is).
    Attributes {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
    },
    /// An event of an invitation that lives here, for its callee in another region; with
    /// `receipt` (the invitation itself), the callee's region answers with
    /// [`RegionRecord::InvitationReceipt`] and sends the callee's answers back.
    CalleeEvent {
        callee: UserKey,
        event: v1::Event,
        receipt: Option<u64>,
    },
    /// The callee acknowledged an invitation from another region.
    InvitationReceipt { callee: UserKey, invitation_id: u64 },
    /// The callee answered an invitation from another region.
    InvitationAnswer {
        callee: UserKey,
        invitation_id: u64,
        accept: bool,
        response: String,
    },
    /// How a peer message from another region ended here (`to` is its receiver).
    PeerOutcome {
        to: UserKey,
        message_id: MessageId,
        outcome: PeerOutcome,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSent {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    pub seq: u64,
}

/// An invitation already under way, as the caller's edge knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRestore {
    pub invitation_id: u64,
    /// How long ago it was sent.
    pub age: std::time::Duration,
    /// Whether the caller was told the callee has it.
    pub received: bool,
}

/// What a joining session has already seen of the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// A first join: nothing to replay.
    Fresh,
    /// A client back after a reconnect: replay what it missed after `after`, then tell it how
    /// complete that was (ChannelRecovered).
    Client { after: u64 },
    /// An edge re-registering its session with the channel's new owner: replay, quietly, what
    /// the session was not handed after `after`.
    Handoff { after: u64 },
}

/// What the app's backend may do to its users (the server API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Moderation {
    /// Keeps the user from logging in until `until_ms`; its sessions end with BANNED_BY_SERVER.
    Ban {
        user: UserKey,
        until_ms: i64,
        reason: String,
    },
    Unban {
        user: UserKey,
    },
    /// Keeps `uid`'s messages out of the channel until `until_ms` (MUTED); members are told.
    Mute {
        channel: ChannelKey,
        uid: UserId,
        until_ms: i64,
        reason: String,
    },
    Unmute {
        channel: ChannelKey,
        uid: UserId,
    },
    /// Takes every session of `uid` out of the channel now; they are told (KickedFromChannel,
    /// with `reason`).
    Kick {
        channel: ChannelKey,
        uid: UserId,
        reason: String,
    },
}

/// Something that happened to an app's users that its backend may want to hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppEvent {
    pub app: AppId,
    /// Unique among the app's events (a message ID), so receivers can drop repeats.
    pub id: MessageId,
    pub ts_ms: i64,
    pub kind: AppEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppEventKind {
    /// The user went from no session to one.
    Login {
        uid: UserId,
    },
    /// The user's last session ended: `logout`, `connection_lost`, `banned`, `remote_login`…
    Logout {
        uid: UserId,
        reason: &'static str,
    },
    Join {
        channel: ChannelId,
        uid: UserId,
    },
    /// `left`, `connection_lost` or `kicked`.
    Leave {
        channel: ChannelId,
        uid: UserId,
        reason: &'static str,
    },
    /// A peer message waits in the inbox of `to`, who is offline (a push notification's cue).
    PeerMessageCached {
        from: UserId,
        to: UserId,
        message_id: MessageId,
        message: v1::MessageBody,
    },
    /// An invitation reached a callee who is offline.
    InvitationToOffline {
        caller: UserId,
        callee: UserId,
        invitation_id: u64,
        content: String,
        channel_id: String,
    },
}

impl AppEventKind {
    /// The user whose events keep their order.
    pub fn uid(&self) -> &UserId {
        match self {
            AppEventKind::Login { uid }
            | AppEventKind::Logout { uid, .. }
            | AppEventKind::Join { uid, .. }
            | AppEventKind::Leave { uid, .. } => uid,
            AppEventKind::PeerMessageCached { to, .. } => to,
            AppEventKind::InvitationToOffline { callee, .. } => callee,
        }
    }
}
