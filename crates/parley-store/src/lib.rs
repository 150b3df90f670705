//! What must survive a node: offline inboxes, message history, user and channel attributes,
//! channel sequence high-water marks, and the session directory (which edge holds which user). One trait per concern; [`EmbeddedStore`] implements them all on a
//! local redb file (the default of `parley dev`), [`RedisStore`] on Redis or Redis Cluster.
//! [`behaviour`] is the one test suite every implementation must pass.
//!
//! Architecture invariant: this crate knows nothing of the network or of sessions; it stores and
//! returns records, and enforces count and age limits it is given.

pub mod behaviour;
mod embedded;
mod keys;
mod redis_store;

use async_trait::async_trait;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
pub use parley_proto::v1::ChannelAttribute;
pub use parley_proto::v1::HistoryMessage;

pub use embedded::EmbeddedStore;
pub use parley_core::storage::Conversation;
pub use parley_core::storage::EventStream;
pub use parley_core::storage::HistoryQuery;
pub use parley_core::storage::InboxLimits;
pub use parley_core::storage::Order;
pub use parley_core::storage::Restriction;
pub use parley_core::storage::Scope;
pub use parley_core::storage::StoreError;
pub use parley_core::storage::StoreResult;
pub use parley_core::storage::StoredChannelAttributes;
pub use parley_core::storage::StoredEvent;
pub use parley_core::storage::StoredUserAttributes;
pub use redis_store::RedisStore;

/// Peer messages stored for a user who was offline, oldest first.
#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
    /// Stores `message` durably, then drops the oldest messages beyond the limits.
    async fn push(
        &self,
        app: &AppId,
        uid: &UserId,
        message: HistoryMessage,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// The messages within `max_age_ms`, oldest first.
    async fn list(
        &self,
        app: &AppId,
        uid: &UserId,
        max_age_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<HistoryMessage>>;
    /// Removes one delivered message.
    async fn remove(&self, app: &AppId, uid: &UserId, message: &HistoryMessage) -> StoreResult<()>;
}

#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Stores `message`, and drops the conversation's messages older than `retention_ms` before
    /// it.
    async fn append(
        &self,
        app: &AppId,
        conversation: &Conversation,
        message: HistoryMessage,
        retention_ms: i64,
    ) -> StoreResult<()>;
    async fn query(
        &self,
        app: &AppId,
        conversation: &Conversation,
        query: HistoryQuery,
    ) -> StoreResult<Vec<HistoryMessage>>;
    async fn count(
        &self,
        app: &AppId,
        conversation: &Conversation,
        start_ms: i64,
        end_ms: i64,
    ) -> StoreResult<u64>;
    /// Drops every message of `app` received before `cutoff_ms` (for conversations that no
    /// append has trimmed lately). Returns how many. Backends that expire keys by themselves do
    /// nothing here.
    async fn purge(&self, app: &AppId, cutoff_ms: i64) -> StoreResult<u64>;
}

#[async_trait]
pub trait ChannelAttributeStore: Send + Sync + 'static {
    async fn get(
        &self,
        app: &AppId,
        channel: &ChannelId,
    ) -> StoreResult<Option<StoredChannelAttributes>>;
    /// Replaces the record; an empty attribute list deletes it.
    async fn put(
        &self,
        app: &AppId,
        channel: &ChannelId,
        record: StoredChannelAttributes,
    ) -> StoreResult<()>;
    /// Replaces the record only if it is still `expected` (`None`: there is none), atomically.
    /// Returns whether it did; a read-modify-write retries on `false`, so concurrent writers
    /// cannot break the attribute limits between them.
    async fn replace(
        &self,
        app: &AppId,
        channel: &ChannelId,
        expected: Option<StoredChannelAttributes>,
        record: StoredChannelAttributes,
    ) -> StoreResult<bool>;
    /// Deletes records whose `expires_at_ms` has passed. At start-up, when no channel has
    /// members, `orphans_expire_at` gives every record without an expiry (left so by a crash)
    /// that expiry. Returns how many records were deleted.
    async fn expire(&self, now_ms: i64, orphans_expire_at: Option<i64>) -> StoreResult<u64>;
}

/// Per-channel sequence high-water marks, so sequence numbers never go back after a restart.
#[async_trait]
pub trait SequenceStore: Send + Sync + 'static {
    async fn high_water(&self, app: &AppId, channel: &ChannelId) -> StoreResult<u64>;
    /// Raises the mark to `high_water`; a lower value leaves it as it is.
    async fn set_high_water(
        &self,
        app: &AppId,
        channel: &ChannelId,
        high_water: u64,
    ) -> StoreResult<()>;
}

#[async_trait]
pub trait UserAttributeStore: Send + Sync + 'static {
    async fn user_attributes(&self, app: &AppId, uid: &UserId)
    -> StoreResult<StoredUserAttributes>;
    /// Replaces them; an empty set deletes the record.
    async fn set_user_attributes(
        &self,
        app: &AppId,
        uid: &UserId,
        attributes: StoredUserAttributes,
    ) -> StoreResult<()>;
}

/// Where a user's sessions are (edge node and session), so a node taking over the user knows.
#[async_trait]
pub trait SessionDirectory: Send + Sync + 'static {
    async fn register_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()>;
    async fn unregister_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()>;
    async fn sessions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<SessionRef>>;
}

/// The other regions a user has sessions in, as their region bridges said, so a peer message
/// to a user who is not here goes where the user is.
#[async_trait]
pub trait RegionDirectory: Send + Sync + 'static {
    /// `region` told that `uid` has sessions there (`online`), or no longer has.
    async fn set_user_region(
        &self,
        app: &AppId,
        uid: &UserId,
        region: &str,
        online: bool,
    ) -> StoreResult<()>;
    /// The regions, sorted.
    async fn user_regions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<String>>;
}

/// Whether the store answers at all (an owner's readiness, `/readyz`).
#[async_trait]
pub trait Reachable: Send + Sync + 'static {
    async fn ping(&self) -> StoreResult<()>;
}

/// Bans and mutes, so they outlive the owner that set them.
#[async_trait]
pub trait RestrictionStore: Send + Sync + 'static {
    /// Stores `restriction`, replacing the user's earlier one in `scope`.
    async fn restrict(
        &self,
        app: &AppId,
        scope: &Scope,
        restriction: Restriction,
    ) -> StoreResult<()>;
    /// Removes the user's restriction in `scope`; whether one was in force at `now_ms`.
    async fn lift(
        &self,
        app: &AppId,
        scope: &Scope,
        uid: &UserId,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// The user's restriction in `scope`, if in force at `now_ms`.
    async fn restriction(
        &self,
        app: &AppId,
        scope: &Scope,
        uid: &UserId,
        now_ms: i64,
    ) -> StoreResult<Option<Restriction>>;
    /// Every restriction in `scope` in force at `now_ms`, by uid. Expired ones are dropped.
    async fn restrictions(
        &self,
        app: &AppId,
        scope: &Scope,
        now_ms: i64,
    ) -> StoreResult<Vec<Restriction>>;
}

/// Per-app logs of user and channel events, newest kept within count and age limits.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` in order, giving each its id, then drops the stream's events beyond
    /// `limits` (count, and age measured from `now_ms`).
    async fn append_events(
        &self,
        app: &AppId,
        stream: EventStream,
        events: Vec<StoredEvent>,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// At most `limit` events with ids above `after`, oldest first.
    async fn events(
        &self,
        app: &AppId,
        stream: EventStream,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;
}

/// The id an event log gives the next event: one more than the last, and never less than the
/// append time in µs, so ids keep growing even after the log was emptied.
pub fn next_event_id(last: u64, now_ms: i64) -> u64 {
    (last + 1).max(now_ms.max(0) as u64 * 1000)
}

/// Everything an owner stores.
pub trait Store:
    InboxStore
    + HistoryStore
    + ChannelAttributeStore
    + SequenceStore
    + UserAttributeStore
    + SessionDirectory
    + RegionDirectory
    + RestrictionStore
    + EventLog
    + Reachable
{
}

impl<
    T: InboxStore
        + HistoryStore
        + ChannelAttributeStore
        + SequenceStore
        + UserAttributeStore
        + SessionDirectory
        + RegionDirectory
        + RestrictionStore
        + EventLog
        + Reachable,
> Store for T
{
}
