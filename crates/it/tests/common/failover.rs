//! What the failover scenario files (`failover.rs`, in-process brokers; `crash_failover.rs`,
//! SIGKILLed child brokers; `simulate.rs`, seeded faults) share: the consumer's in-flight
//! window, acknowledged sends, the consumption log, and waiting for the NameServer to name
//! b1's master.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client::producer::SendStatus;
use client::Producer;
use it::{raw_client, route, wait_until};
use remoting::message::{Message, MessageConst, MessageExt};
use remoting::protocol::{TopicRouteData, MASTER_ID};

/// Messages the consumer pulls per request, and holds per queue before it stops pulling.
pub const PULL_BATCH: i32 = 4;
pub const PULL_THRESHOLD: usize = 4;
/// The consumer's in-flight window per queue: it pulls while it holds no more than the
/// threshold, so it holds at most threshold + one batch pulled but not committed. A message
/// of b1 at a higher queue offset consumed after the kill came from the slave.
pub const HELD_PER_QUEUE: i64 = PULL_THRESHOLD as i64 + PULL_BATCH as i64;

/// A message the producer had acknowledged (SEND_OK), and where it was stored.
#[derive(Clone, Debug)]
pub struct Acked {
    pub key: String,
    pub broker: String,
    pub queue: i32,
    pub offset: i64,
}

/// Sends `key` (as body and key) to `topic`; where it was stored when the answer is SEND_OK.
pub async fn send_acked(p: &Producer, topic: &str, key: String) -> Option<Acked> {
    let msg = Message::new(topic, key.clone().into_bytes()).with_keys([key.as_str()]);
    let r = p.send(msg).await.ok()?;
    (r.send_status == SendStatus::SendOk).then(|| Acked {
        key,
        broker: r.message_queue.broker_name.clone(),
        queue: r.message_queue.queue_id,
        offset: r.queue_offset,
    })
}

/// What the scenario's consumer saw.
#[derive(Default)]
pub struct Log {
    /// key -> successful consumptions.
    pub ok: HashMap<String, u32>,
    /// keys failed on first delivery.
    pub failed: HashSet<String>,
    /// keys redelivered with RECONSUME_TIME >= 1 and an ORIGIN_MESSAGE_ID.
    pub redelivered_ok: HashSet<String>,
    /// keys redelivered without the retry properties.
    pub bad: Vec<String>,
    /// When a message of b1 was first consumed that the master cannot have served.
    pub first_from_slave: Option<Instant>,
}

impl Log {
    /// Records one delivery of `m` (body `k<n>`) to a listener; `false` when it fails: with
    /// `fail_third`, the first delivery of a key whose number is a multiple of 3 (recorded in
    /// `failed`; the listener answers RECONSUME_LATER). A redelivery must carry
    /// ORIGIN_MESSAGE_ID (else it is listed in `bad`); a success is counted in `ok`.
    pub fn deliver(&mut self, m: &MessageExt, fail_third: bool) -> bool {
        let key = String::from_utf8_lossy(&m.message.body).to_string();
        let n: usize = key.trim_start_matches('k').parse().unwrap_or(0);
        if m.reconsume_times == 0 && fail_third && n.is_multiple_of(3) {
            self.failed.insert(key);
            return false;
        }
        if m.reconsume_times >= 1 {
            if m.message
                .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
                .is_some()
            {
                self.redelivered_ok.insert(key.clone());
            } else {
                self.bad
                    .push(format!("{key} redelivered without ORIGIN_MESSAGE_ID"));
            }
        }
        *self.ok.entry(key).or_default() += 1;
        true
    }
}

/// The address a route lists as b1's id 0.
pub fn b1_master_in(route: &TopicRouteData) -> Option<&String> {
    route
        .broker_datas
        .iter()
        .find(|b| b.broker_name == "b1")
        .and_then(|b| b.broker_addrs.get(&MASTER_ID))
}

/// Waits up to `wait` until the NameServer at `ns` lists `master` (or none) as b1's id 0 in
/// the route of `topic`.
pub async fn wait_b1_master(ns: SocketAddr, topic: &str, master: Option<&str>, wait: Duration) {
    let client = raw_client();
    let want = master.map(str::to_string);
    wait_until(
        &format!("the NameServer to list {want:?} as b1's master"),
        wait,
        || {
            let (client, want) = (client.clone(), want.clone());
            async move {
                route(&client, ns, topic)
                    .await
                    .is_some_and(|r| b1_master_in(&r).cloned() == want)
            }
        },
    )
    .await;
}

/// Waits up to `wait` until the NameServer at `ns` lists queues of `topic` on every group of
/// `groups` with its master: a producer started before that sends only to the groups it
/// lists, and a scenario's backlog on b1 would not be there.
pub async fn wait_topic_on(ns: SocketAddr, topic: &str, groups: &[&str], wait: Duration) {
    let client = raw_client();
    wait_until(
        &format!("the NameServer to route {topic} to {groups:?}"),
        wait,
        || {
            let client = client.clone();
            async move {
                route(&client, ns, topic).await.is_some_and(|r| {
                    groups.iter().all(|g| {
                        r.queue_datas.iter().any(|q| q.broker_name == *g)
                            && r.broker_datas.iter().any(|b| {
                                b.broker_name == *g && b.broker_addrs.contains_key(&MASTER_ID)
                            })
                    })
                })
            }
        },
    )
    .await;
}

/// Logs to the test's output, filtered by `RUST_LOG`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
