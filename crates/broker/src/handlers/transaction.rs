//! END_TRANSACTION (37, usually oneway): parse, refuse on a slave, and let the transaction
//! service commit (write the half message to its real topic) or roll back the half message.

use std::sync::Arc;

use remoting::broker_headers::EndTransactionRequestHeader;
use remoting::message::MessageSysFlag;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, HandlerError, Reply};
use crate::services::BrokerServices;

/// END_TRANSACTION (37). A "not a transaction" answer (a producer whose local transaction is
/// still unknown) changes nothing and is answered SUCCESS: upstream answers nothing, which
/// leaves a two-way caller waiting for its timeout (the usual oneway caller gets no answer
/// either way).
pub(super) async fn end_transaction(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: EndTransactionRequestHeader = header(&req)?;
    if state.config().is_slave() {
        return Err(HandlerError::SlaveNotAvailable(
            "Message store is slave mode, so end transaction is forbidden. ".into(),
        ));
    }
    let commit = match h.commit_or_rollback {
        MessageSysFlag::TRANSACTION_COMMIT_TYPE => true,
        MessageSysFlag::TRANSACTION_ROLLBACK_TYPE => false,
        MessageSysFlag::TRANSACTION_NOT_TYPE => return Ok(Some(success(&req))),
        other => {
            return Err(HandlerError::System(format!(
                "commitOrRollback {other} is neither commit (8) nor rollback (12)"
            )))
        }
    };
    state.transactions.end(&state, &h, commit).await?;
    Ok(Some(success(&req)))
}
