//! The web console (`apogee console`, a child process) against a NameServer and a broker in
//! this test process on ephemeral 127.0.0.1 ports. The scenario: messages produced to two
//! topics, one consumed by a group whose listener always fails one message ("poison"), which
//! goes to the retry topic once and then to the group's DLQ. `console_api_reports_the_cluster`
//! checks the JSON API's exact figures; `console_page_in_chromium` (run by `.ci/run` after it
//! installs Debian's chromium and `playwright-core`) checks the same in the page, in a real
//! browser, and re-sends the dead letter by clicking.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{ClientConfig, Producer, ProducerConfig};
use namesrv::NameServer;
use remoting::broker_headers::ConsumeFromWhere;
use remoting::message::Message;
use serde_json::Value;
use testkit::http::http_json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

const GROUP: &str = "ConsoleGroup";
const CONSUMED: &str = "ConsoleTopicA";
const OTHER: &str = "ConsoleTopicB";
const POISON_KEY: &str = "poison";
/// Messages produced to each topic (one of those to `CONSUMED` is the poison).
const PER_TOPIC: usize = 10;

struct Scenario {
    namesrv: NameServer,
    broker: Broker,
    consumer: PushConsumer,
    console: Child,
    console_addr: SocketAddr,
    /// How many times the listener was handed the poison message.
    poison_deliveries: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// Polls `check` every 100 ms until it returns `Some`, failing with `what` after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Scenario {
    async fn start() -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let (namesrv, broker) = common::start_servers(
            dir.path(),
            BrokerConfig {
                broker_cluster_name: "ConsoleCluster".into(),
                broker_name: "broker-c".into(),
                auto_create_topic_enable: true,
                auto_create_subscription_group: true,
                // Retries come back after 200 ms instead of upstream's 10 s.
                message_delay_level: vec!["200ms"; 18].join(" "),
                ..BrokerConfig::default()
            },
        )
        .await;
        let ns = format!("127.0.0.1:{}", namesrv.local_addr().port());

        let mut console = Command::new(env!("CARGO_BIN_EXE_apogee"))
            .args(["console", "-n", &ns, "--port", "0"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(console.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the console prints its address")
            .unwrap()
            .expect("the console printed a line");
        let console_addr: SocketAddr = first
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in `{first}`"));

        let producer = Producer::start(
            ClientConfig::new(&ns).unwrap(),
            ProducerConfig::new("ConsoleProducer"),
        )
        .await
        .unwrap();
        for i in 0..PER_TOPIC {
            let key = if i == 3 {
                POISON_KEY.to_string()
            } else {
                format!("a-{i}")
            };
            let msg =
                Message::new(CONSUMED, format!("body of {key}").into_bytes()).with_keys([key]);
            producer.send(msg).await.unwrap();
            let msg =
                Message::new(OTHER, format!("b-{i}").into_bytes()).with_keys([format!("b-{i}")]);
            producer.send(msg).await.unwrap();
        }
        producer.shutdown().await;

        let poison_deliveries = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&poison_deliveries);
        let mut config = PushConsumerConfig::new(GROUP)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
        // One retry, then the dead-letter queue.
        config.max_reconsume_times = 1;
        let consumer = PushConsumer::start(
            ClientConfig::new(&ns).unwrap(),
            config,
            &[(CONSUMED, "*")],
            MessageListener::concurrently(move |msgs, _ctx| {
                if msgs.iter().any(|m| m.message.keys().contains(&POISON_KEY)) {
                    seen.fetch_add(1, Ordering::SeqCst);
                    return ConsumeConcurrentlyStatus::ReconsumeLater;
                }
                ConsumeConcurrentlyStatus::ConsumeSuccess
            }),
        )
        .await
        .unwrap();

        let s = Scenario {
            namesrv,
            broker,
            consumer,
            console,
            console_addr,
            poison_deliveries,
            _dir: dir,
        };
        // Settled: everything consumed and committed (the lag alone is 0 before the first
        // commit too: queues without a committed offset are not in the stats), the poison
        // retried once and dead.
        eventually("the group to settle", Duration::from_secs(60), || async {
            let (status, g) = s.get(&format!("/api/groups/{GROUP}")).await;
            (status == 200
                && g["diff_total"] == 0
                && committed(&g, CONSUMED) == PER_TOPIC as i64
                && g["retry_messages"] == 1
                && g["dlq_messages"] == 1)
                .then_some(())
        })
        .await;
        s
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        http_json(self.console_addr, "GET", path, None).await
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http_json(self.console_addr, "POST", path, Some(body)).await
    }

    /// Waits until the poison has been delivered more than `before` times.
    async fn poison_redelivered(&self, before: usize) {
        eventually(
            "the re-sent message to arrive",
            Duration::from_secs(30),
            || async { (self.poison_deliveries.load(Ordering::SeqCst) > before).then_some(()) },
        )
        .await;
    }

    async fn stop(mut self) {
        self.console.kill().await.ok();
        self.consumer.shutdown().await;
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

/// The offsets `group` (a `/api/groups/{group}` answer) committed on `topic`'s queues, summed.
fn committed(group: &Value, topic: &str) -> i64 {
    group["queues"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .filter(|q| q["topic"] == topic)
                .filter_map(|q| q["consumer_offset"].as_i64())
                .sum()
        })
        .unwrap_or(0)
}

fn retained(queues: &Value) -> i64 {
    queues
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_i64().unwrap() - q["min_offset"].as_i64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_api_reports_the_cluster() {
    let s = Scenario::start().await;

    let (status, brokers) = s.get("/api/cluster").await;
    assert_eq!(status, 200);
    let brokers = brokers.as_array().unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["broker_name"], "broker-c");
    assert_eq!(brokers[0]["broker_id"], 0);
    assert_eq!(brokers[0]["addr"], s.broker.broker_addr().to_string());

    let (_, topics) = s.get("/api/topics").await;
    let names: Vec<&str> = topics
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&CONSUMED) && names.contains(&OTHER),
        "{names:?}"
    );

    let (status, other) = s.get(&format!("/api/topics/{OTHER}")).await;
    assert_eq!(status, 200);
    assert_eq!(retained(&other["queues"]), PER_TOPIC as i64);
    assert_eq!(other["route"]["brokerDatas"][0]["brokerName"], "broker-c");

    let (_, groups) = s.get("/api/groups").await;
    let group = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == GROUP)
        .expect("the group is listed");
    assert_eq!(group["diff_total"], 0);

    let (_, detail) = s.get(&format!("/api/groups/{GROUP}")).await;
    assert_eq!(
        detail["connections"]["connectionSet"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(committed(&detail, CONSUMED), PER_TOPIC as i64);

    // By key, then by id with its retry history: one retry copy, one dead-letter copy.
    let (status, found) = s
        .get(&format!("/api/messages?topic={CONSUMED}&key={POISON_KEY}"))
        .await;
    assert_eq!(status, 200);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1);
    let offset_id = found[0]["offset_msg_id"].as_str().unwrap().to_string();
    let (status, msg) = s.get(&format!("/api/messages/{offset_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(msg["message"]["body"], "body of poison");
    let history: Vec<&str> = msg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [format!("%RETRY%{GROUP}"), format!("%DLQ%{GROUP}")],
        "{msg}"
    );

    // The dead letter, re-sent: the group gets it again under its topic and id.
    let (status, dead) = s.get(&format!("/api/dlq/{GROUP}")).await;
    assert_eq!(status, 200);
    let dead = dead.as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["properties"]["RETRY_TOPIC"], CONSUMED);
    assert_eq!(dead[0]["msg_id"], found[0]["msg_id"]);
    let before = s.poison_deliveries.load(Ordering::SeqCst);
    assert_eq!(before, 2, "delivered once and retried once");
    let body = serde_json::json!({ "msg_id": dead[0]["offset_msg_id"] }).to_string();
    let (status, sent) = s.post(&format!("/api/dlq/{GROUP}/resend"), &body).await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["status"], "SendOk");
    assert_eq!(sent["topic"], format!("%RETRY%{GROUP}"));
    assert_eq!(sent["msg_id"], found[0]["msg_id"]);
    s.poison_redelivered(before).await;

    // Refusals.
    let (status, err) = s
        .post(
            &format!("/api/dlq/{GROUP}/resend"),
            r#"{"msg_id":"nonsense"}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("not an offset message id"));
    let not_dead = serde_json::json!({ "msg_id": offset_id }).to_string();
    let (status, err) = s.post(&format!("/api/dlq/{GROUP}/resend"), &not_dead).await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = s.get("/api/groups/NoSuchGroup").await;
    assert_eq!(status, 404);
    let (status, _) = s.get(&format!("/api/messages?topic={CONSUMED}&key=")).await;
    assert_eq!(status, 400);
    let (status, dead) = s.get("/api/dlq/NoSuchGroup").await;
    assert_eq!((status, dead), (200, serde_json::json!([])));

    s.stop().await;
}

/// Drives the page in Debian's chromium with `playwright-core` (`tests/console/browser.cjs`);
/// needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `playwright-core` on `NODE_PATH`,
/// which `.ci/run` installs. Screenshots go to `target/console-screenshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and playwright-core; .ci/run installs them and runs it"]
async fn console_page_in_chromium() {
    let s = Scenario::start().await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let before = s.poison_deliveries.load(Ordering::SeqCst);
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/console/browser.cjs"
        ))
        .arg(format!("http://{}", s.console_addr))
        .arg(&shots)
        .env("CONSOLE_GROUP", GROUP)
        .env("CONSOLE_TOPICS", format!("{CONSUMED},{OTHER}"))
        .env("CONSOLE_KEY", POISON_KEY)
        .output()
        .await
        .expect("run node");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "browser checks failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The click re-sent the dead letter for real.
    s.poison_redelivered(before).await;
    s.stop().await;
}
