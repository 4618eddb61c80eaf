//! The admin requests the broker passes on to its consumers, against a real push consumer:
//! GET_CONSUMER_RUNNING_INFO (307), CONSUME_MESSAGE_DIRECTLY (309),
//! INVOKE_BROKER_TO_RESET_OFFSET (222, which sends RESET_CONSUMER_CLIENT_OFFSET) and
//! INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223, which asks each client with 221).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::ClientConfig;
use common::*;
use remoting::broker_headers::{
    CMResult, ConsumeFromWhere, ConsumeMessageDirectlyResult, ResetOffsetBody,
};
use remoting::protocol::parse_fastjson;
use remoting::{RemotingCommand, RequestCode, ResponseCode, SerializeType};
use tokio::sync::mpsc;

const GROUP: &str = "CG_forward";
const TOPIC: &str = "TForward";

async fn bodies(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("messages not (re)delivered in time")
            .unwrap();
        got.insert(body);
    }
    got
}

async fn consumer_status(env: &Env) -> RemotingCommand {
    env.call(
        RemotingCommand::request(RequestCode::INVOKE_BROKER_TO_GET_CONSUMER_STATUS)
            .with_ext("topic", TOPIC)
            .with_ext("group", GROUP),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_requests_reach_the_consumer_through_the_broker() {
    let env = Env::start().await;
    env.create_topic(TOPIC, 2).await;
    let mut msg_ids = Vec::new();
    for i in 0..4 {
        let r = env
            .send_v2(
                TOPIC,
                i % 2,
                &format!("m{i}"),
                &props("A", "k"),
                0,
                SerializeType::Json,
            )
            .await;
        assert_eq!(r.code, 0, "{}", r.remark_str());
        msg_ids.push(r.ext("msgId").unwrap().to_string());
    }
    let all: BTreeSet<String> = (0..4).map(|i| format!("m{i}")).collect();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let namesrv = env.namesrv.as_ref().unwrap().local_addr().to_string();
    let consumer = PushConsumer::start(
        ClientConfig::new(&namesrv)
            .unwrap()
            .client_ip("127.0.0.1")
            .poll_name_server_interval(Duration::from_millis(200))
            .heartbeat_broker_interval(Duration::from_millis(500))
            .persist_consumer_offset_interval(Duration::from_millis(200)),
        PushConsumerConfig::new(GROUP)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .rebalance_interval(Duration::from_millis(200)),
        &[(TOPIC, "*")],
        MessageListener::concurrently(move |msgs, _ctx| {
            for m in msgs {
                let _ = tx.send(String::from_utf8_lossy(&m.message.body).into_owned());
            }
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }),
    )
    .await
    .unwrap();
    assert_eq!(bodies(&mut rx, 4).await, all);
    let client_id = consumer.client_id().to_string();

    // 307: the consumer's running info, answered by the consumer itself.
    let info = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUMER_RUNNING_INFO)
                .with_ext("consumerGroup", GROUP)
                .with_ext("clientId", &client_id)
                .with_ext("jstackEnable", false),
        )
        .await;
    assert_eq!(info.code, ResponseCode::SUCCESS, "{}", info.remark_str());
    let info = parse_fastjson(&info.body).unwrap();
    let topics: Vec<&str> = info["subscriptionSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert!(topics.contains(&TOPIC), "{topics:?}");

    // A client that is not connected gets an answer from the broker, not a hang.
    let missing = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUMER_RUNNING_INFO)
                .with_ext("consumerGroup", GROUP)
                .with_ext("clientId", "nobody@0")
                .with_ext("jstackEnable", false),
        )
        .await;
    assert_eq!(missing.code, ResponseCode::SYSTEM_ERROR);
    assert!(missing.remark_str().contains("not online"));

    // 309: the stored message is passed to the consumer's listener again.
    let direct = env
        .call(
            RemotingCommand::request(RequestCode::CONSUME_MESSAGE_DIRECTLY)
                .with_ext("consumerGroup", GROUP)
                .with_ext("clientId", &client_id)
                .with_ext("msgId", &msg_ids[2])
                .with_ext("topic", TOPIC),
        )
        .await;
    assert_eq!(
        direct.code,
        ResponseCode::SUCCESS,
        "{}",
        direct.remark_str()
    );
    let result = ConsumeMessageDirectlyResult::decode(&direct.body).unwrap();
    assert_eq!(result.consume_result, Some(CMResult::CR_SUCCESS));
    assert_eq!(bodies(&mut rx, 1).await, BTreeSet::from(["m2".to_string()]));
    let unknown = env
        .call(
            RemotingCommand::request(RequestCode::CONSUME_MESSAGE_DIRECTLY)
                .with_ext("consumerGroup", GROUP)
                .with_ext("clientId", &client_id)
                .with_ext("msgId", "not-a-msg-id"),
        )
        .await;
    assert_eq!(unknown.code, ResponseCode::SYSTEM_ERROR);

    // 223: each client's offsets, by client id, once the consumer has committed all four.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = consumer_status(&env).await;
        assert_eq!(
            status.code,
            ResponseCode::SUCCESS,
            "{}",
            status.remark_str()
        );
        let status = parse_fastjson(&status.body).unwrap();
        let table = status["consumerTable"][client_id.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let sum: i64 = table.values().map(|v| v.as_i64().unwrap()).sum();
        if table.len() == 2 && sum == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer status never showed all four consumed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 222: back to the start of both queues; the consumer is told and consumes all again.
    let reset = env
        .call(
            RemotingCommand::request(RequestCode::INVOKE_BROKER_TO_RESET_OFFSET)
                .with_ext("topic", TOPIC)
                .with_ext("group", GROUP)
                .with_ext("timestamp", 0)
                .with_ext("isForce", true),
        )
        .await;
    assert_eq!(reset.code, ResponseCode::SUCCESS, "{}", reset.remark_str());
    let table = ResetOffsetBody::decode(&reset.body).unwrap().offset_table;
    assert_eq!(table.len(), 2);
    assert!(table.values().all(|o| *o == 0), "{table:?}");
    assert_eq!(bodies(&mut rx, 4).await, all);

    consumer.shutdown().await;
    // No consumer left: the status request says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = consumer_status(&env).await;
        if status.code == ResponseCode::SYSTEM_ERROR {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer never left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.stop().await;
}
