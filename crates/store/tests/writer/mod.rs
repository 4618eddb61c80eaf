//! What the crash and disk-full tests share about their child processes (`store-crash-writer`,
//! `store-disk-writer`): the store settings both sides use, starting a writer with its stdout
//! as a channel of whole lines, the acknowledgement line, and the check of one acknowledged
//! message in a reopened store.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use bytes::Bytes;
use store::{FlushDiskType, MessageExt, MessageStore, StoreConfig};

/// One acknowledged message as the writer printed it.
#[derive(Debug, Clone)]
pub struct Ack {
    pub phys: i64,
    pub queue: i32,
    pub qoff: i64,
    pub key: String,
}

/// `<commitlog offset> <queue id> <queue offset> <key>`; `None` for any other line.
pub fn parse_ack(line: &str) -> Option<Ack> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        [phys, queue, qoff, key] => Some(Ack {
            phys: phys.parse().ok()?,
            queue: queue.parse().ok()?,
            qoff: qoff.parse().ok()?,
            key: key.to_string(),
        }),
        _ => None,
    }
}

/// The settings the writers run with (see `src/bin/support`), for opening their store here.
pub fn config(dir: &Path, mode: &str, segment: u64, cq_units: u64) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_disk_type = if mode == "sync" {
        FlushDiskType::SyncFlush
    } else {
        FlushDiskType::AsyncFlush
    };
    c.mapped_file_size_commit_log = segment;
    c.mapped_file_size_consume_queue = cq_units * 20;
    c.max_hash_slot_num = 512;
    c.max_index_num = 2048;
    c
}

/// Starts the writer `bin` on `dir` and returns it with a channel of its stdout lines. A line
/// cut by a kill (no newline) ends the channel: it was never fully claimed.
pub fn spawn(
    bin: &str,
    dir: &Path,
    mode: &str,
    run: usize,
    segment: u64,
    cq_units: u64,
    stderr: Stdio,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin)
        .arg(dir)
        .args([
            mode,
            &run.to_string(),
            &segment.to_string(),
            &cq_units.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) if buf.last() != Some(&b'\n') => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (child, rx)
}

/// Checks that the acknowledged message `a` is readable at its CommitLog offset, intact (key,
/// queue, queue offset, body derived from the key); returns its record and decoded message.
pub fn check_acked(store: &MessageStore, a: &Ack) -> (Bytes, MessageExt) {
    let rec = store
        .message_by_offset(a.phys)
        .unwrap_or_else(|| panic!("acknowledged {a:?} not readable"));
    let m = MessageExt::decode(&rec).unwrap_or_else(|e| panic!("{a:?} damaged: {e}"));
    assert_eq!(m.property("KEYS"), Some(a.key.as_str()));
    assert_eq!((m.queue_id, m.queue_offset), (a.queue, a.qoff));
    assert!(
        m.body
            .iter()
            .zip(a.key.bytes().cycle())
            .all(|(x, y)| *x == y),
        "{a:?} body"
    );
    (rec, m)
}
