//! Child process of the disk-full tests: opens a store on a (small, nearly full) file system
//! and appends from one writer forever, printing one line per acknowledged message
//! (`<commitlog offset> <queue id> <queue offset> <key>`, as `store-crash-writer`) and
//! `refused <error>` once each time writes start being refused. A refused write is retried
//! after a short pause, so the test sees writes resume by themselves once space returns.
//!
//! Usage: `store-disk-writer <dir> <sync|async> <run id> <segment bytes> <cq units>`
//! (as `store-crash-writer`; see `support::config_from_args`).
//! If the store cannot be opened the error goes to stderr and the exit code is 2; a SIGBUS
//! shows up as a death by signal, which the tests treat as a failure.

mod support;

use std::io::Write;
use std::time::Duration;

use store::{MessageStore, PutStatus};

fn main() -> anyhow::Result<()> {
    let (mut config, run) = support::config_from_args("store-disk-writer")?;
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
            let msg = support::message(q, n, &key, &[])?;
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
