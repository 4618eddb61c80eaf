//! Every record in the captured pull / query / view responses and every captured send decodes
//! with the message crate's codecs (through `remoting::message`), frames decoded by the real
//! frame codec. The hand-written golden record and the round trips live in
//! `crates/message/tests/records.rs`.

mod message_support;

use std::net::SocketAddr;

use bytes::BytesMut;
use remoting::message::{
    create_message_id, decode_batch, decode_message_id, encode_batch, MessageConst, MessageExt,
    Properties,
};
use remoting::RequestCode;

fn ext_text<'a>(cmd: &'a remoting::RemotingCommand, key: &str) -> &'a str {
    cmd.ext(key).unwrap_or_else(|| panic!("missing {key}"))
}

#[test]
fn every_captured_record_decodes() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    let store: SocketAddr = "127.0.0.1:10911".parse().unwrap();
    let mut records = 0;
    let mut pulls = 0;
    let mut files = std::collections::BTreeSet::new();
    for (req, resp) in message_support::exchanges(&frames, RequestCode::PULL_MESSAGE) {
        if resp.cmd.code != 0 || resp.cmd.remark_str() != "FOUND" {
            continue;
        }
        pulls += 1;
        files.insert(resp.file.clone());
        let topic = ext_text(&req.cmd, "topic");
        let queue_id: i32 = req.cmd.ext_parse("queueId").unwrap();
        let from: i64 = req.cmd.ext_parse("queueOffset").unwrap();
        let next: i64 = resp.cmd.ext_parse("nextBeginOffset").unwrap();
        let msgs = MessageExt::decode_all(&resp.cmd.body, true)
            .unwrap_or_else(|e| panic!("{}: pull body: {e}", resp.file));
        assert!(!msgs.is_empty());
        let mut last = from - 1;
        for m in &msgs {
            records += 1;
            assert_eq!(m.message.topic, topic, "{}", resp.file);
            assert_eq!(m.queue_id, queue_id);
            assert!(
                m.queue_offset > last && m.queue_offset < next,
                "{}",
                resp.file
            );
            last = m.queue_offset;
            assert_eq!(m.store_host, store);
            assert!(m.store_timestamp >= m.born_timestamp);
            assert_eq!(
                m.offset_msg_id,
                create_message_id(store, m.commit_log_offset)
            );
            assert_eq!(
                decode_message_id(&m.offset_msg_id).unwrap(),
                (store, m.commit_log_offset)
            );
            assert_eq!(
                m.message.property(MessageConst::PROPERTY_CLUSTER),
                Some("RefCluster")
            );
            assert!(
                !m.message.keys().is_empty(),
                "{}: every client set KEYS",
                resp.file
            );
            if let Some(uniq) = m.message.uniq_key() {
                assert!(uniq.len() == 32 || uniq.len() == 56, "{uniq}");
                assert_eq!(m.msg_id(), uniq);
            }
            if topic.starts_with("%RETRY%") {
                assert!(m.reconsume_times >= 1);
                let origin = m
                    .message
                    .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
                    .unwrap();
                assert!(decode_message_id(origin).is_ok());
                assert!(m
                    .message
                    .property(MessageConst::PROPERTY_RETRY_TOPIC)
                    .unwrap()
                    .starts_with("CAP_"));
            } else {
                assert!(matches!(m.message.tags(), Some("TagA" | "TagB")));
            }
            reencode_matches(m, &resp.cmd.body);
        }
    }
    assert!(pulls >= 20, "only {pulls} FOUND pulls");
    assert!(records >= 150, "only {records} records");
    assert!(files.len() >= 5, "records from {files:?}");

    // QUERY_MESSAGE by key and VIEW_MESSAGE_BY_ID answer with the same record format.
    let mut looked_up = 0;
    for (req, resp) in message_support::exchanges(&frames, RequestCode::QUERY_MESSAGE) {
        let key = ext_text(&req.cmd, "key");
        for m in MessageExt::decode_all(&resp.cmd.body, true).unwrap() {
            assert!(m.message.keys().contains(&key));
            looked_up += 1;
        }
    }
    for (req, resp) in message_support::exchanges(&frames, RequestCode::VIEW_MESSAGE_BY_ID) {
        let offset: i64 = req.cmd.ext_parse("offset").unwrap();
        let (m, used) = MessageExt::decode(&resp.cmd.body, true).unwrap();
        assert_eq!(used, resp.cmd.body.len());
        assert_eq!(m.commit_log_offset, offset);
        looked_up += 1;
    }
    assert!(looked_up >= 3);
}

/// Re-encodes `m` and finds the exact bytes in `body` when the stored properties had no repeated
/// name (batch entries carry `WAIT` twice, which decoding folds into one).
fn reencode_matches(m: &MessageExt, body: &[u8]) {
    let mut buf = BytesMut::new();
    m.encode(&mut buf).unwrap();
    let (again, _) = MessageExt::decode(&buf, true).unwrap();
    let mut expected = m.clone();
    expected.store_size = buf.len() as i32;
    assert_eq!(again, expected);
    if buf.len() == m.store_size as usize {
        assert!(
            body.windows(buf.len()).any(|w| w == &buf[..]),
            "re-encoded record not found in the captured body"
        );
    }
}

#[test]
fn captured_sends_have_upstream_properties_and_ids() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    let store: SocketAddr = "127.0.0.1:10911".parse().unwrap();
    let mut sends = 0;
    let mut batches = 0;
    for code in [
        RequestCode::SEND_MESSAGE,
        RequestCode::SEND_MESSAGE_V2,
        RequestCode::SEND_BATCH_MESSAGE,
    ] {
        for (req, resp) in message_support::exchanges(&frames, code) {
            if req.peer != "broker" || resp.cmd.code != 0 {
                continue;
            }
            sends += 1;
            let key = if code == RequestCode::SEND_MESSAGE {
                "properties"
            } else {
                "i"
            };
            let props = Properties::parse(ext_text(&req.cmd, key));
            if let Some(uniq) = props.get(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX) {
                assert!(uniq.len() == 32 || uniq.len() == 56, "{}: {uniq}", req.file);
                assert!(uniq
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
            }
            let ids: Vec<&str> = ext_text(&resp.cmd, "msgId").split(',').collect();
            for id in &ids {
                assert_eq!(decode_message_id(id).unwrap().0, store);
            }
            if code == RequestCode::SEND_BATCH_MESSAGE {
                batches += 1;
                let topic = ext_text(&req.cmd, "b");
                let msgs = decode_batch(&req.cmd.body, topic).unwrap();
                assert_eq!(msgs.len(), ids.len());
                assert_eq!(msgs.len(), 20);
                for (i, m) in msgs.iter().enumerate() {
                    assert_eq!(m.topic, topic);
                    assert!(m.uniq_key().is_some());
                    assert_eq!(m.property("seq"), Some(i.to_string().as_str()));
                }
                // Java 4.9 writes properties without a trailing separator and in the map's
                // order, so re-encoding gives the same bytes.
                assert_eq!(encode_batch(&msgs).unwrap(), req.cmd.body);
            } else {
                assert_eq!(ids.len(), 1);
            }
        }
    }
    assert!(sends >= 80, "only {sends} sends");
    assert_eq!(batches, 1);
}
