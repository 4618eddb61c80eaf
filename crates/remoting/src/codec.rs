//! Framing: turns [`RemotingCommand`]s into length-prefixed frames and back.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | `total` (u32, big-endian): bytes after this field |
//! | 1 | serialize type of the header: 0 JSON, 1 ROCKETMQ binary ([`crate::header`]) |
//! | 3 | header length `h` (u24, big-endian) |
//! | h | header |
//! | `total - 4 - h` | body |
//!
//! [`decode`] is total: any byte sequence yields a command, "need more bytes" or a
//! [`WireError`], never a panic, and a frame whose `total` exceeds the limit is refused before
//! any of it is buffered.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::{RemotingCommand, SerializeType};
use crate::error::WireError;
use crate::header;

/// Default limit on `total` (16 MiB), as upstream's `com.rocketmq.remoting.frameMaxLength`.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Largest header length the u24 field can carry.
const MAX_HEADER_LEN: usize = 0xFF_FFFF;

impl SerializeType {
    /// The byte in the frame's header-length word.
    pub fn to_byte(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    /// The serialize type with byte `b`, `None` when unknown.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(SerializeType::Json),
            1 => Some(SerializeType::RocketMq),
            _ => None,
        }
    }
}

/// Appends one whole frame for `cmd` (header in `cmd.serialize_type`) to `dst`.
pub fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    encode_head(cmd, dst)?;
    dst.extend_from_slice(&cmd.body);
    Ok(())
}

/// Appends the frame of `cmd` up to (not including) its body; the caller must send
/// `cmd.body` right after. Lets a writer send a large body without copying it.
pub fn encode_head(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    dst.put_u32(0); // total, patched below
    dst.put_u32(0); // serialize type + header length, patched below
    let header_start = dst.len();
    let encoded = match cmd.serialize_type {
        SerializeType::Json => header::encode_json(cmd, dst),
        SerializeType::RocketMq => header::encode_binary(cmd, dst),
    };
    if let Err(e) = encoded {
        dst.truncate(start);
        return Err(e);
    }
    let header_len = dst.len() - header_start;
    let total = 4 + header_len + cmd.body.len();
    let refused = if header_len > MAX_HEADER_LEN {
        Some(WireError::HeaderLength {
            header: header_len,
            frame: total,
        })
    } else if u32::try_from(total).is_err() {
        Some(WireError::FrameTooLarge {
            size: total,
            limit: u32::MAX as usize,
        })
    } else {
        None
    };
    if let Some(e) = refused {
        dst.truncate(start);
        return Err(e);
    }
    // Both values were range-checked above.
    let word = (u32::from(cmd.serialize_type.to_byte()) << 24) | header_len as u32;
    dst[start..start + 4].copy_from_slice(&(total as u32).to_be_bytes());
    dst[start + 4..start + 8].copy_from_slice(&word.to_be_bytes());
    Ok(())
}

/// Takes one frame off the front of `src`. `Ok(None)`: the frame is not complete yet (room for
/// it is reserved); on success exactly that frame is consumed. `max_frame` bounds `total`.
/// The body shares `src`'s memory (no copy).
pub fn decode(src: &mut BytesMut, max_frame: usize) -> Result<Option<RemotingCommand>, WireError> {
    let Some(prefix) = src.get(..4) else {
        return Ok(None);
    };
    let total = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if total > max_frame {
        return Err(WireError::FrameTooLarge {
            size: total,
            limit: max_frame,
        });
    }
    if total < 4 {
        return Err(WireError::FrameTooSmall(total));
    }
    if src.len() - 4 < total {
        src.reserve(4 + total - src.len());
        return Ok(None);
    }
    let word = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
    let kind = (word >> 24) as u8;
    let header_len = (word & 0xFF_FFFF) as usize;
    if header_len > total - 4 {
        return Err(WireError::HeaderLength {
            header: header_len,
            frame: total,
        });
    }
    let serialize_type =
        SerializeType::from_byte(kind).ok_or(WireError::UnknownSerializeType(kind))?;
    let header_bytes = &src[8..8 + header_len];
    let mut cmd = match serialize_type {
        SerializeType::Json => header::decode_json(header_bytes)?,
        SerializeType::RocketMq => header::decode_binary(header_bytes)?,
    };
    let mut frame = src.split_to(4 + total);
    frame.advance(8 + header_len);
    cmd.body = frame.freeze();
    Ok(Some(cmd))
}

/// [`decode`]/[`encode`] as a tokio-util codec, for `Framed` streams.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// Limit on a frame's `total` length.
    pub max_frame_size: usize,
}

impl FrameCodec {
    /// A codec refusing frames larger than `max_frame_size`.
    pub fn new(max_frame_size: usize) -> Self {
        FrameCodec { max_frame_size }
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

/// Error of [`FrameCodec`]: bad bytes or a failing stream.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Decoder for FrameCodec {
    type Item = RemotingCommand;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RemotingCommand>, CodecError> {
        Ok(decode(src, self.max_frame_size)?)
    }
}

impl Encoder<RemotingCommand> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: RemotingCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(encode(&item, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_codec_round_trip_and_limit() {
        let mut codec = FrameCodec::new(64);
        let cmd = RemotingCommand::request(105).with_ext("topic", "T");
        let mut buf = BytesMut::new();
        Encoder::encode(&mut codec, cmd.clone(), &mut buf).unwrap();
        assert!(buf.len() > 64, "the frame is bigger than the codec's limit");
        assert!(matches!(
            Decoder::decode(&mut codec, &mut buf.clone()),
            Err(CodecError::Wire(WireError::FrameTooLarge { limit: 64, .. }))
        ));
        let mut codec = FrameCodec::default();
        assert_eq!(Decoder::decode(&mut codec, &mut buf).unwrap(), Some(cmd));
        assert!(buf.is_empty());
    }

    #[test]
    fn serialize_type_bytes() {
        for t in [SerializeType::Json, SerializeType::RocketMq] {
            assert_eq!(SerializeType::from_byte(t.to_byte()), Some(t));
        }
        assert_eq!(SerializeType::from_byte(2), None);
    }
}
