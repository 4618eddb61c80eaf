//! The two ways message bytes can be wrong: [`RecordError`] for a stored record as the store
//! reads it back (its variants tell recovery whether more bytes may still arrive), and
//! [`MessageError`] for everything a client or broker decodes or encodes (records, batch
//! entries, message ids, compressed bodies). Also the bounds-checked `Reader` every decoder
//! here reads with; a short read converts into either error.

use thiserror::Error;

/// Why bytes are not a valid stored record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The buffer ends before the record does; more bytes may still arrive.
    #[error("record needs {needed} bytes, only {available} available")]
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Neither a message nor a blank magic code.
    #[error("illegal magic code {0:#010x}")]
    BadMagic(u32),
    /// TOTALSIZE disagrees with the field lengths, or a length is negative.
    #[error("inconsistent record length: {0}")]
    BadLength(String),
    /// The body does not match BODYCRC.
    #[error("body CRC mismatch: stored {stored:#x}, computed {computed:#x}")]
    CrcMismatch {
        /// CRC in the record.
        stored: i32,
        /// CRC of the body.
        computed: i32,
    },
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A host's port is outside `0..=65535`.
    #[error("{field} has port {port}")]
    BadPort {
        /// BORNHOST or STOREHOSTADDRESS.
        field: &'static str,
        /// The stored `i32`.
        port: i32,
    },
}

/// A record, batch entry, message id or compressed body that cannot be decoded or encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    #[error("message truncated: {field} needs {need} bytes, {have} left")]
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    #[error("unknown message magic code {0:#010x}")]
    BadMagic(u32),
    #[error("record says {declared} bytes but its fields take {actual}")]
    SizeMismatch { declared: i64, actual: usize },
    #[error("invalid {field}: {value}")]
    Invalid { field: &'static str, value: String },
    #[error("{field} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("body compression: {0}")]
    Compression(String),
}

impl From<RecordError> for MessageError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Truncated { needed, available } => MessageError::Truncated {
                field: "record",
                need: needed,
                have: available,
            },
            RecordError::BadMagic(magic) => MessageError::BadMagic(magic),
            RecordError::BadLength(what) => MessageError::Invalid {
                field: "record length",
                value: what,
            },
            RecordError::CrcMismatch { stored, computed } => MessageError::Invalid {
                field: "body CRC",
                value: format!("stored {stored:#x}, computed {computed:#x}"),
            },
            RecordError::NotUtf8(field) => MessageError::Invalid {
                field,
                value: "not UTF-8".into(),
            },
            RecordError::BadPort { field, port } => MessageError::Invalid {
                field,
                value: format!("port {port}"),
            },
        }
    }
}

/// A read past the end of the bytes a [`Reader`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    pub field: &'static str,
    pub need: usize,
    pub at: usize,
    pub len: usize,
}

impl From<Short> for MessageError {
    fn from(s: Short) -> Self {
        MessageError::Truncated {
            field: s.field,
            need: s.need,
            // A reader cut short below its position (a batch entry declaring fewer bytes
            // than its size field) has nothing left, not a negative count.
            have: s.len.saturating_sub(s.at),
        }
    }
}

impl From<Short> for RecordError {
    fn from(s: Short) -> Self {
        RecordError::BadLength(format!(
            "{} of {} bytes at {} runs past the record end {}",
            s.field, s.need, s.at, s.len
        ))
    }
}

/// Bounds-checked big-endian reader: every read checks the length first and never panics.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Short> {
        let short = Short {
            field,
            need: n,
            at: self.pos,
            len: self.buf.len(),
        };
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(short)?;
        let out = self.buf.get(self.pos..end).ok_or(short)?;
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Short> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, Short> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn i16(&mut self, field: &'static str) -> Result<i16, Short> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, Short> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, Short> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }
}

/// `len` as an `i32` when it is at most `max`.
pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<i32, MessageError> {
    if len > max {
        return Err(MessageError::TooLong { field, len, max });
    }
    i32::try_from(len).map_err(|_| MessageError::TooLong { field, len, max })
}
