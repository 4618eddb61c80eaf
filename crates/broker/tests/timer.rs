//! Timer messages over real TCP (upstream 5.x `TIMER_DELIVER_MS` / `TIMER_DELAY_SEC` /
//! `TIMER_DELAY_MS`): delivered at their time, never before, across a broker restart; a delay
//! past `timerMaxDelaySec` refused with upstream's code; delay levels unchanged.

mod common;

use std::collections::BTreeMap;

use broker::topic::TIMER_TOPIC;
use common::*;
use remoting::message::{now_millis, MessageConst, MessageExt, Properties};
use remoting::{ResponseCode, SerializeType};

const TOPIC: &str = "TimerT";
const GROUP: &str = "timer-group";

fn timer_props(key: &str, name: &str, value: i64) -> Properties {
    let mut p = props("TagT", key);
    p.insert(name, value.to_string());
    p
}

/// Checks what a delivered timer message carries and that it was stored (delivered) at or
/// after its time and at most `late_ms` after it; returns its key.
fn check_delivered(m: &MessageExt, late_ms: i64) -> String {
    let prop = |name: &str| m.message.property(name).map(str::to_string);
    let out: i64 = prop(MessageConst::PROPERTY_TIMER_OUT_MS)
        .and_then(|v| v.parse().ok())
        .expect("TIMER_OUT_MS");
    let key = prop(MessageConst::PROPERTY_KEYS).expect("KEYS");
    assert!(
        m.store_timestamp >= out,
        "{key} delivered {} ms early",
        out - m.store_timestamp
    );
    assert!(
        m.store_timestamp - out <= late_ms,
        "{key} delivered {} ms late",
        m.store_timestamp - out
    );
    let dequeued: i64 = prop(MessageConst::PROPERTY_TIMER_DEQUEUE_MS)
        .and_then(|v| v.parse().ok())
        .expect("TIMER_DEQUEUE_MS");
    assert!(dequeued >= out);
    assert!(prop(MessageConst::PROPERTY_TIMER_ENQUEUE_MS).is_some());
    assert_eq!(prop(MessageConst::PROPERTY_REAL_TOPIC), None);
    assert_eq!(prop(MessageConst::PROPERTY_REAL_QUEUE_ID), None);
    assert_eq!(m.message.topic, TOPIC);
    assert_eq!(m.queue_id, 1);
    key
}

#[tokio::test]
async fn timer_messages_at_1s_and_10s_across_a_restart_none_early_none_lost() {
    let mut env = Env::start().await;
    env.create_topic(TOPIC, 2).await;
    let now = now_millis();
    let sends = [
        ("1s-sec", MessageConst::PROPERTY_TIMER_DELAY_SEC, 1),
        ("1s-ms", MessageConst::PROPERTY_TIMER_DELAY_MS, 1_000),
        (
            "1s-at",
            MessageConst::PROPERTY_TIMER_DELIVER_MS,
            now + 1_000,
        ),
        ("10s-sec", MessageConst::PROPERTY_TIMER_DELAY_SEC, 10),
        ("10s-ms", MessageConst::PROPERTY_TIMER_DELAY_MS, 10_000),
        (
            "10s-at",
            MessageConst::PROPERTY_TIMER_DELIVER_MS,
            now + 10_000,
        ),
    ];
    for (key, name, value) in sends {
        let resp = env
            .send_v2(
                TOPIC,
                1,
                key,
                &timer_props(key, name, value),
                0,
                SerializeType::RocketMq,
            )
            .await;
        assert_eq!(resp.code, 0, "{key}: {}", resp.remark_str());
        assert_eq!(resp.ext("queueId"), Some("1"));
    }
    // Waiting in the timer topic, nothing in the real queue yet.
    env.wait_dispatched(TIMER_TOPIC, 0, 6).await;
    assert!(env.pull_all(GROUP, TOPIC, 1, 0).await.is_empty());

    let precision = env.broker.as_ref().unwrap().config().timer_precision() as i64;
    let late = precision + 2_000;
    let first = env.wait_messages(GROUP, TOPIC, 1, 3).await;
    let keys: Vec<String> = first.iter().map(|m| check_delivered(m, late)).collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("1s-")), "{keys:?}");

    // A restart between the 1 s and the 10 s deliveries.
    env.restart_broker().await;
    let all = env.wait_messages(GROUP, TOPIC, 1, 6).await;
    let mut seen = BTreeMap::new();
    for m in &all {
        *seen.entry(check_delivered(m, late)).or_insert(0) += 1;
    }
    let expected: BTreeMap<String, i32> =
        sends.iter().map(|(k, _, _)| (k.to_string(), 1)).collect();
    assert_eq!(seen, expected, "each delivered exactly once");
    env.stop().await;
}

#[tokio::test]
async fn too_long_or_disabled_timer_is_refused_with_upstreams_code() {
    let env = Env::start_with(|c| c.timer_max_delay_sec = 60, None).await;
    env.create_topic(TOPIC, 2).await;
    let send = |name: &'static str, value: i64| {
        let env = &env;
        async move {
            env.send_v2(
                TOPIC,
                0,
                "x",
                &timer_props("k", name, value),
                0,
                SerializeType::Json,
            )
            .await
        }
    };
    let resp = send(MessageConst::PROPERTY_TIMER_DELAY_SEC, 61).await;
    assert_eq!(resp.code, ResponseCode::MESSAGE_ILLEGAL);
    assert_eq!(
        resp.remark_str(),
        "timer message illegal, the delay time should not be bigger than the max delay 60000ms; \
         or if set del msg, the delay time should be bigger than the current time"
    );
    let resp = send(
        MessageConst::PROPERTY_TIMER_DELIVER_MS,
        now_millis() + 61_000,
    )
    .await;
    assert_eq!(resp.code, ResponseCode::MESSAGE_ILLEGAL);
    assert_eq!(
        send(MessageConst::PROPERTY_TIMER_DELAY_SEC, 60).await.code,
        0
    );
    // Nothing refused was stored; the timer topic is not a client's to write.
    env.wait_dispatched(TIMER_TOPIC, 0, 1).await;
    let resp = env
        .send_v2(
            TIMER_TOPIC,
            0,
            "x",
            &props("t", "k"),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(resp.code, ResponseCode::NO_PERMISSION);
    env.stop().await;

    let env = Env::start_with(|c| c.timer_wheel_enable = false, None).await;
    env.create_topic(TOPIC, 2).await;
    let resp = env
        .send_v2(
            TOPIC,
            0,
            "x",
            &timer_props("k", MessageConst::PROPERTY_TIMER_DELAY_SEC, 5),
            0,
            SerializeType::Json,
        )
        .await;
    assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR);
    assert_eq!(
        resp.remark_str(),
        "accurate timer message is not enabled, timerWheelEnable is false"
    );
    env.stop().await;
}

#[tokio::test]
async fn delay_levels_still_work_and_win_over_timer_properties() {
    let env = Env::start().await;
    env.create_topic(TOPIC, 2).await;
    // Level 1 is 100 ms in the test config; the timer property (an hour) is dropped.
    let mut p = timer_props("lvl", MessageConst::PROPERTY_TIMER_DELAY_SEC, 3_600);
    p.insert(MessageConst::PROPERTY_DELAY_TIME_LEVEL, "1");
    let resp = env
        .send_v2(TOPIC, 0, "lvl", &p, 0, SerializeType::Json)
        .await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    let got = env.wait_messages(GROUP, TOPIC, 0, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]
            .message
            .property(MessageConst::PROPERTY_TIMER_DELAY_SEC),
        None
    );
    assert_eq!(
        got[0].message.property(MessageConst::PROPERTY_TIMER_OUT_MS),
        None
    );
    assert_eq!(env.pull_all(GROUP, TIMER_TOPIC, 0, 0).await.len(), 0);
    env.stop().await;
}
