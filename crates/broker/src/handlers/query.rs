//! QUERY_MESSAGE (12): messages of a topic by key (or `UNIQ_KEY`) from the Index, and
//! VIEW_MESSAGE_BY_ID (33): the record at a CommitLog offset. Both answer stored records as
//! the body, as pulls do.

use std::sync::Arc;

use bytes::BytesMut;
use remoting::broker_headers::{QueryMessageRequestHeader, ViewMessageRequestHeader};
use remoting::server::Connection;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

use super::{parse_header, reply, success};
use crate::state::BrokerState;

pub(crate) async fn handle(
    state: Arc<BrokerState>,
    _conn: Connection,
    req: RemotingCommand,
) -> Option<RemotingCommand> {
    match req.code {
        RequestCode::QUERY_MESSAGE => {
            let h = parse_header!(QueryMessageRequestHeader, req);
            let max = usize::try_from(h.max_num).unwrap_or(0);
            let found =
                state
                    .store
                    .query_by_key(&h.topic, &h.key, max, h.begin_timestamp, h.end_timestamp);
            if found.messages.is_empty() {
                return reply(
                    &req,
                    ResponseCode::QUERY_NOT_FOUND,
                    "can not find message, maybe time range not correct",
                );
            }
            let mut body = BytesMut::new();
            for m in &found.messages {
                body.extend_from_slice(m);
            }
            Some(
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
            )
        }
        RequestCode::VIEW_MESSAGE_BY_ID => {
            let h = parse_header!(ViewMessageRequestHeader, req);
            match state.store.message_by_offset(h.offset) {
                Some(record) => Some(success(&req).with_body(record)),
                None => reply(
                    &req,
                    ResponseCode::SYSTEM_ERROR,
                    format!("can not find message by the offset, {}", h.offset),
                ),
            }
        }
        _ => Some(RemotingCommand::not_supported(&req)),
    }
}
