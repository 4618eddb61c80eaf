//! Header codec micro-benchmarks (`cargo bench -p apogee-remoting --bench headers`): what the
//! broker does to every SEND_MESSAGE_V2 before and after the store, without sockets.
//!
//! - decode: one whole frame (1 KiB body) to a command, then its typed header, for a JSON
//!   header (as the Java client sends by default) and a binary ROCKETMQ one;
//! - encode: a send's answer (`SendMessageResponseHeader`) to a frame.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use remoting::broker_headers::{SendMessageRequestHeaderV2, SendMessageResponseHeader};
use remoting::codec::{self, DEFAULT_MAX_FRAME_SIZE};
use remoting::command::{RemotingCommand, SerializeType};
use remoting::headers::CommandHeader;
use remoting::{RequestCode, ResponseCode};

/// A SEND_MESSAGE_V2 frame as a producer sends it: the header fields the Java client fills
/// and a 1 KiB body.
fn send_frame(serialize: SerializeType) -> BytesMut {
    let mut cmd =
        RemotingCommand::request(RequestCode::SEND_MESSAGE_V2).with_body(vec![b'x'; 1024]);
    SendMessageRequestHeaderV2 {
        a: "bench_producer_group".into(),
        b: "BenchTopic".into(),
        c: "TBW102".into(),
        d: 4,
        e: 3,
        f: 0,
        g: 1_796_000_000_000,
        h: 0,
        i: Some(
            "UNIQ_KEY\u{1}7F00000100002A9F0000000000000001\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA\u{2}"
                .into(),
        ),
        j: Some(0),
        k: Some(false),
        l: None,
        m: Some(false),
        n: Some("broker-a".into()),
    }
    .write_to(&mut cmd);
    cmd.serialize_type = serialize;
    let mut frame = BytesMut::new();
    codec::encode(&cmd, &mut frame).expect("a send request encodes");
    frame
}

fn decode(c: &mut Criterion) {
    for (name, serialize) in [
        ("decode send request, JSON header", SerializeType::Json),
        (
            "decode send request, binary header",
            SerializeType::RocketMq,
        ),
    ] {
        let frame = send_frame(serialize);
        c.bench_function(name, |b| {
            b.iter_batched(
                || frame.clone(),
                |mut buf| {
                    let cmd = codec::decode(&mut buf, DEFAULT_MAX_FRAME_SIZE)
                        .expect("a whole frame")
                        .expect("one command");
                    let header = SendMessageRequestHeaderV2::from_ext_fields(&cmd.ext_fields)
                        .expect("a valid header");
                    black_box((cmd.body, header))
                },
                BatchSize::SmallInput,
            )
        });
    }
}

fn encode(c: &mut Criterion) {
    let mut request = RemotingCommand::request(RequestCode::SEND_MESSAGE_V2);
    request.opaque = 42;
    let mut out = BytesMut::with_capacity(1024);
    c.bench_function("encode send response", |b| {
        b.iter(|| {
            let mut resp = RemotingCommand::response_to(&request, ResponseCode::SUCCESS, None);
            SendMessageResponseHeader {
                msg_id: "7F00000100002A9F00000000000F4240".into(),
                queue_id: 3,
                queue_offset: 123_456,
                transaction_id: None,
                batch_uniq_id: None,
                recall_handle: None,
                msg_region: Some("DefaultRegion".into()),
                trace_on: Some(true),
            }
            .write_to(&mut resp);
            out.clear();
            codec::encode(black_box(&resp), &mut out).expect("a response encodes");
            black_box(out.len())
        })
    });
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
