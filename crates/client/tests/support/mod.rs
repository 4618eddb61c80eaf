//! Shared harness of the client's integration tests: a real NameServer and one or more
//! Brokers on 127.0.0.1 with ephemeral ports and temp dirs, short delay levels, short
//! registration periods, and client configs with short route-refresh and heartbeat intervals.

#![allow(dead_code)]

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use client::api::ClientApi;
use client::ClientConfig;
use namesrv::{NameServer, NamesrvConfig};
use remoting::client::RemotingClient;
use remoting::protocol::TopicRouteData;
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RequestCode};

/// How long any awaited event may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);
pub const CLUSTER: &str = "ClientTestCluster";

/// Delay levels of the test brokers: all short, so retries come back quickly.
pub const DELAY_LEVELS: &str =
    "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms";

/// A NameServer and broker groups (masters only), all in this process.
pub struct Cluster {
    pub namesrv: Option<NameServer>,
    pub brokers: Vec<(String, Option<Broker>)>,
    pub admin: RemotingClient,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A NameServer and one broker group `broker-a`.
    pub async fn start() -> Cluster {
        Self::start_groups(&["broker-a"]).await
    }

    /// A NameServer and one master per name in `groups`.
    pub async fn start_groups(groups: &[&str]) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let namesrv = NameServer::start(NamesrvConfig {
            listen_port: 0,
            bind_address: "127.0.0.1".parse().unwrap(),
            kv_config_path: dir.path().join("kvConfig.json"),
            ..NamesrvConfig::default()
        })
        .await
        .unwrap();
        let mut brokers = Vec::new();
        for name in groups {
            let config = BrokerConfig {
                broker_cluster_name: CLUSTER.into(),
                broker_name: (*name).into(),
                namesrv_addr: namesrv.local_addr().to_string(),
                listen_port: 0,
                bind_address: "127.0.0.1".parse::<IpAddr>().unwrap(),
                broker_ip1: Some("127.0.0.1".parse().unwrap()),
                store_path_root_dir: dir.path().join(name),
                mapped_file_size_commit_log: 4 * 1024 * 1024,
                mapped_file_size_consume_queue: 20 * 1000,
                message_delay_level: DELAY_LEVELS.into(),
                transaction_check_interval: 200,
                transaction_time_out: 300,
                register_name_server_period: 1_000,
                ..BrokerConfig::default()
            };
            brokers.push((name.to_string(), Some(Broker::start(config).await.unwrap())));
        }
        let cluster = Cluster {
            namesrv: Some(namesrv),
            brokers,
            admin: RemotingClient::new(Default::default()),
            dir,
        };
        // Every group is registered once TBW102 lists it.
        let names: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cluster
            .await_route("TBW102", |r| {
                names
                    .iter()
                    .all(|n| r.broker_datas.iter().any(|b| &b.broker_name == n))
            })
            .await;
        cluster
    }

    pub fn namesrv_addr(&self) -> String {
        self.namesrv.as_ref().unwrap().local_addr().to_string()
    }

    /// A client config for this cluster with short intervals.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(&self.namesrv_addr())
            .unwrap()
            .client_ip("127.0.0.1")
            .poll_name_server_interval(Duration::from_millis(200))
            .heartbeat_broker_interval(Duration::from_millis(500))
            .persist_consumer_offset_interval(Duration::from_millis(200))
    }

    pub fn broker_addr(&self, name: &str) -> BrokerAddr {
        let broker = self
            .brokers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, b)| b.as_ref())
            .unwrap();
        BrokerAddr::parse(&broker.local_addr().to_string()).unwrap()
    }

    /// Creates `topic` with `queues` read and write queues on every running group, and waits
    /// until the NameServer's route lists them all.
    pub async fn create_topic(&self, topic: &str, queues: i32) {
        self.create_topic_with(topic, queues, 6).await;
    }

    pub async fn create_topic_with(&self, topic: &str, queues: i32, perm: i32) {
        let names: Vec<String> = self
            .brokers
            .iter()
            .filter(|(_, b)| b.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            let req = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
                .with_ext("topic", topic)
                .with_ext("readQueueNums", queues)
                .with_ext("writeQueueNums", queues)
                .with_ext("perm", perm)
                .with_ext("topicFilterType", "SINGLE_TAG")
                .with_ext("topicSysFlag", 0)
                .with_ext("order", false)
                .with_ext("defaultTopic", "TBW102");
            let resp = self
                .admin
                .invoke(&self.broker_addr(name), req, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(resp.code, 0, "{}", resp.remark_str());
        }
        self.await_route(topic, |r| {
            names.iter().all(|n| {
                r.queue_datas
                    .iter()
                    .any(|q| &q.broker_name == n && q.read_queue_nums == queues)
            })
        })
        .await;
    }

    /// The NameServer's route of `topic`, if it knows the topic.
    pub async fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let api = ClientApi::new(
            Arc::new(self.admin.clone()),
            vec![NameServerAddr::parse(&self.namesrv_addr()).unwrap()],
            Duration::from_secs(3),
        );
        api.topic_route(topic).await.ok().flatten()
    }

    /// Waits until the NameServer's route of `topic` satisfies `ok`.
    pub async fn await_route(&self, topic: &str, ok: impl Fn(&TopicRouteData) -> bool) {
        let what = format!("route of {topic}");
        eventually(&what, || async {
            self.route(topic).await.map(|r| ok(&r)).unwrap_or(false)
        })
        .await;
    }

    /// Stops broker group `name` (it unregisters from the NameServer).
    pub async fn stop_broker(&mut self, name: &str) {
        let slot = self.brokers.iter_mut().find(|(n, _)| n == name).unwrap();
        if let Some(b) = slot.1.take() {
            b.shutdown().await;
        }
    }

    pub async fn stop(mut self) {
        self.admin.shutdown().await;
        for (_, b) in &mut self.brokers {
            if let Some(b) = b.take() {
                b.shutdown().await;
            }
        }
        if let Some(n) = self.namesrv.take() {
            n.shutdown().await;
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives from `rx` until `n` items arrived; panics after [`DEADLINE`].
pub async fn collect<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => out.push(x),
            Ok(None) => panic!("channel closed after {} of {n} items", out.len()),
            Err(_) => panic!("timed out after {} of {n} items", out.len()),
        }
    }
    out
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Every message of `topic` (all its queues), read with a pull consumer until `n` arrived.
pub async fn pull_all(
    cluster: &Cluster,
    topic: &str,
    n: usize,
) -> Vec<remoting::message::MessageExt> {
    use client::consumer::pull::{PullConsumer, PullConsumerConfig};
    let consumer = PullConsumer::start(
        cluster.client_config(),
        PullConsumerConfig::new("CG_inspect"),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} messages in {topic}",
            out.len()
        );
        out.clear();
        for mq in consumer
            .fetch_subscribe_message_queues(topic)
            .await
            .unwrap()
        {
            let r = consumer.pull(&mq, "*", 0, 64).await.unwrap();
            out.extend(r.msg_found_list);
        }
        if out.len() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    consumer.shutdown().await;
    out
}

/// The offset `group` committed for `mq` on its broker (QUERY_CONSUMER_OFFSET, without
/// joining the group); `None` when the broker has none.
pub async fn committed_offset(
    cluster: &Cluster,
    group: &str,
    mq: &remoting::broker_headers::MessageQueue,
) -> Option<i64> {
    let api = ClientApi::new(
        Arc::new(cluster.admin.clone()),
        vec![NameServerAddr::parse(&cluster.namesrv_addr()).unwrap()],
        Duration::from_secs(3),
    );
    let header = remoting::broker_headers::QueryConsumerOffsetRequestHeader {
        consumer_group: group.to_string(),
        topic: mq.topic.clone(),
        queue_id: mq.queue_id,
        set_zero_if_not_found: None,
        bname: Some(mq.broker_name.clone()),
    };
    api.query_consumer_offset(&cluster.broker_addr(&mq.broker_name), &header)
        .await
        .unwrap()
}
