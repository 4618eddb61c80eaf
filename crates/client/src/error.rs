//! [`ClientError`]: everything a producer or consumer call can fail with.

use remoting::message::MessageError;
use remoting::{RemotingError, ResponseCode};
use thiserror::Error;

/// Errors of the client API.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A configuration value is missing or invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The message cannot be sent as it is (empty topic, body too large, ...).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// Transport failure (connect, timeout, closed connection, malformed frame or body).
    #[error(transparent)]
    Remoting(#[from] RemotingError),
    /// A broker answered with an error code.
    #[error("broker {addr} answered {code} ({}): {remark}", ResponseCode::name(*code).unwrap_or("UNKNOWN"))]
    Broker {
        addr: String,
        code: i32,
        remark: String,
    },
    /// No NameServer knows the topic (or none answered).
    #[error("no route info for topic {0}")]
    NoRoute(String),
    /// The route has no usable address for this broker group.
    #[error("no address for broker group {0}")]
    BrokerNotFound(String),
    /// Every attempt of a send failed; `last` is the last attempt's error.
    #[error("send to {topic} failed after {attempts} attempt(s) on {brokers:?}: {last}")]
    SendFailed {
        topic: String,
        attempts: usize,
        brokers: Vec<String>,
        last: Box<ClientError>,
    },
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The producer or consumer is not running.
    #[error("client is {0}")]
    State(&'static str),
    /// Local file I/O (the broadcasting offset store).
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<MessageError> for ClientError {
    fn from(e: MessageError) -> Self {
        ClientError::Remoting(e.into())
    }
}

impl ClientError {
    /// The broker's response code, when the error is a broker answer (directly or as the
    /// last attempt of a send).
    pub fn response_code(&self) -> Option<i32> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            ClientError::SendFailed { last, .. } => last.response_code(),
            ClientError::Remoting(RemotingError::Remote { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// Result of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
