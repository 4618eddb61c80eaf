//! The two failover scenarios of issue 6, with Apogee's producer and push consumer: one
//! NameServer, group `b1` (a `SYNC_MASTER` and its slave, so that an acknowledged message is
//! on the slave), group `b2` (a master).
//!
//! 1. **Master down**: the consumer holds part of b1's backlog (its listener is held until
//!    the kill) while a producer keeps sending; b1's master is killed; the rest of b1's queues
//!    is consumed from the slave.
//! 2. **Master recovering, routes disagree**: the consumer starts while b1's master is down
//!    and its routes are then frozen (b1 without its master; pinned, as with a very long
//!    `pollNameServerInterval`, so the test does not depend on when the retry topic's route
//!    settles); b1's master is restarted, the
//!    producer's fresh route sends to it again, and the consumer keeps consuming b1 from the
//!    slave, which replicates the new messages.
//!
//! Each runs with a listener failing every 3rd message on first delivery, and with one that
//! never fails (duplicates counted), with the NameServer's acting master on (b1's slave listed
//! as broker id 0: send-backs go to it and it forwards them to b2) and, with failures, off
//! (b1 has no id 0 in the route: the client re-sends through its producer path). Asserted: no
//! CONSUMER_SEND_MSG_BACK reached the NameServer, every acknowledged message consumed
//! successfully, every failed one redelivered with RECONSUME_TIME >= 1 and its
//! ORIGIN_MESSAGE_ID, nothing in a DLQ; in scenario 2 the consumer's route stays stale and the
//! offsets committed to the slave do not move back by more than the in-flight window.
//!
//! Duplicate consumptions are asserted to stay within [`DUPLICATE_BOUND`], the in-flight
//! window. Printed: the time from the kill to the first message consumed from the slave,
//! duplicates.
//!
//! The "kill" here drops the broker's runtime in-process, which shuts its store down cleanly
//! (see `it`'s crate docs); `crash_failover.rs` SIGKILLs a broker process instead.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::producer::SendStatus;
use client::{Producer, ProducerConfig};
use common::client_config;
use common::failover::{
    b1_master_in, init_tracing, wait_topic_on, Log, HELD_PER_QUEUE, PULL_BATCH, PULL_THRESHOLD,
};
use it::{
    cluster_broker_config, committed_offset, namesrv_config, raw, raw_client, wait_until,
    BrokerNode, BrokerRole,
};
use parking_lot::Mutex;
use remoting::message::{Message, MessageConst};
use tokio::task::JoinHandle;

const TOPIC: &str = "TopicFailover";
const GROUP: &str = "GroupFailover";
const DLQ: &str = "%DLQ%GroupFailover";
const CONSUMER_SEND_MSG_BACK: i32 = 36;
/// The in-flight window (README, reliability): the producer's one send in flight at the kill
/// (stored by b1 but unanswered, then retried elsewhere) plus, on each of b1's queues, what
/// the consumer holds or consumed without its offset committed.
const DUPLICATE_BOUND: usize = 1 + 4 * HELD_PER_QUEUE as usize;
/// Each wait for an event of the scenario.
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
struct Scenario {
    fail_third: bool,
    acting_master: bool,
}

struct Cluster {
    ns: namesrv::NameServer,
    m1: BrokerNode,
    s1: BrokerNode,
    m2: BrokerNode,
    // Last: the stores outlive the brokers.
    _dir: tempfile::TempDir,
}

async fn cluster(acting_master: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut ns_config = namesrv_config(Duration::from_secs(3));
    ns_config.support_acting_master = acting_master;
    let ns = namesrv::NameServer::start(ns_config).await.unwrap();
    let nsa = ns.local_addr();
    // Short delay levels keep retries quick (level 3 = the consumer's first retry).
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        cluster_broker_config(nsa, dir.path(), (name, id, role), "100ms 100ms 100ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms")
    };
    let m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::SyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    // The topic exists on both masters from the start (with auto-creation, only the masters
    // the producer's first sends reach would get it).
    let raw = raw_client();
    for m in [&m1, &m2] {
        raw::create_topic(&raw, &m.addr, TOPIC, 4).await;
    }
    wait_topic_on(nsa, TOPIC, &["b1", "b2"], WAIT).await;
    Cluster {
        ns,
        m1,
        s1,
        m2,
        _dir: dir,
    }
}

async fn start_producer(ns: std::net::SocketAddr) -> Arc<Producer> {
    let p = Producer::start(
        client_config(ns, Duration::from_millis(200), "producer"),
        ProducerConfig::new("PG").send_msg_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    Arc::new(p)
}

/// Sends `k<from>`, `k<from+1>`, ...; returns the keys acknowledged (SEND_OK).
async fn send_one(p: &Producer, i: usize, acked: &Mutex<Vec<String>>) {
    let key = format!("k{i}");
    let msg = Message::new(TOPIC, key.clone().into_bytes()).with_keys([key.as_str()]);
    if let Ok(r) = p.send(msg).await {
        if r.send_status == SendStatus::SendOk {
            acked.lock().push(key);
        }
    }
}

async fn produce(p: &Producer, from: usize, n: usize, acked: &Mutex<Vec<String>>) {
    for i in from..from + n {
        send_one(p, i, acked).await;
    }
}

/// A producer sending from `k<from>` on until `stop` is set (the load during a failover).
fn produce_until(
    p: Arc<Producer>,
    from: usize,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = from;
        while !stop.load(Ordering::Acquire) {
            send_one(&p, i, &acked).await;
            i += 1;
            // About 500 messages a second: load, without flooding a 2-core machine.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

struct Consuming {
    consumer: PushConsumer,
    log: Arc<Mutex<Log>>,
    /// Consumption waits while false.
    gate: Arc<AtomicBool>,
    /// Listener calls for b1's queues (made while held, too).
    b1_calls: Arc<AtomicUsize>,
}

/// `slave_from`: a message of b1 at this queue offset or higher can only come from the slave.
/// `held`: consumption waits until the gate is opened.
async fn start_consumer(
    ns: std::net::SocketAddr,
    s: Scenario,
    slave_from: i64,
    held: bool,
) -> Consuming {
    let log = Arc::new(Mutex::new(Log::default()));
    let gate = Arc::new(AtomicBool::new(!held));
    let b1_calls = Arc::new(AtomicUsize::new(0));
    let mut config = PushConsumerConfig::new(GROUP)
        .pull_batch_size(PULL_BATCH)
        .consume_thread_max(4)
        .rebalance_interval(Duration::from_millis(500));
    config.pull_threshold_for_queue = PULL_THRESHOLD;
    let (l, g, calls) = (log.clone(), gate.clone(), b1_calls.clone());
    let listener = MessageListener::concurrently(move |msgs, ctx| {
        let from_b1 = ctx.message_queue.broker_name == "b1" && ctx.message_queue.topic == TOPIC;
        if from_b1 {
            calls.fetch_add(1, Ordering::AcqRel);
        }
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut log = l.lock();
        let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
        for m in msgs {
            let key = String::from_utf8_lossy(&m.message.body).to_string();
            let n: usize = key.trim_start_matches('k').parse().unwrap_or(0);
            if m.reconsume_times == 0 && s.fail_third && n.is_multiple_of(3) {
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
            if from_b1 && m.queue_offset >= slave_from {
                log.first_from_slave.get_or_insert_with(Instant::now);
            }
            *log.ok.entry(key).or_default() += 1;
        }
        status
    });
    let consumer = PushConsumer::start(
        client_config(ns, Duration::from_millis(200), "consumer"),
        config,
        &[(TOPIC, "*")],
        listener,
    )
    .await
    .unwrap();
    Consuming {
        consumer,
        log,
        gate,
        b1_calls,
    }
}

/// Waits until every acknowledged message was consumed successfully and every failed one
/// redelivered; on timeout, prints what is missing and where the consumer pulls from.
async fn wait_all_consumed(c: &Cluster, con: &Consuming, acked: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (missing, not_redelivered) = {
            let l = con.log.lock();
            let missing: Vec<String> = acked
                .iter()
                .filter(|k| !l.ok.contains_key(*k))
                .cloned()
                .collect();
            let not_redelivered: Vec<String> = l
                .failed
                .iter()
                .filter(|k| !l.redelivered_ok.contains(*k))
                .cloned()
                .collect();
            (missing, not_redelivered)
        };
        if missing.is_empty() && not_redelivered.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let raw = raw_client();
            for q in 0..4 {
                let max = raw::max_offset(&raw, &c.s1.addr, TOPIC, q).await;
                let committed = committed_offset(&raw, &c.s1.addr, GROUP, TOPIC, q).await;
                eprintln!("b1 slave queue {q}: max offset {max}, committed {committed:?}");
            }
            for b in [&c.m2.addr, &c.s1.addr] {
                let retry = format!("%RETRY%{GROUP}");
                let rmax = raw::max_offset(&raw, b, &retry, 0).await;
                let rco = committed_offset(&raw, b, GROUP, &retry, 0).await;
                let mut sched = Vec::new();
                for q in 0..4 {
                    sched.push(raw::max_offset(&raw, b, "SCHEDULE_TOPIC_XXXX", q).await);
                }
                eprintln!("{b}: retry max {rmax} committed {rco:?}; schedule {sched:?}");
            }
            eprintln!("assigned: {:?}", con.consumer.assigned_queues());
            eprintln!("consumer's route: {:?}", con.consumer.topic_route(TOPIC));
            eprintln!("send-backs: {:?}", con.consumer.send_back_counts());
            panic!(
                "timed out: {} acknowledged not consumed {missing:?}; failed not redelivered {not_redelivered:?}",
                missing.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The assertions common to both scenarios; returns the duplicate consumptions.
async fn check(name: &str, c: &Cluster, con: &Consuming, acked: &[String]) -> usize {
    let send_backs =
        c.ns.unsupported_request_counts()
            .get(&CONSUMER_SEND_MSG_BACK)
            .copied()
            .unwrap_or(0);
    assert_eq!(send_backs, 0, "{name}: send-backs reached the NameServer");
    let raw = raw_client();
    for broker in [&c.m1.addr, &c.s1.addr, &c.m2.addr] {
        let dlq = raw::max_offset(&raw, broker, DLQ, 0).await;
        assert!(dlq <= 0, "{name}: {dlq} messages in {broker}'s DLQ");
    }
    let log = con.log.lock();
    assert!(log.bad.is_empty(), "{name}: {:?}", log.bad);
    let dups: usize = log
        .ok
        .values()
        .map(|n| (*n as usize).saturating_sub(1))
        .sum();
    println!(
        "{name}: {} acknowledged, {} failed on first delivery and redelivered, {dups} duplicate consumptions (bound {DUPLICATE_BOUND}), send-backs {:?}",
        acked.len(),
        log.failed.len(),
        con.consumer.send_back_counts(),
    );
    assert!(
        dups <= DUPLICATE_BOUND,
        "{name}: {dups} duplicate consumptions, more than the in-flight window {DUPLICATE_BOUND}"
    );
    dups
}

/// b1's id 0 once its master is gone: the slave when acting master is on, else nobody.
fn b1_without_master(c: &Cluster, s: Scenario) -> Option<&str> {
    s.acting_master.then_some(c.s1.addr.as_str())
}

/// Waits until the NameServer of `c` lists `master` (or none) as b1's id 0.
async fn wait_b1_master_of(c: &Cluster, master: Option<&str>) {
    common::failover::wait_b1_master(c.ns.local_addr(), TOPIC, master, WAIT).await;
}

/// Waits until the consumer's routes of the topic and of its retry topic list queues of b1
/// and b2, and its route of the topic lists `b1_master` as b1's id 0 (the steady state a
/// failover starts from: a send-back re-sent to the retry topic has a live group to go to).
async fn wait_consumer_routes(con: &Consuming, b1_master: Option<&str>) {
    let retry = format!("%RETRY%{GROUP}");
    let expected = b1_master.map(str::to_string);
    let deadline = Instant::now() + WAIT;
    loop {
        let (topic, retry) = (
            con.consumer.topic_route(TOPIC),
            con.consumer.topic_route(&retry),
        );
        let both = |r: &Option<remoting::protocol::TopicRouteData>| {
            r.as_ref().is_some_and(|r| {
                ["b1", "b2"]
                    .iter()
                    .all(|b| r.queue_datas.iter().any(|q| q.broker_name == *b))
            })
        };
        if both(&topic)
            && both(&retry)
            && topic.as_ref().and_then(b1_master_in).cloned() == expected
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer's routes are not complete: {topic:?} {retry:?}, want b1's master {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn master_down(s: Scenario) -> usize {
    let mut c = cluster(s.acting_master).await;
    let nsa = c.ns.local_addr();
    let producer = start_producer(nsa).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    // A backlog of 15 messages per queue: more than the consumer holds before the kill.
    produce(&producer, 0, 120, &acked).await;
    // Held from the start: nothing fails (and goes to the master's delay queue) before the kill.
    let con = start_consumer(nsa, s, HELD_PER_QUEUE, true).await;
    wait_consumer_routes(&con, Some(&c.m1.addr)).await;
    wait_until("the consumer to hold messages of b1", WAIT, || {
        let calls = con.b1_calls.clone();
        async move { calls.load(Ordering::Acquire) > 0 }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = produce_until(producer.clone(), 1_000, acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed = Instant::now();
    c.m1.kill();
    con.gate.store(true, Ordering::Release);
    wait_b1_master_of(&c, b1_without_master(&c, s)).await;
    // Load goes on for a while after the NameServer noticed.
    let after = acked.lock().len();
    wait_until("60 more messages acknowledged", WAIT, || {
        let acked = acked.clone();
        async move { acked.lock().len() >= after + 60 }
    })
    .await;
    stop.store(true, Ordering::Release);
    load.await.unwrap();
    let acked = acked.lock().clone();
    wait_all_consumed(&c, &con, &acked).await;
    let first = con.log.lock().first_from_slave.map(|t| t - killed);
    let name = format!("master down, {s:?}");
    println!(
        "{name}: first message consumed from the slave {first:?} after the kill, all consumed {:?} after it",
        killed.elapsed()
    );
    assert!(first.is_some(), "{name}: nothing consumed from the slave");
    let dups = check(&name, &c, &con, &acked).await;
    con.consumer.shutdown().await;
    producer.shutdown().await;
    dups
}

async fn master_recovering(s: Scenario) -> usize {
    let mut c = cluster(s.acting_master).await;
    let nsa = c.ns.local_addr();
    let producer = start_producer(nsa).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    produce(&producer, 0, 90, &acked).await;
    let killed = Instant::now();
    c.m1.kill();
    wait_b1_master_of(&c, b1_without_master(&c, s)).await;
    // The consumer's routes are taken now (b1 without its master), once they list every
    // group, and never refreshed: pinned, as with a very long pollNameServerInterval.
    let con = start_consumer(nsa, s, 0, false).await;
    let retry = format!("%RETRY%{GROUP}");
    wait_consumer_routes(&con, b1_without_master(&c, s)).await;
    for t in [TOPIC, retry.as_str()] {
        con.consumer
            .pin_route(t, con.consumer.topic_route(t).unwrap());
    }
    wait_until("part of the backlog consumed", WAIT, || {
        let log = con.log.clone();
        async move { log.lock().ok.len() >= 30 }
    })
    .await;
    let first = con.log.lock().first_from_slave.map(|t| t - killed);
    let name = format!("master recovering, {s:?}");
    // Offsets the consumer committed to the slave while the master was away.
    let raw = raw_client();
    let mut before = BTreeMap::new();
    for q in 0..4 {
        if let Some(o) = committed_offset(&raw, &c.s1.addr, GROUP, TOPIC, q).await {
            before.insert(q, o);
        }
    }
    c.m1.restart();
    wait_b1_master_of(&c, Some(&c.m1.addr)).await;
    let m1 = c.m1.addr.clone();
    wait_until("the producer to write to b1 again", WAIT, || {
        let p = producer.clone();
        async move {
            p.fetch_publish_queues(TOPIC)
                .await
                .is_ok_and(|qs| qs.iter().any(|q| q.broker_name == "b1"))
        }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = produce_until(producer.clone(), 1_000, acked.clone(), stop.clone());
    let after = acked.lock().len();
    wait_until("90 messages acknowledged after the restart", WAIT, || {
        let acked = acked.clone();
        async move { acked.lock().len() >= after + 90 }
    })
    .await;
    stop.store(true, Ordering::Release);
    load.await.unwrap();
    let acked = acked.lock().clone();
    wait_all_consumed(&c, &con, &acked).await;
    // The routes really disagreed all along.
    let consumer_route = con.consumer.topic_route(TOPIC).unwrap();
    assert_ne!(
        b1_master_in(&consumer_route),
        Some(&m1),
        "{name}: the consumer's route was refreshed"
    );
    // The window: what the consumer may hold uncommitted per queue.
    for (q, o) in before {
        let now = committed_offset(&raw, &c.s1.addr, GROUP, TOPIC, q).await;
        assert!(
            now.is_some_and(|now| now + HELD_PER_QUEUE >= o),
            "{name}: queue {q}'s offset on the slave went from {o} to {now:?}"
        );
    }
    println!("{name}: first message consumed {first:?} after the kill");
    let dups = check(&name, &c, &con, &acked).await;
    con.consumer.shutdown().await;
    producer.shutdown().await;
    dups
}

const FAILING: Scenario = Scenario {
    fail_third: true,
    acting_master: true,
};
const NEVER_FAILING: Scenario = Scenario {
    fail_third: false,
    acting_master: true,
};
const FAILING_NO_ACTING_MASTER: Scenario = Scenario {
    fail_third: true,
    acting_master: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_down_with_failures() {
    init_tracing();
    master_down(FAILING).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_down_with_failures_no_acting_master() {
    init_tracing();
    master_down(FAILING_NO_ACTING_MASTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_down_without_failures() {
    init_tracing();
    let dups = master_down(NEVER_FAILING).await;
    println!("master down, consumption never failing: {dups} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_recovering_routes_disagree_with_failures() {
    init_tracing();
    master_recovering(FAILING).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_recovering_routes_disagree_with_failures_no_acting_master() {
    init_tracing();
    master_recovering(FAILING_NO_ACTING_MASTER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_recovering_routes_disagree_without_failures() {
    init_tracing();
    let dups = master_recovering(NEVER_FAILING).await;
    println!("master recovering, consumption never failing: {dups} duplicates");
}
