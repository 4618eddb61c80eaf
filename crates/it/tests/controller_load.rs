//! Controller mode under load, with real crashes: three controllers (`it-controller`), group
//! `b1` with three replicas in controller mode (`allAckInSyncStateSet=true`) and group `b2` (a
//! plain master), every one its own process (`it-broker`); an in-process NameServer.
//! Apogee's producer sends continuously, one message at a time, and a push consumer consumes
//! with every 3rd message failing once on first delivery.
//!
//! [`sigkilled_masters_under_load`] SIGKILLs the current master of `b1` `CONTROLLER_KILLS`
//! times (default [`CI_KILLS`]; `scripts/controller-kills.sh N` runs N). Before each kill the
//! whole group is in the SyncStateSet and the producer has had a seeded random number of
//! further sends acknowledged by `b1` (the seed is `CONTROLLER_KILLS_SEED`, else random; it is
//! printed). Asserted after each kill, each wait bounded:
//! - the controllers elect another replica, and the producer's sends reach it: a send started
//!   after the kill is acknowledged by `b1` (the time from the SIGKILL to that answer is the
//!   failover time);
//! - the killed master, restarted on its store, cuts what its CommitLog holds past the new
//!   epoch's start offset (the log line is awaited whenever it held more), refuses sends,
//!   rejoins the SyncStateSet, and its CommitLog is byte-identical with the new master's up
//!   to its own end, which passes the new epoch's start offset;
//! - every acknowledged message is consumed, every message failed on first delivery was
//!   redelivered with its retry properties;
//! - no broker request code reached the NameServer.
//!
//! Each kill prints a row: failover time, whether the controllers elected, how long the
//! restarted replica took from its start to rejoining the SyncStateSet, the bytes it cut,
//! sends that failed (after the producer's retries) between the kill and the failover, and
//! the duplicate consumptions the kill added. The run ends with the table, the median and
//! the maximum failover time.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{Producer, ProducerConfig};
use common::client_config;
use common::failover::{init_tracing, send_acked, wait_topic_on, Acked, Log};
use it::{cluster_broker_config, namesrv_config, raw, raw_client, scan_commit_log, wait_until};
use it::{BrokerRole, ChildBroker, ChildController};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remoting::client::RemotingClient;
use remoting::controller_headers::{
    GetReplicaInfoRequestHeader, GetReplicaInfoResponseHeader, SyncStateSet,
};
use remoting::headers::CommandHeader;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use tokio::task::JoinHandle;

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const IT_CONTROLLER: &str = env!("CARGO_BIN_EXE_it-controller");

const TOPIC: &str = "TopicCtlLoad";
const GROUP: &str = "GroupCtlLoad";
const QUEUES: i32 = 4;
/// The replica ids of `b1`.
const REPLICAS: [i64; 3] = [1, 2, 3];
/// Kills of a normal `cargo test` run.
const CI_KILLS: usize = 2;
/// Each wait for an event of the scenario.
const WAIT: Duration = Duration::from_secs(15);
/// Broker heartbeats are counted lost after this long (sent in each heartbeat).
const HEARTBEAT_TIMEOUT_MS: u64 = 1_000;
/// Short delay levels keep the consumer's retries quick (level 3 = its first retry).
const DELAY_LEVELS: &str = "100ms 100ms 100ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms \
                            200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms";
/// The log line of a slave that cuts its CommitLog to where it agrees with its master.
const CUT_LOG: &str = "diverged from its master's: cutting it";

/// Ports free now (each controller's address must be in every peer list before it starts).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// The three controllers, stores under `dir`.
fn start_controllers(dir: &Path) -> Vec<ChildController> {
    let ports = free_ports(3);
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("n{i}-127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(";");
    (0..ports.len())
        .map(|i| {
            let conf = format!(
                "controllerDLegerGroup=it\ncontrollerDLegerPeers={peers}\n\
                 controllerDLegerSelfId=n{i}\ncontrollerStorePath={}\n\
                 scanNotActiveBrokerInterval=100\nraftHeartbeatIntervalMillis=50\n\
                 metricsExporterType=DISABLE\n",
                dir.join(format!("controller-{i}")).display()
            );
            ChildController::start(
                Path::new(IT_CONTROLLER),
                &dir.join(format!("controller-{i}.conf")),
                &conf,
            )
        })
        .collect()
}

/// What the controllers say of `b1`.
#[derive(Debug, Default, Clone)]
struct Replicas {
    master: Option<i64>,
    sync_state_set: BTreeSet<i64>,
}

/// CONTROLLER_GET_REPLICA_INFO of `b1`, from the first controller that answers it (a
/// follower may refuse it); empty when none does.
async fn replicas(client: &RemotingClient, controllers: &[String]) -> Replicas {
    for c in controllers {
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_GET_REPLICA_INFO);
        GetReplicaInfoRequestHeader {
            broker_name: "b1".into(),
        }
        .write_to(&mut req);
        let addr = BrokerAddr::parse(c).expect("controller addr");
        let Ok(resp) = client.invoke(&addr, req, Duration::from_secs(1)).await else {
            continue;
        };
        if resp.code != ResponseCode::SUCCESS {
            continue;
        }
        let h = GetReplicaInfoResponseHeader::from_command(&resp).expect("replica info header");
        let set: SyncStateSet = serde_json::from_slice(&resp.body).unwrap_or_default();
        return Replicas {
            master: h.master_broker_id,
            sync_state_set: set.sync_state_set,
        };
    }
    Replicas::default()
}

/// The complete records of `broker`'s CommitLog (its first segment; the run stays within it).
fn commit_log(broker: &ChildBroker) -> Vec<u8> {
    let dir = broker.config().store_path_root_dir.join("commitlog");
    assert!(
        !dir.join(format!(
            "{:020}",
            broker.config().mapped_file_size_commit_log
        ))
        .exists(),
        "the run outgrew the first CommitLog segment; send less"
    );
    let mut bytes = std::fs::read(dir.join(format!("{:020}", 0))).unwrap_or_default();
    let (_, end) = scan_commit_log(&bytes);
    bytes.truncate(end);
    bytes
}

/// The start offset of the last epoch in `broker`'s epoch file.
fn last_epoch_start(broker: &ChildBroker) -> i64 {
    let text = std::fs::read_to_string(
        broker
            .config()
            .store_path_root_dir
            .join("epochFileCheckpoint"),
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('-'))
        .filter_map(|(_, start)| start.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// One send of the load: when it started and ended, and where it was stored if acknowledged.
struct Sent {
    started: Instant,
    ended: Instant,
    acked: Option<Acked>,
}

/// Sends `k0`, `k1`, ... one at a time until `stop` is set.
fn produce(p: Arc<Producer>, sent: Arc<Mutex<Vec<Sent>>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0usize;
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            let acked = send_acked(&p, TOPIC, format!("k{i}")).await;
            sent.lock().push(Sent {
                started,
                ended: Instant::now(),
                acked,
            });
            i += 1;
            // A few hundred messages a second: load, without flooding a 2-core machine.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

/// A push consumer of the topic that fails every 3rd message on its first delivery.
async fn start_consumer(ns: std::net::SocketAddr, log: Arc<Mutex<Log>>) -> PushConsumer {
    let config = PushConsumerConfig::new(GROUP)
        .consume_thread_max(4)
        .rebalance_interval(Duration::from_millis(500));
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        let mut log = log.lock();
        let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
        for m in msgs {
            if !log.deliver(m, true) {
                status = ConsumeConcurrentlyStatus::ReconsumeLater;
            }
        }
        status
    });
    PushConsumer::start(
        client_config(ns, Duration::from_millis(200), "consumer"),
        config,
        &[(TOPIC, "*")],
        listener,
    )
    .await
    .unwrap()
}

/// Waits until every key of `acked` was consumed successfully and every one of them that
/// failed was redelivered (the load goes on: keys sent later may still wait for their
/// retry); on timeout names what is missing, and the missing ones of `b1` that are not where
/// they were acknowledged on the replicas at `b1_addrs`, and the group's committed offsets
/// of their queues there.
async fn wait_all_consumed(what: &str, log: &Mutex<Log>, acked: &[Acked], b1_addrs: &[String]) {
    let deadline = Instant::now() + WAIT;
    let keys: HashSet<&String> = acked.iter().map(|a| &a.key).collect();
    loop {
        let (missing, not_redelivered, bad) = {
            let l = log.lock();
            let missing: Vec<&Acked> = acked
                .iter()
                .filter(|a| !l.ok.contains_key(&a.key))
                .collect();
            let not_redelivered: Vec<&String> = l
                .failed
                .iter()
                .filter(|k| keys.contains(k) && !l.redelivered_ok.contains(*k))
                .collect();
            (
                format!("{missing:?}"),
                format!("{not_redelivered:?}"),
                l.bad.clone(),
            )
        };
        assert!(bad.is_empty(), "{what}: {bad:?}");
        if missing == "[]" && not_redelivered == "[]" {
            return;
        }
        if Instant::now() >= deadline {
            let raw = raw_client();
            let mut where_ = Vec::new();
            for a in acked
                .iter()
                .filter(|a| a.broker == "b1" && !log.lock().ok.contains_key(&a.key))
            {
                for addr in b1_addrs {
                    let held = raw::pull_all(&raw, addr, ("GroupCtlLoadCheck", TOPIC), a.queue)
                        .await
                        .into_iter()
                        .any(|m| {
                            m.queue_offset == a.offset && m.message.body[..] == *a.key.as_bytes()
                        });
                    let committed = it::committed_offset(&raw, addr, GROUP, TOPIC, a.queue).await;
                    where_.push(format!(
                        "{} on {addr}: held {held}, committed offset {committed:?}",
                        a.key
                    ));
                }
            }
            panic!(
                "{what}: timed out; acknowledged not consumed: {missing}; failed not \
                 redelivered: {not_redelivered}; {where_:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn duplicates(log: &Mutex<Log>) -> usize {
    log.lock()
        .ok
        .values()
        .map(|n| (*n as usize).saturating_sub(1))
        .sum()
}

/// What one kill measured.
struct Row {
    killed: i64,
    elected: Option<i64>,
    failover: Option<Duration>,
    rejoin: Option<Duration>,
    cut: i64,
    failed_sends: usize,
    duplicates: usize,
}

/// The median of sorted `times` (the mean of the middle two for an even count).
fn median(times: &[Duration]) -> Option<Duration> {
    let n = times.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(times[n / 2]),
        _ => Some((times[n / 2 - 1] + times[n / 2]) / 2),
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "kill | killed id | elected id | failover ms | rejoin ms | cut bytes | failed sends | duplicates\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>4} | {:>9} | {:>10} | {:>11} | {:>9} | {:>9} | {:>12} | {:>10}",
            i + 1,
            r.killed,
            r.elected.map_or("NONE".into(), |e| e.to_string()),
            ms(r.failover),
            ms(r.rejoin),
            r.cut,
            r.failed_sends,
            r.duplicates
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_masters_under_load() {
    init_tracing();
    let kills: usize = std::env::var("CONTROLLER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_KILLS);
    let seed: u64 = std::env::var("CONTROLLER_KILLS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CONTROLLER_KILLS_SEED={seed} CONTROLLER_KILLS={kills}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let nsa = ns.local_addr();
    let ctls = start_controllers(dir.path());
    let ctl_addrs: Vec<String> = ctls.iter().map(|c| c.addr.clone()).collect();
    let raw = raw_client();
    let exe = Path::new(IT_BROKER);
    let replica_config = |n: i64| {
        let mut c = cluster_broker_config(
            nsa,
            dir.path(),
            ("b1", n, BrokerRole::SyncMaster),
            DELAY_LEVELS,
        );
        c.enable_controller_mode = true;
        c.controller_addr = ctl_addrs.join(";");
        c.all_ack_in_sync_state_set = true;
        c.broker_heartbeat_interval = 100;
        c.controller_heart_beat_timeout_mills = HEARTBEAT_TIMEOUT_MS;
        c.ha_send_heartbeat_interval = 100;
        c.sync_broker_metadata_period = 1_000;
        c.sync_controller_metadata_period = 2_000;
        c.check_sync_state_set_period = 200;
        c.slave_synchronize_interval = 300;
        c
    };

    // b1: the first replica is elected, the other two join the SyncStateSet; b2 a plain master.
    let mut b1: BTreeMap<i64, ChildBroker> = BTreeMap::new();
    b1.insert(1, ChildBroker::start(exe, replica_config(1)));
    wait_until("the first replica elected master", WAIT, || async {
        replicas(&raw, &ctl_addrs).await.master == Some(1)
    })
    .await;
    for n in &REPLICAS[1..] {
        b1.insert(*n, ChildBroker::start(exe, replica_config(*n)));
    }
    let all = BTreeSet::from(REPLICAS);
    wait_until("the whole group in the SyncStateSet", WAIT, || async {
        replicas(&raw, &ctl_addrs).await.sync_state_set == all
    })
    .await;
    let b2 = ChildBroker::start(
        exe,
        cluster_broker_config(
            nsa,
            dir.path(),
            ("b2", 0, BrokerRole::AsyncMaster),
            DELAY_LEVELS,
        ),
    );
    raw::create_topic(&raw, &b1[&1].addr, TOPIC, QUEUES).await;
    raw::create_topic(&raw, &b2.addr, TOPIC, QUEUES).await;
    wait_topic_on(nsa, TOPIC, &["b1", "b2"], WAIT).await;

    let producer = Arc::new(
        Producer::start(
            client_config(nsa, Duration::from_millis(200), "producer").send_latency_enable(false),
            ProducerConfig::new("PGCtlLoad").send_msg_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap(),
    );
    let log = Arc::new(Mutex::new(Log::default()));
    let consumer = start_consumer(nsa, log.clone()).await;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = produce(producer.clone(), sent.clone(), stop.clone());
    let acked_by_b1 = |sent: &Mutex<Vec<Sent>>| {
        sent.lock()
            .iter()
            .filter(|s| s.acked.as_ref().is_some_and(|a| a.broker == "b1"))
            .count()
    };
    let acked_keys = |sent: &Mutex<Vec<Sent>>| -> Vec<Acked> {
        sent.lock().iter().filter_map(|s| s.acked.clone()).collect()
    };

    let mut rows: Vec<Row> = Vec::new();
    let fail = |rows: &[Row], why: String| -> ! {
        panic!(
            "CONTROLLER_KILLS_SEED={seed}: {why}\n{}\ncontroller logs:\n{}",
            table(rows),
            ctls.iter()
                .map(|c| c.log().join("\n"))
                .collect::<Vec<_>>()
                .join("\n----\n")
        )
    };
    for kill in 1..=kills {
        // A seeded number of further sends acknowledged by b1, then the kill.
        let more = rng.gen_range(20..120);
        let base = acked_by_b1(&sent);
        wait_until(
            &format!("kill {kill}: {more} more sends acknowledged by b1"),
            WAIT,
            || {
                let n = acked_by_b1(&sent);
                async move { n >= base + more }
            },
        )
        .await;
        let before = replicas(&raw, &ctl_addrs).await;
        assert_eq!(before.sync_state_set, all, "kill {kill}: {before:?}");
        let Some(old) = before.master else {
            fail(&rows, format!("kill {kill}: no master before the kill"));
        };
        let dups_before = duplicates(&log);
        let node = b1.get_mut(&old).expect("the master is a replica of b1");
        node.sigkill();
        let killed = Instant::now();
        let old_end = commit_log(node).len() as i64;

        // Election, and the first send started after the kill that b1 acknowledges.
        let mut elected = None;
        let mut failover = None;
        while elected.is_none() || failover.is_none() {
            if elected.is_none() {
                elected = replicas(&raw, &ctl_addrs)
                    .await
                    .master
                    .filter(|m| *m != old);
            }
            if failover.is_none() {
                failover = sent
                    .lock()
                    .iter()
                    .find(|s| {
                        s.started >= killed && s.acked.as_ref().is_some_and(|a| a.broker == "b1")
                    })
                    .map(|s| s.ended - killed);
            }
            if killed.elapsed() > WAIT {
                rows.push(Row {
                    killed: old,
                    elected,
                    failover,
                    rejoin: None,
                    cut: 0,
                    failed_sends: 0,
                    duplicates: 0,
                });
                fail(
                    &rows,
                    format!("kill {kill}: no new master of b1 taking sends within {WAIT:?}"),
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let new = elected.expect("elected");
        let failover_at = killed + failover.expect("failover");
        let failed_sends = sent
            .lock()
            .iter()
            .filter(|s| s.acked.is_none() && s.ended >= killed && s.started <= failover_at)
            .count();
        let epoch_start = last_epoch_start(&b1[&new]);
        assert!(
            epoch_start <= old_end,
            "kill {kill}: the new epoch starts at {epoch_start}, past the old master's end {old_end}"
        );

        // The killed master comes back on its store, cuts what it alone held and follows.
        let node = b1.get_mut(&old).expect("replica");
        node.restart();
        let restarted = Instant::now();
        if old_end > epoch_start {
            node.wait_log(CUT_LOG, WAIT);
        }
        let rejoined_at = {
            let deadline = restarted + WAIT;
            loop {
                let r = replicas(&raw, &ctl_addrs).await;
                if r.master == Some(new) && r.sync_state_set == all {
                    break Instant::now();
                }
                if Instant::now() > deadline {
                    fail(
                        &rows,
                        format!("kill {kill}: replica {old} not back in the SyncStateSet: {r:?}"),
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let r = raw::try_send_with(&raw, &b1[&old].addr, TOPIC, 0, b"to a slave", &[]).await;
        assert!(
            !matches!(&r, Ok(r) if r.code == ResponseCode::SUCCESS),
            "kill {kill}: the restarted replica {old} took a send"
        );
        wait_until(
            &format!("kill {kill}: replica {old}'s CommitLog a prefix of the new master's"),
            WAIT,
            || {
                let (mine, master) = (commit_log(&b1[&old]), commit_log(&b1[&new]));
                let ok = mine.len() as i64 > epoch_start && master.starts_with(&mine);
                async move { ok }
            },
        )
        .await;

        // Everything acknowledged so far is consumed; failed ones were redelivered.
        let addrs: Vec<String> = b1.values().map(|b| b.addr.clone()).collect();
        wait_all_consumed(&format!("kill {kill}"), &log, &acked_keys(&sent), &addrs).await;
        assert!(
            ns.unsupported_request_counts().is_empty(),
            "kill {kill}: broker requests at the NameServer: {:?}",
            ns.unsupported_request_counts()
        );
        let row = Row {
            killed: old,
            elected: Some(new),
            failover,
            rejoin: Some(rejoined_at - restarted),
            cut: old_end - epoch_start,
            failed_sends,
            duplicates: duplicates(&log) - dups_before,
        };
        println!(
            "kill {kill}: master {old} killed, {new} elected, failover {} ms, rejoined {} ms \
             after its restart, cut {} bytes, {failed_sends} sends failed, {} duplicates",
            ms(row.failover),
            ms(row.rejoin),
            row.cut,
            row.duplicates
        );
        rows.push(row);
    }
    stop.store(true, Ordering::Release);
    load.await.unwrap();
    let addrs: Vec<String> = b1.values().map(|b| b.addr.clone()).collect();
    wait_all_consumed("the end", &log, &acked_keys(&sent), &addrs).await;
    let mut times: Vec<Duration> = rows.iter().filter_map(|r| r.failover).collect();
    times.sort();
    let (dups, failed_first) = (duplicates(&log), log.lock().failed.len());
    let (acked, failed) = {
        let s = sent.lock();
        (
            s.iter().filter(|s| s.acked.is_some()).count(),
            s.iter().filter(|s| s.acked.is_none()).count(),
        )
    };
    println!(
        "CONTROLLER_KILLS_SEED={seed}: {kills} kills, every one elected; failover median {} ms, \
         max {} ms; {acked} sends acknowledged, {failed} failed, {failed_first} failed on first \
         delivery and redelivered, {dups} duplicate consumptions\n{}",
        ms(median(&times)),
        ms(times.last().copied()),
        table(&rows)
    );
    consumer.shutdown().await;
    producer.shutdown().await;
}
