//! Controller-mode requests a broker serves: NOTIFY_BROKER_ROLE_CHANGED (1008, from the
//! controller leader after an election; handed to the replicas task, which applies it) and
//! EXCHANGE_BROKER_HA_INFO (906, from a slave that was told this broker is its master: the
//! answer names this broker's HA address) and GET_BROKER_EPOCH_CACHE (1007, from
//! `apogee admin getBrokerEpoch`: the epoch entries and the CommitLog end) and
//! GET_BROKER_HA_STATUS (907, from `apogee admin haStatus`: replication as this broker sees
//! it, in controller mode or not).

use std::sync::Arc;

use remoting::controller_headers::{
    ElectMasterResponseBody, EpochEntryBody, EpochEntryCache, ExchangeHaInfoResponseHeader,
    HaClientRuntimeInfo, HaConnectionRuntimeInfo, HaRuntimeInfo,
    NotifyBrokerRoleChangedRequestHeader,
};
use remoting::headers::CommandHeader;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, Reply};
use crate::error::HandlerError;
use crate::ha::RoleNotice;
use crate::services::BrokerServices;

/// NOTIFY_BROKER_ROLE_CHANGED: the newest notice (by master epoch) waits for the replicas
/// task; the controller sends it oneway, so usually nothing is answered.
pub(super) async fn role_changed(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    if !state.config().enable_controller_mode {
        return Err(HandlerError::System(
            "this broker is not in controller mode (enableControllerMode=false)".into(),
        ));
    }
    let h: NotifyBrokerRoleChangedRequestHeader = header(&req)?;
    let body: ElectMasterResponseBody = if req.body.is_empty() {
        ElectMasterResponseBody::default()
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| HandlerError::System(format!("bad role-change body: {e}")))?
    };
    let notice = RoleNotice {
        master_broker_id: h.master_broker_id,
        master_address: h.master_address.filter(|a| !a.is_empty()),
        master_epoch: h.master_epoch.unwrap_or_default(),
        sync_state_set_epoch: h.sync_state_set_epoch.unwrap_or_default(),
        sync_state_set: body.sync_state_set,
    };
    tracing::info!(?notice, "controller announced a role change");
    {
        let mut slot = state.ha.role_notice.lock();
        if slot
            .as_ref()
            .is_none_or(|n| n.master_epoch <= notice.master_epoch)
        {
            *slot = Some(notice);
        }
    }
    state.ha.replicas_wake.notify_one();
    Ok((!req.is_oneway()).then(|| success(&req)))
}

/// EXCHANGE_BROKER_HA_INFO: this broker's HA address, broker address and CommitLog end.
pub(super) async fn exchange_ha_info(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let mut resp = success(&req);
    ExchangeHaInfoResponseHeader {
        master_ha_address: Some(crate::register::ha_server_addr(&state)),
        master_flush_offset: Some(state.store.commit_log_max_offset()),
        master_address: Some(state.broker_addr()),
    }
    .write_to(&mut resp);
    Ok(Some(resp))
}

/// GET_BROKER_EPOCH_CACHE (upstream `AdminBrokerProcessor.getBrokerEpochCache`): each epoch
/// ends where the next starts, the newest at `i64::MAX` (upstream's `Long.MAX_VALUE`; the
/// tool shows the CommitLog end instead). Refused outside controller mode, as upstream.
pub(super) async fn epoch_cache(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let config = state.config();
    if !config.enable_controller_mode {
        return Err(HandlerError::System(
            "this request only for controllerMode (enableControllerMode=false)".into(),
        ));
    }
    let entries = state
        .ha
        .epochs
        .lock()
        .as_ref()
        .map(|f| f.entries().to_vec())
        .unwrap_or_default();
    let epoch_list = entries
        .iter()
        .enumerate()
        .map(|(i, e)| EpochEntryBody {
            epoch: e.epoch,
            start_offset: e.start_offset,
            end_offset: entries.get(i + 1).map_or(i64::MAX, |n| n.start_offset),
        })
        .collect();
    let body = EpochEntryCache {
        cluster_name: config.broker_cluster_name.clone(),
        broker_name: config.broker_name.clone(),
        broker_id: config.broker_id,
        epoch_list,
        max_offset: state.store.commit_log_max_offset(),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| HandlerError::System(format!("cannot encode the epoch cache: {e}")))?;
    Ok(Some(success(&req).with_body(json)))
}

/// GET_BROKER_HA_STATUS (upstream `DefaultHAService.getRuntimeInfo`): a master lists each
/// replication connection with the offset its slave acknowledged, in sync when it lags less
/// than `haMaxGapNotInSync`; a slave names its master's HA address and its CommitLog end.
/// Transfer rates, read/write times, `transferFromWhere` and the master's flush offset are not
/// tracked here: they are 0.
pub(super) async fn ha_status(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let config = state.config();
    let end = state.store.commit_log_max_offset();
    let info = if config.is_slave() {
        HaRuntimeInfo {
            ha_client_runtime_info: HaClientRuntimeInfo {
                master_addr: state.ha.master_ha_addr.borrow().clone(),
                max_offset: end,
                ..HaClientRuntimeInfo::default()
            },
            ..HaRuntimeInfo::default()
        }
    } else {
        let gap = i64::try_from(config.ha_max_gap_not_in_sync).unwrap_or(i64::MAX);
        let connections: Vec<HaConnectionRuntimeInfo> = state
            .ha
            .acks
            .slaves()
            .into_iter()
            .map(|(addr, offset)| HaConnectionRuntimeInfo {
                addr,
                slave_ack_offset: offset,
                diff: end - offset,
                in_sync: end - offset < gap,
                ..HaConnectionRuntimeInfo::default()
            })
            .collect();
        HaRuntimeInfo {
            master: true,
            master_commit_log_max_offset: end,
            in_sync_slave_nums: connections.iter().filter(|c| c.in_sync).count() as i32,
            ha_connection_info: connections,
            ..HaRuntimeInfo::default()
        }
    };
    let body = serde_json::to_vec(&info)
        .map_err(|e| HandlerError::System(format!("cannot encode HARuntimeInfo: {e}")))?;
    Ok(Some(success(&req).with_body(body)))
}
