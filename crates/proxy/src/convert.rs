//! Messages between the gRPC form (`apache.rocketmq.v2.Message`) and the remoting form.

use std::time::{Duration, SystemTime};

use proto::v2::{
    Code, Digest, DigestType, Encoding, Message, MessageType, Resource, Status, SystemProperties,
};
use remoting::message::{Message as RemotingMessage, MessageConst, MessageExt};

use crate::status::status;

/// Properties the broker or the remoting client set; never shown as user properties.
const SYSTEM_PROPERTIES: &[&str] = &[
    MessageConst::PROPERTY_TAGS,
    MessageConst::PROPERTY_KEYS,
    MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    MessageConst::PROPERTY_SHARDING_KEY,
    MessageConst::PROPERTY_TIMER_DELIVER_MS,
    MessageConst::PROPERTY_POP_CK,
    MessageConst::PROPERTY_RECONSUME_TIME,
];

/// Whether a property name is the system's (upstream's reserved names are upper case with `_`
/// or start with `__`; users' properties of that shape are kept as well).
fn is_system_property(name: &str) -> bool {
    SYSTEM_PROPERTIES.contains(&name)
        || name.starts_with("TIMER_")
        || name.starts_with("POP_")
        || matches!(
            name,
            "REAL_TOPIC"
                | "REAL_QID"
                | "MIN_OFFSET"
                | "MAX_OFFSET"
                | "CLUSTER"
                | "WAIT"
                | "RETRY_TOPIC"
                | "ORIGIN_MESSAGE_ID"
                | "MAX_RECONSUME_TIMES"
                | "1ST_POP_TIME"
                | "CONSUME_START_TIME"
                | "TRACE_ON"
                | "MSG_REGION"
                | "DELAY"
                | "PGROUP"
                | "TRAN_MSG"
                | "INNER_NUM"
                | "INNER_BASE"
                | "__BORNHOST"
        )
}

/// Whether a gRPC message is transactional (sent as a half message).
pub fn is_transactional(m: &Message) -> bool {
    m.system_properties
        .as_ref()
        .is_some_and(|s| MessageType::try_from(s.message_type) == Ok(MessageType::Transaction))
}

/// A message to send, as the remoting client would build it; a message the broker could not
/// take is refused with its status. As upstream's proxy, the producer group (`PGROUP`) is the
/// topic, and a transactional message is marked prepared (`TRAN_MSG`), with its check
/// immunity from `orphaned_transaction_recovery_duration`.
pub fn to_remoting(topic: &str, m: &Message) -> Result<RemotingMessage, Status> {
    let no_properties = SystemProperties::default();
    let sys = m.system_properties.as_ref().unwrap_or(&no_properties);
    if sys.message_id.is_empty() {
        return Err(status(Code::IllegalMessageId, "message id is empty"));
    }
    if m.body.is_empty() {
        return Err(status(Code::MessageBodyEmpty, "message body is empty"));
    }
    match MessageType::try_from(sys.message_type) {
        Ok(MessageType::Transaction) if sys.delivery_timestamp.is_some() => {
            return Err(status(
                Code::IllegalDeliveryTime,
                "a transactional message cannot have a delivery time",
            ))
        }
        Ok(MessageType::Fifo) if sys.message_group.as_deref().unwrap_or("").is_empty() => {
            return Err(status(
                Code::IllegalMessageGroup,
                "a FIFO message needs a message group",
            ))
        }
        _ => {}
    }
    if Encoding::try_from(sys.body_encoding) == Ok(Encoding::Gzip) {
        return Err(status(
            Code::NotImplemented,
            "gzip-encoded message bodies are not implemented by this proxy yet",
        ));
    }
    let mut out = RemotingMessage::new(topic, m.body.clone());
    for (k, v) in &m.user_properties {
        out.properties.insert(k.clone(), v.clone());
    }
    if let Some(tag) = sys.tag.as_deref().filter(|t| !t.is_empty()) {
        out.properties.insert(MessageConst::PROPERTY_TAGS, tag);
    }
    if !sys.keys.is_empty() {
        out.properties.insert(
            MessageConst::PROPERTY_KEYS,
            sys.keys.join(MessageConst::KEY_SEPARATOR),
        );
    }
    out.properties.insert(
        MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
        sys.message_id.as_str(),
    );
    if let Some(group) = sys.message_group.as_deref().filter(|g| !g.is_empty()) {
        out.properties
            .insert(MessageConst::PROPERTY_SHARDING_KEY, group);
    }
    out.properties
        .insert(MessageConst::PROPERTY_PRODUCER_GROUP, topic);
    if MessageType::try_from(sys.message_type) == Ok(MessageType::Transaction) {
        out.properties
            .insert(MessageConst::PROPERTY_TRANSACTION_PREPARED, "true");
        if let Some(d) = duration(sys.orphaned_transaction_recovery_duration.as_ref()) {
            out.properties.insert(
                MessageConst::PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS,
                d.as_secs().to_string(),
            );
        }
    }
    if let Some(at) = &sys.delivery_timestamp {
        let ms = timestamp_millis(at)
            .ok_or_else(|| status(Code::IllegalDeliveryTime, "delivery timestamp out of range"))?;
        out.properties
            .insert(MessageConst::PROPERTY_TIMER_DELIVER_MS, ms.to_string());
    }
    Ok(out)
}

/// A popped message for the client: `topic` is the one received from, `receipt_handle` what
/// acking it takes, `invisible` the invisible duration of the pop.
pub fn to_grpc(
    topic: &str,
    m: &MessageExt,
    receipt_handle: String,
    invisible: Duration,
) -> Message {
    let msg = &m.message;
    let message_group = msg
        .property(MessageConst::PROPERTY_SHARDING_KEY)
        .map(str::to_string);
    let delivery = msg
        .property(MessageConst::PROPERTY_TIMER_DELIVER_MS)
        .and_then(|v| v.parse::<i64>().ok());
    let message_type = if msg.property(MessageConst::PROPERTY_TRANSACTION_PREPARED) == Some("true")
    {
        MessageType::Transaction
    } else if message_group.is_some() {
        MessageType::Fifo
    } else if delivery.is_some() {
        MessageType::Delay
    } else {
        MessageType::Normal
    };
    let system_properties = SystemProperties {
        tag: msg.tags().map(str::to_string),
        keys: msg.keys().into_iter().map(str::to_string).collect(),
        message_id: msg
            .uniq_key()
            .map(str::to_string)
            .unwrap_or_else(|| m.offset_msg_id.clone()),
        body_digest: Some(Digest {
            r#type: DigestType::Crc32 as i32,
            checksum: format!("{:08X}", crc32fast::hash(&msg.body)),
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type as i32,
        born_timestamp: Some(millis_timestamp(m.born_timestamp)),
        born_host: m.born_host.ip().to_string(),
        store_timestamp: Some(millis_timestamp(m.store_timestamp)),
        store_host: m.store_host.to_string(),
        delivery_timestamp: delivery.map(millis_timestamp),
        receipt_handle: Some(receipt_handle),
        queue_id: m.queue_id,
        queue_offset: Some(m.queue_offset),
        invisible_duration: prost_types::Duration::try_from(invisible).ok(),
        delivery_attempt: Some(m.reconsume_times.saturating_add(1)),
        message_group,
        ..Default::default()
    };
    Message {
        topic: Some(Resource {
            resource_namespace: String::new(),
            name: topic.to_string(),
        }),
        user_properties: msg
            .properties
            .iter()
            .filter(|(k, _)| !is_system_property(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        system_properties: Some(system_properties),
        body: msg.body.clone(),
    }
}

/// Milliseconds since the epoch of a timestamp; `None` when out of range.
fn timestamp_millis(t: &prost_types::Timestamp) -> Option<i64> {
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos) / 1_000_000)
}

/// A timestamp at `ms` milliseconds since the epoch.
pub fn millis_timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Now, as a timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// A protobuf duration as a std one; `None` when negative or absent.
pub fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = millis_timestamp(1_700_000_000_123);
        assert_eq!(timestamp_millis(&t), Some(1_700_000_000_123));
        assert_eq!(timestamp_millis(&millis_timestamp(-1)), Some(-1));
    }
}
