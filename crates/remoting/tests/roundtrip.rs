//! Property tests: any command survives encode -> decode in both header encodings, and
//! `decode` never panics on random, truncated or mutated input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remoting::codec::{decode, encode, DEFAULT_MAX_FRAME_SIZE};
use remoting::{LanguageCode, RemotingCommand, SerializeType};

fn language() -> impl Strategy<Value = LanguageCode> {
    (0u8..14).prop_map(|b| LanguageCode::from_byte(b).unwrap())
}

fn command(serialize_type: SerializeType) -> impl Strategy<Value = RemotingCommand> {
    // The binary header carries code and version as i16.
    let (code, version) = match serialize_type {
        SerializeType::Json => (any::<i32>().boxed(), any::<i32>().boxed()),
        SerializeType::RocketMq => (
            any::<i16>().prop_map(i32::from).boxed(),
            any::<i16>().prop_map(i32::from).boxed(),
        ),
    };
    (
        code,
        language(),
        version,
        any::<i32>(),
        any::<i32>(),
        proptest::option::of(".{0,40}"),
        proptest::collection::hash_map(".{0,12}", ".{0,30}", 0..8),
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(
            move |(code, language, version, opaque, flag, remark, ext_fields, body)| {
                RemotingCommand {
                    code,
                    language,
                    version,
                    opaque,
                    flag,
                    remark,
                    ext_fields,
                    body: Bytes::from(body),
                    serialize_type,
                }
            },
        )
}

/// What a command looks like after a trip: the binary header cannot tell an empty remark from
/// none.
fn normalized(mut cmd: RemotingCommand) -> RemotingCommand {
    if cmd.serialize_type == SerializeType::RocketMq && cmd.remark.as_deref() == Some("") {
        cmd.remark = None;
    }
    cmd
}

fn round_trip(cmd: &RemotingCommand) -> RemotingCommand {
    let mut buf = BytesMut::new();
    encode(cmd, &mut buf).unwrap();
    // Two frames back to back: each decode takes exactly one.
    encode(cmd, &mut buf).unwrap();
    let first = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
    let second = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(first, second);
    first
}

proptest! {
    #[test]
    fn json_round_trip(cmd in command(SerializeType::Json)) {
        prop_assert_eq!(round_trip(&cmd), normalized(cmd));
    }

    #[test]
    fn binary_round_trip(cmd in command(SerializeType::RocketMq)) {
        prop_assert_eq!(round_trip(&cmd), normalized(cmd));
    }
}

/// A valid frame of a random command, to be mutated.
fn sample_frame(rng: &mut StdRng) -> Vec<u8> {
    let mut cmd = RemotingCommand::request(rng.gen_range(0..400))
        .with_ext("topic", "TopicTest")
        .with_ext("queueId", rng.gen_range(0..16))
        .with_body(vec![7u8; rng.gen_range(0..64)]);
    if rng.gen_bool(0.5) {
        cmd.serialize_type = SerializeType::RocketMq;
        cmd.remark = Some("remark".into());
    }
    let mut buf = BytesMut::new();
    encode(&cmd, &mut buf).unwrap();
    buf.to_vec()
}

/// Decodes every frame in `bytes`; must end in "incomplete" or an error, never a panic.
fn decode_all(bytes: &[u8], max_frame: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = decode(&mut buf, max_frame) {}
}

#[test]
fn decode_survives_random_truncated_and_mutated_frames() {
    let mut rng = StdRng::seed_from_u64(0x5EED_F00D);
    for i in 0..100_000 {
        let input = match i % 4 {
            // random bytes, sometimes with a plausible length prefix
            0 => {
                let mut v: Vec<u8> = (0..rng.gen_range(0..96)).map(|_| rng.gen()).collect();
                if v.len() >= 8 && rng.gen_bool(0.5) {
                    let total = (v.len() - 4) as u32;
                    v[..4].copy_from_slice(&total.to_be_bytes());
                    v[4] = rng.gen_range(0..2);
                }
                v
            }
            // truncated valid frame
            1 => {
                let f = sample_frame(&mut rng);
                let cut = rng.gen_range(0..=f.len());
                f[..cut].to_vec()
            }
            // valid frame with random bytes overwritten
            2 => {
                let mut f = sample_frame(&mut rng);
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..f.len());
                    f[at] = rng.gen();
                }
                f
            }
            // valid frame with its lengths consistent but its header bytes flipped
            _ => {
                let mut f = sample_frame(&mut rng);
                let at = rng.gen_range(8..f.len());
                f[at] ^= 1 << rng.gen_range(0..8);
                f.extend(sample_frame(&mut rng));
                f
            }
        };
        decode_all(
            &input,
            if i % 2 == 0 {
                256
            } else {
                DEFAULT_MAX_FRAME_SIZE
            },
        );
    }
}
