//! What the application hands a push consumer: a concurrent or orderly [`MessageListener`],
//! the statuses it returns and the contexts it gets, and running it once on one message
//! (CONSUME_MESSAGE_DIRECTLY).

use std::sync::Arc;
use std::time::Duration;

use remoting::broker_headers::MessageQueue;
use remoting::message::{now_millis, MessageConst, MessageExt};

/// Result of a concurrent listener (`ConsumeConcurrentlyStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeConcurrentlyStatus {
    ConsumeSuccess,
    ReconsumeLater,
}

/// Context of a concurrent listener call (`ConsumeConcurrentlyContext`).
#[derive(Clone, Debug)]
pub struct ConsumeConcurrentlyContext {
    pub message_queue: MessageQueue,
    /// 0: the broker picks 3 + reconsume times; -1: straight to the DLQ; > 0: this level.
    pub delay_level_when_next_consume: i32,
    /// With `ConsumeSuccess`, messages after this index count as failed.
    pub ack_index: i32,
}

/// Result of an orderly listener (`ConsumeOrderlyStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumeOrderlyStatus {
    Success,
    /// Retry the same messages locally after `suspend_current_queue_time`.
    SuspendCurrentQueueAMoment,
}

/// Context of an orderly listener call (`ConsumeOrderlyContext`).
#[derive(Clone, Debug)]
pub struct ConsumeOrderlyContext {
    pub message_queue: MessageQueue,
    /// Overrides the consumer's suspend time for this call when set.
    pub suspend_current_queue_time: Option<Duration>,
}

type ConcurrentFn = dyn Fn(&[MessageExt], &mut ConsumeConcurrentlyContext) -> ConsumeConcurrentlyStatus
    + Send
    + Sync;
type OrderlyFn =
    dyn Fn(&[MessageExt], &mut ConsumeOrderlyContext) -> ConsumeOrderlyStatus + Send + Sync;

/// The application's message handler. It runs on a blocking thread, at most
/// `consume_thread_max` at a time.
#[derive(Clone)]
pub enum MessageListener {
    Concurrently(Arc<ConcurrentFn>),
    Orderly(Arc<OrderlyFn>),
}

impl MessageListener {
    /// A concurrent listener from a closure.
    pub fn concurrently<F>(f: F) -> Self
    where
        F: Fn(&[MessageExt], &mut ConsumeConcurrentlyContext) -> ConsumeConcurrentlyStatus
            + Send
            + Sync
            + 'static,
    {
        MessageListener::Concurrently(Arc::new(f))
    }

    /// An orderly listener from a closure.
    pub fn orderly<F>(f: F) -> Self
    where
        F: Fn(&[MessageExt], &mut ConsumeOrderlyContext) -> ConsumeOrderlyStatus
            + Send
            + Sync
            + 'static,
    {
        MessageListener::Orderly(Arc::new(f))
    }

    pub(super) fn is_orderly(&self) -> bool {
        matches!(self, MessageListener::Orderly(_))
    }
}

/// Stamps `msgs` with the time their consumption starts (`CONSUME_START_TIME`).
pub(super) fn stamp_consume_start(msgs: &mut [MessageExt]) {
    let now = now_millis().to_string();
    for m in msgs {
        m.message
            .properties
            .insert(MessageConst::PROPERTY_CONSUME_START_TIMESTAMP, now.clone());
    }
}
