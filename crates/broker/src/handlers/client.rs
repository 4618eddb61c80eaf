//! Client management: HEART_BEAT (34), UNREGISTER_CLIENT (35), LOCK_BATCH_MQ (41),
//! UNLOCK_BATCH_MQ (42), CHECK_CLIENT_CONFIG (46), and NOTIFY_CONSUMER_IDS_CHANGED (40) sent
//! to a group's clients when its membership changes (join, leave, connection closed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use remoting::broker_headers::{
    HeartbeatData, LockBatchRequestBody, LockBatchResponseBody, UnlockBatchRequestBody,
    UnregisterClientRequestHeader,
};
use remoting::protocol::perm;
use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

use super::{parse_header, reply, success};
use crate::clients::{ClientChannel, ClientLeft, ConsumerRegistration};
use crate::state::BrokerState;
use crate::topic::retry_topic;

pub(crate) async fn handle(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Option<RemotingCommand> {
    match req.code {
        RequestCode::HEART_BEAT => heartbeat(&state, conn, &req),
        RequestCode::UNREGISTER_CLIENT => {
            let h = parse_header!(UnregisterClientRequestHeader, req);
            if let Some(group) = h.producer_group.as_deref().filter(|g| !g.is_empty()) {
                state.producers.unregister(group, conn.id());
            }
            if let Some(group) = h.consumer_group.as_deref().filter(|g| !g.is_empty()) {
                if let Some(rest) = state.consumers.unregister(group, conn.id()) {
                    notify_connections(&state, group, rest);
                }
            }
            Some(success(&req))
        }
        RequestCode::LOCK_BATCH_MQ => {
            let body = match LockBatchRequestBody::decode(&req.body) {
                Ok(b) => b,
                Err(e) => {
                    return reply(
                        &req,
                        ResponseCode::SYSTEM_ERROR,
                        format!("bad lock body: {e}"),
                    )
                }
            };
            let locked =
                state
                    .locks
                    .try_lock_batch(&body.consumer_group, &body.mq_set, &body.client_id);
            let answer = LockBatchResponseBody {
                lock_ok_mq_set: locked,
            };
            match answer.encode() {
                Ok(b) => Some(success(&req).with_body(b)),
                Err(e) => reply(&req, ResponseCode::SYSTEM_ERROR, e.to_string()),
            }
        }
        RequestCode::UNLOCK_BATCH_MQ => {
            let body = match UnlockBatchRequestBody::decode(&req.body) {
                Ok(b) => b,
                Err(e) => {
                    return reply(
                        &req,
                        ResponseCode::SYSTEM_ERROR,
                        format!("bad unlock body: {e}"),
                    )
                }
            };
            state
                .locks
                .unlock_batch(&body.consumer_group, &body.mq_set, &body.client_id);
            Some(success(&req))
        }
        // Only TAG filtering is supported, which needs no check.
        RequestCode::CHECK_CLIENT_CONFIG => Some(success(&req)),
        _ => Some(RemotingCommand::not_supported(&req)),
    }
}

fn heartbeat(
    state: &BrokerState,
    conn: Connection,
    req: &RemotingCommand,
) -> Option<RemotingCommand> {
    let hb = match HeartbeatData::decode(&req.body) {
        Ok(hb) => hb,
        Err(e) => {
            return reply(
                req,
                ResponseCode::SYSTEM_ERROR,
                format!("bad heartbeat body: {e}"),
            )
        }
    };
    let channel = ClientChannel {
        conn,
        client_id: hb.client_id.clone(),
        language: req.language,
        version: req.version,
        last_update: Instant::now(),
    };
    let (auto_group, notify_enabled) = {
        let c = state.config.read();
        (
            c.auto_create_subscription_group,
            c.notify_consumer_ids_changed_enable,
        )
    };
    for data in hb.consumer_data_set {
        let group_config = match state.groups.find(&data.group_name, auto_group) {
            Ok(g) => g,
            Err(e) => return reply(req, ResponseCode::SYSTEM_ERROR, e.to_string()),
        };
        let mut notify = notify_enabled;
        if let Some(g) = &group_config {
            notify &= g.notify_consumer_ids_changed_enable;
            if let Err(e) = state.topics.create_if_missing(
                &retry_topic(&data.group_name),
                g.retry_queue_nums,
                perm::PERM_READ | perm::PERM_WRITE,
                0,
            ) {
                return reply(req, ResponseCode::SYSTEM_ERROR, e.to_string());
            }
        }
        let changed = state.consumers.register(ConsumerRegistration {
            group: data.group_name.clone(),
            channel: channel.clone(),
            consume_type: data.consume_type,
            message_model: data.message_model,
            consume_from_where: data.consume_from_where,
            subscriptions: data.subscription_data_set,
            without_sub: hb.without_sub,
        });
        if changed {
            tracing::info!(group = %data.group_name, client = %hb.client_id, "new consumer");
            if notify {
                notify_consumer_ids_changed(state, &data.group_name);
            }
        }
    }
    for data in hb.producer_data_set {
        state.producers.register(&data.group_name, channel.clone());
    }
    Some(success(req))
}

/// Sends NOTIFY_CONSUMER_IDS_CHANGED to every connection of `group` (in the background).
pub(crate) fn notify_consumer_ids_changed(state: &BrokerState, group: &str) {
    let conns = state
        .consumers
        .group(group)
        .map(|g| g.channels.values().map(|c| c.conn.clone()).collect())
        .unwrap_or_default();
    notify_connections(state, group, conns);
}

fn notify_connections(state: &BrokerState, group: &str, conns: Vec<Connection>) {
    for conn in conns {
        let cmd = RemotingCommand::request(RequestCode::NOTIFY_CONSUMER_IDS_CHANGED)
            .with_ext("consumerGroup", group);
        state.tasks.spawn(async move {
            if let Err(e) = conn.send_oneway(cmd).await {
                tracing::debug!(error = %e, "cannot notify consumer of a group change");
            }
        });
    }
}

/// Removes a closed connection from every group and tells the groups a client left.
pub(crate) fn connection_closed(state: &BrokerState, conn_id: u64) {
    state.producers.connection_closed(conn_id);
    notify_left(state, state.consumers.connection_closed(conn_id));
}

/// Removes connections closed or silent past `expiry` and tells the groups a client left.
pub(crate) fn remove_expired(state: &BrokerState, expiry: Duration) {
    state.producers.remove_expired(expiry);
    notify_left(state, state.consumers.remove_expired(expiry));
}

fn notify_left(state: &BrokerState, left: Vec<ClientLeft>) {
    let notify = state.config.read().notify_consumer_ids_changed_enable;
    for ClientLeft { group, rest } in left {
        tracing::info!(%group, "consumer left the group");
        if notify && !rest.is_empty() {
            notify_connections(state, &group, rest);
        }
    }
}
