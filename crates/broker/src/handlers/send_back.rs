//! CONSUMER_SEND_MSG_BACK (36): parse, let the retry service write the retry or DLQ copy
//! ([`crate::retry`]), answer SUCCESS.

use std::sync::Arc;

use remoting::broker_headers::ConsumerSendMsgBackRequestHeader;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, Reply};
use crate::retry;
use crate::services::BrokerServices;

/// CONSUMER_SEND_MSG_BACK (36).
pub(super) async fn send_back(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: ConsumerSendMsgBackRequestHeader = header(&req)?;
    retry::send_back(&state, &state.delay, &h).await?;
    Ok(Some(success(&req)))
}
