//! [`ControllerError`]: why a controller could not start.

use remoting::RemotingError;
use thiserror::Error;

use crate::config::ConfigError;

/// Errors of the controller's own operations (request errors become responses).
#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("invalid controller configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("controller network error: {0}")]
    Remoting(#[from] RemotingError),
    #[error("controller Raft storage: {0}")]
    Storage(String),
    #[error("controller Raft: {0}")]
    Raft(String),
    #[error("aclEnable=true: {0}")]
    Acl(#[from] acl::AclError),
}
