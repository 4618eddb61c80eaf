//! [`ConsumerOffsetManager`]: committed consumer offsets per `topic@group` and queue, kept in
//! memory and persisted (`config/consumerOffset.json`, upstream's shape
//! `{"offsetTable":{"topic@group":{0:12,1:7}}}` with bare queue-id keys) every
//! `flushConsumerOffsetInterval` and on shutdown by the file's [`Persister`], off the caller's
//! thread.
//!
//! On a slave it also remembers which offsets consumers committed to it directly (while its
//! master was gone, or while a consumer's route still lacked the master): slave
//! synchronisation pushes those to the master when they are ahead of the master's (see
//! [`ConsumerOffsetManager::merge_max`]), so that a returning master does not hand out older
//! offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use remoting::protocol::{from_fastjson, to_fastjson, KeyStyle};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::persist::Persister;

const TOPIC_GROUP_SEPARATOR: char = '@';

/// The persisted shape.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct OffsetFile {
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// Committed offsets, keyed `topic@group` then queue id.
pub struct ConsumerOffsetManager {
    table: Arc<RwLock<OffsetTable>>,
    /// The only writer of `config/consumerOffset.json`.
    persister: Persister,
    /// Slave: `(topic@group, queue)` committed here by consumers and not yet known to the
    /// master at that value or higher.
    unpushed: Mutex<BTreeSet<(String, i32)>>,
    /// Next offset each consumer pull was answered with (upstream's `pullOffsetTable`), by
    /// topic then group then queue: in memory only, for the in-flight and ready gauges.
    pulled: RwLock<PullTable>,
}

type PullTable = HashMap<String, HashMap<String, BTreeMap<i32, i64>>>;

/// One queue's committed offset, as pushed by a slave to its master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOffset {
    pub topic: String,
    pub group: String,
    pub queue_id: i32,
    pub offset: i64,
}

/// What [`ConsumerOffsetManager::merge_max`] did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Queues whose offset rose to the master's.
    pub moved: usize,
    /// Offsets committed to this slave that are ahead of the master's: to push to it.
    pub ahead: Vec<QueueOffset>,
}

type OffsetTable = HashMap<String, BTreeMap<i32, i64>>;

/// `table` in upstream's `ConsumerOffsetSerializeWrapper` shape.
fn encode_table(table: &RwLock<OffsetTable>) -> Result<Vec<u8>, BrokerError> {
    let file = OffsetFile {
        offset_table: table
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    Ok(to_fastjson(&file, KeyStyle::Bare)?)
}

fn key(topic: &str, group: &str) -> String {
    format!("{topic}{TOPIC_GROUP_SEPARATOR}{group}")
}

impl ConsumerOffsetManager {
    /// Loads `<root>/config/consumerOffset.json` if it exists.
    pub fn load(root: &Path) -> Result<ConsumerOffsetManager, BrokerError> {
        let path = root.join("config").join("consumerOffset.json");
        let mut table = HashMap::new();
        if let Some(data) = durable::read_optional(&path)? {
            let file: OffsetFile = from_fastjson(&data).map_err(|e| BrokerError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            table.extend(file.offset_table);
        }
        let table = Arc::new(RwLock::new(table));
        let persister = {
            let table = table.clone();
            Persister::new(path, move || encode_table(&table))?
        };
        Ok(ConsumerOffsetManager {
            table,
            persister,
            unpushed: Mutex::new(BTreeSet::new()),
            pulled: RwLock::new(HashMap::new()),
        })
    }

    /// Records that a pull of `group` on the queue was answered with `next_offset` (no
    /// allocation once the queue is known).
    pub fn record_pull(&self, group: &str, topic: &str, queue_id: i32, next_offset: i64) {
        let mut pulled = self.pulled.write();
        if let Some(q) = pulled
            .get_mut(topic)
            .and_then(|groups| groups.get_mut(group))
        {
            q.insert(queue_id, next_offset);
            return;
        }
        pulled
            .entry(topic.to_string())
            .or_default()
            .entry(group.to_string())
            .or_default()
            .insert(queue_id, next_offset);
    }

    /// The next offset the last pull of `group` on the queue was answered with.
    pub fn pull_offset(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.pulled
            .read()
            .get(topic)?
            .get(group)?
            .get(&queue_id)
            .copied()
    }

    /// Records `offset` for the queue.
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.table
            .write()
            .entry(key(topic, group))
            .or_default()
            .insert(queue_id, offset);
    }

    /// The queue's committed offset, or `init` recorded as it when there is none (in one
    /// step, so that two first reads cannot both initialise it and move it back). `on_slave`
    /// marks a recorded init for the push to the master, as [`Self::commit_on_slave`] does.
    pub fn query_or_init(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        init: impl FnOnce() -> i64,
        on_slave: bool,
    ) -> i64 {
        let k = key(topic, group);
        let mut table = self.table.write();
        let queues = table.entry(k.clone()).or_default();
        if let Some(o) = queues.get(&queue_id).copied().filter(|o| *o >= 0) {
            return o;
        }
        let offset = init();
        queues.insert(queue_id, offset);
        if on_slave {
            self.unpushed.lock().insert((k, queue_id));
        }
        offset
    }

    /// Records `offset` committed by a consumer to this slave; it is pushed to the master by
    /// slave synchronisation while it is ahead of the master's.
    pub fn commit_on_slave(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let k = key(topic, group);
        let mut table = self.table.write();
        table.entry(k.clone()).or_default().insert(queue_id, offset);
        self.unpushed.lock().insert((k, queue_id));
    }

    /// Records `offset` unless the queue already has a larger one (a slave's push: it must
    /// never move an offset a consumer committed to the master since backwards). Returns
    /// whether it was recorded.
    pub fn commit_max(&self, group: &str, topic: &str, queue_id: i32, offset: i64) -> bool {
        let mut table = self.table.write();
        let cur = table
            .entry(key(topic, group))
            .or_default()
            .entry(queue_id)
            .or_insert(-1);
        let raised = offset > *cur;
        if raised {
            *cur = offset;
        }
        raised
    }

    /// Notes that the master answered the push of `pushed`: the queue stops waiting for a
    /// push unless a newer offset was committed here meanwhile.
    pub fn pushed(&self, pushed: &QueueOffset) {
        let k = key(&pushed.topic, &pushed.group);
        let table = self.table.read();
        let current = table.get(&k).and_then(|m| m.get(&pushed.queue_id).copied());
        if current.is_none_or(|c| c <= pushed.offset) {
            self.unpushed.lock().remove(&(k, pushed.queue_id));
        }
    }

    /// The committed offset, `None` when there is none.
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.table
            .read()
            .get(&key(topic, group))
            .and_then(|m| m.get(&queue_id).copied())
    }

    /// Every queue's offset of `group` on `topic`.
    pub fn queue_offsets(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        self.table
            .read()
            .get(&key(topic, group))
            .cloned()
            .unwrap_or_default()
    }

    /// Topics `group` has offsets on.
    pub fn topics_of_group(&self, group: &str) -> Vec<String> {
        self.table
            .read()
            .keys()
            .filter_map(|k| k.split_once(TOPIC_GROUP_SEPARATOR))
            .filter(|(_, g)| *g == group)
            .map(|(t, _)| t.to_string())
            .collect()
    }

    /// Groups with offsets on `topic`.
    pub fn groups_of_topic(&self, topic: &str) -> Vec<String> {
        self.table
            .read()
            .keys()
            .filter_map(|k| k.split_once(TOPIC_GROUP_SEPARATOR))
            .filter(|(t, _)| *t == topic)
            .map(|(_, g)| g.to_string())
            .collect()
    }

    /// Every committed offset as `(topic, group, queue -> offset)`.
    pub fn entries(&self) -> Vec<(String, String, BTreeMap<i32, i64>)> {
        self.table
            .read()
            .iter()
            .filter_map(|(k, v)| {
                let (t, g) = k.split_once(TOPIC_GROUP_SEPARATOR)?;
                Some((t.to_string(), g.to_string(), v.clone()))
            })
            .collect()
    }

    /// Forgets every offset on `topic` (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.pulled.write().remove(topic);
        self.table.write().retain(|k, _| {
            k.split_once(TOPIC_GROUP_SEPARATOR)
                .is_none_or(|(t, _)| t != topic)
        });
    }

    /// Every offset in upstream's `ConsumerOffsetSerializeWrapper` shape (the file's, and the
    /// GET_ALL_CONSUMER_OFFSET body).
    pub fn encode(&self) -> Result<Vec<u8>, BrokerError> {
        encode_table(&self.table)
    }

    /// Merges a master's GET_ALL_CONSUMER_OFFSET body into this (slave's) table keeping the
    /// larger offset of each queue, so offsets committed to the slave while the master was
    /// away are not overwritten by the master's older ones. Also lists the offsets committed
    /// to this slave that the master lacks or has lower ([`Merged::ahead`]); those the master
    /// has caught up with stop waiting for a push.
    pub fn merge_max(&self, body: &[u8]) -> Result<Merged, BrokerError> {
        let file: OffsetFile = from_fastjson(body).map_err(|e| BrokerError::Parse {
            path: PathBuf::from("<GET_ALL_CONSUMER_OFFSET body>"),
            reason: e.to_string(),
        })?;
        let mut merged = Merged::default();
        let mut table = self.table.write();
        let mut unpushed = self.unpushed.lock();
        unpushed.retain(|(k, q)| {
            let master = file.offset_table.get(k).and_then(|m| m.get(q).copied());
            let Some(local) = table.get(k).and_then(|m| m.get(q).copied()) else {
                return false;
            };
            if master.is_some_and(|m| m >= local) {
                return false;
            }
            if let Some((topic, group)) = k.split_once(TOPIC_GROUP_SEPARATOR) {
                merged.ahead.push(QueueOffset {
                    topic: topic.to_string(),
                    group: group.to_string(),
                    queue_id: *q,
                    offset: local,
                });
            }
            true
        });
        for (k, queues) in file.offset_table {
            let local = table.entry(k).or_default();
            for (q, offset) in queues {
                let cur = local.entry(q).or_insert(-1);
                if offset > *cur {
                    *cur = offset;
                    merged.moved += 1;
                }
            }
        }
        Ok(merged)
    }

    /// Asks for `config/consumerOffset.json` to be rewritten with the current offsets and
    /// returns at once: the file's writer thread writes it soon after (see
    /// [`Persister::request`]). Not durable yet when it returns: see [`Self::flush`].
    pub fn persist(&self) {
        self.persister.request();
    }

    /// Writes `config/consumerOffset.json` with every offset committed before the call and
    /// resolves once it is durable (the I/O runs on the file's writer thread).
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.persister.flush().await
    }

    /// [`Self::flush`] blocking the calling thread: not for async runtime threads.
    #[cfg(test)]
    pub fn persist_now(&self) -> Result<(), BrokerError> {
        self.persister.persist_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_shape_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let m = ConsumerOffsetManager::load(dir.path()).unwrap();
        m.commit("G", "T", 0, 12);
        m.commit("G", "T", 1, 7);
        m.persist_now().unwrap();
        let text = std::fs::read_to_string(dir.path().join("config/consumerOffset.json")).unwrap();
        assert_eq!(text, r#"{"offsetTable":{"T@G":{0:12,1:7}}}"#);
        let again = ConsumerOffsetManager::load(dir.path()).unwrap();
        assert_eq!(again.query("G", "T", 1), Some(7));
        assert_eq!(again.query("G", "T", 2), None);
        assert_eq!(again.topics_of_group("G"), vec!["T".to_string()]);
        let master = br#"{"offsetTable":{"T@G":{0:10,1:9},"U@G":{0:3}}}"#;
        assert_eq!(again.merge_max(master).unwrap().moved, 2);
        assert_eq!(again.query("G", "T", 0), Some(12));
        assert_eq!(again.query("G", "T", 1), Some(9));
        assert_eq!(again.query("G", "U", 0), Some(3));
        again.remove_topic("T");
        assert_eq!(again.query("G", "T", 0), None);
    }

    /// A first pop initialises the offset; a second first read that lost the race must not
    /// move it back to the init offset (it did, and two POP consumers got the same messages).
    #[test]
    fn init_never_moves_a_committed_offset_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = ConsumerOffsetManager::load(dir.path()).unwrap();
        assert_eq!(m.query_or_init("G", "T", 0, || 0, false), 0);
        m.commit("G", "T", 0, 13);
        assert_eq!(m.query_or_init("G", "T", 0, || 0, false), 13);
        assert_eq!(m.query("G", "T", 0), Some(13));
        assert_eq!(m.query_or_init("G", "T", 1, || 5, true), 5);
        assert_eq!(m.query("G", "T", 1), Some(5));
    }

    /// Rounds of commits each followed by a persist, all at once (the periodic persist, a
    /// shutdown, ...): once the writes asked for are done, the file holds every queue's latest
    /// offset. Fails when an older snapshot is renamed last.
    #[test]
    fn concurrent_persists_leave_the_latest_offsets_on_disk() {
        const THREADS: i32 = 8;
        const ROUNDS: i64 = 10;
        let dir = tempfile::tempdir().unwrap();
        let m = ConsumerOffsetManager::load(dir.path()).unwrap();
        let file = dir.path().join("config/consumerOffset.json");
        for offset in 1..=ROUNDS {
            let start = std::sync::Barrier::new(THREADS as usize);
            std::thread::scope(|s| {
                for q in 0..THREADS {
                    let (m, start) = (&m, &start);
                    s.spawn(move || {
                        start.wait();
                        m.commit("G", "T", q, offset);
                        m.persist();
                    });
                }
            });
            m.persister.settle().unwrap();
            let on_disk = std::fs::read(&file).unwrap();
            assert_eq!(on_disk, m.encode().unwrap(), "round {offset}");
        }
        let again = ConsumerOffsetManager::load(dir.path()).unwrap();
        for q in 0..THREADS {
            assert_eq!(again.query("G", "T", q), Some(ROUNDS));
        }
    }

    #[test]
    fn offsets_committed_to_a_slave_are_pushed_until_the_master_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let slave = ConsumerOffsetManager::load(dir.path()).unwrap();
        slave.commit("G", "T", 0, 5); // learnt from the master: never pushed
        slave.commit_on_slave("G", "T", 1, 20);
        slave.commit_on_slave("G", "T", 2, 8);
        let master = br#"{"offsetTable":{"T@G":{0:4,1:10,2:8}}}"#;
        let merged = slave.merge_max(master).unwrap();
        let ahead = QueueOffset {
            topic: "T".into(),
            group: "G".into(),
            queue_id: 1,
            offset: 20,
        };
        assert_eq!(merged.ahead, vec![ahead.clone()]);
        assert_eq!(slave.query("G", "T", 1), Some(20));
        // A newer commit lands before the master answers the push: still to push.
        slave.commit_on_slave("G", "T", 1, 25);
        slave.pushed(&ahead);
        assert_eq!(slave.merge_max(master).unwrap().ahead[0].offset, 25);
        slave.pushed(&QueueOffset {
            offset: 25,
            ..ahead
        });
        assert!(slave.merge_max(master).unwrap().ahead.is_empty());

        // The master side never lowers an offset on a push.
        assert!(slave.commit_max("G", "T", 1, 30));
        assert!(!slave.commit_max("G", "T", 1, 29));
        assert_eq!(slave.query("G", "T", 1), Some(30));
        assert!(slave.commit_max("G", "U", 0, 0));
    }
}
