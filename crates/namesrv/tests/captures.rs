//! Replays of real 4.9.8 traffic (shared/captures): the broker's own REGISTER_BROKER and
//! UNREGISTER_BROKER frames, byte for byte, then the route queries of every captured client;
//! our answers must carry the bodies the 4.9.8 NameServer sent (plus `enableActingMaster`).

mod common;

use bytes::BytesMut;
use common::{b64, capture, read_frame, start};
use remoting::protocol::{from_fastjson, RegisterBrokerBody};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends one captured frame and, for a two-way request, checks and returns the answer.
async fn replay(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    line: &Value,
) -> Option<remoting::RemotingCommand> {
    stream.write_all(&b64(&line["frame_b64"])).await.unwrap();
    if line["oneway"].as_bool() == Some(true) {
        return None;
    }
    let resp = read_frame(stream, buf).await.expect("an answer");
    assert_eq!(i64::from(resp.opaque), line["opaque"].as_i64().unwrap());
    Some(resp)
}

#[tokio::test]
async fn broker_4_9_8_registration_frames_replayed() {
    let Some(lines) = capture("broker-4.9.8-to-namesrv.jsonl") else {
        return;
    };
    let ts = start(&[]).await;
    let mut stream = TcpStream::connect(ts.server.local_addr()).await.unwrap();
    let mut buf = BytesMut::new();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["dir"] == "c2s").collect();
    let (unregister, registers) = requests.split_last().unwrap();
    assert_eq!(unregister["code"], 104);
    for line in registers {
        assert_eq!(line["code"], 103);
        // The body parses on its own too.
        let body: RegisterBrokerBody = from_fastjson(&b64(&line["body_b64"])).unwrap();
        assert!(!body
            .topic_config_serialize_wrapper
            .topic_config_table
            .is_empty());
        if let Some(resp) = replay(&mut stream, &mut buf, line).await {
            // As captured: code 0, no ext fields, no body.
            assert_eq!(resp.code, 0, "{}", resp.remark_str());
            assert!(resp.ext_fields.is_empty(), "{:?}", resp.ext_fields);
            assert!(resp.body.is_empty());
        }
    }
    let last_full: RegisterBrokerBody =
        from_fastjson(&b64(&registers.last().unwrap()["body_b64"])).unwrap();
    {
        let routes = ts.server.route_info();
        let info = routes.cluster_info();
        assert_eq!(
            info.broker_addr_table["broker-ref"].broker_addrs[&0],
            "127.0.0.1:10911"
        );
        assert_eq!(info.cluster_addr_table["RefCluster"].len(), 1);
        for topic in last_full
            .topic_config_serialize_wrapper
            .topic_config_table
            .keys()
        {
            let route = routes.pickup_topic_route_data(topic).expect(topic);
            assert_eq!(route.broker_datas[0].broker_name, "broker-ref");
        }
        let tbw = routes.pickup_topic_route_data("TBW102").unwrap();
        assert_eq!(
            (tbw.queue_datas[0].perm, tbw.queue_datas[0].write_queue_nums),
            (7, 8)
        );
    }
    let resp = replay(&mut stream, &mut buf, unregister).await.unwrap();
    assert_eq!(resp.code, 0);
    assert!(ts
        .server
        .route_info()
        .pickup_topic_route_data("TBW102")
        .is_none());
    assert!(ts.groups().is_empty());
    ts.server.shutdown().await;
}

#[tokio::test]
async fn client_route_queries_answered_like_4_9_8() {
    let Some(broker) = capture("broker-4.9.8-to-namesrv.jsonl") else {
        return;
    };
    let ts = start(&[]).await;
    let mut stream = TcpStream::connect(ts.server.local_addr()).await.unwrap();
    let mut buf = BytesMut::new();
    for line in broker
        .iter()
        .filter(|l| l["dir"] == "c2s" && l["code"] == 103)
    {
        replay(&mut stream, &mut buf, line).await;
    }
    let mut compared = 0;
    for file in testkit::CLIENT_CAPTURES {
        let Some(lines) = capture(file) else { return };
        for request in lines
            .iter()
            .filter(|l| l["dir"] == "c2s" && l["code"] == 105)
        {
            let answer = lines.iter().find(|l| {
                l["dir"] == "s2c"
                    && l["conn"] == request["conn"]
                    && l["opaque"] == request["opaque"]
                    && l["req_code"] == 105
            });
            let Some(answer) = answer.filter(|a| a["code"] == 0) else {
                continue;
            };
            let topic = request["header"]["extFields"]["topic"].as_str().unwrap();
            if ts
                .server
                .route_info()
                .pickup_topic_route_data(topic)
                .is_none()
            {
                continue; // deleted later in the broker's run
            }
            let mut conn = TcpStream::connect(ts.server.local_addr()).await.unwrap();
            let mut conn_buf = BytesMut::new();
            let resp = replay(&mut conn, &mut conn_buf, request).await.unwrap();
            assert_eq!(resp.code, 0, "{file} {topic}");
            assert_eq!(resp.serialize_type, request_serialize_type(request));
            let ours = String::from_utf8(resp.body.to_vec()).unwrap();
            let theirs = String::from_utf8(b64(&answer["body_b64"])).unwrap();
            if answer.get("note").is_some() {
                // The proxy inserted enableActingMaster elsewhere: compare parsed values.
                assert_eq!(
                    remoting::protocol::parse_fastjson(ours.as_bytes()).unwrap(),
                    remoting::protocol::parse_fastjson(theirs.as_bytes()).unwrap(),
                    "{file} {topic}"
                );
            } else {
                assert_eq!(
                    ours.replace(r#","enableActingMaster":false"#, ""),
                    theirs,
                    "{file} {topic}"
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} route answers compared");
    ts.server.shutdown().await;
}

fn request_serialize_type(request: &Value) -> remoting::SerializeType {
    if request["serialize"] == "rocketmq" {
        remoting::SerializeType::RocketMq
    } else {
        remoting::SerializeType::Json
    }
}
