//! The fast ("VIP") port, `listenPort - 2` by default: upstream slaves sync their master's
//! metadata there and VIP-channel clients send and pull there, so it must serve exactly what
//! the main port serves, with first-class connections (heartbeats, close housekeeping,
//! server-initiated requests), and stop with the broker.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use broker::Broker;
use common::*;
use remoting::broker_headers::{GetConsumerListByGroupResponseBody, HeartbeatData, ProducerData};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::protocol::{from_fastjson, TopicConfigSerializeWrapper};
use remoting::server::Connection;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode, SerializeType};
use tokio::sync::mpsc;

/// The broker's fast port as a client address; panics when it is not served.
fn fast_addr(env: &Env) -> BrokerAddr {
    let broker = env.broker.as_ref().unwrap();
    let fast = broker
        .fast_local_addr()
        .expect("the broker serves no fast port");
    assert_ne!(fast.port(), 0);
    assert_ne!(fast, broker.local_addr(), "the fast port is the main port");
    BrokerAddr::parse(&fast.to_string()).unwrap()
}

/// A client whose server-initiated requests (NOTIFY_CONSUMER_IDS_CHANGED,
/// CHECK_TRANSACTION_STATE) are forwarded to the returned receiver.
fn capturing_client() -> (RemotingClient, mpsc::UnboundedReceiver<RemotingCommand>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |_c: Connection, req: RemotingCommand| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(req);
            None
        }
    };
    let client = RemotingClient::new(ClientConfig {
        server_request_handler: Some(Arc::new(handler)),
        ..ClientConfig::default()
    });
    (client, rx)
}

async fn next_request(
    rx: &mut mpsc::UnboundedReceiver<RemotingCommand>,
    what: &str,
) -> RemotingCommand {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
        .unwrap()
}

async fn consumer_ids(env: &Env, group: &str) -> Vec<String> {
    let list = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", group),
        )
        .await;
    assert_eq!(list.code, ResponseCode::SUCCESS, "{}", list.remark_str());
    GetConsumerListByGroupResponseBody::decode(&list.body)
        .unwrap()
        .consumer_id_list
}

fn bodies(msgs: &[remoting::message::MessageExt]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect()
}

#[tokio::test]
async fn fast_port_serves_sends_pulls_and_the_slave_sync_requests() {
    let mut env = Env::start().await;
    let main = env.addr.clone();
    let fast = fast_addr(&env);
    let fast_socket: SocketAddr = fast.to_string().parse().unwrap();
    env.create_topic("TF", 1).await;

    // One message through each port; both ports pull both, in order.
    let r = env
        .send_v2(
            "TF",
            0,
            "via-main",
            &props("A", "m"),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    env.addr = fast.clone();
    let r = env
        .send_v2(
            "TF",
            0,
            "via-fast",
            &props("A", "f"),
            0,
            SerializeType::RocketMq,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let r = env.send_v1("TF", 0, "via-fast-v1", "B").await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let want = ["via-main", "via-fast", "via-fast-v1"];
    assert_eq!(bodies(&env.wait_messages("GF", "TF", 0, 3).await), want);
    env.addr = main.clone();
    assert_eq!(bodies(&env.wait_messages("GF", "TF", 0, 3).await), want);

    // An offset committed on the fast port is read on the main port.
    env.addr = fast.clone();
    let commit = env
        .call(
            RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET)
                .with_ext("consumerGroup", "GF")
                .with_ext("topic", "TF")
                .with_ext("queueId", 0)
                .with_ext("commitOffset", 2),
        )
        .await;
    assert_eq!(commit.code, 0, "{}", commit.remark_str());
    env.addr = main.clone();
    let query = env
        .call(
            RemotingCommand::request(RequestCode::QUERY_CONSUMER_OFFSET)
                .with_ext("consumerGroup", "GF")
                .with_ext("topic", "TF")
                .with_ext("queueId", 0),
        )
        .await;
    assert_eq!(query.code, 0, "{}", query.remark_str());
    assert_eq!(query.ext("offset"), Some("2"));

    // What an upstream slave asks its master's fast port for.
    env.addr = fast.clone();
    let topics = env
        .call(RemotingCommand::request(RequestCode::GET_ALL_TOPIC_CONFIG))
        .await;
    assert_eq!(topics.code, 0, "{}", topics.remark_str());
    let wrapper: TopicConfigSerializeWrapper = from_fastjson(&topics.body).unwrap();
    assert_eq!(wrapper.topic_config_table["TF"].read_queue_nums, 1);
    let offsets = env
        .call(RemotingCommand::request(
            RequestCode::GET_ALL_CONSUMER_OFFSET,
        ))
        .await;
    assert_eq!(offsets.code, 0, "{}", offsets.remark_str());
    assert!(
        String::from_utf8_lossy(&offsets.body).contains("TF@GF"),
        "{}",
        String::from_utf8_lossy(&offsets.body)
    );
    for code in [
        RequestCode::GET_ALL_DELAY_OFFSET,
        RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    ] {
        let r = env.call(RemotingCommand::request(code)).await;
        assert_eq!(r.code, 0, "code {code}: {}", r.remark_str());
        assert!(!r.body.is_empty(), "code {code}: empty body");
    }
    let conf = env
        .call(RemotingCommand::request(RequestCode::GET_BROKER_CONFIG))
        .await;
    assert_eq!(conf.code, 0, "{}", conf.remark_str());
    let text = String::from_utf8(conf.body.to_vec()).unwrap();
    assert!(
        text.contains(&format!("brokerName={BROKER_NAME}")),
        "{text}"
    );
    assert!(text.contains("fastListenPortEnable=true"), "{text}");
    // A code nobody serves is answered the same way on both ports.
    let unknown = env.call(RemotingCommand::request(9_999)).await;
    assert_eq!(unknown.code, ResponseCode::REQUEST_CODE_NOT_SUPPORTED);

    // Shutdown stops the fast port too.
    env.addr = main;
    env.stop().await;
    assert!(
        tokio::net::TcpStream::connect(fast_socket).await.is_err(),
        "the fast port still accepts after shutdown"
    );
}

#[tokio::test]
async fn fast_port_connections_get_notifications_checks_and_close_housekeeping() {
    let env = Env::start_with(|_| {}, None).await;
    let fast = fast_addr(&env);
    env.create_topic("TN", 1).await;

    // A consumer on the fast port, another on the main port: both are told of changes.
    let (on_fast, mut fast_rx) = capturing_client();
    let (on_main, mut main_rx) = capturing_client();
    let r = on_fast
        .invoke(&fast, consumer_heartbeat("c-fast", "GN", "TN"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let n = next_request(&mut fast_rx, "NOTIFY_CONSUMER_IDS_CHANGED on the fast port").await;
    assert_eq!(n.code, RequestCode::NOTIFY_CONSUMER_IDS_CHANGED);
    assert_eq!(n.ext("consumerGroup"), Some("GN"));
    on_main
        .invoke(&env.addr, consumer_heartbeat("c-main", "GN", "TN"), TIMEOUT)
        .await
        .unwrap();
    next_request(&mut fast_rx, "NOTIFY_CONSUMER_IDS_CHANGED for the join").await;
    next_request(&mut main_rx, "NOTIFY_CONSUMER_IDS_CHANGED on the main port").await;
    assert_eq!(consumer_ids(&env, "GN").await, ["c-fast", "c-main"]);

    // Closing the fast-port connection removes its consumer and tells the others.
    on_fast.shutdown().await;
    next_request(&mut main_rx, "NOTIFY_CONSUMER_IDS_CHANGED after the close").await;
    assert_eq!(consumer_ids(&env, "GN").await, ["c-main"]);

    // A transactional producer known only on the fast port is asked there.
    let (producer, mut checks) = capturing_client();
    let hb = HeartbeatData {
        client_id: "127.0.0.1@tx-fast".into(),
        producer_data_set: vec![ProducerData {
            group_name: "PG_test".into(),
        }],
        ..Default::default()
    };
    let r = producer
        .invoke(
            &fast,
            RemotingCommand::request(RequestCode::HEART_BEAT).with_body(hb.encode().unwrap()),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let mut half = props("A", "K-fast");
    half.insert("TRAN_MSG", "true");
    half.insert("PGROUP", "PG_test");
    half.insert("UNIQ_KEY", "K-fast");
    let r = env
        .send_v2("TN", 0, "half", &half, PREPARED, SerializeType::Json)
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let check = next_request(&mut checks, "CHECK_TRANSACTION_STATE on the fast port").await;
    assert_eq!(check.code, RequestCode::CHECK_TRANSACTION_STATE);
    assert_eq!(check.ext("msgId"), Some("K-fast"));

    producer.shutdown().await;
    on_main.shutdown().await;
    env.stop().await;
}

#[tokio::test]
async fn fixed_listen_port_serves_the_fast_port_two_below() {
    let dir = tempfile::tempdir().unwrap();
    let namesrv = start_namesrv(dir.path()).await;
    // Find a port P with P and P - 2 free; another process may take one before the broker
    // binds it, so try a few.
    let mut started = None;
    for attempt in 0..20 {
        let Some(port) = free_port_pair() else {
            continue;
        };
        let mut config = broker_config(&dir.path().join(attempt.to_string()), &namesrv);
        config.listen_port = port;
        config.ha_listen_port = Some(0);
        match Broker::start(config).await {
            Ok(b) => {
                started = Some((b, port));
                break;
            }
            Err(e) => eprintln!("port {port} taken meanwhile: {e}"),
        }
    }
    let (broker, port) = started.expect("no free port pair found");
    assert_eq!(broker.local_addr().port(), port);
    assert_eq!(broker.fast_local_addr().unwrap().port(), port - 2);
    let client = RemotingClient::new(ClientConfig::default());
    let fast = BrokerAddr::parse(&format!("127.0.0.1:{}", port - 2)).unwrap();
    let r = client
        .invoke(
            &fast,
            RemotingCommand::request(RequestCode::GET_ALL_TOPIC_CONFIG),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{}", r.remark_str());
    client.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}

/// A port P > 2 such that P and P - 2 could both be bound on 127.0.0.1 just now.
fn free_port_pair() -> Option<u16> {
    let l = TcpListener::bind("127.0.0.1:0").ok()?;
    let port = l.local_addr().ok()?.port();
    let _below = TcpListener::bind(("127.0.0.1", port.checked_sub(2)?)).ok()?;
    Some(port)
}

#[tokio::test]
async fn fast_port_can_be_turned_off_and_a_taken_one_fails_the_start_naming_the_key() {
    let off = Env::start_with(|c| c.fast_listen_port_enable = false, None).await;
    assert_eq!(off.broker.as_ref().unwrap().fast_local_addr(), None);
    off.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let namesrv = start_namesrv(dir.path()).await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = broker_config(dir.path(), &namesrv);
    config.fast_listen_port = Some(port);
    let err = Broker::start(config.clone())
        .await
        .err()
        .expect("started with its fast port taken");
    let text = err.to_string();
    assert!(text.contains("fastListenPort"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
    // The failed start released the store and the main port: the same directory starts.
    config.fast_listen_port = Some(0);
    let broker = Broker::start(config).await.unwrap();
    assert_ne!(broker.fast_local_addr().unwrap().port(), port);
    broker.shutdown().await;
    namesrv.shutdown().await;
}
