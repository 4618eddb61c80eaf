//! Request handlers: one module per request family, each handler an async function that
//! parses the request, decides on the replicated state (committing events through Raft) and
//! builds the response. [`HANDLERS`] is the dispatch table (one entry per code in
//! [`CONTROLLER_REQUEST_CODES`]) plus the peers' Raft RPCs; every other code is answered
//! `REQUEST_CODE_NOT_SUPPORTED`. Codes marked [`Access::Leader`] are answered
//! `CONTROLLER_NOT_LEADER` (with the leader's address in the metadata header) on a follower,
//! as upstream. A handler error (bad header or body) becomes a `SYSTEM_ERROR` response.

mod config;
mod meta;
mod register;
mod replica;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use remoting::headers::{BrokerHeartbeatRequestHeader, CommandHeader};
use remoting::server::{Connection, ConnectionListener, Dispatcher};
use remoting::{RemotingCommand, RemotingError, RequestCode, ResponseCode};

use crate::raft::{serve_rpc, RAFT_APPEND_ENTRIES, RAFT_INSTALL_SNAPSHOT, RAFT_VOTE};
use crate::replicas::Refusal;
use crate::state::ControllerState;

/// Every controller request code served (upstream `ControllerRequestProcessor`).
pub const CONTROLLER_REQUEST_CODES: &[i32] = &[
    RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET,
    RequestCode::CONTROLLER_ELECT_MASTER,
    RequestCode::CONTROLLER_REGISTER_BROKER,
    RequestCode::CONTROLLER_GET_REPLICA_INFO,
    RequestCode::CONTROLLER_GET_METADATA_INFO,
    RequestCode::CONTROLLER_GET_SYNC_STATE_DATA,
    RequestCode::BROKER_HEARTBEAT,
    RequestCode::CLEAN_BROKER_DATA,
    RequestCode::CONTROLLER_GET_NEXT_BROKER_ID,
    RequestCode::CONTROLLER_APPLY_BROKER_ID,
    RequestCode::GET_CONTROLLER_CONFIG,
    RequestCode::UPDATE_CONTROLLER_CONFIG,
];

type HandlerFuture = Pin<Box<dyn Future<Output = Result<RemotingCommand, RemotingError>> + Send>>;

/// A request handler: parse, decide (and commit), respond.
type Handler = fn(Arc<ControllerState>, RemotingCommand) -> HandlerFuture;

/// Where a code may be served.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    /// Only on the Raft leader, after a linearizable read point.
    Leader,
    /// On any controller.
    Any,
}

/// Request code -> (where, handler), for every controller request code.
const HANDLERS: &[(i32, Access, Handler)] = &[
    (
        RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET,
        Access::Leader,
        replica::alter_sync_state_set,
    ),
    (
        RequestCode::CONTROLLER_ELECT_MASTER,
        Access::Leader,
        replica::elect_master,
    ),
    (
        RequestCode::CONTROLLER_REGISTER_BROKER,
        Access::Leader,
        register::register,
    ),
    (
        RequestCode::CONTROLLER_GET_REPLICA_INFO,
        Access::Leader,
        replica::replica_info,
    ),
    (
        RequestCode::CONTROLLER_GET_METADATA_INFO,
        Access::Any,
        meta::metadata,
    ),
    (
        RequestCode::CONTROLLER_GET_SYNC_STATE_DATA,
        Access::Leader,
        replica::sync_state_data,
    ),
    (
        RequestCode::BROKER_HEARTBEAT,
        Access::Any,
        register::heartbeat,
    ),
    (
        RequestCode::CLEAN_BROKER_DATA,
        Access::Leader,
        replica::clean_broker_data,
    ),
    (
        RequestCode::CONTROLLER_GET_NEXT_BROKER_ID,
        Access::Leader,
        register::next_broker_id,
    ),
    (
        RequestCode::CONTROLLER_APPLY_BROKER_ID,
        Access::Leader,
        register::apply_broker_id,
    ),
    (
        RequestCode::GET_CONTROLLER_CONFIG,
        Access::Any,
        config::get_config,
    ),
    (
        RequestCode::UPDATE_CONTROLLER_CONFIG,
        Access::Any,
        config::update_config,
    ),
];

/// The dispatcher of a controller over `state`; fails when a code is registered twice.
pub(crate) fn dispatcher(state: &Arc<ControllerState>) -> Result<Dispatcher, RemotingError> {
    let mut dispatcher = Dispatcher::new();
    for &(code, access, handler) in HANDLERS {
        let state = state.clone();
        dispatcher.register(
            code,
            Arc::new(move |conn: Connection, request: RemotingCommand| {
                let state = state.clone();
                async move { Some(run(state, &conn, request, access, handler).await) }
            }),
        )?;
    }
    for code in [RAFT_APPEND_ENTRIES, RAFT_VOTE, RAFT_INSTALL_SNAPSHOT] {
        let state = state.clone();
        dispatcher.register(
            code,
            Arc::new(move |_conn: Connection, request: RemotingCommand| {
                let state = state.clone();
                async move { Some(serve_rpc(&state.raft, &request).await) }
            }),
        )?;
    }
    dispatcher.set_listener(Arc::new(BrokerChannels(state.clone())));
    dispatcher.set_default(Arc::new(
        |_conn: Connection, request: RemotingCommand| async move {
            Some(RemotingCommand::not_supported(&request))
        },
    ));
    Ok(dispatcher)
}

/// Upstream's `onBrokerChannelClose`: a broker whose heartbeat connection closes is dead at
/// once (a killed broker's kernel closes it), so its group need not wait for the heartbeat
/// timeout to get a new master.
struct BrokerChannels(Arc<ControllerState>);

impl ConnectionListener for BrokerChannels {
    fn on_close(&self, conn: &Connection) {
        if self.0.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let gone = self.0.liveness.lock().channel_closed(conn.id());
        if gone.is_empty() {
            return;
        }
        let state = self.0.clone();
        tokio::spawn(async move {
            state
                .masters_lost(gone, "master's connection closed; electing")
                .await;
        });
    }
}

/// Whether `request` is an operator's (with `aclEnable=true` it needs an admin account): a
/// manual election (`designateElect=true`), CLEAN_BROKER_DATA or UPDATE_CONTROLLER_CONFIG.
fn is_admin_request(request: &RemotingCommand) -> bool {
    match request.code {
        RequestCode::CLEAN_BROKER_DATA | RequestCode::UPDATE_CONTROLLER_CONFIG => true,
        RequestCode::CONTROLLER_ELECT_MASTER => request
            .ext("designateElect")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        _ => false,
    }
}

async fn run(
    state: Arc<ControllerState>,
    conn: &Connection,
    request: RemotingCommand,
    access: Access,
    handler: Handler,
) -> RemotingCommand {
    if let (Some(acl), true) = (&state.acl, is_admin_request(&request)) {
        if let Err(e) = acl.reload_if_changed() {
            tracing::error!(error = %e, "ACL files not reloaded; the previous accounts stay");
        }
        if let Err(refusal) = acl.check_admin(&request, conn.remote_addr().ip()) {
            tracing::warn!(code = request.code, remote = %conn.remote_addr(), "request refused by ACL: {}", refusal.0);
            return RemotingCommand::response_to(
                &request,
                ResponseCode::SYSTEM_ERROR,
                Some(refusal.to_string()),
            );
        }
    }
    if access == Access::Leader && !state.lead().await {
        return state.not_leader(&request);
    }
    let code = request.code;
    let fallback = RemotingCommand::response_to(&request, ResponseCode::SYSTEM_ERROR, None);
    if code == RequestCode::BROKER_HEARTBEAT {
        if let Ok(h) = BrokerHeartbeatRequestHeader::from_command(&request) {
            if let Some(id) = h.broker_id {
                state
                    .liveness
                    .lock()
                    .bind_channel(&h.broker_name, id, conn.id());
            }
        }
    }
    handler(state, request).await.unwrap_or_else(|e| {
        tracing::warn!(code, remote = %conn.remote_addr(), "bad request: {e}");
        fallback.with_remark(e.to_string())
    })
}

/// `SUCCESS` carrying `header`.
fn success_with_header(request: &RemotingCommand, header: &impl CommandHeader) -> RemotingCommand {
    let mut response = RemotingCommand::response_to(request, ResponseCode::SUCCESS, None);
    header.write_to(&mut response);
    response
}

/// The refusal's code and remark (a lost leadership becomes `CONTROLLER_NOT_LEADER` with the
/// leader's address).
fn refused(
    state: &ControllerState,
    request: &RemotingCommand,
    refusal: Refusal,
) -> RemotingCommand {
    if refusal.code == ResponseCode::CONTROLLER_NOT_LEADER {
        return state.not_leader(request);
    }
    RemotingCommand::response_to(request, refusal.code, Some(refusal.remark))
}

/// JSON body bytes.
fn json(value: &impl serde::Serialize) -> Result<Vec<u8>, RemotingError> {
    serde_json::to_vec(value).map_err(|e| RemotingError::InvalidBody(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_controller_code_has_exactly_one_handler() {
        let table: Vec<i32> = HANDLERS.iter().map(|(code, _, _)| *code).collect();
        let unique: BTreeSet<i32> = table.iter().copied().collect();
        assert_eq!(
            unique.len(),
            table.len(),
            "duplicate codes in the dispatch table"
        );
        let served: BTreeSet<i32> = CONTROLLER_REQUEST_CODES.iter().copied().collect();
        assert_eq!(unique, served);
        for private in [RAFT_APPEND_ENTRIES, RAFT_VOTE, RAFT_INSTALL_SNAPSHOT] {
            assert!(!served.contains(&private));
        }
    }
}
