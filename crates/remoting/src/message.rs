//! Messages and the stored-message record format.
//!
//! This module owns everything about a message's bytes that both ends of the protocol share:
//!
//! - [`Message`] (what a producer sends) and [`MessageExt`] (a stored message as a broker serves
//!   it in `PULL_MESSAGE`, `QUERY_MESSAGE` and `VIEW_MESSAGE_BY_ID` bodies), with the record
//!   codec ([`MessageExt::decode`], [`MessageExt::decode_all`], [`MessageExt::encode`]);
//! - the properties string codec ([`Properties`]) and the property names ([`MessageConst`]);
//! - the system flag bits ([`MessageSysFlag`]) and zlib body compression;
//! - the broker's message id (`offsetMsgId`, [`create_message_id`] / [`decode_message_id`]) and
//!   the client's unique id (`UNIQ_KEY`, [`UniqIdGenerator`]);
//! - the `SEND_BATCH_MESSAGE` body ([`encode_batch`] / [`decode_batch`]);
//! - the tag hash stored in consume-queue units ([`tags_hash_code`]).
//!
//! Facts come from upstream's `MessageDecoder`, `MessageSysFlag`, `MessageConst` and
//! `MessageClientIDSetter` (Apache RocketMQ, develop branch).
//!
//! # Stored-message record
//!
//! All integers are big-endian. Hosts are an IPv4 (4 bytes) or IPv6 (16 bytes) address
//! followed by an `i32` port; which one is chosen by the sysflag bits
//! [`MessageSysFlag::BORNHOST_V6_FLAG`] and [`MessageSysFlag::STOREHOSTADDRESS_V6_FLAG`].
//!
//! | size | field |
//! |---|---|
//! | 4 | total size of the record, this field included |
//! | 4 | magic: [`MESSAGE_MAGIC_CODE`] (`0xDAA320A7`, 1-byte topic length) or [`MESSAGE_MAGIC_CODE_V2`] (`0xDAA320AB`, 2-byte topic length) |
//! | 4 | body CRC32 |
//! | 4 | queue id |
//! | 4 | flag (user flag) |
//! | 8 | queue offset (consume-queue index) |
//! | 8 | commit-log offset (physical offset) |
//! | 4 | sysflag |
//! | 8 | born timestamp (ms) |
//! | 8 / 20 | born host: IPv4 / IPv6 + `i32` port |
//! | 8 | store timestamp (ms) |
//! | 8 / 20 | store host: IPv4 / IPv6 + `i32` port |
//! | 4 | reconsume times |
//! | 8 | prepared transaction offset |
//! | 4 + n | body length, body (zlib-compressed when sysflag has [`MessageSysFlag::COMPRESSED_FLAG`]) |
//! | 1 + t / 2 + t | topic length (by magic), topic (UTF-8) |
//! | 2 + p | properties length (`u16`), properties string (see [`Properties`]) |
//!
//! # Batch body (`SEND_BATCH_MESSAGE`)
//!
//! One entry per message, one after another:
//!
//! | size | field |
//! |---|---|
//! | 4 | total size of the entry, this field included |
//! | 4 | magic: 0 |
//! | 4 | body CRC: 0 |
//! | 4 | flag |
//! | 4 + n | body length, body |
//! | 2 + p | properties length, properties string |

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use thiserror::Error;

use crate::error::RemotingError;

/// Magic of a record whose topic length is one byte (topics up to 127 bytes).
pub const MESSAGE_MAGIC_CODE: i32 = 0xDAA3_20A7_u32 as i32;
/// Magic of a record whose topic length is two bytes (written for topics over 127 bytes).
pub const MESSAGE_MAGIC_CODE_V2: i32 = 0xDAA3_20AB_u32 as i32;
/// Magic of the blank filler at the end of a commit-log file.
pub const BLANK_MAGIC_CODE: i32 = 0xCBD4_3194_u32 as i32;
/// Separates a property's name from its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separates one property from the next.
pub const PROPERTY_SEPARATOR: char = '\u{2}';
/// Largest body [`decompress_body`] produces; bigger ones are refused (a zlib bomb guard).
pub const MAX_DECOMPRESSED_BODY: usize = 64 * 1024 * 1024;
/// Zlib level upstream producers compress with.
pub const DEFAULT_COMPRESS_LEVEL: u32 = 5;

/// Bits of a message's system flag (upstream `MessageSysFlag`).
#[derive(Clone, Copy, Debug)]
pub struct MessageSysFlag;

impl MessageSysFlag {
    /// The body is compressed (with the algorithm in [`Self::COMPRESSION_TYPE_COMPARATOR`]).
    pub const COMPRESSED_FLAG: i32 = 0x1;
    pub const MULTI_TAGS_FLAG: i32 = 0x1 << 1;
    pub const TRANSACTION_NOT_TYPE: i32 = 0;
    pub const TRANSACTION_PREPARED_TYPE: i32 = 0x1 << 2;
    pub const TRANSACTION_COMMIT_TYPE: i32 = 0x2 << 2;
    pub const TRANSACTION_ROLLBACK_TYPE: i32 = 0x3 << 2;
    /// The born host is IPv6 (16 address bytes instead of 4).
    pub const BORNHOST_V6_FLAG: i32 = 0x1 << 4;
    /// The store host is IPv6 (16 address bytes instead of 4).
    pub const STOREHOSTADDRESS_V6_FLAG: i32 = 0x1 << 5;
    pub const NEED_UNWRAP_FLAG: i32 = 0x1 << 6;
    pub const INNER_BATCH_FLAG: i32 = 0x1 << 7;
    pub const COMPRESSION_LZ4_TYPE: i32 = 0x1 << 8;
    pub const COMPRESSION_ZSTD_TYPE: i32 = 0x2 << 8;
    pub const COMPRESSION_ZLIB_TYPE: i32 = 0x3 << 8;
    pub const COMPRESSION_TYPE_COMPARATOR: i32 = 0x7 << 8;

    /// The transaction bits (`TRANSACTION_*_TYPE`) of `flag`.
    pub fn transaction_value(flag: i32) -> i32 {
        flag & Self::TRANSACTION_ROLLBACK_TYPE
    }

    /// `flag` with its transaction bits replaced by `ty`.
    pub fn reset_transaction_value(flag: i32, ty: i32) -> i32 {
        (flag & !Self::TRANSACTION_ROLLBACK_TYPE) | ty
    }

    /// `flag` without [`Self::COMPRESSED_FLAG`].
    pub fn clear_compressed_flag(flag: i32) -> i32 {
        flag & !Self::COMPRESSED_FLAG
    }
}

/// Property names (upstream `MessageConst`).
#[derive(Clone, Copy, Debug)]
pub struct MessageConst;

impl MessageConst {
    pub const PROPERTY_KEYS: &'static str = "KEYS";
    pub const PROPERTY_TAGS: &'static str = "TAGS";
    pub const PROPERTY_WAIT_STORE_MSG_OK: &'static str = "WAIT";
    pub const PROPERTY_DELAY_TIME_LEVEL: &'static str = "DELAY";
    pub const PROPERTY_RETRY_TOPIC: &'static str = "RETRY_TOPIC";
    pub const PROPERTY_REAL_TOPIC: &'static str = "REAL_TOPIC";
    pub const PROPERTY_REAL_QUEUE_ID: &'static str = "REAL_QID";
    pub const PROPERTY_TRANSACTION_PREPARED: &'static str = "TRAN_MSG";
    pub const PROPERTY_PRODUCER_GROUP: &'static str = "PGROUP";
    pub const PROPERTY_MIN_OFFSET: &'static str = "MIN_OFFSET";
    pub const PROPERTY_MAX_OFFSET: &'static str = "MAX_OFFSET";
    pub const PROPERTY_BUYER_ID: &'static str = "BUYER_ID";
    pub const PROPERTY_ORIGIN_MESSAGE_ID: &'static str = "ORIGIN_MESSAGE_ID";
    pub const PROPERTY_TRANSFER_FLAG: &'static str = "TRANSFER_FLAG";
    pub const PROPERTY_CORRECTION_FLAG: &'static str = "CORRECTION_FLAG";
    pub const PROPERTY_MQ2_FLAG: &'static str = "MQ2_FLAG";
    pub const PROPERTY_RECONSUME_TIME: &'static str = "RECONSUME_TIME";
    pub const PROPERTY_MSG_REGION: &'static str = "MSG_REGION";
    pub const PROPERTY_TRACE_SWITCH: &'static str = "TRACE_ON";
    pub const PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &'static str = "UNIQ_KEY";
    pub const PROPERTY_EXTEND_UNIQ_INFO: &'static str = "EXTEND_UNIQ_INFO";
    pub const PROPERTY_MAX_RECONSUME_TIMES: &'static str = "MAX_RECONSUME_TIMES";
    pub const PROPERTY_CONSUME_START_TIMESTAMP: &'static str = "CONSUME_START_TIME";
    pub const PROPERTY_INNER_NUM: &'static str = "INNER_NUM";
    pub const PROPERTY_INNER_BASE: &'static str = "INNER_BASE";
    pub const DUP_INFO: &'static str = "DUP_INFO";
    pub const PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS: &'static str =
        "CHECK_IMMUNITY_TIME_IN_SECONDS";
    pub const PROPERTY_TRANSACTION_PREPARED_QUEUE_OFFSET: &'static str =
        "TRAN_PREPARED_QUEUE_OFFSET";
    pub const PROPERTY_TRANSACTION_ID: &'static str = "__transactionId__";
    pub const PROPERTY_TRANSACTION_CHECK_TIMES: &'static str = "TRANSACTION_CHECK_TIMES";
    pub const PROPERTY_INSTANCE_ID: &'static str = "INSTANCE_ID";
    pub const PROPERTY_CORRELATION_ID: &'static str = "CORRELATION_ID";
    pub const PROPERTY_MESSAGE_REPLY_TO_CLIENT: &'static str = "REPLY_TO_CLIENT";
    pub const PROPERTY_MESSAGE_TTL: &'static str = "TTL";
    pub const PROPERTY_REPLY_MESSAGE_ARRIVE_TIME: &'static str = "ARRIVE_TIME";
    pub const PROPERTY_PUSH_REPLY_TIME: &'static str = "PUSH_REPLY_TIME";
    pub const PROPERTY_CLUSTER: &'static str = "CLUSTER";
    pub const PROPERTY_MESSAGE_TYPE: &'static str = "MSG_TYPE";
    pub const PROPERTY_POP_CK: &'static str = "POP_CK";
    pub const PROPERTY_POP_CK_OFFSET: &'static str = "POP_CK_OFFSET";
    pub const PROPERTY_FIRST_POP_TIME: &'static str = "1ST_POP_TIME";
    pub const PROPERTY_SHARDING_KEY: &'static str = "__SHARDINGKEY";
    pub const PROPERTY_FORWARD_QUEUE_ID: &'static str = "PROPERTY_FORWARD_QUEUE_ID";
    pub const PROPERTY_REDIRECT: &'static str = "REDIRECT";
    pub const PROPERTY_INNER_MULTI_DISPATCH: &'static str = "INNER_MULTI_DISPATCH";
    pub const PROPERTY_INNER_MULTI_QUEUE_OFFSET: &'static str = "INNER_MULTI_QUEUE_OFFSET";
    pub const PROPERTY_TRACE_CONTEXT: &'static str = "TRACE_CONTEXT";
    pub const PROPERTY_TIMER_DELAY_SEC: &'static str = "TIMER_DELAY_SEC";
    pub const PROPERTY_TIMER_DELIVER_MS: &'static str = "TIMER_DELIVER_MS";
    pub const PROPERTY_BORN_HOST: &'static str = "__BORNHOST";
    pub const PROPERTY_BORN_TIMESTAMP: &'static str = "BORN_TIMESTAMP";
    pub const PROPERTY_TIMER_ENQUEUE_MS: &'static str = "TIMER_ENQUEUE_MS";
    pub const PROPERTY_TIMER_DEQUEUE_MS: &'static str = "TIMER_DEQUEUE_MS";
    pub const PROPERTY_TIMER_ROLL_TIMES: &'static str = "TIMER_ROLL_TIMES";
    pub const PROPERTY_TIMER_OUT_MS: &'static str = "TIMER_OUT_MS";
    pub const PROPERTY_TIMER_DEL_UNIQKEY: &'static str = "TIMER_DEL_UNIQKEY";
    pub const PROPERTY_TIMER_DELAY_LEVEL: &'static str = "TIMER_DELAY_LEVEL";
    pub const PROPERTY_TIMER_DELAY_MS: &'static str = "TIMER_DELAY_MS";
    pub const PROPERTY_CRC32: &'static str = "__CRC32#";
    pub const PROPERTY_DLQ_ORIGIN_TOPIC: &'static str = "DLQ_ORIGIN_TOPIC";
    pub const PROPERTY_DLQ_ORIGIN_MESSAGE_ID: &'static str = "DLQ_ORIGIN_MESSAGE_ID";
    /// Prefix of properties a broker does not store.
    pub const PROPERTY_TRANSIENT_PREFIX: &'static str = "__RMQ.TRANSIENT.";
    /// Separates the keys inside the `KEYS` property.
    pub const KEY_SEPARATOR: &'static str = " ";
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

impl From<MessageError> for RemotingError {
    fn from(e: MessageError) -> Self {
        RemotingError::InvalidBody(e.to_string())
    }
}

/// A message's properties: `name -> value`, in insertion order.
///
/// On the wire they are one string: `name\x01value` pairs joined by `\x02`. Parsing accepts a
/// trailing `\x02` (C++, ali-ons and Rust clients send one) and skips malformed pairs (no
/// separator, empty name or empty value) as upstream does; a repeated name keeps the last value.
/// Writing emits no trailing separator, as Java 4.9 clients and brokers do.
///
/// ```
/// use remoting::message::Properties;
///
/// let p = Properties::parse("TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2\u{2}");
/// assert_eq!(p.get("TAGS"), Some("TagA"));
/// assert_eq!(p.to_wire_string(), "TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Self {
        let mut props = Properties::new();
        for pair in s.split(PROPERTY_SEPARATOR) {
            if let Some((name, value)) = pair.split_once(NAME_VALUE_SEPARATOR) {
                if !name.is_empty() && !value.is_empty() {
                    props.insert(name, value);
                }
            }
        }
        props
    }

    /// The wire string (no trailing separator).
    pub fn to_wire_string(&self) -> String {
        let len = self
            .entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum();
        let mut s = String::with_capacity(len);
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                s.push(PROPERTY_SEPARATOR);
            }
            s.push_str(k);
            s.push(NAME_VALUE_SEPARATOR);
            s.push_str(v);
        }
        s
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` (keeping its position when it already exists); returns the old value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let name = name.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((name, value));
                None
            }
        }
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    /// `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Properties::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

/// A message as a producer sends it: topic, user flag, properties and body.
///
/// ```
/// use remoting::message::{Message, MessageConst};
///
/// let msg = Message::new("TopicTest", &b"hello"[..])
///     .with_tags("TagA")
///     .with_keys(["order-1", "user-7"])
///     .with_delay_time_level(3);
/// assert_eq!(msg.tags(), Some("TagA"));
/// assert_eq!(msg.keys(), vec!["order-1", "user-7"]);
/// assert_eq!(msg.property(MessageConst::PROPERTY_DELAY_TIME_LEVEL), Some("3"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// User flag, stored and returned unchanged.
    pub flag: i32,
    pub properties: Properties,
    pub body: Bytes,
}

impl Message {
    /// A message for `topic` with `body` and no properties.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            flag: 0,
            properties: Properties::new(),
            body: body.into(),
        }
    }

    /// Sets the `TAGS` property.
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.properties.insert(MessageConst::PROPERTY_TAGS, tags);
        self
    }

    /// Sets the `KEYS` property (keys joined by a space).
    pub fn with_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = keys
            .into_iter()
            .map(|k| k.as_ref().to_string())
            .collect::<Vec<_>>()
            .join(MessageConst::KEY_SEPARATOR);
        self.properties.insert(MessageConst::PROPERTY_KEYS, joined);
        self
    }

    /// Sets the `DELAY` property (a broker delay level, 1 = 1 s ... 18 = 2 h).
    pub fn with_delay_time_level(mut self, level: i32) -> Self {
        self.properties
            .insert(MessageConst::PROPERTY_DELAY_TIME_LEVEL, level.to_string());
        self
    }

    /// Sets any property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name, value);
        self
    }

    /// Sets the user flag.
    pub fn with_flag(mut self, flag: i32) -> Self {
        self.flag = flag;
        self
    }

    /// The property `name`.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name)
    }

    /// The `TAGS` property.
    pub fn tags(&self) -> Option<&str> {
        self.property(MessageConst::PROPERTY_TAGS)
    }

    /// The keys of the `KEYS` property.
    pub fn keys(&self) -> Vec<&str> {
        self.property(MessageConst::PROPERTY_KEYS)
            .map(|k| {
                k.split(MessageConst::KEY_SEPARATOR)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `UNIQ_KEY` property (the client-side message id).
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
    }

    /// The `DELAY` property, 0 when absent or not a number.
    pub fn delay_time_level(&self) -> i32 {
        self.property(MessageConst::PROPERTY_DELAY_TIME_LEVEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The `WAIT` property: whether the broker answers only once the message is stored
    /// (default true).
    pub fn wait_store_msg_ok(&self) -> bool {
        self.property(MessageConst::PROPERTY_WAIT_STORE_MSG_OK) != Some("false")
    }
}

/// A stored message as a broker serves it (upstream `MessageExt` / `MessageClientExt`).
///
/// ```
/// use bytes::BytesMut;
/// use remoting::message::{Message, MessageExt};
///
/// let mut ext = MessageExt::new(Message::new("T", &b"hi"[..]).with_tags("A"));
/// ext.queue_offset = 7;
/// ext.commit_log_offset = 1024;
/// let mut buf = BytesMut::new();
/// ext.encode(&mut buf).unwrap();
/// let (back, used) = MessageExt::decode(&buf, true).unwrap();
/// assert_eq!(used, buf.len());
/// assert_eq!(back.message.tags(), Some("A"));
/// assert_eq!(back.queue_offset, 7);
/// // 0.0.0.0, port 0, offset 1024
/// assert_eq!(back.offset_msg_id, "00000000000000000000000000000400");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageExt {
    pub message: Message,
    pub queue_id: i32,
    /// Size of the whole record in bytes.
    pub store_size: i32,
    /// Index of the message in its queue (consume-queue offset).
    pub queue_offset: i64,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub born_host: SocketAddr,
    pub store_timestamp: i64,
    pub store_host: SocketAddr,
    /// The broker's id of the message (`offsetMsgId`): store host + commit-log offset, see
    /// [`create_message_id`]. [`MessageExt::msg_id`] gives the id clients show.
    pub offset_msg_id: String,
    /// Physical offset of the record in the broker's commit log.
    pub commit_log_offset: i64,
    pub body_crc: i32,
    pub reconsume_times: i32,
    pub prepared_transaction_offset: i64,
}

/// Bounds-checked big-endian reader over a record.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MessageError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(MessageError::Truncated {
                field,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], MessageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, MessageError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, MessageError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, MessageError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, MessageError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// An `i32` length that must be non-negative, then that many bytes.
    fn sized(&mut self, field: &'static str) -> Result<&'a [u8], MessageError> {
        let len = self.i32(field)?;
        let len = usize::try_from(len).map_err(|_| MessageError::Invalid {
            field,
            value: len.to_string(),
        })?;
        self.take(len, field)
    }

    fn host(&mut self, v6: bool, field: &'static str) -> Result<SocketAddr, MessageError> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?))
        };
        let port = self.i32(field)?;
        let port = u16::try_from(port).map_err(|_| MessageError::Invalid {
            field,
            value: format!("port {port}"),
        })?;
        Ok(SocketAddr::new(ip, port))
    }

    fn utf8(&mut self, n: usize, field: &'static str) -> Result<String, MessageError> {
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| MessageError::Invalid {
            field,
            value: "not UTF-8".into(),
        })
    }
}

/// Bytes of a record's fixed-size fields (every row of the table but the hosts, the body,
/// the topic and the properties, plus the body's length word).
const RECORD_FIXED_LEN: usize = 72;

fn host_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn put_host(dst: &mut BytesMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => dst.put_slice(&ip.octets()),
        IpAddr::V6(ip) => dst.put_slice(&ip.octets()),
    }
    dst.put_i32(i32::from(addr.port()));
}

fn unspecified_host() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

impl MessageExt {
    /// A stored message wrapping `message`, every other field zero (hosts `0.0.0.0:0`).
    pub fn new(message: Message) -> Self {
        let store_host = unspecified_host();
        MessageExt {
            message,
            queue_id: 0,
            store_size: 0,
            queue_offset: 0,
            sys_flag: 0,
            born_timestamp: 0,
            born_host: unspecified_host(),
            store_timestamp: 0,
            offset_msg_id: create_message_id(store_host, 0),
            store_host,
            commit_log_offset: 0,
            body_crc: 0,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }

    /// The id clients show: the `UNIQ_KEY` property when present, else the `offsetMsgId`
    /// (upstream `MessageClientExt.getMsgId`).
    pub fn msg_id(&self) -> &str {
        self.message.uniq_key().unwrap_or(&self.offset_msg_id)
    }

    /// Decodes the record at the start of `buf`; returns it and the number of bytes it took.
    ///
    /// With `decompress`, a compressed body is inflated and [`MessageSysFlag::COMPRESSED_FLAG`]
    /// cleared (what a client wants); without, the body is returned as stored (what a broker
    /// serving it again wants). Every read is bounds-checked; the record's declared size must
    /// equal the size of its fields.
    pub fn decode(buf: &[u8], decompress: bool) -> Result<(MessageExt, usize), MessageError> {
        let mut r = Reader { buf, pos: 0 };
        let store_size = r.i32("total size")?;
        let declared = usize::try_from(store_size)
            .ok()
            .filter(|n| *n <= buf.len())
            .ok_or(MessageError::Truncated {
                field: "record",
                need: store_size.max(0) as usize,
                have: buf.len(),
            })?;
        // Confine every further read to this record.
        r.buf = &buf[..declared];
        let magic = r.i32("magic code")?;
        let wide_topic = match magic {
            MESSAGE_MAGIC_CODE => false,
            MESSAGE_MAGIC_CODE_V2 => true,
            other => return Err(MessageError::BadMagic(other as u32)),
        };
        let body_crc = r.i32("body CRC")?;
        let queue_id = r.i32("queue id")?;
        let flag = r.i32("flag")?;
        let queue_offset = r.i64("queue offset")?;
        let commit_log_offset = r.i64("commit-log offset")?;
        let mut sys_flag = r.i32("sysflag")?;
        let born_timestamp = r.i64("born timestamp")?;
        let born_host = r.host(
            sys_flag & MessageSysFlag::BORNHOST_V6_FLAG != 0,
            "born host",
        )?;
        let store_timestamp = r.i64("store timestamp")?;
        let store_host = r.host(
            sys_flag & MessageSysFlag::STOREHOSTADDRESS_V6_FLAG != 0,
            "store host",
        )?;
        let reconsume_times = r.i32("reconsume times")?;
        let prepared_transaction_offset = r.i64("prepared transaction offset")?;
        let raw_body = r.sized("body")?;
        let body = if decompress && sys_flag & MessageSysFlag::COMPRESSED_FLAG != 0 {
            let inflated = decompress_body(raw_body, sys_flag)?;
            sys_flag = MessageSysFlag::clear_compressed_flag(sys_flag);
            Bytes::from(inflated)
        } else {
            Bytes::copy_from_slice(raw_body)
        };
        let topic_len = if wide_topic {
            usize::from(r.u16("topic length")?)
        } else {
            usize::from(r.array::<1>("topic length")?[0])
        };
        let topic = r.utf8(topic_len, "topic")?;
        let props_len = usize::from(r.u16("properties length")?);
        let properties = Properties::parse(&r.utf8(props_len, "properties")?);
        if r.pos != declared {
            return Err(MessageError::SizeMismatch {
                declared: i64::from(store_size),
                actual: r.pos,
            });
        }
        let ext = MessageExt {
            message: Message {
                topic,
                flag,
                properties,
                body,
            },
            queue_id,
            store_size,
            queue_offset,
            sys_flag,
            born_timestamp,
            born_host,
            store_timestamp,
            store_host,
            offset_msg_id: create_message_id(store_host, commit_log_offset),
            commit_log_offset,
            body_crc,
            reconsume_times,
            prepared_transaction_offset,
        };
        Ok((ext, declared))
    }

    /// Decodes records laid one after another (a pull, query or view body).
    pub fn decode_all(mut buf: &[u8], decompress: bool) -> Result<Vec<MessageExt>, MessageError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (ext, used) = Self::decode(buf, decompress)?;
            out.push(ext);
            buf = &buf[used..];
        }
        Ok(out)
    }

    /// Size of the record [`MessageExt::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let props = self.message.properties.to_wire_string();
        let topic_len_size = if self.message.topic.len() > 127 { 2 } else { 1 };
        RECORD_FIXED_LEN
            + host_len(&self.born_host)
            + host_len(&self.store_host)
            + self.message.body.len()
            + topic_len_size
            + self.message.topic.len()
            + 2
            + props.len()
    }

    /// Appends the record to `dst`. The body is written as it is (compress it first and set
    /// the sysflag if a compressed record is wanted); the host-format sysflag bits are set
    /// from the hosts' address families; the total size is computed, not taken from
    /// `store_size`. Topics over 127 bytes get the V2 magic.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), MessageError> {
        let props = self.message.properties.to_wire_string();
        check_len("properties", props.len(), usize::from(u16::MAX))?;
        check_len("topic", self.message.topic.len(), usize::from(u16::MAX))?;
        let body_len = check_len("body", self.message.body.len(), i32::MAX as usize)?;
        let total = self.encoded_len();
        let total = check_len("record", total, i32::MAX as usize)?;
        let mut sys_flag = self.sys_flag
            & !(MessageSysFlag::BORNHOST_V6_FLAG | MessageSysFlag::STOREHOSTADDRESS_V6_FLAG);
        if self.born_host.is_ipv6() {
            sys_flag |= MessageSysFlag::BORNHOST_V6_FLAG;
        }
        if self.store_host.is_ipv6() {
            sys_flag |= MessageSysFlag::STOREHOSTADDRESS_V6_FLAG;
        }
        let wide_topic = self.message.topic.len() > 127;
        dst.reserve(total as usize);
        dst.put_i32(total);
        dst.put_i32(if wide_topic {
            MESSAGE_MAGIC_CODE_V2
        } else {
            MESSAGE_MAGIC_CODE
        });
        dst.put_i32(self.body_crc);
        dst.put_i32(self.queue_id);
        dst.put_i32(self.message.flag);
        dst.put_i64(self.queue_offset);
        dst.put_i64(self.commit_log_offset);
        dst.put_i32(sys_flag);
        dst.put_i64(self.born_timestamp);
        put_host(dst, &self.born_host);
        dst.put_i64(self.store_timestamp);
        put_host(dst, &self.store_host);
        dst.put_i32(self.reconsume_times);
        dst.put_i64(self.prepared_transaction_offset);
        dst.put_i32(body_len);
        dst.put_slice(&self.message.body);
        if wide_topic {
            dst.put_u16(self.message.topic.len() as u16);
        } else {
            dst.put_u8(self.message.topic.len() as u8);
        }
        dst.put_slice(self.message.topic.as_bytes());
        dst.put_u16(props.len() as u16);
        dst.put_slice(props.as_bytes());
        Ok(())
    }
}

/// `len` as an `i32` when it is at most `max`.
fn check_len(field: &'static str, len: usize, max: usize) -> Result<i32, MessageError> {
    if len > max {
        return Err(MessageError::TooLong { field, len, max });
    }
    i32::try_from(len).map_err(|_| MessageError::TooLong { field, len, max })
}

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

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The broker's message id (`offsetMsgId`): uppercase hex of the store host's address
/// (4 or 16 bytes), its port as an `i32` and the commit-log offset as an `i64`: 32 hex digits
/// for IPv4, 56 for IPv6 (upstream `MessageDecoder.createMessageId`).
///
/// ```
/// use remoting::message::{create_message_id, decode_message_id};
///
/// let host = "127.0.0.1:10911".parse().unwrap();
/// let id = create_message_id(host, 0x8792);
/// assert_eq!(id, "7F00000100002A9F0000000000008792");
/// assert_eq!(decode_message_id(&id).unwrap(), (host, 0x8792));
/// ```
pub fn create_message_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut s = String::with_capacity(56);
    match store_host.ip() {
        IpAddr::V4(ip) => push_hex(&mut s, &ip.octets()),
        IpAddr::V6(ip) => push_hex(&mut s, &ip.octets()),
    }
    push_hex(&mut s, &i32::from(store_host.port()).to_be_bytes());
    push_hex(&mut s, &commit_log_offset.to_be_bytes());
    s
}

/// Splits an `offsetMsgId` into store host and commit-log offset (upstream
/// `MessageDecoder.decodeMessageId`); accepts either letter case.
pub fn decode_message_id(msg_id: &str) -> Result<(SocketAddr, i64), MessageError> {
    let bad = || MessageError::Invalid {
        field: "message id",
        value: msg_id.to_string(),
    };
    let bytes = parse_hex(msg_id).ok_or_else(bad)?;
    let ip_len = match bytes.len() {
        16 => 4,
        28 => 16,
        _ => return Err(bad()),
    };
    let ip = if ip_len == 4 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&bytes[..4]);
        IpAddr::V4(Ipv4Addr::from(a))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let mut port = [0u8; 4];
    port.copy_from_slice(&bytes[ip_len..ip_len + 4]);
    let port = u16::try_from(i32::from_be_bytes(port)).map_err(|_| bad())?;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[ip_len + 4..]);
    Ok((SocketAddr::new(ip, port), i64::from_be_bytes(offset)))
}

/// Makes unique client message ids (`UNIQ_KEY`) in upstream's format
/// (`MessageClientIDSetter`): uppercase hex of
///
/// | bytes | field |
/// |---|---|
/// | 4 / 16 | client IP (IPv4 / IPv6) |
/// | 2 | process id (low 16 bits) |
/// | 4 | per-process random value (upstream: the class loader's hash code) |
/// | 4 | milliseconds since the start of the current month (wraps as an `i32`) |
/// | 2 | counter (low 16 bits) |
///
/// 32 hex digits for an IPv4 client, 56 for IPv6. Upstream counts the month in the JVM's
/// local time zone; this counts it in UTC (the value only has to be unique with the counter).
///
/// ```
/// use remoting::message::UniqIdGenerator;
///
/// let ids = UniqIdGenerator::new("10.0.0.7".parse().unwrap(), 0x1234, 0x0BADCAFE);
/// let a = ids.next_id();
/// let b = ids.next_id();
/// assert_eq!(a.len(), 32);
/// assert!(a.starts_with("0A00000712340BADCAFE"));
/// assert_ne!(a, b);
/// ```
#[derive(Debug)]
pub struct UniqIdGenerator {
    prefix: String,
    counter: AtomicU32,
    /// `(start of this month, start of next month)` in ms since the epoch.
    month: Mutex<(i64, i64)>,
}

impl UniqIdGenerator {
    /// A generator for a client at `ip` in process `pid`; `seed` stands for upstream's class
    /// loader hash (pick it at random per process).
    pub fn new(ip: IpAddr, pid: u32, seed: i32) -> Self {
        let mut prefix = String::with_capacity(56);
        match ip {
            IpAddr::V4(ip) => push_hex(&mut prefix, &ip.octets()),
            IpAddr::V6(ip) => push_hex(&mut prefix, &ip.octets()),
        }
        push_hex(&mut prefix, &(pid as u16).to_be_bytes());
        push_hex(&mut prefix, &seed.to_be_bytes());
        UniqIdGenerator {
            prefix,
            counter: AtomicU32::new(0),
            month: Mutex::new((0, 0)),
        }
    }

    /// A new id for the current time.
    pub fn next_id(&self) -> String {
        self.next_id_at(now_millis())
    }

    /// A new id as if the time were `now_millis` (ms since the epoch).
    pub fn next_id_at(&self, now_millis: i64) -> String {
        let start = {
            let mut month = self.month.lock();
            if now_millis >= month.1 || now_millis < month.0 - 1_000_000 {
                *month = month_window(now_millis);
            }
            month.0
        };
        let mut diff = now_millis.wrapping_sub(start) as i32;
        if diff < 0 && diff > -1_000_000 {
            // Clock stepped back a little (NTP): upstream clamps to 0.
            diff = 0;
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) as u16;
        let mut id = String::with_capacity(self.prefix.len() + 12);
        id.push_str(&self.prefix);
        push_hex(&mut id, &diff.to_be_bytes());
        push_hex(&mut id, &counter.to_be_bytes());
        id
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `(first ms of the UTC month holding t, first ms of the next month)`.
fn month_window(t: i64) -> (i64, i64) {
    use chrono::{DateTime, Datelike, NaiveDate};
    let date = DateTime::from_timestamp_millis(t)
        .unwrap_or_default()
        .date_naive();
    let (y, m) = (date.year(), date.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let start_ms = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |d| d.and_utc().timestamp_millis())
    };
    (start_ms(y, m), start_ms(ny, nm))
}

/// Encodes messages into a `SEND_BATCH_MESSAGE` body (upstream `MessageDecoder.encodeMessages`;
/// layout in the module docs). The topic is not part of an entry: the request header carries it.
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
        let mut r = Reader { buf: rest, pos: 0 };
        let total = r.i32("batch entry size")?;
        let declared = usize::try_from(total)
            .ok()
            .filter(|n| *n <= rest.len())
            .ok_or(MessageError::Truncated {
                field: "batch entry",
                need: total.max(0) as usize,
                have: rest.len(),
            })?;
        r.buf = &rest[..declared];
        let _magic = r.i32("batch magic")?;
        let _crc = r.i32("batch body CRC")?;
        let flag = r.i32("flag")?;
        let body = Bytes::copy_from_slice(r.sized("body")?);
        let props_len = r.i16("properties length")?;
        let props_len = usize::try_from(props_len).map_err(|_| MessageError::Invalid {
            field: "properties length",
            value: props_len.to_string(),
        })?;
        let properties = Properties::parse(&r.utf8(props_len, "properties")?);
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
        rest = &rest[declared..];
    }
    Ok(out)
}

/// The tag hash a broker stores in consume-queue units and a client sends in `codeSet`:
/// Java's `String.hashCode` of the tag (over UTF-16 code units), widened to `i64`.
///
/// ```
/// assert_eq!(remoting::message::tags_hash_code("TagA"), 2598919);
/// ```
pub fn tags_hash_code(tags: &str) -> i64 {
    let mut h: i32 = 0;
    for unit in tags.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    i64::from(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_like_upstream() {
        let p =
            Properties::parse("A\u{1}1\u{2}\u{2}B\u{1}\u{2}\u{1}x\u{2}C\u{1}3\u{1}4\u{2}A\u{1}5");
        assert_eq!(p.get("A"), Some("5"));
        assert_eq!(p.get("B"), None);
        assert_eq!(p.get("C"), Some("3\u{1}4"));
        assert_eq!(p.len(), 2);
        assert_eq!(p.to_wire_string(), "A\u{1}5\u{2}C\u{1}3\u{1}4");
        assert!(Properties::parse("").is_empty());
    }

    #[test]
    fn month_window_in_utc() {
        // 2026-11-24T23:00:00Z
        let t = 1_795_561_200_000;
        let (start, next) = month_window(t);
        assert_eq!(start, 1_793_491_200_000); // 2026-11-01T00:00:00Z
        assert_eq!(next, 1_796_083_200_000); // 2026-12-01T00:00:00Z
        assert_eq!(month_window(0), (0, 31 * 86_400_000));
        // December rolls into January.
        let dec = 1_765_756_800_000; // 2025-12-15T00:00:00Z
        assert_eq!(month_window(dec).1, 1_767_225_600_000); // 2026-01-01T00:00:00Z
    }

    #[test]
    fn uniq_id_layout() {
        let g = UniqIdGenerator::new("192.0.2.2".parse().unwrap(), 905, -1);
        let t = 1_793_491_200_000 + 0x0102_0304;
        let id = g.next_id_at(t);
        assert_eq!(id, "C00002020389FFFFFFFF010203040000");
        assert_eq!(&g.next_id_at(t)[28..], "0001");
        let v6 = UniqIdGenerator::new("fd00::2".parse().unwrap(), 1, 2);
        assert_eq!(v6.next_id().len(), 56);
    }

    #[test]
    fn sysflag_helpers() {
        let f = MessageSysFlag::reset_transaction_value(
            MessageSysFlag::COMPRESSED_FLAG | MessageSysFlag::TRANSACTION_PREPARED_TYPE,
            MessageSysFlag::TRANSACTION_COMMIT_TYPE,
        );
        assert_eq!(
            MessageSysFlag::transaction_value(f),
            MessageSysFlag::TRANSACTION_COMMIT_TYPE
        );
        assert_eq!(MessageSysFlag::clear_compressed_flag(f), 8);
    }

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

    #[test]
    fn message_id_rejects_garbage() {
        assert!(decode_message_id("").is_err());
        assert!(decode_message_id("XYZ").is_err());
        assert!(decode_message_id("7F00000100002A9F00000000000087").is_err());
        // Port beyond u16.
        assert!(decode_message_id("7F00000100FF2A9F0000000000008792").is_err());
        let (h, off) = decode_message_id("7f00000100002a9f0000000000008792").unwrap();
        assert_eq!((h.port(), off), (10911, 0x8792));
    }
}
