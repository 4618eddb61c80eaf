//! Who is connected: [`ConsumerManager`] (consumer groups, their client connections and
//! subscriptions, from heartbeats) and [`ProducerManager`] (producer groups and their
//! connections, used for transaction check-backs and admin listings). A connection that closes
//! or stays silent past `channelExpiredTimeout` is removed from every group.
//!
//! A group's members are client ids; one client may reach the broker over several connections
//! (each heartbeats), and stays a member while any of them is registered. Membership changes
//! (a client id joining or leaving) are what [`ConsumerManager`] reports, so a second
//! connection of a known client, or the close of one of its connections, is not a change.
//! Every check and removal happens under the manager's one write lock, so a heartbeat racing
//! the close (or expiry) of its own connection can neither leave a dead entry behind nor lose a
//! live one.

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
    /// Whether `client_id` has a registered connection in the group.
    fn has_client(&self, client_id: &str) -> bool {
        self.channels.values().any(|c| c.client_id == client_id)
    }

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
    /// Records a heartbeat; returns true when the group's membership changed (a new client
    /// id). A heartbeat whose connection has already closed is ignored: the close handler has
    /// run, or will run, and must not find it missing or leave it behind.
    pub fn register(&self, reg: ConsumerRegistration) -> bool {
        let mut groups = self.groups.write();
        if reg.channel.conn.is_closed() {
            return false;
        }
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
        let is_new = !info.has_client(&reg.channel.client_id);
        info.channels.insert(reg.channel.conn.id(), reg.channel);
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

    /// Removes connection `conn_id` from `group`; returns the remaining connections when
    /// membership changed (its client has no other connection in the group).
    pub fn unregister(&self, group: &str, conn_id: u64) -> Option<Vec<Connection>> {
        let mut groups = self.groups.write();
        let info = groups.get_mut(group)?;
        let gone = info.channels.remove(&conn_id)?;
        let left = !info.has_client(&gone.client_id);
        let rest: Vec<Connection> = info.channels.values().map(|c| c.conn.clone()).collect();
        if info.channels.is_empty() {
            groups.remove(group);
        }
        left.then_some(rest)
    }

    /// Removes a closed connection from every group; returns `(group, remaining connections)`
    /// of each group whose membership changed.
    pub fn connection_closed(&self, conn_id: u64) -> Vec<ClientLeft> {
        self.remove_where(|id, _| id == conn_id)
    }

    /// Removes connections that are closed or silent for longer than `expiry`, judged and
    /// removed under one lock (a heartbeat arriving meanwhile keeps its connection); returns
    /// what [`Self::connection_closed`] does.
    pub fn remove_expired(&self, expiry: Duration) -> Vec<ClientLeft> {
        let now = Instant::now();
        self.remove_where(|_, ch| is_expired(ch, now, expiry))
    }

    fn remove_where(&self, doomed: impl Fn(u64, &ClientChannel) -> bool) -> Vec<ClientLeft> {
        let mut groups = self.groups.write();
        let mut changed = Vec::new();
        for (name, info) in groups.iter_mut() {
            let mut gone = Vec::new();
            info.channels.retain(|id, ch| {
                let drop = doomed(*id, ch);
                if drop {
                    tracing::info!(group = %name, client = %ch.client_id, conn = id, "consumer connection removed");
                    gone.push(ch.client_id.clone());
                }
                !drop
            });
            if gone.iter().any(|client| !info.has_client(client)) {
                changed.push(ClientLeft {
                    group: name.clone(),
                    rest: info.channels.values().map(|c| c.conn.clone()).collect(),
                });
            }
        }
        groups.retain(|_, info| !info.channels.is_empty());
        changed
    }

    /// The connection to reach `client_id` of `group` by: its most recently heard-from live
    /// one.
    pub fn find_channel(&self, group: &str, client_id: &str) -> Option<ClientChannel> {
        self.groups
            .read()
            .get(group)?
            .channels
            .values()
            .filter(|c| c.client_id == client_id && !c.conn.is_closed())
            .max_by_key(|c| c.last_update)
            .cloned()
    }

    /// One live connection per client of `group` (the most recently heard-from), by client id.
    pub fn client_channels(&self, group: &str) -> BTreeMap<String, ClientChannel> {
        let mut by_client: BTreeMap<String, ClientChannel> = BTreeMap::new();
        if let Some(info) = self.groups.read().get(group) {
            for ch in info.channels.values().filter(|c| !c.conn.is_closed()) {
                match by_client.get(&ch.client_id) {
                    Some(known) if known.last_update >= ch.last_update => {}
                    _ => {
                        by_client.insert(ch.client_id.clone(), ch.clone());
                    }
                }
            }
        }
        by_client
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

    /// Connections per consumer group.
    pub fn connections_per_group(&self) -> Vec<(String, usize)> {
        self.groups
            .read()
            .iter()
            .map(|(g, info)| (g.clone(), info.channels.len()))
            .collect()
    }
}

/// A client that left a consumer group, as the group's remaining connections see it.
pub struct ClientLeft {
    pub group: String,
    /// The group's connections after the removal (to notify).
    pub rest: Vec<Connection>,
}

fn is_expired(ch: &ClientChannel, now: Instant, expiry: Duration) -> bool {
    ch.conn.is_closed() || now.duration_since(ch.last_update) > expiry
}

/// Producer groups and their connections.
#[derive(Default)]
pub struct ProducerManager {
    groups: RwLock<HashMap<String, BTreeMap<u64, ClientChannel>>>,
}

impl ProducerManager {
    /// Records a producer heartbeat (ignored when its connection has already closed, as for
    /// consumers).
    pub fn register(&self, group: &str, channel: ClientChannel) {
        let mut groups = self.groups.write();
        if channel.conn.is_closed() {
            return;
        }
        groups
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

    /// Removes connections that are closed or silent for longer than `expiry`.
    pub fn remove_expired(&self, expiry: Duration) {
        let now = Instant::now();
        let mut groups = self.groups.write();
        for chs in groups.values_mut() {
            chs.retain(|_, ch| !is_expired(ch, now, expiry));
        }
        groups.retain(|_, chs| !chs.is_empty());
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
