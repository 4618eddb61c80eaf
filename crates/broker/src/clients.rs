//! Who is connected: [`ConsumerManager`] (consumer groups, their client connections and
//! subscriptions, from heartbeats) and [`ProducerManager`] (producer groups and their
//! connections, used for transaction check-backs and admin listings). A connection that closes
//! or stays silent past `channelExpiredTimeout` is removed from every group.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use remoting::broker_headers::{ConsumeFromWhere, ConsumeType, MessageModel, SubscriptionData};
use remoting::server::Connection;
use remoting::LanguageCode;

/// One client connection of a group.
#[derive(Clone)]
pub struct ClientChannel {
    pub conn: Connection,
    pub client_id: String,
    pub language: LanguageCode,
    pub version: i32,
    pub last_update: Instant,
}

/// A consumer group as its heartbeats describe it.
#[derive(Clone)]
pub struct ConsumerGroupInfo {
    pub consume_type: ConsumeType,
    pub message_model: MessageModel,
    pub consume_from_where: ConsumeFromWhere,
    /// Subscriptions by topic.
    pub subscriptions: HashMap<String, SubscriptionData>,
    /// Connections by connection id.
    pub channels: BTreeMap<u64, ClientChannel>,
}

impl ConsumerGroupInfo {
    /// Client ids of the live consumers, sorted.
    pub fn client_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .channels
            .values()
            .map(|c| c.client_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What a heartbeat tells about one consumer group.
pub struct ConsumerRegistration {
    pub group: String,
    pub channel: ClientChannel,
    pub consume_type: ConsumeType,
    pub message_model: MessageModel,
    pub consume_from_where: ConsumeFromWhere,
    pub subscriptions: Vec<SubscriptionData>,
    /// 5.x heartbeats may leave unchanged subscriptions out.
    pub without_sub: bool,
}

/// Consumer groups and their connections.
#[derive(Default)]
pub struct ConsumerManager {
    groups: RwLock<HashMap<String, ConsumerGroupInfo>>,
}

impl ConsumerManager {
    /// Records a heartbeat; returns true when the group's membership changed (a new client).
    pub fn register(&self, reg: ConsumerRegistration) -> bool {
        let mut groups = self.groups.write();
        let info = groups
            .entry(reg.group.clone())
            .or_insert_with(|| ConsumerGroupInfo {
                consume_type: reg.consume_type,
                message_model: reg.message_model,
                consume_from_where: reg.consume_from_where,
                subscriptions: HashMap::new(),
                channels: BTreeMap::new(),
            });
        info.consume_type = reg.consume_type;
        info.message_model = reg.message_model;
        info.consume_from_where = reg.consume_from_where;
        let id = reg.channel.conn.id();
        let is_new = !info.channels.contains_key(&id);
        info.channels.insert(id, reg.channel);
        if !reg.without_sub {
            let mut next = HashMap::new();
            for sub in reg.subscriptions {
                let keep_version = info
                    .subscriptions
                    .get(&sub.topic)
                    .filter(|old| old.sub_string == sub.sub_string)
                    .map(|old| old.sub_version.max(sub.sub_version));
                let mut sub = sub;
                if let Some(v) = keep_version {
                    sub.sub_version = v;
                }
                next.insert(sub.topic.clone(), sub);
            }
            info.subscriptions = next;
        }
        is_new
    }

    /// Removes `client_id`'s connection from `group`; returns the remaining connections when
    /// membership changed.
    pub fn unregister(&self, group: &str, conn_id: u64) -> Option<Vec<Connection>> {
        let mut groups = self.groups.write();
        let info = groups.get_mut(group)?;
        info.channels.remove(&conn_id)?;
        let rest: Vec<Connection> = info.channels.values().map(|c| c.conn.clone()).collect();
        if info.channels.is_empty() {
            groups.remove(group);
        }
        Some(rest)
    }

    /// Removes a closed connection from every group; returns `(group, remaining connections)`
    /// of each group it left.
    pub fn connection_closed(&self, conn_id: u64) -> Vec<(String, Vec<Connection>)> {
        let mut groups = self.groups.write();
        let mut changed = Vec::new();
        for (name, info) in groups.iter_mut() {
            if info.channels.remove(&conn_id).is_some() {
                changed.push((
                    name.clone(),
                    info.channels.values().map(|c| c.conn.clone()).collect(),
                ));
            }
        }
        groups.retain(|_, info| !info.channels.is_empty());
        changed
    }

    /// Drops connections silent for longer than `expiry`; returns the connection ids dropped.
    pub fn scan_expired(&self, expiry: Duration) -> Vec<u64> {
        let now = Instant::now();
        let mut expired = Vec::new();
        for info in self.groups.read().values() {
            for (id, ch) in &info.channels {
                if ch.conn.is_closed() || now.duration_since(ch.last_update) > expiry {
                    expired.push(*id);
                }
            }
        }
        expired
    }

    /// A copy of a group.
    pub fn group(&self, group: &str) -> Option<ConsumerGroupInfo> {
        self.groups.read().get(group).cloned()
    }

    /// The subscription of `group` to `topic`.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.groups
            .read()
            .get(group)
            .and_then(|g| g.subscriptions.get(topic).cloned())
    }

    /// Groups with a live consumer subscribed to `topic`.
    pub fn groups_of_topic(&self, topic: &str) -> Vec<String> {
        self.groups
            .read()
            .iter()
            .filter(|(_, g)| g.subscriptions.contains_key(topic))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Number of consumer connections (all groups).
    pub fn connection_count(&self) -> usize {
        self.groups.read().values().map(|g| g.channels.len()).sum()
    }
}

/// Producer groups and their connections.
#[derive(Default)]
pub struct ProducerManager {
    groups: RwLock<HashMap<String, BTreeMap<u64, ClientChannel>>>,
}

impl ProducerManager {
    /// Records a producer heartbeat.
    pub fn register(&self, group: &str, channel: ClientChannel) {
        self.groups
            .write()
            .entry(group.to_string())
            .or_default()
            .insert(channel.conn.id(), channel);
    }

    /// Removes one connection from `group`.
    pub fn unregister(&self, group: &str, conn_id: u64) {
        let mut groups = self.groups.write();
        if let Some(chs) = groups.get_mut(group) {
            chs.remove(&conn_id);
            if chs.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// Removes a closed connection from every group.
    pub fn connection_closed(&self, conn_id: u64) {
        let mut groups = self.groups.write();
        for chs in groups.values_mut() {
            chs.remove(&conn_id);
        }
        groups.retain(|_, chs| !chs.is_empty());
    }

    /// Connection ids silent for longer than `expiry` (or closed).
    pub fn scan_expired(&self, expiry: Duration) -> Vec<u64> {
        let now = Instant::now();
        self.groups
            .read()
            .values()
            .flat_map(|chs| chs.iter())
            .filter(|(_, ch)| ch.conn.is_closed() || now.duration_since(ch.last_update) > expiry)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The group's live connections.
    pub fn channels(&self, group: &str) -> Vec<ClientChannel> {
        self.groups
            .read()
            .get(group)
            .map(|chs| {
                chs.values()
                    .filter(|c| !c.conn.is_closed())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of producer connections (all groups).
    pub fn connection_count(&self) -> usize {
        self.groups.read().values().map(|g| g.len()).sum()
    }
}
