//! What the store's test child processes (`store-crash-writer`, `store-disk-writer`) share:
//! their command line, the store settings it selects, and the body rule the tests check.

use anyhow::{bail, Context};
use store::{FlushDiskType, MessageInner, StoreConfig};

/// Parses `<dir> <sync|sync+warm|async> <run id> <segment bytes> <cq units>` (`sync+warm`:
/// `SYNC_FLUSH` with `warmMapedFileEnable`) into small-file store settings with short flush
/// intervals, and the run id; `usage` names the program in the error.
pub fn config_from_args(usage: &str) -> anyhow::Result<(StoreConfig, String)> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: {usage} <dir> <sync|sync+warm|async> <run id> <segment bytes> <cq units>");
    }
    let mut config = StoreConfig::new(&args[1]);
    config.flush_disk_type = match args[2].as_str() {
        "sync" | "sync+warm" => FlushDiskType::SyncFlush,
        "async" => FlushDiskType::AsyncFlush,
        other => bail!("bad flush mode {other}"),
    };
    config.warm_mapped_file_enable = args[2] == "sync+warm";
    config.mapped_file_size_commit_log = args[4].parse().context("segment bytes")?;
    config.mapped_file_size_consume_queue = args[5].parse::<u64>().context("cq units")? * 20;
    config.flush_interval_commit_log = 20;
    config.flush_interval_consume_queue = 20;
    config.max_hash_slot_num = 512;
    config.max_index_num = 2048;
    Ok((config, args[3].clone()))
}

/// Body of the message with `key`: the key repeated to a length that depends on it, so a
/// reader can check it is intact.
pub fn body_for(key: &str) -> Vec<u8> {
    let len = 40 + (store::message::java_hash_code(key).unsigned_abs() as usize % 900);
    key.bytes().cycle().take(len).collect()
}

/// Message `n` of queue `q` with `key` (in `KEYS`) and extra properties, as the tests read it
/// back.
pub fn message(q: i32, n: u64, key: &str, extra: &[(&str, &str)]) -> anyhow::Result<MessageInner> {
    let mut msg = MessageInner::new("CrashTopic", q, body_for(key));
    let props = std::iter::once(("KEYS", key)).chain(extra.iter().copied());
    msg.properties = store::message::encode_properties(props);
    msg.store_host = "127.0.0.1:10911".parse()?;
    msg.born_timestamp = n as i64;
    Ok(msg)
}
