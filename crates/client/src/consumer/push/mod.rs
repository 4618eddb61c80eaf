//! The push consumer (upstream `DefaultMQPushConsumer`): subscribes to topics, rebalances
//! queues among the group every 20 s and when a broker says the group changed, long-polls
//! each owned queue with flow control, hands messages to a concurrent or orderly listener,
//! sends failed ones back (see [`send_back`](super::send_back)), and commits offsets.
//!
//! | module | owns |
//! |---|---|
//! | `mod.rs` | [`PushConsumer`]: start, subscriptions, owned queues, rebalance, shutdown, broker requests |
//! | `config` | [`PushConsumerConfig`]: settings and their validation |
//! | `listener` | [`MessageListener`]: the listener, its statuses and contexts |
//! | `concurrent` | concurrent consumption and its result handling |
//! | `orderly` | orderly consumption and queue locks |
//! | `pull_loop` | one long-polling task per owned queue, flow control |
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

mod concurrent;
mod config;
mod listener;
mod orderly;
mod pull_loop;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use remoting::broker_headers::*;
use remoting::message::{now_millis, MessageConst, MessageExt};
use remoting::protocol::TopicRouteData;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{PushConsumerConfig, LOCAL_RETRY_DELAY};
pub use listener::{
    ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, ConsumeOrderlyContext,
    ConsumeOrderlyStatus, MessageListener,
};
use orderly::lock_loop;
use pull_loop::pull_loop;

use super::offset_store::OffsetStore;
use super::process_queue::ProcessQueue;
use super::queues::{running_info, start_offset, PullFrom};
use super::rebalance::{rebalance_loop, QueueOwner, Rebalancer, Rebalancing};
use super::send_back::{SendBackCounters, SendBackCounts};
use super::subscription::build_subscription;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, ConsumerHandle, ConsumerOffsets};
use crate::producer::{ProducerConfig, SendEngine, CLIENT_INNER_PRODUCER_GROUP};
use crate::retry_topic;

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
    pull_from: PullFrom,
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
            pull_from: PullFrom::default(),
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
