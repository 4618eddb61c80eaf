//! Latency fault tolerance (upstream `MQFaultStrategy` + `LatencyFaultToleranceImpl`): after
//! a send, a broker group is marked unavailable for a time that grows with the call's
//! latency, or for 10 s-equivalent when the call failed, and the producer prefers other
//! groups meanwhile.
//!
//! | latency at least (ms) | 50 | 100 | 550 | 1800 | 3000 | 5000 | 15000 |
//! |---|---|---|---|---|---|---|---|
//! | unavailable for (ms) | 0 | 0 | 2000 | 5000 | 6000 | 10000 | 30000 |

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use remoting::broker_headers::MessageQueue;

use crate::route::TopicPublishInfo;

/// Upstream `latencyMax` (ms).
pub const LATENCY_MAX: [u64; 7] = [50, 100, 550, 1800, 3000, 5000, 15000];
/// Upstream `notAvailableDuration` (ms), by the same index as [`LATENCY_MAX`].
pub const NOT_AVAILABLE_DURATION: [u64; 7] = [0, 0, 2000, 5000, 6000, 10000, 30000];
/// Latency charged to a failed call ("isolation").
pub const ISOLATION_LATENCY_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug)]
struct FaultItem {
    latency_ms: u64,
    available_at: Instant,
    reachable: bool,
}

/// Per broker group availability, updated after every send.
#[derive(Debug)]
pub struct LatencyFaultTolerance {
    enabled: bool,
    items: Mutex<HashMap<String, FaultItem>>,
}

impl LatencyFaultTolerance {
    /// `enabled` is the client's `sendLatencyEnable`; when false, updates are ignored and
    /// every group counts as available.
    pub fn new(enabled: bool) -> Self {
        LatencyFaultTolerance {
            enabled,
            items: Mutex::new(HashMap::new()),
        }
    }

    /// Whether fault tolerance is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How long a group stays unavailable after a call that took `latency_ms`.
    pub fn not_available_duration(latency_ms: u64) -> Duration {
        let i = LATENCY_MAX.iter().rposition(|max| latency_ms >= *max);
        Duration::from_millis(i.map_or(0, |i| NOT_AVAILABLE_DURATION[i]))
    }

    /// Records a call to `broker_name` that took `latency_ms`; `isolation` charges the
    /// failed-call latency instead; `reachable` is false when the broker could not be reached.
    pub fn update(&self, broker_name: &str, latency_ms: u64, isolation: bool, reachable: bool) {
        self.update_at(
            Instant::now(),
            broker_name,
            latency_ms,
            isolation,
            reachable,
        );
    }

    fn update_at(
        &self,
        now: Instant,
        broker: &str,
        latency_ms: u64,
        isolation: bool,
        reachable: bool,
    ) {
        if !self.enabled {
            return;
        }
        let charged = if isolation {
            ISOLATION_LATENCY_MS
        } else {
            latency_ms
        };
        let duration = Self::not_available_duration(charged);
        let mut items = self.items.lock();
        let item = items.entry(broker.to_string()).or_insert(FaultItem {
            latency_ms,
            available_at: now,
            reachable,
        });
        item.latency_ms = latency_ms;
        item.reachable = reachable;
        if !duration.is_zero() && now + duration > item.available_at {
            item.available_at = now + duration;
        }
    }

    /// Whether `broker_name` is not within an unavailable period.
    pub fn is_available(&self, broker_name: &str) -> bool {
        self.is_available_at(Instant::now(), broker_name)
    }

    fn is_available_at(&self, now: Instant, broker: &str) -> bool {
        self.items
            .lock()
            .get(broker)
            .is_none_or(|item| now >= item.available_at)
    }

    /// Whether the last call to `broker_name` reached it.
    pub fn is_reachable(&self, broker_name: &str) -> bool {
        self.items
            .lock()
            .get(broker_name)
            .is_none_or(|item| item.reachable)
    }

    /// Chooses a queue of `info` for a send (upstream `selectOneMessageQueue`): avoiding
    /// `last_broker` (the group the previous attempt failed on) and, when enabled, groups
    /// that are unavailable, then unreachable ones; if no queue passes, any queue.
    pub fn select_queue(
        &self,
        info: &TopicPublishInfo,
        last_broker: Option<&str>,
    ) -> Option<MessageQueue> {
        self.select_queue_at(Instant::now(), info, last_broker)
    }

    fn select_queue_at(
        &self,
        now: Instant,
        info: &TopicPublishInfo,
        last_broker: Option<&str>,
    ) -> Option<MessageQueue> {
        let not_last = |mq: &MessageQueue| last_broker != Some(mq.broker_name.as_str());
        let chosen = if self.enabled {
            info.select(|mq| not_last(mq) && self.is_available_at(now, &mq.broker_name))
                .or_else(|| info.select(|mq| not_last(mq) && self.is_reachable(&mq.broker_name)))
        } else {
            info.select(not_last)
        };
        chosen.or_else(|| info.select_any()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::{group, queues, route};

    #[test]
    fn duration_table() {
        let d = |ms| LatencyFaultTolerance::not_available_duration(ms).as_millis();
        assert_eq!(d(0), 0);
        assert_eq!(d(549), 0);
        assert_eq!(d(550), 2000);
        assert_eq!(d(3000), 6000);
        assert_eq!(d(ISOLATION_LATENCY_MS), 10_000);
        assert_eq!(d(60_000), 30_000);
    }

    #[test]
    fn failed_group_is_avoided_for_a_while() {
        let f = LatencyFaultTolerance::new(true);
        let info = TopicPublishInfo::from_route(
            "T",
            &route(
                vec![group("a", &[(0, 1)]), group("b", &[(0, 2)])],
                vec![queues("a", 6, 2), queues("b", 6, 2)],
            ),
        );
        let t0 = Instant::now();
        f.update_at(t0, "a", 30, true, false);
        for _ in 0..6 {
            let q = f.select_queue_at(t0, &info, None).unwrap();
            assert_eq!(q.broker_name, "b");
        }
        // After the retry moved to "b" and failed there too, any queue is still returned.
        f.update_at(t0, "b", 30, true, false);
        assert!(f.select_queue_at(t0, &info, Some("b")).is_some());
        // 10 s later "a" is available again.
        let later = t0 + Duration::from_millis(10_001);
        assert!(f.is_available_at(later, "a"));
        // A fast success does not shorten an isolation in force.
        f.update_at(t0, "a", 10, false, true);
        assert!(!f.is_available_at(t0 + Duration::from_secs(5), "a"));
    }

    #[test]
    fn retry_avoids_the_last_broker_even_when_disabled() {
        let f = LatencyFaultTolerance::new(false);
        f.update("a", 100_000, true, false);
        assert!(f.is_available("a"));
        let info = TopicPublishInfo::from_route(
            "T",
            &route(
                vec![group("a", &[(0, 1)]), group("b", &[(0, 2)])],
                vec![queues("a", 6, 1), queues("b", 6, 1)],
            ),
        );
        for _ in 0..4 {
            assert_eq!(f.select_queue(&info, Some("a")).unwrap().broker_name, "b");
        }
        // Only one group: the retry goes back to it.
        let single = TopicPublishInfo::from_route(
            "T",
            &route(vec![group("a", &[(0, 1)])], vec![queues("a", 6, 1)]),
        );
        assert_eq!(f.select_queue(&single, Some("a")).unwrap().broker_name, "a");
    }
}
