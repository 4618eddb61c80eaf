//! Every other NameServer request over real TCP: unsupported codes, bad frames, route JSON
//! dialects, KV config, topics, cluster info and configuration.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{read_frame, route_request, send_frame, start, Broker};
use remoting::headers::{
    CommandHeader, GetKVConfigResponseHeader, QueryDataVersionResponseHeader,
    WipeWritePermOfBrokerResponseHeader,
};
use remoting::protocol::{
    from_fastjson, parse_fastjson, ClusterInfo, DataVersion, GetBrokerMemberGroupResponseBody,
    KVTable, TopicList,
};
use remoting::{RemotingCommand, RequestCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_broker_request_gets_request_code_not_supported_at_once_and_is_counted() {
    let mut ts = start(&[]).await;
    let mut stream = TcpStream::connect(ts.server.local_addr()).await.unwrap();
    let mut buf = BytesMut::new();
    let send_back = RemotingCommand::request(RequestCode::CONSUMER_SEND_MSG_BACK)
        .with_ext("group", "G")
        .with_ext("offset", "1234");
    let started = Instant::now();
    send_frame(&mut stream, &send_back).await;
    let resp = read_frame(&mut stream, &mut buf).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(resp.code, 3);
    assert_eq!(resp.opaque, send_back.opaque);
    assert!(resp.is_response());
    assert!(resp.remark_str().contains("36"), "{}", resp.remark_str());
    assert!(
        resp.remark_str().contains("NameServer"),
        "{}",
        resp.remark_str()
    );

    // Oneway: counted, not answered; the connection keeps working.
    send_frame(&mut stream, &send_back.clone().into_oneway()).await;
    send_frame(&mut stream, &RemotingCommand::request(9999)).await;
    let resp = read_frame(&mut stream, &mut buf).await.unwrap();
    assert_eq!(resp.code, 3);
    let counts = ts.server.unsupported_request_counts();
    assert_eq!(counts.get(&36), Some(&2));
    assert_eq!(counts.get(&9999), Some(&1));

    // The same counts on `/metrics`, and the answered one in the latency histogram.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ts.server.serve_metrics(listener).unwrap();
    let scrape = testkit::metrics::scrape(addr).await;
    let refused = |code: &str| {
        scrape.value(
            "apogee_namesrv_refused_requests_total",
            &[("node_type", "namesrv"), ("request_code", code)],
        )
    };
    assert_eq!(refused("36"), Some(2.0));
    assert_eq!(refused("9999"), Some(1.0));
    assert_eq!(
        scrape.value(
            "rocketmq_rpc_latency_count",
            &[("request_code", "36"), ("response_code", "3")]
        ),
        Some(1.0)
    );
    ts.stop().await;
}

#[tokio::test]
async fn garbage_on_one_connection_does_not_disturb_another() {
    let ts = start(&[("maxFrameSize", "65536")]).await;
    let mut good = TcpStream::connect(ts.server.local_addr()).await.unwrap();
    let mut good_buf = BytesMut::new();
    for garbage in [
        &b"\x00\x00\x00\x08\x07\x00\x00\x02{}garbage"[..],
        b"\x00\x00\x00\x06\x00\x00\x00\x09{}",
        b"\x7f\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut bad = TcpStream::connect(ts.server.local_addr()).await.unwrap();
        bad.write_all(garbage).await.unwrap();
        let mut bad_buf = BytesMut::new();
        assert!(
            read_frame(&mut bad, &mut bad_buf).await.is_none(),
            "bad connection closed"
        );
        send_frame(&mut good, &route_request("T", 474)).await;
        let resp = read_frame(&mut good, &mut good_buf).await.unwrap();
        assert_eq!(resp.code, 17);
    }
    ts.stop().await;
}

#[tokio::test]
async fn route_json_keys_depend_on_the_client_version() {
    let ts = start(&[]).await;
    let broker = Broker::new("b1", 0, "127.0.0.1:10911");
    ts.call(broker.register(&[("T", 6)], 1)).await;
    for (version, quoted) in [
        (63, false),
        (121, false),
        (400, false),
        (401, true),
        (409, true),
        (474, true),
    ] {
        let resp = ts.call(route_request("T", version)).await;
        assert_eq!(resp.code, 0);
        let text = std::str::from_utf8(&resp.body).unwrap();
        let expected_keys = if quoted {
            r#"{"0":"127.0.0.1:10911"}"#
        } else {
            r#"{0:"127.0.0.1:10911"}"#
        };
        assert!(text.contains(expected_keys), "version {version}: {text}");
        assert!(text.contains(r#""enableActingMaster":false"#), "{text}");
        assert_eq!(
            quoted,
            serde_json::from_str::<serde_json::Value>(text).is_ok()
        );
        let value = parse_fastjson(&resp.body).unwrap();
        assert_eq!(
            value["brokerDatas"][0]["brokerAddrs"]["0"],
            "127.0.0.1:10911"
        );
    }
    // acceptStandardJsonOnly asks for quoted keys whatever the version.
    let req = route_request("T", 63).with_ext("acceptStandardJsonOnly", "true");
    let resp = ts.call(req).await;
    assert!(serde_json::from_slice::<serde_json::Value>(&resp.body).is_ok());
    // Cluster info is always written with bare keys.
    let resp = ts
        .call(RemotingCommand::request(
            RequestCode::GET_BROKER_CLUSTER_INFO,
        ))
        .await;
    let text = std::str::from_utf8(&resp.body).unwrap();
    assert_eq!(
        text,
        r#"{"brokerAddrTable":{"b1":{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"b1","cluster":"C","enableActingMaster":false}},"clusterAddrTable":{"C":["b1"]}}"#
    );
    let info: ClusterInfo = from_fastjson(&resp.body).unwrap();
    assert_eq!(
        info.broker_addr_table["b1"].broker_addrs[&0],
        "127.0.0.1:10911"
    );
    ts.stop().await;
}

#[tokio::test]
async fn missing_topic_is_topic_not_exist() {
    let ts = start(&[]).await;
    let resp = ts.call(route_request("Nope", 474)).await;
    assert_eq!(resp.code, 17);
    assert!(resp.body.is_empty());
    assert!(
        resp.remark_str()
            .starts_with("No topic route info in name server for the topic: Nope"),
        "{}",
        resp.remark_str()
    );
    let resp = ts
        .call(RemotingCommand::request(
            RequestCode::GET_ROUTEINFO_BY_TOPIC,
        ))
        .await;
    assert_eq!(resp.code, 1, "missing topic header");
    ts.stop().await;
}

fn kv(code: i32, ns: &str, key: Option<&str>, value: Option<&str>) -> RemotingCommand {
    let mut req = RemotingCommand::request(code).with_ext("namespace", ns);
    if let Some(key) = key {
        req = req.with_ext("key", key);
    }
    if let Some(value) = value {
        req = req.with_ext("value", value);
    }
    req
}

#[tokio::test]
async fn kv_config_round_trip_survives_a_restart() {
    let ts = start(&[]).await;
    let put = kv(
        RequestCode::PUT_KV_CONFIG,
        "ORDER_TOPIC_CONFIG",
        Some("T"),
        Some("b1:4"),
    );
    assert_eq!(ts.call(put).await.code, 0);
    let put = kv(RequestCode::PUT_KV_CONFIG, "ns", Some("k"), Some("v"));
    assert_eq!(ts.call(put).await.code, 0);

    let resp = ts
        .call(kv(RequestCode::GET_KV_CONFIG, "ns", Some("k"), None))
        .await;
    assert_eq!(resp.code, 0);
    assert_eq!(
        GetKVConfigResponseHeader::from_command(&resp)
            .unwrap()
            .value
            .as_deref(),
        Some("v")
    );
    let resp = ts
        .call(kv(RequestCode::GET_KVLIST_BY_NAMESPACE, "ns", None, None))
        .await;
    assert_eq!(
        from_fastjson::<KVTable>(&resp.body).unwrap().table["k"],
        "v"
    );

    // A registering broker gets the ORDER_TOPIC_CONFIG table back.
    let broker = Broker::new("b1", 0, "127.0.0.1:10911");
    let resp = ts.call(broker.register(&[("T", 6)], 1)).await;
    assert_eq!(
        from_fastjson::<KVTable>(&resp.body).unwrap().table["T"],
        "b1:4"
    );

    let del = kv(RequestCode::DELETE_KV_CONFIG, "ns", Some("k"), None);
    assert_eq!(ts.call(del).await.code, 0);
    let resp = ts
        .call(kv(RequestCode::GET_KV_CONFIG, "ns", Some("k"), None))
        .await;
    assert_eq!(resp.code, 22);
    assert_eq!(resp.remark_str(), "No config item, Namespace: ns Key: k");
    let resp = ts
        .call(kv(RequestCode::GET_KVLIST_BY_NAMESPACE, "none", None, None))
        .await;
    assert_eq!(resp.code, 22);

    // Restart on the same file.
    let kv_path = ts.dir.path().join("kvConfig.json");
    let dir = ts.stop().await;
    let ts = common::start_in(dir, &kv_path, &[("orderMessageEnable", "true")]).await;
    let resp = ts
        .call(kv(
            RequestCode::GET_KV_CONFIG,
            "ORDER_TOPIC_CONFIG",
            Some("T"),
            None,
        ))
        .await;
    assert_eq!(
        GetKVConfigResponseHeader::from_command(&resp)
            .unwrap()
            .value
            .as_deref(),
        Some("b1:4")
    );
    // With orderMessageEnable the route carries the order config.
    ts.call(broker.register(&[("T", 6)], 1)).await;
    assert_eq!(
        ts.route("T").await.unwrap().order_topic_conf.as_deref(),
        Some("b1:4")
    );
    ts.stop().await;
}

async fn topic_list(ts: &common::TestServer, req: RemotingCommand) -> Vec<String> {
    let resp = ts.call(req).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    from_fastjson::<TopicList>(&resp.body)
        .unwrap()
        .topic_list
        .into_iter()
        .collect()
}

#[tokio::test]
async fn topics_cluster_info_delete_and_permissions() {
    let ts = start(&[]).await;
    let b1 = Broker::new("b1", 0, "127.0.0.1:10911");
    let mut b2 = Broker::new("b2", 0, "127.0.0.1:10912");
    b2.cluster = "D".into();
    ts.call(b1.register(&[("T", 6), ("U", 6)], 1)).await;
    ts.call(b2.register(&[("T", 6), ("V", 6)], 1)).await;

    let by_cluster = |c: &str| {
        RemotingCommand::request(RequestCode::GET_TOPICS_BY_CLUSTER).with_ext("cluster", c)
    };
    assert_eq!(topic_list(&ts, by_cluster("C")).await, ["T", "U", "b1"]);
    assert_eq!(topic_list(&ts, by_cluster("D")).await, ["T", "V", "b2"]);
    let all = RemotingCommand::request(RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
    assert_eq!(topic_list(&ts, all).await, ["T", "U", "V", "b1", "b2"]);
    let sys = RemotingCommand::request(RequestCode::GET_SYSTEM_TOPIC_LIST_FROM_NS);
    assert_eq!(topic_list(&ts, sys).await, ["C", "D", "b1", "b2"]);
    let unit = RemotingCommand::request(RequestCode::GET_UNIT_TOPIC_LIST);
    assert!(topic_list(&ts, unit).await.is_empty());

    let resp = ts
        .call(RemotingCommand::request(
            RequestCode::GET_BROKER_CLUSTER_INFO,
        ))
        .await;
    let info: ClusterInfo = from_fastjson(&resp.body).unwrap();
    assert_eq!(
        info.cluster_addr_table["C"].iter().collect::<Vec<_>>(),
        ["b1"]
    );
    assert_eq!(info.broker_addr_table["b2"].cluster, "D");

    // Delete T from cluster C only, then everywhere.
    let delete = RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_NAMESRV)
        .with_ext("topic", "T")
        .with_ext("clusterName", "C");
    assert_eq!(ts.call(delete).await.code, 0);
    let r = ts.route("T").await.unwrap();
    assert_eq!(
        r.broker_datas
            .iter()
            .map(|b| b.broker_name.as_str())
            .collect::<Vec<_>>(),
        ["b2"]
    );
    let delete =
        RemotingCommand::request(RequestCode::DELETE_TOPIC_IN_NAMESRV).with_ext("topic", "T");
    assert_eq!(ts.call(delete).await.code, 0);
    assert!(ts.route("T").await.is_none());

    // Wipe and restore write permission of b1.
    let wipe = RemotingCommand::request(RequestCode::WIPE_WRITE_PERM_OF_BROKER)
        .with_ext("brokerName", "b1");
    let resp = ts.call(wipe).await;
    assert_eq!(
        WipeWritePermOfBrokerResponseHeader::from_command(&resp)
            .unwrap()
            .wipe_topic_count,
        2
    );
    assert_eq!(common::perms(&ts.route("U").await.unwrap()), [4]);
    let add = RemotingCommand::request(RequestCode::ADD_WRITE_PERM_OF_BROKER)
        .with_ext("brokerName", "b1");
    let resp = ts.call(add).await;
    assert_eq!(resp.ext("addTopicCount"), Some("2"));
    assert_eq!(common::perms(&ts.route("U").await.unwrap()), [6]);

    // Register a topic route directly.
    let body = r#"{"queueDatas":[{"brokerName":"b2","perm":6,"readQueueNums":2,"writeQueueNums":2,"topicSysFlag":0}]}"#;
    let register = RemotingCommand::request(RequestCode::REGISTER_TOPIC_IN_NAMESRV)
        .with_ext("topic", "W")
        .with_body(body);
    assert_eq!(ts.call(register).await.code, 0);
    assert_eq!(
        ts.route("W").await.unwrap().queue_datas[0].read_queue_nums,
        2
    );

    // Member group.
    let member = RemotingCommand::request(RequestCode::GET_BROKER_MEMBER_GROUP)
        .with_ext("clusterName", "C")
        .with_ext("brokerName", "b1");
    let resp = ts.call(member).await;
    assert!(std::str::from_utf8(&resp.body)
        .unwrap()
        .contains(r#"{0:"127.0.0.1:10911"}"#));
    let group: GetBrokerMemberGroupResponseBody = from_fastjson(&resp.body).unwrap();
    assert_eq!(
        group.broker_member_group.broker_addrs[&0],
        "127.0.0.1:10911"
    );
    ts.stop().await;
}

#[tokio::test]
async fn heartbeat_and_data_version() {
    let ts = start(&[]).await;
    let b1 = Broker::new("b1", 0, "127.0.0.1:10911");
    ts.call(b1.register(&[("T", 6)], 3)).await;
    let query = |counter: i64| {
        let version = DataVersion {
            counter,
            state_version: 0,
            timestamp: 1_700_000_000_000 + counter,
        };
        RemotingCommand::request(RequestCode::QUERY_DATA_VERSION)
            .with_ext("brokerName", "b1")
            .with_ext("brokerAddr", "127.0.0.1:10911")
            .with_ext("clusterName", "C")
            .with_ext("brokerId", 0)
            .with_body(serde_json::to_vec(&version).unwrap())
    };
    let resp = ts.call(query(3)).await;
    assert!(
        !QueryDataVersionResponseHeader::from_command(&resp)
            .unwrap()
            .changed
    );
    assert_eq!(from_fastjson::<DataVersion>(&resp.body).unwrap().counter, 3);
    let resp = ts.call(query(4)).await;
    assert!(
        QueryDataVersionResponseHeader::from_command(&resp)
            .unwrap()
            .changed
    );

    let heartbeat = RemotingCommand::request(RequestCode::BROKER_HEARTBEAT)
        .with_ext("clusterName", "C")
        .with_ext("brokerAddr", "127.0.0.1:10911")
        .with_ext("brokerName", "b1");
    let info = namesrv::route::BrokerAddrInfo::new("C", "127.0.0.1:10911");
    let last_update = || {
        ts.server
            .route_info()
            .broker_live_info(&info)
            .unwrap()
            .last_update
    };
    let before = last_update();
    assert_eq!(ts.call(heartbeat).await.code, 0);
    assert!(last_update() > before);
    ts.stop().await;
}

#[tokio::test]
async fn namesrv_config_get_and_update() {
    let ts = start(&[]).await;
    let get = || RemotingCommand::request(RequestCode::GET_NAMESRV_CONFIG);
    let resp = ts.call(get()).await;
    let props = namesrv::parse_properties(std::str::from_utf8(&resp.body).unwrap());
    assert_eq!(props["enableTopicList"], "true");
    assert_eq!(props["listenPort"], "0");

    let update = |body: &str| {
        RemotingCommand::request(RequestCode::UPDATE_NAMESRV_CONFIG).with_body(body.to_string())
    };
    let resp = ts.call(update("kvConfigPath=/etc/x\n")).await;
    assert_eq!(
        (resp.code, resp.remark_str()),
        (16, "Can not update config in black list.")
    );
    let resp = ts.call(update("enableTopicList=maybe\n")).await;
    assert_eq!(resp.code, 1);
    assert!(resp.remark_str().contains("enableTopicList"));
    let resp = ts.call(update("enableTopicList=false\n")).await;
    assert_eq!(resp.code, 0);
    assert!(!ts.server.config().enable_topic_list);
    let by_cluster =
        RemotingCommand::request(RequestCode::GET_TOPICS_BY_CLUSTER).with_ext("cluster", "C");
    let resp = ts.call(by_cluster).await;
    assert_eq!((resp.code, resp.remark_str()), (1, "disable"));
    ts.stop().await;
}
