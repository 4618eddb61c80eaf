//! Route cache: the topic routes fetched from NameServers, and what producers and consumers
//! derive from them.
//!
//! - [`TopicPublishInfo`]: the queues a producer may write to. Only broker groups whose queue
//!   data is writable **and** whose route lists a master (broker id 0) contribute, so a
//!   read-only group (including one whose lowest slave acts as master) is never chosen.
//! - [`subscribe_queues`]: every readable queue, whatever the group's masters.
//! - Address lookups return `Option<BrokerAddr>`: a missing master is `None`, never a
//!   fallback to some other kind of address.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rand::Rng;
use remoting::broker_headers::MessageQueue;
use remoting::protocol::{perm, BrokerData, TopicRouteData, MASTER_ID};
use remoting::BrokerAddr;
use tracing::warn;

/// The queues a producer can send a topic's messages to, with a round-robin cursor.
///
/// ```
/// use std::collections::BTreeMap;
/// use client::route::TopicPublishInfo;
/// use remoting::protocol::{BrokerData, QueueData, TopicRouteData};
///
/// let group = |name: &str, ids: &[i64]| BrokerData {
///     broker_name: name.into(),
///     broker_addrs: ids.iter().map(|id| (*id, format!("127.0.0.1:{}", 10911 + id))).collect(),
///     ..Default::default()
/// };
/// let queues = |name: &str, perm| QueueData {
///     broker_name: name.into(), perm, read_queue_nums: 2, write_queue_nums: 2, ..Default::default()
/// };
/// let route = TopicRouteData {
///     broker_datas: vec![group("a", &[0, 1]), group("b", &[1])],
///     queue_datas: vec![queues("a", 6), queues("b", 6)],
///     ..Default::default()
/// };
/// let info = TopicPublishInfo::from_route("T", &route);
/// // Group "b" has no master: only "a"'s queues are writable.
/// assert_eq!(info.queues.len(), 2);
/// assert!(info.queues.iter().all(|q| q.broker_name == "a"));
/// ```
#[derive(Debug)]
pub struct TopicPublishInfo {
    pub topic: String,
    /// Built from an `orderTopicConf` (`broker:queues;...`).
    pub order_topic: bool,
    pub queues: Vec<MessageQueue>,
    next: AtomicU32,
}

impl TopicPublishInfo {
    /// Publish info of `topic` from its route (upstream `topicRouteData2TopicPublishInfo`).
    pub fn from_route(topic: &str, route: &TopicRouteData) -> Self {
        let mut queues = Vec::new();
        let order_conf = route.order_topic_conf.as_deref().filter(|c| !c.is_empty());
        if let Some(conf) = order_conf {
            for item in conf.split(';') {
                let Some((broker, nums)) = item.split_once(':') else {
                    continue;
                };
                let nums: i32 = nums.trim().parse().unwrap_or(0);
                queues.extend((0..nums).map(|i| MessageQueue::new(topic, broker.trim(), i)));
            }
        } else {
            let mut qds = route.queue_datas.clone();
            qds.sort_by(|a, b| a.broker_name.cmp(&b.broker_name));
            for qd in qds {
                if !perm::is_writeable(qd.perm) {
                    continue;
                }
                let has_master = route
                    .broker_datas
                    .iter()
                    .find(|bd| bd.broker_name == qd.broker_name)
                    .is_some_and(|bd| master_addr(bd).is_some());
                if !has_master {
                    continue;
                }
                queues.extend(
                    (0..qd.write_queue_nums).map(|i| MessageQueue::new(topic, &qd.broker_name, i)),
                );
            }
        }
        TopicPublishInfo {
            topic: topic.to_string(),
            order_topic: order_conf.is_some(),
            queues,
            // Start at a random queue, as upstream's thread-local index does.
            next: AtomicU32::new(rand::thread_rng().gen()),
        }
    }

    /// Whether there is at least one queue to write to.
    pub fn ok(&self) -> bool {
        !self.queues.is_empty()
    }

    /// The next queue (round robin) that `accept` accepts, trying each queue at most once.
    pub fn select(&self, accept: impl Fn(&MessageQueue) -> bool) -> Option<&MessageQueue> {
        let n = self.queues.len();
        (0..n)
            .map(|_| &self.queues[self.next_index(n)])
            .find(|mq| accept(mq))
    }

    /// The next queue, round robin.
    pub fn select_any(&self) -> Option<&MessageQueue> {
        let n = self.queues.len();
        (n > 0).then(|| &self.queues[self.next_index(n)])
    }

    fn next_index(&self, n: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) as usize % n
    }
}

/// Every readable queue of `topic` (upstream `topicRouteData2TopicSubscribeInfo`).
pub fn subscribe_queues(topic: &str, route: &TopicRouteData) -> BTreeSet<MessageQueue> {
    route
        .queue_datas
        .iter()
        .filter(|qd| perm::is_readable(qd.perm))
        .flat_map(|qd| {
            (0..qd.read_queue_nums).map(|i| MessageQueue::new(topic, &qd.broker_name, i))
        })
        .collect()
}

/// The master (broker id 0) of a group, if the route lists one with a valid address.
pub fn master_addr(bd: &BrokerData) -> Option<BrokerAddr> {
    bd.broker_addrs
        .get(&MASTER_ID)
        .and_then(|a| parse_addr(bd, a))
}

/// A broker chosen for reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundBroker {
    pub addr: BrokerAddr,
    pub broker_id: i64,
    pub slave: bool,
}

/// Where to pull from (upstream `findBrokerAddressInSubscribe`): broker `broker_id` (the
/// broker's last suggestion), else the next id when a slave was suggested, else, unless
/// `only_this_broker`, the lowest id listed (the master when there is one, else a slave).
pub fn find_subscribe_addr(
    bd: &BrokerData,
    broker_id: i64,
    only_this_broker: bool,
) -> Option<FoundBroker> {
    let found = |id: i64| {
        bd.broker_addrs
            .get(&id)
            .and_then(|a| parse_addr(bd, a))
            .map(|addr| FoundBroker {
                addr,
                broker_id: id,
                slave: id != MASTER_ID,
            })
    };
    found(broker_id)
        .or_else(|| {
            (broker_id != MASTER_ID)
                .then(|| found(broker_id + 1))
                .flatten()
        })
        .or_else(|| {
            if only_this_broker {
                return None;
            }
            bd.broker_addrs.keys().find_map(|id| found(*id))
        })
}

fn parse_addr(bd: &BrokerData, text: &str) -> Option<BrokerAddr> {
    let addr = BrokerAddr::parse(text);
    if addr.is_none() {
        warn!(broker = %bd.broker_name, addr = text, "route lists an invalid broker address");
    }
    addr
}

#[derive(Default)]
struct CacheInner {
    routes: HashMap<String, Arc<TopicRouteData>>,
    publish: HashMap<String, Arc<TopicPublishInfo>>,
    /// Topics whose route was set by [`RouteCache::pin`]: refreshes leave them alone.
    pinned: HashSet<String>,
}

/// Routes by topic, with their publish infos, shared by a client's producers and consumers.
#[derive(Default)]
pub struct RouteCache {
    inner: RwLock<CacheInner>,
}

impl RouteCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `route` for `topic`; returns whether it differs from the cached one.
    /// A pinned topic keeps its route.
    pub fn update(&self, topic: &str, route: TopicRouteData) -> bool {
        let mut inner = self.inner.write();
        if inner.pinned.contains(topic) || inner.routes.get(topic).is_some_and(|old| **old == route)
        {
            return false;
        }
        Self::store(&mut inner, topic, route);
        true
    }

    /// Sets `topic`'s route to `route` until [`unpin`](Self::unpin): NameServer refreshes
    /// no longer replace it (to test or work around a NameServer's view).
    pub fn pin(&self, topic: &str, route: TopicRouteData) {
        let mut inner = self.inner.write();
        inner.pinned.insert(topic.to_string());
        Self::store(&mut inner, topic, route);
    }

    /// Lets refreshes replace `topic`'s route again.
    pub fn unpin(&self, topic: &str) {
        self.inner.write().pinned.remove(topic);
    }

    fn store(inner: &mut CacheInner, topic: &str, route: TopicRouteData) {
        let publish = Arc::new(TopicPublishInfo::from_route(topic, &route));
        inner.publish.insert(topic.to_string(), publish);
        inner.routes.insert(topic.to_string(), Arc::new(route));
    }

    /// Forgets `topic`.
    pub fn remove(&self, topic: &str) {
        let mut inner = self.inner.write();
        inner.routes.remove(topic);
        inner.publish.remove(topic);
        inner.pinned.remove(topic);
    }

    /// The cached route of `topic`.
    pub fn route(&self, topic: &str) -> Option<Arc<TopicRouteData>> {
        self.inner.read().routes.get(topic).cloned()
    }

    /// The publish info of `topic`.
    pub fn publish_info(&self, topic: &str) -> Option<Arc<TopicPublishInfo>> {
        self.inner.read().publish.get(topic).cloned()
    }

    /// The readable queues of `topic`, `None` without a route.
    pub fn subscribe_queues(&self, topic: &str) -> Option<BTreeSet<MessageQueue>> {
        self.route(topic).map(|r| subscribe_queues(topic, &r))
    }

    /// The group `broker_name` as `topic`'s route lists it.
    pub fn broker_data(&self, topic: &str, broker_name: &str) -> Option<BrokerData> {
        self.route(topic)?
            .broker_datas
            .iter()
            .find(|bd| bd.broker_name == broker_name)
            .cloned()
    }

    /// The master of `broker_name` according to any cached route (upstream
    /// `findBrokerAddressInPublish`); `None` when no route lists one.
    pub fn master_addr(&self, broker_name: &str) -> Option<BrokerAddr> {
        let inner = self.inner.read();
        inner
            .routes
            .values()
            .flat_map(|r| r.broker_datas.iter())
            .filter(|bd| bd.broker_name == broker_name)
            .find_map(master_addr)
    }

    /// The first group named `broker_name` in any cached route.
    pub fn any_broker_data(&self, broker_name: &str) -> Option<BrokerData> {
        let inner = self.inner.read();
        inner
            .routes
            .values()
            .flat_map(|r| r.broker_datas.iter())
            .find(|bd| bd.broker_name == broker_name)
            .cloned()
    }

    /// Every broker address of every cached route: `(broker name, broker id, address)`,
    /// deduplicated (heartbeat targets).
    pub fn all_brokers(&self) -> BTreeSet<(String, i64, BrokerAddr)> {
        let inner = self.inner.read();
        inner
            .routes
            .values()
            .flat_map(|r| r.broker_datas.iter())
            .flat_map(|bd| {
                bd.broker_addrs.iter().filter_map(move |(id, a)| {
                    parse_addr(bd, a).map(|addr| (bd.broker_name.clone(), *id, addr))
                })
            })
            .collect()
    }

    /// Topics with a cached route.
    pub fn topics(&self) -> Vec<String> {
        self.inner.read().routes.keys().cloned().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use remoting::protocol::QueueData;

    pub(crate) fn group(name: &str, ids: &[(i64, u16)]) -> BrokerData {
        BrokerData {
            broker_name: name.into(),
            cluster: "c".into(),
            broker_addrs: ids
                .iter()
                .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
                .collect(),
            ..Default::default()
        }
    }

    pub(crate) fn queues(name: &str, perm: i32, n: i32) -> QueueData {
        QueueData {
            broker_name: name.into(),
            perm,
            read_queue_nums: n,
            write_queue_nums: n,
            ..Default::default()
        }
    }

    pub(crate) fn route(groups: Vec<BrokerData>, qds: Vec<QueueData>) -> TopicRouteData {
        TopicRouteData {
            broker_datas: groups,
            queue_datas: qds,
            ..Default::default()
        }
    }

    #[test]
    fn publish_skips_read_only_and_masterless_groups() {
        let r = route(
            vec![
                group("a", &[(0, 1), (1, 2)]),
                group("b", &[(1, 3)]),
                // Acting master: the slave is listed as id 0 but the queues are read-only.
                group("c", &[(0, 4)]),
                group("d", &[(0, 5)]),
            ],
            vec![
                queues("a", 6, 4),
                queues("b", 6, 4),
                queues("c", 4, 4),
                queues("d", 6, 2),
                queues("e", 6, 2), // no broker data at all
            ],
        );
        let info = TopicPublishInfo::from_route("T", &r);
        let names: BTreeSet<&str> = info.queues.iter().map(|q| q.broker_name.as_str()).collect();
        assert_eq!(names, ["a", "d"].into_iter().collect());
        assert_eq!(info.queues.len(), 6);
        // Subscribe info has every readable queue, masterless groups included.
        let sub = subscribe_queues("T", &r);
        assert_eq!(sub.len(), 16);
        assert!(sub.contains(&MessageQueue::new("T", "b", 3)));
    }

    #[test]
    fn order_topic_conf() {
        let mut r = route(vec![group("a", &[(0, 1)])], vec![queues("a", 6, 8)]);
        r.order_topic_conf = Some("a:2;b:3".into());
        let info = TopicPublishInfo::from_route("T", &r);
        assert!(info.order_topic);
        assert_eq!(info.queues.len(), 5);
    }

    #[test]
    fn round_robin_and_filters() {
        let r = route(
            vec![group("a", &[(0, 1)]), group("b", &[(0, 2)])],
            vec![queues("a", 6, 2), queues("b", 6, 2)],
        );
        let info = TopicPublishInfo::from_route("T", &r);
        let picks: BTreeSet<MessageQueue> =
            (0..4).map(|_| info.select_any().unwrap().clone()).collect();
        assert_eq!(picks.len(), 4);
        for _ in 0..8 {
            assert_eq!(
                info.select(|q| q.broker_name != "a").unwrap().broker_name,
                "b"
            );
        }
        assert!(info.select(|_| false).is_none());
        let empty = TopicPublishInfo::from_route("T", &TopicRouteData::default());
        assert!(!empty.ok() && empty.select_any().is_none());
    }

    #[test]
    fn subscribe_address_lookup() {
        let bd = group("a", &[(0, 1), (1, 2), (2, 3)]);
        let at = |id, only| find_subscribe_addr(&bd, id, only).map(|f| f.broker_id);
        assert_eq!(at(1, false), Some(1));
        assert_eq!(at(0, false), Some(0));
        assert_eq!(at(5, false), Some(0));
        assert_eq!(at(5, true), None);
        let slaves = group("a", &[(1, 2), (2, 3)]);
        // Master gone: a suggestion of 0 falls back to the lowest slave.
        let f = find_subscribe_addr(&slaves, 0, false).unwrap();
        assert_eq!((f.broker_id, f.slave), (1, true));
        assert_eq!(find_subscribe_addr(&slaves, 0, true), None);
        // A suggested slave that is gone moves to the next id.
        let f = find_subscribe_addr(&group("a", &[(0, 1), (2, 3)]), 1, true).unwrap();
        assert_eq!(f.broker_id, 2);
        assert_eq!(master_addr(&slaves), None);
    }

    #[test]
    fn cache_update_and_lookups() {
        let cache = RouteCache::new();
        let r = route(
            vec![group("a", &[(0, 1)]), group("b", &[(1, 2)])],
            vec![queues("a", 6, 1), queues("b", 6, 1)],
        );
        assert!(cache.update("T", r.clone()));
        assert!(!cache.update("T", r));
        assert_eq!(cache.publish_info("T").unwrap().queues.len(), 1);
        assert_eq!(cache.master_addr("a").unwrap().as_str(), "127.0.0.1:1");
        assert_eq!(cache.master_addr("b"), None);
        assert_eq!(cache.master_addr("zzz"), None);
        assert_eq!(cache.all_brokers().len(), 2);
        assert_eq!(cache.subscribe_queues("T").unwrap().len(), 2);
        cache.remove("T");
        assert!(cache.route("T").is_none());
    }
}
