//! Offsets and group membership queries: QUERY_CONSUMER_OFFSET (14), UPDATE_CONSUMER_OFFSET
//! (15, two-way or oneway; a slave's push of an offset committed to it only raises one),
//! SEARCH_OFFSET_BY_TIMESTAMP (29), GET_MAX_OFFSET (30), GET_MIN_OFFSET (31),
//! GET_EARLIEST_MSG_STORETIME (32) and GET_CONSUMER_LIST_BY_GROUP (38).

use std::sync::Arc;

use remoting::broker_headers::{
    GetConsumerListByGroupRequestHeader, GetConsumerListByGroupResponseBody,
    GetEarliestMsgStoretimeRequestHeader, GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader,
    KeepLargerOffsetHeader, QueryConsumerOffsetRequestHeader, SearchOffsetRequestHeader,
    UpdateConsumerOffsetRequestHeader,
};
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, success, HandlerError, Reply};
use crate::services::BrokerServices;

/// QUERY_CONSUMER_OFFSET (14).
pub(super) async fn query_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: QueryConsumerOffsetRequestHeader = header(&req)?;
    match state.offsets.query(&h.consumer_group, &h.topic, h.queue_id) {
        Some(offset) => Ok(Some(success(&req).with_ext("offset", offset))),
        // A new group: start from 0 while the queue still holds its first message
        // (upstream answers 0 when min offset <= 0 and the data is in memory).
        None if state.store.min_offset(&h.topic, h.queue_id) <= 0
            || h.set_zero_if_not_found == Some(true) =>
        {
            Ok(Some(success(&req).with_ext("offset", 0)))
        }
        None => Err(HandlerError::QueryNotFound(
            "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first".into(),
        )),
    }
}

/// UPDATE_CONSUMER_OFFSET (15).
pub(super) async fn update_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: UpdateConsumerOffsetRequestHeader = header(&req)?;
    let keep_larger: KeepLargerOffsetHeader = header(&req)?;
    if state.topics.select(&h.topic).is_none() {
        return Err(HandlerError::TopicNotExist(format!(
            "Topic {} not exist!",
            h.topic
        )));
    }
    let (group, topic, q, offset) = (&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
    if keep_larger.keep_larger {
        // A slave's push of an offset committed to it (see `slave_sync`).
        state.offsets.commit_max(group, topic, q, offset);
    } else if state.config().is_slave() {
        state.offsets.commit_on_slave(group, topic, q, offset);
    } else {
        state.offsets.commit(group, topic, q, offset);
    }
    Ok(Some(success(&req)))
}

/// GET_MAX_OFFSET (30).
pub(super) async fn max_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetMaxOffsetRequestHeader = header(&req)?;
    let offset = state.store.max_offset(&h.topic, h.queue_id);
    Ok(Some(success(&req).with_ext("offset", offset)))
}

/// GET_MIN_OFFSET (31).
pub(super) async fn min_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetMinOffsetRequestHeader = header(&req)?;
    let offset = state.store.min_offset(&h.topic, h.queue_id);
    Ok(Some(success(&req).with_ext("offset", offset)))
}

/// GET_EARLIEST_MSG_STORETIME (32): -1 when the queue is empty.
pub(super) async fn earliest_msg_store_time(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetEarliestMsgStoretimeRequestHeader = header(&req)?;
    let ts = state
        .store
        .earliest_message_time_in_queue(&h.topic, h.queue_id)
        .unwrap_or(-1);
    Ok(Some(success(&req).with_ext("timestamp", ts)))
}

/// SEARCH_OFFSET_BY_TIMESTAMP (29).
pub(super) async fn search_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SearchOffsetRequestHeader = header(&req)?;
    let offset = state
        .store
        .offset_by_time(&h.topic, h.queue_id, h.timestamp);
    Ok(Some(success(&req).with_ext("offset", offset)))
}

/// GET_CONSUMER_LIST_BY_GROUP (38): the client ids of the group's live consumers.
pub(super) async fn consumer_list(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetConsumerListByGroupRequestHeader = header(&req)?;
    let ids = state
        .consumers
        .group(&h.consumer_group)
        .map(|g| g.client_ids())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(HandlerError::System(format!(
            "no consumer for this group, {}",
            h.consumer_group
        )));
    }
    let body = GetConsumerListByGroupResponseBody {
        consumer_id_list: ids,
    };
    let body = body.encode().map_err(HandlerError::system)?;
    Ok(Some(success(&req).with_body(body)))
}
