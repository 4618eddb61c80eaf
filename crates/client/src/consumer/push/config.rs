//! [`PushConsumerConfig`]: the push consumer's settings, with upstream's names and defaults,
//! and their validation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use remoting::broker_headers::{ConsumeFromWhere, MessageModel};

use crate::consumer::allocate::{AllocateMessageQueueAveragely, AllocateStrategy};
use crate::consumer::queues::check_pull_settings;
use crate::error::{ClientError, Result};

/// Pause before a message whose send-back failed is consumed again.
pub const LOCAL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Push consumer settings with upstream's names and defaults (`DefaultMQPushConsumer`).
#[derive(Clone)]
pub struct PushConsumerConfig {
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `messageModel` (clustering).
    pub message_model: MessageModel,
    /// `consumeFromWhere` (last offset).
    pub consume_from_where: ConsumeFromWhere,
    /// `consumeTimestamp` as ms since the epoch (default: half an hour before start).
    pub consume_timestamp: Option<i64>,
    /// `allocateMessageQueueStrategy` (average).
    pub allocate_strategy: Arc<dyn AllocateStrategy>,
    /// `consumeThreadMax` (20): listener calls running at once.
    pub consume_thread_max: usize,
    /// `consumeMessageBatchMaxSize` (1).
    pub consume_message_batch_max_size: usize,
    /// `pullBatchSize` (32).
    pub pull_batch_size: i32,
    /// `pullThresholdForQueue` (1000 messages cached per queue).
    pub pull_threshold_for_queue: usize,
    /// `pullThresholdSizeForQueue` (100 MiB cached per queue).
    pub pull_threshold_size_for_queue: u64,
    /// `consumeConcurrentlyMaxSpan` (2000 offsets between first and last cached).
    pub consume_concurrently_max_span: i64,
    /// `pullInterval` (0).
    pub pull_interval: Duration,
    /// `maxReconsumeTimes` (-1: 16 for concurrent, unlimited for orderly).
    pub max_reconsume_times: i32,
    /// `suspendCurrentQueueTimeMillis` (1 s).
    pub suspend_current_queue_time: Duration,
    /// Broker-side long-polling hold (`brokerSuspendMaxTimeMillis`, 15 s).
    pub broker_suspend_max_time: Duration,
    /// Pull call timeout (`consumerTimeoutMillisWhenSuspend`, 30 s).
    pub consumer_timeout_when_suspend: Duration,
    /// How often queues are rebalanced (20 s).
    pub rebalance_interval: Duration,
    /// Broadcasting offsets directory; required in broadcasting mode (no default: upstream's
    /// `$HOME/.rocketmq_offsets` is for an application to choose).
    pub local_offset_store_dir: Option<PathBuf>,
    /// Pause before a message that could be neither consumed nor sent back is consumed
    /// again ([`LOCAL_RETRY_DELAY`], upstream's fixed 5 s).
    pub local_retry_delay: Duration,
}

impl PushConsumerConfig {
    /// Defaults for `consumer_group`.
    pub fn new(consumer_group: impl Into<String>) -> Self {
        PushConsumerConfig {
            consumer_group: consumer_group.into(),
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::ConsumeFromLastOffset,
            consume_timestamp: None,
            allocate_strategy: Arc::new(AllocateMessageQueueAveragely),
            consume_thread_max: 20,
            consume_message_batch_max_size: 1,
            pull_batch_size: 32,
            pull_threshold_for_queue: 1000,
            pull_threshold_size_for_queue: 100 * 1024 * 1024,
            consume_concurrently_max_span: 2000,
            pull_interval: Duration::ZERO,
            max_reconsume_times: -1,
            suspend_current_queue_time: Duration::from_secs(1),
            broker_suspend_max_time: Duration::from_secs(15),
            consumer_timeout_when_suspend: Duration::from_secs(30),
            rebalance_interval: Duration::from_secs(20),
            local_offset_store_dir: None,
            local_retry_delay: LOCAL_RETRY_DELAY,
        }
    }

    pub fn message_model(mut self, m: MessageModel) -> Self {
        self.message_model = m;
        self
    }

    pub fn consume_from_where(mut self, w: ConsumeFromWhere) -> Self {
        self.consume_from_where = w;
        self
    }

    pub fn consume_timestamp(mut self, millis: i64) -> Self {
        self.consume_timestamp = Some(millis);
        self
    }

    pub fn allocate_strategy(mut self, s: Arc<dyn AllocateStrategy>) -> Self {
        self.allocate_strategy = s;
        self
    }

    pub fn consume_thread_max(mut self, n: usize) -> Self {
        self.consume_thread_max = n;
        self
    }

    pub fn consume_message_batch_max_size(mut self, n: usize) -> Self {
        self.consume_message_batch_max_size = n;
        self
    }

    pub fn pull_batch_size(mut self, n: i32) -> Self {
        self.pull_batch_size = n;
        self
    }

    pub fn max_reconsume_times(mut self, n: i32) -> Self {
        self.max_reconsume_times = n;
        self
    }

    pub fn suspend_current_queue_time(mut self, d: Duration) -> Self {
        self.suspend_current_queue_time = d;
        self
    }

    pub fn pull_interval(mut self, d: Duration) -> Self {
        self.pull_interval = d;
        self
    }

    pub fn rebalance_interval(mut self, d: Duration) -> Self {
        self.rebalance_interval = d;
        self
    }

    pub fn local_offset_store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.local_offset_store_dir = Some(dir.into());
        self
    }

    pub fn local_retry_delay(mut self, d: Duration) -> Self {
        self.local_retry_delay = d;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.consumer_group.trim().is_empty() {
            return Err(ClientError::Config("consumerGroup is blank".into()));
        }
        crate::producer::check_group_name(&self.consumer_group)?;
        if self.consume_thread_max == 0 || self.consume_message_batch_max_size == 0 {
            return Err(ClientError::Config(
                "consumeThreadMax and consumeMessageBatchMaxSize must be positive".into(),
            ));
        }
        check_pull_settings(self.pull_batch_size, self.rebalance_interval)?;
        Ok(())
    }
}
