//! `GET /metrics` after known traffic: exact counter values under upstream's names and labels,
//! read back through a real Prometheus text parser.

mod common;

use common::*;
use remoting::message::MessageExt;
use remoting::{RemotingCommand, RequestCode, SerializeType};
use store::FlushDiskType;

/// Serves the broker's `/metrics` on an ephemeral port; returns its address.
async fn serve_metrics(env: &mut Env) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    env.broker
        .as_mut()
        .unwrap()
        .serve_metrics(listener)
        .unwrap()
}

#[tokio::test]
async fn scrape_counts_known_traffic_exactly() {
    let mut env = Env::start().await;
    let addr = serve_metrics(&mut env).await;
    env.create_topic("MT", 1).await;
    for i in 0..5 {
        let r = env
            .send_v2(
                "MT",
                0,
                &format!("body-{i}"),
                &props("A", "k"),
                0,
                SerializeType::Json,
            )
            .await;
        assert_eq!(r.code, 0, "{}", r.remark_str());
    }
    env.wait_dispatched("MT", 0, 5).await;
    let got = env.pull_all("G1", "MT", 0, 0).await;
    assert_eq!(got.len(), 5);
    // Straight to the DLQ: no reconsume allowed.
    let r = env.call(send_back(got[0].commit_log_offset, "G1", 0)).await;
    assert_eq!(r.code, 0, "{}", r.remark_str());

    let s = testkit::metrics::scrape(addr).await;
    let send = [
        ("cluster", CLUSTER),
        ("node_type", "broker"),
        ("node_id", BROKER_NAME),
        ("topic", "MT"),
        ("message_type", "Normal"),
        ("is_system", "false"),
    ];
    assert_eq!(s.value("rocketmq_messages_in_total", &send), Some(5.0));
    let pulled = [("topic", "MT"), ("consumer_group", "G1")];
    assert_eq!(s.value("rocketmq_messages_out_total", &pulled), Some(5.0));
    let bytes_in = s.value("rocketmq_throughput_in_total", &send).unwrap();
    let record_bytes: usize = got.iter().map(|m| m.store_size as usize).sum();
    assert_eq!(bytes_in, record_bytes as f64, "stored bytes");
    assert_eq!(
        s.value("rocketmq_throughput_out_total", &pulled),
        Some(bytes_in),
        "the same records went out"
    );
    assert_eq!(
        s.value(
            "rocketmq_send_to_dlq_messages_total",
            &[("consumer_group", "G1"), ("topic", "MT")]
        ),
        Some(1.0)
    );
    // The DLQ write itself is not a client send.
    assert_eq!(
        s.value("rocketmq_messages_in_total", &[("topic", "%DLQ%G1")]),
        None
    );
    assert_eq!(
        s.value(
            "rocketmq_rpc_latency_count",
            &[("request_code", "310"), ("response_code", "0")]
        ),
        Some(5.0)
    );
    assert_eq!(s.value("rocketmq_broker_permission", &[]), Some(6.0));
    assert!(s.value("rocketmq_topic_number", &[]).unwrap() >= 2.0);
    assert_eq!(
        s.value(
            "rocketmq_consumer_lag_messages",
            &[("topic", "MT"), ("consumer_group", "G1")]
        ),
        None,
        "no offset committed yet, so no lag series"
    );
    assert_eq!(s.value("apogee_acting_master", &[]), Some(0.0));
    env.stop().await;
}

/// Scrapes until `check` holds for the scrape (gauges follow the broker's state, which some
/// requests change a little after they are answered), failing after 10 s.
async fn scrape_until(
    addr: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&testkit::metrics::Scrape) -> bool,
) -> testkit::metrics::Scrape {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = testkit::metrics::scrape(addr).await;
        if check(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn consumer_and_transaction_gauges_follow_the_broker() {
    // SYNC_FLUSH: every send below is answered after a flush of its own.
    let mut env = Env::start_with(|c| c.flush_disk_type = FlushDiskType::SyncFlush, None).await;
    let addr = serve_metrics(&mut env).await;
    env.create_topic("LT", 1).await;
    let before_send = remoting::message::now_millis();
    for i in 0..10 {
        let r = env
            .send_v2(
                "LT",
                0,
                &format!("m{i}"),
                &props("A", "k"),
                0,
                SerializeType::Json,
            )
            .await;
        assert_eq!(r.code, 0, "{}", r.remark_str());
    }
    env.wait_dispatched("LT", 0, 10).await;
    let commit = |offset: i64| {
        RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "LG")
            .with_ext("topic", "LT")
            .with_ext("queueId", 0)
            .with_ext("commitOffset", offset)
    };
    assert_eq!(env.call(commit(2)).await.code, 0);
    // A pull of 3 from offset 2: 3 in flight, 5 not pulled yet, 8 behind.
    let pull = pull_request("LG", "LT", 0, 2, 4, "*", 0).with_ext("maxMsgNums", 3);
    let resp = env.call(pull).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert_eq!(MessageExt::decode_all(&resp.body, true).unwrap().len(), 3);

    let series = [
        ("topic", "LT"),
        ("consumer_group", "LG"),
        ("is_retry", "false"),
    ];
    let s = testkit::metrics::scrape(addr).await;
    assert_eq!(
        s.value("rocketmq_consumer_lag_messages", &series),
        Some(8.0)
    );
    assert_eq!(
        s.value("rocketmq_consumer_inflight_messages", &series),
        Some(3.0)
    );
    assert_eq!(
        s.value("rocketmq_consumer_ready_messages", &series),
        Some(5.0)
    );
    let latency = s.value("rocketmq_consumer_lag_latency", &series).unwrap();
    let bound = (remoting::message::now_millis() - before_send) as f64;
    assert!(
        (0.0..=bound).contains(&latency),
        "lag latency {latency} ms, sent {bound} ms ago"
    );
    // Ten sends one after the other, each waiting for its flush: ten flushes at least.
    assert!(s.value("apogee_storage_flush_latency_count", &[]).unwrap() >= 10.0);
    assert!(s.value("apogee_storage_flush_latency_sum", &[]).unwrap() > 0.0);

    // Caught up: nothing behind, in flight or ready, no latency.
    assert_eq!(env.call(commit(10)).await.code, 0);
    let s = testkit::metrics::scrape(addr).await;
    for name in [
        "rocketmq_consumer_lag_messages",
        "rocketmq_consumer_inflight_messages",
        "rocketmq_consumer_ready_messages",
        "rocketmq_consumer_lag_latency",
    ] {
        assert_eq!(s.value(name, &series), Some(0.0), "{name}");
    }

    // Two halves of LT: both pending; one committed, one left.
    let h1 = env
        .send_v2(
            "LT",
            0,
            "h1",
            &half_props("H1"),
            PREPARED,
            SerializeType::Json,
        )
        .await;
    let h2 = env
        .send_v2(
            "LT",
            0,
            "h2",
            &half_props("H2"),
            PREPARED,
            SerializeType::Json,
        )
        .await;
    assert_eq!((h1.code, h2.code), (0, 0));
    let half = [("topic", "LT")];
    scrape_until(addr, "two pending halves", |s| {
        s.value("rocketmq_half_messages", &half) == Some(2.0)
    })
    .await;
    env.oneway(end_tx(&h1, h1.ext("queueOffset").unwrap(), true))
        .await;
    scrape_until(addr, "one pending half after a commit", |s| {
        s.value("rocketmq_half_messages", &half) == Some(1.0)
    })
    .await;
    env.stop().await;
}
