//! Consumer offsets across a master's absence: offsets an Apogee push consumer commits to
//! b1's slave while b1's master is down reach the master when it returns (the slave pushes
//! them), so the master answers QUERY_CONSUMER_OFFSET with them and a fresh consumer of the
//! same group does not consume those messages again.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use client::consumer::push::PushConsumerConfig;
use client::consumer::push::{ConsumeConcurrentlyStatus, MessageListener, PushConsumer};
use common::client_config;
use it::{
    broker_config, raw, raw_client, route, start_namesrv, wait_committed, wait_until, BrokerNode,
    BrokerRole,
};
use parking_lot::Mutex;
use remoting::protocol::{from_fastjson, MASTER_ID};
use remoting::ResponseCode;

const TOPIC: &str = "TopicOffsets";
const GROUP: &str = "GroupOffsets";
const QUEUES: i32 = 2;
const PER_QUEUE: i64 = 10;
/// What the master has before it goes down.
const BEFORE_KILL: i64 = 3;
const WAIT: Duration = Duration::from_secs(20);

/// A push consumer of GROUP recording every body it consumes.
async fn consumer(ns: std::net::SocketAddr, name: &str) -> (PushConsumer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        let mut s = s.lock();
        for m in msgs {
            s.push(String::from_utf8_lossy(&m.message.body).to_string());
        }
        ConsumeConcurrentlyStatus::ConsumeSuccess
    });
    let c = PushConsumer::start(
        client_config(ns, Duration::from_millis(200), name),
        PushConsumerConfig::new(GROUP).rebalance_interval(Duration::from_millis(500)),
        &[(TOPIC, "*")],
        listener,
    )
    .await
    .unwrap();
    (c, seen)
}

/// UPDATE_CONSUMER_OFFSET (two-way) as a consumer sends it.
async fn commit(client: &remoting::client::RemotingClient, broker: &str, queue: i32, offset: i64) {
    raw::commit_offset(client, broker, (GROUP, TOPIC, queue), offset).await;
}

/// Waits until QUERY_CONSUMER_OFFSET on `broker` answers `want` for every queue.
async fn wait_offsets(
    client: &remoting::client::RemotingClient,
    broker: &str,
    want: i64,
    what: &str,
) {
    wait_committed(client, broker, (GROUP, TOPIC, QUEUES), want, what, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_committed_to_the_slave_reach_the_returning_master() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv(Duration::from_secs(3)).await;
    let nsa = ns.local_addr();
    let p = |n: &str| dir.path().join(n);
    let mut m1 = BrokerNode::start(broker_config(
        nsa,
        "C",
        "b1",
        0,
        BrokerRole::AsyncMaster,
        p("m1"),
    ));
    let s1 = BrokerNode::start(broker_config(nsa, "C", "b1", 1, BrokerRole::Slave, p("s1")));
    let client = raw_client();
    raw::create_topic(&client, &m1.addr, TOPIC, QUEUES).await;
    raw::create_group(&client, &m1.addr, GROUP).await;
    for q in 0..QUEUES {
        for i in 0..PER_QUEUE {
            let r = raw::send(&client, &m1.addr, TOPIC, q, format!("q{q}-{i}").as_bytes()).await;
            assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        }
        commit(&client, &m1.addr, q, BEFORE_KILL).await;
    }
    // The slave has the messages and the master's offsets before the master goes.
    wait_until("the slave to have every message", WAIT, || {
        let (c, a) = (client.clone(), s1.addr.clone());
        async move {
            for q in 0..QUEUES {
                if raw::max_offset(&c, &a, TOPIC, q).await != PER_QUEUE {
                    return false;
                }
            }
            true
        }
    })
    .await;
    wait_offsets(
        &client,
        &s1.addr,
        BEFORE_KILL,
        "the slave to sync the offsets",
    )
    .await;
    // Persisted on the master (flushed every 200 ms) so that it comes back with them.
    let persisted = p("m1").join("config").join("consumerOffset.json");
    wait_until("the master to persist its offsets", WAIT, || {
        let f = persisted.clone();
        async move {
            std::fs::read_to_string(&f).is_ok_and(|t| t.contains(&format!("{TOPIC}@{GROUP}")))
        }
    })
    .await;

    let m1_addr = m1.addr.clone();
    m1.kill();
    let master_gone = |want_gone: bool| {
        let (c, m) = (client.clone(), m1_addr.clone());
        async move {
            route(&c, nsa, TOPIC).await.is_some_and(|r| {
                let master = r
                    .broker_datas
                    .iter()
                    .find(|b| b.broker_name == "b1")
                    .and_then(|b| b.broker_addrs.get(&MASTER_ID).cloned());
                (master.as_deref() == Some(m.as_str())) != want_gone
            })
        }
    };
    wait_until("the NameServer to drop b1's master", WAIT, || {
        master_gone(true)
    })
    .await;

    // The rest is consumed from the slave; the consumer commits to it.
    let (first, seen) = consumer(nsa, "first").await;
    wait_until("everything consumed from the slave", WAIT, || {
        let seen = seen.clone();
        async move {
            let n = seen.lock().iter().collect::<HashSet<_>>().len() as i64;
            n >= (PER_QUEUE - BEFORE_KILL) * i64::from(QUEUES)
        }
    })
    .await;
    wait_offsets(&client, &s1.addr, PER_QUEUE, "the slave to get the commits").await;
    first.shutdown().await;

    m1.restart();
    wait_offsets(
        &client,
        &m1.addr,
        PER_QUEUE,
        "the returning master to learn the slave's offsets",
    )
    .await;
    wait_until("the NameServer to list b1's master", WAIT, || {
        master_gone(false)
    })
    .await;

    // A fresh consumer reads its offsets from the master: only new messages come.
    let (second, seen) = consumer(nsa, "second").await;
    for q in 0..QUEUES {
        let r = raw::send(&client, &m1.addr, TOPIC, q, format!("new{q}").as_bytes()).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }
    wait_until("the new messages consumed", WAIT, || {
        let seen = seen.clone();
        async move {
            let s = seen.lock();
            (0..QUEUES).all(|q| s.contains(&format!("new{q}")))
        }
    })
    .await;
    let old: Vec<String> = seen
        .lock()
        .iter()
        .filter(|b| !b.starts_with("new"))
        .cloned()
        .collect();
    assert!(
        old.is_empty(),
        "consumed again after the master returned: {old:?}"
    );
    second.shutdown().await;
    drop(s1);
    drop(m1);
    ns.shutdown().await;
}

/// A slave writes the offsets it synchronises from its master to `consumerOffset.json` right
/// after the synchronisation (as upstream's `SlaveSynchronize`), not only at its periodic
/// persist (here 10 minutes away): a slave killed after a synchronisation restarts with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slave_persists_the_offsets_it_synchronises() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv(Duration::from_secs(3)).await;
    let nsa = ns.local_addr();
    let p = |n: &str| dir.path().join(n);
    let m1 = BrokerNode::start(broker_config(
        nsa,
        "C",
        "b1",
        0,
        BrokerRole::AsyncMaster,
        p("m1"),
    ));
    let mut sc = broker_config(nsa, "C", "b1", 1, BrokerRole::Slave, p("s1"));
    sc.flush_consumer_offset_interval = 600_000;
    let s1 = BrokerNode::start(sc);
    let client = raw_client();
    raw::create_topic(&client, &m1.addr, TOPIC, QUEUES).await;
    raw::create_group(&client, &m1.addr, GROUP).await;
    for q in 0..QUEUES {
        commit(&client, &m1.addr, q, 7 + i64::from(q)).await;
    }
    let file = p("s1").join("config").join("consumerOffset.json");
    wait_until(
        "the slave's consumerOffset.json to hold the offsets",
        WAIT,
        || {
            let file = file.clone();
            async move {
                let Some(v) = std::fs::read(&file)
                    .ok()
                    .and_then(|d| from_fastjson::<serde_json::Value>(&d).ok())
                else {
                    return false;
                };
                (0..QUEUES).all(|q| {
                    v["offsetTable"][format!("{TOPIC}@{GROUP}")][q.to_string()].as_i64()
                        == Some(7 + i64::from(q))
                })
            }
        },
    )
    .await;
    drop(s1);
    drop(m1);
    ns.shutdown().await;
}
