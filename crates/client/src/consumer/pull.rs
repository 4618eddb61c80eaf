//! The pull consumer (upstream `DefaultMQPullConsumer`): the application picks queues and
//! offsets itself. It fetches a topic's queues, pulls a queue at an offset (at once, or
//! holding the request on the broker until a message arrives), and keeps offsets on the
//! broker. Its pull step (`pull_queue`) is shared with the lite-pull consumer.
//!
//! ```no_run
//! use client::consumer::pull::{PullConsumer, PullConsumerConfig};
//! use client::consumer::queues::PullStatus;
//! use client::ClientConfig;
//!
//! # async fn demo() -> Result<(), client::ClientError> {
//! let consumer = PullConsumer::start(
//!     ClientConfig::new("127.0.0.1:9876")?,
//!     PullConsumerConfig::new("please_rename_unique_group_name_5"),
//! )
//! .await?;
//! for mq in consumer.fetch_subscribe_message_queues("TopicTest").await? {
//!     let offset = consumer.fetch_consume_offset(&mq).await?.unwrap_or(0);
//!     let result = consumer.pull(&mq, "*", offset, 32).await?;
//!     if result.pull_status == PullStatus::Found {
//!         for m in &result.msg_found_list {
//!             println!("{} {:?}", m.msg_id(), m.message.body);
//!         }
//!     }
//!     consumer.update_consume_offset(&mq, result.next_begin_offset);
//! }
//! consumer.commit().await;
//! consumer.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use remoting::broker_headers::*;
use remoting::message::{now_millis, MessageExt};
use tracing::{info, warn};

use super::offset_store::{OffsetStore, ReadOffsetType, RemoteBrokerOffsetStore};
use super::queues::{admin_broker, process_pull, running_info, PullFrom, PullResult};
use super::send_back::{send_back, SendBackOutcome};
use super::subscription::build_subscription;
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, ConsumerHandle, ConsumerOffsets};
use crate::producer::{ProducerConfig, SendEngine, CLIENT_INNER_PRODUCER_GROUP};

/// Pull consumer settings with upstream's names and defaults (`DefaultMQPullConsumer`).
#[derive(Clone, Debug)]
pub struct PullConsumerConfig {
    /// `consumerGroup`.
    pub consumer_group: String,
    /// `brokerSuspendMaxTimeMillis` (20 s): how long the broker holds a blocking pull.
    pub broker_suspend_max_time: Duration,
    /// `consumerTimeoutMillisWhenSuspend` (30 s): timeout of a blocking pull.
    pub consumer_timeout_when_suspend: Duration,
    /// `consumerPullTimeoutMillis` (10 s): timeout of a non-blocking pull.
    pub consumer_pull_timeout: Duration,
    /// `maxReconsumeTimes` (16), for [`PullConsumer::send_message_back`].
    pub max_reconsume_times: i32,
    /// `registerTopics`: topics announced in heartbeats (subscription `*`).
    pub register_topics: BTreeSet<String>,
}

impl PullConsumerConfig {
    /// Defaults for `consumer_group`.
    pub fn new(consumer_group: impl Into<String>) -> Self {
        PullConsumerConfig {
            consumer_group: consumer_group.into(),
            broker_suspend_max_time: Duration::from_secs(20),
            consumer_timeout_when_suspend: Duration::from_secs(30),
            consumer_pull_timeout: Duration::from_secs(10),
            max_reconsume_times: 16,
            register_topics: BTreeSet::new(),
        }
    }

    /// Sets `brokerSuspendMaxTimeMillis`.
    pub fn broker_suspend_max_time(mut self, d: Duration) -> Self {
        self.broker_suspend_max_time = d;
        self
    }

    /// Sets `maxReconsumeTimes`.
    pub fn max_reconsume_times(mut self, n: i32) -> Self {
        self.max_reconsume_times = n;
        self
    }

    /// Adds a topic to `registerTopics`.
    pub fn register_topic(mut self, topic: impl Into<String>) -> Self {
        self.register_topics.insert(topic.into());
        self
    }
}

/// Pulls `mq` at `offset` (at most `max_nums` messages) from the broker the last answer
/// suggested, else the group's master, else any broker of the group. With `suspend`, the
/// broker holds the request that long when nothing is there (long polling).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pull_queue(
    instance: &ClientInstance,
    pull_from: &PullFrom,
    group: &str,
    mq: &MessageQueue,
    sub: &SubscriptionData,
    offset: i64,
    max_nums: i32,
    suspend: Option<Duration>,
    timeout: Duration,
) -> Result<PullResult> {
    if pull_from.broker(instance, mq).is_none() {
        instance.update_route(&mq.topic).await?;
    }
    let found = pull_from
        .broker(instance, mq)
        .ok_or_else(|| ClientError::BrokerNotFound(mq.broker_name.clone()))?;
    let header = PullMessageRequestHeader {
        consumer_group: group.to_string(),
        topic: mq.topic.clone(),
        queue_id: mq.queue_id,
        queue_offset: offset,
        max_msg_nums: max_nums,
        sys_flag: PullSysFlag::build(false, suspend.is_some(), true, false),
        commit_offset: 0,
        suspend_timeout_millis: suspend.map(|d| d.as_millis() as i64).unwrap_or(0),
        subscription: Some(sub.sub_string.clone()),
        sub_version: 0,
        expression_type: Some(sub.expression_type.clone()),
        max_msg_bytes: None,
        request_source: None,
        proxy_frowardclient_id: None,
        bname: Some(mq.broker_name.clone()),
    };
    let raw = instance
        .api
        .pull_message(&found.addr, &header, timeout)
        .await?;
    pull_from.remember(mq, raw.header.suggest_which_broker_id);
    Ok(process_pull(mq, raw, sub, Some(group)))
}

/// A started pull consumer. Cheap to clone.
#[derive(Clone)]
pub struct PullConsumer {
    inner: Arc<PullInner>,
}

struct PullInner {
    instance: Arc<ClientInstance>,
    config: PullConsumerConfig,
    offsets: Arc<OffsetStore>,
    inner_producer: SendEngine,
    pull_from: PullFrom,
    started_at: i64,
}

impl PullConsumer {
    /// Starts the consumer: its own client instance, route refresh, heartbeats (announcing
    /// `registerTopics`) and offset persistence.
    pub async fn start(client: ClientConfig, config: PullConsumerConfig) -> Result<Self> {
        crate::producer::check_group_name(&config.consumer_group)?;
        let instance = ClientInstance::new(client)?;
        let offsets = OffsetStore::Remote(RemoteBrokerOffsetStore::new(
            instance.clone(),
            &config.consumer_group,
        ));
        let inner = Arc::new(PullInner {
            inner_producer: SendEngine::new(
                instance.clone(),
                ProducerConfig::new(CLIENT_INNER_PRODUCER_GROUP),
            ),
            instance,
            config,
            offsets: Arc::new(offsets),
            pull_from: PullFrom::default(),
            started_at: now_millis(),
        });
        let instance = &inner.instance;
        instance.register_producer(CLIENT_INNER_PRODUCER_GROUP);
        instance.register_consumer(&inner.config.consumer_group, inner.clone());
        for topic in &inner.config.register_topics {
            if let Err(e) = instance.update_route(topic).await {
                warn!(topic, error = %e, "no route yet");
            }
        }
        instance.start_background();
        instance.send_heartbeats().await;
        info!(group = %inner.config.consumer_group, client_id = %instance.client_id, "pull consumer started");
        Ok(PullConsumer { inner })
    }

    /// The client id brokers see.
    pub fn client_id(&self) -> &str {
        &self.inner.instance.client_id
    }

    /// The readable queues of `topic` (`fetchSubscribeMessageQueues`), from the NameServer.
    pub async fn fetch_subscribe_message_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        let instance = &self.inner.instance;
        instance.update_route(topic).await?;
        instance
            .routes
            .subscribe_queues(topic)
            .map(|q| q.into_iter().collect())
            .ok_or_else(|| ClientError::NoRoute(topic.to_string()))
    }

    /// Pulls up to `max_nums` messages of `mq` from `offset` matching the tag `expression`;
    /// answers at once when nothing is there.
    pub async fn pull(
        &self,
        mq: &MessageQueue,
        expression: &str,
        offset: i64,
        max_nums: i32,
    ) -> Result<PullResult> {
        self.pull_impl(mq, expression, offset, max_nums, false)
            .await
    }

    /// Like [`pull`](Self::pull), but the broker holds the request (up to
    /// `brokerSuspendMaxTimeMillis`) until a message arrives (`pullBlockIfNotFound`).
    pub async fn pull_block_if_not_found(
        &self,
        mq: &MessageQueue,
        expression: &str,
        offset: i64,
        max_nums: i32,
    ) -> Result<PullResult> {
        self.pull_impl(mq, expression, offset, max_nums, true).await
    }

    async fn pull_impl(
        &self,
        mq: &MessageQueue,
        expression: &str,
        offset: i64,
        max_nums: i32,
        block: bool,
    ) -> Result<PullResult> {
        if offset < 0 {
            return Err(ClientError::Config(format!("offset {offset} is negative")));
        }
        if max_nums <= 0 {
            return Err(ClientError::Config(format!(
                "maxNums {max_nums} must be positive"
            )));
        }
        let sub = build_subscription(&mq.topic, expression)?;
        let c = &self.inner.config;
        let (suspend, timeout) = if block {
            (
                Some(c.broker_suspend_max_time),
                c.consumer_timeout_when_suspend,
            )
        } else {
            (None, c.consumer_pull_timeout)
        };
        pull_queue(
            &self.inner.instance,
            &self.inner.pull_from,
            &c.consumer_group,
            mq,
            &sub,
            offset,
            max_nums,
            suspend,
            timeout,
        )
        .await
    }

    /// Records `offset` as `mq`'s consumed offset (sent to the broker by [`commit`](Self::commit)
    /// and every `persistConsumerOffsetInterval`).
    pub fn update_consume_offset(&self, mq: &MessageQueue, offset: i64) {
        self.inner.offsets.update_offset(mq, offset, false);
    }

    /// The group's offset of `mq` on the broker; `None` when it has none.
    pub async fn fetch_consume_offset(&self, mq: &MessageQueue) -> Result<Option<i64>> {
        self.inner
            .offsets
            .read_offset(mq, ReadOffsetType::ReadFromStore)
            .await
    }

    /// Sends every recorded offset to the brokers now.
    pub async fn commit(&self) {
        self.inner.persist_offsets().await;
    }

    /// The queue's largest offset (one past its last message).
    pub async fn max_offset(&self, mq: &MessageQueue) -> Result<i64> {
        let broker = admin_broker(&self.inner.instance, mq).await?;
        self.inner.instance.api.max_offset(&broker, mq).await
    }

    /// The queue's smallest offset still stored.
    pub async fn min_offset(&self, mq: &MessageQueue) -> Result<i64> {
        let broker = admin_broker(&self.inner.instance, mq).await?;
        self.inner.instance.api.min_offset(&broker, mq).await
    }

    /// The first offset of `mq` stored at or after `timestamp` (ms since the epoch).
    pub async fn search_offset(&self, mq: &MessageQueue, timestamp: i64) -> Result<i64> {
        let broker = admin_broker(&self.inner.instance, mq).await?;
        self.inner
            .instance
            .api
            .search_offset(&broker, mq, timestamp)
            .await
    }

    /// Hands a message pulled from `mq` back for a later retry (`sendMessageBack`), with the
    /// same rules as the push consumer: CONSUMER_SEND_MSG_BACK to the group's master when the
    /// route has one, else a re-send to `%RETRY%group`. `delay_level` 0 lets the broker pick.
    pub async fn send_message_back(
        &self,
        mq: &MessageQueue,
        msg: &MessageExt,
        delay_level: i32,
    ) -> Result<()> {
        let c = &self.inner.config;
        match send_back(
            &self.inner.instance,
            &self.inner.inner_producer,
            mq,
            msg,
            &c.consumer_group,
            delay_level,
            c.max_reconsume_times,
        )
        .await
        {
            SendBackOutcome::SentBack | SendBackOutcome::Resent(_) => Ok(()),
            SendBackOutcome::Failed(e) => Err(e),
        }
    }

    /// Commits offsets, unregisters and stops.
    pub async fn shutdown(&self) {
        self.inner.persist_offsets().await;
        self.inner.instance.shutdown().await;
    }
}

impl ConsumerHandle for PullInner {
    fn consumer_data(&self) -> ConsumerData {
        let subscription_data_set = self
            .config
            .register_topics
            .iter()
            .filter_map(|t| build_subscription(t, "*").ok())
            .collect();
        ConsumerData {
            consume_from_where: ConsumeFromWhere::ConsumeFromLastOffset,
            consume_type: ConsumeType::ConsumeActively,
            group_name: self.config.consumer_group.clone(),
            message_model: MessageModel::Clustering,
            subscription_data_set,
            unit_mode: self.instance.config.unit_mode,
        }
    }

    fn rebalance_now(&self) {}

    fn running_info(&self) -> ConsumerRunningInfo {
        let mut info = running_info(
            ConsumeType::ConsumeActively,
            self.started_at,
            &self.config.consumer_group,
        );
        info.subscription_set = self.consumer_data().subscription_data_set;
        info
    }

    fn offsets(&self) -> Arc<dyn ConsumerOffsets> {
        self.offsets.clone()
    }

    fn persist_offsets(&self) -> BoxFuture<'static, ()> {
        let mqs: BTreeSet<MessageQueue> = self.offsets.snapshot(None).into_keys().collect();
        let store = self.offsets.clone();
        Box::pin(async move { store.persist_all(&mqs).await })
    }
}
