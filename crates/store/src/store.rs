//! [`MessageStore`]: the one API the broker uses for everything on disk. It owns the
//! CommitLog, the ConsumeQueues, the Index, the checkpoint, recovery, the flush, dispatch and
//! housekeeping threads, and retention. It knows nothing of request codes.
//!
//! Threads (each stopped and joined by [`MessageStore::shutdown`]):
//! - flush: CommitLog flush (async interval or group commit, see `flush.rs`);
//! - dispatch: CommitLog -> ConsumeQueue / Index / listeners (see `dispatch.rs`);
//! - housekeeping: ConsumeQueue and Index flush and checkpoint every
//!   `flushIntervalConsumeQueue` ms, retention every `cleanResourceInterval` ms;
//! - warm-up: prepares the CommitLog region just past its end (pre-faulted pages under
//!   `ASYNC_FLUSH`; zeros on disk under `SYNC_FLUSH` with `warmMapedFileEnable`).
//!
//! Writes: `ASYNC_FLUSH` encodes records straight into the mapped segment (a memcpy per
//! message, no syscall); `SYNC_FLUSH` stages them and the flush thread writes each group with
//! one `pwrite` before its fsync (see `commit_log::WriteMode`). Reads are always zero-copy
//! slices of the mapped segments.
//!
//! Recovery at [`MessageStore::open`]:
//! - clean stop (no `abort` marker, valid checkpoint whose CommitLog offset is where the data
//!   ends): no scan; ConsumeQueues and Index are already complete.
//! - otherwise: scan CommitLog records (magic, lengths, position, body CRC) from the oldest
//!   offset the checkpoint does not vouch for, cut the log at the first bad record when that
//!   is a torn tail (at or after the checkpoint's flushed offset, or inside a file that was cut
//!   short), and fail with [`StoreError::Corrupt`] when the damage is in data the checkpoint
//!   says was on disk. Then drop ConsumeQueue units and Index entries the checkpoint does not
//!   vouch for (or that point past the cut) and rebuild them from the CommitLog.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::checkpoint::{self, Checkpoint, CheckpointFile, DirLock};
use crate::commit_log::{Appended, CommitLog, WriteMode};
use crate::config::{BrokerRole, FlushDiskType, StoreConfig};
use crate::consume_queue::{ConsumeQueue, CqUnit, CQ_STORE_UNIT_SIZE};
use crate::dispatch::Stall;
use crate::error::{Result, StoreError};
use crate::index::IndexService;
use crate::log_limit::{RepeatedError, REPEAT_LOG_INTERVAL};
use crate::mapped_file::MappedFileQueue;
use crate::message::{
    create_message_id, find_property, parse_record, MessageConst, MessageInner, Parsed,
};
use crate::state::{FlushObserver, FlushState, Inner, QueueListener, Signals};

/// Replay after a crash is kept below this many CommitLog bytes: a ConsumeQueue (or the Index)
/// whose oldest unflushed entry is further behind the dispatcher is flushed even if it has
/// fewer dirty pages than the configured minimum.
const MAX_REPLAY_BYTES: u64 = 128 * 1024 * 1024;

/// How far past the end of the CommitLog the warm-up thread keeps pages faulted in.
const WARM_AHEAD: u64 = 32 * 1024 * 1024;

/// Outcome of a put whose bytes are in the CommitLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    /// Stored, and the flush policy holds.
    PutOk,
    /// Stored, but the `SYNC_FLUSH` fsync did not finish within `syncFlushTimeout`
    /// (upstream `FLUSH_DISK_TIMEOUT`): the message may be lost on a power failure.
    FlushDiskTimeout,
}

/// Result of [`MessageStore::put_message`] / [`MessageStore::put_messages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Whether the flush policy held.
    pub status: PutStatus,
    /// CommitLog offset of the (first) record.
    pub wrote_offset: i64,
    /// Bytes written.
    pub wrote_bytes: i32,
    /// Queue offset of the (first) message.
    pub queue_offset: i64,
    /// Messages written.
    pub msg_num: i32,
    /// Store time stamped on the records.
    pub store_timestamp: i64,
    store_host: SocketAddr,
    /// Record sizes of a batch (empty for a single message).
    batch_sizes: Vec<u32>,
}

impl PutResult {
    /// Message id (`offsetMsgId`) of the first message.
    pub fn msg_id(&self) -> String {
        create_message_id(self.store_host, self.wrote_offset)
    }

    /// Message ids of every message, in order.
    pub fn msg_ids(&self) -> Vec<String> {
        if self.batch_sizes.is_empty() {
            return vec![self.msg_id()];
        }
        let mut off = self.wrote_offset;
        self.batch_sizes
            .iter()
            .map(|&s| {
                let id = create_message_id(self.store_host, off);
                off += s as i64;
                id
            })
            .collect()
    }
}

/// Status of a read (upstream `GetMessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMessageStatus {
    /// Messages found.
    Found,
    /// Units were scanned but none passed the filter.
    NoMatchedMessage,
    /// The CommitLog bytes of the units were already deleted.
    MessageWasRemoving,
    /// The unit could not be read.
    OffsetFoundNull,
    /// Offset is past the max offset.
    OffsetOverflowBadly,
    /// Offset equals the max offset (nothing new yet).
    OffsetOverflowOne,
    /// Offset is below the min offset.
    OffsetTooSmall,
    /// No such queue.
    NoMatchedLogicQueue,
    /// The queue is empty.
    NoMessageInQueue,
}

/// Result of [`MessageStore::get_messages`].
#[derive(Debug, Clone)]
pub struct GetResult {
    /// Status.
    pub status: GetMessageStatus,
    /// Offset the next pull should start at.
    pub next_begin_offset: i64,
    /// Queue min offset.
    pub min_offset: i64,
    /// Queue max offset.
    pub max_offset: i64,
    /// Whole CommitLog records, zero-copy slices of the mapped segments.
    pub messages: Vec<Bytes>,
    /// Queue offset of each message.
    pub message_queue_offsets: Vec<i64>,
    /// Sum of the record sizes.
    pub buffer_total_size: usize,
    /// The reader is far enough behind that a slave should serve it.
    pub suggest_pulling_from_slave: bool,
}

impl GetResult {
    fn empty(status: GetMessageStatus, next: i64, min: i64, max: i64) -> GetResult {
        GetResult {
            status,
            next_begin_offset: next,
            min_offset: min,
            max_offset: max,
            messages: Vec::new(),
            message_queue_offsets: Vec::new(),
            buffer_total_size: 0,
            suggest_pulling_from_slave: false,
        }
    }
}

/// Server-side filter of a read (upstream `MessageFilter`).
pub trait MessageFilter {
    /// Whether a unit with this tag hash may match.
    fn matches_tags_code(&self, tags_code: i64) -> bool;
    /// Whether the whole record matches (for property filters); called only for units that
    /// passed [`MessageFilter::matches_tags_code`].
    fn matches_record(&self, _record: &[u8]) -> bool {
        true
    }
}

/// Any `Fn(tag_hash) -> bool` is a tag filter.
impl<F: Fn(i64) -> bool> MessageFilter for F {
    fn matches_tags_code(&self, tags_code: i64) -> bool {
        self(tags_code)
    }
}

/// A filter that accepts every message.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl MessageFilter for AcceptAll {
    fn matches_tags_code(&self, _: i64) -> bool {
        true
    }
}

/// Result of [`MessageStore::query_by_key`].
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    /// Whole records whose topic and key match, newest first.
    pub messages: Vec<Bytes>,
    /// End timestamp of the newest Index file.
    pub index_last_update_timestamp: i64,
    /// End CommitLog offset of the newest Index file.
    pub index_last_update_phy_offset: i64,
}

/// Counters for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// CommitLog flushes (`msync` calls that wrote something) since open.
    pub commit_log_flushes: u64,
    /// `SYNC_FLUSH` writers that waited for a flush since open.
    pub flush_waiters: u64,
}

/// The message store. Cheap to clone; all clones share one store. Call
/// [`MessageStore::shutdown`] for a clean stop (dropping the last clone does it too).
#[derive(Clone)]
pub struct MessageStore {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.inner.shutdown() {
            tracing::error!(error = %e, "store shutdown on drop failed");
        }
    }
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("root", &self.inner().config.store_path_root_dir)
            .field("max_offset", &self.inner().commit_log.max_offset())
            .finish()
    }
}

fn total_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        8 << 30
    }
}

impl MessageStore {
    /// Opens the store under `config.store_path_root_dir`, recovering as needed (see the
    /// module docs), and starts its threads.
    pub fn open(config: StoreConfig) -> Result<MessageStore> {
        config.validate()?;
        let root = config.store_path_root_dir.clone();
        durable::create_dir_all(&root)?;
        let lock = DirLock::acquire(&root)?;
        let delay_levels = config.delay_levels_ms()?;
        let (cp_file, cp) = CheckpointFile::open(&root)?;
        let aborted = checkpoint::abort_marker_exists(&root);

        let mode = match config.flush_disk_type {
            FlushDiskType::AsyncFlush => WriteMode::Mmap,
            FlushDiskType::SyncFlush => WriteMode::Pwrite,
        };
        // Segments written through the mapping are preallocated so a full disk cannot turn
        // into SIGBUS; `pwrite` reports it as an error, and sparse segments fsync faster.
        let loaded = MappedFileQueue::load(
            &config.commit_log_dir(),
            config.mapped_file_size_commit_log,
            mode == WriteMode::Mmap,
        )?;
        let short_last = loaded.short_last;
        let commit_log = CommitLog::new(loaded.queue, config.max_message_size, mode);
        let queues = load_queues(&config)?;
        let index = if config.message_index_enable {
            Some(IndexService::load(
                &config.index_dir(),
                config.max_hash_slot_num,
                config.max_index_num,
            )?)
        } else {
            None
        };
        let (flush_state, _) = watch::channel(FlushState::default());
        let inner = Arc::new(Inner {
            total_memory: total_memory(),
            slave: AtomicBool::new(config.broker_role == BrokerRole::Slave),
            dispatch_lock: Mutex::new(()),
            rewind: AtomicU64::new(u64::MAX),
            read_limit: AtomicU64::new(u64::MAX),
            config,
            commit_log,
            queues: RwLock::new(queues),
            index,
            delay_levels,
            checkpoint: Mutex::new(cp_file),
            dispatched: AtomicU64::new(0),
            dispatched_ts: AtomicI64::new(0),
            flushed_ts: AtomicI64::new(0),
            listeners: RwLock::new(Vec::new()),
            flush_state,
            waiters_registered: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_observer: OnceLock::new(),
            signals: Signals::default(),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            no_space: AtomicBool::new(false),
            flush_errors: RepeatedError::new("CommitLog flush", REPEAT_LOG_INTERVAL),
            write_errors: RepeatedError::new("CommitLog append", REPEAT_LOG_INTERVAL),
            threads: Mutex::new(Vec::new()),
            _lock: lock,
        });
        inner.recover(cp, aborted, short_last)?;
        checkpoint::create_abort_marker(&root)?;
        inner.start_threads()?;
        Ok(MessageStore {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner().config
    }

    /// Appends one message, then waits (without blocking a thread) until its flush policy
    /// holds: at once under `ASYNC_FLUSH`, after the group-commit fsync under `SYNC_FLUSH`.
    pub async fn put_message(&self, msg: MessageInner) -> Result<PutResult> {
        self.put(std::slice::from_ref(&msg)).await
    }

    /// Appends a batch (one topic and queue) as consecutive records in one segment, with
    /// consecutive queue offsets, then waits for the flush policy as [`Self::put_message`].
    pub async fn put_messages(&self, batch: Vec<MessageInner>) -> Result<PutResult> {
        self.put(&batch).await
    }

    async fn put(&self, msgs: &[MessageInner]) -> Result<PutResult> {
        let inner = self.inner();
        let appended = inner.append(msgs)?;
        let status = inner.await_flush(appended.end_offset).await?;
        let store_host = msgs
            .first()
            .map(|m| m.store_host)
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        Ok(PutResult {
            status,
            wrote_offset: appended.wrote_offset as i64,
            wrote_bytes: appended.wrote_bytes as i32,
            queue_offset: appended.queue_offset,
            msg_num: msgs.len() as i32,
            store_timestamp: appended.store_timestamp,
            store_host,
            batch_sizes: if msgs.len() > 1 {
                msgs.iter().map(|m| m.record_len() as u32).collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Reads up to `max_count` messages (and about `max_bytes`, always at least one) from
    /// (topic, queue) starting at queue offset `offset`, keeping those `filter` accepts. The
    /// upstream per-pull caps (`maxTransfer*OnMessageInMemory/InDisk`) apply as well. Records
    /// are returned as slices of the mapped CommitLog (no copy).
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        filter: &dyn MessageFilter,
    ) -> GetResult {
        self.inner()
            .get_messages(topic, queue_id, offset, max_count, max_bytes, filter)
    }

    /// The record at CommitLog offset `phys_offset`, if a message starts there.
    pub fn message_by_offset(&self, phys_offset: i64) -> Option<Bytes> {
        u64::try_from(phys_offset)
            .ok()
            .and_then(|o| self.inner().commit_log.record_at(o))
            .filter(|r| matches!(parse_record(r, false), Ok(Parsed::Message(_))))
    }

    /// `size` bytes at CommitLog offset `phys_offset` (a record whose size is known).
    pub fn message_by_offset_and_size(&self, phys_offset: i64, size: i32) -> Option<Bytes> {
        let (o, s) = (u64::try_from(phys_offset).ok()?, u64::try_from(size).ok()?);
        self.inner().commit_log.read(o, s)
    }

    /// Min offset of a queue (0 if it does not exist).
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner()
            .find_queue(topic, queue_id)
            .map(|q| q.min_offset() as i64)
            .unwrap_or(0)
    }

    /// Max offset of a queue: one past the last message (0 if it does not exist).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> i64 {
        self.inner()
            .find_queue(topic, queue_id)
            .map(|q| q.max_offset() as i64)
            .unwrap_or(0)
    }

    /// CommitLog offset of the message at a queue offset.
    pub fn commit_log_offset_in_queue(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Option<i64> {
        let q = self.inner().find_queue(topic, queue_id)?;
        q.unit(u64::try_from(offset).ok()?)
            .filter(|u| !u.is_blank())
            .map(|u| u.phys_offset)
    }

    /// First queue offset whose message was stored at or after `timestamp` (ms); the max
    /// offset if there is none, the min offset if all are later.
    pub fn offset_by_time(&self, topic: &str, queue_id: i32, timestamp: i64) -> i64 {
        let inner = self.inner();
        let Some(q) = inner.find_queue(topic, queue_id) else {
            return 0;
        };
        let (mut lo, mut hi) = (q.min_offset(), q.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match inner.store_time_of(&q, mid) {
                Some(t) if t >= timestamp => hi = mid,
                _ => lo = mid + 1,
            }
        }
        lo as i64
    }

    /// Store time of the message at a queue offset.
    pub fn message_store_timestamp(&self, topic: &str, queue_id: i32, offset: i64) -> Option<i64> {
        let inner = self.inner();
        let q = inner.find_queue(topic, queue_id)?;
        inner.store_time_of(&q, u64::try_from(offset).ok()?)
    }

    /// Store time of the oldest message of a queue.
    pub fn earliest_message_time_in_queue(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let inner = self.inner();
        let q = inner.find_queue(topic, queue_id)?;
        inner.store_time_of(&q, q.min_offset())
    }

    /// Store time of the oldest message in the CommitLog.
    pub fn earliest_message_time(&self) -> Option<i64> {
        let inner = self.inner();
        let min = inner.commit_log.min_offset();
        let rec = inner.commit_log.record_at(min)?;
        match parse_record(&rec, false) {
            Ok(Parsed::Message(v)) => Some(v.store_timestamp),
            _ => None,
        }
    }

    /// Messages of `topic` whose `KEYS` contain `key` or whose `UNIQ_KEY` is `key`, stored
    /// within `[begin, end]` ms, newest first, at most `max` (capped by `maxMsgsNumBatch`).
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> QueryResult {
        let inner = self.inner();
        let Some(index) = &inner.index else {
            return QueryResult::default();
        };
        let max = max.min(inner.config.max_msgs_num_batch);
        let hits = index.query(topic, key, max, begin, end);
        let mut out = QueryResult {
            messages: Vec::new(),
            index_last_update_timestamp: hits.last_update_timestamp,
            index_last_update_phy_offset: hits.last_update_phy_offset,
        };
        for phys in hits.phys_offsets {
            let Some(rec) = inner.commit_log.record_at(phys) else {
                continue;
            };
            let matched = match parse_record(&rec, false) {
                Ok(Parsed::Message(v)) => {
                    v.topic == topic
                        && (find_property(
                            &v.properties,
                            MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                        ) == Some(key)
                            || find_property(&v.properties, MessageConst::PROPERTY_KEYS)
                                .is_some_and(|ks| {
                                    ks.split(MessageConst::KEY_SEPARATOR).any(|k| k == key)
                                }))
                }
                _ => false,
            };
            if matched {
                out.messages.push(rec);
            }
        }
        out
    }

    /// End of the CommitLog (offset of the next record).
    pub fn commit_log_max_offset(&self) -> i64 {
        self.inner().commit_log.max_offset() as i64
    }

    /// Start of the oldest CommitLog segment.
    pub fn commit_log_min_offset(&self) -> i64 {
        self.inner().commit_log.min_offset() as i64
    }

    /// Everything below this CommitLog offset is on disk.
    pub fn commit_log_flushed_offset(&self) -> i64 {
        self.inner().commit_log.flushed() as i64
    }

    /// Everything below this CommitLog offset is in the ConsumeQueues and the Index.
    pub fn dispatched_offset(&self) -> i64 {
        self.inner().dispatched.load(Ordering::Acquire) as i64
    }

    /// Counters since open.
    /// Installs `observer`, told the duration of every CommitLog flush (write-out and `msync`)
    /// that wrote something; it runs on the flush thread, so it must be quick. Only the first
    /// observer is kept; returns whether this one was.
    pub fn set_flush_observer(&self, observer: FlushObserver) -> bool {
        self.inner().flush_observer.set(observer).is_ok()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commit_log_flushes: self.inner().flushes.load(Ordering::Relaxed),
            flush_waiters: self.inner().waiters_registered.load(Ordering::Relaxed),
        }
    }

    /// Registers a listener told about every message that reaches a ConsumeQueue.
    pub fn subscribe_queue_growth(&self, listener: QueueListener) {
        self.inner().listeners.write().push(listener);
    }

    /// Appends raw CommitLog bytes received from the master (slave only). `phys_offset` must
    /// equal [`Self::commit_log_max_offset`]; the dispatcher builds the queues from them.
    pub fn append_replicated(&self, phys_offset: i64, data: &[u8]) -> Result<i64> {
        let inner = self.inner();
        if !inner.is_slave() {
            return Err(StoreError::NotWritable(
                "only a slave appends replicated data".into(),
            ));
        }
        inner.check_writable()?;
        let offset = u64::try_from(phys_offset).map_err(|_| StoreError::ReplicationGap {
            offset: 0,
            expected: inner.commit_log.max_offset(),
        })?;
        let end = inner.commit_log.append_raw(offset, data)?;
        inner.signals.flush.notify();
        inner.signals.dispatch.notify();
        Ok(end as i64)
    }

    /// Controller mode, slave -> master: cuts the CommitLog to its last whole record
    /// (replication may have stopped inside one), waits (up to `timeout`) until the
    /// ConsumeQueues and Index cover it, takes each queue's next offset from its ConsumeQueue,
    /// and from then on accepts writes and refuses replicated data. Returns the CommitLog
    /// end, where the new master's first write goes. Blocking: call it off the async
    /// workers. The caller must have stopped replication first.
    pub fn become_master(&self, timeout: Duration) -> Result<i64> {
        self.inner().become_master(timeout).map(|end| end as i64)
    }

    /// Controller mode, master -> slave: refuses writes from now on (a write in progress
    /// finishes first: both take the put lock) and accepts replicated data at the CommitLog
    /// end.
    pub fn become_slave(&self) {
        let _put = self.inner().commit_log.lock_writer();
        self.inner().slave.store(true, Ordering::Release);
        tracing::info!("store switched to slave");
    }

    /// Controller mode, a slave whose log diverged from its new master's (an old master that
    /// returned): cuts the CommitLog at `offset` (a record boundary) and the ConsumeQueue
    /// and Index entries of everything after it, makes the cut durable (checkpoint
    /// included) and rewinds the dispatcher. Replication then continues from `offset`.
    /// Returns the new end (unchanged when `offset` is not below it). Blocking.
    pub fn truncate_replicated(&self, offset: i64) -> Result<i64> {
        let offset = u64::try_from(offset).map_err(|_| StoreError::ReplicationGap {
            offset: 0,
            expected: self.inner().commit_log.max_offset(),
        })?;
        self.inner()
            .truncate_replicated(offset)
            .map(|end| end as i64)
    }

    /// Every (topic, queue id) that has a ConsumeQueue.
    pub fn queue_ids(&self) -> Vec<(String, i32)> {
        self.inner()
            .all_queues()
            .iter()
            .map(|q| (q.topic().to_string(), q.queue_id()))
            .collect()
    }

    /// Whether the store is a slave's now (only replicated data is appended).
    pub fn is_slave(&self) -> bool {
        self.inner().is_slave()
    }

    /// On a master, dispatch (ConsumeQueues, Index, long-polling wake-ups) stops at CommitLog
    /// offset `limit`: what readers see ends there (upstream's confirm offset: in controller
    /// mode with `allAckInSyncStateSet`, what every SyncStateSet member has, so no reader sees
    /// a message a failover could take back). `None` lifts the limit. A slave dispatches
    /// everything it replicated, whatever the limit.
    pub fn set_read_limit(&self, limit: Option<u64>) {
        let limit = limit.unwrap_or(u64::MAX);
        let inner = self.inner();
        if inner.read_limit.swap(limit, Ordering::AcqRel) != limit {
            inner.signals.dispatch.notify();
        }
    }

    /// CommitLog bytes from `from`, up to `max_len` and at most to the end of the segment (for
    /// the master's HA stream). `None` when nothing is there yet.
    pub fn read_commit_log(&self, from: i64, max_len: usize) -> Option<Bytes> {
        self.inner()
            .commit_log
            .read_from(u64::try_from(from).ok()?, max_len as u64)
    }

    /// Runs one retention pass now, as if it were `deleteWhen` time; returns segments deleted.
    pub fn delete_expired_files(&self) -> Result<usize> {
        self.inner().clean(true)
    }

    /// Removes a topic's ConsumeQueues (the CommitLog keeps its records until retention).
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        let inner = self.inner();
        let removed = inner.queues.write().remove(topic);
        for q in removed.into_iter().flat_map(|m| m.into_values()) {
            q.destroy()?;
        }
        let dir = inner.config.consume_queue_dir().join(topic);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(dir, e)),
        }
    }

    /// Flushes everything, writes the checkpoint, removes the abort marker and stops the
    /// threads. Later writes fail with [`StoreError::NotWritable`]. Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        self.inner().shutdown()
    }

    /// Waits (polling) until the dispatcher has caught up with the CommitLog's end, or the
    /// timeout passes; true if it caught up. Meant for tests and tools.
    pub fn wait_dispatched(&self, timeout: Duration) -> bool {
        let inner = self.inner();
        let deadline = Instant::now() + timeout;
        loop {
            let target = match inner.config.flush_disk_type {
                FlushDiskType::SyncFlush => inner.commit_log.flushed(),
                FlushDiskType::AsyncFlush => inner.commit_log.max_offset(),
            };
            if inner.dispatched.load(Ordering::Acquire) >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn load_queues(config: &StoreConfig) -> Result<HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>> {
    let dir = config.consume_queue_dir();
    durable::create_dir_all(&dir)?;
    let mut out: HashMap<String, HashMap<i32, Arc<ConsumeQueue>>> = HashMap::new();
    for topic_entry in fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
        let topic_entry = topic_entry.map_err(|e| StoreError::io(&dir, e))?;
        let topic_path = topic_entry.path();
        if !topic_path.is_dir() {
            continue;
        }
        let topic = topic_entry.file_name().to_string_lossy().into_owned();
        for q_entry in fs::read_dir(&topic_path).map_err(|e| StoreError::io(&topic_path, e))? {
            let q_entry = q_entry.map_err(|e| StoreError::io(&topic_path, e))?;
            let Ok(queue_id) = q_entry.file_name().to_string_lossy().parse::<i32>() else {
                tracing::warn!(path = %q_entry.path().display(), "ignoring unexpected ConsumeQueue entry");
                continue;
            };
            let cq = ConsumeQueue::load(
                &q_entry.path(),
                &topic,
                queue_id,
                config.consume_queue_file_size(),
            )?;
            out.entry(topic.clone())
                .or_default()
                .insert(queue_id, Arc::new(cq));
        }
    }
    Ok(out)
}

impl Inner {
    fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        self.queues
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Recovery; see the module docs.
    fn recover(
        &self,
        cp: Option<Checkpoint>,
        aborted: bool,
        short_last: Option<u64>,
    ) -> Result<()> {
        let cl = &self.commit_log;
        let cp_flushed = cp.map(|c| c.commit_log_flushed).unwrap_or(0);
        // Segments lost from the end (a power cut that kept the data but not the names): the
        // scan below would start an empty or shortened log where the checkpoint vouches for
        // more, silently dropping acknowledged messages. Refuse instead.
        let files_end = cl.files().last().map_or(0, |f| f.start() + f.size());
        if files_end < cp_flushed {
            return Err(StoreError::Corrupt {
                path: self.config.commit_log_dir(),
                offset: files_end,
                reason: format!(
                    "CommitLog segment files are missing: they end at {files_end}, below the \
                     checkpointed flushed offset {cp_flushed}"
                ),
            });
        }
        let clean = !aborted && short_last.is_none() && cp.is_some() && cl.is_clean_end(cp_flushed);
        let tail = if clean {
            tracing::info!(
                offset = cp_flushed,
                "clean shutdown; starting without a CommitLog scan"
            );
            cp_flushed
        } else {
            let from = cp
                .map(|c| {
                    c.commit_log_flushed
                        .min(c.consume_queue_safe)
                        .min(c.index_safe)
                })
                .unwrap_or(0);
            let last = cl.files().last();
            let limit = match (short_last, &last) {
                (Some(len), Some(f)) => f.start() + len,
                _ => u64::MAX,
            };
            let end = cl.scan(from, self.config.check_crc_on_recover, limit);
            let cut_by_hand = match (short_last, &last) {
                (Some(len), Some(f)) => end.tail >= f.start() && end.tail <= f.start() + len,
                _ => false,
            };
            if end.tail < cp_flushed && !cut_by_hand {
                let path = cl
                    .files()
                    .find(end.tail)
                    .map(|f| f.path().to_path_buf())
                    .unwrap_or_else(|| self.config.commit_log_dir());
                return Err(StoreError::Corrupt {
                    path,
                    offset: end.tail,
                    reason: format!(
                        "{} below the checkpointed flushed offset {cp_flushed}",
                        end.damage.unwrap_or_else(|| "data missing".into())
                    ),
                });
            }
            if let Some(why) = &end.damage {
                tracing::warn!(offset = end.tail, %why, "cutting torn CommitLog tail");
            }
            tracing::info!(
                from,
                tail = end.tail,
                "CommitLog recovered after an unclean stop"
            );
            cl.truncate(end.tail)?;
            end.tail
        };
        cl.set_recovered(tail, HashMap::new());
        // What the scan accepted may still be only in the page cache (the previous process
        // was killed, not the machine): make it durable before the checkpoint vouches for it.
        if !clean {
            cl.files().flush(cp_flushed.min(tail), tail)?;
        }

        // Units and entries the checkpoint does not vouch for are rebuilt from the CommitLog.
        // With no ConsumeQueue (or no Index file) at all, rebuild them from the whole log.
        let mut cq_cut = cp.map(|c| c.consume_queue_safe).unwrap_or(0).min(tail);
        if self.queues.read().is_empty() {
            cq_cut = 0;
        }
        let mut idx_cut = cp.map(|c| c.index_safe).unwrap_or(0).min(tail);
        if self.index.as_ref().is_some_and(|i| i.is_empty()) {
            idx_cut = 0;
        }
        for q in self.all_queues() {
            q.truncate_from_phys(cq_cut)?;
        }
        if let Some(index) = &self.index {
            index.truncate_from_phys(idx_cut)?;
        }
        let replay_from = cq_cut.min(idx_cut).max(cl.min_offset());
        if replay_from < tail {
            let started = Instant::now();
            let (reached, stall) = self.dispatch_range(replay_from, tail);
            match stall {
                None => {}
                Some(Stall::Failed(_, e)) => return Err(e),
                Some(Stall::Damaged(at, why)) => {
                    return Err(StoreError::Corrupt {
                        path: self.config.commit_log_dir(),
                        offset: at,
                        reason: format!("replay stopped at a damaged record: {why}"),
                    })
                }
                Some(Stall::Incomplete(at)) => {
                    return Err(StoreError::Corrupt {
                        path: self.config.commit_log_dir(),
                        offset: at,
                        reason: "replay stopped at an incomplete record".into(),
                    })
                }
            }
            tracing::info!(from = replay_from, to = reached, elapsed = ?started.elapsed(), "rebuilt ConsumeQueues and Index");
        }
        self.dispatched.store(tail, Ordering::Release);

        let min = cl.min_offset();
        let mut next_offsets: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for q in self.all_queues() {
            q.correct_min_offset(min);
            next_offsets
                .entry(q.topic().to_string())
                .or_default()
                .insert(q.queue_id(), q.max_offset() as i64);
        }
        cl.set_recovered(tail, next_offsets);
        let _ = self.flush_state.send_replace(FlushState {
            flushed: tail,
            failed: false,
            stalled: false,
        });
        for q in self.all_queues() {
            q.flush(0)?;
        }
        if let Some(index) = &self.index {
            index.flush()?;
        }
        self.write_checkpoint(tail, tail, tail)
    }

    fn write_checkpoint(&self, cl_flushed: u64, cq_safe: u64, idx_safe: u64) -> Result<()> {
        let physic = self.flushed_ts.load(Ordering::Acquire);
        let logics = self.dispatched_ts.load(Ordering::Acquire);
        self.checkpoint.lock().write(&Checkpoint {
            physic_msg_timestamp: physic,
            logics_msg_timestamp: logics,
            index_msg_timestamp: logics,
            commit_log_flushed: cl_flushed,
            consume_queue_safe: cq_safe,
            index_safe: idx_safe,
        })
    }

    /// Starts the store's threads. A panic on one of them is logged (through `tracing`, with
    /// its message and location: see [`log_store_thread_panics`]) and poisons the store for
    /// writes, since a dead flush or dispatch thread would leave later writes unflushed or
    /// unreadable.
    fn start_threads(self: &Arc<Self>) -> Result<()> {
        log_store_thread_panics();
        let spawn = |name: &str, f: fn(Arc<Inner>)| -> Result<JoinHandle<()>> {
            let me = Arc::clone(self);
            let thread = name.to_string();
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    let weak = Arc::downgrade(&me);
                    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(me)));
                    if let Err(payload) = died {
                        let what = panic_message(payload.as_ref());
                        tracing::error!(thread = %thread, panic = %what, "store thread died");
                        if let Some(inner) = weak.upgrade() {
                            inner.poison(format!("store thread {thread} panicked: {what}"));
                            inner
                                .flush_state
                                .send_modify(|s: &mut FlushState| s.failed = true);
                        }
                    }
                })
                .map_err(|e| StoreError::io(&self.config.store_path_root_dir, e))
        };
        let mut threads = self.threads.lock();
        threads.push(spawn("store-flush", Inner::run_flusher)?);
        threads.push(spawn("store-dispatch", Inner::run_dispatcher)?);
        threads.push(spawn("store-housekeeping", Inner::run_housekeeping)?);
        if self.warms() {
            threads.push(spawn("store-warm", Inner::run_warmer)?);
        }
        Ok(())
    }

    /// Whether the store is a slave's now.
    pub(crate) fn is_slave(&self) -> bool {
        self.slave.load(Ordering::Acquire)
    }

    /// See [`MessageStore::become_master`].
    fn become_master(&self, timeout: Duration) -> Result<u64> {
        if !self.is_slave() {
            return Ok(self.commit_log.max_offset());
        }
        let cl = &self.commit_log;
        // Replicated bytes end wherever the last HA frame ended, possibly inside a record.
        // Everything below the dispatcher's position is whole records.
        let from = self.dispatched.load(Ordering::Acquire).min(cl.max_offset());
        let end = cl.scan(from, self.config.check_crc_on_recover, u64::MAX);
        let tail = end.tail;
        if tail < cl.max_offset() {
            tracing::warn!(
                tail,
                cut = cl.max_offset() - tail,
                why = end.damage.as_deref().unwrap_or("partial record"),
                "cutting the replicated CommitLog to its last whole record"
            );
            cl.truncate(tail)?;
        }
        cl.files().flush(cl.flushed().min(tail), tail)?;
        cl.set_recovered(tail, HashMap::new());
        let _ = self.flush_state.send_replace(FlushState {
            flushed: tail,
            failed: false,
            stalled: false,
        });
        self.signals.dispatch.notify();
        let deadline = Instant::now() + timeout;
        while self.dispatched.load(Ordering::Acquire) < tail {
            if Instant::now() >= deadline {
                return Err(StoreError::NotWritable(format!(
                    "the dispatcher did not reach the CommitLog end {tail} within {timeout:?}; \
                     the store stays a slave's"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut next_offsets: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for q in self.all_queues() {
            next_offsets
                .entry(q.topic().to_string())
                .or_default()
                .insert(q.queue_id(), q.max_offset() as i64);
        }
        cl.set_queue_offsets(next_offsets);
        // A limit from an earlier time as master is stale: the new one comes from the caller.
        self.read_limit.store(u64::MAX, Ordering::Release);
        self.slave.store(false, Ordering::Release);
        tracing::info!(offset = tail, "store switched to master");
        Ok(tail)
    }

    /// See [`MessageStore::truncate_replicated`].
    fn truncate_replicated(&self, offset: u64) -> Result<u64> {
        if !self.is_slave() {
            return Err(StoreError::NotWritable(
                "only a slave's CommitLog is cut to its master's".into(),
            ));
        }
        let _pass = self.dispatch_lock.lock();
        let cl = &self.commit_log;
        let max = cl.max_offset();
        if offset >= max {
            return Ok(max);
        }
        tracing::warn!(
            from = max,
            to = offset,
            "cutting the CommitLog to where it agrees with the master"
        );
        cl.files().flush(cl.flushed().min(offset), offset)?;
        cl.truncate(offset)?;
        for q in self.all_queues() {
            q.truncate_from_phys(offset)?;
        }
        if let Some(index) = &self.index {
            index.truncate_from_phys(offset)?;
        }
        cl.set_recovered(offset, HashMap::new());
        let _ = self.flush_state.send_replace(FlushState {
            flushed: offset,
            failed: false,
            stalled: false,
        });
        let dispatched = self.dispatched.load(Ordering::Acquire).min(offset);
        self.dispatched.store(dispatched, Ordering::Release);
        self.rewind.store(dispatched, Ordering::Release);
        for q in self.all_queues() {
            q.flush(0)?;
        }
        if let Some(index) = &self.index {
            index.flush()?;
        }
        // A crash from here on recovers the cut log, not the checkpoint's old end.
        self.write_checkpoint(offset, dispatched, dispatched)?;
        self.signals.dispatch.notify();
        Ok(offset)
    }

    pub(crate) fn poison(&self, why: String) {
        self.poisoned.lock().get_or_insert(why);
        self.is_poisoned.store(true, Ordering::Release);
    }

    fn check_writable(&self) -> Result<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(StoreError::NotWritable("store is shut down".into()));
        }
        if self.is_poisoned.load(Ordering::Acquire) {
            if let Some(why) = self.poisoned.lock().as_ref() {
                return Err(StoreError::NotWritable(why.clone()));
            }
        }
        if self.disk_full.load(Ordering::Acquire) || self.no_space.load(Ordering::Acquire) {
            return Err(StoreError::DiskFull {
                path: self.config.commit_log_dir(),
            });
        }
        Ok(())
    }

    fn append(&self, msgs: &[MessageInner]) -> Result<Appended> {
        if self.is_slave() {
            return Err(StoreError::NotWritable(
                "a slave does not accept writes".into(),
            ));
        }
        self.check_writable()?;
        let appended = match self.commit_log.append(msgs) {
            Ok(appended) => {
                self.write_errors.succeeded();
                appended
            }
            Err(e) => {
                if matches!(e, StoreError::DiskFull { .. } | StoreError::Io { .. }) {
                    self.write_errors.failed(&e, Instant::now());
                }
                return Err(e);
            }
        };
        if self.config.flush_disk_type == FlushDiskType::AsyncFlush {
            self.signals.dispatch.notify();
        }
        if self.warms() && appended.end_offset + WARM_AHEAD / 2 > self.commit_log.warmed() {
            self.signals.warm.notify();
        }
        Ok(appended)
    }

    /// Waits until `end` is flushed under `SYNC_FLUSH` (returns at once under `ASYNC_FLUSH`).
    async fn await_flush(&self, end: u64) -> Result<PutStatus> {
        if self.config.flush_disk_type == FlushDiskType::AsyncFlush
            || self.commit_log.flushed() >= end
        {
            return Ok(PutStatus::PutOk);
        }
        let timeout = self.config.sync_flush_timeout();
        if timeout.is_zero() {
            self.signals.flush.notify();
            return Ok(PutStatus::FlushDiskTimeout);
        }
        let mut rx = self.flush_state.subscribe();
        self.waiters_registered.fetch_add(1, Ordering::SeqCst);
        self.signals.flush.notify();
        let waited = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.flushed >= end || s.failed || s.stalled),
        )
        .await;
        match waited {
            Err(_) => Ok(PutStatus::FlushDiskTimeout),
            Ok(Ok(state)) if state.flushed >= end => Ok(PutStatus::PutOk),
            // The record stays staged and is written once space returns (so a client that
            // retries may store it twice, as after a flush timeout); this put is refused.
            Ok(Ok(state)) if state.stalled => Err(StoreError::DiskFull {
                path: self.config.commit_log_dir(),
            }),
            Ok(_) => Err(StoreError::NotWritable(
                self.poisoned
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "store shut down before the flush".into()),
            )),
        }
    }

    pub(crate) fn store_time_of(&self, q: &ConsumeQueue, qoff: u64) -> Option<i64> {
        let u = q.unit(qoff).filter(|u| !u.is_blank())?;
        self.commit_log
            .store_timestamp_at(u.phys_offset as u64, u.size as u64)
    }

    fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_count: usize,
        max_bytes: usize,
        filter: &dyn MessageFilter,
    ) -> GetResult {
        let correct = |old: i64, new: i64| {
            if !self.is_slave() || self.config.offset_check_in_slave {
                new
            } else {
                old
            }
        };
        let Some(q) = self.find_queue(topic, queue_id) else {
            return GetResult::empty(
                GetMessageStatus::NoMatchedLogicQueue,
                correct(offset, 0),
                0,
                0,
            );
        };
        let (min, max) = (q.min_offset() as i64, q.max_offset() as i64);
        if max == 0 {
            return GetResult::empty(
                GetMessageStatus::NoMessageInQueue,
                correct(offset, 0),
                min,
                max,
            );
        }
        if offset < min {
            return GetResult::empty(
                GetMessageStatus::OffsetTooSmall,
                correct(offset, min),
                min,
                max,
            );
        }
        if offset == max {
            return GetResult::empty(GetMessageStatus::OffsetOverflowOne, offset, min, max);
        }
        if offset > max {
            return GetResult::empty(
                GetMessageStatus::OffsetOverflowBadly,
                correct(offset, max),
                min,
                max,
            );
        }
        let Some(units) = q.units_from(offset as u64) else {
            let next = (offset as u64 * CQ_STORE_UNIT_SIZE / self.config.consume_queue_file_size()
                + 1)
                * self.config.consume_queue_file_size()
                / CQ_STORE_UNIT_SIZE;
            return GetResult::empty(
                GetMessageStatus::OffsetFoundNull,
                correct(offset, next as i64),
                min,
                max,
            );
        };
        let max_count = max_count.max(1);
        let max_py = self.commit_log.max_offset();
        let memory =
            self.total_memory * self.config.access_message_in_memory_max_ratio as u64 / 100;
        let max_scan = 16_000usize.max(max_count * CQ_STORE_UNIT_SIZE as usize);
        let mut res = GetResult::empty(GetMessageStatus::NoMatchedMessage, offset, min, max);
        let mut next_file_start: Option<u64> = None;
        let mut max_phys_pulling = 0u64;
        let mut i = 0usize;
        while i < units.len() && i < max_scan {
            let unit = CqUnit::decode(&units[i..i + CQ_STORE_UNIT_SIZE as usize]);
            let qoff = offset + (i / CQ_STORE_UNIT_SIZE as usize) as i64;
            let phys = unit.phys_offset.max(0) as u64;
            let size = unit.size.max(0) as u64;
            max_phys_pulling = phys;
            if next_file_start.is_some_and(|s| phys < s) {
                i += CQ_STORE_UNIT_SIZE as usize;
                continue;
            }
            let in_disk = max_py.saturating_sub(phys) > memory;
            if self.batch_full(size as usize, max_count, max_bytes, &res, in_disk) {
                break;
            }
            i += CQ_STORE_UNIT_SIZE as usize;
            if unit.is_blank() || !filter.matches_tags_code(unit.tags_code) {
                continue;
            }
            let Some(record) = self.commit_log.read(phys, size) else {
                if res.buffer_total_size == 0 {
                    res.status = GetMessageStatus::MessageWasRemoving;
                }
                let seg = self.commit_log.segment_size();
                next_file_start = Some(phys + seg - phys % seg);
                continue;
            };
            if !filter.matches_record(&record) {
                continue;
            }
            res.buffer_total_size += record.len();
            res.messages.push(record);
            res.message_queue_offsets.push(qoff);
            res.status = GetMessageStatus::Found;
            next_file_start = None;
        }
        res.next_begin_offset = offset + (i / CQ_STORE_UNIT_SIZE as usize) as i64;
        res.suggest_pulling_from_slave = max_py.saturating_sub(max_phys_pulling) > memory;
        res
    }

    /// Upstream `isTheBatchFull`, plus the caller's byte cap.
    fn batch_full(
        &self,
        size: usize,
        max_count: usize,
        max_bytes: usize,
        res: &GetResult,
        in_disk: bool,
    ) -> bool {
        let (total, count) = (res.buffer_total_size, res.messages.len());
        if total == 0 || count == 0 {
            return false;
        }
        if count >= max_count || total + size > max_bytes {
            return true;
        }
        let c = &self.config;
        let (cap_bytes, cap_count) = if in_disk {
            (
                c.max_transfer_bytes_on_message_in_disk,
                c.max_transfer_count_on_message_in_disk,
            )
        } else {
            (
                c.max_transfer_bytes_on_message_in_memory,
                c.max_transfer_count_on_message_in_memory,
            )
        };
        total + size > cap_bytes || count + 1 > cap_count
    }

    /// Whether the warm-up thread runs: always for mapped writes, on request for `pwrite`.
    fn warms(&self) -> bool {
        self.commit_log.mode() == WriteMode::Mmap || self.config.warm_mapped_file_enable
    }

    /// Body of the warm-up thread: keeps the pages just past the end of the CommitLog faulted
    /// in (see `CommitLog::warm`).
    ///
    /// How far ahead it works grows with what has been written since the store opened (twice
    /// that, up to [`WARM_AHEAD`]): an idle broker keeps no pre-faulted pages resident, while a
    /// busy one reaches the full window within its first few megabytes of writes.
    fn run_warmer(self: Arc<Self>) {
        let base = self.commit_log.appended();
        let ahead = || {
            let written = self.commit_log.appended().saturating_sub(base);
            written.saturating_mul(2).min(WARM_AHEAD)
        };
        let mut complained = false;
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            match self.commit_log.warm(ahead()) {
                Ok(true) => continue,
                Ok(false) => complained = false,
                Err(StoreError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    tracing::info!(
                        "kernel lacks MADV_POPULATE_WRITE; appends fault pages in themselves"
                    );
                    return;
                }
                Err(e) => {
                    if !complained {
                        tracing::warn!(error = %e, "pre-faulting CommitLog pages failed; retrying");
                        complained = true;
                    }
                    self.signals.warm.wait_unless(Duration::from_secs(1), || {
                        self.stopping.load(Ordering::Acquire)
                    });
                    continue;
                }
            }
            self.signals
                .warm
                .wait_unless(Duration::from_millis(100), || {
                    self.stopping.load(Ordering::Acquire)
                        || self.commit_log.appended() + ahead() / 2 > self.commit_log.warmed()
                });
        }
    }

    /// Body of the housekeeping thread: ConsumeQueue/Index flush + checkpoint, and retention.
    fn run_housekeeping(self: Arc<Self>) {
        let flush_every = Duration::from_millis(self.config.flush_interval_consume_queue.max(1));
        let clean_every = Duration::from_millis(self.config.clean_resource_interval.max(1));
        let thorough_every =
            Duration::from_millis(self.config.flush_consume_queue_thorough_interval);
        let mut last_thorough = Instant::now();
        let mut last_clean = Instant::now();
        let flush_errors = RepeatedError::new(
            "ConsumeQueue/Index flush or checkpoint",
            REPEAT_LOG_INTERVAL,
        );
        let clean_errors = RepeatedError::new("retention pass", REPEAT_LOG_INTERVAL);
        loop {
            self.signals
                .housekeeping
                .wait_unless(flush_every.min(clean_every), || {
                    self.stopping.load(Ordering::Acquire)
                });
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let thorough = last_thorough.elapsed() >= thorough_every;
            if thorough {
                last_thorough = Instant::now();
            }
            match self.flush_logics_and_checkpoint(thorough) {
                Ok(()) => drop(flush_errors.succeeded()),
                Err(e) => drop(flush_errors.failed(&e, Instant::now())),
            }
            if last_clean.elapsed() >= clean_every {
                last_clean = Instant::now();
                match self.clean(false) {
                    Ok(_) => drop(clean_errors.succeeded()),
                    Err(e) => drop(clean_errors.failed(&e, Instant::now())),
                }
            }
        }
    }

    /// Flushes ConsumeQueues and the Index (per the page minimums, or all when `thorough`),
    /// then records in the checkpoint the offsets below which everything is on disk.
    fn flush_logics_and_checkpoint(&self, thorough: bool) -> Result<()> {
        // Not across a slave's truncation: its checkpoint must not be overwritten with
        // offsets read before it.
        let _pass = self.dispatch_lock.lock();
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let least = if thorough {
            0
        } else {
            self.config.flush_consume_queue_least_pages
        };
        let mut cq_safe = dispatched;
        for q in self.all_queues() {
            let lagging = q
                .first_unflushed_phys()
                .is_some_and(|p| dispatched.saturating_sub(p) > MAX_REPLAY_BYTES);
            q.flush(if lagging { 0 } else { least })?;
            if let Some(p) = q.first_unflushed_phys() {
                cq_safe = cq_safe.min(p);
            }
        }
        let mut idx_safe = dispatched;
        if let Some(index) = &self.index {
            let lagging = index
                .first_unflushed_phys()
                .is_some_and(|p| dispatched.saturating_sub(p) > MAX_REPLAY_BYTES);
            if thorough || lagging {
                index.flush()?;
            }
            if let Some(p) = index.first_unflushed_phys() {
                idx_safe = idx_safe.min(p);
            }
        }
        self.write_checkpoint(self.commit_log.flushed(), cq_safe, idx_safe)
    }

    /// Stops threads, then flushes and checkpoints everything. Idempotent.
    pub(crate) fn shutdown(&self) -> Result<()> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stopping.store(true, Ordering::Release);
        self.signals.flush.notify();
        self.signals.dispatch.notify();
        self.signals.housekeeping.notify();
        self.signals.warm.notify();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for t in threads {
            let name = t.thread().name().unwrap_or("store").to_string();
            if let Err(payload) = t.join() {
                // Not reached while `start_threads` catches panics; kept for safety.
                tracing::error!(thread = %name, panic = %panic_message(payload.as_ref()), "a store thread panicked");
            }
        }
        self.flush_commit_log(0);
        if let Some(why) = self.poisoned.lock().clone() {
            return Err(StoreError::NotWritable(why));
        }
        let tail = self.commit_log.max_offset();
        let (reached, stall) = self.dispatch_range(self.dispatched.load(Ordering::Acquire), tail);
        if let Some(s) = stall {
            tracing::warn!(stall = ?s, "dispatch incomplete at shutdown; the next start replays");
        }
        for q in self.all_queues() {
            q.flush(0)?;
        }
        if let Some(index) = &self.index {
            index.flush()?;
        }
        self.commit_log.remove_unused_segments()?;
        self.write_checkpoint(self.commit_log.flushed(), reached, reached)?;
        let _ = self.flush_state.send_replace(FlushState {
            flushed: self.commit_log.flushed(),
            failed: true,
            stalled: false,
        });
        checkpoint::remove_abort_marker(&self.config.store_path_root_dir)
    }
}

/// The message of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Installs (once per process) a panic hook that logs a panic on a store thread (one named
/// `store-*`) through `tracing`, with its message and location, so it reaches the broker's log
/// and not only stderr. It then calls the hook that was installed before it (by default the
/// one printing to stderr). A hook installed later replaces this one unless it chains too; the
/// thread's own catch (see `Inner::start_threads`) still logs the message then.
pub(crate) fn log_store_thread_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name.starts_with("store-") {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_else(|| "unknown".into());
                tracing::error!(
                    thread = name,
                    %location,
                    panic = %panic_message(info.payload()),
                    "store thread panicked"
                );
            }
            previous(info);
        }));
    });
}
