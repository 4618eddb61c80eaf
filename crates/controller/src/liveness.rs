//! [`BrokerLiveness`]: which brokers are alive, from their BROKER_HEARTBEATs (upstream
//! `DefaultBrokerHeartbeatManager`). Local to each controller, never replicated: brokers send
//! heartbeats to every controller, so a new leader already knows who is alive. Plain state with
//! the clock passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::replicas::Candidate;

/// What the last heartbeat of one broker said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveInfo {
    pub cluster_name: String,
    pub address: String,
    pub last_seen: Instant,
    pub timeout: Duration,
    pub epoch: i32,
    pub max_offset: i64,
    pub election_priority: i32,
}

/// (brokerName, brokerId) -> last heartbeat.
#[derive(Debug, Default)]
pub struct BrokerLiveness {
    brokers: BTreeMap<(String, i64), LiveInfo>,
    /// The connection each broker's last heartbeat came on (upstream's broker channel): its
    /// close counts the broker dead at once.
    channels: BTreeMap<(String, i64), u64>,
}

impl BrokerLiveness {
    /// Records a heartbeat of broker `id` of group `broker_name` at `now`.
    pub fn heartbeat(&mut self, broker_name: &str, id: i64, info: LiveInfo) {
        self.brokers.insert((broker_name.to_string(), id), info);
    }

    /// Whether broker `id` of `broker_name` was heard from within its timeout before `now`.
    pub fn is_alive(&self, broker_name: &str, id: i64, now: Instant) -> bool {
        self.brokers
            .get(&(broker_name.to_string(), id))
            .is_some_and(|b| now.saturating_duration_since(b.last_seen) < b.timeout)
    }

    /// The election facts of broker `id` at `now`.
    pub fn candidate(&self, broker_name: &str, id: i64, now: Instant) -> Candidate {
        match self.brokers.get(&(broker_name.to_string(), id)) {
            Some(b) => Candidate {
                alive: now.saturating_duration_since(b.last_seen) < b.timeout,
                epoch: b.epoch,
                max_offset: b.max_offset,
                election_priority: b.election_priority,
            },
            None => Candidate::default(),
        }
    }

    /// Brokers alive at `now` per (cluster, brokerName).
    pub fn alive_per_group(&self, now: Instant) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for ((name, _), b) in &self.brokers {
            if now.saturating_duration_since(b.last_seen) < b.timeout {
                *out.entry((b.cluster_name.clone(), name.clone()))
                    .or_insert(0) += 1;
            }
        }
        out
    }

    /// Records that broker `id` of `broker_name` heartbeats on connection `conn`.
    pub fn bind_channel(&mut self, broker_name: &str, id: i64, conn: u64) {
        self.channels.insert((broker_name.to_string(), id), conn);
    }

    /// Connection `conn` closed: removes and returns the brokers whose last heartbeat came
    /// on it (upstream `onBrokerChannelClose`), as (brokerName, brokerId, info).
    pub fn channel_closed(&mut self, conn: u64) -> Vec<(String, i64, LiveInfo)> {
        let gone: Vec<(String, i64)> = self
            .channels
            .iter()
            .filter(|(_, c)| **c == conn)
            .map(|(k, _)| k.clone())
            .collect();
        gone.into_iter()
            .filter_map(|k| {
                self.channels.remove(&k);
                self.brokers.remove(&k).map(|info| (k.0, k.1, info))
            })
            .collect()
    }

    /// Removes and returns the brokers whose timeout has passed at `now`, as
    /// (brokerName, brokerId, info).
    pub fn scan_not_active(&mut self, now: Instant) -> Vec<(String, i64, LiveInfo)> {
        let expired: Vec<(String, i64)> = self
            .brokers
            .iter()
            .filter(|(_, b)| now.saturating_duration_since(b.last_seen) >= b.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| {
                self.channels.remove(&k);
                self.brokers.remove(&k).map(|info| (k.0, k.1, info))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_broker_expires_after_its_timeout() {
        let t0 = Instant::now();
        let mut l = BrokerLiveness::default();
        let info = LiveInfo {
            cluster_name: "c1".into(),
            address: "127.0.0.1:10911".into(),
            last_seen: t0,
            timeout: Duration::from_secs(3),
            epoch: 1,
            max_offset: 10,
            election_priority: 0,
        };
        l.heartbeat("b1", 1, info);
        assert!(l.is_alive("b1", 1, t0 + Duration::from_secs(2)));
        assert!(l.scan_not_active(t0 + Duration::from_secs(2)).is_empty());
        let gone = l.scan_not_active(t0 + Duration::from_secs(3));
        assert_eq!(gone.len(), 1);
        assert!(!l.is_alive("b1", 1, t0));
    }

    #[test]
    fn a_broker_whose_channel_closes_is_dead_at_once() {
        let t0 = Instant::now();
        let mut l = BrokerLiveness::default();
        let info = LiveInfo {
            cluster_name: "c1".into(),
            address: "127.0.0.1:10911".into(),
            last_seen: t0,
            timeout: Duration::from_secs(10),
            epoch: 1,
            max_offset: 10,
            election_priority: 0,
        };
        l.heartbeat("b1", 1, info.clone());
        l.bind_channel("b1", 1, 7);
        l.heartbeat("b1", 2, info);
        l.bind_channel("b1", 2, 8);
        assert!(l.channel_closed(9).is_empty());
        let gone = l.channel_closed(7);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.as_str(), gone[0].1), ("b1", 1));
        assert!(!l.is_alive("b1", 1, t0));
        assert!(l.is_alive("b1", 2, t0));
    }
}
