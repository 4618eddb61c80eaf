//! Broker registration with the controller (5.x flow: GET_NEXT_BROKER_ID, APPLY_BROKER_ID,
//! REGISTER_BROKER) and BROKER_HEARTBEAT (liveness, served by every controller).

use std::sync::Arc;
use std::time::{Duration, Instant};

use remoting::controller_headers::{
    ApplyBrokerIdRequestHeader, ApplyBrokerIdResponseHeader, GetNextBrokerIdRequestHeader,
    GetNextBrokerIdResponseHeader, RegisterBrokerToControllerRequestHeader,
    RegisterBrokerToControllerResponseHeader, SyncStateSet,
};
use remoting::headers::{BrokerHeartbeatRequestHeader, CommandHeader};
use remoting::{RemotingCommand, ResponseCode};

use super::{json, refused, success_with_header, HandlerFuture};
use crate::liveness::LiveInfo;
use crate::state::ControllerState;

pub(super) fn next_broker_id(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let h = GetNextBrokerIdRequestHeader::from_command(&request)?;
        let next = state.replicas.read().next_broker_id(&h.broker_name);
        Ok(success_with_header(
            &request,
            &GetNextBrokerIdResponseHeader {
                cluster_name: Some(h.cluster_name),
                broker_name: Some(h.broker_name),
                next_broker_id: Some(next),
            },
        ))
    })
}

pub(super) fn apply_broker_id(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let h = ApplyBrokerIdRequestHeader::from_command(&request)?;
        let result = state
            .decide_and_commit(|r| {
                r.apply_broker_id(
                    &h.cluster_name,
                    &h.broker_name,
                    h.applied_broker_id,
                    &h.register_check_code,
                )
            })
            .await;
        Ok(match result {
            Ok(()) => success_with_header(
                &request,
                &ApplyBrokerIdResponseHeader {
                    cluster_name: Some(h.cluster_name),
                    broker_name: Some(h.broker_name),
                },
            ),
            Err(refusal) => refused(&state, &request, refusal),
        })
    })
}

pub(super) fn register(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(async move {
        let h = RegisterBrokerToControllerRequestHeader::from_command(&request)?;
        let result = state
            .decide_and_commit(|r| {
                r.register_broker(&h.broker_name, h.broker_id, &h.broker_address, &|id| {
                    state.alive(&h.broker_name, id)
                })
            })
            .await;
        Ok(match result {
            Ok(info) => {
                let header = RegisterBrokerToControllerResponseHeader {
                    cluster_name: Some(h.cluster_name),
                    broker_name: Some(h.broker_name),
                    master_broker_id: info.master_broker_id,
                    master_address: info.master_address.clone(),
                    master_epoch: info.master_broker_id.map(|_| info.master_epoch),
                    sync_state_set_epoch: info.master_broker_id.map(|_| info.sync_state_set_epoch),
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

pub(super) fn heartbeat(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(async move {
        let h = BrokerHeartbeatRequestHeader::from_command(&request)?;
        let Some(id) = h.broker_id else {
            return Ok(RemotingCommand::response_to(
                &request,
                ResponseCode::CONTROLLER_INVALID_REQUEST,
                Some("a heartbeat to the controller must carry brokerId".to_string()),
            ));
        };
        let timeout = h
            .heartbeat_timeout_millis
            .filter(|ms| *ms > 0)
            .map_or(state.config.read().controller_heart_beat_timeout, |ms| {
                Duration::from_millis(ms.unsigned_abs())
            });
        state.liveness.lock().heartbeat(
            &h.broker_name,
            id,
            LiveInfo {
                cluster_name: h.cluster_name,
                address: h.broker_addr,
                last_seen: Instant::now(),
                timeout,
                epoch: h.epoch.unwrap_or_default(),
                max_offset: h.max_offset.unwrap_or_default(),
                election_priority: h.election_priority.unwrap_or_default(),
            },
        );
        Ok(RemotingCommand::response_to(
            &request,
            ResponseCode::SUCCESS,
            None,
        ))
    })
}
