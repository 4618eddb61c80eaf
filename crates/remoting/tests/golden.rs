//! Golden frames written by hand from the protocol description (see `codec` and `header`
//! module docs): each must decode to the expected command and the command must encode to
//! exactly these bytes.

use bytes::{Bytes, BytesMut};
use remoting::codec::{decode, encode, DEFAULT_MAX_FRAME_SIZE};
use remoting::{LanguageCode, RemotingCommand, SerializeType};

/// GET_ROUTEINFO_BY_TOPIC (105) for topic "T", as a Java 4.9 client would send it.
fn route_request(serialize_type: SerializeType) -> RemotingCommand {
    RemotingCommand {
        code: 105,
        language: LanguageCode::Java,
        version: 409,
        opaque: 7,
        flag: 0,
        remark: None,
        ext_fields: [("topic".to_string(), "T".to_string())].into(),
        body: Bytes::new(),
        serialize_type,
    }
}

/// TOPIC_NOT_EXIST (17) answering opaque 7, with a remark.
fn not_exist_response(serialize_type: SerializeType, body: &'static [u8]) -> RemotingCommand {
    RemotingCommand {
        code: 17,
        language: LanguageCode::Rust,
        version: 409,
        opaque: 7,
        flag: 1,
        remark: Some("No topic route info for T".to_string()),
        ext_fields: Default::default(),
        body: Bytes::from_static(body),
        serialize_type,
    }
}

fn check(frame: &[u8], expected: &RemotingCommand) {
    let mut buf = BytesMut::from(frame);
    let decoded = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE)
        .unwrap()
        .expect("a whole frame");
    assert!(buf.is_empty(), "the frame is consumed entirely");
    assert_eq!(&decoded, expected);

    let mut out = BytesMut::new();
    encode(expected, &mut out).unwrap();
    assert_eq!(&out[..], frame);

    // Every strict prefix is "not yet complete".
    for cut in 0..frame.len() {
        let mut partial = BytesMut::from(&frame[..cut]);
        assert_eq!(decode(&mut partial, DEFAULT_MAX_FRAME_SIZE).unwrap(), None);
        assert_eq!(partial.len(), cut, "nothing consumed from a partial frame");
    }
}

#[test]
fn json_request() {
    let header = br#"{"code":105,"extFields":{"topic":"T"},"flag":0,"language":"JAVA","opaque":7,"serializeTypeCurrentRPC":"JSON","version":409}"#;
    assert_eq!(header.len(), 123);
    let mut frame = vec![
        0x00, 0x00, 0x00, 0x7F, // total: 4 + 123 header bytes, no body
        0x00, // serialize type 0: JSON
        0x00, 0x00, 0x7B, // header length 123
    ];
    frame.extend_from_slice(header);
    check(&frame, &route_request(SerializeType::Json));
}

#[test]
fn json_response() {
    let header = br#"{"code":17,"flag":1,"language":"RUST","opaque":7,"remark":"No topic route info for T","serializeTypeCurrentRPC":"JSON","version":409}"#;
    assert_eq!(header.len(), 133);
    let mut frame = vec![
        0x00, 0x00, 0x00, 0x89, // total: 4 + 133 header bytes, no body
        0x00, // serialize type 0: JSON
        0x00, 0x00, 0x85, // header length 133
    ];
    frame.extend_from_slice(header);
    check(&frame, &not_exist_response(SerializeType::Json, b""));
}

#[test]
fn binary_request() {
    let frame: &[u8] = &[
        0x00, 0x00, 0x00, 0x25, // total: 4 + 33 header bytes, no body
        0x01, // serialize type 1: ROCKETMQ
        0x00, 0x00, 0x21, // header length 33
        0x00, 0x69, // code 105
        0x00, // language 0: JAVA
        0x01, 0x99, // version 409
        0x00, 0x00, 0x00, 0x07, // opaque 7
        0x00, 0x00, 0x00, 0x00, // flag 0: request
        0x00, 0x00, 0x00, 0x00, // remark length 0: no remark
        0x00, 0x00, 0x00, 0x0C, // ext fields length 12 = 2 + 5 + 4 + 1
        0x00, 0x05, b't', b'o', b'p', b'i', b'c', // key "topic"
        0x00, 0x00, 0x00, 0x01, b'T', // value "T"
    ];
    check(frame, &route_request(SerializeType::RocketMq));
}

#[test]
fn binary_response_with_body() {
    let mut frame = vec![
        0x00, 0x00, 0x00, 0x34, // total: 4 + 46 header bytes + 2 body bytes
        0x01, // serialize type 1: ROCKETMQ
        0x00, 0x00, 0x2E, // header length 46
        0x00, 0x11, // code 17: TOPIC_NOT_EXIST
        0x0C, // language 12: RUST
        0x01, 0x99, // version 409
        0x00, 0x00, 0x00, 0x07, // opaque 7
        0x00, 0x00, 0x00, 0x01, // flag 1: response
        0x00, 0x00, 0x00, 0x19, // remark length 25
    ];
    frame.extend_from_slice(b"No topic route info for T"); // remark
    frame.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // ext fields length 0
    frame.extend_from_slice(b"hi"); // body
    check(&frame, &not_exist_response(SerializeType::RocketMq, b"hi"));
}

/// Header shapes other clients send (see the captures' README): numbers and booleans as ext
/// values, `remark: null`, unknown keys, unknown or missing language.
#[test]
fn tolerant_json_input() {
    let header = br#"{"code":10,"language":"CPP","version":63,"opaque":3,"flag":0,"remark":"","extFields":{"queueId":5,"unitMode":false,"topic":"T","gone":null,"nested":{"a":[1]},"rate":1.5,"whole":2.0,"twice":"a","twice":null,"list":[1,"b"]},"x":1}"#;
    let cmd = decode_json_frame(header);
    assert_eq!(cmd.language, LanguageCode::Cpp);
    assert_eq!(cmd.ext("queueId"), Some("5"));
    assert_eq!(cmd.ext("unitMode"), Some("false"));
    assert_eq!(cmd.ext("topic"), Some("T"));
    assert_eq!(cmd.ext("gone"), None);
    assert_eq!(cmd.ext("nested"), Some(r#"{"a":[1]}"#));
    assert_eq!(cmd.ext("rate"), Some("1.5"));
    assert_eq!(cmd.ext("whole"), Some("2.0"));
    assert_eq!(cmd.ext("twice"), None, "a later null wins");
    assert_eq!(cmd.ext("list"), Some(r#"[1,"b"]"#));
    assert_eq!(cmd.remark.as_deref(), Some(""));

    let cmd =
        decode_json_frame(br#"{"code":0,"opaque":1,"flag":1,"remark":null,"language":"KLINGON"}"#);
    assert_eq!(cmd.remark, None);
    assert_eq!(cmd.language, LanguageCode::Other);
    assert!(cmd.ext_fields.is_empty());
    assert!(cmd.is_response());

    let cmd = decode_json_frame(br#"{"code":0,"extFields":null}"#);
    assert_eq!(cmd.language, LanguageCode::Other);
}

fn decode_json_frame(header: &[u8]) -> RemotingCommand {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&(4 + header.len() as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    decode(&mut frame, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap()
}

#[test]
fn bad_frames_are_errors() {
    use remoting::WireError;
    type Expect = fn(&WireError) -> bool;
    let cases: &[(&[u8], Expect)] = &[
        // total 100 over a limit of 64
        (&[0, 0, 0, 100], |e| {
            matches!(
                e,
                WireError::FrameTooLarge {
                    size: 100,
                    limit: 64
                }
            )
        }),
        // total 3 cannot hold the header-length word
        (&[0, 0, 0, 3, 0, 0, 0], |e| {
            matches!(e, WireError::FrameTooSmall(3))
        }),
        // header length 10 in a frame of total 8
        (&[0, 0, 0, 8, 0, 0, 0, 10, 0, 0, 0, 0], |e| {
            matches!(
                e,
                WireError::HeaderLength {
                    header: 10,
                    frame: 8
                }
            )
        }),
        // serialize type 2
        (&[0, 0, 0, 4, 2, 0, 0, 0], |e| {
            matches!(e, WireError::UnknownSerializeType(2))
        }),
        // JSON header that is not JSON
        (&[0, 0, 0, 5, 0, 0, 0, 1, b'{'], |e| {
            matches!(e, WireError::Json(_))
        }),
        // binary header cut after the code
        (&[0, 0, 0, 6, 1, 0, 0, 2, 0, 1], |e| {
            matches!(e, WireError::Binary(_))
        }),
    ];
    for (bytes, expected) in cases {
        let mut buf = BytesMut::from(*bytes);
        let err = decode(&mut buf, 64).unwrap_err();
        assert!(expected(&err), "{bytes:?} gave {err:?}");
    }
}

#[test]
fn binary_lengths_are_checked() {
    // remark length claims 1000 bytes, 0 follow
    let header: &[u8] = &[
        0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, // code, language, version, opaque, flag
        0, 0, 0x03, 0xE8, // remark length 1000
    ];
    assert!(decode_binary_frame(header).is_err());
    // negative ext key length
    let header: &[u8] = &[
        0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, // code, language, version, opaque, flag
        0, 0, 0, 0, // no remark
        0, 0, 0, 6, // ext length 6
        0xFF, 0xFF, 0, 0, 0, 0, // key length -1
    ];
    assert!(decode_binary_frame(header).is_err());
    // an entry running past the ext fields length
    let header: &[u8] = &[
        0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, // code, language, version, opaque, flag
        0, 0, 0, 0, // no remark
        0, 0, 0, 4, // ext length 4
        0, 1, b'k', 0, 0, 0, 0, // key "k", value "" (7 bytes)
    ];
    assert!(decode_binary_frame(header).is_err());
}

fn decode_binary_frame(header: &[u8]) -> Result<RemotingCommand, remoting::WireError> {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&(4 + header.len() as u32).to_be_bytes());
    frame.extend_from_slice(&(0x0100_0000 | header.len() as u32).to_be_bytes());
    frame.extend_from_slice(header);
    decode(&mut frame, DEFAULT_MAX_FRAME_SIZE).map(|c| c.unwrap())
}

#[test]
fn refuses_what_binary_cannot_carry() {
    let mut cmd = route_request(SerializeType::RocketMq);
    cmd.code = 40_000;
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(encode(&cmd, &mut out).is_err());
    assert_eq!(&out[..], b"keep", "nothing written on error");
}
