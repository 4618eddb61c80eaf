//! Transactional messages. A half message waits in `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 (see the
//! send handler); END_TRANSACTION commits it (written to its real topic) or rolls it back,
//! and either way an op record (body: the half message's queue offset, tag `d`) goes to
//! `RMQ_SYS_TRANS_OP_HALF_TOPIC`. Every `transactionCheckInterval` a check pass walks the half
//! queue from its progress offset: resolved halves are skipped, halves younger than
//! `transactionTimeOut` end the pass, halves checked `transactionCheckMax` times are dropped,
//! and the others are written again (check count + 1) and CHECK_TRANSACTION_STATE is sent to a
//! producer of their group, which answers with END_TRANSACTION.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use remoting::broker_headers::{CheckTransactionStateRequestHeader, EndTransactionRequestHeader};
use remoting::headers::CommandHeader;
use remoting::message::{now_millis, MessageConst, MessageSysFlag, Properties};
use remoting::protocol::perm;
use remoting::{RemotingCommand, RequestCode};
use store::{AcceptAll, GetMessageStatus, GetResult, MessageExt, MessageInner, MessageStore};

use crate::context::{reput_inner, BrokerContext};
use crate::error::{HandlerError, PutError};
use crate::topic::{TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};

/// Group under which the check pass keeps its progress in the half queue.
pub(crate) const CHECK_GROUP: &str = "CID_SYS_RMQ_TRANS";
/// Tag of op records that resolve a half message.
const REMOVE_TAG: &str = "d";
/// Messages read per step of a check pass.
const BATCH: usize = 32;

/// The transaction service: which half messages are resolved (from op records), ending
/// transactions (END_TRANSACTION) and the check passes ([`run_checks`]). One per broker.
#[derive(Default)]
pub(crate) struct TransactionService {
    inner: Mutex<OpsInner>,
}

#[derive(Default)]
struct OpsInner {
    /// Queue offsets (in the half queue) of resolved halves.
    done: BTreeSet<i64>,
    /// Next op-queue offset to read.
    op_read: i64,
}

impl TransactionService {
    fn mark_done(&self, half_offset: i64) {
        self.inner.lock().done.insert(half_offset);
    }

    /// Reads op records written since the last call.
    fn refresh(&self, store: &MessageStore) {
        let mut inner = self.inner.lock();
        let mut op_read = inner.op_read;
        while let Some(got) = next_batch(store, TRANS_OP_HALF_TOPIC, &mut op_read) {
            for (record, qo) in got.messages.iter().zip(&got.message_queue_offsets) {
                if let Ok(ext) = MessageExt::decode(record) {
                    if let Some(half) = std::str::from_utf8(&ext.body)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                    {
                        inner.done.insert(half);
                    }
                }
                op_read = qo + 1;
            }
        }
        inner.op_read = op_read;
    }

    /// Whether the half at `offset` is resolved; forgets offsets below `progress`.
    fn is_done(&self, offset: i64) -> bool {
        self.inner.lock().done.contains(&offset)
    }

    /// Unresolved half messages per real topic, from the check progress on (the same records
    /// a check pass would look at), reading at most `limit` records: for the
    /// `rocketmq_half_messages` gauge.
    pub(crate) fn pending_by_topic(
        &self,
        state: &BrokerContext,
        limit: usize,
    ) -> BTreeMap<String, i64> {
        self.refresh(&state.store);
        let mut offset = check_progress(state);
        let mut pending = BTreeMap::new();
        let mut read = 0;
        while read < limit {
            let Some(got) = next_batch(&state.store, TRANS_HALF_TOPIC, &mut offset) else {
                break;
            };
            for (record, &qo) in got.messages.iter().zip(&got.message_queue_offsets) {
                read += 1;
                offset = qo + 1;
                if self.is_done(qo) {
                    continue;
                }
                let Ok(ext) = MessageExt::decode(record) else {
                    continue;
                };
                let props = Properties::parse(&ext.properties);
                if origin_offset(&props).is_some_and(|o| self.is_done(o)) {
                    continue;
                }
                let topic = props
                    .get(MessageConst::PROPERTY_REAL_TOPIC)
                    .unwrap_or_default()
                    .to_string();
                *pending.entry(topic).or_insert(0) += 1;
            }
        }
        pending
    }

    fn prune_below(&self, progress: i64) {
        let mut inner = self.inner.lock();
        inner.done = inner.done.split_off(&progress);
    }
}

impl TransactionService {
    /// Commits (`commit`: writes the half message at `half_offset` to its real topic and
    /// queue) or rolls back a half message of `producer_group`, then records it as resolved.
    /// A half already resolved (a second answer to a repeated check) is done already.
    pub(crate) async fn end(
        &self,
        state: &BrokerContext,
        h: &EndTransactionRequestHeader,
        commit: bool,
    ) -> Result<(), HandlerError> {
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
        if is_resolved(state, self, half.queue_offset, &props) {
            return Ok(());
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
        write_op(state, self, half.queue_offset, origin).await?;
        Ok(())
    }
}

/// Turns a transactional message into a half message: real topic and queue saved in
/// properties, written to queue 0 of the half topic as a plain (non-transactional) record.
/// The next batch of queue 0 of `topic` from `*offset`, which moves past a range retention
/// removed; `None` at the end (or on any other read status).
fn next_batch(store: &MessageStore, topic: &str, offset: &mut i64) -> Option<GetResult> {
    loop {
        let got = store.get_messages(topic, 0, *offset, BATCH, usize::MAX, &AcceptAll);
        match got.status {
            GetMessageStatus::Found => return Some(got),
            GetMessageStatus::OffsetTooSmall => *offset = got.next_begin_offset,
            _ => return None,
        }
    }
}

/// Where the check pass stands in the half queue: the committed progress, else the queue's
/// first offset.
fn check_progress(state: &BrokerContext) -> i64 {
    state
        .offsets
        .query(CHECK_GROUP, TRANS_HALF_TOPIC, 0)
        .unwrap_or_else(|| state.store.min_offset(TRANS_HALF_TOPIC, 0))
}

pub(crate) fn to_half(msg: &mut MessageInner, props: &mut Properties, producer_group: &str) {
    props.insert(MessageConst::PROPERTY_REAL_TOPIC, msg.topic.clone());
    props.insert(
        MessageConst::PROPERTY_REAL_QUEUE_ID,
        msg.queue_id.to_string(),
    );
    if !props.contains(MessageConst::PROPERTY_PRODUCER_GROUP) {
        props.insert(MessageConst::PROPERTY_PRODUCER_GROUP, producer_group);
    }
    msg.sys_flag =
        MessageSysFlag::reset_transaction_value(msg.sys_flag, MessageSysFlag::TRANSACTION_NOT_TYPE);
    msg.topic = TRANS_HALF_TOPIC.to_string();
    msg.queue_id = 0;
    msg.properties = props.to_wire_string();
}

/// Makes sure the transaction system topics exist (one queue each).
pub(crate) fn ensure_topics(state: &BrokerContext, topic: &str) {
    if let Err(e) = state
        .topics
        .create_if_missing(topic, 1, perm::PERM_READ | perm::PERM_WRITE, 0)
    {
        tracing::warn!(error = %e, topic, "cannot create transaction topic");
    }
}

/// Queue offset of the first copy of a half message that was written again for a check.
fn origin_offset(props: &Properties) -> Option<i64> {
    props
        .get(MessageConst::PROPERTY_TRANSACTION_PREPARED_QUEUE_OFFSET)
        .and_then(|o| o.parse().ok())
}

/// Whether the half message at `queue_offset` (with `props`) is already resolved.
fn is_resolved(
    state: &BrokerContext,
    tx: &TransactionService,
    queue_offset: i64,
    props: &Properties,
) -> bool {
    tx.refresh(&state.store);
    tx.is_done(queue_offset) || origin_offset(props).is_some_and(|o| tx.is_done(o))
}

/// Records that the half message at `half_queue_offset` is resolved (commit or rollback);
/// with `origin`, the first copy of a half written again for a check is resolved too, so no
/// copy is checked (or committed) again.
async fn write_op(
    state: &BrokerContext,
    tx: &TransactionService,
    half_queue_offset: i64,
    origin: Option<i64>,
) -> Result<(), PutError> {
    if let Some(origin) = origin.filter(|o| *o != half_queue_offset) {
        write_one_op(state, tx, origin).await?;
    }
    write_one_op(state, tx, half_queue_offset).await
}

async fn write_one_op(
    state: &BrokerContext,
    tx: &TransactionService,
    half_queue_offset: i64,
) -> Result<(), PutError> {
    ensure_topics(state, TRANS_OP_HALF_TOPIC);
    let mut props = Properties::new();
    props.insert(MessageConst::PROPERTY_TAGS, REMOVE_TAG);
    let mut op = MessageInner::new(TRANS_OP_HALF_TOPIC, 0, half_queue_offset.to_string());
    op.properties = props.to_wire_string();
    op.born_timestamp = now_millis();
    op.born_host = state.store_host();
    op.store_host = state.store_host();
    state.put(vec![op]).await?;
    tx.mark_done(half_queue_offset);
    Ok(())
}

/// Runs check passes until the broker stops.
pub(crate) async fn run_checks(state: Arc<BrokerContext>, tx: Arc<TransactionService>) {
    let mut stop = state.stop_signal();
    loop {
        let interval = Duration::from_millis(state.config().transaction_check_interval.max(10));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        check_once(&state, &tx).await;
    }
}

/// One pass over the half queue.
async fn check_once(state: &BrokerContext, tx: &TransactionService) {
    if state.config().is_slave() {
        return;
    }
    tx.refresh(&state.store);
    let (timeout_ms, check_max) = {
        let c = state.config();
        (c.transaction_time_out as i64, c.transaction_check_max)
    };
    let mut progress = check_progress(state);
    let start = progress;
    'pass: while let Some(got) = next_batch(&state.store, TRANS_HALF_TOPIC, &mut progress) {
        for (record, &qo) in got.messages.iter().zip(&got.message_queue_offsets) {
            if tx.is_done(qo) {
                progress = qo + 1;
                continue;
            }
            let Ok(ext) = MessageExt::decode(record) else {
                progress = qo + 1;
                continue;
            };
            let props = Properties::parse(&ext.properties);
            if origin_offset(&props).is_some_and(|o| tx.is_done(o)) {
                progress = qo + 1;
                continue;
            }
            let immunity = props
                .get(MessageConst::PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS)
                .and_then(|s| s.parse::<i64>().ok())
                .map(|s| s * 1000)
                .unwrap_or(timeout_ms);
            if now_millis() - ext.store_timestamp < immunity {
                break 'pass;
            }
            let checks: i32 = props
                .get(MessageConst::PROPERTY_TRANSACTION_CHECK_TIMES)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if checks >= check_max {
                tracing::warn!(msg_id = %ext.msg_id(), checks, "half message checked too often, dropped");
                progress = qo + 1;
                continue;
            }
            if let Err(e) = check_back(state, &ext, props, checks + 1).await {
                tracing::warn!(remark = %e.remark, "cannot re-write half message; check stops");
                break 'pass;
            }
            progress = qo + 1;
        }
    }
    if progress != start {
        state
            .offsets
            .commit(CHECK_GROUP, TRANS_HALF_TOPIC, 0, progress);
        tx.prune_below(progress);
    }
}

/// Writes the half again with a higher check count and asks a producer of its group.
async fn check_back(
    state: &BrokerContext,
    ext: &MessageExt,
    mut props: Properties,
    checks: i32,
) -> Result<(), PutError> {
    props.insert(
        MessageConst::PROPERTY_TRANSACTION_CHECK_TIMES,
        checks.to_string(),
    );
    let mut copy = reput_inner(ext, state.store_host());
    copy.properties = props.to_wire_string();
    let put = state.put(vec![copy]).await?;
    let group = props
        .get(MessageConst::PROPERTY_PRODUCER_GROUP)
        .unwrap_or("")
        .to_string();
    let channels = state.producers.channels(&group);
    let Some(channel) = channels.choose(&mut rand::thread_rng()).cloned() else {
        tracing::debug!(%group, "no producer online for a transaction check");
        return Ok(());
    };
    let Some(record) = state.store.message_by_offset(put.wrote_offset) else {
        return Ok(());
    };
    let Ok((mut client_ext, _)) = remoting::message::MessageExt::decode(&record, false) else {
        return Ok(());
    };
    if let Some(real) = props.get(MessageConst::PROPERTY_REAL_TOPIC) {
        client_ext.message.topic = real.to_string();
    }
    if let Some(q) = props
        .get(MessageConst::PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
    {
        client_ext.queue_id = q;
    }
    let mut body = BytesMut::new();
    if client_ext.encode(&mut body).is_err() {
        return Ok(());
    }
    let uniq = props
        .get(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
        .map(str::to_string);
    let header = CheckTransactionStateRequestHeader {
        topic: Some(client_ext.message.topic.clone()),
        tran_state_table_offset: put.queue_offset,
        commit_log_offset: put.wrote_offset,
        msg_id: uniq.clone(),
        transaction_id: uniq,
        offset_msg_id: Some(put.msg_id()),
        bname: Some(state.config().broker_name.clone()),
    };
    let mut cmd =
        RemotingCommand::request(RequestCode::CHECK_TRANSACTION_STATE).with_body(body.freeze());
    header.write_to(&mut cmd);
    let conn = channel.conn;
    state.tasks.spawn(async move {
        if let Err(e) = conn.send_oneway(cmd).await {
            tracing::debug!(error = %e, "cannot send transaction check");
        }
    });
    Ok(())
}
