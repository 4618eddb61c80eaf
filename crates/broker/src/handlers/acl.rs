//! The ACL admin requests of upstream 4.9's `AdminBrokerProcessor`: UPDATE_AND_CREATE_ACL_CONFIG
//! (50), DELETE_ACL_CONFIG (51), GET_BROKER_CLUSTER_ACL_INFO (52) and
//! UPDATE_GLOBAL_WHITE_ADDRS_CONFIG (53). Changes are written to the ACL files and take effect
//! at once. The ACL check before these handlers requires an admin account for 50, 51 and 53.

use std::path::Path;
use std::sync::Arc;

use acl::AccountChange;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{success, Reply};
use crate::error::HandlerError;
use crate::services::BrokerServices;

/// 4.9's response codes of failed ACL changes (5.x reuses the numbers for POP).
const UPDATE_AND_CREATE_ACL_CONFIG_FAILED: i32 = 209;
const DELETE_ACL_CONFIG_FAILED: i32 = 210;
const UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED: i32 = 211;

fn validator(state: &BrokerServices) -> Result<&acl::AclValidator, HandlerError> {
    state.acl.as_deref().ok_or_else(|| {
        HandlerError::System("The broker does not enable acl (aclEnable=false)".into())
    })
}

/// The `accessKey` header field, which these requests require.
fn access_key(req: &RemotingCommand) -> Result<String, HandlerError> {
    req.ext("accessKey")
        .map(str::to_string)
        .ok_or_else(|| HandlerError::System("the header field accessKey is missing".into()))
}

/// Comma-separated entries, as upstream's `UtilAll.split`.
fn split(value: Option<&str>) -> Option<Vec<String>> {
    value.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// Runs a file change, reloads, and answers SUCCESS or `failed_code` with `what` and the cause.
fn change(
    state: &BrokerServices,
    req: &RemotingCommand,
    failed_code: i32,
    what: String,
    apply: impl FnOnce(&acl::AclValidator) -> Result<(), acl::AclError>,
) -> Reply {
    let acl = validator(state)?;
    match apply(acl).and_then(|()| acl.reload()) {
        Ok(()) => {
            tracing::info!("{what}: done");
            Ok(Some(success(req)))
        }
        Err(e) => {
            tracing::warn!("{what}: {e}");
            Ok(Some(RemotingCommand::response_to(
                req,
                failed_code,
                Some(format!("{what} failed: {e}")),
            )))
        }
    }
}

/// UPDATE_AND_CREATE_ACL_CONFIG (50).
pub(super) async fn update(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let access_key = access_key(&req)?;
    let text = |k: &str| req.ext(k).map(str::to_string);
    let account = AccountChange {
        access_key: access_key.clone(),
        secret_key: text("secretKey"),
        white_remote_address: text("whiteRemoteAddress"),
        admin: req.ext("admin").map(|v| v.eq_ignore_ascii_case("true")),
        default_topic_perm: text("defaultTopicPerm"),
        default_group_perm: text("defaultGroupPerm"),
        topic_perms: split(req.ext("topicPerms")),
        group_perms: split(req.ext("groupPerms")),
    };
    change(
        &state,
        &req,
        UPDATE_AND_CREATE_ACL_CONFIG_FAILED,
        format!("The accesskey[{access_key}] corresponding to accessConfig has been updated"),
        |acl| acl.files().update_account(&account),
    )
}

/// DELETE_ACL_CONFIG (51).
pub(super) async fn delete(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let access_key = access_key(&req)?;
    change(
        &state,
        &req,
        DELETE_ACL_CONFIG_FAILED,
        format!("The accesskey[{access_key}] corresponding to accessConfig has been deleted"),
        |acl| acl.files().delete_account(&access_key),
    )
}

/// UPDATE_GLOBAL_WHITE_ADDRS_CONFIG (53).
pub(super) async fn update_global_white(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let addresses = split(req.ext("globalWhiteAddrs")).unwrap_or_default();
    let file = req
        .ext("aclFileFullPath")
        .filter(|p| !p.trim().is_empty())
        .map(|p| Path::new(p).to_path_buf());
    change(
        &state,
        &req,
        UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED,
        format!(
            "The globalWhiteAddresses[{}] has been updated",
            addresses.join(",")
        ),
        |acl| acl.files().update_global_white(&addresses, file.as_deref()),
    )
}

/// GET_BROKER_CLUSTER_ACL_INFO (52): the ACL's version and each file's, with the broker's
/// names and address.
pub(super) async fn versions(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let acl = validator(&state)?;
    let (version, all) = acl.versions();
    let config = state.config();
    Ok(Some(
        success(&req)
            .with_ext("version", version)
            .with_ext("allAclFileVersion", all)
            .with_ext("brokerName", config.broker_name.as_str())
            .with_ext("brokerAddr", state.broker_addr())
            .with_ext("clusterName", config.broker_cluster_name.as_str()),
    ))
}
