//! Golden tests of the NameServer JSON bodies against real 4.9.8 traffic (shared/captures):
//! every captured route, cluster-info and registration body parses with the tolerant reader,
//! and writing it back in the same key style gives the captured bytes (with the
//! `enableActingMaster` we always add).

use remoting::protocol::{
    from_fastjson, parse_fastjson, to_fastjson, ClusterInfo, KeyStyle, RegisterBrokerBody,
    TopicRouteData,
};
use serde_json::Value;

fn body(line: &Value) -> Vec<u8> {
    testkit::b64(&line["body_b64"])
}

/// Successful answers to `req_code` in every client capture.
fn answers(req_code: i64) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for file in testkit::CLIENT_CAPTURES {
        let Some(lines) = testkit::capture(file) else {
            return Vec::new();
        };
        for line in lines {
            if line["dir"] == "s2c"
                && line["req_code"] == req_code
                && line["code"] == 0
                && line["body_len"] != 0
            {
                found.push((file.to_string(), line));
            }
        }
    }
    found
}

fn style_of(text: &str) -> KeyStyle {
    if text.contains("\"brokerAddrs\":{0:") {
        KeyStyle::Bare
    } else {
        KeyStyle::Quoted
    }
}

#[test]
fn captured_routes_round_trip() {
    let routes = answers(105);
    if routes.is_empty() {
        return;
    }
    for (file, line) in &routes {
        let captured = String::from_utf8(body(line)).unwrap();
        let route: TopicRouteData = from_fastjson(captured.as_bytes()).unwrap();
        assert_eq!(
            route.broker_datas[0].broker_addrs[&0], "127.0.0.1:10911",
            "{file}"
        );
        assert!(!route.queue_datas.is_empty());
        let ours = String::from_utf8(to_fastjson(&route, style_of(&captured)).unwrap()).unwrap();
        if line.get("note").is_some() {
            assert_eq!(
                parse_fastjson(ours.as_bytes()).unwrap(),
                parse_fastjson(captured.as_bytes()).unwrap()
            );
        } else {
            assert_eq!(
                ours.replace(",\"enableActingMaster\":false", ""),
                captured,
                "{file}"
            );
        }
    }
    let bare = routes
        .iter()
        .filter(|(_, l)| style_of(&String::from_utf8(body(l)).unwrap()) == KeyStyle::Bare);
    assert!(
        bare.count() > 0,
        "the C++ and ali-ons captures have bare keys"
    );
}

#[test]
fn captured_cluster_info_round_trips() {
    let infos = answers(106);
    if infos.is_empty() {
        return;
    }
    for (file, line) in infos {
        let captured = String::from_utf8(body(&line)).unwrap();
        assert!(
            captured.contains("{0:"),
            "cluster info is written with bare keys"
        );
        let info: ClusterInfo = from_fastjson(captured.as_bytes()).unwrap();
        assert!(
            info.cluster_addr_table["RefCluster"].contains("broker-ref"),
            "{file}"
        );
        let ours = String::from_utf8(to_fastjson(&info, KeyStyle::Bare).unwrap()).unwrap();
        assert_eq!(
            ours.replace(",\"enableActingMaster\":false", ""),
            captured,
            "{file}"
        );
    }
}

#[test]
fn captured_register_broker_bodies_parse() {
    let Some(lines) = testkit::capture("broker-4.9.8-to-namesrv.jsonl") else {
        return;
    };
    let mut parsed = 0;
    for line in lines
        .iter()
        .filter(|l| l["code"] == 103 && l["dir"] == "c2s")
    {
        let captured = body(line);
        let decoded = RegisterBrokerBody::decode(&captured, false).unwrap();
        let table = &decoded.topic_config_serialize_wrapper.topic_config_table;
        assert!(!table.is_empty());
        for (name, config) in table {
            assert_eq!(*name, config.topic_name);
            assert_eq!(config.topic_filter_type, "SINGLE_TAG");
        }
        // Same JSON value once written back (fastjson's map order is not ours).
        let ours = decoded.encode(false).unwrap();
        assert_eq!(
            parse_fastjson(&ours).unwrap(),
            parse_fastjson(&captured).unwrap()
        );
        // And the compressed form carries the same topics.
        let again = RegisterBrokerBody::decode(&decoded.encode(true).unwrap(), true).unwrap();
        assert_eq!(
            again
                .topic_config_serialize_wrapper
                .topic_config_table
                .len(),
            table.len()
        );
        parsed += 1;
    }
    assert!(parsed > 10);
}
