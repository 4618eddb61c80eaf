//! Consumer group membership: a group's clients are told with NOTIFY_CONSUMER_IDS_CHANGED
//! (40) when a client joins, leaves or its connection closes, and clients silent past the
//! channel expiry are dropped. Heartbeats and unregistrations come through the handlers; the
//! connection listener and the housekeeping task call here.

use std::time::Duration;

use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode};

use crate::clients::ClientLeft;
use crate::context::BrokerContext;

/// Sends NOTIFY_CONSUMER_IDS_CHANGED to every connection of `group` (in the background).
pub(crate) fn notify_consumer_ids_changed(state: &BrokerContext, group: &str) {
    let conns = state
        .consumers
        .group(group)
        .map(|g| g.channels.values().map(|c| c.conn.clone()).collect())
        .unwrap_or_default();
    notify_connections(state, group, conns);
}

pub(crate) fn notify_connections(state: &BrokerContext, group: &str, conns: Vec<Connection>) {
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
pub(crate) fn connection_closed(state: &BrokerContext, conn_id: u64) {
    state.producers.connection_closed(conn_id);
    notify_left(state, state.consumers.connection_closed(conn_id));
}

/// Removes connections closed or silent past `expiry` and tells the groups a client left.
pub(crate) fn remove_expired(state: &BrokerContext, expiry: Duration) {
    state.producers.remove_expired(expiry);
    notify_left(state, state.consumers.remove_expired(expiry));
}

fn notify_left(state: &BrokerContext, left: Vec<ClientLeft>) {
    let notify = state.config().notify_consumer_ids_changed_enable;
    for ClientLeft { group, rest } in left {
        tracing::info!(%group, "consumer left the group");
        if notify && !rest.is_empty() {
            notify_connections(state, &group, rest);
        }
    }
}
