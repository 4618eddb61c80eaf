//! Child process of the disk-full tests: opens a store on a (small, nearly full) file system
//! and appends from one writer forever, printing one line per acknowledged message
//! (`<commitlog offset> <queue id> <queue offset> <key>`, as `store-crash-writer`) and
//! `refused <error>` once each time writes start being refused. A refused write is retried
//! after a short pause, so the test sees writes resume by themselves once space returns.
//!
//! Usage: `store-disk-writer <dir> <sync|async> <run id> <segment bytes> <cq units>`.
//! If the store cannot be opened the error goes to stderr and the exit code is 2; a SIGBUS
//! shows up as a death by signal, which the tests treat as a failure.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use store::message::encode_properties;
use store::{FlushDiskType, MessageInner, MessageStore, PutStatus, StoreConfig};

/// Body of the message with `key`: the key repeated to a length that depends on it (the same
/// rule as `store-crash-writer`, so the tests' checks apply to both).
fn body_for(key: &str) -> Vec<u8> {
    let len = 40 + (store::message::java_hash_code(key).unsigned_abs() as usize % 900);
    key.bytes().cycle().take(len).collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: store-disk-writer <dir> <sync|async> <run id> <segment bytes> <cq units>");
    }
    let mut config = StoreConfig::new(&args[1]);
    config.flush_disk_type = match args[2].as_str() {
        "sync" => FlushDiskType::SyncFlush,
        "async" => FlushDiskType::AsyncFlush,
        other => bail!("bad flush mode {other}"),
    };
    let run = args[3].clone();
    config.mapped_file_size_commit_log = args[4].parse().context("segment bytes")?;
    config.mapped_file_size_consume_queue = args[5].parse::<u64>().context("cq units")? * 20;
    config.flush_interval_commit_log = 20;
    config.flush_interval_consume_queue = 20;
    config.max_hash_slot_num = 512;
    config.max_index_num = 2048;
    // Only ENOSPC stops writes here: no ratio-based refusal and no retention deletes.
    config.disk_max_used_space_ratio = 100;
    config.disk_space_clean_forcibly_ratio = 100;
    config.disk_space_warning_level_ratio = 100;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = match MessageStore::open(config) {
            Ok(store) => store,
            Err(e) => {
                eprintln!("store-disk-writer: cannot open the store: {e}");
                std::process::exit(2);
            }
        };
        println!("ready {}", store.commit_log_max_offset());
        let mut refusing = false;
        let mut n = 0u64;
        loop {
            let q = (n % 2) as i32;
            let key = format!("r{run}-q{q}-{n}");
            let mut msg = MessageInner::new("CrashTopic", q, body_for(&key));
            msg.properties = encode_properties([("KEYS", key.as_str())]);
            msg.store_host = "127.0.0.1:10911".parse()?;
            msg.born_timestamp = n as i64;
            let line = match store.put_message(msg).await {
                Ok(put) if put.status == PutStatus::PutOk => {
                    refusing = false;
                    n += 1;
                    format!("{} {} {} {}\n", put.wrote_offset, q, put.queue_offset, key)
                }
                Ok(put) => format!("status {:?}\n", put.status),
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if refusing {
                        continue;
                    }
                    refusing = true;
                    format!("refused {e}\n")
                }
            };
            std::io::stdout().lock().write_all(line.as_bytes())?;
        }
    })
}
