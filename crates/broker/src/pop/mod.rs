//! POP consumption (upstream 5.x): consumers that do not own queues pop messages, which stay
//! invisible for the pop's invisible time, and ack them; what is not acked in time comes back
//! through the group's POP retry topic (`%RETRY%<group>_<topic>`) with its reconsume count
//! raised, and goes to `%DLQ%<group>` once the count reaches the group's `retryMaxTimes` (the
//! one DLQ rule of send-back).
//!
//! **State.** An unordered pop of one queue is a checkpoint: the queue offsets handed out, the
//! pop time and the invisible time ([`table::CkTable`]). The checkpoint is appended to the
//! revive log (`rmq_sys_REVIVE_LOG_<cluster>`, `reviveQueueNum` queues, records in
//! [`record`]) *before* the group's consume offset moves past the popped messages, and every
//! ack is appended as well; so the revive log, replicated with the CommitLog, holds what is in
//! flight. The revive task ([`PopService::run_revive`], every `reviveInterval` ms) re-sends the
//! unacked messages of every checkpoint whose invisible time has passed, appends a batch ack
//! marking them done, and records in `consumerOffset.json` (group `CID_RMQ_SYS_REVIVE_GROUP`)
//! how far each revive queue holds nothing in flight. At start, [`PopService::recover`] reads
//! each revive queue from there and rebuilds the table.
//!
//! **Crash window.** Consume offsets are persisted every `flushConsumerOffsetInterval`; after
//! a `kill -9` a queue's offset may be older than the last pops, so messages popped (and maybe
//! acked) in that window are handed out again. Nothing is lost: a popped message is either
//! still in its queue ahead of the persisted offset or covered by a checkpoint in the revive
//! log. A revive interrupted by a crash re-sends its checkpoint's messages again.
//!
//! **FIFO.** An orderly pop hands out one batch per queue and blocks the queue for the group
//! until every message of the batch is acked (the consume offset then moves past it) or the
//! invisible time passes (the same messages are handed out again, their attempt count in
//! `orderCountInfo`). FIFO batches live in memory only ([`table::OrderTable`]): after a
//! restart a batch in flight is handed out again at once.
//!
//! **Acting master.** A slave acting as master (its master gone, `enableActingMaster`)
//! serves pops from its replica, but its CommitLog is the master's copy, so it journals
//! nothing: its checkpoints live in memory, the group's consume offset it commits (pushed to
//! the master by slave synchronisation) moves only up to the lowest popped offset not yet
//! acked or revived, and revived messages are sent to a live master of another group (as the
//! acting master's send-back does), which applies the DLQ rule. A slave crash therefore
//! hands out its in-flight messages again rather than losing them; so does the master after
//! its return, for messages still in flight at the slave then (the slave still takes their
//! acks and revives them).
//!
//! **Controller mode.** A slave elected master rebuilds the table from the revive log it
//! replicated ([`PopService::recover`]) before it takes pops, so it accepts acks and changes
//! of invisible time for the old master's handles and revives what was never acked; a master
//! that becomes a slave drops its table ([`PopService::forget_all`]), since the new master
//! revives those pops. FIFO batches are not journaled: after a failover a FIFO queue's batch
//! in flight is handed out again at once.

pub(crate) mod record;
pub(crate) mod table;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use remoting::broker_headers::SendMessageRequestHeader;
use remoting::message::{now_millis, MessageConst, MessageInner, Properties};
use remoting::pop::{
    pop_retry_topic, pop_retry_topic_v2, push_offset_info, push_order_counts, ExtraInfo,
    ORDER_REVIVE_QUEUE,
};
use remoting::protocol::perm;
use store::{AcceptAll, GetMessageStatus, MessageExt, MessageFilter};
use tokio::sync::watch;

use crate::cluster::send_to_live_master;
use crate::context::BrokerContext;
use crate::error::HandlerError;
use crate::topic::dlq_topic;
use table::{Checkpoint, CkKey, CkTable, OrderTable, Stale};

/// Consumer group whose offsets record the revive progress (upstream's name).
pub(crate) const REVIVE_GROUP: &str = "CID_RMQ_SYS_REVIVE_GROUP";
/// Most messages one pop hands out (upstream refuses more than 32).
pub(crate) const MAX_POP_NUMS: i32 = 32;
/// Records read per pass when rebuilding from the revive log.
const SCAN_BATCH: usize = 256;

/// The revive log topic of a cluster.
pub(crate) fn revive_topic(cluster: &str) -> String {
    format!("rmq_sys_REVIVE_LOG_{cluster}")
}

/// What one POP_MESSAGE asks for.
pub(crate) struct PopRequest<'a> {
    pub(crate) group: &'a str,
    pub(crate) topic: &'a str,
    /// -1: every readable queue.
    pub(crate) queue_id: i32,
    pub(crate) max: usize,
    pub(crate) invisible_time: i64,
    /// 0 (MIN): a queue without an offset starts at its first message; 1 (MAX): at its last.
    pub(crate) init_mode: i32,
    pub(crate) order: bool,
    pub(crate) read_queue_nums: i32,
    pub(crate) filter: &'a (dyn MessageFilter + Sync),
}

/// The message an ack or a change of invisible time names.
pub(crate) struct Receipt<'a> {
    pub(crate) group: &'a str,
    /// The real topic (the retry topic for a retried message).
    pub(crate) topic: &'a str,
    pub(crate) queue_id: i32,
    /// The message's queue offset.
    pub(crate) offset: i64,
    pub(crate) handle: &'a ExtraInfo,
}

/// What one pop handed out.
#[derive(Default)]
pub(crate) struct Popped {
    pub(crate) pop_time: i64,
    pub(crate) invisible_time: i64,
    pub(crate) revive_qid: i32,
    /// Messages left behind the popped ones in the queues looked at.
    pub(crate) rest_num: i64,
    pub(crate) start_offset_info: String,
    pub(crate) msg_offset_info: String,
    pub(crate) order_count_info: String,
    /// Stored records, retry messages re-encoded under the topic asked for with `POP_CK`.
    pub(crate) records: Vec<Bytes>,
}

/// Owner of POP state: checkpoints, FIFO batches, queue locks and the revive task.
pub(crate) struct PopService {
    cks: Mutex<CkTable>,
    orders: Mutex<OrderTable>,
    /// (group, topic, queue) being popped now; a second pop skips the queue (upstream's
    /// `QueueLockManager.tryLock`).
    busy: Mutex<HashSet<(String, String, i32)>>,
    next_revive_qid: AtomicU32,
    /// Pops and notifications held by long polling now (capped by `maxPopPollingSize`).
    held: AtomicUsize,
    /// Pops held now per (group, topic, queue as asked, -1 for all): what POLLING_INFO
    /// reports. Touched only when a pop is held, never on the pop path itself.
    held_pops: Mutex<HashMap<(String, String, i32), usize>>,
    /// On an acting master: the next offset to pop per (group, topic, queue), ahead of the
    /// committed offset while messages are in flight.
    cursors: Mutex<HashMap<(String, String, i32), i64>>,
}

/// Releases a queue lock when dropped.
struct QueueLock<'a> {
    busy: &'a Mutex<HashSet<(String, String, i32)>>,
    key: (String, String, i32),
}

impl Drop for QueueLock<'_> {
    fn drop(&mut self) {
        self.busy.lock().remove(&self.key);
    }
}

/// One held pop's or notification's slot, released when dropped.
pub(crate) struct HeldPop<'a> {
    service: &'a PopService,
    /// Set for a pop: its (group, topic, queue) count in `held_pops`.
    key: Option<(String, String, i32)>,
}

impl Drop for HeldPop<'_> {
    fn drop(&mut self) {
        self.service.held.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key.take() {
            let mut held = self.service.held_pops.lock();
            if let Some(n) = held.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&key);
                }
            }
        }
    }
}

impl PopService {
    pub(crate) fn new() -> PopService {
        PopService {
            cks: Mutex::new(CkTable::default()),
            orders: Mutex::new(OrderTable::default()),
            busy: Mutex::new(HashSet::new()),
            next_revive_qid: AtomicU32::new(0),
            held: AtomicUsize::new(0),
            held_pops: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more held notification, or `None` when `max` pops and notifications
    /// are held (answer POLLING_FULL).
    pub(crate) fn try_hold(&self, max: usize) -> Option<HeldPop<'_>> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= max {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(HeldPop {
            service: self,
            key: None,
        })
    }

    /// A slot for one more held pop of `r` (counted for [`Self::polling_num`]), or `None`
    /// when `max` pops and notifications are held.
    pub(crate) fn try_hold_pop(&self, max: usize, r: &PopRequest<'_>) -> Option<HeldPop<'_>> {
        let mut slot = self.try_hold(max)?;
        let key = (r.group.to_string(), r.topic.to_string(), r.queue_id);
        *self.held_pops.lock().entry(key.clone()).or_insert(0) += 1;
        slot.key = Some(key);
        Some(slot)
    }

    /// Pops of `group` on `topic` held by long polling now, counted by the queue they asked
    /// for (`queue_id` -1: pops of every queue), as upstream's POLLING_INFO reports them.
    pub(crate) fn polling_num(&self, group: &str, topic: &str, queue_id: i32) -> usize {
        let key = (group.to_string(), topic.to_string(), queue_id);
        self.held_pops.lock().get(&key).copied().unwrap_or(0)
    }

    fn try_lock(&self, group: &str, topic: &str, queue_id: i32) -> Option<QueueLock<'_>> {
        let key = (group.to_string(), topic.to_string(), queue_id);
        if !self.busy.lock().insert(key.clone()) {
            return None;
        }
        Some(QueueLock {
            busy: &self.busy,
            key,
        })
    }

    /// The group's POP retry topic for `topic`, under the configured naming.
    pub(crate) fn retry_topic(ctx: &BrokerContext, topic: &str, group: &str) -> String {
        if ctx.config().enable_retry_topic_v2 {
            pop_retry_topic_v2(topic, group)
        } else {
            pop_retry_topic(topic, group)
        }
    }

    /// Pops up to `r.max` messages: from the group's retry topic first with probability
    /// `popFromRetryProbability` %, then the topic's queues (one, or all from a random one),
    /// then the retry topic if there is room left. FIFO pops never read the retry topic.
    pub(crate) async fn pop(
        &self,
        ctx: &BrokerContext,
        r: &PopRequest<'_>,
    ) -> Result<Popped, HandlerError> {
        let (revive_num, retry_probability) = {
            let c = ctx.config();
            (
                c.revive_queue_num.max(1) as u32,
                c.pop_from_retry_probability,
            )
        };
        let pop_time = now_millis();
        let revive_qid = if r.order {
            ORDER_REVIVE_QUEUE
        } else {
            (self.next_revive_qid.fetch_add(1, Ordering::Relaxed) % revive_num) as i32
        };
        let mut out = Popped {
            pop_time,
            invisible_time: r.invisible_time,
            revive_qid,
            ..Popped::default()
        };
        let (random, retry_first) = {
            let mut rng = rand::thread_rng();
            let random: i32 = rng.gen_range(0..100);
            (random, random < retry_probability)
        };
        let retry = Self::retry_topic(ctx, r.topic, r.group);
        if !ctx.config().is_slave() && ctx.topics.select(&retry).is_none() {
            // Created with the group's first pop (upstream creates it at the first revive), so
            // that the NameServer and the admin tools know the group pops this topic.
            ctx.topics
                .create_if_missing(&retry, 1, perm::PERM_READ | perm::PERM_WRITE, 0)?;
        }
        if retry_first && !r.order {
            self.pop_retry(ctx, r, &retry, &mut out).await?;
        }
        if r.queue_id < 0 {
            let n = r.read_queue_nums.max(0);
            for i in 0..n {
                let q = (random + i) % n;
                self.pop_queue(ctx, r, r.topic, q, false, &mut out).await?;
            }
        } else {
            self.pop_queue(ctx, r, r.topic, r.queue_id, false, &mut out)
                .await?;
        }
        if !retry_first && !r.order && out.records.len() < r.max {
            self.pop_retry(ctx, r, &retry, &mut out).await?;
        }
        Ok(out)
    }

    async fn pop_retry(
        &self,
        ctx: &BrokerContext,
        r: &PopRequest<'_>,
        retry: &str,
        out: &mut Popped,
    ) -> Result<(), HandlerError> {
        let Some(tc) = ctx.topics.select(retry) else {
            return Ok(());
        };
        for q in 0..tc.read_queue_nums {
            self.pop_queue(ctx, r, retry, q, true, out).await?;
        }
        Ok(())
    }

    /// The queue offset a group's pop starts at; a group without one gets the init offset
    /// (committed, as upstream does).
    fn pop_offset(
        &self,
        ctx: &BrokerContext,
        group: &str,
        topic: &str,
        q: i32,
        init_mode: i32,
    ) -> i64 {
        let committed = self.committed_or_init(ctx, group, topic, q, init_mode);
        if !ctx.config().is_slave() {
            return committed;
        }
        let key = (group.to_string(), topic.to_string(), q);
        self.cursors
            .lock()
            .get(&key)
            .map_or(committed, |c| (*c).max(committed))
    }

    fn committed_or_init(
        &self,
        ctx: &BrokerContext,
        group: &str,
        topic: &str,
        q: i32,
        init_mode: i32,
    ) -> i64 {
        let init = || {
            if init_mode == 0 || topic.starts_with(remoting::message::RETRY_GROUP_TOPIC_PREFIX) {
                ctx.store.min_offset(topic, q)
            } else {
                (ctx.store.max_offset(topic, q) - 1).max(0)
            }
        };
        ctx.offsets
            .query_or_init(group, topic, q, init, ctx.config().is_slave())
    }

    /// On an acting master: commits the queue's offset up to its lowest popped message not
    /// yet acked or revived (or its pop cursor when none is in flight).
    fn settle_slave_offset(&self, ctx: &BrokerContext, group: &str, topic: &str, q: i32) {
        let key = (group.to_string(), topic.to_string(), q);
        let Some(cursor) = self.cursors.lock().get(&key).copied() else {
            return;
        };
        let low = self
            .cks
            .lock()
            .lowest_unacked(group, topic, q)
            .map_or(cursor, |o| o.min(cursor));
        if ctx.offsets.query(group, topic, q).is_none_or(|c| c < low) {
            ctx.offsets.commit_on_slave(group, topic, q, low);
        }
    }

    async fn pop_queue(
        &self,
        ctx: &BrokerContext,
        r: &PopRequest<'_>,
        topic: &str,
        q: i32,
        is_retry: bool,
        out: &mut Popped,
    ) -> Result<(), HandlerError> {
        let mut offset = self.pop_offset(ctx, r.group, topic, q, r.init_mode);
        if out.records.len() >= r.max {
            out.rest_num += (ctx.store.max_offset(topic, q) - offset).max(0);
            return Ok(());
        }
        let Some(_lock) = self.try_lock(r.group, topic, q) else {
            out.rest_num += (ctx.store.max_offset(topic, q) - offset).max(0);
            return Ok(());
        };
        // Read again under the lock: another pop may have moved it.
        offset = self.pop_offset(ctx, r.group, topic, q, r.init_mode);
        if r.order && self.orders.lock().blocked(r.group, topic, q, out.pop_time) {
            return Ok(());
        }
        let want = r.max - out.records.len();
        let mut got = ctx
            .store
            .get_messages(topic, q, offset, want, usize::MAX, r.filter);
        if matches!(
            got.status,
            GetMessageStatus::OffsetTooSmall
                | GetMessageStatus::OffsetOverflowBadly
                | GetMessageStatus::OffsetFoundNull
        ) && got.next_begin_offset != offset
        {
            // The stored offset is outside the queue (expired files, a reset): start over
            // where the store says.
            tracing::warn!(
                group = r.group,
                topic,
                queue = q,
                from = offset,
                to = got.next_begin_offset,
                "pop offset corrected"
            );
            offset = got.next_begin_offset;
            commit(ctx, r.group, topic, q, offset);
            got = ctx
                .store
                .get_messages(topic, q, offset, want, usize::MAX, r.filter);
        }
        out.rest_num += (got.max_offset - got.next_begin_offset).max(0);
        if got.messages.is_empty() {
            if got.next_begin_offset > offset {
                // Filtered out: nothing to hand out below the next offset.
                self.advance(ctx, r.group, topic, q, got.next_begin_offset);
            }
            return Ok(());
        }
        let offsets = got.message_queue_offsets.clone();
        if r.order {
            let attempts = self.orders.lock().start(
                (r.group.to_string(), topic.to_string(), q),
                out.pop_time,
                r.invisible_time,
                offsets.clone(),
            );
            push_order_counts(&mut out.order_count_info, topic, q, &offsets, &attempts);
        } else {
            let ck = Checkpoint {
                key: CkKey {
                    group: r.group.to_string(),
                    topic: topic.to_string(),
                    queue_id: q,
                    start_offset: offset,
                    pop_time: out.pop_time,
                },
                invisible_time: r.invisible_time,
                offsets: offsets.clone(),
                acked: 0,
                revive_qid: out.revive_qid,
                revive_offset: None,
            };
            self.cks.lock().insert(ck.clone());
            if !ctx.config().is_slave() {
                let body = record::encode_ck(&ck, &ctx.config().broker_name);
                match self.append(ctx, out.revive_qid, record::CK_TAG, body).await {
                    Ok(at) => self.cks.lock().set_revive_offset(&ck.key, at),
                    Err(e) => {
                        self.cks.lock().remove(&ck.key);
                        tracing::warn!(group = r.group, topic, queue = q, error = %e, "pop checkpoint not written; queue skipped");
                        return Err(e);
                    }
                }
            }
            self.advance(ctx, r.group, topic, q, got.next_begin_offset);
        }
        push_offset_info(&mut out.start_offset_info, topic, q, &offset.to_string());
        let list: Vec<String> = offsets.iter().map(|o| o.to_string()).collect();
        push_offset_info(&mut out.msg_offset_info, topic, q, &list.join(","));
        ctx.stats
            .got_messages
            .fetch_add(got.messages.len() as u64, Ordering::Relaxed);
        ctx.metrics.record_out(
            r.topic,
            r.group,
            got.messages.len() as u64,
            got.buffer_total_size as u64,
        );
        if !is_retry {
            out.records.extend(got.messages);
            return Ok(());
        }
        let broker_name = ctx.config().broker_name.clone();
        for (rec, qo) in got.messages.iter().zip(&offsets) {
            let Ok(mut m) = MessageExt::decode(rec) else {
                tracing::warn!(
                    topic,
                    queue = q,
                    offset = qo,
                    "retry record does not decode; skipped"
                );
                continue;
            };
            let handle = ExtraInfo {
                ck_queue_offset: offset,
                pop_time: out.pop_time,
                invisible_time: r.invisible_time,
                revive_qid: out.revive_qid,
                retry: remoting::pop::retry_mark(topic),
                broker_name: broker_name.clone(),
                queue_id: q,
                queue_offset: Some(*qo),
            };
            let mut props = Properties::parse(&m.properties);
            if !props.contains(MessageConst::PROPERTY_POP_CK) {
                props.insert(MessageConst::PROPERTY_POP_CK, handle.to_string());
            }
            m.properties = props.to_wire_string();
            m.topic = r.topic.to_string();
            match m.to_record() {
                Ok(b) => out.records.push(b),
                Err(e) => {
                    tracing::warn!(topic, queue = q, offset = qo, error = %e, "retry record not re-encoded; skipped")
                }
            }
        }
        Ok(())
    }
    /// Moves the group's pop position past what was just handed out (or filtered out): the
    /// committed offset on a master, the pop cursor on an acting master.
    fn advance(&self, ctx: &BrokerContext, group: &str, topic: &str, q: i32, next: i64) {
        if ctx.config().is_slave() {
            self.cursors
                .lock()
                .insert((group.to_string(), topic.to_string(), q), next);
            self.settle_slave_offset(ctx, group, topic, q);
        } else {
            ctx.offsets.commit(group, topic, q, next);
        }
    }

    /// Appends one record to revive queue `qid`; returns its queue offset there.
    async fn append(
        &self,
        ctx: &BrokerContext,
        qid: i32,
        tag: &str,
        body: Vec<u8>,
    ) -> Result<i64, HandlerError> {
        let cluster = ctx.config().broker_cluster_name.clone();
        let topic = revive_topic(&cluster);
        let revive_num = ctx.config().revive_queue_num.max(1);
        ctx.topics
            .create_if_missing(&topic, revive_num, perm::PERM_READ | perm::PERM_WRITE, 0)?;
        let mut props = Properties::new();
        props.insert(MessageConst::PROPERTY_TAGS, tag);
        let host = ctx.store_host();
        let msg = MessageInner {
            topic,
            queue_id: qid,
            flag: 0,
            body: Bytes::from(body),
            properties: props.to_wire_string(),
            sys_flag: 0,
            born_timestamp: now_millis(),
            born_host: host,
            store_host: host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        };
        let r = ctx.put(vec![msg]).await?;
        Ok(r.queue_offset)
    }

    /// ACK_MESSAGE of one message by its handle. A handle whose pop is no longer in flight,
    /// an offset not in it, or a message acked twice is refused (`NO_MESSAGE` with the
    /// reason), never silently accepted.
    pub(crate) async fn ack(
        &self,
        ctx: &BrokerContext,
        r: &Receipt<'_>,
    ) -> Result<(), HandlerError> {
        match self.ack_all(ctx, r, &[r.offset]).await?.pop() {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// Acks messages of one pop of one queue (the handle's; `r.offset` is not used): every
    /// ack that applies is applied and journaled in one record; returns the refusals (stale
    /// acks, as [`Self::ack`] words them).
    pub(crate) async fn ack_all(
        &self,
        ctx: &BrokerContext,
        r: &Receipt<'_>,
        offsets: &[i64],
    ) -> Result<Vec<HandlerError>, HandlerError> {
        let (group, topic, queue_id, handle) = (r.group, r.topic, r.queue_id, r.handle);
        let stale = |offset: i64, s: Stale| {
            HandlerError::NoMessage(format!(
                "receipt handle is stale: {}, group={group} topic={topic} queueId={queue_id} offset={offset} handle={handle}",
                s.reason()
            ))
        };
        let mut refused = Vec::new();
        if handle.is_order() {
            let key = (group.to_string(), topic.to_string(), queue_id);
            for offset in offsets {
                let done = self.orders.lock().ack(&key, handle.pop_time, *offset);
                match done {
                    Ok(Some(next)) => {
                        commit(ctx, group, topic, queue_id, next);
                        ctx.waiters.notify(topic, queue_id);
                    }
                    Ok(None) => {}
                    Err(s) => refused.push(stale(*offset, s)),
                }
            }
            return Ok(refused);
        }
        let key = CkKey {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
            start_offset: handle.ck_queue_offset,
            pop_time: handle.pop_time,
        };
        let mut acked = Vec::with_capacity(offsets.len());
        {
            let mut cks = self.cks.lock();
            for offset in offsets {
                match cks.ack(&key, *offset) {
                    Ok(()) => acked.push(*offset),
                    Err(s) => refused.push(stale(*offset, s)),
                }
            }
        }
        if acked.is_empty() {
            return Ok(refused);
        }
        if ctx.config().is_slave() {
            self.settle_slave_offset(ctx, group, topic, queue_id);
            return Ok(refused);
        }
        let (tag, body) = record::encode_ack(&key, &acked, &ctx.config().broker_name);
        self.append(ctx, handle.revive_qid, tag, body).await?;
        Ok(refused)
    }

    /// CHANGE_MESSAGE_INVISIBLETIME: the message becomes invisible for `invisible_time` from
    /// now, under a new handle (a new one-message checkpoint, written before the old
    /// handle's message is acked). Returns the new pop time. Stale handles are refused as
    /// by [`Self::ack`].
    pub(crate) async fn change_invisible_time(
        &self,
        ctx: &BrokerContext,
        r: &Receipt<'_>,
        invisible_time: i64,
    ) -> Result<i64, HandlerError> {
        let (group, topic, queue_id, handle, offset) =
            (r.group, r.topic, r.queue_id, r.handle, r.offset);
        let now = now_millis();
        let stale = |s: Stale| {
            HandlerError::NoMessage(format!(
                "receipt handle is stale: {}, group={group} topic={topic} queueId={queue_id} offset={offset} handle={handle}",
                s.reason()
            ))
        };
        if handle.is_order() {
            let key = (group.to_string(), topic.to_string(), queue_id);
            self.orders
                .lock()
                .extend(&key, handle.pop_time, now, invisible_time)
                .map_err(stale)?;
            return Ok(now);
        }
        let old = CkKey {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
            start_offset: handle.ck_queue_offset,
            pop_time: handle.pop_time,
        };
        self.cks.lock().is_unacked(&old, offset).map_err(stale)?;
        let ck = Checkpoint {
            key: CkKey {
                start_offset: offset,
                pop_time: now,
                ..old.clone()
            },
            invisible_time,
            offsets: vec![offset],
            acked: 0,
            revive_qid: handle.revive_qid,
            revive_offset: None,
        };
        self.cks.lock().insert(ck.clone());
        if ctx.config().is_slave() {
            let _ = self.cks.lock().ack(&old, offset);
            return Ok(now);
        }
        let body = record::encode_ck(&ck, &ctx.config().broker_name);
        match self
            .append(ctx, handle.revive_qid, record::CK_TAG, body)
            .await
        {
            Ok(at) => self.cks.lock().set_revive_offset(&ck.key, at),
            Err(e) => {
                self.cks.lock().remove(&ck.key);
                return Err(e);
            }
        }
        // The old handle's message is now covered by the new checkpoint.
        if self.cks.lock().ack(&old, offset).is_ok() {
            let (tag, body) = record::encode_ack(&old, &[offset], &ctx.config().broker_name);
            self.append(ctx, handle.revive_qid, tag, body).await?;
        }
        Ok(now)
    }

    /// Messages popped from one queue and neither acked nor revived (FIFO: handed out,
    /// not acked and still invisible).
    pub(crate) fn inflight(&self, group: &str, topic: &str, queue_id: i32) -> usize {
        self.cks.lock().inflight(group, topic, queue_id)
            + self
                .orders
                .lock()
                .inflight(group, topic, queue_id, now_millis())
    }

    /// Whether something could be popped now for the request: a queue (or the retry topic)
    /// holds messages past the group's offset, and for FIFO the queue is not blocked.
    pub(crate) fn has_backlog(&self, ctx: &BrokerContext, r: &PopRequest<'_>) -> bool {
        let now = now_millis();
        let queues: Vec<i32> = if r.queue_id < 0 {
            (0..r.read_queue_nums).collect()
        } else {
            vec![r.queue_id]
        };
        let ready = |topic: &str, q: i32| {
            let offset = ctx.offsets.query(r.group, topic, q).unwrap_or(-1);
            let max = ctx.store.max_offset(topic, q);
            max > offset.max(if r.init_mode == 0 {
                ctx.store.min_offset(topic, q)
            } else {
                max - 1
            }) && !(r.order && self.orders.lock().blocked(r.group, topic, q, now))
        };
        if queues.iter().any(|q| ready(r.topic, *q)) {
            return true;
        }
        if r.order {
            return false;
        }
        let retry = Self::retry_topic(ctx, r.topic, r.group);
        ctx.topics
            .select(&retry)
            .is_some_and(|tc| (0..tc.read_queue_nums).any(|q| ready(&retry, q)))
    }

    /// Drops every checkpoint, FIFO batch and acting-master cursor: for a master that became
    /// a slave in controller mode, whose in-flight pops the new master rebuilt from the
    /// replicated revive log (reviving them here too would hand them out twice).
    pub(crate) fn forget_all(&self) {
        *self.cks.lock() = CkTable::default();
        *self.orders.lock() = OrderTable::default();
        self.cursors.lock().clear();
    }

    /// Rebuilds the checkpoint table from the revive log, from each revive queue's recorded
    /// progress to its end. Called at start before requests are served, and in controller
    /// mode when this broker becomes master, before it takes pops.
    pub(crate) fn recover(&self, ctx: &BrokerContext) {
        let (topic, n) = {
            let c = ctx.config();
            (
                revive_topic(&c.broker_cluster_name),
                c.revive_queue_num.max(1),
            )
        };
        let mut cks = self.cks.lock();
        let (mut n_ck, mut n_ack) = (0usize, 0usize);
        for qid in 0..n {
            let mut from = ctx
                .offsets
                .query(REVIVE_GROUP, &topic, qid)
                .unwrap_or(0)
                .max(ctx.store.min_offset(&topic, qid));
            loop {
                let got =
                    ctx.store
                        .get_messages(&topic, qid, from, SCAN_BATCH, usize::MAX, &AcceptAll);
                if got.messages.is_empty() {
                    break;
                }
                for (rec, at) in got.messages.iter().zip(&got.message_queue_offsets) {
                    let Ok(m) = MessageExt::decode(rec) else {
                        continue;
                    };
                    let tag = m.property(MessageConst::PROPERTY_TAGS).unwrap_or("");
                    match record::decode(tag, &m.body, qid, *at) {
                        Some(record::ReviveRecord::Checkpoint(ck)) => {
                            n_ck += 1;
                            cks.insert(ck);
                        }
                        Some(record::ReviveRecord::Ack { key, offsets }) => {
                            n_ack += 1;
                            for o in offsets {
                                let _ = cks.ack(&key, o);
                            }
                        }
                        None => tracing::warn!(
                            revive_queue = qid,
                            offset = at,
                            tag,
                            "revive log record not understood; skipped"
                        ),
                    }
                }
                if got.next_begin_offset <= from {
                    break;
                }
                from = got.next_begin_offset;
            }
        }
        if n_ck > 0 {
            tracing::info!(
                checkpoints = n_ck,
                acks = n_ack,
                in_flight = cks.len(),
                "POP state rebuilt from the revive log"
            );
        }
    }

    /// Revives every checkpoint due at `now` and records the revive progress. Returns how
    /// many messages were re-sent (retry or DLQ).
    pub(crate) async fn revive_due(&self, ctx: &BrokerContext, now: i64) -> usize {
        let due = self.cks.lock().take_due(now);
        let mut sent = 0;
        for ck in due {
            match self.revive_one(ctx, &ck).await {
                Ok(n) => sent += n,
                Err(e) => {
                    tracing::warn!(group = %ck.key.group, topic = %ck.key.topic, error = %e, "revive failed; retried at the next pass");
                    self.cks.lock().insert(ck);
                }
            }
        }
        self.record_progress(ctx);
        sent
    }

    async fn revive_one(
        &self,
        ctx: &BrokerContext,
        ck: &Checkpoint,
    ) -> Result<usize, HandlerError> {
        let unacked = ck.unacked();
        let auto_group = ctx.config().auto_create_subscription_group;
        let max = ctx
            .groups
            .find(&ck.key.group, auto_group)?
            .map_or(16, |g| g.retry_max_times);
        let mut sent = 0;
        for offset in &unacked {
            let got = ctx.store.get_messages(
                &ck.key.topic,
                ck.key.queue_id,
                *offset,
                1,
                usize::MAX,
                &AcceptAll,
            );
            let Some(rec) = got
                .messages
                .first()
                .filter(|_| got.message_queue_offsets.first() == Some(offset))
            else {
                tracing::warn!(topic = %ck.key.topic, queue = ck.key.queue_id, offset, "popped message no longer in the store; not revived");
                continue;
            };
            let m = MessageExt::decode(rec).map_err(HandlerError::system)?;
            self.resend(ctx, ck, &m, max).await?;
            sent += 1;
        }
        if ctx.config().is_slave() {
            self.settle_slave_offset(ctx, &ck.key.group, &ck.key.topic, ck.key.queue_id);
        } else if !unacked.is_empty() {
            let (tag, body) = record::encode_ack(&ck.key, &unacked, &ctx.config().broker_name);
            self.append(ctx, ck.revive_qid, tag, body).await?;
        }
        Ok(sent)
    }

    /// Writes the retry copy of an unacked message, or its DLQ copy once its reconsume count
    /// reached `max`.
    async fn resend(
        &self,
        ctx: &BrokerContext,
        ck: &Checkpoint,
        m: &MessageExt,
        max: i32,
    ) -> Result<(), HandlerError> {
        let mut props = Properties::parse(&m.properties);
        if m.reconsume_times == 0 || !props.contains(MessageConst::PROPERTY_FIRST_POP_TIME) {
            props.insert(
                MessageConst::PROPERTY_FIRST_POP_TIME,
                ck.key.pop_time.to_string(),
            );
        }
        let origin_topic = if ck
            .key
            .topic
            .starts_with(remoting::message::RETRY_GROUP_TOPIC_PREFIX)
        {
            props
                .get(MessageConst::PROPERTY_RETRY_TOPIC)
                .map(str::to_string)
                .unwrap_or_else(|| ck.key.topic.clone())
        } else {
            ck.key.topic.clone()
        };
        if !props.contains(MessageConst::PROPERTY_RETRY_TOPIC) {
            props.insert(MessageConst::PROPERTY_RETRY_TOPIC, origin_topic.clone());
        }
        if !props.contains(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID) {
            props.insert(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID, m.msg_id());
        }
        if ctx.config().is_slave() {
            return self.forward(ctx, ck, m, props, max).await;
        }
        let to_dlq = m.reconsume_times >= max;
        let topic = if to_dlq {
            dlq_topic(&ck.key.group)
        } else if ck
            .key
            .topic
            .starts_with(remoting::message::RETRY_GROUP_TOPIC_PREFIX)
        {
            ck.key.topic.clone()
        } else {
            Self::retry_topic(ctx, &ck.key.topic, &ck.key.group)
        };
        ctx.topics
            .create_if_missing(&topic, 1, perm::PERM_READ | perm::PERM_WRITE, 0)?;
        let msg = MessageInner {
            topic,
            queue_id: 0,
            flag: m.flag,
            body: m.body.clone(),
            properties: props.to_wire_string(),
            sys_flag: m.sys_flag,
            born_timestamp: m.born_timestamp,
            born_host: m.born_host,
            store_host: ctx.store_host(),
            reconsume_times: m.reconsume_times + 1,
            prepared_transaction_offset: 0,
        };
        ctx.put(vec![msg]).await?;
        if to_dlq {
            tracing::info!(group = %ck.key.group, msg_id = %m.msg_id(), "popped message moved to the DLQ");
            ctx.metrics.record_dlq(&ck.key.group, &origin_topic);
        }
        Ok(())
    }
    /// An acting master's revive: the retry copy goes to a live master of another group
    /// (SEND_MESSAGE_V2 to the POP retry topic with the raised reconsume count and the
    /// group's maximum, so that the receiving master applies the DLQ rule).
    async fn forward(
        &self,
        ctx: &BrokerContext,
        ck: &Checkpoint,
        m: &MessageExt,
        props: Properties,
        max: i32,
    ) -> Result<(), HandlerError> {
        let topic = if ck
            .key
            .topic
            .starts_with(remoting::message::RETRY_GROUP_TOPIC_PREFIX)
        {
            ck.key.topic.clone()
        } else {
            Self::retry_topic(ctx, &ck.key.topic, &ck.key.group)
        };
        let header = SendMessageRequestHeader {
            producer_group: "CLIENT_INNER_PRODUCER".into(),
            topic,
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 1,
            queue_id: 0,
            sys_flag: m.sys_flag,
            born_timestamp: m.born_timestamp,
            flag: m.flag,
            properties: Some(props.to_wire_string()),
            reconsume_times: Some(m.reconsume_times + 1),
            unit_mode: Some(false),
            batch: Some(false),
            max_reconsume_times: Some(max),
            bname: None,
        };
        let target = send_to_live_master(ctx, &header, &m.body)
            .await
            .map_err(HandlerError::system)?;
        tracing::info!(group = %ck.key.group, target = %target, msg_id = %m.msg_id(), "acting master forwarded a revived message");
        Ok(())
    }

    /// Records, per revive queue, the offset below which nothing is in flight.
    fn record_progress(&self, ctx: &BrokerContext) {
        if ctx.config().is_slave() {
            return;
        }
        let (topic, n) = {
            let c = ctx.config();
            (
                revive_topic(&c.broker_cluster_name),
                c.revive_queue_num.max(1),
            )
        };
        if ctx.topics.select(&topic).is_none() {
            return;
        }
        let cks = self.cks.lock();
        for qid in 0..n {
            let done = match cks.lowest_revive_offset(qid) {
                Some(Some(o)) => o,
                Some(None) => continue,
                None => ctx.store.max_offset(&topic, qid),
            };
            if ctx.offsets.query(REVIVE_GROUP, &topic, qid) != Some(done) {
                ctx.offsets.commit(REVIVE_GROUP, &topic, qid, done);
            }
        }
    }
    /// The revive task: every `reviveInterval` ms, revives the due checkpoints (on a slave,
    /// those of its time as acting master); stops with the broker.
    pub(crate) async fn run_revive(
        self: Arc<Self>,
        ctx: Arc<BrokerContext>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let every = Duration::from_millis(ctx.config().revive_interval.max(10));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
            self.revive_due(&ctx, now_millis()).await;
        }
    }
}

/// Commits a group's offset: on a master as usual, on an acting master as a slave's commit
/// (pushed to the master while ahead of it).
fn commit(ctx: &BrokerContext, group: &str, topic: &str, q: i32, offset: i64) {
    if ctx.config().is_slave() {
        ctx.offsets.commit_on_slave(group, topic, q, offset);
    } else {
        ctx.offsets.commit(group, topic, q, offset);
    }
}
