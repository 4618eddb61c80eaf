//! The Rust client produces and consumes through a NameServer and a broker that accept TLS
//! only (`tls.server.mode=enforcing`), the broker registering over TLS itself (`tls.enable`,
//! checking the NameServer's certificate); a plaintext client is refused.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, BrokerConfig};
use client::api::ClientApi;
use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{ClientConfig, Producer, ProducerConfig, SendStatus};
use namesrv::{NameServer, NamesrvConfig};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::client::{ClientConfig as RemotingClientConfig, RemotingClient};
use remoting::message::Message;
use remoting::tls::{ClientTls, TlsClientSettings, TlsMode};
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RequestCode};
use support::{collect, eventually, DEADLINE};
use testkit::TestPki;
use tokio::sync::mpsc;

const TOPIC: &str = "TlsTopic";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_and_consume_through_an_enforcing_namesrv_and_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "cluster");
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        bind_address: "127.0.0.1".parse().unwrap(),
        kv_config_path: dir.path().join("kvConfig.json"),
        tls_server_mode: TlsMode::Enforcing,
        tls_server_cert_path: Some(pki.server_cert.clone()),
        tls_server_key_path: Some(pki.server_key.clone()),
        ..NamesrvConfig::default()
    })
    .await
    .unwrap();
    let namesrv_addr = namesrv.local_addr().to_string();
    let broker = Broker::start(BrokerConfig {
        broker_cluster_name: "TlsCluster".into(),
        broker_name: "broker-tls".into(),
        namesrv_addr: namesrv_addr.clone(),
        listen_port: 0,
        fast_listen_port_enable: false,
        bind_address: "127.0.0.1".parse::<IpAddr>().unwrap(),
        broker_ip1: Some("127.0.0.1".parse().unwrap()),
        store_path_root_dir: dir.path().join("broker"),
        mapped_file_size_commit_log: 4 * 1024 * 1024,
        mapped_file_size_consume_queue: 20 * 1000,
        register_name_server_period: 1_000,
        tls_server_mode: TlsMode::Enforcing,
        tls_server_cert_path: Some(pki.server_cert.clone()),
        tls_server_key_path: Some(pki.server_key.clone()),
        // The broker's own connections: TLS, checking the NameServer against the CA.
        tls_enable: true,
        tls_test_mode_enable: false,
        tls_client_auth_server: true,
        tls_client_trust_cert_path: Some(pki.ca_cert.clone()),
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let broker_addr = BrokerAddr::parse(&broker.local_addr().to_string()).unwrap();

    let tls = ClientTls::new(&TlsClientSettings {
        trust_cert_path: Some(pki.ca_cert.clone()),
        ..TlsClientSettings::default()
    })
    .unwrap();
    let admin = RemotingClient::new(RemotingClientConfig {
        tls: Some(tls.clone()),
        ..RemotingClientConfig::default()
    });
    let req = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", TOPIC)
        .with_ext("readQueueNums", 2)
        .with_ext("writeQueueNums", 2)
        .with_ext("perm", 6)
        .with_ext("topicFilterType", "SINGLE_TAG")
        .with_ext("topicSysFlag", 0)
        .with_ext("order", false)
        .with_ext("defaultTopic", "TBW102");
    let resp = admin
        .invoke(&broker_addr, req, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    // The broker registered over TLS: the NameServer (read over TLS) routes the topic.
    let api = ClientApi::new(
        Arc::new(admin.clone()),
        vec![NameServerAddr::parse(&namesrv_addr).unwrap()],
        Duration::from_secs(3),
    );
    eventually("route of the topic", || async {
        matches!(api.topic_route(TOPIC).await, Ok(Some(r)) if !r.queue_datas.is_empty())
    })
    .await;

    // A plaintext client gets nothing from either server.
    let plain = RemotingClient::new(RemotingClientConfig::default());
    let route =
        RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", TOPIC);
    let refused = tokio::time::timeout(
        DEADLINE,
        plain.invoke_namesrv(
            &NameServerAddr::parse(&namesrv_addr).unwrap(),
            route,
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("refused at once, not after the call timeout");
    assert!(refused.is_err(), "plaintext answered: {refused:?}");
    plain.shutdown().await;

    let config = || {
        ClientConfig::new(&namesrv_addr)
            .unwrap()
            .client_ip("127.0.0.1")
            .poll_name_server_interval(Duration::from_millis(200))
            .heartbeat_broker_interval(Duration::from_millis(500))
            .persist_consumer_offset_interval(Duration::from_millis(200))
            .tls(tls.clone())
    };
    let producer = Producer::start(config(), ProducerConfig::new("PG_tls"))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = PushConsumer::start(
        config(),
        PushConsumerConfig::new("CG_tls")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset),
        &[(TOPIC, "*")],
        MessageListener::concurrently(move |msgs, _| {
            for m in msgs {
                let _ = tx.send(m.message.body.clone());
            }
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }),
    )
    .await
    .unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = format!("over-tls-{i}").into_bytes();
        let r = producer
            .send(Message::new(TOPIC, body.clone()))
            .await
            .unwrap();
        assert_eq!(r.send_status, SendStatus::SendOk);
        sent.push(body);
    }
    let mut got: Vec<Vec<u8>> = collect(&mut rx, sent.len())
        .await
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent);

    consumer.shutdown().await;
    producer.shutdown().await;
    admin.shutdown().await;
    broker.shutdown().await;
    namesrv.shutdown().await;
}
