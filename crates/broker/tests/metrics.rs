//! `GET /metrics` after known traffic: exact counter values under upstream's names and labels,
//! read back through a real Prometheus text parser.

mod common;

use common::*;
use remoting::SerializeType;

#[tokio::test]
async fn scrape_counts_known_traffic_exactly() {
    let mut env = Env::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = env
        .broker
        .as_mut()
        .unwrap()
        .serve_metrics(listener)
        .unwrap();
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
