//! JSON bodies of the NameServer protocol (routes, cluster info, broker registration, topic
//! lists, KV tables) with upstream's camelCase field names, plus the JSON dialect RocketMQ
//! speaks on the wire.
//!
//! Upstream writes bodies with fastjson, which is not quite JSON: a map whose key type is a
//! number comes out with bare keys (`{0:"127.0.0.1:10911"}`), and some maps have whole objects
//! as keys (`{{"brokerName":"b","queueId":1,"topic":"t"}:{...}}`). [`parse_fastjson`] and
//! [`from_fastjson`] accept that dialect (and plain JSON); [`to_fastjson`] writes either plain
//! JSON or fastjson's bare integer keys ([`KeyStyle`]), so a server can answer old clients the
//! way upstream does. Fields are declared in alphabetical order, which is the order fastjson
//! writes them in, so bodies we write match upstream's byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RemotingError;

/// Topic permission bits (`PermName`).
pub mod perm {
    /// The queue is preferred (priority) storage.
    pub const PERM_PRIORITY: i32 = 8;
    /// Consumers may read.
    pub const PERM_READ: i32 = 4;
    /// Producers may write.
    pub const PERM_WRITE: i32 = 2;
    /// Auto-created topics inherit this topic's config (`TBW102`).
    pub const PERM_INHERIT: i32 = 1;

    /// Whether `perm` allows reads.
    pub fn is_readable(perm: i32) -> bool {
        perm & PERM_READ == PERM_READ
    }

    /// Whether `perm` allows writes.
    pub fn is_writeable(perm: i32) -> bool {
        perm & PERM_WRITE == PERM_WRITE
    }

    /// Whether `perm` has the inherit bit.
    pub fn is_inherited(perm: i32) -> bool {
        perm & PERM_INHERIT == PERM_INHERIT
    }

    /// Whether `perm` is a valid user-settable value (below [`PERM_PRIORITY`]).
    pub fn is_valid(perm: i32) -> bool {
        (0..PERM_PRIORITY).contains(&perm)
    }

    /// `RWX`-style text as upstream's `perm2String` (`R` read, `W` write, `X` inherit).
    pub fn to_string(perm: i32) -> String {
        let flag = |set: bool, c: char| if set { c } else { '-' };
        [
            flag(is_readable(perm), 'R'),
            flag(is_writeable(perm), 'W'),
            flag(is_inherited(perm), 'X'),
        ]
        .iter()
        .collect()
    }
}

/// Topic system flag bits (`TopicSysFlag`).
pub mod topic_sys_flag {
    /// The topic is a unit topic.
    pub const FLAG_UNIT: i32 = 1;
    /// The topic has unit subscriptions.
    pub const FLAG_UNIT_SUB: i32 = 1 << 1;

    /// Whether the unit flag is set.
    pub fn has_unit_flag(sys_flag: i32) -> bool {
        sys_flag & FLAG_UNIT == FLAG_UNIT
    }

    /// Whether the unit-subscription flag is set.
    pub fn has_unit_sub_flag(sys_flag: i32) -> bool {
        sys_flag & FLAG_UNIT_SUB == FLAG_UNIT_SUB
    }
}

/// Broker id of a group's master.
pub const MASTER_ID: i64 = 0;

/// `TopicFilterType.SINGLE_TAG`, the default filter type of a topic.
pub const SINGLE_TAG: &str = "SINGLE_TAG";

/// KV namespace whose table the NameServer returns to brokers on registration and whose entry
/// for a topic becomes the route's `orderTopicConf` (`NamesrvUtil.NAMESPACE_ORDER_TOPIC_CONFIG`).
pub const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

/// Upstream `MQVersion` ordinals that change the protocol.
pub mod version {
    /// First broker version whose REGISTER_BROKER body is a `RegisterBrokerBody`; older ones
    /// send a bare `TopicConfigSerializeWrapper`.
    pub const V3_0_11: i32 = 37;
    /// From this client version on, routes are written with quoted `brokerAddrs` keys.
    pub const V4_9_4: i32 = 401;
    /// From this broker version on, a compressed `RegisterBrokerBody` carries topic queue
    /// mappings after the filter server list.
    pub const V5_0_0: i32 = 413;
}

/// One broker group (master and slaves sharing a `brokerName`) as listed in routes and cluster
/// info. `brokerAddrs` maps broker id (0 = master) to `host:port`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    pub broker_addrs: BTreeMap<i64, String>,
    pub broker_name: String,
    pub cluster: String,
    /// Always written: the Rust client rejects a BrokerData without it.
    pub enable_acting_master: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
}

impl BrokerData {
    /// Address of the master (broker id 0), if listed.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }
}

/// Queues of one topic on one broker group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    pub broker_name: String,
    pub perm: i32,
    pub read_queue_nums: i32,
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

/// Answer to GET_ROUTEINFO_BY_TOPIC: which broker groups hold the topic and their queues.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
}

/// Answer to GET_BROKER_CLUSTER_INFO: every broker group and which cluster it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    /// brokerName -> group.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// clusterName -> brokerNames.
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// Version of a broker's topic configuration; the NameServer re-reads a broker's topics only
/// when it changes. `stateVersion` is 5.x only and left out of the JSON when 0, as 4.9 writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DataVersion {
    pub counter: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub state_version: i64,
    pub timestamp: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A topic's configuration as a broker holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    /// 5.x topic attributes (e.g. `message.type`); absent from 4.9 bodies.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    pub order: bool,
    pub perm: i32,
    pub read_queue_nums: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    pub topic_filter_type: String,
    pub topic_name: String,
    pub topic_sys_flag: i32,
    pub write_queue_nums: i32,
}

impl Default for TopicConfig {
    /// Upstream's defaults: 16 read and write queues, read-write, single tag.
    fn default() -> Self {
        TopicConfig {
            attributes: BTreeMap::new(),
            order: false,
            perm: perm::PERM_READ | perm::PERM_WRITE,
            read_queue_nums: 16,
            topic_filter_type: SINGLE_TAG.to_string(),
            topic_name: String::new(),
            topic_sys_flag: 0,
            write_queue_nums: 16,
        }
    }
}

impl TopicConfig {
    /// Upstream's one-line text form (`TopicConfig.encode`), used inside compressed
    /// registration bodies: `name read write perm filterType attributesJson`, space-separated.
    /// `topicSysFlag` and `order` are not part of it.
    pub fn to_text(&self) -> String {
        let attributes = serde_json::to_string(&self.attributes).unwrap_or_else(|_| "{}".into());
        format!(
            "{} {} {} {} {} {}",
            self.topic_name,
            self.read_queue_nums,
            self.write_queue_nums,
            self.perm,
            self.topic_filter_type,
            attributes
        )
    }

    /// Parses [`to_text`](Self::to_text) output. Needs at least five fields; attributes that do
    /// not parse (they may contain spaces) are ignored, as upstream does.
    pub fn from_text(text: &str) -> Result<TopicConfig, RemotingError> {
        let parts: Vec<&str> = text.split(' ').collect();
        if parts.len() < 5 {
            return Err(RemotingError::InvalidBody(format!(
                "topic config text has {} fields, expected at least 5: {text:?}",
                parts.len()
            )));
        }
        let number = |i: usize| {
            parts[i].parse::<i32>().map_err(|_| {
                RemotingError::InvalidBody(format!(
                    "bad number {:?} in topic config {text:?}",
                    parts[i]
                ))
            })
        };
        Ok(TopicConfig {
            topic_name: parts[0].to_string(),
            read_queue_nums: number(1)?,
            write_queue_nums: number(2)?,
            perm: number(3)?,
            topic_filter_type: parts[4].to_string(),
            attributes: parts
                .get(5)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default(),
            ..TopicConfig::default()
        })
    }
}

/// A broker's topic configurations and their version, as sent on registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    pub data_version: DataVersion,
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// Body of REGISTER_BROKER from brokers of version 3.0.11 and later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    pub filter_server_list: Vec<String>,
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
}

/// Largest inflated size of a compressed registration body we accept (a guard against
/// decompression bombs; 100 000 topics take about 10 MiB).
pub const MAX_INFLATED_REGISTER_BODY: u64 = 64 * 1024 * 1024;

impl RegisterBrokerBody {
    /// Decodes a REGISTER_BROKER body: plain JSON, or with `compressed` (header
    /// `compressed:"true"`) the zlib-deflated layout of [`from_inflated`](Self::from_inflated).
    pub fn decode(body: &[u8], compressed: bool) -> Result<RegisterBrokerBody, RemotingError> {
        if !compressed {
            return from_fastjson(body);
        }
        let mut inflated = Vec::new();
        ZlibDecoder::new(body)
            .take(MAX_INFLATED_REGISTER_BODY + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| {
                RemotingError::InvalidBody(format!("cannot inflate register body: {e}"))
            })?;
        if inflated.len() as u64 > MAX_INFLATED_REGISTER_BODY {
            return Err(RemotingError::InvalidBody(format!(
                "inflated register body exceeds {MAX_INFLATED_REGISTER_BODY} bytes"
            )));
        }
        Self::from_inflated(&inflated)
    }

    /// Encodes the body as a broker sends it: JSON, or deflated (best compression) when
    /// `compress` is set.
    pub fn encode(&self, compress: bool) -> Result<Vec<u8>, RemotingError> {
        if !compress {
            return to_fastjson(self, KeyStyle::Quoted);
        }
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        encoder
            .write_all(&self.to_inflated()?)
            .and_then(|_| encoder.finish())
            .map_err(|e| RemotingError::InvalidBody(format!("cannot deflate register body: {e}")))
    }

    /// Reads the body a broker sends with `compressed:"true"`, once zlib-inflated
    /// (upstream `RegisterBrokerBody.decode`). Layout, big-endian:
    ///
    /// | bytes | field |
    /// |---|---|
    /// | 4 | length of the DataVersion JSON |
    /// | n | DataVersion JSON |
    /// | 4 | number of topic configs |
    /// | per topic: 4 + n | length, then [`TopicConfig::to_text`] (UTF-8) |
    /// | 4 | length of the filter server list JSON |
    /// | n | filter server list JSON array |
    /// | rest | 5.x brokers: topic queue mappings (count, then length-prefixed JSON each); ignored |
    pub fn from_inflated(data: &[u8]) -> Result<RegisterBrokerBody, RemotingError> {
        let mut reader = LayoutReader { data, pos: 0 };
        let data_version: DataVersion = from_fastjson(reader.chunk()?)?;
        let topic_count = reader.u32()?;
        let mut topic_config_table = BTreeMap::new();
        for _ in 0..topic_count {
            let text = std::str::from_utf8(reader.chunk()?)
                .map_err(|_| RemotingError::InvalidBody("topic config text is not UTF-8".into()))?;
            let config = TopicConfig::from_text(text)?;
            topic_config_table.insert(config.topic_name.clone(), config);
        }
        let filter_server_list = from_fastjson(reader.chunk()?).unwrap_or_default();
        Ok(RegisterBrokerBody {
            filter_server_list,
            topic_config_serialize_wrapper: TopicConfigSerializeWrapper {
                data_version,
                topic_config_table,
            },
        })
    }

    /// Writes the layout [`from_inflated`](Self::from_inflated) reads (before zlib deflation),
    /// with an empty topic queue mapping section as 5.x brokers send.
    fn to_inflated(&self) -> Result<Vec<u8>, RemotingError> {
        let mut out = Vec::new();
        let wrapper = &self.topic_config_serialize_wrapper;
        put_chunk(
            &mut out,
            &to_fastjson(&wrapper.data_version, KeyStyle::Quoted)?,
        )?;
        put_u32(&mut out, wrapper.topic_config_table.len())?;
        for config in wrapper.topic_config_table.values() {
            put_chunk(&mut out, config.to_text().as_bytes())?;
        }
        put_chunk(
            &mut out,
            &to_fastjson(&self.filter_server_list, KeyStyle::Quoted)?,
        )?;
        put_u32(&mut out, 0)?;
        Ok(out)
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> Result<(), RemotingError> {
    let n = u32::try_from(n)
        .map_err(|_| RemotingError::InvalidBody(format!("length {n} does not fit in 32 bits")))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) -> Result<(), RemotingError> {
    put_u32(out, chunk.len())?;
    out.extend_from_slice(chunk);
    Ok(())
}

/// Bounds-checked reader of length-prefixed chunks.
struct LayoutReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> LayoutReader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RemotingError> {
        let rest = &self.data[self.pos..];
        if rest.len() < len {
            return Err(RemotingError::InvalidBody(format!(
                "compressed body truncated: need {len} bytes at offset {}, have {}",
                self.pos,
                rest.len()
            )));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn u32(&mut self) -> Result<u32, RemotingError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn chunk(&mut self) -> Result<&'a [u8], RemotingError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// Answer to the topic-list requests (all topics, by cluster, system topics, unit topics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
    pub topic_list: BTreeSet<String>,
}

/// A KV namespace's table (GET_KVLIST_BY_NAMESPACE, REGISTER_BROKER response body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KVTable {
    pub table: BTreeMap<String, String>,
}

/// Members of one broker group (GET_BROKER_MEMBER_GROUP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerMemberGroup {
    pub broker_addrs: BTreeMap<i64, String>,
    pub broker_name: String,
    pub cluster: String,
}

/// Body of the GET_BROKER_MEMBER_GROUP answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetBrokerMemberGroupResponseBody {
    pub broker_member_group: BrokerMemberGroup,
}

/// How [`to_fastjson`] writes map keys of integer type (such as `brokerAddrs`' broker ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    /// Standard JSON: `{"0":"127.0.0.1:10911"}`.
    Quoted,
    /// fastjson's default: `{0:"127.0.0.1:10911"}`. Old clients (C++, ali-ons) expect it.
    Bare,
}

/// Serializes `value` compactly. With [`KeyStyle::Bare`], keys of maps whose key type is an
/// integer are written without quotes, as fastjson does; string keys stay quoted whatever they
/// contain.
pub fn to_fastjson<T: Serialize + ?Sized>(
    value: &T,
    keys: KeyStyle,
) -> Result<Vec<u8>, RemotingError> {
    let mut out = Vec::with_capacity(256);
    let result = match keys {
        KeyStyle::Quoted => serde_json::to_writer(&mut out, value),
        KeyStyle::Bare => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, BareIntKeys::default());
            value.serialize(&mut ser)
        }
    };
    result.map_err(|e| RemotingError::InvalidBody(format!("cannot serialize body: {e}")))?;
    Ok(out)
}

/// Compact formatter that leaves the quotes off integer map keys. serde_json writes an integer
/// key as `begin_string`, the number, `end_string`; a string key as `begin_string`, fragments
/// and escapes, `end_string`. The opening quote of a key is held back until we know which.
#[derive(Default)]
struct BareIntKeys {
    in_key: bool,
    quote_pending: bool,
    bare: bool,
}

impl BareIntKeys {
    fn flush_quote<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.quote_pending {
            self.quote_pending = false;
            w.write_all(b"\"")?;
        }
        Ok(())
    }

    fn key_or_value_number<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        text: &str,
    ) -> io::Result<()> {
        if self.quote_pending {
            self.quote_pending = false;
            self.bare = true;
        }
        w.write_all(text.as_bytes())
    }
}

macro_rules! bare_number_writers {
    ($($method:ident: $t:ty),*) => {
        $(fn $method<W: ?Sized + io::Write>(&mut self, w: &mut W, value: $t) -> io::Result<()> {
            self.key_or_value_number(w, &value.to_string())
        })*
    };
}

impl serde_json::ser::Formatter for BareIntKeys {
    bare_number_writers!(
        write_i8: i8, write_i16: i16, write_i32: i32, write_i64: i64, write_i128: i128,
        write_u8: u8, write_u16: u16, write_u32: u32, write_u64: u64, write_u128: u128
    );

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.in_key = true;
        if first {
            Ok(())
        } else {
            w.write_all(b",")
        }
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.in_key = false;
        Ok(())
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if self.in_key {
            self.quote_pending = true;
            Ok(())
        } else {
            w.write_all(b"\"")
        }
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        if std::mem::take(&mut self.bare) {
            return Ok(());
        }
        self.flush_quote(w)?;
        w.write_all(b"\"")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.flush_quote(w)?;
        w.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        self.flush_quote(w)?;
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.flush_quote(w)?;
        serde_json::ser::CompactFormatter.write_f32(w, value)
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        self.flush_quote(w)?;
        serde_json::ser::CompactFormatter.write_f64(w, value)
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, w: &mut W, value: bool) -> io::Result<()> {
        self.flush_quote(w)?;
        serde_json::ser::CompactFormatter.write_bool(w, value)
    }
}

/// Deepest nesting [`parse_fastjson`] accepts (serde_json's own limit is 128 too).
const MAX_DEPTH: usize = 128;

/// Parses JSON as fastjson writes it: bare object keys (`{0:"a"}`, `{name:1}`) are quoted, and
/// object or array keys (`{{"topic":"t"}:1}`) become string keys holding their JSON text. Any
/// other deviation from JSON is an error; no input panics.
pub fn parse_fastjson(bytes: &[u8]) -> Result<Value, RemotingError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| RemotingError::InvalidBody(format!("body is not UTF-8: {e}")))?;
    let mut normalizer = Normalizer {
        src: text.as_bytes(),
        pos: 0,
    };
    let mut out = String::with_capacity(text.len() + 16);
    normalizer.value(&mut out, 0)?;
    normalizer.skip_ws();
    if normalizer.pos != normalizer.src.len() {
        return Err(normalizer.error("trailing characters"));
    }
    serde_json::from_str(&out)
        .map_err(|e| RemotingError::InvalidBody(format!("malformed JSON body: {e}")))
}

/// Parses a fastjson body into `T`. `null` members count as absent, as fastjson treats them.
pub fn from_fastjson<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RemotingError> {
    let mut value = parse_fastjson(bytes)?;
    strip_nulls(&mut value);
    serde_json::from_value(value)
        .map_err(|e| RemotingError::InvalidBody(format!("unexpected body shape: {e}")))
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Rewrites fastjson text into JSON. It copies strings and scalars verbatim (serde_json
/// validates them afterwards) and only decides where keys are; every index is bounds-checked.
struct Normalizer<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Normalizer<'_> {
    fn error(&self, what: &str) -> RemotingError {
        RemotingError::InvalidBody(format!("malformed JSON body: {what} at byte {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// Copies `src[start..pos]`; boundaries always fall on ASCII bytes, so this is valid UTF-8.
    fn copy_from(&self, start: usize, out: &mut String) -> Result<(), RemotingError> {
        let slice = self
            .src
            .get(start..self.pos)
            .ok_or_else(|| self.error("bad slice"))?;
        out.push_str(std::str::from_utf8(slice).map_err(|_| self.error("bad UTF-8 boundary"))?);
        Ok(())
    }

    fn expect(&mut self, byte: u8, out: &mut String) -> Result<(), RemotingError> {
        self.skip_ws();
        if self.peek() != Some(byte) {
            return Err(self.error(&format!("expected '{}'", byte as char)));
        }
        self.pos += 1;
        out.push(byte as char);
        Ok(())
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Result<(), RemotingError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(out, depth + 1),
            Some(b'[') => self.array(out, depth + 1),
            Some(b'"') => self.string(out),
            Some(_) => {
                let start = self.pos;
                self.scalar_end();
                if start == self.pos {
                    return Err(self.error("expected a value"));
                }
                self.copy_from(start, out)
            }
            None => Err(self.error("unexpected end")),
        }
    }

    fn scalar_end(&mut self) {
        while let Some(b) = self.peek() {
            if matches!(
                b,
                b',' | b':' | b']' | b'}' | b'{' | b'[' | b'"' | b' ' | b'\t' | b'\r' | b'\n'
            ) {
                break;
            }
            self.pos += 1;
        }
    }

    fn string(&mut self, out: &mut String) -> Result<(), RemotingError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.pos += 1,
            }
        }
        self.copy_from(start, out)
    }

    fn key(&mut self, out: &mut String, depth: usize) -> Result<(), RemotingError> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => self.string(out),
            Some(b'{' | b'[') => {
                let mut inner = String::new();
                self.value(&mut inner, depth)?;
                let quoted = serde_json::to_string(&inner).map_err(|_| self.error("bad key"))?;
                out.push_str(&quoted);
                Ok(())
            }
            Some(_) => {
                let start = self.pos;
                self.scalar_end();
                if start == self.pos {
                    return Err(self.error("expected a key"));
                }
                let mut bare = String::new();
                self.copy_from(start, &mut bare)?;
                let quoted = serde_json::to_string(&bare).map_err(|_| self.error("bad key"))?;
                out.push_str(&quoted);
                Ok(())
            }
            None => Err(self.error("unexpected end")),
        }
    }

    fn object(&mut self, out: &mut String, depth: usize) -> Result<(), RemotingError> {
        self.sequence(out, b'{', b'}', |me, out| {
            me.key(out, depth)?;
            me.expect(b':', out)?;
            me.value(out, depth)
        })
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Result<(), RemotingError> {
        self.sequence(out, b'[', b']', |me, out| me.value(out, depth))
    }

    /// Copies `open`, then `item`s separated by commas, then `close`.
    fn sequence(
        &mut self,
        out: &mut String,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self, &mut String) -> Result<(), RemotingError>,
    ) -> Result<(), RemotingError> {
        self.expect(open, out)?;
        self.skip_ws();
        if self.peek() != Some(close) {
            loop {
                item(self, out)?;
                self.skip_ws();
                if self.peek() != Some(b',') {
                    break;
                }
                self.pos += 1;
                out.push(',');
            }
        }
        self.expect(close, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> TopicRouteData {
        TopicRouteData {
            broker_datas: vec![BrokerData {
                broker_addrs: BTreeMap::from([(0, "127.0.0.1:10911".to_string())]),
                broker_name: "broker-ref".into(),
                cluster: "RefCluster".into(),
                ..BrokerData::default()
            }],
            queue_datas: vec![QueueData {
                broker_name: "broker-ref".into(),
                perm: 6,
                read_queue_nums: 4,
                topic_sys_flag: 0,
                write_queue_nums: 4,
            }],
            ..TopicRouteData::default()
        }
    }

    #[test]
    fn route_golden_bare_and_quoted() {
        let bare = String::from_utf8(to_fastjson(&route(), KeyStyle::Bare).unwrap()).unwrap();
        assert_eq!(
            bare,
            r#"{"brokerDatas":[{"brokerAddrs":{0:"127.0.0.1:10911"},"brokerName":"broker-ref","cluster":"RefCluster","enableActingMaster":false}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-ref","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
        );
        let quoted = String::from_utf8(to_fastjson(&route(), KeyStyle::Quoted).unwrap()).unwrap();
        assert_eq!(quoted, bare.replace("{0:", "{\"0\":"));
        assert_eq!(
            from_fastjson::<TopicRouteData>(bare.as_bytes()).unwrap(),
            route()
        );
        assert_eq!(
            from_fastjson::<TopicRouteData>(quoted.as_bytes()).unwrap(),
            route()
        );
    }

    #[test]
    fn bare_style_keeps_numeric_looking_string_keys_quoted() {
        let table = BTreeMap::from([("0".to_string(), 1), ("a\"b".to_string(), 2)]);
        let text = to_fastjson(&table, KeyStyle::Bare).unwrap();
        assert_eq!(text, br#"{"0":1,"a\"b":2}"#);
        let empty = BTreeMap::from([(String::new(), -1i64)]);
        assert_eq!(to_fastjson(&empty, KeyStyle::Bare).unwrap(), br#"{"":-1}"#);
        let negative = BTreeMap::from([(-3i64, 7u8)]);
        assert_eq!(
            to_fastjson(&negative, KeyStyle::Bare).unwrap(),
            br#"{-3:7}"#
        );
    }

    #[test]
    fn tolerant_reader_accepts_fastjson_keys() {
        let v = parse_fastjson(
            br#"{0:"a", name : [1, {2:true}], {"topic":"t","queueId":1}:{"x":null}}"#,
        )
        .unwrap();
        assert_eq!(v["0"], "a");
        assert_eq!(v["name"][1]["2"], true);
        assert!(v.get(r#"{"topic":"t","queueId":1}"#).is_some());
    }

    #[test]
    fn tolerant_reader_rejects_without_panicking() {
        for bad in [
            &b""[..],
            b"{",
            b"{0:}",
            b"{\"a\":1,}",
            b"[1,2",
            b"\"abc",
            b"\"ab\\",
            b"{\"a\" 1}",
            b"{1:2}}",
            b"\xff\xfe",
            b"{{{{",
            b"nul",
        ] {
            assert!(
                parse_fastjson(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(10_000);
        assert!(parse_fastjson(deep.as_bytes()).is_err());
        let deep_keys = "{".repeat(10_000);
        assert!(parse_fastjson(deep_keys.as_bytes()).is_err());
    }

    #[test]
    fn nulls_count_as_absent() {
        let data: BrokerData =
            from_fastjson(br#"{"brokerAddrs":null,"brokerName":"b","zoneName":null}"#).unwrap();
        assert_eq!(data.broker_name, "b");
        assert!(data.broker_addrs.is_empty());
        assert_eq!(data.zone_name, None);
    }

    #[test]
    fn topic_config_text_round_trip() {
        let config = TopicConfig {
            topic_name: "T".into(),
            read_queue_nums: 4,
            write_queue_nums: 8,
            perm: 6,
            attributes: BTreeMap::from([("+message.type".to_string(), "NORMAL".to_string())]),
            ..TopicConfig::default()
        };
        let text = config.to_text();
        assert_eq!(text, r#"T 4 8 6 SINGLE_TAG {"+message.type":"NORMAL"}"#);
        assert_eq!(TopicConfig::from_text(&text).unwrap(), config);
        assert!(TopicConfig::from_text("T 4 x 6 SINGLE_TAG").is_err());
        assert!(TopicConfig::from_text("T 4").is_err());
        let spaced = TopicConfig::from_text(r#"T 1 1 6 SINGLE_TAG {"a": "b"}"#).unwrap();
        assert!(spaced.attributes.is_empty());
    }

    #[test]
    fn inflated_layout_round_trip_and_truncation() {
        let mut body = RegisterBrokerBody::default();
        body.topic_config_serialize_wrapper.data_version = DataVersion {
            counter: 3,
            state_version: 2,
            timestamp: 1_700_000_000_000,
        };
        for name in ["A", "B"] {
            let config = TopicConfig {
                topic_name: name.into(),
                ..TopicConfig::default()
            };
            body.topic_config_serialize_wrapper
                .topic_config_table
                .insert(name.into(), config);
        }
        body.filter_server_list = vec!["127.0.0.1:1".into()];
        let bytes = body.to_inflated().unwrap();
        let deflated = body.encode(true).unwrap();
        assert_eq!(RegisterBrokerBody::decode(&deflated, true).unwrap(), body);
        assert_eq!(
            RegisterBrokerBody::decode(&body.encode(false).unwrap(), false).unwrap(),
            body
        );
        assert!(RegisterBrokerBody::decode(b"not zlib", true).is_err());
        assert_eq!(RegisterBrokerBody::from_inflated(&bytes).unwrap(), body);
        for cut in 0..bytes.len() - 4 {
            assert!(
                RegisterBrokerBody::from_inflated(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(RegisterBrokerBody::from_inflated(&huge).is_err());
    }

    #[test]
    fn data_version_omits_zero_state_version() {
        let v = DataVersion {
            counter: 1,
            state_version: 0,
            timestamp: 5,
        };
        assert_eq!(
            to_fastjson(&v, KeyStyle::Quoted).unwrap(),
            br#"{"counter":1,"timestamp":5}"#
        );
    }

    #[test]
    fn perm_helpers() {
        assert_eq!(perm::to_string(6), "RW-");
        assert_eq!(perm::to_string(7), "RWX");
        assert_eq!(perm::to_string(4), "R--");
        assert!(perm::is_valid(7) && !perm::is_valid(8));
        assert!(topic_sys_flag::has_unit_flag(3) && topic_sys_flag::has_unit_sub_flag(2));
    }
}
