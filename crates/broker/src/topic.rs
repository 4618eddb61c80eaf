//! [`TopicConfigManager`]: the broker's topics (`config/topics.json`), the system topics it
//! creates at start as upstream does, and the auto-creation rules (from `TBW102` on first send,
//! `%RETRY%`/`%DLQ%` topics on demand). Every change bumps the data version, asks the file's
//! [`Persister`] for a write (which happens off the caller's thread) and wakes the
//! registration task so the NameServers learn of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use remoting::protocol::{from_fastjson, to_fastjson, KeyStyle};
use remoting::protocol::{perm, DataVersion, TopicConfig, TopicConfigSerializeWrapper};
use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::persist::Persister;

/// Topic producers name as `defaultTopic` when sending to a topic that does not exist yet.
pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
/// Delayed messages wait here, one queue per level.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Timer messages wait here, in queue 0 (upstream `TimerMessageStore.TIMER_TOPIC`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
pub const BENCHMARK_TOPIC: &str = "BenchmarkTest";
pub const OFFSET_MOVED_EVENT: &str = "OFFSET_MOVED_EVENT";
/// Transactional half messages.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Commit/rollback records of half messages.
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
pub use remoting::message::{
    dlq_topic, retry_topic, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
};
/// Queues of `SCHEDULE_TOPIC_XXXX` upstream creates (the default level count).
const SCHEDULE_TOPIC_QUEUE_NUM: i32 = 18;
/// Longest topic name upstream accepts.
pub const MAX_TOPIC_LENGTH: usize = 127;
/// Most read or write queues a topic (or a group's retry topic) may have. Upstream sets no
/// limit, but every admin request that reports on a topic walks all of its queues: two
/// billion of them held a runtime thread for minutes.
pub const MAX_QUEUE_NUMS: i32 = 4096;

/// Why a topic name is refused (upstream `TopicValidator.validateTopic`), `None` when valid.
pub fn validate_topic_name(topic: &str) -> Option<String> {
    if topic.trim().is_empty() {
        return Some("The specified topic is blank.".into());
    }
    if topic.len() > MAX_TOPIC_LENGTH {
        return Some(format!(
            "The specified topic is longer than topic max length {MAX_TOPIC_LENGTH}."
        ));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '-' | '_');
    if !topic.chars().all(legal) {
        return Some(format!(
            "The specified topic[{topic}] contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
        ));
    }
    None
}

/// Topics clients may not send to directly (upstream's set, and the timer topic: only the
/// send policy writes timer messages there).
pub fn is_not_allowed_send_topic(topic: &str) -> bool {
    matches!(
        topic,
        SCHEDULE_TOPIC | TIMER_TOPIC | TRANS_HALF_TOPIC | TRANS_OP_HALF_TOPIC | OFFSET_MOVED_EVENT
    )
}

fn now_millis() -> i64 {
    remoting::message::now_millis()
}

/// Advances a data version (upstream `DataVersion.nextVersion`).
pub fn next_version(v: &mut DataVersion) {
    v.counter += 1;
    v.timestamp = now_millis();
}

/// The broker's topics.
pub struct TopicConfigManager {
    table: Arc<RwLock<TopicConfigSerializeWrapper>>,
    /// The only writer of `config/topics.json`.
    persister: Persister,
    /// Wakes the registration task after a change.
    changed: Notify,
    /// Since the registration task last looked: a topic was auto-created (first send,
    /// retry / DLQ / system topics), and any other change happened.
    auto_created: AtomicBool,
    other_change: AtomicBool,
    /// The persister's generation of the latest change (see [`Self::durable`]).
    last_change: AtomicU64,
}

impl TopicConfigManager {
    /// Loads `config/topics.json` (if any) over the system topics of `config`.
    pub fn load(config: &BrokerConfig) -> Result<TopicConfigManager, BrokerError> {
        let path = config
            .store_path_root_dir
            .join("config")
            .join("topics.json");
        let mut wrapper = TopicConfigSerializeWrapper {
            data_version: DataVersion {
                timestamp: now_millis(),
                ..Default::default()
            },
            topic_config_table: system_topics(config),
        };
        if let Some(data) = durable::read_optional(&path)? {
            let stored: TopicConfigSerializeWrapper =
                from_fastjson(&data).map_err(|e| BrokerError::Parse {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            wrapper.data_version = stored.data_version;
            for (name, mut tc) in stored.topic_config_table {
                if tc.topic_name.is_empty() {
                    tc.topic_name = name.clone();
                }
                wrapper.topic_config_table.insert(name, tc);
            }
        }
        let table = Arc::new(RwLock::new(wrapper));
        let persister = {
            let table = table.clone();
            Persister::new(path, move || {
                Ok(to_fastjson(&*table.read(), KeyStyle::Quoted)?)
            })?
        };
        Ok(TopicConfigManager {
            table,
            persister,
            changed: Notify::new(),
            auto_created: AtomicBool::new(false),
            other_change: AtomicBool::new(false),
            last_change: AtomicU64::new(0),
        })
    }

    /// The topic's config.
    pub fn select(&self, topic: &str) -> Option<TopicConfig> {
        self.table.read().topic_config_table.get(topic).cloned()
    }

    /// A copy of every topic with the data version.
    pub fn snapshot(&self) -> TopicConfigSerializeWrapper {
        self.table.read().clone()
    }

    /// The current data version.
    pub fn data_version(&self) -> DataVersion {
        self.table.read().data_version.clone()
    }

    /// Resolves when a topic was created, changed or deleted since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Whether the changes since the last call were only auto-created topics (upstream then
    /// registers with a oneway 103); clears the record.
    pub(crate) fn take_only_auto_created(&self) -> bool {
        let other = self.other_change.swap(false, Ordering::SeqCst);
        let auto = self.auto_created.swap(false, Ordering::SeqCst);
        auto && !other
    }

    /// Creates or replaces a topic (UPDATE_AND_CREATE_TOPIC).
    pub fn update(&self, tc: TopicConfig) -> Result<(), BrokerError> {
        {
            let mut t = self.table.write();
            t.topic_config_table.insert(tc.topic_name.clone(), tc);
            next_version(&mut t.data_version);
        }
        self.after_change();
        Ok(())
    }

    /// Removes a topic; returns whether it existed.
    pub fn delete(&self, topic: &str) -> Result<bool, BrokerError> {
        let existed = {
            let mut t = self.table.write();
            let existed = t.topic_config_table.remove(topic).is_some();
            if existed {
                next_version(&mut t.data_version);
            }
            existed
        };
        if existed {
            self.after_change();
        }
        Ok(existed)
    }

    /// The config of `topic`, created from `default_topic` when it is missing and the default
    /// topic is inheritable (upstream `createTopicInSendMessageMethod`). `None` when the topic
    /// neither exists nor can be created.
    pub fn create_in_send(
        &self,
        topic: &str,
        default_topic: &str,
        client_queue_nums: i32,
        topic_sys_flag: i32,
        auto_create_enable: bool,
    ) -> Result<Option<TopicConfig>, BrokerError> {
        let created = {
            let mut t = self.table.write();
            if let Some(tc) = t.topic_config_table.get(topic) {
                return Ok(Some(tc.clone()));
            }
            let Some(default) = t.topic_config_table.get(default_topic) else {
                tracing::warn!(
                    topic,
                    default_topic,
                    "cannot auto-create topic: no default topic"
                );
                return Ok(None);
            };
            let mut default_perm = default.perm;
            if default_topic == AUTO_CREATE_TOPIC_KEY_TOPIC && !auto_create_enable {
                default_perm = perm::PERM_READ | perm::PERM_WRITE;
            }
            if !perm::is_inherited(default_perm) {
                tracing::warn!(
                    topic,
                    default_topic,
                    "cannot auto-create topic: default topic not inheritable"
                );
                return Ok(None);
            }
            let queues = client_queue_nums.min(default.write_queue_nums).max(0);
            let tc = TopicConfig {
                topic_name: topic.to_string(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm: default_perm & !perm::PERM_INHERIT,
                topic_sys_flag,
                topic_filter_type: default.topic_filter_type.clone(),
                ..TopicConfig::default()
            };
            t.topic_config_table.insert(topic.to_string(), tc.clone());
            next_version(&mut t.data_version);
            tc
        };
        tracing::info!(
            topic,
            queues = created.write_queue_nums,
            "auto-created topic"
        );
        self.after_auto_create();
        Ok(Some(created))
    }

    /// The config of `topic`, created with `queue_nums` queues and `perm` when missing
    /// (upstream `createTopicInSendMessageBackMethod`; retry, DLQ and system topics).
    pub fn create_if_missing(
        &self,
        topic: &str,
        queue_nums: i32,
        perm: i32,
        topic_sys_flag: i32,
    ) -> Result<TopicConfig, BrokerError> {
        let created = {
            let mut t = self.table.write();
            if let Some(tc) = t.topic_config_table.get(topic) {
                return Ok(tc.clone());
            }
            if !store::is_storable_topic(topic) {
                return Err(BrokerError::InvalidTopic(topic.to_string()));
            }
            let tc = TopicConfig {
                topic_name: topic.to_string(),
                read_queue_nums: queue_nums,
                write_queue_nums: queue_nums,
                perm,
                topic_sys_flag,
                ..TopicConfig::default()
            };
            t.topic_config_table.insert(topic.to_string(), tc.clone());
            next_version(&mut t.data_version);
            tc
        };
        tracing::info!(topic, "created topic");
        self.after_auto_create();
        Ok(created)
    }

    /// A slave learns `topic` from replicated data: a message of `queue_id` reached its
    /// ConsumeQueue. If the master's config of the topic has not been synchronised yet (the
    /// master may die first), the topic is added with read-write perms and `queue_id + 1`
    /// queues, or grown to that many, so the slave serves pulls and offsets of every queue it
    /// holds data for. The next synchronisation from the master replaces it. Returns whether
    /// anything changed.
    pub(crate) fn learn_replicated(&self, topic: &str, queue_id: i32) -> Result<bool, BrokerError> {
        let known = |t: &TopicConfigSerializeWrapper| {
            t.topic_config_table
                .get(topic)
                .is_some_and(|tc| tc.read_queue_nums > queue_id)
        };
        if known(&self.table.read()) {
            return Ok(false);
        }
        {
            let mut t = self.table.write();
            if known(&t) {
                return Ok(false);
            }
            let queues = queue_id + 1;
            let tc = t
                .topic_config_table
                .entry(topic.to_string())
                .or_insert_with(|| TopicConfig {
                    topic_name: topic.to_string(),
                    perm: perm::PERM_READ | perm::PERM_WRITE,
                    read_queue_nums: 0,
                    write_queue_nums: 0,
                    ..TopicConfig::default()
                });
            tc.read_queue_nums = tc.read_queue_nums.max(queues);
            tc.write_queue_nums = tc.write_queue_nums.max(queues);
            next_version(&mut t.data_version);
        }
        tracing::info!(topic, queue_id, "topic learnt from replicated data");
        self.after_change();
        Ok(true)
    }

    /// A slave takes its master's topics (GET_ALL_TOPIC_CONFIG) when they or their data
    /// version differ from ours; returns whether anything changed.
    pub(crate) fn replace_from_master(
        &self,
        master: TopicConfigSerializeWrapper,
    ) -> Result<bool, BrokerError> {
        {
            let mut t = self.table.write();
            if t.data_version == master.data_version
                && t.topic_config_table == master.topic_config_table
            {
                return Ok(false);
            }
            *t = master;
        }
        self.after_change();
        Ok(true)
    }

    fn after_change(&self) {
        self.other_change.store(true, Ordering::SeqCst);
        self.changed.notify_one();
        self.persist();
    }

    fn after_auto_create(&self) {
        self.auto_created.store(true, Ordering::SeqCst);
        self.changed.notify_one();
        self.persist();
    }

    /// Asks for `config/topics.json` to be rewritten with the current topics and returns at
    /// once: the file's writer thread writes it soon after (see [`Persister::request`]); safe
    /// on the send path. Not durable yet when it returns: see [`Self::flush`].
    pub fn persist(&self) {
        let generation = self.persister.request();
        self.last_change.fetch_max(generation, Ordering::SeqCst);
    }

    /// Resolves once every change made so far is in `config/topics.json` on disk: at once
    /// when it already is (the common case: one lock, no I/O). A client's write (a send or a
    /// send-back) awaits it before it stores anything (see `BrokerContext::put_acked`), so
    /// that a topic created for that message (auto-created on first send, a retry or DLQ
    /// topic) is not lost by a crash that keeps the message (upstream writes the file before
    /// it stores the message).
    pub async fn durable(&self) -> Result<(), BrokerError> {
        let generation = self.last_change.load(Ordering::SeqCst);
        if self.persister.written() >= generation {
            return Ok(());
        }
        self.persister.wait(generation).await
    }

    /// Writes `config/topics.json` with every change made before the call and resolves once
    /// it is durable (the I/O runs on the file's writer thread, not the caller's).
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.persister.flush().await
    }

    /// [`Self::flush`] blocking the calling thread: not for async runtime threads.
    #[cfg(test)]
    pub fn persist_now(&self) -> Result<(), BrokerError> {
        self.persister.persist_now()
    }
}

/// The topics upstream's broker creates at start.
fn system_topics(config: &BrokerConfig) -> BTreeMap<String, TopicConfig> {
    let rw = perm::PERM_READ | perm::PERM_WRITE;
    let topic = |name: &str, queues: i32, perm: i32| TopicConfig {
        topic_name: name.to_string(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm,
        ..TopicConfig::default()
    };
    let inherit_if = |enabled: bool| {
        if enabled {
            perm::PERM_INHERIT | rw
        } else {
            perm::PERM_INHERIT
        }
    };
    let mut list = vec![
        topic(SELF_TEST_TOPIC, 1, rw),
        topic(BENCHMARK_TOPIC, 1024, rw),
        topic(
            &config.broker_cluster_name,
            16,
            inherit_if(config.cluster_topic_enable),
        ),
        topic(
            &config.broker_name,
            1,
            inherit_if(config.broker_topic_enable),
        ),
        topic(OFFSET_MOVED_EVENT, 1, rw),
        topic(SCHEDULE_TOPIC, SCHEDULE_TOPIC_QUEUE_NUM, rw),
        topic(
            &format!("{}_REPLY_TOPIC", config.broker_cluster_name),
            1,
            rw,
        ),
    ];
    if config.auto_create_topic_enable {
        list.push(topic(
            AUTO_CREATE_TOPIC_KEY_TOPIC,
            config.default_topic_queue_nums,
            perm::PERM_INHERIT | rw,
        ));
    }
    if config.trace_topic_enable {
        list.push(topic(&config.msg_trace_topic_name, 1, rw));
    }
    list.into_iter()
        .map(|t| (t.topic_name.clone(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> BrokerConfig {
        BrokerConfig {
            store_path_root_dir: dir.to_path_buf(),
            broker_cluster_name: "C".into(),
            broker_name: "b".into(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn system_topics_auto_create_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let m = TopicConfigManager::load(&c).unwrap();
        assert_eq!(m.select("TBW102").unwrap().perm, 7);
        assert_eq!(m.select("C").unwrap().read_queue_nums, 16);
        assert_eq!(m.select("C_REPLY_TOPIC").unwrap().perm, 6);
        let v0 = m.data_version();
        let t = m
            .create_in_send("NEW", "TBW102", 4, 0, true)
            .unwrap()
            .unwrap();
        assert_eq!((t.read_queue_nums, t.write_queue_nums, t.perm), (4, 4, 6));
        assert!(m.data_version().counter > v0.counter);
        assert!(m.create_in_send("X", "NOPE", 4, 0, true).unwrap().is_none());
        let dlq = m.create_if_missing(&dlq_topic("G"), 1, 6, 0).unwrap();
        assert_eq!(dlq.write_queue_nums, 1);
        m.persist_now().unwrap();

        let again = TopicConfigManager::load(&c).unwrap();
        assert_eq!(again.select("NEW").unwrap().write_queue_nums, 4);
        assert!(again.select("%DLQ%G").is_some());
        assert!(again.delete("NEW").unwrap());
        assert!(!again.delete("NEW").unwrap());
    }

    /// Rounds of auto-creates at once (each asks for a persist): once the writes they asked
    /// for are done, the file holds every topic. Fails when concurrent persists race on one
    /// temporary file (an auto-create fails) or an older snapshot is renamed last.
    #[test]
    fn concurrent_auto_creates_leave_the_latest_topics_on_disk() {
        const THREADS: usize = 8;
        const ROUNDS: usize = 10;
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let m = TopicConfigManager::load(&c).unwrap();
        let file = c.store_path_root_dir.join("config/topics.json");
        for round in 0..ROUNDS {
            let start = std::sync::Barrier::new(THREADS);
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (m, start) = (&m, &start);
                    s.spawn(move || {
                        start.wait();
                        m.create_if_missing(&format!("T{t}_{round}"), 4, 6, 0)
                            .unwrap();
                    });
                }
            });
            m.persister.settle().unwrap();
            let on_disk: TopicConfigSerializeWrapper =
                from_fastjson(&std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(on_disk, m.snapshot(), "round {round}");
        }
        let again = TopicConfigManager::load(&c).unwrap();
        for t in 0..THREADS {
            for round in 0..ROUNDS {
                assert!(again.select(&format!("T{t}_{round}")).is_some());
            }
        }
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("Topic_1-a%b|c").is_none());
        assert!(validate_topic_name("").is_some());
        assert!(validate_topic_name("a b").is_some());
        assert!(validate_topic_name(&"a".repeat(128)).is_some());
    }
}
