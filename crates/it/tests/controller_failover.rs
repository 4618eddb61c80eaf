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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use it::{cluster_broker_config, namesrv_config, raw, raw_client, route, wait_until};
use it::{BrokerRole, ChildBroker, ChildController};
use parking_lot::Mutex;
use remoting::client::RemotingClient;
use remoting::controller_headers::{
    GetReplicaInfoRequestHeader, GetReplicaInfoResponseHeader, SyncStateSet,
};
use remoting::headers::CommandHeader;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const IT_CONTROLLER: &str = env!("CARGO_BIN_EXE_it-controller");

const TOPIC: &str = "TopicCtl";
const CHECK_GROUP: &str = "GroupCtlCheck";
const QUEUES: i32 = 4;
/// Messages sent before the kill, one at a time.
const BEFORE: usize = 100;
/// Each wait for an event of the scenario.
const WAIT: Duration = Duration::from_secs(20);
/// Broker heartbeats are counted lost after this long (sent in each heartbeat).
const HEARTBEAT_TIMEOUT_MS: u64 = 1_000;

/// A port free now (the controller's address must be in its peer list before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_master_is_replaced_without_losing_acknowledged_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ns = namesrv::NameServer::start(namesrv_config(Duration::from_secs(3)))
        .await
        .unwrap();
    let nsa = ns.local_addr();
    let port = free_port();
    let conf = format!(
        "controllerDLegerGroup=it\ncontrollerDLegerPeers=n0-127.0.0.1:{port}\n\
         controllerDLegerSelfId=n0\ncontrollerStorePath={}\nscanNotActiveBrokerInterval=100\n\
         raftHeartbeatIntervalMillis=50\nmetricsExporterType=DISABLE\n",
        dir.path().join("controller").display()
    );
    let ctl = ChildController::start(
        Path::new(IT_CONTROLLER),
        &dir.path().join("controller.conf"),
        &conf,
    );
    let cfg = |n: i64| {
        let mut c = cluster_broker_config(nsa, dir.path(), ("b1", n, BrokerRole::SyncMaster), "1s");
        c.enable_controller_mode = true;
        c.controller_addr = ctl.addr.clone();
        c.all_ack_in_sync_state_set = true;
        c.broker_heartbeat_interval = 100;
        c.controller_heart_beat_timeout_mills = HEARTBEAT_TIMEOUT_MS;
        c.sync_broker_metadata_period = 1_000;
        c.sync_controller_metadata_period = 2_000;
        c.check_sync_state_set_period = 200;
        c.ha_send_heartbeat_interval = 100;
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
         (heartbeat timeout {HEARTBEAT_TIMEOUT_MS} ms; {during} sends attempted during the kill)"
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
