//! Three controllers in one process over real TCP on 127.0.0.1: leader election, follower
//! redirection, broker registration and heartbeats, master election after a master's
//! heartbeats stop (with the role-change notification), loss of the controller leader, and a
//! restart of every controller from its store directory. Events are awaited by polling with a
//! deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::{Controller, ControllerConfig};
use remoting::addr::BrokerAddr;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::controller_headers::{
    AlterSyncStateSetRequestHeader, ApplyBrokerIdRequestHeader, ElectMasterRequestHeader,
    GetNextBrokerIdRequestHeader, GetReplicaInfoRequestHeader,
    NotifyBrokerRoleChangedRequestHeader, RegisterBrokerToControllerRequestHeader, SyncStateSet,
};
use remoting::headers::{BrokerHeartbeatRequestHeader, CommandHeader};
use remoting::server::{Connection, Dispatcher, RemotingServer, ServerConfig};
use remoting::{RemotingCommand, RequestCode, ResponseCode};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(3);

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn peers(ports: &[u16]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("n{i}-127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn config(ports: &[u16], me: usize, store: &Path) -> ControllerConfig {
    config_with(ports, me, store, "")
}

/// [`config`] plus the properties lines of `extra`.
fn config_with(ports: &[u16], me: usize, store: &Path, extra: &str) -> ControllerConfig {
    let text = format!(
        "controllerDLegerGroup=g1\ncontrollerDLegerPeers={}\ncontrollerDLegerSelfId=n{me}\n\
         controllerStorePath={}\nraftHeartbeatIntervalMillis=50\n\
         controllerHeartBeatTimeoutMills=1000\nscanNotActiveBrokerInterval=100\n{extra}",
        peers(ports),
        store.join(format!("n{me}")).display()
    );
    ControllerConfig::from_properties(&remoting::properties::parse_properties(&text))
        .expect("config")
}

async fn start_all(ports: &[u16], store: &Path) -> Vec<Option<Controller>> {
    let mut out = Vec::new();
    for i in 0..ports.len() {
        out.push(Some(
            Controller::start(config(ports, i, store))
                .await
                .expect("start controller"),
        ));
    }
    out
}

/// Polls `probe` until it yields a value or the deadline passes.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The index of the leader every running controller agrees on.
async fn agreed_leader(cs: &[Option<Controller>]) -> usize {
    eventually("a leader all agree on", || async {
        let leaders: BTreeSet<Option<u64>> = cs.iter().flatten().map(|c| c.leader()).collect();
        match leaders.into_iter().collect::<Vec<_>>()[..] {
            [Some(id)] => cs
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.node_id() == id)),
            _ => None,
        }
    })
    .await
}

fn addr(port: u16) -> BrokerAddr {
    BrokerAddr::parse(&format!("127.0.0.1:{port}")).expect("addr")
}

async fn call(
    client: &RemotingClient,
    port: u16,
    code: i32,
    header: &impl CommandHeader,
    body: Option<Vec<u8>>,
) -> RemotingCommand {
    let mut req = RemotingCommand::request(code);
    header.write_to(&mut req);
    if let Some(body) = body {
        req = req.with_body(body);
    }
    client.invoke(&addr(port), req, CALL).await.expect("call")
}

async fn replica_info(client: &RemotingClient, port: u16) -> RemotingCommand {
    let h = GetReplicaInfoRequestHeader {
        broker_name: "b1".into(),
    };
    call(
        client,
        port,
        RequestCode::CONTROLLER_GET_REPLICA_INFO,
        &h,
        None,
    )
    .await
}

fn heartbeat(id: i64, broker_addr: &str) -> BrokerHeartbeatRequestHeader {
    BrokerHeartbeatRequestHeader {
        cluster_name: "c1".into(),
        broker_addr: broker_addr.into(),
        broker_name: "b1".into(),
        broker_id: Some(id),
        epoch: Some(1),
        max_offset: Some(0),
        confirm_offset: None,
        heartbeat_timeout_millis: None,
        election_priority: None,
    }
}

async fn register_broker(client: &RemotingClient, port: u16, id: i64, broker_addr: &str) {
    let next = call(
        client,
        port,
        RequestCode::CONTROLLER_GET_NEXT_BROKER_ID,
        &GetNextBrokerIdRequestHeader {
            cluster_name: "c1".into(),
            broker_name: "b1".into(),
        },
        None,
    )
    .await;
    assert_eq!(next.code, ResponseCode::SUCCESS, "{}", next.remark_str());
    assert_eq!(next.ext("nextBrokerId"), Some(id.to_string().as_str()));
    let apply = ApplyBrokerIdRequestHeader {
        cluster_name: "c1".into(),
        broker_name: "b1".into(),
        applied_broker_id: id,
        register_check_code: format!("{broker_addr};{id}"),
    };
    let r = call(
        client,
        port,
        RequestCode::CONTROLLER_APPLY_BROKER_ID,
        &apply,
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    let reg = RegisterBrokerToControllerRequestHeader {
        cluster_name: "c1".into(),
        broker_name: "b1".into(),
        broker_id: id,
        broker_address: broker_addr.into(),
        invoke_time: None,
    };
    let r = call(
        client,
        port,
        RequestCode::CONTROLLER_REGISTER_BROKER,
        &reg,
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
}

/// A stand-in broker that records the NOTIFY_BROKER_ROLE_CHANGED requests it gets.
async fn notified_broker() -> (RemotingServer, mpsc::UnboundedReceiver<RemotingCommand>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut dispatcher = Dispatcher::new();
    dispatcher
        .register(
            RequestCode::NOTIFY_BROKER_ROLE_CHANGED,
            Arc::new(move |_conn: Connection, request: RemotingCommand| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(request.clone());
                    Some(RemotingCommand::response_to(
                        &request,
                        ResponseCode::SUCCESS,
                        None,
                    ))
                }
            }),
        )
        .expect("one handler");
    let server = RemotingServer::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        },
        dispatcher,
    )
    .await
    .expect("broker server");
    (server, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_answers_not_leader_with_the_leader_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let cs = start_all(&ports, dir.path()).await;
    let leader = agreed_leader(&cs).await;
    let follower = (leader + 1) % 3;
    let client = RemotingClient::new(ClientConfig::default());
    let r = replica_info(&client, ports[follower]).await;
    assert_eq!(r.code, ResponseCode::CONTROLLER_NOT_LEADER);
    let leader_addr = format!("127.0.0.1:{}", ports[leader]);
    assert_eq!(r.ext("controllerLeaderAddress"), Some(leader_addr.as_str()));
    // The leader answers: no such group yet.
    let r = replica_info(&client, ports[leader]).await;
    assert_eq!(r.code, ResponseCode::CONTROLLER_BROKER_METADATA_NOT_EXIST);
    // Metadata is served by everyone.
    let meta = client
        .invoke(
            &addr(ports[follower]),
            RemotingCommand::request(RequestCode::CONTROLLER_GET_METADATA_INFO),
            CALL,
        )
        .await
        .expect("metadata");
    assert_eq!(meta.ext("isLeader"), Some("false"));
    assert_eq!(meta.ext("group"), Some("g1"));
    client.shutdown().await;
    for c in cs.into_iter().flatten() {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_failover_survives_leader_loss_and_full_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    let mut cs = start_all(&ports, dir.path()).await;
    let leader = agreed_leader(&cs).await;
    let client = RemotingClient::new(ClientConfig::default());
    let (broker2, mut notifications) = notified_broker().await;
    let b1 = "127.0.0.1:1".to_string();
    let b2 = broker2.local_addr().to_string();

    register_broker(&client, ports[leader], 1, &b1).await;
    register_broker(&client, ports[leader], 2, &b2).await;
    for (id, a) in [(1, &b1), (2, &b2)] {
        for p in &ports {
            let r = call(
                &client,
                *p,
                RequestCode::BROKER_HEARTBEAT,
                &heartbeat(id, a),
                None,
            )
            .await;
            assert_eq!(r.code, ResponseCode::SUCCESS);
        }
    }
    // Broker 1 asks first: the group's first election makes it master.
    let elect = ElectMasterRequestHeader {
        cluster_name: Some("c1".into()),
        broker_name: "b1".into(),
        broker_id: Some(1),
        designate_elect: false,
        invoke_time: None,
    };
    let r = call(
        &client,
        ports[leader],
        RequestCode::CONTROLLER_ELECT_MASTER,
        &elect,
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    assert_eq!(r.ext("masterBrokerId"), Some("1"));
    assert_eq!(r.ext("masterEpoch"), Some("1"));

    // The master adds 2 to the SyncStateSet; a stale epoch is refused.
    let alter = |master_epoch| AlterSyncStateSetRequestHeader {
        broker_name: "b1".into(),
        master_broker_id: 1,
        master_epoch,
        invoke_time: None,
    };
    let set = serde_json::to_vec(&SyncStateSet {
        sync_state_set: BTreeSet::from([1, 2]),
        sync_state_set_epoch: 1,
    })
    .expect("json");
    let r = call(
        &client,
        ports[leader],
        RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET,
        &alter(0),
        Some(set.clone()),
    )
    .await;
    assert_eq!(r.code, ResponseCode::CONTROLLER_FENCED_MASTER_EPOCH);
    let r = call(
        &client,
        ports[leader],
        RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET,
        &alter(1),
        Some(set),
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    assert_eq!(r.ext("newSyncStateSetEpoch"), Some("2"));

    // Broker 1 goes silent, broker 2 keeps beating: the leader elects 2.
    let beating = {
        let client = client.clone();
        let ports = ports.clone();
        let b2 = b2.clone();
        tokio::spawn(async move {
            loop {
                for p in &ports {
                    let mut req = RemotingCommand::request(RequestCode::BROKER_HEARTBEAT);
                    heartbeat(2, &b2).write_to(&mut req);
                    // A stopped controller just misses this beat.
                    let _ = client
                        .invoke(&addr(*p), req, Duration::from_millis(500))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let r = eventually("broker 2 elected master", || async {
        let r = replica_info(&client, ports[leader]).await;
        (r.ext("masterBrokerId") == Some("2")).then_some(r)
    })
    .await;
    assert_eq!(r.ext("masterEpoch"), Some("2"));
    assert_eq!(r.ext("masterAddress"), Some(b2.as_str()));
    // The first election notified broker 2 too; wait for the one naming it master.
    let note = tokio::time::timeout(DEADLINE, async {
        loop {
            let req = notifications.recv().await.expect("a notification");
            let note = NotifyBrokerRoleChangedRequestHeader::from_command(&req).expect("header");
            if note.master_broker_id == Some(2) {
                return note;
            }
        }
    })
    .await
    .expect("notified in time");
    assert_eq!(note.master_epoch, Some(2));
    let before = cs[leader].as_ref().expect("leader").replicas();

    // The controller leader goes away; another one serves the same metadata.
    if let Some(old) = cs[leader].take() {
        old.shutdown().await;
    }
    let new_leader = agreed_leader(&cs).await;
    assert_ne!(new_leader, leader);
    let r = eventually("the new leader answers", || async {
        let r = replica_info(&client, ports[new_leader]).await;
        (r.code == ResponseCode::SUCCESS).then_some(r)
    })
    .await;
    assert_eq!(r.ext("masterBrokerId"), Some("2"));
    assert_eq!(r.ext("masterEpoch"), Some("2"));
    assert_eq!(
        cs[new_leader].as_ref().expect("new leader").replicas(),
        before
    );

    // Every controller stops; all restart from their stores with the same metadata.
    beating.abort();
    for c in cs.into_iter().flatten() {
        c.shutdown().await;
    }
    let cs = start_all(&ports, dir.path()).await;
    let leader = agreed_leader(&cs).await;
    let r = eventually("the restarted leader answers", || async {
        let r = replica_info(&client, ports[leader]).await;
        (r.code == ResponseCode::SUCCESS).then_some(r)
    })
    .await;
    assert_eq!(r.ext("masterBrokerId"), Some("2"));
    let sync: SyncStateSet = serde_json::from_slice(&r.body).expect("body");
    assert_eq!(sync.sync_state_set, BTreeSet::from([2]));
    assert_eq!(sync.sync_state_set_epoch, 3);
    eventually("every controller applied the log", || async {
        cs.iter()
            .flatten()
            .all(|c| c.replicas() == before)
            .then_some(())
    })
    .await;
    client.shutdown().await;
    broker2.shutdown().await;
    for c in cs.into_iter().flatten() {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_elections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(1);
    let mut c = Controller::start(config(&ports, 0, dir.path()))
        .await
        .expect("start controller");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics = c.serve_metrics(listener).expect("metrics served");
    eventually("a leader", || async { c.leader() }).await;
    let client = RemotingClient::new(ClientConfig::default());
    // Addresses nobody listens on: role-change notifications to them just fail.
    register_broker(&client, ports[0], 1, "127.0.0.1:1").await;
    register_broker(&client, ports[0], 2, "127.0.0.1:2").await;
    for (id, a) in [(1, "127.0.0.1:1"), (2, "127.0.0.1:2")] {
        let r = call(
            &client,
            ports[0],
            RequestCode::BROKER_HEARTBEAT,
            &heartbeat(id, a),
            None,
        )
        .await;
        assert_eq!(r.code, ResponseCode::SUCCESS);
    }
    let elect = |id| ElectMasterRequestHeader {
        cluster_name: Some("c1".into()),
        broker_name: "b1".into(),
        broker_id: Some(id),
        designate_elect: false,
        invoke_time: None,
    };
    let r = call(
        &client,
        ports[0],
        RequestCode::CONTROLLER_ELECT_MASTER,
        &elect(1),
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    // Broker 2 asks while 1 is a live master: the master stays.
    let r = call(
        &client,
        ports[0],
        RequestCode::CONTROLLER_ELECT_MASTER,
        &elect(2),
        None,
    )
    .await;
    assert_eq!(
        r.code,
        ResponseCode::CONTROLLER_MASTER_STILL_EXIST,
        "{}",
        r.remark_str()
    );

    let s = testkit::metrics::scrape(metrics).await;
    let me = [("group", "g1"), ("peer_id", "n0")];
    assert_eq!(s.value("role", &me), Some(3.0), "a lone controller leads");
    let result = |r: &'static str| {
        [
            ("cluster", "c1"),
            ("broker_set", "b1"),
            ("election_result", r),
        ]
    };
    assert_eq!(
        s.value("election_total", &result("new_master_elected")),
        Some(1.0)
    );
    assert_eq!(
        s.value("election_total", &result("keep_current_master")),
        Some(1.0)
    );
    assert_eq!(
        s.value("election_total", &result("no_master_elected")),
        None
    );
    assert_eq!(
        s.value("apogee_controller_election_duration_count", &[]),
        Some(2.0)
    );
    let elect_req = |status: &'static str| {
        [
            ("request_type", "CONTROLLER_ELECT_MASTER"),
            ("request_handle_status", status),
        ]
    };
    assert_eq!(s.value("request_total", &elect_req("success")), Some(1.0));
    assert_eq!(s.value("request_total", &elect_req("failed")), Some(1.0));
    assert_eq!(
        s.value(
            "request_total",
            &[
                ("request_type", "CONTROLLER_BROKER_HEARTBEAT"),
                ("request_handle_status", "success")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        s.value("request_latency_count", &elect_req("success")),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "active_broker_num",
            &[("cluster", "c1"), ("broker_set", "b1")]
        ),
        Some(2.0)
    );
    assert!(s.value("dledger_disk_usage", &[]).expect("disk usage") > 0.0);
    client.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_elect_and_serve_over_tls_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(3);
    // Enforcing ports with generated certificates; Raft RPCs over TLS (test mode: any
    // certificate accepted).
    let tls = "tls.server.mode=enforcing\ntls.enable=true\n";
    let mut cs = Vec::new();
    for i in 0..ports.len() {
        cs.push(Some(
            Controller::start(config_with(&ports, i, dir.path(), tls))
                .await
                .expect("start controller"),
        ));
    }
    let leader = agreed_leader(&cs).await;
    let client = RemotingClient::new(ClientConfig {
        tls: Some(
            remoting::tls::ClientTls::new(&remoting::tls::TlsClientSettings {
                insecure: true,
                ..Default::default()
            })
            .expect("client TLS"),
        ),
        ..ClientConfig::default()
    });
    let meta = client
        .invoke(
            &addr(ports[leader]),
            RemotingCommand::request(RequestCode::CONTROLLER_GET_METADATA_INFO),
            CALL,
        )
        .await
        .expect("metadata over TLS");
    assert_eq!(meta.ext("isLeader"), Some("true"));
    let plain = RemotingClient::new(ClientConfig::default());
    let refused = plain
        .invoke(
            &addr(ports[leader]),
            RemotingCommand::request(RequestCode::CONTROLLER_GET_METADATA_INFO),
            CALL,
        )
        .await;
    assert!(refused.is_err(), "plaintext answered: {refused:?}");
    client.shutdown().await;
    plain.shutdown().await;
    for c in cs.into_iter().flatten() {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_guards_manual_elections() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("home/conf")).expect("conf dir");
    std::fs::write(
        dir.path().join("home/conf/plain_acl.yml"),
        "accounts:\n  - accessKey: operator1\n    secretKey: operatorSecret\n    admin: true\n",
    )
    .expect("acl file");
    let ports = free_ports(1);
    let acl = format!(
        "aclEnable=true\nrocketmqHome={}\n",
        dir.path().join("home").display()
    );
    let c = Controller::start(config_with(&ports, 0, dir.path(), &acl))
        .await
        .expect("start controller");
    eventually("a leader", || async { c.leader() }).await;
    let client = RemotingClient::new(ClientConfig::default());
    // Brokers' own requests stay open.
    register_broker(&client, ports[0], 1, "127.0.0.1:1").await;
    let r = call(
        &client,
        ports[0],
        RequestCode::BROKER_HEARTBEAT,
        &heartbeat(1, "127.0.0.1:1"),
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SUCCESS);
    let manual = ElectMasterRequestHeader {
        cluster_name: Some("c1".into()),
        broker_name: "b1".into(),
        broker_id: Some(1),
        designate_elect: true,
        invoke_time: None,
    };
    let r = call(
        &client,
        ports[0],
        RequestCode::CONTROLLER_ELECT_MASTER,
        &manual,
        None,
    )
    .await;
    assert_eq!(r.code, ResponseCode::SYSTEM_ERROR);
    assert_eq!(
        r.remark_str(),
        "org.apache.rocketmq.acl.common.AclException: No accessKey is configured"
    );
    let operator = RemotingClient::new(ClientConfig {
        credentials: Some(remoting::acl::Credentials::new(
            "operator1",
            "operatorSecret",
        )),
        ..ClientConfig::default()
    });
    let r = call(
        &operator,
        ports[0],
        RequestCode::CONTROLLER_ELECT_MASTER,
        &manual,
        None,
    )
    .await;
    // Past the ACL: the answer is the controller's own to this designated election.
    assert!(
        !r.remark_str().contains("AclException"),
        "{}",
        r.remark_str()
    );
    assert_eq!(
        r.code,
        ResponseCode::CONTROLLER_ELECT_MASTER_FAILED,
        "{}",
        r.remark_str()
    );
    client.shutdown().await;
    operator.shutdown().await;
    c.shutdown().await;
}
