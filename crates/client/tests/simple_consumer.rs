//! The POP-based simple consumer against two real broker groups: receive, ack, messages not
//! acked in time handed out again with their reconsume count raised, a stale ack refused,
//! and a change of invisible duration that keeps a message away.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client::consumer::simple::{ReceivedMessage, SimpleConsumer, SimpleConsumerConfig};
use client::{ClientError, Producer, ProducerConfig};
use remoting::message::Message;
use remoting::ResponseCode;
use support::Cluster;

fn body(m: &ReceivedMessage) -> String {
    String::from_utf8(m.message.message.body.to_vec()).unwrap()
}

/// Receives until `n` messages came (or 20 s passed).
async fn receive_n(c: &SimpleConsumer, n: usize, invisible: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.receive(32, invisible).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receive_ack_redeliver_and_change_invisible_duration() {
    let cluster = Cluster::start_groups(&["broker-a", "broker-b"]).await;
    cluster.create_topic("SimpleTopic", 2).await;
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_simple"))
        .await
        .unwrap();
    for i in 0..20 {
        producer
            .send(Message::new("SimpleTopic", format!("s-{i:02}")))
            .await
            .unwrap();
    }
    let consumer = SimpleConsumer::start(
        cluster.client_config(),
        SimpleConsumerConfig::new("GID_simple").await_duration(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    consumer.subscribe("SimpleTopic", "*").await.unwrap();

    let got = receive_n(&consumer, 20, Duration::from_secs(2)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        *seen.entry(body(m)).or_default() += 1;
    }
    assert_eq!(seen.len(), 20, "{seen:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "a message was handed out twice: {seen:?}"
    );
    let brokers: std::collections::BTreeSet<_> = got.iter().map(|m| m.broker.to_string()).collect();
    assert_eq!(brokers.len(), 2, "both groups served");

    // Every 5th is not acked; one of the others gets a minute more before its ack.
    let mut kept = None;
    let mut skipped = Vec::new();
    for m in got {
        if body(&m).ends_with('0') || body(&m).ends_with('5') {
            skipped.push(m);
        } else if kept.is_none() {
            kept = Some(m);
        } else {
            consumer.ack(&m).await.unwrap();
        }
    }
    let mut kept = kept.unwrap();
    consumer
        .change_invisible_duration(&mut kept, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(skipped.len(), 4);

    // The four come back (reconsume count 1); the kept one does not.
    let again = receive_n(&consumer, 4, Duration::from_secs(30)).await;
    let mut names: Vec<String> = again.iter().map(body).collect();
    names.sort();
    let mut expected: Vec<String> = skipped.iter().map(body).collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(again.iter().all(|m| m.message.reconsume_times == 1));
    // One BATCH_ACK_MESSAGE per broker; a second batch ack of the same is refused.
    consumer.ack_batch(&again).await.unwrap();
    match consumer.ack_batch(&again).await {
        Err(ClientError::Broker { code, .. }) => assert_eq!(code, ResponseCode::NO_MESSAGE),
        other => panic!("a stale batch ack answered {other:?}"),
    }
    // Their first handles are stale now.
    match consumer.ack(&skipped[0]).await {
        Err(ClientError::Broker { code, .. }) => assert_eq!(code, ResponseCode::NO_MESSAGE),
        other => panic!("stale ack answered {other:?}"),
    }
    consumer.ack(&kept).await.unwrap();
    assert!(consumer
        .receive(32, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());

    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}
