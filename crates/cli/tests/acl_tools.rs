//! `apogee admin` and `apogee bench` against a broker with `aclEnable=true` (in this test
//! process, on ephemeral 127.0.0.1 ports): unsigned admin requests are refused with upstream's
//! `AclException` remark, signed ones from the admin account pass; a PUB|SUB account produces
//! and consumes through the Rust client; a topic it may not write stays empty.

use std::process::Output;

use broker::BrokerConfig;

mod common;

const PLAIN_ACL: &str = r#"
accounts:
  - accessKey: appAccess
    secretKey: appSecret
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - AclOrders=PUB|SUB
  - accessKey: adminAccess
    secretKey: adminSecret
    admin: true
"#;

async fn apogee(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_apogee"))
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .env_remove("ROCKETMQ_ACCESS_KEY")
        .env_remove("ROCKETMQ_SECRET_KEY")
        .output()
        .await
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_sign_with_their_account() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("home/conf")).unwrap();
    std::fs::write(dir.path().join("home/conf/plain_acl.yml"), PLAIN_ACL).unwrap();
    let (namesrv, broker) = common::start_servers(
        dir.path(),
        BrokerConfig {
            broker_cluster_name: "AclCluster".into(),
            broker_name: "broker-acl".into(),
            acl_enable: true,
            rocketmq_home: Some(dir.path().join("home")),
            ..BrokerConfig::default()
        },
    )
    .await;
    let ns = format!("127.0.0.1:{}", namesrv.local_addr().port());
    let b = broker.broker_addr();
    let admin_creds = ["--access-key", "adminAccess", "--secret-key", "adminSecret"];
    let app_creds = ["--access-key", "appAccess", "--secret-key", "appSecret"];
    let update = |topic: &'static str| {
        vec![
            "admin",
            "updateTopic",
            "-n",
            &ns,
            "-b",
            &b,
            "-t",
            topic,
            "-r",
            "2",
            "-w",
            "2",
            "--json",
        ]
    };

    let out = apogee(&update("AclOrders")).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AclException: No accessKey is configured"),
        "{err}"
    );
    let out = apogee(&[update("AclOrders"), app_creds.to_vec()].concat()).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("Need admin permission"));
    for topic in ["AclOrders", "AclSecret"] {
        json(&apogee(&[update(topic), admin_creds.to_vec()].concat()).await);
    }

    let bench = |mode: &'static str, topic: &'static str| {
        [
            vec![
                "bench",
                mode,
                "-n",
                &ns,
                "--topic",
                topic,
                "--count",
                "50",
                "--concurrency",
                "4",
                "--json",
            ],
            if mode == "consume" {
                vec!["--group", "AclGroup", "--from", "first"]
            } else {
                vec![]
            },
            app_creds.to_vec(),
        ]
        .concat()
    };
    let produced = json(&apogee(&bench("produce", "AclOrders")).await);
    assert_eq!(
        (produced["messages"].as_u64(), produced["errors"].as_u64()),
        (Some(50), Some(0))
    );
    let consumed = json(&apogee(&bench("consume", "AclOrders")).await);
    assert_eq!(consumed["messages"], 50);

    // Not permitted: nothing reaches the topic.
    let refused = apogee(&bench("produce", "AclSecret")).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success() || text.contains("\"messages\":0"),
        "{text}"
    );
    let status = json(
        &apogee(
            &[
                vec![
                    "admin",
                    "topicStatus",
                    "-n",
                    &ns,
                    "-t",
                    "AclSecret",
                    "--json",
                ],
                admin_creds.to_vec(),
            ]
            .concat(),
        )
        .await,
    );
    let stored: i64 = status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(stored, 0);

    // The admin grants the topic with updateAclConfig; the same send now goes through.
    let grant = [
        vec![
            "admin",
            "updateAclConfig",
            "-n",
            &ns,
            "-b",
            &b,
            "-a",
            "appAccess",
            "-t",
            "AclOrders=PUB|SUB,AclSecret=PUB",
            "--json",
        ],
        admin_creds.to_vec(),
    ]
    .concat();
    let out = apogee(&grant[..grant.len() - admin_creds.len()]).await;
    assert!(!out.status.success(), "unsigned ACL change refused");
    assert_eq!(json(&apogee(&grant).await)["brokers"][0], b.as_str());
    let produced = json(&apogee(&bench("produce", "AclSecret")).await);
    assert_eq!(produced["errors"], 0);
    let versions = json(
        &apogee(
            &[
                vec![
                    "admin",
                    "clusterAclConfigVersion",
                    "-n",
                    &ns,
                    "-b",
                    &b,
                    "--json",
                ],
                admin_creds.to_vec(),
            ]
            .concat(),
        )
        .await,
    );
    assert_eq!(versions[0]["broker_name"], "broker-acl");
    assert_eq!(versions[0]["version"]["counter"], 2);
    broker.shutdown().await;
    namesrv.shutdown().await;
}
