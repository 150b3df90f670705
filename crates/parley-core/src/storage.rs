//! The vocabulary of what Parley stores: records, queries and limits, shared by the store
//! implementations (parley-store) and the owner's engine, which names store work as data.

use serde::Deserialize;
use serde::Serialize;

use crate::ids::ChannelId;
use crate::ids::UserId;
use parley_proto::v1::ChannelAttribute;

#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

/// Limits of one user's offline inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboxLimits {
    /// Most messages kept; the oldest are dropped first.
    pub max_count: usize,
    /// Messages older than this are dropped.
    pub max_age_ms: i64,
}

/// A conversation whose messages history keeps.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Conversation {
    /// Between two users, whichever sent.
    Peer(UserId, UserId),
    Channel(ChannelId),
}

impl Conversation {
    /// The conversation between `a` and `b`, the same whichever is named first.
    pub fn peers(a: UserId, b: UserId) -> Self {
        if a <= b {
            Conversation::Peer(a, b)
        } else {
            Conversation::Peer(b, a)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    Ascending,
    Descending,
}

/// One page of a history query. Times are ms since the Unix epoch; `start_ms` is inclusive and
/// `end_ms` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub start_ms: i64,
    pub end_ms: i64,
    pub limit: usize,
    pub order: Order,
    /// Continue after this (timestamp, message id), in query order.
    pub after: Option<(i64, u64)>,
}

/// A channel's attributes as stored, with the time they may be forgotten (set when the channel
/// has no members).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredChannelAttributes {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<ChannelAttribute>,
    /// 0 while the channel has members.
    #[prost(int64, tag = "2")]
    pub expires_at_ms: i64,
}

/// A user's attributes, so they outlive the owner node that holds the user.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredUserAttributes {
    #[prost(map = "string, string", tag = "1")]
    pub attributes: std::collections::HashMap<String, String>,
}

/// What a restriction keeps a user from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Logging in: a ban.
    Login,
    /// Sending to one channel: a mute.
    Channel(ChannelId),
}

/// A ban or a mute of one user, in force until a time.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Restriction {
    #[prost(string, tag = "1")]
    pub uid: String,
    /// Since when, in ms since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub since_ms: i64,
    /// Until when (exclusive), in ms since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub until_ms: i64,
    #[prost(string, tag = "4")]
    pub reason: String,
}

/// The two event logs an app's backend can page through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventStream {
    /// Logins and logouts.
    Users,
    /// Joins and leaves.
    Channels,
}

impl EventStream {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStream::Users => "users",
            EventStream::Channels => "channels",
        }
    }
}

/// One entry of an event log.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Given by the store on append: grows with every event of the app's stream, and never
    /// goes back (it starts at the append time in µs), so it is a cursor that stays valid.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub ts_ms: i64,
    /// `login`, `logout`, `join` or `leave`.
    #[prost(string, tag = "3")]
    pub kind: String,
    #[prost(string, tag = "4")]
    pub uid: String,
    #[prost(string, tag = "5")]
    pub channel_id: String,
    #[prost(string, tag = "6")]
    pub reason: String,
}
