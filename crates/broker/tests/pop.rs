//! POP consumption over real TCP: pop, ack, stale handles, change of invisible time, revive
//! through the POP retry topic up to the DLQ, FIFO queues under concurrent poppers, long
//! polling, and pop state across a broker restart. Receipt handles are built from the answer
//! exactly as upstream's Java client does (`MQClientAPIImpl.processPopResponse`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{props, Env, BROKER_NAME};
use remoting::headers::CommandHeader;
use remoting::message::{MessageConst, MessageExt};
use remoting::pop::{pop_handles, ExtraInfo, PopMessageResponseHeader};
use remoting::{RemotingCommand, RequestCode, ResponseCode, SerializeType};
use tokio::sync::Mutex;

/// A popped message and the handle a Java client would give it.
struct Popped {
    msg: MessageExt,
    handle: ExtraInfo,
}

fn pop_request(
    group: &str,
    topic: &str,
    queue: i32,
    max: i32,
    invisible_ms: i64,
    poll_ms: i64,
    order: bool,
) -> RemotingCommand {
    RemotingCommand::request(RequestCode::POP_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("maxMsgNums", max)
        .with_ext("invisibleTime", invisible_ms)
        .with_ext("pollTime", poll_ms)
        .with_ext("bornTime", remoting::message::now_millis())
        .with_ext("initMode", 0)
        .with_ext("expType", "TAG")
        .with_ext("exp", "*")
        .with_ext("order", order)
}

/// Each message with the handle a Java client builds from the answer.
fn handles(resp: &RemotingCommand) -> Vec<Popped> {
    if resp.code != ResponseCode::SUCCESS {
        return Vec::new();
    }
    let h = PopMessageResponseHeader::from_command(resp).unwrap();
    let msgs = MessageExt::decode_all(&resp.body, true).unwrap();
    let handles = pop_handles(&h, &msgs, BROKER_NAME).unwrap();
    msgs.into_iter()
        .zip(handles)
        .map(|(msg, handle)| Popped { msg, handle })
        .collect()
}

/// ACK_MESSAGE as the Java client sends it (topic: the real topic of the handle).
fn ack_request(group: &str, topic: &str, p: &Popped) -> RemotingCommand {
    let real = remoting::pop::real_topic(topic, group, p.handle.retry);
    RemotingCommand::request(RequestCode::ACK_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", real)
        .with_ext("queueId", p.handle.queue_id)
        .with_ext("extraInfo", p.handle.to_string())
        .with_ext("offset", p.handle.queue_offset.unwrap())
}

fn body(p: &Popped) -> String {
    String::from_utf8(p.msg.message.body.to_vec()).unwrap()
}

async fn send(env: &Env, topic: &str, queue: i32, text: &str) {
    let r = env
        .send_v2(
            topic,
            queue,
            text,
            &props("T", text),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
}

async fn create_group(env: &Env, group: &str, retry_max: i32) {
    let g =
        format!(r#"{{"groupName":"{group}","retryMaxTimes":{retry_max},"consumeEnable":true}}"#);
    let r = env
        .call(
            RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(g.into_bytes()),
        )
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
}

/// Pops (long polling up to 5 s per call) until `n` messages came or 15 s passed.
async fn pop_n(env: &Env, group: &str, topic: &str, n: usize, invisible_ms: i64) -> Vec<Popped> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        let r = env
            .call(pop_request(
                group,
                topic,
                -1,
                32,
                invisible_ms,
                2_000,
                false,
            ))
            .await;
        assert!(
            r.code == ResponseCode::SUCCESS || r.code == ResponseCode::POLLING_TIMEOUT,
            "pop answered {} {}",
            r.code,
            r.remark_str()
        );
        out.extend(handles(&r));
    }
    out
}

#[tokio::test]
async fn pop_ack_stale_handles_change_invisible_time_and_revive_to_the_dlq() {
    let env = Env::start_with(|c| c.revive_interval = 50, None).await;
    env.create_topic("PT", 2).await;
    create_group(&env, "PG", 1).await;
    for (q, text) in [(0, "a"), (0, "b"), (1, "c"), (1, "d")] {
        send(&env, "PT", q, text).await;
    }
    env.wait_dispatched("PT", 0, 2).await;
    env.wait_dispatched("PT", 1, 2).await;

    let mut got = pop_n(&env, "PG", "PT", 4, 400).await;
    got.sort_by_key(body);
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    // Nothing else is visible now.
    let r = env
        .call(pop_request("PG", "PT", -1, 32, 400, 0, false))
        .await;
    assert_eq!(r.code, ResponseCode::POLLING_TIMEOUT, "{}", r.remark_str());

    // Ack "a"; a second ack with the same handle is refused, not silently accepted.
    let ok = env.call(ack_request("PG", "PT", &got[0])).await;
    assert_eq!(ok.code, 0, "{}", ok.remark_str());
    let again = env.call(ack_request("PG", "PT", &got[0])).await;
    assert_eq!(again.code, ResponseCode::NO_MESSAGE);
    assert!(
        again.remark_str().contains("stale"),
        "{}",
        again.remark_str()
    );

    // "b" stays invisible for a minute under a new handle; the old handle is now stale.
    let change = RemotingCommand::request(RequestCode::CHANGE_MESSAGE_INVISIBLETIME)
        .with_ext("consumerGroup", "PG")
        .with_ext("topic", "PT")
        .with_ext("queueId", got[1].handle.queue_id)
        .with_ext("extraInfo", got[1].handle.to_string())
        .with_ext("offset", got[1].handle.queue_offset.unwrap())
        .with_ext("invisibleTime", 60_000);
    let changed = env.call(change).await;
    assert_eq!(changed.code, 0, "{}", changed.remark_str());
    let pop_time: i64 = changed.ext("popTime").unwrap().parse().unwrap();
    let b_new = Popped {
        msg: got[1].msg.clone(),
        handle: ExtraInfo {
            ck_queue_offset: got[1].handle.queue_offset.unwrap(),
            pop_time,
            invisible_time: 60_000,
            ..got[1].handle.clone()
        },
    };
    let old = env.call(ack_request("PG", "PT", &got[1])).await;
    assert_eq!(old.code, ResponseCode::NO_MESSAGE, "{}", old.remark_str());

    // "c" and "d" are not acked: they come back through %RETRY%PG_PT, under topic PT, with
    // the reconsume count raised and a POP_CK handle of the retry topic.
    let mut back = pop_n(&env, "PG", "PT", 2, 400).await;
    back.sort_by_key(body);
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), ["c", "d"]);
    for p in &back {
        assert_eq!(p.msg.message.topic, "PT");
        assert_eq!(p.msg.reconsume_times, 1);
        assert_eq!(p.handle.retry, '1');
        assert!(p
            .msg
            .message
            .property(MessageConst::PROPERTY_POP_CK)
            .is_some());
    }
    // Ack "c" through its retry handle; "d" is let go again: reconsume count 1 reached
    // retryMaxTimes 1, so it goes to %DLQ%PG.
    let ok = env.call(ack_request("PG", "PT", &back[0])).await;
    assert_eq!(ok.code, 0, "{}", ok.remark_str());
    let dlq = env.wait_messages("X", "%DLQ%PG", 0, 1).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        String::from_utf8(dlq[0].message.body.to_vec()).unwrap(),
        "d"
    );
    assert_eq!(
        dlq[0].message.property(MessageConst::PROPERTY_RETRY_TOPIC),
        Some("PT")
    );

    // "b" under its new handle is still in flight and acks fine; nothing else comes back.
    let ok = env.call(ack_request("PG", "PT", &b_new)).await;
    assert_eq!(ok.code, 0, "{}", ok.remark_str());
    let r = env
        .call(pop_request("PG", "PT", -1, 32, 400, 800, false))
        .await;
    assert_eq!(
        r.code,
        ResponseCode::POLLING_TIMEOUT,
        "{}",
        handles(&r).iter().map(body).collect::<Vec<_>>().join(",")
    );
    assert_eq!(
        env.wait_messages("X", "%DLQ%PG", 0, 2).await.len(),
        1,
        "only d in the DLQ"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_long_polling_pop_returns_when_a_message_arrives() {
    let env = Env::start().await;
    env.create_topic("LT", 1).await;
    let started = std::time::Instant::now();
    let waiter = {
        let client = env.client.clone();
        let addr = env.addr.clone();
        tokio::spawn(async move {
            client
                .invoke(
                    &addr,
                    pop_request("LG", "LT", -1, 8, 10_000, 8_000, false),
                    Duration::from_secs(20),
                )
                .await
                .unwrap()
        })
    };
    // Let the pop reach the broker and be held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&env, "LT", 0, "late").await;
    let r = waiter.await.unwrap();
    assert_eq!(r.code, 0, "{}", r.remark_str());
    assert_eq!(handles(&r).iter().map(body).collect::<Vec<_>>(), ["late"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "held until the timeout: {:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn fifo_queues_hand_out_one_batch_at_a_time_in_order_under_two_poppers() {
    let env = Env::start().await;
    env.create_topic("FT", 2).await;
    for i in 0..20 {
        send(&env, "FT", 0, &format!("0-{i:02}")).await;
        send(&env, "FT", 1, &format!("1-{i:02}")).await;
    }
    env.wait_dispatched("FT", 0, 20).await;
    env.wait_dispatched("FT", 1, 20).await;

    // While a batch is out, the queue gives nothing; after its invisible time the same
    // batch comes again with its attempt count.
    let first = env.call(pop_request("FG", "FT", 0, 2, 300, 0, true)).await;
    let first = handles(&first);
    assert_eq!(first.iter().map(body).collect::<Vec<_>>(), ["0-00", "0-01"]);
    let blocked = env.call(pop_request("FG", "FT", 0, 2, 300, 0, true)).await;
    assert_eq!(blocked.code, ResponseCode::POLLING_TIMEOUT);
    let again = env
        .call(pop_request("FG", "FT", 0, 2, 300, 3_000, true))
        .await;
    assert_eq!(again.code, 0, "{}", again.remark_str());
    let h = PopMessageResponseHeader::from_command(&again).unwrap();
    assert_eq!(
        h.order_count_info.as_deref(),
        Some("0 0 1"),
        "second attempt"
    );
    let again = handles(&again);
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["0-00", "0-01"]);
    // The first attempt's handles are stale now.
    assert_eq!(
        env.call(ack_request("FG", "FT", &first[0])).await.code,
        ResponseCode::NO_MESSAGE
    );
    for p in &again {
        assert_eq!(env.call(ack_request("FG", "FT", p)).await.code, 0);
    }

    // Two poppers on all queues: every message once, in queue order.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (client, addr, seen) = (env.client.clone(), env.addr.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if seen.lock().await.len() >= 38 {
                    return;
                }
                let r = client
                    .invoke(
                        &addr,
                        pop_request("FG", "FT", -1, 3, 10_000, 500, true),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                for p in handles(&r) {
                    seen.lock().await.push(body(&p));
                    let ack = client
                        .invoke(&addr, ack_request("FG", "FT", &p), Duration::from_secs(10))
                        .await
                        .unwrap();
                    assert_eq!(ack.code, 0, "{}", ack.remark_str());
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    let seen = seen.lock().await.clone();
    assert_eq!(seen.len(), 38, "{seen:?}");
    for q in ["0-", "1-"] {
        let order: Vec<&String> = seen.iter().filter(|s| s.starts_with(q)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "queue {q} out of order");
    }
    env.stop().await;
}

#[tokio::test]
async fn popped_messages_come_back_after_a_restart_and_acked_ones_do_not() {
    let mut env = Env::start_with(|c| c.revive_interval = 50, None).await;
    env.create_topic("RT", 1).await;
    for text in ["r0", "r1", "r2", "r3"] {
        send(&env, "RT", 0, text).await;
    }
    env.wait_dispatched("RT", 0, 4).await;
    let got = pop_n(&env, "RG", "RT", 4, 1_500).await;
    assert_eq!(got.len(), 4);
    for p in got
        .iter()
        .filter(|p| ["r0", "r2"].contains(&body(p).as_str()))
    {
        assert_eq!(env.call(ack_request("RG", "RT", p)).await.code, 0);
    }
    env.restart_broker().await;
    let mut back = pop_n(&env, "RG", "RT", 2, 60_000).await;
    back.sort_by_key(body);
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), ["r1", "r3"]);
    let r = env
        .call(pop_request("RG", "RT", -1, 32, 60_000, 2_000, false))
        .await;
    assert_eq!(
        r.code,
        ResponseCode::POLLING_TIMEOUT,
        "acked messages came back"
    );
    env.stop().await;
}

#[tokio::test]
async fn notification_says_whether_a_pop_would_find_something() {
    let env = Env::start().await;
    env.create_topic("NT", 1).await;
    let notify = |poll_ms: i64| {
        RemotingCommand::request(RequestCode::NOTIFICATION)
            .with_ext("consumerGroup", "NG")
            .with_ext("topic", "NT")
            .with_ext("queueId", -1)
            .with_ext("pollTime", poll_ms)
            .with_ext("bornTime", remoting::message::now_millis())
    };
    let empty = env.call(notify(0)).await;
    assert_eq!(empty.code, 0, "{}", empty.remark_str());
    assert_eq!(empty.ext("hasMsg"), Some("false"));
    // A held notification is answered when a message arrives.
    let waiter = {
        let (client, addr, req) = (env.client.clone(), env.addr.clone(), notify(8_000));
        tokio::spawn(async move {
            client
                .invoke(&addr, req, Duration::from_secs(20))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&env, "NT", 0, "n").await;
    let woken = waiter.await.unwrap();
    assert_eq!(woken.ext("hasMsg"), Some("true"));
    // Popped (invisible), nothing is left to notify about.
    assert_eq!(pop_n(&env, "NG", "NT", 1, 60_000).await.len(), 1);
    assert_eq!(env.call(notify(0)).await.ext("hasMsg"), Some("false"));
    env.stop().await;
}

#[tokio::test]
async fn polling_info_counts_the_pops_held_per_queue() {
    let env = Env::start().await;
    env.create_topic("PI", 2).await;
    let info = |queue: i32| {
        let env = &env;
        async move {
            let r = env
                .call(
                    RemotingCommand::request(RequestCode::POLLING_INFO)
                        .with_ext("consumerGroup", "PG")
                        .with_ext("topic", "PI")
                        .with_ext("queueId", queue),
                )
                .await;
            assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
            r.ext("pollingNum").unwrap().parse::<i32>().unwrap()
        }
    };
    assert_eq!((info(-1).await, info(0).await), (0, 0));
    // Two pops of every queue and one of queue 0, each for one message, held up to 20 s.
    let held: Vec<_> = [-1, -1, 0]
        .into_iter()
        .map(|queue| {
            let (client, addr) = (env.client.clone(), env.addr.clone());
            let req = pop_request("PG", "PI", queue, 1, 60_000, 20_000, false);
            tokio::spawn(async move {
                client
                    .invoke(&addr, req, Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (info(-1).await, info(0).await, info(1).await) != (2, 1, 0) {
        assert!(std::time::Instant::now() < deadline, "pops never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Three messages answer the three pops; nothing is held any more.
    for i in 0..3 {
        send(&env, "PI", 0, &format!("m{i}")).await;
    }
    for h in held {
        let r = h.await.unwrap();
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        assert_eq!(handles(&r).len(), 1);
    }
    assert_eq!((info(-1).await, info(0).await), (0, 0));
    // Upstream's refusals: an unknown topic, a queue beyond the topic's read queues.
    let ask = |topic: &str, queue: i32| {
        RemotingCommand::request(RequestCode::POLLING_INFO)
            .with_ext("consumerGroup", "PG")
            .with_ext("topic", topic)
            .with_ext("queueId", queue)
    };
    let r = env.call(ask("NoSuchTopic", 0)).await;
    assert_eq!(r.code, ResponseCode::TOPIC_NOT_EXIST, "{}", r.remark_str());
    let r = env.call(ask("PI", 2)).await;
    assert_eq!(
        r.code,
        ResponseCode::INVALID_PARAMETER,
        "{}",
        r.remark_str()
    );
    env.stop().await;
}
