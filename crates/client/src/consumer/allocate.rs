//! Queue allocation strategies: how the consumers of a group divide a topic's queues. Every
//! consumer runs the same function over the same sorted inputs (all queues, all consumer
//! ids) and keeps its own share, so no coordination is needed.
//!
//! The three strategies give exactly upstream's assignments, so Rust and Java consumers can
//! share a group: [`AllocateMessageQueueAveragely`] (`AVG`), [`AllocateMessageQueueAveragelyByCircle`]
//! (`AVG_BY_CIRCLE`) and [`AllocateMessageQueueConsistentHash`] (`CONSISTENT_HASH`, MD5 ring).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use remoting::broker_headers::MessageQueue;
use tracing::info;

/// A queue allocation strategy (upstream `AllocateMessageQueueStrategy`).
pub trait AllocateStrategy: Send + Sync + 'static {
    /// Upstream's name of the strategy.
    fn name(&self) -> &'static str;

    /// The queues `current_cid` owns. `mq_all` and `cid_all` must be sorted the same way on
    /// every consumer (the rebalance sorts them). Returns nothing when `current_cid` is not in
    /// `cid_all` or either list is empty.
    fn allocate(
        &self,
        consumer_group: &str,
        current_cid: &str,
        mq_all: &[MessageQueue],
        cid_all: &[String],
    ) -> Vec<MessageQueue>;
}

/// Index of `current_cid` in `cid_all`, when allocation can proceed.
fn check(
    group: &str,
    current_cid: &str,
    mq_all: &[MessageQueue],
    cid_all: &[String],
) -> Option<usize> {
    if current_cid.is_empty() || mq_all.is_empty() || cid_all.is_empty() {
        return None;
    }
    let index = cid_all.iter().position(|c| c == current_cid);
    if index.is_none() {
        info!(
            group,
            current_cid,
            ?cid_all,
            "consumer id not in the group's list yet"
        );
    }
    index
}

/// Contiguous ranges: with 8 queues and 3 consumers, 3 + 3 + 2.
///
/// ```
/// use client::consumer::allocate::{AllocateMessageQueueAveragely, AllocateStrategy};
/// use remoting::broker_headers::MessageQueue;
///
/// let mqs: Vec<_> = (0..8).map(|i| MessageQueue::new("T", "b", i)).collect();
/// let cids: Vec<String> = vec!["c1".into(), "c2".into(), "c3".into()];
/// let mine = AllocateMessageQueueAveragely.allocate("g", "c3", &mqs, &cids);
/// assert_eq!(mine.iter().map(|q| q.queue_id).collect::<Vec<_>>(), vec![6, 7]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocateMessageQueueAveragely;

impl AllocateStrategy for AllocateMessageQueueAveragely {
    fn name(&self) -> &'static str {
        "AVG"
    }

    fn allocate(
        &self,
        group: &str,
        cid: &str,
        mq_all: &[MessageQueue],
        cid_all: &[String],
    ) -> Vec<MessageQueue> {
        let Some(index) = check(group, cid, mq_all, cid_all) else {
            return Vec::new();
        };
        let (mqs, cids) = (mq_all.len(), cid_all.len());
        let m = mqs % cids;
        let average = if mqs <= cids {
            1
        } else if m > 0 && index < m {
            mqs / cids + 1
        } else {
            mqs / cids
        };
        let start = if m > 0 && index < m {
            index * average
        } else {
            index * average + m
        };
        let range = average.min(mqs.saturating_sub(start));
        mq_all[start.min(mqs)..start.min(mqs) + range].to_vec()
    }
}

/// Round robin: consumer `i` gets queues `i`, `i + n`, `i + 2n`, ...
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocateMessageQueueAveragelyByCircle;

impl AllocateStrategy for AllocateMessageQueueAveragelyByCircle {
    fn name(&self) -> &'static str {
        "AVG_BY_CIRCLE"
    }

    fn allocate(
        &self,
        group: &str,
        cid: &str,
        mq_all: &[MessageQueue],
        cid_all: &[String],
    ) -> Vec<MessageQueue> {
        let Some(index) = check(group, cid, mq_all, cid_all) else {
            return Vec::new();
        };
        mq_all
            .iter()
            .skip(index)
            .step_by(cid_all.len())
            .cloned()
            .collect()
    }
}

/// Consistent hashing on an MD5 ring with `virtual_node_cnt` nodes per consumer (default 10):
/// a consumer joining or leaving moves few queues.
#[derive(Clone, Copy, Debug)]
pub struct AllocateMessageQueueConsistentHash {
    pub virtual_node_cnt: usize,
}

impl Default for AllocateMessageQueueConsistentHash {
    fn default() -> Self {
        AllocateMessageQueueConsistentHash {
            virtual_node_cnt: 10,
        }
    }
}

/// Upstream's ring hash: the first 4 bytes of the key's MD5, big-endian, as a non-negative
/// number.
fn md5_hash(key: &str) -> u64 {
    let digest = Md5::digest(key.as_bytes());
    digest[..4]
        .iter()
        .fold(0u64, |h, b| (h << 8) | u64::from(*b))
}

impl AllocateStrategy for AllocateMessageQueueConsistentHash {
    fn name(&self) -> &'static str {
        "CONSISTENT_HASH"
    }

    fn allocate(
        &self,
        group: &str,
        cid: &str,
        mq_all: &[MessageQueue],
        cid_all: &[String],
    ) -> Vec<MessageQueue> {
        if check(group, cid, mq_all, cid_all).is_none() {
            return Vec::new();
        }
        // Later virtual nodes overwrite earlier ones on a hash collision, as a TreeMap put does.
        let mut ring: BTreeMap<u64, &str> = BTreeMap::new();
        for c in cid_all {
            for i in 0..self.virtual_node_cnt {
                ring.insert(md5_hash(&format!("{c}-{i}")), c.as_str());
            }
        }
        mq_all
            .iter()
            .filter(|mq| {
                let h = md5_hash(&mq.to_string());
                let owner = ring
                    .range(h..)
                    .next()
                    .or_else(|| ring.iter().next())
                    .map(|(_, c)| *c);
                owner == Some(cid)
            })
            .cloned()
            .collect()
    }
}

/// The strategy called `name` (upstream names), `None` when unknown.
pub fn strategy_by_name(name: &str) -> Option<Box<dyn AllocateStrategy>> {
    match name {
        "AVG" => Some(Box::new(AllocateMessageQueueAveragely)),
        "AVG_BY_CIRCLE" => Some(Box::new(AllocateMessageQueueAveragelyByCircle)),
        "CONSISTENT_HASH" => Some(Box::new(AllocateMessageQueueConsistentHash::default())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn mqs(n: usize) -> Vec<MessageQueue> {
        (0..n)
            .map(|i| MessageQueue::new("T", format!("b{}", i % 3), i as i32))
            .collect()
    }

    fn cids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}@c{i}")).collect()
    }

    fn strategies() -> Vec<Box<dyn AllocateStrategy>> {
        ["AVG", "AVG_BY_CIRCLE", "CONSISTENT_HASH"]
            .iter()
            .map(|n| strategy_by_name(n).unwrap())
            .collect()
    }

    #[test]
    fn averagely_matches_upstream_examples() {
        let all = mqs(10);
        let ids = cids(4);
        let got: Vec<Vec<i32>> = ids
            .iter()
            .map(|c| {
                AllocateMessageQueueAveragely
                    .allocate("g", c, &all, &ids)
                    .iter()
                    .map(|q| q.queue_id)
                    .collect()
            })
            .collect();
        assert_eq!(
            got,
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6, 7], vec![8, 9]]
        );
        // More consumers than queues: the last ones get nothing.
        let many = cids(12);
        assert!(AllocateMessageQueueAveragely
            .allocate("g", &many[11], &all, &many)
            .is_empty());
        assert_eq!(
            AllocateMessageQueueAveragely
                .allocate("g", &many[3], &all, &many)
                .len(),
            1
        );
    }

    #[test]
    fn by_circle_matches_upstream_examples() {
        let all = mqs(7);
        let ids = cids(3);
        let mine: Vec<i32> = AllocateMessageQueueAveragelyByCircle
            .allocate("g", &ids[1], &all, &ids)
            .iter()
            .map(|q| q.queue_id)
            .collect();
        assert_eq!(mine, vec![1, 4]);
    }

    #[test]
    fn ring_hash_is_md5_prefix() {
        // MD5("") = d41d8cd9...
        assert_eq!(md5_hash(""), 0xd41d_8cd9);
        assert_eq!(
            MessageQueue::new("T", "b", 1).to_string(),
            "MessageQueue [topic=T, brokerName=b, queueId=1]"
        );
    }

    #[test]
    fn unknown_consumer_or_empty_inputs_get_nothing() {
        for s in strategies() {
            assert!(s.allocate("g", "nobody", &mqs(4), &cids(2)).is_empty());
            assert!(s.allocate("g", &cids(1)[0], &[], &cids(1)).is_empty());
            assert!(s.allocate("g", "", &mqs(4), &cids(1)).is_empty());
        }
        assert!(strategy_by_name("nope").is_none());
    }

    proptest! {
        #[test]
        fn every_queue_owned_exactly_once(n_mq in 1usize..40, n_c in 1usize..12, which in 0usize..3) {
            let s = &strategies()[which];
            let all = mqs(n_mq);
            let ids = cids(n_c);
            let mut owned = Vec::new();
            for c in &ids {
                let mine = s.allocate("g", c, &all, &ids);
                // Stable: the same inputs give the same share.
                prop_assert_eq!(&mine, &s.allocate("g", c, &all, &ids));
                owned.extend(mine);
            }
            owned.sort();
            let mut expected = all.clone();
            expected.sort();
            prop_assert_eq!(owned, expected);
        }

        #[test]
        fn even_strategies_are_balanced(n_mq in 1usize..40, n_c in 1usize..12, which in 0usize..2) {
            let s = &strategies()[which];
            let all = mqs(n_mq);
            let ids = cids(n_c);
            let sizes: BTreeSet<usize> = ids.iter().map(|c| s.allocate("g", c, &all, &ids).len()).collect();
            let (min, max) = (*sizes.iter().next().unwrap(), *sizes.iter().last().unwrap());
            prop_assert!(max - min <= 1);
        }
    }
}
