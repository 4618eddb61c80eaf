//! Shared test harness: a real NameServer and Broker on 127.0.0.1 with ephemeral ports and
//! temp dirs, and a raw remoting client with helpers for the requests the tests send.

#![allow(dead_code)]

pub mod flood;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use bytes::Bytes;
use namesrv::{NameServer, NamesrvConfig};
use remoting::broker_headers::{ConsumerData, HeartbeatData, SubscriptionData};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::message::{MessageExt, MessageSysFlag, Properties};
use remoting::server::RequestHandler;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, SerializeType};

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const CLUSTER: &str = "TestCluster";
pub const BROKER_NAME: &str = "broker-t";

pub struct Env {
    pub namesrv: Option<NameServer>,
    pub broker: Option<Broker>,
    pub client: RemotingClient,
    pub addr: BrokerAddr,
    pub dir: tempfile::TempDir,
    /// When set, [`Env::call`] signs every request with these (ACL 1.0).
    pub credentials: Option<remoting::acl::Credentials>,
}

pub async fn start_namesrv(dir: &Path) -> NameServer {
    let config = NamesrvConfig {
        listen_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        kv_config_path: dir.join("kvConfig.json"),
        ..NamesrvConfig::default()
    };
    NameServer::start(config).await.unwrap()
}

pub fn broker_config(dir: &Path, namesrv: &NameServer) -> BrokerConfig {
    BrokerConfig {
        broker_cluster_name: CLUSTER.into(),
        broker_name: BROKER_NAME.into(),
        namesrv_addr: namesrv.local_addr().to_string(),
        listen_port: 0,
        bind_address: "127.0.0.1".parse::<IpAddr>().unwrap(),
        broker_ip1: Some("127.0.0.1".parse().unwrap()),
        store_path_root_dir: dir.join("store"),
        mapped_file_size_commit_log: 4 * 1024 * 1024,
        mapped_file_size_consume_queue: 20 * 1000,
        message_delay_level: "100ms 150ms 200ms 250ms 300ms 1s 2s".into(),
        transaction_check_interval: 200,
        transaction_time_out: 300,
        register_name_server_period: 1_000,
        ..BrokerConfig::default()
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}, None).await
    }

    pub async fn start_with(
        tune: impl FnOnce(&mut BrokerConfig),
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let namesrv = start_namesrv(dir.path()).await;
        let mut config = broker_config(dir.path(), &namesrv);
        tune(&mut config);
        let broker = Broker::start(config).await.unwrap();
        let addr = BrokerAddr::parse(&broker.local_addr().to_string()).unwrap();
        let client = RemotingClient::new(ClientConfig {
            server_request_handler: handler,
            ..ClientConfig::default()
        });
        Env {
            namesrv: Some(namesrv),
            broker: Some(broker),
            client,
            addr,
            dir,
            credentials: None,
        }
    }

    /// Stops and starts the broker on the same directory (a new port).
    pub async fn restart_broker(&mut self) {
        let broker = self.broker.take().unwrap();
        let mut config = broker.config();
        broker.shutdown().await;
        config.listen_port = 0;
        let broker = Broker::start(config).await.unwrap();
        self.addr = BrokerAddr::parse(&broker.local_addr().to_string()).unwrap();
        self.broker = Some(broker);
    }

    pub async fn stop(mut self) {
        self.client.shutdown().await;
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
        if let Some(n) = self.namesrv.take() {
            n.shutdown().await;
        }
    }

    pub async fn call(&self, mut req: RemotingCommand) -> RemotingCommand {
        if let Some(creds) = &self.credentials {
            remoting::acl::sign(&mut req, creds);
        }
        self.client.invoke(&self.addr, req, TIMEOUT).await.unwrap()
    }

    pub async fn oneway(&self, req: RemotingCommand) {
        self.client.invoke_oneway(&self.addr, req).await.unwrap()
    }

    pub async fn create_topic(&self, topic: &str, queues: i32) {
        let resp = self
            .call(
                RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
                    .with_ext("topic", topic)
                    .with_ext("readQueueNums", queues)
                    .with_ext("writeQueueNums", queues)
                    .with_ext("perm", 6)
                    .with_ext("topicFilterType", "SINGLE_TAG")
                    .with_ext("topicSysFlag", 0)
                    .with_ext("order", false)
                    .with_ext("defaultTopic", "TBW102"),
            )
            .await;
        assert_eq!(resp.code, 0, "{}", resp.remark_str());
    }

    /// SEND_MESSAGE_V2 with one-letter keys, in `serialize` encoding.
    pub async fn send_v2(
        &self,
        topic: &str,
        queue: i32,
        body: &str,
        props: &Properties,
        sys_flag: i32,
        serialize: SerializeType,
    ) -> RemotingCommand {
        let mut req = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "PG_test")
            .with_ext("b", topic)
            .with_ext("c", "TBW102")
            .with_ext("d", 4)
            .with_ext("e", queue)
            .with_ext("f", sys_flag)
            .with_ext("g", remoting::message::now_millis())
            .with_ext("h", 0)
            .with_ext("i", props.to_wire_string())
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_ext("m", false)
            .with_body(Bytes::from(body.to_string()));
        req.serialize_type = serialize;
        self.call(req).await
    }

    /// SEND_MESSAGE (10) with full names and a tag.
    pub async fn send_v1(&self, topic: &str, queue: i32, body: &str, tag: &str) -> RemotingCommand {
        let mut props = Properties::new();
        props.insert("TAGS", tag);
        let req = RemotingCommand::request(RequestCode::SEND_MESSAGE)
            .with_ext("producerGroup", "PG_test")
            .with_ext("topic", topic)
            .with_ext("defaultTopic", "TBW102")
            .with_ext("defaultTopicQueueNums", 4)
            .with_ext("queueId", queue)
            .with_ext("sysFlag", 0)
            .with_ext("bornTimestamp", remoting::message::now_millis())
            .with_ext("flag", 0)
            .with_ext("properties", props.to_wire_string())
            .with_body(Bytes::from(body.to_string()));
        self.call(req).await
    }

    /// Pull with the subscription in the header and no suspension.
    pub async fn pull(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
        sub: &str,
    ) -> RemotingCommand {
        self.call(pull_request(group, topic, queue, offset, 4, sub, 0))
            .await
    }

    /// Waits until the queue's max offset reaches `n` (the store indexes messages shortly after
    /// it acknowledges them).
    pub async fn wait_dispatched(&self, topic: &str, queue: i32, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = self
                .call(
                    RemotingCommand::request(RequestCode::GET_MAX_OFFSET)
                        .with_ext("topic", topic)
                        .with_ext("queueId", queue),
                )
                .await;
            let max: i64 = resp.ext("offset").unwrap().parse().unwrap();
            if max >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic}:{queue} never reached offset {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every message of the queue from `offset` (empty when none).
    pub async fn pull_all(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
    ) -> Vec<MessageExt> {
        let resp = self.pull(group, topic, queue, offset, "*").await;
        if resp.code != 0 {
            return Vec::new();
        }
        MessageExt::decode_all(&resp.body, true).unwrap()
    }

    /// Polls `pull_all` until it returns at least `n` messages or the deadline passes.
    pub async fn wait_messages(
        &self,
        group: &str,
        topic: &str,
        queue: i32,
        n: usize,
    ) -> Vec<MessageExt> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.pull_all(group, topic, queue, 0).await;
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Properties with `TAGS` and `KEYS`.
pub fn props(tag: &str, key: &str) -> Properties {
    let mut p = Properties::new();
    p.insert("TAGS", tag);
    p.insert("KEYS", key);
    p
}

pub const PREPARED: i32 = MessageSysFlag::TRANSACTION_PREPARED_TYPE;

/// A PULL_MESSAGE request.
pub fn pull_request(
    group: &str,
    topic: &str,
    queue: i32,
    offset: i64,
    sys_flag: i32,
    subscription: &str,
    suspend_ms: i64,
) -> RemotingCommand {
    RemotingCommand::request(RequestCode::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", sys_flag)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", suspend_ms)
        .with_ext("subscription", subscription)
        .with_ext("subVersion", 0)
}

/// CONSUMER_SEND_MSG_BACK of the message at CommitLog `offset` for `group` (delay level 0:
/// the broker's schedule), with `max` reconsume times before the DLQ.
pub fn send_back(offset: i64, group: &str, max: i32) -> RemotingCommand {
    RemotingCommand::request(RequestCode::CONSUMER_SEND_MSG_BACK)
        .with_ext("offset", offset)
        .with_ext("group", group)
        .with_ext("delayLevel", 0)
        .with_ext("maxReconsumeTimes", max)
}

/// HEART_BEAT of consumer `client_id` in `group`, subscribed to every tag of `topic`.
pub fn consumer_heartbeat(client_id: &str, group: &str, topic: &str) -> RemotingCommand {
    let hb = HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            subscription_data_set: vec![SubscriptionData {
                topic: topic.into(),
                sub_string: "*".into(),
                sub_version: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    RemotingCommand::request(RequestCode::HEART_BEAT).with_body(hb.encode().unwrap())
}

/// Properties of a transactional half message of `PG_test` with key and `UNIQ_KEY` `key`.
pub fn half_props(key: &str) -> Properties {
    let mut p = props("A", key);
    p.insert("TRAN_MSG", "true");
    p.insert("PGROUP", "PG_test");
    p.insert("UNIQ_KEY", key);
    p
}

/// END_TRANSACTION (oneway) committing or rolling back the half `resp` answered, stored at
/// half-queue offset `queue_offset`.
pub fn end_tx(resp: &RemotingCommand, queue_offset: &str, commit: bool) -> RemotingCommand {
    let msg_id = resp.ext("msgId").unwrap().to_string();
    let (_, phys) = remoting::message::decode_message_id(&msg_id).unwrap();
    RemotingCommand::request(RequestCode::END_TRANSACTION)
        .with_ext("producerGroup", "PG_test")
        .with_ext("tranStateTableOffset", queue_offset)
        .with_ext("commitLogOffset", phys)
        .with_ext(
            "commitOrRollback",
            if commit {
                MessageSysFlag::TRANSACTION_COMMIT_TYPE
            } else {
                MessageSysFlag::TRANSACTION_ROLLBACK_TYPE
            },
        )
        .with_ext("fromTransactionCheck", false)
        .with_ext("msgId", msg_id)
        .into_oneway()
}
