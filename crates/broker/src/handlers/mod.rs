//! Request handlers, one module per request family and one function per request code (parse
//! the header, apply, answer), and the one dispatch table ([`HANDLERS`]) keyed by request
//! code. A handler refuses a request with a [`HandlerError`], which the dispatch wrapper
//! turns into the upstream response code and a remark saying what was wrong; unknown codes
//! get `REQUEST_CODE_NOT_SUPPORTED` from the remoting server.

mod acl;
mod admin;
mod client;
mod consumer;
mod forward;
mod pop;
mod pull;
mod query;
mod replicas;
mod send;
mod send_back;
mod transaction;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use remoting::headers::CommandHeader;
use remoting::server::{Connection, ConnectionListener, Dispatcher, HandlerFuture};
use remoting::{RemotingCommand, RemotingError, RequestCode, ResponseCode};

use crate::services::BrokerServices;

use crate::error::HandlerError;

/// What a handler answers: a response, no response (`None`: the request is oneway in effect
/// or its connection closed), or the refusal the dispatch wrapper answers.
type Reply = Result<Option<RemotingCommand>, HandlerError>;

/// A request handler: one request code, parse -> apply -> respond.
type Handler = fn(
    Arc<BrokerServices>,
    Connection,
    RemotingCommand,
) -> Pin<Box<dyn Future<Output = Reply> + Send>>;

/// A [`Handler`] from an `async fn(Arc<BrokerServices>, Connection, RemotingCommand)`.
macro_rules! handler {
    ($f:path) => {
        |state, conn, req| Box::pin($f(state, conn, req))
    };
}

/// Request code -> handler, for every code a broker serves; every other code is answered
/// `REQUEST_CODE_NOT_SUPPORTED` by the remoting server.
const HANDLERS: &[(i32, Handler)] = &[
    (
        RequestCode::NOTIFY_BROKER_ROLE_CHANGED,
        handler!(replicas::role_changed),
    ),
    (
        RequestCode::EXCHANGE_BROKER_HA_INFO,
        handler!(replicas::exchange_ha_info),
    ),
    (
        RequestCode::GET_BROKER_EPOCH_CACHE,
        handler!(replicas::epoch_cache),
    ),
    (
        RequestCode::GET_BROKER_HA_STATUS,
        handler!(replicas::ha_status),
    ),
    (RequestCode::SEND_MESSAGE, handler!(send::send_v1)),
    (RequestCode::SEND_MESSAGE_V2, handler!(send::send_v2)),
    (RequestCode::SEND_BATCH_MESSAGE, handler!(send::send_batch)),
    (RequestCode::PULL_MESSAGE, handler!(pull::pull)),
    (
        RequestCode::QUERY_CONSUMER_OFFSET,
        handler!(consumer::query_offset),
    ),
    (
        RequestCode::UPDATE_CONSUMER_OFFSET,
        handler!(consumer::update_offset),
    ),
    (RequestCode::GET_MAX_OFFSET, handler!(consumer::max_offset)),
    (RequestCode::GET_MIN_OFFSET, handler!(consumer::min_offset)),
    (
        RequestCode::GET_EARLIEST_MSG_STORETIME,
        handler!(consumer::earliest_msg_store_time),
    ),
    (
        RequestCode::SEARCH_OFFSET_BY_TIMESTAMP,
        handler!(consumer::search_offset),
    ),
    (
        RequestCode::GET_CONSUMER_LIST_BY_GROUP,
        handler!(consumer::consumer_list),
    ),
    (RequestCode::HEART_BEAT, handler!(client::heartbeat)),
    (RequestCode::UNREGISTER_CLIENT, handler!(client::unregister)),
    (RequestCode::LOCK_BATCH_MQ, handler!(client::lock_batch)),
    (RequestCode::UNLOCK_BATCH_MQ, handler!(client::unlock_batch)),
    (
        RequestCode::CHECK_CLIENT_CONFIG,
        handler!(client::check_client_config),
    ),
    (
        RequestCode::CONSUMER_SEND_MSG_BACK,
        handler!(send_back::send_back),
    ),
    (
        RequestCode::END_TRANSACTION,
        handler!(transaction::end_transaction),
    ),
    (RequestCode::POP_MESSAGE, handler!(pop::pop)),
    (RequestCode::ACK_MESSAGE, handler!(pop::ack)),
    (RequestCode::BATCH_ACK_MESSAGE, handler!(pop::batch_ack)),
    (
        RequestCode::CHANGE_MESSAGE_INVISIBLETIME,
        handler!(pop::change_invisible_time),
    ),
    (RequestCode::NOTIFICATION, handler!(pop::notification)),
    (RequestCode::POLLING_INFO, handler!(pop::polling_info)),
    (RequestCode::QUERY_MESSAGE, handler!(query::query_message)),
    (
        RequestCode::VIEW_MESSAGE_BY_ID,
        handler!(query::view_message),
    ),
    (
        RequestCode::UPDATE_AND_CREATE_TOPIC,
        handler!(admin::update_topic),
    ),
    (
        RequestCode::DELETE_TOPIC_IN_BROKER,
        handler!(admin::delete_topic),
    ),
    (
        RequestCode::GET_ALL_TOPIC_CONFIG,
        handler!(admin::all_topic_config),
    ),
    (
        RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
        handler!(admin::update_group),
    ),
    (
        RequestCode::DELETE_SUBSCRIPTIONGROUP,
        handler!(admin::delete_group),
    ),
    (
        RequestCode::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
        handler!(admin::all_group_config),
    ),
    (
        RequestCode::GET_SUBSCRIPTIONGROUP_CONFIG,
        handler!(admin::group_config),
    ),
    (
        RequestCode::GET_BROKER_RUNTIME_INFO,
        handler!(admin::runtime_info),
    ),
    (
        RequestCode::GET_CONSUMER_CONNECTION_LIST,
        handler!(admin::consumer_connections),
    ),
    (
        RequestCode::GET_PRODUCER_CONNECTION_LIST,
        handler!(admin::producer_connections),
    ),
    (
        RequestCode::GET_CONSUME_STATS,
        handler!(admin::consume_stats),
    ),
    (
        RequestCode::GET_TOPIC_STATS_INFO,
        handler!(admin::topic_stats),
    ),
    (
        RequestCode::GET_BROKER_CONFIG,
        handler!(admin::broker_config),
    ),
    (
        RequestCode::UPDATE_BROKER_CONFIG,
        handler!(admin::update_config),
    ),
    (
        RequestCode::GET_ALL_DELAY_OFFSET,
        handler!(admin::all_delay_offset),
    ),
    (
        RequestCode::GET_ALL_CONSUMER_OFFSET,
        handler!(admin::all_consumer_offset),
    ),
    (
        RequestCode::GET_TIMER_CHECK_POINT,
        handler!(admin::timer_check_point),
    ),
    (
        RequestCode::UPDATE_AND_CREATE_ACL_CONFIG,
        handler!(acl::update),
    ),
    (RequestCode::DELETE_ACL_CONFIG, handler!(acl::delete)),
    (
        RequestCode::GET_BROKER_CLUSTER_ACL_INFO,
        handler!(acl::versions),
    ),
    (
        RequestCode::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG,
        handler!(acl::update_global_white),
    ),
    (
        RequestCode::GET_CONSUMER_RUNNING_INFO,
        handler!(forward::consumer_running_info),
    ),
    (
        RequestCode::CONSUME_MESSAGE_DIRECTLY,
        handler!(forward::consume_directly),
    ),
    (
        RequestCode::INVOKE_BROKER_TO_RESET_OFFSET,
        handler!(forward::reset_offset),
    ),
    (
        RequestCode::INVOKE_BROKER_TO_GET_CONSUMER_STATUS,
        handler!(forward::consumer_status),
    ),
];

/// Every request code a broker serves (the keys of [`HANDLERS`]), for tools and tests that
/// must cover them all, such as the request fuzzer in `crates/it`.
pub fn served_codes() -> Vec<i32> {
    HANDLERS.iter().map(|(code, _)| *code).collect()
}

/// The broker's dispatcher over `state`; fails when [`HANDLERS`] lists a code twice.
pub(crate) fn dispatcher(state: &Arc<BrokerServices>) -> Result<Dispatcher, RemotingError> {
    let mut d = Dispatcher::new();
    for &(code, handler) in HANDLERS {
        let state = state.clone();
        d.register(
            code,
            Arc::new(move |conn: Connection, req: RemotingCommand| {
                // What the error answer needs from the request, which goes to the handler.
                let head = RemotingCommand {
                    version: req.version,
                    opaque: req.opaque,
                    serialize_type: req.serialize_type,
                    ..RemotingCommand::default()
                };
                let remote = conn.remote_addr();
                if let Some(acl) = &state.acl {
                    if let Err(refusal) = acl.check(&req, remote.ip()) {
                        tracing::warn!(code, %remote, "request refused by ACL: {}", refusal.0);
                        let answer = (!req.is_oneway()).then(|| {
                            RemotingCommand::response_to(
                                &head,
                                ResponseCode::SYSTEM_ERROR,
                                Some(refusal.to_string()),
                            )
                        });
                        return Box::pin(async move { answer }) as HandlerFuture;
                    }
                }
                let reply = handler(state.clone(), conn, req);
                Box::pin(async move {
                    reply.await.unwrap_or_else(|e| {
                        tracing::debug!(code, %remote, error = %e, "request refused");
                        Some(RemotingCommand::response_to(
                            &head,
                            e.code(),
                            Some(e.to_string()),
                        ))
                    })
                }) as HandlerFuture
            }),
        )?;
    }
    d.set_listener(Arc::new(ClientHousekeeping(state.clone())));
    Ok(d)
}

/// Removes a closed connection's clients and tells the groups they left.
struct ClientHousekeeping(Arc<BrokerServices>);

impl ConnectionListener for ClientHousekeeping {
    fn on_close(&self, conn: &Connection) {
        crate::membership::connection_closed(&self.0, conn.id());
    }
}

/// SUCCESS with no remark.
fn success(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, ResponseCode::SUCCESS, None)
}

/// The request's typed header, or the SYSTEM_ERROR naming the bad field.
fn header<H: CommandHeader>(req: &RemotingCommand) -> Result<H, HandlerError> {
    H::from_command(req).map_err(HandlerError::BadHeader)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The codes a broker served before its table was keyed by single codes, and the ACL
    /// admin codes 50-53, GET_SUBSCRIPTIONGROUP_CONFIG (352, for the proxy) and the
    /// controller-mode codes (1008, 906, GET_BROKER_EPOCH_CACHE 1007, GET_BROKER_HA_STATUS
    /// 907) and POLLING_INFO (200055) added since.
    const SERVED: &[i32] = &[
        10, 310, 320, 11, 14, 15, 30, 31, 32, 29, 38, 34, 35, 41, 42, 46, 36, 37, 12, 33, 17, 215,
        21, 200, 207, 201, 28, 203, 204, 208, 202, 26, 25, 45, 43, 60, 307, 309, 222, 223, 50, 51,
        52, 53, 352, 200050, 200051, 200151, 200053, 200054, 1008, 906, 1007, 907, 200055,
    ];

    #[test]
    fn every_served_code_has_exactly_one_handler() {
        let table: Vec<i32> = HANDLERS.iter().map(|(code, _)| *code).collect();
        let unique: BTreeSet<i32> = table.iter().copied().collect();
        assert_eq!(
            unique.len(),
            table.len(),
            "duplicate codes in the dispatch table"
        );
        let served: BTreeSet<i32> = SERVED.iter().copied().collect();
        assert_eq!(unique, served);
    }
}
