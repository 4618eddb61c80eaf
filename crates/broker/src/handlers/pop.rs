//! POP requests (upstream 5.x): POP_MESSAGE (200050), ACK_MESSAGE (200051),
//! BATCH_ACK_MESSAGE (200151), CHANGE_MESSAGE_INVISIBLETIME (200053), NOTIFICATION
//! (200054) and POLLING_INFO (200055). Checks and answers as upstream's processors; the state is the POP service's
//! ([`crate::pop`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use remoting::broker_headers::EXPRESSION_TYPE_TAG;
use remoting::headers::CommandHeader;
use remoting::pop::{
    real_topic, AckMessageRequestHeader, BatchAckMessageRequestBody,
    ChangeInvisibleTimeRequestHeader, ChangeInvisibleTimeResponseHeader, ExtraInfo,
    NotificationRequestHeader, NotificationResponseHeader, PollingInfoRequestHeader,
    PollingInfoResponseHeader, PopMessageRequestHeader, PopMessageResponseHeader,
};
use remoting::protocol::{from_fastjson, perm, TopicConfig};
use remoting::server::Connection;
use remoting::{RemotingCommand, ResponseCode};

use super::pull::TagFilter;
use super::{header, HandlerError, Reply};
use crate::context::BrokerContext;
use crate::long_poll::ANY_QUEUE;
use crate::pop::{PopRequest, Popped, Receipt, MAX_POP_NUMS};
use crate::services::BrokerServices;

/// Longest hold of a pop or notification, whatever the client asks.
const MAX_POLL: Duration = Duration::from_secs(60);

/// Refuses pops and notifications on a slave that is not acting as master (acks and
/// invisible-time changes of what an acting master handed out stay welcome).
fn check_serves_pops(state: &BrokerContext) -> Result<(), HandlerError> {
    if state.serves_as_master() {
        return Ok(());
    }
    Err(HandlerError::NoPermission(format!(
        "the broker[{}] is a slave and its master is alive: pop from the master",
        state.broker_addr()
    )))
}

/// Refuses requests to a broker without read permission; returns the topic's config after
/// upstream's topic and queue checks (`allow_any_queue`: queue -1 means every queue).
fn check_topic(
    state: &BrokerContext,
    topic: &str,
    queue_id: i32,
    allow_any_queue: bool,
) -> Result<TopicConfig, HandlerError> {
    let broker_perm = state.config().broker_permission;
    if !perm::is_readable(broker_perm) {
        return Err(HandlerError::NoPermission(format!(
            "the broker[{}] pop message is forbidden",
            state.broker_addr()
        )));
    }
    let Some(tc) = state.topics.select(topic) else {
        return Err(HandlerError::TopicNotExist(format!(
            "topic[{topic}] not exist, apply first please!"
        )));
    };
    let bad_queue = if allow_any_queue {
        queue_id >= tc.read_queue_nums
    } else {
        queue_id < 0 || queue_id >= tc.read_queue_nums
    };
    if bad_queue {
        let e = format!(
            "queueId[{queue_id}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
            tc.read_queue_nums
        );
        return Err(if allow_any_queue {
            HandlerError::InvalidParameter(e)
        } else {
            HandlerError::MessageIllegal(e)
        });
    }
    Ok(tc)
}

fn check_group(state: &BrokerContext, group: &str) -> Result<(), HandlerError> {
    let auto = state.config().auto_create_subscription_group;
    match state.groups.find(group, auto)? {
        None => Err(HandlerError::GroupNotExist(format!(
            "subscription group [{group}] does not exist"
        ))),
        Some(g) if !g.consume_enable => Err(HandlerError::NoPermission(format!(
            "subscription group no permission, {group}"
        ))),
        Some(_) => Ok(()),
    }
}

fn poll_time(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64).min(MAX_POLL)
}

/// POP_MESSAGE (200050). Answers SUCCESS with the records, or POLLING_TIMEOUT when nothing
/// could be popped within `pollTime` (POLLING_FULL when too many pops are held).
pub(super) async fn pop(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: PopMessageRequestHeader = header(&req)?;
    check_serves_pops(&state)?;
    let tc = check_topic(&state, &h.topic, h.queue_id, true)?;
    if !perm::is_readable(tc.perm) {
        return Err(HandlerError::NoPermission(format!(
            "the topic[{}] peeking message is forbidden",
            h.topic
        )));
    }
    if h.max_msg_nums > MAX_POP_NUMS {
        return Err(HandlerError::InvalidParameter(format!(
            "the broker[{}] pop message's num is greater than {MAX_POP_NUMS}",
            state.broker_addr()
        )));
    }
    check_group(&state, &h.consumer_group)?;
    let exp_type = h.exp_type.as_deref().unwrap_or(EXPRESSION_TYPE_TAG);
    if !exp_type.is_empty() && exp_type != EXPRESSION_TYPE_TAG {
        return Err(HandlerError::System(format!(
            "The broker does not support consumer to filter message by {exp_type}"
        )));
    }
    let filter = TagFilter::parse(h.exp.as_deref().unwrap_or("*"));
    let r = PopRequest {
        group: &h.consumer_group,
        topic: &h.topic,
        queue_id: h.queue_id,
        max: h.max_msg_nums.max(1) as usize,
        invisible_time: h.invisible_time.max(0),
        init_mode: h.init_mode,
        order: h.order.unwrap_or(false),
        read_queue_nums: tc.read_queue_nums,
        filter: &filter,
    };
    let mut popped = state.pop.pop(&state, &r).await?;
    let hold = poll_time(h.poll_time);
    if popped.records.is_empty() && !hold.is_zero() {
        let max_held = state.config().max_pop_polling_size;
        let Some(_held) = state.pop.try_hold_pop(max_held, &r) else {
            return Ok(Some(answer(&req, ResponseCode::POLLING_FULL, popped)));
        };
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(ready) = wait_backlog(&state, &conn, &r, left).await else {
                return Ok(None);
            };
            if !ready {
                break;
            }
            popped = state.pop.pop(&state, &r).await?;
            if !popped.records.is_empty() {
                break;
            }
        }
    }
    let code = if popped.records.is_empty() {
        ResponseCode::POLLING_TIMEOUT
    } else {
        ResponseCode::SUCCESS
    };
    Ok(Some(answer(&req, code, popped)))
}

/// Waits up to `left` until something could be popped for `r` (long polling on its queue,
/// or on any queue of the topic); `None` when the connection closed meanwhile.
async fn wait_backlog(
    state: &BrokerServices,
    conn: &Connection,
    r: &PopRequest<'_>,
    left: Duration,
) -> Option<bool> {
    let closed = conn.clone();
    let queue = if r.queue_id < 0 {
        ANY_QUEUE
    } else {
        r.queue_id
    };
    let ready = state
        .waiters
        .wait_for_growth(
            r.topic,
            queue,
            left,
            || state.pop.has_backlog(state, r),
            async move { closed.closed().await },
            state.stop_signal(),
        )
        .await;
    (!conn.is_closed()).then_some(ready)
}

fn answer(req: &RemotingCommand, code: i32, p: Popped) -> RemotingCommand {
    let remark = if code == ResponseCode::SUCCESS {
        "FOUND"
    } else {
        "NO_MESSAGE_IN_QUEUE"
    };
    let mut resp = RemotingCommand::response_to(req, code, Some(remark.into()));
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    PopMessageResponseHeader {
        pop_time: p.pop_time,
        invisible_time: p.invisible_time,
        revive_qid: p.revive_qid,
        rest_num: p.rest_num,
        start_offset_info: non_empty(p.start_offset_info),
        msg_offset_info: non_empty(p.msg_offset_info),
        order_count_info: non_empty(p.order_count_info),
    }
    .write_to(&mut resp);
    if code == ResponseCode::SUCCESS {
        let mut body = BytesMut::with_capacity(p.records.iter().map(|r| r.len()).sum());
        for r in &p.records {
            body.extend_from_slice(r);
        }
        resp = resp.with_body(body.freeze());
    }
    resp
}

/// Upstream's offset check of an ack: the offset must be inside the queue.
fn check_offset(
    state: &BrokerContext,
    topic: &str,
    queue_id: i32,
    offset: i64,
) -> Result<(), HandlerError> {
    let min = state.store.min_offset(topic, queue_id);
    let max = state.store.max_offset(topic, queue_id);
    if offset < min || offset > max {
        return Err(HandlerError::NoMessage(format!(
            "offset is illegal, key:{topic}@{queue_id}, commit:{offset}, store:{min}~{max}"
        )));
    }
    Ok(())
}

/// The handle of an ack or a change of invisible time and the real topic it names (the
/// retry topic for a retried message), after upstream's topic, queue and offset checks.
fn checked_handle(
    state: &BrokerContext,
    (group, topic, queue_id): (&str, &str, i32),
    extra_info: &str,
    offset: i64,
) -> Result<(ExtraInfo, String), HandlerError> {
    let handle = ExtraInfo::parse(extra_info).map_err(HandlerError::BadHeader)?;
    let topic = real_topic(topic, group, handle.retry);
    check_topic(state, &topic, queue_id, false)?;
    check_offset(state, &topic, queue_id, offset)?;
    Ok((handle, topic))
}

/// ACK_MESSAGE (200051).
pub(super) async fn ack(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: AckMessageRequestHeader = header(&req)?;
    let (handle, topic) = checked_handle(
        &state,
        (&h.consumer_group, &h.topic, h.queue_id),
        &h.extra_info,
        h.offset,
    )?;
    let receipt = Receipt {
        group: &h.consumer_group,
        topic: &topic,
        queue_id: h.queue_id,
        offset: h.offset,
        handle: &handle,
    };
    state.pop.ack(&state, &receipt).await?;
    Ok(Some(RemotingCommand::response_to(
        &req,
        ResponseCode::SUCCESS,
        None,
    )))
}

/// BATCH_ACK_MESSAGE (200151): every ack of the body is applied; when some are stale the
/// answer is NO_MESSAGE listing them (the others stay applied).
pub(super) async fn batch_ack(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let body: BatchAckMessageRequestBody = if req.body.is_empty() {
        BatchAckMessageRequestBody::default()
    } else {
        from_fastjson(&req.body)
            .map_err(|e| HandlerError::System(format!("batch ack body does not parse: {e}")))?
    };
    if body.acks.is_empty() {
        return Err(HandlerError::NoMessage("no ack in the request".into()));
    }
    let mut refused = Vec::new();
    for b in &body.acks {
        let mark = b.retry.chars().next().unwrap_or('0');
        let topic = real_topic(&b.topic, &b.consumer_group, mark);
        check_topic(&state, &topic, b.queue_id, false)?;
        let handle = ExtraInfo {
            ck_queue_offset: b.start_offset,
            pop_time: b.pop_time,
            invisible_time: b.invisible_time,
            revive_qid: b.revive_queue_id,
            retry: mark,
            broker_name: body.broker_name.clone(),
            queue_id: b.queue_id,
            queue_offset: None,
        };
        let offsets = b.acked_offsets().map_err(HandlerError::BadHeader)?;
        let receipt = Receipt {
            group: &b.consumer_group,
            topic: &topic,
            queue_id: b.queue_id,
            offset: b.start_offset,
            handle: &handle,
        };
        for e in state.pop.ack_all(&state, &receipt, &offsets).await? {
            refused.push(e.to_string());
        }
    }
    if !refused.is_empty() {
        return Err(HandlerError::NoMessage(format!(
            "{} of the acks were refused: {}",
            refused.len(),
            refused.join("; ")
        )));
    }
    Ok(Some(RemotingCommand::response_to(
        &req,
        ResponseCode::SUCCESS,
        None,
    )))
}

/// CHANGE_MESSAGE_INVISIBLETIME (200053): answers the new handle's pop time, invisible time
/// and revive queue.
pub(super) async fn change_invisible_time(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: ChangeInvisibleTimeRequestHeader = header(&req)?;
    let (handle, topic) = checked_handle(
        &state,
        (&h.consumer_group, &h.topic, h.queue_id),
        &h.extra_info,
        h.offset,
    )?;
    let invisible = h.invisible_time.max(0);
    let receipt = Receipt {
        group: &h.consumer_group,
        topic: &topic,
        queue_id: h.queue_id,
        offset: h.offset,
        handle: &handle,
    };
    let pop_time = state
        .pop
        .change_invisible_time(&state, &receipt, invisible)
        .await?;
    let mut resp = RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None);
    ChangeInvisibleTimeResponseHeader {
        pop_time,
        invisible_time: invisible,
        revive_qid: handle.revive_qid,
    }
    .write_to(&mut resp);
    Ok(Some(resp))
}

/// NOTIFICATION (200054): whether a pop would find something, held up to `pollTime`.
pub(super) async fn notification(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: NotificationRequestHeader = header(&req)?;
    check_serves_pops(&state)?;
    let tc = check_topic(&state, &h.topic, h.queue_id, true)?;
    check_group(&state, &h.consumer_group)?;
    let filter = TagFilter::parse("*");
    let r = PopRequest {
        group: &h.consumer_group,
        topic: &h.topic,
        queue_id: h.queue_id,
        max: 1,
        invisible_time: 0,
        init_mode: 0,
        order: h.order.unwrap_or(false),
        read_queue_nums: tc.read_queue_nums,
        filter: &filter,
    };
    let mut has_msg = state.pop.has_backlog(&state, &r);
    let mut polling_full = false;
    let hold = poll_time(h.poll_time);
    if !has_msg && !hold.is_zero() {
        match state.pop.try_hold(state.config().max_pop_polling_size) {
            None => polling_full = true,
            Some(_held) => match wait_backlog(&state, &conn, &r, hold).await {
                Some(ready) => has_msg = ready,
                None => return Ok(None),
            },
        }
    }
    let mut resp = RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None);
    NotificationResponseHeader {
        has_msg,
        polling_full: Some(polling_full),
    }
    .write_to(&mut resp);
    Ok(Some(resp))
}

/// POLLING_INFO (200055): how many pops of the group on the topic's queue (as they asked for
/// it: -1 counts pops of every queue) are held by long polling now.
pub(super) async fn polling_info(
    state: Arc<BrokerServices>,
    _conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: PollingInfoRequestHeader = header(&req)?;
    check_topic(&state, &h.topic, h.queue_id, true)?;
    check_group(&state, &h.consumer_group)?;
    let polling_num = state
        .pop
        .polling_num(&h.consumer_group, &h.topic, h.queue_id);
    let mut resp = RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None);
    PollingInfoResponseHeader {
        polling_num: i32::try_from(polling_num).unwrap_or(i32::MAX),
    }
    .write_to(&mut resp);
    Ok(Some(resp))
}
