//! The gRPC endpoint against a real NameServer and broker on 127.0.0.1 (ephemeral ports, temp
//! dirs), through a tonic client: route, send (normal and timer), assignment, receive, ack,
//! change of invisible duration, stale and malformed receipt handles, telemetry settings,
//! transactions (commit, rollback, and the broker's check-back over the Telemetry stream),
//! TLS and plaintext on one port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use namesrv::{NameServer, NamesrvConfig};
use proto::v2::messaging_service_client::MessagingServiceClient;
use proto::v2::receive_message_response::Content;
use proto::v2::*;
use proxy::{Proxy, ProxyConfig};
use remoting::client::RemotingClient;
use remoting::tls::{ClientTls, TlsClientSettings, TlsMode, TlsServerSettings};
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RequestCode};
use tonic::transport::{Channel, Endpoint};

const TOPIC: &str = "GrpcTopic";
const GROUP: &str = "GID_grpc";
const DEADLINE: Duration = Duration::from_secs(20);

fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn code(s: &Option<Status>) -> Code {
    Code::try_from(s.as_ref().map_or(0, |s| s.code)).unwrap_or(Code::Unspecified)
}

struct Env {
    _dir: tempfile::TempDir,
    namesrv: NameServer,
    broker: Broker,
    proxy: Proxy,
    client: MessagingServiceClient<Channel>,
}

async fn start() -> Env {
    start_with(false, |_| {}).await
}

/// `local`: the proxy reaches the broker in-process (standalone's local mode), not over TCP.
async fn start_with(local: bool, tune: impl FnOnce(&mut BrokerConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        kv_config_path: dir.path().join("kvConfig.json"),
        ..NamesrvConfig::default()
    })
    .await
    .unwrap();
    let mut config = BrokerConfig {
        broker_name: "broker-a".into(),
        namesrv_addr: namesrv.local_addr().to_string(),
        listen_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        broker_ip1: Some("127.0.0.1".parse().unwrap()),
        store_path_root_dir: dir.path().join("store"),
        mapped_file_size_commit_log: 4 * 1024 * 1024,
        mapped_file_size_consume_queue: 20 * 1000,
        register_name_server_period: 1_000,
        ..BrokerConfig::default()
    };
    tune(&mut config);
    let broker = Broker::start(config).await.unwrap();
    let admin = RemotingClient::new(Default::default());
    let req = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", TOPIC)
        .with_ext("readQueueNums", 2)
        .with_ext("writeQueueNums", 2)
        .with_ext("perm", 6)
        .with_ext("topicFilterType", "SINGLE_TAG")
        .with_ext("topicSysFlag", 0)
        .with_ext("order", false)
        .with_ext("defaultTopic", "TBW102");
    let broker_addr = BrokerAddr::parse(&broker.local_addr().to_string()).unwrap();
    let resp = admin
        .invoke(&broker_addr, req, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    admin.shutdown().await;
    let in_process = if local {
        vec![(broker.broker_addr(), broker.local_endpoint())]
    } else {
        Vec::new()
    };
    let proxy = Proxy::start_with_local(
        ProxyConfig {
            grpc_server_port: 0,
            bind_address: "127.0.0.1".parse().unwrap(),
            namesrv_addr: vec![NameServerAddr::parse(&namesrv.local_addr().to_string()).unwrap()],
            ..ProxyConfig::default()
        },
        in_process,
    )
    .await
    .unwrap();
    let client = MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
        .await
        .unwrap();
    let mut env = Env {
        _dir: dir,
        namesrv,
        broker,
        proxy,
        client,
    };
    // The topic is served once the NameServer's route lists it.
    let until = Instant::now() + DEADLINE;
    loop {
        let r = env.route(TOPIC).await;
        if code(&r.status) == Code::Ok && !r.message_queues.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "route of {TOPIC}: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env
}

impl Env {
    async fn route(&mut self, topic: &str) -> QueryRouteResponse {
        self.client
            .query_route(QueryRouteRequest {
                topic: res(topic),
                endpoints: None,
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn send(&mut self, id: &str, body: &str, deliver_at: Option<i64>) -> SendMessageResponse {
        self.send_in_group(id, body, deliver_at, None).await
    }

    async fn send_in_group(
        &mut self,
        id: &str,
        body: &str,
        deliver_at: Option<i64>,
        group: Option<&str>,
    ) -> SendMessageResponse {
        let m = message(id, body, deliver_at, group);
        self.client
            .send_message(SendMessageRequest { messages: vec![m] })
            .await
            .unwrap()
            .into_inner()
    }

    async fn send_transactional(&mut self, id: &str, body: &str) -> SendResultEntry {
        let mut m = message(id, body, None, None);
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = MessageType::Transaction as i32;
        }
        let r = self
            .client
            .send_message(SendMessageRequest { messages: vec![m] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&r.status), Code::Ok, "{r:?}");
        r.entries.into_iter().next().unwrap()
    }

    async fn end_transaction(
        &mut self,
        id: &str,
        transaction_id: &str,
        resolution: TransactionResolution,
        source: TransactionSource,
    ) -> EndTransactionResponse {
        self.client
            .end_transaction(EndTransactionRequest {
                topic: res(TOPIC),
                message_id: id.into(),
                transaction_id: transaction_id.into(),
                resolution: resolution as i32,
                source: source as i32,
                trace_context: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// One receive: its stream items.
    async fn receive(&mut self, invisible: Duration) -> Vec<Content> {
        self.receive_from(TOPIC, GROUP, invisible).await
    }

    /// One receive from `topic` as `group`: its stream items.
    async fn receive_from(
        &mut self,
        topic: &str,
        group: &str,
        invisible: Duration,
    ) -> Vec<Content> {
        let mut stream = self
            .client
            .receive_message(ReceiveMessageRequest {
                group: res(group),
                message_queue: Some(MessageQueue {
                    topic: res(topic),
                    id: -1,
                    ..Default::default()
                }),
                filter_expression: Some(FilterExpression {
                    r#type: FilterType::Tag as i32,
                    expression: "*".into(),
                }),
                batch_size: 32,
                invisible_duration: prost_types::Duration::try_from(invisible).ok(),
                auto_renew: false,
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                attempt_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.unwrap() {
            out.extend(item.content);
        }
        out
    }

    /// Receives until `n` messages came.
    async fn receive_n(&mut self, n: usize, invisible: Duration) -> Vec<Message> {
        self.receive_n_from(TOPIC, GROUP, n, invisible).await
    }

    /// Receives from `topic` as `group` until `n` messages came.
    async fn receive_n_from(
        &mut self,
        topic: &str,
        group: &str,
        n: usize,
        invisible: Duration,
    ) -> Vec<Message> {
        let until = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < until, "received {} of {n}", got.len());
            let items = self.receive_from(topic, group, invisible).await;
            if items.iter().any(|c| matches!(c, Content::Message(_))) {
                assert!(
                    matches!(&items[0], Content::Status(s) if s.code == Code::Ok as i32),
                    "{items:?}"
                );
                assert!(matches!(items.last(), Some(Content::DeliveryTimestamp(_))));
            }
            got.extend(items.into_iter().filter_map(|c| match c {
                Content::Message(m) => Some(m),
                _ => None,
            }));
        }
        got
    }

    async fn ack(&mut self, m: &Message) -> AckMessageResponse {
        self.ack_handle(&handle(m)).await
    }

    async fn ack_as(&mut self, group: &str, m: &Message) -> Code {
        let r = self
            .client
            .ack_message(AckMessageRequest {
                group: res(group),
                topic: res(TOPIC),
                entries: vec![AckMessageEntry {
                    message_id: String::new(),
                    receipt_handle: handle(m),
                    lite_topic: None,
                }],
            })
            .await
            .unwrap()
            .into_inner();
        code(&r.status)
    }

    async fn ack_handle(&mut self, receipt_handle: &str) -> AckMessageResponse {
        self.client
            .ack_message(AckMessageRequest {
                group: res(GROUP),
                topic: res(TOPIC),
                entries: vec![AckMessageEntry {
                    message_id: String::new(),
                    receipt_handle: receipt_handle.into(),
                    lite_topic: None,
                }],
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn stop(self) {
        drop(self.client);
        self.proxy.shutdown().await;
        self.broker.shutdown().await;
        self.namesrv.shutdown().await;
    }
}

fn message(id: &str, body: &str, deliver_at: Option<i64>, group: Option<&str>) -> Message {
    Message {
        topic: res(TOPIC),
        user_properties: [("k".to_string(), "v".to_string())].into(),
        system_properties: Some(SystemProperties {
            tag: Some("TagA".into()),
            message_id: id.into(),
            message_type: if deliver_at.is_some() {
                MessageType::Delay
            } else if group.is_some() {
                MessageType::Fifo
            } else {
                MessageType::Normal
            } as i32,
            message_group: group.map(str::to_string),
            delivery_timestamp: deliver_at.map(|ms| prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: ((ms % 1000) * 1_000_000) as i32,
            }),
            ..Default::default()
        }),
        body: body.as_bytes().to_vec().into(),
    }
}

fn handle(m: &Message) -> String {
    m.system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .unwrap()
}

fn body(m: &Message) -> String {
    String::from_utf8(m.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_send_receive_ack_and_change_invisible() {
    let mut env = start().await;
    let proxy_addr: SocketAddr = env.proxy.local_addr();

    let route = env.route(TOPIC).await;
    assert_eq!(route.message_queues.len(), 2, "{route:?}");
    for q in &route.message_queues {
        assert_eq!(q.permission, Permission::ReadWrite as i32);
        let ep = q.broker.as_ref().unwrap().endpoints.as_ref().unwrap();
        assert_eq!(ep.addresses[0].port, i32::from(proxy_addr.port()));
    }
    assert_eq!(
        code(&env.route("NoSuchTopic").await.status),
        Code::TopicNotFound
    );

    for i in 0..3 {
        let r = env.send(&format!("ID-{i}"), &format!("m-{i}"), None).await;
        assert_eq!(code(&r.status), Code::Ok, "{r:?}");
        assert_eq!(r.entries[0].message_id, format!("ID-{i}"));
    }

    let a = env
        .client
        .query_assignment(QueryAssignmentRequest {
            topic: res(TOPIC),
            group: res(GROUP),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&a.status), Code::Ok);
    assert_eq!(a.assignments.len(), 1);

    // m-2 is left unacked: 5 s later it is handed out again.
    let mut got = env.receive_n(3, Duration::from_secs(5)).await;
    got.sort_by_key(body);
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        ["m-0", "m-1", "m-2"]
    );
    let sys = got[0].system_properties.as_ref().unwrap();
    assert_eq!(sys.message_id, "ID-0");
    assert_eq!(sys.tag.as_deref(), Some("TagA"));
    assert_eq!(sys.delivery_attempt, Some(1));
    assert_eq!(
        got[0].user_properties.get("k").map(String::as_str),
        Some("v")
    );
    assert_eq!(got[0].topic.as_ref().unwrap().name, TOPIC);

    // Ack; the same handle again is stale.
    assert_eq!(code(&env.ack(&got[0]).await.status), Code::Ok);
    assert_eq!(
        code(&env.ack(&got[0]).await.status),
        Code::InvalidReceiptHandle
    );
    // A malformed handle.
    assert_eq!(
        code(&env.ack_handle("not a handle").await.status),
        Code::InvalidReceiptHandle
    );

    // Change of invisible duration: a new handle that acks; the old one is stale.
    let changed = env
        .client
        .change_invisible_duration(ChangeInvisibleDurationRequest {
            group: res(GROUP),
            topic: res(TOPIC),
            receipt_handle: handle(&got[1]),
            invisible_duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            message_id: "ID-1".into(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&changed.status), Code::Ok, "{changed:?}");
    assert_ne!(changed.receipt_handle, handle(&got[1]));
    assert_eq!(
        code(&env.ack(&got[1]).await.status),
        Code::InvalidReceiptHandle
    );
    assert_eq!(
        code(&env.ack_handle(&changed.receipt_handle).await.status),
        Code::Ok
    );

    // Not acked in time: handed out again with its attempt raised.
    let again = env.receive_n(1, Duration::from_secs(30)).await;
    assert_eq!(body(&again[0]), "m-2");
    assert_eq!(
        again[0]
            .system_properties
            .as_ref()
            .unwrap()
            .delivery_attempt,
        Some(2)
    );
    assert_eq!(code(&env.ack(&again[0]).await.status), Code::Ok);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timer_not_early_fifo_group_one_queue_and_telemetry_settings() {
    let mut env = start().await;
    let at = remoting::message::now_millis() + 1_500;
    let r = env.send("ID-T", "timer", Some(at)).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let got = env.receive_n(1, Duration::from_secs(30)).await;
    assert!(remoting::message::now_millis() >= at, "delivered early");
    assert_eq!(body(&got[0]), "timer");
    assert_eq!(code(&env.ack(&got[0]).await.status), Code::Ok);

    // A message group always goes to one queue.
    for i in 0..4 {
        let r = env
            .send_in_group(
                &format!("ID-F{i}"),
                &format!("f-{i}"),
                None,
                Some("order-1"),
            )
            .await;
        assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    }
    let fifo = env.receive_n(4, Duration::from_secs(30)).await;
    let queues: std::collections::BTreeSet<i32> = fifo
        .iter()
        .map(|m| m.system_properties.as_ref().unwrap().queue_id)
        .collect();
    assert_eq!(queues.len(), 1, "{fifo:?}");
    let sys = fifo[0].system_properties.as_ref().unwrap();
    assert_eq!(sys.message_group.as_deref(), Some("order-1"));
    assert_eq!(sys.message_type, MessageType::Fifo as i32);
    for m in &fifo {
        assert_eq!(code(&env.ack(m).await.status), Code::Ok);
    }
    // A FIFO message without a group is refused.
    let r = env.send_in_group("ID-F9", "f-9", None, Some("")).await;
    assert_eq!(code(&r.status), Code::IllegalMessageGroup, "{r:?}");

    let settings = Settings {
        client_type: Some(ClientType::SimpleConsumer as i32),
        pub_sub: Some(settings::PubSub::Subscription(Subscription {
            group: res(GROUP),
            ..Default::default()
        })),
        ..Default::default()
    };
    let cmd = TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(settings)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(cmd).await.unwrap();
    let mut answers = env
        .client
        .telemetry(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!(code(&answer.status), Code::Ok);
    let Some(telemetry_command::Command::Settings(s)) = answer.command else {
        panic!("{answer:?}");
    };
    assert!(s.backoff_policy.is_some());
    drop(tx);
    env.stop().await;
}

/// Opens a Telemetry stream as producer `client` of TOPIC; returns the stream's sender (the
/// stream lives while it is held) and the commands the proxy sends, after the settings answer.
async fn producer_telemetry(
    env: &mut Env,
    client: &str,
) -> (
    tokio::sync::mpsc::Sender<TelemetryCommand>,
    tonic::Streaming<TelemetryCommand>,
) {
    let settings = Settings {
        client_type: Some(ClientType::Producer as i32),
        pub_sub: Some(settings::PubSub::Publishing(Publishing {
            topics: vec![Resource {
                resource_namespace: String::new(),
                name: TOPIC.into(),
            }],
            ..Default::default()
        })),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(settings)),
    })
    .await
    .unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("x-mq-client-id", client.parse().unwrap());
    let mut answers = env.client.telemetry(req).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(first.command, Some(telemetry_command::Command::Settings(_))),
        "{first:?}"
    );
    (tx, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_commit_rollback_and_check_back_over_telemetry() {
    transactions(false).await;
}

/// The broker's check-back reaches the proxy over the in-process connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_with_the_broker_in_process() {
    transactions(true).await;
}

async fn transactions(local: bool) {
    let mut env = start_with(local, |c| {
        c.transaction_check_interval = 200;
        c.transaction_time_out = 500;
    })
    .await;
    let (_telemetry, mut commands) = producer_telemetry(&mut env, "producer-1").await;

    let a = env.send_transactional("ID-A", "tx-commit").await;
    let b = env.send_transactional("ID-B", "tx-rollback").await;
    assert!(!a.transaction_id.is_empty());
    let r = env
        .end_transaction(
            "ID-A",
            &a.transaction_id,
            TransactionResolution::Commit,
            TransactionSource::SourceClient,
        )
        .await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let r = env
        .end_transaction(
            "ID-B",
            &b.transaction_id,
            TransactionResolution::Rollback,
            TransactionSource::SourceClient,
        )
        .await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    // A transaction id the proxy did not make.
    let r = env
        .end_transaction(
            "ID-A",
            "not-a-transaction-id",
            TransactionResolution::Commit,
            TransactionSource::SourceClient,
        )
        .await;
    assert_eq!(code(&r.status), Code::InvalidTransactionId, "{r:?}");

    // C is left open: the broker's check comes over the producer's Telemetry stream, and the
    // answer to it commits C.
    env.send_transactional("ID-C", "tx-checked").await;
    let check = tokio::time::timeout(DEADLINE, async {
        loop {
            let cmd = commands.message().await.unwrap().unwrap();
            if let Some(telemetry_command::Command::RecoverOrphanedTransactionCommand(c)) =
                cmd.command
            {
                let m = c.message.clone().unwrap();
                if m.system_properties.as_ref().unwrap().message_id == "ID-C" {
                    return c;
                }
            }
        }
    })
    .await
    .expect("no transaction check-back for ID-C");
    let m = check.message.as_ref().unwrap();
    assert_eq!(body(m), "tx-checked");
    assert_eq!(m.topic.as_ref().unwrap().name, TOPIC);
    assert_eq!(
        m.system_properties.as_ref().unwrap().message_type,
        MessageType::Transaction as i32
    );
    let r = env
        .end_transaction(
            "ID-C",
            &check.transaction_id,
            TransactionResolution::Commit,
            TransactionSource::SourceServerCheck,
        )
        .await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");

    let mut got = env.receive_n(2, Duration::from_secs(30)).await;
    got.sort_by_key(body);
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        ["tx-checked", "tx-commit"]
    );
    for m in &got {
        assert_eq!(code(&env.ack(m).await.status), Code::Ok);
    }
    // The rolled back B never comes.
    let more = env.receive(Duration::from_secs(30)).await;
    assert!(
        !more.iter().any(|c| matches!(c, Content::Message(_))),
        "{more:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_to_dead_letter_queue_then_read_it_from_the_dlq() {
    let mut env = start().await;
    let r = env.send("ID-D", "to-dlq", None).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let got = env.receive_n(1, Duration::from_secs(30)).await;
    let forward = |receipt_handle: String| ForwardMessageToDeadLetterQueueRequest {
        group: res(GROUP),
        topic: res(TOPIC),
        receipt_handle,
        message_id: "ID-D".into(),
        delivery_attempt: 1,
        max_delivery_attempts: 16,
        lite_topic: None,
    };
    // A handle without the CommitLog offset (the POP handle alone) cannot be forwarded.
    let pop_handle = handle(&got[0]).rsplit_once(' ').unwrap().0.to_string();
    let r = env
        .client
        .forward_message_to_dead_letter_queue(forward(pop_handle))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::InvalidReceiptHandle, "{r:?}");
    let r = env
        .client
        .forward_message_to_dead_letter_queue(forward(handle(&got[0])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    // The forward acked the handle.
    assert_eq!(
        code(&env.ack(&got[0]).await.status),
        Code::InvalidReceiptHandle
    );
    // The copy is in %DLQ%<group>, with its id.
    let dlq = format!("%DLQ%{GROUP}");
    let copies = env
        .receive_n_from(&dlq, "GID_dlq_reader", 1, Duration::from_secs(30))
        .await;
    assert_eq!(body(&copies[0]), "to-dlq");
    assert_eq!(
        copies[0].system_properties.as_ref().unwrap().message_id,
        "ID-D"
    );
    env.stop().await;
}

/// Creates consumer group `group` at the broker, FIFO when `orderly`.
async fn create_group(env: &Env, group: &str, orderly: bool) {
    let admin = RemotingClient::new(Default::default());
    let body = format!(
        r#"{{"groupName":"{group}","consumeEnable":true,"consumeMessageOrderly":{orderly},"retryMaxTimes":16,"retryQueueNums":1}}"#
    );
    let req = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(body.into_bytes());
    let addr = BrokerAddr::parse(&env.broker.local_addr().to_string()).unwrap();
    let resp = admin
        .invoke(&addr, req, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    admin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_group_receives_in_order_and_a_batch_not_acked_blocks_its_queue() {
    const FIFO_GROUP: &str = "GID_fifo";
    // In-process, as in `apogee standalone`.
    let mut env = start_with(true, |_| {}).await;
    create_group(&env, FIFO_GROUP, true).await;
    for i in 0..4 {
        let r = env
            .send_in_group(&format!("ID-O{i}"), &format!("o-{i}"), None, Some("g1"))
            .await;
        assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    }
    // Received and acked as they come: in send order (a pop may see only part of them yet).
    let mut seen = Vec::new();
    while seen.len() < 4 {
        for m in env
            .receive_n_from(TOPIC, FIFO_GROUP, 1, Duration::from_secs(30))
            .await
        {
            assert_eq!(env.ack_as(FIFO_GROUP, &m).await, Code::Ok);
            seen.push(body(&m));
        }
    }
    assert_eq!(seen, ["o-0", "o-1", "o-2", "o-3"]);

    // A batch not fully acked blocks its queue until its invisible time passes; then it is
    // handed out again from its start, in order, with the attempt raised.
    for i in 0..4 {
        let r = env
            .send_in_group(&format!("ID-P{i}"), &format!("p-{i}"), None, Some("g1"))
            .await;
        assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    }
    let invisible = Duration::from_secs(2);
    let b1 = env.receive_n_from(TOPIC, FIFO_GROUP, 1, invisible).await;
    let popped_at = Instant::now();
    assert_eq!(body(&b1[0]), "p-0");
    assert_eq!(env.ack_as(FIFO_GROUP, &b1[0]).await, Code::Ok);
    let items = env.receive_from(TOPIC, FIFO_GROUP, invisible).await;
    // (Blocked only while part of the batch is unacked.)
    if b1.len() > 1 && popped_at.elapsed() < invisible {
        assert!(
            !items.iter().any(|c| matches!(c, Content::Message(_))),
            "handed out while its batch is in flight: {items:?}"
        );
    }
    let mut rest = Vec::new();
    let mut attempts = std::collections::BTreeMap::new();
    while rest.len() < 3 {
        for m in env
            .receive_n_from(TOPIC, FIFO_GROUP, 1, Duration::from_secs(30))
            .await
        {
            assert_eq!(env.ack_as(FIFO_GROUP, &m).await, Code::Ok);
            let b = body(&m);
            attempts.insert(
                b.clone(),
                m.system_properties.as_ref().unwrap().delivery_attempt,
            );
            if b != "p-0" {
                rest.push(b);
            }
        }
    }
    assert_eq!(rest, ["p-1", "p-2", "p-3"]);
    if b1.len() > 1 {
        assert_eq!(attempts.get("p-1"), Some(&Some(2)), "{attempts:?}");
    }
    let more = env.receive_from(TOPIC, FIFO_GROUP, invisible).await;
    assert!(
        !more.iter().any(|c| matches!(c, Content::Message(_))),
        "{more:?}"
    );
    env.stop().await;
}

/// A client of the proxy at `addr`, over TLS with `tls`.
async fn client_of(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
) -> Result<MessagingServiceClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    Ok(MessagingServiceClient::new(
        proxy::channel(endpoint, &addr.to_string(), tls).await?,
    ))
}

/// Sends one message through `env.client`, receives it, acks it.
async fn send_receive_ack(env: &mut Env, id: &str) {
    let r = env.send(id, id, None).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let got = env.receive_n(1, Duration::from_secs(30)).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), [id]);
    assert_eq!(code(&env.ack(&got[0]).await.status), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_and_plaintext_share_the_port_and_enforcing_refuses_plaintext() {
    let mut env = start().await;
    let pki = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (pki.path().join("proxy.crt"), pki.path().join("proxy.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let namesrv = NameServerAddr::parse(&env.namesrv.local_addr().to_string()).unwrap();
    let config = |tls: TlsServerSettings| ProxyConfig {
        grpc_server_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        namesrv_addr: vec![namesrv.clone()],
        tls,
        ..ProxyConfig::default()
    };

    // Permissive with the configured certificate: a client trusting it and a plaintext one.
    let permissive = Proxy::start(config(TlsServerSettings {
        mode: TlsMode::Permissive,
        cert_path: Some(cert.clone()),
        key_path: Some(key),
        ..TlsServerSettings::default()
    }))
    .await
    .unwrap();
    let trusting = ClientTls::new(&TlsClientSettings {
        trust_cert_path: Some(cert),
        ..TlsClientSettings::default()
    })
    .unwrap();
    env.client = client_of(permissive.local_addr(), Some(&trusting))
        .await
        .unwrap();
    send_receive_ack(&mut env, "over-tls").await;
    env.client = client_of(permissive.local_addr(), None).await.unwrap();
    send_receive_ack(&mut env, "over-plaintext").await;

    // A certificate the client does not trust (the one generated at start) fails the
    // handshake: TLS was really checked above.
    let enforcing = Proxy::start(config(TlsServerSettings {
        mode: TlsMode::Enforcing,
        ..TlsServerSettings::default()
    }))
    .await
    .unwrap();
    assert!(client_of(enforcing.local_addr(), Some(&trusting))
        .await
        .is_err());

    // Enforcing: plaintext is closed without an answer, promptly; TLS (accepting the
    // generated self-signed certificate) is served.
    let refused = tokio::time::timeout(DEADLINE, async {
        let mut c = client_of(enforcing.local_addr(), None).await?;
        let r = c
            .query_route(QueryRouteRequest {
                topic: res(TOPIC),
                endpoints: None,
            })
            .await;
        Ok::<_, tonic::transport::Error>(r.map(|_| ()))
    })
    .await
    .expect("a plaintext client is answered or closed promptly");
    match refused {
        Err(_) => {}
        Ok(call) => assert!(call.is_err(), "plaintext served by an enforcing proxy"),
    }
    let insecure = ClientTls::new(&TlsClientSettings {
        insecure: true,
        ..TlsClientSettings::default()
    })
    .unwrap();
    env.client = client_of(enforcing.local_addr(), Some(&insecure))
        .await
        .unwrap();
    send_receive_ack(&mut env, "enforced-tls").await;

    permissive.shutdown().await;
    enforcing.shutdown().await;
    env.stop().await;
}
