//! Every send mode against a real broker, checked by a push consumer that must receive
//! every message exactly as sent.

mod support;

use std::collections::BTreeMap;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{Producer, ProducerConfig, SendStatus};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::message::{Message, MessageConst, MessageExt};
use support::{collect, Cluster};
use tokio::sync::mpsc;

async fn consumer(
    cluster: &Cluster,
    group: &str,
    topic: &str,
) -> (PushConsumer, mpsc::UnboundedReceiver<MessageExt>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let c = PushConsumer::start(
        cluster.client_config(),
        PushConsumerConfig::new(group).consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset),
        &[(topic, "*")],
        MessageListener::concurrently(move |msgs, _| {
            for m in msgs {
                tx.send(m.clone()).unwrap();
            }
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }),
    )
    .await
    .unwrap();
    (c, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_async_oneway_batch_and_compressed_sends_are_all_consumed() {
    let cluster = Cluster::start().await;
    cluster.create_topic("ModesTopic", 4).await;
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_modes"))
        .await
        .unwrap();

    let mut sent: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..5 {
        let body = format!("sync-{i}");
        let r = producer
            .send(
                Message::new("ModesTopic", body.clone())
                    .with_tags("TagA")
                    .with_keys([format!("k{i}")]),
            )
            .await
            .unwrap();
        assert_eq!(r.send_status, SendStatus::SendOk);
        assert_eq!(
            r.msg_id.len(),
            32,
            "UNIQ_KEY is 32 hex digits: {}",
            r.msg_id
        );
        assert_eq!(r.offset_msg_id.len(), 32);
        assert_eq!(r.message_queue.topic, "ModesTopic");
        sent.insert(body.clone(), body.into_bytes());
    }
    let mut handles = Vec::new();
    for i in 0..5 {
        let body = format!("async-{i}");
        handles.push(producer.send_async(Message::new("ModesTopic", body.clone())));
        sent.insert(body.clone(), body.into_bytes());
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().send_status, SendStatus::SendOk);
    }
    for i in 0..5 {
        let body = format!("oneway-{i}");
        producer
            .send_oneway(Message::new("ModesTopic", body.clone()))
            .await
            .unwrap();
        sent.insert(body.clone(), body.into_bytes());
    }
    let batch: Vec<Message> = (0..5)
        .map(|i| Message::new("ModesTopic", format!("batch-{i}")).with_tags("TagB"))
        .collect();
    for m in &batch {
        sent.insert(String::from_utf8(m.body.to_vec()).unwrap(), m.body.to_vec());
    }
    let r = producer.send_batch(batch).await.unwrap();
    assert_eq!(r.msg_id.split(',').count(), 5, "{}", r.msg_id);
    assert_eq!(r.offset_msg_id.split(',').count(), 5, "{}", r.offset_msg_id);
    // A body over 4 KiB travels compressed and comes back as sent.
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8 + b'a').collect();
    let mut big_key = String::from("big-");
    big_key.push_str(&big.len().to_string());
    producer
        .send(Message::new("ModesTopic", big.clone()).with_keys([big_key.clone()]))
        .await
        .unwrap();

    let (c, mut rx) = consumer(&cluster, "CG_modes", "ModesTopic").await;
    let got = collect(&mut rx, sent.len() + 1).await;
    let mut seen = BTreeMap::new();
    for m in &got {
        if m.message.keys().contains(&big_key.as_str()) {
            assert_eq!(&m.message.body[..], &big[..]);
            continue;
        }
        let key = String::from_utf8(m.message.body.to_vec()).unwrap();
        assert!(m
            .message
            .property(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .is_some());
        if key.starts_with("batch-") {
            assert_eq!(m.message.tags(), Some("TagB"));
        }
        assert!(
            seen.insert(key, m.message.body.to_vec()).is_none(),
            "duplicate"
        );
    }
    assert_eq!(seen, sent);
    c.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_send_to_an_unknown_topic_creates_it_through_tbw102() {
    let cluster = Cluster::start().await;
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_auto"))
        .await
        .unwrap();
    let r = producer
        .send(Message::new("AutoCreated", "hello"))
        .await
        .unwrap();
    assert_eq!(r.send_status, SendStatus::SendOk);
    cluster
        .await_route("AutoCreated", |r| !r.queue_datas.is_empty())
        .await;
    let queues = producer.fetch_publish_queues("AutoCreated").await.unwrap();
    assert_eq!(
        queues.len(),
        4,
        "defaultTopicQueueNums caps the auto-created topic"
    );
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timer_sends_are_consumed_at_their_time() {
    let cluster = Cluster::start().await;
    cluster.create_topic("TimerTopic", 2).await;
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_timer"))
        .await
        .unwrap();
    let (consumer, mut rx) = consumer(&cluster, "CG_timer", "TimerTopic").await;
    let sent_at = remoting::message::now_millis();
    let msgs = [
        Message::new("TimerTopic", "at").with_deliver_time_ms(sent_at + 1_200),
        Message::new("TimerTopic", "sec").with_delay_time_sec(1),
        Message::new("TimerTopic", "ms").with_delay_time_ms(1_500),
    ];
    for m in msgs {
        let r = producer.send(m).await.unwrap();
        assert_eq!(r.send_status, SendStatus::SendOk);
        assert_eq!(r.message_queue.topic, "TimerTopic");
    }
    let got = collect(&mut rx, 3).await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| {
            let out: i64 = m
                .message
                .property(MessageConst::PROPERTY_TIMER_OUT_MS)
                .and_then(|v| v.parse().ok())
                .expect("TIMER_OUT_MS");
            assert!(out >= sent_at + 1_000);
            assert!(m.store_timestamp >= out, "delivered early");
            String::from_utf8_lossy(&m.message.body).into_owned()
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["at", "ms", "sec"]);
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}
