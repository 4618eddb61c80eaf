//! The admin requests `mqadmin` sends to a broker: topics (17, 215, 21), subscription groups
//! (200, 207, 201), runtime info (28), connections (203, 204), consume and topic stats (208,
//! 202, with fastjson's queue-object map keys), broker config (26, 25), and the delay offsets
//! (45). The admin requests the broker passes on to consumers are in `forward`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use remoting::broker_headers::{
    CreateTopicRequestHeader, DeleteSubscriptionGroupRequestHeader, DeleteTopicRequestHeader,
    GetAllDelayOffsetRequestHeader, GetConsumeStatsRequestHeader,
    GetConsumerConnectionListRequestHeader, GetProducerConnectionListRequestHeader,
    GetSubscriptionGroupConfigRequestHeader, GetTopicStatsInfoRequestHeader, MessageQueue,
};
use remoting::properties::parse_properties;
use remoting::protocol::{perm, to_fastjson, KVTable, KeyStyle, TopicConfig};
use remoting::server::Connection;
use remoting::RemotingCommand;
use serde::Serialize;

use super::{header, success, HandlerError, Reply};
use crate::context::BrokerContext;
use crate::services::BrokerServices;
use crate::subscription::SubscriptionGroupConfig;
use crate::topic::{validate_topic_name, MAX_QUEUE_NUMS};

/// UPDATE_AND_CREATE_TOPIC (17). Upstream leaves the remark "not set any response code" on
/// the success answer, and so do we.
pub(super) async fn update_topic(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: CreateTopicRequestHeader = header(&req)?;
    let topic = h.topic;
    if let Some(why) = validate_topic_name(&topic) {
        return Err(HandlerError::System(why));
    }
    if topic == state.config().broker_cluster_name {
        return Err(HandlerError::System(format!(
            "The topic[{topic}] is conflict with system topic."
        )));
    }
    let read_queue_nums = h.read_queue_nums.unwrap_or(16);
    let write_queue_nums = h.write_queue_nums.unwrap_or(16);
    let topic_perm = h.perm.unwrap_or(perm::PERM_READ | perm::PERM_WRITE);
    if read_queue_nums < 0 || write_queue_nums < 0 || !perm::is_valid(topic_perm) {
        return Err(HandlerError::System(format!(
            "invalid topic settings: readQueueNums {read_queue_nums}, writeQueueNums {write_queue_nums}, perm {topic_perm}"
        )));
    }
    if read_queue_nums > MAX_QUEUE_NUMS || write_queue_nums > MAX_QUEUE_NUMS {
        return Err(HandlerError::System(format!(
            "invalid topic settings: readQueueNums {read_queue_nums}, writeQueueNums {write_queue_nums}; at most {MAX_QUEUE_NUMS} queues"
        )));
    }
    let tc = TopicConfig {
        topic_name: topic,
        read_queue_nums,
        write_queue_nums,
        perm: topic_perm,
        topic_filter_type: h
            .topic_filter_type
            .unwrap_or_else(|| "SINGLE_TAG".to_string()),
        topic_sys_flag: h.topic_sys_flag.unwrap_or(0),
        order: h.order,
        ..TopicConfig::default()
    };
    state.topics.update(tc)?;
    // Durable before the answer, as upstream persists before it replies.
    state.topics.flush().await?;
    Ok(Some(success(&req).with_remark("not set any response code")))
}

/// DELETE_TOPIC_IN_BROKER (215): the topic's config, its offsets and its stored queues.
pub(super) async fn delete_topic(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: DeleteTopicRequestHeader = header(&req)?;
    if state.topics.delete(&h.topic)? {
        state.topics.flush().await?;
    }
    state.offsets.remove_topic(&h.topic);
    state
        .store
        .delete_topic(&h.topic)
        .map_err(HandlerError::system)?;
    Ok(Some(success(&req)))
}

/// GET_ALL_TOPIC_CONFIG (21).
pub(super) async fn all_topic_config(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    json_body(&req, &state.topics.snapshot())
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200): the body is the group's config.
pub(super) async fn update_group(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let config: SubscriptionGroupConfig = remoting::protocol::from_fastjson(&req.body)
        .map_err(|e| HandlerError::System(format!("bad subscription group body: {e}")))?;
    if config.group_name.trim().is_empty() {
        return Err(HandlerError::System("groupName is empty".into()));
    }
    if config.retry_queue_nums > MAX_QUEUE_NUMS {
        return Err(HandlerError::System(format!(
            "retryQueueNums {} is more than {MAX_QUEUE_NUMS} queues",
            config.retry_queue_nums
        )));
    }
    state.groups.update(config)?;
    state.groups.flush().await?;
    Ok(Some(success(&req)))
}

/// DELETE_SUBSCRIPTIONGROUP (207).
pub(super) async fn delete_group(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: DeleteSubscriptionGroupRequestHeader = header(&req)?;
    if state.groups.delete(&h.group_name)? {
        state.groups.flush().await?;
    }
    Ok(Some(success(&req)))
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201).
pub(super) async fn all_group_config(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    json_body(&req, &state.groups.snapshot())
}

/// GET_SUBSCRIPTIONGROUP_CONFIG (352): one group's config; a group not known is
/// SUBSCRIPTION_GROUP_NOT_EXIST (nothing is created).
pub(super) async fn group_config(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetSubscriptionGroupConfigRequestHeader = header(&req)?;
    match state.groups.find(&h.group, false)? {
        Some(config) => json_body(&req, &config),
        None => Err(HandlerError::GroupNotExist(format!(
            "subscription group {} does not exist",
            h.group
        ))),
    }
}

/// GET_BROKER_RUNTIME_INFO (28).
pub(super) async fn runtime_info(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    json_body(&req, &runtime_table(&state))
}

/// GET_BROKER_CONFIG (26): the config in force as properties text.
pub(super) async fn broker_config(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let text = state.config().to_properties();
    Ok(Some(success(&req).with_body(text.into_bytes())))
}

/// GET_ALL_DELAY_OFFSET (45). A slave asked by its returning master first hands its delay
/// progress back (see [`crate::schedule::DelayService::hand_back`]).
pub(super) async fn all_delay_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    if asked_by_returning_master(&state, &req)? {
        state.delay.hand_back(&state).await;
    }
    let body = state.delay.offsets.encode()?;
    Ok(Some(success(&req).with_body(body)))
}

/// GET_TIMER_CHECK_POINT (60): the timer checkpoint in upstream's layout plus Apogee's field
/// (see [`crate::timer::encode_body`]). A slave asked by its returning master first hands
/// timer delivery back (see [`crate::timer::TimerService::hand_back`]).
pub(super) async fn timer_check_point(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    if asked_by_returning_master(&state, &req)? {
        state.timer.hand_back(&state).await;
    }
    let body = crate::timer::encode_body(&state.timer.checkpoint());
    Ok(Some(success(&req).with_body(body)))
}

/// Whether this is a slave asked by its returning master (`masterReturned`, see
/// [`crate::cluster::ask_returning_to_slaves`]).
fn asked_by_returning_master(
    state: &BrokerServices,
    req: &RemotingCommand,
) -> Result<bool, HandlerError> {
    let h: GetAllDelayOffsetRequestHeader = header(req)?;
    Ok(h.master_returned && state.config().is_slave())
}

/// GET_ALL_CONSUMER_OFFSET (43).
pub(super) async fn all_consumer_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let body = state.offsets.encode()?;
    Ok(Some(success(&req).with_body(body)))
}

fn json_body<T: Serialize>(req: &RemotingCommand, body: &T) -> Reply {
    let body = to_fastjson(body, KeyStyle::Quoted).map_err(HandlerError::system)?;
    Ok(Some(success(req).with_body(body)))
}

fn runtime_table(state: &BrokerServices) -> KVTable {
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
    for (level, offset) in state.delay.offsets.snapshot() {
        let max = store.max_offset(crate::topic::SCHEDULE_TOPIC, level - 1);
        set(
            &format!("scheduleMessageOffset_{level}"),
            format!("{offset},{max}"),
        );
    }
    KVTable { table }
}

fn boot_timestamp(state: &BrokerContext) -> i64 {
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

/// GET_CONSUMER_CONNECTION_LIST (203): the group's connections and subscriptions.
pub(super) async fn consumer_connections(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetConsumerConnectionListRequestHeader = header(&req)?;
    let group = h.consumer_group;
    let Some(info) = state
        .consumers
        .group(&group)
        .filter(|g| !g.channels.is_empty())
    else {
        return Err(HandlerError::ConsumerNotOnline(format!(
            "the consumer group[{group}] not online"
        )));
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
    json_body(&req, &body)
}

/// GET_PRODUCER_CONNECTION_LIST (204).
pub(super) async fn producer_connections(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetProducerConnectionListRequestHeader = header(&req)?;
    let group = h.producer_group;
    let channels = state.producers.channels(&group);
    if channels.is_empty() {
        return Err(HandlerError::System(format!(
            "the producer group[{group}] not exist"
        )));
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ProducerConnection {
        connection_set: Vec<Conn>,
    }
    json_body(
        &req,
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
) -> Result<Vec<u8>, HandlerError> {
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
) -> Result<(), HandlerError> {
    let err = HandlerError::system;
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

/// GET_CONSUME_STATS (208): per queue, the broker's and the group's offsets.
pub(super) async fn consume_stats(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetConsumeStatsRequestHeader = header(&req)?;
    let group = h.consumer_group;
    let topics = match h.topic.filter(|t| !t.is_empty()) {
        Some(t) => vec![t],
        None => state.offsets.topics_of_group(&group),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OffsetWrapper {
        broker_offset: i64,
        consumer_offset: i64,
        last_timestamp: i64,
        /// Apogee: messages popped (POP consumption) and not acked yet; upstream readers
        /// ignore the field.
        pop_inflight: usize,
    }
    let config = state.config();
    let broker_name = &config.broker_name;
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
                    pop_inflight: state.pop.inflight(&group, &topic, q),
                },
            );
        }
    }
    let body = mq_keyed_body("\"consumeTps\":0.0,", "offsetTable", &table)?;
    Ok(Some(success(&req).with_body(body)))
}

/// GET_TOPIC_STATS_INFO (202): per queue, min and max offsets and the last store time.
pub(super) async fn topic_stats(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetTopicStatsInfoRequestHeader = header(&req)?;
    let topic = h.topic;
    let Some(tc) = state.topics.select(&topic) else {
        return Err(HandlerError::TopicNotExist(format!(
            "topic[{topic}] not exist"
        )));
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct TopicOffset {
        last_update_timestamp: i64,
        max_offset: i64,
        min_offset: i64,
    }
    let config = state.config();
    let broker_name = &config.broker_name;
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
    Ok(Some(success(&req).with_body(body)))
}

/// Parses the UPDATE_BROKER_CONFIG body (Java properties text, written by upstream's
/// `MixAll.properties2String`).
fn parse_config_body(body: &[u8]) -> Result<HashMap<String, String>, HandlerError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| HandlerError::System("config body is not UTF-8".to_string()))?;
    Ok(parse_properties(text))
}

/// Keys that cannot change while the broker runs.
const FIXED_KEYS: &[&str] = &[
    "brokerClusterName",
    "brokerName",
    "brokerId",
    "brokerRole",
    "listenPort",
    "fastListenPort",
    "fastListenPortEnable",
    "haListenPort",
    "bindAddress",
    "storePathRootDir",
    "storePathCommitLog",
    "messageDelayLevel",
    "brokerIP1",
];

/// UPDATE_BROKER_CONFIG (25): the body's keys (properties text) applied to a copy of the
/// config in force, which then replaces it; keys fixed while running are refused.
pub(super) async fn update_config(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let props = parse_config_body(&req.body)?;
    if let Some(k) = props.keys().find(|k| FIXED_KEYS.contains(&k.as_str())) {
        return Err(HandlerError::NoPermission(format!(
            "Can not update config in black list: {k}"
        )));
    }
    state.update_config(&props)?;
    tracing::info!(?props, "broker config updated");
    Ok(Some(success(&req)))
}
