//! The producer: [`Producer`] sends messages sync, async, oneway, in batches or to a chosen
//! queue, with upstream's retry, fault-avoidance, compression and unique-id behaviour;
//! [`TransactionProducer`] adds half messages, local transactions and check-backs.
//!
//! ```no_run
//! use client::{ClientConfig, Producer, ProducerConfig};
//! use remoting::message::Message;
//!
//! # async fn demo() -> Result<(), client::ClientError> {
//! let producer = Producer::start(
//!     ClientConfig::new("127.0.0.1:9876")?,
//!     ProducerConfig::new("please_rename_unique_group_name"),
//! )
//! .await?;
//! let result = producer.send(Message::new("TopicTest", "Hello").with_tags("TagA")).await?;
//! println!("sent {} to {}", result.msg_id, result.message_queue);
//! producer.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod send;
mod transaction;

use std::sync::Arc;
use std::time::Duration;

use remoting::broker_headers::MessageQueue;
use remoting::message::Message;
use remoting::ResponseCode;
use tokio::task::JoinHandle;

use crate::config::ClientConfig;
use crate::error::Result;
use crate::instance::ClientInstance;

pub use crate::send_result::{SendResult, SendStatus};
pub(crate) use send::{check_group_name, check_topic, CommunicationMode, SendEngine};
pub use transaction::{
    LocalTransactionState, TransactionListener, TransactionProducer, TransactionSendResult,
};

/// Topic whose route auto-created topics borrow (`TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`).
pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
/// Producer group of the producer a consumer uses to re-send failed messages.
pub const CLIENT_INNER_PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";

/// Response codes after which a send is retried on another broker group (upstream
/// `DefaultMQProducer.retryResponseCodes`).
pub const RETRY_RESPONSE_CODES: [i32; 8] = [
    ResponseCode::TOPIC_NOT_EXIST,
    ResponseCode::SERVICE_NOT_AVAILABLE,
    ResponseCode::SYSTEM_ERROR,
    ResponseCode::SYSTEM_BUSY,
    ResponseCode::NO_PERMISSION,
    ResponseCode::NO_BUYER_ID,
    ResponseCode::NOT_IN_CURRENT_UNIT,
    ResponseCode::GO_AWAY,
];

/// Producer settings with upstream's names and defaults (`DefaultMQProducer`).
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// `producerGroup`.
    pub producer_group: String,
    /// `createTopicKey` (`TBW102`).
    pub create_topic_key: String,
    /// `defaultTopicQueueNums` (4).
    pub default_topic_queue_nums: i32,
    /// `sendMsgTimeout` (3 s), for all attempts of one send together.
    pub send_msg_timeout: Duration,
    /// `compressMsgBodyOverHowmuch` (4 KiB): larger bodies are zlib-compressed.
    pub compress_msg_body_over_howmuch: usize,
    /// Zlib level (5).
    pub compress_level: u32,
    /// `retryTimesWhenSendFailed` (2): extra attempts of a sync send.
    pub retry_times_when_send_failed: usize,
    /// `retryTimesWhenSendAsyncFailed` (2): extra attempts of an async send.
    pub retry_times_when_send_async_failed: usize,
    /// `retryAnotherBrokerWhenNotStoreOK` (false): retry when a broker stored the message
    /// but answered a flush or slave timeout.
    pub retry_another_broker_when_not_store_ok: bool,
    /// `maxMessageSize` (4 MiB).
    pub max_message_size: usize,
}

impl ProducerConfig {
    /// Defaults for `producer_group`.
    pub fn new(producer_group: impl Into<String>) -> Self {
        ProducerConfig {
            producer_group: producer_group.into(),
            create_topic_key: AUTO_CREATE_TOPIC_KEY_TOPIC.to_string(),
            default_topic_queue_nums: 4,
            send_msg_timeout: Duration::from_secs(3),
            compress_msg_body_over_howmuch: 4 * 1024,
            compress_level: remoting::message::DEFAULT_COMPRESS_LEVEL,
            retry_times_when_send_failed: 2,
            retry_times_when_send_async_failed: 2,
            retry_another_broker_when_not_store_ok: false,
            max_message_size: 4 * 1024 * 1024,
        }
    }

    /// Sets `sendMsgTimeout`.
    pub fn send_msg_timeout(mut self, d: Duration) -> Self {
        self.send_msg_timeout = d;
        self
    }

    /// Sets `retryTimesWhenSendFailed`.
    pub fn retry_times_when_send_failed(mut self, n: usize) -> Self {
        self.retry_times_when_send_failed = n;
        self
    }

    /// Sets `retryTimesWhenSendAsyncFailed`.
    pub fn retry_times_when_send_async_failed(mut self, n: usize) -> Self {
        self.retry_times_when_send_async_failed = n;
        self
    }

    /// Sets `compressMsgBodyOverHowmuch`.
    pub fn compress_msg_body_over_howmuch(mut self, n: usize) -> Self {
        self.compress_msg_body_over_howmuch = n;
        self
    }

    /// Sets `maxMessageSize`.
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets `retryAnotherBrokerWhenNotStoreOK`.
    pub fn retry_another_broker_when_not_store_ok(mut self, retry: bool) -> Self {
        self.retry_another_broker_when_not_store_ok = retry;
        self
    }
}

/// A started producer. Cheap to clone; clones share the connection and routes.
#[derive(Clone)]
pub struct Producer {
    engine: Arc<SendEngine>,
}

impl Producer {
    /// Starts a producer: its own client instance, route refresh and heartbeats.
    pub async fn start(client: ClientConfig, config: ProducerConfig) -> Result<Self> {
        let instance = ClientInstance::new(client)?;
        Self::start_on(instance, config)
    }

    pub(crate) fn start_on(instance: Arc<ClientInstance>, config: ProducerConfig) -> Result<Self> {
        check_group_name(&config.producer_group)?;
        instance.register_producer(&config.producer_group);
        instance.start_background();
        Ok(Producer {
            engine: Arc::new(SendEngine::new(instance, config)),
        })
    }

    pub(crate) fn engine(&self) -> &Arc<SendEngine> {
        &self.engine
    }

    /// The client id brokers see.
    pub fn client_id(&self) -> &str {
        &self.engine.instance().client_id
    }

    /// Sends and waits for the broker's answer, retrying on other broker groups
    /// (`retryTimesWhenSendFailed`) within `sendMsgTimeout`.
    pub async fn send(&self, msg: Message) -> Result<SendResult> {
        let timeout = self.engine.config().send_msg_timeout;
        self.send_with_timeout(msg, timeout).await
    }

    /// [`send`](Self::send) with another total timeout.
    pub async fn send_with_timeout(&self, msg: Message, timeout: Duration) -> Result<SendResult> {
        self.engine
            .send(msg, CommunicationMode::Sync, timeout)
            .await
    }

    /// Sends in the background; the handle yields the result (`retryTimesWhenSendAsyncFailed`).
    pub fn send_async(&self, msg: Message) -> JoinHandle<Result<SendResult>> {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let timeout = engine.config().send_msg_timeout;
            engine.send(msg, CommunicationMode::Async, timeout).await
        })
    }

    /// Sends without waiting for the broker (no answer, no retry).
    pub async fn send_oneway(&self, msg: Message) -> Result<()> {
        let timeout = self.engine.config().send_msg_timeout;
        self.engine
            .send(msg, CommunicationMode::Oneway, timeout)
            .await
            .map(|_| ())
    }

    /// Sends to the queue `selector` picks from the topic's writable queues (ordered
    /// messages: same key, same queue). One attempt, as upstream.
    pub async fn send_with_selector<F>(&self, msg: Message, selector: F) -> Result<SendResult>
    where
        F: FnOnce(&[MessageQueue], &Message) -> Option<MessageQueue>,
    {
        let timeout = self.engine.config().send_msg_timeout;
        self.engine.send_with_selector(msg, selector, timeout).await
    }

    /// Sends to `mq`. One attempt.
    pub async fn send_to_queue(&self, msg: Message, mq: MessageQueue) -> Result<SendResult> {
        self.send_with_selector(msg, move |_, _| Some(mq)).await
    }

    /// Sends messages of one topic as one SEND_BATCH_MESSAGE.
    pub async fn send_batch(&self, msgs: Vec<Message>) -> Result<SendResult> {
        let timeout = self.engine.config().send_msg_timeout;
        self.engine.send_batch(msgs, timeout).await
    }

    /// The writable queues of `topic` (fetching its route if needed).
    pub async fn fetch_publish_queues(&self, topic: &str) -> Result<Vec<MessageQueue>> {
        Ok(self.engine.publish_info(topic).await?.queues.clone())
    }

    /// Unregisters from brokers, stops background tasks and closes connections.
    pub async fn shutdown(&self) {
        self.engine.instance().shutdown().await;
    }
}

/// The queue at `hash % len` (the usual selector for ordered messages by key).
pub fn select_by_hash(queues: &[MessageQueue], hash: u64) -> Option<MessageQueue> {
    (!queues.is_empty()).then(|| queues[(hash % queues.len() as u64) as usize].clone())
}
