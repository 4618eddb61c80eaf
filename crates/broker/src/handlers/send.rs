//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320): parse the header,
//! let the send policy ([`crate::send_policy`]) decide what to write (or refuse), append it,
//! and answer `msgId`, `queueId`, `queueOffset`, `MSG_REGION`, `TRACE_ON`.

use std::sync::Arc;

use remoting::broker_headers::{SendMessageRequestHeader, SendMessageRequestHeaderV2};
use remoting::message::MessageConst;
use remoting::server::Connection;
use remoting::RemotingCommand;

use super::{header, HandlerError, Reply};
use crate::metrics::MessageType;
use crate::send_policy;
use crate::services::BrokerServices;

/// SEND_MESSAGE (10).
pub(super) async fn send_v1(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeader = header(&req)?;
    send(&state, &conn, &req, h, false).await.map(Some)
}

/// SEND_MESSAGE_V2 (310): the same header with one-letter keys.
pub(super) async fn send_v2(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeaderV2 = header(&req)?;
    send(&state, &conn, &req, h.into(), false).await.map(Some)
}

/// SEND_BATCH_MESSAGE (320): a V2 header and a body of several encoded messages.
pub(super) async fn send_batch(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: SendMessageRequestHeaderV2 = header(&req)?;
    send(&state, &conn, &req, h.into(), true).await.map(Some)
}

/// Parse -> policy -> append -> respond, for the three send codes.
async fn send(
    state: &BrokerServices,
    conn: &Connection,
    req: &RemotingCommand,
    h: SendMessageRequestHeader,
    batch: bool,
) -> Result<RemotingCommand, HandlerError> {
    let config = state.config();
    let planned = send_policy::plan(
        state,
        &state.delay,
        &config,
        conn.remote_addr(),
        &h,
        &req.body,
        batch,
    )?;
    let kind = state
        .metrics
        .enabled()
        .then(|| MessageType::of_properties(h.properties.as_deref().unwrap_or_default()));
    let (result, code) = state.put_acked(planned.msgs).await?;
    if let Some(kind) = kind {
        state.metrics.record_in(
            &h.topic,
            kind,
            u64::try_from(result.msg_num).unwrap_or(0),
            u64::try_from(result.wrote_bytes).unwrap_or(0),
        );
    }
    let msg_id = result.msg_ids().join(",");
    Ok(RemotingCommand::response_to(req, code, None)
        .with_ext("msgId", msg_id)
        .with_ext("queueId", planned.queue_id)
        .with_ext("queueOffset", result.queue_offset)
        .with_ext(MessageConst::PROPERTY_MSG_REGION, config.region_id.as_str())
        .with_ext(MessageConst::PROPERTY_TRACE_SWITCH, config.trace_on))
}
