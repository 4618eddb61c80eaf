//! The push consumer (upstream `DefaultMQPushConsumer`): subscribes to topics, rebalances
//! queues among the group every 20 s and when a broker says the group changed, long-polls
//! each owned queue with flow control, hands messages to a concurrent or orderly listener,
//! sends failed ones back (see [`send_back`](super::send_back)), and commits offsets.
//!
//! ```no_run
//! use client::consumer::push::{
//!     ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
//! };
//! use client::ClientConfig;
//!
//! # async fn demo() -> Result<(), client::ClientError> {
//! let consumer = PushConsumer::start(
//!     ClientConfig::new("127.0.0.1:9876")?,
//!     PushConsumerConfig::new("please_rename_unique_group_name"),
//!     &[("TopicTest", "*")],
//!     MessageListener::concurrently(|msgs, _ctx| {
//!         for m in msgs {
//!             println!("{} {:?}", m.msg_id(), m.message.body);
//!         }
//!         ConsumeConcurrentlyStatus::ConsumeSuccess
//!     }),
//! )
//! .await?;
//! // ...
//! consumer.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use remoting::broker_headers::*;
use remoting::message::{now_millis, MessageConst, MessageExt};
use remoting::protocol::{TopicRouteData, MASTER_ID};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::allocate::{AllocateMessageQueueAveragely, AllocateStrategy};
use super::offset_store::OffsetStore;
use super::process_queue::{ProcessQueue, REBALANCE_LOCK_INTERVAL};
use super::queues::{check_pull_settings, process_pull, running_info, start_offset, PullStatus};
use super::rebalance::{rebalance_loop, QueueOwner, Rebalancer, Rebalancing};
use super::send_back::{local_retry, send_back, SendBackCounters, SendBackCounts, SendBackOutcome};
use super::subscription::build_subscription;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, ConsumerHandle, ConsumerOffsets};
use crate::producer::{ProducerConfig, SendEngine, CLIENT_INNER_PRODUCER_GROUP};
use crate::retry_topic;
use crate::route::find_subscribe_addr;

/// Pause before a message whose send-back failed is consumed again.
pub const LOCAL_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Pause when flow control holds a queue back.
const FLOW_CONTROL_DELAY: Duration = Duration::from_millis(50);
/// Pause before an orderly queue whose lock is missing is pulled again.
const NOT_LOCKED_DELAY: Duration = Duration::from_secs(3);

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

    fn is_orderly(&self) -> bool {
        matches!(self, MessageListener::Orderly(_))
    }
}

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

    fn validate(&self) -> Result<()> {
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

/// A started push consumer.
#[derive(Clone)]
pub struct PushConsumer {
    inner: Arc<PushInner>,
}

struct PushInner {
    instance: Arc<ClientInstance>,
    config: PushConsumerConfig,
    subscriptions: BTreeMap<String, SubscriptionData>,
    listener: MessageListener,
    offsets: Arc<OffsetStore>,
    rebalancer: Rebalancer,
    inner_producer: SendEngine,
    queues: Mutex<BTreeMap<MessageQueue, Arc<ProcessQueue>>>,
    /// Broker id each queue should be pulled from next (the broker's suggestion).
    pull_from: Mutex<HashMap<MessageQueue, i64>>,
    permits: Arc<Semaphore>,
    rebalance: Arc<Notify>,
    send_backs: SendBackCounters,
    started_at: i64,
    stop: CancellationToken,
}

impl PushConsumer {
    /// Subscribes to `subscriptions` (`(topic, tag expression)`) and starts consuming with
    /// `listener`.
    pub async fn start(
        client: ClientConfig,
        config: PushConsumerConfig,
        subscriptions: &[(&str, &str)],
        listener: MessageListener,
    ) -> Result<Self> {
        config.validate()?;
        if subscriptions.is_empty() {
            return Err(ClientError::Config("no subscription".into()));
        }
        let mut subs = BTreeMap::new();
        for (topic, expr) in subscriptions {
            crate::producer::check_topic(topic)?;
            subs.insert(topic.to_string(), build_subscription(topic, expr)?);
        }
        let group = config.consumer_group.clone();
        if config.message_model == MessageModel::Clustering {
            let retry = retry_topic(&group);
            subs.insert(retry.clone(), build_subscription(&retry, "*")?);
        }
        let instance = ClientInstance::new(client)?;
        let offsets = OffsetStore::open(
            &instance,
            &group,
            config.message_model,
            config.local_offset_store_dir.as_deref(),
        )?;
        let inner = Arc::new(PushInner {
            rebalancer: Rebalancer::new(
                &group,
                &instance.client_id,
                config.message_model,
                config.allocate_strategy.clone(),
            ),
            inner_producer: SendEngine::new(
                instance.clone(),
                ProducerConfig::new(CLIENT_INNER_PRODUCER_GROUP),
            ),
            permits: Arc::new(Semaphore::new(config.consume_thread_max)),
            stop: instance.shutdown.child_token(),
            instance,
            config,
            subscriptions: subs,
            listener,
            offsets: Arc::new(offsets),
            queues: Mutex::new(BTreeMap::new()),
            pull_from: Mutex::new(HashMap::new()),
            rebalance: Arc::new(Notify::new()),
            send_backs: SendBackCounters::default(),
            started_at: now_millis(),
        });
        let instance = &inner.instance;
        instance.register_producer(CLIENT_INNER_PRODUCER_GROUP);
        instance.register_consumer(&group, inner.clone());
        for topic in inner.subscriptions.keys() {
            if let Err(e) = instance.update_route(topic).await {
                warn!(topic, error = %e, "no route yet");
            }
        }
        instance.start_background();
        instance.send_heartbeats().await;
        let weak = Arc::downgrade(&inner);
        instance
            .tasks
            .spawn(rebalance_loop(weak.clone(), inner.stop.clone()));
        if inner.listener.is_orderly() && inner.config.message_model == MessageModel::Clustering {
            instance.tasks.spawn(lock_loop(weak, inner.stop.clone()));
        }
        info!(group = %group, client_id = %inner.instance.client_id, "push consumer started");
        Ok(PushConsumer { inner })
    }

    /// The client id brokers see.
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// Queues this consumer currently owns.
    pub fn assigned_queues(&self) -> BTreeSet<MessageQueue> {
        self.inner.queues.lock().keys().cloned().collect()
    }

    /// How failed messages were handed back so far (send-back, re-send, local retry).
    pub fn send_back_counts(&self) -> SendBackCounts {
        self.inner.send_backs.snapshot()
    }

    /// The route of `topic` as this consumer sees it.
    pub fn topic_route(&self, topic: &str) -> Option<TopicRouteData> {
        self.inner
            .instance
            .routes
            .route(topic)
            .map(|r| (*r).clone())
    }

    /// Pins `topic`'s route as this consumer (and its inner producer) sees it: NameServer
    /// refreshes no longer replace it until [`unpin_route`](Self::unpin_route). Meant for
    /// tests and for working around a NameServer's wrong view.
    pub fn pin_route(&self, topic: &str, route: TopicRouteData) {
        self.inner.instance.routes.pin(topic, route);
    }

    /// Lets NameServer refreshes replace `topic`'s route again.
    pub fn unpin_route(&self, topic: &str) {
        self.inner.instance.routes.unpin(topic);
    }

    /// Rebalances now instead of waiting for the next round.
    pub fn rebalance_now(&self) {
        self.inner.rebalance.notify_one();
    }

    /// Commits offsets, releases orderly locks, unregisters and stops.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        let owned: Vec<(MessageQueue, Arc<ProcessQueue>)> = inner
            .queues
            .lock()
            .iter()
            .map(|(m, p)| (m.clone(), p.clone()))
            .collect();
        for (_, pq) in &owned {
            pq.set_dropped(true);
        }
        let mqs: BTreeSet<MessageQueue> = owned.iter().map(|(m, _)| m.clone()).collect();
        inner.offsets.persist_all(&mqs).await;
        if inner.listener.is_orderly() {
            for mq in &mqs {
                inner.unlock(mq, true).await;
            }
        }
        inner.instance.shutdown().await;
    }
}

impl PushInner {
    fn is_clustering(&self) -> bool {
        self.config.message_model == MessageModel::Clustering
    }

    fn max_reconsume_times(&self) -> i32 {
        match (self.config.max_reconsume_times, self.listener.is_orderly()) {
            (-1, false) => 16,
            (-1, true) => i32::MAX,
            (n, _) => n,
        }
    }

    /// Drops `topic`'s queues not in `mine` and starts pulling the new ones (an orderly
    /// queue only once it is locked).
    async fn update_process_queues(self: &Arc<Self>, topic: &str, mine: &BTreeSet<MessageQueue>) {
        let current: Vec<MessageQueue> = self
            .queues
            .lock()
            .keys()
            .filter(|mq| mq.topic == topic)
            .cloned()
            .collect();
        for mq in current.iter().filter(|mq| !mine.contains(*mq)) {
            self.drop_queue(mq).await;
        }
        for mq in mine.iter().filter(|mq| !current.contains(mq)) {
            let orderly_clustering = self.listener.is_orderly() && self.is_clustering();
            if orderly_clustering && !self.lock(mq).await {
                debug!(queue = %mq, "not locked yet; will retry next rebalance");
                continue;
            }
            let next = match self.compute_pull_from_where(mq).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(queue = %mq, error = %e, "cannot compute the start offset");
                    continue;
                }
            };
            let pq = Arc::new(ProcessQueue::new());
            if orderly_clustering {
                pq.set_locked(true);
            }
            self.queues.lock().insert(mq.clone(), pq.clone());
            info!(queue = %mq, offset = next, "queue assigned");
            self.instance.tasks.spawn(pull_loop(
                Arc::downgrade(self),
                mq.clone(),
                pq,
                next,
                self.stop.clone(),
            ));
        }
    }

    async fn drop_queue(&self, mq: &MessageQueue) {
        let Some(pq) = self.queues.lock().remove(mq) else {
            return;
        };
        pq.set_dropped(true);
        self.offsets.persist_and_remove(mq).await;
        if self.listener.is_orderly() && self.is_clustering() {
            self.unlock(mq, true).await;
        }
        info!(queue = %mq, "queue released");
    }

    /// Where a newly owned queue starts.
    async fn compute_pull_from_where(&self, mq: &MessageQueue) -> Result<i64> {
        let ts = self
            .config
            .consume_timestamp
            .unwrap_or(self.started_at - 30 * 60 * 1000);
        start_offset(
            &self.instance,
            &self.offsets,
            mq,
            self.config.consume_from_where,
            ts,
        )
        .await
    }

    /// LOCK_BATCH_MQ for one queue at its master.
    async fn lock(&self, mq: &MessageQueue) -> bool {
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

    async fn unlock(&self, mq: &MessageQueue, oneway: bool) {
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

fn stamp_consume_start(msgs: &mut [MessageExt]) {
    let now = now_millis().to_string();
    for m in msgs {
        m.message
            .properties
            .insert(MessageConst::PROPERTY_CONSUME_START_TIMESTAMP, now.clone());
    }
}

/// Runs the listener on a batch, then again after `local_retry_delay` on the messages
/// that could be neither consumed nor sent back, until none is left.
async fn consume_concurrently(
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

async fn consume_orderly(inner: Arc<PushInner>, mq: MessageQueue, pq: Arc<ProcessQueue>) {
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

/// Long-polls one queue until it is dropped (upstream `pullMessage` + its callback).
async fn pull_loop(
    weak: std::sync::Weak<PushInner>,
    mq: MessageQueue,
    pq: Arc<ProcessQueue>,
    mut next_offset: i64,
    stop: CancellationToken,
) {
    let pause = |d: Duration| {
        let stop = stop.clone();
        async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(d) => {}
            }
        }
    };
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
        let suggested = inner
            .pull_from
            .lock()
            .get(&mq)
            .copied()
            .unwrap_or(MASTER_ID);
        let found = inner
            .instance
            .routes
            .broker_data(&mq.topic, &mq.broker_name)
            .and_then(|bd| find_subscribe_addr(&bd, suggested, false));
        let Some(found) = found else {
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
            .lock()
            .insert(mq.clone(), raw.header.suggest_which_broker_id);
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

impl QueueOwner for Arc<PushInner> {
    fn owned(&self) -> BTreeSet<MessageQueue> {
        self.queues.lock().keys().cloned().collect()
    }

    fn assign<'a>(&'a self, topic: &'a str, mine: &'a BTreeSet<MessageQueue>) -> BoxFuture<'a, ()> {
        Box::pin(self.update_process_queues(topic, mine))
    }
}

impl Rebalancing for PushInner {
    fn rebalance_round(self: Arc<Self>) -> BoxFuture<'static, bool> {
        Box::pin(async move {
            let topics: Vec<String> = self.subscriptions.keys().cloned().collect();
            self.rebalancer.round(&*self.instance, &self, &topics).await
        })
    }

    fn rebalance_interval(&self) -> Duration {
        self.config.rebalance_interval
    }

    fn rebalance_requested(&self) -> &Notify {
        &self.rebalance
    }
}

async fn lock_loop(weak: std::sync::Weak<PushInner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REBALANCE_LOCK_INTERVAL) => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.lock_all().await;
    }
}

impl PushInner {
    /// A closure that asks for a rebalance, usable after `self` is gone.
    fn rebalance_signal(&self) -> impl FnOnce() + Send + 'static {
        let notify = self.rebalance.clone();
        move || notify.notify_one()
    }
}

impl ConsumerHandle for PushInner {
    fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            consume_from_where: self.config.consume_from_where,
            consume_type: ConsumeType::ConsumePassively,
            group_name: self.config.consumer_group.clone(),
            message_model: self.config.message_model,
            subscription_data_set: self.subscriptions.values().cloned().collect(),
            unit_mode: self.instance.config.unit_mode,
        }
    }

    fn rebalance_now(&self) {
        self.rebalance.notify_one();
    }

    fn running_info(&self) -> ConsumerRunningInfo {
        let mut info = running_info(
            ConsumeType::ConsumePassively,
            self.started_at,
            &self.config.consumer_group,
        );
        let p = &mut info.properties;
        p.insert(
            ConsumerRunningInfo::PROP_CONSUME_ORDERLY.into(),
            self.listener.is_orderly().to_string(),
        );
        p.insert(
            ConsumerRunningInfo::PROP_THREADPOOL_CORE_SIZE.into(),
            self.config.consume_thread_max.to_string(),
        );
        p.insert(
            ConsumerRunningInfo::PROP_NAMESERVER_ADDR.into(),
            self.instance
                .config
                .namesrv_addr
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(";"),
        );
        p.insert(
            "messageModel".into(),
            self.config.message_model.name().into(),
        );
        p.insert(
            "consumeFromWhere".into(),
            self.config.consume_from_where.name().into(),
        );
        info.subscription_set = self.subscriptions.values().cloned().collect();
        let offsets = self.offsets.snapshot(None);
        for (mq, pq) in self.queues.lock().iter() {
            info.mq_table
                .insert(mq.clone(), pq.info(offsets.get(mq).copied().unwrap_or(-1)));
        }
        info
    }

    fn reset_offsets(
        &self,
        topic: String,
        offsets: BTreeMap<MessageQueue, i64>,
    ) -> BoxFuture<'static, ()> {
        let owned: Vec<(MessageQueue, Arc<ProcessQueue>)> = {
            let mut queues = self.queues.lock();
            let mine: Vec<MessageQueue> = queues
                .keys()
                .filter(|mq| mq.topic == topic)
                .cloned()
                .collect();
            mine.into_iter()
                .filter_map(|mq| queues.remove(&mq).map(|pq| (mq, pq)))
                .collect()
        };
        for (_, pq) in &owned {
            pq.set_dropped(true);
            pq.clear();
        }
        info!(
            topic,
            queues = offsets.len(),
            "consumer offsets reset by the broker"
        );
        let store = self.offsets.clone();
        let notify_rebalance = self.rebalance_signal();
        Box::pin(async move {
            store.store_reset(offsets).await;
            notify_rebalance();
        })
    }

    fn consume_message_directly(
        &self,
        msg: MessageExt,
        broker_name: Option<String>,
    ) -> BoxFuture<'static, Option<ConsumeMessageDirectlyResult>> {
        let listener = self.listener.clone();
        let retry = retry_topic(&self.config.consumer_group);
        Box::pin(async move {
            let mut msg = msg;
            if msg.message.topic == retry {
                if let Some(original) = msg.message.property(MessageConst::PROPERTY_RETRY_TOPIC) {
                    msg.message.topic = original.to_string();
                }
            }
            let mq = MessageQueue::new(
                msg.message.topic.clone(),
                broker_name.unwrap_or_default(),
                msg.queue_id,
            );
            let order = listener.is_orderly();
            let started = std::time::Instant::now();
            info!(
                msg_id = msg.msg_id(),
                "consuming a message directly at a broker's request"
            );
            let call = tokio::task::spawn_blocking(move || match listener {
                MessageListener::Concurrently(f) => {
                    let mut ctx = ConsumeConcurrentlyContext {
                        message_queue: mq,
                        delay_level_when_next_consume: 0,
                        ack_index: i32::MAX,
                    };
                    match f(std::slice::from_ref(&msg), &mut ctx) {
                        ConsumeConcurrentlyStatus::ConsumeSuccess => CMResult::CR_SUCCESS,
                        ConsumeConcurrentlyStatus::ReconsumeLater => CMResult::CR_LATER,
                    }
                }
                MessageListener::Orderly(f) => {
                    let mut ctx = ConsumeOrderlyContext {
                        message_queue: mq,
                        suspend_current_queue_time: None,
                    };
                    match f(std::slice::from_ref(&msg), &mut ctx) {
                        ConsumeOrderlyStatus::Success => CMResult::CR_SUCCESS,
                        ConsumeOrderlyStatus::SuspendCurrentQueueAMoment => CMResult::CR_LATER,
                    }
                }
            })
            .await;
            let (consume_result, remark) = match call {
                Ok(r) => (r, None),
                Err(e) => (CMResult::CR_THROW_EXCEPTION, Some(e.to_string())),
            };
            Some(ConsumeMessageDirectlyResult {
                auto_commit: true,
                consume_result: Some(consume_result),
                order,
                remark,
                spent_time_mills: started.elapsed().as_millis() as i64,
            })
        })
    }

    fn offsets(&self) -> Arc<dyn ConsumerOffsets> {
        self.offsets.clone()
    }

    fn persist_offsets(&self) -> BoxFuture<'static, ()> {
        let mqs: BTreeSet<MessageQueue> = self.queues.lock().keys().cloned().collect();
        let store = self.offsets.clone();
        Box::pin(async move { store.persist_all(&mqs).await })
    }
}
