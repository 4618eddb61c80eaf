//! The stored-message record: how one message is laid out in the CommitLog and in the bodies of
//! `PULL_MESSAGE`, `QUERY_MESSAGE` and `VIEW_MESSAGE_BY_ID` responses (the bytes served to a pull
//! are the CommitLog bytes themselves). This module owns the only writer ([`encode_record`],
//! [`encode_blank`]) and the only parser ([`parse_record`]) of that layout; [`StoredMessage`] and
//! the client's [`MessageExt`](crate::MessageExt) are built on them.
//!
//! All integers are big-endian (Java's `ByteBuffer` default). Facts come from upstream's
//! `MessageDecoder` and `CommitLog` (Apache RocketMQ, develop branch).
//!
//! | #  | field                        | size      | notes                                           |
//! |----|------------------------------|-----------|-------------------------------------------------|
//! | 1  | TOTALSIZE                    | 4         | i32, length of the whole record                 |
//! | 2  | MAGICCODE                    | 4         | `0xDAA320A7` (v1), `0xDAA320AB` (v2: topics over 127 bytes) |
//! | 3  | BODYCRC                      | 4         | `crc32(body) & 0x7FFFFFFF`                      |
//! | 4  | QUEUEID                      | 4         | i32                                             |
//! | 5  | FLAG                         | 4         | i32, the producer's flag                        |
//! | 6  | QUEUEOFFSET                  | 8         | i64, position in the ConsumeQueue               |
//! | 7  | PHYSICALOFFSET               | 8         | i64, position of this record in the CommitLog   |
//! | 8  | SYSFLAG                      | 4         | i32, see [`MessageSysFlag`]                     |
//! | 9  | BORNTIMESTAMP                | 8         | i64, ms                                         |
//! | 10 | BORNHOST                     | 8 or 20   | IPv4 (4) or IPv6 (16, `BORNHOST_V6_FLAG`) + port i32 |
//! | 11 | STORETIMESTAMP               | 8         | i64, ms, set by the store under the write lock  |
//! | 12 | STOREHOSTADDRESS             | 8 or 20   | as BORNHOST, `STOREHOSTADDRESS_V6_FLAG`         |
//! | 13 | RECONSUMETIMES               | 4         | i32                                             |
//! | 14 | PREPARED TRANSACTION OFFSET  | 8         | i64                                             |
//! | 15 | BODY                         | 4 + n     | i32 length, then the body (zlib when SYSFLAG has `COMPRESSED_FLAG`) |
//! | 16 | TOPIC                        | 1 + n     | u8 length (v2: u16), then UTF-8 topic           |
//! | 17 | PROPERTIES                   | 2 + n     | u16 length, then `name\x01value\x02` pairs      |
//!
//! At the end of a CommitLog segment that cannot hold the next record the writer puts a blank
//! marker: TOTALSIZE = bytes left in the segment, MAGICCODE = `0xCBD43194`; the rest is unused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{BufMut, Bytes};

use crate::error::{check_len, MessageError, Reader, RecordError};
use crate::host::{is_v6, put_host};
use crate::id::create_message_id;
use crate::properties::{decode_properties, find_property};
use crate::sys_flag::MessageSysFlag;

/// Magic code of a v1 record (`0xDAA320A7`): the topic length is one byte.
pub const MESSAGE_MAGIC_CODE: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic code of a v2 record (`0xDAA320AB`): as v1 but the topic length is 2 bytes (written for
/// topics over [`MAX_TOPIC_LENGTH`] bytes).
pub const MESSAGE_MAGIC_CODE_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Magic code of the blank marker at the end of a CommitLog segment (`0xCBD43194`).
pub const BLANK_MAGIC_CODE: i32 = 0xCBD4_3194_u32 as i32;
/// Size of the blank marker a segment must always have room for (TOTALSIZE + MAGICCODE).
pub const END_FILE_MIN_BLANK_LENGTH: usize = 4 + 4;
/// Longest topic a v1 record can hold (its length is one signed byte in Java).
pub const MAX_TOPIC_LENGTH: usize = 127;
/// Longest properties string the store accepts (upstream's length is a Java `short`).
pub const MAX_PROPERTIES_LENGTH: usize = i16::MAX as usize;

/// Byte positions of fixed fields, as upstream `MessageDecoder` names them.
pub mod pos {
    /// MAGICCODE.
    pub const MAGIC_CODE: usize = 4;
    /// BODYCRC.
    pub const BODY_CRC: usize = 8;
    /// QUEUEID.
    pub const QUEUE_ID: usize = 12;
    /// FLAG.
    pub const FLAG: usize = 16;
    /// QUEUEOFFSET.
    pub const QUEUE_OFFSET: usize = 20;
    /// PHYSICALOFFSET.
    pub const PHYSICAL_OFFSET: usize = 28;
    /// SYSFLAG.
    pub const SYS_FLAG: usize = 36;
    /// BORNTIMESTAMP.
    pub const BORN_TIMESTAMP: usize = 40;
    /// BORNHOST.
    pub const BORN_HOST: usize = 48;
}

/// A message to append, as the broker hands it to the store (upstream `MessageExtBrokerInner`).
///
/// The store fills in the queue offset, physical offset and store timestamp; it sets the two
/// IPv6 bits of `sys_flag` from the address families of `born_host` and `store_host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInner {
    /// Topic, at most 127 UTF-8 bytes.
    pub topic: String,
    /// Queue of the topic.
    pub queue_id: i32,
    /// The producer's flag (opaque).
    pub flag: i32,
    /// Body bytes (already compressed if `COMPRESSED_FLAG` is set).
    pub body: Bytes,
    /// Properties, pre-encoded as upstream does (`name\x01value\x02`...); see
    /// [`encode_properties`](crate::encode_properties).
    pub properties: String,
    /// SYSFLAG bits (compression, transaction type, ...).
    pub sys_flag: i32,
    /// When the producer created the message, ms since the epoch.
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// This broker's address (it is part of the message id).
    pub store_host: SocketAddr,
    /// How many times the message was consumed and sent back.
    pub reconsume_times: i32,
    /// For transactional messages: CommitLog offset of the prepared message.
    pub prepared_transaction_offset: i64,
}

impl MessageInner {
    /// A plain message with empty properties, zero flags and unspecified hosts; set the other
    /// fields as needed.
    pub fn new(topic: impl Into<String>, queue_id: i32, body: impl Into<Bytes>) -> Self {
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        MessageInner {
            topic: topic.into(),
            queue_id,
            flag: 0,
            body: body.into(),
            properties: String::new(),
            sys_flag: 0,
            born_timestamp: 0,
            born_host: unspecified,
            store_host: unspecified,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }

    /// SYSFLAG as it will be stored: the given bits with the IPv6 bits set from the hosts.
    pub fn stored_sys_flag(&self) -> i32 {
        stored_sys_flag(self.sys_flag, &self.born_host, &self.store_host)
    }

    /// Length of the record this message encodes to.
    pub fn record_len(&self) -> usize {
        record_len(
            self.stored_sys_flag(),
            self.body.len(),
            self.topic.len(),
            self.properties.len(),
        )
    }
}

/// Where the writer puts a record and what it stamps on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordStamp {
    /// Position in the ConsumeQueue.
    pub queue_offset: i64,
    /// Position of the record in the CommitLog.
    pub physical_offset: i64,
    /// Store time, ms since the epoch.
    pub store_timestamp: i64,
    /// `crc32(body) & 0x7FFFFFFF`.
    pub body_crc: i32,
}

/// Length of a record with these field sizes (upstream `calMsgLength`); a topic longer than
/// [`MAX_TOPIC_LENGTH`] takes a 2-byte length (the V2 layout).
pub fn record_len(
    sys_flag: i32,
    body_len: usize,
    topic_len: usize,
    properties_len: usize,
) -> usize {
    let born_host = host_len(sys_flag & MessageSysFlag::BORNHOST_V6_FLAG != 0);
    let store_host = host_len(sys_flag & MessageSysFlag::STOREHOSTADDRESS_V6_FLAG != 0);
    4 + 4
        + 4
        + 4
        + 4
        + 8
        + 8
        + 4
        + 8
        + born_host
        + 8
        + store_host
        + 4
        + 8
        + 4
        + body_len
        + if topic_len > MAX_TOPIC_LENGTH { 2 } else { 1 }
        + topic_len
        + 2
        + properties_len
}

fn host_len(v6: bool) -> usize {
    if v6 {
        16 + 4
    } else {
        4 + 4
    }
}

/// `sys_flag` as a record stores it: its two host bits set from the address families of
/// `born_host` and `store_host` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn stored_sys_flag(sys_flag: i32, born_host: &SocketAddr, store_host: &SocketAddr) -> i32 {
    let mut flag =
        sys_flag & !(MessageSysFlag::BORNHOST_V6_FLAG | MessageSysFlag::STOREHOSTADDRESS_V6_FLAG);
    if is_v6(born_host) {
        flag |= MessageSysFlag::BORNHOST_V6_FLAG;
    }
    if is_v6(store_host) {
        flag |= MessageSysFlag::STOREHOSTADDRESS_V6_FLAG;
    }
    flag
}

/// Body CRC as upstream computes it (`UtilAll.crc32`): CRC-32 (IEEE) with the sign bit cleared.
pub fn body_crc(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// Writes `msg` as a record into `dst`, which must be exactly `msg.record_len()` bytes (it
/// panics otherwise). Topics over [`MAX_TOPIC_LENGTH`] bytes get the v2 magic.
///
/// Validation (sizes, topic length) is the caller's job; this only lays bytes out: a topic over
/// `u16::MAX` bytes, a properties string over `u16::MAX` bytes or a body over `i32::MAX` bytes
/// would be cut.
pub fn encode_record(msg: &MessageInner, stamp: &RecordStamp, dst: &mut [u8]) {
    let sys_flag = msg.stored_sys_flag();
    let total = dst.len();
    debug_assert_eq!(total, msg.record_len());
    let wide_topic = msg.topic.len() > MAX_TOPIC_LENGTH;
    let mut w = &mut *dst;
    w.put_i32(total as i32); // 1 TOTALSIZE
    w.put_i32(if wide_topic {
        MESSAGE_MAGIC_CODE_V2
    } else {
        MESSAGE_MAGIC_CODE
    }); // 2 MAGICCODE
    w.put_i32(stamp.body_crc); // 3 BODYCRC
    w.put_i32(msg.queue_id); // 4 QUEUEID
    w.put_i32(msg.flag); // 5 FLAG
    w.put_i64(stamp.queue_offset); // 6 QUEUEOFFSET
    w.put_i64(stamp.physical_offset); // 7 PHYSICALOFFSET
    w.put_i32(sys_flag); // 8 SYSFLAG
    w.put_i64(msg.born_timestamp); // 9 BORNTIMESTAMP
    put_host(&mut w, &msg.born_host); // 10 BORNHOST
    w.put_i64(stamp.store_timestamp); // 11 STORETIMESTAMP
    put_host(&mut w, &msg.store_host); // 12 STOREHOSTADDRESS
    w.put_i32(msg.reconsume_times); // 13 RECONSUMETIMES
    w.put_i64(msg.prepared_transaction_offset); // 14 PREPARED TRANSACTION OFFSET
    w.put_i32(msg.body.len() as i32); // 15 BODY
    w.put_slice(&msg.body);
    if wide_topic {
        w.put_u16(msg.topic.len() as u16); // 16 TOPIC (v2)
    } else {
        w.put_u8(msg.topic.len() as u8); // 16 TOPIC
    }
    w.put_slice(msg.topic.as_bytes());
    w.put_u16(msg.properties.len() as u16); // 17 PROPERTIES
    w.put_slice(msg.properties.as_bytes());
    debug_assert!(w.is_empty());
}

/// Writes the end-of-segment blank marker into the first 8 bytes of `dst` (it panics when
/// `dst` is shorter).
pub fn encode_blank(dst: &mut [u8], remaining: u32) {
    dst[..4].copy_from_slice(&(remaining as i32).to_be_bytes());
    dst[4..8].copy_from_slice(&BLANK_MAGIC_CODE.to_be_bytes());
}

/// What a position in the CommitLog holds.
// Parsed once per record on the dispatch path; boxing the view would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A message record.
    Message(RecordView<'a>),
    /// The end-of-segment blank marker; the segment's remaining bytes.
    Blank(u32),
    /// Zeros: nothing was written here.
    Empty,
}

/// A record parsed in place: fixed fields by value, variable fields borrowed.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    /// TOTALSIZE.
    pub total_size: u32,
    /// MAGICCODE.
    pub magic_code: i32,
    /// BODYCRC.
    pub body_crc: i32,
    /// QUEUEID.
    pub queue_id: i32,
    /// FLAG.
    pub flag: i32,
    /// QUEUEOFFSET.
    pub queue_offset: i64,
    /// PHYSICALOFFSET.
    pub physical_offset: i64,
    /// SYSFLAG.
    pub sys_flag: i32,
    /// BORNTIMESTAMP.
    pub born_timestamp: i64,
    /// BORNHOST.
    pub born_host: SocketAddr,
    /// STORETIMESTAMP.
    pub store_timestamp: i64,
    /// STOREHOSTADDRESS.
    pub store_host: SocketAddr,
    /// RECONSUMETIMES.
    pub reconsume_times: i32,
    /// PREPARED TRANSACTION OFFSET.
    pub prepared_transaction_offset: i64,
    /// Byte range of the body within the record.
    pub body_range: std::ops::Range<usize>,
    /// The body.
    pub body: &'a [u8],
    /// The topic.
    pub topic: &'a str,
    /// The encoded properties (lossy if not UTF-8).
    pub properties: Cow<'a, str>,
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    i32::from_be_bytes(b)
}

fn read_host(r: &mut Reader<'_>, v6: bool, field: &'static str) -> Result<SocketAddr, RecordError> {
    let ip = if v6 {
        IpAddr::from(r.array::<16>(field)?)
    } else {
        IpAddr::from(r.array::<4>(field)?)
    };
    let port = r.i32(field)?;
    let port = u16::try_from(port).map_err(|_| RecordError::BadPort { field, port })?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses the record at the start of `buf` (which may extend past it).
///
/// Returns [`Parsed::Empty`] for zeros (no record was written here), [`Parsed::Blank`] for the
/// end-of-segment marker, and an error when the bytes are not a whole, consistent record. With
/// `check_crc` the body CRC is verified too. Every read is bounds-checked; it never panics.
pub fn parse_record(buf: &[u8], check_crc: bool) -> Result<Parsed<'_>, RecordError> {
    if buf.len() < 8 {
        if buf.iter().all(|&b| b == 0) {
            return Ok(Parsed::Empty);
        }
        return Err(RecordError::Truncated {
            needed: 8,
            available: buf.len(),
        });
    }
    let total = be_i32(buf, 0);
    let magic = be_i32(buf, 4);
    match magic {
        MESSAGE_MAGIC_CODE | MESSAGE_MAGIC_CODE_V2 => {}
        BLANK_MAGIC_CODE => {
            if total < END_FILE_MIN_BLANK_LENGTH as i32 {
                return Err(RecordError::BadLength(format!(
                    "blank marker of {total} bytes"
                )));
            }
            return Ok(Parsed::Blank(total as u32));
        }
        0 if total == 0 => return Ok(Parsed::Empty),
        other => return Err(RecordError::BadMagic(other as u32)),
    }
    let min_len = record_len(0, 0, 0, 0);
    if total < min_len as i32 {
        return Err(RecordError::BadLength(format!("TOTALSIZE {total}")));
    }
    let total = total as usize;
    let Some(record) = buf.get(..total) else {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    };
    let mut r = Reader::new(record, 8);
    let body_crc = r.i32("BODYCRC")?;
    let queue_id = r.i32("QUEUEID")?;
    let flag = r.i32("FLAG")?;
    let queue_offset = r.i64("QUEUEOFFSET")?;
    let physical_offset = r.i64("PHYSICALOFFSET")?;
    let sys_flag = r.i32("SYSFLAG")?;
    let born_timestamp = r.i64("BORNTIMESTAMP")?;
    let born_host = read_host(
        &mut r,
        sys_flag & MessageSysFlag::BORNHOST_V6_FLAG != 0,
        "BORNHOST",
    )?;
    let store_timestamp = r.i64("STORETIMESTAMP")?;
    let store_host = read_host(
        &mut r,
        sys_flag & MessageSysFlag::STOREHOSTADDRESS_V6_FLAG != 0,
        "STOREHOSTADDRESS",
    )?;
    let reconsume_times = r.i32("RECONSUMETIMES")?;
    let prepared_transaction_offset = r.i64("PREPARED TRANSACTION OFFSET")?;
    let body_len = r.i32("BODY length")?;
    let body_len = usize::try_from(body_len)
        .map_err(|_| RecordError::BadLength(format!("body length {body_len}")))?;
    let body_start = r.pos;
    let body = r.take(body_len, "BODY")?;
    let topic_len = if magic == MESSAGE_MAGIC_CODE_V2 {
        usize::from(r.u16("TOPIC length")?)
    } else {
        usize::from(r.u8("TOPIC length")?)
    };
    let topic = std::str::from_utf8(r.take(topic_len, "TOPIC")?)
        .map_err(|_| RecordError::NotUtf8("topic"))?;
    let props_len = usize::from(r.u16("PROPERTIES length")?);
    let properties = String::from_utf8_lossy(r.take(props_len, "PROPERTIES")?);
    if r.pos != total {
        return Err(RecordError::BadLength(format!(
            "TOTALSIZE {total} but fields end at {}",
            r.pos
        )));
    }
    if check_crc {
        let computed = self::body_crc(body);
        if computed != body_crc {
            return Err(RecordError::CrcMismatch {
                stored: body_crc,
                computed,
            });
        }
    }
    Ok(Parsed::Message(RecordView {
        total_size: total as u32,
        magic_code: magic,
        body_crc,
        queue_id,
        flag,
        queue_offset,
        physical_offset,
        sys_flag,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body_range: body_start..body_start + body_len,
        body,
        topic,
        properties,
    }))
}

/// A decoded stored message (upstream `MessageExt`) as the store and broker see it: body as
/// stored (a zero-copy slice of the record), properties as the encoded string. The client view,
/// with the body inflated and the properties parsed, is [`MessageExt`](crate::MessageExt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// TOTALSIZE.
    pub store_size: i32,
    /// BODYCRC.
    pub body_crc: i32,
    /// QUEUEID.
    pub queue_id: i32,
    /// FLAG.
    pub flag: i32,
    /// QUEUEOFFSET.
    pub queue_offset: i64,
    /// PHYSICALOFFSET.
    pub commit_log_offset: i64,
    /// SYSFLAG.
    pub sys_flag: i32,
    /// BORNTIMESTAMP.
    pub born_timestamp: i64,
    /// BORNHOST.
    pub born_host: SocketAddr,
    /// STORETIMESTAMP.
    pub store_timestamp: i64,
    /// STOREHOSTADDRESS.
    pub store_host: SocketAddr,
    /// RECONSUMETIMES.
    pub reconsume_times: i32,
    /// PREPARED TRANSACTION OFFSET.
    pub prepared_transaction_offset: i64,
    /// Body (as stored; still compressed if `COMPRESSED_FLAG` is set).
    pub body: Bytes,
    /// Topic.
    pub topic: String,
    /// Encoded properties string.
    pub properties: String,
}

impl StoredMessage {
    /// Decodes a whole record (as returned by the store's reads), verifying the body CRC.
    pub fn decode(record: &Bytes) -> Result<StoredMessage, RecordError> {
        match parse_record(record, true)? {
            Parsed::Message(v) => Ok(StoredMessage {
                store_size: v.total_size as i32,
                body_crc: v.body_crc,
                queue_id: v.queue_id,
                flag: v.flag,
                queue_offset: v.queue_offset,
                commit_log_offset: v.physical_offset,
                sys_flag: v.sys_flag,
                born_timestamp: v.born_timestamp,
                born_host: v.born_host,
                store_timestamp: v.store_timestamp,
                store_host: v.store_host,
                reconsume_times: v.reconsume_times,
                prepared_transaction_offset: v.prepared_transaction_offset,
                body: record.slice(v.body_range.clone()),
                topic: v.topic.to_string(),
                properties: v.properties.into_owned(),
            }),
            Parsed::Blank(_) | Parsed::Empty => Err(RecordError::BadMagic(be_i32(
                record.get(..8).unwrap_or(&[0; 8]),
                4,
            ) as u32)),
        }
    }

    /// The record encoded again from these fields, after a caller changed the topic or the
    /// properties (a POP retry message handed out under its original topic). Sizes beyond the
    /// record format's limits are an error.
    pub fn to_record(&self) -> Result<Bytes, MessageError> {
        check_len("properties", self.properties.len(), usize::from(u16::MAX))?;
        check_len("topic", self.topic.len(), usize::from(u16::MAX))?;
        let inner = MessageInner {
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            flag: self.flag,
            body: self.body.clone(),
            properties: self.properties.clone(),
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            born_host: self.born_host,
            store_host: self.store_host,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
        };
        let total = inner.record_len();
        check_len("record", total, i32::MAX as usize)?;
        let stamp = RecordStamp {
            queue_offset: self.queue_offset,
            physical_offset: self.commit_log_offset,
            store_timestamp: self.store_timestamp,
            body_crc: self.body_crc,
        };
        let mut out = vec![0u8; total];
        encode_record(&inner, &stamp, &mut out);
        Ok(Bytes::from(out))
    }

    /// The upstream message id (`offsetMsgId`) of this message.
    pub fn msg_id(&self) -> String {
        create_message_id(self.store_host, self.commit_log_offset)
    }

    /// Value of one property.
    pub fn property(&self, name: &str) -> Option<&str> {
        find_property(&self.properties, name)
    }

    /// All properties as a map.
    pub fn properties_map(&self) -> HashMap<String, String> {
        decode_properties(&self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_properties;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn sample() -> MessageInner {
        MessageInner {
            topic: "T".into(),
            queue_id: 3,
            flag: 7,
            body: Bytes::from_static(b"hi"),
            properties: encode_properties([("TAGS", "a")]),
            sys_flag: 0,
            born_timestamp: 0x0102_0304_0506_0708,
            born_host: "10.0.0.1:4660".parse().unwrap(),
            store_host: "192.168.1.2:10911".parse().unwrap(),
            reconsume_times: 1,
            prepared_transaction_offset: 0,
        }
    }

    #[test]
    fn golden_v1_record() {
        let msg = sample();
        let stamp = RecordStamp {
            queue_offset: 5,
            physical_offset: 0x1000,
            store_timestamp: 0x1111,
            body_crc: body_crc(b"hi"),
        };
        let mut buf = vec![0u8; msg.record_len()];
        encode_record(&msg, &stamp, &mut buf);
        let crc = body_crc(b"hi").to_be_bytes();
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0, 0, 0, 101][..],                  // 1 TOTALSIZE = 101
            &[0xDA, 0xA3, 0x20, 0xA7],            // 2 MAGICCODE v1
            &crc,                                 // 3 BODYCRC
            &[0, 0, 0, 3],                        // 4 QUEUEID
            &[0, 0, 0, 7],                        // 5 FLAG
            &[0, 0, 0, 0, 0, 0, 0, 5],            // 6 QUEUEOFFSET
            &[0, 0, 0, 0, 0, 0, 0x10, 0],         // 7 PHYSICALOFFSET
            &[0, 0, 0, 0],                        // 8 SYSFLAG
            &[1, 2, 3, 4, 5, 6, 7, 8],            // 9 BORNTIMESTAMP
            &[10, 0, 0, 1, 0, 0, 0x12, 0x34],     // 10 BORNHOST 10.0.0.1:4660
            &[0, 0, 0, 0, 0, 0, 0x11, 0x11],      // 11 STORETIMESTAMP
            &[192, 168, 1, 2, 0, 0, 0x2A, 0x9F],  // 12 STOREHOST 192.168.1.2:10911
            &[0, 0, 0, 1],                        // 13 RECONSUMETIMES
            &[0, 0, 0, 0, 0, 0, 0, 0],            // 14 PREPARED TRANSACTION OFFSET
            &[0, 0, 0, 2], b"hi",                 // 15 BODY
            &[1], b"T",                           // 16 TOPIC
            &[0, 7], b"TAGS\x01a\x02",            // 17 PROPERTIES
        ]
        .concat();
        assert_eq!(buf, expected);
        // CRC-32 of "hi" is 0xD8932AAC; the sign bit is cleared.
        assert_eq!(body_crc(b"hi"), 0x5893_2AAC);
    }

    #[test]
    fn golden_v6_hosts_and_flags() {
        let mut msg = sample();
        msg.born_host = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1);
        msg.store_host = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 2);
        assert_eq!(
            msg.stored_sys_flag(),
            MessageSysFlag::BORNHOST_V6_FLAG | MessageSysFlag::STOREHOSTADDRESS_V6_FLAG
        );
        assert_eq!(msg.record_len(), 101 + 24);
        let stamp = RecordStamp {
            queue_offset: 0,
            physical_offset: 0,
            store_timestamp: 0,
            body_crc: body_crc(&msg.body),
        };
        let mut buf = vec![0u8; msg.record_len()];
        encode_record(&msg, &stamp, &mut buf);
        // SYSFLAG = 0x30, then BORNHOST = 16-byte ::1 + port 1.
        assert_eq!(&buf[36..40], &[0, 0, 0, 0x30]);
        let mut born = [0u8; 20];
        born[15] = 1;
        born[19] = 1;
        assert_eq!(&buf[48..68], &born);
        // An IPv4-mapped IPv6 address is stored as IPv4, as Java does.
        msg.born_host = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(
            msg.stored_sys_flag(),
            MessageSysFlag::STOREHOSTADDRESS_V6_FLAG
        );
    }

    #[test]
    fn golden_blank_marker() {
        let mut buf = [0u8; 8];
        encode_blank(&mut buf, 300);
        assert_eq!(buf, [0, 0, 1, 44, 0xCB, 0xD4, 0x31, 0x94]);
        assert!(matches!(parse_record(&buf, true), Ok(Parsed::Blank(300))));
        assert!(matches!(parse_record(&[0u8; 8], true), Ok(Parsed::Empty)));
    }

    #[test]
    fn v2_topic_length_is_two_bytes() {
        let msg = sample();
        let stamp = RecordStamp {
            queue_offset: 1,
            physical_offset: 2,
            store_timestamp: 3,
            body_crc: body_crc(&msg.body),
        };
        let mut v1 = vec![0u8; msg.record_len()];
        encode_record(&msg, &stamp, &mut v1);
        // Rebuild as v2: magic changes, topic length grows to 2 bytes, TOTALSIZE + 1.
        let topic_at = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 2;
        let mut v2 = Vec::new();
        v2.extend_from_slice(&((v1.len() + 1) as i32).to_be_bytes());
        v2.extend_from_slice(&MESSAGE_MAGIC_CODE_V2.to_be_bytes());
        v2.extend_from_slice(&v1[8..topic_at]);
        v2.extend_from_slice(&[0, 1]);
        v2.extend_from_slice(&v1[topic_at + 1..]);
        let ext = StoredMessage::decode(&Bytes::from(v2)).unwrap();
        assert_eq!(ext.topic, "T");
        assert_eq!(ext.body, Bytes::from_static(b"hi"));
        assert_eq!(ext.property("TAGS"), Some("a"));
    }

    #[test]
    fn parse_rejects_damage() {
        let msg = sample();
        let stamp = RecordStamp {
            queue_offset: 0,
            physical_offset: 0,
            store_timestamp: 0,
            body_crc: body_crc(&msg.body),
        };
        let mut buf = vec![0u8; msg.record_len()];
        encode_record(&msg, &stamp, &mut buf);
        assert!(matches!(
            parse_record(&buf[..50], true),
            Err(RecordError::Truncated { .. })
        ));
        let mut bad = buf.clone();
        bad[4] = 0;
        assert!(matches!(
            parse_record(&bad, true),
            Err(RecordError::BadMagic(_))
        ));
        let body_at = msg.record_len() - 2 - 7 - 1 - 1 - 2;
        let mut bad = buf.clone();
        bad[body_at] ^= 0xFF;
        assert!(matches!(
            parse_record(&bad, true),
            Err(RecordError::CrcMismatch { .. })
        ));
        assert!(parse_record(&bad, false).is_ok());
        let mut bad = buf.clone();
        bad[3] = 200; // TOTALSIZE too large for the fields
        let mut longer = bad.clone();
        longer.resize(300, 0);
        assert!(matches!(
            parse_record(&longer, true),
            Err(RecordError::BadLength(_))
        ));
        let mut bad = buf;
        bad[0] = 0x80; // negative TOTALSIZE
        assert!(parse_record(&bad, true).is_err());
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| {
                let v6 = Ipv6Addr::from(ip);
                // Mapped addresses decode as IPv4; keep the property about real IPv6.
                let v6 = if v6.to_ipv4_mapped().is_some() {
                    Ipv6Addr::LOCALHOST
                } else {
                    v6
                };
                SocketAddr::new(IpAddr::V6(v6), p)
            }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            topic in "[a-zA-Z0-9_%-]{1,127}",
            queue_id in any::<i32>(),
            flag in any::<i32>(),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            props in proptest::collection::vec(("[A-Z_]{1,8}", "[ -~]{1,16}"), 0..5),
            sys in any::<i32>(),
            born_ts in any::<i64>(),
            born in arb_addr(),
            store in arb_addr(),
            reconsume in any::<i32>(),
            prepared in any::<i64>(),
            qoff in any::<i64>(),
            phys in any::<i64>(),
            store_ts in any::<i64>(),
        ) {
            let properties = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let msg = MessageInner {
                topic: topic.clone(), queue_id, flag, body: Bytes::from(body.clone()), properties: properties.clone(),
                sys_flag: sys, born_timestamp: born_ts, born_host: born, store_host: store,
                reconsume_times: reconsume, prepared_transaction_offset: prepared,
            };
            let stamp = RecordStamp { queue_offset: qoff, physical_offset: phys, store_timestamp: store_ts, body_crc: body_crc(&body) };
            let mut buf = vec![0u8; msg.record_len()];
            encode_record(&msg, &stamp, &mut buf);
            let ext = StoredMessage::decode(&Bytes::from(buf)).unwrap();
            prop_assert_eq!(ext.store_size as usize, msg.record_len());
            prop_assert_eq!(ext.topic, topic);
            prop_assert_eq!(ext.queue_id, queue_id);
            prop_assert_eq!(ext.flag, flag);
            prop_assert_eq!(&ext.body[..], &body[..]);
            prop_assert_eq!(ext.properties, properties);
            prop_assert_eq!(ext.sys_flag, msg.stored_sys_flag());
            prop_assert_eq!(ext.born_timestamp, born_ts);
            prop_assert_eq!(ext.born_host, born);
            prop_assert_eq!(ext.store_host, store);
            prop_assert_eq!(ext.reconsume_times, reconsume);
            prop_assert_eq!(ext.prepared_transaction_offset, prepared);
            prop_assert_eq!(ext.queue_offset, qoff);
            prop_assert_eq!(ext.commit_log_offset, phys);
            prop_assert_eq!(ext.store_timestamp, store_ts);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_record(&bytes, true);
        }

    }
}
