//! [`ProcessQueue`]: the messages pulled from one queue and not yet done with, in offset order.
//!
//! It answers three questions for the push consumer:
//! - flow control: how many messages and body bytes are cached, and the offset span;
//! - what offset may be committed: the lowest offset still held, so the committed offset never
//!   passes a message that is being consumed, waiting for a local retry, or failed to be sent
//!   back (those stay held until they succeed);
//! - for orderly consumption, which messages are being consumed now ([`ProcessQueue::take_messages`],
//!   [`ProcessQueue::commit`], [`ProcessQueue::make_messages_to_consume_again`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use remoting::message::{MessageConst, MessageExt};

/// How long a broker-side queue lock lasts without renewal (upstream `lockMaxLiveTime`).
pub const REBALANCE_LOCK_MAX_LIVE_TIME: Duration = Duration::from_secs(30);
/// How often queue locks are renewed (upstream `lockInterval`).
pub const REBALANCE_LOCK_INTERVAL: Duration = Duration::from_secs(20);
/// A queue not pulled for this long is considered stuck (upstream `pullMaxIdleTime`).
pub const PULL_MAX_IDLE_TIME: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Held {
    /// Offset -> message, not yet consumed successfully (or handed off by a send-back).
    msgs: BTreeMap<i64, MessageExt>,
    /// Orderly only: messages taken for consumption and not yet committed.
    consuming: BTreeMap<i64, MessageExt>,
    /// Body bytes of `msgs` + `consuming`.
    bytes: u64,
    /// Highest offset ever put.
    queue_offset_max: i64,
    /// Whether a consume task is working on this queue (orderly dispatch).
    dispatching: bool,
    /// Messages behind the broker's max offset, from the last pull (`msgAccCnt`).
    behind: i64,
}

/// Cached messages of one message queue.
pub struct ProcessQueue {
    held: Mutex<Held>,
    dropped: AtomicBool,
    locked: AtomicBool,
    last_lock: Mutex<Instant>,
    last_pull: Mutex<Instant>,
    last_consume: Mutex<Instant>,
    try_unlock_times: AtomicI64,
}

impl Default for ProcessQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessQueue {
    /// An empty queue.
    pub fn new() -> Self {
        let now = Instant::now();
        ProcessQueue {
            held: Mutex::new(Held::default()),
            dropped: AtomicBool::new(false),
            locked: AtomicBool::new(false),
            last_lock: Mutex::new(now),
            last_pull: Mutex::new(now),
            last_consume: Mutex::new(now),
            try_unlock_times: AtomicI64::new(0),
        }
    }

    /// Adds pulled messages (duplicates by offset are ignored). Returns true when the queue
    /// has messages and no consume task was dispatched yet (orderly consumption starts one).
    pub fn put_messages(&self, msgs: Vec<MessageExt>) -> bool {
        let mut held = self.held.lock();
        if let Some(last) = msgs.last() {
            if let Some(max) = last
                .message
                .property(MessageConst::PROPERTY_MAX_OFFSET)
                .and_then(|v| v.parse::<i64>().ok())
            {
                let behind = max - last.queue_offset;
                if behind > 0 {
                    held.behind = behind;
                }
            }
        }
        for msg in msgs {
            let offset = msg.queue_offset;
            if held.msgs.contains_key(&offset) || held.consuming.contains_key(&offset) {
                continue;
            }
            held.bytes += msg.message.body.len() as u64;
            held.queue_offset_max = held.queue_offset_max.max(offset);
            held.msgs.insert(offset, msg);
        }
        if !held.msgs.is_empty() && !held.dispatching {
            held.dispatching = true;
            return true;
        }
        false
    }

    /// Removes consumed messages. Returns the offset that may now be committed: the lowest
    /// offset still held, or one past the highest offset ever put when nothing is held;
    /// `None` when nothing was held before the call (nothing to commit).
    pub fn remove_messages(&self, offsets: &[i64]) -> Option<i64> {
        let mut held = self.held.lock();
        *self.last_consume.lock() = Instant::now();
        if held.msgs.is_empty() {
            return None;
        }
        for offset in offsets {
            if let Some(m) = held.msgs.remove(offset) {
                held.bytes = held.bytes.saturating_sub(m.message.body.len() as u64);
            }
        }
        if held.msgs.is_empty() && held.consuming.is_empty() {
            held.bytes = 0;
        }
        Some(
            held.msgs
                .keys()
                .next()
                .copied()
                .unwrap_or(held.queue_offset_max + 1),
        )
    }

    /// Whether `offset` is still held (not consumed, not removed).
    pub fn contains(&self, offset: i64) -> bool {
        let held = self.held.lock();
        held.msgs.contains_key(&offset) || held.consuming.contains_key(&offset)
    }

    /// Number of messages held.
    pub fn msg_count(&self) -> usize {
        let held = self.held.lock();
        held.msgs.len() + held.consuming.len()
    }

    /// Body bytes held.
    pub fn msg_size(&self) -> u64 {
        self.held.lock().bytes
    }

    /// Highest minus lowest offset held (0 when empty), for the span flow control.
    pub fn max_span(&self) -> i64 {
        let held = self.held.lock();
        match (held.msgs.keys().next(), held.msgs.keys().next_back()) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        }
    }

    /// Lowest offset held, if any.
    pub fn min_offset(&self) -> Option<i64> {
        let held = self.held.lock();
        let a = held.msgs.keys().next().copied();
        let b = held.consuming.keys().next().copied();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Highest offset held, if any.
    pub fn max_offset(&self) -> Option<i64> {
        let held = self.held.lock();
        held.msgs.keys().next_back().copied()
    }

    /// Messages the broker still has beyond what was pulled (from `MAX_OFFSET`).
    pub fn behind(&self) -> i64 {
        self.held.lock().behind
    }

    /// Orderly: moves up to `batch` of the lowest-offset messages into the consuming set and
    /// returns them; an empty result ends the dispatch (a later put starts a new one).
    pub fn take_messages(&self, batch: usize) -> Vec<MessageExt> {
        let mut held = self.held.lock();
        *self.last_consume.lock() = Instant::now();
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            let Some((offset, msg)) = held.msgs.pop_first() else {
                break;
            };
            held.consuming.insert(offset, msg.clone());
            out.push(msg);
        }
        if out.is_empty() {
            held.dispatching = false;
        }
        out
    }

    /// Orderly: the consuming set succeeded; returns the offset to commit (one past its highest
    /// offset), `None` when nothing was being consumed.
    pub fn commit(&self) -> Option<i64> {
        let mut held = self.held.lock();
        let last = held.consuming.keys().next_back().copied()?;
        let done = std::mem::take(&mut held.consuming);
        let freed: u64 = done.values().map(|m| m.message.body.len() as u64).sum();
        held.bytes = held.bytes.saturating_sub(freed);
        if held.msgs.is_empty() {
            held.bytes = 0;
        }
        Some(last + 1)
    }

    /// Orderly: puts these messages back to be consumed again (local retry).
    pub fn make_messages_to_consume_again(&self, msgs: Vec<MessageExt>) {
        let mut held = self.held.lock();
        for msg in msgs {
            held.consuming.remove(&msg.queue_offset);
            held.msgs.insert(msg.queue_offset, msg);
        }
    }

    /// Orderly: puts every consuming message back (the queue lock was lost mid-way).
    pub fn rollback(&self) {
        let mut held = self.held.lock();
        let consuming = std::mem::take(&mut held.consuming);
        held.msgs.extend(consuming);
    }

    /// Drops every held message (the queue was reassigned or reset).
    pub fn clear(&self) {
        let mut held = self.held.lock();
        held.msgs.clear();
        held.consuming.clear();
        held.bytes = 0;
        held.queue_offset_max = 0;
        held.dispatching = false;
    }

    /// Marks the queue dropped (no longer owned); pulls and consumption stop.
    pub fn set_dropped(&self, dropped: bool) {
        self.dropped.store(dropped, Ordering::SeqCst);
    }

    pub fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Records whether the broker lock is held (orderly), renewing its timestamp when it is.
    pub fn set_locked(&self, locked: bool) {
        self.locked.store(locked, Ordering::SeqCst);
        if locked {
            *self.last_lock.lock() = Instant::now();
        }
    }

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }

    /// Whether the broker lock was last renewed longer ago than it lives.
    pub fn is_lock_expired(&self) -> bool {
        self.last_lock.lock().elapsed() > REBALANCE_LOCK_MAX_LIVE_TIME
    }

    /// Records a pull.
    pub fn touch_pull(&self) {
        *self.last_pull.lock() = Instant::now();
    }

    /// Whether the queue was not pulled for [`PULL_MAX_IDLE_TIME`].
    pub fn is_pull_expired(&self) -> bool {
        self.last_pull.lock().elapsed() > PULL_MAX_IDLE_TIME
    }

    /// Counts a failed unlock attempt.
    pub fn inc_try_unlock_times(&self) -> i64 {
        self.try_unlock_times.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Snapshot for GET_CONSUMER_RUNNING_INFO.
    pub fn info(&self, commit_offset: i64) -> remoting::broker_headers::ProcessQueueInfo {
        let held = self.held.lock();
        let since_epoch =
            |t: Instant| remoting::message::now_millis() - t.elapsed().as_millis() as i64;
        remoting::broker_headers::ProcessQueueInfo {
            commit_offset,
            cached_msg_min_offset: held.msgs.keys().next().copied().unwrap_or(0),
            cached_msg_max_offset: held.msgs.keys().next_back().copied().unwrap_or(0),
            cached_msg_count: (held.msgs.len() + held.consuming.len()) as i32,
            cached_msg_size_in_mib: (held.bytes / (1024 * 1024)) as i32,
            locked: self.is_locked(),
            try_unlock_times: self.try_unlock_times.load(Ordering::Relaxed),
            last_lock_timestamp: since_epoch(*self.last_lock.lock()),
            droped: self.is_dropped(),
            last_pull_timestamp: since_epoch(*self.last_pull.lock()),
            last_consume_timestamp: since_epoch(*self.last_consume.lock()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::message::Message;

    fn msg(offset: i64, body: &str) -> MessageExt {
        let mut m = MessageExt::new(Message::new("T", body.as_bytes().to_vec()));
        m.queue_offset = offset;
        m
    }

    #[test]
    fn committed_offset_is_the_lowest_in_flight() {
        let pq = ProcessQueue::new();
        assert!(pq.put_messages((10..15).map(|o| msg(o, "xx")).collect()));
        assert!(!pq.put_messages(vec![msg(15, "y")]), "already dispatching");
        assert_eq!((pq.msg_count(), pq.msg_size(), pq.max_span()), (6, 11, 5));
        // 11 and 13 done; 10 still in flight.
        assert_eq!(pq.remove_messages(&[11, 13]), Some(10));
        // 10 done: 12 is the lowest still held.
        assert_eq!(pq.remove_messages(&[10]), Some(12));
        // Everything done: one past the highest ever put.
        assert_eq!(pq.remove_messages(&[12, 14, 15]), Some(16));
        assert_eq!(pq.msg_size(), 0);
        assert_eq!(pq.remove_messages(&[16]), None);
    }

    #[test]
    fn a_message_pending_local_retry_holds_the_offset() {
        let pq = ProcessQueue::new();
        pq.put_messages((0..4).map(|o| msg(o, "a")).collect());
        // Offset 1 failed and could not be sent back: it is not removed.
        assert_eq!(pq.remove_messages(&[0, 2, 3]), Some(1));
        // Newer messages arrive and are consumed; the commit point stays at 1.
        pq.put_messages(vec![msg(4, "a"), msg(5, "a")]);
        assert_eq!(pq.remove_messages(&[4, 5]), Some(1));
        assert!(pq.contains(1));
        // The retry finally succeeds.
        assert_eq!(pq.remove_messages(&[1]), Some(6));
    }

    #[test]
    fn duplicates_are_ignored() {
        let pq = ProcessQueue::new();
        pq.put_messages(vec![msg(1, "abc"), msg(1, "abc")]);
        assert_eq!((pq.msg_count(), pq.msg_size()), (1, 3));
    }

    #[test]
    fn orderly_take_commit_and_retry() {
        let pq = ProcessQueue::new();
        pq.put_messages((0..5).map(|o| msg(o, "a")).collect());
        let batch = pq.take_messages(2);
        assert_eq!(
            batch.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(pq.min_offset(), Some(0));
        // Suspend: put back and take again, same order.
        pq.make_messages_to_consume_again(batch);
        let batch = pq.take_messages(2);
        assert_eq!(batch[0].queue_offset, 0);
        assert_eq!(pq.commit(), Some(2));
        assert_eq!(pq.commit(), None);
        let rest = pq.take_messages(10);
        assert_eq!(rest.len(), 3);
        pq.rollback();
        assert_eq!(pq.msg_count(), 3);
        assert_eq!(pq.take_messages(10).len(), 3);
        assert_eq!(pq.commit(), Some(5));
        assert!(pq.take_messages(1).is_empty());
        // The dispatch ended, so the next put starts a new one.
        assert!(pq.put_messages(vec![msg(5, "a")]));
        assert_eq!(pq.msg_size(), 1);
    }

    #[test]
    fn behind_count_from_max_offset_property() {
        let pq = ProcessQueue::new();
        let mut m = msg(3, "a");
        m.message
            .properties
            .insert(MessageConst::PROPERTY_MAX_OFFSET, "10");
        pq.put_messages(vec![m]);
        assert_eq!(pq.behind(), 7);
        pq.set_locked(true);
        assert!(pq.is_locked() && !pq.is_lock_expired());
        let info = pq.info(3);
        assert_eq!(
            (info.cached_msg_count, info.commit_offset, info.locked),
            (1, 3, true)
        );
    }
}
