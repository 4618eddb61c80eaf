//! [`RebalanceLockManager`]: which client holds each queue of a consumer group, for orderly
//! consumption (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ). A lock not renewed within
//! `rebalanceLockMaxLiveTime` (60 s) expires, so a dead client's queues are taken over.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use remoting::broker_headers::MessageQueue;

struct LockEntry {
    client_id: String,
    last_update: Instant,
}

/// Queue locks per consumer group.
pub struct RebalanceLockManager {
    max_live: Duration,
    table: Mutex<HashMap<String, HashMap<MessageQueue, LockEntry>>>,
}

impl RebalanceLockManager {
    pub fn new(max_live: Duration) -> Self {
        RebalanceLockManager {
            max_live,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Locks (or renews) each queue of `mqs` that is free, expired or already held by
    /// `client_id`; returns the queues `client_id` holds afterwards.
    pub fn try_lock_batch(
        &self,
        group: &str,
        mqs: &BTreeSet<MessageQueue>,
        client_id: &str,
    ) -> BTreeSet<MessageQueue> {
        self.try_lock_batch_at(group, mqs, client_id, Instant::now())
    }

    /// [`Self::try_lock_batch`] with the clock passed in.
    fn try_lock_batch_at(
        &self,
        group: &str,
        mqs: &BTreeSet<MessageQueue>,
        client_id: &str,
        now: Instant,
    ) -> BTreeSet<MessageQueue> {
        let mut table = self.table.lock();
        let locks = table.entry(group.to_string()).or_default();
        let mut ok = BTreeSet::new();
        for mq in mqs {
            let entry = locks.entry(mq.clone()).or_insert_with(|| LockEntry {
                client_id: client_id.to_string(),
                last_update: now,
            });
            let expired = now.duration_since(entry.last_update) > self.max_live;
            if entry.client_id == client_id || expired {
                entry.client_id = client_id.to_string();
                entry.last_update = now;
                ok.insert(mq.clone());
            }
        }
        ok
    }

    /// Releases the queues of `mqs` held by `client_id`.
    pub fn unlock_batch(&self, group: &str, mqs: &BTreeSet<MessageQueue>, client_id: &str) {
        let mut table = self.table.lock();
        if let Some(locks) = table.get_mut(group) {
            for mq in mqs {
                if locks.get(mq).is_some_and(|e| e.client_id == client_id) {
                    locks.remove(mq);
                }
            }
            if locks.is_empty() {
                table.remove(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_renew_steal_after_expiry() {
        // The clock is passed in: the test does not depend on how fast it runs.
        let m = RebalanceLockManager::new(Duration::from_millis(50));
        let mqs: BTreeSet<_> = [
            MessageQueue::new("T", "b", 0),
            MessageQueue::new("T", "b", 1),
        ]
        .into_iter()
        .collect();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c1", at(0)).len(), 2);
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c2", at(10)).len(), 0);
        // Renewed at 40: still held at 80, expired after 90.
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c1", at(40)).len(), 2);
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c2", at(80)).len(), 0);
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c2", at(91)).len(), 2);
        m.unlock_batch("G", &mqs, "c1");
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c1", at(92)).len(), 0);
        m.unlock_batch("G", &mqs, "c2");
        assert_eq!(m.try_lock_batch_at("G", &mqs, "c1", at(93)).len(), 2);
    }
}
