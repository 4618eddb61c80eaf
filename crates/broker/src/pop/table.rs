//! The in-memory state of POP consumption, plain and synchronous with the clock passed in:
//! the checkpoints of unordered pops ([`CkTable`]: which popped messages are still unacked and
//! when they become visible again) and the batch each FIFO queue has in flight
//! ([`OrderTable`]). The service (`pop/mod.rs`) journals every change to the revive log and
//! rebuilds the [`CkTable`] from it after a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Identity of one pop of one queue (upstream matches acks to checkpoints the same way).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CkKey {
    pub(crate) group: String,
    /// The topic read: the topic itself or the group's POP retry topic.
    pub(crate) topic: String,
    pub(crate) queue_id: i32,
    /// First queue offset of the pop.
    pub(crate) start_offset: i64,
    pub(crate) pop_time: i64,
}

/// The messages one pop of one queue handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) key: CkKey,
    pub(crate) invisible_time: i64,
    /// Queue offsets handed out (at most 64: a pop takes at most 32).
    pub(crate) offsets: Vec<i64>,
    /// Bit `i` set: `offsets[i]` is acked.
    pub(crate) acked: u64,
    pub(crate) revive_qid: i32,
    /// Queue offset of the checkpoint's record in its revive queue; `None` while it is being
    /// written (the revive progress must not pass it).
    pub(crate) revive_offset: Option<i64>,
}

impl Checkpoint {
    /// When the unacked messages become visible again.
    pub(crate) fn deadline(&self) -> i64 {
        self.key.pop_time.saturating_add(self.invisible_time)
    }

    /// Offsets not acked yet.
    pub(crate) fn unacked(&self) -> Vec<i64> {
        self.offsets
            .iter()
            .enumerate()
            .filter(|(i, _)| self.acked & (1u64 << i) == 0)
            .map(|(_, o)| *o)
            .collect()
    }

    fn all_acked(&self) -> bool {
        let n = self.offsets.len().min(64);
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        self.acked & all == all
    }
}

/// Why an ack or a change of invisible time does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stale {
    /// No pop with this handle is waiting: never popped, every message acked, or revived.
    UnknownHandle,
    /// The pop is known but this offset is not one of its messages.
    NotInPop,
    /// This message was acked already.
    AlreadyAcked,
}

impl Stale {
    /// The remark part saying why.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Stale::UnknownHandle => {
                "no pop with this receipt handle is in flight: its messages were acked, or its \
                 invisible time passed and they were revived"
            }
            Stale::NotInPop => "the offset is not one of the messages of this receipt handle",
            Stale::AlreadyAcked => "the message was acked already",
        }
    }
}

/// Unordered pops in flight, by key and by deadline.
#[derive(Default)]
pub(crate) struct CkTable {
    cks: HashMap<CkKey, Checkpoint>,
    due: BTreeSet<(i64, CkKey)>,
}

impl CkTable {
    /// Adds a checkpoint (replacing one with the same key).
    pub(crate) fn insert(&mut self, ck: Checkpoint) {
        if let Some(old) = self.cks.remove(&ck.key) {
            self.due.remove(&(old.deadline(), old.key));
        }
        self.due.insert((ck.deadline(), ck.key.clone()));
        self.cks.insert(ck.key.clone(), ck);
    }

    /// Removes a checkpoint.
    pub(crate) fn remove(&mut self, key: &CkKey) -> Option<Checkpoint> {
        let ck = self.cks.remove(key)?;
        self.due.remove(&(ck.deadline(), ck.key.clone()));
        Some(ck)
    }

    /// Records where the checkpoint's record landed in its revive queue.
    pub(crate) fn set_revive_offset(&mut self, key: &CkKey, offset: i64) {
        if let Some(ck) = self.cks.get_mut(key) {
            ck.revive_offset = Some(offset);
        }
    }

    /// Acks one message; a checkpoint whose messages are all acked is dropped.
    pub(crate) fn ack(&mut self, key: &CkKey, offset: i64) -> Result<(), Stale> {
        let ck = self.cks.get_mut(key).ok_or(Stale::UnknownHandle)?;
        let i = ck
            .offsets
            .iter()
            .position(|o| *o == offset)
            .filter(|i| *i < 64)
            .ok_or(Stale::NotInPop)?;
        if ck.acked & (1u64 << i) != 0 {
            return Err(Stale::AlreadyAcked);
        }
        ck.acked |= 1u64 << i;
        if ck.all_acked() {
            self.remove(key);
        }
        Ok(())
    }

    /// Whether `offset` of the pop `key` is in flight and not acked.
    pub(crate) fn is_unacked(&self, key: &CkKey, offset: i64) -> Result<(), Stale> {
        let ck = self.cks.get(key).ok_or(Stale::UnknownHandle)?;
        let i = ck
            .offsets
            .iter()
            .position(|o| *o == offset)
            .ok_or(Stale::NotInPop)?;
        if ck.acked & (1u64 << i) != 0 {
            return Err(Stale::AlreadyAcked);
        }
        Ok(())
    }

    /// Takes every checkpoint whose deadline is at or before `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: i64) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        while let Some((deadline, _)) = self.due.first() {
            if *deadline > now {
                break;
            }
            let Some((_, key)) = self.due.pop_first() else {
                break;
            };
            if let Some(ck) = self.cks.remove(&key) {
                out.push(ck);
            }
        }
        out
    }

    /// How far the revive queue `qid` may be marked done: the smallest record offset of a
    /// checkpoint still in flight there (`Some(None)`: one is being written, do not move),
    /// or `None` when none is.
    pub(crate) fn lowest_revive_offset(&self, qid: i32) -> Option<Option<i64>> {
        let mut low: Option<Option<i64>> = None;
        for ck in self.cks.values().filter(|c| c.revive_qid == qid) {
            low = match (low, ck.revive_offset) {
                (_, None) | (Some(None), _) => Some(None),
                (None, Some(o)) => Some(Some(o)),
                (Some(Some(a)), Some(o)) => Some(Some(a.min(o))),
            };
        }
        low
    }

    /// Messages popped from one queue and neither acked nor revived yet.
    pub(crate) fn inflight(&self, group: &str, topic: &str, queue_id: i32) -> usize {
        self.cks
            .values()
            .filter(|c| c.key.group == group && c.key.topic == topic && c.key.queue_id == queue_id)
            .map(|c| c.unacked().len())
            .sum()
    }
    /// The lowest offset of the queue popped and neither acked nor revived.
    pub(crate) fn lowest_unacked(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.cks
            .values()
            .filter(|c| c.key.group == group && c.key.topic == topic && c.key.queue_id == queue_id)
            .flat_map(|c| c.unacked())
            .min()
    }

    pub(crate) fn len(&self) -> usize {
        self.cks.len()
    }
}

/// The batch a FIFO queue has handed out to one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderBatch {
    pub(crate) pop_time: i64,
    pub(crate) invisible_time: i64,
    pub(crate) offsets: Vec<i64>,
    pub(crate) acked: u64,
}

/// FIFO queues: one batch per (group, topic, queue) in flight; the queue is blocked until the
/// batch is acked or its invisible time passes. Each offset's deliveries are counted until the
/// queue's offset is committed past it, so a message handed out again in a later, shorter or
/// differently cut batch keeps its count (upstream's per-offset `offsetConsumedCount`).
#[derive(Default)]
pub(crate) struct OrderTable {
    batches: HashMap<(String, String, i32), OrderBatch>,
    /// Times each offset not yet committed past was handed out before its latest batch.
    attempts: HashMap<(String, String, i32), BTreeMap<i64, i32>>,
}

impl OrderTable {
    /// Whether the queue has a batch in flight that is neither acked nor expired at `now`.
    pub(crate) fn blocked(&self, group: &str, topic: &str, queue_id: i32, now: i64) -> bool {
        self.batches
            .get(&(group.to_string(), topic.to_string(), queue_id))
            .is_some_and(|b| now < b.pop_time.saturating_add(b.invisible_time))
    }

    /// Records a new batch of `offsets`; returns each one's attempt count (how many times it
    /// was handed out before: 0 the first time).
    pub(crate) fn start(
        &mut self,
        key: (String, String, i32),
        pop_time: i64,
        invisible_time: i64,
        offsets: Vec<i64>,
    ) -> Vec<i32> {
        let counts = self.attempts.entry(key.clone()).or_default();
        let attempts = offsets
            .iter()
            .map(|o| {
                let c = counts.entry(*o).or_insert(-1);
                *c += 1;
                *c
            })
            .collect();
        self.batches.insert(
            key,
            OrderBatch {
                pop_time,
                invisible_time,
                offsets,
                acked: 0,
            },
        );
        attempts
    }

    /// Acks one message of the batch popped at `pop_time`. Returns the offset to commit
    /// when the whole batch is acked (the batch is then dropped).
    pub(crate) fn ack(
        &mut self,
        key: &(String, String, i32),
        pop_time: i64,
        offset: i64,
    ) -> Result<Option<i64>, Stale> {
        let b = self
            .batches
            .get_mut(key)
            .filter(|b| b.pop_time == pop_time)
            .ok_or(Stale::UnknownHandle)?;
        let i = b
            .offsets
            .iter()
            .position(|o| *o == offset)
            .filter(|i| *i < 64)
            .ok_or(Stale::NotInPop)?;
        if b.acked & (1u64 << i) != 0 {
            return Err(Stale::AlreadyAcked);
        }
        b.acked |= 1u64 << i;
        let n = b.offsets.len().min(64);
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        if b.acked & all == all {
            let next = b.offsets.iter().max().map_or(offset, |m| m + 1);
            self.batches.remove(key);
            if let Some(counts) = self.attempts.get_mut(key) {
                *counts = counts.split_off(&next);
                if counts.is_empty() {
                    self.attempts.remove(key);
                }
            }
            return Ok(Some(next));
        }
        Ok(None)
    }

    /// Extends the invisible time of the batch popped at `pop_time` (FIFO change of
    /// invisible time): the batch now counts from `now`.
    pub(crate) fn extend(
        &mut self,
        key: &(String, String, i32),
        pop_time: i64,
        now: i64,
        invisible_time: i64,
    ) -> Result<(), Stale> {
        let b = self
            .batches
            .get_mut(key)
            .filter(|b| b.pop_time == pop_time)
            .ok_or(Stale::UnknownHandle)?;
        b.pop_time = now;
        b.invisible_time = invisible_time;
        Ok(())
    }

    /// Messages of the queue's batch handed out and not acked, while it is invisible.
    pub(crate) fn inflight(&self, group: &str, topic: &str, queue_id: i32, now: i64) -> usize {
        self.batches
            .get(&(group.to_string(), topic.to_string(), queue_id))
            .filter(|b| now < b.pop_time.saturating_add(b.invisible_time))
            .map_or(0, |b| b.offsets.len() - b.acked.count_ones() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start: i64, pop_time: i64) -> CkKey {
        CkKey {
            group: "G".into(),
            topic: "T".into(),
            queue_id: 0,
            start_offset: start,
            pop_time,
        }
    }

    fn ck(start: i64, pop_time: i64, n: i64, invisible: i64) -> Checkpoint {
        Checkpoint {
            key: key(start, pop_time),
            invisible_time: invisible,
            offsets: (start..start + n).collect(),
            acked: 0,
            revive_qid: 1,
            revive_offset: None,
        }
    }

    #[test]
    fn acks_complete_a_checkpoint_and_stale_handles_are_told_apart() {
        let mut t = CkTable::default();
        t.insert(ck(10, 1_000, 3, 500));
        assert_eq!(t.ack(&key(10, 1_000), 11), Ok(()));
        assert_eq!(t.ack(&key(10, 1_000), 11), Err(Stale::AlreadyAcked));
        assert_eq!(t.ack(&key(10, 1_000), 99), Err(Stale::NotInPop));
        assert_eq!(t.ack(&key(10, 999), 10), Err(Stale::UnknownHandle));
        assert_eq!(t.inflight("G", "T", 0), 2);
        t.ack(&key(10, 1_000), 10).unwrap();
        t.ack(&key(10, 1_000), 12).unwrap();
        assert_eq!(t.len(), 0, "a fully acked pop is dropped");
        assert_eq!(t.ack(&key(10, 1_000), 12), Err(Stale::UnknownHandle));
    }

    #[test]
    fn due_checkpoints_come_out_in_deadline_order_with_their_unacked_offsets() {
        let mut t = CkTable::default();
        t.insert(ck(0, 1_000, 2, 5_000));
        t.insert(ck(5, 2_000, 2, 1_000));
        t.ack(&key(5, 2_000), 6).unwrap();
        assert!(t.take_due(2_999).is_empty());
        let due = t.take_due(3_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].unacked(), vec![5]);
        assert_eq!(t.take_due(10_000)[0].unacked(), vec![0, 1]);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn revive_progress_never_passes_a_checkpoint_being_written() {
        let mut t = CkTable::default();
        assert_eq!(t.lowest_revive_offset(1), None);
        t.insert(ck(0, 1, 1, 10));
        assert_eq!(t.lowest_revive_offset(1), Some(None));
        t.set_revive_offset(&key(0, 1), 7);
        t.insert(ck(4, 2, 1, 10));
        t.set_revive_offset(&key(4, 2), 9);
        assert_eq!(t.lowest_revive_offset(1), Some(Some(7)));
        assert_eq!(t.lowest_revive_offset(2), None);
    }

    #[test]
    fn a_fifo_queue_is_blocked_until_acked_or_expired() {
        let mut o = OrderTable::default();
        let k = ("G".to_string(), "T".to_string(), 0);
        assert_eq!(o.start(k.clone(), 1_000, 500, vec![3, 4]), [0, 0]);
        assert!(o.blocked("G", "T", 0, 1_499));
        assert!(!o.blocked("G", "T", 0, 1_500), "expired: handed out again");
        assert_eq!(
            o.start(k.clone(), 1_500, 500, vec![3]),
            [1],
            "second attempt, a shorter batch"
        );
        // Offset 4 keeps its count although the batch in between left it out.
        assert_eq!(o.start(k.clone(), 1_600, 500, vec![3, 4]), [2, 1]);
        assert_eq!(o.start(k.clone(), 1_500, 500, vec![3, 4]), [3, 2]);
        assert_eq!(o.ack(&k, 1_000, 3), Err(Stale::UnknownHandle), "old handle");
        assert_eq!(o.ack(&k, 1_500, 3), Ok(None));
        assert_eq!(o.inflight("G", "T", 0, 1_600), 1);
        assert_eq!(o.ack(&k, 1_500, 4), Ok(Some(5)));
        assert!(!o.blocked("G", "T", 0, 1_600));
        assert_eq!(o.start(k.clone(), 2_000, 500, vec![5]), [0]);
        assert!(
            o.attempts[&k].keys().all(|o| *o >= 5),
            "committed past: forgotten"
        );
        o.extend(&k, 2_000, 2_400, 1_000).unwrap();
        assert!(o.blocked("G", "T", 0, 3_399));
    }
}
