//! The admin requests a broker answers by asking its consumers (upstream's `Broker2Client`):
//! GET_CONSUMER_RUNNING_INFO (307) and CONSUME_MESSAGE_DIRECTLY (309, with the stored message
//! found by its msgId as the body) are passed on to one client's connection and its answer is
//! returned; INVOKE_BROKER_TO_RESET_OFFSET (222) computes each queue's offset by timestamp,
//! commits it and sends RESET_CONSUMER_CLIENT_OFFSET (220) to every online client of the
//! group; INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223) asks each client with
//! GET_CONSUMER_STATUS_FROM_CLIENT (221) and answers their offsets by client id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use remoting::broker_headers::{
    ConsumeMessageDirectlyResultRequestHeader, GetConsumerRunningInfoRequestHeader,
    GetConsumerStatusRequestHeader, MessageQueue, ResetOffsetBody, ResetOffsetRequestHeader,
};
use remoting::headers::CommandHeader;
use remoting::message::decode_message_id;
use remoting::protocol::parse_fastjson;
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, RequestCode, ResponseCode};
use tokio::task::JoinSet;

use super::admin::push_mq_map;
use super::{header, success, HandlerError, Reply};
use crate::context::BrokerContext;
use crate::services::BrokerServices;

/// How long a consumer has to answer a passed-on request (upstream's `callClient`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each consumer has to report its status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// GET_CONSUMER_RUNNING_INFO (307): passed on to the client.
pub(super) async fn consumer_running_info(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetConsumerRunningInfoRequestHeader = header(&req)?;
    let cmd = pass_on(&req);
    call_consumer(&state, &req, &h.consumer_group, &h.client_id, cmd).await
}

/// A request to a consumer with the admin request's code, fields and body.
fn pass_on(req: &RemotingCommand) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(req.code).with_body(req.body.clone());
    cmd.ext_fields = req.ext_fields.clone();
    cmd
}

/// Sends `cmd` to `client_id` of `group` and answers the admin with the consumer's answer.
async fn call_consumer(
    state: &BrokerContext,
    req: &RemotingCommand,
    group: &str,
    client_id: &str,
    cmd: RemotingCommand,
) -> Reply {
    let Some(channel) = state.consumers.find_channel(group, client_id) else {
        return Err(HandlerError::System(format!(
            "The Consumer <{group}> <{client_id}> not online"
        )));
    };
    match channel.conn.invoke(cmd, CALL_TIMEOUT).await {
        Ok(answer) => {
            let mut resp = RemotingCommand::response_to(req, answer.code, answer.remark);
            resp.ext_fields = answer.ext_fields;
            resp.body = answer.body;
            Ok(Some(resp))
        }
        Err(e @ RemotingError::Timeout { .. }) => Err(HandlerError::ConsumeTimeout(format!(
            "consumer <{group}> <{client_id}> Timeout: {e}"
        ))),
        Err(e) => Err(HandlerError::System(format!(
            "invoke consumer <{group}> <{client_id}> Exception: {e}"
        ))),
    }
}

/// CONSUME_MESSAGE_DIRECTLY (309): passed on to the client with the stored message found by
/// its msgId as the body.
pub(super) async fn consume_directly(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: ConsumeMessageDirectlyResultRequestHeader = header(&req)?;
    let Some(client_id) = h.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(HandlerError::System(
            "the custom field <clientId> is null".into(),
        ));
    };
    let msg_id = h.msg_id.as_deref().unwrap_or_default();
    let record = match decode_message_id(msg_id) {
        Ok((_, offset)) => state.store.message_by_offset(offset),
        Err(e) => return Err(HandlerError::System(format!("bad msgId <{msg_id}>: {e}"))),
    };
    let Some(record) = record else {
        return Err(HandlerError::System(format!(
            "can not find message by msgId <{msg_id}>"
        )));
    };
    let mut cmd = pass_on(&req).with_body(record);
    cmd = cmd.with_ext("brokerName", state.config().broker_name.as_str());
    if let Some(tc) = h.topic.as_deref().and_then(|t| state.topics.select(t)) {
        cmd = cmd.with_ext("topicSysFlag", tc.topic_sys_flag);
    }
    call_consumer(&state, &req, &h.consumer_group, client_id, cmd).await
}

/// Commits the group's offsets of the topic's queues (an explicit `offset`, else the first
/// message stored at or after `timestamp`, else the end when it is negative; without
/// `isForce` an offset only moves back) and tells every online client of the group:
/// INVOKE_BROKER_TO_RESET_OFFSET (222).
pub(super) async fn reset_offset(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: ResetOffsetRequestHeader = header(&req)?;
    let config = state.config();
    if config.is_slave() {
        return Err(HandlerError::System(
            "Can not reset offset in slave broker".into(),
        ));
    }
    let Some(tc) = state.topics.select(&h.topic) else {
        return Err(HandlerError::TopicNotExist(format!(
            "[reset-offset] topic not exist. topic={}",
            h.topic
        )));
    };
    let broker_name = &config.broker_name;
    let mut body = ResetOffsetBody::default();
    for q in 0..tc.read_queue_nums {
        if h.queue_id.is_some_and(|id| id >= 0 && id != q) {
            continue;
        }
        let offset = match h.offset.filter(|o| *o >= 0) {
            Some(o) => o,
            None => {
                let by_time = if h.timestamp < 0 {
                    state.store.max_offset(&h.topic, q)
                } else {
                    state.store.offset_by_time(&h.topic, q, h.timestamp)
                }
                .max(0);
                match state.offsets.query(&h.group, &h.topic, q) {
                    Some(current) if !h.is_force && current >= 0 => by_time.min(current),
                    _ => by_time,
                }
            }
        };
        state.offsets.commit(&h.group, &h.topic, q, offset);
        body.offset_table.insert(
            MessageQueue::new(h.topic.clone(), broker_name.clone(), q),
            offset,
        );
    }
    let encoded = body.encode().map_err(HandlerError::system)?;
    for (client_id, channel) in state.consumers.client_channels(&h.group) {
        let mut cmd = RemotingCommand::request(RequestCode::RESET_CONSUMER_CLIENT_OFFSET)
            .with_body(encoded.clone());
        h.write_to(&mut cmd);
        state.tasks.spawn(async move {
            match channel.conn.send_oneway(cmd).await {
                Ok(()) => tracing::info!(client = %client_id, "told a consumer to reset offsets"),
                Err(e) => {
                    tracing::warn!(client = %client_id, error = %e, "cannot tell a consumer to reset offsets")
                }
            }
        });
    }
    Ok(Some(success(&req).with_body(encoded)))
}

/// Asks each online client of the group (or only `clientAddr`, a client id, when given) for
/// its offsets of the topic; answers `{"consumerTable":{clientId:{mq:offset}},...}`:
/// INVOKE_BROKER_TO_GET_CONSUMER_STATUS (223).
pub(super) async fn consumer_status(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: GetConsumerStatusRequestHeader = header(&req)?;
    let clients = state.consumers.client_channels(&h.group);
    if clients.is_empty() {
        return Err(HandlerError::System(format!(
            "No Any Consumer online in the consumer group: [{}]",
            h.group
        )));
    }
    let only = h.client_addr.as_deref().filter(|c| !c.is_empty());
    let mut asks = JoinSet::new();
    for (client_id, channel) in clients {
        if only.is_some_and(|o| o != client_id) {
            continue;
        }
        let mut cmd = RemotingCommand::request(RequestCode::GET_CONSUMER_STATUS_FROM_CLIENT);
        GetConsumerStatusRequestHeader {
            topic: h.topic.clone(),
            group: h.group.clone(),
            client_addr: None,
        }
        .write_to(&mut cmd);
        asks.spawn(async move {
            let answer = channel.conn.invoke(cmd, STATUS_TIMEOUT).await;
            (client_id, answer)
        });
    }
    let mut table: BTreeMap<String, BTreeMap<MessageQueue, i64>> = BTreeMap::new();
    while let Some(joined) = asks.join_next().await {
        let Ok((client_id, answer)) = joined else {
            continue;
        };
        let offsets = match answer {
            Ok(resp) if resp.code == ResponseCode::SUCCESS => client_offsets(&resp.body),
            Ok(resp) => Err(format!("answered {}: {}", resp.code, resp.remark_str())),
            Err(e) => Err(e.to_string()),
        };
        match offsets {
            Ok(offsets) => {
                table.insert(client_id, offsets);
            }
            Err(e) => {
                tracing::warn!(client = %client_id, group = %h.group, error = %e, "cannot get a consumer's status")
            }
        }
    }
    let mut out = String::from("{\"consumerTable\":{");
    for (i, (client_id, offsets)) in table.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(client_id.as_str()).to_string());
        out.push(':');
        push_mq_map(&mut out, offsets)?;
    }
    out.push_str("},\"messageQueueTable\":{}}");
    Ok(Some(success(&req).with_body(out.into_bytes())))
}

/// The `messageQueueTable` of a consumer's GET_CONSUMER_STATUS_FROM_CLIENT answer.
fn client_offsets(body: &[u8]) -> Result<BTreeMap<MessageQueue, i64>, String> {
    let value = parse_fastjson(body).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    if let Some(table) = value.get("messageQueueTable").and_then(|t| t.as_object()) {
        for (key, offset) in table {
            let mq: MessageQueue = serde_json::from_str(key).map_err(|e| e.to_string())?;
            let offset = offset
                .as_i64()
                .ok_or_else(|| format!("offset of {key} is not a number"))?;
            out.insert(mq, offset);
        }
    }
    Ok(out)
}
