//! The `SEND_BATCH_MESSAGE` body (upstream `MessageDecoder.encodeMessages` /
//! `decodeMessages`): one entry per message, one after another.
//!
//! | size | field |
//! |---|---|
//! | 4 | total size of the entry, this field included |
//! | 4 | magic: 0 |
//! | 4 | body CRC: 0 |
//! | 4 | flag |
//! | 4 + n | body length, body |
//! | 2 + p | properties length, properties string |

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::check_len;
use crate::error::{MessageError, Reader};
use crate::ext::Message;
use crate::properties::Properties;

/// Encodes messages into a `SEND_BATCH_MESSAGE` body (upstream `MessageDecoder.encodeMessages`;
/// layout above). The topic is not part of an entry: the request header carries it.
pub fn encode_batch(messages: &[Message]) -> Result<Bytes, MessageError> {
    let mut dst = BytesMut::new();
    for msg in messages {
        let props = msg.properties.to_wire_string();
        check_len("properties", props.len(), i16::MAX as usize)?;
        let body_len = check_len("body", msg.body.len(), i32::MAX as usize)?;
        let total = check_len(
            "batch entry",
            4 + 4 + 4 + 4 + 4 + msg.body.len() + 2 + props.len(),
            i32::MAX as usize,
        )?;
        dst.reserve(total as usize);
        dst.put_i32(total);
        dst.put_i32(0);
        dst.put_i32(0);
        dst.put_i32(msg.flag);
        dst.put_i32(body_len);
        dst.put_slice(&msg.body);
        dst.put_i16(props.len() as i16);
        dst.put_slice(props.as_bytes());
    }
    Ok(dst.freeze())
}

/// Decodes a `SEND_BATCH_MESSAGE` body; every message gets `topic`.
pub fn decode_batch(buf: &[u8], topic: &str) -> Result<Vec<Message>, MessageError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let mut r = Reader::new(rest, 0);
        let total = r.i32("batch entry size")?;
        let declared = usize::try_from(total)
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or(MessageError::Truncated {
                field: "batch entry",
                need: total.max(0) as usize,
                have: rest.len(),
            })?;
        r.buf = rest.get(..declared).unwrap_or_default();
        let _magic = r.i32("batch magic")?;
        let _crc = r.i32("batch body CRC")?;
        let flag = r.i32("flag")?;
        let body_len = r.i32("body length")?;
        let body_len = usize::try_from(body_len).map_err(|_| MessageError::Invalid {
            field: "body length",
            value: body_len.to_string(),
        })?;
        let body = Bytes::copy_from_slice(r.take(body_len, "body")?);
        let props_len = r.i16("properties length")?;
        let props_len = usize::try_from(props_len).map_err(|_| MessageError::Invalid {
            field: "properties length",
            value: props_len.to_string(),
        })?;
        let properties = std::str::from_utf8(r.take(props_len, "properties")?)
            .map(Properties::parse)
            .map_err(|_| MessageError::Invalid {
                field: "properties",
                value: "not UTF-8".into(),
            })?;
        if r.pos != declared {
            return Err(MessageError::SizeMismatch {
                declared: i64::from(total),
                actual: r.pos,
            });
        }
        out.push(Message {
            topic: topic.to_string(),
            flag,
            properties,
            body,
        });
        rest = rest.get(declared..).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-fuzz `message_decoder` crash-cbaeea48 (input `20 00 00 00 00 00`): an entry whose
    /// size field says 0 made the error's byte count underflow (a panic in debug builds, so in
    /// a debug broker's SEND_BATCH_MESSAGE handler).
    #[test]
    fn entry_sizes_below_the_size_field_are_errors() {
        for total in [0i32, 1, 3, 4, 19] {
            let mut body = total.to_be_bytes().to_vec();
            body.extend_from_slice(&[0; 24]);
            assert!(decode_batch(&body, "T").is_err(), "size {total}");
        }
        assert!(decode_batch(&[0, 0, 0, 0, 0], "T").is_err());
    }
}
