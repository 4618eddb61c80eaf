//! [`KvConfigManager`]: the NameServer's namespaced key-value configuration (upstream
//! `KVConfigManager`), kept in memory and persisted to one JSON file,
//! `{"configTable":{"<namespace>":{"<key>":"<value>"}}}`, rewritten on every change through a
//! temporary file of its own and a rename ([`durable::write_atomic`]), so a crash leaves either
//! the old or the new file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use remoting::protocol::{from_fastjson, to_fastjson, KVTable, KeyStyle};
use serde::{Deserialize, Serialize};

use crate::error::NamesrvError;

type ConfigTable = BTreeMap<String, BTreeMap<String, String>>;

/// The persisted file's shape (upstream `KVConfigSerializeWrapper`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct KvConfigFile {
    config_table: ConfigTable,
}

/// Namespaced KV configuration backed by a file.
#[derive(Debug)]
pub struct KvConfigManager {
    path: PathBuf,
    table: RwLock<ConfigTable>,
    /// Held by a change from its update of the table until its file is written, so the file
    /// follows the order of changes; readers (route lookups read the order-topic namespace)
    /// never wait for the disk, only for the update itself.
    writer: Mutex<()>,
}

impl KvConfigManager {
    /// Loads `path`; a missing file is an empty table, an unreadable or malformed one an error
    /// (starting empty would overwrite it on the next change).
    pub fn load(path: &Path) -> Result<KvConfigManager, NamesrvError> {
        let table = match fs::read(path) {
            Ok(bytes) => {
                let file: KvConfigFile =
                    from_fastjson(&bytes).map_err(|e| NamesrvError::KvConfig {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                tracing::info!(path = %path.display(), namespaces = file.config_table.len(), "KV config loaded");
                file.config_table
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigTable::new(),
            Err(e) => {
                return Err(NamesrvError::KvConfig {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(KvConfigManager {
            path: path.to_path_buf(),
            table: RwLock::new(table),
            writer: Mutex::new(()),
        })
    }

    /// Sets `namespace`/`key` to `value` and persists.
    pub fn put(&self, namespace: &str, key: &str, value: &str) -> Result<(), NamesrvError> {
        let _writing = self.writer.lock();
        let snapshot = {
            let mut table = self.table.write();
            let previous = table
                .entry(namespace.to_string())
                .or_default()
                .insert(key.to_string(), value.to_string());
            tracing::info!(%namespace, %key, %value, updated = previous.is_some(), "KV config put");
            table.clone()
        };
        self.persist(snapshot)
    }

    /// Removes `namespace`/`key` (if present) and persists.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), NamesrvError> {
        let _writing = self.writer.lock();
        let snapshot = {
            let mut table = self.table.write();
            let removed = table.get_mut(namespace).and_then(|ns| ns.remove(key));
            tracing::info!(%namespace, %key, ?removed, "KV config delete");
            table.clone()
        };
        self.persist(snapshot)
    }

    /// Value of `namespace`/`key`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<String> {
        self.table.read().get(namespace)?.get(key).cloned()
    }

    /// Whole table of `namespace`, `None` when the namespace was never written.
    pub fn namespace(&self, namespace: &str) -> Option<KVTable> {
        let table = self.table.read().get(namespace)?.clone();
        Some(KVTable { table })
    }

    /// Writes `table` to the file (caller holds `writer`).
    fn persist(&self, table: ConfigTable) -> Result<(), NamesrvError> {
        let failed = |e: &dyn std::fmt::Display| NamesrvError::KvConfig {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let file = KvConfigFile {
            config_table: table,
        };
        let json = to_fastjson(&file, KeyStyle::Quoted).map_err(|e| failed(&e))?;
        durable::write_atomic(&self.path, &json).map_err(|e| failed(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("kvConfig.json");
        let kv = KvConfigManager::load(&path).unwrap();
        kv.put("ORDER_TOPIC_CONFIG", "T", "b1:4").unwrap();
        kv.put("ns", "k", "v").unwrap();
        kv.delete("ns", "k").unwrap();
        kv.delete("nope", "k").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"configTable":{"ORDER_TOPIC_CONFIG":{"T":"b1:4"},"ns":{}}}"#
        );
        let again = KvConfigManager::load(&path).unwrap();
        assert_eq!(
            again.get("ORDER_TOPIC_CONFIG", "T").as_deref(),
            Some("b1:4")
        );
        assert_eq!(again.namespace("ns").unwrap().table.len(), 0);
        assert!(again.namespace("missing").is_none());
    }

    #[test]
    fn malformed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvConfig.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            KvConfigManager::load(&path),
            Err(NamesrvError::KvConfig { .. })
        ));
    }
}
