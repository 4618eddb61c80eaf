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
//! [`returning_old_master_cuts_its_unreplicated_tail_and_follows`]: with
//! `allAckInSyncStateSet=false` the master acknowledges messages its slave, SIGKILLed, never
//! gets; then the master is SIGKILLed too and the slave restarted: the controller elects it
//! (still in the SyncStateSet) and it takes sends of its own. The old master restarted on its
//! store is told to follow it; the replication handshake finds where their epochs agree, the
//! old master cuts its unreplicated tail there and replicates: its CommitLog ends up
//! byte-identical with the new master's and its epoch file equal to it, and the messages only
//! it had acknowledged are gone from it (which `allAckInSyncStateSet=true` prevents).

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
    let exe = Path::new(IT_BROKER);
    let a = ChildBroker::start(exe, cfg(1));
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

    let deadline = Instant::now() + WAIT;
    let mut i = 100;
    while acked.len() < 60 {
        let r = raw::try_send_with(&raw, &b.addr, TOPIC, i % QUEUES, &body(i as usize), &[]).await;
        if matches!(&r, Ok(r) if r.code == ResponseCode::SUCCESS) {
            acked.insert(body(i as usize));
            i += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "the new master takes no send: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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
    wait_until("identical CommitLogs", WAIT, || async {
        commit_log(&a) == commit_log(&b)
    })
    .await;
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
    let exe = Path::new(IT_BROKER);
    let mut a = ChildBroker::start(exe, cfg(1));
    wait_until("the first broker elected master", WAIT, || async {
        replicas(&raw, &ctl.addr).await.master == Some(1)
    })
    .await;
    let mut b = ChildBroker::start(exe, cfg(2));
    wait_until("both brokers in the SyncStateSet", WAIT, || async {
        replicas(&raw, &ctl.addr).await.sync_state_set == BTreeSet::from([1, 2])
    })
    .await;
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
    let mut only_new = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    let mut i = 2_000;
    while only_new.len() < 25 {
        let r = raw::try_send_with(&raw, &b.addr, TOPIC, i % QUEUES, &body(i as usize), &[]).await;
        if matches!(&r, Ok(r) if r.code == ResponseCode::SUCCESS) {
            only_new.insert(body(i as usize));
            i += 1;
        } else {
            assert!(
                Instant::now() < deadline,
                "the new master takes no send: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The old master returns on its store and follows the new one.
    a.restart();
    a.wait_log("diverged from its master's: cutting it", WAIT);
    wait_until(
        "the old master caught up with the new one",
        WAIT,
        || async {
            let new_log = commit_log(&b);
            !new_log.is_empty() && commit_log(&a) == new_log
        },
    )
    .await;
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
    let exe = Path::new(IT_BROKER);

    // The first broker is elected master; the second follows it and joins the SyncStateSet.
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
