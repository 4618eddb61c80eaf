//! [`AclValidator`]: the loaded ACL files, swapped whole on reload, and the check of one
//! request in upstream's order.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use remoting::acl::{verify, ACCESS_KEY};
use remoting::message::RETRY_GROUP_TOPIC_PREFIX;
use remoting::{RemotingCommand, RequestCode};

use crate::config::{Account, AclError, AclFiles, AclTable};
use crate::perm::{self, ADMIN_CODES};
use crate::resources;

/// The account that signed `cmd`: `None` when a white list lets it through unchecked; a
/// refusal when the key is missing or unknown or the signature does not verify.
fn authenticate<'t>(
    table: &'t AclTable,
    cmd: &RemotingCommand,
    remote: IpAddr,
) -> Result<Option<&'t Account>, Refusal> {
    if table.global_white.iter().any(|w| w.matches(remote)) {
        return Ok(None);
    }
    let Some(access_key) = cmd.ext(ACCESS_KEY) else {
        return Err(Refusal("No accessKey is configured".into()));
    };
    let Some(account) = table.accounts.get(access_key) else {
        return Err(Refusal(format!("No acl config for {access_key}")));
    };
    if account.white.matches(remote) {
        return Ok(None);
    }
    if !verify(&cmd.ext_fields, &cmd.body, &account.secret_key) {
        return Err(Refusal(format!(
            "Check signature failed for accessKey={access_key}"
        )));
    }
    Ok(Some(account))
}

/// Upstream's message trace topic (`TopicValidator.RMQ_SYS_TRACE_TOPIC`).
const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// Why a request is refused: upstream's `AclException` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    /// As upstream's broker writes it into the answer's remark.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "org.apache.rocketmq.acl.common.AclException: {}", self.0)
    }
}

/// The ACL of one server: what its files said when last read.
pub struct AclValidator {
    files: AclFiles,
    table: ArcSwap<AclTable>,
    /// The files and their modification times at the last (attempted) load.
    seen: parking_lot::Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
    /// Loads so far and when the last one happened (upstream's `DataVersion` of the ACL).
    version: parking_lot::Mutex<(u64, i64)>,
}

/// Request codes that change the ACL itself; upstream 4.9 lets any signed account send them,
/// Apogee requires an admin account.
const ACL_ADMIN_CODES: &[i32] = &[
    RequestCode::UPDATE_AND_CREATE_ACL_CONFIG,
    RequestCode::DELETE_ACL_CONFIG,
    RequestCode::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG,
];

impl AclValidator {
    /// Loads the ACL files under `files`; a missing or invalid file is an error.
    pub fn load(files: AclFiles) -> Result<AclValidator, AclError> {
        let seen = files.list();
        let table = files.load()?;
        tracing::info!(accounts = table.accounts.len(), "ACL loaded");
        Ok(AclValidator {
            files,
            table: ArcSwap::from_pointee(table),
            seen: parking_lot::Mutex::new(seen),
            version: parking_lot::Mutex::new((1, remoting::message::now_millis())),
        })
    }

    /// Reloads when a file was added, removed or modified since the last look (upstream's
    /// `AclFileWatchService`). Returns whether the table changed; an invalid file keeps the
    /// previous table and is reported.
    pub fn reload_if_changed(&self) -> Result<bool, AclError> {
        let now = self.files.list();
        {
            let mut seen = self.seen.lock();
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        self.reload()?;
        Ok(true)
    }

    /// Reads every file again now (after an admin request changed one).
    pub fn reload(&self) -> Result<(), AclError> {
        *self.seen.lock() = self.files.list();
        let table = self.files.load()?;
        tracing::info!(accounts = table.accounts.len(), "ACL reloaded");
        self.table.store(Arc::new(table));
        let mut v = self.version.lock();
        *v = (v.0 + 1, remoting::message::now_millis());
        Ok(())
    }

    /// The ACL files, to change them (see [`crate::edit`]); call [`AclValidator::reload`]
    /// after.
    pub fn files(&self) -> &AclFiles {
        &self.files
    }

    /// GET_BROKER_CLUSTER_ACL_INFO's `version` (a `DataVersion` JSON of the loaded ACL) and
    /// `allAclFileVersion` (file path to its `DataVersion`, from its modification time).
    pub fn versions(&self) -> (String, String) {
        let (counter, timestamp) = *self.version.lock();
        let version = format!(r#"{{"counter":{counter},"timestamp":{timestamp}}}"#);
        let files: std::collections::BTreeMap<String, serde_json::Value> = self
            .files
            .list()
            .into_iter()
            .map(|(p, m)| {
                let ms = m
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                (
                    p.display().to_string(),
                    serde_json::json!({"counter": counter, "timestamp": ms}),
                )
            })
            .collect();
        let all = serde_json::to_string(&files).unwrap_or_else(|_| "{}".into());
        (version, all)
    }

    /// Checks an administrative request (one that changes what a NameServer or controller
    /// holds): white-listed, or signed by an admin account.
    pub fn check_admin(&self, cmd: &RemotingCommand, remote: IpAddr) -> Result<(), Refusal> {
        let table = self.table.load();
        match authenticate(&table, cmd, remote)? {
            Some(account) if !account.admin => Err(Refusal(format!(
                "Need admin permission for request code={}, but accessKey={} is not",
                cmd.code, account.access_key
            ))),
            _ => Ok(()),
        }
    }

    /// Checks `cmd` from `remote` in upstream's order: the global white list passes
    /// everything; then the access key must name an account; the account's white list
    /// passes; else the signature must verify, admin codes need an admin account, and every
    /// resource the request names needs its permission (the account's entry, else its
    /// default for topics or groups).
    pub fn check(&self, cmd: &RemotingCommand, remote: IpAddr) -> Result<(), Refusal> {
        let table = self.table.load();
        let Some(account) = authenticate(&table, cmd, remote)? else {
            return Ok(());
        };
        let access_key = account.access_key.as_str();
        let needed = resources::needed(cmd).map_err(Refusal)?;
        // Message traces may always be written (upstream skips the check for them).
        if needed
            .iter()
            .any(|(r, p)| r == TRACE_TOPIC && *p == perm::PUB)
        {
            return Ok(());
        }
        if (ADMIN_CODES.contains(&cmd.code) || ACL_ADMIN_CODES.contains(&cmd.code))
            && !account.admin
        {
            return Err(Refusal(format!(
                "Need admin permission for request code={}, but accessKey={access_key} is not",
                cmd.code
            )));
        }
        if account.admin && account.resources.is_empty() {
            return Ok(());
        }
        for (resource, needed_perm) in &needed {
            let is_group = resource.starts_with(RETRY_GROUP_TOPIC_PREFIX);
            let owned = account
                .resources
                .get(resource)
                .copied()
                .unwrap_or(if is_group {
                    account.default_group_perm
                } else {
                    account.default_topic_perm
                });
            if !perm::allows(*needed_perm, owned) {
                let what = match resource.strip_prefix(RETRY_GROUP_TOPIC_PREFIX) {
                    Some(group) => format!("group:{group}"),
                    None => format!("topic:{resource}"),
                };
                return Err(Refusal(format!("No default permission for {what}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remoting::acl::{sign, Credentials};
    use remoting::RequestCode;

    const FILE: &str = r#"
globalWhiteRemoteAddresses:
  - 10.10.103.*
accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      - groupA=DENY
  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    admin: true
"#;

    fn validator() -> (tempfile::TempDir, AclValidator) {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("conf")).unwrap();
        std::fs::write(home.path().join("conf/plain_acl.yml"), FILE).unwrap();
        let v = AclValidator::load(AclFiles::new(home.path())).unwrap();
        (home, v)
    }

    fn signed(mut cmd: RemotingCommand, ak: &str, sk: &str) -> RemotingCommand {
        sign(&mut cmd, &Credentials::new(ak, sk));
        cmd
    }

    fn send(topic: &str) -> RemotingCommand {
        RemotingCommand::request(RequestCode::SEND_MESSAGE_V2)
            .with_ext("a", "PG")
            .with_ext("b", topic)
    }

    const LOCAL: &str = "127.0.0.1";

    #[test]
    fn checks_in_upstream_order_with_upstream_messages() {
        let (_home, v) = validator();
        let ip = LOCAL.parse().unwrap();
        let err = |cmd: &RemotingCommand, ip| v.check(cmd, ip).unwrap_err().0;
        assert_eq!(err(&send("topicB"), ip), "No accessKey is configured");
        assert_eq!(
            err(&signed(send("topicB"), "nobody1", "12345678"), ip),
            "No acl config for nobody1"
        );
        assert_eq!(
            err(&signed(send("topicB"), "RocketMQ", "wrong-secret"), ip),
            "Check signature failed for accessKey=RocketMQ"
        );
        assert!(v
            .check(&signed(send("topicB"), "RocketMQ", "12345678"), ip)
            .is_ok());
        assert_eq!(
            err(&signed(send("topicC"), "RocketMQ", "12345678"), ip),
            "No default permission for topic:topicC"
        );
        assert_eq!(
            err(&signed(send("topicZ"), "RocketMQ", "12345678"), ip),
            "No default permission for topic:topicZ"
        );
        let pull = |group: &str| {
            RemotingCommand::request(RequestCode::PULL_MESSAGE)
                .with_ext("consumerGroup", group)
                .with_ext("topic", "topicC")
        };
        assert!(v
            .check(&signed(pull("groupX"), "RocketMQ", "12345678"), ip)
            .is_ok());
        assert_eq!(
            err(&signed(pull("groupA"), "RocketMQ", "12345678"), ip),
            "No default permission for group:groupA"
        );
        let create =
            RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC).with_ext("topic", "T");
        assert_eq!(
            err(&signed(create.clone(), "RocketMQ", "12345678"), ip),
            "Need admin permission for request code=17, but accessKey=RocketMQ is not"
        );
        assert!(v
            .check(&signed(create.clone(), "rocketmq2", "12345678"), ip)
            .is_ok());
        // White lists: the global one passes anything, an account's passes its key unsigned.
        assert!(v.check(&create, "10.10.103.7".parse().unwrap()).is_ok());
        let mut unsigned = create.clone();
        unsigned
            .ext_fields
            .insert("AccessKey".into(), "rocketmq2".into());
        assert!(v.check(&unsigned, "192.168.1.20".parse().unwrap()).is_ok());
        assert!(v.check(&unsigned, ip).is_err());
        assert_eq!(
            Refusal("x".into()).to_string(),
            "org.apache.rocketmq.acl.common.AclException: x"
        );
    }

    #[test]
    fn reload_follows_the_file_and_keeps_the_old_table_on_a_bad_one() {
        let (home, v) = validator();
        let ip = LOCAL.parse().unwrap();
        assert!(!v.reload_if_changed().unwrap());
        let cmd = signed(send("topicC"), "RocketMQ", "12345678");
        assert!(v.check(&cmd, ip).is_err());
        let file = home.path().join("conf/plain_acl.yml");
        std::fs::write(&file, FILE.replace("topicC=SUB", "topicC=PUB")).unwrap();
        // Make sure the modification time moves even on coarse clocks.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(v.reload_if_changed().unwrap());
        assert!(v.check(&cmd, ip).is_ok());
        std::fs::write(&file, "accounts: [ {").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(v.reload_if_changed().is_err());
        assert!(v.check(&cmd, ip).is_ok(), "the previous table stays");
    }
}
