//! [`RemotingCommand`]: one request or response as it travels in a frame.

use std::collections::HashMap;

use bytes::Bytes;

use crate::codes::ResponseCode;

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
