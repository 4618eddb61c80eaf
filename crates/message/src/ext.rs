//! What a producer sends ([`Message`]) and a stored message as a client sees it
//! ([`MessageExt`]: body inflated on request, properties parsed, ids worked out). Both are
//! views over the one record codec in [`crate::record`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::{Bytes, BytesMut};

use crate::compress::decompress_body;
use crate::error::{check_len, MessageError};
use crate::id::create_message_id;
use crate::properties::{MessageConst, Properties};
use crate::record::{
    parse_record, record_len, stored_sys_flag, write_record, MessageInner, Parsed, RecordStamp,
    BLANK_MAGIC_CODE,
};
use crate::sys_flag::MessageSysFlag;

/// A message as a producer sends it: topic, user flag, properties and body.
///
/// ```
/// use message::{Message, MessageConst};
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

    /// Asks for delivery at `deliver_time_ms` (ms since the epoch; the `TIMER_DELIVER_MS`
    /// property, upstream 5.x `Message.setDeliverTimeMs`). The broker delivers a timer
    /// message at or after its time (within `timerPrecisionMs`); a time more than
    /// `timerMaxDelaySec` ahead is refused with `MESSAGE_ILLEGAL`, one already past is
    /// delivered at once. A delay level, if also set, wins.
    ///
    /// ```
    /// use message::{Message, MessageConst};
    ///
    /// let at = Message::new("T", &b"x"[..]).with_deliver_time_ms(1_800_000_000_000);
    /// assert_eq!(at.property(MessageConst::PROPERTY_TIMER_DELIVER_MS), Some("1800000000000"));
    /// let later = Message::new("T", &b"x"[..]).with_delay_time_sec(90);
    /// assert_eq!(later.property(MessageConst::PROPERTY_TIMER_DELAY_SEC), Some("90"));
    /// let soon = Message::new("T", &b"x"[..]).with_delay_time_ms(1_500);
    /// assert_eq!(soon.property(MessageConst::PROPERTY_TIMER_DELAY_MS), Some("1500"));
    /// ```
    pub fn with_deliver_time_ms(mut self, deliver_time_ms: i64) -> Self {
        self.properties.insert(
            MessageConst::PROPERTY_TIMER_DELIVER_MS,
            deliver_time_ms.to_string(),
        );
        self
    }

    /// Asks for delivery `seconds` after the broker receives it (the `TIMER_DELAY_SEC`
    /// property, upstream `Message.setDelayTimeSec`); see [`Self::with_deliver_time_ms`].
    pub fn with_delay_time_sec(mut self, seconds: i64) -> Self {
        self.properties
            .insert(MessageConst::PROPERTY_TIMER_DELAY_SEC, seconds.to_string());
        self
    }

    /// Asks for delivery `millis` ms after the broker receives it (the `TIMER_DELAY_MS`
    /// property, upstream `Message.setDelayTimeMs`); see [`Self::with_deliver_time_ms`].
    pub fn with_delay_time_ms(mut self, millis: i64) -> Self {
        self.properties
            .insert(MessageConst::PROPERTY_TIMER_DELAY_MS, millis.to_string());
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
/// use message::{Message, MessageExt};
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
    /// equal the size of its fields, its topic and properties must be UTF-8. The body CRC is not
    /// checked (upstream clients do not check it either).
    pub fn decode(buf: &[u8], decompress: bool) -> Result<(MessageExt, usize), MessageError> {
        Self::decode_with(buf, decompress, Bytes::copy_from_slice)
    }

    /// [`Self::decode`], the body made by `body_of` from its bytes in `buf` (a copy, or a
    /// slice of the buffer `buf` lies in) unless it had to be inflated.
    fn decode_with(
        buf: &[u8],
        decompress: bool,
        body_of: impl FnOnce(&[u8]) -> Bytes,
    ) -> Result<(MessageExt, usize), MessageError> {
        let v = match parse_record(buf, false)? {
            Parsed::Message(v) => v,
            Parsed::Blank(_) => return Err(MessageError::BadMagic(BLANK_MAGIC_CODE as u32)),
            Parsed::Empty => {
                return Err(MessageError::Truncated {
                    field: "record",
                    need: 8,
                    have: buf.len(),
                })
            }
        };
        // `parse_record` reads the properties lossily; a replaced byte shows as an owned copy.
        let properties = match &v.properties {
            std::borrow::Cow::Borrowed(s) => Properties::parse(s),
            std::borrow::Cow::Owned(_) => {
                return Err(MessageError::Invalid {
                    field: "properties",
                    value: "not UTF-8".into(),
                })
            }
        };
        let mut sys_flag = v.sys_flag;
        let body = if decompress && sys_flag & MessageSysFlag::COMPRESSED_FLAG != 0 {
            let inflated = decompress_body(v.body, sys_flag)?;
            sys_flag = MessageSysFlag::clear_compressed_flag(sys_flag);
            Bytes::from(inflated)
        } else {
            body_of(v.body)
        };
        let ext = MessageExt {
            message: Message {
                topic: v.topic.to_string(),
                flag: v.flag,
                properties,
                body,
            },
            queue_id: v.queue_id,
            store_size: v.total_size as i32,
            queue_offset: v.queue_offset,
            sys_flag,
            born_timestamp: v.born_timestamp,
            born_host: v.born_host,
            store_timestamp: v.store_timestamp,
            store_host: v.store_host,
            offset_msg_id: create_message_id(v.store_host, v.physical_offset),
            commit_log_offset: v.physical_offset,
            body_crc: v.body_crc,
            reconsume_times: v.reconsume_times,
            prepared_transaction_offset: v.prepared_transaction_offset,
        };
        Ok((ext, v.total_size as usize))
    }

    /// Decodes records laid one after another (a pull, query or view body).
    pub fn decode_all(mut buf: &[u8], decompress: bool) -> Result<Vec<MessageExt>, MessageError> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (ext, used) = Self::decode(buf, decompress)?;
            out.push(ext);
            buf = buf.get(used..).unwrap_or_default();
        }
        Ok(out)
    }

    /// [`Self::decode_all`] for a buffer held as [`Bytes`] (a response body): each message's
    /// body is a slice of `buf`, not a copy (an inflated body is new, as it must be). The
    /// messages keep `buf`'s allocation alive for as long as any of their bodies lives.
    pub fn decode_all_shared(
        buf: &Bytes,
        decompress: bool,
    ) -> Result<Vec<MessageExt>, MessageError> {
        let mut out = Vec::new();
        let mut rest: &[u8] = buf;
        while !rest.is_empty() {
            let (ext, used) = Self::decode_with(rest, decompress, |body| buf.slice_ref(body))?;
            out.push(ext);
            rest = rest.get(used..).unwrap_or_default();
        }
        Ok(out)
    }

    /// Size of the record [`MessageExt::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        record_len(
            stored_sys_flag(self.sys_flag, &self.born_host, &self.store_host),
            self.message.body.len(),
            self.message.topic.len(),
            self.message.properties.to_wire_string().len(),
        )
    }

    /// Appends the record to `dst`. The body is written as it is (compress it first and set
    /// the sysflag if a compressed record is wanted); the host-format sysflag bits are set
    /// from the hosts' address families; the total size is computed, not taken from
    /// `store_size`. Topics over 127 bytes get the V2 magic.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), MessageError> {
        let properties = self.message.properties.to_wire_string();
        check_len("properties", properties.len(), usize::from(u16::MAX))?;
        check_len("topic", self.message.topic.len(), usize::from(u16::MAX))?;
        check_len("body", self.message.body.len(), i32::MAX as usize)?;
        let inner = MessageInner {
            topic: self.message.topic.clone(),
            queue_id: self.queue_id,
            flag: self.message.flag,
            body: self.message.body.clone(),
            properties,
            sys_flag: self.sys_flag,
            born_timestamp: self.born_timestamp,
            born_host: self.born_host,
            store_host: self.store_host,
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset,
        };
        let stamp = RecordStamp {
            queue_offset: self.queue_offset,
            physical_offset: self.commit_log_offset,
            store_timestamp: self.store_timestamp,
            body_crc: self.body_crc,
        };
        write_record(&inner, &stamp, dst)
    }
}
