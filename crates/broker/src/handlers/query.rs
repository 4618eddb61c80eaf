//! QUERY_MESSAGE (12): messages of a topic by key (or `UNIQ_KEY`) from the Index, and
//! VIEW_MESSAGE_BY_ID (33): the record at a CommitLog offset. Both answer stored records as
//! the body, as pulls do.

use std::sync::Arc;

use bytes::BytesMut;
use remoting::broker_headers::{QueryMessageRequestHeader, ViewMessageRequestHeader};
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, HandlerError, Reply};
use crate::services::BrokerServices;

/// QUERY_MESSAGE (12): up to `maxNum` records of the topic with the key, in the time range.
pub(super) async fn query_message(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: QueryMessageRequestHeader = header(&req)?;
    let max = usize::try_from(h.max_num).unwrap_or(0);
    let found = state
        .store
        .query_by_key(&h.topic, &h.key, max, h.begin_timestamp, h.end_timestamp);
    if found.messages.is_empty() {
        return Err(HandlerError::QueryNotFound(
            "can not find message, maybe time range not correct".into(),
        ));
    }
    let mut body = BytesMut::new();
    for m in &found.messages {
        body.extend_from_slice(m);
    }
    Ok(Some(
        success(&req)
            .with_ext(
                "indexLastUpdateTimestamp",
                found.index_last_update_timestamp,
            )
            .with_ext(
                "indexLastUpdatePhyoffset",
                found.index_last_update_phy_offset,
            )
            .with_body(body.freeze()),
    ))
}

/// VIEW_MESSAGE_BY_ID (33): the record at the CommitLog offset.
pub(super) async fn view_message(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: ViewMessageRequestHeader = header(&req)?;
    match state.store.message_by_offset(h.offset) {
        Some(record) => Ok(Some(success(&req).with_body(record))),
        None => Err(HandlerError::System(format!(
            "can not find message by the offset, {}",
            h.offset
        ))),
    }
}
