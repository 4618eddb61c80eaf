//! Feeds arbitrary bytes to the two header decoders (first byte even: JSON, odd: ROCKETMQ
//! binary) and the decoded command to the typed headers the broker and NameServer parse most:
//! decoding returns a command or an error, never panics; a decoded header encodes again (JSON
//! always, binary when its fields fit) and decodes to the same command; a typed header that
//! parses writes fields that parse to the same header.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use remoting::broker_headers::{
    ConsumerSendMsgBackRequestHeader, CreateTopicRequestHeader, EndTransactionRequestHeader,
    PullMessageRequestHeader, QueryMessageRequestHeader, SendMessageRequestHeader,
    SendMessageRequestHeaderV2,
};
use remoting::header::{decode_binary, decode_json, encode_binary, encode_json};
use remoting::headers::{CommandHeader, GetRouteInfoRequestHeader, RegisterBrokerRequestHeader};
use remoting::RemotingCommand;

/// Parses `cmd` as `H`; when that works, `H`'s own fields must parse back to it.
fn typed<H: CommandHeader + PartialEq + std::fmt::Debug>(cmd: &RemotingCommand) {
    if let Ok(h) = H::from_command(cmd) {
        let again = H::from_ext_fields(&h.to_ext_fields()).expect("written header parses");
        assert_eq!(again, h);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, header)) = data.split_first() else {
        return;
    };
    let json = mode & 1 == 0;
    let decoded = if json {
        decode_json(header)
    } else {
        decode_binary(header)
    };
    let Ok(cmd) = decoded else {
        return;
    };
    typed::<SendMessageRequestHeader>(&cmd);
    typed::<SendMessageRequestHeaderV2>(&cmd);
    if let Ok(v2) = SendMessageRequestHeaderV2::from_command(&cmd) {
        let _ = SendMessageRequestHeader::from(v2);
    }
    typed::<PullMessageRequestHeader>(&cmd);
    typed::<ConsumerSendMsgBackRequestHeader>(&cmd);
    typed::<EndTransactionRequestHeader>(&cmd);
    typed::<QueryMessageRequestHeader>(&cmd);
    typed::<CreateTopicRequestHeader>(&cmd);
    typed::<RegisterBrokerRequestHeader>(&cmd);
    typed::<GetRouteInfoRequestHeader>(&cmd);

    let mut out = BytesMut::new();
    let again = if json {
        encode_json(&cmd, &mut out).expect("a decoded JSON header encodes");
        decode_json(&out).expect("a re-encoded JSON header decodes")
    } else if encode_binary(&cmd, &mut out).is_ok() {
        decode_binary(&out).expect("a re-encoded binary header decodes")
    } else {
        return;
    };
    assert_eq!(again.code, cmd.code);
    assert_eq!(again.language, cmd.language);
    assert_eq!(again.version, cmd.version);
    assert_eq!(again.opaque, cmd.opaque);
    assert_eq!(again.flag, cmd.flag);
    assert_eq!(again.ext_fields, cmd.ext_fields);
    if json {
        assert_eq!(again.remark, cmd.remark);
    } else {
        // The binary layout writes no remark and an empty one alike.
        assert_eq!(
            again.remark.unwrap_or_default(),
            cmd.remark.unwrap_or_default()
        );
    }
});
