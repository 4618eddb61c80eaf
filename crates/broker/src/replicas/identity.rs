//! The replica id the controllers gave this broker, kept across restarts as upstream keeps it
//! (`BrokerMetadata` / `TempBrokerMetadata`): `<storePathRootDir>/brokerIdentity` holds
//! `clusterName#brokerName#brokerId` once the id is granted; `brokerIdentity-temp` holds
//! `clusterName#brokerName#brokerId#registerCheckCode` while the id is being applied for, so
//! a broker that crashed between GET_NEXT_BROKER_ID and the answer to APPLY_BROKER_ID applies
//! again with the same check code and gets the same id.

use std::path::{Path, PathBuf};

use super::ReplicasError;

/// A granted id (`temp = false`) or one being applied for (`check_code` set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) cluster_name: String,
    pub(crate) broker_name: String,
    pub(crate) broker_id: i64,
    pub(crate) check_code: Option<String>,
}

/// The two files of a store root.
pub(crate) struct IdentityFiles {
    granted: PathBuf,
    temp: PathBuf,
}

fn io(path: &Path, e: durable::FileError) -> ReplicasError {
    ReplicasError::Local(format!("{}: {e}", path.display()))
}

fn decode(path: &Path, text: &str, temp: bool) -> Result<Identity, ReplicasError> {
    let parts: Vec<&str> = text.trim().split('#').collect();
    let ok = if temp {
        parts.len() >= 4
    } else {
        parts.len() == 3
    };
    let id = parts.get(2).and_then(|s| s.parse::<i64>().ok());
    match (ok, id) {
        (true, Some(broker_id)) if broker_id > 0 => Ok(Identity {
            cluster_name: parts[0].to_string(),
            broker_name: parts[1].to_string(),
            broker_id,
            // The check code is `address;timestamp` and has no `#`, but keep any tail.
            check_code: temp.then(|| parts[3..].join("#")),
        }),
        _ => Err(ReplicasError::Local(format!(
            "{} is damaged: `{}`",
            path.display(),
            text.trim()
        ))),
    }
}

impl IdentityFiles {
    pub(crate) fn new(store_root: &Path) -> IdentityFiles {
        IdentityFiles {
            granted: store_root.join("brokerIdentity"),
            temp: store_root.join("brokerIdentity-temp"),
        }
    }

    fn read(&self, path: &Path, temp: bool) -> Result<Option<Identity>, ReplicasError> {
        match durable::read_optional(path).map_err(|e| io(path, e))? {
            None => Ok(None),
            Some(bytes) => decode(path, &String::from_utf8_lossy(&bytes), temp).map(Some),
        }
    }

    /// The granted id, if any.
    pub(crate) fn granted(&self) -> Result<Option<Identity>, ReplicasError> {
        self.read(&self.granted, false)
    }

    /// The id being applied for, if any.
    pub(crate) fn pending(&self) -> Result<Option<Identity>, ReplicasError> {
        self.read(&self.temp, true)
    }

    /// Records the id about to be applied for.
    pub(crate) fn write_pending(&self, id: &Identity) -> Result<(), ReplicasError> {
        let text = format!(
            "{}#{}#{}#{}",
            id.cluster_name,
            id.broker_name,
            id.broker_id,
            id.check_code.as_deref().unwrap_or_default()
        );
        durable::write_atomic(&self.temp, text.as_bytes()).map_err(|e| io(&self.temp, e))
    }

    /// The application failed: forget it.
    pub(crate) fn clear_pending(&self) -> Result<(), ReplicasError> {
        match std::fs::remove_file(&self.temp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ReplicasError::Local(format!(
                "{}: {e}",
                self.temp.display()
            ))),
        }
    }

    /// The id was granted: write it and drop the pending file.
    pub(crate) fn write_granted(&self, id: &Identity) -> Result<(), ReplicasError> {
        let text = format!("{}#{}#{}", id.cluster_name, id.broker_name, id.broker_id);
        durable::write_atomic(&self.granted, text.as_bytes()).map_err(|e| io(&self.granted, e))?;
        self.clear_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_in_upstream_format() {
        let dir = tempfile::tempdir().unwrap();
        let f = IdentityFiles::new(dir.path());
        assert_eq!(f.granted().unwrap(), None);
        let id = Identity {
            cluster_name: "c".into(),
            broker_name: "b1".into(),
            broker_id: 2,
            check_code: Some("127.0.0.1:10911;1700000000000".into()),
        };
        f.write_pending(&id).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("brokerIdentity-temp")).unwrap(),
            "c#b1#2#127.0.0.1:10911;1700000000000"
        );
        assert_eq!(f.pending().unwrap(), Some(id.clone()));
        f.write_granted(&id).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("brokerIdentity")).unwrap(),
            "c#b1#2"
        );
        assert_eq!(f.pending().unwrap(), None);
        assert_eq!(
            f.granted().unwrap(),
            Some(Identity {
                check_code: None,
                ..id
            })
        );
        std::fs::write(dir.path().join("brokerIdentity"), "c#b1#x").unwrap();
        assert!(f.granted().is_err());
    }
}
