//! [`RouteInfoManager`]: the NameServer's in-memory route tables and every rule that changes
//! or reads them (upstream `RouteInfoManager`). It is plain synchronous data: the server keeps
//! it behind a lock and passes in the current time, so tests can drive expiry deterministically.
//!
//! Tables:
//! - clusters: cluster name -> broker group names;
//! - groups: broker name -> [`BrokerData`] (broker id -> address, 0 = master);
//! - topics: topic -> broker name -> [`QueueData`] as the group's master registered it;
//! - live brokers: (cluster, address) -> last update, timeout, data version, HA address,
//!   connection;
//! - filter servers: (cluster, address) -> filter server addresses.
//!
//! Write permission is decided when a route is built, not stored: a group without a master
//! (no broker id 0) is listed read-only, and gets write permission back as soon as its master
//! registers again. With acting master on, such a group's lowest-id slave is listed as id 0.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use remoting::headers::UnRegisterBrokerRequestHeader;
use remoting::protocol::{
    perm, topic_sys_flag, BrokerData, BrokerMemberGroup, ClusterInfo, DataVersion, QueueData,
    TopicConfig, TopicConfigSerializeWrapper, TopicList, TopicRouteData, MASTER_ID,
};

/// Topics with this prefix never get an acting master (upstream
/// `TopicValidator.SYNC_BROKER_MEMBER_GROUP_PREFIX`).
const SYNC_BROKER_MEMBER_GROUP_PREFIX: &str = "rmq_sys_SYNC_BROKER_MEMBER_";

/// Route rules that come from the NameServer configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Registration lifetime of brokers that do not state their own.
    pub broker_channel_expired_time: Duration,
    /// List a master-less group's lowest-id slave as id 0 (when its brokers allow it).
    pub support_acting_master: bool,
    /// A full registration removes the broker's topics it no longer lists.
    pub delete_topic_with_broker_registration: bool,
}

impl RouteConfig {
    /// The NameServer defaults (`brokerChannelExpiredTime` 120 s, `supportActingMaster` true,
    /// `deleteTopicWithBrokerRegistration` false); `NamesrvConfig` takes its defaults from here.
    pub const DEFAULT: RouteConfig = RouteConfig {
        broker_channel_expired_time: Duration::from_secs(120),
        support_acting_master: true,
        delete_topic_with_broker_registration: false,
    };
}

impl Default for RouteConfig {
    /// [`RouteConfig::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Identity of one broker process: its cluster and address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerAddrInfo {
    pub cluster_name: String,
    pub broker_addr: String,
}

impl BrokerAddrInfo {
    pub fn new(cluster_name: &str, broker_addr: &str) -> Self {
        BrokerAddrInfo {
            cluster_name: cluster_name.to_string(),
            broker_addr: broker_addr.to_string(),
        }
    }
}

/// Liveness record of a registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerLiveInfo {
    pub last_update: Instant,
    pub heartbeat_timeout: Duration,
    pub data_version: DataVersion,
    pub ha_server_addr: String,
    /// Remoting connection the broker registered on; its closing unregisters the broker.
    pub connection_id: Option<u64>,
}

/// One REGISTER_BROKER request, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerRegistration {
    pub cluster_name: String,
    pub broker_addr: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub ha_server_addr: String,
    pub zone_name: Option<String>,
    /// The broker's own registration lifetime (5.x `heartbeatTimeoutMillis`).
    pub heartbeat_timeout: Option<Duration>,
    /// `None` for brokers older than 5.0.
    pub enable_acting_master: Option<bool>,
    pub topic_config: TopicConfigSerializeWrapper,
    /// `None` when the body had no filter server list (pre-3.0.11 brokers).
    pub filter_server_list: Option<Vec<String>>,
    pub connection_id: Option<u64>,
}

/// What a registering broker learns: its group master's addresses (for slaves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterBrokerResult {
    pub ha_server_addr: Option<String>,
    pub master_addr: Option<String>,
}

/// A registration the NameServer refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// A single-topic registration arrived before the broker's first full registration.
    #[error("broker {broker_addr} (id {broker_id}) must register fully before registering single topics")]
    NotRegisteredYet { broker_addr: String, broker_id: i64 },
}

/// The NameServer's route tables. See the module documentation.
#[derive(Debug, Default)]
pub struct RouteInfoManager {
    config: RouteConfig,
    topic_queue_table: BTreeMap<String, BTreeMap<String, QueueData>>,
    broker_addr_table: BTreeMap<String, BrokerData>,
    cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
    broker_live_table: HashMap<BrokerAddrInfo, BrokerLiveInfo>,
    filter_server_table: HashMap<BrokerAddrInfo, Vec<String>>,
}

impl RouteInfoManager {
    pub fn new(config: RouteConfig) -> Self {
        RouteInfoManager {
            config,
            ..RouteInfoManager::default()
        }
    }

    /// Replaces the configuration (UPDATE_NAMESRV_CONFIG).
    pub fn set_config(&mut self, config: RouteConfig) {
        self.config = config;
    }

    /// Registers (or refreshes) a broker. Topic configurations are taken from the group's
    /// master, or from its lowest-id slave when there is no master and the broker is 5.x
    /// ("prime slave"), and only when the broker's data version changed or the topic is new.
    pub fn register_broker(
        &mut self,
        reg: BrokerRegistration,
        now: Instant,
    ) -> Result<RegisterBrokerResult, RegisterError> {
        let addr_info = BrokerAddrInfo::new(&reg.cluster_name, &reg.broker_addr);
        let single_topic = reg.topic_config.topic_config_table.len() == 1;
        let group = self.broker_addr_table.get(&reg.broker_name);
        let id_known = group.is_some_and(|g| g.broker_addrs.contains_key(&reg.broker_id));
        if !id_known && single_topic {
            return Err(RegisterError::NotRegisteredYet {
                broker_addr: reg.broker_addr,
                broker_id: reg.broker_id,
            });
        }
        // Another address already holds this broker id with a newer state: keep it.
        if let Some(old_addr) = group.and_then(|g| g.broker_addrs.get(&reg.broker_id)) {
            if *old_addr != reg.broker_addr {
                let old = BrokerAddrInfo::new(&reg.cluster_name, old_addr);
                let new_state = reg.topic_config.data_version.state_version;
                if let Some(old_live) = self.broker_live_table.get(&old) {
                    if old_live.data_version.state_version > new_state {
                        tracing::warn!(
                            broker = %reg.broker_name, id = reg.broker_id, old = %old_addr,
                            new = %reg.broker_addr, "registration conflicts with a newer broker, ignored"
                        );
                        self.broker_live_table.remove(&addr_info);
                        return Ok(RegisterBrokerResult::default());
                    }
                }
            }
        }

        self.cluster_addr_table
            .entry(reg.cluster_name.clone())
            .or_default()
            .insert(reg.broker_name.clone());
        let mut register_first = false;
        let group = self
            .broker_addr_table
            .entry(reg.broker_name.clone())
            .or_insert_with(|| {
                register_first = true;
                BrokerData {
                    cluster: reg.cluster_name.clone(),
                    broker_name: reg.broker_name.clone(),
                    ..BrokerData::default()
                }
            });
        let old_version_broker = reg.enable_acting_master.is_none();
        group.enable_acting_master = reg.enable_acting_master.unwrap_or(false);
        group.zone_name = reg.zone_name.clone();
        // A broker switching id (slave promoted to master) keeps one entry per address.
        group
            .broker_addrs
            .retain(|id, addr| *addr != reg.broker_addr || *id == reg.broker_id);
        let previous = group
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone());
        register_first |= previous.as_deref().unwrap_or_default().is_empty();
        let is_master = reg.broker_id == MASTER_ID;
        let min_id = group.broker_addrs.keys().next().copied();
        let is_prime_slave = !old_version_broker && !is_master && min_id == Some(reg.broker_id);

        if is_master || is_prime_slave {
            self.take_topic_configs(&reg, &addr_info, register_first);
        }

        let previous_live = self.broker_live_table.insert(
            addr_info.clone(),
            BrokerLiveInfo {
                last_update: now,
                heartbeat_timeout: reg
                    .heartbeat_timeout
                    .unwrap_or(self.config.broker_channel_expired_time),
                data_version: reg.topic_config.data_version.clone(),
                ha_server_addr: reg.ha_server_addr.clone(),
                connection_id: reg.connection_id,
            },
        );
        if previous_live.is_none() {
            tracing::info!(
                cluster = %reg.cluster_name, broker = %reg.broker_name, id = reg.broker_id,
                addr = %reg.broker_addr, ha = %reg.ha_server_addr, "new broker registered"
            );
        }
        match &reg.filter_server_list {
            Some(list) if list.is_empty() => {
                self.filter_server_table.remove(&addr_info);
            }
            Some(list) => {
                self.filter_server_table.insert(addr_info, list.clone());
            }
            None => {}
        }

        let mut result = RegisterBrokerResult::default();
        if !is_master {
            let master = self
                .broker_addr_table
                .get(&reg.broker_name)
                .and_then(|g| g.master_addr());
            if let Some(master_addr) = master {
                let master_info = BrokerAddrInfo::new(&reg.cluster_name, master_addr);
                if let Some(live) = self.broker_live_table.get(&master_info) {
                    result.ha_server_addr = Some(live.ha_server_addr.clone());
                    result.master_addr = Some(master_addr.to_string());
                }
            }
        }
        Ok(result)
    }

    fn take_topic_configs(
        &mut self,
        reg: &BrokerRegistration,
        addr_info: &BrokerAddrInfo,
        register_first: bool,
    ) {
        let table = &reg.topic_config.topic_config_table;
        if self.config.delete_topic_with_broker_registration {
            let gone: Vec<String> = self
                .topic_queue_table
                .iter()
                .filter(|(topic, queues)| {
                    queues.contains_key(&reg.broker_name) && !table.contains_key(*topic)
                })
                .map(|(topic, _)| topic.clone())
                .collect();
            for topic in gone {
                self.remove_group_from_topic(&topic, &reg.broker_name);
            }
        }
        let version_changed =
            self.is_broker_topic_config_changed(addr_info, &reg.topic_config.data_version);
        for config in table.values() {
            let known = self
                .topic_queue_table
                .get(&config.topic_name)
                .is_some_and(|q| q.contains_key(&reg.broker_name));
            if register_first || version_changed || !known {
                self.create_and_update_queue_data(&reg.broker_name, config);
            }
        }
    }

    fn create_and_update_queue_data(&mut self, broker_name: &str, config: &TopicConfig) {
        let queue_data = QueueData {
            broker_name: broker_name.to_string(),
            perm: config.perm,
            read_queue_nums: config.read_queue_nums,
            topic_sys_flag: config.topic_sys_flag,
            write_queue_nums: config.write_queue_nums,
        };
        let queues = self
            .topic_queue_table
            .entry(config.topic_name.clone())
            .or_default();
        match queues.insert(broker_name.to_string(), queue_data.clone()) {
            None => tracing::info!(topic = %config.topic_name, ?queue_data, "new topic registered"),
            Some(old) if old != queue_data => {
                tracing::info!(topic = %config.topic_name, ?old, new = ?queue_data, "topic changed")
            }
            Some(_) => {}
        }
    }

    fn remove_group_from_topic(&mut self, topic: &str, broker_name: &str) {
        if let Some(queues) = self.topic_queue_table.get_mut(topic) {
            if queues.remove(broker_name).is_some() {
                tracing::info!(%topic, broker = %broker_name, "topic removed from broker group");
            }
            if queues.is_empty() {
                self.topic_queue_table.remove(topic);
            }
        }
    }

    /// Whether `version` differs from the one the broker last registered (true when unknown).
    pub fn is_broker_topic_config_changed(
        &self,
        broker: &BrokerAddrInfo,
        version: &DataVersion,
    ) -> bool {
        self.query_broker_topic_config(broker) != Some(version)
    }

    /// Data version the broker last registered.
    pub fn query_broker_topic_config(&self, broker: &BrokerAddrInfo) -> Option<&DataVersion> {
        self.broker_live_table.get(broker).map(|l| &l.data_version)
    }

    /// Marks the broker as heard from at `now` (BROKER_HEARTBEAT, QUERY_DATA_VERSION).
    pub fn update_broker_info_update_timestamp(&mut self, broker: &BrokerAddrInfo, now: Instant) {
        if let Some(live) = self.broker_live_table.get_mut(broker) {
            live.last_update = now;
        }
    }

    /// Liveness record of a broker.
    pub fn broker_live_info(&self, broker: &BrokerAddrInfo) -> Option<&BrokerLiveInfo> {
        self.broker_live_table.get(broker)
    }

    /// Removes one broker (UNREGISTER_BROKER, expiry, closed connection). A group left without
    /// brokers disappears with its queue data; a cluster left without groups disappears too.
    pub fn unregister_broker(&mut self, req: &UnRegisterBrokerRequestHeader) {
        let addr_info = BrokerAddrInfo::new(&req.cluster_name, &req.broker_addr);
        let was_live = self.broker_live_table.remove(&addr_info).is_some();
        self.filter_server_table.remove(&addr_info);
        tracing::info!(
            cluster = %req.cluster_name, broker = %req.broker_name, id = req.broker_id,
            addr = %req.broker_addr, was_live, "broker unregistered"
        );
        let Some(group) = self.broker_addr_table.get_mut(&req.broker_name) else {
            return;
        };
        group
            .broker_addrs
            .retain(|_, addr| *addr != req.broker_addr);
        if !group.broker_addrs.is_empty() {
            return;
        }
        self.broker_addr_table.remove(&req.broker_name);
        if let Some(names) = self.cluster_addr_table.get_mut(&req.cluster_name) {
            names.remove(&req.broker_name);
            if names.is_empty() {
                self.cluster_addr_table.remove(&req.cluster_name);
            }
        }
        let broker_name = &req.broker_name;
        self.topic_queue_table.retain(|_, queues| {
            queues.remove(broker_name);
            !queues.is_empty()
        });
    }

    /// Finds the group membership of a live broker, as an unregister request.
    fn unregister_request_for(&self, broker: &BrokerAddrInfo) -> UnRegisterBrokerRequestHeader {
        let member = self
            .broker_addr_table
            .values()
            .filter(|g| g.cluster == broker.cluster_name)
            .find_map(|g| {
                g.broker_addrs
                    .iter()
                    .find(|(_, addr)| **addr == broker.broker_addr)
                    .map(|(id, _)| (g.broker_name.clone(), *id))
            });
        let (broker_name, broker_id) = member.unwrap_or_default();
        UnRegisterBrokerRequestHeader {
            broker_name,
            broker_addr: broker.broker_addr.clone(),
            cluster_name: broker.cluster_name.clone(),
            broker_id,
        }
    }

    /// Unregisters every broker whose last update is older than its timeout at `now`;
    /// returns the removed brokers.
    pub fn scan_not_active_broker(&mut self, now: Instant) -> Vec<BrokerAddrInfo> {
        let mut expired: Vec<BrokerAddrInfo> = self
            .broker_live_table
            .iter()
            .filter(|(_, live)| {
                now.saturating_duration_since(live.last_update) > live.heartbeat_timeout
            })
            .map(|(info, _)| info.clone())
            .collect();
        expired.sort();
        for info in &expired {
            let timeout = self
                .broker_live_table
                .get(info)
                .map(|l| l.heartbeat_timeout);
            tracing::warn!(cluster = %info.cluster_name, addr = %info.broker_addr, ?timeout, "broker registration expired");
            let req = self.unregister_request_for(info);
            self.unregister_broker(&req);
        }
        expired
    }

    /// Unregisters the brokers that registered on connection `connection_id` (it closed);
    /// returns them.
    pub fn on_connection_closed(&mut self, connection_id: u64) -> Vec<BrokerAddrInfo> {
        let mut gone: Vec<BrokerAddrInfo> = self
            .broker_live_table
            .iter()
            .filter(|(_, live)| live.connection_id == Some(connection_id))
            .map(|(info, _)| info.clone())
            .collect();
        gone.sort();
        for info in &gone {
            tracing::info!(cluster = %info.cluster_name, addr = %info.broker_addr, "broker connection closed");
            let req = self.unregister_request_for(info);
            self.unregister_broker(&req);
        }
        gone
    }

    /// Route of `topic` (GET_ROUTEINFO_BY_TOPIC), `None` when no live group holds it.
    /// Queue data of a group without a master loses write permission; with acting master
    /// enabled (NameServer `supportActingMaster` and the group's `enableActingMaster`) the
    /// group's lowest-id slave is listed as broker 0 and the BrokerData says
    /// `enableActingMaster: true`.
    pub fn pickup_topic_route_data(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topic_queue_table.get(topic)?;
        let mut route = TopicRouteData::default();
        for (broker_name, queue) in queues {
            let group = self.broker_addr_table.get(broker_name);
            let mut queue = queue.clone();
            if group.and_then(BrokerData::master_addr).is_none() {
                queue.perm &= !perm::PERM_WRITE;
            }
            route.queue_datas.push(queue);
            let Some(group) = group else { continue };
            let mut group = group.clone();
            if !self.filter_server_table.is_empty() {
                for addr in group.broker_addrs.values() {
                    let info = BrokerAddrInfo::new(&group.cluster, addr);
                    if let Some(list) = self.filter_server_table.get(&info) {
                        route.filter_server_table.insert(addr.clone(), list.clone());
                    }
                }
            }
            if self.acting_master_applies(topic, &group) {
                if let Some((_, addr)) = group.broker_addrs.pop_first() {
                    group.broker_addrs.insert(MASTER_ID, addr);
                    group.enable_acting_master = true;
                }
            }
            route.broker_datas.push(group);
        }
        if route.broker_datas.is_empty() {
            return None;
        }
        Some(route)
    }

    fn acting_master_applies(&self, topic: &str, group: &BrokerData) -> bool {
        self.config.support_acting_master
            && group.enable_acting_master
            && !topic.starts_with(SYNC_BROKER_MEMBER_GROUP_PREFIX)
            && !group.broker_addrs.is_empty()
            && group.master_addr().is_none()
    }

    /// Adds queue data for `topic` (REGISTER_TOPIC_IN_NAMESRV). Refused as a whole (false)
    /// when any queue data names an unknown broker group.
    pub fn register_topic(&mut self, topic: &str, queue_datas: &[QueueData]) -> bool {
        if queue_datas.is_empty() {
            return true;
        }
        if let Some(bad) = queue_datas
            .iter()
            .find(|q| !self.broker_addr_table.contains_key(&q.broker_name))
        {
            tracing::warn!(%topic, broker = %bad.broker_name, "register topic names an unknown broker group");
            return false;
        }
        let queues = self.topic_queue_table.entry(topic.to_string()).or_default();
        for q in queue_datas {
            queues.insert(q.broker_name.clone(), q.clone());
        }
        true
    }

    /// Removes a topic everywhere, or only from the groups of `cluster`.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) {
        let Some(cluster) = cluster else {
            self.topic_queue_table.remove(topic);
            return;
        };
        let names: Vec<String> = self
            .cluster_addr_table
            .get(cluster)
            .map(|n| n.iter().cloned().collect())
            .unwrap_or_default();
        for name in names {
            self.remove_group_from_topic(topic, &name);
        }
    }

    /// Every topic (GET_ALL_TOPIC_LIST_FROM_NAMESERVER).
    pub fn all_topic_list(&self) -> TopicList {
        TopicList {
            topic_list: self.topic_queue_table.keys().cloned().collect(),
            broker_addr: None,
        }
    }

    /// Topics held by any group of `cluster` (GET_TOPICS_BY_CLUSTER).
    pub fn topics_by_cluster(&self, cluster: &str) -> TopicList {
        let names = self.cluster_addr_table.get(cluster);
        let topic_list = self
            .topic_queue_table
            .iter()
            .filter(|(_, queues)| names.is_some_and(|n| queues.keys().any(|b| n.contains(b))))
            .map(|(topic, _)| topic.clone())
            .collect();
        TopicList {
            topic_list,
            broker_addr: None,
        }
    }

    /// Cluster and broker group names (each is also a topic), plus one broker address to ask
    /// about them (GET_SYSTEM_TOPIC_LIST_FROM_NS).
    pub fn system_topic_list(&self) -> TopicList {
        let mut topic_list = BTreeSet::new();
        for (cluster, names) in &self.cluster_addr_table {
            topic_list.insert(cluster.clone());
            topic_list.extend(names.iter().cloned());
        }
        let broker_addr = self
            .broker_addr_table
            .values()
            .find_map(|g| g.broker_addrs.values().next().cloned());
        TopicList {
            topic_list,
            broker_addr,
        }
    }

    fn topics_where(&self, keep: impl Fn(i32) -> bool) -> TopicList {
        let topic_list = self
            .topic_queue_table
            .iter()
            .filter(|(_, queues)| {
                queues
                    .values()
                    .next()
                    .is_some_and(|q| keep(q.topic_sys_flag))
            })
            .map(|(topic, _)| topic.clone())
            .collect();
        TopicList {
            topic_list,
            broker_addr: None,
        }
    }

    /// Unit topics (GET_UNIT_TOPIC_LIST).
    pub fn unit_topics(&self) -> TopicList {
        self.topics_where(topic_sys_flag::has_unit_flag)
    }

    /// Topics with unit subscriptions (GET_HAS_UNIT_SUB_TOPIC_LIST).
    pub fn has_unit_sub_topic_list(&self) -> TopicList {
        self.topics_where(topic_sys_flag::has_unit_sub_flag)
    }

    /// Non-unit topics with unit subscriptions (GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST).
    pub fn has_unit_sub_ununit_topic_list(&self) -> TopicList {
        self.topics_where(|f| {
            !topic_sys_flag::has_unit_flag(f) && topic_sys_flag::has_unit_sub_flag(f)
        })
    }

    /// Removes write permission from every topic of group `broker_name` (an operator taking
    /// the group out of service); returns the number of topics changed.
    pub fn wipe_write_perm_of_broker(&mut self, broker_name: &str) -> i32 {
        self.change_perm_of_broker(broker_name, |p| p & !perm::PERM_WRITE)
    }

    /// Gives every topic of group `broker_name` read and write permission back; returns the
    /// number of topics changed.
    pub fn add_write_perm_of_broker(&mut self, broker_name: &str) -> i32 {
        self.change_perm_of_broker(broker_name, |_| perm::PERM_READ | perm::PERM_WRITE)
    }

    fn change_perm_of_broker(&mut self, broker_name: &str, change: impl Fn(i32) -> i32) -> i32 {
        let mut count = 0;
        for queue in self
            .topic_queue_table
            .values_mut()
            .filter_map(|queues| queues.get_mut(broker_name))
        {
            queue.perm = change(queue.perm);
            count += 1;
        }
        count
    }

    /// Every group and cluster (GET_BROKER_CLUSTER_INFO), with real broker ids.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.broker_addr_table.clone(),
            cluster_addr_table: self.cluster_addr_table.clone(),
        }
    }

    /// Members of one group (GET_BROKER_MEMBER_GROUP); empty when unknown.
    pub fn broker_member_group(&self, cluster: &str, broker_name: &str) -> BrokerMemberGroup {
        BrokerMemberGroup {
            broker_addrs: self
                .broker_addr_table
                .get(broker_name)
                .map(|g| g.broker_addrs.clone())
                .unwrap_or_default(),
            broker_name: broker_name.to_string(),
            cluster: cluster.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, perm: i32) -> TopicConfig {
        TopicConfig {
            topic_name: name.into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm,
            ..TopicConfig::default()
        }
    }

    /// A registration of `topics` plus, like a real broker, a topic named after the broker
    /// (a first registration with a single topic is refused).
    fn reg(name: &str, id: i64, addr: &str, topics: &[&str], counter: i64) -> BrokerRegistration {
        let mut wrapper = TopicConfigSerializeWrapper::default();
        wrapper.data_version.counter = counter;
        for t in topics.iter().chain([&name]) {
            wrapper
                .topic_config_table
                .insert(t.to_string(), topic(t, 6));
        }
        BrokerRegistration {
            cluster_name: "C".into(),
            broker_addr: addr.into(),
            broker_name: name.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            topic_config: wrapper,
            filter_server_list: Some(vec![]),
            ..BrokerRegistration::default()
        }
    }

    fn unreg(name: &str, id: i64, addr: &str) -> UnRegisterBrokerRequestHeader {
        UnRegisterBrokerRequestHeader {
            broker_name: name.into(),
            broker_addr: addr.into(),
            cluster_name: "C".into(),
            broker_id: id,
        }
    }

    fn perms(route: &TopicRouteData) -> Vec<i32> {
        route.queue_datas.iter().map(|q| q.perm).collect()
    }

    fn ids(group: &BrokerData) -> Vec<i64> {
        group.broker_addrs.keys().copied().collect()
    }

    /// Group b1 whose master (id 0) has unregistered, leaving slave 1.
    fn master_gone() -> RouteInfoManager {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["T"], 1), now)
            .unwrap();
        rim.register_broker(reg("b1", 1, "s:1", &["T"], 1), now)
            .unwrap();
        rim.unregister_broker(&unreg("b1", 0, "m:1"));
        rim
    }

    #[test]
    fn master_and_slave_route_and_write_permission_follows_the_master() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["T", "U"], 1), now)
            .unwrap();
        let slave = rim
            .register_broker(reg("b1", 1, "s:1", &["T", "U"], 1), now)
            .unwrap();
        assert_eq!(slave.master_addr.as_deref(), Some("m:1"));
        assert_eq!(slave.ha_server_addr.as_deref(), Some("m:1-ha"));
        let route = rim.pickup_topic_route_data("T").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 2);
        assert_eq!(perms(&route), [6]);

        rim.unregister_broker(&unreg("b1", 0, "m:1"));
        let route = rim.pickup_topic_route_data("T").unwrap();
        assert_eq!(perms(&route), [4]);
        assert!(!route.broker_datas[0].enable_acting_master);
        assert_eq!(
            route.broker_datas[0].broker_addrs,
            BTreeMap::from([(1, "s:1".to_string())])
        );

        rim.register_broker(reg("b1", 0, "m:1", &["T", "U"], 1), now)
            .unwrap();
        assert_eq!(perms(&rim.pickup_topic_route_data("T").unwrap()), [6]);
    }

    #[test]
    fn slave_topic_configs_are_ignored_while_a_master_exists() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["T"], 1), now)
            .unwrap();
        let mut slave = reg("b1", 1, "s:1", &["T", "OnlyOnSlave"], 2);
        slave.enable_acting_master = Some(true);
        rim.register_broker(slave, now).unwrap();
        assert!(rim.pickup_topic_route_data("OnlyOnSlave").is_none());
    }

    #[test]
    fn acting_master_lists_lowest_slave_as_zero() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        for (id, addr) in [(0, "m:1"), (2, "s2:1"), (1, "s1:1")] {
            let mut r = reg("b1", id, addr, &["T"], 1);
            r.enable_acting_master = Some(true);
            rim.register_broker(r, now).unwrap();
        }
        rim.unregister_broker(&unreg("b1", 0, "m:1"));
        let route = rim.pickup_topic_route_data("T").unwrap();
        let group = &route.broker_datas[0];
        assert!(group.enable_acting_master);
        assert_eq!(
            group.broker_addrs,
            BTreeMap::from([(0, "s1:1".to_string()), (2, "s2:1".to_string())])
        );
        assert_eq!(perms(&route), [4]);
        // Cluster info keeps the real ids.
        let info = rim.cluster_info();
        assert_eq!(ids(&info.broker_addr_table["b1"]), [1, 2]);
        // Sync-member topics are never rewritten.
        rim.register_topic(
            "rmq_sys_SYNC_BROKER_MEMBER_b1",
            &[QueueData {
                broker_name: "b1".into(),
                perm: 6,
                ..QueueData::default()
            }],
        );
        let route = rim
            .pickup_topic_route_data("rmq_sys_SYNC_BROKER_MEMBER_b1")
            .unwrap();
        assert!(!route.broker_datas[0].broker_addrs.contains_key(&0));

        rim.set_config(RouteConfig {
            support_acting_master: false,
            ..RouteConfig::default()
        });
        let route = rim.pickup_topic_route_data("T").unwrap();
        assert!(!route.broker_datas[0].broker_addrs.contains_key(&0));
    }

    #[test]
    fn old_brokers_get_no_acting_master() {
        let route = master_gone().pickup_topic_route_data("T").unwrap();
        assert_eq!(ids(&route.broker_datas[0]), [1]);
    }

    #[test]
    fn expiry_uses_default_or_broker_timeout() {
        let t0 = Instant::now();
        let mut rim = RouteInfoManager::new(RouteConfig {
            broker_channel_expired_time: Duration::from_millis(300),
            ..RouteConfig::default()
        });
        rim.register_broker(reg("b1", 0, "m:1", &["T"], 1), t0)
            .unwrap();
        let mut slave = reg("b1", 1, "s:1", &["T"], 1);
        slave.heartbeat_timeout = Some(Duration::from_secs(10));
        rim.register_broker(slave, t0).unwrap();
        assert!(rim
            .scan_not_active_broker(t0 + Duration::from_millis(300))
            .is_empty());
        let gone = rim.scan_not_active_broker(t0 + Duration::from_millis(301));
        assert_eq!(gone, [BrokerAddrInfo::new("C", "m:1")]);
        assert_eq!(perms(&rim.pickup_topic_route_data("T").unwrap()), [4]);
        // A heartbeat keeps the slave.
        rim.update_broker_info_update_timestamp(
            &BrokerAddrInfo::new("C", "s:1"),
            t0 + Duration::from_secs(9),
        );
        assert!(rim
            .scan_not_active_broker(t0 + Duration::from_secs(12))
            .is_empty());
        assert_eq!(
            rim.scan_not_active_broker(t0 + Duration::from_secs(20))
                .len(),
            1
        );
        assert!(rim.pickup_topic_route_data("T").is_none());
        assert!(rim.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn connection_close_removes_its_brokers() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        let mut m = reg("b1", 0, "m:1", &["T"], 1);
        m.connection_id = Some(7);
        rim.register_broker(m, now).unwrap();
        let mut s = reg("b1", 1, "s:1", &["T"], 1);
        s.connection_id = Some(8);
        rim.register_broker(s, now).unwrap();
        assert!(rim.on_connection_closed(99).is_empty());
        assert_eq!(
            rim.on_connection_closed(7),
            [BrokerAddrInfo::new("C", "m:1")]
        );
        let route = rim.pickup_topic_route_data("T").unwrap();
        assert_eq!(ids(&route.broker_datas[0]), [1]);
    }

    #[test]
    fn single_topic_registration_needs_a_full_one_first() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        let single = |counter| {
            let mut r = reg("b1", 0, "m:1", &["T"], counter);
            r.topic_config.topic_config_table.remove("b1");
            r
        };
        assert!(matches!(
            rim.register_broker(single(1), now),
            Err(RegisterError::NotRegisteredYet { .. })
        ));
        rim.register_broker(reg("b1", 0, "m:1", &["A"], 1), now)
            .unwrap();
        rim.register_broker(single(2), now).unwrap();
        let all = rim.all_topic_list().topic_list;
        assert_eq!(all.into_iter().collect::<Vec<_>>(), ["A", "T", "b1"]);
    }

    #[test]
    fn unchanged_data_version_does_not_overwrite_queue_data() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["A", "B"], 1), now)
            .unwrap();
        assert_eq!(rim.wipe_write_perm_of_broker("b1"), 3);
        rim.register_broker(reg("b1", 0, "m:1", &["A", "B"], 1), now)
            .unwrap();
        assert_eq!(perms(&rim.pickup_topic_route_data("A").unwrap()), [4]);
        rim.register_broker(reg("b1", 0, "m:1", &["A", "B"], 2), now)
            .unwrap();
        assert_eq!(perms(&rim.pickup_topic_route_data("A").unwrap()), [6]);
        assert_eq!(rim.wipe_write_perm_of_broker("b1"), 3);
        assert_eq!(rim.add_write_perm_of_broker("b1"), 3);
        assert_eq!(perms(&rim.pickup_topic_route_data("B").unwrap()), [6]);
        assert_eq!(rim.add_write_perm_of_broker("nope"), 0);
    }

    #[test]
    fn delete_topic_and_topic_lists() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["T", "U"], 1), now)
            .unwrap();
        let mut other = reg("b2", 0, "n:1", &["T", "V"], 1);
        other.cluster_name = "D".into();
        rim.register_broker(other, now).unwrap();
        let list = |l: TopicList| l.topic_list.into_iter().collect::<Vec<_>>();
        assert_eq!(list(rim.topics_by_cluster("C")), ["T", "U", "b1"]);
        assert_eq!(list(rim.topics_by_cluster("D")), ["T", "V", "b2"]);
        assert!(list(rim.topics_by_cluster("nope")).is_empty());
        let sys = rim.system_topic_list();
        assert_eq!(list(sys.clone()), ["C", "D", "b1", "b2"]);
        assert_eq!(sys.broker_addr.as_deref(), Some("m:1"));

        rim.delete_topic("T", Some("C"));
        let route = rim.pickup_topic_route_data("T").unwrap();
        assert_eq!(route.broker_datas.len(), 1);
        assert_eq!(route.broker_datas[0].broker_name, "b2");
        rim.delete_topic("T", None);
        assert!(rim.pickup_topic_route_data("T").is_none());
        assert!(rim.pickup_topic_route_data("U").is_some());
    }

    #[test]
    fn unit_topic_lists() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        let mut r = reg("b1", 0, "m:1", &["plain"], 1);
        for (name, flag) in [("unit", 1), ("unitsub", 2), ("both", 3)] {
            let mut t = topic(name, 6);
            t.topic_sys_flag = flag;
            r.topic_config.topic_config_table.insert(name.into(), t);
        }
        rim.register_broker(r, now).unwrap();
        let list = |l: TopicList| l.topic_list.into_iter().collect::<Vec<_>>();
        assert_eq!(list(rim.unit_topics()), ["both", "unit"]);
        assert_eq!(list(rim.has_unit_sub_topic_list()), ["both", "unitsub"]);
        assert_eq!(list(rim.has_unit_sub_ununit_topic_list()), ["unitsub"]);
    }

    #[test]
    fn slave_promoted_to_master_keeps_one_entry_per_address() {
        let mut rim = master_gone();
        rim.register_broker(reg("b1", 0, "s:1", &["T"], 2), Instant::now())
            .unwrap();
        let group = &rim.cluster_info().broker_addr_table["b1"];
        assert_eq!(group.broker_addrs, BTreeMap::from([(0, "s:1".to_string())]));
        assert_eq!(rim.broker_member_group("C", "b1").broker_addrs.len(), 1);
        assert!(rim.broker_member_group("C", "zz").broker_addrs.is_empty());
    }

    #[test]
    fn delete_topic_with_broker_registration() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::new(RouteConfig {
            delete_topic_with_broker_registration: true,
            ..RouteConfig::default()
        });
        rim.register_broker(reg("b1", 0, "m:1", &["A", "B"], 1), now)
            .unwrap();
        rim.register_broker(reg("b1", 0, "m:1", &["A", "C"], 2), now)
            .unwrap();
        let all: Vec<_> = rim.all_topic_list().topic_list.into_iter().collect();
        assert_eq!(all, ["A", "C", "b1"]);
    }

    #[test]
    fn register_topic_checks_groups() {
        let now = Instant::now();
        let mut rim = RouteInfoManager::default();
        rim.register_broker(reg("b1", 0, "m:1", &["A", "B"], 1), now)
            .unwrap();
        let q = |b: &str| QueueData {
            broker_name: b.into(),
            perm: 6,
            read_queue_nums: 2,
            write_queue_nums: 2,
            topic_sys_flag: 0,
        };
        assert!(!rim.register_topic("N", &[q("b1"), q("zz")]));
        assert!(rim.pickup_topic_route_data("N").is_none());
        assert!(rim.register_topic("N", &[q("b1")]));
        assert_eq!(
            rim.pickup_topic_route_data("N").unwrap().queue_datas,
            [q("b1")]
        );
    }
}
