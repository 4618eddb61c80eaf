//! Consumer groups (heartbeat, NOTIFY_CONSUMER_IDS_CHANGED, consumer list, queue locks),
//! delayed messages and the admin requests mqadmin sends.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use remoting::broker_headers::{
    GetConsumerListByGroupResponseBody, LockBatchRequestBody, LockBatchResponseBody, MessageQueue,
};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::protocol::{parse_fastjson, KVTable};
use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, SerializeType};
use tokio::sync::mpsc;

fn notify_capture() -> (RemotingClient, mpsc::UnboundedReceiver<RemotingCommand>) {
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

async fn next_notify(rx: &mut mpsc::UnboundedReceiver<RemotingCommand>) -> RemotingCommand {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no NOTIFY_CONSUMER_IDS_CHANGED")
        .unwrap()
}

#[tokio::test]
async fn membership_changes_are_notified_and_locks_are_exclusive() {
    let env = Env::start().await;
    env.create_topic("TG", 2).await;
    let (c1, mut n1) = notify_capture();
    let (c2, mut n2) = notify_capture();
    let r = c1
        .invoke(&env.addr, consumer_heartbeat("c1", "GG", "TG"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(r.code, 0);
    let n = next_notify(&mut n1).await;
    assert_eq!(n.code, RequestCode::NOTIFY_CONSUMER_IDS_CHANGED);
    assert_eq!(n.ext("consumerGroup"), Some("GG"));
    assert!(n.is_oneway());

    // A second member: both are told.
    c2.invoke(&env.addr, consumer_heartbeat("c2", "GG", "TG"), TIMEOUT)
        .await
        .unwrap();
    next_notify(&mut n1).await;
    next_notify(&mut n2).await;
    let list = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "GG"),
        )
        .await;
    let ids = GetConsumerListByGroupResponseBody::decode(&list.body).unwrap();
    assert_eq!(ids.consumer_id_list, ["c1", "c2"]);
    // The heartbeat created the group's retry topic.
    assert_eq!(env.pull("GG", "%RETRY%GG", 0, 0, "*").await.code, 19);

    // Queue locks: the first client gets them, the second none.
    let mqs = [
        MessageQueue::new("TG", BROKER_NAME, 0),
        MessageQueue::new("TG", BROKER_NAME, 1),
    ];
    let lock = |client: &str| LockBatchRequestBody {
        client_id: client.into(),
        consumer_group: "GG".into(),
        mq_set: mqs.iter().cloned().collect(),
        only_this_broker: false,
    };
    let locked = |resp: RemotingCommand| {
        LockBatchResponseBody::decode(&resp.body)
            .unwrap()
            .lock_ok_mq_set
            .len()
    };
    let req = |b: &LockBatchRequestBody| {
        RemotingCommand::request(RequestCode::LOCK_BATCH_MQ).with_body(b.encode().unwrap())
    };
    assert_eq!(locked(env.call(req(&lock("c1"))).await), 2);
    assert_eq!(locked(env.call(req(&lock("c2"))).await), 0);
    let unlock = RemotingCommand::request(RequestCode::UNLOCK_BATCH_MQ)
        .with_body(lock("c1").encode().unwrap());
    assert_eq!(env.call(unlock).await.code, 0);
    assert_eq!(locked(env.call(req(&lock("c2"))).await), 2);

    // c2 leaves (connection closed): c1 is told.
    c2.shutdown().await;
    next_notify(&mut n1).await;
    c1.shutdown().await;
    env.stop().await;
}

#[tokio::test]
async fn delayed_message_is_delivered_after_its_level() {
    let env = Env::start().await;
    env.create_topic("TD", 1).await;
    let mut p = props("A", "k");
    p.insert("DELAY", "2"); // level 2 = 150 ms in the test config
    let sent_at = Instant::now();
    let r = env
        .send_v2("TD", 0, "later", &p, 0, SerializeType::Json)
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    let got = env.wait_messages("G", "TD", 0, 1).await;
    assert_eq!(got.len(), 1, "delayed message never delivered");
    assert!(sent_at.elapsed() >= Duration::from_millis(150));
    assert_eq!(got[0].message.property("REAL_TOPIC"), Some("TD"));
    assert_eq!(got[0].message.property("DELAY"), None);
    assert_eq!(&got[0].message.body[..], b"later");
    env.stop().await;
}

#[tokio::test]
async fn admin_requests_answer_mqadmin_shapes() {
    let env = Env::start().await;
    env.create_topic("TA", 2).await;
    for q in 0..2 {
        env.send_v2("TA", q, "x", &props("A", "k"), 0, SerializeType::Json)
            .await;
        env.wait_dispatched("TA", q, 1).await;
    }
    let stats = env
        .call(RemotingCommand::request(RequestCode::GET_TOPIC_STATS_INFO).with_ext("topic", "TA"))
        .await;
    assert_eq!(stats.code, 0);
    let text = String::from_utf8(stats.body.to_vec()).unwrap();
    assert!(
        text.starts_with(r#"{"offsetTable":{{"brokerName":"broker-t","queueId":0,"topic":"TA"}:{"lastUpdateTimestamp":"#),
        "{text}"
    );
    assert!(parse_fastjson(&stats.body).is_ok());

    let commit = RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "GA")
        .with_ext("topic", "TA")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    assert_eq!(env.call(commit).await.code, 0);
    let cs = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUME_STATS)
                .with_ext("consumerGroup", "GA"),
        )
        .await;
    let text = String::from_utf8(cs.body.to_vec()).unwrap();
    assert!(
        text.starts_with(r#"{"consumeTps":0.0,"offsetTable":{{"#),
        "{text}"
    );
    assert!(
        text.contains(r#""brokerOffset":1,"consumerOffset":1"#),
        "{text}"
    );

    let info = env
        .call(RemotingCommand::request(
            RequestCode::GET_BROKER_RUNTIME_INFO,
        ))
        .await;
    let table: KVTable = remoting::protocol::from_fastjson(&info.body).unwrap();
    assert_eq!(table.table["msgPutTotalTodayNow"], "2");

    let conf = env
        .call(RemotingCommand::request(RequestCode::GET_BROKER_CONFIG))
        .await;
    assert!(String::from_utf8(conf.body.to_vec())
        .unwrap()
        .contains("brokerName=broker-t"));
    let update = RemotingCommand::request(RequestCode::UPDATE_BROKER_CONFIG)
        .with_body(&b"autoCreateTopicEnable=false\n"[..]);
    assert_eq!(env.call(update).await.code, 0);
    let refused = RemotingCommand::request(RequestCode::UPDATE_BROKER_CONFIG)
        .with_body(&b"brokerName=other\n"[..]);
    assert_eq!(env.call(refused).await.code, 16);
    // Auto-creation now off: TBW102 no longer lends its config.
    let r = env
        .send_v2("NEW_T", 0, "x", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(r.code, 17);

    let group = br#"{"groupName":"GS","retryMaxTimes":3,"consumeEnable":true}"#;
    let r = env
        .call(
            RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(&group[..]),
        )
        .await;
    assert_eq!(r.code, 0);
    let all = env
        .call(RemotingCommand::request(
            RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
        ))
        .await;
    let v = parse_fastjson(&all.body).unwrap();
    assert_eq!(v["subscriptionGroupTable"]["GS"]["retryMaxTimes"], 3);

    let del = RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_BROKER).with_ext("topic", "TA");
    assert_eq!(env.call(del).await.code, 0);
    assert_eq!(env.pull("G", "TA", 0, 0, "*").await.code, 17);
    env.stop().await;
}
