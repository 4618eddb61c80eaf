//! Request handlers: one module per request family, each handler a plain function that parses
//! the request, applies it to the shared state and builds the response. [`HANDLERS`] is the
//! dispatch table (one entry per code in `NAMESRV_REQUEST_CODES`); every other code goes to
//! [`unsupported`]. A handler error (bad header or body) becomes a `SYSTEM_ERROR` response
//! carrying the error text, as upstream answers a `RemotingCommandException`.

mod broker;
mod config;
mod kv;
mod route;
mod topic;
mod unsupported;

use std::sync::Arc;

use remoting::headers::CommandHeader;
use remoting::protocol::{to_fastjson, KeyStyle};
use remoting::server::{Connection, Dispatcher};
use remoting::{RemotingCommand, RemotingError, RequestCode, ResponseCode};
use serde::Serialize;

use crate::state::NamesrvState;

/// A request handler: parse, apply, respond.
type Handler =
    fn(&NamesrvState, &Connection, &RemotingCommand) -> Result<RemotingCommand, RemotingError>;

/// Request code -> handler, for every code a NameServer serves.
const HANDLERS: &[(i32, Handler)] = &[
    (RequestCode::PUT_KV_CONFIG, kv::put),
    (RequestCode::GET_KV_CONFIG, kv::get),
    (RequestCode::DELETE_KV_CONFIG, kv::delete),
    (RequestCode::GET_KVLIST_BY_NAMESPACE, kv::list_by_namespace),
    (RequestCode::REGISTER_BROKER, broker::register),
    (RequestCode::UNREGISTER_BROKER, broker::unregister),
    (RequestCode::BROKER_HEARTBEAT, broker::heartbeat),
    (RequestCode::QUERY_DATA_VERSION, broker::query_data_version),
    (RequestCode::GET_BROKER_MEMBER_GROUP, broker::member_group),
    (RequestCode::GET_ROUTEINFO_BY_TOPIC, route::route_by_topic),
    (RequestCode::GET_BROKER_CLUSTER_INFO, route::cluster_info),
    (
        RequestCode::WIPE_WRITE_PERM_OF_BROKER,
        topic::wipe_write_perm,
    ),
    (RequestCode::ADD_WRITE_PERM_OF_BROKER, topic::add_write_perm),
    (
        RequestCode::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
        topic::all_topics,
    ),
    (RequestCode::DELETE_TOPIC_IN_NAMESRV, topic::delete),
    (RequestCode::REGISTER_TOPIC_IN_NAMESRV, topic::register),
    (RequestCode::GET_TOPICS_BY_CLUSTER, topic::by_cluster),
    (
        RequestCode::GET_SYSTEM_TOPIC_LIST_FROM_NS,
        topic::system_topics,
    ),
    (RequestCode::GET_UNIT_TOPIC_LIST, topic::unit_topics),
    (
        RequestCode::GET_HAS_UNIT_SUB_TOPIC_LIST,
        topic::has_unit_sub_topics,
    ),
    (
        RequestCode::GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST,
        topic::has_unit_sub_ununit_topics,
    ),
    (RequestCode::UPDATE_NAMESRV_CONFIG, config::update),
    (RequestCode::GET_NAMESRV_CONFIG, config::get),
];

/// Codes that change what the NameServer holds: with `aclEnable=true` they need an admin
/// account.
const ADMIN_CODES: &[i32] = &[
    RequestCode::PUT_KV_CONFIG,
    RequestCode::DELETE_KV_CONFIG,
    RequestCode::WIPE_WRITE_PERM_OF_BROKER,
    RequestCode::ADD_WRITE_PERM_OF_BROKER,
    RequestCode::DELETE_TOPIC_IN_NAMESRV,
    RequestCode::REGISTER_TOPIC_IN_NAMESRV,
    RequestCode::UPDATE_NAMESRV_CONFIG,
];

/// The dispatcher of a NameServer over `state`; fails when [`HANDLERS`] lists a code twice.
pub(crate) fn dispatcher(state: &Arc<NamesrvState>) -> Result<Dispatcher, RemotingError> {
    let mut dispatcher = Dispatcher::new();
    for &(code, handler) in HANDLERS {
        let state = state.clone();
        dispatcher.register(
            code,
            Arc::new(move |conn: Connection, request: RemotingCommand| {
                let state = state.clone();
                async move { Some(run(&state, &conn, &request, handler)) }
            }),
        )?;
    }
    let state = state.clone();
    dispatcher.set_default(Arc::new(
        move |conn: Connection, request: RemotingCommand| {
            let state = state.clone();
            async move { Some(unsupported::answer(&state, &conn, &request)) }
        },
    ));
    Ok(dispatcher)
}

fn run(
    state: &NamesrvState,
    conn: &Connection,
    request: &RemotingCommand,
    handler: Handler,
) -> RemotingCommand {
    if let (Some(acl), true) = (&state.acl, ADMIN_CODES.contains(&request.code)) {
        // Admin requests are rare: look for changed ACL files on each.
        if let Err(e) = acl.reload_if_changed() {
            tracing::error!(error = %e, "ACL files not reloaded; the previous accounts stay");
        }
        if let Err(refusal) = acl.check_admin(request, conn.remote_addr().ip()) {
            tracing::warn!(code = request.code, remote = %conn.remote_addr(), "request refused by ACL: {}", refusal.0);
            return failure(request, ResponseCode::SYSTEM_ERROR, refusal.to_string());
        }
    }
    handler(state, conn, request).unwrap_or_else(|e| {
        tracing::warn!(code = request.code, remote = %conn.remote_addr(), "bad request: {e}");
        RemotingCommand::response_to(request, ResponseCode::SYSTEM_ERROR, Some(e.to_string()))
    })
}

/// `SUCCESS` with no remark.
fn success(request: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(request, ResponseCode::SUCCESS, None)
}

/// `code` with `remark`.
fn failure(request: &RemotingCommand, code: i32, remark: impl Into<String>) -> RemotingCommand {
    RemotingCommand::response_to(request, code, Some(remark.into()))
}

/// `SUCCESS` carrying `header`.
fn success_with_header(request: &RemotingCommand, header: &impl CommandHeader) -> RemotingCommand {
    let mut response = success(request);
    header.write_to(&mut response);
    response
}

/// `SUCCESS` with `body` as JSON.
fn success_with_json(
    request: &RemotingCommand,
    body: &impl Serialize,
    keys: KeyStyle,
) -> Result<RemotingCommand, RemotingError> {
    Ok(success(request).with_body(to_fastjson(body, keys)?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use remoting::codes::NAMESRV_REQUEST_CODES;

    use super::*;

    #[test]
    fn every_namesrv_code_has_exactly_one_handler() {
        let table: Vec<i32> = HANDLERS.iter().map(|(code, _)| *code).collect();
        let unique: BTreeSet<i32> = table.iter().copied().collect();
        assert_eq!(
            unique.len(),
            table.len(),
            "duplicate codes in the dispatch table"
        );
        let served: BTreeSet<i32> = NAMESRV_REQUEST_CODES.iter().copied().collect();
        assert_eq!(unique, served);
    }
}
