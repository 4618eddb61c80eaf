//! Runs the `apogee admin` controller-mode commands (getControllerMetaData, getSyncStateSet,
//! getBrokerEpoch, electMaster) as the binary against a controller, a NameServer and the two
//! brokers of group `b1` in controller mode, all started in this test process on ephemeral
//! 127.0.0.1 ports (the controller's port, which its peer list must name, is picked free).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use controller::{Controller, ControllerConfig};
use namesrv::{NameServer, NamesrvConfig};

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The controllers of a group `cg` with one peer per port, started in order.
async fn start_controllers(dir: &Path, ports: &[u16]) -> Vec<Controller> {
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("n{i}-127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(";");
    let mut out = Vec::new();
    for i in 0..ports.len() {
        let text = format!(
            "controllerDLegerGroup=cg\ncontrollerDLegerPeers={peers}\n\
             controllerDLegerSelfId=n{i}\ncontrollerStorePath={}\n\
             raftHeartbeatIntervalMillis=50\ncontrollerHeartBeatTimeoutMills=1000\n\
             scanNotActiveBrokerInterval=100\nmetricsExporterType=DISABLE\n",
            dir.join(format!("controller-n{i}")).display()
        );
        let config =
            ControllerConfig::from_properties(&remoting::properties::parse_properties(&text))
                .expect("controller config");
        out.push(Controller::start(config).await.expect("start controller"));
    }
    out
}

async fn start_controller(dir: &Path) -> Controller {
    let mut all = start_controllers(dir, &[free_port()]).await;
    all.remove(0)
}

async fn start_broker(dir: &Path, ns: &str, ctl: &str, id: i64) -> Broker {
    Broker::start(BrokerConfig {
        broker_cluster_name: "C".into(),
        broker_name: "b1".into(),
        broker_id: id,
        namesrv_addr: ns.into(),
        listen_port: 0,
        broker_ip1: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        store_path_root_dir: dir.join(format!("b1-{id}")),
        mapped_file_size_commit_log: 4 * 1024 * 1024,
        register_name_server_period: 300,
        enable_controller_mode: true,
        controller_addr: ctl.into(),
        all_ack_in_sync_state_set: true,
        broker_heartbeat_interval: 100,
        controller_heart_beat_timeout_mills: 1_000,
        sync_broker_metadata_period: 500,
        check_sync_state_set_period: 200,
        ha_send_heartbeat_interval: 100,
        ..BrokerConfig::default()
    })
    .await
    .expect("start broker")
}

async fn apogee(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_apogee"))
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `getSyncStateSet -b b1 --json`'s entry for `b1`, or Null while the group is unknown.
async fn b1_state(ctl: &str) -> serde_json::Value {
    let out = apogee(&["admin", "getSyncStateSet", "-a", ctl, "-b", "b1", "--json"]).await;
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    json(&out)["replicasInfoTable"]["b1"].clone()
}

/// Waits until `b1`'s master is `master` with `in_sync` replicas in its SyncStateSet.
async fn wait_for(ctl: &str, master: i64, in_sync: usize) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = b1_state(ctl).await;
        if s["masterBrokerId"] == master
            && s["inSyncReplicas"].as_array().map(Vec::len) == Some(in_sync)
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "b1 never had master {master} with {in_sync} in sync: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_commands_read_and_switch_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        kv_config_path: dir.path().join("kv.json"),
        ..NamesrvConfig::default()
    })
    .await
    .unwrap();
    let ns = format!("127.0.0.1:{}", namesrv.local_addr().port());
    let controller = start_controller(dir.path()).await;
    let ctl = format!("127.0.0.1:{}", controller.local_addr().port());

    // getControllerMetaData: upstream's lines, and the same as JSON.
    let deadline = Instant::now() + WAIT;
    let meta = loop {
        let meta = json(&apogee(&["admin", "getControllerMetaData", "-a", &ctl, "--json"]).await);
        if meta["isLeader"] == true {
            break meta;
        }
        assert!(Instant::now() < deadline, "no leader: {meta}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(meta["group"], "cg");
    assert_eq!(meta["controllerLeaderId"], "n0");
    assert_eq!(meta["controllerLeaderAddress"], ctl.as_str());
    assert_eq!(meta["peers"], serde_json::json!([format!("n0-{ctl}")]));
    let text = stdout(&apogee(&["admin", "getControllerMetaData", "-a", &ctl]).await);
    println!("$ apogee admin getControllerMetaData -a {ctl}{text}");
    assert!(text.contains("#ControllerGroup\tcg\n"), "{text}");
    assert!(text.contains("#ControllerLeaderId\tn0\n"), "{text}");
    assert!(
        text.contains(&format!("#ControllerLeaderAddress\t{ctl}\n")),
        "{text}"
    );
    assert!(text.contains(&format!("#Peer:\tn0-{ctl}")), "{text}");

    // A group the controller does not know is an error.
    let out = apogee(&["admin", "getSyncStateSet", "-a", &ctl, "-b", "nope"]).await;
    assert!(!out.status.success());

    let a = start_broker(dir.path(), &ns, &ctl, 1).await;
    wait_for(&ctl, 1, 1).await;
    let b = start_broker(dir.path(), &ns, &ctl, 2).await;
    let state = wait_for(&ctl, 1, 2).await;
    let (a_addr, b_addr) = (a.broker_addr(), b.broker_addr());
    assert_eq!(state["masterAddress"], a_addr.as_str());
    let epoch = state["masterEpoch"].as_i64().unwrap();

    // getSyncStateSet as text, by cluster (the group names come from the NameServer).
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let out = apogee(&["admin", "-n", &ns, "getSyncStateSet", "-a", &ctl, "-c", "C"]).await;
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "b1 never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("$ apogee admin getSyncStateSet -a {ctl} -c C{text}");
    for line in [
        "#brokerName\tb1\n".to_string(),
        "#MasterBrokerId\t1\n".to_string(),
        format!("#MasterAddr\t{a_addr}\n"),
        format!("#MasterEpoch\t{epoch}\n"),
        "#SyncStateSetNums\t2\n".to_string(),
        format!(
            "InSyncReplica:\tReplicaIdentity{{brokerName='b1', brokerId=2, \
             brokerAddress='{b_addr}', alive=true}}"
        ),
    ] {
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }

    // A few messages, so the slave replicates (and copies the master's epoch entry).
    stdout(
        &apogee(&[
            "admin",
            "-n",
            &ns,
            "updateTopic",
            "-b",
            &a_addr,
            "-t",
            "CtlTopic",
        ])
        .await,
    );
    for i in 0..3 {
        let body = format!("m{i}");
        let deadline = Instant::now() + WAIT;
        while !apogee(&[
            "admin",
            "-n",
            &ns,
            "sendMessage",
            "-t",
            "CtlTopic",
            "-p",
            &body,
        ])
        .await
        .status
        .success()
        {
            assert!(Instant::now() < deadline, "no send to CtlTopic succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // getBrokerEpoch: both replicas went through the master's epoch from offset 0.
    let deadline = Instant::now() + WAIT;
    let epochs = loop {
        let out = apogee(&["admin", "-n", &ns, "getBrokerEpoch", "-b", "b1", "--json"]).await;
        if out.status.success() {
            let v = json(&out);
            let listed = v.as_array().cloned().unwrap_or_default();
            if listed.len() == 2
                && listed
                    .iter()
                    .all(|e| e["epochList"].as_array().is_some_and(|l| !l.is_empty()))
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "b1's two brokers never listed with epochs: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for e in epochs.as_array().unwrap() {
        assert_eq!(e["clusterName"], "C");
        assert_eq!(e["brokerName"], "b1");
        let list = e["epochList"].as_array().unwrap();
        assert_eq!(list[0]["epoch"], epoch);
        assert_eq!(list[0]["startOffset"], 0);
        assert_eq!(list.last().unwrap()["endOffset"], e["maxOffset"]);
    }
    let text = stdout(&apogee(&["admin", "-n", &ns, "getBrokerEpoch", "-c", "C"]).await);
    println!("$ apogee admin getBrokerEpoch -c C{text}");
    assert!(text.contains(&format!("#brokerAddr\t{a_addr}\n")), "{text}");
    assert!(text.contains(&format!("#brokerAddr\t{b_addr}\n")), "{text}");
    assert!(
        text.contains(&format!(
            "#Epoch: EpochEntry{{epoch={epoch}, startOffset=0, "
        )),
        "{text}"
    );

    // haStatus: the master lists its slave's connection in sync, the slave names the
    // master's HA address; by cluster only the master is asked (upstream's -c).
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let v = json(&apogee(&["admin", "haStatus", "-b", &a_addr, "--json"]).await);
        let m = v[&a_addr].clone();
        if m["haConnectionInfo"][0]["diff"] == 0 && m["masterCommitLogMaxOffset"].as_i64() > Some(0)
        {
            break m;
        }
        assert!(Instant::now() < deadline, "the slave never caught up: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["master"], true);
    assert_eq!(status["inSyncSlaveNums"], 1);
    assert_eq!(status["haConnectionInfo"][0]["inSync"], true);
    assert_eq!(
        status["haConnectionInfo"][0]["slaveAckOffset"],
        status["masterCommitLogMaxOffset"]
    );
    let slave = json(&apogee(&["admin", "haStatus", "-b", &b_addr, "--json"]).await);
    let slave = &slave[&b_addr];
    assert_eq!(slave["master"], false);
    assert_eq!(
        slave["haClientRuntimeInfo"]["maxOffset"],
        status["masterCommitLogMaxOffset"]
    );
    let master_ha = slave["haClientRuntimeInfo"]["masterAddr"].as_str().unwrap();
    assert!(master_ha.starts_with("127.0.0.1:"), "{slave}");
    let text = stdout(&apogee(&["admin", "-n", &ns, "haStatus", "-c", "C"]).await);
    println!("$ apogee admin haStatus -c C{text}");
    let end = status["masterCommitLogMaxOffset"].as_i64().unwrap();
    assert!(
        text.starts_with(&format!(
            "\n#MasterAddr\t{a_addr}\n#MasterCommitLogMaxOffset\t{end}\n#SlaveNum\t1\n\
             #InSyncSlaveNum\t1\n#SlaveAddr"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{end:<16} {:>16} {:>16} {:>16}", 0, "0.00", "OK")),
        "{text}"
    );
    assert!(!text.contains(&b_addr), "{text}");
    let text = stdout(&apogee(&["admin", "haStatus", "-b", &b_addr]).await);
    assert!(
        text.starts_with(&format!(
            "\n#MasterAddr\t{master_ha}\n#CommitLogMaxOffset\t{end}\n"
        )),
        "{text}"
    );

    // `-i 1` prints again every second until stopped.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apogee"))
        .args([
            "admin",
            "getSyncStateSet",
            "-a",
            &ctl,
            "-b",
            "b1",
            "-i",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("#brokerName\tb1\n").count() >= 2, "{text}");

    // electMaster: the operator makes replica 2 master, then 1 again (text output, with
    // upstream's `-bn <group> -b <id>` spelling).
    let elected = json(
        &apogee(&[
            "admin",
            "electMaster",
            "-a",
            &ctl,
            "-c",
            "C",
            "-b",
            "b1",
            "-i",
            "2",
            "--json",
        ])
        .await,
    );
    assert_eq!(elected["masterBrokerId"], 2);
    assert_eq!(elected["masterAddress"], b_addr.as_str());
    assert_eq!(elected["masterEpoch"], epoch + 1);
    let state = wait_for(&ctl, 2, 2).await;
    assert_eq!(state["masterAddress"], b_addr.as_str());
    let text = stdout(
        &apogee(&[
            "admin",
            "electMaster",
            "-a",
            &ctl,
            "-c",
            "C",
            "-bn",
            "b1",
            "-b",
            "1",
        ])
        .await,
    );
    println!("$ apogee admin electMaster -a {ctl} -c C -bn b1 -b 1{text}");
    for line in [
        "#ClusterName\tC\n".to_string(),
        "#BrokerName\tb1\n".to_string(),
        format!("#BrokerMasterAddr\t{a_addr}\n"),
        format!("#MasterEpoch\t{}\n", epoch + 2),
        format!("\t#Broker\t1\t{a_addr}"),
        format!("\t#Broker\t2\t{b_addr}"),
    ] {
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    wait_for(&ctl, 1, 2).await;

    b.shutdown().await;
    a.shutdown().await;
    controller.shutdown().await;
    namesrv.shutdown().await;
}

/// With three controllers, every command given a follower's address reaches the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_given_a_follower_reach_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        kv_config_path: dir.path().join("kv.json"),
        ..NamesrvConfig::default()
    })
    .await
    .unwrap();
    let ns = format!("127.0.0.1:{}", namesrv.local_addr().port());
    let ports = [free_port(), free_port(), free_port()];
    let controllers = start_controllers(dir.path(), &ports).await;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();

    // Wait for a leader, then pick a follower.
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let meta =
            json(&apogee(&["admin", "getControllerMetaData", "-a", &addrs[0], "--json"]).await);
        if let Some(l) = meta["controllerLeaderAddress"].as_str() {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no leader: {meta}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let follower = addrs.iter().find(|a| **a != leader).unwrap().clone();
    let meta = json(&apogee(&["admin", "getControllerMetaData", "-a", &follower, "--json"]).await);
    assert_eq!(meta["isLeader"], false);
    assert_eq!(meta["controllerLeaderAddress"], leader.as_str());
    assert_eq!(meta["peers"].as_array().map(Vec::len), Some(3));

    let broker = start_broker(dir.path(), &ns, &addrs.join(";"), 1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = b1_state(&follower).await;
        if s["masterBrokerId"] == 1 {
            assert_eq!(s["masterAddress"], broker.broker_addr().as_str());
            break;
        }
        assert!(Instant::now() < deadline, "b1 never had a master: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An election the leader refuses (no replica 7) comes back as the leader's refusal.
    let out = apogee(&[
        "admin",
        "electMaster",
        "-a",
        &follower,
        "-c",
        "C",
        "-b",
        "b1",
        "-i",
        "7",
    ])
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    println!("$ apogee admin electMaster -a {follower} -c C -b b1 -i 7\n{err}");
    assert!(!err.contains("CONTROLLER_NOT_LEADER"), "{err}");
    assert!(
        err.contains(&format!(
            "CONTROLLER_ELECT_MASTER failed at controller {leader}: code 2012 \
             (CONTROLLER_ELECT_MASTER_FAILED)"
        )),
        "{err}"
    );

    // cleanBrokerMetadata (upstream's flags): refused while the broker lives, then done.
    let clean = [
        "admin",
        "cleanBrokerMetadata",
        "-a",
        &follower,
        "-bn",
        "b1",
        "-c",
        "C",
    ];
    let out = apogee(&clean).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still alive"), "{err}");
    broker.shutdown().await;
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let out = apogee(&clean).await;
        if out.status.success() {
            break stdout(&out);
        }
        assert!(
            Instant::now() < deadline,
            "never cleaned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        text.trim(),
        "clear broker b1 metadata from controller success!"
    );
    assert_eq!(b1_state(&follower).await, serde_json::Value::Null);

    for c in controllers {
        c.shutdown().await;
    }
    namesrv.shutdown().await;
}

/// `apogee admin updateControllerConfig -a <controllers> -k <key> -v <value>`.
async fn update_controller_config(controllers: &str, key: &str, value: &str) -> Output {
    apogee(&[
        "admin",
        "updateControllerConfig",
        "-a",
        controllers,
        "-k",
        key,
        "-v",
        value,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_config_is_read_and_updated_on_each_controller() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let _controllers = start_controllers(dir.path(), &ports).await;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let all = addrs.join(";");

    // Each controller answers with its own settings.
    let config = json(&apogee(&["admin", "getControllerConfig", "-a", &all, "--json"]).await);
    for (i, addr) in addrs.iter().enumerate() {
        assert_eq!(config[addr]["controllerDLegerSelfId"], format!("n{i}"));
        assert_eq!(config[addr]["controllerDLegerGroup"], "cg");
        assert_eq!(config[addr]["enableElectUncleanMaster"], "false");
        assert_eq!(config[addr]["tls.server.keyPassword"], "");
    }
    let text = stdout(&apogee(&["admin", "getControllerConfig", "-a", &addrs[1]]).await);
    println!("$ apogee admin getControllerConfig -a {}\n{text}", addrs[1]);
    assert!(
        text.starts_with(&format!("============{}============\n", addrs[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n{:<50}=  n1\n", "controllerDLegerSelfId")),
        "{text}"
    );

    // A key read while running changes on every controller named.
    let out = stdout(&update_controller_config(&all, "enableElectUncleanMaster", "true").await);
    assert_eq!(
        out.trim_end(),
        format!(
            "update controller config success![{}]\nenableElectUncleanMaster : true",
            addrs.join(", ")
        )
    );
    let config = json(&apogee(&["admin", "getControllerConfig", "-a", &all, "--json"]).await);
    for addr in &addrs {
        assert_eq!(config[addr]["enableElectUncleanMaster"], "true");
    }

    // A key only read at start is refused (NO_PERMISSION, upstream's remark) and nothing
    // changes; so is a value that does not parse.
    let out = update_controller_config(&addrs[0], "controllerDLegerPeers", "n0-127.0.0.1:1").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("NO_PERMISSION") && err.contains("Can not update config in black list"),
        "{err}"
    );
    let out = update_controller_config(&addrs[0], "controllerHeartBeatTimeoutMills", "soon").await;
    assert!(!out.status.success());
    let config = json(&apogee(&["admin", "getControllerConfig", "-a", &addrs[0], "--json"]).await);
    assert_eq!(
        config[&addrs[0]]["controllerDLegerPeers"],
        ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("n{i}-127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(";")
    );
    assert_eq!(config[&addrs[0]]["controllerHeartBeatTimeoutMills"], "1000");
}
