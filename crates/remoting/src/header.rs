//! The two header encodings of a frame: JSON (serialize type 0) and upstream's compact binary
//! "ROCKETMQ" layout (serialize type 1). Decoders take the header bytes alone and return a
//! [`RemotingCommand`] without body; encoders append the header to a buffer. The frame around
//! the header (length words, serialize type) is the frame codec's business, one level up.
//!
//! # JSON header (type 0)
//!
//! An object with keys `code`, `extFields`, `flag`, `language`, `opaque`, `remark`,
//! `serializeTypeCurrentRPC`, `version`. We write them in that (alphabetical) order, as the Java
//! implementation does, leaving out `remark` when there is none and `extFields` when it is
//! empty, with `language` as its upstream name and `serializeTypeCurrentRPC` `"JSON"`.
//!
//! On input we follow what real clients send: unknown keys are ignored; `remark` and
//! `extFields` may be missing or `null`; a missing or unknown `language` reads as
//! [`LanguageCode::Other`]; an `extFields` value may be any JSON scalar (C++ sends numbers,
//! ali-ons numbers and booleans) and is kept as its JSON text (`5`, `false`), `null` values are
//! dropped, and nested arrays or objects are kept as compact JSON text.
//!
//! # Binary header (type 1), big-endian
//!
//! | bytes | field |
//! |---|---|
//! | 2 | `code` (i16) |
//! | 1 | `language` (byte of [`LanguageCode`]) |
//! | 2 | `version` (i16) |
//! | 4 | `opaque` (i32) |
//! | 4 | `flag` (i32) |
//! | 4 | remark length `r` (i32; 0 = no remark) |
//! | r | remark, UTF-8 |
//! | 4 | ext fields length `e` (i32; bytes of all entries that follow) |
//! | e | entries: `i16 keyLen, key, i32 valueLen, value`, UTF-8 |
//!
//! Every length is checked against the bytes that remain before anything is allocated.
//! Invalid UTF-8 is replaced (as the Java decoder does); bytes after the ext fields are ignored.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use crate::command::{LanguageCode, RemotingCommand, SerializeType};
use crate::error::WireError;

/// Appends the JSON header of `cmd` to `dst`.
pub fn encode_json(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    use std::fmt::Write as _;

    let mut out = String::with_capacity(128 + 32 * cmd.ext_fields.len());
    // Writing into a String cannot fail; `write!` results are ignored for that reason.
    let _ = write!(out, "{{\"code\":{}", cmd.code);
    if !cmd.ext_fields.is_empty() {
        out.push_str(",\"extFields\":{");
        for (i, (k, v)) in sorted_ext(cmd).into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, k)?;
            out.push(':');
            push_json_str(&mut out, v)?;
        }
        out.push('}');
    }
    let _ = write!(
        out,
        ",\"flag\":{},\"language\":\"{}\",\"opaque\":{}",
        cmd.flag,
        cmd.language.name(),
        cmd.opaque
    );
    if let Some(remark) = &cmd.remark {
        out.push_str(",\"remark\":");
        push_json_str(&mut out, remark)?;
    }
    let _ = write!(
        out,
        ",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":{}}}",
        cmd.version
    );
    dst.extend_from_slice(out.as_bytes());
    Ok(())
}

/// Ext fields in key order, so that encodings are deterministic.
fn sorted_ext(cmd: &RemotingCommand) -> Vec<(&String, &String)> {
    let mut fields: Vec<_> = cmd.ext_fields.iter().collect();
    fields.sort_unstable();
    fields
}

/// Appends `s` as a JSON string. Most header values need no escaping and are copied as they
/// are; the others are escaped by `serde_json`.
fn push_json_str(out: &mut String, s: &str) -> Result<(), WireError> {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return Ok(());
    }
    let quoted = serde_json::to_string(s).map_err(|e| WireError::Json(e.to_string()))?;
    out.push_str(&quoted);
    Ok(())
}

/// The JSON header as read: every field optional, scalars of any type where clients differ.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonHeaderIn {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    language: Text,
    #[serde(default)]
    version: i32,
    #[serde(default)]
    opaque: i32,
    #[serde(default)]
    flag: i32,
    #[serde(default)]
    remark: Text,
    #[serde(default, deserialize_with = "ext_fields")]
    ext_fields: HashMap<String, String>,
}

/// A JSON value as kept in `extFields`/`remark`: strings unquoted, `null` as `None`, anything
/// else as its compact JSON text. Read straight from the frame, with no `Value` tree.
#[derive(Default)]
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> serde::de::Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Text, E> {
        Ok(Text(Some(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Text, E> {
        Ok(Text(Some(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Text, E> {
        Ok(Text(Some(v.to_string())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
        Ok(Text(Some(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
        Ok(Text(Some(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Text, E> {
        // As `Value::to_string` writes it (`1.0`, not `1`).
        Ok(Text(Some(Value::from(v).to_string())))
    }
    fn visit_unit<E>(self) -> Result<Text, E> {
        Ok(Text(None))
    }
    fn visit_none<E>(self) -> Result<Text, E> {
        Ok(Text(None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Text(Some(v.to_string())))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Text(Some(v.to_string())))
    }
}

/// `extFields` as text by key (`null` values left out; a later duplicate key wins), or empty
/// when the header has `null` there.
fn ext_fields<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, String>, D::Error> {
    struct Fields;
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = HashMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of header fields")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(HashMap::new())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(HashMap::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = HashMap::with_capacity(map.size_hint().unwrap_or(16));
            while let Some((k, Text(v))) = map.next_entry::<String, Text>()? {
                match v {
                    Some(v) => {
                        out.insert(k, v);
                    }
                    None => {
                        out.remove(&k);
                    }
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(Fields)
}

/// Decodes a JSON header.
pub fn decode_json(src: &[u8]) -> Result<RemotingCommand, WireError> {
    let h: JsonHeaderIn =
        serde_json::from_slice(src).map_err(|e| WireError::Json(e.to_string()))?;
    let language = h
        .language
        .0
        .and_then(|name| LanguageCode::from_name(&name))
        .unwrap_or(LanguageCode::Other);
    Ok(RemotingCommand {
        code: h.code,
        language,
        version: h.version,
        opaque: h.opaque,
        flag: h.flag,
        remark: h.remark.0,
        ext_fields: h.ext_fields,
        body: Default::default(),
        serialize_type: SerializeType::Json,
    })
}

/// The `code` and `version` of `cmd` as the binary header carries them (16 bits each, as
/// upstream's `RocketMQSerializable`): codes above 32767, such as POP_MESSAGE (200050), can
/// only travel with JSON headers.
pub fn binary_code_version(cmd: &RemotingCommand) -> Result<(i16, i16), WireError> {
    let code = i16::try_from(cmd.code).map_err(|_| {
        WireError::Binary(format!(
            "code {} does not fit in the 16 bits of a ROCKETMQ header; send it with JSON headers",
            cmd.code
        ))
    })?;
    let version = i16::try_from(cmd.version)
        .map_err(|_| WireError::Binary(format!("version {} does not fit in i16", cmd.version)))?;
    Ok((code, version))
}

/// Appends the binary header of `cmd` to `dst`. Fails when `code` or `version` does not fit in
/// an i16 ([`binary_code_version`]) or a string is too long for its length prefix.
pub fn encode_binary(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    let (code, version) = binary_code_version(cmd)?;
    let remark = cmd.remark.as_deref().unwrap_or("");
    let fields = sorted_ext(cmd);
    let ext_len: usize = fields.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum();

    dst.reserve(2 + 1 + 2 + 4 + 4 + 4 + remark.len() + 4 + ext_len);
    dst.put_i16(code);
    dst.put_u8(cmd.language.to_byte());
    dst.put_i16(version);
    dst.put_i32(cmd.opaque);
    dst.put_i32(cmd.flag);
    dst.put_i32(len_i32(remark.len())?);
    dst.put_slice(remark.as_bytes());
    dst.put_i32(len_i32(ext_len)?);
    for (k, v) in fields {
        let key_len = i16::try_from(k.len())
            .map_err(|_| WireError::Binary(format!("ext key of {} bytes is too long", k.len())))?;
        dst.put_i16(key_len);
        dst.put_slice(k.as_bytes());
        dst.put_i32(len_i32(v.len())?);
        dst.put_slice(v.as_bytes());
    }
    Ok(())
}

fn len_i32(len: usize) -> Result<i32, WireError> {
    i32::try_from(len).map_err(|_| WireError::Binary(format!("length {len} does not fit in i32")))
}

/// Bounds-checked big-endian reader over a header.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Binary(format!(
                "{what}: need {n} bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn i16(&mut self, what: &str) -> Result<i16, WireError> {
        self.array(what).map(i16::from_be_bytes)
    }

    fn i32(&mut self, what: &str) -> Result<i32, WireError> {
        self.array(what).map(i32::from_be_bytes)
    }

    /// A length prefix: negative is an error, larger than what remains is an error.
    fn len(&mut self, raw: i64, what: &str) -> Result<usize, WireError> {
        let n = usize::try_from(raw)
            .map_err(|_| WireError::Binary(format!("{what}: negative length {raw}")))?;
        if n > self.buf.len() {
            return Err(WireError::Binary(format!(
                "{what}: length {n} exceeds the {} bytes left",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    fn string(&mut self, len: usize, what: &str) -> Result<String, WireError> {
        Ok(String::from_utf8_lossy(self.take(len, what)?).into_owned())
    }
}

/// Decodes a binary header.
pub fn decode_binary(src: &[u8]) -> Result<RemotingCommand, WireError> {
    let mut r = Reader { buf: src };
    let code = i32::from(r.i16("code")?);
    let language =
        LanguageCode::from_byte(r.array::<1>("language")?[0]).unwrap_or(LanguageCode::Other);
    let version = i32::from(r.i16("version")?);
    let opaque = r.i32("opaque")?;
    let flag = r.i32("flag")?;
    let raw = r.i32("remark length")?;
    let remark_len = r.len(raw.into(), "remark")?;
    let remark = (remark_len > 0)
        .then(|| r.string(remark_len, "remark"))
        .transpose()?;
    let raw = r.i32("ext fields length")?;
    let ext_len = r.len(raw.into(), "ext fields")?;
    let mut ext = Reader {
        buf: r.take(ext_len, "ext fields")?,
    };
    let mut ext_fields = HashMap::new();
    while !ext.buf.is_empty() {
        let raw = ext.i16("ext key length")?;
        let key_len = ext.len(raw.into(), "ext key")?;
        let key = ext.string(key_len, "ext key")?;
        let raw = ext.i32("ext value length")?;
        let value_len = ext.len(raw.into(), "ext value")?;
        let value = ext.string(value_len, "ext value")?;
        ext_fields.insert(key, value);
    }
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: Default::default(),
        serialize_type: SerializeType::RocketMq,
    })
}
