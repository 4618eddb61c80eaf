//! Concurrent consumption: a pulled batch runs on the listener while other batches of the
//! same queue run too; failed messages are sent back (clustering) or dropped (broadcasting),
//! and the queue's offset moves to its lowest message still in flight.

use std::sync::Arc;

use remoting::broker_headers::MessageQueue;
use remoting::message::MessageExt;
use tracing::{error, warn};

use super::listener::{
    stamp_consume_start, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, MessageListener,
};
use super::PushInner;
use crate::consumer::process_queue::ProcessQueue;
use crate::consumer::send_back::{local_retry, send_back, SendBackOutcome};

impl PushInner {
    /// Concurrent consume result (upstream `processConsumeResult`); returns the messages
    /// whose send-back failed, to be consumed again locally (their offsets stay held).
    async fn process_concurrent_result(
        self: &Arc<Self>,
        status: ConsumeConcurrentlyStatus,
        ctx: &ConsumeConcurrentlyContext,
        mq: &MessageQueue,
        pq: &Arc<ProcessQueue>,
        msgs: Vec<MessageExt>,
    ) -> Vec<MessageExt> {
        let n = msgs.len() as i32;
        let ack_index = match status {
            ConsumeConcurrentlyStatus::ConsumeSuccess => ctx.ack_index.min(n - 1),
            ConsumeConcurrentlyStatus::ReconsumeLater => -1,
        };
        let failed_from = (ack_index + 1).max(0) as usize;
        let mut back_failed = Vec::new();
        if self.is_clustering() {
            for msg in msgs.iter().skip(failed_from) {
                if !pq.contains(msg.queue_offset) {
                    continue;
                }
                let outcome = send_back(
                    &self.instance,
                    &self.inner_producer,
                    mq,
                    msg,
                    &self.config.consumer_group,
                    ctx.delay_level_when_next_consume,
                    self.max_reconsume_times(),
                )
                .await;
                self.send_backs.record(&outcome);
                if let SendBackOutcome::Failed(_) = outcome {
                    back_failed.push(local_retry(msg));
                }
            }
        } else {
            for msg in msgs.iter().skip(failed_from) {
                warn!(
                    msg_id = msg.msg_id(),
                    "broadcasting: consumption failed, message dropped"
                );
            }
        }
        let done: Vec<i64> = msgs
            .iter()
            .map(|m| m.queue_offset)
            .filter(|o| !back_failed.iter().any(|b| b.queue_offset == *o))
            .collect();
        if let Some(offset) = pq.remove_messages(&done) {
            if !pq.is_dropped() {
                self.offsets.update_offset(mq, offset, true);
            }
        }
        back_failed
    }
}

/// Runs the listener on a batch, then again after `local_retry_delay` on the messages
/// that could be neither consumed nor sent back, until none is left.
pub(super) async fn consume_concurrently(
    inner: Arc<PushInner>,
    mq: MessageQueue,
    pq: Arc<ProcessQueue>,
    mut msgs: Vec<MessageExt>,
) {
    let MessageListener::Concurrently(listener) = inner.listener.clone() else {
        return;
    };
    loop {
        let Ok(permit) = inner.permits.clone().acquire_owned().await else {
            return;
        };
        if pq.is_dropped() || msgs.is_empty() {
            return;
        }
        stamp_consume_start(&mut msgs);
        let ctx = ConsumeConcurrentlyContext {
            message_queue: mq.clone(),
            delay_level_when_next_consume: 0,
            ack_index: i32::MAX,
        };
        let listener = listener.clone();
        let call = tokio::task::spawn_blocking(move || {
            let mut ctx = ctx;
            let status = listener(&msgs, &mut ctx);
            (status, ctx, msgs)
        })
        .await;
        drop(permit);
        let Ok((status, ctx, batch)) = call else {
            error!(queue = %mq, "listener panicked; the messages stay held for redelivery");
            return;
        };
        if pq.is_dropped() {
            return;
        }
        msgs = inner
            .process_concurrent_result(status, &ctx, &mq, &pq, batch)
            .await;
        if msgs.is_empty() {
            return;
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(inner.config.local_retry_delay) => {}
        }
    }
}
