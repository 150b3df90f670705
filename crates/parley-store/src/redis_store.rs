//! [`RedisStore`]: every storage trait on Redis, a single server or a Redis Cluster.
//!
//! - Keys of one user, channel or conversation share a hash tag, so they live in one slot.
//! - Inboxes and histories are sorted sets ordered by member bytes: big-endian timestamp, message
//!   id, then the protobuf record — so time ranges and paging are lexicographic ranges, and
//!   writes that must be atomic (insert, trim by age and count, refresh the TTL) are one script.
//! - A hung Redis trips a breaker: after one call times out, calls fail at once for a second, so
//!   callers are not held up one timeout each.
//! - Retention is Redis's own doing: each write trims what is too old and sets the key's TTL, so
//!   nothing ever scans for old data.
//! - Connections are multiplexed and reconnect by themselves; every call is bounded by
//!   [`OPERATION_TIMEOUT`], so an unreachable Redis turns into prompt errors, not hung clients.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use async_trait::async_trait;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use prost::Message;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use crate::ChannelAttributeStore;
use crate::Conversation;
use crate::EventLog;
use crate::EventStream;
use crate::HistoryMessage;
use crate::HistoryQuery;
use crate::HistoryStore;
use crate::InboxLimits;
use crate::InboxStore;
use crate::Order;
use crate::Reachable;
use crate::RegionDirectory;
use crate::Restriction;
use crate::RestrictionStore;
use crate::Scope;
use crate::SequenceStore;
use crate::SessionDirectory;
use crate::StoreError;
use crate::StoreResult;
use crate::StoredChannelAttributes;
use crate::StoredEvent;
use crate::StoredUserAttributes;
use crate::UserAttributeStore;

/// The longest any one Redis call may take before it counts as failed.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(1);
/// After a call times out, calls fail at once for this long instead of waiting out the timeout
/// each (a circuit breaker), so a hung Redis costs callers one timeout, not one per call.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Adds a member, drops members older than the cutoff and beyond the count, refreshes the TTL.
/// KEYS[1] the sorted set; ARGV: member, exclusive lex cutoff, max count (0 = no limit), ttl ms.
const APPEND_AND_TRIM: &str = r"
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[2])
local max = tonumber(ARGV[3])
if max > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - max
  if excess > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 0
";

/// Compare-and-set of a record. KEYS[1] the record; ARGV: '1' if a current value is expected
/// (else none), the expected bytes, the new bytes ('' deletes), the expiry in ms since the epoch
/// (0: none). Returns 1 if it replaced the record.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3])
  if tonumber(ARGV[4]) > 0 then
    redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  end
end
return 1
";

/// Raises a high-water mark, never lowers it. KEYS[1] the mark; ARGV[1] the new value.
const RAISE: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
";

/// Appends events to a log: a sorted set of `id:record` members scored by id. KEYS[1] the log;
/// ARGV: now (ms), max count, max age (ms), then the records. Ids follow `next_event_id`.
const APPEND_EVENTS: &str = r"
local now = tonumber(ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local id = 0
if last[2] then id = tonumber(last[2]) end
for i = 4, #ARGV do
  id = math.max(id + 1, now * 1000)
  redis.call('ZADD', KEYS[1], id, string.format('%d', id) .. ':' .. ARGV[i])
end
local cutoff = (now - tonumber(ARGV[3])) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', cutoff))
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
";

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    /// Until when calls fail at once after a timeout. A std lock: read and set, never held
    /// across an await.
    breaker: Arc<Mutex<Option<Instant>>>,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError(format!("redis: {error}"))
}

impl RedisStore {
    /// Connects to `redis://HOST:PORT` (one server) or `redis-cluster://H1:P1,H2:P2,…` (a
    /// cluster, given any of its nodes).
    pub async fn connect(url: &str) -> StoreResult<RedisStore> {
        let connection = if let Some(nodes) = url.strip_prefix("redis-cluster://") {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(|node| format!("redis://{}", node.trim()))
                .collect();
            let client = redis::cluster::ClusterClient::new(nodes).map_err(failed)?;
            let connection = tokio::time::timeout(OPERATION_TIMEOUT, client.get_async_connection())
                .await
                .map_err(|_| failed("timed out connecting to the cluster"))?
                .map_err(failed)?;
            Connection::Cluster(connection)
        } else {
            let client = redis::Client::open(url).map_err(failed)?;
            let manager = tokio::time::timeout(OPERATION_TIMEOUT, ConnectionManager::new(client))
                .await
                .map_err(|_| failed("timed out connecting"))?
                .map_err(failed)?;
            Connection::Single(manager)
        };
        Ok(RedisStore {
            connection,
            breaker: Arc::default(),
        })
    }

    /// Runs one Redis call within [`OPERATION_TIMEOUT`], behind the breaker.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        self.guarded(call, Trips::Breaker).await
    }

    /// Like [`Self::bounded`]; with [`Trips::Nothing`] a timeout fails only this call: for
    /// best-effort writes (the event logs) whose slowness must not make messaging unavailable.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
        trips: Trips,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let open_until = *self.breaker.lock();
        if open_until.is_some_and(|until| started < until) {
            parley_telemetry::store_call(started, Some("breaker_open"));
            return Err(failed("not answering (recent calls timed out)"));
        }
        let (outcome, failure) = match tokio::time::timeout(OPERATION_TIMEOUT, call).await {
            Ok(Ok(value)) => (Ok(value), None),
            Ok(Err(error)) if !unreachable(&error) => (Err(failed(error)), Some("error")),
            Ok(Err(error)) => {
                if trips == Trips::Breaker {
                    self.trip();
                }
                (Err(failed(error)), Some("unreachable"))
            }
            Err(_) => {
                if trips == Trips::Breaker {
                    self.trip();
                }
                (Err(failed("timed out")), Some("timeout"))
            }
        };
        parley_telemetry::store_call(started, failure);
        if outcome.is_ok() && open_until.is_some() {
            *self.breaker.lock() = None;
        }
        outcome
    }

    fn trip(&self) {
        *self.breaker.lock() = Some(Instant::now() + BREAKER_OPEN);
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> StoreResult<T> {
        let call = async {
            match self.connection.clone() {
                Connection::Single(mut connection) => command.query_async(&mut connection).await,
                Connection::Cluster(mut connection) => command.query_async(&mut connection).await,
            }
        };
        self.bounded(call).await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        source: &str,
        key: &str,
        args: &[&[u8]],
    ) -> StoreResult<T> {
        self.script_tripping(source, key, args, Trips::Breaker)
            .await
    }

    async fn script_tripping<T: redis::FromRedisValue>(
        &self,
        source: &str,
        key: &str,
        args: &[&[u8]],
        trips: Trips,
    ) -> StoreResult<T> {
        let script = redis::Script::new(source);
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        let call = async {
            match self.connection.clone() {
                Connection::Single(mut connection) => {
                    invocation.invoke_async::<T>(&mut connection).await
                }
                Connection::Cluster(mut connection) => {
                    invocation.invoke_async::<T>(&mut connection).await
                }
            }
        };
        self.guarded(call, trips).await
    }
}

/// Whether a call that times out opens the breaker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trips {
    Breaker,
    Nothing,
}

/// Whether an error says Redis did not answer in time, which is what trips the breaker. (A
/// refused or dropped connection fails fast by itself and needs no breaker.)
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_timeout()
}

fn inbox_key(app: &AppId, uid: &UserId) -> String {
    format!("parley:{{{app}:u:{uid}}}:inbox")
}

fn history_key(app: &AppId, conversation: &Conversation) -> String {
    match conversation {
        // Uids may hold `:`: the first one's length keeps (`x:y`, `z`) apart from (`x`, `y:z`).
        Conversation::Peer(a, b) => {
            format!("parley:{{{app}:p:{}:{a}:{b}}}:history", a.as_str().len())
        }
        Conversation::Channel(channel) => format!("parley:{{{app}:c:{channel}}}:history"),
    }
}

fn channel_key(app: &AppId, channel: &ChannelId, what: &str) -> String {
    format!("parley:{{{app}:c:{channel}}}:{what}")
}

/// The sort prefix of a member: big-endian timestamp and message id.
fn prefix(ts: i64, id: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&(ts.max(0) as u64).to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes
}

fn member(message: &HistoryMessage) -> Vec<u8> {
    let mut bytes = prefix(message.server_received_ts, message.message_id);
    message.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

fn from_member(bytes: &[u8]) -> StoreResult<HistoryMessage> {
    let record = bytes
        .get(16..)
        .ok_or_else(|| failed("short sorted-set member"))?;
    HistoryMessage::decode(record).map_err(failed)
}

/// A lex range bound: `[` inclusive or `(` exclusive, then the bytes.
fn bound(inclusive: bool, bytes: &[u8]) -> Vec<u8> {
    let mut bound = vec![if inclusive { b'[' } else { b'(' }];
    bound.extend_from_slice(bytes);
    bound
}

#[async_trait]
impl InboxStore for RedisStore {
    async fn push(
        &self,
        app: &AppId,
        uid: &UserId,
        message: HistoryMessage,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()> {
        let cutoff = bound(false, &prefix(now_ms - limits.max_age_ms, 0));
        self.script(
            APPEND_AND_TRIM,
            &inbox_key(app, uid),
            &[
                &member(&message),
                &cutoff,
                limits.max_count.to_string().as_bytes(),
                limits.max_age_ms.max(1).to_string().as_bytes(),
            ],
        )
        .await
    }

    async fn list(
        &self,
        app: &AppId,
        uid: &UserId,
        max_age_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<HistoryMessage>> {
        let members: Vec<Vec<u8>> = self
            .query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(inbox_key(app, uid))
                    .arg(bound(true, &prefix(now_ms - max_age_ms, 0)))
                    .arg("+"),
            )
            .await?;
        members.iter().map(|member| from_member(member)).collect()
    }

    async fn remove(&self, app: &AppId, uid: &UserId, message: &HistoryMessage) -> StoreResult<()> {
        self.query::<()>(
            redis::cmd("ZREM")
                .arg(inbox_key(app, uid))
                .arg(member(message)),
        )
        .await
    }
}

#[async_trait]
impl HistoryStore for RedisStore {
    async fn append(
        &self,
        app: &AppId,
        conversation: &Conversation,
        message: HistoryMessage,
        retention_ms: i64,
    ) -> StoreResult<()> {
        let cutoff = bound(false, &prefix(message.server_received_ts - retention_ms, 0));
        self.script(
            APPEND_AND_TRIM,
            &history_key(app, conversation),
            &[
                &member(&message),
                &cutoff,
                b"0",
                retention_ms.max(1).to_string().as_bytes(),
            ],
        )
        .await
    }

    async fn query(
        &self,
        app: &AppId,
        conversation: &Conversation,
        query: HistoryQuery,
    ) -> StoreResult<Vec<HistoryMessage>> {
        let mut low = bound(true, &prefix(query.start_ms, 0));
        let mut high = if query.end_ms > 0 {
            bound(false, &prefix(query.end_ms, 0))
        } else {
            b"+".to_vec()
        };
        match (query.order, query.after) {
            (Order::Ascending, Some((ts, id))) => {
                let after = prefix(ts, id.saturating_add(1));
                if after > prefix(query.start_ms, 0) {
                    low = bound(true, &after);
                }
            }
            (Order::Descending, Some((ts, id))) => {
                let before = prefix(ts, id);
                if query.end_ms <= 0 || before < prefix(query.end_ms, 0) {
                    high = bound(false, &before);
                }
            }
            (_, None) => {}
        }
        let key = history_key(app, conversation);
        let mut command = match query.order {
            Order::Ascending => {
                let mut command = redis::cmd("ZRANGEBYLEX");
                command.arg(&key).arg(low).arg(high);
                command
            }
            Order::Descending => {
                let mut command = redis::cmd("ZREVRANGEBYLEX");
                command.arg(&key).arg(high).arg(low);
                command
            }
        };
        command.arg("LIMIT").arg(0).arg(query.limit);
        let members: Vec<Vec<u8>> = self.query(&command).await?;
        members.iter().map(|member| from_member(member)).collect()
    }

    async fn count(
        &self,
        app: &AppId,
        conversation: &Conversation,
        start_ms: i64,
        end_ms: i64,
    ) -> StoreResult<u64> {
        let high = if end_ms > 0 {
            bound(false, &prefix(end_ms, 0))
        } else {
            b"+".to_vec()
        };
        self.query(
            redis::cmd("ZLEXCOUNT")
                .arg(history_key(app, conversation))
                .arg(bound(true, &prefix(start_ms, 0)))
                .arg(high),
        )
        .await
    }

    /// Nothing to do: every append trims its conversation and sets its TTL.
    async fn purge(&self, _app: &AppId, _cutoff_ms: i64) -> StoreResult<u64> {
        Ok(0)
    }
}

#[async_trait]
impl ChannelAttributeStore for RedisStore {
    async fn get(
        &self,
        app: &AppId,
        channel: &ChannelId,
    ) -> StoreResult<Option<StoredChannelAttributes>> {
        let bytes: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(channel_key(app, channel, "attributes")))
            .await?;
        bytes
            .map(|bytes| StoredChannelAttributes::decode(bytes.as_slice()).map_err(failed))
            .transpose()
    }

    async fn put(
        &self,
        app: &AppId,
        channel: &ChannelId,
        record: StoredChannelAttributes,
    ) -> StoreResult<()> {
        let key = channel_key(app, channel, "attributes");
        if record.attributes.is_empty() {
            return self.query::<()>(redis::cmd("DEL").arg(key)).await;
        }
        let mut command = redis::cmd("SET");
        command.arg(&key).arg(record.encode_to_vec());
        if record.expires_at_ms > 0 {
            // Redis forgets the record at its expiry time by itself.
            command.arg("PXAT").arg(record.expires_at_ms);
        }
        self.query::<()>(&command).await
    }

    async fn replace(
        &self,
        app: &AppId,
        channel: &ChannelId,
        expected: Option<StoredChannelAttributes>,
        record: StoredChannelAttributes,
    ) -> StoreResult<bool> {
        let (has_expected, expected) = match expected {
            Some(expected) => (b"1".as_slice(), expected.encode_to_vec()),
            None => (b"0".as_slice(), Vec::new()),
        };
        let new = if record.attributes.is_empty() {
            Vec::new()
        } else {
            record.encode_to_vec()
        };
        let swapped: i64 = self
            .script(
                COMPARE_AND_SET,
                &channel_key(app, channel, "attributes"),
                &[
                    has_expected,
                    &expected,
                    &new,
                    record.expires_at_ms.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(swapped == 1)
    }

    /// Nothing to do: records carry their expiry as a Redis TTL. A record left without one by a
    /// crashed owner gets it when its channel next empties.
    async fn expire(&self, _now_ms: i64, _orphans_expire_at: Option<i64>) -> StoreResult<u64> {
        Ok(0)
    }
}

#[async_trait]
impl SequenceStore for RedisStore {
    async fn high_water(&self, app: &AppId, channel: &ChannelId) -> StoreResult<u64> {
        let value: Option<u64> = self
            .query(redis::cmd("GET").arg(channel_key(app, channel, "seq")))
            .await?;
        Ok(value.unwrap_or(0))
    }

    async fn set_high_water(
        &self,
        app: &AppId,
        channel: &ChannelId,
        high_water: u64,
    ) -> StoreResult<()> {
        self.script(
            RAISE,
            &channel_key(app, channel, "seq"),
            &[high_water.to_string().as_bytes()],
        )
        .await
    }
}

fn user_key(app: &AppId, uid: &UserId, what: &str) -> String {
    format!("parley:{{{app}:u:{uid}}}:{what}")
}

#[async_trait]
impl UserAttributeStore for RedisStore {
    async fn user_attributes(
        &self,
        app: &AppId,
        uid: &UserId,
    ) -> StoreResult<StoredUserAttributes> {
        let bytes: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(user_key(app, uid, "attributes")))
            .await?;
        match bytes {
            Some(bytes) => StoredUserAttributes::decode(bytes.as_slice()).map_err(failed),
            None => Ok(StoredUserAttributes::default()),
        }
    }

    async fn set_user_attributes(
        &self,
        app: &AppId,
        uid: &UserId,
        attributes: StoredUserAttributes,
    ) -> StoreResult<()> {
        let key = user_key(app, uid, "attributes");
        if attributes.attributes.is_empty() {
            return self.query::<()>(redis::cmd("DEL").arg(key)).await;
        }
        self.query::<()>(redis::cmd("SET").arg(key).arg(attributes.encode_to_vec()))
            .await
    }
}

/// A directory entry: `edge:session`, both in decimal.
fn session_entry(session: SessionRef) -> String {
    format!("{}:{}", session.edge.0, session.session.0)
}

#[async_trait]
impl SessionDirectory for RedisStore {
    async fn register_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()> {
        self.query::<()>(
            redis::cmd("SADD")
                .arg(user_key(app, uid, "sessions"))
                .arg(session_entry(session)),
        )
        .await
    }

    async fn unregister_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()> {
        self.query::<()>(
            redis::cmd("SREM")
                .arg(user_key(app, uid, "sessions"))
                .arg(session_entry(session)),
        )
        .await
    }

    async fn sessions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<SessionRef>> {
        let entries: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(user_key(app, uid, "sessions")))
            .await?;
        let mut sessions: Vec<SessionRef> = entries
            .iter()
            .filter_map(|entry| {
                let (edge, session) = entry.split_once(':')?;
                Some(SessionRef {
                    edge: NodeId(edge.parse().ok()?),
                    session: SessionId(session.parse().ok()?),
                })
            })
            .collect();
        sessions.sort();
        Ok(sessions)
    }
}

#[async_trait]
impl RegionDirectory for RedisStore {
    async fn set_user_region(
        &self,
        app: &AppId,
        uid: &UserId,
        region: &str,
        online: bool,
    ) -> StoreResult<()> {
        let command = if online { "SADD" } else { "SREM" };
        self.query::<()>(
            redis::cmd(command)
                .arg(user_key(app, uid, "regions"))
                .arg(region),
        )
        .await
    }

    async fn user_regions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<String>> {
        let mut regions: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(user_key(app, uid, "regions")))
            .await?;
        regions.sort();
        Ok(regions)
    }
}

#[async_trait]
impl Reachable for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}

/// The hash of a scope's restrictions, one field per uid.
fn restrictions_key(app: &AppId, scope: &Scope) -> String {
    match scope {
        Scope::Login => format!("parley:{{{app}:bans}}"),
        Scope::Channel(channel) => channel_key(app, channel, "mutes"),
    }
}

fn decode_restriction(bytes: &[u8]) -> StoreResult<Restriction> {
    Restriction::decode(bytes).map_err(failed)
}

#[async_trait]
impl RestrictionStore for RedisStore {
    async fn restrict(
        &self,
        app: &AppId,
        scope: &Scope,
        restriction: Restriction,
    ) -> StoreResult<()> {
        let command = redis::cmd("HSET")
            .arg(restrictions_key(app, scope))
            .arg(&restriction.uid)
            .arg(restriction.encode_to_vec())
            .clone();
        self.query::<()>(&command).await
    }

    async fn lift(
        &self,
        app: &AppId,
        scope: &Scope,
        uid: &UserId,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let in_force = self.restriction(app, scope, uid, now_ms).await?.is_some();
        self.query::<()>(
            redis::cmd("HDEL")
                .arg(restrictions_key(app, scope))
                .arg(uid.as_str()),
        )
        .await?;
        Ok(in_force)
    }

    async fn restriction(
        &self,
        app: &AppId,
        scope: &Scope,
        uid: &UserId,
        now_ms: i64,
    ) -> StoreResult<Option<Restriction>> {
        let bytes: Option<Vec<u8>> = self
            .query(
                redis::cmd("HGET")
                    .arg(restrictions_key(app, scope))
                    .arg(uid.as_str()),
            )
            .await?;
        match bytes {
            Some(bytes) => {
                let restriction = decode_restriction(&bytes)?;
                Ok((restriction.until_ms > now_ms).then_some(restriction))
            }
            None => Ok(None),
        }
    }

    async fn restrictions(
        &self,
        app: &AppId,
        scope: &Scope,
        now_ms: i64,
    ) -> StoreResult<Vec<Restriction>> {
        let key = restrictions_key(app, scope);
        let fields: Vec<(String, Vec<u8>)> = self.query(redis::cmd("HGETALL").arg(&key)).await?;
        let mut in_force = Vec::with_capacity(fields.len());
        let mut expired = Vec::new();
        for (uid, bytes) in fields {
            let restriction = decode_restriction(&bytes)?;
            if restriction.until_ms > now_ms {
                in_force.push(restriction);
            } else {
                expired.push(uid);
            }
        }
        if !expired.is_empty() {
            self.query::<()>(redis::cmd("HDEL").arg(&key).arg(expired))
                .await?;
        }
        in_force.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(in_force)
    }
}

fn events_key(app: &AppId, stream: EventStream) -> String {
    format!("parley:{{{app}:events:{}}}", stream.as_str())
}

#[async_trait]
impl EventLog for RedisStore {
    async fn append_events(
        &self,
        app: &AppId,
        stream: EventStream,
        events: Vec<StoredEvent>,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()> {
        let head = [
            now_ms.to_string().into_bytes(),
            limits.max_count.to_string().into_bytes(),
            limits.max_age_ms.to_string().into_bytes(),
        ];
        let records: Vec<Vec<u8>> = events.iter().map(Message::encode_to_vec).collect();
        let args: Vec<&[u8]> = head
            .iter()
            .chain(records.iter())
            .map(Vec::as_slice)
            .collect();
        // Best effort: a slow event log must not open the breaker for messaging.
        self.script_tripping::<()>(
            APPEND_EVENTS,
            &events_key(app, stream),
            &args,
            Trips::Nothing,
        )
        .await
    }

    async fn events(
        &self,
        app: &AppId,
        stream: EventStream,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let members: Vec<Vec<u8>> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(events_key(app, stream))
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        members
            .iter()
            .map(|member| {
                let colon = member
                    .iter()
                    .position(|byte| *byte == b':')
                    .ok_or_else(|| failed("an event without its id"))?;
                let id = std::str::from_utf8(&member[..colon])
                    .ok()
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| failed("an event with a malformed id"))?;
                let mut event = StoredEvent::decode(&member[colon + 1..]).map_err(failed)?;
                event.id = id;
                Ok(event)
            })
            .collect()
    }
}
