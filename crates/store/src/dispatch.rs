//! The dispatcher: reads CommitLog records past its position and builds ConsumeQueue units and
//! Index entries from them, then tells queue-growth listeners (long polling). A master, a slave
//! (whose CommitLog is replicated bytes) and a recovering store all build their queues this
//! way, so they agree. Under `SYNC_FLUSH` it dispatches only flushed records, so a consumer
//! never sees a message that a crash could take back; on a master with a read limit (controller
//! mode, `allAckInSyncStateSet`) only records every SyncStateSet member has, so none sees one
//! a failover could take back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::commit_log::counts_in_queue;
use crate::consume_queue::{is_storable_topic, ConsumeQueue, CqUnit};
use crate::error::Result;
use crate::index::IndexRequest;
use crate::message::{
    find_property, parse_record, tags_hash_code, MessageConst, Parsed, RecordView,
};
use crate::state::{Inner, QueueGrowth};

/// Topic that holds scheduled (delayed) messages; its tag code is the delivery time.
const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";

/// How long the dispatcher sleeps after a pass that dispatched something, before the next
/// pass: the most a consumer waits for a new message beyond its arrival while appends stream
/// in.
const DISPATCH_LINGER: Duration = Duration::from_micros(200);

/// Why a dispatch pass stopped before its limit.
#[derive(Debug)]
pub(crate) enum Stall {
    /// The record at this offset is not whole yet (a slave mid-record); try again later.
    Incomplete(u64),
    /// The record at this offset is damaged.
    Damaged(u64, String),
    /// Writing a unit or an entry failed.
    Failed(u64, crate::error::StoreError),
}

impl Inner {
    /// Dispatches records in `[from, limit)`; returns the offset it reached (a record boundary)
    /// and why it stopped early, if it did.
    pub(crate) fn dispatch_range(&self, from: u64, limit: u64) -> (u64, Option<Stall>) {
        let mut pos = from.max(self.commit_log.min_offset());
        while pos < limit {
            let Some(chunk) = self.commit_log.read_from(pos, limit - pos) else {
                return (pos, Some(Stall::Incomplete(pos)));
            };
            let mut rel = 0usize;
            while rel < chunk.len() {
                let at = pos + rel as u64;
                match parse_record(&chunk[rel..], false) {
                    Ok(Parsed::Message(v)) => {
                        if let Err(e) = self.dispatch_one(&v, at) {
                            self.publish_dispatched(at);
                            return (at, Some(Stall::Failed(at, e)));
                        }
                        rel += v.total_size as usize;
                    }
                    Ok(Parsed::Blank(n)) => rel += n as usize,
                    Ok(Parsed::Empty) | Err(crate::message::RecordError::Truncated { .. }) => {
                        self.publish_dispatched(at);
                        return (at, Some(Stall::Incomplete(at)));
                    }
                    Err(e) => {
                        self.publish_dispatched(at);
                        return (at, Some(Stall::Damaged(at, e.to_string())));
                    }
                }
            }
            pos += rel as u64;
            self.publish_dispatched(pos);
        }
        (pos, None)
    }

    fn publish_dispatched(&self, pos: u64) {
        self.dispatched.store(pos, Ordering::Release);
    }

    fn dispatch_one(&self, v: &RecordView<'_>, at: u64) -> Result<()> {
        let props: &str = &v.properties;
        let mut tag = find_property(props, MessageConst::PROPERTY_TAGS)
            .map(tags_hash_code)
            .unwrap_or(0);
        if v.topic == SCHEDULE_TOPIC {
            if let Some(level) = find_property(props, MessageConst::PROPERTY_DELAY_TIME_LEVEL)
                .and_then(|d| d.parse::<usize>().ok())
            {
                if level > 0 && !self.delay_levels.is_empty() {
                    let level = level.min(self.delay_levels.len());
                    tag = v.store_timestamp + self.delay_levels[level - 1];
                }
            }
        }
        let storable = is_storable_topic(v.topic);
        if !storable {
            tracing::error!(
                offset = at,
                topic = v.topic,
                "record's topic cannot name a ConsumeQueue; left out of the queues"
            );
        }
        if storable && counts_in_queue(v.sys_flag) {
            let cq = self.find_or_create_queue(v.topic, v.queue_id)?;
            let qoff = v.queue_offset.max(0) as u64;
            cq.put(
                qoff,
                CqUnit {
                    phys_offset: at as i64,
                    size: v.total_size as i32,
                    tags_code: tag,
                },
            )?;
            self.dispatched_ts
                .store(v.store_timestamp, Ordering::Release);
            let listeners = self.listeners.read();
            if !listeners.is_empty() {
                let ev = QueueGrowth {
                    topic: v.topic,
                    queue_id: v.queue_id,
                    queue_offset: qoff as i64,
                    max_offset: cq.max_offset() as i64,
                    tags_code: tag,
                    store_timestamp: v.store_timestamp,
                    properties: props,
                };
                for l in listeners.iter() {
                    l(&ev);
                }
            }
        }
        if let Some(index) = &self.index {
            index.build(&IndexRequest {
                topic: v.topic,
                properties: props,
                phys_offset: at,
                store_timestamp: v.store_timestamp,
                sys_flag: v.sys_flag,
            })?;
        }
        Ok(())
    }

    /// The ConsumeQueue of (topic, queue), created if missing.
    pub(crate) fn find_or_create_queue(
        &self,
        topic: &str,
        queue_id: i32,
    ) -> Result<Arc<ConsumeQueue>> {
        if let Some(q) = self.find_queue(topic, queue_id) {
            return Ok(q);
        }
        let mut queues = self.queues.write();
        let per_topic = queues.entry(topic.to_string()).or_default();
        if let Some(q) = per_topic.get(&queue_id) {
            return Ok(Arc::clone(q));
        }
        let dir = self
            .config
            .consume_queue_dir()
            .join(topic)
            .join(queue_id.to_string());
        let q = Arc::new(ConsumeQueue::load(
            &dir,
            topic,
            queue_id,
            self.config.consume_queue_file_size(),
        )?);
        per_topic.insert(queue_id, Arc::clone(&q));
        Ok(q)
    }

    /// The ConsumeQueue of (topic, queue), if it exists.
    pub(crate) fn find_queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.queues.read().get(topic)?.get(&queue_id).cloned()
    }

    /// Where the dispatcher may read up to: the flushed or written end, and on a master at
    /// most the read limit (see `MessageStore::set_read_limit`).
    fn dispatch_limit(&self) -> u64 {
        let end = match self.config.flush_disk_type {
            crate::config::FlushDiskType::SyncFlush => self.commit_log.flushed(),
            crate::config::FlushDiskType::AsyncFlush => self.commit_log.max_offset(),
        };
        if self.is_slave() {
            end
        } else {
            end.min(self.read_limit.load(Ordering::Acquire))
        }
    }

    /// Body of the dispatcher thread.
    pub(crate) fn run_dispatcher(self: Arc<Self>) {
        let mut pos = self.dispatched.load(Ordering::Acquire);
        let mut last_complaint: Option<u64> = None;
        loop {
            let (limit, progressed, stall) = {
                // A slave's truncation (see `truncate_replicated`) runs between two passes
                // and may move the position back.
                let _pass = self.dispatch_lock.lock();
                let rewind = self.rewind.swap(u64::MAX, Ordering::AcqRel);
                if rewind != u64::MAX {
                    pos = pos.min(rewind);
                }
                let limit = self.dispatch_limit();
                if pos < limit {
                    let (reached, stall) = self.dispatch_range(pos, limit);
                    let progressed = reached > pos;
                    pos = reached;
                    (limit, progressed, Some(stall))
                } else {
                    (limit, false, None)
                }
            };
            if let Some(stall) = stall {
                let trouble = match stall {
                    Some(Stall::Damaged(at, why)) => Some((at, why)),
                    Some(Stall::Failed(at, e)) => Some((at, e.to_string())),
                    None | Some(Stall::Incomplete(_)) => None,
                };
                if let Some((at, why)) = trouble {
                    if last_complaint != Some(at) {
                        tracing::error!(offset = at, %why, "dispatch stalled; retrying");
                        last_complaint = Some(at);
                    }
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            if progressed {
                // Under a stream of appends, let the next ones gather rather than having each
                // writer wake this thread (a futex wake per message cost the writers about a
                // third of their CPU); idle, it sleeps until notified. Upstream's reput
                // service sleeps 1 ms between passes; 200 us keeps most of the saving and
                // adds less to a consumer's end-to-end latency.
                std::thread::sleep(DISPATCH_LINGER);
                continue;
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let seen = limit;
            self.signals
                .dispatch
                .wait_unless(Duration::from_millis(10), || {
                    self.dispatch_limit() != seen || self.stopping.load(Ordering::Acquire)
                });
        }
    }
}
