//! The two failover scenarios of issue 6, with Apogee's producer and push consumer: one
//! NameServer, group `b1` (master + slave), group `b2` (master).
//!
//! 1. **Master down**: the consumer has pulled part of the backlog when b1's master is killed
//!    (its listener is held until then); the rest of b1's queues is consumed from the slave.
//! 2. **Master recovering, routes disagree**: the consumer starts while b1's master is down
//!    (its route lists the slave as acting master) and never refreshes it; b1's master is
//!    restarted, the producer's fresh route sends to it again, and the consumer keeps
//!    consuming b1 from the slave, which replicates the new messages.
//!
//! Each runs with a listener failing every 3rd message on first delivery, and with one that
//! never fails (duplicates counted). Asserted: no CONSUMER_SEND_MSG_BACK reached the
//! NameServer, every acknowledged message consumed successfully, every failed one redelivered
//! with RECONSUME_TIME >= 1 and its ORIGIN_MESSAGE_ID, nothing in a DLQ; in scenario 2 the
//! committed offsets of b1's queues are not reset when the master returns.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{ClientConfig, Producer, ProducerConfig};
use it::{
    broker_config, committed_offset, raw_client, route, start_namesrv, wait_until, BrokerNode,
    BrokerRole,
};
use parking_lot::Mutex;
use remoting::message::{Message, MessageConst};
use remoting::protocol::MASTER_ID;

const TOPIC: &str = "TopicFailover";
const GROUP: &str = "GroupFailover";
const CONSUMER_SEND_MSG_BACK: i32 = 36;

#[derive(Default)]
struct Log {
    /// key -> successful consumptions.
    ok: HashMap<String, u32>,
    /// keys failed on first delivery.
    failed: HashSet<String>,
    /// keys redelivered with RECONSUME_TIME >= 1 and an ORIGIN_MESSAGE_ID.
    redelivered_ok: HashSet<String>,
    /// keys seen in a DLQ topic, or redelivered without the retry properties.
    bad: Vec<String>,
    first_after: Option<Instant>,
}

struct Cluster {
    _dir: tempfile::TempDir,
    ns: namesrv::NameServer,
    m1: BrokerNode,
    s1: BrokerNode,
    m2: BrokerNode,
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv(Duration::from_secs(3)).await;
    let nsa = ns.local_addr();
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        let mut c = broker_config(
            nsa,
            "C",
            name,
            id,
            role,
            dir.path().join(format!("{name}-{id}")),
        );
        // Short delay levels keep retries quick (level 3 = the consumer's first retry).
        c.message_delay_level = "100ms 200ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms".into();
        c
    };
    let m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::AsyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    Cluster {
        _dir: dir,
        ns,
        m1,
        s1,
        m2,
    }
}

fn client_config(ns: std::net::SocketAddr, poll: Duration, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(&ns.to_string())
        .unwrap()
        .instance_name(name);
    c.client_ip = "127.0.0.1".into();
    c.poll_name_server_interval = poll;
    c.heartbeat_broker_interval = Duration::from_millis(500);
    c.persist_consumer_offset_interval = Duration::from_millis(200);
    c.pull_time_delay_when_exception = Duration::from_millis(100);
    c.mq_client_api_timeout = Duration::from_secs(2);
    c
}

async fn produce(p: &Producer, from: usize, n: usize, acked: &mut Vec<String>) {
    for i in from..from + n {
        let key = format!("k{i}");
        let msg = Message::new(TOPIC, key.clone().into_bytes()).with_keys([key.as_str()]);
        if p.send(msg).await.is_ok() {
            acked.push(key);
        }
    }
}

async fn start_consumer(
    ns: std::net::SocketAddr,
    poll: Duration,
    fail_third: bool,
    gate: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) -> PushConsumer {
    let mut config = PushConsumerConfig::new(GROUP)
        .pull_batch_size(4)
        .consume_thread_max(4)
        .rebalance_interval(Duration::from_millis(500));
    config.pull_threshold_for_queue = 4;
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        while !gate.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut log = log.lock();
        let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
        for m in msgs {
            let key = String::from_utf8_lossy(&m.message.body).to_string();
            if m.message.topic.starts_with("%DLQ%") {
                log.bad.push(format!("{key} in DLQ"));
            }
            let n: usize = key.trim_start_matches('k').parse().unwrap_or(0);
            if m.reconsume_times == 0 && fail_third && n.is_multiple_of(3) {
                log.failed.insert(key);
                status = ConsumeConcurrentlyStatus::ReconsumeLater;
                continue;
            }
            if m.reconsume_times >= 1 {
                if m.message
                    .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
                    .is_some()
                {
                    log.redelivered_ok.insert(key.clone());
                } else {
                    log.bad
                        .push(format!("{key} redelivered without ORIGIN_MESSAGE_ID"));
                }
            }
            log.first_after.get_or_insert_with(Instant::now);
            *log.ok.entry(key).or_default() += 1;
        }
        status
    });
    PushConsumer::start(
        client_config(ns, poll, "consumer"),
        config,
        &[(TOPIC, "*")],
        listener,
    )
    .await
    .unwrap()
}

async fn wait_all_consumed(log: &Arc<Mutex<Log>>, acked: &[String], consumer: &PushConsumer, c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let l = log.lock();
            let missing: Vec<_> = acked.iter().filter(|k| !l.ok.contains_key(*k)).collect();
            let unre: Vec<_> = l.failed.iter().filter(|k| !l.redelivered_ok.contains(*k)).collect();
            if missing.is_empty() && unre.is_empty() { return; }
            if Instant::now() > deadline {
                eprintln!("MISSING {missing:?}\nNOT REDELIVERED {unre:?}");
                eprintln!("ASSIGNED {:?}", consumer.assigned_queues());
                eprintln!("ROUTE {:?}", consumer.topic_route(TOPIC));
                eprintln!("RETRY ROUTE {:?}", consumer.topic_route(&format!("%RETRY%{GROUP}")));
                let raw = raw_client();
                for q in 0..4 {
                    let mx = it::raw::max_offset(&raw, &c.s1.addr, TOPIC, q).await;
                    let co = committed_offset(&raw, &c.s1.addr, GROUP, TOPIC, q).await;
                    let p = it::raw::pull(&raw, &c.s1.addr, GROUP, TOPIC, q, 0).await;
                    eprintln!("S1 q{q} max {mx} committed {co:?} pulled {:?}", p.iter().map(|m| String::from_utf8_lossy(&m.message.body).to_string()).collect::<Vec<_>>());
                }
                panic!("timed out");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(dead_code)]
async fn wait_all_consumed_old(log: &Arc<Mutex<Log>>, acked: &[String]) {
    wait_until(
        "every acknowledged message consumed, every failure redelivered",
        Duration::from_secs(60),
        || {
            let log = log.clone();
            let acked = acked.to_vec();
            async move {
                let l = log.lock();
                acked.iter().all(|k| l.ok.contains_key(k))
                    && l.failed.iter().all(|k| l.redelivered_ok.contains(k))
            }
        },
    )
    .await;
}

fn check(name: &str, c: &Cluster, log: &Log, acked: &[String]) -> usize {
    assert!(log.bad.is_empty(), "{name}: {:?}", log.bad);
    let send_backs =
        c.ns.unsupported_request_counts()
            .get(&CONSUMER_SEND_MSG_BACK)
            .copied()
            .unwrap_or(0);
    assert_eq!(send_backs, 0, "{name}: send-backs reached the NameServer");
    let dups: usize = log
        .ok
        .values()
        .map(|n| (*n as usize).saturating_sub(1))
        .sum();
    println!(
        "{name}: {} acknowledged, {} failed on first delivery and redelivered, {dups} duplicate consumptions",
        acked.len(),
        log.failed.len()
    );
    dups
}

async fn wait_acting_master(c: &Cluster) {
    let client = raw_client();
    let slave = c.s1.addr.clone();
    let nsa = c.ns.local_addr();
    wait_until(
        "b1's slave listed as acting master",
        Duration::from_secs(10),
        || {
            let (client, slave) = (client.clone(), slave.clone());
            async move {
                route(&client, nsa, TOPIC).await.is_some_and(|r| {
                    r.broker_datas.iter().any(|b| {
                        b.broker_name == "b1" && b.broker_addrs.get(&MASTER_ID) == Some(&slave)
                    })
                })
            }
        },
    )
    .await;
}

async fn master_down(fail_third: bool) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let mut c = cluster().await;
    let nsa = c.ns.local_addr();
    let producer = Producer::start(
        client_config(nsa, Duration::from_millis(300), "producer"),
        ProducerConfig::new("PG"),
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    produce(&producer, 0, 120, &mut acked).await;
    let gate = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let consumer = start_consumer(
        nsa,
        Duration::from_millis(300),
        fail_third,
        gate.clone(),
        log.clone(),
    )
    .await;
    // Let the consumer own b1's queues and hold a few messages, then kill the master under load.
    wait_until(
        "the consumer to own b1's queues",
        Duration::from_secs(10),
        || {
            let q = consumer.assigned_queues();
            async move {
                q.iter()
                    .any(|mq| mq.broker_name == "b1" && mq.topic == TOPIC)
            }
        },
    )
    .await;
    let killed = Instant::now();
    c.m1.kill();
    gate.store(true, Ordering::Release);
    wait_acting_master(&c).await;
    produce(&producer, 120, 60, &mut acked).await;
    wait_all_consumed(&log, &acked, &consumer, &c).await;
    let first = log
        .lock()
        .first_after
        .map(|t| t.saturating_duration_since(killed));
    println!("master down (fail every 3rd: {fail_third}): first message consumed {first:?} after the kill, all consumed {:?} after it", killed.elapsed());
    check(
        &format!("master down, fail={fail_third}"),
        &c,
        &log.lock(),
        &acked,
    );
    consumer.shutdown().await;
    producer.shutdown().await;
}

async fn master_recovering(fail_third: bool) {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let mut c = cluster().await;
    let nsa = c.ns.local_addr();
    let producer = Producer::start(
        client_config(nsa, Duration::from_millis(300), "producer"),
        ProducerConfig::new("PG"),
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    produce(&producer, 0, 90, &mut acked).await;
    let killed = Instant::now();
    c.m1.kill();
    wait_acting_master(&c).await;
    let gate = Arc::new(AtomicBool::new(true));
    let log = Arc::new(Mutex::new(Log::default()));
    // The consumer's route is taken now (b1: the slave as acting master) and never refreshed.
    let consumer = start_consumer(
        nsa,
        Duration::from_secs(3600),
        fail_third,
        gate,
        log.clone(),
    )
    .await;
    wait_until(
        "part of the backlog consumed",
        Duration::from_secs(30),
        || {
            let log = log.clone();
            async move { log.lock().ok.len() >= 30 }
        },
    )
    .await;
    println!("master recovering (fail every 3rd: {fail_third}): first message consumed {:?} after the kill", log.lock().first_after.map(|t| t.saturating_duration_since(killed)));
    // Offsets the consumer committed to the slave while the master was away.
    let raw = raw_client();
    let mut before = HashMap::new();
    for q in 0..8 {
        if let Some(o) = committed_offset(&raw, &c.s1.addr, GROUP, TOPIC, q).await {
            before.insert(q, o);
        }
    }
    c.m1.restart();
    let m1 = c.m1.addr.clone();
    wait_until(
        "the producer to see b1's master again",
        Duration::from_secs(10),
        || {
            let (r, m1) = (raw.clone(), m1.clone());
            async move {
                route(&r, nsa, TOPIC).await.is_some_and(|rt| {
                    rt.broker_datas.iter().any(|b| {
                        b.broker_name == "b1" && b.broker_addrs.get(&MASTER_ID) == Some(&m1)
                    })
                })
            }
        },
    )
    .await;
    produce(&producer, 90, 90, &mut acked).await;
    wait_all_consumed(&log, &acked, &consumer, &c).await;
    // Window: what the consumer may hold uncommitted per queue.
    let window = 8;
    for (q, o) in before {
        wait_until(
            "the slave's offsets not reset",
            Duration::from_secs(10),
            || {
                let (r, s) = (raw.clone(), c.s1.addr.clone());
                async move {
                    committed_offset(&r, &s, GROUP, TOPIC, q)
                        .await
                        .is_some_and(|now| now + window >= o)
                }
            },
        )
        .await;
    }
    check(
        &format!("master recovering, fail={fail_third}"),
        &c,
        &log.lock(),
        &acked,
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    let _ = &c.m2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_down_with_failures() {
    master_down(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_down_without_failures() {
    master_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_recovering_routes_disagree_with_failures() {
    master_recovering(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_recovering_routes_disagree_without_failures() {
    master_recovering(false).await;
}
