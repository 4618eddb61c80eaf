//! The admin requests `mqadmin` sends to a broker: topics (17, 215, 21), subscription groups
//! (200, 207, 201), runtime info (28), connections (203, 204), consume and topic stats (208,
//! 202, with fastjson's queue-object map keys), broker config (26, 25), and the delay offsets
//! (45). The admin requests the broker passes on to consumers are in `forward`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use remoting::broker_headers::MessageQueue;
use remoting::properties::parse_properties;
use remoting::protocol::{perm, to_fastjson, KVTable, KeyStyle, TopicConfig};
use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, ResponseCode};
use serde::Serialize;

use super::success;
use crate::schedule;
use crate::state::BrokerState;
use crate::subscription::SubscriptionGroupConfig;
use crate::topic::validate_topic_name;

/// Codes served here.
pub(crate) const CODES: &[i32] = &[
    RequestCode::UPDATE_AND_CREATE_TOPIC,
    RequestCode::DELETE_TOPIC_IN_BROKER,
    RequestCode::GET_ALL_TOPIC_CONFIG,
    RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    RequestCode::DELETE_SUBSCRIPTIONGROUP,
    RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    RequestCode::GET_BROKER_RUNTIME_INFO,
    RequestCode::GET_CONSUMER_CONNECTION_LIST,
    RequestCode::GET_PRODUCER_CONNECTION_LIST,
    RequestCode::GET_CONSUME_STATS,
    RequestCode::GET_TOPIC_STATS_INFO,
    RequestCode::GET_BROKER_CONFIG,
    RequestCode::UPDATE_BROKER_CONFIG,
    RequestCode::GET_ALL_DELAY_OFFSET,
    RequestCode::GET_ALL_CONSUMER_OFFSET,
];

pub(super) type Answer = Result<RemotingCommand, (i32, String)>;

pub(crate) async fn handle(
    state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Option<RemotingCommand> {
    let answer = match req.code {
        RequestCode::UPDATE_AND_CREATE_TOPIC => update_topic(&state, &req),
        RequestCode::DELETE_TOPIC_IN_BROKER => delete_topic(&state, &req),
        RequestCode::GET_ALL_TOPIC_CONFIG => json_body(&req, &state.topics.snapshot()),
        RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => update_group(&state, &req),
        RequestCode::DELETE_SUBSCRIPTIONGROUP => delete_group(&state, &req),
        RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => json_body(&req, &state.groups.snapshot()),
        RequestCode::GET_BROKER_RUNTIME_INFO => json_body(&req, &runtime_info(&state)),
        RequestCode::GET_CONSUMER_CONNECTION_LIST => consumer_connections(&state, &req),
        RequestCode::GET_PRODUCER_CONNECTION_LIST => producer_connections(&state, &req),
        RequestCode::GET_CONSUME_STATS => consume_stats(&state, &req),
        RequestCode::GET_TOPIC_STATS_INFO => topic_stats(&state, &req),
        RequestCode::GET_BROKER_CONFIG => {
            let text = state.config.read().to_properties();
            Ok(success(&req).with_body(text.into_bytes()))
        }
        RequestCode::UPDATE_BROKER_CONFIG => update_config(&state, &req),
        RequestCode::GET_ALL_DELAY_OFFSET => {
            let returned = req.ext(schedule::MASTER_RETURNED) == Some("true");
            if returned && state.config.read().is_slave() {
                schedule::hand_back(&state).await;
            }
            state
                .delay_offsets
                .encode()
                .map(|b| success(&req).with_body(b))
                .map_err(sys)
        }
        RequestCode::GET_ALL_CONSUMER_OFFSET => state
            .offsets
            .encode()
            .map(|b| success(&req).with_body(b))
            .map_err(sys),
        _ => Ok(RemotingCommand::not_supported(&req)),
    };
    Some(match answer {
        Ok(resp) => resp,
        Err((code, remark)) => RemotingCommand::response_to(&req, code, Some(remark)),
    })
}

pub(super) fn sys(e: crate::error::BrokerError) -> (i32, String) {
    (ResponseCode::SYSTEM_ERROR, e.to_string())
}

fn required(req: &RemotingCommand, key: &'static str) -> Result<String, (i32, String)> {
    req.ext(key).map(str::to_string).ok_or_else(|| {
        (
            ResponseCode::SYSTEM_ERROR,
            format!("the custom field <{key}> is null"),
        )
    })
}

fn parsed<T: std::str::FromStr>(
    req: &RemotingCommand,
    key: &'static str,
    default: T,
) -> Result<T, (i32, String)> {
    match req.ext(key) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| {
            (
                ResponseCode::SYSTEM_ERROR,
                format!("the custom field <{key}> has an invalid value <{raw}>"),
            )
        }),
    }
}

fn json_body<T: Serialize>(req: &RemotingCommand, body: &T) -> Answer {
    to_fastjson(body, KeyStyle::Quoted)
        .map(|b| success(req).with_body(b))
        .map_err(|e| (ResponseCode::SYSTEM_ERROR, e.to_string()))
}

fn update_topic(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let topic = required(req, "topic")?;
    if let Some(why) = validate_topic_name(&topic) {
        return Err((ResponseCode::SYSTEM_ERROR, why));
    }
    if topic == state.config.read().broker_cluster_name {
        return Err((
            ResponseCode::SYSTEM_ERROR,
            format!("The topic[{topic}] is conflict with system topic."),
        ));
    }
    let read_queue_nums = parsed(req, "readQueueNums", 16)?;
    let write_queue_nums = parsed(req, "writeQueueNums", 16)?;
    let topic_perm = parsed(req, "perm", perm::PERM_READ | perm::PERM_WRITE)?;
    if read_queue_nums < 0 || write_queue_nums < 0 || !perm::is_valid(topic_perm) {
        return Err((
            ResponseCode::SYSTEM_ERROR,
            format!(
                "invalid topic settings: readQueueNums {read_queue_nums}, writeQueueNums {write_queue_nums}, perm {topic_perm}"
            ),
        ));
    }
    let tc = TopicConfig {
        topic_name: topic,
        read_queue_nums,
        write_queue_nums,
        perm: topic_perm,
        topic_filter_type: req
            .ext("topicFilterType")
            .unwrap_or("SINGLE_TAG")
            .to_string(),
        topic_sys_flag: parsed(req, "topicSysFlag", 0)?,
        order: parsed(req, "order", false)?,
        ..TopicConfig::default()
    };
    state.topics.update(tc).map_err(sys)?;
    // Upstream leaves this remark on the success answer.
    Ok(success(req).with_remark("not set any response code"))
}

fn delete_topic(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let topic = required(req, "topic")?;
    state.topics.delete(&topic).map_err(sys)?;
    state.offsets.remove_topic(&topic);
    state
        .store
        .delete_topic(&topic)
        .map_err(|e| (ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    Ok(success(req))
}

fn delete_group(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let group = required(req, "groupName")?;
    state.groups.delete(&group).map_err(sys)?;
    Ok(success(req))
}

fn update_group(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let config: SubscriptionGroupConfig =
        remoting::protocol::from_fastjson(&req.body).map_err(|e| {
            (
                ResponseCode::SYSTEM_ERROR,
                format!("bad subscription group body: {e}"),
            )
        })?;
    if config.group_name.trim().is_empty() {
        return Err((ResponseCode::SYSTEM_ERROR, "groupName is empty".into()));
    }
    state.groups.update(config).map_err(sys)?;
    Ok(success(req))
}

fn runtime_info(state: &BrokerState) -> KVTable {
    let store = &state.store;
    let put = state.stats.put_messages.load(Ordering::Relaxed);
    let got = state.stats.got_messages.load(Ordering::Relaxed);
    let mut table = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        table.insert(k.to_string(), v);
    };
    set("brokerVersionDesc", "V4_9_8".into());
    set("brokerVersion", "409".into());
    set("bootTimestamp", boot_timestamp(state).to_string());
    set(
        "runtime",
        format!("[ {} seconds ]", state.started.elapsed().as_secs()),
    );
    set("msgPutTotalTodayNow", put.to_string());
    set("msgGetTotalTodayNow", got.to_string());
    for k in [
        "msgPutTotalTodayMorning",
        "msgGetTotalTodayMorning",
        "msgPutTotalYesterdayMorning",
        "msgGetTotalYesterdayMorning",
        "sendThreadPoolQueueSize",
        "pullThreadPoolQueueSize",
        "queryThreadPoolQueueSize",
        "pageCacheLockTimeMills",
    ] {
        set(k, "0".into());
    }
    set("putTps", "0.0 0.0 0.0".into());
    set("getFoundTps", "0.0 0.0 0.0".into());
    set("getMissTps", "0.0 0.0 0.0".into());
    set("getTransferedTps", "0.0 0.0 0.0".into());
    set("getTotalTps", "0.0 0.0 0.0".into());
    set(
        "commitLogMaxOffset",
        store.commit_log_max_offset().to_string(),
    );
    set(
        "commitLogMinOffset",
        store.commit_log_min_offset().to_string(),
    );
    set(
        "dispatchBehindBytes",
        (store.commit_log_max_offset() - store.dispatched_offset())
            .max(0)
            .to_string(),
    );
    set(
        "remainHowManyDataToFlush",
        format!(
            "{} B",
            (store.commit_log_max_offset() - store.commit_log_flushed_offset()).max(0)
        ),
    );
    set(
        "earliestMessageTimeStamp",
        store.earliest_message_time().unwrap_or(0).to_string(),
    );
    set("commitLogDiskRatio", "0.0".into());
    set(
        "consumerConnections",
        state.consumers.connection_count().to_string(),
    );
    set(
        "producerConnections",
        state.producers.connection_count().to_string(),
    );
    for (level, offset) in state.delay_offsets.snapshot() {
        let max = store.max_offset(crate::topic::SCHEDULE_TOPIC, level - 1);
        set(
            &format!("scheduleMessageOffset_{level}"),
            format!("{offset},{max}"),
        );
    }
    KVTable { table }
}

fn boot_timestamp(state: &BrokerState) -> i64 {
    remoting::message::now_millis() - state.started.elapsed().as_millis() as i64
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Conn {
    client_addr: String,
    client_id: String,
    language: &'static str,
    version: i32,
}

fn conns(channels: impl Iterator<Item = crate::clients::ClientChannel>) -> Vec<Conn> {
    channels
        .map(|c| Conn {
            client_addr: c.conn.remote_addr().to_string(),
            client_id: c.client_id,
            language: c.language.name(),
            version: c.version,
        })
        .collect()
}

fn consumer_connections(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let group = required(req, "consumerGroup")?;
    let Some(info) = state
        .consumers
        .group(&group)
        .filter(|g| !g.channels.is_empty())
    else {
        return Err((
            ResponseCode::CONSUMER_NOT_ONLINE,
            format!("the consumer group[{group}] not online"),
        ));
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsumerConnection {
        connection_set: Vec<Conn>,
        consume_from_where: remoting::broker_headers::ConsumeFromWhere,
        consume_type: remoting::broker_headers::ConsumeType,
        message_model: remoting::broker_headers::MessageModel,
        subscription_table: BTreeMap<String, remoting::broker_headers::SubscriptionData>,
    }
    let body = ConsumerConnection {
        connection_set: conns(info.channels.values().cloned()),
        consume_from_where: info.consume_from_where,
        consume_type: info.consume_type,
        message_model: info.message_model,
        subscription_table: info.subscriptions.into_iter().collect(),
    };
    json_body(req, &body)
}

fn producer_connections(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let group = required(req, "producerGroup")?;
    let channels = state.producers.channels(&group);
    if channels.is_empty() {
        return Err((
            ResponseCode::SYSTEM_ERROR,
            format!("the producer group[{group}] not exist"),
        ));
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ProducerConnection {
        connection_set: Vec<Conn>,
    }
    json_body(
        req,
        &ProducerConnection {
            connection_set: conns(channels.into_iter()),
        },
    )
}

/// Writes `{"<field>":{{mq}:value,...}}` as fastjson does (queue objects as keys), with
/// `prefix` members (already JSON) before it.
fn mq_keyed_body<T: Serialize>(
    prefix: &str,
    field: &str,
    map: &BTreeMap<MessageQueue, T>,
) -> Result<Vec<u8>, (i32, String)> {
    let mut out = String::from("{");
    out.push_str(prefix);
    out.push_str(&format!("\"{field}\":"));
    push_mq_map(&mut out, map)?;
    out.push('}');
    Ok(out.into_bytes())
}

/// Appends `{{mq}:value,...}`, a map keyed by queue objects as fastjson writes it.
pub(super) fn push_mq_map<T: Serialize>(
    out: &mut String,
    map: &BTreeMap<MessageQueue, T>,
) -> Result<(), (i32, String)> {
    let err = |e: serde_json::Error| (ResponseCode::SYSTEM_ERROR, e.to_string());
    out.push('{');
    for (i, (mq, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(mq).map_err(err)?);
        out.push(':');
        out.push_str(&serde_json::to_string(v).map_err(err)?);
    }
    out.push('}');
    Ok(())
}

fn consume_stats(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let group = required(req, "consumerGroup")?;
    let topics = match req.ext("topic").filter(|t| !t.is_empty()) {
        Some(t) => vec![t.to_string()],
        None => state.offsets.topics_of_group(&group),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OffsetWrapper {
        broker_offset: i64,
        consumer_offset: i64,
        last_timestamp: i64,
    }
    let broker_name = state.config.read().broker_name.clone();
    let mut table = BTreeMap::new();
    for topic in topics {
        let Some(tc) = state.topics.select(&topic) else {
            continue;
        };
        for q in 0..tc.read_queue_nums {
            let broker_offset = state.store.max_offset(&topic, q);
            let consumer_offset = state.offsets.query(&group, &topic, q).unwrap_or(0).max(0);
            let last_timestamp = if consumer_offset > 0 {
                state
                    .store
                    .message_store_timestamp(&topic, q, consumer_offset - 1)
                    .unwrap_or(0)
            } else {
                0
            };
            table.insert(
                MessageQueue::new(topic.clone(), broker_name.clone(), q),
                OffsetWrapper {
                    broker_offset,
                    consumer_offset,
                    last_timestamp,
                },
            );
        }
    }
    let body = mq_keyed_body("\"consumeTps\":0.0,", "offsetTable", &table)?;
    Ok(success(req).with_body(body))
}

fn topic_stats(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let topic = required(req, "topic")?;
    let Some(tc) = state.topics.select(&topic) else {
        return Err((
            ResponseCode::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist"),
        ));
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct TopicOffset {
        last_update_timestamp: i64,
        max_offset: i64,
        min_offset: i64,
    }
    let broker_name = state.config.read().broker_name.clone();
    let mut table = BTreeMap::new();
    for q in 0..tc.write_queue_nums {
        let max_offset = state.store.max_offset(&topic, q);
        let min_offset = state.store.min_offset(&topic, q);
        let last_update_timestamp = if max_offset > 0 {
            state
                .store
                .message_store_timestamp(&topic, q, max_offset - 1)
                .unwrap_or(0)
        } else {
            0
        };
        table.insert(
            MessageQueue::new(topic.clone(), broker_name.clone(), q),
            TopicOffset {
                last_update_timestamp,
                max_offset,
                min_offset,
            },
        );
    }
    let body = mq_keyed_body("", "offsetTable", &table)?;
    Ok(success(req).with_body(body))
}

/// Parses the UPDATE_BROKER_CONFIG body (Java properties text, written by upstream's
/// `MixAll.properties2String`).
fn parse_config_body(body: &[u8]) -> Result<HashMap<String, String>, (i32, String)> {
    let text = std::str::from_utf8(body).map_err(|_| {
        (
            ResponseCode::SYSTEM_ERROR,
            "config body is not UTF-8".to_string(),
        )
    })?;
    Ok(parse_properties(text))
}

/// Keys that cannot change while the broker runs.
const FIXED_KEYS: &[&str] = &[
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

fn update_config(state: &BrokerState, req: &RemotingCommand) -> Answer {
    let props = parse_config_body(&req.body)?;
    if let Some(k) = props.keys().find(|k| FIXED_KEYS.contains(&k.as_str())) {
        return Err((
            ResponseCode::NO_PERMISSION,
            format!("Can not update config in black list: {k}"),
        ));
    }
    state
        .config
        .write()
        .update(&props)
        .map_err(|e| (ResponseCode::SYSTEM_ERROR, e.to_string()))?;
    tracing::info!(?props, "broker config updated");
    Ok(success(req))
}
