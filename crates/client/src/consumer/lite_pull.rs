//! The lite-pull consumer (upstream `DefaultLitePullConsumer`): the application calls
//! [`LitePullConsumer::poll`] for messages while background tasks long-poll the queues it
//! owns. Queues are either given with [`assign`](LitePullConsumer::assign) or divided among
//! the group by rebalance after [`subscribe`](LitePullConsumer::subscribe). Offsets advance
//! as messages are polled and are committed automatically (`autoCommit`, every
//! `persistConsumerOffsetInterval`) or by [`commit_sync`](LitePullConsumer::commit_sync);
//! [`seek`](LitePullConsumer::seek) moves a queue.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::consumer::lite_pull::{LitePullConsumer, LitePullConsumerConfig};
//! use client::ClientConfig;
//!
//! # async fn demo() -> Result<(), client::ClientError> {
//! let consumer = LitePullConsumer::start(
//!     ClientConfig::new("127.0.0.1:9876")?,
//!     LitePullConsumerConfig::new("please_rename_unique_group_name_6"),
//! )
//! .await?;
//! consumer.subscribe("TopicTest", "*").await?;
//! loop {
//!     for m in consumer.poll(Duration::from_secs(5)).await {
//!         println!("{} {:?}", m.msg_id(), m.message.body);
//!     }
//! #   break;
//! }
//! consumer.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use remoting::broker_headers::*;
use remoting::message::{now_millis, MessageExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::allocate::{AllocateMessageQueueAveragely, AllocateStrategy};
use super::offset_store::{OffsetStore, ReadOffsetType};
use super::pull::pull_queue;
use super::queues::{
    admin_broker, check_pull_settings, pause_unless_stopped, running_info, start_offset, PullFrom,
    PullStatus,
};
use super::rebalance::{rebalance_loop, QueueOwner, Rebalancer, Rebalancing};
use super::subscription::build_subscription;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, ConsumerHandle, ConsumerOffsets};

/// Pause when the consumer holds more unpolled messages than it may.
const FLOW_CONTROL_DELAY: Duration = Duration::from_millis(50);

/// Lite-pull consumer settings with upstream's names and defaults.
#[derive(Clone)]
pub struct LitePullConsumerConfig {
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `messageModel` (clustering).
    pub message_model: MessageModel,
    /// `consumeFromWhere` (last offset), for queues the group has no offset for.
    pub consume_from_where: ConsumeFromWhere,
    /// `consumeTimestamp` as ms since the epoch (default: half an hour before start).
    pub consume_timestamp: Option<i64>,
    /// `allocateMessageQueueStrategy` (average).
    pub allocate_strategy: Arc<dyn AllocateStrategy>,
    /// `pullBatchSize` (10).
    pub pull_batch_size: i32,
    /// `pullThresholdForAll` (10000): unpolled messages held at most.
    pub pull_threshold_for_all: usize,
    /// `autoCommit` (true): polled offsets are committed in the background.
    pub auto_commit: bool,
    /// How long the broker holds a pull with nothing to return (20 s).
    pub broker_suspend_max_time: Duration,
    /// Timeout of such a pull (30 s).
    pub consumer_timeout_when_suspend: Duration,
    /// How often subscribed topics are rebalanced (`topicMetadataCheckIntervalMillis`, 30 s;
    /// also on NOTIFY_CONSUMER_IDS_CHANGED).
    pub rebalance_interval: Duration,
    /// Broadcasting offsets directory; required in broadcasting mode (no default: upstream's
    /// `$HOME/.rocketmq_offsets` is for an application to choose).
    pub local_offset_store_dir: Option<PathBuf>,
}

impl LitePullConsumerConfig {
    /// Defaults for `consumer_group`.
    pub fn new(consumer_group: impl Into<String>) -> Self {
        LitePullConsumerConfig {
            consumer_group: consumer_group.into(),
            message_model: MessageModel::Clustering,
            consume_from_where: ConsumeFromWhere::ConsumeFromLastOffset,
            consume_timestamp: None,
            allocate_strategy: Arc::new(AllocateMessageQueueAveragely),
            pull_batch_size: 10,
            pull_threshold_for_all: 10_000,
            auto_commit: true,
            broker_suspend_max_time: Duration::from_secs(20),
            consumer_timeout_when_suspend: Duration::from_secs(30),
            rebalance_interval: Duration::from_secs(30),
            local_offset_store_dir: None,
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

    pub fn pull_batch_size(mut self, n: i32) -> Self {
        self.pull_batch_size = n;
        self
    }

    pub fn auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
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
}

/// One owned queue: its pull task's generation and where polling got to.
struct Owned {
    generation: u64,
    stop: CancellationToken,
    /// The offset after the last polled message (what a commit stores).
    consumed: Option<i64>,
}

/// Messages pulled from one queue, waiting for `poll`.
struct Batch {
    mq: MessageQueue,
    generation: u64,
    /// Messages that matched (may be empty when a whole pull was filtered out).
    msgs: Vec<MessageExt>,
    /// Where the queue's consumed offset moves once the batch is polled (past filtered
    /// messages too).
    next_offset: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unset,
    Subscribe,
    Assign,
}

/// A started lite-pull consumer. Cheap to clone.
#[derive(Clone)]
pub struct LitePullConsumer {
    inner: Arc<LiteInner>,
}

struct LiteInner {
    instance: Arc<ClientInstance>,
    config: LitePullConsumerConfig,
    offsets: Arc<OffsetStore>,
    rebalancer: Rebalancer,
    pull_from: PullFrom,
    mode: Mutex<Mode>,
    subscriptions: Mutex<BTreeMap<String, SubscriptionData>>,
    owned: Mutex<BTreeMap<MessageQueue, Owned>>,
    next_generation: Mutex<u64>,
    buffer: Mutex<VecDeque<Batch>>,
    arrived: Notify,
    rebalance: Notify,
    stop: CancellationToken,
    started_at: i64,
}

impl LitePullConsumer {
    /// Starts the consumer; it owns no queue until [`subscribe`](Self::subscribe) or
    /// [`assign`](Self::assign).
    pub async fn start(client: ClientConfig, config: LitePullConsumerConfig) -> Result<Self> {
        crate::producer::check_group_name(&config.consumer_group)?;
        check_pull_settings(config.pull_batch_size, config.rebalance_interval)?;
        let instance = ClientInstance::new(client)?;
        let group = config.consumer_group.clone();
        let offsets = OffsetStore::open(
            &instance,
            &group,
            config.message_model,
            config.local_offset_store_dir.as_deref(),
        )?;
        let inner = Arc::new(LiteInner {
            rebalancer: Rebalancer::new(
                &group,
                &instance.client_id,
                config.message_model,
                config.allocate_strategy.clone(),
            ),
            stop: instance.shutdown.child_token(),
            instance,
            config,
            offsets: Arc::new(offsets),
            pull_from: PullFrom::default(),
            mode: Mutex::new(Mode::Unset),
            subscriptions: Mutex::new(BTreeMap::new()),
            owned: Mutex::new(BTreeMap::new()),
            next_generation: Mutex::new(0),
            buffer: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            rebalance: Notify::new(),
            started_at: now_millis(),
        });
        inner.instance.register_consumer(&group, inner.clone());
        inner.instance.start_background();
        inner
            .instance
            .tasks
            .spawn(rebalance_loop(Arc::downgrade(&inner), inner.stop.clone()));
        info!(group = %group, client_id = %inner.instance.client_id, "lite pull consumer started");
        Ok(LitePullConsumer { inner })
    }

    /// The client id brokers see.
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// Subscribes to `topic` with a tag expression; the group's members divide its queues.
    pub async fn subscribe(&self, topic: &str, expression: &str) -> Result<()> {
        crate::producer::check_topic(topic)?;
        self.inner.set_mode(Mode::Subscribe)?;
        let sub = build_subscription(topic, expression)?;
        self.inner
            .subscriptions
            .lock()
            .insert(topic.to_string(), sub);
        if let Err(e) = self.inner.instance.update_route(topic).await {
            warn!(topic, error = %e, "no route yet");
        }
        self.inner.instance.send_heartbeats().await;
        self.inner.rebalance.notify_one();
        Ok(())
    }

    /// Owns exactly `queues` (no rebalance). Queues start at the group's committed offset,
    /// else where `consumeFromWhere` says.
    pub async fn assign(&self, queues: impl IntoIterator<Item = MessageQueue>) -> Result<()> {
        self.inner.set_mode(Mode::Assign)?;
        let queues: BTreeSet<MessageQueue> = queues.into_iter().collect();
        for topic in queues
            .iter()
            .map(|q| q.topic.clone())
            .collect::<BTreeSet<_>>()
        {
            self.inner.instance.update_route(&topic).await?;
        }
        self.inner.update_owned(&queues, None).await;
        Ok(())
    }

    /// The queues this consumer owns now.
    pub fn assignment(&self) -> BTreeSet<MessageQueue> {
        self.inner.owned.lock().keys().cloned().collect()
    }

    /// The readable queues of `topic` (`fetchMessageQueues`).
    pub async fn fetch_message_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        let instance = &self.inner.instance;
        instance.update_route(topic).await?;
        instance
            .routes
            .subscribe_queues(topic)
            .map(|q| q.into_iter().collect())
            .ok_or_else(|| ClientError::NoRoute(topic.to_string()))
    }

    /// The next pulled messages (of one queue, in queue order), waiting up to `timeout`;
    /// empty when none arrived. Their queue's consumed offset moves past them.
    pub async fn poll(&self, timeout: Duration) -> Vec<MessageExt> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            if let Some(msgs) = self.inner.take_batch() {
                return msgs;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.inner.take_batch().unwrap_or_default();
            }
        }
    }

    /// Moves `mq` (which must be owned) to `offset`: the next poll of it starts there, and
    /// messages pulled before the seek are dropped.
    pub async fn seek(&self, mq: &MessageQueue, offset: i64) -> Result<()> {
        if !self.inner.owned.lock().contains_key(mq) {
            return Err(ClientError::Config(format!(
                "{mq} is not assigned to this consumer"
            )));
        }
        let broker = admin_broker(&self.inner.instance, mq).await?;
        let api = &self.inner.instance.api;
        let (min, max) = (
            api.min_offset(&broker, mq).await?,
            api.max_offset(&broker, mq).await?,
        );
        if offset < min || offset > max {
            return Err(ClientError::Config(format!(
                "offset {offset} of {mq} is outside [{min}, {max}]"
            )));
        }
        self.inner.restart(mq, offset);
        Ok(())
    }

    /// Moves `mq` to its first stored message.
    pub async fn seek_to_begin(&self, mq: &MessageQueue) -> Result<()> {
        let broker = admin_broker(&self.inner.instance, mq).await?;
        let min = self.inner.instance.api.min_offset(&broker, mq).await?;
        self.seek(mq, min).await
    }

    /// Moves `mq` past its last stored message.
    pub async fn seek_to_end(&self, mq: &MessageQueue) -> Result<()> {
        let broker = admin_broker(&self.inner.instance, mq).await?;
        let max = self.inner.instance.api.max_offset(&broker, mq).await?;
        self.seek(mq, max).await
    }

    /// Stores the consumed offset of every owned queue now (two-way on the broker).
    pub async fn commit_sync(&self) -> Result<()> {
        let consumed: Vec<(MessageQueue, i64)> = self
            .inner
            .owned
            .lock()
            .iter()
            .filter_map(|(mq, o)| o.consumed.map(|c| (mq.clone(), c)))
            .collect();
        for (mq, offset) in consumed {
            self.inner.offsets.update_and_push(&mq, offset).await?;
        }
        Ok(())
    }

    /// The group's committed offset of `mq` (`committed`); `None` when there is none.
    pub async fn committed(&self, mq: &MessageQueue) -> Result<Option<i64>> {
        self.inner
            .offsets
            .read_offset(mq, ReadOffsetType::ReadFromStore)
            .await
    }

    /// Commits (with auto commit), unregisters and stops.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        if inner.config.auto_commit {
            inner.persist_offsets().await;
        }
        inner.instance.shutdown().await;
    }
}

impl LiteInner {
    fn set_mode(&self, mode: Mode) -> Result<()> {
        let mut current = self.mode.lock();
        if *current != Mode::Unset && *current != mode {
            return Err(ClientError::Config(
                "subscribe and assign cannot be mixed on one consumer".into(),
            ));
        }
        *current = mode;
        Ok(())
    }

    fn next_generation(&self) -> u64 {
        let mut g = self.next_generation.lock();
        *g += 1;
        *g
    }

    /// The oldest batch still current (seeks and released queues void older ones).
    fn take_batch(&self) -> Option<Vec<MessageExt>> {
        loop {
            let batch = self.buffer.lock().pop_front()?;
            let mut owned = self.owned.lock();
            let Some(o) = owned
                .get_mut(&batch.mq)
                .filter(|o| o.generation == batch.generation)
            else {
                continue;
            };
            o.consumed = Some(batch.next_offset);
            if self.config.auto_commit {
                self.offsets
                    .update_offset(&batch.mq, batch.next_offset, false);
            }
            if batch.msgs.is_empty() {
                continue;
            }
            return Some(batch.msgs);
        }
    }

    fn buffered(&self) -> usize {
        self.buffer.lock().iter().map(|b| b.msgs.len()).sum()
    }

    /// Restarts `mq`'s pull task at `offset`.
    fn restart(self: &Arc<Self>, mq: &MessageQueue, offset: i64) {
        let generation = self.next_generation();
        let stop = self.stop.child_token();
        {
            let mut owned = self.owned.lock();
            let Some(o) = owned.get_mut(mq) else { return };
            o.stop.cancel();
            o.generation = generation;
            o.stop = stop.clone();
            o.consumed = Some(offset);
        }
        self.offsets.update_offset(mq, offset, false);
        self.spawn_pull(mq.clone(), offset, generation, stop);
    }

    fn spawn_pull(
        self: &Arc<Self>,
        mq: MessageQueue,
        offset: i64,
        generation: u64,
        stop: CancellationToken,
    ) {
        self.instance.tasks.spawn(pull_loop(
            Arc::downgrade(self),
            mq,
            offset,
            generation,
            stop,
        ));
    }

    /// Owns exactly `mine` among `topic`'s queues (all topics when `None`).
    async fn update_owned(self: &Arc<Self>, mine: &BTreeSet<MessageQueue>, topic: Option<&str>) {
        let released: Vec<MessageQueue> = {
            let mut owned = self.owned.lock();
            let gone: Vec<MessageQueue> = owned
                .keys()
                .filter(|mq| topic.is_none_or(|t| mq.topic == t) && !mine.contains(*mq))
                .cloned()
                .collect();
            for mq in &gone {
                if let Some(o) = owned.remove(mq) {
                    o.stop.cancel();
                }
            }
            gone
        };
        for mq in released {
            if self.config.auto_commit {
                self.offsets.persist_and_remove(&mq).await;
            }
            info!(queue = %mq, "queue released");
        }
        let new: Vec<MessageQueue> = {
            let owned = self.owned.lock();
            mine.iter()
                .filter(|mq| !owned.contains_key(*mq))
                .cloned()
                .collect()
        };
        for mq in new {
            let ts = self
                .config
                .consume_timestamp
                .unwrap_or(self.started_at - 30 * 60 * 1000);
            let offset = match start_offset(
                &self.instance,
                &self.offsets,
                &mq,
                self.config.consume_from_where,
                ts,
            )
            .await
            {
                Ok(o) => o,
                Err(e) => {
                    warn!(queue = %mq, error = %e, "cannot compute the start offset");
                    continue;
                }
            };
            let generation = self.next_generation();
            let stop = self.stop.child_token();
            self.owned.lock().insert(
                mq.clone(),
                Owned {
                    generation,
                    stop: stop.clone(),
                    consumed: None,
                },
            );
            info!(queue = %mq, offset, "queue assigned");
            self.spawn_pull(mq, offset, generation, stop);
        }
    }
}

impl QueueOwner for Arc<LiteInner> {
    fn owned(&self) -> BTreeSet<MessageQueue> {
        self.owned.lock().keys().cloned().collect()
    }

    fn assign<'a>(&'a self, topic: &'a str, mine: &'a BTreeSet<MessageQueue>) -> BoxFuture<'a, ()> {
        Box::pin(self.update_owned(mine, Some(topic)))
    }
}

impl Rebalancing for LiteInner {
    /// Rebalances the subscribed topics; queues given with `assign` are never rebalanced.
    fn rebalance_round(self: Arc<Self>) -> BoxFuture<'static, bool> {
        Box::pin(async move {
            if *self.mode.lock() != Mode::Subscribe {
                return true;
            }
            let topics: Vec<String> = self.subscriptions.lock().keys().cloned().collect();
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

/// Long-polls one owned queue into the poll buffer until stopped.
async fn pull_loop(
    weak: std::sync::Weak<LiteInner>,
    mq: MessageQueue,
    mut offset: i64,
    generation: u64,
    stop: CancellationToken,
) {
    let pause = |d: Duration| pause_unless_stopped(&stop, d);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.buffered() >= inner.config.pull_threshold_for_all {
            drop(inner);
            pause(FLOW_CONTROL_DELAY).await;
            continue;
        }
        let sub = inner
            .subscriptions
            .lock()
            .get(&mq.topic)
            .cloned()
            .or_else(|| build_subscription(&mq.topic, "*").ok());
        let Some(sub) = sub else { return };
        let c = &inner.config;
        let pulled = tokio::select! {
            _ = stop.cancelled() => return,
            r = pull_queue(
                &inner.instance,
                &inner.pull_from,
                &c.consumer_group,
                &mq,
                &sub,
                offset,
                c.pull_batch_size,
                Some(c.broker_suspend_max_time),
                c.consumer_timeout_when_suspend,
            ) => r,
        };
        match pulled {
            Ok(r) => {
                if r.pull_status == PullStatus::OffsetIllegal {
                    warn!(queue = %mq, from = offset, to = r.next_begin_offset, "pull offset illegal; moving");
                }
                let moved = r.next_begin_offset != offset;
                offset = r.next_begin_offset;
                if moved && !stop.is_cancelled() {
                    inner.buffer.lock().push_back(Batch {
                        mq: mq.clone(),
                        generation,
                        msgs: r.msg_found_list,
                        next_offset: offset,
                    });
                    inner.arrived.notify_waiters();
                    inner.arrived.notify_one();
                }
            }
            Err(e) => {
                warn!(queue = %mq, error = %e, "pull failed");
                let delay = inner.instance.config.pull_time_delay_when_exception;
                drop(inner);
                pause(delay).await;
            }
        }
    }
}

impl ConsumerHandle for LiteInner {
    fn consumer_data(&self) -> ConsumerData {
        ConsumerData {
            consume_from_where: self.config.consume_from_where,
            consume_type: ConsumeType::ConsumeActively,
            group_name: self.config.consumer_group.clone(),
            message_model: self.config.message_model,
            subscription_data_set: self.subscriptions.lock().values().cloned().collect(),
            unit_mode: self.instance.config.unit_mode,
        }
    }

    fn rebalance_now(&self) {
        self.rebalance.notify_one();
    }

    fn running_info(&self) -> ConsumerRunningInfo {
        let mut info = running_info(
            ConsumeType::ConsumeActively,
            self.started_at,
            &self.config.consumer_group,
        );
        info.properties.insert(
            "messageModel".into(),
            self.config.message_model.name().into(),
        );
        info.subscription_set = self.subscriptions.lock().values().cloned().collect();
        info
    }

    fn offsets(&self) -> Arc<dyn ConsumerOffsets> {
        self.offsets.clone()
    }

    fn persist_offsets(&self) -> BoxFuture<'static, ()> {
        if !self.config.auto_commit {
            return Box::pin(async {});
        }
        let mqs: BTreeSet<MessageQueue> = self.owned.lock().keys().cloned().collect();
        let store = self.offsets.clone();
        Box::pin(async move { store.persist_all(&mqs).await })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use remoting::ResponseCode;
    use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RemotingError, RequestCode};

    use super::*;
    use crate::route::tests::{group, queues, route};
    use crate::transport::Transport;

    /// One broker that answers what a rebalance asks: the group's member list (`None`: an
    /// error), heartbeats (counted) and offsets (none stored). Pulls time out.
    #[derive(Default)]
    struct ScriptedBroker {
        members: Mutex<Option<Vec<String>>>,
        heartbeats: Mutex<usize>,
    }

    impl Transport for ScriptedBroker {
        fn invoke<'a>(
            &'a self,
            addr: &'a BrokerAddr,
            req: RemotingCommand,
            _timeout: Duration,
        ) -> BoxFuture<'a, std::result::Result<RemotingCommand, RemotingError>> {
            let answer = |code| Ok(RemotingCommand::response_to(&req, code, None));
            let resp = match req.code {
                RequestCode::GET_CONSUMER_LIST_BY_GROUP => match self.members.lock().clone() {
                    Some(ids) => {
                        let body = GetConsumerListByGroupResponseBody {
                            consumer_id_list: ids,
                        };
                        answer(ResponseCode::SUCCESS).map(|r| r.with_body(body.encode().unwrap()))
                    }
                    None => answer(ResponseCode::SYSTEM_ERROR),
                },
                RequestCode::HEART_BEAT => {
                    *self.heartbeats.lock() += 1;
                    answer(ResponseCode::SUCCESS)
                }
                RequestCode::QUERY_CONSUMER_OFFSET => answer(ResponseCode::QUERY_NOT_FOUND),
                _ => Err(RemotingError::Timeout {
                    addr: addr.to_string(),
                    millis: 0,
                }),
            };
            Box::pin(async move { resp })
        }

        fn invoke_oneway<'a>(
            &'a self,
            _addr: &'a BrokerAddr,
            _req: RemotingCommand,
        ) -> BoxFuture<'a, std::result::Result<(), RemotingError>> {
            Box::pin(async { Ok(()) })
        }

        fn invoke_namesrv<'a>(
            &'a self,
            addr: &'a NameServerAddr,
            _req: RemotingCommand,
            _timeout: Duration,
        ) -> BoxFuture<'a, std::result::Result<RemotingCommand, RemotingError>> {
            let err = RemotingError::Timeout {
                addr: addr.to_string(),
                millis: 0,
            };
            Box::pin(async move { Err(err) })
        }
    }

    /// A lite-pull consumer of group `G` subscribed to `T` (4 queues on `broker-a`), over
    /// `broker`, with no background tasks: rounds run when the test says.
    fn subscribed(broker: Arc<ScriptedBroker>) -> Arc<LiteInner> {
        let client = ClientConfig::new("127.0.0.1:9876")
            .unwrap()
            .client_ip("127.0.0.1")
            .instance_name("lite-rebalance-test");
        let instance = ClientInstance::with_transport(client, broker).unwrap();
        instance.routes.update(
            "T",
            route(
                vec![group("broker-a", &[(0, 10911)])],
                vec![queues("broker-a", 6, 4)],
            ),
        );
        let config = LitePullConsumerConfig::new("G")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset);
        let offsets = OffsetStore::open(&instance, "G", config.message_model, None).unwrap();
        let inner = Arc::new(LiteInner {
            rebalancer: Rebalancer::new(
                "G",
                &instance.client_id,
                config.message_model,
                config.allocate_strategy.clone(),
            ),
            stop: instance.shutdown.child_token(),
            instance,
            config,
            offsets: Arc::new(offsets),
            pull_from: PullFrom::default(),
            mode: Mutex::new(Mode::Subscribe),
            subscriptions: Mutex::new(
                [("T".to_string(), build_subscription("T", "*").unwrap())].into(),
            ),
            owned: Mutex::new(BTreeMap::new()),
            next_generation: Mutex::new(0),
            buffer: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            rebalance: Notify::new(),
            started_at: now_millis(),
        });
        inner.instance.register_consumer("G", inner.clone());
        inner
    }

    /// One rebalance round; returns whether it was complete.
    async fn round(inner: &Arc<LiteInner>) -> bool {
        inner.clone().rebalance_round().await
    }

    fn mqs(ids: std::ops::Range<i32>) -> BTreeSet<MessageQueue> {
        ids.map(|i| MessageQueue::new("T", "broker-a", i)).collect()
    }

    #[tokio::test]
    async fn a_failed_member_list_makes_the_lite_round_incomplete() {
        let broker = Arc::new(ScriptedBroker::default());
        let inner = subscribed(broker.clone());
        assert!(
            !round(&inner).await,
            "no member list: the round is incomplete"
        );
        assert!(inner.owned.lock().is_empty());
        inner.instance.shutdown().await;
    }

    #[tokio::test]
    async fn a_lite_swap_of_queues_sends_a_heartbeat() {
        let broker = Arc::new(ScriptedBroker::default());
        let inner = subscribed(broker.clone());
        let me = inner.instance.client_id.clone();
        // First in the sorted member list: queues 0 and 1.
        *broker.members.lock() = Some(vec![me.clone(), "zzz@other".into()]);
        assert!(round(&inner).await);
        let owned: BTreeSet<MessageQueue> = inner.owned.lock().keys().cloned().collect();
        assert_eq!(owned, mqs(0..2));
        assert_eq!(*broker.heartbeats.lock(), 1);
        // A member sorting ahead of this one joins in place of the other: queues 2 and 3,
        // the same count.
        *broker.members.lock() = Some(vec!["000@other".into(), me]);
        assert!(round(&inner).await);
        let owned: BTreeSet<MessageQueue> = inner.owned.lock().keys().cloned().collect();
        assert_eq!(owned, mqs(2..4));
        assert_eq!(
            *broker.heartbeats.lock(),
            2,
            "a swap of queues is a change and must send a heartbeat"
        );
        inner.instance.shutdown().await;
    }
}
