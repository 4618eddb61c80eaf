//! SyncStateSet changes, elections, reads of the replica tables and CLEAN_BROKER_DATA.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use remoting::controller_headers::{
    AlterSyncStateSetRequestHeader, AlterSyncStateSetResponseHeader, BrokerReplicasInfo,
    CleanControllerBrokerDataRequestHeader, ElectMasterRequestHeader, ElectMasterResponseHeader,
    GetReplicaInfoRequestHeader, GetReplicaInfoResponseHeader, ReplicaIdentity, ReplicasInfoBody,
    SyncStateSet,
};
use remoting::headers::CommandHeader;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{json, refused, success_with_header, HandlerFuture};
use crate::replicas::{ElectRequest, MasterInfo};
use crate::state::ControllerState;

pub(super) fn alter_sync_state_set(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let h = AlterSyncStateSetRequestHeader::from_command(&request)?;
        let body: SyncStateSet = serde_json::from_slice(&request.body)
            .map_err(|e| RemotingError::InvalidBody(format!("SyncStateSet: {e}")))?;
        let result = state
            .decide_and_commit(|r| {
                r.alter_sync_state_set(
                    &h.broker_name,
                    h.master_broker_id,
                    h.master_epoch,
                    &body.sync_state_set,
                    body.sync_state_set_epoch,
                    &|id| state.alive(&h.broker_name, id),
                )
            })
            .await;
        Ok(match result {
            Ok(epoch) => success_with_header(
                &request,
                &AlterSyncStateSetResponseHeader {
                    new_sync_state_set_epoch: epoch,
                },
            ),
            Err(refusal) => refused(&state, &request, refusal),
        })
    })
}

fn elect_header(info: &MasterInfo) -> ElectMasterResponseHeader {
    ElectMasterResponseHeader {
        master_broker_id: info.master_broker_id,
        master_address: info.master_address.clone(),
        master_epoch: Some(info.master_epoch),
        sync_state_set_epoch: Some(info.sync_state_set_epoch),
    }
}

pub(super) fn elect_master(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(async move {
        let h = ElectMasterRequestHeader::from_command(&request)?;
        let kind = match h.broker_id.filter(|id| *id >= 0) {
            None => ElectRequest::ByController,
            Some(id) if h.designate_elect => ElectRequest::Designated(id),
            Some(id) => ElectRequest::ByBroker(id),
        };
        Ok(match state.elect(&h.broker_name, kind).await {
            Ok(info) => success_with_header(&request, &elect_header(&info))
                .with_body(json(&state.elect_body(&h.broker_name, &info))?),
            Err(refusal) if refusal.code == ResponseCode::CONTROLLER_MASTER_STILL_EXIST => {
                // As upstream: the answer still names the (unchanged) master.
                let info = state
                    .replicas
                    .read()
                    .replica_info(&h.broker_name)
                    .unwrap_or_default();
                let mut response =
                    RemotingCommand::response_to(&request, refusal.code, Some(refusal.remark));
                elect_header(&info).write_to(&mut response);
                response.with_body(json(&state.elect_body(&h.broker_name, &info))?)
            }
            Err(refusal) => refused(&state, &request, refusal),
        })
    })
}

pub(super) fn replica_info(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(async move {
        let h = GetReplicaInfoRequestHeader::from_command(&request)?;
        let info = state.replicas.read().replica_info(&h.broker_name);
        Ok(match info {
            Ok(info) => {
                let header = GetReplicaInfoResponseHeader {
                    master_broker_id: info.master_broker_id,
                    master_address: info.master_address.clone(),
                    master_epoch: Some(info.master_epoch),
                };
                let body = SyncStateSet {
                    sync_state_set: info.sync_state_set,
                    sync_state_set_epoch: info.sync_state_set_epoch,
                };
                success_with_header(&request, &header).with_body(json(&body)?)
            }
            Err(refusal) => refused(&state, &request, refusal),
        })
    })
}

/// The body is a JSON list of brokerNames; unknown names are left out of the answer.
pub(super) fn sync_state_data(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let names: Vec<String> = serde_json::from_slice(&request.body)
            .map_err(|e| RemotingError::InvalidBody(format!("list of brokerNames: {e}")))?;
        let mut table = BTreeMap::new();
        {
            let replicas = state.replicas.read();
            let liveness = state.liveness.lock();
            let now = Instant::now();
            for name in names {
                let Some(g) = replicas.group(&name) else {
                    continue;
                };
                let mut body = ReplicasInfoBody {
                    master_broker_id: g.master_broker_id,
                    master_address: g
                        .master_broker_id
                        .and_then(|m| g.address_of(m))
                        .map(str::to_string),
                    master_epoch: g.master_epoch,
                    sync_state_set_epoch: g.sync_state_set_epoch,
                    ..ReplicasInfoBody::default()
                };
                for (id, r) in &g.replicas {
                    let identity = ReplicaIdentity {
                        broker_name: name.clone(),
                        broker_id: *id,
                        broker_address: r.address.clone(),
                        alive: liveness.is_alive(&name, *id, now),
                    };
                    if g.sync_state_set.contains(id) {
                        body.in_sync_replicas.push(identity);
                    } else {
                        body.not_in_sync_replicas.push(identity);
                    }
                }
                table.insert(name, body);
            }
        }
        let body = BrokerReplicasInfo {
            replicas_info_table: table,
        };
        Ok(
            RemotingCommand::response_to(&request, ResponseCode::SUCCESS, None)
                .with_body(json(&body)?),
        )
    })
}

pub(super) fn clean_broker_data(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let h = CleanControllerBrokerDataRequestHeader::from_command(&request)?;
        let mut ids = BTreeSet::new();
        for raw in h
            .broker_controller_ids_to_clean
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let id = raw
                .parse::<i64>()
                .map_err(|_| RemotingError::InvalidField {
                    field: "brokerControllerIdsToClean",
                    value: raw.to_string(),
                })?;
            ids.insert(id);
        }
        let result = state
            .decide_and_commit(|r| {
                r.clean_broker_data(&h.broker_name, &ids, h.is_clean_living_broker, &|id| {
                    state.alive(&h.broker_name, id)
                })
            })
            .await;
        Ok(match result {
            Ok(()) => RemotingCommand::response_to(&request, ResponseCode::SUCCESS, None),
            Err(refusal) => refused(&state, &request, refusal),
        })
    })
}
