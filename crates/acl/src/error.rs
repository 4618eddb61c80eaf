//! [`AclError`]: why the ACL files cannot be used.

use std::path::PathBuf;

use thiserror::Error;

/// Why the ACL files cannot be used.
#[derive(Debug, Error)]
pub enum AclError {
    #[error("cannot read ACL file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ACL file {path} is not valid plain_acl.yml: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("The accessKey={0} and secretKey cannot be null and length should longer than 6")]
    ShortKey(String),
    #[error("Parse resource permission failed for {kind}:{entry}")]
    Resource { kind: &'static str, entry: String },
    #[error("invalid remote address pattern `{0}`")]
    Address(String),
    #[error("accessKey={0} is configured in more than one ACL file")]
    Duplicate(String),
    #[error("accessKey={0} is not configured")]
    UnknownAccount(String),
    #[error("{0} is not one of the ACL files")]
    NotAnAclFile(PathBuf),
    #[error("no ACL file: neither {0} nor any *.yml under its acl/ directory exists")]
    Missing(PathBuf),
}
