//! Body compression: zlib, as upstream producers compress bodies over 4 KiB and mark them
//! with [`MessageSysFlag::COMPRESSED_FLAG`].

use std::io::{Read, Write};

use crate::error::MessageError;
use crate::sys_flag::MessageSysFlag;

/// Largest body [`decompress_body`] produces; bigger ones are refused (a zlib bomb guard).
pub const MAX_DECOMPRESSED_BODY: usize = 64 * 1024 * 1024;
/// Zlib level upstream producers compress with.
pub const DEFAULT_COMPRESS_LEVEL: u32 = 5;

/// Zlib-compresses `body` at `level` (0..=9), as upstream producers do for bodies over
/// 4 KiB; the caller sets `COMPRESSED_FLAG | COMPRESSION_ZLIB_TYPE` in the sysflag.
pub fn compress_body(body: &[u8], level: u32) -> Result<Vec<u8>, MessageError> {
    let mut enc = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::new(level.min(9)),
    );
    enc.write_all(body)
        .and_then(|_| enc.finish())
        .map_err(|e| MessageError::Compression(e.to_string()))
}

/// Inflates a body stored with [`MessageSysFlag::COMPRESSED_FLAG`]. The compression type bits
/// of `sys_flag` choose the algorithm: 0 (older clients) and 3 are zlib; LZ4 (1) and ZSTD (2)
/// are not supported and give an error. Bodies that would inflate past
/// [`MAX_DECOMPRESSED_BODY`] are refused.
pub fn decompress_body(body: &[u8], sys_flag: i32) -> Result<Vec<u8>, MessageError> {
    match (sys_flag & MessageSysFlag::COMPRESSION_TYPE_COMPARATOR) >> 8 {
        0 | 3 => {}
        1 => {
            return Err(MessageError::Compression(
                "LZ4 bodies are not supported".into(),
            ))
        }
        2 => {
            return Err(MessageError::Compression(
                "ZSTD bodies are not supported".into(),
            ))
        }
        other => {
            return Err(MessageError::Compression(format!(
                "unknown compression type {other}"
            )))
        }
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(2));
    let limit = MAX_DECOMPRESSED_BODY as u64 + 1;
    flate2::read::ZlibDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| MessageError::Compression(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_BODY {
        return Err(MessageError::TooLong {
            field: "decompressed body",
            len: out.len(),
            max: MAX_DECOMPRESSED_BODY,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompress_rejects_other_algorithms() {
        let z = compress_body(b"abc", DEFAULT_COMPRESS_LEVEL).unwrap();
        assert_eq!(decompress_body(&z, 1).unwrap(), b"abc");
        assert_eq!(
            decompress_body(&z, 1 | MessageSysFlag::COMPRESSION_ZLIB_TYPE).unwrap(),
            b"abc"
        );
        assert!(decompress_body(&z, 1 | MessageSysFlag::COMPRESSION_LZ4_TYPE).is_err());
        assert!(decompress_body(b"not zlib", 1).is_err());
    }
}
