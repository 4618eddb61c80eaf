//! Real frames recorded between upstream 4.9.8 and several clients (/work/shared/captures):
//! every frame must decode, agree with the recorded header, and re-encode faithfully.

use bytes::BytesMut;
use remoting::codec::{decode, encode, DEFAULT_MAX_FRAME_SIZE};
use remoting::{LanguageCode, RemotingCommand, SerializeType};
use serde_json::Value;

/// `(file:line, recorded line, whole frame)` of every recorded frame.
fn frames() -> Vec<(String, Value, Vec<u8>)> {
    let mut out = Vec::new();
    let files = testkit::CLIENT_CAPTURES
        .iter()
        .chain(std::iter::once(&testkit::BROKER_CAPTURE));
    for file in files {
        let Some(lines) = testkit::capture(file) else {
            return Vec::new();
        };
        for (i, v) in lines.into_iter().enumerate() {
            if v["frame_b64"].is_null() {
                continue;
            }
            let frame = testkit::b64(&v["frame_b64"]);
            out.push((format!("{file}:{}", i + 1), v, frame));
        }
    }
    out
}

fn decode_one(frame: &[u8], at: &str) -> RemotingCommand {
    let mut buf = BytesMut::from(frame);
    let cmd = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE)
        .unwrap_or_else(|e| panic!("{at}: {e}"))
        .unwrap_or_else(|| panic!("{at}: incomplete frame"));
    assert!(buf.is_empty(), "{at}: bytes left after the frame");
    cmd
}

/// Text our decoder keeps for a recorded ext value.
fn ext_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[test]
fn every_frame_decodes_as_recorded() {
    let frames = frames();
    for (at, line, frame) in &frames {
        let cmd = decode_one(frame, at);
        let h = &line["header"];
        assert_eq!(
            i64::from(cmd.code),
            h["code"].as_i64().unwrap(),
            "{at}: code"
        );
        assert_eq!(
            i64::from(cmd.opaque),
            h["opaque"].as_i64().unwrap(),
            "{at}: opaque"
        );
        assert_eq!(
            i64::from(cmd.flag),
            h["flag"].as_i64().unwrap(),
            "{at}: flag"
        );
        assert_eq!(
            i64::from(cmd.version),
            h["version"].as_i64().unwrap(),
            "{at}: version"
        );
        let language = h["language"].as_str().unwrap();
        assert_eq!(cmd.language.name(), language, "{at}: language");
        let remark = h.get("remark").and_then(ext_text);
        assert_eq!(cmd.remark, remark, "{at}: remark");
        let expected: std::collections::HashMap<String, String> = h
            .get("extFields")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| ext_text(v).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(cmd.ext_fields, expected, "{at}: extFields");
        assert_eq!(
            cmd.body.len() as u64,
            line["body_len"].as_u64().unwrap(),
            "{at}: body"
        );
        let serialize = match cmd.serialize_type {
            SerializeType::Json => "json",
            SerializeType::RocketMq => "rocketmq",
        };
        assert_eq!(
            serialize,
            line["serialize"].as_str().unwrap(),
            "{at}: serialize type"
        );
    }
    if !frames.is_empty() {
        println!("{} recorded frames decoded", frames.len());
    }
}

/// Ext keys of a binary frame in the order they were written, read independently of the
/// decoder under test.
fn binary_ext_key_order(frame: &[u8]) -> Vec<String> {
    let header = &frame[8..];
    let remark_len = u32::from_be_bytes(header[13..17].try_into().unwrap()) as usize;
    let mut at = 17 + remark_len;
    let ext_len = u32::from_be_bytes(header[at..at + 4].try_into().unwrap()) as usize;
    at += 4;
    let end = at + ext_len;
    let mut keys = Vec::new();
    while at < end {
        let key_len = u16::from_be_bytes(header[at..at + 2].try_into().unwrap()) as usize;
        keys.push(String::from_utf8(header[at + 2..at + 2 + key_len].to_vec()).unwrap());
        at += 2 + key_len;
        let value_len = u32::from_be_bytes(header[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + value_len;
    }
    keys
}

#[test]
fn binary_frames_reencode() {
    let mut identical = 0;
    let mut reordered = 0;
    for (at, _, frame) in frames() {
        let cmd = decode_one(&frame, &at);
        if cmd.serialize_type != SerializeType::RocketMq {
            continue;
        }
        let mut out = BytesMut::new();
        encode(&cmd, &mut out).unwrap();
        assert_eq!(out.len(), frame.len(), "{at}: re-encoded length");
        let keys = binary_ext_key_order(&frame);
        if keys.windows(2).all(|w| w[0] <= w[1]) {
            // We write ext fields in key order: same order, same bytes.
            assert_eq!(&out[..], &frame[..], "{at}: re-encoded bytes");
            identical += 1;
        } else {
            assert_eq!(
                decode_one(&out, &at),
                cmd,
                "{at}: re-encoded frame decodes the same"
            );
            reordered += 1;
        }
    }
    println!("binary frames: {identical} byte-identical, {reordered} with ext fields reordered");
}

/// Java writes JSON headers the way we do (fastjson: top-level keys in alphabetical order, no
/// empty remark, `serializeTypeCurrentRPC`), except that it may write an empty `extFields: {}`
/// and writes ext fields in hash order where we sort them. Java frames with at most one ext
/// field re-encode byte for byte, other Java frames to the same length; every frame re-encodes
/// to an equal command.
#[test]
fn json_frames_reencode() {
    let mut identical = 0;
    let mut equal = 0;
    for (at, line, frame) in frames() {
        let cmd = decode_one(&frame, &at);
        if cmd.serialize_type != SerializeType::Json {
            continue;
        }
        let mut out = BytesMut::new();
        encode(&cmd, &mut out).unwrap();
        let h = &line["header"];
        let java_shaped = cmd.language == LanguageCode::Java
            && h.get("serializeTypeCurrentRPC").is_some()
            && h.get("extFields")
                .and_then(Value::as_object)
                .map(|m| !m.is_empty())
                != Some(false);
        if java_shaped && cmd.ext_fields.len() <= 1 {
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&frame),
                "{at}: re-encoded bytes"
            );
            identical += 1;
        } else {
            if java_shaped {
                assert_eq!(out.len(), frame.len(), "{at}: re-encoded length");
            }
            assert_eq!(
                decode_one(&out, &at),
                cmd,
                "{at}: re-encoded frame decodes the same"
            );
            equal += 1;
        }
    }
    println!("JSON frames: {identical} byte-identical, {equal} equal after decoding");
}
