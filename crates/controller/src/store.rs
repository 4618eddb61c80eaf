//! Raft storage for `openraft`, persisted under `controllerStorePath`:
//!
//! | file | content |
//! |---|---|
//! | `raft/vote.json` | the last vote (term + voted-for) |
//! | `raft/committed.json` | the last committed log id |
//! | `raft/purged.json` | the last log id removed by log compaction |
//! | `raft/log/<index, 20 digits>.json` | one log entry (an [`Event`], a membership or a blank) |
//! | `raft/snapshot.json` | the latest snapshot: its meta and the [`ReplicasInfo`] it holds |
//!
//! Every file is written whole with [`durable::write_atomic`] (temporary name, fsync, rename,
//! directory fsync), so a crash leaves either the old or the new file. The state machine lives in memory ([`SharedState`]) and is
//! rebuilt on start from the snapshot plus the committed log, which openraft re-applies.

// openraft's error types are large by design and its traits return them; boxing only here
// would not make them smaller where openraft passes them on.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft::{NodeId, TypeConfig};
use crate::replicas::ReplicasInfo;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The state machine's content, shared with the request handlers (read-only for them).
pub type SharedState = Arc<RwLock<ReplicasInfo>>;

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(|e| AnyError::new(&e))?;
    durable::write_atomic(path, &bytes).map_err(|e| AnyError::new(&e))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, AnyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AnyError::new(&e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AnyError::new(&e)),
    }
}

struct LogInner {
    dir: PathBuf,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

impl LogInner {
    fn entry_path(&self, index: u64) -> PathBuf {
        self.dir.join("log").join(format!("{index:020}.json"))
    }
}

/// The Raft log (and vote). Clones share one log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, reading every stored entry.
    pub fn open(dir: &Path) -> Result<LogStore, StorageError<NodeId>> {
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        let mut entries = BTreeMap::new();
        let listing = std::fs::read_dir(&log_dir)
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        for item in listing {
            let path = item
                .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?
                .path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            if let Some(entry) =
                read_json::<Entry<TypeConfig>>(&path).map_err(StorageIOError::read_logs)?
            {
                entries.insert(entry.log_id.index, entry);
            }
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                vote: read_json(&dir.join("vote.json")).map_err(StorageIOError::read_vote)?,
                committed: read_json(&dir.join("committed.json")).map_err(StorageIOError::read)?,
                purged: read_json(&dir.join("purged.json")).map_err(StorageIOError::read)?,
                entries,
            })),
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        write_json(&inner.dir.join("vote.json"), vote).map_err(StorageIOError::write_vote)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        write_json(&inner.dir.join("committed.json"), &committed).map_err(StorageIOError::write)?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock();
        for entry in entries {
            let path = inner.entry_path(entry.log_id.index);
            write_json(&path, &entry).map_err(StorageIOError::write_logs)?;
            inner.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        let doomed: Vec<u64> = inner
            .entries
            .range(log_id.index..)
            .map(|(i, _)| *i)
            .collect();
        for index in doomed {
            remove_entry(&mut inner, index)?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        write_json(&inner.dir.join("purged.json"), &Some(log_id)).map_err(StorageIOError::write)?;
        inner.purged = Some(log_id);
        let doomed: Vec<u64> = inner
            .entries
            .range(..=log_id.index)
            .map(|(i, _)| *i)
            .collect();
        for index in doomed {
            remove_entry(&mut inner, index)?;
        }
        Ok(())
    }
}

fn remove_entry(inner: &mut LogInner, index: u64) -> StorageResult<()> {
    match std::fs::remove_file(inner.entry_path(index)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageIOError::write_logs(AnyError::new(&e)).into()),
    }
    inner.entries.remove(&index);
    Ok(())
}

/// A snapshot as stored in `snapshot.json`.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    state: ReplicasInfo,
}

struct SmInner {
    dir: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

/// The state machine: applies committed [`Event`]s to the shared [`ReplicasInfo`].
#[derive(Clone)]
pub struct StateMachineStore {
    state: SharedState,
    inner: Arc<Mutex<SmInner>>,
}

impl StateMachineStore {
    /// Opens the state machine under `dir`, restoring the latest snapshot if any.
    pub fn open(dir: &Path) -> Result<StateMachineStore, StorageError<NodeId>> {
        let snapshot: Option<StoredSnapshot> = read_json(&dir.join("snapshot.json"))
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        let (state, last_applied, membership) = match &snapshot {
            Some(s) => (
                s.state.clone(),
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (ReplicasInfo::default(), None, StoredMembership::default()),
        };
        Ok(StateMachineStore {
            state: Arc::new(RwLock::new(state)),
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_path_buf(),
                last_applied,
                membership,
                snapshot,
                snapshot_seq: 0,
            })),
        })
    }

    /// The replicated state, for reads.
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

fn snapshot_of(stored: &StoredSnapshot) -> StorageResult<Snapshot<TypeConfig>> {
    let data = serde_json::to_vec(&stored.state)
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
    Ok(Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(data)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let state = self.state.read().clone();
        let mut inner = self.inner.lock();
        inner.snapshot_seq += 1;
        let snapshot_id = match inner.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, inner.snapshot_seq),
            None => format!("--{}", inner.snapshot_seq),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            },
            state,
        };
        write_json(&inner.dir.join("snapshot.json"), &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), e))?;
        let snapshot = snapshot_of(&stored)?;
        inner.snapshot = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<()>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock();
        let mut state = self.state.write();
        let mut replies = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(event) => state.apply(event),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                }
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let state: ReplicasInfo = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            state: state.clone(),
        };
        let mut inner = self.inner.lock();
        write_json(&inner.dir.join("snapshot.json"), &stored)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        *self.state.write() = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.inner.lock();
        inner.snapshot.as_ref().map(snapshot_of).transpose()
    }
}
