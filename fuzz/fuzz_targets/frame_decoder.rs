//! Feeds arbitrary bytes to the frame decoder: it must return frames, "incomplete" or an
//! error, never panic, and every frame it returns must encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use remoting::codec::{decode, encode};

/// Small limit so that length prefixes are often refused as well as accepted.
const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(cmd)) = decode(&mut buf, MAX_FRAME) {
        let mut out = BytesMut::new();
        // Decoded values can be encoded again (binary i16 fields came from i16s).
        if encode(&cmd, &mut out).is_ok() {
            let again = decode(&mut out, usize::MAX)
                .expect("re-encoded frame decodes")
                .expect("re-encoded frame is whole");
            assert_eq!(again.code, cmd.code);
            assert_eq!(again.opaque, cmd.opaque);
            assert_eq!(again.ext_fields, cmd.ext_fields);
            assert_eq!(again.body, cmd.body);
        }
    }
});
