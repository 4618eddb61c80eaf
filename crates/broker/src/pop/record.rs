//! Records of the revive log (`rmq_sys_REVIVE_LOG_<cluster>`), the CommitLog topic that
//! journals POP state so that it is replicated to slaves and survives a crash: a checkpoint
//! (tag `ck`) per pop of one queue, an ack (tag `ack`) per acked message, and a batch ack (tag
//! `bAck`) for several messages of one checkpoint (batch acks, and the revive service's own
//! "done" record after it re-sent a checkpoint's unacked messages). Bodies are upstream's JSON
//! (`PopCheckPoint`, `AckMsg`, `BatchAckMsg` with their short field names).

use serde::{Deserialize, Serialize};

use super::table::{Checkpoint, CkKey};

/// Tag of a checkpoint record.
pub(crate) const CK_TAG: &str = "ck";
/// Tag of an ack record.
pub(crate) const ACK_TAG: &str = "ack";
/// Tag of a batch ack record.
pub(crate) const BATCH_ACK_TAG: &str = "bAck";

/// Upstream's `PopCheckPoint` JSON.
#[derive(Debug, Serialize, Deserialize)]
struct CkBody {
    #[serde(rename = "so")]
    start_offset: i64,
    #[serde(rename = "pt")]
    pop_time: i64,
    #[serde(rename = "it")]
    invisible_time: i64,
    #[serde(rename = "bm", default)]
    bit_map: i64,
    #[serde(rename = "n")]
    num: i32,
    #[serde(rename = "q")]
    queue_id: i32,
    #[serde(rename = "t")]
    topic: String,
    #[serde(rename = "c")]
    cid: String,
    #[serde(rename = "ro", default)]
    revive_offset: i64,
    #[serde(rename = "d", default)]
    queue_offset_diff: Vec<i64>,
    #[serde(rename = "bn", default)]
    broker_name: String,
}

/// Upstream's `AckMsg` / `BatchAckMsg` JSON (`aol` only in a batch ack).
#[derive(Debug, Serialize, Deserialize)]
struct AckBody {
    #[serde(rename = "ao", alias = "ackOffset", default)]
    ack_offset: i64,
    #[serde(rename = "so", alias = "startOffset")]
    start_offset: i64,
    #[serde(rename = "c", alias = "consumerGroup")]
    consumer_group: String,
    #[serde(rename = "t", alias = "topic")]
    topic: String,
    #[serde(rename = "q", alias = "queueId")]
    queue_id: i32,
    #[serde(rename = "pt", alias = "popTime")]
    pop_time: i64,
    #[serde(rename = "bn", alias = "brokerName", default)]
    broker_name: String,
    #[serde(
        rename = "aol",
        alias = "ackOffsetList",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    ack_offset_list: Vec<i64>,
}

/// A record read back from the revive log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReviveRecord {
    Checkpoint(Checkpoint),
    /// Acks of offsets of the checkpoint `key`.
    Ack {
        key: CkKey,
        offsets: Vec<i64>,
    },
}

/// The JSON body of a checkpoint record.
pub(crate) fn encode_ck(ck: &Checkpoint, broker_name: &str) -> Vec<u8> {
    let body = CkBody {
        start_offset: ck.key.start_offset,
        pop_time: ck.key.pop_time,
        invisible_time: ck.invisible_time,
        bit_map: 0,
        num: ck.offsets.len() as i32,
        queue_id: ck.key.queue_id,
        topic: ck.key.topic.clone(),
        cid: ck.key.group.clone(),
        revive_offset: 0,
        queue_offset_diff: ck.offsets.iter().map(|o| o - ck.key.start_offset).collect(),
        broker_name: broker_name.to_string(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The tag and JSON body of an ack record for `offsets` of the checkpoint `key`.
pub(crate) fn encode_ack(
    key: &CkKey,
    offsets: &[i64],
    broker_name: &str,
) -> (&'static str, Vec<u8>) {
    let single = offsets.len() == 1;
    let body = AckBody {
        ack_offset: if single { offsets[0] } else { -1 },
        start_offset: key.start_offset,
        consumer_group: key.group.clone(),
        topic: key.topic.clone(),
        queue_id: key.queue_id,
        pop_time: key.pop_time,
        broker_name: broker_name.to_string(),
        ack_offset_list: if single { Vec::new() } else { offsets.to_vec() },
    };
    let tag = if single { ACK_TAG } else { BATCH_ACK_TAG };
    (tag, serde_json::to_vec(&body).unwrap_or_default())
}

/// Decodes a revive log record from its tag and body; `None` for a record of another kind or
/// one that does not parse (logged by the caller).
pub(crate) fn decode(
    tag: &str,
    body: &[u8],
    revive_qid: i32,
    revive_offset: i64,
) -> Option<ReviveRecord> {
    match tag {
        CK_TAG => {
            let b: CkBody = serde_json::from_slice(body).ok()?;
            let offsets: Vec<i64> = b
                .queue_offset_diff
                .iter()
                .map(|d| b.start_offset + d)
                .collect();
            Some(ReviveRecord::Checkpoint(Checkpoint {
                key: CkKey {
                    group: b.cid,
                    topic: b.topic,
                    queue_id: b.queue_id,
                    start_offset: b.start_offset,
                    pop_time: b.pop_time,
                },
                invisible_time: b.invisible_time,
                offsets,
                acked: b.bit_map as u64,
                revive_qid,
                revive_offset: Some(revive_offset),
            }))
        }
        ACK_TAG | BATCH_ACK_TAG => {
            let b: AckBody = serde_json::from_slice(body).ok()?;
            let offsets = if tag == ACK_TAG {
                vec![b.ack_offset]
            } else {
                b.ack_offset_list
            };
            Some(ReviveRecord::Ack {
                key: CkKey {
                    group: b.consumer_group,
                    topic: b.topic,
                    queue_id: b.queue_id,
                    start_offset: b.start_offset,
                    pop_time: b.pop_time,
                },
                offsets,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_and_acks_round_trip() {
        let ck = Checkpoint {
            key: CkKey {
                group: "G".into(),
                topic: "T".into(),
                queue_id: 2,
                start_offset: 10,
                pop_time: 1_700,
            },
            invisible_time: 60_000,
            offsets: vec![10, 12],
            acked: 0,
            revive_qid: 3,
            revive_offset: Some(44),
        };
        let body = encode_ck(&ck, "b1");
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(
            text.contains(r#""so":10"#) && text.contains(r#""d":[0,2]"#),
            "{text}"
        );
        assert_eq!(
            decode(CK_TAG, &body, 3, 44),
            Some(ReviveRecord::Checkpoint(ck.clone()))
        );
        let (tag, body) = encode_ack(&ck.key, &[12], "b1");
        assert_eq!(tag, ACK_TAG);
        assert_eq!(
            decode(tag, &body, 3, 45),
            Some(ReviveRecord::Ack {
                key: ck.key.clone(),
                offsets: vec![12]
            })
        );
        let (tag, body) = encode_ack(&ck.key, &[10, 12], "b1");
        assert_eq!(tag, BATCH_ACK_TAG);
        assert_eq!(
            decode(tag, &body, 3, 46),
            Some(ReviveRecord::Ack {
                key: ck.key,
                offsets: vec![10, 12]
            })
        );
        assert_eq!(decode(CK_TAG, b"not json", 3, 1), None);
        // Upstream's AckMsg written by a Java broker (long names).
        let java = br#"{"ackOffset":5,"startOffset":4,"consumerGroup":"G","topic":"T","queueId":0,"popTime":9,"brokerName":"b"}"#;
        assert!(matches!(
            decode(ACK_TAG, java, 0, 0),
            Some(ReviveRecord::Ack { .. })
        ));
    }
}
