//! The retry paths of a failed message in clustering mode, against a real broker:
//! CONSUMER_SEND_MSG_BACK to the master, the producer-path fallback when the consumer's route
//! has no master for the message's group, and the DLQ after the maximum reconsume times.

mod support;

use std::time::Duration;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::consumer::send_back::SendBackCounts;
use client::{Producer, ProducerConfig};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::message::{Message, MessageConst, MessageExt};
use support::{collect, Cluster};
use tokio::sync::mpsc;

/// A consumer of `topic` that fails every delivery with `reconsume_times < succeed_at` and
/// reports every delivery.
async fn failing_consumer(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    succeed_at: i32,
    max_reconsume_times: i32,
) -> (PushConsumer, mpsc::UnboundedReceiver<MessageExt>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let c = PushConsumer::start(
        cluster.client_config(),
        PushConsumerConfig::new(group)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .max_reconsume_times(max_reconsume_times),
        &[(topic, "*")],
        MessageListener::concurrently(move |msgs, _| {
            let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
            for m in msgs {
                tx.send(m.clone()).unwrap();
                if m.reconsume_times < succeed_at {
                    status = ConsumeConcurrentlyStatus::ReconsumeLater;
                }
            }
            status
        }),
    )
    .await
    .unwrap();
    (c, rx)
}

/// Checks what a redelivered message must carry after `n` failures of `original`.
/// `ORIGIN_MESSAGE_ID` is set where the first retry copy is made: by the broker (the stored
/// message's offset id) on the send-back path, by the client (the message id, `UNIQ_KEY`)
/// on the fallback path, both as upstream does.
fn assert_redelivered(
    original: &MessageExt,
    again: &MessageExt,
    topic: &str,
    n: i32,
    origin: &str,
) {
    assert_eq!(again.reconsume_times, n, "reconsume times");
    assert_eq!(again.message.topic, topic, "original topic restored");
    assert_eq!(again.message.body, original.message.body);
    assert_eq!(again.message.tags(), original.message.tags());
    assert_eq!(again.message.keys(), original.message.keys());
    let p = |k| again.message.property(k);
    assert_eq!(
        p(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
        Some(origin),
        "ORIGIN_MESSAGE_ID"
    );
    assert_eq!(p(MessageConst::PROPERTY_RETRY_TOPIC), Some(topic));
    assert_eq!(
        again.message.uniq_key(),
        original.message.uniq_key(),
        "UNIQ_KEY kept"
    );
    assert_eq!(again.msg_id(), original.msg_id());
    assert!(p(MessageConst::PROPERTY_TRANSACTION_PREPARED).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconsume_later_goes_through_send_back_to_the_master() {
    let cluster = Cluster::start().await;
    cluster.create_topic("RetryTopic", 2).await;
    let (consumer, mut rx) = failing_consumer(&cluster, "CG_retry", "RetryTopic", 2, 16).await;
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_retry"))
        .await
        .unwrap();
    producer
        .send(
            Message::new("RetryTopic", "fail twice")
                .with_tags("TagR")
                .with_keys(["order-1"]),
        )
        .await
        .unwrap();
    let got = collect(&mut rx, 3).await;
    let first = &got[0];
    assert_eq!(first.reconsume_times, 0);
    assert_eq!(first.message.topic, "RetryTopic");
    for (n, again) in got.iter().enumerate().skip(1) {
        assert_redelivered(first, again, "RetryTopic", n as i32, &first.offset_msg_id);
    }
    assert_eq!(
        consumer.send_back_counts(),
        SendBackCounts {
            sent_back: 2,
            resent: 0,
            failed: 0
        }
    );
    // Nothing more comes: the third delivery succeeded.
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv())
        .await
        .is_err());
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_master_in_the_route_the_message_is_resent_through_the_producer_path() {
    let cluster = Cluster::start().await;
    cluster.create_topic("FallbackTopic", 1).await;
    let (consumer, mut rx) =
        failing_consumer(&cluster, "CG_fallback", "FallbackTopic", 1, 16).await;
    // The consumer's route of the topic lists broker-a with only a "slave" (id 1), which is
    // the real broker serving pulls: the situation of upstream issue #8963.
    pin_masterless(&consumer, "FallbackTopic");

    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_fallback"))
        .await
        .unwrap();
    producer
        .send(
            Message::new("FallbackTopic", "fail once")
                .with_tags("TagF")
                .with_keys(["order-2"]),
        )
        .await
        .unwrap();
    let got = collect(&mut rx, 2).await;
    let (first, again) = (&got[0], &got[1]);
    assert_eq!(first.reconsume_times, 0);
    assert_redelivered(first, again, "FallbackTopic", 1, first.msg_id());
    let p = |k| again.message.property(k);
    assert_eq!(p(MessageConst::PROPERTY_RECONSUME_TIME), Some("1"));
    assert_eq!(p(MessageConst::PROPERTY_MAX_RECONSUME_TIMES), Some("16"));
    // Zero CONSUMER_SEND_MSG_BACK: the fallback re-sent it.
    assert_eq!(
        consumer.send_back_counts(),
        SendBackCounts {
            sent_back: 0,
            resent: 1,
            failed: 0
        }
    );
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

/// A message is dead-lettered when it fails with reconsume times already at the maximum,
/// by the same rule on the send-back path (broker: stored times >= max) and on the fallback
/// path (broker: re-sent `RECONSUME_TIME` = times + 1 > max): with a maximum of 0, both
/// deliver once and then dead-letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_reconsume_times_leads_to_the_dlq_on_both_paths() {
    let cluster = Cluster::start().await;
    for (topic, group, pin, max) in [
        ("DlqTopic", "CG_dlq", false, 2),
        ("DlqZeroTopic", "CG_dlq_zero", false, 0),
        ("DlqFbTopic", "CG_dlq_fb", true, 0),
    ] {
        cluster.create_topic(topic, 1).await;
        let (consumer, mut rx) = failing_consumer(&cluster, group, topic, i32::MAX, max).await;
        if pin {
            pin_masterless(&consumer, topic);
        }
        let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_dlq"))
            .await
            .unwrap();
        producer
            .send(Message::new(topic, "always fails").with_keys(["dead"]))
            .await
            .unwrap();
        // Delivered with reconsume times 0..=max, then dead-lettered.
        let got = collect(&mut rx, max as usize + 1).await;
        let times: Vec<i32> = got.iter().map(|m| m.reconsume_times).collect();
        assert_eq!(times, (0..=max).collect::<Vec<_>>(), "{topic}");
        let dlq = format!("%DLQ%{group}");
        cluster
            .await_route(&dlq, |r| !r.queue_datas.is_empty())
            .await;
        let dead = support::pull_all(&cluster, &dlq, 1).await;
        assert_eq!(dead.len(), 1, "{topic}");
        assert_eq!(&dead[0].message.body[..], b"always fails");
        let origin = if pin {
            got[0].msg_id()
        } else {
            got[0].offset_msg_id.as_str()
        };
        assert_eq!(
            dead[0]
                .message
                .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some(origin),
            "{topic}"
        );
        assert_eq!(dead[0].message.uniq_key(), got[0].message.uniq_key());
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err());
        let counts = consumer.send_back_counts();
        assert_eq!(counts.failed, 0);
        assert_eq!(counts.sent_back + counts.resent, max as u64 + 1);
        if pin {
            assert_eq!(counts.resent, 1, "the fallback path was taken");
        }
        consumer.shutdown().await;
        producer.shutdown().await;
    }
    cluster.stop().await;
}

/// Makes the consumer's route of `topic` list every group without a master: the real
/// broker is listed as slave 1 (it serves pulls, but nothing is sent to a master).
fn pin_masterless(consumer: &PushConsumer, topic: &str) {
    let mut route = consumer.topic_route(topic).unwrap();
    for bd in &mut route.broker_datas {
        let master = bd.broker_addrs.remove(&0).unwrap();
        bd.broker_addrs.insert(1, master);
    }
    consumer.pin_route(topic, route);
}

/// Neither a send-back nor a re-send is possible (no master anywhere in the consumer's
/// routes): the message is consumed again locally, and the queue's offset is not committed
/// past it meanwhile, even when later messages succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_both_paths_fail_the_message_is_retried_locally_and_its_offset_held() {
    let cluster = Cluster::start().await;
    cluster.create_topic("LocalRetryTopic", 1).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate_rx = std::sync::Mutex::new(gate_rx);
    let consumer = PushConsumer::start(
        cluster.client_config(),
        PushConsumerConfig::new("CG_local")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .local_retry_delay(Duration::from_millis(100)),
        &[("LocalRetryTopic", "*")],
        MessageListener::concurrently(move |msgs, _| {
            let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
            for m in msgs {
                tx.send(m.clone()).unwrap();
                if &m.message.body[..] == b"held" {
                    match m.reconsume_times {
                        0 => status = ConsumeConcurrentlyStatus::ReconsumeLater,
                        // The second attempt waits for the test, then succeeds.
                        _ => gate_rx.lock().unwrap().recv().unwrap(),
                    }
                }
            }
            status
        }),
    )
    .await
    .unwrap();
    let retry = "%RETRY%CG_local";
    support::eventually("the retry topic route", || async {
        consumer.topic_route(retry).is_some()
    })
    .await;
    pin_masterless(&consumer, "LocalRetryTopic");
    pin_masterless(&consumer, retry);

    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_local"))
        .await
        .unwrap();
    for body in ["held", "after"] {
        producer
            .send(Message::new("LocalRetryTopic", body))
            .await
            .unwrap();
    }
    let got = collect(&mut rx, 3).await;
    let mut seen: Vec<(String, i32)> = got
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.message.body.to_vec()).unwrap(),
                m.reconsume_times,
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("after".to_string(), 0),
            ("held".to_string(), 0),
            ("held".to_string(), 1)
        ]
    );
    assert_eq!(
        consumer.send_back_counts(),
        SendBackCounts {
            sent_back: 0,
            resent: 0,
            failed: 1
        }
    );
    // While "held" is being consumed again, the queue's committed offset stays before it
    // although "after" succeeded (several persist rounds pass meanwhile).
    let mq = remoting::broker_headers::MessageQueue::new("LocalRetryTopic", "broker-a", 0);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let committed = support::committed_offset(&cluster, "CG_local", &mq).await;
        assert_eq!(committed.unwrap_or(0), 0);
    }
    gate_tx.send(()).unwrap();
    support::eventually("the offset past both messages", || async {
        support::committed_offset(&cluster, "CG_local", &mq).await == Some(2)
    })
    .await;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}
