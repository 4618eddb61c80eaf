//! Controller mode with real crashes: one controller (`it-controller`) and the two brokers of
//! group `b1` (`it-broker`, `enableControllerMode=true`, `allAckInSyncStateSet=true`) each in
//! its own process, and an in-process NameServer.
//!
//! [`sigkilled_master_is_replaced_without_losing_acknowledged_messages`]: the first broker
//! is elected master, the second becomes its slave and joins the SyncStateSet; messages are
//! sent to the master, the last ones while it is SIGKILLed. Asserted, each wait bounded:
//! - the controller elects the slave, which accepts a send (the time from the SIGKILL to
//!   that first acknowledged send is printed: `failover: ...`);
//! - the NameServer lists the new master as broker 0;
//! - every message the old master acknowledged is readable from the new master;
//! - no broker request reached the NameServer.
//!
//! [`designated_election_switches_two_live_brokers`]: an operator's election
//! (CONTROLLER_ELECT_MASTER with `designateElect`) makes the live slave master and the live
//! master a slave, without a restart: the old master refuses sends and replicates from the
//! new one (which accepts them), rejoins the SyncStateSet, and both hold every acknowledged
//! message; the NameServer lists them the other way round.
//!
//! [`pops_in_flight_survive_the_masters_sigkill`]: messages popped from the master and not
//! acked are handed out again by the elected slave, which also accepts acks (the simple
//! consumer sends them to the group's new master when the old one is unreachable) and changes
//! of invisible time for the old master's handles; acked ones are not handed out again.
//!
//! [`async_learner_stays_out_of_the_sync_state_set_and_in_sync_replicas_counts_slaves`]: a
//! replica with `asyncLearner=true` replicates but never joins the SyncStateSet; with
//! `inSyncReplicas=2` a send needs one slave's acknowledgement.
//!
//! [`readers_see_only_what_the_whole_sync_state_set_has`]: a message only the master stored
//! (its slave down) is not served until the slave has it.
//!
//! [`returning_old_master_cuts_its_unreplicated_tail_and_follows`]: with
//! `allAckInSyncStateSet=false` the master acknowledges messages its slave, SIGKILLed, never
//! gets; then the master is SIGKILLed too and the slave restarted: the controller elects it
//! (still in the SyncStateSet) and it takes sends of its own. The old master restarted on its
//! store is told to follow it; the replication handshake finds where their epochs agree, the
//! old master cuts its unreplicated tail there and replicates: its CommitLog ends up
//! byte-identical with the new master's and its epoch file equal to it, and the messages only
//! it had acknowledged are gone from it (which `allAckInSyncStateSet=true` prevents).
//!
//! [`partitioned_master_acknowledges_nothing_after_the_election_and_rejoins_as_slave`]
//! (`allAckInSyncStateSet=true`): every link of the master to the controller and to its slave
//! goes through a `FaultProxy` ([`Links`]); a producer keeps sending to the master directly.
//! The proxies blackhole: the controller elects the slave; the old master, which proposes a
//! SyncStateSet without its silent slave and gets no agreement, acknowledges none of the
//! sends it takes after the election (each answered FLUSH_SLAVE_TIMEOUT or
//! SLAVE_NOT_AVAILABLE within `syncFlushTimeout` + 1 s); every acknowledged message is on the
//! new master. Healed, the old master learns of the new one, cuts the tail only it had
//! written, replicates to a byte-identical CommitLog and rejoins the SyncStateSet.
//!
//! [`no_in_sync_replica_left_elects_no_master_and_the_slave_still_serves_reads`]: the slave's
//! replication link is cut, so the master shrinks the SyncStateSet to itself; the master is
//! SIGKILLed. With `enableElectUncleanMaster=false` the controller records the group without
//! a master and elects none (the slave's own requests included); the slave refuses writes,
//! the NameServer routes it read-only in the master's place, and it serves every message it
//! has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use client::consumer::simple::{ReceivedMessage, SimpleConsumer, SimpleConsumerConfig};
use common::client_config;
use it::{
    cluster_broker_config, committed_offset, namesrv_config, raw, raw_client, route, wait_until,
};
use it::{BrokerRole, ChildBroker, ChildController};
use parking_lot::Mutex;
use remoting::client::RemotingClient;
use remoting::controller_headers::{
    GetReplicaInfoRequestHeader, GetReplicaInfoResponseHeader, SyncStateSet,
};
use remoting::headers::CommandHeader;
use remoting::pop::ChangeInvisibleTimeRequestHeader;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use testkit::{FaultMode, FaultProxy};

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const IT_CONTROLLER: &str = env!("CARGO_BIN_EXE_it-controller");

const TOPIC: &str = "TopicCtl";
const CHECK_GROUP: &str = "GroupCtlCheck";
const POP_GROUP: &str = "GroupCtlPop";
const QUEUES: i32 = 4;
/// Messages sent before the kill, one at a time.
const BEFORE: usize = 100;
/// Each wait for an event of the scenario.
const WAIT: Duration = Duration::from_secs(20);
/// Broker heartbeats are counted lost after this long (sent in each heartbeat).
const HEARTBEAT_TIMEOUT_MS: u64 = 1_000;
/// `syncFlushTimeout` of the partition test: how long a send waits for the SyncStateSet.
const SLAVE_TIMEOUT_MS: u64 = 500;

/// What the controller says of `b1`: master id, master address, master epoch, SyncStateSet.
#[derive(Debug, Default)]
struct Replicas {
    master: Option<i64>,
    master_addr: Option<String>,
    epoch: i32,
    sync_state_set: BTreeSet<i64>,
}

async fn replicas(client: &RemotingClient, controller: &str) -> Replicas {
    let mut req = RemotingCommand::request(RequestCode::CONTROLLER_GET_REPLICA_INFO);
    GetReplicaInfoRequestHeader {
        broker_name: "b1".into(),
    }
    .write_to(&mut req);
    let addr = BrokerAddr::parse(controller).expect("controller addr");
    let Ok(resp) = client.invoke(&addr, req, Duration::from_secs(3)).await else {
        return Replicas::default();
    };
    if resp.code != ResponseCode::SUCCESS {
        return Replicas::default();
    }
    let h = GetReplicaInfoResponseHeader::from_command(&resp).expect("replica info header");
    let set: SyncStateSet = serde_json::from_slice(&resp.body).unwrap_or_default();
    Replicas {
        master: h.master_broker_id,
        master_addr: h.master_address,
        epoch: h.master_epoch.unwrap_or_default(),
        sync_state_set: set.sync_state_set,
    }
}

/// The address the NameServer lists as broker `id` of `b1` for [`TOPIC`].
async fn listed(client: &RemotingClient, ns: std::net::SocketAddr, id: i64) -> Option<String> {
    let r = route(client, ns, TOPIC).await?;
    r.broker_datas
        .iter()
        .find(|b| b.broker_name == "b1")
        .and_then(|b| b.broker_addrs.get(&id).cloned())
}

fn body(i: usize) -> Vec<u8> {
    format!("ctl-{i}").into_bytes()
}

/// A NameServer and one controller (a child process) for a scenario, with their temp dir.
async fn start_namesrv_and_controller() -> (tempfile::TempDir, namesrv::NameServer, ChildController)
{
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let ctl = ChildController::start_alone(Path::new(IT_CONTROLLER), dir.path());
    (dir, ns, ctl)
}

/// Replica `n` of group `b1` in controller mode under `ctl`, with heartbeats (to the
/// controller and over HA) every 100 ms.
fn controller_mode_config(
    nsa: std::net::SocketAddr,
    dir: &Path,
    ctl: &ChildController,
    n: i64,
) -> broker::BrokerConfig {
    let mut c = cluster_broker_config(nsa, dir, ("b1", n, BrokerRole::SyncMaster), "1s");
    c.enable_controller_mode = true;
    c.controller_addr = ctl.addr.clone();
    c.broker_heartbeat_interval = 100;
    c.controller_heart_beat_timeout_mills = HEARTBEAT_TIMEOUT_MS;
    c.ha_send_heartbeat_interval = 100;
    c
}

/// The bytes of `broker`'s first CommitLog segment up to the end of its last whole record.
fn commit_log(broker: &ChildBroker) -> Vec<u8> {
    let path = broker
        .config()
        .store_path_root_dir
        .join("commitlog")
        .join("00000000000000000000");
    let mut bytes = std::fs::read(&path).expect("first CommitLog segment");
    let (_, end) = it::scan_commit_log(&bytes);
    bytes.truncate(end);
    bytes
}

/// The bodies of every message of [`TOPIC`] on `broker`.
async fn bodies(client: &RemotingClient, broker: &str) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for q in 0..QUEUES {
        for m in raw::pull_all(client, broker, (CHECK_GROUP, TOPIC), q).await {
            out.insert(m.message.body.to_vec());
        }
    }
    out
}

/// Starts `first` and waits until it is elected master (replica 1), then `second` until both
/// are in the SyncStateSet.
async fn start_master_and_slave(
    raw: &RemotingClient,
    ctl: &ChildController,
    first: broker::BrokerConfig,
    second: broker::BrokerConfig,
) -> (ChildBroker, ChildBroker) {
    let exe = Path::new(IT_BROKER);
    let a = ChildBroker::start(exe, first);
    wait_until("the first broker elected master", WAIT, || async {
        replicas(raw, &ctl.addr).await.master == Some(1)
    })
    .await;
    let b = ChildBroker::start(exe, second);
    wait_until("both brokers in the SyncStateSet", WAIT, || async {
        replicas(raw, &ctl.addr).await.sync_state_set == BTreeSet::from([1, 2])
    })
    .await;
    (a, b)
}

/// Sends messages `ids` to `broker` (a new master, which may not take writes at once), each
/// retried every 10 ms until acknowledged, all within [`WAIT`]; returns their bodies.
async fn send_until_accepted(
    raw: &RemotingClient,
    broker: &str,
    ids: std::ops::Range<usize>,
) -> BTreeSet<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut acked = BTreeSet::new();
    for i in ids {
        loop {
            let r = raw::try_send_with(raw, broker, TOPIC, i as i32 % QUEUES, &body(i), &[]).await;
            if matches!(&r, Ok(r) if r.code == ResponseCode::SUCCESS) {
                acked.insert(body(i));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new master takes no send: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    acked
}

/// Waits until `slave`'s CommitLog is byte-identical with `master`'s (and not empty).
async fn wait_identical_logs(slave: &ChildBroker, master: &ChildBroker) {
    wait_until("identical CommitLogs", WAIT, || async {
        let m = commit_log(master);
        !m.is_empty() && commit_log(slave) == m
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn designated_election_switches_two_live_brokers() {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = true;
        c.sync_broker_metadata_period = 500;
        c.check_sync_state_set_period = 200;
        c
    };
    let raw = raw_client();
    let (a, b) = start_master_and_slave(&raw, &ctl, cfg(1), cfg(2)).await;
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    let mut acked = BTreeSet::new();
    for i in 0..30 {
        let r = raw::send(&raw, &a.addr, TOPIC, i % QUEUES, &body(i as usize)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        acked.insert(body(i as usize));
    }

    // The operator makes the slave master.
    let mut req = RemotingCommand::request(RequestCode::CONTROLLER_ELECT_MASTER);
    remoting::controller_headers::ElectMasterRequestHeader {
        cluster_name: Some("C".into()),
        broker_name: "b1".into(),
        broker_id: Some(2),
        designate_elect: true,
        invoke_time: None,
    }
    .write_to(&mut req);
    let ctl_addr = BrokerAddr::parse(&ctl.addr).unwrap();
    let resp = raw
        .invoke(&ctl_addr, req, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::SUCCESS, "{}", resp.remark_str());

    acked.extend(send_until_accepted(&raw, &b.addr, 100..130).await);
    // The old master refuses writes now.
    wait_until("the demoted master to refuse sends", WAIT, || async {
        let r = raw::try_send_with(&raw, &a.addr, TOPIC, 0, b"to the old master", &[]).await;
        matches!(r, Ok(r) if r.code != ResponseCode::SUCCESS)
    })
    .await;
    wait_until("the old master back in the SyncStateSet", WAIT, || async {
        let r = replicas(&raw, &ctl.addr).await;
        r.master == Some(2) && r.sync_state_set == BTreeSet::from([1, 2])
    })
    .await;
    wait_until("both hold every acknowledged message", WAIT, || async {
        acked.is_subset(&bodies(&raw, &a.addr).await)
            && acked.is_subset(&bodies(&raw, &b.addr).await)
    })
    .await;
    wait_identical_logs(&a, &b).await;
    wait_until("the NameServer lists the switched roles", WAIT, || async {
        listed(&raw, nsa, 0).await.as_deref() == Some(b.addr.as_str())
            && listed(&raw, nsa, 1).await.as_deref() == Some(a.addr.as_str())
    })
    .await;
    assert!(ns.unsupported_request_counts().is_empty());
}

/// Sends CHANGE_MESSAGE_INVISIBLETIME for `m` to `broker` (not the broker that handed it
/// out); returns the answer's code and remark.
async fn change_invisible_at(
    client: &RemotingClient,
    broker: &str,
    m: &ReceivedMessage,
    invisible: Duration,
) -> (i32, String) {
    let mut req = RemotingCommand::request(RequestCode::CHANGE_MESSAGE_INVISIBLETIME);
    ChangeInvisibleTimeRequestHeader {
        consumer_group: POP_GROUP.into(),
        topic: TOPIC.into(),
        queue_id: m.handle.queue_id,
        extra_info: m.handle.to_string(),
        offset: m.message.queue_offset,
        invisible_time: invisible.as_millis() as i64,
    }
    .write_to(&mut req);
    let addr = BrokerAddr::parse(broker).expect("broker addr");
    match client.invoke(&addr, req, Duration::from_secs(3)).await {
        Ok(r) => (r.code, r.remark_str().to_string()),
        Err(e) => (-1, e.to_string()),
    }
}

fn pop_body(m: &ReceivedMessage) -> Vec<u8> {
    m.message.message.body.to_vec()
}

/// Controller mode keeps POP state across a failover: the master hands out messages (a
/// third acked there); after its SIGKILL the elected slave rebuilds the in-flight table
/// from the replicated revive log, so it accepts acks (a third) and changes of invisible
/// time (the rest) for handles the old master issued, hands out again exactly the messages
/// never acked, and none of the acked ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pops_in_flight_survive_the_masters_sigkill() {
    const POPPED: usize = 24;
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = true;
        c.sync_broker_metadata_period = 500;
        c.check_sync_state_set_period = 200;
        c.revive_interval = 100;
        c
    };
    let raw = raw_client();
    let exe = Path::new(IT_BROKER);
    let mut a = ChildBroker::start(exe, cfg(1));
    wait_until("the first broker elected master", WAIT, || async {
        replicas(&raw, &ctl.addr).await.master == Some(1)
    })
    .await;
    let b = ChildBroker::start(exe, cfg(2));
    wait_until("both brokers in the SyncStateSet", WAIT, || async {
        replicas(&raw, &ctl.addr).await.sync_state_set == BTreeSet::from([1, 2])
    })
    .await;
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    // Sends to it tell when a broker takes writes (not popped by the consumer).
    let probe = "TopicCtlProbe";
    raw::create_topic(&raw, &a.addr, probe, 1).await;
    wait_until("the topic's route", WAIT, || async {
        route(&raw, nsa, TOPIC).await.is_some()
    })
    .await;
    for i in 0..POPPED {
        let r = raw::send(&raw, &a.addr, TOPIC, i as i32 % QUEUES, &body(i)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }
    let consumer = SimpleConsumer::start(
        client_config(nsa, Duration::from_millis(200), "ctl-pop"),
        SimpleConsumerConfig::new(POP_GROUP).await_duration(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    consumer.subscribe(TOPIC, "*").await.unwrap();
    // Invisible far beyond the test: only a rebuilt checkpoint can bring them back.
    let invisible = Duration::from_secs(600);
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < POPPED && Instant::now() < deadline {
        got.extend(consumer.receive(32, invisible).await.unwrap());
    }
    assert_eq!(got.len(), POPPED);
    got.sort_by_key(pop_body);
    for m in got.iter().step_by(3) {
        consumer.ack(m).await.unwrap();
    }
    wait_until(
        "the slave has the revive log and the offsets",
        WAIT,
        || async {
            if commit_log(&a) != commit_log(&b) {
                return false;
            }
            for q in 0..QUEUES {
                let end = raw::max_offset(&raw, &a.addr, TOPIC, q).await;
                if committed_offset(&raw, &b.addr, POP_GROUP, TOPIC, q).await != Some(end) {
                    return false;
                }
            }
            true
        },
    )
    .await;

    a.sigkill();
    wait_until(
        "the slave elected master and taking writes",
        WAIT,
        || async {
            let r = raw::try_send_with(&raw, &b.addr, probe, 0, b"probe", &[]).await;
            replicas(&raw, &ctl.addr).await.master == Some(2)
                && matches!(r, Ok(r) if r.code == ResponseCode::SUCCESS)
        },
    )
    .await;
    // Handles the old master issued work on the new one: the consumer's acks (it cannot
    // reach the old master, so it asks the group's master now) and changes of invisible time.
    let mut left = BTreeSet::new();
    for (i, m) in got.iter().enumerate() {
        match i % 3 {
            0 => {}
            1 => {
                let deadline = Instant::now() + WAIT;
                while let Err(e) = consumer.ack(m).await {
                    assert!(Instant::now() < deadline, "ack of message {i}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            _ => {
                let (code, remark) =
                    change_invisible_at(&raw, &b.addr, m, Duration::from_millis(100)).await;
                assert_eq!(code, ResponseCode::SUCCESS, "message {i}: {remark}");
                left.insert(pop_body(m));
            }
        }
    }
    let mut back = Vec::new();
    let deadline = Instant::now() + WAIT;
    while back.len() < left.len() && Instant::now() < deadline {
        match consumer.receive(32, invisible).await {
            Ok(ms) => back.extend(ms),
            // The route may still name the dead master for a moment.
            Err(e) => eprintln!("receive after the failover: {e}"),
        }
    }
    let names: BTreeSet<Vec<u8>> = back.iter().map(pop_body).collect();
    assert_eq!(names, left, "messages handed out again after the failover");
    assert_eq!(back.len(), left.len(), "a message came back twice");
    assert!(back.iter().all(|m| m.message.reconsume_times == 1));
    for m in &back {
        consumer.ack(m).await.unwrap();
    }
    let extra = consumer.receive(32, invisible).await.unwrap();
    assert!(extra.is_empty(), "handed out again: {} more", extra.len());
    consumer.shutdown().await;
    assert!(ns.unsupported_request_counts().is_empty());
}

/// `asyncLearner` and `inSyncReplicas` (with `allAckInSyncStateSet=false`): a third broker
/// configured as a learner replicates everything but never joins the SyncStateSet; a master
/// with `inSyncReplicas=2` answers a send once one slave (the learner too) has it, and
/// `SLAVE_NOT_AVAILABLE` once no slave is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_learner_stays_out_of_the_sync_state_set_and_in_sync_replicas_counts_slaves() {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = false;
        c.in_sync_replicas = 2;
        c.sync_broker_metadata_period = 500;
        c.check_sync_state_set_period = 100;
        c.async_learner = n == 3;
        c
    };
    let raw = raw_client();
    let (a, mut b) = start_master_and_slave(&raw, &ctl, cfg(1), cfg(2)).await;
    let mut learner = ChildBroker::start(Path::new(IT_BROKER), cfg(3));
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    let mut acked = send_until_accepted(&raw, &a.addr, 0..30).await;
    wait_identical_logs(&learner, &a).await;
    // Caught up, and the master checks its set every 100 ms: the learner stays out.
    for _ in 0..10 {
        let r = replicas(&raw, &ctl.addr).await;
        assert_eq!(r.sync_state_set, BTreeSet::from([1, 2]), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One slave is enough for inSyncReplicas=2: the learner alone.
    b.sigkill();
    acked.extend(send_until_accepted(&raw, &a.addr, 100..110).await);
    wait_until(
        "the learner has every acknowledged message",
        WAIT,
        || async { acked.is_subset(&bodies(&raw, &learner.addr).await) },
    )
    .await;
    learner.sigkill();
    let r = raw::try_send_with(&raw, &a.addr, TOPIC, 0, b"no slave", &[])
        .await
        .expect("an answer");
    assert_eq!(
        r.code,
        ResponseCode::SLAVE_NOT_AVAILABLE,
        "{}",
        r.remark_str()
    );
    assert!(ns.unsupported_request_counts().is_empty());
}

/// With `allAckInSyncStateSet=true` readers see only what every SyncStateSet member has
/// (upstream's confirm offset): a message the master stored while its slave was down (the
/// send answered `SLAVE_NOT_AVAILABLE`) is not pulled from the master, since a failover to
/// the slave would take it back and the queue offset would then name another message; once
/// the slave has it again, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_only_what_the_whole_sync_state_set_has() {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = true;
        // The SyncStateSet keeps the slave while it is down.
        c.check_sync_state_set_period = 600_000;
        c.ha_max_time_slave_not_catchup = 600_000;
        c
    };
    let raw = raw_client();
    let (a, mut b) = start_master_and_slave(&raw, &ctl, cfg(1), cfg(2)).await;
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    let acked = send_until_accepted(&raw, &a.addr, 0..8).await;
    wait_until(
        "the master serves the acknowledged messages",
        WAIT,
        || async { bodies(&raw, &a.addr).await == acked },
    )
    .await;
    b.sigkill();
    let r = raw::try_send_with(&raw, &a.addr, TOPIC, 0, &body(100), &[])
        .await
        .expect("an answer");
    assert_eq!(
        r.code,
        ResponseCode::SLAVE_NOT_AVAILABLE,
        "{}",
        r.remark_str()
    );
    let queue_end = raw::max_offset(&raw, &a.addr, TOPIC, 0).await;
    assert_eq!(
        bodies(&raw, &a.addr).await,
        acked,
        "a message only the master has was served"
    );
    b.restart();
    let mut all = acked.clone();
    all.insert(body(100));
    wait_until("the message served once the slave has it", WAIT, || async {
        bodies(&raw, &a.addr).await == all
    })
    .await;
    assert_eq!(
        raw::max_offset(&raw, &a.addr, TOPIC, 0).await,
        queue_end + 1
    );
    assert!(ns.unsupported_request_counts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_old_master_cuts_its_unreplicated_tail_and_follows() {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = false;
        c.sync_broker_metadata_period = 500;
        // The SyncStateSet never shrinks during the test: the killed slave stays electable.
        c.check_sync_state_set_period = 600_000;
        c.ha_max_time_slave_not_catchup = 600_000;
        c
    };
    let raw = raw_client();
    let (mut a, mut b) = start_master_and_slave(&raw, &ctl, cfg(1), cfg(2)).await;
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    for i in 0..40 {
        let r = raw::send(&raw, &a.addr, TOPIC, i % QUEUES, &body(i as usize)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }
    wait_until("the slave has the first messages", WAIT, || async {
        bodies(&raw, &b.addr).await.len() == 40
    })
    .await;

    // The slave dies; the master acknowledges messages only it has, then dies too.
    b.sigkill();
    let mut only_old = BTreeSet::new();
    for i in 1_000..1_030 {
        let r = raw::send(&raw, &a.addr, TOPIC, i % QUEUES, &body(i as usize)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        only_old.insert(body(i as usize));
    }
    let old_log = commit_log(&a);
    a.sigkill();

    // The slave comes back and is elected: it is in the SyncStateSet.
    b.restart();
    wait_until("the restarted slave elected master", WAIT, || async {
        replicas(&raw, &ctl.addr).await.master == Some(2)
    })
    .await;
    let only_new = send_until_accepted(&raw, &b.addr, 2_000..2_025).await;

    // The old master returns on its store and follows the new one.
    a.restart();
    a.wait_log("diverged from its master's: cutting it", WAIT);
    wait_identical_logs(&a, &b).await;
    let new_log = commit_log(&b);
    assert!(
        !new_log.starts_with(&old_log),
        "the old master's log had diverged from the new master's"
    );
    // The old master's ConsumeQueues follow its CommitLog (its dispatcher may lag).
    wait_until(
        "the new master's messages readable on the old one",
        WAIT,
        || async { only_new.is_subset(&bodies(&raw, &a.addr).await) },
    )
    .await;
    let on_old = bodies(&raw, &a.addr).await;
    assert!(
        on_old.is_disjoint(&only_old),
        "messages only the old master had are gone from it"
    );
    let epochs = |x: &ChildBroker| {
        std::fs::read_to_string(x.config().store_path_root_dir.join("epochFileCheckpoint"))
            .expect("epoch file")
    };
    assert_eq!(
        epochs(&a),
        epochs(&b),
        "the old master took the new master's epochs"
    );
    assert!(
        epochs(&b).lines().count() >= 4,
        "two epochs: {}",
        epochs(&b)
    );
    assert!(ns.unsupported_request_counts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_master_is_replaced_without_losing_acknowledged_messages() {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = true;
        c.sync_broker_metadata_period = 1_000;
        c.sync_controller_metadata_period = 2_000;
        c.check_sync_state_set_period = 200;
        c.slave_synchronize_interval = 300;
        c
    };
    let raw = raw_client();

    // The first broker is elected master; the second follows it and joins the SyncStateSet.
    let (mut a, b) = start_master_and_slave(&raw, &ctl, cfg(1), cfg(2)).await;
    let before = replicas(&raw, &ctl.addr).await;
    assert_eq!(before.master_addr.as_deref(), Some(a.addr.as_str()));
    raw::create_topic(&raw, &a.addr, TOPIC, QUEUES).await;
    wait_until(
        "the NameServer lists the master as broker 0",
        WAIT,
        || async { listed(&raw, nsa, 0).await.as_deref() == Some(a.addr.as_str()) },
    )
    .await;

    // Sends, each answered only once the slave has it.
    let acked = Arc::new(Mutex::new(Vec::new()));
    for i in 0..BEFORE {
        let r = raw::send(&raw, &a.addr, TOPIC, i as i32 % QUEUES, &body(i)).await;
        assert_eq!(
            r.code,
            ResponseCode::SUCCESS,
            "send {i}: {}",
            r.remark_str()
        );
        acked.lock().push(body(i));
    }
    // More sends while the master is killed.
    let sender = tokio::spawn({
        let raw = raw.clone();
        let acked = acked.clone();
        let master = a.addr.clone();
        async move {
            let mut i = BEFORE;
            loop {
                match raw::try_send_with(&raw, &master, TOPIC, i as i32 % QUEUES, &body(i), &[])
                    .await
                {
                    Ok(r) if r.code == ResponseCode::SUCCESS => acked.lock().push(body(i)),
                    Ok(_) => {}
                    Err(_) => return i - BEFORE,
                }
                i += 1;
            }
        }
    });
    wait_until("sends during the kill under way", WAIT, || async {
        acked.lock().len() >= BEFORE + 20
    })
    .await;
    a.sigkill();
    let killed = Instant::now();
    let during = tokio::time::timeout(WAIT, sender)
        .await
        .expect("the sender noticed the kill")
        .unwrap();

    // The slave is elected and accepts a send.
    let deadline = killed + WAIT;
    let failover = loop {
        let r = raw::try_send_with(&raw, &b.addr, TOPIC, 0, b"after the failover", &[]).await;
        if matches!(&r, Ok(r) if r.code == ResponseCode::SUCCESS) {
            break killed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the slave did not accept a send within {WAIT:?} of the kill (last answer: {:?}); \
             its log:\n{}\ncontroller log:\n{}",
            r.map(|r| (r.code, r.remark_str().to_string())),
            b.log().join("\n"),
            ctl.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "failover: {failover:?} from SIGKILL to the first acknowledged send on the new master \
         (the controller sees the master's connection close; heartbeat timeout \
         {HEARTBEAT_TIMEOUT_MS} ms otherwise; {during} sends attempted during the kill)"
    );
    let after = replicas(&raw, &ctl.addr).await;
    assert_eq!(after.master, Some(2), "{after:?}");
    assert_eq!(after.master_addr.as_deref(), Some(b.addr.as_str()));
    assert!(after.epoch > before.epoch, "{before:?} -> {after:?}");
    wait_until(
        "the NameServer lists the new master as broker 0",
        WAIT,
        || async { listed(&raw, nsa, 0).await.as_deref() == Some(b.addr.as_str()) },
    )
    .await;

    // Every acknowledged message is on the new master.
    let mut stored: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for q in 0..QUEUES {
        for m in raw::pull_all(&raw, &b.addr, (CHECK_GROUP, TOPIC), q).await {
            *stored.entry(m.message.body.to_vec()).or_default() += 1;
        }
    }
    let acked = acked.lock().clone();
    let missing: Vec<String> = acked
        .iter()
        .filter(|m| !stored.contains_key(*m))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not on the new master: {missing:?}",
        missing.len(),
        acked.len()
    );
    assert!(stored.contains_key(&b"after the failover"[..]));

    // Epoch file of the new master: its epoch starts where the old master's log ended.
    let epochs =
        std::fs::read_to_string(b.config().store_path_root_dir.join("epochFileCheckpoint"))
            .expect("epoch file of the new master");
    assert!(
        epochs
            .lines()
            .any(|l| l.starts_with(&format!("{}-", after.epoch))),
        "no entry for epoch {} in:\n{epochs}",
        after.epoch
    );

    // No broker request reached the NameServer.
    assert!(
        ns.unsupported_request_counts().is_empty(),
        "broker requests at the NameServer: {:?}",
        ns.unsupported_request_counts()
    );
}

/// The links of a broker that a partition can cut, each through a [`FaultProxy`]: its
/// requests and heartbeats to the controller (`controllerAddr` is the proxy's), and every
/// connection to it (the controller's notifications, a slave's EXCHANGE_BROKER_HA_INFO and
/// its replication connection). The broker binds `127.0.0.1` and advertises `127.0.0.2`
/// (`brokerIP1`, `brokerIP2`) where the proxies listen on its ports; its own clients reach
/// it at [`Self::direct`], on its side of the partition.
struct Links {
    controller: FaultProxy,
    broker: FaultProxy,
    ha: FaultProxy,
    /// The broker's own address, not through a proxy.
    direct: String,
}

impl Links {
    /// Puts the broker of `config` behind proxies to itself and to `controller`.
    async fn around(config: &mut broker::BrokerConfig, controller: &str) -> Links {
        const FAR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);
        it::fix_restartable_ports(config);
        config.broker_ip1 = Some(FAR.into());
        config.broker_ip2 = Some(FAR.into());
        let controller = FaultProxy::start(controller.parse().expect("controller address"))
            .await
            .expect("controller proxy");
        config.controller_addr = controller.addr().to_string();
        let port = |p: u16| async move {
            let listener = tokio::net::TcpListener::bind((FAR, p))
                .await
                .expect("a port of the broker on 127.0.0.2");
            FaultProxy::start_on(listener, ([127, 0, 0, 1], p).into()).expect("broker proxy")
        };
        let broker = port(config.listen_port).await;
        let ha = port(config.ha_listen_port.expect("fixed HA port")).await;
        Links {
            controller,
            broker,
            ha,
            direct: format!("127.0.0.1:{}", config.listen_port),
        }
    }

    fn set_mode(&self, mode: FaultMode) {
        for p in [&self.controller, &self.broker, &self.ha] {
            p.set_mode(mode);
        }
    }
}

/// The start of the partition scenarios: a NameServer, the controller, the master (replica 1)
/// behind [`Links`] and its slave, both in the SyncStateSet, with `allAckInSyncStateSet=true`;
/// a send waits [`SLAVE_TIMEOUT_MS`] for the set, and a slave silent for 500 ms is dropped and
/// proposed out of it.
struct Partitionable {
    ns: namesrv::NameServer,
    ctl: ChildController,
    raw: RemotingClient,
    links: Links,
    a: ChildBroker,
    b: ChildBroker,
    /// Last: removed once the processes are gone.
    _dir: tempfile::TempDir,
}

async fn start_partitionable() -> Partitionable {
    let (dir, ns, ctl) = start_namesrv_and_controller().await;
    let nsa = ns.local_addr();
    let cfg = |n: i64| {
        let mut c = controller_mode_config(nsa, dir.path(), &ctl, n);
        c.all_ack_in_sync_state_set = true;
        c.sync_broker_metadata_period = 300;
        c.check_sync_state_set_period = 200;
        c.sync_flush_timeout = SLAVE_TIMEOUT_MS;
        c.ha_housekeeping_interval = 500;
        c.ha_max_time_slave_not_catchup = 500;
        c
    };
    let raw = raw_client();
    let mut a_cfg = cfg(1);
    let links = Links::around(&mut a_cfg, &ctl.addr).await;
    let (a, b) = start_master_and_slave(&raw, &ctl, a_cfg, cfg(2)).await;
    raw::create_topic(&raw, &links.direct, TOPIC, QUEUES).await;
    Partitionable {
        ns,
        ctl,
        raw,
        links,
        a,
        b,
        _dir: dir,
    }
}

/// One send to the cut-off master: when it started, how long it took, its answer.
struct Attempt {
    body: Vec<u8>,
    started: Instant,
    took: Duration,
    code: Option<i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_master_acknowledges_nothing_after_the_election_and_rejoins_as_slave() {
    // `_dir` first: bindings drop in reverse, so the store is removed after the processes.
    let Partitionable {
        _dir,
        ns,
        ctl,
        raw,
        links,
        a,
        b,
    } = start_partitionable().await;
    let old = links.direct.clone();
    let mut acked = BTreeSet::new();
    for i in 0..50 {
        let r = raw::send(&raw, &old, TOPIC, i % QUEUES, &body(i as usize)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        acked.insert(body(i as usize));
    }

    // A producer on the old master's side of the partition keeps sending to it.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let sender = tokio::spawn({
        let (raw, old, stop, attempts) = (raw.clone(), old.clone(), stop.clone(), attempts.clone());
        async move {
            let mut i = 10_000;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let body = body(i);
                let started = Instant::now();
                let r = raw::try_send_with(&raw, &old, TOPIC, i as i32 % QUEUES, &body, &[]).await;
                attempts.lock().push(Attempt {
                    body,
                    started,
                    took: started.elapsed(),
                    code: r.ok().map(|r| r.code),
                });
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    wait_until("sends before the cut acknowledged", WAIT, || async {
        attempts
            .lock()
            .iter()
            .filter(|a| a.code == Some(ResponseCode::SUCCESS))
            .count()
            >= 10
    })
    .await;

    // The partition: the old master hears from neither the controller nor its slave.
    const REFUSED: &str = "SyncStateSet change refused";
    let refused_before = a.log().iter().filter(|l| l.contains(REFUSED)).count();
    links.set_mode(FaultMode::Blackhole);
    let cut = Instant::now();
    wait_until("the controller elects the slave", WAIT, || async {
        let r = replicas(&raw, &ctl.addr).await;
        r.master == Some(2) && r.epoch >= 2
    })
    .await;
    let elected = Instant::now();
    // The old master finds its slave gone and proposes a SyncStateSet without it, which no
    // controller can agree to: it must keep waiting for the slave. Then more sends.
    wait_until(
        "the old master's SyncStateSet change to fail",
        WAIT,
        || async { a.log().iter().filter(|l| l.contains(REFUSED)).count() > refused_before },
    )
    .await;
    let refused_at = Instant::now();
    wait_until(
        "sends to the old master after the election",
        WAIT,
        || async {
            let after = attempts
                .lock()
                .iter()
                .filter(|a| a.started >= refused_at)
                .count();
            after >= 5
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    sender.await.unwrap();
    let attempts = std::mem::take(&mut *attempts.lock());
    let after_election: Vec<&Attempt> = attempts.iter().filter(|a| a.started >= elected).collect();
    for a in &after_election {
        assert!(
            matches!(
                a.code,
                Some(ResponseCode::FLUSH_SLAVE_TIMEOUT | ResponseCode::SLAVE_NOT_AVAILABLE)
            ),
            "the cut-off master answered {:?} after the election",
            a.code
        );
    }
    let slowest = attempts.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(
        slowest <= Duration::from_millis(SLAVE_TIMEOUT_MS) + Duration::from_secs(1),
        "a send to the cut-off master took {slowest:?}"
    );
    acked.extend(
        attempts
            .iter()
            .filter(|a| a.code == Some(ResponseCode::SUCCESS))
            .map(|a| a.body.clone()),
    );
    eprintln!(
        "partition: election {:?} after the cut; {} sends to the old master after the cut, \
         {} of them after the election, none acknowledged",
        elected - cut,
        attempts.iter().filter(|a| a.started >= cut).count(),
        after_election.len()
    );

    // The new master takes sends and has every message the old one acknowledged.
    acked.extend(send_until_accepted(&raw, &b.addr, 20_000..20_020).await);
    let on_new = bodies(&raw, &b.addr).await;
    let missing = acked.difference(&on_new).count();
    assert_eq!(
        missing, 0,
        "acknowledged messages missing on the new master"
    );
    let refused: BTreeSet<Vec<u8>> = after_election.iter().map(|a| a.body.clone()).collect();
    assert!(on_new.is_disjoint(&refused));
    let old_log = commit_log(&a);

    // Healed: the old master learns of the new one, cuts its unreplicated tail, follows.
    links.set_mode(FaultMode::Pass);
    a.wait_log("diverged from its master's: cutting it", WAIT);
    wait_identical_logs(&a, &b).await;
    assert!(
        !commit_log(&b).starts_with(&old_log),
        "the old master had written what the new one never got"
    );
    wait_until("the old master back in the SyncStateSet", WAIT, || async {
        let r = replicas(&raw, &ctl.addr).await;
        r.master == Some(2) && r.sync_state_set == BTreeSet::from([1, 2])
    })
    .await;
    let r = raw::try_send_with(&raw, &old, TOPIC, 0, b"to the old master", &[]).await;
    assert!(
        matches!(&r, Ok(r) if r.code != ResponseCode::SUCCESS),
        "the old master, now a slave, refuses sends: {r:?}"
    );
    wait_until(
        "every acknowledged message on the old master",
        WAIT,
        || async { acked.is_subset(&bodies(&raw, &old).await) },
    )
    .await;
    assert!(bodies(&raw, &old).await.is_disjoint(&refused));
    assert!(ns.unsupported_request_counts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_in_sync_replica_left_elects_no_master_and_the_slave_still_serves_reads() {
    // `_dir` first: bindings drop in reverse, so the store is removed after the processes.
    let Partitionable {
        _dir,
        ns,
        ctl,
        raw,
        links,
        mut a,
        b,
    } = start_partitionable().await;
    let nsa = ns.local_addr();
    let mut replicated = BTreeSet::new();
    for i in 0..40 {
        let r = raw::send(&raw, &links.direct, TOPIC, i % QUEUES, &body(i as usize)).await;
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        replicated.insert(body(i as usize));
    }

    // The slave's replication link is cut: the master drops it from the SyncStateSet and
    // acknowledges alone.
    links.ha.set_mode(FaultMode::Blackhole);
    wait_until("the slave out of the SyncStateSet", WAIT, || async {
        replicas(&raw, &ctl.addr).await.sync_state_set == BTreeSet::from([1])
    })
    .await;
    // (The master applies the set once the controller's answer reaches it.)
    wait_until("the master acknowledging alone", WAIT, || async {
        let r = raw::send(&raw, &links.direct, TOPIC, 0, b"only on the master").await;
        r.code == ResponseCode::SUCCESS
    })
    .await;
    let before = replicas(&raw, &ctl.addr).await;

    // The master dies: its only in-sync replica is gone, and unclean election is off.
    a.sigkill();
    wait_until(
        "the controller to find the group masterless",
        WAIT,
        || async {
            let r = replicas(&raw, &ctl.addr).await;
            r.master.is_none() && r.epoch > before.epoch
        },
    )
    .await;
    // The slave asks for itself at every replica-info poll (300 ms); none succeeds.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        let r = replicas(&raw, &ctl.addr).await;
        assert_eq!(
            r.master, None,
            "a replica outside the SyncStateSet was elected: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = raw::try_send_with(&raw, &b.addr, TOPIC, 0, b"to the slave", &[]).await;
    assert!(
        matches!(&r, Ok(r) if r.code != ResponseCode::SUCCESS),
        "the slave refuses writes: {r:?}"
    );
    // Reads continue: the NameServer lists the slave in the dead master's place, read-only
    // (upstream's acting master), and it serves what it has.
    wait_until("the slave routed read-only", WAIT, || async {
        route(&raw, nsa, TOPIC).await.is_some_and(|r| {
            r.broker_datas
                .iter()
                .any(|d| d.broker_name == "b1" && d.broker_addrs.values().eq([&b.addr]))
                && r.queue_datas
                    .iter()
                    .all(|q| q.perm == remoting::protocol::perm::PERM_READ)
        })
    })
    .await;
    assert_eq!(bodies(&raw, &b.addr).await, replicated);
    assert!(ns.unsupported_request_counts().is_empty());
}
