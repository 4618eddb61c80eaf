//! Child process of the crash tests: opens a store (recovering it), then appends from four
//! concurrent writers until it is killed, printing one line per acknowledged message:
//! `<commitlog offset> <queue id> <queue offset> <key>`.
//!
//! Usage: `store-crash-writer <dir> <sync|sync+warm|async> <run id> <segment bytes> <cq units>`
//! (`sync+warm`: `SYNC_FLUSH` with `warmMapedFileEnable`).
//! The body of each message is derived from its key (see `support::body_for`), so a reader
//! can check it is intact.

mod support;

use std::io::Write;
use std::time::Duration;

use store::{MessageStore, PutStatus};

fn main() -> anyhow::Result<()> {
    let (mut config, run) = support::config_from_args("store-crash-writer")?;
    config.flush_consume_queue_thorough_interval = 100;

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
                    let tag = format!("tag{}", n % 3);
                    let msg = support::message(q, n, &key, &[("TAGS", tag.as_str())])?;
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
