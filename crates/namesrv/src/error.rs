//! [`NamesrvError`]: why a NameServer could not start or keep its KV configuration.

use std::path::PathBuf;

use remoting::RemotingError;
use thiserror::Error;

use crate::config::ConfigError;

/// Errors of the NameServer's own operations (request handling errors become responses).
#[derive(Debug, Error)]
pub enum NamesrvError {
    #[error("invalid NameServer configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("NameServer network error: {0}")]
    Remoting(#[from] RemotingError),
    #[error("KV config file {}: {reason}", path.display())]
    KvConfig { path: PathBuf, reason: String },
    #[error("aclEnable=true: {0}")]
    Acl(#[from] acl::AclError),
}
