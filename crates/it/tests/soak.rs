//! Soak (`scripts/soak.sh`, not in CI): `SOAK_CYCLES` (default 100) kill -9 cycles of a master
//! broker under continuous sends, each followed by a check that every message it acknowledged
//! is there, at the queue offset it answered:
//! - `soak_sync_flush`: one master with `flushDiskType=SYNC_FLUSH`; after each SIGKILL it
//!   restarts (crash recovery) and must hold every acknowledged message;
//! - `soak_sync_master`: a `SYNC_MASTER` with a slave; after each SIGKILL the slave must hold
//!   every message the master acknowledged, then the master restarts and must hold them too.
//!
//! The brokers run as child processes (`it-broker`) with no shutdown path. A final pass reads
//! back every message acknowledged over all cycles. Prints one line per cycle.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use it::child::ChildBroker;
use it::{cluster_broker_config, namesrv_config, raw, raw_client, BrokerRole};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use remoting::ResponseCode;
use store::FlushDiskType;

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const TOPIC: &str = "TopicSoak";
const READER: &str = "GroupSoakCheck";
const QUEUES: i32 = 4;
/// Concurrent senders (each waits for its answer before the next send).
const SENDERS: usize = 4;
/// How long a replica may take to index what it has.
const WAIT: Duration = Duration::from_secs(20);

/// `(queue, offset)` -> body of every acknowledged message.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;

fn cycles() -> usize {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

/// Senders writing `c<cycle>-<sender>-<n>` to `broker` until `stop`, recording what was
/// acknowledged (SUCCESS) in `acked`.
fn start_senders(
    broker: String,
    cycle: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..SENDERS)
        .map(|s| {
            let (broker, acked, stop, sent) =
                (broker.clone(), acked.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let client = raw_client();
                let mut n = 0;
                while !stop.load(Ordering::Acquire) {
                    let body = format!("c{cycle}-{s}-{n}");
                    let queue = (n % QUEUES as usize) as i32;
                    let r =
                        raw::try_send_with(&client, &broker, TOPIC, queue, body.as_bytes(), &[])
                            .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = r.ok().filter(|r| r.code == ResponseCode::SUCCESS) {
                        let offset: i64 = r
                            .ext("queueOffset")
                            .and_then(|o| o.parse().ok())
                            .expect("a SUCCESS send names its queue offset");
                        acked.lock().insert((queue, offset), body);
                    } else {
                        // Refused or unanswered (the master is gone, or SLAVE_NOT_AVAILABLE).
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    n += 1;
                }
                client.shutdown().await;
            })
        })
        .collect()
}

/// Waits until every message of `acked` is on `broker` at its queue offset; panics naming
/// the first missing ones after [`WAIT`].
async fn assert_holds(what: &str, broker: &str, acked: &BTreeMap<(i32, i64), String>) {
    let client = raw_client();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut missing = Vec::new();
        for q in 0..QUEUES {
            let want: Vec<(&i64, &String)> = acked
                .iter()
                .filter(|((queue, _), _)| *queue == q)
                .map(|((_, o), b)| (o, b))
                .collect();
            let Some((first, _)) = want.first() else {
                continue;
            };
            let mut on = BTreeMap::new();
            let mut offset = **first;
            let last = *want.last().map(|(o, _)| *o).unwrap_or(first);
            while offset <= last {
                let got = raw::pull(&client, broker, READER, TOPIC, q, offset).await;
                let Some(end) = got.last().map(|m| m.queue_offset) else {
                    break;
                };
                for m in got {
                    on.insert(
                        m.queue_offset,
                        String::from_utf8_lossy(&m.message.body).into_owned(),
                    );
                }
                offset = end + 1;
            }
            missing.extend(
                want.iter()
                    .filter(|(o, b)| on.get(*o) != Some(*b))
                    .map(|(o, b)| format!("{q}@{o}={b}")),
            );
        }
        if missing.is_empty() {
            client.shutdown().await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} acknowledged messages are not on {broker}: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn soak(sync_master: bool) {
    let cycles = cycles();
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let exe = Path::new(IT_BROKER);
    let cfg = |id: i64, role: BrokerRole| {
        let mut c = cluster_broker_config(ns.local_addr(), dir.path(), ("soak", id, role), "1s");
        if !sync_master {
            c.flush_disk_type = FlushDiskType::SyncFlush;
        }
        c
    };
    let master_role = if sync_master {
        BrokerRole::SyncMaster
    } else {
        BrokerRole::AsyncMaster
    };
    let mut master = ChildBroker::start(exe, cfg(0, master_role));
    let slave = sync_master.then(|| ChildBroker::start(exe, cfg(1, BrokerRole::Slave)));
    let client = raw_client();
    raw::create_topic(&client, &master.addr, TOPIC, QUEUES).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x50a6);
    let all: Acked = Arc::default();
    let started = Instant::now();
    for cycle in 0..cycles {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let senders = start_senders(
            master.addr.clone(),
            cycle,
            acked.clone(),
            stop.clone(),
            sent.clone(),
        );
        // Kill at a random moment once this cycle's sends are flowing.
        let load = Duration::from_millis(rng.gen_range(100..400));
        let flowing = Instant::now();
        while acked.lock().len() < 20 && flowing.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(load).await;
        master.sigkill();
        stop.store(true, Ordering::Release);
        for s in senders {
            s.await.unwrap();
        }
        let cycle_acked = acked.lock().clone();
        assert!(
            !cycle_acked.is_empty(),
            "cycle {cycle}: nothing was acknowledged"
        );
        if let Some(slave) = &slave {
            assert_holds(&format!("cycle {cycle}, slave"), &slave.addr, &cycle_acked).await;
        }
        master.restart();
        assert_holds(
            &format!("cycle {cycle}, restarted master"),
            &master.addr,
            &cycle_acked,
        )
        .await;
        println!(
            "cycle {cycle}: {} sent, {} acknowledged, all there after the kill ({:.1?} so far)",
            sent.load(Ordering::Relaxed),
            cycle_acked.len(),
            started.elapsed()
        );
        all.lock().extend(cycle_acked);
    }
    let all = all.lock().clone();
    assert_holds("all cycles, master", &master.addr, &all).await;
    if let Some(slave) = &slave {
        assert_holds("all cycles, slave", &slave.addr, &all).await;
    }
    println!(
        "soak ({}): {cycles} SIGKILL cycles, {} acknowledged messages, none lost, in {:.1?}",
        if sync_master {
            "SYNC_MASTER"
        } else {
            "SYNC_FLUSH"
        },
        all.len(),
        started.elapsed()
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: scripts/soak.sh runs it"]
async fn soak_sync_flush() {
    soak(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: scripts/soak.sh runs it"]
async fn soak_sync_master() {
    soak(true).await;
}
