//! The client's fallback re-send when the retry topic's cached route lists only a group whose
//! master is gone (the consumer's routes are stale: a long `pollNameServerInterval`).
//!
//! 1. With another live master (b2): every re-send attempt to the dead master fails, the
//!    client refreshes the retry topic's route once from the NameServer, and the message goes
//!    to `%RETRY%group` on b2 (with `ORIGIN_MESSAGE_ID`) instead of staying local.
//! 2. With no live master at all: the message is consumed again locally, as the same message
//!    with `RECONSUME_TIME` >= 1 and its `ORIGIN_MESSAGE_ID`, and its offset is committed
//!    once it was consumed successfully.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use common::client_config;
use it::{
    cluster_broker_config, namesrv_config, raw, raw_client, route, wait_committed, wait_until,
    BrokerNode, BrokerRole,
};
use parking_lot::Mutex;
use remoting::message::MessageConst;
use remoting::protocol::MASTER_ID;
use remoting::ResponseCode;

const TOPIC: &str = "TopicRetryRoute";
const GROUP: &str = "GroupRetryRoute";
const RETRY: &str = "%RETRY%GroupRetryRoute";
const QUEUES: i32 = 2;
const PER_QUEUE: i64 = 2;
const WAIT: Duration = Duration::from_secs(20);

/// What the listener saw, per body.
#[derive(Default)]
struct Seen {
    /// body -> (reconsume times, ORIGIN_MESSAGE_ID) of each delivery.
    deliveries: HashMap<String, Vec<(i32, Option<String>)>>,
}

struct Cluster {
    ns: namesrv::NameServer,
    m1: BrokerNode,
    s1: BrokerNode,
    m2: Option<BrokerNode>,
    _dir: tempfile::TempDir,
}

/// b1 (master + slave) holding TOPIC and the retry topic, and optionally b2 (a master with
/// nothing on it but auto-creation); no acting master, so b1 has no id 0 once its master is
/// gone.
async fn cluster(with_b2: bool) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut nsc = namesrv_config(Duration::from_secs(3));
    nsc.support_acting_master = false;
    let ns = namesrv::NameServer::start(nsc).await.unwrap();
    let nsa = ns.local_addr();
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        cluster_broker_config(nsa, dir.path(), (name, id, role), "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms")
    };
    let m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::AsyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = with_b2.then(|| BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster)));
    let client = raw_client();
    raw::create_topic(&client, &m1.addr, TOPIC, QUEUES).await;
    // The retry topic exists on b1 only: its route lists b1 alone.
    raw::create_topic(&client, &m1.addr, RETRY, 1).await;
    for m in std::iter::once(&m1).chain(m2.as_ref()) {
        raw::create_group(&client, &m.addr, GROUP).await;
    }
    for q in 0..QUEUES {
        for i in 0..PER_QUEUE {
            let r = raw::send(&client, &m1.addr, TOPIC, q, format!("q{q}-{i}").as_bytes()).await;
            assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        }
    }
    // Both routes are at the NameServer before the consumer caches them.
    for t in [TOPIC, RETRY] {
        wait_until("the topics at the NameServer", WAIT, || {
            let c = client.clone();
            async move { route(&c, nsa, t).await.is_some() }
        })
        .await;
    }
    Cluster {
        ns,
        m1,
        s1,
        m2,
        _dir: dir,
    }
}

struct Consuming {
    consumer: PushConsumer,
    seen: Arc<Mutex<Seen>>,
    gate: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

/// A consumer whose routes stay as first fetched, held until the gate opens, failing every
/// message on its first delivery.
async fn consumer(ns: std::net::SocketAddr) -> Consuming {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gate = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, g, n) = (seen.clone(), gate.clone(), calls.clone());
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        n.fetch_add(1, Ordering::AcqRel);
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
        let mut s = s.lock();
        for m in msgs {
            let body = String::from_utf8_lossy(&m.message.body).to_string();
            let origin = m
                .message
                .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
                .map(str::to_string);
            s.deliveries
                .entry(body)
                .or_default()
                .push((m.reconsume_times, origin));
            if m.reconsume_times == 0 {
                status = ConsumeConcurrentlyStatus::ReconsumeLater;
            }
        }
        status
    });
    // Routes are fetched at start and never polled again.
    let c = client_config(ns, Duration::from_secs(3600), "retry-route");
    let config = PushConsumerConfig::new(GROUP)
        .rebalance_interval(Duration::from_millis(500))
        .local_retry_delay(Duration::from_millis(200));
    let consumer = PushConsumer::start(c, config, &[(TOPIC, "*")], listener)
        .await
        .unwrap();
    Consuming {
        consumer,
        seen,
        gate,
        calls,
    }
}

/// Holds every message of b1 in the listener, kills b1's master, waits until the NameServer
/// dropped it, and lets consumption fail.
async fn fail_after_master_loss(c: &mut Cluster, con: &Consuming) {
    wait_until("the consumer to hold every message", WAIT, || {
        let calls = con.calls.clone();
        async move { calls.load(Ordering::Acquire) >= (PER_QUEUE as usize) * QUEUES as usize }
    })
    .await;
    let retry_route = con.consumer.topic_route(RETRY).expect("retry route cached");
    assert!(retry_route
        .broker_datas
        .iter()
        .all(|b| b.broker_name == "b1" && b.broker_addrs.contains_key(&MASTER_ID)));
    let m1 = c.m1.addr.clone();
    c.m1.kill();
    let (client, nsa) = (raw_client(), c.ns.local_addr());
    wait_until("the NameServer to drop b1's master", WAIT, || {
        let (client, m1) = (client.clone(), m1.clone());
        async move {
            route(&client, nsa, RETRY).await.is_some_and(|r| {
                !r.broker_datas
                    .iter()
                    .any(|b| b.broker_addrs.values().any(|a| *a == m1))
            })
        }
    })
    .await;
    con.gate.store(true, Ordering::Release);
}

/// Waits until every message was delivered again with the retry properties.
async fn wait_redelivered(con: &Consuming) {
    wait_until("every message redelivered", WAIT, || {
        let seen = con.seen.clone();
        async move {
            let s = seen.lock();
            s.deliveries.len() == (PER_QUEUE as usize) * QUEUES as usize
                && s.deliveries
                    .values()
                    .all(|d| d.iter().any(|(n, origin)| *n >= 1 && origin.is_some()))
        }
    })
    .await;
    let s = con.seen.lock();
    for (body, d) in &s.deliveries {
        for (n, origin) in d {
            assert!(
                *n == 0 || origin.is_some(),
                "{body} redelivered without ORIGIN_MESSAGE_ID: {d:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fallback_refreshes_a_dead_retry_route_and_resends_to_a_live_master() {
    let mut c = cluster(true).await;
    let con = consumer(c.ns.local_addr()).await;
    fail_after_master_loss(&mut c, &con).await;
    let n = (PER_QUEUE * i64::from(QUEUES)) as u64;
    wait_until("every failed message re-sent", WAIT, || {
        let counts = con.consumer.send_back_counts();
        async move { counts.resent + counts.failed >= n }
    })
    .await;
    let counts = con.consumer.send_back_counts();
    assert_eq!(counts.failed, 0, "{counts:?}");
    assert_eq!(counts.resent, n, "{counts:?}");
    // On b2's retry topic (after the delay), with the retry properties.
    let m2 = c.m2.as_ref().unwrap().addr.clone();
    let client = raw_client();
    wait_until("the retries on b2", WAIT, || {
        let (client, m2) = (client.clone(), m2.clone());
        async move {
            let mut total = 0;
            for q in 0..4 {
                total += raw::max_offset(&client, &m2, RETRY, q).await.max(0);
            }
            total >= n as i64
        }
    })
    .await;
    for q in 0..4 {
        for m in raw::pull(&client, &m2, GROUP, RETRY, q, 0).await {
            assert!(
                m.message
                    .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
                    .is_some(),
                "{m:?}"
            );
            assert_eq!(
                m.message.property(MessageConst::PROPERTY_RETRY_TOPIC),
                Some(TOPIC)
            );
        }
    }
    assert!(c.ns.unsupported_request_counts().is_empty());
    con.consumer.shutdown().await;
    drop(c.s1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_live_master_the_message_is_consumed_again_locally() {
    let mut c = cluster(false).await;
    let con = consumer(c.ns.local_addr()).await;
    fail_after_master_loss(&mut c, &con).await;
    wait_redelivered(&con).await;
    let counts = con.consumer.send_back_counts();
    assert!(
        counts.failed >= (PER_QUEUE * i64::from(QUEUES)) as u64,
        "{counts:?}"
    );
    assert_eq!(counts.resent, 0, "{counts:?}");
    // Committed once consumed: the consumer's stale route commits to b1's master, so
    // bring it back and read what the consumer commits there.
    c.m1.restart();
    let client = raw_client();
    wait_committed(
        &client,
        &c.m1.addr,
        (GROUP, TOPIC, QUEUES),
        PER_QUEUE,
        "the offsets committed",
        WAIT,
    )
    .await;
    assert!(c.m2.is_none());
    con.consumer.shutdown().await;
}
