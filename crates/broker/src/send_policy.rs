//! The send policy: what a SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) or SEND_BATCH_MESSAGE
//! (320) writes, or why it is refused — topic auto-create from `TBW102`, the retry and DLQ
//! topic rules, transactional half messages, delay levels and timer messages (see
//! [`crate::timer`]). The send handler parses,
//! calls [`plan`], appends what it returns and answers.

use std::net::SocketAddr;

use bytes::Bytes;
use rand::Rng;
use remoting::broker_headers::SendMessageRequestHeader;
use remoting::message::{
    decode_batch, now_millis, MessageConst, MessageSysFlag, Properties, NAME_VALUE_SEPARATOR,
    PROPERTY_SEPARATOR,
};
use remoting::protocol::{perm, TopicConfig};
use store::MessageInner;

use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::error::HandlerError;
use crate::schedule::DelayService;
use crate::timer;
use crate::topic::{
    dlq_topic, is_not_allowed_send_topic, validate_topic_name, RETRY_GROUP_TOPIC_PREFIX,
    TRANS_HALF_TOPIC,
};
use crate::transaction::{ensure_topics, to_half};

/// The messages a send writes (one, or a batch's) and the queue they go to as the producer
/// sees it (the real queue, also for a half or delayed message).
pub(crate) struct Planned {
    pub(crate) msgs: Vec<MessageInner>,
    pub(crate) queue_id: i32,
}

/// Decides what a send request writes, in upstream's order of checks: the broker accepts
/// writes, the topic name is legal and sendable, the topic exists (auto-created from the
/// default topic, or as a retry topic, when allowed), the queue id is in range; then a retry
/// message past its maximum goes to the DLQ, a batch body is split, a transactional message
/// becomes a half message, a message with a delay level waits in the schedule topic and one
/// with a timer property in the timer topic.
/// `born_host` is the producer's address; `config` the snapshot the request is served with.
pub(crate) fn plan(
    state: &BrokerContext,
    delay: &DelayService,
    config: &BrokerConfig,
    born_host: SocketAddr,
    h: &SendMessageRequestHeader,
    body: &Bytes,
    batch: bool,
) -> Result<Planned, HandlerError> {
    let cluster = &config.broker_cluster_name;
    if config.is_slave() {
        return Err(HandlerError::ServiceNotAvailable(
            "broker role is slave, it does not accept messages".into(),
        ));
    }
    if !perm::is_writeable(config.broker_permission) {
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
    let topic_config = topic_for_send(state, h, config.auto_create_topic_enable)?;
    let queue_limit = topic_config
        .write_queue_nums
        .max(topic_config.read_queue_nums);
    if h.queue_id >= queue_limit {
        return Err(HandlerError::System(format!(
            "request queueId[{}] is illegal, {:?} Producer: {}",
            h.queue_id, topic_config, born_host
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
        let rest = &topic[RETRY_GROUP_TOPIC_PREFIX.len()..];
        // `%RETRY%<group>`, or a POP retry topic `%RETRY%<group>_<topic>`.
        let Some(group_config) = state.groups.retry_owner(rest) else {
            return Err(HandlerError::GroupNotExist(format!(
                "subscription group not exist, {rest}"
            )));
        };
        let group = group_config.group_name.as_str();
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

    let store_host = state.store_host();
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
        let decoded = decode_batch(body, &topic)
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
            if timer::requests_timer(&topic, &m.properties) {
                return Err(HandlerError::MessageIllegal(
                    "batch messages do not support timer properties".into(),
                ));
            }
            let mut props = m.properties;
            props.insert(MessageConst::PROPERTY_CLUSTER, cluster.clone());
            msgs.push(make(m.flag, m.body, props));
        }
    } else if let Some(wire) = plain_properties(h.properties.as_deref().unwrap_or(""), cluster) {
        // The common send: nothing to decide from the properties, only CLUSTER to add.
        msgs.push(MessageInner {
            properties: wire,
            ..make(h.flag, body.clone(), Properties::new())
        });
    } else {
        let mut props = Properties::parse(h.properties.as_deref().unwrap_or(""));
        props.insert(MessageConst::PROPERTY_CLUSTER, cluster.clone());
        let mut msg = make(h.flag, body.clone(), props.clone());
        let tran_type = MessageSysFlag::transaction_value(sys_flag);
        let prepared = props.get(MessageConst::PROPERTY_TRANSACTION_PREPARED) == Some("true")
            || tran_type == MessageSysFlag::TRANSACTION_PREPARED_TYPE;
        if prepared {
            if config.reject_transaction_message {
                return Err(HandlerError::NoPermission(format!(
                    "the broker[{}] sending transaction message is forbidden",
                    state.broker_addr()
                )));
            }
            ensure_topics(state, TRANS_HALF_TOPIC);
            to_half(&mut msg, &mut props, &h.producer_group);
        } else {
            let level = props
                .get(MessageConst::PROPERTY_DELAY_TIME_LEVEL)
                .and_then(|l| l.trim().parse::<i32>().ok())
                .unwrap_or(0);
            if level > 0 {
                timer::clear_timer_request(&mut props);
                delay.to_schedule(&mut msg, &mut props, level);
            } else if timer::requests_timer(&msg.topic, &props) {
                timer::to_timer(&mut msg, &mut props, config, now_millis())?;
            }
        }
        msgs.push(msg);
    }
    Ok(Planned { msgs, queue_id })
}

/// Properties a single send's plan reads or replaces: a transaction, a delay level, a timer,
/// and CLUSTER (which the broker sets).
const PLANNED_PROPERTIES: [&str; 6] = [
    MessageConst::PROPERTY_TRANSACTION_PREPARED,
    MessageConst::PROPERTY_DELAY_TIME_LEVEL,
    MessageConst::PROPERTY_TIMER_DELAY_SEC,
    MessageConst::PROPERTY_TIMER_DELAY_MS,
    MessageConst::PROPERTY_TIMER_DELIVER_MS,
    MessageConst::PROPERTY_CLUSTER,
];

/// Most properties [`plain_properties`] checks for repeats by comparison.
const PLAIN_MAX_PROPERTIES: usize = 16;

/// The stored properties of a plain message, built without parsing them into a map: the
/// producer's string with `CLUSTER` appended, exactly what parsing, inserting `CLUSTER` and
/// writing would give. `None` (take the general path) when a name of [`PLANNED_PROPERTIES`]
/// is there, a pair is malformed or repeated, or there are more than
/// [`PLAIN_MAX_PROPERTIES`].
fn plain_properties(raw: &str, cluster: &str) -> Option<String> {
    let pairs = raw.strip_suffix(PROPERTY_SEPARATOR).unwrap_or(raw);
    let mut names = [""; PLAIN_MAX_PROPERTIES];
    let mut n = 0;
    if !pairs.is_empty() {
        for pair in pairs.split(PROPERTY_SEPARATOR) {
            let (name, value) = pair.split_once(NAME_VALUE_SEPARATOR)?;
            if name.is_empty()
                || value.is_empty()
                || n == names.len()
                || PLANNED_PROPERTIES.contains(&name)
                || names[..n].contains(&name)
            {
                return None;
            }
            names[n] = name;
            n += 1;
        }
    }
    let cluster_key = MessageConst::PROPERTY_CLUSTER;
    let mut out = String::with_capacity(pairs.len() + cluster_key.len() + cluster.len() + 2);
    out.push_str(pairs);
    if !pairs.is_empty() {
        out.push(PROPERTY_SEPARATOR);
    }
    out.push_str(cluster_key);
    out.push(NAME_VALUE_SEPARATOR);
    out.push_str(cluster);
    Some(out)
}

/// The topic's config, auto-created from the default topic (or as a retry topic) when allowed.
fn topic_for_send(
    state: &BrokerContext,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general path stores for `raw`.
    fn general(raw: &str, cluster: &str) -> String {
        let mut props = Properties::parse(raw);
        props.insert(MessageConst::PROPERTY_CLUSTER, cluster);
        props.to_wire_string()
    }

    #[test]
    fn plain_properties_equal_the_general_path_or_defer_to_it() {
        let cases = [
            "",
            "\u{2}",
            "KEYS\u{1}k1\u{2}TAGS\u{1}t\u{2}WAIT\u{1}true",
            "KEYS\u{1}k1\u{2}TAGS\u{1}t\u{2}",
            "UNIQ_KEY\u{1}AC11\u{1}00\u{2}TAGS\u{1}t",
            // Deferred: planned names, repeats, malformed pairs.
            "DELAY\u{1}3\u{2}KEYS\u{1}k",
            "TRAN_MSG\u{1}true",
            "TIMER_DELAY_SEC\u{1}5",
            "CLUSTER\u{1}theirs\u{2}KEYS\u{1}k",
            "KEYS\u{1}a\u{2}KEYS\u{1}b",
            "KEYS\u{1}\u{2}TAGS\u{1}t",
            "KEYS\u{2}TAGS\u{1}t",
            "\u{2}\u{2}KEYS\u{1}k",
        ];
        let mut fast = 0;
        for raw in cases {
            if let Some(wire) = plain_properties(raw, "C1") {
                assert_eq!(wire, general(raw, "C1"), "{raw:?}");
                fast += 1;
            }
        }
        assert_eq!(fast, 5, "the first five cases take the plain path");
        let many: Vec<String> = (0..PLAIN_MAX_PROPERTIES + 1)
            .map(|i| format!("K{i}\u{1}v"))
            .collect();
        assert!(plain_properties(&many.join("\u{2}"), "C1").is_none());
        let enough = &many[..PLAIN_MAX_PROPERTIES];
        let raw = enough.join("\u{2}");
        assert_eq!(plain_properties(&raw, "C1"), Some(general(&raw, "C1")));
    }
}
