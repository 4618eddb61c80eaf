//! Golden tests of the stored-message record, batch body, properties and message ids:
//! a hand-written record and property-based round trips. (The records and sends in the wire
//! captures are checked in `crates/remoting/tests/message_records.rs`, which decodes frames.)

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use message::{
    compress_body, create_message_id, decode_batch, decode_message_id, encode_batch,
    tags_hash_code, Message, MessageError, MessageExt, MessageSysFlag, Properties,
    DEFAULT_COMPRESS_LEVEL,
};
use proptest::prelude::*;

/// A record written by hand from the layout in upstream's `MessageDecoder`, field by field.
fn hand_written_record() -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x7F]); // total size: 127 bytes
    r.extend_from_slice(&[0xDA, 0xA3, 0x20, 0xA7]); // magic: V1 (1-byte topic length)
    r.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); // body CRC
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x03]); // queue id 3
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x07]); // flag 7
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x2A]); // queue offset 42
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0x00]); // commit-log offset 4096
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // sysflag 0: IPv4 hosts, uncompressed
    r.extend_from_slice(&[0, 0, 0x01, 0x8F, 0, 0, 0, 0x01]); // born timestamp
    r.extend_from_slice(&[192, 0, 2, 9, 0x00, 0x00, 0xD4, 0x31]); // born host 192.0.2.9:54321
    r.extend_from_slice(&[0, 0, 0x01, 0x8F, 0, 0, 0, 0x02]); // store timestamp
    r.extend_from_slice(&[127, 0, 0, 1, 0x00, 0x00, 0x2A, 0x9F]); // store host 127.0.0.1:10911
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // reconsume times 1
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // prepared transaction offset 0
    r.extend_from_slice(&[0x00, 0x00, 0x00, 0x05]); // body length 5
    r.extend_from_slice(b"hello"); // body
    r.push(0x05); // topic length 5
    r.extend_from_slice(b"Topic"); // topic
    r.extend_from_slice(&[0x00, 0x1A]); // properties length 26
    r.extend_from_slice(b"TAGS\x01TagA\x02KEYS\x01k1 k2\x02seq\x019"); // properties
    assert_eq!(r.len(), 127);
    r
}

#[test]
fn hand_written_record_decodes_field_by_field() {
    let raw = hand_written_record();
    let (m, used) = MessageExt::decode(&raw, true).unwrap();
    assert_eq!(used, raw.len());
    assert_eq!(m.store_size, 127);
    assert_eq!(m.body_crc, 0x1234_5678);
    assert_eq!(m.queue_id, 3);
    assert_eq!(m.message.flag, 7);
    assert_eq!(m.queue_offset, 42);
    assert_eq!(m.commit_log_offset, 4096);
    assert_eq!(m.sys_flag, 0);
    assert_eq!(m.born_timestamp, 0x0000_018F_0000_0001);
    assert_eq!(
        m.born_host,
        "192.0.2.9:54321".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(m.store_timestamp, 0x0000_018F_0000_0002);
    assert_eq!(
        m.store_host,
        "127.0.0.1:10911".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(m.reconsume_times, 1);
    assert_eq!(m.prepared_transaction_offset, 0);
    assert_eq!(&m.message.body[..], b"hello");
    assert_eq!(m.message.topic, "Topic");
    assert_eq!(m.message.tags(), Some("TagA"));
    assert_eq!(m.message.keys(), vec!["k1", "k2"]);
    assert_eq!(m.message.property("seq"), Some("9"));
    assert_eq!(m.offset_msg_id, "7F00000100002A9F0000000000001000");
    // No UNIQ_KEY: the client-facing id is the offset id.
    assert_eq!(m.msg_id(), m.offset_msg_id);

    let mut back = BytesMut::new();
    m.encode(&mut back).unwrap();
    assert_eq!(&back[..], &raw[..], "re-encoding is byte-identical");
    assert_eq!(m.encoded_len(), raw.len());
}

#[test]
fn every_prefix_and_corruption_is_an_error_not_a_panic() {
    let raw = hand_written_record();
    for n in 0..raw.len() {
        assert!(MessageExt::decode(&raw[..n], true).is_err(), "prefix {n}");
    }
    let mut bad = raw.clone();
    bad[4] = 0; // magic
    assert!(matches!(
        MessageExt::decode(&bad, true),
        Err(MessageError::BadMagic(_))
    ));
    let mut bad = raw.clone();
    bad[3] = 0x7E; // declared one byte short of the fields
    assert!(MessageExt::decode(&bad, true).is_err());
    let mut bad = raw.clone();
    bad[0] = 0x80; // negative size
    assert!(MessageExt::decode(&bad, true).is_err());
    let mut bad = raw.clone();
    bad[84] = 0x7F; // body length far beyond the record
    assert!(MessageExt::decode(&bad, true).is_err());
    // Two records back to back decode as two.
    let mut two = raw.clone();
    two.extend_from_slice(&raw);
    assert_eq!(MessageExt::decode_all(&two, true).unwrap().len(), 2);
    two.push(0);
    assert!(MessageExt::decode_all(&two, true).is_err());
}

#[test]
fn ipv6_hosts_follow_the_sysflag_bits() {
    let mut m = MessageExt::new(Message::new("T6", &b"x"[..]));
    m.born_host = "[fd00::2]:40000".parse().unwrap();
    m.store_host = "[fd00::1]:10911".parse().unwrap();
    m.commit_log_offset = 77;
    let mut buf = BytesMut::new();
    m.encode(&mut buf).unwrap();
    // 4+4+4+4+4+8+8+4+8 +20 +8 +20 +4+8 +4+1 +1+2 +2+0
    assert_eq!(buf.len(), 118);
    let (d, _) = MessageExt::decode(&buf, true).unwrap();
    assert_eq!(
        d.sys_flag,
        MessageSysFlag::BORNHOST_V6_FLAG | MessageSysFlag::STOREHOSTADDRESS_V6_FLAG
    );
    assert_eq!(d.born_host, m.born_host);
    assert_eq!(d.store_host, m.store_host);
    assert_eq!(d.offset_msg_id.len(), 56);
    assert_eq!(
        decode_message_id(&d.offset_msg_id).unwrap(),
        (m.store_host, 77)
    );
}

#[test]
fn compressed_body_is_inflated_for_clients_and_kept_for_brokers() {
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
    let mut m = MessageExt::new(Message::new(
        "Z",
        compress_body(&body, DEFAULT_COMPRESS_LEVEL).unwrap(),
    ));
    m.sys_flag = MessageSysFlag::COMPRESSED_FLAG | MessageSysFlag::COMPRESSION_ZLIB_TYPE;
    let mut buf = BytesMut::new();
    m.encode(&mut buf).unwrap();
    let (client, _) = MessageExt::decode(&buf, true).unwrap();
    assert_eq!(&client.message.body[..], &body[..]);
    assert_eq!(client.sys_flag, MessageSysFlag::COMPRESSION_ZLIB_TYPE);
    let (broker, _) = MessageExt::decode(&buf, false).unwrap();
    assert_eq!(broker.message.body, m.message.body);
    assert_eq!(broker.sys_flag, m.sys_flag);
    // Garbage marked compressed is an error.
    let mut junk = MessageExt::new(Message::new("Z", &b"not zlib"[..]));
    junk.sys_flag = MessageSysFlag::COMPRESSED_FLAG;
    let mut buf = BytesMut::new();
    junk.encode(&mut buf).unwrap();
    assert!(matches!(
        MessageExt::decode(&buf, true),
        Err(MessageError::Compression(_))
    ));
}

#[test]
fn long_topics_use_the_v2_magic() {
    let topic = "t".repeat(200);
    let m = MessageExt::new(Message::new(topic.clone(), &b"b"[..]));
    let mut buf = BytesMut::new();
    m.encode(&mut buf).unwrap();
    assert_eq!(&buf[4..8], &[0xDA, 0xA3, 0x20, 0xAB]);
    assert_eq!(
        MessageExt::decode(&buf, true).unwrap().0.message.topic,
        topic
    );
}

#[test]
fn tag_hash_is_java_string_hash_code() {
    assert_eq!(tags_hash_code(""), 0);
    assert_eq!(tags_hash_code("TagA"), 2_598_919);
    // Overflows i32 and goes negative, as in Java.
    assert_eq!(tags_hash_code("order-created"), -392_709_271);
    // UTF-16 code units, not bytes: "é" is one unit (0xE9).
    assert_eq!(tags_hash_code("é"), 0xE9);
}

fn arb_host() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn arb_properties() -> impl Strategy<Value = Properties> {
    proptest::collection::vec(
        ("[A-Za-z0-9_#.]{1,12}", "[ -~\u{e9}\u{4e2d}\u{1}]{1,24}"),
        0..8,
    )
    .prop_map(|pairs| pairs.into_iter().collect())
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        "[A-Za-z0-9%_-]{1,200}",
        any::<i32>(),
        arb_properties(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(topic, flag, properties, body)| Message {
            topic,
            flag,
            properties,
            body: Bytes::from(body),
        })
}

prop_compose! {
    fn arb_ext()(
        message in arb_message(),
        nums in any::<(i32, i64, i64, i64, i64, i32, i32, i64)>(),
        // Keep the sysflag clear of the compression and host bits, which encode derives.
        sys_flag in any::<i32>().prop_map(|f| f & !0x731),
        born_host in arb_host(),
        store_host in arb_host(),
    ) -> MessageExt {
        let (queue_id, queue_offset, commit_log_offset, born_timestamp, store_timestamp,
             body_crc, reconsume_times, prepared_transaction_offset) = nums;
        let mut m = MessageExt::new(message);
        m.queue_id = queue_id;
        m.queue_offset = queue_offset;
        m.commit_log_offset = commit_log_offset;
        m.born_timestamp = born_timestamp;
        m.store_timestamp = store_timestamp;
        m.body_crc = body_crc;
        m.reconsume_times = reconsume_times;
        m.prepared_transaction_offset = prepared_transaction_offset;
        m.born_host = born_host;
        m.store_host = store_host;
        m.sys_flag = sys_flag
            | if born_host.is_ipv6() { MessageSysFlag::BORNHOST_V6_FLAG } else { 0 }
            | if store_host.is_ipv6() { MessageSysFlag::STOREHOSTADDRESS_V6_FLAG } else { 0 };
        m.store_size = m.encoded_len() as i32;
        m.offset_msg_id = create_message_id(store_host, commit_log_offset);
        m
    }
}

proptest! {
    #[test]
    fn record_round_trip(msgs in proptest::collection::vec(arb_ext(), 1..4)) {
        let mut buf = BytesMut::new();
        for m in &msgs {
            m.encode(&mut buf).unwrap();
        }
        prop_assert_eq!(MessageExt::decode_all(&buf, true).unwrap(), msgs.clone());
        // The shared decode gives the same messages, their bodies slices of the buffer.
        let buf = buf.freeze();
        let shared = MessageExt::decode_all_shared(&buf, true).unwrap();
        for m in shared.iter().filter(|m| !m.message.body.is_empty()) {
            let at = m.message.body.as_ptr() as usize;
            let start = buf.as_ptr() as usize;
            prop_assert!(at >= start && at + m.message.body.len() <= start + buf.len());
        }
        prop_assert_eq!(shared, msgs);
    }

    #[test]
    fn batch_round_trip(msgs in proptest::collection::vec(arb_message(), 0..6)) {
        let msgs: Vec<Message> = msgs
            .into_iter()
            .map(|m| Message { topic: "Batch".into(), ..m })
            .collect();
        let body = encode_batch(&msgs).unwrap();
        prop_assert_eq!(decode_batch(&body, "Batch").unwrap(), msgs);
    }

    #[test]
    fn properties_round_trip(p in arb_properties()) {
        prop_assert_eq!(Properties::parse(&p.to_wire_string()), p.clone());
        // A trailing separator, as C++ and ali-ons send, changes nothing.
        let trailing = format!("{}\u{2}", p.to_wire_string());
        prop_assert_eq!(Properties::parse(&trailing), p);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = MessageExt::decode_all(&bytes, true);
        let _ = MessageExt::decode_all_shared(&bytes::Bytes::from(bytes.clone()), true);
        let _ = decode_batch(&bytes, "t");
        let _ = decode_message_id(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn message_id_round_trip(host in arb_host(), offset in any::<i64>()) {
        let id = create_message_id(host, offset);
        prop_assert_eq!(decode_message_id(&id).unwrap(), (host, offset));
    }
}
