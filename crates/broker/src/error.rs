//! [`BrokerError`]: what can go wrong starting or running a broker. Request handlers do not
//! return it: they answer each bad request with an upstream response code and a remark.

use std::path::PathBuf;

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
}
