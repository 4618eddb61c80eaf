//! [`RemotingCommand`]: one request or response as it travels in a frame.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};

use bytes::Bytes;

use crate::codes::ResponseCode;
use crate::error::RemotingError;

/// Flag bit 0: the command is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit 1: the request expects no response.
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// Header encoding of a frame (the high byte of the header-length word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// Type 0: the header is a JSON object.
    #[default]
    Json,
    /// Type 1: upstream's compact binary header (`RocketMQSerializable`).
    RocketMq,
}

/// Upstream `LanguageCode`: the byte in binary headers, the name in JSON headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LanguageCode {
    #[default]
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

/// One request or response. `ext_fields` hold the typed header's fields as strings (JSON
/// scalars of any kind are accepted on input and kept as their text).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RemotingCommand {
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: HashMap<String, String>,
    pub body: Bytes,
    /// Header encoding this command was received in (and a response is sent in).
    pub serialize_type: SerializeType,
}

/// Version this implementation announces in its requests: upstream `MQVersion` ordinal 474
/// (a 5.x release), so peers enable their newest encodings (quoted route keys, ...).
pub const CURRENT_VERSION: i32 = 474;

/// Source of request opaques; shared by every request this process creates, like upstream's
/// static counter. Wraps around on overflow.
static NEXT_OPAQUE: AtomicI32 = AtomicI32::new(0);

/// `(byte, upstream name)` of every language, in byte order.
const LANGUAGES: [(LanguageCode, &str); 14] = [
    (LanguageCode::Java, "JAVA"),
    (LanguageCode::Cpp, "CPP"),
    (LanguageCode::Dotnet, "DOTNET"),
    (LanguageCode::Python, "PYTHON"),
    (LanguageCode::Delphi, "DELPHI"),
    (LanguageCode::Erlang, "ERLANG"),
    (LanguageCode::Ruby, "RUBY"),
    (LanguageCode::Other, "OTHER"),
    (LanguageCode::Http, "HTTP"),
    (LanguageCode::Go, "GO"),
    (LanguageCode::Php, "PHP"),
    (LanguageCode::Oms, "OMS"),
    (LanguageCode::Rust, "RUST"),
    (LanguageCode::NodeJs, "NODE_JS"),
];

/// A fresh opaque from the process-wide counter.
pub(crate) fn next_opaque() -> i32 {
    NEXT_OPAQUE.fetch_add(1, Ordering::Relaxed)
}

impl LanguageCode {
    /// The language with binary-header byte `b`, `None` for an unknown byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        LANGUAGES.get(usize::from(b)).map(|(l, _)| *l)
    }

    /// The binary-header byte.
    pub fn to_byte(self) -> u8 {
        // The enum's declaration order is upstream's byte order.
        self as u8
    }

    /// Upstream name, as written in JSON headers.
    pub fn name(self) -> &'static str {
        LANGUAGES[usize::from(self.to_byte())].1
    }

    /// The language called `name` (exact upstream spelling), `None` when unknown.
    pub fn from_name(name: &str) -> Option<Self> {
        LANGUAGES.iter().find(|(_, n)| *n == name).map(|(l, _)| *l)
    }
}

impl RemotingCommand {
    /// A new two-way request with a fresh opaque, sent in JSON by this (Rust) implementation.
    pub fn request(code: i32) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::Rust,
            version: CURRENT_VERSION,
            opaque: next_opaque(),
            flag: 0,
            remark: None,
            ext_fields: HashMap::new(),
            body: Bytes::new(),
            serialize_type: SerializeType::Json,
        }
    }

    /// The response to `req`: same opaque, serialize type and version, the response flag set.
    pub fn response_to(req: &RemotingCommand, code: i32, remark: Option<String>) -> Self {
        RemotingCommand {
            code,
            language: LanguageCode::Rust,
            version: req.version,
            opaque: req.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: HashMap::new(),
            body: Bytes::new(),
            serialize_type: req.serialize_type,
        }
    }

    /// The `REQUEST_CODE_NOT_SUPPORTED` (3) answer to `req`, worded as upstream does.
    pub fn not_supported(req: &RemotingCommand) -> Self {
        Self::response_to(
            req,
            ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
            Some(format!(" request type {} not supported", req.code)),
        )
    }

    /// Sets one ext field (a typed header field), replacing an earlier value.
    pub fn with_ext(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.ext_fields.insert(key.into(), value.to_string());
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the remark.
    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    /// Marks the request oneway (flag bit 1): the peer sends no response.
    pub fn into_oneway(mut self) -> Self {
        self.flag |= FLAG_ONEWAY;
        self
    }

    /// Flag bit 0.
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// Flag bit 1.
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// The ext field `key`, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }

    /// The ext field `key` parsed as `T`: `MissingField` when absent, `InvalidField` when it
    /// does not parse.
    pub fn ext_parse<T: FromStr>(&self, key: &'static str) -> Result<T, RemotingError> {
        let raw = self.ext(key).ok_or(RemotingError::MissingField(key))?;
        raw.parse().map_err(|_| RemotingError::InvalidField {
            field: key,
            value: raw.to_string(),
        })
    }

    /// The remark, or `""` when there is none.
    pub fn remark_str(&self) -> &str {
        self.remark.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_bytes_and_names() {
        for (i, (lang, name)) in LANGUAGES.iter().enumerate() {
            assert_eq!(usize::from(lang.to_byte()), i);
            assert_eq!(LanguageCode::from_byte(lang.to_byte()), Some(*lang));
            assert_eq!(lang.name(), *name);
            assert_eq!(LanguageCode::from_name(name), Some(*lang));
        }
        assert_eq!(LanguageCode::Rust.to_byte(), 12);
        assert_eq!(LanguageCode::from_byte(14), None);
        assert_eq!(LanguageCode::from_name("COBOL"), None);
    }

    #[test]
    fn request_and_response() {
        let a = RemotingCommand::request(105).with_ext("topic", "T");
        let b = RemotingCommand::request(105);
        assert_ne!(a.opaque, b.opaque);
        assert_eq!(a.language, LanguageCode::Rust);
        assert_eq!(a.version, CURRENT_VERSION);
        assert!(!a.is_response() && !a.is_oneway());
        assert!(a.clone().into_oneway().is_oneway());
        assert_eq!(a.ext("topic"), Some("T"));

        let mut req = a.clone();
        req.serialize_type = SerializeType::RocketMq;
        req.version = 409;
        let resp = RemotingCommand::not_supported(&req);
        assert_eq!(resp.code, 3);
        assert_eq!(resp.opaque, req.opaque);
        assert!(resp.is_response());
        assert_eq!(resp.serialize_type, SerializeType::RocketMq);
        assert_eq!(resp.version, 409);
        assert_eq!(resp.remark_str(), " request type 105 not supported");
    }

    #[test]
    fn ext_parse_errors() {
        let c = RemotingCommand::request(1)
            .with_ext("n", 5)
            .with_ext("bad", "x");
        assert_eq!(c.ext_parse::<i32>("n").unwrap(), 5);
        assert!(matches!(
            c.ext_parse::<i32>("none"),
            Err(RemotingError::MissingField("none"))
        ));
        assert!(matches!(
            c.ext_parse::<i32>("bad"),
            Err(RemotingError::InvalidField { field: "bad", .. })
        ));
        assert_eq!(RemotingCommand::default().remark_str(), "");
    }
}
