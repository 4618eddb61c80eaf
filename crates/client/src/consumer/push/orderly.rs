//! Orderly consumption: one consumer task per queue runs the listener on its messages in
//! queue order, while the queue is locked on its master (clustering). Locks are taken when
//! a queue is assigned, renewed every [`REBALANCE_LOCK_INTERVAL`] and released when the
//! queue goes; failed batches are retried locally, then sent to the retry topic past the
//! maximum.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use remoting::broker_headers::{LockBatchRequestBody, MessageQueue, UnlockBatchRequestBody};
use remoting::message::MessageConst;
use remoting::protocol::MASTER_ID;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::listener::{
    stamp_consume_start, ConsumeOrderlyContext, ConsumeOrderlyStatus, MessageListener,
};
use super::PushInner;
use crate::consumer::process_queue::{ProcessQueue, REBALANCE_LOCK_INTERVAL};
use crate::consumer::send_back::{local_retry, send_back, SendBackOutcome};
use crate::route::find_subscribe_addr;

impl PushInner {
    /// LOCK_BATCH_MQ for one queue at its master.
    pub(super) async fn lock(&self, mq: &MessageQueue) -> bool {
        let Some(addr) = self
            .instance
            .routes
            .broker_data(&mq.topic, &mq.broker_name)
            .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, true))
        else {
            return false;
        };
        let body = LockBatchRequestBody {
            client_id: self.instance.client_id.clone(),
            consumer_group: self.config.consumer_group.clone(),
            mq_set: [mq.clone()].into_iter().collect(),
            only_this_broker: false,
        };
        match self.instance.api.lock_batch_mq(&addr.addr, &body).await {
            Ok(locked) => locked.contains(mq),
            Err(e) => {
                warn!(queue = %mq, error = %e, "lock failed");
                false
            }
        }
    }

    pub(super) async fn unlock(&self, mq: &MessageQueue, oneway: bool) {
        let Some(found) = self
            .instance
            .routes
            .broker_data(&mq.topic, &mq.broker_name)
            .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, true))
        else {
            return;
        };
        let body = UnlockBatchRequestBody {
            client_id: self.instance.client_id.clone(),
            consumer_group: self.config.consumer_group.clone(),
            mq_set: [mq.clone()].into_iter().collect(),
            only_this_broker: false,
        };
        if let Err(e) = self
            .instance
            .api
            .unlock_batch_mq(&found.addr, &body, oneway)
            .await
        {
            debug!(queue = %mq, error = %e, "unlock failed");
        }
    }

    /// Renews the locks of every owned queue, one LOCK_BATCH_MQ per broker group.
    async fn lock_all(&self) {
        let mut by_group: BTreeMap<(String, String), BTreeSet<MessageQueue>> = BTreeMap::new();
        for mq in self.queues.lock().keys() {
            by_group
                .entry((mq.topic.clone(), mq.broker_name.clone()))
                .or_default()
                .insert(mq.clone());
        }
        for ((topic, broker_name), mqs) in by_group {
            let Some(found) = self
                .instance
                .routes
                .broker_data(&topic, &broker_name)
                .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, true))
            else {
                continue;
            };
            let body = LockBatchRequestBody {
                client_id: self.instance.client_id.clone(),
                consumer_group: self.config.consumer_group.clone(),
                mq_set: mqs.clone(),
                only_this_broker: false,
            };
            let locked = match self.instance.api.lock_batch_mq(&found.addr, &body).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(broker = %broker_name, error = %e, "lock renewal failed");
                    continue;
                }
            };
            let queues = self.queues.lock();
            for mq in &mqs {
                if let Some(pq) = queues.get(mq) {
                    pq.set_locked(locked.contains(mq));
                }
            }
        }
    }
}

pub(super) async fn consume_orderly(
    inner: Arc<PushInner>,
    mq: MessageQueue,
    pq: Arc<ProcessQueue>,
) {
    let MessageListener::Orderly(listener) = inner.listener.clone() else {
        return;
    };
    let max = inner.max_reconsume_times();
    loop {
        if pq.is_dropped() || inner.stop.is_cancelled() {
            return;
        }
        if inner.is_clustering() && (!pq.is_locked() || pq.is_lock_expired()) {
            if inner.lock(&mq).await {
                pq.set_locked(true);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Ok(permit) = inner.permits.clone().acquire_owned().await else {
            return;
        };
        let mut msgs = pq.take_messages(inner.config.consume_message_batch_max_size);
        if msgs.is_empty() {
            return;
        }
        stamp_consume_start(&mut msgs);
        let listener = listener.clone();
        let ctx = ConsumeOrderlyContext {
            message_queue: mq.clone(),
            suspend_current_queue_time: None,
        };
        let call = tokio::task::spawn_blocking(move || {
            let mut ctx = ctx;
            let status = listener(&msgs, &mut ctx);
            (status, ctx, msgs)
        })
        .await;
        drop(permit);
        let (status, ctx, msgs) = match call {
            Ok(r) => r,
            Err(_) => {
                error!(queue = %mq, "orderly listener panicked; suspending the queue");
                pq.rollback();
                tokio::time::sleep(inner.config.suspend_current_queue_time).await;
                continue;
            }
        };
        match status {
            ConsumeOrderlyStatus::Success => {
                if let Some(offset) = pq.commit() {
                    inner.offsets.update_offset(&mq, offset, false);
                }
            }
            ConsumeOrderlyStatus::SuspendCurrentQueueAMoment => {
                // Past the limit, a message goes to the retry topic (whose broker moves it
                // to the DLQ); otherwise the whole batch is consumed again after a pause.
                let mut batch = Vec::with_capacity(msgs.len());
                let mut stuck = false;
                for mut m in msgs {
                    if m.reconsume_times >= max && inner.is_clustering() {
                        m.message.properties.insert(
                            MessageConst::PROPERTY_RECONSUME_TIME,
                            m.reconsume_times.to_string(),
                        );
                        let outcome = send_back(
                            &inner.instance,
                            &inner.inner_producer,
                            &mq,
                            &m,
                            &inner.config.consumer_group,
                            0,
                            max,
                        )
                        .await;
                        inner.send_backs.record(&outcome);
                        if let SendBackOutcome::Failed(_) = outcome {
                            stuck = true;
                            m = local_retry(&m);
                        }
                    } else {
                        stuck = true;
                        m.reconsume_times += 1;
                    }
                    batch.push(m);
                }
                if stuck {
                    // The whole batch goes back, in order, and nothing is committed.
                    pq.make_messages_to_consume_again(batch);
                    let pause = ctx
                        .suspend_current_queue_time
                        .unwrap_or(inner.config.suspend_current_queue_time);
                    tokio::select! {
                        _ = inner.stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
                if let Some(offset) = pq.commit() {
                    inner.offsets.update_offset(&mq, offset, false);
                }
            }
        }
    }
}

/// Renews the locks of the owned queues every [`REBALANCE_LOCK_INTERVAL`] until `stop`.
pub(super) async fn lock_loop(weak: Weak<PushInner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REBALANCE_LOCK_INTERVAL) => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.lock_all().await;
    }
}
