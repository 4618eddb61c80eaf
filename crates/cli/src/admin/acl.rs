//! ACL commands, as mqadmin 4.9.8's: updateAclConfig (50), deleteAclConfig (51),
//! clusterAclConfigVersion (52) and updateGlobalWhiteAddr (53), sent to the broker at `-b` or
//! to every master of cluster `-c`. The brokers need `aclEnable=true`, and the changes need an
//! admin account (`--access-key`/`--secret-key`).

use clap::Args;
use remoting::{RemotingCommand, RequestCode};
use serde_json::json;

use super::{table, Admin};

#[derive(Args, Debug)]
pub struct AclTargetArgs {
    /// Broker address (`host:port`).
    #[arg(short = 'b', long = "brokerAddr")]
    broker: Option<String>,
    /// Every master of this cluster.
    #[arg(short = 'c', long = "clusterName")]
    cluster: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpdateAclConfigArgs {
    #[command(flatten)]
    target: AclTargetArgs,
    /// Access key of the account (created when it does not exist).
    // Field names differ from the global --access-key/--secret-key (the signing account),
    // which clap would otherwise take for the same argument.
    #[arg(short = 'a', long = "accessKey")]
    account: String,
    /// Its secret key.
    #[arg(short = 's', long = "secretKey")]
    account_secret: Option<String>,
    /// Addresses whose requests with this key need no signature (a white-list pattern).
    #[arg(short = 'w', long = "whiteRemoteAddress")]
    white_remote_address: Option<String>,
    /// Permission on topics not listed: DENY, PUB, SUB or PUB|SUB.
    #[arg(short = 'i', long = "defaultTopicPerm")]
    default_topic_perm: Option<String>,
    /// Permission on groups not listed.
    #[arg(short = 'u', long = "defaultGroupPerm")]
    default_group_perm: Option<String>,
    /// `topic=PERM,topic=PERM`.
    #[arg(short = 't', long = "topicPerms")]
    topic_perms: Option<String>,
    /// `group=PERM,group=PERM`.
    #[arg(short = 'g', long = "groupPerms")]
    group_perms: Option<String>,
    /// Whether the account is an admin.
    #[arg(short = 'm', long = "admin")]
    admin: Option<bool>,
}

#[derive(Args, Debug)]
pub struct DeleteAclConfigArgs {
    #[command(flatten)]
    target: AclTargetArgs,
    /// Access key of the account to delete.
    #[arg(short = 'a', long = "accessKey")]
    account: String,
}

#[derive(Args, Debug)]
pub struct UpdateGlobalWhiteAddrArgs {
    #[command(flatten)]
    target: AclTargetArgs,
    /// Comma-separated address patterns.
    #[arg(short = 'g', long = "globalWhiteRemoteAddresses")]
    addresses: String,
}

/// Sends `cmd` to each target broker; every one must succeed. Returns the brokers' addresses.
async fn each_broker(
    admin: &Admin,
    target: &AclTargetArgs,
    cmd: RemotingCommand,
) -> anyhow::Result<Vec<(String, RemotingCommand)>> {
    let mut out = Vec::new();
    for (_, addr) in admin
        .targets(target.broker.as_deref(), target.cluster.as_deref())
        .await?
    {
        let mut req = cmd.clone();
        req.opaque = RemotingCommand::request(cmd.code).opaque;
        let resp = admin.broker_ok(&addr, req).await?;
        out.push((addr.to_string(), resp));
    }
    Ok(out)
}

fn done(admin: &Admin, what: &str, brokers: &[(String, RemotingCommand)]) -> anyhow::Result<()> {
    let list: Vec<&str> = brokers.iter().map(|(b, _)| b.as_str()).collect();
    admin.print(&json!({ "brokers": list }), || {
        list.iter()
            .map(|b| format!("{what} to {b} success."))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub(super) async fn update(admin: &Admin, a: UpdateAclConfigArgs) -> anyhow::Result<()> {
    let mut cmd = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_ACL_CONFIG)
        .with_ext("accessKey", &a.account);
    let fields = [
        ("secretKey", a.account_secret),
        ("whiteRemoteAddress", a.white_remote_address),
        ("defaultTopicPerm", a.default_topic_perm),
        ("defaultGroupPerm", a.default_group_perm),
        ("topicPerms", a.topic_perms),
        ("groupPerms", a.group_perms),
        ("admin", a.admin.map(|b| b.to_string())),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            cmd = cmd.with_ext(k, v);
        }
    }
    let brokers = each_broker(admin, &a.target, cmd).await?;
    done(admin, "create or update plain access config", &brokers)
}

pub(super) async fn delete(admin: &Admin, a: DeleteAclConfigArgs) -> anyhow::Result<()> {
    let cmd =
        RemotingCommand::request(RequestCode::DELETE_ACL_CONFIG).with_ext("accessKey", &a.account);
    let brokers = each_broker(admin, &a.target, cmd).await?;
    done(admin, "delete plain access config", &brokers)
}

pub(super) async fn update_global_white(
    admin: &Admin,
    a: UpdateGlobalWhiteAddrArgs,
) -> anyhow::Result<()> {
    let cmd = RemotingCommand::request(RequestCode::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG)
        .with_ext("globalWhiteAddrs", &a.addresses)
        .with_ext("aclFileFullPath", "");
    let brokers = each_broker(admin, &a.target, cmd).await?;
    done(admin, "update global white remote addresses", &brokers)
}

pub(super) async fn versions(admin: &Admin, t: AclTargetArgs) -> anyhow::Result<()> {
    let cmd = RemotingCommand::request(RequestCode::GET_BROKER_CLUSTER_ACL_INFO);
    let rows: Vec<serde_json::Value> = each_broker(admin, &t, cmd)
        .await?
        .into_iter()
        .map(|(addr, r)| {
            let field = |k: &str| r.ext(k).unwrap_or_default().to_string();
            json!({
                "cluster": field("clusterName"),
                "broker_name": field("brokerName"),
                "broker_addr": addr,
                "version": serde_json::from_str::<serde_json::Value>(&field("version")).unwrap_or_default(),
                "files": serde_json::from_str::<serde_json::Value>(&field("allAclFileVersion")).unwrap_or_default(),
            })
        })
        .collect();
    admin.print(&rows, || {
        let mut t = table(&[
            "#Cluster Name",
            "#Broker Name",
            "#Broker Addr",
            "#AclConfigVersionNum",
            "#AclLastUpdateTime",
        ]);
        for r in &rows {
            t.add_row([
                r["cluster"].as_str().unwrap_or("").to_string(),
                r["broker_name"].as_str().unwrap_or("").to_string(),
                r["broker_addr"].as_str().unwrap_or("").to_string(),
                r["version"]["counter"].to_string(),
                super::format_millis(r["version"]["timestamp"].as_i64().unwrap_or(0)),
            ]);
        }
        t.to_string()
    })
}
