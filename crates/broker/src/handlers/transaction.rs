//! END_TRANSACTION (37, usually oneway): commit (write the half message to its real topic)
//! or roll back a half message, then record it as resolved.

use std::sync::Arc;

use remoting::broker_headers::EndTransactionRequestHeader;
use remoting::message::{MessageConst, MessageSysFlag, Properties};
use remoting::server::Connection;
use remoting::RemotingCommand;
use store::MessageExt;

use super::{header, success, HandlerError, Reply};
use crate::state::{reput_inner, BrokerState};
use crate::topic::TRANS_HALF_TOPIC;
use crate::transaction::{is_resolved, origin_offset, write_op};

/// END_TRANSACTION (37). A "not a transaction" answer gets no response.
pub(super) async fn end_transaction(
    state: Arc<BrokerState>,
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
        MessageSysFlag::TRANSACTION_NOT_TYPE => return Ok(None),
        other => {
            return Err(HandlerError::System(format!(
                "commitOrRollback {other} is neither commit (8) nor rollback (12)"
            )))
        }
    };
    let Some(half) = state
        .store
        .message_by_offset(h.commit_log_offset)
        .and_then(|r| MessageExt::decode(&r).ok())
        .filter(|m| m.topic == TRANS_HALF_TOPIC)
    else {
        return Err(HandlerError::System(
            "Find prepared transaction message failed".into(),
        ));
    };
    let mut props = Properties::parse(&half.properties);
    if props.get(MessageConst::PROPERTY_PRODUCER_GROUP) != Some(h.producer_group.as_str()) {
        return Err(HandlerError::System("The producer group wrong".into()));
    }
    if half.queue_offset != h.tran_state_table_offset {
        return Err(HandlerError::System(
            "The transaction state table offset wrong".into(),
        ));
    }
    let origin = origin_offset(&props);
    if is_resolved(&state, half.queue_offset, &props) {
        // A second answer for the same transaction (e.g. to a repeated check): done already.
        return Ok(Some(success(&req)));
    }
    if commit {
        let Some(topic) = props.remove(MessageConst::PROPERTY_REAL_TOPIC) else {
            return Err(HandlerError::System(
                "half message has no REAL_TOPIC".into(),
            ));
        };
        let queue_id = props
            .remove(MessageConst::PROPERTY_REAL_QUEUE_ID)
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        props.remove(MessageConst::PROPERTY_TRANSACTION_CHECK_TIMES);
        props.remove(MessageConst::PROPERTY_TRANSACTION_PREPARED_QUEUE_OFFSET);
        let mut msg = reput_inner(&half, state.store_host());
        msg.topic = topic;
        msg.queue_id = queue_id;
        msg.sys_flag = MessageSysFlag::reset_transaction_value(
            half.sys_flag,
            MessageSysFlag::TRANSACTION_COMMIT_TYPE,
        );
        msg.prepared_transaction_offset = h.commit_log_offset;
        msg.properties = props.to_wire_string();
        state.put(vec![msg]).await?;
    }
    write_op(&state, half.queue_offset, origin).await?;
    Ok(Some(success(&req)))
}
