//! Request handlers, one module per request family (parse the header, apply, answer), and
//! the one dispatch table ([`dispatcher`]) keyed by request code. Every bad request is
//! answered with an upstream response code and a remark saying what was wrong; unknown codes
//! get `REQUEST_CODE_NOT_SUPPORTED` from the remoting server.

mod admin;
mod client;
mod consumer;
mod forward;
mod pull;
mod query;
mod send;
pub(crate) mod send_back;
mod transaction;

use std::future::Future;
use std::sync::Arc;

use remoting::server::{Connection, ConnectionListener, Dispatcher};
use remoting::{RemotingCommand, RemotingError, RequestCode, ResponseCode};

use crate::state::BrokerState;

pub(crate) use client::remove_expired;

/// Routes each code of `codes` to `f`.
fn route<F, Fut>(d: &mut Dispatcher, state: &Arc<BrokerState>, codes: &[i32], f: F)
where
    F: Fn(Arc<BrokerState>, Connection, RemotingCommand) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
{
    for &code in codes {
        let state = state.clone();
        d.register(
            code,
            Arc::new(move |conn: Connection, req: RemotingCommand| f(state.clone(), conn, req)),
        );
    }
}

/// The broker's dispatch table.
pub(crate) fn dispatcher(state: &Arc<BrokerState>) -> Dispatcher {
    use RequestCode as C;
    let mut d = Dispatcher::new();
    route(
        &mut d,
        state,
        &[C::SEND_MESSAGE, C::SEND_MESSAGE_V2, C::SEND_BATCH_MESSAGE],
        send::handle,
    );
    route(&mut d, state, &[C::PULL_MESSAGE], pull::handle);
    route(
        &mut d,
        state,
        &[
            C::QUERY_CONSUMER_OFFSET,
            C::UPDATE_CONSUMER_OFFSET,
            C::GET_MAX_OFFSET,
            C::GET_MIN_OFFSET,
            C::GET_EARLIEST_MSG_STORETIME,
            C::SEARCH_OFFSET_BY_TIMESTAMP,
            C::GET_CONSUMER_LIST_BY_GROUP,
        ],
        consumer::handle,
    );
    route(
        &mut d,
        state,
        &[
            C::HEART_BEAT,
            C::UNREGISTER_CLIENT,
            C::LOCK_BATCH_MQ,
            C::UNLOCK_BATCH_MQ,
            C::CHECK_CLIENT_CONFIG,
        ],
        client::handle,
    );
    route(
        &mut d,
        state,
        &[C::CONSUMER_SEND_MSG_BACK],
        send_back::handle,
    );
    route(&mut d, state, &[C::END_TRANSACTION], transaction::handle);
    route(
        &mut d,
        state,
        &[C::QUERY_MESSAGE, C::VIEW_MESSAGE_BY_ID],
        query::handle,
    );
    route(&mut d, state, admin::CODES, admin::handle);
    route(&mut d, state, forward::CODES, forward::handle);
    d.set_listener(Arc::new(ClientHousekeeping(state.clone())));
    d
}

/// Removes a closed connection's clients and tells the groups they left.
struct ClientHousekeeping(Arc<BrokerState>);

impl ConnectionListener for ClientHousekeeping {
    fn on_close(&self, conn: &Connection) {
        client::connection_closed(&self.0, conn.id());
    }
}

/// A response with `code` and `remark`.
pub(crate) fn reply(
    req: &RemotingCommand,
    code: i32,
    remark: impl Into<String>,
) -> Option<RemotingCommand> {
    Some(RemotingCommand::response_to(req, code, Some(remark.into())))
}

/// SUCCESS with no remark.
pub(crate) fn success(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, ResponseCode::SUCCESS, None)
}

/// The answer to a header that does not parse: SYSTEM_ERROR naming the field, as upstream's
/// `RemotingCommandException` does.
pub(crate) fn bad_header(req: &RemotingCommand, e: RemotingError) -> Option<RemotingCommand> {
    let remark = match e {
        RemotingError::MissingField(f) => format!("the custom field <{f}> is null"),
        RemotingError::InvalidField { field, value } => {
            format!("the custom field <{field}> has an invalid value <{value}>")
        }
        other => other.to_string(),
    };
    reply(req, ResponseCode::SYSTEM_ERROR, remark)
}

/// Parses the request's header or returns the error answer from the handler.
macro_rules! parse_header {
    ($ty:ty, $req:expr) => {
        match <$ty as remoting::headers::CommandHeader>::from_command(&$req) {
            Ok(h) => h,
            Err(e) => return $crate::handlers::bad_header(&$req, e),
        }
    };
}
pub(crate) use parse_header;
