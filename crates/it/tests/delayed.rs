//! Delayed messages across a master's absence: a message waiting in b1's delay queue when
//! b1's master dies is delivered by b1's slave (acting master) to b2 when it is due; when
//! b1's master returns it learns the slave's delay progress and does not deliver that
//! message again, while the slave hands delayed delivery back to it.

use std::collections::BTreeMap;
use std::time::Duration;

use it::{
    cluster_broker_config, raw, raw_client, start_namesrv, wait_until, BrokerNode, BrokerRole,
};
use remoting::client::RemotingClient;
use remoting::message::MessageConst;
use remoting::protocol::from_fastjson;
use remoting::{RequestCode, ResponseCode};

const TOPIC: &str = "TopicDelayed";
const SCHEDULE: &str = "SCHEDULE_TOPIC_XXXX";
const WAIT: Duration = Duration::from_secs(20);

/// GET_ALL_DELAY_OFFSET's body.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct DelayOffsets {
    offset_table: BTreeMap<i32, i64>,
}

/// Level 1's delay progress on `broker` (-1 when it does not answer).
async fn level_one_progress(client: &RemotingClient, broker: &str) -> i64 {
    let Some(body) = raw::body_of(client, broker, RequestCode::GET_ALL_DELAY_OFFSET).await else {
        return -1;
    };
    let d: DelayOffsets = from_fastjson(&body).unwrap();
    d.offset_table.get(&1).copied().unwrap_or(0)
}

async fn send_delayed(client: &RemotingClient, broker: &str, body: &str) {
    let r = raw::send_with(
        client,
        broker,
        TOPIC,
        0,
        body.as_bytes(),
        &[(MessageConst::PROPERTY_DELAY_TIME_LEVEL, "1")],
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
}

async fn wait_max_offset(
    client: &RemotingClient,
    broker: &str,
    topic: &str,
    want: i64,
    what: &str,
) {
    wait_until(what, WAIT, || {
        let (c, b, t) = (client.clone(), broker.to_string(), topic.to_string());
        async move { raw::max_offset(&c, &b, &t, 0).await >= want }
    })
    .await;
}

async fn bodies(client: &RemotingClient, broker: &str) -> Vec<String> {
    raw::pull(client, broker, "G", TOPIC, 0, 0)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_slave_delivers_due_messages_and_the_returning_master_does_not_repeat_them() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv(Duration::from_secs(3)).await;
    let nsa = ns.local_addr();
    // Level 1 leaves time to kill the master before the message is due.
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        cluster_broker_config(nsa, dir.path(), (name, id, role), "2s 2s 2s")
    };
    let mut m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::AsyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    let client = raw_client();
    for m in [&m1, &m2] {
        raw::create_topic(&client, &m.addr, TOPIC, 1).await;
    }

    send_delayed(&client, &m1.addr, "first").await;
    wait_max_offset(
        &client,
        &s1.addr,
        SCHEDULE,
        1,
        "the slave to replicate the delay queue",
    )
    .await;
    m1.kill();
    // Due 2 s after it was stored: the slave delivers it to b2.
    wait_max_offset(&client, &m2.addr, TOPIC, 1, "the slave to deliver it to b2").await;
    assert_eq!(bodies(&client, &m2.addr).await, vec!["first".to_string()]);
    let delivered = raw::pull(&client, &m2.addr, "G", TOPIC, 0, 0).await;
    assert_eq!(
        delivered[0]
            .message
            .property(MessageConst::PROPERTY_DELAY_TIME_LEVEL),
        None
    );
    assert_eq!(level_one_progress(&client, &s1.addr).await, 1);

    // The master returns with its own (older) progress and learns the slave's.
    m1.restart();
    wait_until("the master to learn the slave's progress", WAIT, || {
        let (c, a) = (client.clone(), m1.addr.clone());
        async move { level_one_progress(&c, &a).await >= 1 }
    })
    .await;
    // A later delayed message is delivered by the master (in level order: after the first,
    // had it been delivered again), and only by the master.
    send_delayed(&client, &m1.addr, "second").await;
    wait_max_offset(
        &client,
        &m1.addr,
        TOPIC,
        1,
        "the master to deliver the second",
    )
    .await;
    assert_eq!(bodies(&client, &m1.addr).await, vec!["second".to_string()]);
    wait_max_offset(
        &client,
        &s1.addr,
        TOPIC,
        1,
        "the slave to replicate the delivery",
    )
    .await;
    assert_eq!(raw::max_offset(&client, &m2.addr, TOPIC, 0).await, 1);
    assert!(ns.unsupported_request_counts().is_empty());
    drop((s1, m2, m1));
    ns.shutdown().await;
}
