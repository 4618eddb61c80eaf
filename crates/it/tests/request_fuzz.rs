//! Request fuzzing (issue 15): a real NameServer and a real broker on 127.0.0.1 get every
//! request code they serve with random and mutated headers and bodies — 100,000 cases from a
//! seeded RNG, in both header encodings (JSON and ROCKETMQ binary), two-way and oneway,
//! pipelined over several connections at once.
//!
//! What must hold: nothing panics (a process-wide panic hook counts every panic, also those
//! the connection code catches and answers as `SYSTEM_ERROR`); every two-way request is
//! answered within [`ANSWER_TIMEOUT`], or its connection is closed after a frame whose header
//! the fuzzer damaged on purpose; and afterwards, with the configuration the fuzzer changed put
//! back, a normal SEND_MESSAGE_V2, a PULL_MESSAGE and GET_ROUTEINFO_BY_TOPIC work on fresh
//! connections.
//!
//! CI runs all 100,000 cases (40 to 70 s in a debug build on two cores). The seed is printed;
//! `FUZZ_SEED=<n>` replays a run, `FUZZ_CASES=<n>` changes the number of cases and
//! `FUZZ_SKIP=<code>,<code>` leaves codes out while narrowing down a failure, and
//! `FUZZ_LOG=<filter>` prints the servers' logs (`store=info,broker=warn`):
//! `FUZZ_SEED=7 cargo test -p apogee-it --test request_fuzz -- --nocapture`. A failure names
//! the connection and the case (code, encoding, fields) that was not answered.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use it::{
    broker_config, namesrv_config, raw, raw_client, route, wait_until, BrokerNode, BrokerRole,
};
use namesrv::{NameServer, NamesrvConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use remoting::client::RemotingClient;
use remoting::codec::{decode, encode};
use remoting::codes::NAMESRV_REQUEST_CODES;
use remoting::command::{FLAG_ONEWAY, FLAG_RESPONSE};
use remoting::message::{create_message_id, encode_batch, Message, MessageExt, Properties};
use remoting::{
    BrokerAddr, LanguageCode, NameServerAddr, RemotingCommand, RequestCode, ResponseCode,
    SerializeType,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Seed when `FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x15_F022;
/// Cases when `FUZZ_CASES` is not set, as issue 15 asks: 39 to 71 s in a debug build on two
/// cores shared with other builds, depending on the load.
const CASES: usize = 100_000;
/// Fuzzing connections to the broker and to the NameServer, each driven by its own task.
const BROKER_CONNS: usize = 4;
const NAMESRV_CONNS: usize = 2;
/// Two-way requests in flight per connection.
const WINDOW: usize = 64;
/// Longest wait for the answer to one request. The broker waits up to 10 s for a consumer
/// it passes a request on to (the fuzzer answers those at once) and holds a pull as long as
/// it asks (the fuzzer asks for at most 1 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The broker's `maxMessageSize` here: bodies around it are cheap enough to send often.
const MAX_MESSAGE_SIZE: usize = 128 * 1024;
const CLUSTER: &str = "FuzzCluster";
const BROKER: &str = "broker-fuzz";
/// Names the cases draw from, so that requests meet the state earlier requests created.
const TOPICS: &[&str] = &[
    "FuzzTopic",
    "FuzzTopic2",
    "TBW102",
    "%RETRY%FuzzGroup",
    "%DLQ%FuzzGroup",
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "BenchmarkTest",
    CLUSTER,
    BROKER,
];
const GROUPS: &[&str] = &["FuzzGroup", "FuzzGroup2", "PG", "TOOLS_CONSUMER"];
const CLIENTS: &[&str] = &["127.0.0.1@fuzz1", "127.0.0.1@fuzz2"];
/// Broker config keys the fuzzer leaves alone: each legitimately makes the broker take longer
/// than [`ANSWER_TIMEOUT`] to answer (a pull held `shortPollingTimeMills`, at most 60 s since
/// the hold is bounded, see `hold_time` in the broker's pull handler; a send waiting
/// `syncFlushTimeout`).
const SLOW_KEYS: &[&str] = &["shortPollingTimeMills", "syncFlushTimeout"];
/// Broker keys that cannot change while it runs (refused with NO_PERMISSION).
const FIXED_BROKER_KEYS: &[&str] = &[
    "brokerClusterName",
    "brokerName",
    "brokerId",
    "brokerRole",
    "listenPort",
    "bindAddress",
    "storePathRootDir",
    "storePathCommitLog",
    "messageDelayLevel",
    "brokerIP1",
];

/// Every panic of the process (server tasks included), recorded by [`count_panics`].
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut panics) = PANICS.lock() {
            panics.push(info.to_string());
        }
        default(info);
    }));
}

fn panics() -> Vec<String> {
    PANICS.lock().map(|p| p.clone()).unwrap_or_default()
}

/// The header field names of each request (the typed headers' wire keys).
fn header_keys(code: i32) -> &'static [&'static str] {
    match code {
        // NameServer.
        100 => &["namespace", "key", "value"],
        101 | 102 => &["namespace", "key"],
        219 => &["namespace"],
        103 => &[
            "brokerName",
            "brokerAddr",
            "clusterName",
            "haServerAddr",
            "brokerId",
            "heartbeatTimeoutMillis",
            "enableActingMaster",
            "compressed",
            "bodyCrc32",
            "zoneName",
        ],
        104 | 322 => &["brokerName", "brokerAddr", "clusterName", "brokerId"],
        904 => &[
            "clusterName",
            "brokerAddr",
            "brokerName",
            "brokerId",
            "epoch",
            "maxOffset",
            "confirmOffset",
            "heartbeatTimeoutMills",
            "electionPriority",
        ],
        901 => &["clusterName", "brokerName"],
        105 => &["topic", "acceptStandardJsonOnly"],
        205 | 327 => &["brokerName"],
        216 => &["topic", "clusterName"],
        217 => &["topic"],
        224 => &["cluster"],
        // Broker.
        10 => &[
            "producerGroup",
            "topic",
            "defaultTopic",
            "defaultTopicQueueNums",
            "queueId",
            "sysFlag",
            "bornTimestamp",
            "flag",
            "properties",
            "reconsumeTimes",
            "unitMode",
            "batch",
            "maxReconsumeTimes",
            "bname",
        ],
        310 | 320 => &[
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
        ],
        11 => &[
            "consumerGroup",
            "topic",
            "queueId",
            "queueOffset",
            "maxMsgNums",
            "sysFlag",
            "commitOffset",
            "suspendTimeoutMillis",
            "subscription",
            "subVersion",
            "expressionType",
            "maxMsgBytes",
            "requestSource",
            "proxyFrowardClientId",
            "bname",
        ],
        14 => &[
            "consumerGroup",
            "topic",
            "queueId",
            "setZeroIfNotFound",
            "bname",
        ],
        15 => &[
            "consumerGroup",
            "topic",
            "queueId",
            "commitOffset",
            "bname",
            "keepLarger",
        ],
        30 => &["topic", "queueId", "committed", "bname"],
        31 | 32 => &["topic", "queueId", "bname"],
        29 => &["topic", "queueId", "timestamp", "boundaryType", "bname"],
        36 => &[
            "offset",
            "group",
            "delayLevel",
            "originMsgId",
            "originTopic",
            "unitMode",
            "maxReconsumeTimes",
            "bname",
        ],
        37 => &[
            "topic",
            "producerGroup",
            "tranStateTableOffset",
            "commitLogOffset",
            "commitOrRollback",
            "fromTransactionCheck",
            "msgId",
            "transactionId",
            "bname",
        ],
        38 | 203 => &["consumerGroup"],
        12 => &[
            "topic",
            "key",
            "maxNum",
            "beginTimestamp",
            "endTimestamp",
            "_UNIQUE_KEY_QUERY",
        ],
        33 => &["topic", "offset"],
        35 => &["clientID", "producerGroup", "consumerGroup"],
        222 => &[
            "group",
            "topic",
            "queueId",
            "offset",
            "timestamp",
            "isForce",
        ],
        223 => &["topic", "group", "clientAddr"],
        307 => &["consumerGroup", "clientId", "jstackEnable"],
        309 => &[
            "consumerGroup",
            "clientId",
            "msgId",
            "brokerName",
            "topic",
            "topicSysFlag",
            "groupSysFlag",
        ],
        17 => &[
            "topic",
            "defaultTopic",
            "readQueueNums",
            "writeQueueNums",
            "perm",
            "topicFilterType",
            "topicSysFlag",
            "order",
        ],
        215 | 202 => &["topic"],
        207 => &["groupName"],
        204 => &["producerGroup"],
        208 => &["consumerGroup", "topic"],
        45 => &["masterReturned"],
        _ => &[],
    }
}

/// A valid JSON body of the requests that carry one.
fn json_sample(code: i32) -> Option<&'static str> {
    Some(match code {
        34 => {
            r#"{"clientID":"127.0.0.1@fuzz1","producerDataSet":[{"groupName":"PG"}],"consumerDataSet":[{"groupName":"FuzzGroup","consumeType":"CONSUME_PASSIVELY","messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","subscriptionDataSet":[{"classFilterMode":false,"topic":"FuzzTopic","subString":"*","tagsSet":[],"codeSet":[],"subVersion":0,"expressionType":"TAG"}],"unitMode":false}]}"#
        }
        41 => {
            r#"{"consumerGroup":"FuzzGroup","clientId":"127.0.0.1@fuzz1","mqSet":[{"topic":"FuzzTopic","brokerName":"broker-fuzz","queueId":0}]}"#
        }
        42 => {
            r#"{"consumerGroup":"FuzzGroup","clientId":"127.0.0.1@fuzz1","onlyThisBroker":false,"mqSet":[{"topic":"FuzzTopic","brokerName":"broker-fuzz","queueId":1}]}"#
        }
        46 => {
            r#"{"group":"FuzzGroup","subscriptionData":{"classFilterMode":false,"topic":"FuzzTopic","subString":"TagA","tagsSet":["TagA"],"codeSet":[],"subVersion":0,"expressionType":"TAG"}}"#
        }
        200 => {
            r#"{"groupName":"FuzzGroup","consumeEnable":true,"consumeFromMinEnable":true,"consumeBroadcastEnable":true,"retryQueueNums":1,"retryMaxTimes":16,"brokerId":0,"whichBrokerWhenConsumeSlowly":1,"notifyConsumerIdsChangedEnable":true}"#
        }
        103 => {
            r#"{"topicConfigSerializeWrapper":{"topicConfigTable":{"FuzzTopic":{"topicName":"FuzzTopic","readQueueNums":4,"writeQueueNums":4,"perm":6,"topicFilterType":"SINGLE_TAG","topicSysFlag":0,"order":false}},"dataVersion":{"timestamp":1,"counter":1}},"filterServerList":[]}"#
        }
        322 => r#"{"timestamp":1,"counter":1}"#,
        217 => {
            r#"{"brokerDatas":[{"cluster":"FuzzCluster","brokerName":"broker-fuzz","brokerAddrs":{"0":"127.0.0.1:1"}}],"queueDatas":[{"brokerName":"broker-fuzz","readQueueNums":4,"writeQueueNums":4,"perm":6,"topicSysFlag":0}]}"#
        }
        _ => return None,
    })
}

/// A value wrong for most fields: empty, extreme, not a number, very long, odd characters.
fn garbage(rng: &mut StdRng) -> String {
    match rng.gen_range(0..18) {
        0 => String::new(),
        1 => i64::MAX.to_string(),
        2 => i64::MIN.to_string(),
        3 => i32::MAX.to_string(),
        4 => i32::MIN.to_string(),
        5 => u64::MAX.to_string(),
        6 => "99999999999999999999999999999".into(),
        7 => "-1".into(),
        8 => [
            "abc", "1.5", "0x10", " 7", "+3", "1e9", "NaN", "null", "[]", "{}", "true", "FALSE",
            "%", "|", "*", "||", "-0",
        ]
        .choose(rng)
        .map_or(String::new(), |s| s.to_string()),
        9 => "x".repeat(rng.gen_range(128..4096)),
        10 if rng.gen_ratio(1, 20) => "y".repeat(rng.gen_range(60_000..300_000)),
        10 => "z".repeat(rng.gen_range(1..200)),
        11 => "主题-🚀-ü\u{0}\u{1}\u{2}\n\r\t\"\\'=".into(),
        12 => (0..rng.gen_range(1..64))
            .map(|_| rng.gen::<char>())
            .collect(),
        13 => rng.gen::<i64>().to_string(),
        14 => rng.gen_range(-3..300).to_string(),
        15 => format!("%RETRY%{}", "g".repeat(rng.gen_range(0..200))),
        16 => format!("127.0.0.1:{}", rng.gen_range(0..70_000)),
        _ => rng.gen::<u32>().to_string(),
    }
}

fn pick(rng: &mut StdRng, from: &[&str]) -> String {
    from.choose(rng).map_or(String::new(), |s| s.to_string())
}

/// A message properties string: known names with plausible or wrong values, now and then
/// very many distinct names.
fn properties(rng: &mut StdRng) -> String {
    if rng.gen_ratio(1, 400) {
        let n = rng.gen_range(20_000..200_000);
        return (0..n)
            .map(|i| format!("k{i}\u{1}v"))
            .collect::<Vec<_>>()
            .join("\u{2}");
    }
    let mut p = Properties::new();
    for _ in 0..rng.gen_range(0..6) {
        let name = pick(
            rng,
            &[
                "TAGS",
                "KEYS",
                "DELAY",
                "WAIT",
                "TRAN_MSG",
                "UNIQ_KEY",
                "RETRY_TOPIC",
                "REAL_TOPIC",
                "REAL_QID",
                "MAX_RECONSUME_TIMES",
                "RECONSUME_TIME",
                "PGROUP",
                "__transactionId__",
                "CHECK_IMMUNITY_TIME_IN_SECONDS",
                "TIMER_DELAY_SEC",
                "TIMER_DELIVER_MS",
                "ORIGIN_MESSAGE_ID",
            ],
        );
        let value = match rng.gen_range(0..4) {
            0 => garbage(rng),
            1 => "true".into(),
            _ => rng.gen_range(-2..40).to_string(),
        };
        p.insert(name, value);
    }
    p.to_wire_string()
}

/// What the cases of one connection aim at.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    codes: Vec<i32>,
    /// Keys of the server's configuration (for UPDATE_BROKER_CONFIG / UPDATE_NAMESRV_CONFIG).
    config_keys: Vec<String>,
    /// The broker, for addresses and message ids.
    broker: SocketAddr,
}

/// A plausible value for header field `key`: a name from the pools, a small number, a flag.
fn plausible(key: &str, rng: &mut StdRng, t: &Target) -> String {
    let k = key.to_ascii_lowercase();
    match k.as_str() {
        "properties" | "i" => return properties(rng),
        "b" | "c" | "origintopic" => return pick(rng, TOPICS),
        "a" | "namespace" | "key" => return pick(rng, GROUPS),
        "brokername" | "bname" | "n" => return BROKER.into(),
        "subscription" => return pick(rng, &["*", "TagA", "TagA || TagB", "", "a||"]),
        "expressiontype" => return pick(rng, &["TAG", "SQL92", "tag"]),
        "suspendtimeoutmillis" => return rng.gen_range(0..1_000).to_string(),
        "msgid" | "originmsgid" | "offsetmsgid" => {
            return create_message_id(t.broker, rng.gen_range(0..200_000))
        }
        "clientid" => return pick(rng, CLIENTS),
        _ => {}
    }
    if k.contains("topic") && !k.contains("flag") {
        return pick(rng, TOPICS);
    }
    if k.contains("group") {
        return pick(rng, GROUPS);
    }
    if k.contains("cluster") {
        return CLUSTER.into();
    }
    if k.contains("addr") {
        return if rng.gen_bool(0.5) {
            t.broker.to_string()
        } else {
            format!("127.0.0.1:{}", rng.gen_range(1..65_536))
        };
    }
    match rng.gen_range(0..7) {
        0 => "0".into(),
        1 => "1".into(),
        2 => "true".into(),
        3 => "false".into(),
        4 => rng.gen_range(0..20).to_string(),
        5 => rng.gen_range(0..200_000).to_string(),
        _ => rng.gen_range(-1..8).to_string(),
    }
}

fn ext_fields(code: i32, rng: &mut StdRng, t: &Target) -> HashMap<String, String> {
    let mut ext = HashMap::new();
    // Every PUT_KV_CONFIG rewrites and syncs the whole KV file (as upstream does): thousands of
    // random namespaces and keys would make the run quadratic, so they mostly come from the pool.
    let kv_name = |key: &str| code == RequestCode::PUT_KV_CONFIG && key != "value";
    for key in header_keys(code) {
        let roll = rng.gen_range(0..100);
        if roll < 10 {
            continue; // missing, required or not
        }
        let value = if roll < 65 || (kv_name(key) && roll < 97) {
            plausible(key, rng, t)
        } else {
            garbage(rng)
        };
        ext.insert(key.to_string(), value);
    }
    if rng.gen_ratio(1, 10) {
        ext.insert(garbage(rng), garbage(rng));
    }
    if code == RequestCode::PULL_MESSAGE {
        // A pull is held as long as it asks (up to a minute): keep holds short.
        if let Some(v) = ext.get_mut("suspendTimeoutMillis") {
            if v.trim().parse::<i64>().is_ok_and(|n| n > 1_000) {
                *v = "1000".into();
            }
        }
    }
    ext
}

/// Damages bytes now and then: flips, truncates, overwrites a length with an extreme value.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut StdRng) {
    if b.is_empty() {
        return;
    }
    match rng.gen_range(0..8) {
        0..=2 => {}
        3 => {
            for _ in 0..rng.gen_range(1..5) {
                let i = rng.gen_range(0..b.len());
                b[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        4 => b.truncate(rng.gen_range(0..b.len())),
        5 if b.len() >= 4 => {
            let i = rng.gen_range(0..=b.len() - 4);
            let v = *[i32::MAX, i32::MIN, -1, 0, 1, 0x7FFF, 0x10000]
                .choose(rng)
                .unwrap_or(&-1);
            b[i..i + 4].copy_from_slice(&v.to_be_bytes());
        }
        _ => b.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.gen()).collect()
}

/// A JSON value with wrong types, missing and extra members, here and there.
fn mutate_json(v: &mut Value, rng: &mut StdRng) {
    match v {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                match rng.gen_range(0..10) {
                    0 => {
                        map.remove(&k);
                    }
                    1 => {
                        map.insert(k, wrong_json(rng));
                    }
                    _ => {
                        if let Some(inner) = map.get_mut(&k) {
                            mutate_json(inner, rng);
                        }
                    }
                }
            }
            if rng.gen_ratio(1, 8) {
                map.insert(garbage(rng), wrong_json(rng));
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                mutate_json(item, rng);
            }
            if rng.gen_ratio(1, 8) {
                items.push(wrong_json(rng));
            }
        }
        scalar => {
            if rng.gen_ratio(1, 4) {
                *scalar = wrong_json(rng);
            }
        }
    }
}

fn wrong_json(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..9) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => Value::from(i64::MAX),
        3 => Value::from(i64::MIN),
        4 => Value::from(-1),
        5 => serde_json::json!(1.5e300),
        6 => Value::String(garbage(rng)),
        7 => serde_json::json!([1, "x", null]),
        _ => serde_json::json!({"x": {"y": []}}),
    }
}

fn json_body(sample: &str, rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0 | 1 => sample.as_bytes().to_vec(),
        2..=5 => {
            let mut v: Value = serde_json::from_str(sample).unwrap_or(Value::Null);
            mutate_json(&mut v, rng);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        6 => sample.as_bytes()[..rng.gen_range(0..sample.len())].to_vec(),
        7 => {
            let len = rng.gen_range(0..512);
            random_bytes(rng, len)
        }
        8 => Vec::new(),
        _ => {
            let depth = rng.gen_range(100..20_000);
            let mut s = "[".repeat(depth);
            s.push_str(&"]".repeat(depth));
            s.into_bytes()
        }
    }
}

fn message_body(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0 => 0,
        1 => MAX_MESSAGE_SIZE - rng.gen_range(0..2),
        2 => MAX_MESSAGE_SIZE + 1,
        3..=5 => rng.gen_range(1_024..65_536),
        _ => rng.gen_range(1..256),
    };
    random_bytes(rng, len)
}

fn message(rng: &mut StdRng) -> Message {
    let len = rng.gen_range(0..128);
    let mut m = Message::new(pick(rng, TOPICS), random_bytes(rng, len));
    m.flag = rng.gen();
    m.properties = Properties::parse(&properties(rng));
    m
}

fn batch_body(rng: &mut StdRng) -> Vec<u8> {
    let msgs: Vec<Message> = (0..rng.gen_range(1..5)).map(|_| message(rng)).collect();
    let mut body = encode_batch(&msgs).map(|b| b.to_vec()).unwrap_or_default();
    mutate_bytes(&mut body, rng);
    body
}

/// A stored-message record, usually damaged.
fn record_body(rng: &mut StdRng) -> Vec<u8> {
    let mut ext = MessageExt::new(message(rng));
    ext.queue_offset = rng.gen();
    ext.commit_log_offset = rng.gen();
    let mut out = BytesMut::new();
    let _ = ext.encode(&mut out);
    let mut body = out.to_vec();
    mutate_bytes(&mut body, rng);
    body
}

/// Java properties text setting a few of the server's config keys to plausible or wrong values.
fn config_body(rng: &mut StdRng, t: &Target) -> Vec<u8> {
    let mut text = String::new();
    for _ in 0..rng.gen_range(1..4) {
        let key = if rng.gen_ratio(1, 10) || t.config_keys.is_empty() {
            garbage(rng)
        } else {
            t.config_keys[rng.gen_range(0..t.config_keys.len())].clone()
        };
        let value = match rng.gen_range(0..6) {
            0 => "true".into(),
            1 => "false".into(),
            2 => rng.gen_range(0..10).to_string(),
            3 => rng.gen_range(0..100_000).to_string(),
            _ => garbage(rng),
        };
        text.push_str(&format!("{key}={value}\n"));
    }
    text.into_bytes()
}

fn body(code: i32, rng: &mut StdRng, t: &Target) -> Vec<u8> {
    if let Some(sample) = json_sample(code) {
        return json_body(sample, rng);
    }
    match code {
        RequestCode::SEND_MESSAGE | RequestCode::SEND_MESSAGE_V2 => message_body(rng),
        RequestCode::SEND_BATCH_MESSAGE => batch_body(rng),
        RequestCode::UPDATE_BROKER_CONFIG | RequestCode::UPDATE_NAMESRV_CONFIG => {
            config_body(rng, t)
        }
        _ => match rng.gen_range(0..30) {
            0 => record_body(rng),
            1 => {
                let len = rng.gen_range(1..2_048);
                random_bytes(rng, len)
            }
            2 => json_body(r#"{"a":[1,{"b":"c"}],"d":null}"#, rng),
            _ => Vec::new(),
        },
    }
}

const LANGUAGES: &[LanguageCode] = &[
    LanguageCode::Java,
    LanguageCode::Cpp,
    LanguageCode::Go,
    LanguageCode::Rust,
    LanguageCode::NodeJs,
    LanguageCode::Other,
];

/// One request, encoded.
struct Case {
    frame: BytesMut,
    /// Two-way, well-formed: must be answered.
    answer_expected: bool,
    /// Its header was damaged after encoding: the server may close the connection.
    damaged: bool,
    desc: String,
}

fn make_case(rng: &mut StdRng, opaque: i32, t: &Target) -> Case {
    let code = if rng.gen_ratio(1, 50) {
        rng.gen_range(-5..1_000)
    } else {
        t.codes[rng.gen_range(0..t.codes.len())]
    };
    let ext_fields = ext_fields(code, rng, t);
    let body = body(code, rng, t);
    let oneway = rng.gen_ratio(1, 10);
    // A "response" nobody asked for: the server must drop it.
    let stray_response = rng.gen_ratio(1, 200);
    let mut flag = if oneway { FLAG_ONEWAY } else { 0 };
    if stray_response {
        flag |= FLAG_RESPONSE;
    }
    if rng.gen_ratio(1, 50) {
        flag |= rng.gen::<i32>() & !(FLAG_RESPONSE | FLAG_ONEWAY);
    }
    let mut cmd = RemotingCommand {
        code,
        language: LANGUAGES[rng.gen_range(0..LANGUAGES.len())],
        version: *[0, 317, 373, 401, 474, -1, i32::from(i16::MAX)]
            .choose(rng)
            .unwrap_or(&0),
        opaque,
        flag,
        remark: rng.gen_ratio(1, 20).then(|| garbage(rng)),
        ext_fields,
        body: body.into(),
        serialize_type: if rng.gen_bool(0.5) {
            SerializeType::Json
        } else {
            SerializeType::RocketMq
        },
    };
    let mut frame = BytesMut::new();
    if encode(&cmd, &mut frame).is_err() {
        cmd.serialize_type = SerializeType::Json;
        frame.clear();
        encode(&cmd, &mut frame).expect("a JSON header always encodes");
    }
    let damaged = rng.gen_ratio(1, 300);
    if damaged {
        let header_len = u32::from_be_bytes([0, frame[5], frame[6], frame[7]]) as usize;
        if header_len > 0 {
            let i = 8 + rng.gen_range(0..header_len);
            frame[i] ^= 1 << rng.gen_range(0..8);
        }
    }
    let mut desc = format!(
        "code {code} {:?} flag {flag} version {} ext {:?} body {} bytes",
        cmd.serialize_type,
        cmd.version,
        cmd.ext_fields,
        cmd.body.len()
    );
    if desc.len() > 600 {
        let mut cut = 600;
        while !desc.is_char_boundary(cut) {
            cut -= 1;
        }
        desc.truncate(cut);
        desc.push_str("...");
    }
    Case {
        frame,
        answer_expected: !oneway && !stray_response && !damaged,
        damaged,
        desc,
    }
}

#[derive(Debug, Default)]
struct Stats {
    sent: usize,
    answered: usize,
    not_answered_by_design: usize,
    closed_with_damaged_frame: usize,
    reconnects: usize,
    server_requests: usize,
    codes: BTreeMap<i32, usize>,
}

fn spawn_reader(mut rd: OwnedReadHalf, tx: mpsc::UnboundedSender<RemotingCommand>) {
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            loop {
                match decode(&mut buf, 64 * 1024 * 1024) {
                    Ok(Some(cmd)) => {
                        if tx.send(cmd).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
}

/// Sends `cases` cases (from `seed` and `conn`) to `t` over one connection at a time, with up
/// to [`WINDOW`] two-way requests in flight; opens a new connection when the server closes one
/// after a damaged frame. Fails on a request left unanswered for [`ANSWER_TIMEOUT`] or a
/// connection closed without a damaged frame on it.
async fn drive(t: Arc<Target>, seed: u64, conn: usize, cases: usize) -> Result<Stats, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ (conn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut stats = Stats::default();
    let mut done = 0;
    let mut opaque = 0i32;
    let who = format!("{} connection {conn}", t.name);
    while done < cases {
        let stream = TcpStream::connect(t.addr)
            .await
            .map_err(|e| format!("{who}: connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_reader(rd, tx);
        let mut inflight: HashMap<i32, (Instant, String)> = HashMap::new();
        let mut damaged_sent = None;
        'conn: loop {
            while inflight.len() < WINDOW && done < cases {
                opaque = opaque.wrapping_add(1);
                let case = make_case(&mut rng, opaque, &t);
                done += 1;
                stats.sent += 1;
                if case.damaged {
                    damaged_sent.get_or_insert(format!("case {done}: {}", case.desc));
                }
                match tokio::time::timeout(ANSWER_TIMEOUT, wr.write_all(&case.frame)).await {
                    Err(_) => {
                        return Err(format!(
                            "{who}: the server stopped reading (case {done}: {})",
                            case.desc
                        ))
                    }
                    Ok(Err(_)) => break 'conn,
                    Ok(Ok(())) => {}
                }
                if case.answer_expected {
                    inflight.insert(
                        opaque,
                        (Instant::now(), format!("case {done}: {}", case.desc)),
                    );
                } else {
                    stats.not_answered_by_design += 1;
                }
            }
            if done >= cases && inflight.is_empty() {
                return Ok(stats);
            }
            let oldest = inflight.values().map(|(at, _)| *at).min();
            let wait = oldest.map_or(ANSWER_TIMEOUT, |at| {
                (at + ANSWER_TIMEOUT).saturating_duration_since(Instant::now())
            });
            match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) => {
                    let late = inflight
                        .values()
                        .filter(|(at, _)| at.elapsed() >= ANSWER_TIMEOUT)
                        .map(|(_, d)| d.clone())
                        .next();
                    if let Some(desc) = late {
                        return Err(format!(
                            "{who}: no answer within {ANSWER_TIMEOUT:?} to {desc} (seed {seed})"
                        ));
                    }
                }
                Ok(None) => break 'conn,
                Ok(Some(cmd)) if cmd.is_response() => {
                    if inflight.remove(&cmd.opaque).is_some() {
                        stats.answered += 1;
                        *stats.codes.entry(cmd.code).or_default() += 1;
                    }
                }
                Ok(Some(cmd)) => {
                    // The broker asks its "consumers" (running info, offset reset, ...): answer
                    // at once so that it does not wait for its timeout.
                    stats.server_requests += 1;
                    if !cmd.is_oneway() {
                        let answer = RemotingCommand::response_to(
                            &cmd,
                            ResponseCode::SYSTEM_ERROR,
                            Some("fuzzer".into()),
                        );
                        let mut frame = BytesMut::new();
                        if encode(&answer, &mut frame).is_ok()
                            && wr.write_all(&frame).await.is_err()
                        {
                            break 'conn;
                        }
                    }
                }
            }
        }
        // The connection closed.
        match damaged_sent {
            Some(_) => {
                stats.closed_with_damaged_frame += inflight.len();
                stats.reconnects += 1;
            }
            None if done >= cases && inflight.is_empty() => {}
            None => {
                let pending = inflight.values().map(|(_, d)| d.clone()).next();
                return Err(format!(
                    "{who}: the server closed the connection without a damaged frame \
                     ({} requests unanswered, e.g. {pending:?}; seed {seed})",
                    inflight.len()
                ));
            }
        }
    }
    Ok(stats)
}

/// The server's configuration as GET_BROKER_CONFIG / GET_NAMESRV_CONFIG answers it.
async fn config_of(
    client: &RemotingClient,
    broker: Option<&BrokerAddr>,
    ns: &NameServerAddr,
) -> BTreeMap<String, String> {
    let (code, resp) = match broker {
        Some(b) => {
            let r = client
                .invoke(
                    b,
                    RemotingCommand::request(RequestCode::GET_BROKER_CONFIG),
                    Duration::from_secs(5),
                )
                .await;
            (RequestCode::GET_BROKER_CONFIG, r)
        }
        None => {
            let r = client
                .invoke_namesrv(
                    ns,
                    RemotingCommand::request(RequestCode::GET_NAMESRV_CONFIG),
                    Duration::from_secs(5),
                )
                .await;
            (RequestCode::GET_NAMESRV_CONFIG, r)
        }
    };
    let resp = resp.unwrap_or_else(|e| panic!("request {code} failed: {e}"));
    assert_eq!(resp.code, ResponseCode::SUCCESS, "{}", resp.remark_str());
    remoting::properties::parse_properties(&String::from_utf8_lossy(&resp.body))
        .into_iter()
        .collect()
}

/// Puts back every config value that differs from `before`, one key at a time; each must be
/// accepted.
async fn restore_config(
    client: &RemotingClient,
    broker: Option<&BrokerAddr>,
    ns: &NameServerAddr,
    before: &BTreeMap<String, String>,
) -> Vec<String> {
    let now = config_of(client, broker, ns).await;
    let mut restored = Vec::new();
    for (k, v) in before {
        if now.get(k) == Some(v) || (broker.is_some() && FIXED_BROKER_KEYS.contains(&k.as_str())) {
            continue;
        }
        let body = format!("{k}={v}\n").into_bytes();
        let resp = match broker {
            Some(b) => {
                client
                    .invoke(
                        b,
                        RemotingCommand::request(RequestCode::UPDATE_BROKER_CONFIG).with_body(body),
                        Duration::from_secs(5),
                    )
                    .await
            }
            None => {
                client
                    .invoke_namesrv(
                        ns,
                        RemotingCommand::request(RequestCode::UPDATE_NAMESRV_CONFIG)
                            .with_body(body),
                        Duration::from_secs(5),
                    )
                    .await
            }
        }
        .expect("config update answered");
        assert_eq!(
            resp.code,
            ResponseCode::SUCCESS,
            "putting back {k}={v}: {}",
            resp.remark_str()
        );
        restored.push(k.clone());
    }
    assert_eq!(
        config_of(client, broker, ns).await,
        *before,
        "config put back"
    );
    restored
}

/// `codes` without those `FUZZ_SKIP` lists (comma-separated; for narrowing down a failure).
fn without_skipped(codes: Vec<i32>) -> Vec<i32> {
    let skip: Vec<i32> = std::env::var("FUZZ_SKIP")
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    codes.into_iter().filter(|c| !skip.contains(c)).collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_request_code_survives_random_and_mutated_requests() {
    if let Ok(f) = std::env::var("FUZZ_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
    fuzz(env_or("FUZZ_CASES", CASES)).await;
}

async fn fuzz(cases: usize) {
    count_panics();
    let seed: u64 = env_or("FUZZ_SEED", DEFAULT_SEED);
    println!(
        "request fuzz: seed {seed}, {cases} cases (replay: FUZZ_SEED={seed} FUZZ_CASES={cases})"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let namesrv = NameServer::start(NamesrvConfig {
        kv_config_path: dir.path().join("kvConfig.json"),
        ..namesrv_config(Duration::from_secs(120))
    })
    .await
    .expect("namesrv starts");
    let ns_sock = namesrv.local_addr();
    let ns = NameServerAddr::parse(&ns_sock.to_string()).expect("namesrv addr");
    let mut config = broker_config(
        ns_sock,
        CLUSTER,
        BROKER,
        0,
        BrokerRole::AsyncMaster,
        dir.path().join("broker"),
    );
    config.max_message_size = MAX_MESSAGE_SIZE;
    let mut broker = BrokerNode::start(config);
    let broker_sock: SocketAddr = broker.addr.parse().expect("broker addr");
    let broker_addr = BrokerAddr::parse(&broker.addr).expect("broker addr");

    let client = raw_client();
    let broker_before = config_of(&client, Some(&broker_addr), &ns).await;
    let namesrv_before = config_of(&client, None, &ns).await;
    let keys = |c: &BTreeMap<String, String>| -> Vec<String> {
        c.keys()
            .filter(|k| !SLOW_KEYS.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let broker_target = Arc::new(Target {
        name: "broker",
        addr: broker_sock,
        codes: without_skipped(broker::served_codes()),
        config_keys: keys(&broker_before),
        broker: broker_sock,
    });
    let namesrv_target = Arc::new(Target {
        name: "namesrv",
        addr: ns_sock,
        codes: without_skipped(NAMESRV_REQUEST_CODES.to_vec()),
        config_keys: keys(&namesrv_before),
        broker: broker_sock,
    });
    println!(
        "broker serves {} codes, NameServer {}",
        broker_target.codes.len(),
        namesrv_target.codes.len()
    );

    let started = Instant::now();
    let conns = BROKER_CONNS + NAMESRV_CONNS;
    let mut tasks = Vec::new();
    for conn in 0..conns {
        let target = if conn < BROKER_CONNS {
            broker_target.clone()
        } else {
            namesrv_target.clone()
        };
        let share = cases / conns + usize::from(conn < cases % conns);
        tasks.push(tokio::spawn(drive(target, seed, conn, share)));
    }
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => {
                total.sent += s.sent;
                total.answered += s.answered;
                total.not_answered_by_design += s.not_answered_by_design;
                total.closed_with_damaged_frame += s.closed_with_damaged_frame;
                total.reconnects += s.reconnects;
                total.server_requests += s.server_requests;
                for (code, n) in s.codes {
                    *total.codes.entry(code).or_default() += n;
                }
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("fuzz task failed: {e}")),
        }
    }
    let took = started.elapsed();
    println!(
        "{} cases in {took:.1?}: {} answered, {} oneway/stray/damaged, {} unanswered on connections \
         closed after a damaged frame ({} reconnects), {} requests from the broker; answer codes {:?}",
        total.sent,
        total.answered,
        total.not_answered_by_design,
        total.closed_with_damaged_frame,
        total.reconnects,
        total.server_requests,
        total.codes
    );
    let p = panics();
    assert!(
        p.is_empty(),
        "{} panics (seed {seed}); first: {}",
        p.len(),
        p[0]
    );
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
    assert_eq!(total.sent, cases);

    // Put back what the fuzzer changed; then a normal send, pull and route lookup must work.
    let restored = restore_config(&client, Some(&broker_addr), &ns, &broker_before).await;
    println!("broker config keys put back: {restored:?}");
    let restored = restore_config(&client, None, &ns, &namesrv_before).await;
    println!("NameServer config keys put back: {restored:?}");
    raw::create_topic(&client, &broker.addr, "FuzzCheck", 4).await;
    let sent = raw::send(&client, &broker.addr, "FuzzCheck", 1, b"after the fuzz").await;
    assert_eq!(
        sent.code,
        ResponseCode::SUCCESS,
        "send: {}",
        sent.remark_str()
    );
    // The message reaches its ConsumeQueue shortly after the send is answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = raw::pull_response(&client, &broker.addr, "FuzzCheckGroup", "FuzzCheck", 1, 0)
            .await
            .expect("pull answered");
        let found = answer.code == ResponseCode::SUCCESS
            && MessageExt::decode_all(&answer.body, true)
                .unwrap_or_default()
                .iter()
                .any(|m| &m.message.body[..] == b"after the fuzz");
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: no pull found the message sent after the fuzz (sent: {:?}); last \
             answer: code {} {:?}, ext {:?}",
            sent.ext_fields,
            answer.code,
            answer.remark_str(),
            answer.ext_fields
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = broker.addr.clone();
    wait_until(
        "a route of FuzzCheck naming the broker",
        Duration::from_secs(20),
        || {
            let (client, addr) = (&client, &addr);
            async move {
                route(client, ns_sock, "FuzzCheck").await.is_some_and(|r| {
                    r.broker_datas
                        .iter()
                        .any(|b| b.broker_addrs.values().any(|a| a == addr))
                })
            }
        },
    )
    .await;
    let p = panics();
    assert!(
        p.is_empty(),
        "{} panics (seed {seed}); first: {}",
        p.len(),
        p[0]
    );

    client.shutdown().await;
    broker.stop();
    namesrv.shutdown().await;
}
