//! End-to-end tests over real TCP: a NameServer and a Broker in-process, a raw remoting
//! client sending the requests upstream clients send.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use remoting::broker_headers::{HeartbeatData, ProducerData};
use remoting::message::{encode_batch, Message, MessageSysFlag};
use remoting::protocol::{from_fastjson, TopicRouteData};
use remoting::server::Connection;
use remoting::{NameServerAddr, RemotingCommand, RequestCode, SerializeType};
use tokio::sync::mpsc;

fn ext_keys(cmd: &RemotingCommand) -> BTreeSet<&str> {
    cmd.ext_fields.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn send_and_pull_in_both_header_encodings() {
    let env = Env::start().await;
    env.create_topic("T1", 2).await;
    for (i, ser) in [SerializeType::Json, SerializeType::RocketMq]
        .into_iter()
        .enumerate()
    {
        let resp = env
            .send_v2("T1", 0, &format!("body-{i}"), &props("TagA", "k"), 0, ser)
            .await;
        assert_eq!(resp.code, 0, "{}", resp.remark_str());
        assert_eq!(resp.serialize_type, ser);
        assert_eq!(
            ext_keys(&resp),
            ["MSG_REGION", "TRACE_ON", "msgId", "queueId", "queueOffset"].into()
        );
        assert_eq!(resp.ext("queueOffset"), Some(i.to_string().as_str()));
        assert_eq!(resp.ext("msgId").unwrap().len(), 32);
    }
    let v1 = env.send_v1("T1", 1, "v1-body", "TagB").await;
    assert_eq!(v1.code, 0, "{}", v1.remark_str());
    env.wait_dispatched("T1", 0, 2).await;
    env.wait_dispatched("T1", 1, 1).await;

    let mut pull = pull_request("G1", "T1", 0, 0, 4, "*", 0);
    pull.serialize_type = SerializeType::RocketMq;
    let resp = env.call(pull).await;
    assert_eq!(resp.code, 0);
    assert_eq!(resp.remark_str(), "FOUND");
    assert_eq!(
        ext_keys(&resp),
        [
            "maxOffset",
            "minOffset",
            "nextBeginOffset",
            "suggestWhichBrokerId"
        ]
        .into()
    );
    assert_eq!(resp.ext("nextBeginOffset"), Some("2"));
    let msgs = remoting::message::MessageExt::decode_all(&resp.body, true).unwrap();
    let bodies: Vec<&[u8]> = msgs.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, [&b"body-0"[..], &b"body-1"[..]]);
    assert_eq!(msgs[0].message.tags(), Some("TagA"));
    assert_eq!(
        msgs[0].store_host.to_string(),
        env.broker.as_ref().unwrap().broker_addr()
    );

    let q1 = env.pull_all("G1", "T1", 1, 0).await;
    assert_eq!(q1.len(), 1);
    assert_eq!(&q1[0].message.body[..], b"v1-body");

    // Nothing more: PULL_NOT_FOUND with the status as remark.
    let none = env.pull("G1", "T1", 0, 2, "*").await;
    assert_eq!(none.code, 19);
    assert_eq!(none.remark_str(), "OFFSET_OVERFLOW_ONE");
    env.stop().await;
}

#[tokio::test]
async fn batch_send() {
    let env = Env::start().await;
    env.create_topic("TB", 1).await;
    let msgs: Vec<Message> = (0..5)
        .map(|i| Message::new("TB", format!("m{i}")).with_tags("TagA"))
        .collect();
    let req = RemotingCommand::request(RequestCode::SEND_BATCH_MESSAGE)
        .with_ext("a", "PG")
        .with_ext("b", "TB")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_ext("m", true)
        .with_body(encode_batch(&msgs).unwrap());
    let resp = env.call(req).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert_eq!(resp.ext("msgId").unwrap().split(',').count(), 5);
    env.wait_dispatched("TB", 0, 5).await;
    let got = env.pull_all("G", "TB", 0, 0).await;
    let bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    env.stop().await;
}

#[tokio::test]
async fn long_polling_pull_returns_when_a_message_arrives() {
    let env = Arc::new(Env::start().await);
    env.create_topic("TL", 1).await;
    let e2 = env.clone();
    let started = Instant::now();
    let held = tokio::spawn(async move {
        // suspend (2) + subscription (4), 20 s suspend timeout.
        let req = pull_request("GL", "TL", 0, 0, 6, "*", 20_000);
        let resp = e2.call(req).await;
        (resp, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the pull was not held");
    let sent = env
        .send_v2("TL", 0, "wake", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(sent.code, 0);
    let (resp, took) = held.await.unwrap();
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert!(
        took < Duration::from_secs(10),
        "held pull answered after {took:?}"
    );

    // With no message, a held pull ends with PULL_NOT_FOUND after its timeout.
    let resp = env.call(pull_request("GL", "TL", 0, 1, 6, "*", 300)).await;
    assert_eq!(resp.code, 19);
    Arc::try_unwrap(env).ok().unwrap().stop().await;
}

#[tokio::test]
async fn offsets_and_messages_survive_a_restart() {
    let mut env = Env::start().await;
    env.create_topic("TO", 2).await;
    for i in 0..3 {
        let r = env
            .send_v2(
                "TO",
                1,
                &format!("m{i}"),
                &props("A", "k"),
                0,
                SerializeType::Json,
            )
            .await;
        assert_eq!(r.code, 0);
    }
    env.wait_dispatched("TO", 1, 3).await;
    let update = RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "GO")
        .with_ext("topic", "TO")
        .with_ext("queueId", 1)
        .with_ext("commitOffset", 2);
    assert_eq!(env.call(update.clone()).await.code, 0);
    env.restart_broker().await;
    let query = RemotingCommand::request(RequestCode::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "GO")
        .with_ext("topic", "TO")
        .with_ext("queueId", 1);
    let resp = env.call(query.clone()).await;
    assert_eq!(resp.code, 0);
    assert_eq!(resp.ext("offset"), Some("2"));
    // A group that never committed starts at 0 while the queue holds its first message.
    let fresh = env.call(query.with_ext("consumerGroup", "GNEW")).await;
    assert_eq!(fresh.ext("offset"), Some("0"));
    assert_eq!(env.pull_all("GO", "TO", 1, 0).await.len(), 3);
    let max = env
        .call(
            RemotingCommand::request(RequestCode::GET_MAX_OFFSET)
                .with_ext("topic", "TO")
                .with_ext("queueId", 1),
        )
        .await;
    assert_eq!(max.ext("offset"), Some("3"));
    env.stop().await;
}

#[tokio::test]
async fn retry_through_send_back_up_to_the_dlq() {
    let env = Env::start().await;
    env.create_topic("TR", 1).await;
    let sent = env
        .send_v2(
            "TR",
            0,
            "fail-me",
            &props("A", "key-r"),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(sent.code, 0);
    env.wait_dispatched("TR", 0, 1).await;
    let first = env.pull_all("GR", "TR", 0, 0).await.remove(0);

    // Unknown group, auto-creation off: 26.
    // (Auto-creation is on here, so a send-back creates the group as upstream does.)
    let resp = env.call(send_back(first.commit_log_offset, "GR", 2)).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    let retry = "%RETRY%GR";
    let r1 = env.wait_messages("GR", retry, 0, 1).await;
    assert_eq!(r1.len(), 1, "first retry never arrived");
    assert_eq!(r1[0].reconsume_times, 1);
    assert_eq!(r1[0].message.property("RETRY_TOPIC"), Some("TR"));
    assert_eq!(
        r1[0].message.property("ORIGIN_MESSAGE_ID"),
        Some(first.offset_msg_id.as_str())
    );
    assert_eq!(&r1[0].message.body[..], b"fail-me");

    let resp = env.call(send_back(r1[0].commit_log_offset, "GR", 2)).await;
    assert_eq!(resp.code, 0);
    let r2 = env.wait_messages("GR", retry, 0, 2).await;
    assert_eq!(r2.len(), 2, "second retry never arrived");
    assert_eq!(r2[1].reconsume_times, 2);

    // reconsumeTimes (2) >= maxReconsumeTimes (2): the DLQ.
    let resp = env.call(send_back(r2[1].commit_log_offset, "GR", 2)).await;
    assert_eq!(resp.code, 0);
    env.wait_dispatched("%DLQ%GR", 0, 1).await;
    let dlq = env.pull_all("GR", "%DLQ%GR", 0, 0).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].reconsume_times, 3);
    assert_eq!(
        dlq[0].message.property("ORIGIN_MESSAGE_ID"),
        Some(first.offset_msg_id.as_str())
    );
    let topics = env
        .call(RemotingCommand::request(RequestCode::GET_ALL_TOPIC_CONFIG))
        .await;
    let wrapper: remoting::protocol::TopicConfigSerializeWrapper =
        from_fastjson(&topics.body).unwrap();
    assert_eq!(wrapper.topic_config_table["%DLQ%GR"].write_queue_nums, 1);

    // A send-back of an offset with no message: SYSTEM_ERROR naming the offset.
    let bad = env.call(send_back(1 << 40, "GR", 2)).await;
    assert_eq!(bad.code, 1);
    assert!(bad.remark_str().contains("offset"), "{}", bad.remark_str());
    env.stop().await;
}

/// Forwards server-initiated requests (CHECK_TRANSACTION_STATE) to the test.
fn capture_handler() -> (
    Arc<dyn remoting::server::RequestHandler>,
    mpsc::UnboundedReceiver<RemotingCommand>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |_conn: Connection, req: RemotingCommand| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(req);
            None
        }
    };
    (Arc::new(handler), rx)
}

#[tokio::test]
async fn transaction_commit_rollback_and_check_back() {
    let (handler, mut checks) = capture_handler();
    let env = Env::start_with(|_| {}, Some(handler)).await;
    env.create_topic("TX", 1).await;
    let hb = HeartbeatData {
        client_id: "127.0.0.1@tx".into(),
        producer_data_set: vec![ProducerData {
            group_name: "PG_test".into(),
        }],
        ..Default::default()
    };
    let resp = env
        .call(RemotingCommand::request(RequestCode::HEART_BEAT).with_body(hb.encode().unwrap()))
        .await;
    assert_eq!(resp.code, 0);

    // Commit: the message appears in its topic only after END_TRANSACTION.
    let h1 = env
        .send_v2(
            "TX",
            0,
            "commit-me",
            &half_props("K1"),
            PREPARED,
            SerializeType::Json,
        )
        .await;
    assert_eq!(h1.code, 0, "{}", h1.remark_str());
    assert!(env.pull_all("G", "TX", 0, 0).await.is_empty());
    env.oneway(end_tx(&h1, h1.ext("queueOffset").unwrap(), true))
        .await;
    let got = env.wait_messages("G", "TX", 0, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.body[..], b"commit-me");

    // Rollback: never appears.
    let h2 = env
        .send_v2(
            "TX",
            0,
            "roll-me-back",
            &half_props("K2"),
            PREPARED,
            SerializeType::Json,
        )
        .await;
    env.oneway(end_tx(&h2, h2.ext("queueOffset").unwrap(), false))
        .await;

    // Unresolved: the broker asks the producer, which then commits.
    let h3 = env
        .send_v2(
            "TX",
            0,
            "check-me",
            &half_props("K3"),
            PREPARED,
            SerializeType::Json,
        )
        .await;
    assert_eq!(h3.code, 0);
    let check = tokio::time::timeout(Duration::from_secs(15), checks.recv())
        .await
        .expect("no CHECK_TRANSACTION_STATE")
        .unwrap();
    assert_eq!(check.code, RequestCode::CHECK_TRANSACTION_STATE);
    assert_eq!(check.ext("msgId"), Some("K3"));
    let checked = remoting::message::MessageExt::decode_all(&check.body, true).unwrap();
    assert_eq!(checked[0].message.topic, "TX");
    let commit = RemotingCommand::request(RequestCode::END_TRANSACTION)
        .with_ext("producerGroup", "PG_test")
        .with_ext(
            "tranStateTableOffset",
            check.ext("tranStateTableOffset").unwrap(),
        )
        .with_ext("commitLogOffset", check.ext("commitLogOffset").unwrap())
        .with_ext("commitOrRollback", MessageSysFlag::TRANSACTION_COMMIT_TYPE)
        .with_ext("fromTransactionCheck", true)
        .with_ext("msgId", "K3")
        .into_oneway();
    env.oneway(commit.clone()).await;
    let got = env.wait_messages("G", "TX", 0, 2).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, [&b"commit-me"[..], &b"check-me"[..]]);
    // A repeated answer commits nothing more (two-way here, to know it was handled).
    let mut again = commit;
    again.flag = 0;
    assert_eq!(env.call(again).await.code, 0);
    env.send_v2("TX", 0, "marker", &props("A", "m"), 0, SerializeType::Json)
        .await;
    let got = env.wait_messages("G", "TX", 0, 3).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(
        bodies,
        [&b"commit-me"[..], &b"check-me"[..], &b"marker"[..]]
    );
    env.stop().await;
}

#[tokio::test]
async fn tag_filtering() {
    let env = Env::start().await;
    env.create_topic("TT", 1).await;
    for tag in ["TagA", "TagB", "TagC", "TagA"] {
        let r = env.send_v1("TT", 0, tag, tag).await;
        assert_eq!(r.code, 0);
    }
    env.wait_dispatched("TT", 0, 4).await;
    let resp = env.pull("GT", "TT", 0, 0, "TagA || TagC").await;
    assert_eq!(resp.code, 0);
    let msgs = remoting::message::MessageExt::decode_all(&resp.body, true).unwrap();
    let tags: Vec<&str> = msgs.iter().map(|m| m.message.tags().unwrap()).collect();
    assert_eq!(tags, ["TagA", "TagC", "TagA"]);
    assert_eq!(resp.ext("nextBeginOffset"), Some("4"));
    let none = env.pull("GT", "TT", 0, 0, "TagZ").await;
    assert_eq!(none.code, 20, "{}", none.remark_str());
    env.stop().await;
}

/// The route of `topic` from the env's NameServer, once the broker has registered it.
async fn namesrv_route(env: &Env, topic: &str) -> TopicRouteData {
    let ns =
        NameServerAddr::parse(&env.namesrv.as_ref().unwrap().local_addr().to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req =
            RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
        let resp = env.client.invoke_namesrv(&ns, req, TIMEOUT).await.unwrap();
        if resp.code == 0 {
            return from_fastjson::<TopicRouteData>(&resp.body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "topic never reached the NameServer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn auto_created_topic_is_in_the_namesrv_route() {
    let env = Env::start().await;
    let resp = env
        .send_v2("AUTO_T", -1, "x", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    let route = namesrv_route(&env, "AUTO_T").await;
    assert_eq!(route.queue_datas[0].broker_name, BROKER_NAME);
    assert_eq!(route.queue_datas[0].write_queue_nums, 4);
    assert_eq!(
        route.broker_datas[0].broker_addrs[&0],
        env.broker.as_ref().unwrap().broker_addr()
    );
    env.stop().await;
}

#[tokio::test]
async fn read_only_broker_registers_read_only_queues() {
    let env = Env::start_with(|c| c.broker_permission = 4, None).await;
    env.create_topic("RO_T", 2).await;
    let route = namesrv_route(&env, "RO_T").await;
    assert_eq!(
        route.queue_datas[0].perm, 4,
        "the route must show read-only queues"
    );
    env.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_upstream_codes() {
    let env = Env::start().await;
    // Missing header fields: SYSTEM_ERROR naming the field.
    let resp = env
        .call(RemotingCommand::request(RequestCode::PULL_MESSAGE).with_ext("topic", "T"))
        .await;
    assert_eq!(resp.code, 1);
    assert!(
        resp.remark_str().contains("consumerGroup"),
        "{}",
        resp.remark_str()
    );
    let resp = env
        .call(
            RemotingCommand::request(RequestCode::SEND_MESSAGE)
                .with_ext("producerGroup", "P")
                .with_ext("topic", "T")
                .with_ext("defaultTopic", "TBW102")
                .with_ext("defaultTopicQueueNums", "four"),
        )
        .await;
    assert_eq!(resp.code, 1);
    assert!(resp.remark_str().contains("defaultTopicQueueNums"));
    // Bad topic name.
    let resp = env
        .send_v2(
            "bad topic!",
            0,
            "x",
            &props("A", "k"),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(resp.code, 1);
    // A topic that does not exist and cannot be created (default topic unknown).
    let req = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
        .with_ext("a", "P")
        .with_ext("b", "NOPE")
        .with_ext("c", "NO_DEFAULT")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0);
    assert_eq!(env.call(req).await.code, 17);
    // Pull of a topic that does not exist.
    assert_eq!(env.pull("G", "NOPE", 0, 0, "*").await.code, 17);
    // Pull without a subscription from either the header or a heartbeat.
    env.create_topic("TM", 1).await;
    let resp = env.call(pull_request("G", "TM", 0, 0, 0, "", 0)).await;
    assert_eq!(resp.code, 24);
    // Queue out of range.
    assert_eq!(env.pull("G", "TM", 5, 0, "*").await.code, 1);
    // Garbage heartbeat and lock bodies.
    let resp = env
        .call(RemotingCommand::request(RequestCode::HEART_BEAT).with_body(&b"{nope"[..]))
        .await;
    assert_eq!(resp.code, 1);
    let resp = env
        .call(RemotingCommand::request(RequestCode::LOCK_BATCH_MQ).with_body(&b"{\"mqSet\":7}"[..]))
        .await;
    assert_eq!(resp.code, 1);
    // Unknown request code.
    assert_eq!(env.call(RemotingCommand::request(9999)).await.code, 3);
    env.stop().await;
}

/// Whether `config/topics.json` under the broker's store holds `topic` now.
fn topic_on_disk(env: &Env, topic: &str) -> bool {
    let path = env.dir.path().join("store/config/topics.json");
    std::fs::read(path)
        .ok()
        .and_then(|data| {
            from_fastjson::<remoting::protocol::TopicConfigSerializeWrapper>(&data).ok()
        })
        .is_some_and(|w| w.topic_config_table.contains_key(topic))
}

/// A topic a write creates (auto-created on first send, the DLQ made by a send-back) is in
/// `topics.json` on disk before the message is stored: a crash cannot keep the message and lose
/// its topic. While the file cannot be written (here a directory stands where it goes) such a
/// write is refused with SYSTEM_ERROR naming it and stores nothing, and writes are answered
/// again once the file can be written.
#[tokio::test]
async fn a_topic_created_by_a_write_is_on_disk_before_its_message() {
    let env = Env::start().await;
    env.create_topic("TD", 1).await;
    let sent = env
        .send_v2("TD", 0, "fail-me", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(sent.code, 0, "{}", sent.remark_str());
    env.wait_dispatched("TD", 0, 1).await;
    let failed = env.pull_all("GD", "TD", 0, 0).await.remove(0);

    let file = env.dir.path().join("store/config/topics.json");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("blocker"), b"").unwrap();
    let refused = env
        .send_v2("NEW_T", -1, "x", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(refused.code, 1, "{}", refused.remark_str());
    assert!(
        refused.remark_str().contains("topics.json"),
        "{}",
        refused.remark_str()
    );
    // maxReconsumeTimes 0: straight to the DLQ, which this send-back creates.
    let refused = env.call(send_back(failed.commit_log_offset, "GD", 0)).await;
    assert_eq!(refused.code, 1, "{}", refused.remark_str());

    std::fs::remove_dir_all(&file).unwrap();
    // The file's writer retries by itself; the writes are answered once it has written.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let resp = env
            .send_v2("NEW_T", -1, "y", &props("A", "k"), 0, SerializeType::Json)
            .await;
        if resp.code == 0 {
            break resp;
        }
        assert!(Instant::now() < deadline, "{}", resp.remark_str());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(topic_on_disk(&env, "NEW_T"));
    // The refused write stored nothing: NEW_T holds only the answered one (dispatch follows
    // the CommitLog's order, so anything written before it is dispatched once it is).
    let at = |k: &str| answered.ext(k).and_then(|v| v.parse::<i64>().ok()).unwrap();
    env.wait_dispatched("NEW_T", at("queueId") as i32, at("queueOffset") + 1)
        .await;
    let mut bodies = Vec::new();
    for q in 0..4 {
        for m in env.pull_all("GD", "NEW_T", q, 0).await {
            bodies.push(String::from_utf8_lossy(&m.message.body).to_string());
        }
    }
    assert_eq!(bodies, ["y"]);
    let resp = env.call(send_back(failed.commit_log_offset, "GD", 0)).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert!(topic_on_disk(&env, "%DLQ%GD"));
    env.stop().await;
}
