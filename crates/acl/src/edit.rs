//! Changing the ACL files from admin requests (upstream `PlainPermissionManager`'s
//! `updateAccessConfig`, `deleteAccessConfig`, `updateGlobalWhiteAddrsConfig`): the file that
//! holds an account is rewritten with the change (a new account goes to `plain_acl.yml`),
//! keeping every other entry; the YAML is written whole to a temporary file and renamed over
//! the old one, so a reader never sees half a file. Comments are not kept (upstream's YAML dump
//! drops them too).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::config::{AclFiles, KEY_MIN_LENGTH};
use crate::error::AclError;

/// An account change as UPDATE_AND_CREATE_ACL_CONFIG carries it: fields left `None` keep
/// their current value (a new account starts from nothing).
#[derive(Debug, Default, Clone)]
pub struct AccountChange {
    pub access_key: String,
    pub secret_key: Option<String>,
    pub white_remote_address: Option<String>,
    pub admin: Option<bool>,
    pub default_topic_perm: Option<String>,
    pub default_group_perm: Option<String>,
    pub topic_perms: Option<Vec<String>>,
    pub group_perms: Option<Vec<String>>,
}

fn read(path: &Path) -> Result<Mapping, AclError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mapping::new()),
        Err(source) => {
            return Err(AclError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(Value::Null) => Ok(Mapping::new()),
        Ok(_) => Err(AclError::Parse {
            path: path.to_path_buf(),
            reason: "not a mapping".into(),
        }),
        Err(e) => Err(AclError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn write(path: &Path, doc: &Mapping) -> Result<(), AclError> {
    let io = |source| AclError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_yaml_ng::to_string(doc).map_err(|e| AclError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("yml.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn accounts(doc: &mut Mapping) -> &mut Vec<Value> {
    let entry = doc
        .entry(Value::from("accounts"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !entry.is_sequence() {
        *entry = Value::Sequence(Vec::new());
    }
    match entry {
        Value::Sequence(seq) => seq,
        _ => unreachable!("just made a sequence"),
    }
}

fn key_of(account: &Value) -> Option<&str> {
    account.get("accessKey").and_then(Value::as_str)
}

impl AclFiles {
    /// The file whose accounts include `access_key`, if any.
    fn file_of(&self, access_key: &str) -> Result<Option<PathBuf>, AclError> {
        for (path, _) in self.list() {
            let mut doc = read(&path)?;
            if accounts(&mut doc)
                .iter()
                .any(|a| key_of(a) == Some(access_key))
            {
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Creates the account or changes the fields `change` sets.
    pub fn update_account(&self, change: &AccountChange) -> Result<(), AclError> {
        if change.access_key.len() <= KEY_MIN_LENGTH
            || change
                .secret_key
                .as_ref()
                .is_some_and(|s| s.len() <= KEY_MIN_LENGTH)
        {
            return Err(AclError::ShortKey(change.access_key.clone()));
        }
        let path = self
            .file_of(&change.access_key)?
            .unwrap_or_else(|| self.main_file());
        let mut doc = read(&path)?;
        let list = accounts(&mut doc);
        let index = match list
            .iter()
            .position(|a| key_of(a) == Some(&change.access_key))
        {
            Some(i) => i,
            None => {
                if change.secret_key.is_none() {
                    return Err(AclError::ShortKey(change.access_key.clone()));
                }
                let mut fresh = Mapping::new();
                fresh.insert("accessKey".into(), change.access_key.clone().into());
                list.push(Value::Mapping(fresh));
                list.len() - 1
            }
        };
        let Value::Mapping(account) = &mut list[index] else {
            return Err(AclError::Parse {
                path,
                reason: format!("account {} is not a mapping", change.access_key),
            });
        };
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                account.insert(k.into(), v);
            }
        };
        let seq = |v: &Vec<String>| Value::Sequence(v.iter().cloned().map(Value::from).collect());
        set("secretKey", change.secret_key.clone().map(Value::from));
        set(
            "whiteRemoteAddress",
            change.white_remote_address.clone().map(Value::from),
        );
        set("admin", change.admin.map(Value::from));
        set(
            "defaultTopicPerm",
            change.default_topic_perm.clone().map(Value::from),
        );
        set(
            "defaultGroupPerm",
            change.default_group_perm.clone().map(Value::from),
        );
        set("topicPerms", change.topic_perms.as_ref().map(seq));
        set("groupPerms", change.group_perms.as_ref().map(seq));
        write(&path, &doc)?;
        // What was written must load (a bad permission entry is refused, as upstream).
        self.load().map(|_| ())
    }

    /// Removes the account; an unknown key is an error.
    pub fn delete_account(&self, access_key: &str) -> Result<(), AclError> {
        let Some(path) = self.file_of(access_key)? else {
            return Err(AclError::UnknownAccount(access_key.to_string()));
        };
        let mut doc = read(&path)?;
        accounts(&mut doc).retain(|a| key_of(a) != Some(access_key));
        write(&path, &doc)
    }

    /// Replaces the global white list of `file` (default `plain_acl.yml`; another file must be
    /// one of the ACL files).
    pub fn update_global_white(
        &self,
        addresses: &[String],
        file: Option<&Path>,
    ) -> Result<(), AclError> {
        for a in addresses {
            crate::address::AddressPattern::parse(a)?;
        }
        let path = match file {
            Some(f) if self.list().iter().any(|(p, _)| p == f) => f.to_path_buf(),
            Some(f) => return Err(AclError::NotAnAclFile(f.to_path_buf())),
            None => self.main_file(),
        };
        let mut doc = read(&path)?;
        doc.insert(
            "globalWhiteRemoteAddresses".into(),
            Value::Sequence(addresses.iter().cloned().map(Value::from).collect()),
        );
        write(&path, &doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_created_changed_and_deleted_in_their_files() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("conf/acl")).unwrap();
        std::fs::write(
            home.path().join("conf/plain_acl.yml"),
            "globalWhiteRemoteAddresses: []\naccounts:\n  - accessKey: firstKey1\n    secretKey: firstSecret\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join("conf/acl/team.yml"),
            "accounts:\n  - accessKey: teamKey01\n    secretKey: teamSecret\n    defaultTopicPerm: SUB\n",
        )
        .unwrap();
        let files = AclFiles::new(home.path());
        files
            .update_account(&AccountChange {
                access_key: "newKey001".into(),
                secret_key: Some("newSecret".into()),
                topic_perms: Some(vec!["T1=PUB".into()]),
                ..Default::default()
            })
            .unwrap();
        files
            .update_account(&AccountChange {
                access_key: "teamKey01".into(),
                admin: Some(true),
                ..Default::default()
            })
            .unwrap();
        let t = files.load().unwrap();
        assert_eq!(t.accounts["newKey001"].resources["T1"], crate::perm::PUB);
        assert!(t.accounts["teamKey01"].admin);
        assert_eq!(t.accounts["teamKey01"].default_topic_perm, crate::perm::SUB);
        let team = std::fs::read_to_string(home.path().join("conf/acl/team.yml")).unwrap();
        assert!(
            team.contains("admin: true"),
            "changed in its own file: {team}"
        );

        files.delete_account("firstKey1").unwrap();
        assert!(!files.load().unwrap().accounts.contains_key("firstKey1"));
        assert!(matches!(
            files.delete_account("firstKey1"),
            Err(AclError::UnknownAccount(_))
        ));
        assert!(matches!(
            files.update_account(&AccountChange {
                access_key: "short".into(),
                secret_key: Some("longEnough".into()),
                ..Default::default()
            }),
            Err(AclError::ShortKey(_))
        ));

        files
            .update_global_white(&["10.0.0.*".into()], None)
            .unwrap();
        assert_eq!(files.load().unwrap().global_white.len(), 1);
        assert!(files
            .update_global_white(&["10.0.0.*".into()], Some(Path::new("/etc/passwd")))
            .is_err());
        assert!(files
            .update_global_white(&["1.2.3.999".into()], None)
            .is_err());
    }
}
