//! [`BrokerError`]: what can go wrong starting or running a broker. Request handlers and the
//! services they call refuse a request with a [`HandlerError`] instead: an upstream response
//! code and a remark, turned into the answer by the dispatch wrapper alone.

use std::path::PathBuf;

use remoting::{RemotingError, ResponseCode};
use thiserror::Error;

/// Errors of the broker library.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// A setting is invalid; the message names the key.
    #[error("invalid broker config: {0}")]
    Config(String),
    /// The message store failed.
    #[error("store error: {0}")]
    Store(#[from] store::error::StoreError),
    /// The network layer failed (binding the port, talking to a NameServer). Shown as the
    /// remoting error itself, whose text already names the address and the cause.
    #[error(transparent)]
    Remoting(#[from] remoting::RemotingError),
    /// The replication (HA) port cannot be bound.
    #[error("cannot bind the HA port: {0}")]
    HaBind(#[source] std::io::Error),
    /// The fast port (`fastListenPort`, default `listenPort - 2`) cannot be bound; the
    /// broker does not start, as upstream.
    #[error(
        "cannot bind the fast port {addr} (config key `fastListenPort`, default `listenPort - 2`; \
         `fastListenPortEnable=false` turns it off): {source}"
    )]
    FastBind {
        addr: std::net::SocketAddr,
        #[source]
        source: remoting::RemotingError,
    },
    /// A config file (`topics.json`, ...) cannot be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file holds something that is not its JSON shape.
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A topic the broker would create for itself (a group's retry or DLQ topic) cannot be
    /// stored under that name (see `store::is_storable_topic`).
    #[error("the topic[{0}] cannot be created: its name cannot name a ConsumeQueue directory")]
    InvalidTopic(String),
}

/// A write that failed, as a response code and remark (the `Display` text).
#[derive(Debug, Error)]
#[error("{remark}")]
pub(crate) struct PutError {
    pub(crate) code: i32,
    pub(crate) remark: String,
}

/// A refused or failed request: the response code (see [`HandlerError::code`]) and the
/// remark (the `Display` text), worded as upstream's.
#[derive(Debug, Error)]
pub(crate) enum HandlerError {
    /// `SYSTEM_ERROR` (1): a bad request or an internal failure.
    #[error("{0}")]
    System(String),
    /// `SYSTEM_BUSY` (2).
    #[error("{0}")]
    Busy(String),
    /// `MESSAGE_ILLEGAL` (13).
    #[error("{0}")]
    MessageIllegal(String),
    /// `SERVICE_NOT_AVAILABLE` (14).
    #[error("{0}")]
    ServiceNotAvailable(String),
    /// `NO_PERMISSION` (16).
    #[error("{0}")]
    NoPermission(String),
    /// `TOPIC_NOT_EXIST` (17).
    #[error("{0}")]
    TopicNotExist(String),
    /// `SUBSCRIPTION_GROUP_NOT_EXIST` (26).
    #[error("{0}")]
    GroupNotExist(String),
    /// `SUBSCRIPTION_NOT_EXIST` (24).
    #[error("{0}")]
    SubscriptionNotExist(String),
    /// `SUBSCRIPTION_NOT_LATEST` (25).
    #[error("{0}")]
    SubscriptionNotLatest(String),
    /// `QUERY_NOT_FOUND` (22).
    #[error("{0}")]
    QueryNotFound(String),
    /// `SLAVE_NOT_AVAILABLE` (11).
    #[error("{0}")]
    SlaveNotAvailable(String),
    /// `CONSUMER_NOT_ONLINE` (206).
    #[error("{0}")]
    ConsumerNotOnline(String),
    /// `CONSUME_MSG_TIMEOUT` (207).
    #[error("{0}")]
    ConsumeTimeout(String),
    /// `NO_MESSAGE` (208): an ack or change of invisible time whose message is not in flight.
    #[error("{0}")]
    NoMessage(String),
    /// `INVALID_PARAMETER` (29).
    #[error("{0}")]
    InvalidParameter(String),
    /// A header that does not parse: `SYSTEM_ERROR` naming the field, as upstream's
    /// `RemotingCommandException` does.
    #[error("{}", bad_header_remark(.0))]
    BadHeader(RemotingError),
    /// A config file or manager failure: `SYSTEM_ERROR`.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A failed write, with the code the store failure maps to.
    #[error(transparent)]
    Write(#[from] PutError),
}

impl HandlerError {
    /// The upstream response code answered for this error.
    pub(crate) fn code(&self) -> i32 {
        use HandlerError as E;
        match self {
            E::System(_) | E::BadHeader(_) | E::Broker(_) => ResponseCode::SYSTEM_ERROR,
            E::Busy(_) => ResponseCode::SYSTEM_BUSY,
            E::MessageIllegal(_) => ResponseCode::MESSAGE_ILLEGAL,
            E::ServiceNotAvailable(_) => ResponseCode::SERVICE_NOT_AVAILABLE,
            E::NoPermission(_) => ResponseCode::NO_PERMISSION,
            E::TopicNotExist(_) => ResponseCode::TOPIC_NOT_EXIST,
            E::GroupNotExist(_) => ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST,
            E::SubscriptionNotExist(_) => ResponseCode::SUBSCRIPTION_NOT_EXIST,
            E::SubscriptionNotLatest(_) => ResponseCode::SUBSCRIPTION_NOT_LATEST,
            E::QueryNotFound(_) => ResponseCode::QUERY_NOT_FOUND,
            E::SlaveNotAvailable(_) => ResponseCode::SLAVE_NOT_AVAILABLE,
            E::ConsumerNotOnline(_) => ResponseCode::CONSUMER_NOT_ONLINE,
            E::ConsumeTimeout(_) => ResponseCode::CONSUME_MSG_TIMEOUT,
            E::NoMessage(_) => ResponseCode::NO_MESSAGE,
            E::InvalidParameter(_) => ResponseCode::INVALID_PARAMETER,
            E::Write(e) => e.code,
        }
    }

    /// `SYSTEM_ERROR` with `e`'s text, for failures of encoders and the store.
    pub(crate) fn system(e: impl std::fmt::Display) -> HandlerError {
        HandlerError::System(e.to_string())
    }
}

fn bad_header_remark(e: &RemotingError) -> String {
    match e {
        RemotingError::MissingField(f) => format!("the custom field <{f}> is null"),
        RemotingError::InvalidField { field, value } => {
            format!("the custom field <{field}> has an invalid value <{value}>")
        }
        other => other.to_string(),
    }
}

impl From<durable::FileError> for BrokerError {
    fn from(e: durable::FileError) -> BrokerError {
        BrokerError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_headers_name_the_field() {
        let e = HandlerError::BadHeader(RemotingError::MissingField("topic"));
        assert_eq!(e.code(), ResponseCode::SYSTEM_ERROR);
        assert_eq!(e.to_string(), "the custom field <topic> is null");
    }
}
