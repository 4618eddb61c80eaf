//! The 5.x gRPC endpoint while a broker group has no master: group `b1` (a master in its own
//! process and a slave) and group `b2` (a master), the proxy in cluster mode in front of them
//! and a tonic client. b1's master is SIGKILLed; the NameServer lists the slave as b1's acting
//! master. Sends through the proxy keep succeeding (they go to b2), receives and acks of the
//! messages on b1 are served by the acting master, a change of invisible duration (the
//! 5.x nack) brings a message back, and a forward to the DLQ of a message of b1 succeeds and
//! lands in `%DLQ%<group>`. Nothing sent is lost.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::failover::wait_b1_master;
use it::{cluster_broker_config, namesrv_config, raw, raw_client, BrokerNode, BrokerRole};
use proto::v2::messaging_service_client::MessagingServiceClient;
use proto::v2::receive_message_response::Content;
use proto::v2::*;
use proxy::{Proxy, ProxyConfig};
use remoting::NameServerAddr;
use tonic::transport::Channel;

const TOPIC: &str = "TopicGrpcFailover";
const GROUP: &str = "GID_grpc_failover";
const DLQ_GROUP: &str = "GID_grpc_failover_dlq";
const LEVELS: &str = "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms";
const DEADLINE: Duration = Duration::from_secs(30);

fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn code(s: &Option<Status>) -> Code {
    Code::try_from(s.as_ref().map_or(0, |s| s.code)).unwrap_or(Code::Unspecified)
}

fn body(m: &Message) -> String {
    String::from_utf8(m.body.to_vec()).unwrap()
}

fn handle(m: &Message) -> String {
    m.system_properties
        .as_ref()
        .and_then(|s| s.receipt_handle.clone())
        .unwrap()
}

/// The broker group a receipt handle names (its sixth field).
fn group_of(m: &Message) -> String {
    handle(m).split(' ').nth(5).unwrap().to_string()
}

async fn send(client: &mut MessagingServiceClient<Channel>, text: &str) -> SendMessageResponse {
    let m = Message {
        topic: res(TOPIC),
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: format!("ID-{text}"),
            message_type: MessageType::Normal as i32,
            ..Default::default()
        }),
        body: text.as_bytes().to_vec().into(),
    };
    client
        .send_message(SendMessageRequest { messages: vec![m] })
        .await
        .unwrap()
        .into_inner()
}

/// What a 5.x SimpleConsumer does: QueryAssignment of `topic` for `group`, then one receive
/// (long polling 1 s) per assigned queue (one per broker group); the messages, after checking
/// each status. The NameServer may list the slave as b1's acting master a moment before the slave
/// has seen its master go (replication link down): until then it refuses pops
/// (`NO_PERMISSION`, `FORBIDDEN` here), which a 5.x client retries; so does this.
async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    group: &str,
    invisible: Duration,
) -> Vec<Message> {
    let a = client
        .query_assignment(QueryAssignmentRequest {
            topic: res(topic),
            group: res(group),
            endpoints: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&a.status), Code::Ok, "{a:?}");
    let mut out = Vec::new();
    for mq in a.assignments.into_iter().filter_map(|a| a.message_queue) {
        out.extend(receive_from(client, mq, group, invisible).await);
    }
    out
}

async fn receive_from(
    client: &mut MessagingServiceClient<Channel>,
    mq: MessageQueue,
    group: &str,
    invisible: Duration,
) -> Vec<Message> {
    let mut stream = client
        .receive_message(ReceiveMessageRequest {
            group: res(group),
            message_queue: Some(mq),
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
        match item.content {
            Some(Content::Message(m)) => out.push(m),
            Some(Content::Status(s)) if s.code == Code::Forbidden as i32 => {
                println!("receive refused while the slave takes over: {}", s.message);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(Content::Status(s)) => assert!(
                s.code == Code::Ok as i32 || s.code == Code::MessageNotFound as i32,
                "receive answered {s:?}"
            ),
            _ => {}
        }
    }
    out
}

async fn ack(client: &mut MessagingServiceClient<Channel>, group: &str, m: &Message) -> Code {
    let r = client
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_sends_go_to_other_groups_and_the_acting_master_serves_receive_ack_nack_and_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let mut ns_config = namesrv_config(Duration::from_secs(3));
    ns_config.support_acting_master = true;
    let ns = namesrv::NameServer::start(ns_config).await.unwrap();
    let nsa = ns.local_addr();
    let cfg = |name: &str, id: i64, role: BrokerRole| {
        let mut c = cluster_broker_config(nsa, dir.path(), (name, id, role), LEVELS);
        c.revive_interval = 100;
        c
    };
    let mut m1 = BrokerNode::start(cfg("b1", 0, BrokerRole::SyncMaster));
    let s1 = BrokerNode::start(cfg("b1", 1, BrokerRole::Slave));
    let m2 = BrokerNode::start(cfg("b2", 0, BrokerRole::AsyncMaster));
    let admin = raw_client();
    for m in [&m1, &m2] {
        raw::create_topic(&admin, &m.addr, TOPIC, 2).await;
    }
    wait_b1_master(nsa, TOPIC, Some(&m1.addr), DEADLINE).await;
    let proxy = Proxy::start(ProxyConfig {
        grpc_server_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        namesrv_addr: vec![NameServerAddr::parse(&nsa.to_string()).unwrap()],
        ..ProxyConfig::default()
    })
    .await
    .unwrap();
    let mut client = MessagingServiceClient::connect(format!("http://{}", proxy.local_addr()))
        .await
        .unwrap();
    let mut sent = BTreeSet::new();
    let until = Instant::now() + DEADLINE;
    // Both groups' queues are in the proxy's route once both masters registered the topic.
    while sent.len() < 20 {
        assert!(Instant::now() < until, "sends before the crash");
        let text = format!("before-{:02}", sent.len());
        if code(&send(&mut client, &text).await.status) == Code::Ok {
            sent.insert(text);
        }
    }
    let on_b1: i64 = stored_on(&admin, &m1.addr).await;
    assert!(on_b1 > 0, "no message went to b1");

    // SYNC_MASTER: every acknowledged message of b1 is on the slave already.
    m1.kill();
    wait_b1_master(nsa, TOPIC, Some(&s1.addr), DEADLINE).await;
    // Sends while b1 has no master: every one succeeds (on b2).
    for i in 0..20 {
        let text = format!("after-{i:02}");
        let r = send(&mut client, &text).await;
        assert_eq!(code(&r.status), Code::Ok, "{text}: {r:?}");
        sent.insert(text);
    }

    // Receives: every message once, those of b1 from the acting master; acks work there.
    let mut got: Vec<Message> = Vec::new();
    let until = Instant::now() + DEADLINE;
    while got.len() < sent.len() {
        assert!(
            Instant::now() < until,
            "received {} of {}",
            got.len(),
            sent.len()
        );
        got.extend(receive(&mut client, TOPIC, GROUP, Duration::from_secs(60)).await);
    }
    let names: BTreeSet<String> = got.iter().map(body).collect();
    assert_eq!(names, sent, "every message received");
    assert_eq!(got.len(), sent.len(), "each once");
    let from_b1: Vec<&Message> = got.iter().filter(|m| group_of(m) == "b1").collect();
    assert_eq!(
        from_b1.len() as i64,
        on_b1,
        "b1's messages from its acting master"
    );
    assert!(
        from_b1.len() >= 2,
        "b1 held {} messages: too few",
        from_b1.len()
    );
    let (nacked, dead) = (from_b1[0].clone(), from_b1[1].clone());
    for m in got
        .iter()
        .filter(|m| handle(m) != handle(&nacked) && handle(m) != handle(&dead))
    {
        assert_eq!(ack(&mut client, GROUP, m).await, Code::Ok, "{}", body(m));
    }

    // The 5.x nack: a short invisible duration; the message comes back, attempt 2.
    let r = client
        .change_invisible_duration(ChangeInvisibleDurationRequest {
            group: res(GROUP),
            topic: res(TOPIC),
            receipt_handle: handle(&nacked),
            invisible_duration: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            message_id: nacked
                .system_properties
                .as_ref()
                .unwrap()
                .message_id
                .clone(),
            lite_topic: None,
            suspend: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");

    // Forward to the DLQ through the acting master: it never fails for want of a master.
    let r = client
        .forward_message_to_dead_letter_queue(ForwardMessageToDeadLetterQueueRequest {
            group: res(GROUP),
            topic: res(TOPIC),
            receipt_handle: handle(&dead),
            message_id: dead.system_properties.as_ref().unwrap().message_id.clone(),
            delivery_attempt: 1,
            max_delivery_attempts: 16,
            lite_topic: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");

    let mut back = Vec::new();
    let until = Instant::now() + DEADLINE;
    while back.is_empty() {
        assert!(
            Instant::now() < until,
            "the nacked message did not come back"
        );
        back.extend(receive(&mut client, TOPIC, GROUP, Duration::from_secs(60)).await);
    }
    assert_eq!(
        back.iter().map(body).collect::<Vec<_>>(),
        [body(&nacked)],
        "only the nacked message comes back"
    );
    let attempt = back[0].system_properties.as_ref().unwrap().delivery_attempt;
    assert_eq!(attempt, Some(2));
    assert_eq!(ack(&mut client, GROUP, &back[0]).await, Code::Ok);

    let dlq = format!("%DLQ%{GROUP}");
    let mut in_dlq = Vec::new();
    let until = Instant::now() + DEADLINE;
    while in_dlq.is_empty() {
        assert!(Instant::now() < until, "nothing in {dlq}");
        in_dlq.extend(receive(&mut client, &dlq, DLQ_GROUP, Duration::from_secs(60)).await);
    }
    assert_eq!(in_dlq.iter().map(body).collect::<Vec<_>>(), [body(&dead)]);

    drop(client);
    proxy.shutdown().await;
    drop((s1, m2));
    ns.shutdown().await;
}

/// Messages stored on b1 (both queues of the topic) at the broker `addr`.
async fn stored_on(admin: &remoting::client::RemotingClient, addr: &str) -> i64 {
    let mut n = 0;
    for q in 0..2 {
        n += raw::max_offset(admin, addr, TOPIC, q).await.max(0);
    }
    n
}
