//! Replays the broker requests of the Java 4.9.8 client's `sync` run
//! (`shared/captures/java-4.9.8.jsonl`: topic auto-created through `TBW102`, 310 sends,
//! heartbeats, consumer list, offsets, pulls, send-backs) against an Apogee broker and checks
//! every answer has the captured shape: the same code and the same ext field names. Pulls may
//! differ in outcome only by timing (a message not there yet), so for them any of FOUND /
//! PULL_NOT_FOUND / SUBSCRIPTION_NOT_LATEST is accepted, with the captured field names.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use base64::Engine;
use bytes::BytesMut;
use common::*;
use remoting::{RemotingCommand, RequestCode};
use serde_json::Value;

fn capture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/captures/java-4.9.8.jsonl")
}

fn decode_frame(line: &Value) -> RemotingCommand {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line["frame_b64"].as_str().unwrap())
        .unwrap();
    let mut buf = BytesMut::from(&raw[..]);
    remoting::codec::decode(&mut buf, 16 << 20)
        .unwrap()
        .unwrap()
}

fn keys(map: Option<&serde_json::Map<String, Value>>) -> BTreeSet<String> {
    map.map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test]
async fn java_sync_run_gets_the_captured_answers() {
    let path = capture_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipped: capture {} not found", path.display());
        return;
    };
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["run"] == "sync" && v["peer"] == "broker")
        .collect();
    // Captured responses by (connection, opaque).
    let mut answers: HashMap<(i64, i64), &Value> = HashMap::new();
    for l in &lines {
        if l["dir"] == "s2c" && l["flag"].as_i64().unwrap() & 1 == 1 {
            answers.insert(
                (l["conn"].as_i64().unwrap(), l["opaque"].as_i64().unwrap()),
                l,
            );
        }
    }
    let env = Env::start_with(
        |c| {
            c.broker_cluster_name = "RefCluster".into();
            c.broker_name = "broker-ref".into();
        },
        None,
    )
    .await;
    let mut checked = 0;
    for l in lines.iter().filter(|l| l["dir"] == "c2s") {
        let mut req = decode_frame(l);
        if req.code == RequestCode::PULL_MESSAGE {
            // Do not wait the captured 15 s for messages that are not there.
            req.ext_fields
                .insert("suspendTimeoutMillis".into(), "200".into());
        }
        if req.code == RequestCode::CONSUMER_SEND_MSG_BACK {
            // Our CommitLog offsets differ from the capture's: find the message by its key.
            let uniq = req.ext("originMsgId").unwrap().to_string();
            let q = env
                .call(
                    RemotingCommand::request(RequestCode::QUERY_MESSAGE)
                        .with_ext("topic", req.ext("originTopic").unwrap())
                        .with_ext("key", &uniq)
                        .with_ext("maxNum", 1)
                        .with_ext("beginTimestamp", 0)
                        .with_ext("endTimestamp", i64::MAX)
                        .with_ext("_UNIQUE_KEY_QUERY", true),
                )
                .await;
            assert_eq!(q.code, 0, "message {uniq} not found: {}", q.remark_str());
            let m = remoting::message::MessageExt::decode_all(&q.body, false).unwrap();
            req.ext_fields
                .insert("offset".into(), m[0].commit_log_offset.to_string());
        }
        if req.is_oneway() {
            env.oneway(req).await;
            continue;
        }
        let key = (l["conn"].as_i64().unwrap(), l["opaque"].as_i64().unwrap());
        let expected = answers.get(&key);
        let code = req.code;
        if code == RequestCode::SEND_MESSAGE_V2 {
            // Let the store index earlier sends so pulls and queries see them.
            let resp = env.call(req).await;
            let e = expected.unwrap();
            assert_eq!(resp.code, e["code"].as_i64().unwrap() as i32);
            let want = keys(e["header"]["extFields"].as_object());
            let got: BTreeSet<String> = resp.ext_fields.keys().cloned().collect();
            assert_eq!(got, want, "ext fields of the 310 answer");
            let topic = "CAP_java";
            let queue: i32 = resp.ext("queueId").unwrap().parse().unwrap();
            let offset: i64 = resp.ext("queueOffset").unwrap().parse().unwrap();
            env.wait_dispatched(topic, queue, offset + 1).await;
            checked += 1;
            continue;
        }
        let resp = env.call(req).await;
        let Some(e) = expected else {
            // Captured as never answered (held pulls at the end of the run).
            assert_eq!(code, RequestCode::PULL_MESSAGE);
            assert!(matches!(resp.code, 0 | 19), "pull answered {}", resp.code);
            continue;
        };
        let want_code = e["code"].as_i64().unwrap() as i32;
        let got_keys: BTreeSet<String> = resp.ext_fields.keys().cloned().collect();
        if code == RequestCode::PULL_MESSAGE {
            assert!(
                matches!(resp.code, 0 | 19 | 25),
                "pull answered {} {}",
                resp.code,
                resp.remark_str()
            );
            if resp.code != 25 {
                let want: BTreeSet<String> = [
                    "maxOffset",
                    "minOffset",
                    "nextBeginOffset",
                    "suggestWhichBrokerId",
                ]
                .map(String::from)
                .into();
                assert_eq!(got_keys, want);
            }
        } else {
            assert_eq!(
                resp.code,
                want_code,
                "code {code}: remark {}",
                resp.remark_str()
            );
            assert_eq!(
                got_keys,
                keys(e["header"]["extFields"].as_object()),
                "ext fields of the answer to {code}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} requests checked");
    env.stop().await;
}
