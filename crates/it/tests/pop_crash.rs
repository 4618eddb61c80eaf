//! POP consumption across a real crash: a master in its own process (`it-broker`) hands
//! out messages to a simple consumer, half are acked, and the master gets SIGKILL between
//! the pops and the acks of the rest. After the restart (crash recovery, POP state rebuilt
//! from the revive log) every unacked message comes back through the retry topic and no
//! acked one does. The consume offsets were persisted before the kill (the documented
//! window: pops after the last persist of `consumerOffset.json` are handed out again).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use client::consumer::simple::{ReceivedMessage, SimpleConsumer, SimpleConsumerConfig};
use client::{Producer, ProducerConfig};
use common::client_config;
use it::child::UNCLEAN_RECOVERY_LOG;
use it::{
    broker_config, namesrv_config, raw, raw_client, route, wait_until, BrokerRole, ChildBroker,
};
use remoting::message::Message;

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const TOPIC: &str = "TopicPopCrash";
const GROUP: &str = "GID_pop_crash";
const N: usize = 40;

fn body(m: &ReceivedMessage) -> String {
    String::from_utf8(m.message.message.body.to_vec()).unwrap()
}

/// Whether `consumerOffset.json` under `root` records `offset` for both queues.
fn offsets_persisted(root: &std::path::Path, offset: i64) -> bool {
    let Ok(text) = std::fs::read_to_string(root.join("config").join("consumerOffset.json")) else {
        return false;
    };
    let Ok(v) = remoting::protocol::parse_fastjson(text.as_bytes()) else {
        return false;
    };
    let table = &v["offsetTable"][format!("{TOPIC}@{GROUP}")];
    (0..2).all(|q| table[q.to_string()].as_i64() == Some(offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_between_pop_and_ack_loses_nothing_and_redelivers_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let nsa = ns.local_addr();
    let mut config = broker_config(
        nsa,
        "C",
        "b1",
        0,
        BrokerRole::AsyncMaster,
        dir.path().join("b1-0"),
    );
    config.revive_interval = 100;
    let root = config.store_path_root_dir.clone();
    let mut master = ChildBroker::start(std::path::Path::new(IT_BROKER), config);
    let admin = raw_client();
    raw::create_topic(&admin, &master.addr, TOPIC, 2).await;
    wait_until("the topic's route", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { route(&admin, nsa, TOPIC).await.is_some() }
    })
    .await;

    let producer = Producer::start(
        client_config(nsa, Duration::from_millis(200), "pop-p"),
        ProducerConfig::new("PG_pop_crash"),
    )
    .await
    .unwrap();
    for i in 0..N {
        producer
            .send(Message::new(TOPIC, format!("m-{i:02}")))
            .await
            .unwrap();
    }
    let consumer = SimpleConsumer::start(
        client_config(nsa, Duration::from_millis(200), "pop-c"),
        SimpleConsumerConfig::new(GROUP).await_duration(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    consumer.subscribe(TOPIC, "*").await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < N && Instant::now() < deadline {
        got.extend(consumer.receive(32, Duration::from_secs(3)).await.unwrap());
    }
    assert_eq!(got.len(), N);
    let mut acked = BTreeSet::new();
    let mut unacked = BTreeSet::new();
    for (i, m) in got.iter().enumerate() {
        if i % 2 == 0 {
            consumer.ack(m).await.unwrap();
            acked.insert(body(m));
        } else {
            unacked.insert(body(m));
        }
    }
    wait_until("consume offsets persisted", Duration::from_secs(10), || {
        let root = root.clone();
        async move { offsets_persisted(&root, (N / 2) as i64) }
    })
    .await;

    master.sigkill();
    assert!(master.abort_marker_present());
    master.restart();
    master.wait_log(UNCLEAN_RECOVERY_LOG, Duration::from_secs(10));

    // Everything unacked comes back once (reconsume count 1); nothing acked does.
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.len() < unacked.len() && Instant::now() < deadline {
        match consumer.receive(32, Duration::from_secs(60)).await {
            Ok(ms) => back.extend(ms),
            // The consumer's connection died with the broker; it reconnects on the next try.
            Err(e) => eprintln!("receive during restart: {e}"),
        }
    }
    let names: BTreeSet<String> = back.iter().map(body).collect();
    assert_eq!(names, unacked, "unacked messages after the crash");
    assert_eq!(
        back.len(),
        unacked.len(),
        "an unacked message came back twice"
    );
    assert!(back.iter().all(|m| m.message.reconsume_times == 1));
    for m in &back {
        consumer.ack(m).await.unwrap();
    }
    let extra = consumer.receive(32, Duration::from_secs(60)).await.unwrap();
    assert!(
        extra.is_empty(),
        "redelivered after the crash: {:?}",
        extra.iter().map(body).collect::<Vec<_>>()
    );
    assert!(names.is_disjoint(&acked));

    consumer.shutdown().await;
    producer.shutdown().await;
    master.sigkill();
    ns.shutdown().await;
}
