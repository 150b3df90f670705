//! Raft's log, vote and snapshot on disk (one redb file), and the state machine they feed.
//!
//! The state machine is small (a few records per node), so it lives in memory and is persisted
//! as snapshots; after a restart it is rebuilt from the last snapshot and the log after it.

// openraft's storage traits fix the error type, large as it is.
#![allow(clippy::result_large_err)]

use parking_lot::Mutex;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::RaftStorage;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::StoredMembership;
use openraft::Vote;
use openraft::storage::LogState;
use redb::Database;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::state::ClusterState;
use crate::state::Command;
use crate::state::Outcome;

openraft::declare_raft_types!(
    /// Meta's Raft: commands on the cluster state, node ids are `u64`, addresses `BasicNode`.
    pub TypeConfig: D = Command, R = Outcome,
);

type StorageResult<T> = Result<T, StorageError<u64>>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const VALUES: TableDefinition<&str, &[u8]> = TableDefinition::new("values");
const VOTE: &str = "vote";
const LAST_PURGED: &str = "last_purged";
const SNAPSHOT: &str = "snapshot";

/// What the state machine holds, and what a snapshot carries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Machine {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    cluster: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

struct Inner {
    db: Database,
    machine: Mutex<Machine>,
    /// The cluster state after every apply, for the services that answer nodes.
    published: watch::Sender<ClusterState>,
}

/// The storage handed to openraft; clones share one database.
#[derive(Clone)]
pub struct MetaStorage {
    inner: Arc<Inner>,
}

fn io_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write(&error).into()
}

fn read_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read(&error).into()
}

impl MetaStorage {
    /// Opens (or creates) `dir/meta.redb` and rebuilds the state machine from its snapshot.
    pub fn open(dir: &Path) -> anyhow::Result<MetaStorage> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join("meta.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(VALUES)?;
        txn.commit()?;
        let storage = MetaStorage {
            inner: Arc::new(Inner {
                db,
                machine: Mutex::new(Machine::default()),
                published: watch::channel(ClusterState::default()).0,
            }),
        };
        if let Some(snapshot) = storage.read_value::<StoredSnapshot>(SNAPSHOT)? {
            let machine: Machine = serde_json::from_slice(&snapshot.data)?;
            storage.install(machine);
        }
        Ok(storage)
    }

    /// The cluster state as applied so far, and its changes.
    pub fn watch(&self) -> watch::Receiver<ClusterState> {
        self.inner.published.subscribe()
    }

    fn install(&self, machine: Machine) {
        let cluster = machine.cluster.clone();
        *self.inner.machine.lock() = machine;
        self.inner.published.send_replace(cluster);
    }

    fn read_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let txn = self.inner.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(VALUES).map_err(read_error)?;
        match table.get(key).map_err(read_error)? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(bytes.value()).map_err(read_error)?,
            )),
            None => Ok(None),
        }
    }

    fn put_value<T: Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(io_error)?;
        let txn = self.inner.db.begin_write().map_err(io_error)?;
        txn.open_table(VALUES)
            .map_err(io_error)?
            .insert(key, bytes.as_slice())
            .map_err(io_error)?;
        txn.commit().map_err(io_error)
    }

    fn delete_logs(&self, range: impl RangeBounds<u64>) -> StorageResult<()> {
        let txn = self.inner.db.begin_write().map_err(io_error)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_error)?;
            let keys: Vec<u64> = table
                .range(range)
                .map_err(io_error)?
                .map(|item| item.map(|(key, _)| key.value()))
                .collect::<Result<_, _>>()
                .map_err(io_error)?;
            for key in keys {
                table.remove(key).map_err(io_error)?;
            }
        }
        txn.commit().map_err(io_error)
    }
}

impl RaftLogReader<TypeConfig> for MetaStorage {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = self.inner.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        let mut entries = Vec::new();
        for item in table.range(range).map_err(read_error)? {
            let (_, bytes) = item.map_err(read_error)?;
            entries.push(serde_json::from_slice(bytes.value()).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStorage {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let machine = self.inner.machine.lock().clone();
        let data = serde_json::to_vec(&machine).map_err(read_error)?;
        let snapshot_id = match &machine.last_applied {
            Some(last) => format!("{}-{}", last.leader_id, last.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: machine.last_applied,
            last_membership: machine.membership,
            snapshot_id,
        };
        self.put_value(
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStorage<TypeConfig> for MetaStorage {
    type LogReader = Self;
    type SnapshotBuilder = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = self.read_value(LAST_PURGED)?;
        let txn = self.inner.db.begin_read().map_err(read_error)?;
        let table = txn.open_table(LOG).map_err(read_error)?;
        let last = match table.last().map_err(read_error)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(bytes.value()).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.max(last_purged),
        })
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_value(VOTE, vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.read_value(VOTE)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn append_to_log<I>(&mut self, entries: I) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
    {
        let txn = self.inner.db.begin_write().map_err(io_error)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_error)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(io_error)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(io_error)?;
            }
        }
        txn.commit().map_err(io_error)
    }

    async fn delete_conflict_logs_since(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.delete_logs(log_id.index..)
    }

    async fn purge_logs_upto(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.put_value(LAST_PURGED, &log_id)?;
        self.delete_logs(..=log_id.index)
    }

    async fn last_applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let machine = self.inner.machine.lock();
        Ok((machine.last_applied, machine.membership.clone()))
    }

    async fn apply_to_state_machine(
        &mut self,
        entries: &[Entry<TypeConfig>],
    ) -> StorageResult<Vec<Outcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        let cluster = {
            let mut machine = self.inner.machine.lock();
            for entry in entries {
                machine.last_applied = Some(entry.log_id);
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome {
                        epoch: machine.cluster.epoch,
                        changed: false,
                    },
                    EntryPayload::Normal(command) => machine.cluster.apply(command),
                    EntryPayload::Membership(membership) => {
                        machine.membership =
                            StoredMembership::new(Some(entry.log_id), membership.clone());
                        Outcome {
                            epoch: machine.cluster.epoch,
                            changed: false,
                        }
                    }
                };
                outcomes.push(outcome);
            }
            machine.cluster.clone()
        };
        self.inner.published.send_if_modified(|published| {
            let modified = *published != cluster;
            *published = cluster;
            modified
        });
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let machine: Machine = serde_json::from_slice(&data).map_err(read_error)?;
        self.put_value(
            SNAPSHOT,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        self.install(machine);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self
            .read_value::<StoredSnapshot>(SNAPSHOT)?
            .map(|stored| Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(stored.data)),
            }))
    }
}
