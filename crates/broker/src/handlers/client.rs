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
use remoting::{RemotingCommand, RequestCode};

use super::{header, success, HandlerError, Reply};
use crate::clients::{ClientChannel, ClientLeft, ConsumerRegistration};
use crate::state::BrokerState;
use crate::topic::retry_topic;

/// HEART_BEAT (34): registers the connection's producers and consumers; a consumer group
/// that changed is told so (NOTIFY_CONSUMER_IDS_CHANGED) when enabled.
pub(super) async fn heartbeat(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let hb = HeartbeatData::decode(&req.body)
        .map_err(|e| HandlerError::System(format!("bad heartbeat body: {e}")))?;
    let channel = ClientChannel {
        conn,
        client_id: hb.client_id.clone(),
        language: req.language,
        version: req.version,
        last_update: Instant::now(),
    };
    let config = state.config();
    for data in hb.consumer_data_set {
        let group_config = state
            .groups
            .find(&data.group_name, config.auto_create_subscription_group)?;
        let mut notify = config.notify_consumer_ids_changed_enable;
        if let Some(g) = &group_config {
            notify &= g.notify_consumer_ids_changed_enable;
            state.topics.create_if_missing(
                &retry_topic(&data.group_name),
                g.retry_queue_nums,
                perm::PERM_READ | perm::PERM_WRITE,
                0,
            )?;
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
                notify_consumer_ids_changed(&state, &data.group_name);
            }
        }
    }
    for data in hb.producer_data_set {
        state.producers.register(&data.group_name, channel.clone());
    }
    Ok(Some(success(&req)))
}

/// UNREGISTER_CLIENT (35).
pub(super) async fn unregister(
    state: Arc<BrokerState>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: UnregisterClientRequestHeader = header(&req)?;
    if let Some(group) = h.producer_group.as_deref().filter(|g| !g.is_empty()) {
        state.producers.unregister(group, conn.id());
    }
    if let Some(group) = h.consumer_group.as_deref().filter(|g| !g.is_empty()) {
        if let Some(rest) = state.consumers.unregister(group, conn.id()) {
            notify_connections(&state, group, rest);
        }
    }
    Ok(Some(success(&req)))
}

/// LOCK_BATCH_MQ (41): answers the queues now locked by the client.
pub(super) async fn lock_batch(
    state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let body = LockBatchRequestBody::decode(&req.body)
        .map_err(|e| HandlerError::System(format!("bad lock body: {e}")))?;
    let locked = state
        .locks
        .try_lock_batch(&body.consumer_group, &body.mq_set, &body.client_id);
    let answer = LockBatchResponseBody {
        lock_ok_mq_set: locked,
    };
    let body = answer.encode().map_err(HandlerError::system)?;
    Ok(Some(success(&req).with_body(body)))
}

/// UNLOCK_BATCH_MQ (42).
pub(super) async fn unlock_batch(
    state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let body = UnlockBatchRequestBody::decode(&req.body)
        .map_err(|e| HandlerError::System(format!("bad unlock body: {e}")))?;
    state
        .locks
        .unlock_batch(&body.consumer_group, &body.mq_set, &body.client_id);
    Ok(Some(success(&req)))
}

/// CHECK_CLIENT_CONFIG (46): only TAG filtering is supported, which needs no check.
pub(super) async fn check_client_config(
    _state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    Ok(Some(success(&req)))
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
    let notify = state.config().notify_consumer_ids_changed_enable;
    for ClientLeft { group, rest } in left {
        tracing::info!(%group, "consumer left the group");
        if notify && !rest.is_empty() {
            notify_connections(state, &group, rest);
        }
    }
}
