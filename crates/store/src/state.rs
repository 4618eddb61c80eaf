//! The store's shared state ([`Inner`]): what the API, the flush, dispatch and housekeeping
//! threads all hold through one `Arc`, and the queue-growth event the dispatcher publishes. It
//! sits below both `store` (the API and recovery, which build and drive it) and `dispatch`
//! (which extends it with the dispatch pass), so neither has to reach into the other for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::checkpoint::{CheckpointFile, DirLock};
use crate::commit_log::CommitLog;
use crate::config::StoreConfig;
use crate::consume_queue::ConsumeQueue;
use crate::index::IndexService;
use crate::log_limit::RepeatedError;
use crate::signal::Signal;

/// A message reached a ConsumeQueue (told to listeners, for long polling).
#[derive(Debug, Clone, Copy)]
pub struct QueueGrowth<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Queue.
    pub queue_id: i32,
    /// Queue offset of the new message.
    pub queue_offset: i64,
    /// The queue's new max offset.
    pub max_offset: i64,
    /// Tag hash of the new message.
    pub tags_code: i64,
    /// Its store time.
    pub store_timestamp: i64,
    /// Its encoded properties.
    pub properties: &'a str,
}

/// A queue-growth listener. It runs on the dispatcher thread for every dispatched message and
/// must return quickly (hand work to another task).
pub type QueueListener = Arc<dyn Fn(&QueueGrowth<'_>) + Send + Sync>;

/// Flush progress published to `SYNC_FLUSH` waiters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FlushState {
    pub(crate) flushed: u64,
    /// The store is poisoned (or shut down): no flush will come.
    pub(crate) failed: bool,
    /// The last flush could not write for lack of space; the flush thread retries, and the
    /// first flush that succeeds clears this.
    pub(crate) stalled: bool,
}

#[derive(Default)]
pub(crate) struct Signals {
    pub(crate) flush: Signal,
    pub(crate) dispatch: Signal,
    pub(crate) housekeeping: Signal,
    pub(crate) warm: Signal,
}

/// Called with the duration of each CommitLog flush that wrote something, on the flush thread.
pub type FlushObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Shared state of the store; the threads hold it through an `Arc`.
pub(crate) struct Inner {
    pub(crate) config: StoreConfig,
    /// Whether the store is a slave's now (starts as `config.broker_role`; controller mode
    /// switches it, see `MessageStore::become_master` / `become_slave`).
    pub(crate) slave: AtomicBool,
    /// Held by the dispatcher for each pass, and by a slave's truncation.
    pub(crate) dispatch_lock: Mutex<()>,
    /// A position the dispatcher must go back to before its next pass (`u64::MAX`: none).
    pub(crate) rewind: AtomicU64,
    /// On a master: the CommitLog offset the dispatcher stops at (`u64::MAX`: none), see
    /// `MessageStore::set_read_limit`.
    pub(crate) read_limit: AtomicU64,
    pub(crate) commit_log: CommitLog,
    pub(crate) queues: RwLock<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>>,
    pub(crate) index: Option<IndexService>,
    pub(crate) delay_levels: Vec<i64>,
    pub(crate) checkpoint: Mutex<CheckpointFile>,
    /// Dispatcher position: every record below has its units and entries written.
    pub(crate) dispatched: AtomicU64,
    pub(crate) dispatched_ts: AtomicI64,
    pub(crate) flushed_ts: AtomicI64,
    pub(crate) listeners: RwLock<Vec<QueueListener>>,
    pub(crate) flush_state: watch::Sender<FlushState>,
    pub(crate) waiters_registered: AtomicU64,
    pub(crate) flushes: AtomicU64,
    /// Told how long each CommitLog flush that wrote something took (see
    /// `MessageStore::set_flush_observer`).
    pub(crate) flush_observer: OnceLock<FlushObserver>,
    pub(crate) signals: Signals,
    pub(crate) stopping: AtomicBool,
    pub(crate) stopped: AtomicBool,
    pub(crate) poisoned: Mutex<Option<String>>,
    pub(crate) is_poisoned: AtomicBool,
    pub(crate) disk_full: AtomicBool,
    /// A CommitLog write-out failed for lack of space (`SYNC_FLUSH`); writes are refused as
    /// disk full until a flush succeeds again.
    pub(crate) no_space: AtomicBool,
    /// Rate-limited log of CommitLog flush failures.
    pub(crate) flush_errors: RepeatedError,
    /// Rate-limited log of CommitLog append failures (e.g. no room for a new segment).
    pub(crate) write_errors: RepeatedError,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) total_memory: u64,
    pub(crate) _lock: DirLock,
}
