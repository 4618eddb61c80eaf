//! The pull and lite-pull consumers against a real broker.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use client::consumer::lite_pull::{LitePullConsumer, LitePullConsumerConfig};
use client::consumer::pull::{PullConsumer, PullConsumerConfig};
use client::consumer::queues::PullStatus;
use client::{Producer, ProducerConfig};
use remoting::broker_headers::{ConsumeFromWhere, MessageQueue};
use remoting::message::{Message, MessageExt};
use support::{eventually, Cluster, DEADLINE};

async fn send_tagged(cluster: &Cluster, topic: &str, n: usize) -> Producer {
    let producer = Producer::start(cluster.client_config(), ProducerConfig::new("PG_pull"))
        .await
        .unwrap();
    for i in 0..n {
        let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
        producer
            .send(Message::new(topic, format!("m-{i}")).with_tags(tag))
            .await
            .unwrap();
    }
    producer
}

fn bodies(msgs: &[MessageExt]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pull_consumer_pulls_filters_blocks_and_stores_offsets() {
    let cluster = Cluster::start().await;
    cluster.create_topic("PullTopic", 1).await;
    let producer = send_tagged(&cluster, "PullTopic", 10).await;
    let consumer = PullConsumer::start(
        cluster.client_config(),
        PullConsumerConfig::new("CG_pull")
            .broker_suspend_max_time(Duration::from_secs(5))
            .register_topic("PullTopic"),
    )
    .await
    .unwrap();
    let queues = consumer
        .fetch_subscribe_message_queues("PullTopic")
        .await
        .unwrap();
    assert_eq!(queues, vec![MessageQueue::new("PullTopic", "broker-a", 0)]);
    let mq = &queues[0];
    // The broker indexes messages in the background.
    eventually("10 messages indexed", || async {
        consumer.max_offset(mq).await.unwrap() == 10
    })
    .await;
    assert_eq!(consumer.min_offset(mq).await.unwrap(), 0);

    let r = consumer.pull(mq, "TagA", 0, 32).await.unwrap();
    assert_eq!(r.pull_status, PullStatus::Found);
    assert_eq!(
        bodies(&r.msg_found_list),
        ["m-0", "m-2", "m-4", "m-6", "m-8"]
    );
    assert_eq!(r.next_begin_offset, 10);
    assert_eq!(r.max_offset, 10);
    let r = consumer.pull(mq, "*", 3, 2).await.unwrap();
    assert_eq!(bodies(&r.msg_found_list), ["m-3", "m-4"]);
    assert_eq!(r.next_begin_offset, 5);
    let r = consumer.pull(mq, "*", 10, 32).await.unwrap();
    assert_eq!(r.pull_status, PullStatus::NoNewMsg);
    assert!(r.msg_found_list.is_empty());

    // A blocking pull is answered as soon as a message arrives.
    let waiting = {
        let consumer = consumer.clone();
        let mq = mq.clone();
        tokio::spawn(async move { consumer.pull_block_if_not_found(&mq, "*", 10, 32).await })
    };
    let started = Instant::now();
    producer
        .send(Message::new("PullTopic", "late"))
        .await
        .unwrap();
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.pull_status, PullStatus::Found);
    assert_eq!(bodies(&r.msg_found_list), ["late"]);
    assert!(started.elapsed() < Duration::from_secs(4));

    // Offsets: stored on the broker by commit, read back by another instance.
    // A group with no offset yet reads 0 (or none), as upstream's broker answers.
    assert_eq!(
        consumer
            .fetch_consume_offset(mq)
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    consumer.update_consume_offset(mq, 7);
    consumer.commit().await;
    let other = PullConsumer::start(cluster.client_config(), PullConsumerConfig::new("CG_pull"))
        .await
        .unwrap();
    eventually("the committed offset", || async {
        other.fetch_consume_offset(mq).await.unwrap() == Some(7)
    })
    .await;

    // A failed message goes back to the group's retry topic.
    let first = consumer.pull(mq, "*", 0, 1).await.unwrap().msg_found_list;
    consumer.send_message_back(mq, &first[0], 1).await.unwrap();
    let retried = support::pull_all(&cluster, "%RETRY%CG_pull", 1).await;
    assert_eq!(bodies(&retried), ["m-0"]);
    assert_eq!(retried[0].reconsume_times, 1);

    other.shutdown().await;
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

/// Polls until `n` messages arrived; panics after the deadline.
async fn poll_n(consumer: &LitePullConsumer, n: usize) -> Vec<MessageExt> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} polled",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(200)).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lite_pull_assign_poll_commit_and_seek() {
    let cluster = Cluster::start().await;
    cluster.create_topic("LiteTopic", 2).await;
    let producer = send_tagged(&cluster, "LiteTopic", 12).await;
    let consumer = LitePullConsumer::start(
        cluster.client_config(),
        LitePullConsumerConfig::new("CG_lite_assign")
            .auto_commit(false)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset),
    )
    .await
    .unwrap();
    let queues = consumer.fetch_message_queues("LiteTopic").await.unwrap();
    assert_eq!(queues.len(), 2);
    consumer.assign(queues.clone()).await.unwrap();
    assert_eq!(consumer.assignment(), queues.iter().cloned().collect());
    let got = poll_n(&consumer, 12).await;
    let mut per_queue: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in &got {
        per_queue
            .entry(m.queue_id)
            .or_default()
            .push(m.queue_offset);
    }
    for offsets in per_queue.values() {
        assert_eq!(offsets, &(0..offsets.len() as i64).collect::<Vec<_>>());
    }
    assert_eq!(
        bodies(&got).into_iter().collect::<BTreeSet<_>>(),
        (0..12).map(|i| format!("m-{i}")).collect()
    );
    // Nothing is committed without commit_sync.
    let mq = &queues[0];
    assert_eq!(consumer.committed(mq).await.unwrap().unwrap_or(0), 0);
    consumer.commit_sync().await.unwrap();
    let total: i64 = {
        let mut sum = 0;
        for q in &queues {
            sum += consumer.committed(q).await.unwrap().unwrap();
        }
        sum
    };
    assert_eq!(total, 12);

    // Seek back: the queue is read again from there.
    let len = per_queue[&mq.queue_id].len();
    consumer.seek(mq, 1).await.unwrap();
    let again = poll_n(&consumer, len - 1).await;
    assert!(again.iter().all(|m| m.queue_id == mq.queue_id));
    assert_eq!(
        again.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
        (1..len as i64).collect::<Vec<_>>()
    );
    assert!(consumer.seek(mq, 1000).await.is_err());
    let not_mine = MessageQueue::new("LiteTopic", "broker-a", 99);
    assert!(consumer.seek(&not_mine, 0).await.is_err());
    consumer.seek_to_end(mq).await.unwrap();
    assert!(consumer.poll(Duration::from_millis(200)).await.is_empty());

    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lite_pull_subscribe_shares_queues_and_auto_commits() {
    let cluster = Cluster::start().await;
    cluster.create_topic("LiteSubTopic", 4).await;
    let mut members = Vec::new();
    for i in 0..2 {
        let c = LitePullConsumer::start(
            cluster.client_config().instance_name(format!("lite-{i}")),
            LitePullConsumerConfig::new("CG_lite_sub")
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .rebalance_interval(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        c.subscribe("LiteSubTopic", "TagA").await.unwrap();
        assert!(c.assign(Vec::new()).await.is_err(), "no mixing of modes");
        members.push(c);
    }
    eventually("two members to share four queues", || async {
        let a = members[0].assignment();
        let b = members[1].assignment();
        a.len() == 2 && b.len() == 2 && a.is_disjoint(&b)
    })
    .await;
    let producer = send_tagged(&cluster, "LiteSubTopic", 16).await;
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 8 {
        assert!(start.elapsed() < DEADLINE, "only {} of 8 polled", got.len());
        for c in &members {
            got.extend(c.poll(Duration::from_millis(100)).await);
        }
    }
    assert!(got.iter().all(|m| m.message.tags() == Some("TagA")));
    assert_eq!(
        bodies(&got).into_iter().collect::<BTreeSet<_>>(),
        (0..16).step_by(2).map(|i| format!("m-{i}")).collect()
    );
    // Auto commit: polled offsets reach the broker in the background.
    let queues = members[0]
        .fetch_message_queues("LiteSubTopic")
        .await
        .unwrap();
    // Offsets move as polls go on (past the filtered-out TagB tails too).
    eventually("auto-committed offsets", || async {
        for c in &members {
            assert!(c.poll(Duration::from_millis(20)).await.is_empty());
        }
        let mut sum = 0;
        for q in &queues {
            sum += support::committed_offset(&cluster, "CG_lite_sub", q)
                .await
                .unwrap_or(0);
        }
        sum == 16
    })
    .await;
    for c in &members {
        c.shutdown().await;
    }
    producer.shutdown().await;
    cluster.stop().await;
}
