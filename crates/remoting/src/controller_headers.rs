//! Headers and bodies of the controller requests (upstream
//! `remoting/protocol/header/controller/*` and `NotifyBrokerRoleChangedRequestHeader`, request
//! codes 1001-1013). Same field rules as [`crate::headers`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::headers::command_header;

command_header! {
    /// CONTROLLER_ALTER_SYNC_STATE_SET (1001); the body is a [`SyncStateSet`].
    pub struct AlterSyncStateSetRequestHeader {
        pub broker_name: String => "brokerName",
        pub master_broker_id: i64 => "masterBrokerId",
        pub master_epoch: i32 => "masterEpoch",
        pub invoke_time: Option<i64> => "invokeTime",
    }

    /// Response to CONTROLLER_ALTER_SYNC_STATE_SET.
    pub struct AlterSyncStateSetResponseHeader {
        pub new_sync_state_set_epoch: i32 => "newSyncStateSetEpoch",
    }

    /// CONTROLLER_ELECT_MASTER (1002). `brokerId` absent or -1: asked by the controller;
    /// `designateElect`: only `brokerId` may win (`electMaster -b group -i id`).
    pub struct ElectMasterRequestHeader {
        pub cluster_name: Option<String> => "clusterName",
        pub broker_name: String => "brokerName",
        pub broker_id: Option<i64> => "brokerId",
        pub designate_elect: bool => "designateElect",
        pub invoke_time: Option<i64> => "invokeTime",
    }

    /// Response to CONTROLLER_ELECT_MASTER; the body is an [`ElectMasterResponseBody`].
    pub struct ElectMasterResponseHeader {
        pub master_broker_id: Option<i64> => "masterBrokerId",
        pub master_address: Option<String> => "masterAddress",
        pub master_epoch: Option<i32> => "masterEpoch",
        pub sync_state_set_epoch: Option<i32> => "syncStateSetEpoch",
    }

    /// CONTROLLER_REGISTER_BROKER (1003), 5.x: a broker with an applied id reports its address.
    pub struct RegisterBrokerToControllerRequestHeader {
        pub cluster_name: String => "clusterName",
        pub broker_name: String => "brokerName",
        pub broker_id: i64 => "brokerId",
        pub broker_address: String => "brokerAddress",
        pub invoke_time: Option<i64> => "invokeTime",
    }

    /// Response to CONTROLLER_REGISTER_BROKER; the body is a [`SyncStateSet`].
    pub struct RegisterBrokerToControllerResponseHeader {
        pub cluster_name: Option<String> => "clusterName",
        pub broker_name: Option<String> => "brokerName",
        pub master_broker_id: Option<i64> => "masterBrokerId",
        pub master_address: Option<String> => "masterAddress",
        pub master_epoch: Option<i32> => "masterEpoch",
        pub sync_state_set_epoch: Option<i32> => "syncStateSetEpoch",
    }

    /// CONTROLLER_GET_REPLICA_INFO (1004).
    pub struct GetReplicaInfoRequestHeader {
        pub broker_name: String => "brokerName",
    }

    /// Response to CONTROLLER_GET_REPLICA_INFO; the body is a [`SyncStateSet`].
    pub struct GetReplicaInfoResponseHeader {
        pub master_broker_id: Option<i64> => "masterBrokerId",
        pub master_address: Option<String> => "masterAddress",
        pub master_epoch: Option<i32> => "masterEpoch",
    }

    /// Response to CONTROLLER_GET_METADATA_INFO (1005); also carried by a
    /// CONTROLLER_NOT_LEADER answer so the caller can go to the leader.
    pub struct GetMetaDataResponseHeader {
        pub group: Option<String> => "group",
        pub controller_leader_id: Option<String> => "controllerLeaderId",
        pub controller_leader_address: Option<String> => "controllerLeaderAddress",
        pub is_leader: bool => "isLeader",
        pub peers: Option<String> => "peers",
    }

    /// CLEAN_BROKER_DATA (1011). `brokerControllerIdsToClean`: `;`-separated ids, absent for
    /// the whole group.
    pub struct CleanControllerBrokerDataRequestHeader {
        pub cluster_name: Option<String> => "clusterName",
        pub broker_name: String => "brokerName",
        pub broker_controller_ids_to_clean: Option<String> => "brokerControllerIdsToClean",
        pub is_clean_living_broker: bool => "isCleanLivingBroker",
        pub invoke_time: Option<i64> => "invokeTime",
    }

    /// CONTROLLER_GET_NEXT_BROKER_ID (1012).
    pub struct GetNextBrokerIdRequestHeader {
        pub cluster_name: String => "clusterName",
        pub broker_name: String => "brokerName",
    }

    /// Response to CONTROLLER_GET_NEXT_BROKER_ID.
    pub struct GetNextBrokerIdResponseHeader {
        pub cluster_name: Option<String> => "clusterName",
        pub broker_name: Option<String> => "brokerName",
        pub next_broker_id: Option<i64> => "nextBrokerId",
    }

    /// CONTROLLER_APPLY_BROKER_ID (1013). `registerCheckCode` is `address;timestamp`.
    pub struct ApplyBrokerIdRequestHeader {
        pub cluster_name: String => "clusterName",
        pub broker_name: String => "brokerName",
        pub applied_broker_id: i64 => "appliedBrokerId",
        pub register_check_code: String => "registerCheckCode",
    }

    /// Response to CONTROLLER_APPLY_BROKER_ID.
    pub struct ApplyBrokerIdResponseHeader {
        pub cluster_name: Option<String> => "clusterName",
        pub broker_name: Option<String> => "brokerName",
    }

    /// EXCHANGE_BROKER_HA_INFO (906), slave -> master in controller mode: the slave asks
    /// the master it was given for its HA address (all fields empty in the request).
    pub struct ExchangeHaInfoRequestHeader {
        pub master_ha_address: Option<String> => "masterHaAddress",
        pub master_flush_offset: Option<i64> => "masterFlushOffset",
        pub master_address: Option<String> => "masterAddress",
    }

    /// Response to EXCHANGE_BROKER_HA_INFO.
    pub struct ExchangeHaInfoResponseHeader {
        pub master_ha_address: Option<String> => "masterHaAddress",
        pub master_flush_offset: Option<i64> => "masterFlushOffset",
        pub master_address: Option<String> => "masterAddress",
    }

    /// NOTIFY_BROKER_ROLE_CHANGED (1008), controller -> broker, after an election.
    pub struct NotifyBrokerRoleChangedRequestHeader {
        pub master_address: Option<String> => "masterAddress",
        pub master_epoch: Option<i32> => "masterEpoch",
        pub sync_state_set_epoch: Option<i32> => "syncStateSetEpoch",
        pub master_broker_id: Option<i64> => "masterBrokerId",
    }
}

/// Body `SyncStateSet` (JSON): the in-sync replica ids and the set's epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStateSet {
    #[serde(default)]
    pub sync_state_set: BTreeSet<i64>,
    #[serde(default)]
    pub sync_state_set_epoch: i32,
}

/// Body `BrokerMemberGroup` (JSON): a group's replica addresses by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerMemberGroup {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<i64, String>,
}

/// Body of the CONTROLLER_ELECT_MASTER response (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElectMasterResponseBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_member_group: Option<BrokerMemberGroup>,
    #[serde(default)]
    pub sync_state_set: BTreeSet<i64>,
}

/// One replica in [`ReplicasInfoBody`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaIdentity {
    pub broker_name: String,
    pub broker_id: i64,
    pub broker_address: String,
    pub alive: bool,
}

/// One group in [`BrokerReplicasInfo`] (upstream `BrokerReplicasInfo.ReplicasInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasInfoBody {
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub in_sync_replicas: Vec<ReplicaIdentity>,
    pub not_in_sync_replicas: Vec<ReplicaIdentity>,
}

/// Body of the CONTROLLER_GET_SYNC_STATE_DATA response (JSON); the request body is a JSON
/// list of brokerNames.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerReplicasInfo {
    pub replicas_info_table: BTreeMap<String, ReplicasInfoBody>,
}

/// One entry of [`EpochEntryCache`] (upstream `EpochEntry`): a master epoch and the CommitLog
/// range it wrote, `endOffset` being the next epoch's start (`i64::MAX` for the newest one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochEntryBody {
    pub epoch: i32,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// Body of the GET_BROKER_EPOCH_CACHE (1007) response (JSON, upstream `EpochEntryCache`): a
/// controller-mode broker's epoch entries and its CommitLog end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochEntryCache {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub broker_name: String,
    #[serde(default)]
    pub broker_id: i64,
    #[serde(default)]
    pub epoch_list: Vec<EpochEntryBody>,
    #[serde(default)]
    pub max_offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::CommandHeader;

    #[test]
    fn elect_master_header_round_trips_with_upstream_keys() {
        let h = ElectMasterRequestHeader {
            cluster_name: Some("c1".into()),
            broker_name: "b1".into(),
            broker_id: Some(2),
            designate_elect: true,
            invoke_time: None,
        };
        let fields = h.to_ext_fields();
        assert_eq!(
            fields.get("designateElect").map(String::as_str),
            Some("true")
        );
        assert_eq!(fields.get("brokerId").map(String::as_str), Some("2"));
        assert_eq!(
            ElectMasterRequestHeader::from_ext_fields(&fields).ok(),
            Some(h)
        );
    }

    #[test]
    fn sync_state_set_json_uses_upstream_names() {
        let body = SyncStateSet {
            sync_state_set: BTreeSet::from([1, 2]),
            sync_state_set_epoch: 3,
        };
        let json = serde_json::to_string(&body).unwrap_or_default();
        assert_eq!(json, r#"{"syncStateSet":[1,2],"syncStateSetEpoch":3}"#);
    }

    #[test]
    fn epoch_entry_cache_json_uses_upstream_names() {
        let body = EpochEntryCache {
            cluster_name: "C".into(),
            broker_name: "b1".into(),
            broker_id: 0,
            epoch_list: vec![EpochEntryBody {
                epoch: 2,
                start_offset: 0,
                end_offset: i64::MAX,
            }],
            max_offset: 120,
        };
        let json = serde_json::to_string(&body).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"clusterName":"C","brokerName":"b1","brokerId":0,"epochList":[{"epoch":2,"startOffset":0,"endOffset":9223372036854775807}],"maxOffset":120}"#
        );
        assert_eq!(
            serde_json::from_str::<EpochEntryCache>(&json).ok(),
            Some(body)
        );
    }
}

/// Body of the GET_BROKER_HA_STATUS (907) response (JSON, upstream `HARuntimeInfo`): a
/// master's replication connections, or a slave's view of its master.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaRuntimeInfo {
    #[serde(default)]
    pub master: bool,
    #[serde(default)]
    pub master_commit_log_max_offset: i64,
    #[serde(default)]
    pub in_sync_slave_nums: i32,
    #[serde(default)]
    pub ha_connection_info: Vec<HaConnectionRuntimeInfo>,
    #[serde(default)]
    pub ha_client_runtime_info: HaClientRuntimeInfo,
}

/// One replication connection of a master (upstream `HAConnectionRuntimeInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaConnectionRuntimeInfo {
    /// The slave's end of the connection, `ip:port`.
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub slave_ack_offset: i64,
    /// The master's CommitLog end minus `slaveAckOffset`.
    #[serde(default)]
    pub diff: i64,
    #[serde(default)]
    pub in_sync: bool,
    #[serde(default)]
    pub transferred_byte_in_second: i64,
    #[serde(default)]
    pub transfer_from_where: i64,
}

/// A slave's replication client (upstream `HAClientRuntimeInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HaClientRuntimeInfo {
    /// The master's HA address.
    #[serde(default)]
    pub master_addr: Option<String>,
    #[serde(default)]
    pub transferred_byte_in_second: i64,
    /// This slave's CommitLog end.
    #[serde(default)]
    pub max_offset: i64,
    #[serde(default)]
    pub last_read_timestamp: i64,
    #[serde(default)]
    pub last_write_timestamp: i64,
    #[serde(default)]
    pub master_flush_offset: i64,
}
