//! Helpers shared by the NameServer integration tests: a server on an ephemeral port with its
//! KV file in a temp dir, request builders, raw-socket frames and the wire captures.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use namesrv::{NameServer, NamesrvConfig};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::codec;
use remoting::headers::{CommandHeader, GetRouteInfoRequestHeader, RegisterBrokerRequestHeader};
use remoting::protocol::{
    from_fastjson, BrokerData, RegisterBrokerBody, TopicConfig, TopicConfigSerializeWrapper,
    TopicRouteData,
};
use remoting::{NameServerAddr, RemotingCommand, RequestCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: NameServer,
    pub addr: NameServerAddr,
    pub dir: tempfile::TempDir,
    /// A client of its own, for requests whose connection does not matter.
    pub client: RemotingClient,
}

impl TestServer {
    /// Sends `req` and returns the answer.
    pub async fn call(&self, req: RemotingCommand) -> RemotingCommand {
        self.client
            .invoke_namesrv(&self.addr, req, TIMEOUT)
            .await
            .unwrap()
    }

    /// The route of `topic` as a current client gets it (`None` for TOPIC_NOT_EXIST).
    pub async fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let resp = self.call(route_request(topic, 474)).await;
        match resp.code {
            0 => Some(from_fastjson(&resp.body).unwrap()),
            17 => None,
            other => panic!("unexpected route answer {other}: {}", resp.remark_str()),
        }
    }

    /// Names of the broker groups the server knows.
    pub fn groups(&self) -> Vec<String> {
        self.server
            .route_info()
            .cluster_info()
            .broker_addr_table
            .into_keys()
            .collect()
    }

    /// Stops the client and the server; returns the temp dir (with the KV file).
    pub async fn stop(self) -> tempfile::TempDir {
        self.client.shutdown().await;
        self.server.shutdown().await;
        self.dir
    }
}

/// A NameServer on 127.0.0.1:0 with `props` on top of the test defaults.
pub async fn start(props: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let kv_path = dir.path().join("kvConfig.json");
    start_in(dir, &kv_path, props).await
}

pub async fn start_in(
    dir: tempfile::TempDir,
    kv_path: &std::path::Path,
    props: &[(&str, &str)],
) -> TestServer {
    let mut all: HashMap<String, String> = HashMap::from([
        ("listenPort".to_string(), "0".to_string()),
        ("bindAddress".to_string(), "127.0.0.1".to_string()),
        ("kvConfigPath".to_string(), kv_path.display().to_string()),
    ]);
    all.extend(props.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = NamesrvConfig::from_properties(&all).unwrap();
    let server = NameServer::start(config).await.unwrap();
    let addr = NameServerAddr::parse(&server.local_addr().to_string()).unwrap();
    TestServer {
        server,
        addr,
        dir,
        client: client(),
    }
}

pub fn client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}

/// A broker's view of itself for building REGISTER_BROKER requests.
#[derive(Clone)]
pub struct Broker {
    pub cluster: String,
    pub name: String,
    pub id: i64,
    pub addr: String,
    pub enable_acting_master: Option<bool>,
    pub heartbeat_timeout_millis: Option<i64>,
}

impl Broker {
    pub fn new(name: &str, id: i64, addr: &str) -> Self {
        Broker {
            cluster: "C".into(),
            name: name.into(),
            id,
            addr: addr.into(),
            enable_acting_master: None,
            heartbeat_timeout_millis: None,
        }
    }

    /// REGISTER_BROKER with `topics` (name, perm) plus, as real brokers do, a topic named
    /// after the broker (perm 7), like the 4.9.8 broker's frames.
    pub fn register(&self, topics: &[(&str, i32)], counter: i64) -> RemotingCommand {
        let mut wrapper = TopicConfigSerializeWrapper::default();
        wrapper.data_version.counter = counter;
        wrapper.data_version.timestamp = 1_700_000_000_000 + counter;
        for (topic, perm) in topics.iter().chain([&(self.name.as_str(), 7)]) {
            wrapper.topic_config_table.insert(
                topic.to_string(),
                TopicConfig {
                    topic_name: topic.to_string(),
                    read_queue_nums: 4,
                    write_queue_nums: 4,
                    perm: *perm,
                    ..TopicConfig::default()
                },
            );
        }
        let body = RegisterBrokerBody {
            filter_server_list: vec![],
            topic_config_serialize_wrapper: wrapper,
        }
        .encode(false)
        .unwrap();
        let header = RegisterBrokerRequestHeader {
            broker_name: self.name.clone(),
            broker_addr: self.addr.clone(),
            cluster_name: self.cluster.clone(),
            ha_server_addr: format!("{}-ha", self.addr),
            broker_id: self.id,
            heartbeat_timeout_millis: self.heartbeat_timeout_millis,
            enable_acting_master: self.enable_acting_master,
            compressed: false,
            body_crc32: Some(namesrv_crc(&body)),
            zone_name: None,
        };
        let mut req = RemotingCommand::request(RequestCode::REGISTER_BROKER).with_body(body);
        header.write_to(&mut req);
        req
    }

    pub fn unregister(&self) -> RemotingCommand {
        RemotingCommand::request(RequestCode::UNREGISTER_BROKER)
            .with_ext("brokerName", &self.name)
            .with_ext("brokerAddr", &self.addr)
            .with_ext("clusterName", &self.cluster)
            .with_ext("brokerId", self.id)
    }
}

/// Upstream's masked CRC32.
pub fn namesrv_crc(body: &[u8]) -> i32 {
    (crc32_ieee(body) & 0x7FFF_FFFF) as i32
}

fn crc32_ieee(body: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the implementation under test.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in body {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn route_request(topic: &str, version: i32) -> RemotingCommand {
    let mut req = RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC);
    GetRouteInfoRequestHeader {
        topic: topic.into(),
        accept_standard_json_only: None,
    }
    .write_to(&mut req);
    req.version = version;
    req
}

pub fn perms(route: &TopicRouteData) -> Vec<i32> {
    route.queue_datas.iter().map(|q| q.perm).collect()
}

/// Broker ids of a group.
pub fn ids(group: &BrokerData) -> Vec<i64> {
    group.broker_addrs.keys().copied().collect()
}

/// Polls `check` every 10 ms until it returns `Some`, failing after `TIMEOUT`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes one frame on a raw socket.
pub async fn send_frame(stream: &mut TcpStream, cmd: &RemotingCommand) {
    let mut buf = BytesMut::new();
    codec::encode(cmd, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

/// Reads one frame from a raw socket (`None` on EOF), within `TIMEOUT`.
pub async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<RemotingCommand> {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(cmd) = codec::decode(buf, codec::DEFAULT_MAX_FRAME_SIZE).unwrap() {
                return Some(cmd);
            }
            if stream.read_buf(buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .expect("no frame within the timeout")
}

#[allow(unused_imports)] // not every test binary uses both
pub use testkit::{b64, capture};
