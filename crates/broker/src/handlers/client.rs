//! Client management: HEART_BEAT (34), UNREGISTER_CLIENT (35), LOCK_BATCH_MQ (41),
//! UNLOCK_BATCH_MQ (42) and CHECK_CLIENT_CONFIG (46). A group whose membership changes is
//! told by [`crate::membership`].

use std::sync::Arc;
use std::time::Instant;

use remoting::broker_headers::{
    HeartbeatData, LockBatchRequestBody, LockBatchResponseBody, UnlockBatchRequestBody,
    UnregisterClientRequestHeader,
};
use remoting::protocol::perm;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, HandlerError, Reply};
use crate::clients::{ClientChannel, ConsumerRegistration};
use crate::membership::{notify_connections, notify_consumer_ids_changed};
use crate::services::BrokerServices;
use crate::topic::retry_topic;

/// HEART_BEAT (34): registers the connection's producers and consumers; a consumer group
/// that changed is told so (NOTIFY_CONSUMER_IDS_CHANGED) when enabled.
pub(super) async fn heartbeat(
    state: Arc<BrokerServices>,
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
    state: Arc<BrokerServices>,
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
    state: Arc<BrokerServices>,
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
    state: Arc<BrokerServices>,
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
    _state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    Ok(Some(success(&req)))
}
