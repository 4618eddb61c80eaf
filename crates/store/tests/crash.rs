//! Crash tests: a child process (`store-crash-writer`) appends from four writers and prints
//! each acknowledged message; the test kills it with SIGKILL at random moments, restarts it
//! (which recovers the store), and checks that every acknowledged message is readable and
//! intact and that nothing past the recovered tail is served.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use store::{AcceptAll, GetMessageStatus, MessageExt, MessageStore, StoreConfig, StoreError};

const SEGMENT: u64 = 256 * 1024;
const CQ_UNITS: u64 = 100;
const QUEUES: i32 = 4;

mod writer;

use writer::{parse_ack, Ack};

fn config(dir: &Path, mode: &str) -> StoreConfig {
    let mut c = writer::config(dir, mode, SEGMENT, CQ_UNITS);
    c.disk_space_warning_level_ratio = 100;
    c
}

fn spawn_writer(dir: &Path, mode: &str, run: usize) -> (Child, mpsc::Receiver<String>) {
    writer::spawn(
        env!("CARGO_BIN_EXE_store-crash-writer"),
        dir,
        mode,
        run,
        SEGMENT,
        CQ_UNITS,
        Stdio::inherit(),
    )
}

/// Opens the store (recovering it) and checks every acknowledged message and the consistency
/// of every queue with the CommitLog.
fn verify(dir: &Path, mode: &str, acks: &[Ack]) {
    let store = MessageStore::open(config(dir, mode)).expect("recovery must succeed");
    let tail = store.commit_log_max_offset();
    for a in acks {
        assert!(
            a.phys < tail,
            "acknowledged {a:?} lies past the recovered tail {tail}"
        );
        let (rec, m) = writer::check_acked(&store, a);
        assert!(m.body.len() >= 40);
        let got = store.get_messages("CrashTopic", a.queue, a.qoff, 1, 1 << 20, &AcceptAll);
        assert_eq!(got.status, GetMessageStatus::Found, "{a:?}");
        assert_eq!(got.messages[0], rec);
    }
    // Every queue: offsets 0..max are contiguous, each unit points to an intact record of that
    // queue below the tail, and the next offset past the end is not served.
    let mut seen_phys = 0usize;
    for q in 0..QUEUES {
        let max = store.max_offset("CrashTopic", q);
        let mut off = store.min_offset("CrashTopic", q);
        while off < max {
            let got = store.get_messages("CrashTopic", q, off, 32, 1 << 20, &AcceptAll);
            assert_eq!(
                got.status,
                GetMessageStatus::Found,
                "queue {q} offset {off} of {max}"
            );
            for (rec, qoff) in got.messages.iter().zip(&got.message_queue_offsets) {
                let m = MessageExt::decode(rec).expect("served record intact");
                assert_eq!((m.queue_id, m.queue_offset), (q, *qoff));
                assert!(m.commit_log_offset < tail);
                seen_phys += 1;
            }
            off = got.next_begin_offset;
        }
        let past = store.get_messages("CrashTopic", q, max, 32, 1 << 20, &AcceptAll);
        assert!(past.messages.is_empty());
    }
    assert!(
        store.read_commit_log(tail, 1 << 20).is_none(),
        "bytes served past the tail"
    );
    assert!(seen_phys >= acks.len());
    store.shutdown().unwrap();
}

fn crash_cycles(mode: &str, cycles: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!("crash test {mode}: seed {seed}");
    let mut acks: Vec<Ack> = Vec::new();
    let started = Instant::now();
    for run in 0..cycles {
        // Under SYNC_FLUSH every other run also pre-writes zeros (warmMapedFileEnable).
        let child_mode = if mode == "sync" && run % 2 == 1 {
            "sync+warm"
        } else {
            mode
        };
        let (mut child, rx) = spawn_writer(dir.path(), child_mode, run);
        // Wait until the child has recovered and writes, then let it run a random while.
        let ready = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("writer did not start");
        assert!(ready.starts_with("ready"), "{ready}");
        let run_for = Duration::from_millis(rng.gen_range(5..120));
        let deadline = Instant::now() + run_for;
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(deadline - Instant::now()) {
                acks.push(parse_ack(&line).expect("an acknowledgement line"));
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acks.extend(
            rx.iter()
                .map(|l| parse_ack(&l).expect("an acknowledgement line")),
        );
        if run % 4 == 3 || run + 1 == cycles {
            verify(dir.path(), mode, &acks);
        }
    }
    // Offsets acknowledged within one queue are unique.
    let mut per_queue: HashMap<(i32, i64), &str> = HashMap::new();
    for a in &acks {
        assert!(
            per_queue.insert((a.queue, a.qoff), &a.key).is_none(),
            "duplicate offset {a:?}"
        );
    }
    println!(
        "crash test {mode}: {cycles} kills, {} acknowledged messages, {:?}",
        acks.len(),
        started.elapsed()
    );
    assert!(!acks.is_empty());
}

#[test]
fn sync_flush_survives_sigkill() {
    crash_cycles("sync", 24, rand::random());
}

#[test]
fn async_flush_recovers_consistently() {
    crash_cycles("async", 20, rand::random());
}

/// Damage to a record the checkpoint says was flushed is not a torn tail: the store refuses to
/// open with a typed error instead of cutting the log there.
#[test]
fn damage_below_the_flushed_offset_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut acks = Vec::new();
    // Run until the checkpoint vouches for data beyond the first segment.
    for run in 0..50 {
        let (mut child, rx) = spawn_writer(dir.path(), "sync", run);
        rx.recv_timeout(Duration::from_secs(20))
            .expect("writer did not start");
        let deadline = Instant::now() + Duration::from_millis(150);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(deadline - Instant::now()) {
                acks.push(parse_ack(&line).expect("an acknowledgement line"));
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        acks.extend(
            rx.iter()
                .map(|l| parse_ack(&l).expect("an acknowledgement line")),
        );
        let cp = std::fs::read(dir.path().join("checkpoint")).unwrap();
        let at = |i: usize| u64::from_be_bytes(cp[i..i + 8].try_into().unwrap());
        let (flushed, cq_safe, idx_safe) = (at(48), at(56), at(64));
        let scan_from = flushed.min(cq_safe).min(idx_safe);
        let seg_start = scan_from - scan_from % SEGMENT;
        // A record inside the recovery scan window and below the flushed offset.
        let victim = acks
            .iter()
            .filter(|a| (a.phys as u64) >= seg_start && (a.phys as u64) + 200 < flushed)
            .max_by_key(|a| a.phys);
        let Some(victim) = victim else { continue };
        let seg = victim.phys as u64 - victim.phys as u64 % SEGMENT;
        let path = dir.path().join("commitlog").join(format!("{seg:020}"));
        let mut bytes = std::fs::read(&path).unwrap();
        let body_at = (victim.phys as u64 - seg) as usize + 100; // inside the body
        bytes[body_at] ^= 0x5A;
        std::fs::write(&path, bytes).unwrap();
        match MessageStore::open(config(dir.path(), "sync")) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, victim.phys as u64),
            other => panic!("expected a Corrupt error, got {other:?}"),
        }
        return;
    }
    panic!("the checkpoint never covered a whole record");
}
