//! Requests of codes a NameServer does not serve: most often a broker request (such as
//! CONSUMER_SEND_MSG_BACK, 36) that a client aimed at a NameServer because its route had no
//! master. Answered at once with `REQUEST_CODE_NOT_SUPPORTED` so the client fails fast instead
//! of waiting for its timeout, and counted per code.

use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

use crate::state::NamesrvState;

pub(super) fn answer(
    state: &NamesrvState,
    conn: &Connection,
    request: &RemotingCommand,
) -> RemotingCommand {
    let code = request.code;
    let name = RequestCode::name(code).unwrap_or("unknown");
    let count = {
        let mut counts = state.unsupported.lock();
        let count = counts.entry(code).or_insert(0);
        *count += 1;
        *count
    };
    tracing::warn!(
        code, name, count, remote = %conn.remote_addr(), language = request.language.name(),
        version = request.version, "request code not served by a NameServer"
    );
    super::failure(
        request,
        ResponseCode::REQUEST_CODE_NOT_SUPPORTED,
        format!(
            " request type {code} not supported: {name} was sent to a NameServer, which serves no broker requests"
        ),
    )
}
