//! [`ConsumerOffsetManager`]: committed consumer offsets per `topic@group` and queue, kept in
//! memory and persisted (`config/consumerOffset.json`, upstream's shape
//! `{"offsetTable":{"topic@group":{0:12,1:7}}}` with bare queue-id keys) every
//! `flushConsumerOffsetInterval` and on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use remoting::protocol::{from_fastjson, to_fastjson, KeyStyle};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::persist;

const TOPIC_GROUP_SEPARATOR: char = '@';

/// The persisted shape.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct OffsetFile {
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// Committed offsets, keyed `topic@group` then queue id.
pub struct ConsumerOffsetManager {
    path: PathBuf,
    table: RwLock<HashMap<String, BTreeMap<i32, i64>>>,
}

fn key(topic: &str, group: &str) -> String {
    format!("{topic}{TOPIC_GROUP_SEPARATOR}{group}")
}

impl ConsumerOffsetManager {
    /// Loads `<root>/config/consumerOffset.json` if it exists.
    pub fn load(root: &Path) -> Result<ConsumerOffsetManager, BrokerError> {
        let path = root.join("config").join("consumerOffset.json");
        let mut table = HashMap::new();
        if let Some(data) = persist::read_optional(&path)? {
            let file: OffsetFile = from_fastjson(&data).map_err(|e| BrokerError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            table.extend(file.offset_table);
        }
        Ok(ConsumerOffsetManager {
            path,
            table: RwLock::new(table),
        })
    }

    /// Records `offset` for the queue.
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.table
            .write()
            .entry(key(topic, group))
            .or_default()
            .insert(queue_id, offset);
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

    /// Forgets every offset on `topic` (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.table.write().retain(|k, _| {
            k.split_once(TOPIC_GROUP_SEPARATOR)
                .is_none_or(|(t, _)| t != topic)
        });
    }

    /// Every offset in upstream's `ConsumerOffsetSerializeWrapper` shape (the file's, and the
    /// GET_ALL_CONSUMER_OFFSET body).
    pub fn encode(&self) -> Result<Vec<u8>, BrokerError> {
        let file = OffsetFile {
            offset_table: self
                .table
                .read()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        Ok(to_fastjson(&file, KeyStyle::Bare)?)
    }

    /// Merges a master's GET_ALL_CONSUMER_OFFSET body into this (slave's) table keeping the
    /// larger offset of each queue, so offsets committed to the slave while the master was
    /// away are not overwritten by the master's older ones. Returns the queues that moved.
    pub fn merge_max(&self, body: &[u8]) -> Result<usize, BrokerError> {
        let file: OffsetFile = from_fastjson(body).map_err(|e| BrokerError::Parse {
            path: PathBuf::from("<GET_ALL_CONSUMER_OFFSET body>"),
            reason: e.to_string(),
        })?;
        let mut moved = 0;
        let mut table = self.table.write();
        for (k, queues) in file.offset_table {
            let local = table.entry(k).or_default();
            for (q, offset) in queues {
                let cur = local.entry(q).or_insert(-1);
                if offset > *cur {
                    *cur = offset;
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    /// Writes `config/consumerOffset.json`.
    pub fn persist(&self) -> Result<(), BrokerError> {
        persist::write_atomic(&self.path, &self.encode()?)
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
        m.persist().unwrap();
        let text = std::fs::read_to_string(dir.path().join("config/consumerOffset.json")).unwrap();
        assert_eq!(text, r#"{"offsetTable":{"T@G":{0:12,1:7}}}"#);
        let again = ConsumerOffsetManager::load(dir.path()).unwrap();
        assert_eq!(again.query("G", "T", 1), Some(7));
        assert_eq!(again.query("G", "T", 2), None);
        assert_eq!(again.topics_of_group("G"), vec!["T".to_string()]);
        let master = br#"{"offsetTable":{"T@G":{0:10,1:9},"U@G":{0:3}}}"#;
        assert_eq!(again.merge_max(master).unwrap(), 2);
        assert_eq!(again.query("G", "T", 0), Some(12));
        assert_eq!(again.query("G", "T", 1), Some(9));
        assert_eq!(again.query("G", "U", 0), Some(3));
        again.remove_topic("T");
        assert_eq!(again.query("G", "T", 0), None);
    }
}
