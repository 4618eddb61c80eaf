//! Push consumers against a real broker: ordered consumption, broadcasting, and rebalance
//! as members join and leave.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, ConsumeOrderlyStatus, MessageListener, PushConsumer,
    PushConsumerConfig,
};
use client::producer::select_by_hash;
use client::{Producer, ProducerConfig};
use remoting::broker_headers::{ConsumeFromWhere, MessageModel, MessageQueue};
use remoting::message::{Message, MessageExt};
use support::{collect, eventually, Cluster};
use tokio::sync::mpsc;

fn body_of(m: &MessageExt) -> String {
    String::from_utf8(m.message.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orderly_consumption_keeps_order_per_queue_even_after_a_suspend() {
    let cluster = Cluster::start().await;
    cluster.create_topic("OrderTopic", 4).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let suspended_once = Arc::new(AtomicBool::new(false));
    let flag = suspended_once.clone();
    let consumer = PushConsumer::start(
        cluster.client_config(),
        PushConsumerConfig::new("CG_order")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .suspend_current_queue_time(Duration::from_millis(100)),
        &[("OrderTopic", "*")],
        MessageListener::orderly(move |msgs, _ctx| {
            for m in msgs {
                // The first message of order 0 fails once: the queue is suspended and the
                // same message comes again before anything after it.
                if body_of(m) == "order-0:0" && !flag.swap(true, Ordering::SeqCst) {
                    return ConsumeOrderlyStatus::SuspendCurrentQueueAMoment;
                }
                tx.send(m.clone()).unwrap();
            }
            ConsumeOrderlyStatus::Success
        }),
    )
    .await
    .unwrap();

    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_order"))
        .await
        .unwrap();
    const ORDERS: u64 = 6;
    const STEPS: u64 = 8;
    for step in 0..STEPS {
        for order in 0..ORDERS {
            let msg = Message::new("OrderTopic", format!("order-{order}:{step}"));
            let r = producer
                .send_with_selector(msg, |qs, _| select_by_hash(qs, order))
                .await
                .unwrap();
            assert_eq!(r.message_queue.queue_id as u64, order % 4);
        }
    }
    let got = collect(&mut rx, (ORDERS * STEPS) as usize).await;
    assert!(suspended_once.load(Ordering::SeqCst));
    let mut steps: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut queue_offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in &got {
        let body = body_of(m);
        let (order, step) = body.split_once(':').unwrap();
        steps
            .entry(order.to_string())
            .or_default()
            .push(step.parse().unwrap());
        queue_offsets
            .entry(m.queue_id)
            .or_default()
            .push(m.queue_offset);
    }
    for (order, s) in &steps {
        assert_eq!(s, &(0..STEPS).collect::<Vec<_>>(), "{order}");
    }
    for (q, offsets) in &queue_offsets {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "queue {q}: {offsets:?}"
        );
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broadcasting_delivers_every_message_to_every_member() {
    let cluster = Cluster::start().await;
    cluster.create_topic("BroadcastTopic", 2).await;
    let offsets_dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for i in 0..3 {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = PushConsumer::start(
            cluster.client_config().instance_name(format!("member-{i}")),
            PushConsumerConfig::new("CG_broadcast")
                .message_model(MessageModel::Broadcasting)
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .local_offset_store_dir(offsets_dir.path()),
            &[("BroadcastTopic", "*")],
            MessageListener::concurrently(move |msgs, _| {
                for m in msgs {
                    tx.send(body_of(m)).unwrap();
                }
                ConsumeConcurrentlyStatus::ConsumeSuccess
            }),
        )
        .await
        .unwrap();
        members.push((c, rx));
    }
    for (c, _) in &members {
        let c = c.clone();
        eventually("a member owns every queue", move || {
            let c = c.clone();
            async move {
                c.assigned_queues()
                    .iter()
                    .filter(|q| q.topic == "BroadcastTopic")
                    .count()
                    == 2
            }
        })
        .await;
    }
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_broadcast"))
        .await
        .unwrap();
    let sent: BTreeSet<String> = (0..10).map(|i| format!("news-{i}")).collect();
    for b in &sent {
        producer
            .send(Message::new("BroadcastTopic", b.clone()))
            .await
            .unwrap();
    }
    for (c, rx) in &mut members {
        let got: BTreeSet<String> = collect(rx, sent.len()).await.into_iter().collect();
        assert_eq!(got, sent, "member {}", c.client_id());
    }
    for (c, _) in &members {
        c.shutdown().await;
    }
    // Broadcasting offsets live in local files, one per client.
    let files = std::fs::read_dir(offsets_dir.path()).unwrap().count();
    assert_eq!(files, 3);
    producer.shutdown().await;
    cluster.stop().await;
}

/// Owned queues of `topic` per member.
fn ownership(members: &[PushConsumer], topic: &str) -> Vec<BTreeSet<MessageQueue>> {
    members
        .iter()
        .map(|c| {
            c.assigned_queues()
                .into_iter()
                .filter(|q| q.topic == topic)
                .collect()
        })
        .collect()
}

/// Waits until the members own every queue of `topic` exactly once, evenly.
async fn await_balanced(members: &[PushConsumer], topic: &str, all: &BTreeSet<MessageQueue>) {
    let what = format!("{} members to share {} queues", members.len(), all.len());
    eventually(&what, || async {
        let owned = ownership(members, topic);
        let total: usize = owned.iter().map(|o| o.len()).sum();
        let union: BTreeSet<MessageQueue> = owned.iter().flatten().cloned().collect();
        let even = owned.iter().all(|o| {
            o.len() == all.len() / members.len() || o.len() == all.len().div_ceil(members.len())
        });
        total == all.len() && &union == all && even
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_as_members_join_and_leave_owns_each_queue_once() {
    let cluster = Cluster::start().await;
    cluster.create_topic("BalanceTopic", 8).await;
    let all: BTreeSet<MessageQueue> = (0..8)
        .map(|q| MessageQueue::new("BalanceTopic", "broker-a", q))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = |i: usize| {
        let tx = tx.clone();
        let config = cluster
            .client_config()
            .instance_name(format!("balance-{i}"));
        async move {
            PushConsumer::start(
                config,
                PushConsumerConfig::new("CG_balance")
                    .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                    .rebalance_interval(Duration::from_secs(1)),
                &[("BalanceTopic", "*")],
                MessageListener::concurrently(move |msgs, _| {
                    for m in msgs {
                        tx.send(body_of(m)).unwrap();
                    }
                    ConsumeConcurrentlyStatus::ConsumeSuccess
                }),
            )
            .await
            .unwrap()
        }
    };
    let mut members = vec![start(0).await];
    await_balanced(&members, "BalanceTopic", &all).await;
    members.push(start(1).await);
    await_balanced(&members, "BalanceTopic", &all).await;
    members.push(start(2).await);
    await_balanced(&members, "BalanceTopic", &all).await;
    let leaving = members.remove(1);
    leaving.shutdown().await;
    await_balanced(&members, "BalanceTopic", &all).await;

    // The remaining members consume everything sent now.
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_balance"))
        .await
        .unwrap();
    let sent: BTreeSet<String> = (0..32).map(|i| format!("m-{i}")).collect();
    for b in &sent {
        producer
            .send(Message::new("BalanceTopic", b.clone()))
            .await
            .unwrap();
    }
    let mut got = BTreeSet::new();
    while got.len() < sent.len() {
        got.extend(collect(&mut rx, 1).await);
    }
    assert_eq!(got, sent);
    for c in &members {
        c.shutdown().await;
    }
    producer.shutdown().await;
    cluster.stop().await;
}
