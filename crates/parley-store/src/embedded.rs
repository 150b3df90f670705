//! [`EmbeddedStore`]: every storage trait on one local redb file.
//!
//! Writes go to one writer thread that commits whatever has queued up in a single durable
//! transaction (group commit): an acknowledged write is on disk, and a burst of writes costs one
//! fsync rather than one each. Reads run on tokio's blocking pool against MVCC snapshots and never
//! wait for the writer.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use prost::Message;
use redb::Database;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use redb::WriteTransaction;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

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
use crate::keys::Key;
use crate::keys::prefix_end;
use crate::keys::u64_at_end;
use crate::next_event_id;

const INBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("inbox");
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");
const CHANNEL_ATTRIBUTES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("channel_attributes");
const SEQUENCES: TableDefinition<&[u8], u64> = TableDefinition::new("sequences");
const USER_ATTRIBUTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("user_attributes");
const RESTRICTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("restrictions");
const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// How many events each log holds, so appending trims without counting the log.
const EVENT_COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("event_counts");

/// Writes queued for the writer thread. Overflow policy: callers wait.
const WRITE_QUEUE: usize = 1024;
/// Most writes committed together.
const GROUP_COMMIT: usize = 256;

type WriteFn = Box<dyn FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send>;

struct WriteJob {
    write: WriteFn,
    done_tx: oneshot::Sender<StoreResult<()>>,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    write_tx: mpsc::Sender<WriteJob>,
    /// The session directory lives in memory: in one process, sessions die with it.
    // A std lock: short inserts and removes, never held across an await.
    sessions: Arc<Mutex<SessionTable>>,
    /// So does the region directory: `parley dev` is one node.
    regions: Arc<Mutex<RegionTable>>,
}

/// Other regions by user.
type RegionTable = HashMap<(AppId, UserId), BTreeSet<String>>;

/// Sessions by user.
type SessionTable = HashMap<(AppId, UserId), Vec<SessionRef>>;

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError(error.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/parley.redb` and starts the writer thread, which ends when the
    /// last handle is dropped.
    pub fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let db = Arc::new(Database::create(dir.join("parley.redb")).map_err(failed)?);
        {
            // Create every table up front so readers never meet a missing one.
            let txn = db.begin_write().map_err(failed)?;
            txn.open_table(INBOX).map_err(failed)?;
            txn.open_table(HISTORY).map_err(failed)?;
            txn.open_table(CHANNEL_ATTRIBUTES).map_err(failed)?;
            txn.open_table(SEQUENCES).map_err(failed)?;
            // Sessions do not outlive the process that held them, and user attributes go with
            // their user's sessions: a (re)start begins without either.
            txn.delete_table(USER_ATTRIBUTES).map_err(failed)?;
            txn.open_table(USER_ATTRIBUTES).map_err(failed)?;
            txn.open_table(RESTRICTIONS).map_err(failed)?;
            txn.open_table(EVENTS).map_err(failed)?;
            txn.open_table(EVENT_COUNTS).map_err(failed)?;
            txn.commit().map_err(failed)?;
        }
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("parley-store-writer".into())
            .spawn(move || write_loop(&writer_db, write_rx))
            .map_err(failed)?;
        Ok(EmbeddedStore {
            db,
            write_tx,
            sessions: Arc::default(),
            regions: Arc::default(),
        })
    }

    async fn write(
        &self,
        write: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    ) -> StoreResult<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.write_tx
            .send(WriteJob {
                write: Box::new(write),
                done_tx,
            })
            .await
            .map_err(|_| StoreError("the store writer stopped".into()))?;
        done_rx
            .await
            .map_err(|_| StoreError("the store writer dropped a write".into()))?
    }

    /// Stores `value` under `key`, or removes the key when there is no value.
    async fn put_or_remove(
        &self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> StoreResult<()> {
        self.write(move |txn| {
            let mut table = txn.open_table(table)?;
            match value {
                Some(value) => {
                    table.insert(key.as_slice(), value.as_slice())?;
                }
                None => {
                    table.remove(key.as_slice())?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(failed)?;
            read(&txn).map_err(failed)
        })
        .await
        .map_err(failed)?
    }
}

fn write_loop(db: &Database, mut write_rx: mpsc::Receiver<WriteJob>) {
    while let Some(first) = write_rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_COMMIT {
            match write_rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let outcome = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            let mut done = Vec::with_capacity(jobs.len());
            for job in jobs.drain(..) {
                (job.write)(&txn)?;
                done.push(job.done_tx);
            }
            txn.commit()?;
            for done_tx in done {
                let _ = done_tx.send(Ok(()));
            }
            Ok(())
        })();
        if let Err(error) = outcome {
            // The whole group is rolled back; its callers (whose senders were dropped with the
            // jobs) see the write as failed.
            tracing::error!(%error, "store commit failed");
        }
    }
}

fn inbox_prefix(app: &AppId, uid: &UserId) -> Vec<u8> {
    Key::new(b'i')
        .str(app.as_str())
        .str(uid.as_str())
        .into_bytes()
}

fn conversation_prefix(app: &AppId, conversation: &Conversation) -> Vec<u8> {
    let key = Key::new(b'h').str(app.as_str());
    match conversation {
        Conversation::Peer(a, b) => key.str("p").str(a.as_str()).str(b.as_str()),
        Conversation::Channel(channel) => key.str("c").str(channel.as_str()),
    }
    .into_bytes()
}

fn channel_key(app: &AppId, channel: &ChannelId) -> Vec<u8> {
    Key::new(b'a')
        .str(app.as_str())
        .str(channel.as_str())
        .into_bytes()
}

fn with_suffix(prefix: &[u8], ts: i64, id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&(ts.max(0) as u64).to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Drops the oldest entries under `prefix` (keys sort oldest first): those `too_old` says are,
/// then those beyond `max_count`.
fn trim(
    table: &mut redb::Table<&[u8], &[u8]>,
    prefix: &[u8],
    max_count: usize,
    too_old: impl Fn(&[u8]) -> bool,
) -> Result<(), redb::Error> {
    let end = prefix_end(prefix);
    let mut keys = Vec::new();
    for entry in table.range(prefix..end.as_slice())? {
        keys.push(entry?.0.value().to_vec());
    }
    let old = keys.iter().take_while(|key| too_old(key)).count();
    let over = keys.len().saturating_sub(old).saturating_sub(max_count);
    for key in keys.iter().take(old + over) {
        table.remove(key.as_slice())?;
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<HistoryMessage, redb::Error> {
    HistoryMessage::decode(bytes).map_err(|error| redb::Error::Corrupted(error.to_string()))
}

#[async_trait]
impl InboxStore for EmbeddedStore {
    async fn push(
        &self,
        app: &AppId,
        uid: &UserId,
        message: HistoryMessage,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()> {
        let prefix = inbox_prefix(app, uid);
        self.write(move |txn| {
            let mut table = txn.open_table(INBOX)?;
            let key = with_suffix(&prefix, message.server_received_ts, message.message_id);
            table.insert(key.as_slice(), message.encode_to_vec().as_slice())?;
            let cutoff = now_ms - limits.max_age_ms;
            trim(&mut table, &prefix, limits.max_count, |key| {
                (u64_at_end(key, 16) as i64) < cutoff
            })
        })
        .await
    }

    async fn list(
        &self,
        app: &AppId,
        uid: &UserId,
        max_age_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<HistoryMessage>> {
        let prefix = inbox_prefix(app, uid);
        let start = with_suffix(&prefix, now_ms - max_age_ms, 0);
        self.read(move |txn| {
            let table = txn.open_table(INBOX)?;
            let end = prefix_end(&prefix);
            let mut messages = Vec::new();
            for entry in table.range(start.as_slice()..end.as_slice())? {
                messages.push(decode(entry?.1.value())?);
            }
            Ok(messages)
        })
        .await
    }

    async fn remove(&self, app: &AppId, uid: &UserId, message: &HistoryMessage) -> StoreResult<()> {
        let key = with_suffix(
            &inbox_prefix(app, uid),
            message.server_received_ts,
            message.message_id,
        );
        self.write(move |txn| {
            txn.open_table(INBOX)?.remove(key.as_slice())?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn append(
        &self,
        app: &AppId,
        conversation: &Conversation,
        message: HistoryMessage,
        retention_ms: i64,
    ) -> StoreResult<()> {
        let prefix = conversation_prefix(app, conversation);
        let key = with_suffix(&prefix, message.server_received_ts, message.message_id);
        let cutoff = with_suffix(&prefix, message.server_received_ts - retention_ms, 0);
        self.write(move |txn| {
            let mut table = txn.open_table(HISTORY)?;
            table.insert(key.as_slice(), message.encode_to_vec().as_slice())?;
            let mut old = Vec::new();
            for entry in table.range(prefix.as_slice()..cutoff.as_slice())? {
                old.push(entry?.0.value().to_vec());
            }
            for key in &old {
                table.remove(key.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn query(
        &self,
        app: &AppId,
        conversation: &Conversation,
        query: HistoryQuery,
    ) -> StoreResult<Vec<HistoryMessage>> {
        let prefix = conversation_prefix(app, conversation);
        let mut start = with_suffix(&prefix, query.start_ms, 0);
        let mut end = if query.end_ms > 0 {
            with_suffix(&prefix, query.end_ms, 0)
        } else {
            prefix_end(&prefix)
        };
        match (query.order, query.after) {
            (Order::Ascending, Some((ts, id))) => {
                start = with_suffix(&prefix, ts, id.saturating_add(1)).max(start);
            }
            (Order::Descending, Some((ts, id))) => {
                end = with_suffix(&prefix, ts, id).min(end);
            }
            (_, None) => {}
        }
        self.read(move |txn| {
            let table = txn.open_table(HISTORY)?;
            let mut messages = Vec::new();
            if start >= end {
                return Ok(messages);
            }
            let range = table.range(start.as_slice()..end.as_slice())?;
            let entries: Box<dyn Iterator<Item = _>> = match query.order {
                Order::Ascending => Box::new(range),
                Order::Descending => Box::new(range.rev()),
            };
            for entry in entries.take(query.limit) {
                messages.push(decode(entry?.1.value())?);
            }
            Ok(messages)
        })
        .await
    }

    async fn count(
        &self,
        app: &AppId,
        conversation: &Conversation,
        start_ms: i64,
        end_ms: i64,
    ) -> StoreResult<u64> {
        let prefix = conversation_prefix(app, conversation);
        let start = with_suffix(&prefix, start_ms, 0);
        let end = if end_ms > 0 {
            with_suffix(&prefix, end_ms, 0)
        } else {
            prefix_end(&prefix)
        };
        self.read(move |txn| {
            if start >= end {
                return Ok(0);
            }
            let table = txn.open_table(HISTORY)?;
            let mut count = 0;
            for entry in table.range(start.as_slice()..end.as_slice())? {
                entry?;
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn purge(&self, app: &AppId, cutoff_ms: i64) -> StoreResult<u64> {
        let prefix = Key::new(b'h').str(app.as_str()).into_bytes();
        let (done_tx, done_rx) = oneshot::channel();
        self.write(move |txn| {
            let mut table = txn.open_table(HISTORY)?;
            let end = prefix_end(&prefix);
            let mut old = Vec::new();
            for entry in table.range(prefix.as_slice()..end.as_slice())? {
                let (key, value) = entry?;
                if decode(value.value())?.server_received_ts < cutoff_ms {
                    old.push(key.value().to_vec());
                }
            }
            for key in &old {
                table.remove(key.as_slice())?;
            }
            let _ = done_tx.send(old.len() as u64);
            Ok(())
        })
        .await?;
        Ok(done_rx.await.unwrap_or(0))
    }
}

#[async_trait]
impl ChannelAttributeStore for EmbeddedStore {
    async fn get(
        &self,
        app: &AppId,
        channel: &ChannelId,
    ) -> StoreResult<Option<StoredChannelAttributes>> {
        let key = channel_key(app, channel);
        self.read(move |txn| {
            let table = txn.open_table(CHANNEL_ATTRIBUTES)?;
            let Some(value) = table.get(key.as_slice())? else {
                return Ok(None);
            };
            StoredChannelAttributes::decode(value.value())
                .map(Some)
                .map_err(|error| redb::Error::Corrupted(error.to_string()))
        })
        .await
    }

    async fn put(
        &self,
        app: &AppId,
        channel: &ChannelId,
        record: StoredChannelAttributes,
    ) -> StoreResult<()> {
        let value = (!record.attributes.is_empty()).then(|| record.encode_to_vec());
        self.put_or_remove(CHANNEL_ATTRIBUTES, channel_key(app, channel), value)
            .await
    }

    async fn replace(
        &self,
        app: &AppId,
        channel: &ChannelId,
        expected: Option<StoredChannelAttributes>,
        record: StoredChannelAttributes,
    ) -> StoreResult<bool> {
        let key = channel_key(app, channel);
        let expected = expected.map(|expected| expected.encode_to_vec());
        let (done_tx, done_rx) = oneshot::channel();
        self.write(move |txn| {
            let mut table = txn.open_table(CHANNEL_ATTRIBUTES)?;
            let current = table
                .get(key.as_slice())?
                .map(|value| value.value().to_vec());
            let swapped = current == expected;
            if swapped {
                if record.attributes.is_empty() {
                    table.remove(key.as_slice())?;
                } else {
                    table.insert(key.as_slice(), record.encode_to_vec().as_slice())?;
                }
            }
            let _ = done_tx.send(swapped);
            Ok(())
        })
        .await?;
        Ok(done_rx.await.unwrap_or(false))
    }

    async fn expire(&self, now_ms: i64, orphans_expire_at: Option<i64>) -> StoreResult<u64> {
        let (done_tx, done_rx) = oneshot::channel();
        self.write(move |txn| {
            let mut table = txn.open_table(CHANNEL_ATTRIBUTES)?;
            let mut expired = Vec::new();
            let mut orphans = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let record = StoredChannelAttributes::decode(value.value())
                    .map_err(|error| redb::Error::Corrupted(error.to_string()))?;
                if record.expires_at_ms == 0 {
                    if orphans_expire_at.is_some() {
                        orphans.push((key.value().to_vec(), record));
                    }
                } else if record.expires_at_ms <= now_ms {
                    expired.push(key.value().to_vec());
                }
            }
            for key in &expired {
                table.remove(key.as_slice())?;
            }
            for (key, mut record) in orphans {
                record.expires_at_ms = orphans_expire_at.unwrap_or_default();
                table.insert(key.as_slice(), record.encode_to_vec().as_slice())?;
            }
            let _ = done_tx.send(expired.len() as u64);
            Ok(())
        })
        .await?;
        Ok(done_rx.await.unwrap_or(0))
    }
}

#[async_trait]
impl SequenceStore for EmbeddedStore {
    async fn high_water(&self, app: &AppId, channel: &ChannelId) -> StoreResult<u64> {
        let key = channel_key(app, channel);
        self.read(move |txn| {
            let table = txn.open_table(SEQUENCES)?;
            Ok(table.get(key.as_slice())?.map_or(0, |value| value.value()))
        })
        .await
    }

    async fn set_high_water(
        &self,
        app: &AppId,
        channel: &ChannelId,
        high_water: u64,
    ) -> StoreResult<()> {
        let key = channel_key(app, channel);
        self.write(move |txn| {
            let mut table = txn.open_table(SEQUENCES)?;
            let current = table.get(key.as_slice())?.map_or(0, |value| value.value());
            // Marks only ever rise, whatever order concurrent writers commit in.
            if high_water > current {
                table.insert(key.as_slice(), high_water)?;
            }
            Ok(())
        })
        .await
    }
}

fn user_key(app: &AppId, uid: &UserId) -> Vec<u8> {
    Key::new(b'u')
        .str(app.as_str())
        .str(uid.as_str())
        .into_bytes()
}

#[async_trait]
impl UserAttributeStore for EmbeddedStore {
    async fn user_attributes(
        &self,
        app: &AppId,
        uid: &UserId,
    ) -> StoreResult<StoredUserAttributes> {
        let key = user_key(app, uid);
        self.read(move |txn| {
            let table = txn.open_table(USER_ATTRIBUTES)?;
            match table.get(key.as_slice())? {
                Some(value) => StoredUserAttributes::decode(value.value())
                    .map_err(|error| redb::Error::Corrupted(error.to_string())),
                None => Ok(StoredUserAttributes::default()),
            }
        })
        .await
    }

    async fn set_user_attributes(
        &self,
        app: &AppId,
        uid: &UserId,
        attributes: StoredUserAttributes,
    ) -> StoreResult<()> {
        let value = (!attributes.attributes.is_empty()).then(|| attributes.encode_to_vec());
        self.put_or_remove(USER_ATTRIBUTES, user_key(app, uid), value)
            .await
    }
}

#[async_trait]
impl SessionDirectory for EmbeddedStore {
    async fn register_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()> {
        let mut sessions = self.sessions.lock();
        let known = sessions.entry((app.clone(), uid.clone())).or_default();
        if !known.contains(&session) {
            known.push(session);
        }
        Ok(())
    }

    async fn unregister_session(
        &self,
        app: &AppId,
        uid: &UserId,
        session: SessionRef,
    ) -> StoreResult<()> {
        let mut sessions = self.sessions.lock();
        let key = (app.clone(), uid.clone());
        if let Some(known) = sessions.get_mut(&key) {
            known.retain(|existing| *existing != session);
            if known.is_empty() {
                sessions.remove(&key);
            }
        }
        Ok(())
    }

    async fn sessions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<SessionRef>> {
        let sessions = self.sessions.lock();
        Ok(sessions
            .get(&(app.clone(), uid.clone()))
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl RegionDirectory for EmbeddedStore {
    async fn set_user_region(
        &self,
        app: &AppId,
        uid: &UserId,
        region: &str,
        online: bool,
    ) -> StoreResult<()> {
        let mut regions = self.regions.lock();
        let key = (app.clone(), uid.clone());
        if online {
            regions.entry(key).or_default().insert(region.to_owned());
        } else if let Some(known) = regions.get_mut(&key) {
            known.remove(region);
            if known.is_empty() {
                regions.remove(&key);
            }
        }
        Ok(())
    }

    async fn user_regions(&self, app: &AppId, uid: &UserId) -> StoreResult<Vec<String>> {
        let regions = self.regions.lock();
        Ok(regions
            .get(&(app.clone(), uid.clone()))
            .map(|known| known.iter().cloned().collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl Reachable for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        // In the process: it answers whenever the process does.
        Ok(())
    }
}

/// The keys of a scope's restrictions: app, then the channel (empty for bans), then the uid.
fn restrictions_prefix(app: &AppId, scope: &Scope) -> Vec<u8> {
    let scope = match scope {
        Scope::Login => "",
        Scope::Channel(channel) => channel.as_str(),
    };
    Key::new(b'r').str(app.as_str()).str(scope).into_bytes()
}

fn restriction_key(app: &AppId, scope: &Scope, uid: &UserId) -> Vec<u8> {
    let mut key = restrictions_prefix(app, scope);
    key.extend_from_slice(uid.as_str().as_bytes());
    key.push(0);
    key
}

fn corrupted(error: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(error.to_string())
}

#[async_trait]
impl RestrictionStore for EmbeddedStore {
    async fn restrict(
        &self,
        app: &AppId,
        scope: &Scope,
        restriction: Restriction,
    ) -> StoreResult<()> {
        let uid = UserId::parse(&restriction.uid).map_err(failed)?;
        let key = restriction_key(app, scope, &uid);
        self.put_or_remove(RESTRICTIONS, key, Some(restriction.encode_to_vec()))
            .await
    }

    async fn lift(
        &self,
        app: &AppId,
        scope: &Scope,
        uid: &UserId,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let in_force = self.restriction(app, scope, uid, now_ms).await?.is_some();
        self.put_or_remove(RESTRICTIONS, restriction_key(app, scope, uid), None)
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
        let key = restriction_key(app, scope, uid);
        self.read(move |txn| {
            let table = txn.open_table(RESTRICTIONS)?;
            let Some(value) = table.get(key.as_slice())? else {
                return Ok(None);
            };
            let restriction = Restriction::decode(value.value()).map_err(corrupted)?;
            Ok((restriction.until_ms > now_ms).then_some(restriction))
        })
        .await
    }

    async fn restrictions(
        &self,
        app: &AppId,
        scope: &Scope,
        now_ms: i64,
    ) -> StoreResult<Vec<Restriction>> {
        let prefix = restrictions_prefix(app, scope);
        let (in_force, expired) = self
            .read(move |txn| {
                let table = txn.open_table(RESTRICTIONS)?;
                let end = prefix_end(&prefix);
                let (mut in_force, mut expired) = (Vec::new(), Vec::new());
                for entry in table.range(prefix.as_slice()..end.as_slice())? {
                    let (key, value) = entry?;
                    let restriction = Restriction::decode(value.value()).map_err(corrupted)?;
                    if restriction.until_ms > now_ms {
                        in_force.push(restriction);
                    } else {
                        expired.push(key.value().to_vec());
                    }
                }
                Ok((in_force, expired))
            })
            .await?;
        if !expired.is_empty() {
            self.write(move |txn| {
                let mut table = txn.open_table(RESTRICTIONS)?;
                for key in expired {
                    table.remove(key.as_slice())?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(in_force)
    }
}

fn events_prefix(app: &AppId, stream: EventStream) -> Vec<u8> {
    Key::new(b'e')
        .str(app.as_str())
        .str(stream.as_str())
        .into_bytes()
}

#[async_trait]
impl EventLog for EmbeddedStore {
    async fn append_events(
        &self,
        app: &AppId,
        stream: EventStream,
        events: Vec<StoredEvent>,
        limits: InboxLimits,
        now_ms: i64,
    ) -> StoreResult<()> {
        let prefix = events_prefix(app, stream);
        self.write(move |txn| {
            let mut table = txn.open_table(EVENTS)?;
            let mut counts = txn.open_table(EVENT_COUNTS)?;
            let end = prefix_end(&prefix);
            let mut count = match counts.get(prefix.as_slice())? {
                Some(count) => count.value(),
                // A log written before counts were kept: counted once.
                None => table.range(prefix.as_slice()..end.as_slice())?.count() as u64,
            };
            let mut last = match table.range(prefix.as_slice()..end.as_slice())?.next_back() {
                Some(entry) => u64_at_end(entry?.0.value(), 8),
                None => 0,
            };
            for mut event in events {
                last = next_event_id(last, now_ms);
                event.id = last;
                let mut key = prefix.clone();
                key.extend_from_slice(&last.to_be_bytes());
                table.insert(key.as_slice(), event.encode_to_vec().as_slice())?;
                count += 1;
            }
            // The oldest go first: those past the age limit, then those over the count. Only
            // what goes is read.
            let cutoff = next_event_id(0, now_ms - limits.max_age_ms);
            let mut doomed = Vec::new();
            for entry in table.range(prefix.as_slice()..end.as_slice())? {
                let key = entry?.0.value().to_vec();
                let over = count - doomed.len() as u64 > limits.max_count as u64;
                if !over && u64_at_end(&key, 8) >= cutoff {
                    break;
                }
                doomed.push(key);
            }
            for key in &doomed {
                table.remove(key.as_slice())?;
            }
            counts.insert(prefix.as_slice(), count - doomed.len() as u64)?;
            Ok(())
        })
        .await
    }

    async fn events(
        &self,
        app: &AppId,
        stream: EventStream,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let prefix = events_prefix(app, stream);
        let mut start = prefix.clone();
        start.extend_from_slice(&after.saturating_add(1).to_be_bytes());
        self.read(move |txn| {
            let table = txn.open_table(EVENTS)?;
            let end = prefix_end(&prefix);
            let mut events = Vec::new();
            for entry in table.range(start.as_slice()..end.as_slice())?.take(limit) {
                let (key, value) = entry?;
                let mut event = StoredEvent::decode(value.value()).map_err(corrupted)?;
                event.id = u64_at_end(key.value(), 8);
                events.push(event);
            }
            Ok(events)
        })
        .await
    }
}
