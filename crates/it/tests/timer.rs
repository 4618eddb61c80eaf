//! Timer messages across crashes and replication.
//!
//! **SIGKILL during delivery** ([`sigkill_during_timer_delivery`]): a master in its own
//! process (`it-broker`) holds timer messages due over a few seconds and is SIGKILLed while
//! delivering them. After its restart every message is delivered (none lost), none before its
//! time, and a message delivered twice is one the checkpoint on disk at the kill did not
//! vouch for (the documented duplicate window).
//!
//! **Slave takes over** ([`slave_restarted_as_master_goes_on_from_the_masters_checkpoint`]):
//! a slave keeps its master's timer checkpoint (GET_TIMER_CHECK_POINT, 60); the master stops
//! for good and the slave is restarted as the group's master on its own store: the messages
//! the master had not delivered are delivered by it, none early, and none the synced
//! checkpoint vouched for is delivered again.
//!
//! **Acting master** ([`the_acting_slave_delivers_and_the_returning_master_does_not_repeat`]):
//! a timer message waiting on b1 when b1's master dies is delivered by b1's slave to b2 at its
//! time; b1's master returns, takes the slave's checkpoint and does not deliver it again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use it::{
    broker_config, cluster_broker_config, namesrv_config, raw, raw_client, start_namesrv,
    wait_until, BrokerNode, BrokerRole, ChildBroker,
};
use remoting::client::RemotingClient;
use remoting::message::{now_millis, MessageConst, MessageExt};
use remoting::{RequestCode, ResponseCode};
use serde::Deserialize;

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const TOPIC: &str = "TopicTimer";
const GROUP: &str = "GroupTimerCheck";
const WAIT: Duration = Duration::from_secs(30);

/// The fields of `config/timerCheckpoint.json` the assertions use.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Checkpoint {
    low_water_offset: i64,
    delivered_up_to_ms: i64,
    scanned_offset: i64,
}

impl Checkpoint {
    fn read(store: &Path) -> Checkpoint {
        let path = store.join("config").join("timerCheckpoint.json");
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// What the broker skips on restart (see `broker::timer`).
    fn vouches_for(&self, timer_offset: i64, deliver_ms: i64) -> bool {
        timer_offset < self.low_water_offset
            || (timer_offset < self.scanned_offset && deliver_ms <= self.delivered_up_to_ms)
    }
}

/// Sends timer messages `keys` (sent one at a time to an empty timer queue, so a key is the
/// message's timer-queue offset), due `first_ms` + i * `step_ms` from now; returns each one's
/// due time.
async fn send_timers(
    client: &RemotingClient,
    broker: &str,
    keys: std::ops::Range<i64>,
    first_ms: i64,
    step_ms: i64,
) -> Vec<i64> {
    let base = now_millis() + first_ms;
    let mut due = Vec::new();
    for (i, k) in keys.enumerate() {
        let at = base + i as i64 * step_ms;
        let key = k.to_string();
        let at_text = at.to_string();
        let r = raw::send_with(
            client,
            broker,
            TOPIC,
            0,
            key.as_bytes(),
            &[
                (MessageConst::PROPERTY_KEYS, &key),
                (MessageConst::PROPERTY_TIMER_DELIVER_MS, &at_text),
            ],
        )
        .await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        due.push(at);
    }
    due
}

/// Every message of queue 0 of the topic on `broker`.
async fn delivered(client: &RemotingClient, broker: &str) -> Vec<MessageExt> {
    let mut all = Vec::new();
    loop {
        let got = raw::pull(client, broker, GROUP, TOPIC, 0, all.len() as i64).await;
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// Key -> delivery count; asserts none was delivered before its time.
fn tally(msgs: &[MessageExt], due: &[i64]) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for m in msgs {
        let key: i64 = m
            .message
            .property(MessageConst::PROPERTY_KEYS)
            .and_then(|k| k.parse().ok())
            .expect("key");
        let at = due[key as usize];
        assert!(
            m.store_timestamp >= at,
            "message {key} delivered {} ms early",
            at - m.store_timestamp
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_timer_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let mut config = broker_config(
        ns.local_addr(),
        "C",
        "b1",
        0,
        BrokerRole::AsyncMaster,
        dir.path().join("b1-0"),
    );
    config.timer_precision_ms = 100;
    let store = config.store_path_root_dir.clone();
    let mut m = ChildBroker::start(Path::new(IT_BROKER), config);
    let client = raw_client();
    raw::create_topic(&client, &m.addr, TOPIC, 1).await;
    let n = 200;
    let due = send_timers(&client, &m.addr, 0..n, 1_500, 20).await;

    // Killed in the middle of the deliveries.
    wait_until("a third delivered", WAIT, || {
        let (client, addr) = (client.clone(), m.addr.clone());
        async move { delivered(&client, &addr).await.len() as i64 >= n / 3 }
    })
    .await;
    m.sigkill();
    let checkpoint = Checkpoint::read(&store);
    assert!(checkpoint.scanned_offset > 0, "{checkpoint:?}");
    m.restart();

    wait_until("every timer message delivered", WAIT, || {
        let (client, addr, due) = (client.clone(), m.addr.clone(), due.clone());
        async move { tally(&delivered(&client, &addr).await, &due).len() as i64 == n }
    })
    .await;
    let seen = tally(&delivered(&client, &m.addr).await, &due);
    let again: Vec<i64> = seen
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&k, _)| k)
        .collect();
    println!("delivered twice after the SIGKILL: {} of {n}", again.len());
    for k in again {
        assert!(
            !checkpoint.vouches_for(k, due[k as usize]),
            "message {k} delivered again though the checkpoint {checkpoint:?} vouched for it"
        );
    }
    drop(m);
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_restarted_as_master_goes_on_from_the_masters_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let nsa = ns.local_addr();
    let cfg = |id: i64, role: BrokerRole| {
        let mut c = broker_config(
            nsa,
            "C",
            "b1",
            id,
            role,
            dir.path().join(format!("b1-{id}")),
        );
        c.timer_precision_ms = 100;
        c
    };
    let mut master = BrokerNode::start(cfg(0, BrokerRole::AsyncMaster));
    let mut slave = BrokerNode::start(cfg(1, BrokerRole::Slave));
    let slave_store = slave.config().store_path_root_dir.clone();
    let client = raw_client();
    raw::create_topic(&client, &master.addr, TOPIC, 1).await;
    // The first half due within a second, the second half in 8 s or more.
    let mut due = send_timers(&client, &master.addr, 0..10, 300, 50).await;
    let late = send_timers(&client, &master.addr, 10..20, 8_000, 50).await;
    due.extend(late);
    wait_until("the first half delivered by the master", WAIT, || {
        let (client, addr) = (client.clone(), master.addr.clone());
        async move { delivered(&client, &addr).await.len() >= 10 }
    })
    .await;
    let first_half_due = due_max(&due[..10]);
    wait_until("the slave to hold the master's checkpoint", WAIT, || {
        let store = slave_store.clone();
        async move { Checkpoint::read(&store).delivered_up_to_ms >= first_half_due }
    })
    .await;
    master.stop();
    slave.stop();
    let synced = Checkpoint::read(&slave_store);
    assert!(synced.vouches_for(9, due[9]), "{synced:?}");

    // The slave's store, now the group's master.
    let mut promoted = slave.config().clone();
    promoted.broker_id = 0;
    promoted.broker_role = BrokerRole::AsyncMaster;
    let new_master = BrokerNode::start(promoted);
    wait_until(
        "the second half delivered by the promoted slave",
        WAIT,
        || {
            let (client, addr, due) = (client.clone(), new_master.addr.clone(), due.clone());
            async move { tally(&delivered(&client, &addr).await, &due).len() == 20 }
        },
    )
    .await;
    let seen = tally(&delivered(&client, &new_master.addr).await, &due);
    // The first half came from the master (replicated), not again from the promoted slave.
    for (k, count) in seen {
        assert_eq!(count, 1, "message {k}");
    }
    drop(new_master);
    ns.shutdown().await;
}

fn due_max(due: &[i64]) -> i64 {
    due.iter().copied().max().unwrap_or(0)
}

/// `deliveredUpToMs` of the timer checkpoint `broker` answers (GET_TIMER_CHECK_POINT, first
/// 8 bytes); -1 when it does not answer.
async fn delivered_up_to(client: &RemotingClient, broker: &str) -> i64 {
    raw::body_of(client, broker, RequestCode::GET_TIMER_CHECK_POINT)
        .await
        .and_then(|b| Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?)))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_slave_delivers_and_the_returning_master_does_not_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let ns = start_namesrv(Duration::from_secs(3)).await;
    let nsa = ns.local_addr();
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        let mut c = cluster_broker_config(nsa, dir.path(), (name, id, role), "1s");
        c.timer_precision_ms = 100;
        c
    };
    let mut m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::AsyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    let client = raw_client();
    for m in [&m1, &m2] {
        raw::create_topic(&client, &m.addr, TOPIC, 1).await;
    }
    let mut due = send_timers(&client, &m1.addr, 0..1, 4_000, 0).await;
    wait_until("the slave to replicate the timer queue", WAIT, || {
        let (c, a) = (client.clone(), s1.addr.clone());
        async move { raw::max_offset(&c, &a, "rmq_sys_wheel_timer", 0).await >= 1 }
    })
    .await;
    m1.kill();
    wait_until("the acting slave to deliver it to b2", WAIT, || {
        let (c, a) = (client.clone(), m2.addr.clone());
        async move { !delivered(&c, &a).await.is_empty() }
    })
    .await;
    assert_eq!(
        tally(&delivered(&client, &m2.addr).await, &due),
        [(0, 1)].into()
    );

    // The master returns with its older checkpoint and takes the slave's.
    m1.restart();
    wait_until(
        "the master to take the slave's timer checkpoint",
        WAIT,
        || {
            let (c, a, at) = (client.clone(), m1.addr.clone(), due[0]);
            async move { delivered_up_to(&c, &a).await >= at }
        },
    )
    .await;
    // A later timer message is delivered by the master, and the first is not again.
    due.extend(send_timers(&client, &m1.addr, 1..2, 300, 0).await);
    wait_until("the master to deliver the second", WAIT, || {
        let (c, a) = (client.clone(), m1.addr.clone());
        async move { !delivered(&c, &a).await.is_empty() }
    })
    .await;
    assert_eq!(
        tally(&delivered(&client, &m1.addr).await, &due),
        [(1, 1)].into()
    );
    assert_eq!(
        tally(&delivered(&client, &m2.addr).await, &due),
        [(0, 1)].into()
    );
    drop((s1, m2, m1));
    ns.shutdown().await;
}
