//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320): check the broker,
//! topic and queue, create the topic from `TBW102` when allowed, route retry messages past
//! their maximum to the DLQ, delayed ones to `SCHEDULE_TOPIC_XXXX` and transactional half
//! messages to `RMQ_SYS_TRANS_HALF_TOPIC`, write, and answer `msgId`, `queueId`,
//! `queueOffset`, `MSG_REGION`, `TRACE_ON`.

use std::sync::Arc;

use rand::Rng;
use remoting::broker_headers::{SendMessageRequestHeader, SendMessageRequestHeaderV2};
use remoting::message::{decode_batch, MessageConst, MessageSysFlag, Properties};
use remoting::protocol::{perm, TopicConfig};
use remoting::server::Connection;
use remoting::RemotingCommand;
use store::MessageInner;

use super::{header, HandlerError, Reply};
use crate::schedule::to_schedule;
use crate::state::BrokerState;
use crate::topic::{
    dlq_topic, is_not_allowed_send_topic, validate_topic_name, RETRY_GROUP_TOPIC_PREFIX,
    TRANS_HALF_TOPIC,
};

/// SEND_MESSAGE (10).
pub(super) async fn send_v1(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeader = header(&req)?;
    send(&state, &conn, &req, h, false).await.map(Some)
}

/// SEND_MESSAGE_V2 (310): the same header with one-letter keys.
pub(super) async fn send_v2(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeaderV2 = header(&req)?;
    send(&state, &conn, &req, h.into(), false).await.map(Some)
}

/// SEND_BATCH_MESSAGE (320): a V2 header and a body of several encoded messages.
pub(super) async fn send_batch(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeaderV2 = header(&req)?;
    send(&state, &conn, &req, h.into(), true).await.map(Some)
}

async fn send(
    state: &BrokerState,
    conn: &Connection,
    req: &RemotingCommand,
    h: SendMessageRequestHeader,
    batch: bool,
) -> Result<RemotingCommand, HandlerError> {
    let (slave, broker_perm, auto_create, region, trace_on, cluster) = {
        let c = state.config();
        (
            c.is_slave(),
            c.broker_permission,
            c.auto_create_topic_enable,
            c.region_id.clone(),
            c.trace_on,
            c.broker_cluster_name.clone(),
        )
    };
    if slave {
        return Err(HandlerError::ServiceNotAvailable(
            "broker role is slave, it does not accept messages".into(),
        ));
    }
    if !perm::is_writeable(broker_perm) {
        return Err(HandlerError::NoPermission(format!(
            "the broker[{}] sending message is forbidden",
            state.broker_addr()
        )));
    }
    if let Some(why) = validate_topic_name(&h.topic) {
        return Err(HandlerError::System(why));
    }
    if is_not_allowed_send_topic(&h.topic) {
        return Err(HandlerError::NoPermission(format!(
            "Sending message to topic[{}] is forbidden.",
            h.topic
        )));
    }
    let topic_config = topic_for_send(state, &h, auto_create)?;
    let queue_limit = topic_config
        .write_queue_nums
        .max(topic_config.read_queue_nums);
    if h.queue_id >= queue_limit {
        return Err(HandlerError::System(format!(
            "request queueId[{}] is illegal, {:?} Producer: {}",
            h.queue_id,
            topic_config,
            conn.remote_addr()
        )));
    }
    let mut queue_id = h.queue_id;
    if queue_id < 0 {
        queue_id = rand::thread_rng().gen_range(0..topic_config.write_queue_nums.max(1));
    }
    let reconsume_times = h.reconsume_times.unwrap_or(0);
    let mut topic = h.topic.clone();
    let mut sys_flag = h.sys_flag;
    if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
        if batch {
            return Err(HandlerError::MessageIllegal(
                "batch request does not support retry group ".into(),
            ));
        }
        let group = &topic[RETRY_GROUP_TOPIC_PREFIX.len()..];
        let Ok(Some(group_config)) = state.groups.find(group, false) else {
            return Err(HandlerError::GroupNotExist(format!(
                "subscription group not exist, {group}"
            )));
        };
        let max = h
            .max_reconsume_times
            .unwrap_or(group_config.retry_max_times);
        // The producer fallback sends RECONSUME_TIME already incremented: past the maximum
        // (the same rule as CONSUMER_SEND_MSG_BACK's `reconsumeTimes >= max` before the
        // increment), the message goes to the DLQ.
        if reconsume_times > max {
            let dlq = dlq_topic(group);
            state
                .topics
                .create_if_missing(&dlq, 1, perm::PERM_READ | perm::PERM_WRITE, 0)?;
            topic = dlq;
            queue_id = 0;
            sys_flag = MessageSysFlag::reset_transaction_value(
                sys_flag,
                MessageSysFlag::TRANSACTION_NOT_TYPE,
            );
        }
    }

    let born_host = conn.remote_addr();
    let store_host = state.store_host();
    let delay_levels = state.delay_levels.len();
    let make = |flag: i32, body: bytes::Bytes, props: Properties| MessageInner {
        topic: topic.clone(),
        queue_id,
        flag,
        body,
        properties: props.to_wire_string(),
        sys_flag,
        born_timestamp: h.born_timestamp,
        born_host,
        store_host,
        reconsume_times,
        prepared_transaction_offset: 0,
    };

    let mut msgs = Vec::new();
    if batch {
        let decoded = decode_batch(&req.body, &topic)
            .map_err(|e| HandlerError::MessageIllegal(format!("bad batch body: {e}")))?;
        if decoded.is_empty() {
            return Err(HandlerError::MessageIllegal("empty batch body".into()));
        }
        for m in decoded {
            if m.delay_time_level() > 0 {
                return Err(HandlerError::MessageIllegal(
                    "batch messages do not support delay levels".into(),
                ));
            }
            let mut props = m.properties;
            props.insert(MessageConst::PROPERTY_CLUSTER, cluster.clone());
            msgs.push(make(m.flag, m.body, props));
        }
    } else {
        let mut props = Properties::parse(h.properties.as_deref().unwrap_or(""));
        props.insert(MessageConst::PROPERTY_CLUSTER, cluster.clone());
        let mut msg = make(h.flag, req.body.clone(), props.clone());
        let tran_type = MessageSysFlag::transaction_value(sys_flag);
        let prepared = props.get(MessageConst::PROPERTY_TRANSACTION_PREPARED) == Some("true")
            || tran_type == MessageSysFlag::TRANSACTION_PREPARED_TYPE;
        if prepared {
            if state.config().reject_transaction_message {
                return Err(HandlerError::NoPermission(format!(
                    "the broker[{}] sending transaction message is forbidden",
                    state.broker_addr()
                )));
            }
            crate::transaction::ensure_topics(state, TRANS_HALF_TOPIC);
            to_half(&mut msg, &mut props, &h.producer_group);
        } else {
            let level = props
                .get(MessageConst::PROPERTY_DELAY_TIME_LEVEL)
                .and_then(|l| l.trim().parse::<i32>().ok())
                .unwrap_or(0);
            if level > 0 {
                to_schedule(&mut msg, &mut props, level, delay_levels);
            }
        }
        msgs.push(msg);
    }

    let (result, code) = state.put_acked(msgs).await?;
    let msg_id = result.msg_ids().join(",");
    Ok(RemotingCommand::response_to(req, code, None)
        .with_ext("msgId", msg_id)
        .with_ext("queueId", queue_id)
        .with_ext("queueOffset", result.queue_offset)
        .with_ext(MessageConst::PROPERTY_MSG_REGION, region)
        .with_ext(MessageConst::PROPERTY_TRACE_SWITCH, trace_on))
}

/// Turns a transactional message into a half message: real topic and queue saved in
/// properties, written to queue 0 of the half topic as a plain (non-transactional) record.
fn to_half(msg: &mut MessageInner, props: &mut Properties, producer_group: &str) {
    props.insert(MessageConst::PROPERTY_REAL_TOPIC, msg.topic.clone());
    props.insert(
        MessageConst::PROPERTY_REAL_QUEUE_ID,
        msg.queue_id.to_string(),
    );
    if !props.contains(MessageConst::PROPERTY_PRODUCER_GROUP) {
        props.insert(MessageConst::PROPERTY_PRODUCER_GROUP, producer_group);
    }
    msg.sys_flag =
        MessageSysFlag::reset_transaction_value(msg.sys_flag, MessageSysFlag::TRANSACTION_NOT_TYPE);
    msg.topic = TRANS_HALF_TOPIC.to_string();
    msg.queue_id = 0;
    msg.properties = props.to_wire_string();
}

/// The topic's config, auto-created from the default topic (or as a retry topic) when allowed.
fn topic_for_send(
    state: &BrokerState,
    h: &SendMessageRequestHeader,
    auto_create: bool,
) -> Result<TopicConfig, HandlerError> {
    if let Some(tc) = state.topics.select(&h.topic) {
        return Ok(tc);
    }
    let mut created = state.topics.create_in_send(
        &h.topic,
        &h.default_topic,
        h.default_topic_queue_nums,
        0,
        auto_create,
    )?;
    if created.is_none() && h.topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
        created = Some(state.topics.create_if_missing(
            &h.topic,
            1,
            perm::PERM_READ | perm::PERM_WRITE,
            0,
        )?);
    }
    created.ok_or_else(|| {
        HandlerError::TopicNotExist(format!("topic[{}] not exist, apply first please!", h.topic))
    })
}
