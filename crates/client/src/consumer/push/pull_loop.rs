//! The pull loop: one task per owned queue long-polls its broker (the one the last answer
//! suggested, else the master), holds back under flow control (too many or too large cached
//! messages, too wide an offset span, an orderly queue not locked), and hands what it pulls
//! to the concurrent or orderly consumption.

use std::sync::{Arc, Weak};
use std::time::Duration;

use remoting::broker_headers::{
    MessageQueue, PullMessageRequestHeader, PullSysFlag, SubscriptionData,
};
use remoting::message::MessageExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::concurrent::consume_concurrently;
use super::listener::MessageListener;
use super::orderly::consume_orderly;
use super::PushInner;
use crate::consumer::process_queue::ProcessQueue;
use crate::consumer::queues::{pause_unless_stopped, process_pull, PullStatus};

/// Pause when flow control holds a queue back.
const FLOW_CONTROL_DELAY: Duration = Duration::from_millis(50);
/// Pause before an orderly queue whose lock is missing is pulled again.
const NOT_LOCKED_DELAY: Duration = Duration::from_secs(3);

impl PushInner {
    /// The pull request header for `mq` at `offset`.
    fn pull_header(
        &self,
        mq: &MessageQueue,
        offset: i64,
        sub: &SubscriptionData,
        slave: bool,
    ) -> PullMessageRequestHeader {
        let commit_offset = if self.is_clustering() {
            self.offsets.snapshot(None).get(mq).copied().unwrap_or(0)
        } else {
            0
        };
        let mut sys_flag =
            PullSysFlag::build(commit_offset > 0, true, false, sub.class_filter_mode);
        if slave {
            sys_flag = PullSysFlag::clear_commit_offset(sys_flag);
        }
        PullMessageRequestHeader {
            consumer_group: self.config.consumer_group.clone(),
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            queue_offset: offset,
            max_msg_nums: self.config.pull_batch_size,
            sys_flag,
            commit_offset,
            suspend_timeout_millis: self.config.broker_suspend_max_time.as_millis() as i64,
            subscription: None,
            sub_version: sub.sub_version,
            expression_type: Some(sub.expression_type.clone()),
            max_msg_bytes: None,
            request_source: None,
            proxy_frowardclient_id: None,
            bname: Some(mq.broker_name.clone()),
        }
    }

    /// Hands pulled messages to the consume service.
    fn dispatch(
        self: &Arc<Self>,
        mq: &MessageQueue,
        pq: &Arc<ProcessQueue>,
        msgs: Vec<MessageExt>,
        first_dispatch: bool,
    ) {
        match &self.listener {
            MessageListener::Concurrently(_) => {
                for batch in msgs.chunks(self.config.consume_message_batch_max_size) {
                    self.instance.tasks.spawn(consume_concurrently(
                        self.clone(),
                        mq.clone(),
                        pq.clone(),
                        batch.to_vec(),
                    ));
                }
            }
            MessageListener::Orderly(_) => {
                if first_dispatch {
                    self.instance.tasks.spawn(consume_orderly(
                        self.clone(),
                        mq.clone(),
                        pq.clone(),
                    ));
                }
            }
        }
    }
}

/// Long-polls one queue until it is dropped (upstream `pullMessage` + its callback).
pub(super) async fn pull_loop(
    weak: Weak<PushInner>,
    mq: MessageQueue,
    pq: Arc<ProcessQueue>,
    mut next_offset: i64,
    stop: CancellationToken,
) {
    let pause = |d: Duration| pause_unless_stopped(&stop, d);
    loop {
        if stop.is_cancelled() || pq.is_dropped() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        pq.touch_pull();
        let cfg = &inner.config;
        if pq.msg_count() > cfg.pull_threshold_for_queue
            || pq.msg_size() > cfg.pull_threshold_size_for_queue
        {
            drop(inner);
            pause(FLOW_CONTROL_DELAY).await;
            continue;
        }
        let orderly = inner.listener.is_orderly();
        if !orderly && pq.max_span() > cfg.consume_concurrently_max_span {
            drop(inner);
            pause(FLOW_CONTROL_DELAY).await;
            continue;
        }
        if orderly && inner.is_clustering() && !pq.is_locked() {
            drop(inner);
            pause(NOT_LOCKED_DELAY).await;
            continue;
        }
        let Some(sub) = inner.subscriptions.get(&mq.topic).cloned() else {
            return;
        };
        let Some(found) = inner.pull_from.broker(&inner.instance, &mq) else {
            let _ = inner.instance.update_route(&mq.topic).await;
            let delay = inner.instance.config.pull_time_delay_when_exception;
            drop(inner);
            pause(delay).await;
            continue;
        };
        let header = inner.pull_header(&mq, next_offset, &sub, found.slave);
        let timeout = cfg.consumer_timeout_when_suspend;
        // A held long-poll must not delay shutdown.
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = inner.instance.api.pull_message(&found.addr, &header, timeout) => r,
        };
        let raw = match result {
            Ok(r) => r,
            Err(e) => {
                warn!(queue = %mq, broker = %found.addr, error = %e, "pull failed");
                let delay = inner.instance.config.pull_time_delay_when_exception;
                drop(inner);
                pause(delay).await;
                continue;
            }
        };
        inner
            .pull_from
            .remember(&mq, raw.header.suggest_which_broker_id);
        let result = process_pull(&mq, raw, &sub, Some(&cfg.consumer_group));
        match result.pull_status {
            PullStatus::Found => {
                next_offset = result.next_begin_offset;
                let msgs = result.msg_found_list;
                let first = pq.put_messages(msgs.clone());
                inner.dispatch(&mq, &pq, msgs, first);
            }
            PullStatus::NoNewMsg | PullStatus::NoMatchedMsg => {
                next_offset = result.next_begin_offset;
                if pq.msg_count() == 0 {
                    inner.offsets.update_offset(&mq, next_offset, true);
                }
            }
            PullStatus::OffsetIllegal => {
                // PULL_OFFSET_MOVED: restart the queue from the broker's offset.
                let to = result.next_begin_offset;
                warn!(queue = %mq, from = next_offset, to, "pull offset illegal; resetting");
                pq.set_dropped(true);
                if let Err(e) = inner.offsets.update_and_push(&mq, to).await {
                    warn!(queue = %mq, error = %e, "offset reset not stored");
                }
                inner.queues.lock().remove(&mq);
                inner.rebalance.notify_one();
                return;
            }
        }
        let interval = cfg.pull_interval;
        drop(inner);
        if !interval.is_zero() {
            pause(interval).await;
        }
    }
}
