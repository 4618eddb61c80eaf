//! Errors of the remoting layer: [`WireError`] for bytes that do not form a valid frame or
//! header, [`RemotingError`] for everything a caller of the client or server sees.

use thiserror::Error;

/// A frame or header that cannot be decoded. The connection it came from is closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("frame length {0} is too small to hold a header")]
    FrameTooSmall(usize),
    #[error("header length {header} does not fit in frame of {frame} bytes")]
    HeaderLength { header: usize, frame: usize },
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    #[error("malformed JSON header: {0}")]
    Json(String),
    #[error("malformed binary header: {0}")]
    Binary(String),
}

/// Errors seen by users of the remoting client and server.
#[derive(Debug, Error)]
pub enum RemotingError {
    #[error("wire error: {0}")]
    Wire(#[from] WireError),
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {addr} timed out after {millis} ms")]
    Timeout { addr: String, millis: u64 },
    #[error("connection to {0} closed before a response arrived")]
    ConnectionClosed(String),
    #[error("request code {0} is not served by a NameServer")]
    NotANameServerRequest(i32),
    #[error("missing header field `{0}`")]
    MissingField(&'static str),
    #[error("header field `{field}` has an invalid value `{value}`")]
    InvalidField { field: &'static str, value: String },
    #[error("invalid body: {0}")]
    InvalidBody(String),
    #[error("remote answered code {code}: {remark}")]
    Remote { code: i32, remark: String },
    #[error("the client is shut down")]
    Shutdown,
    #[error("request code {0} has two handlers")]
    DuplicateHandler(i32),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl From<message::MessageError> for RemotingError {
    fn from(e: message::MessageError) -> Self {
        RemotingError::InvalidBody(e.to_string())
    }
}
