//! ACL 1.0 as upstream 4.9's `PlainAccessValidator` and `PlainPermissionManager` apply it:
//! accounts from `<rocketmqHome>/conf/plain_acl.yml` and `conf/acl/**/*.yml` ([`config`]),
//! address white lists ([`address`]), which permission each request needs ([`resources`]),
//! and the check itself ([`AclValidator::check`]): global white list, access key, the
//! account's white list, the signature (`remoting::acl`), admin codes, then each resource's
//! permission. A refusal carries upstream's `AclException` message.

pub mod address;
pub mod config;
pub mod edit;
mod error;
pub mod perm;
pub mod resources;
mod validator;

pub use config::AclFiles;
pub use edit::AccountChange;
pub use error::AclError;
pub use validator::{AclValidator, Refusal};
