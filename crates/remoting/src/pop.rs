//! POP consumption on the wire (upstream 5.x): the headers of POP_MESSAGE (200050),
//! ACK_MESSAGE (200051), BATCH_ACK_MESSAGE (200151, JSON body), CHANGE_MESSAGE_INVISIBLETIME
//! (200053), NOTIFICATION (200054) and POLLING_INFO (200055); the receipt handle a popped
//! message carries (`POP_CK`, upstream's `ExtraInfoUtil` format); the per-queue offset lists of
//! a pop answer (`startOffsetInfo`, `msgOffsetInfo`, `orderCountInfo`); and the name of a
//! group's POP retry topic.
//!
//! A receipt handle is `ckQueueOffset popTime invisibleTime reviveQid retryMark brokerName
//! queueId [queueOffset]`, separated by spaces. `ckQueueOffset` is the first queue offset of
//! the pop that handed the message out (the checkpoint's start), `retryMark` is `0` for the
//! topic itself, `1` for the group's retry topic `%RETRY%<group>_<topic>` and `2` for the
//! `+`-separated V2 name; `reviveQid` [`ORDER_REVIVE_QUEUE`] marks a FIFO (orderly) pop.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::RemotingError;
use crate::headers::command_header;

/// `reviveQid` of an orderly pop (upstream `KeyBuilder.POP_ORDER_REVIVE_QUEUE`).
pub const ORDER_REVIVE_QUEUE: i32 = 999;

/// Prefix of retry and POP retry topics.
const RETRY_PREFIX: &str = "%RETRY%";

/// The POP retry topic of `group` consuming `topic` (upstream's V1 name, the default:
/// `%RETRY%<group>_<topic>`).
pub fn pop_retry_topic(topic: &str, group: &str) -> String {
    format!("{RETRY_PREFIX}{group}_{topic}")
}

/// The V2 name (`%RETRY%<group>+<topic>`, upstream `enableRetryTopicV2`).
pub fn pop_retry_topic_v2(topic: &str, group: &str) -> String {
    format!("{RETRY_PREFIX}{group}+{topic}")
}

/// Retry mark of a topic in handles and offset lists: `0` normal, `1` retry, `2` retry V2.
pub fn retry_mark(topic: &str) -> char {
    if topic.starts_with(RETRY_PREFIX) {
        if topic.contains('+') {
            '2'
        } else {
            '1'
        }
    } else {
        '0'
    }
}

/// The topic a handle's `retryMark` names, from the topic the client asked about. A topic
/// that already is a retry topic is returned as it is.
pub fn real_topic(topic: &str, group: &str, mark: char) -> String {
    if topic.starts_with(RETRY_PREFIX) {
        return topic.to_string();
    }
    match mark {
        '1' => pop_retry_topic(topic, group),
        '2' => pop_retry_topic_v2(topic, group),
        _ => topic.to_string(),
    }
}

fn bad_handle(s: &str) -> RemotingError {
    RemotingError::InvalidField {
        field: "extraInfo",
        value: s.to_string(),
    }
}

fn bad_offset_info(s: &str) -> RemotingError {
    RemotingError::InvalidField {
        field: "offsetInfo",
        value: s.to_string(),
    }
}

/// A popped message's receipt handle (the `POP_CK` property, `extraInfo` of an ack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraInfo {
    /// First queue offset of the pop that handed the message out.
    pub ck_queue_offset: i64,
    pub pop_time: i64,
    pub invisible_time: i64,
    pub revive_qid: i32,
    /// `0`, `1` or `2`, see [`retry_mark`].
    pub retry: char,
    pub broker_name: String,
    pub queue_id: i32,
    /// The message's own queue offset (absent in the 7-field form).
    pub queue_offset: Option<i64>,
}

impl ExtraInfo {
    /// Parses a handle; a malformed one is an error naming the field.
    pub fn parse(s: &str) -> Result<ExtraInfo, RemotingError> {
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() < 7 {
            return Err(bad_handle(s));
        }
        fn num<T: std::str::FromStr>(v: &str, s: &str) -> Result<T, RemotingError> {
            v.parse().map_err(|_| bad_handle(s))
        }
        let retry = match f[4] {
            "0" => '0',
            "1" => '1',
            "2" => '2',
            _ => return Err(bad_handle(s)),
        };
        Ok(ExtraInfo {
            ck_queue_offset: num(f[0], s)?,
            pop_time: num(f[1], s)?,
            invisible_time: num(f[2], s)?,
            revive_qid: num(f[3], s)?,
            retry,
            broker_name: f[5].to_string(),
            queue_id: num(f[6], s)?,
            queue_offset: f.get(7).map(|v| num(v, s)).transpose()?,
        })
    }

    /// Whether the handle comes from an orderly pop.
    pub fn is_order(&self) -> bool {
        self.revive_qid == ORDER_REVIVE_QUEUE
    }
}

impl fmt::Display for ExtraInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {} {}",
            self.ck_queue_offset,
            self.pop_time,
            self.invisible_time,
            self.revive_qid,
            self.retry,
            self.broker_name,
            self.queue_id
        )?;
        if let Some(o) = self.queue_offset {
            write!(f, " {o}")?;
        }
        Ok(())
    }
}

/// Appends one queue's entry to an offset list (`startOffsetInfo`, `msgOffsetInfo`,
/// `orderCountInfo`): `mark queueId value`, entries separated by `;`.
pub fn push_offset_info(out: &mut String, topic: &str, queue_id: i32, value: &str) {
    if !out.is_empty() {
        out.push(';');
    }
    out.push(retry_mark(topic));
    out.push(' ');
    out.push_str(&queue_id.to_string());
    out.push(' ');
    out.push_str(value);
}

/// Appends a FIFO batch's delivery counts to an `orderCountInfo` list as upstream's broker
/// writes it: the queue's entry `mark queueId count` with the batch's smallest count, then
/// `mark qo<queueId>%<offset> count` for each offset counted more than that.
pub fn push_order_counts(
    out: &mut String,
    topic: &str,
    queue_id: i32,
    offsets: &[i64],
    counts: &[i32],
) {
    let min = counts.iter().copied().min().unwrap_or(0);
    push_offset_info(out, topic, queue_id, &min.to_string());
    for (o, c) in offsets.iter().zip(counts).filter(|(_, c)| **c > min) {
        out.push(';');
        out.push(retry_mark(topic));
        out.push_str(&format!(" qo{queue_id}%{o} {c}"));
    }
}

/// How many times the message at `offset` of queue `queue_id` of `topic` was handed out
/// before, by an `orderCountInfo` list (its offset's entry, else its queue's); `None` when the
/// list names neither.
pub fn order_count(info: &str, topic: &str, queue_id: i32, offset: i64) -> Option<i32> {
    let mark = retry_mark(topic);
    let entries = info.split(';').filter_map(|e| {
        let mut f = e.split(' ');
        let (m, k, v) = (f.next()?, f.next()?, f.next()?);
        (f.next().is_none() && m.starts_with(mark)).then_some((k, v.parse::<i32>().ok()?))
    });
    let per_offset = format!("qo{queue_id}%{offset}");
    let queue = queue_id.to_string();
    let mut by_queue = None;
    for (k, v) in entries {
        if k == per_offset {
            return Some(v);
        }
        if k == queue {
            by_queue = Some(v);
        }
    }
    by_queue
}

/// Parses an offset list into `(mark, queueId, value)` entries.
pub fn parse_offset_info(s: &str) -> Result<Vec<(char, i32, String)>, RemotingError> {
    let mut out = Vec::new();
    for one in s.split(';').filter(|e| !e.is_empty()) {
        let f: Vec<&str> = one.split(' ').collect();
        let (Some(mark), Some(q), Some(v), None) = (f.first(), f.get(1), f.get(2), f.get(3)) else {
            return Err(bad_offset_info(one));
        };
        let mark = mark.chars().next().unwrap_or('0');
        let q = q.parse().map_err(|_| bad_offset_info(one))?;
        out.push((mark, q, v.to_string()));
    }
    Ok(out)
}

/// The receipt handle of each message of a POP answer, as upstream's Java client builds them
/// (`MQClientAPIImpl.processPopResponse`): a message that carries `POP_CK` (a retried one)
/// keeps it; the others get `startOffset popTime invisibleTime reviveQid mark brokerName
/// queueId queueOffset` from the answer's header. A message whose queue is missing from
/// `startOffsetInfo` is an error.
pub fn pop_handles(
    header: &PopMessageResponseHeader,
    messages: &[message::MessageExt],
    broker_name: &str,
) -> Result<Vec<ExtraInfo>, RemotingError> {
    let starts = parse_offset_info(header.start_offset_info.as_deref().unwrap_or(""))?;
    messages
        .iter()
        .map(|m| {
            if let Some(ck) = m.message.property(message::MessageConst::PROPERTY_POP_CK) {
                return ExtraInfo::parse(ck);
            }
            let mark = retry_mark(&m.message.topic);
            let start = starts
                .iter()
                .find(|(k, q, _)| *k == mark && *q == m.queue_id)
                .and_then(|(_, _, v)| v.parse().ok())
                .ok_or_else(|| {
                    bad_offset_info(header.start_offset_info.as_deref().unwrap_or(""))
                })?;
            Ok(ExtraInfo {
                ck_queue_offset: start,
                pop_time: header.pop_time,
                invisible_time: header.invisible_time,
                revive_qid: header.revive_qid,
                retry: mark,
                broker_name: broker_name.to_string(),
                queue_id: m.queue_id,
                queue_offset: Some(m.queue_offset),
            })
        })
        .collect()
}

command_header! {
    /// POP_MESSAGE (200050). `queueId` -1 pops from every readable queue of the topic.
    pub struct PopMessageRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub max_msg_nums: i32 => "maxMsgNums",
        /// How long popped messages stay invisible, ms.
        pub invisible_time: i64 => "invisibleTime",
        /// Longest hold when nothing is there (long polling), ms; 0 answers at once.
        pub poll_time: i64 => "pollTime",
        pub born_time: i64 => "bornTime",
        /// Where a group without an offset starts: 0 (MIN) its first message, 1 (MAX) its
        /// last.
        pub init_mode: i32 => "initMode",
        pub exp_type: Option<String> => "expType",
        pub exp: Option<String> => "exp",
        /// FIFO: one batch per queue in flight until acked or invisible again.
        pub order: Option<bool> => "order",
        pub attempt_id: Option<String> => "attemptId",
    }

    /// Answer to POP_MESSAGE; the body holds the stored records, as a pull answer does.
    pub struct PopMessageResponseHeader {
        pub pop_time: i64 => "popTime",
        pub invisible_time: i64 => "invisibleTime",
        pub revive_qid: i32 => "reviveQid",
        /// Messages left behind the popped ones.
        pub rest_num: i64 => "restNum",
        pub start_offset_info: Option<String> => "startOffsetInfo",
        pub msg_offset_info: Option<String> => "msgOffsetInfo",
        pub order_count_info: Option<String> => "orderCountInfo",
    }

    /// ACK_MESSAGE (200051): `topic` is the real topic (the retry topic for a retried message).
    pub struct AckMessageRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        /// The message's receipt handle.
        pub extra_info: String => "extraInfo",
        /// The message's queue offset.
        pub offset: i64 => "offset",
    }

    /// CHANGE_MESSAGE_INVISIBLETIME (200053).
    pub struct ChangeInvisibleTimeRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub extra_info: String => "extraInfo",
        pub offset: i64 => "offset",
        /// New invisible time, from now, ms.
        pub invisible_time: i64 => "invisibleTime",
    }

    /// Answer to CHANGE_MESSAGE_INVISIBLETIME: the new handle is built from these.
    pub struct ChangeInvisibleTimeResponseHeader {
        pub pop_time: i64 => "popTime",
        pub invisible_time: i64 => "invisibleTime",
        pub revive_qid: i32 => "reviveQid",
    }

    /// NOTIFICATION (200054): is there something to pop (held up to `pollTime`)?
    pub struct NotificationRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
        pub poll_time: i64 => "pollTime",
        pub born_time: i64 => "bornTime",
        pub order: Option<bool> => "order",
        pub attempt_id: Option<String> => "attemptId",
    }

    /// Answer to NOTIFICATION.
    pub struct NotificationResponseHeader {
        pub has_msg: bool => "hasMsg",
        pub polling_full: Option<bool> => "pollingFull",
    }

    /// POLLING_INFO (200055): how many pops are held on the queue.
    pub struct PollingInfoRequestHeader {
        pub consumer_group: String => "consumerGroup",
        pub topic: String => "topic",
        pub queue_id: i32 => "queueId",
    }

    /// Answer to POLLING_INFO.
    pub struct PollingInfoResponseHeader {
        pub polling_num: i32 => "pollingNum",
    }
}

/// One queue's acks in a BATCH_ACK_MESSAGE body: bit `i` of `bit_set` acks queue offset
/// `start_offset + i`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    #[serde(rename = "c", alias = "consumerGroup")]
    pub consumer_group: String,
    /// The topic the client asked about; [`Self::retry`] says whether the retry topic is meant.
    #[serde(rename = "t", alias = "topic")]
    pub topic: String,
    #[serde(rename = "r", alias = "retry", default)]
    pub retry: String,
    #[serde(rename = "so", alias = "startOffset")]
    pub start_offset: i64,
    #[serde(rename = "q", alias = "queueId")]
    pub queue_id: i32,
    #[serde(rename = "rq", alias = "reviveQueueId")]
    pub revive_queue_id: i32,
    #[serde(rename = "pt", alias = "popTime")]
    pub pop_time: i64,
    #[serde(rename = "it", alias = "invisibleTime")]
    pub invisible_time: i64,
    /// `java.util.BitSet.toByteArray()` in base64, as fastjson writes a byte array.
    #[serde(rename = "b", alias = "bitSet", default)]
    pub bit_set: String,
}

impl BatchAck {
    /// The offsets `bit_set` acks, ascending. A malformed bit set is an error.
    pub fn acked_offsets(&self) -> Result<Vec<i64>, RemotingError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.bit_set.as_bytes())
            .map_err(|e| RemotingError::InvalidBody(format!("batch ack bit set: {e}")))?;
        let mut out = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    out.push(self.start_offset + (i * 8 + bit) as i64);
                }
            }
        }
        Ok(out)
    }

    /// Sets `bit_set` from offsets at or after `start_offset`.
    pub fn set_offsets(&mut self, offsets: &[i64]) {
        let mut bytes: Vec<u8> = Vec::new();
        for o in offsets {
            let Ok(i) = usize::try_from(o - self.start_offset) else {
                continue;
            };
            if bytes.len() <= i / 8 {
                bytes.resize(i / 8 + 1, 0);
            }
            bytes[i / 8] |= 1 << (i % 8);
        }
        self.bit_set = base64::engine::general_purpose::STANDARD.encode(bytes);
    }
}

/// BATCH_ACK_MESSAGE (200151) body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAckMessageRequestBody {
    #[serde(default)]
    pub broker_name: String,
    #[serde(default)]
    pub acks: Vec<BatchAck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_in_upstream_format() {
        // Upstream ExtraInfoUtil.buildExtraInfo(10, 1700000000000, 60000, 3, "T", "b1", 2, 12).
        let s = "10 1700000000000 60000 3 0 b1 2 12";
        let h = ExtraInfo::parse(s).unwrap();
        assert_eq!(h.ck_queue_offset, 10);
        assert_eq!(h.queue_offset, Some(12));
        assert!(!h.is_order());
        assert_eq!(h.to_string(), s);
        let seven = ExtraInfo::parse("10 1 2 999 1 b1 0").unwrap();
        assert!(seven.is_order());
        assert_eq!(seven.queue_offset, None);
        assert!(ExtraInfo::parse("10 1 2").is_err());
        assert!(ExtraInfo::parse("x 1 2 3 0 b 0").is_err());
        assert!(ExtraInfo::parse("1 1 2 3 7 b 0").is_err());
    }

    #[test]
    fn retry_topics_and_marks() {
        assert_eq!(pop_retry_topic("T", "G"), "%RETRY%G_T");
        assert_eq!(retry_mark("%RETRY%G_T"), '1');
        assert_eq!(retry_mark("%RETRY%G+T"), '2');
        assert_eq!(retry_mark("T"), '0');
        assert_eq!(real_topic("T", "G", '1'), "%RETRY%G_T");
        assert_eq!(real_topic("%RETRY%G_T", "G", '1'), "%RETRY%G_T");
        assert_eq!(real_topic("T", "G", '0'), "T");
    }

    #[test]
    fn order_counts_per_queue_and_per_offset() {
        let mut info = String::new();
        push_order_counts(&mut info, "T", 0, &[3, 4], &[1, 1]);
        push_order_counts(&mut info, "T", 1, &[7, 8, 9], &[0, 2, 0]);
        assert_eq!(info, "0 0 1;0 1 0;0 qo1%8 2");
        assert_eq!(order_count(&info, "T", 0, 4), Some(1));
        assert_eq!(order_count(&info, "T", 1, 8), Some(2));
        assert_eq!(order_count(&info, "T", 1, 9), Some(0));
        assert_eq!(order_count(&info, "T", 2, 9), None);
        assert_eq!(order_count(&info, "%RETRY%G_T", 0, 4), None);
        assert_eq!(order_count("", "T", 0, 4), None);
    }

    #[test]
    fn offset_lists() {
        let mut s = String::new();
        push_offset_info(&mut s, "T", 1, "5");
        push_offset_info(&mut s, "%RETRY%G_T", 0, "7,8");
        assert_eq!(s, "0 1 5;1 0 7,8");
        let p = parse_offset_info(&s).unwrap();
        assert_eq!(p[1], ('1', 0, "7,8".to_string()));
        assert!(parse_offset_info("0 1").is_err());
    }

    #[test]
    fn batch_ack_bits_match_java_bitset_bytes() {
        let mut b = BatchAck {
            start_offset: 100,
            ..BatchAck::default()
        };
        b.set_offsets(&[100, 102, 109]);
        // BitSet{0,2,9}.toByteArray() = [0b101, 0b10] -> base64 "BQI=".
        assert_eq!(b.bit_set, "BQI=");
        assert_eq!(b.acked_offsets().unwrap(), vec![100, 102, 109]);
        let body: BatchAckMessageRequestBody = serde_json::from_str(
            r#"{"acks":[{"c":"G","t":"T","r":"0","so":1,"q":0,"rq":2,"pt":5,"it":6,"b":"AQ=="}],"brokerName":"b1"}"#,
        )
        .unwrap();
        assert_eq!(body.acks[0].acked_offsets().unwrap(), vec![1]);
    }
}
