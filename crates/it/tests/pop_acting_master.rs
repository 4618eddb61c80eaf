//! POP from an acting master: group `b1` (master and slave) and group `b2` (a master). b1's
//! master goes down; the NameServer lists the slave as b1's id 0 (acting master), and a simple
//! consumer keeps popping from it: its pops and acks work, a stale handle is refused, and the
//! messages it handed out and nobody acked come back through the POP retry topic written to
//! b2's master (the slave cannot write), with their reconsume count raised. Nothing is lost.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use client::consumer::simple::{ReceivedMessage, SimpleConsumer, SimpleConsumerConfig};
use client::{ClientError, Producer, ProducerConfig};
use common::client_config;
use common::failover::wait_b1_master;
use it::{
    cluster_broker_config, namesrv_config, raw, raw_client, wait_until, BrokerNode, BrokerRole,
};
use remoting::message::Message;
use remoting::ResponseCode;

const TOPIC: &str = "TopicPopActing";
const GROUP: &str = "GID_pop_acting";
const LEVELS: &str = "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms";

fn body(m: &ReceivedMessage) -> String {
    String::from_utf8(m.message.message.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acting_master_serves_pops_and_acks_and_revives_through_a_live_master() {
    let dir = tempfile::tempdir().unwrap();
    let mut ns_config = namesrv_config(Duration::from_secs(3));
    ns_config.support_acting_master = true;
    let ns = namesrv::NameServer::start(ns_config).await.unwrap();
    let nsa = ns.local_addr();
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        let mut c = cluster_broker_config(nsa, dir.path(), (name, id, role), LEVELS);
        c.revive_interval = 100;
        c
    };
    let mut m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::SyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    let admin = raw_client();
    for m in [&m1, &m2] {
        raw::create_topic(&admin, &m.addr, TOPIC, 2).await;
    }
    wait_b1_master(nsa, TOPIC, Some(&m1.addr), Duration::from_secs(20)).await;

    let producer = Producer::start(
        client_config(nsa, Duration::from_millis(200), "popam-p"),
        ProducerConfig::new("PG_pop_acting"),
    )
    .await
    .unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..30 {
        let text = format!("m-{i:02}");
        producer
            .send(Message::new(TOPIC, text.clone()))
            .await
            .unwrap();
        sent.insert(text);
    }
    // SYNC_MASTER: every acknowledged message of b1 is on the slave already.
    m1.kill();
    wait_b1_master(nsa, TOPIC, Some(&s1.addr), Duration::from_secs(20)).await;

    let consumer = SimpleConsumer::start(
        client_config(nsa, Duration::from_millis(200), "popam-c"),
        SimpleConsumerConfig::new(GROUP).await_duration(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    consumer.subscribe(TOPIC, "*").await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    while got.len() < sent.len() && Instant::now() < deadline {
        match consumer.receive(32, Duration::from_secs(2)).await {
            Ok(ms) => got.extend(ms),
            // The NameServer may list the slave as b1's id 0 a moment before the slave has
            // seen its master go (replication link down): until then it refuses pops.
            Err(ClientError::Broker { code, .. }) if code == ResponseCode::NO_PERMISSION => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("receive failed: {e}"),
        }
    }
    println!("pops refused while the slave took over: {refused}");
    let names: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(names, sent, "every message popped once");
    assert_eq!(got.len(), sent.len());
    let from_slave: Vec<&ReceivedMessage> = got
        .iter()
        .filter(|m| m.broker.to_string() == s1.addr)
        .collect();
    assert!(
        from_slave.len() >= 3,
        "the acting master handed out {} messages",
        from_slave.len()
    );

    // Ack everything but three messages of the acting master.
    let left: BTreeSet<String> = from_slave.iter().take(3).map(|m| body(m)).collect();
    for m in got.iter().filter(|m| !left.contains(&body(m))) {
        consumer.ack(m).await.unwrap();
    }
    let first_acked = got
        .iter()
        .find(|m| m.broker.to_string() == s1.addr && !left.contains(&body(m)))
        .unwrap();
    match consumer.ack(first_acked).await {
        Err(ClientError::Broker { code, .. }) => assert_eq!(code, ResponseCode::NO_MESSAGE),
        other => panic!("a second ack on the acting master answered {other:?}"),
    }

    // The three come back, from b2's master (the POP retry topic written there).
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while back.len() < left.len() && Instant::now() < deadline {
        back.extend(consumer.receive(32, Duration::from_secs(60)).await.unwrap());
    }
    let back_names: BTreeSet<String> = back.iter().map(body).collect();
    assert_eq!(back_names, left);
    assert_eq!(back.len(), left.len());
    for m in &back {
        assert_eq!(m.message.reconsume_times, 1);
        assert_eq!(m.broker.to_string(), m2.addr, "revived through b2's master");
        consumer.ack(m).await.unwrap();
    }
    wait_until("nothing more to pop", Duration::from_secs(5), || {
        let c = &consumer;
        async move {
            c.receive(32, Duration::from_secs(60))
                .await
                .is_ok_and(|v| v.is_empty())
        }
    })
    .await;

    consumer.shutdown().await;
    producer.shutdown().await;
    ns.shutdown().await;
}
