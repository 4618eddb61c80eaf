//! Feeds arbitrary bytes to the `message` crate's decoders, the first byte choosing which:
//! stored records (`parse_record`, `MessageExt::decode_all`, `StoredMessage::decode`),
//! properties strings, `SEND_BATCH_MESSAGE` bodies, message ids and zlib bodies. None may
//! panic; what decodes must encode and decode to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use message::{
    create_message_id, decode_batch, decode_message_id, decode_properties, decompress_body,
    encode_batch, find_property, parse_record, MessageExt, MessageSysFlag, Properties,
    StoredMessage,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => {
            let _ = parse_record(rest, true);
            let _ = StoredMessage::decode(&Bytes::copy_from_slice(rest));
            let _ = MessageExt::decode_all(rest, true);
            if let Ok(msgs) = MessageExt::decode_all(rest, false) {
                for m in msgs {
                    let mut out = BytesMut::new();
                    m.encode(&mut out).expect("a decoded record encodes");
                    let (back, used) =
                        MessageExt::decode(&out, false).expect("re-encoded record decodes");
                    assert_eq!(used, out.len());
                    assert_eq!(back.message, m.message);
                    assert_eq!(back.queue_offset, m.queue_offset);
                    assert_eq!(back.commit_log_offset, m.commit_log_offset);
                }
            }
        }
        1 => {
            let s = String::from_utf8_lossy(rest);
            let p = Properties::parse(&s);
            assert_eq!(Properties::parse(&p.to_wire_string()), p);
            let map = decode_properties(&s);
            assert_eq!(map.len(), p.len());
            for (k, v) in p.iter() {
                assert_eq!(find_property(&s, k), Some(v));
                assert_eq!(map.get(k).map(String::as_str), Some(v));
            }
        }
        2 => {
            if let Ok(msgs) = decode_batch(rest, "T") {
                let body = encode_batch(&msgs).expect("a decoded batch encodes");
                assert_eq!(
                    decode_batch(&body, "T").expect("re-encoded batch decodes"),
                    msgs
                );
            }
        }
        3 => {
            let id = String::from_utf8_lossy(rest);
            if let Ok((host, offset)) = decode_message_id(&id) {
                let again = create_message_id(host, offset);
                let (h2, o2) = decode_message_id(&again).expect("a created id decodes");
                assert_eq!(o2, offset);
                assert_eq!(h2.port(), host.port());
                assert_eq!(h2.ip().to_canonical(), host.ip().to_canonical());
            }
        }
        _ => {
            let flag = MessageSysFlag::COMPRESSED_FLAG | i32::from(mode >> 4) << 8;
            let _ = decompress_body(rest, flag);
        }
    }
});
