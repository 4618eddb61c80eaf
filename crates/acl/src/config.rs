//! The ACL files (upstream `PlainPermissionManager`): `<home>/conf/plain_acl.yml` and every
//! `*.yml` under `<home>/conf/acl/`, in upstream's `plain_acl.yml` format, compiled into one
//! [`AclTable`]. Loading checks what upstream checks: keys longer than 6 characters, resource
//! entries `name=PERM`, one account per access key across all files, valid address patterns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::address::AddressPattern;
pub use crate::error::AclError;
use crate::perm;

/// Upstream `AclConstants.ACCESS_KEY_MIN_LENGTH` / `SECRET_KEY_MIN_LENGTH`: keys must be longer.
pub(crate) const KEY_MIN_LENGTH: usize = 6;

/// One account as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AccountFile {
    access_key: Option<String>,
    secret_key: Option<String>,
    white_remote_address: Option<String>,
    admin: bool,
    default_topic_perm: Option<String>,
    default_group_perm: Option<String>,
    topic_perms: Option<Vec<String>>,
    group_perms: Option<Vec<String>>,
}

/// One ACL file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AclFile {
    global_white_remote_addresses: Option<Vec<String>>,
    accounts: Option<Vec<AccountFile>>,
}

/// A compiled account.
#[derive(Debug)]
pub struct Account {
    pub access_key: String,
    pub(crate) secret_key: String,
    pub white: AddressPattern,
    pub admin: bool,
    pub default_topic_perm: u8,
    pub default_group_perm: u8,
    /// Topic name, or `%RETRY%group` for a group, to its permission.
    pub resources: HashMap<String, u8>,
}

/// Everything the ACL files say, compiled.
#[derive(Debug, Default)]
pub struct AclTable {
    pub global_white: Vec<AddressPattern>,
    pub accounts: HashMap<String, Account>,
}

/// The ACL files of one home directory and what they looked like when last read.
#[derive(Debug, Clone)]
pub struct AclFiles {
    home: PathBuf,
}

impl AclFiles {
    /// The files under `<rocketmq_home>/conf`.
    pub fn new(rocketmq_home: impl Into<PathBuf>) -> AclFiles {
        AclFiles {
            home: rocketmq_home.into(),
        }
    }

    /// `<home>/conf/plain_acl.yml`.
    pub fn main_file(&self) -> PathBuf {
        self.home.join("conf").join("plain_acl.yml")
    }

    /// Every ACL file that exists now, sorted, with its modification time.
    pub fn list(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        let mut out = Vec::new();
        let main = self.main_file();
        if main.is_file() {
            out.push(main);
        }
        collect_yml(&self.home.join("conf").join("acl"), &mut out);
        out.sort();
        out.into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, m)
            })
            .collect()
    }

    /// Reads and compiles every file.
    pub fn load(&self) -> Result<AclTable, AclError> {
        let files = self.list();
        if files.is_empty() {
            return Err(AclError::Missing(self.main_file()));
        }
        let mut table = AclTable::default();
        for (path, _) in files {
            let text = std::fs::read_to_string(&path).map_err(|source| AclError::Io {
                path: path.clone(),
                source,
            })?;
            let file: AclFile = if text.trim().is_empty() {
                AclFile::default()
            } else {
                serde_yaml_ng::from_str(&text).map_err(|e| AclError::Parse {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            };
            for w in file.global_white_remote_addresses.unwrap_or_default() {
                table.global_white.push(AddressPattern::parse(&w)?);
            }
            for a in file.accounts.unwrap_or_default() {
                let account = compile(a)?;
                if table.accounts.contains_key(&account.access_key) {
                    return Err(AclError::Duplicate(account.access_key));
                }
                table.accounts.insert(account.access_key.clone(), account);
            }
        }
        Ok(table)
    }
}

fn collect_yml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            collect_yml(&path, out);
        } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(path);
        }
    }
}

fn compile(a: AccountFile) -> Result<Account, AclError> {
    let access_key = a.access_key.unwrap_or_default();
    let secret_key = a.secret_key.unwrap_or_default();
    if access_key.len() <= KEY_MIN_LENGTH || secret_key.len() <= KEY_MIN_LENGTH {
        return Err(AclError::ShortKey(access_key));
    }
    let mut resources = HashMap::new();
    for (kind, entries) in [("topic", a.topic_perms), ("group", a.group_perms)] {
        for entry in entries.unwrap_or_default() {
            let parts: Vec<&str> = entry.split('=').filter(|s| !s.is_empty()).collect();
            let [name, p] = parts[..] else {
                return Err(AclError::Resource { kind, entry });
            };
            let name = name.trim();
            let key = if kind == "group" {
                remoting::message::retry_topic(name)
            } else {
                name.to_string()
            };
            resources.insert(key, perm::parse(Some(p)));
        }
    }
    Ok(Account {
        white: AddressPattern::parse(a.white_remote_address.as_deref().unwrap_or(""))?,
        admin: a.admin,
        default_topic_perm: perm::parse(a.default_topic_perm.as_deref()),
        default_group_perm: perm::parse(a.default_group_perm.as_deref()),
        resources,
        access_key,
        secret_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*

accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      # the group should convert to retry topic
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB

  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    # if it is admin, it could access all resources
    admin: true
"#;

    fn home_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn upstream_sample_loads() {
        let home = home_with(&[("conf/plain_acl.yml", SAMPLE)]);
        let t = AclFiles::new(home.path()).load().unwrap();
        assert_eq!(t.global_white.len(), 2);
        let a = &t.accounts["RocketMQ"];
        assert_eq!(a.secret_key, "12345678");
        assert!(!a.admin);
        assert_eq!(a.default_topic_perm, perm::DENY);
        assert_eq!(a.default_group_perm, perm::SUB);
        assert_eq!(a.resources["topicB"], perm::PUB | perm::SUB);
        assert_eq!(a.resources["%RETRY%groupA"], perm::DENY);
        assert_eq!(a.white, AddressPattern::Nothing);
        assert!(t.accounts["rocketmq2"].admin);
    }

    #[test]
    fn files_under_conf_acl_add_accounts_and_keys_are_checked() {
        let extra = "accounts:\n  - accessKey: extraKey1\n    secretKey: extraSecret1\n";
        let home = home_with(&[
            ("conf/plain_acl.yml", SAMPLE),
            ("conf/acl/team/extra.yml", extra),
        ]);
        let t = AclFiles::new(home.path()).load().unwrap();
        assert!(t.accounts.contains_key("extraKey1"));

        let short = "accounts:\n  - accessKey: abc\n    secretKey: 12345678\n";
        let home = home_with(&[("conf/plain_acl.yml", short)]);
        let e = AclFiles::new(home.path()).load().unwrap_err();
        assert!(e.to_string().contains("length should longer than 6"), "{e}");

        let bad = "accounts:\n  - accessKey: abcdefg\n    secretKey: 12345678\n    topicPerms:\n      - topicA\n";
        let home = home_with(&[("conf/plain_acl.yml", bad)]);
        let e = AclFiles::new(home.path()).load().unwrap_err();
        assert_eq!(
            e.to_string(),
            "Parse resource permission failed for topic:topicA"
        );

        let dup = home_with(&[
            ("conf/plain_acl.yml", SAMPLE),
            (
                "conf/acl/dup.yml",
                "accounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n",
            ),
        ]);
        assert!(matches!(
            AclFiles::new(dup.path()).load(),
            Err(AclError::Duplicate(k)) if k == "RocketMQ"
        ));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            AclFiles::new(empty.path()).load(),
            Err(AclError::Missing(_))
        ));
        let garbage = home_with(&[("conf/plain_acl.yml", "accounts: [ {")]);
        assert!(matches!(
            AclFiles::new(garbage.path()).load(),
            Err(AclError::Parse { .. })
        ));
    }
}
