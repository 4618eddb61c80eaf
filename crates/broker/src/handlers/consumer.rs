//! Offsets and group membership queries: QUERY_CONSUMER_OFFSET (14), UPDATE_CONSUMER_OFFSET
//! (15, two-way or oneway; a slave's push of an offset committed to it only raises one), SEARCH_OFFSET_BY_TIMESTAMP (29), GET_MAX_OFFSET (30),
//! GET_MIN_OFFSET (31), GET_EARLIEST_MSG_STORETIME (32) and GET_CONSUMER_LIST_BY_GROUP (38).

use std::sync::Arc;

use remoting::broker_headers::{
    GetConsumerListByGroupRequestHeader, GetConsumerListByGroupResponseBody,
    GetEarliestMsgStoretimeRequestHeader, GetMaxOffsetRequestHeader, GetMinOffsetRequestHeader,
    QueryConsumerOffsetRequestHeader, SearchOffsetRequestHeader, UpdateConsumerOffsetRequestHeader,
};
use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

use super::{parse_header, reply, success};
use crate::slave_sync::KEEP_LARGER;
use crate::state::BrokerState;

pub(crate) async fn handle(
    state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Option<RemotingCommand> {
    let store = &state.store;
    match req.code {
        RequestCode::QUERY_CONSUMER_OFFSET => {
            let h = parse_header!(QueryConsumerOffsetRequestHeader, req);
            match state.offsets.query(&h.consumer_group, &h.topic, h.queue_id) {
                Some(offset) => Some(success(&req).with_ext("offset", offset)),
                // A new group: start from 0 while the queue still holds its first message
                // (upstream answers 0 when min offset <= 0 and the data is in memory).
                None if store.min_offset(&h.topic, h.queue_id) <= 0
                    || h.set_zero_if_not_found == Some(true) =>
                {
                    Some(success(&req).with_ext("offset", 0))
                }
                None => reply(
                    &req,
                    ResponseCode::QUERY_NOT_FOUND,
                    "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first",
                ),
            }
        }
        RequestCode::UPDATE_CONSUMER_OFFSET => {
            let h = parse_header!(UpdateConsumerOffsetRequestHeader, req);
            if state.topics.select(&h.topic).is_none() {
                return reply(
                    &req,
                    ResponseCode::TOPIC_NOT_EXIST,
                    format!("Topic {} not exist!", h.topic),
                );
            }
            let (group, topic, q, offset) =
                (&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
            if req.ext(KEEP_LARGER) == Some("true") {
                // A slave's push of an offset committed to it (see `slave_sync`).
                state.offsets.commit_max(group, topic, q, offset);
            } else if state.config.read().is_slave() {
                state.offsets.commit_on_slave(group, topic, q, offset);
            } else {
                state.offsets.commit(group, topic, q, offset);
            }
            Some(success(&req))
        }
        RequestCode::GET_MAX_OFFSET => {
            let h = parse_header!(GetMaxOffsetRequestHeader, req);
            Some(success(&req).with_ext("offset", store.max_offset(&h.topic, h.queue_id)))
        }
        RequestCode::GET_MIN_OFFSET => {
            let h = parse_header!(GetMinOffsetRequestHeader, req);
            Some(success(&req).with_ext("offset", store.min_offset(&h.topic, h.queue_id)))
        }
        RequestCode::GET_EARLIEST_MSG_STORETIME => {
            let h = parse_header!(GetEarliestMsgStoretimeRequestHeader, req);
            let ts = store
                .earliest_message_time_in_queue(&h.topic, h.queue_id)
                .unwrap_or(-1);
            Some(success(&req).with_ext("timestamp", ts))
        }
        RequestCode::SEARCH_OFFSET_BY_TIMESTAMP => {
            let h = parse_header!(SearchOffsetRequestHeader, req);
            let offset = store.offset_by_time(&h.topic, h.queue_id, h.timestamp);
            Some(success(&req).with_ext("offset", offset))
        }
        RequestCode::GET_CONSUMER_LIST_BY_GROUP => {
            let h = parse_header!(GetConsumerListByGroupRequestHeader, req);
            let ids = state
                .consumers
                .group(&h.consumer_group)
                .map(|g| g.client_ids())
                .unwrap_or_default();
            if ids.is_empty() {
                return reply(
                    &req,
                    ResponseCode::SYSTEM_ERROR,
                    format!("no consumer for this group, {}", h.consumer_group),
                );
            }
            let body = GetConsumerListByGroupResponseBody {
                consumer_id_list: ids,
            };
            match body.encode() {
                Ok(b) => Some(success(&req).with_body(b)),
                Err(e) => reply(&req, ResponseCode::SYSTEM_ERROR, e.to_string()),
            }
        }
        _ => Some(RemotingCommand::not_supported(&req)),
    }
}
