//! Typed headers and JSON bodies of the requests a client sends to a broker (send, pull,
//! offsets, send-back, transactions, heartbeats, locks, queries) and of the requests a broker
//! sends to a client (NOTIFY_CONSUMER_IDS_CHANGED, CHECK_TRANSACTION_STATE,
//! GET_CONSUMER_RUNNING_INFO, RESET_CONSUMER_CLIENT_OFFSET), with their answers.
//!
//! Header keys and body field names are upstream's (`remoting/protocol/header/*.java`,
//! `body/*.java` and `heartbeat/*.java`, develop branch). Headers follow the parsing rules of
//! [`crate::headers`]: numbers and booleans may arrive as any JSON scalar (C++ and ali-ons
//! send numbers and booleans), unknown keys (`AccessKey`, `Signature`, ...) are ignored.
//! `bname` is the broker name Java 4.9.8+ clients add to requests aimed at one broker group.
//!
//! Bodies are serde structs with upstream's camelCase names, read with
//! [`from_fastjson`](crate::protocol::from_fastjson) (C++ bodies end with `\n`, fastjson may
//! use bare keys) and written as plain JSON with fields in alphabetical order, as fastjson
//! writes them. Maps keyed by a [`MessageQueue`] (`ResetOffsetBody.offsetTable`,
//! `ConsumerRunningInfo.mqTable`) are written the fastjson way, with the queue's JSON object
//! as the key, because Java readers expect exactly that.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RemotingError;
use crate::headers::command_header;
use crate::protocol::{from_fastjson, parse_fastjson};

command_header! {
    /// SEND_MESSAGE (10) with full field names; C++ and Rust clients send it. Java clients
    /// send the same fields as [`SendMessageRequestHeaderV2`] (310, 320).
    pub struct SendMessageRequestHeader {
        pub producer_group: String => "producerGroup",
        pub topic: String => "topic",
        /// Topic whose config an auto-created topic copies (`TBW102`).
        pub default_topic: String => "defaultTopic",
        pub default_topic_queue_nums: i32 => "defaultTopicQueueNums",
        pub queue_id: i32 => "queueId",
        /// [`MessageSysFlag`](crate::message::MessageSysFlag) bits.
        pub sys_flag: i32 => "sysFlag",
        pub born_timestamp: i64 => "bornTimestamp",
        /// User flag of the message.
        pub flag: i32 => "flag",
        /// The properties string (see [`Properties`](crate::message::Properties)).
        pub properties: Option<String> => "properties",
        pub reconsume_times: Option<i32> => "reconsumeTimes",
        pub unit_mode: Option<bool> => "unitMode",
        pub batch: Option<bool> => "batch",
        pub max_reconsume_times: Option<i32> => "maxReconsumeTimes",
        pub bname: Option<String> => "bname",
    }

    /// SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320): [`SendMessageRequestHeader`] with
    /// one-letter keys, to keep headers short. Convert with `From` either way.
    pub struct SendMessageRequestHeaderV2 {
        /// producerGroup
        pub a: String => "a",
        /// topic
        pub b: String => "b",
        /// defaultTopic
        pub c: String => "c",
        /// defaultTopicQueueNums
        pub d: i32 => "d",
        /// queueId
        pub e: i32 => "e",
        /// sysFlag
        pub f: i32 => "f",
        /// bornTimestamp
        pub g: i64 => "g",
        /// flag
        pub h: i32 => "h",
        /// properties
        pub i: Option<String> => "i",
        /// reconsumeTimes
        pub j: Option<i32> => "j",
        /// unitMode
        pub k: Option<bool> => "k",
        /// maxReconsumeTimes
        pub l: Option<i32> => "l",
        /// batch
        pub m: Option<bool> => "m",
        /// brokerName
        pub n: Option<String> => "n",
    }

    /// Answer to a send. `msgId` is the `offsetMsgId` (comma-separated for a batch); the broker
    /// adds `MSG_REGION` and `TRACE_ON`.
    pub struct SendMessageResponseHeader {
        pub msg_id: String => "msgId",
        pub queue_id: i32 => "queueId",
        pub queue_offset: i64 => "queueOffset",
        pub transaction_id: Option<String> => "transactionId",
        pub batch_uniq_id: Option<String> => "batchUniqId",
        pub recall_handle: Option<String> => "recallHandle",
        pub msg_region: Option<String> => "MSG_REGION",
        pub trace_on: Option<bool> => "TRACE_ON",
    }

    /// PULL_MESSAGE (11).
    pub struct PullMessageRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub queue_offset: i64 => "queueOffset",
        pub max_msg_nums: i32 => "maxMsgNums",
        /// [`PullSysFlag`] bits.
        pub sys_flag: i32 => "sysFlag",
        /// Consumer offset to commit with this pull (with [`PullSysFlag::FLAG_COMMIT_OFFSET`]).
        pub commit_offset: i64 => "commitOffset",
        /// How long the broker may hold the pull when no message is there (long polling).
        pub suspend_timeout_millis: i64 => "suspendTimeoutMillis",
        /// Tag expression, used with [`PullSysFlag::FLAG_SUBSCRIPTION`].
        pub subscription: Option<String> => "subscription",
        pub sub_version: i64 => "subVersion",
        /// `TAG` or `SQL92`.
        pub expression_type: Option<String> => "expressionType",
        pub max_msg_bytes: Option<i32> => "maxMsgBytes",
        pub request_source: Option<i32> => "requestSource",
        pub proxy_frowardclient_id: Option<String> => "proxyFrowardClientId",
        pub bname: Option<String> => "bname",
    }

    /// Answer to PULL_MESSAGE.
    pub struct PullMessageResponseHeader {
        /// Broker id the client should pull this queue from next (0 master, else a slave).
        pub suggest_which_broker_id: i64 => "suggestWhichBrokerId",
        pub next_begin_offset: i64 => "nextBeginOffset",
        pub min_offset: i64 => "minOffset",
        pub max_offset: i64 => "maxOffset",
        pub offset_delta: Option<i64> => "offsetDelta",
        pub topic_sys_flag: Option<i32> => "topicSysFlag",
        pub group_sys_flag: Option<i32> => "groupSysFlag",
        pub forbidden_type: Option<i32> => "forbiddenType",
    }

    /// QUERY_CONSUMER_OFFSET (14).
    pub struct QueryConsumerOffsetRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub set_zero_if_not_found: Option<bool> => "setZeroIfNotFound",
        pub bname: Option<String> => "bname",
    }

    /// Answer to QUERY_CONSUMER_OFFSET.
    pub struct QueryConsumerOffsetResponseHeader {
        pub offset: i64 => "offset",
    }

    /// UPDATE_CONSUMER_OFFSET (15).
    pub struct UpdateConsumerOffsetRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub commit_offset: i64 => "commitOffset",
        pub bname: Option<String> => "bname",
    }

    /// GET_MAX_OFFSET (30).
    pub struct GetMaxOffsetRequestHeader {
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        /// Only committed messages (upstream's default when absent: true).
        pub committed: Option<bool> => "committed",
        pub bname: Option<String> => "bname",
    }

    /// Answer to GET_MAX_OFFSET.
    pub struct GetMaxOffsetResponseHeader {
        pub offset: i64 => "offset",
    }

    /// GET_MIN_OFFSET (31).
    pub struct GetMinOffsetRequestHeader {
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub bname: Option<String> => "bname",
    }

    /// Answer to GET_MIN_OFFSET.
    pub struct GetMinOffsetResponseHeader {
        pub offset: i64 => "offset",
    }

    /// GET_EARLIEST_MSG_STORETIME (32).
    pub struct GetEarliestMsgStoretimeRequestHeader {
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub bname: Option<String> => "bname",
    }

    /// Answer to GET_EARLIEST_MSG_STORETIME.
    pub struct GetEarliestMsgStoretimeResponseHeader {
        pub timestamp: i64 => "timestamp",
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP (29).
    pub struct SearchOffsetRequestHeader {
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub timestamp: i64 => "timestamp",
        /// `LOWER` (default) or `UPPER`, any case.
        pub boundary_type: Option<String> => "boundaryType",
        pub bname: Option<String> => "bname",
    }

    /// Answer to SEARCH_OFFSET_BY_TIMESTAMP.
    pub struct SearchOffsetResponseHeader {
        pub offset: i64 => "offset",
    }

    /// CONSUMER_SEND_MSG_BACK (36): re-deliver the message at commit-log `offset` later.
    pub struct ConsumerSendMsgBackRequestHeader {
        /// Commit-log (physical) offset of the message.
        pub offset: i64 => "offset",
        pub group: String => "group",
        /// 0: the broker picks 3 + reconsumeTimes; < 0: straight to the DLQ.
        pub delay_level: i32 => "delayLevel",
        pub origin_msg_id: Option<String> => "originMsgId",
        pub origin_topic: Option<String> => "originTopic",
        pub unit_mode: bool => "unitMode",
        pub max_reconsume_times: Option<i32> => "maxReconsumeTimes",
        pub bname: Option<String> => "bname",
    }

    /// END_TRANSACTION (37), oneway.
    pub struct EndTransactionRequestHeader {
        pub topic: Option<String> => "topic",
        pub producer_group: String => "producerGroup",
        pub tran_state_table_offset: i64 => "tranStateTableOffset",
        pub commit_log_offset: i64 => "commitLogOffset",
        /// [`MessageSysFlag::TRANSACTION_COMMIT_TYPE`](crate::message::MessageSysFlag) (8),
        /// `TRANSACTION_ROLLBACK_TYPE` (12) or `TRANSACTION_NOT_TYPE` (0, unknown).
        pub commit_or_rollback: i32 => "commitOrRollback",
        pub from_transaction_check: bool => "fromTransactionCheck",
        pub msg_id: String => "msgId",
        pub transaction_id: Option<String> => "transactionId",
        pub bname: Option<String> => "bname",
    }

    /// CHECK_TRANSACTION_STATE (39), broker to producer; the body is the half message record.
    pub struct CheckTransactionStateRequestHeader {
        pub topic: Option<String> => "topic",
        pub tran_state_table_offset: i64 => "tranStateTableOffset",
        pub commit_log_offset: i64 => "commitLogOffset",
        pub msg_id: Option<String> => "msgId",
        pub transaction_id: Option<String> => "transactionId",
        pub offset_msg_id: Option<String> => "offsetMsgId",
        pub bname: Option<String> => "bname",
    }

    /// GET_CONSUMER_LIST_BY_GROUP (38); answered with [`GetConsumerListByGroupResponseBody`].
    pub struct GetConsumerListByGroupRequestHeader {
        pub consumer_group: String => "consumerGroup",
    }

    /// NOTIFY_CONSUMER_IDS_CHANGED (40), broker to consumer, oneway.
    pub struct NotifyConsumerIdsChangedRequestHeader {
        pub consumer_group: String => "consumerGroup",
    }

    /// QUERY_MESSAGE (12): messages of `topic` whose key is `key`, stored in the time range.
    pub struct QueryMessageRequestHeader {
        pub topic: String => "topic",
        pub key: String => "key",
        pub max_num: i32 => "maxNum",
        pub begin_timestamp: i64 => "beginTimestamp",
        pub end_timestamp: i64 => "endTimestamp",
        /// `MixAll.UNIQUE_MSG_QUERY_FLAG`: the key is a `UNIQ_KEY`.
        pub unique_key_query: Option<bool> => "_UNIQUE_KEY_QUERY",
    }

    /// Answer to QUERY_MESSAGE.
    pub struct QueryMessageResponseHeader {
        pub index_last_update_timestamp: i64 => "indexLastUpdateTimestamp",
        pub index_last_update_phyoffset: i64 => "indexLastUpdatePhyoffset",
    }

    /// VIEW_MESSAGE_BY_ID (33): the record at commit-log `offset`.
    pub struct ViewMessageRequestHeader {
        pub topic: Option<String> => "topic",
        pub offset: i64 => "offset",
    }

    /// UNREGISTER_CLIENT (35).
    pub struct UnregisterClientRequestHeader {
        pub client_id: String => "clientID",
        pub producer_group: Option<String> => "producerGroup",
        pub consumer_group: Option<String> => "consumerGroup",
    }

    /// RESET_CONSUMER_CLIENT_OFFSET (220), broker to consumer (body [`ResetOffsetBody`]), and
    /// INVOKE_BROKER_TO_RESET_OFFSET (222), admin to broker.
    pub struct ResetOffsetRequestHeader {
        pub group: String => "group",
        pub topic: String => "topic",
        /// -1 (upstream's default) or absent: every queue.
        pub queue_id: Option<i32> => "queueId",
        pub offset: Option<i64> => "offset",
        pub timestamp: i64 => "timestamp",
        pub is_force: bool => "isForce",
    }

    /// GET_CONSUMER_RUNNING_INFO (307), broker to consumer; answered with
    /// [`ConsumerRunningInfo`].
    pub struct GetConsumerRunningInfoRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub client_id: String => "clientId",
        pub jstack_enable: bool => "jstackEnable",
    }

    /// GET_CONSUMER_STATUS_FROM_CLIENT (221), broker to consumer.
    pub struct GetConsumerStatusRequestHeader {
        pub topic: String => "topic",
        pub group: String => "group",
        pub client_addr: Option<String> => "clientAddr",
    }

    /// UPDATE_AND_CREATE_TOPIC (17), admin to broker. Absent numbers take upstream's
    /// defaults (16 queues, perm 6, sys flag 0), absent `topicFilterType` is `SINGLE_TAG`.
    pub struct CreateTopicRequestHeader {
        pub topic: String => "topic",
        pub default_topic: Option<String> => "defaultTopic",
        pub read_queue_nums: Option<i32> => "readQueueNums",
        pub write_queue_nums: Option<i32> => "writeQueueNums",
        pub perm: Option<i32> => "perm",
        pub topic_filter_type: Option<String> => "topicFilterType",
        pub topic_sys_flag: Option<i32> => "topicSysFlag",
        pub order: bool => "order",
    }

    /// DELETE_TOPIC_IN_BROKER (215), admin to broker.
    pub struct DeleteTopicRequestHeader {
        pub topic: String => "topic",
    }

    /// DELETE_SUBSCRIPTIONGROUP (207), admin to broker.
    pub struct DeleteSubscriptionGroupRequestHeader {
        pub group_name: String => "groupName",
    }

    /// GET_SUBSCRIPTIONGROUP_CONFIG (352): one group's config (the proxy asks whether a group
    /// is FIFO).
    pub struct GetSubscriptionGroupConfigRequestHeader {
        pub group: String => "group",
    }

    /// GET_CONSUMER_CONNECTION_LIST (203), admin to broker.
    pub struct GetConsumerConnectionListRequestHeader {
        pub consumer_group: String => "consumerGroup",
    }

    /// GET_PRODUCER_CONNECTION_LIST (204), admin to broker.
    pub struct GetProducerConnectionListRequestHeader {
        pub producer_group: String => "producerGroup",
    }

    /// GET_CONSUME_STATS (208), admin to broker; without `topic`, every topic the group has
    /// offsets of.
    pub struct GetConsumeStatsRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: Option<String> => "topic",
    }

    /// GET_TOPIC_STATS_INFO (202), admin to broker.
    pub struct GetTopicStatsInfoRequestHeader {
        pub topic: String => "topic",
    }

    /// Apogee's addition to UPDATE_CONSUMER_OFFSET (15): a slave pushing an offset committed
    /// to it while its master was gone; the master applies it only if it raises its offset.
    pub struct KeepLargerOffsetHeader {
        pub keep_larger: bool => "keepLarger",
    }

    /// Apogee's header of GET_ALL_DELAY_OFFSET (45) and GET_TIMER_CHECK_POINT (60; upstream's
    /// have none): a returning master asking a slave for the delay / timer progress it made as
    /// acting master.
    pub struct GetAllDelayOffsetRequestHeader {
        pub master_returned: bool => "masterReturned",
    }

    /// CONSUME_MESSAGE_DIRECTLY (309), broker to consumer; the body is a message record.
    pub struct ConsumeMessageDirectlyResultRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub client_id: Option<String> => "clientId",
        pub msg_id: Option<String> => "msgId",
        pub broker_name: Option<String> => "brokerName",
        pub topic: Option<String> => "topic",
        pub topic_sys_flag: Option<i32> => "topicSysFlag",
        pub group_sys_flag: Option<i32> => "groupSysFlag",
    }
}

impl From<SendMessageRequestHeaderV2> for SendMessageRequestHeader {
    fn from(v2: SendMessageRequestHeaderV2) -> Self {
        SendMessageRequestHeader {
            producer_group: v2.a,
            topic: v2.b,
            default_topic: v2.c,
            default_topic_queue_nums: v2.d,
            queue_id: v2.e,
            sys_flag: v2.f,
            born_timestamp: v2.g,
            flag: v2.h,
            properties: v2.i,
            reconsume_times: v2.j,
            unit_mode: v2.k,
            max_reconsume_times: v2.l,
            batch: v2.m,
            bname: v2.n,
        }
    }
}

impl From<SendMessageRequestHeader> for SendMessageRequestHeaderV2 {
    fn from(v1: SendMessageRequestHeader) -> Self {
        SendMessageRequestHeaderV2 {
            a: v1.producer_group,
            b: v1.topic,
            c: v1.default_topic,
            d: v1.default_topic_queue_nums,
            e: v1.queue_id,
            f: v1.sys_flag,
            g: v1.born_timestamp,
            h: v1.flag,
            i: v1.properties,
            j: v1.reconsume_times,
            k: v1.unit_mode,
            l: v1.max_reconsume_times,
            m: v1.batch,
            n: v1.bname,
        }
    }
}

/// Bits of [`PullMessageRequestHeader::sys_flag`] (upstream `PullSysFlag`).
#[derive(Clone, Copy, Debug)]
pub struct PullSysFlag;

impl PullSysFlag {
    /// The pull carries the consumer's offset to commit (`commitOffset`).
    pub const FLAG_COMMIT_OFFSET: i32 = 0x1;
    /// The broker may hold the pull (long polling) for `suspendTimeoutMillis`.
    pub const FLAG_SUSPEND: i32 = 0x1 << 1;
    /// The tag expression is in the header (`subscription`) instead of the heartbeat.
    pub const FLAG_SUBSCRIPTION: i32 = 0x1 << 2;
    pub const FLAG_CLASS_FILTER: i32 = 0x1 << 3;
    pub const FLAG_LITE_PULL_MESSAGE: i32 = 0x1 << 4;

    /// Builds a sysflag from its parts.
    pub fn build(
        commit_offset: bool,
        suspend: bool,
        subscription: bool,
        class_filter: bool,
    ) -> i32 {
        let mut flag = 0;
        if commit_offset {
            flag |= Self::FLAG_COMMIT_OFFSET;
        }
        if suspend {
            flag |= Self::FLAG_SUSPEND;
        }
        if subscription {
            flag |= Self::FLAG_SUBSCRIPTION;
        }
        if class_filter {
            flag |= Self::FLAG_CLASS_FILTER;
        }
        flag
    }

    pub fn has_commit_offset(flag: i32) -> bool {
        flag & Self::FLAG_COMMIT_OFFSET != 0
    }

    pub fn clear_commit_offset(flag: i32) -> i32 {
        flag & !Self::FLAG_COMMIT_OFFSET
    }

    pub fn has_suspend(flag: i32) -> bool {
        flag & Self::FLAG_SUSPEND != 0
    }

    pub fn clear_suspend(flag: i32) -> i32 {
        flag & !Self::FLAG_SUSPEND
    }

    pub fn has_subscription(flag: i32) -> bool {
        flag & Self::FLAG_SUBSCRIPTION != 0
    }

    pub fn has_class_filter(flag: i32) -> bool {
        flag & Self::FLAG_CLASS_FILTER != 0
    }

    pub fn has_lite_pull(flag: i32) -> bool {
        flag & Self::FLAG_LITE_PULL_MESSAGE != 0
    }
}

/// One queue of a topic on one broker group: the unit of load balancing and offsets.
///
/// Ordered by topic, broker name, then queue id (upstream `MessageQueue.compareTo`); serialized
/// with fields in fastjson's alphabetical order.
///
/// ```
/// use remoting::broker_headers::MessageQueue;
///
/// let mq = MessageQueue::new("TopicTest", "broker-a", 3);
/// assert_eq!(
///     serde_json::to_string(&mq).unwrap(),
///     r#"{"brokerName":"broker-a","queueId":3,"topic":"TopicTest"}"#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    pub broker_name: String,
    #[serde(deserialize_with = "lenient_int")]
    pub queue_id: i32,
    pub topic: String,
}

impl MessageQueue {
    pub fn new(topic: impl Into<String>, broker_name: impl Into<String>, queue_id: i32) -> Self {
        MessageQueue {
            broker_name: broker_name.into(),
            queue_id,
            topic: topic.into(),
        }
    }
}

impl Ord for MessageQueue {
    fn cmp(&self, other: &Self) -> Ordering {
        self.topic
            .cmp(&other.topic)
            .then_with(|| self.broker_name.cmp(&other.broker_name))
            .then_with(|| self.queue_id.cmp(&other.queue_id))
    }
}

impl PartialOrd for MessageQueue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for MessageQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MessageQueue [topic={}, brokerName={}, queueId={}]",
            self.topic, self.broker_name, self.queue_id
        )
    }
}

/// Reads a fastjson map whose keys are [`MessageQueue`] objects (after
/// [`parse_fastjson`], each key is the object's JSON text).
fn mq_map_from_value<T: serde::de::DeserializeOwned>(
    value: Option<&Value>,
    what: &str,
) -> Result<BTreeMap<MessageQueue, T>, RemotingError> {
    let bad = |e: serde_json::Error| RemotingError::InvalidBody(format!("{what}: {e}"));
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let mq: MessageQueue = serde_json::from_str(k).map_err(bad)?;
                out.insert(mq, serde_json::from_value(v.clone()).map_err(bad)?);
            }
        }
        Some(other) => {
            return Err(RemotingError::InvalidBody(format!(
                "{what}: expected an object, got {other}"
            )))
        }
    }
    Ok(out)
}

/// Writes `map` as fastjson does: `{{"brokerName":..,"queueId":..,"topic":..}:value,...}`.
fn write_mq_map<T: Serialize>(
    out: &mut String,
    map: &BTreeMap<MessageQueue, T>,
) -> Result<(), RemotingError> {
    out.push('{');
    for (i, (mq, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_text(mq)?);
        out.push(':');
        out.push_str(&json_text(v)?);
    }
    out.push('}');
    Ok(())
}

fn json_text<T: Serialize + ?Sized>(v: &T) -> Result<String, RemotingError> {
    serde_json::to_string(v)
        .map_err(|e| RemotingError::InvalidBody(format!("cannot serialize body: {e}")))
}

/// Declares a Java enum as fastjson reads and writes it: written as its name, read from its
/// name or from its ordinal (the C++ client writes ordinals, e.g. `"messageModel":1`).
macro_rules! java_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $text),)+];

            /// Upstream's name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value called `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
            }

            /// The value with Java ordinal `ordinal`.
            pub fn from_ordinal(ordinal: i64) -> Option<Self> {
                usize::try_from(ordinal).ok().and_then(|i| Self::ALL.get(i)).map(|(v, _)| *v)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let parsed = match Value::deserialize(d)? {
                    Value::String(s) => Self::from_name(&s),
                    Value::Number(n) => n.as_i64().and_then(Self::from_ordinal),
                    _ => None,
                };
                parsed.ok_or_else(|| {
                    serde::de::Error::custom(concat!("not a ", stringify!($name)))
                })
            }
        }
    };
}

java_enum! {
    /// How a consumer gets messages (`ConsumeType`).
    ConsumeType {
        /// Pull consumer.
        ConsumeActively = "CONSUME_ACTIVELY",
        /// Push consumer.
        #[default]
        ConsumePassively = "CONSUME_PASSIVELY",
        ConsumePop = "CONSUME_POP",
    }
}

java_enum! {
    /// Whether each consumer of a group gets a share of the queues or all of them
    /// (`MessageModel`).
    MessageModel {
        Broadcasting = "BROADCASTING",
        #[default]
        Clustering = "CLUSTERING",
    }
}

java_enum! {
    /// Where a consumer group without a committed offset starts (`ConsumeFromWhere`).
    #[allow(clippy::enum_variant_names)]
    ConsumeFromWhere {
        #[default]
        ConsumeFromLastOffset = "CONSUME_FROM_LAST_OFFSET",
        ConsumeFromLastOffsetAndFromMinWhenBootFirst =
            "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
        ConsumeFromMinOffset = "CONSUME_FROM_MIN_OFFSET",
        ConsumeFromMaxOffset = "CONSUME_FROM_MAX_OFFSET",
        ConsumeFromFirstOffset = "CONSUME_FROM_FIRST_OFFSET",
        ConsumeFromTimestamp = "CONSUME_FROM_TIMESTAMP",
    }
}

/// Reads an integer written as a JSON number or as a string of digits (fastjson accepts both;
/// the C++ client writes `"subVersion":"1795560740621"`).
fn lenient_int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    let n = match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom("expected an integer"))
}

/// `ExpressionType.TAG`.
pub const EXPRESSION_TYPE_TAG: &str = "TAG";
/// `ExpressionType.SQL92`.
pub const EXPRESSION_TYPE_SQL92: &str = "SQL92";
/// `SubscriptionData.SUB_ALL`: every tag.
pub const SUB_ALL: &str = "*";

/// One topic subscription of a consumer group, as sent in heartbeats (`SubscriptionData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    pub class_filter_mode: bool,
    /// Hash codes of the tags ([`tags_hash_code`](crate::message::tags_hash_code)).
    pub code_set: BTreeSet<i32>,
    pub expression_type: String,
    /// The expression as the user wrote it (`TagA || TagB`, `*`).
    pub sub_string: String,
    /// Version of the subscription (ms timestamp); a pull with an older one is refused.
    #[serde(deserialize_with = "lenient_int")]
    pub sub_version: i64,
    pub tags_set: BTreeSet<String>,
    pub topic: String,
}

impl Default for SubscriptionData {
    fn default() -> Self {
        SubscriptionData {
            class_filter_mode: false,
            code_set: BTreeSet::new(),
            expression_type: EXPRESSION_TYPE_TAG.to_string(),
            sub_string: String::new(),
            sub_version: 0,
            tags_set: BTreeSet::new(),
            topic: String::new(),
        }
    }
}

/// A producer group in a heartbeat (`ProducerData`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// A consumer group in a heartbeat (`ConsumerData`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub consume_from_where: ConsumeFromWhere,
    pub consume_type: ConsumeType,
    pub group_name: String,
    pub message_model: MessageModel,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

/// HEART_BEAT (34) body (`HeartbeatData`).
///
/// ```
/// use remoting::broker_headers::{HeartbeatData, ProducerData};
///
/// let hb = HeartbeatData {
///     client_id: "10.0.0.1@1234".into(),
///     producer_data_set: vec![ProducerData { group_name: "PG".into() }],
///     ..Default::default()
/// };
/// let back = HeartbeatData::decode(&hb.encode().unwrap()).unwrap();
/// assert_eq!(back, hb);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x: fingerprint of the subscriptions, so a broker can skip unchanged ones.
    #[serde(deserialize_with = "lenient_int")]
    pub heartbeat_fingerprint: i32,
    pub producer_data_set: Vec<ProducerData>,
    /// 5.x: the heartbeat leaves subscriptions out (they did not change).
    pub without_sub: bool,
}

/// Implements `decode` (fastjson-tolerant) and `encode` (plain JSON) for body types.
macro_rules! json_body {
    ($($t:ty),*) => {$(
        impl $t {
            /// Parses the body (JSON or fastjson, a trailing newline allowed).
            pub fn decode(body: &[u8]) -> Result<Self, RemotingError> {
                from_fastjson(body)
            }

            /// The body as JSON.
            pub fn encode(&self) -> Result<Vec<u8>, RemotingError> {
                serde_json::to_vec(self)
                    .map_err(|e| RemotingError::InvalidBody(format!("cannot serialize body: {e}")))
            }
        }
    )*};
}

/// Answer to GET_CONSUMER_LIST_BY_GROUP: client ids of the group's live consumers
/// (`GetConsumerListByGroupResponseBody`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetConsumerListByGroupResponseBody {
    pub consumer_id_list: Vec<String>,
}

/// LOCK_BATCH_MQ (41) body: lock these queues for `clientId` (orderly consumption).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    pub client_id: String,
    pub consumer_group: String,
    pub mq_set: BTreeSet<MessageQueue>,
    /// 5.x: do not forward the lock to the other replicas of the group.
    #[serde(skip_serializing_if = "is_false")]
    pub only_this_broker: bool,
}

/// UNLOCK_BATCH_MQ (42) body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnlockBatchRequestBody {
    pub client_id: String,
    pub consumer_group: String,
    pub mq_set: BTreeSet<MessageQueue>,
    #[serde(skip_serializing_if = "is_false")]
    pub only_this_broker: bool,
}

/// Answer to LOCK_BATCH_MQ: the queues now locked by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockBatchResponseBody {
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

json_body!(
    HeartbeatData,
    GetConsumerListByGroupResponseBody,
    LockBatchRequestBody,
    UnlockBatchRequestBody,
    LockBatchResponseBody
);

/// RESET_CONSUMER_CLIENT_OFFSET body: the offset each queue restarts from (`ResetOffsetBody`).
///
/// ```
/// use remoting::broker_headers::{MessageQueue, ResetOffsetBody};
///
/// let body = br#"{"offsetTable":{{"brokerName":"b","queueId":1,"topic":"T"}:42}}"#;
/// let reset = ResetOffsetBody::decode(body).unwrap();
/// assert_eq!(reset.offset_table[&MessageQueue::new("T", "b", 1)], 42);
/// assert_eq!(reset.encode().unwrap(), body.to_vec());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetOffsetBody {
    pub offset_table: BTreeMap<MessageQueue, i64>,
}

impl ResetOffsetBody {
    /// Parses the fastjson body (queue objects as map keys).
    pub fn decode(body: &[u8]) -> Result<Self, RemotingError> {
        let value = parse_fastjson(body)?;
        Ok(ResetOffsetBody {
            offset_table: mq_map_from_value(value.get("offsetTable"), "offsetTable")?,
        })
    }

    /// Writes the body as fastjson does.
    pub fn encode(&self) -> Result<Vec<u8>, RemotingError> {
        let mut out = String::from("{\"offsetTable\":");
        write_mq_map(&mut out, &self.offset_table)?;
        out.push('}');
        Ok(out.into_bytes())
    }
}

/// Answer to GET_CONSUMER_STATUS_FROM_CLIENT (`GetConsumerStatusBody`): the consumer's
/// offsets of one topic's queues.
///
/// ```
/// use remoting::broker_headers::{GetConsumerStatusBody, MessageQueue};
///
/// let mut status = GetConsumerStatusBody::default();
/// status.message_queue_table.insert(MessageQueue::new("T", "b", 0), 7);
/// let json = String::from_utf8(status.encode().unwrap()).unwrap();
/// assert_eq!(
///     json,
///     r#"{"consumerTable":{},"messageQueueTable":{{"brokerName":"b","queueId":0,"topic":"T"}:7}}"#
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetConsumerStatusBody {
    pub message_queue_table: BTreeMap<MessageQueue, i64>,
}

impl GetConsumerStatusBody {
    /// Writes the body as fastjson does (queue objects as map keys).
    pub fn encode(&self) -> Result<Vec<u8>, RemotingError> {
        let mut out = String::from("{\"consumerTable\":{},\"messageQueueTable\":");
        write_mq_map(&mut out, &self.message_queue_table)?;
        out.push('}');
        Ok(out.into_bytes())
    }
}

/// Outcome of a directly consumed message (`CMResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum CMResult {
    CR_SUCCESS,
    CR_LATER,
    CR_ROLLBACK,
    CR_COMMIT,
    CR_THROW_EXCEPTION,
    CR_RETURN_NULL,
}

/// Answer to CONSUME_MESSAGE_DIRECTLY (`ConsumeMessageDirectlyResult`).
///
/// ```
/// use remoting::broker_headers::{CMResult, ConsumeMessageDirectlyResult};
///
/// let r = ConsumeMessageDirectlyResult {
///     order: false,
///     auto_commit: true,
///     consume_result: Some(CMResult::CR_SUCCESS),
///     remark: None,
///     spent_time_mills: 3,
/// };
/// let json = String::from_utf8(r.encode().unwrap()).unwrap();
/// assert_eq!(
///     json,
///     r#"{"autoCommit":true,"consumeResult":"CR_SUCCESS","order":false,"spentTimeMills":3}"#
/// );
/// assert_eq!(ConsumeMessageDirectlyResult::decode(json.as_bytes()).unwrap(), r);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeMessageDirectlyResult {
    pub auto_commit: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_result: Option<CMResult>,
    pub order: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    pub spent_time_mills: i64,
}

impl ConsumeMessageDirectlyResult {
    pub fn encode(&self) -> Result<Vec<u8>, RemotingError> {
        Ok(json_text(self)?.into_bytes())
    }

    pub fn decode(body: &[u8]) -> Result<Self, RemotingError> {
        from_fastjson(body)
    }
}

/// Per-queue state in [`ConsumerRunningInfo`] (`ProcessQueueInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessQueueInfo {
    pub cached_msg_count: i32,
    pub cached_msg_max_offset: i64,
    pub cached_msg_min_offset: i64,
    #[serde(rename = "cachedMsgSizeInMiB")]
    pub cached_msg_size_in_mib: i32,
    pub commit_offset: i64,
    /// Upstream's spelling.
    pub droped: bool,
    pub last_consume_timestamp: i64,
    pub last_lock_timestamp: i64,
    pub last_pull_timestamp: i64,
    pub locked: bool,
    pub transaction_msg_count: i32,
    pub transaction_msg_max_offset: i64,
    pub transaction_msg_min_offset: i64,
    pub try_unlock_times: i64,
}

/// Per-topic consume statistics in [`ConsumerRunningInfo`] (`ConsumeStatus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumeStatus {
    #[serde(rename = "consumeFailedMsgs")]
    pub consume_failed_msgs: i64,
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
}

/// Answer to GET_CONSUMER_RUNNING_INFO (`ConsumerRunningInfo`): the consumer's config,
/// subscriptions, queues and statistics, as `mqadmin consumerStatus` shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumerRunningInfo {
    pub jstack: Option<String>,
    pub mq_table: BTreeMap<MessageQueue, ProcessQueueInfo>,
    /// Config and `PROP_*` entries (all values are strings, as `java.util.Properties`).
    pub properties: BTreeMap<String, String>,
    pub status_table: BTreeMap<String, ConsumeStatus>,
    pub subscription_set: Vec<SubscriptionData>,
}

impl ConsumerRunningInfo {
    pub const PROP_NAMESERVER_ADDR: &'static str = "PROP_NAMESERVER_ADDR";
    pub const PROP_THREADPOOL_CORE_SIZE: &'static str = "PROP_THREADPOOL_CORE_SIZE";
    pub const PROP_CONSUME_ORDERLY: &'static str = "PROP_CONSUMEORDERLY";
    pub const PROP_CONSUME_TYPE: &'static str = "PROP_CONSUME_TYPE";
    pub const PROP_CLIENT_VERSION: &'static str = "PROP_CLIENT_VERSION";
    pub const PROP_CONSUMER_START_TIMESTAMP: &'static str = "PROP_CONSUMER_START_TIMESTAMP";

    /// Writes the body as fastjson does (queue objects as `mqTable` keys).
    pub fn encode(&self) -> Result<Vec<u8>, RemotingError> {
        let mut out = String::from("{");
        if let Some(jstack) = &self.jstack {
            out.push_str("\"jstack\":");
            out.push_str(&json_text(jstack)?);
            out.push(',');
        }
        out.push_str("\"mqTable\":");
        write_mq_map(&mut out, &self.mq_table)?;
        out.push_str(",\"properties\":");
        out.push_str(&json_text(&self.properties)?);
        out.push_str(",\"statusTable\":");
        out.push_str(&json_text(&self.status_table)?);
        out.push_str(",\"subscriptionSet\":");
        out.push_str(&json_text(&self.subscription_set)?);
        out.push('}');
        Ok(out.into_bytes())
    }

    /// Parses the fastjson body.
    pub fn decode(body: &[u8]) -> Result<Self, RemotingError> {
        let value = parse_fastjson(body)?;
        let properties = match value.get("properties") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(ConsumerRunningInfo {
            jstack: value
                .get("jstack")
                .and_then(Value::as_str)
                .map(str::to_string),
            mq_table: mq_map_from_value(value.get("mqTable"), "mqTable")?,
            properties,
            status_table: typed_member(&value, "statusTable")?,
            subscription_set: typed_member(&value, "subscriptionSet")?,
        })
    }
}

/// Member `name` of `value` as `T`; the default when absent or null.
fn typed_member<T: serde::de::DeserializeOwned + Default>(
    value: &Value,
    name: &str,
) -> Result<T, RemotingError> {
    match value.get(name) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RemotingError::InvalidBody(format!("{name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::CommandHeader;

    #[test]
    fn pull_sys_flag() {
        assert_eq!(PullSysFlag::build(true, true, false, false), 3);
        assert_eq!(PullSysFlag::build(false, true, true, false), 6);
        assert!(PullSysFlag::has_subscription(7));
        assert_eq!(PullSysFlag::clear_commit_offset(7), 6);
        assert_eq!(PullSysFlag::clear_suspend(7), 5);
        assert!(!PullSysFlag::has_class_filter(7));
    }

    #[test]
    fn v1_v2_conversion_keeps_every_field() {
        let v1 = SendMessageRequestHeader {
            producer_group: "PG".into(),
            topic: "T".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 2,
            sys_flag: 1,
            born_timestamp: 99,
            flag: 3,
            properties: Some("A\u{1}b".into()),
            reconsume_times: Some(1),
            unit_mode: Some(false),
            batch: Some(true),
            max_reconsume_times: Some(16),
            bname: Some("broker-a".into()),
        };
        let v2 = SendMessageRequestHeaderV2::from(v1.clone());
        let ext = v2.to_ext_fields();
        assert_eq!(ext.len(), 14);
        assert_eq!(ext["l"], "16");
        assert_eq!(ext["n"], "broker-a");
        let back = SendMessageRequestHeaderV2::from_ext_fields(&ext).unwrap();
        assert_eq!(SendMessageRequestHeader::from(back), v1);
    }

    #[test]
    fn consumer_running_info_round_trip() {
        let mut info = ConsumerRunningInfo::default();
        info.properties.insert(
            ConsumerRunningInfo::PROP_CONSUME_TYPE.into(),
            "CONSUME_PASSIVELY".into(),
        );
        info.mq_table.insert(
            MessageQueue::new("T", "b", 0),
            ProcessQueueInfo {
                commit_offset: 5,
                cached_msg_count: 2,
                ..Default::default()
            },
        );
        info.status_table.insert(
            "T".into(),
            ConsumeStatus {
                pull_tps: 1.5,
                ..Default::default()
            },
        );
        info.subscription_set.push(SubscriptionData {
            topic: "T".into(),
            sub_string: "*".into(),
            ..Default::default()
        });
        let body = info.encode().unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.contains(r#""mqTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"#));
        assert_eq!(ConsumerRunningInfo::decode(&body).unwrap(), info);
    }
}
