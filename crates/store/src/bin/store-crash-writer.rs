//! Child process of the crash tests: opens a store (recovering it), then appends from four
//! concurrent writers until it is killed, printing one line per acknowledged message:
//! `<commitlog offset> <queue id> <queue offset> <key>`.
//!
//! Usage: `store-crash-writer <dir> <sync|sync+warm|async> <run id> <segment bytes> <cq units>`
//! (`sync+warm`: `SYNC_FLUSH` with `warmMapedFileEnable`).
//! The body of each message is derived from its key (see `body_for`), so a reader can check
//! it is intact.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use store::message::encode_properties;
use store::{FlushDiskType, MessageInner, MessageStore, PutStatus, StoreConfig};

/// Body of the message with `key`: the key repeated to a length that depends on it.
fn body_for(key: &str) -> Vec<u8> {
    let len = 40 + (store::message::java_hash_code(key).unsigned_abs() as usize % 900);
    key.bytes().cycle().take(len).collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        bail!("usage: store-crash-writer <dir> <sync|sync+warm|async> <run id> <segment bytes> <cq units>");
    }
    let mut config = StoreConfig::new(&args[1]);
    config.flush_disk_type = match args[2].as_str() {
        "sync" | "sync+warm" => FlushDiskType::SyncFlush,
        "async" => FlushDiskType::AsyncFlush,
        other => bail!("bad flush mode {other}"),
    };
    config.warm_mapped_file_enable = args[2] == "sync+warm";
    let run = args[3].clone();
    config.mapped_file_size_commit_log = args[4].parse().context("segment bytes")?;
    config.mapped_file_size_consume_queue = args[5].parse::<u64>().context("cq units")? * 20;
    config.flush_interval_commit_log = 20;
    config.flush_interval_consume_queue = 20;
    config.flush_consume_queue_thorough_interval = 100;
    config.max_hash_slot_num = 512;
    config.max_index_num = 2048;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = MessageStore::open(config)?;
        println!("ready {}", store.commit_log_max_offset());
        let mut tasks = Vec::new();
        for q in 0..4 {
            let store = store.clone();
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let key = format!("r{run}-q{q}-{n}");
                    let mut msg = MessageInner::new("CrashTopic", q, body_for(&key));
                    let tag = format!("tag{}", n % 3);
                    msg.properties =
                        encode_properties([("KEYS", key.as_str()), ("TAGS", tag.as_str())]);
                    msg.store_host = "127.0.0.1:10911".parse()?;
                    msg.born_timestamp = n as i64;
                    let put = store.put_message(msg).await?;
                    if put.status == PutStatus::PutOk {
                        let line =
                            format!("{} {} {} {}\n", put.wrote_offset, q, put.queue_offset, key);
                        std::io::stdout().lock().write_all(line.as_bytes())?;
                    }
                    if n % 64 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })
}
