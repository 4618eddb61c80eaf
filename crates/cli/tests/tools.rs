//! Runs the `apogee` binary's tools (admin, bench, quickstart) against a NameServer and a
//! broker started in this test process on ephemeral 127.0.0.1 ports.

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use namesrv::{NameServer, NamesrvConfig};
use remoting::tls::TlsMode;

mod common;

struct Cluster {
    namesrv: NameServer,
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(TlsMode::Permissive).await
    }

    /// With `Enforcing`, both servers accept TLS only (with generated self-signed
    /// certificates) and the broker registers over TLS.
    async fn start_with(tls: TlsMode) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (namesrv, broker) = common::start_servers_with(
            dir.path(),
            NamesrvConfig {
                tls_server_mode: tls,
                ..NamesrvConfig::default()
            },
            BrokerConfig {
                broker_cluster_name: "TestCluster".into(),
                broker_name: "broker-t".into(),
                tls_server_mode: tls,
                tls_enable: tls == TlsMode::Enforcing,
                ..BrokerConfig::default()
            },
        )
        .await;
        Cluster {
            namesrv,
            broker,
            _dir: dir,
        }
    }

    fn ns(&self) -> String {
        format!("127.0.0.1:{}", self.namesrv.local_addr().port())
    }

    async fn stop(self) {
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

async fn apogee(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_apogee"))
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .output()
        .await
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Creates `topic` on the broker and waits until the NameServer routes it.
async fn create_topic(c: &Cluster, topic: &str) {
    let ns = c.ns();
    let broker = c.broker.broker_addr();
    let out = apogee(&[
        "admin",
        "updateTopic",
        "-n",
        &ns,
        "-b",
        &broker,
        "-t",
        topic,
        "-r",
        "4",
        "-w",
        "4",
        "--json",
    ])
    .await;
    let created = stdout_json(&out);
    assert_eq!(created["brokers"][0], broker.as_str());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = apogee(&["admin", "topicList", "-n", &ns, "--json"]).await;
        let list = stdout_json(&out);
        if list.as_array().unwrap().iter().any(|t| t == topic) {
            return;
        }
        assert!(Instant::now() < deadline, "topic never listed: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_topic_then_list_and_route() {
    let c = Cluster::start().await;
    create_topic(&c, "ToolsTopic").await;
    let out = apogee(&[
        "admin",
        "topicRoute",
        "-n",
        &c.ns(),
        "-t",
        "ToolsTopic",
        "--json",
    ])
    .await;
    let route = stdout_json(&out);
    assert_eq!(route["queueDatas"][0]["writeQueueNums"], 4);
    assert_eq!(route["queueDatas"][0]["readQueueNums"], 4);
    assert_eq!(route["brokerDatas"][0]["brokerName"], "broker-t");
    let out = apogee(&["admin", "topicRoute", "-n", &c.ns(), "-t", "ToolsTopic"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("broker-t"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_non_zero_with_a_reason() {
    // A port nothing listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = apogee(&["admin", "topicList", "-n", &format!("127.0.0.1:{closed}")]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach any NameServer"), "{err}");

    let c = Cluster::start().await;
    let out = apogee(&["admin", "topicRoute", "-n", &c.ns(), "-t", "NoSuchTopic"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topic `NoSuchTopic` does not exist"), "{err}");

    let out = apogee(&["admin", "topicList", "--no-such-flag"]).await;
    assert_eq!(out.status.code(), Some(2));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_prints_the_summary_keys() {
    let c = Cluster::start().await;
    create_topic(&c, "BenchTopic").await;
    let out = apogee(&[
        "bench",
        "produce",
        "-n",
        &c.ns(),
        "--topic",
        "BenchTopic",
        "--count",
        "200",
        "--json",
        "--concurrency",
        "8",
    ])
    .await;
    let s = stdout_json(&out);
    for key in [
        "mode",
        "messages",
        "errors",
        "seconds",
        "msgs_per_sec",
        "mb_per_sec",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
    ] {
        assert!(s.get(key).is_some(), "missing {key} in {s}");
    }
    assert_eq!(s["mode"], "produce");
    assert_eq!(s["messages"], 200);
    assert_eq!(s["errors"], 0);
    // The messages are there: the topic's queues hold 200 in total.
    let out = apogee(&[
        "admin",
        "topicStatus",
        "-n",
        &c.ns(),
        "-t",
        "BenchTopic",
        "--json",
    ])
    .await;
    let total: i64 = stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_produce_over_grpc_through_a_proxy() {
    let c = Cluster::start().await;
    create_topic(&c, "GrpcBenchTopic").await;
    let proxy = proxy::Proxy::start(proxy::ProxyConfig {
        grpc_server_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        namesrv_addr: proxy::parse_namesrv_addr(&c.ns()).unwrap(),
        ..proxy::ProxyConfig::default()
    })
    .await
    .unwrap();
    let endpoint = proxy.local_addr().to_string();
    let out = apogee(&[
        "bench",
        "produce",
        "--protocol",
        "grpc",
        "--endpoint",
        &endpoint,
        "--topic",
        "GrpcBenchTopic",
        "--count",
        "100",
        "--batch",
        "4",
        "--json",
    ])
    .await;
    let s = stdout_json(&out);
    assert_eq!(s["messages"], 100);
    assert_eq!(s["errors"], 0);
    let out = apogee(&[
        "admin",
        "topicStatus",
        "-n",
        &c.ns(),
        "-t",
        "GrpcBenchTopic",
        "--json",
    ])
    .await;
    let total: i64 = stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["max_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 100);
    // Only produce is measured over gRPC so far.
    let out = apogee(&["bench", "consume", "--protocol", "grpc", "--count", "1"]).await;
    assert!(!out.status.success());
    proxy.shutdown().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pop_then_consumer_progress_lists_the_pop_group() {
    let c = Cluster::start().await;
    create_topic(&c, "PopTopic").await;
    let ns = c.ns();
    let produced = apogee(&[
        "bench", "produce", "-n", &ns, "--topic", "PopTopic", "--count", "100", "--json",
    ])
    .await;
    assert_eq!(stdout_json(&produced)["messages"], 100);
    let popped = apogee(&[
        "bench",
        "consume",
        "--pop",
        "-n",
        &ns,
        "--topic",
        "PopTopic",
        "--group",
        "GPopTools",
        "--count",
        "100",
        "--concurrency",
        "2",
        "--duration",
        "30",
        "--json",
    ])
    .await;
    let s = stdout_json(&popped);
    assert_eq!(s["mode"], "consume --pop");
    assert_eq!(s["messages"], 100);
    assert_eq!(s["errors"], 0);
    // The group's POP retry topic is registered; consumerProgress lists the group as POP
    // with nothing in flight (every message was acked) and no lag.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = apogee(&["admin", "consumerProgress", "-n", &ns, "--json"]).await;
        let groups = stdout_json(&out);
        let found = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "GPopTools")
            .cloned();
        if let Some(g) = found {
            assert_eq!(g["mode"], "POP", "{g}");
            assert_eq!(g["topic"], "PopTopic", "{g}");
            assert_eq!(g["inflight_total"], 0, "{g}");
            assert_eq!(g["diff_total"], 0, "{g}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the POP group is never listed: {groups}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_exits_zero() {
    let out = apogee(&["quickstart", "--messages", "100"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Consumed 100 messages"), "{text}");
    assert!(text.contains("reconsumeTimes=1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_bench_speak_tls_when_asked() {
    let c = Cluster::start_with(TlsMode::Enforcing).await;
    let ns = c.ns();
    let broker = c.broker.broker_addr();

    // Plaintext is refused; --tls alone says what it is missing.
    let out = apogee(&["admin", "topicList", "-n", &ns, "--timeout-ms", "2000"]).await;
    assert!(!out.status.success());
    let out = apogee(&["admin", "topicList", "-n", &ns, "--tls"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-trust-cert"), "{err}");

    let tls = "--tls-insecure";
    let out = apogee(&[
        "admin",
        "updateTopic",
        "-n",
        &ns,
        "-b",
        &broker,
        "-t",
        "TlsTopic",
        "-r",
        "2",
        "-w",
        "2",
        "--json",
        tls,
    ])
    .await;
    stdout_json(&out);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = stdout_json(&apogee(&["admin", "topicList", "-n", &ns, "--json", tls]).await);
        if list.as_array().unwrap().iter().any(|t| t == "TlsTopic") {
            break;
        }
        assert!(Instant::now() < deadline, "topic never listed: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = apogee(&[
        "bench",
        "produce",
        "-n",
        &ns,
        "--topic",
        "TlsTopic",
        "--count",
        "50",
        "--concurrency",
        "4",
        "--json",
        tls,
    ])
    .await;
    let s = stdout_json(&out);
    assert_eq!(s["messages"], 50);
    assert_eq!(s["errors"], 0);
    c.stop().await;
}
