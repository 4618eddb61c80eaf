//! [`KvConfigManager`]: the NameServer's namespaced key-value configuration (upstream
//! `KVConfigManager`), kept in memory and persisted to one JSON file,
//! `{"configTable":{"<namespace>":{"<key>":"<value>"}}}`, rewritten on every change through a
//! temporary file of its own and a rename, so a crash leaves either the old or the new file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
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
    /// Held while a change is applied and persisted, so the file follows the order of changes.
    table: Mutex<ConfigTable>,
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
            table: Mutex::new(table),
        })
    }

    /// Sets `namespace`/`key` to `value` and persists.
    pub fn put(&self, namespace: &str, key: &str, value: &str) -> Result<(), NamesrvError> {
        let mut table = self.table.lock();
        let previous = table
            .entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        tracing::info!(%namespace, %key, %value, updated = previous.is_some(), "KV config put");
        self.persist(&table)
    }

    /// Removes `namespace`/`key` (if present) and persists.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), NamesrvError> {
        let mut table = self.table.lock();
        let removed = table.get_mut(namespace).and_then(|ns| ns.remove(key));
        tracing::info!(%namespace, %key, ?removed, "KV config delete");
        self.persist(&table)
    }

    /// Value of `namespace`/`key`.
    pub fn get(&self, namespace: &str, key: &str) -> Option<String> {
        self.table.lock().get(namespace)?.get(key).cloned()
    }

    /// Whole table of `namespace`, `None` when the namespace was never written.
    pub fn namespace(&self, namespace: &str) -> Option<KVTable> {
        let table = self.table.lock().get(namespace)?.clone();
        Some(KVTable { table })
    }

    fn persist(&self, table: &ConfigTable) -> Result<(), NamesrvError> {
        let failed = |e: &dyn std::fmt::Display| NamesrvError::KvConfig {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let file = KvConfigFile {
            config_table: table.clone(),
        };
        let json = to_fastjson(&file, KeyStyle::Quoted).map_err(|e| failed(&e))?;
        write_atomically(&self.path, &json).map_err(|e| failed(&e))
    }
}

/// Distinguishes the temporary files of this process's writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a temporary file no other write uses (`<path>.tmp.<pid>.<n>`), syncs it,
/// renames it over `path` and syncs the directory: durable when it returns `Ok`, and writes
/// racing on one path (two managers of one file) never tear it or fail. The broker's
/// `persist::write_atomic` does the same; the two crates share no crate whose job is files.
/// Blocks on the disk.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the file may not even have been created.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
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

    /// Two managers of one file writing at once: every write succeeds and the file is always
    /// one whole table. Fails with one fixed temporary name (a rename finds its temporary file
    /// renamed away by the other writer, or renames a truncated one).
    #[test]
    fn concurrent_writers_of_one_file_never_fail_or_tear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvConfig.json");
        let big = "v".repeat(16 * 1024);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut torn = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(bytes) = fs::read(&path) {
                        torn += usize::from(from_fastjson::<KvConfigFile>(&bytes).is_err());
                    }
                }
                torn
            });
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let (path, big) = (&path, &big);
                    s.spawn(move || {
                        let kv = KvConfigManager::load(path).unwrap();
                        (0..40)
                            .filter_map(|i| kv.put("ns", &format!("k{w}_{i}"), big).err())
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let errors: Vec<String> = writers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect();
            stop.store(true, Ordering::Relaxed);
            assert!(
                errors.is_empty(),
                "{} concurrent writes failed, first: {:?}",
                errors.len(),
                errors.first()
            );
            assert_eq!(reader.join().unwrap(), 0, "a reader saw a torn file");
        });
        assert!(KvConfigManager::load(&path).is_ok());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
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
