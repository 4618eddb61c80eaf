//! [`SubscriptionGroupManager`]: consumer group configs (`config/subscriptionGroup.json`),
//! created on demand when `autoCreateSubscriptionGroup` is on, as upstream. Changes are written
//! by the file's [`Persister`], off the caller's thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use remoting::protocol::{from_fastjson, to_fastjson, DataVersion, KeyStyle};
use serde::{Deserialize, Serialize};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::persist::Persister;
use crate::topic::next_version;

/// One consumer group's settings (upstream `SubscriptionGroupConfig`, fields in fastjson's
/// alphabetical order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    pub broker_id: i64,
    pub consume_broadcast_enable: bool,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    /// A FIFO group: 5.x clients of it receive with orderly POP (upstream
    /// `consumeMessageOrderly`).
    pub consume_message_orderly: bool,
    pub group_name: String,
    pub notify_consumer_ids_changed_enable: bool,
    /// Deliveries before a message goes to the DLQ.
    pub retry_max_times: i32,
    pub retry_queue_nums: i32,
    pub which_broker_when_consume_slowly: i64,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        SubscriptionGroupConfig {
            broker_id: 0,
            consume_broadcast_enable: true,
            consume_enable: true,
            consume_from_min_enable: true,
            consume_message_orderly: false,
            group_name: String::new(),
            notify_consumer_ids_changed_enable: true,
            retry_max_times: 16,
            retry_queue_nums: 1,
            which_broker_when_consume_slowly: 1,
        }
    }
}

impl SubscriptionGroupConfig {
    /// Defaults for `group`.
    pub fn new(group: &str) -> Self {
        SubscriptionGroupConfig {
            group_name: group.to_string(),
            ..Default::default()
        }
    }
}

/// `subscriptionGroup.json` and the SUBSCRIPTIONGROUP bodies of the admin requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupWrapper {
    pub data_version: DataVersion,
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
}

/// Groups upstream's broker knows from the start.
const SYSTEM_GROUPS: &[&str] = &[
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PULL",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
    "CID_SYS_RMQ_TRANS",
];

/// The broker's consumer groups.
pub struct SubscriptionGroupManager {
    table: Arc<RwLock<SubscriptionGroupWrapper>>,
    /// The only writer of `config/subscriptionGroup.json`.
    persister: Persister,
}

impl SubscriptionGroupManager {
    /// Loads `config/subscriptionGroup.json` (if any) over the system groups.
    pub fn load(config: &BrokerConfig) -> Result<SubscriptionGroupManager, BrokerError> {
        let path = config
            .store_path_root_dir
            .join("config")
            .join("subscriptionGroup.json");
        let mut wrapper = SubscriptionGroupWrapper::default();
        for g in SYSTEM_GROUPS {
            wrapper
                .subscription_group_table
                .insert(g.to_string(), SubscriptionGroupConfig::new(g));
        }
        if let Some(data) = durable::read_optional(&path)? {
            let stored: SubscriptionGroupWrapper =
                from_fastjson(&data).map_err(|e| BrokerError::Parse {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            wrapper.data_version = stored.data_version;
            wrapper
                .subscription_group_table
                .extend(stored.subscription_group_table);
        }
        let table = Arc::new(RwLock::new(wrapper));
        let persister = {
            let table = table.clone();
            Persister::new(path, move || {
                Ok(to_fastjson(&*table.read(), KeyStyle::Quoted)?)
            })?
        };
        Ok(SubscriptionGroupManager { table, persister })
    }

    /// The group's config; created with defaults when missing and `auto_create` is set.
    pub fn find(
        &self,
        group: &str,
        auto_create: bool,
    ) -> Result<Option<SubscriptionGroupConfig>, BrokerError> {
        if let Some(c) = self.table.read().subscription_group_table.get(group) {
            return Ok(Some(c.clone()));
        }
        if !auto_create {
            return Ok(None);
        }
        let created = SubscriptionGroupConfig::new(group);
        {
            let mut t = self.table.write();
            t.subscription_group_table
                .entry(group.to_string())
                .or_insert_with(|| created.clone());
            next_version(&mut t.data_version);
        }
        tracing::info!(group, "auto-created subscription group");
        self.persist();
        Ok(Some(created))
    }

    /// The group a retry topic belongs to, from the part after `%RETRY%`: the group of that
    /// name, else the longest group name followed by `_` or `+` (a POP retry topic
    /// `%RETRY%<group>_<topic>` / `%RETRY%<group>+<topic>`).
    pub fn retry_owner(&self, rest: &str) -> Option<SubscriptionGroupConfig> {
        let t = self.table.read();
        if let Some(c) = t.subscription_group_table.get(rest) {
            return Some(c.clone());
        }
        t.subscription_group_table
            .iter()
            .filter(|(name, _)| {
                rest.strip_prefix(name.as_str())
                    .is_some_and(|tail| tail.starts_with('_') || tail.starts_with('+'))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, c)| c.clone())
    }

    /// Creates or replaces a group (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP).
    pub fn update(&self, config: SubscriptionGroupConfig) -> Result<(), BrokerError> {
        {
            let mut t = self.table.write();
            t.subscription_group_table
                .insert(config.group_name.clone(), config);
            next_version(&mut t.data_version);
        }
        self.persist();
        Ok(())
    }

    /// Removes a group; returns whether it existed.
    pub fn delete(&self, group: &str) -> Result<bool, BrokerError> {
        let existed = {
            let mut t = self.table.write();
            let existed = t.subscription_group_table.remove(group).is_some();
            if existed {
                next_version(&mut t.data_version);
            }
            existed
        };
        if existed {
            self.persist();
        }
        Ok(existed)
    }

    /// A slave takes its master's groups (GET_ALL_SUBSCRIPTIONGROUP_CONFIG) when they or their
    /// data version differ from ours.
    pub(crate) fn replace_from_master(
        &self,
        master: SubscriptionGroupWrapper,
    ) -> Result<(), BrokerError> {
        {
            let mut t = self.table.write();
            if t.data_version == master.data_version
                && t.subscription_group_table == master.subscription_group_table
            {
                return Ok(());
            }
            *t = master;
        }
        self.persist();
        Ok(())
    }

    /// A copy of every group.
    pub fn snapshot(&self) -> SubscriptionGroupWrapper {
        self.table.read().clone()
    }

    /// Asks for `config/subscriptionGroup.json` to be rewritten with the current groups and
    /// returns at once: the file's writer thread writes it soon after (see
    /// [`Persister::request`]). Not durable yet when it returns: see [`Self::flush`].
    pub fn persist(&self) {
        self.persister.request();
    }

    /// Writes `config/subscriptionGroup.json` with every change made before the call and
    /// resolves once it is durable (the I/O runs on the file's writer thread).
    pub async fn flush(&self) -> Result<(), BrokerError> {
        self.persister.flush().await
    }

    /// [`Self::flush`] blocking the calling thread: not for async runtime threads.
    #[cfg(test)]
    pub fn persist_now(&self) -> Result<(), BrokerError> {
        self.persister.persist_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_topics_name_their_group_plain_or_pop() {
        let dir = tempfile::tempdir().unwrap();
        let c = BrokerConfig {
            store_path_root_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        let m = SubscriptionGroupManager::load(&c).unwrap();
        for g in ["G", "G_A", "GID_x"] {
            m.find(g, true).unwrap();
        }
        let owner = |rest: &str| m.retry_owner(rest).map(|g| g.group_name);
        assert_eq!(owner("G").as_deref(), Some("G"));
        assert_eq!(owner("G_A").as_deref(), Some("G_A"), "an exact name wins");
        assert_eq!(
            owner("G_A_Topic").as_deref(),
            Some("G_A"),
            "the longest group"
        );
        assert_eq!(owner("GID_x+T").as_deref(), Some("GID_x"));
        assert_eq!(owner("H_T"), None);
    }

    #[test]
    fn auto_create_update_reload() {
        let dir = tempfile::tempdir().unwrap();
        let c = BrokerConfig {
            store_path_root_dir: dir.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        let m = SubscriptionGroupManager::load(&c).unwrap();
        assert!(m.find("G", false).unwrap().is_none());
        assert_eq!(m.find("G", true).unwrap().unwrap().retry_max_times, 16);
        let mut g2 = SubscriptionGroupConfig::new("G2");
        g2.retry_max_times = 3;
        m.update(g2).unwrap();
        m.persist_now().unwrap();
        let again = SubscriptionGroupManager::load(&c).unwrap();
        assert!(again.find("G", false).unwrap().is_some());
        assert_eq!(again.find("G2", false).unwrap().unwrap().retry_max_times, 3);
        assert!(again.delete("G2").unwrap());
    }
}
