//! The simple consumer (upstream 5.x `SimpleConsumer`, here over remoting POP): the
//! application receives messages, each invisible to the rest of the group for the invisible
//! duration it asks for, and acks them; a message not acked in time is handed out again by
//! the broker (through the group's POP retry topic, to the DLQ after `retryMaxTimes`). No
//! queue is owned, so any number of consumers share a topic without rebalancing.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::consumer::simple::{SimpleConsumer, SimpleConsumerConfig};
//! use client::ClientConfig;
//!
//! # async fn demo() -> Result<(), client::ClientError> {
//! let consumer = SimpleConsumer::start(
//!     ClientConfig::new("127.0.0.1:9876")?,
//!     SimpleConsumerConfig::new("GID_simple"),
//! )
//! .await?;
//! consumer.subscribe("TopicTest", "*").await?;
//! for m in consumer.receive(16, Duration::from_secs(30)).await? {
//!     println!("{:?}", m.message.message.body);
//!     consumer.ack(&m).await?;
//! }
//! consumer.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use remoting::message::{now_millis, MessageExt};
use remoting::pop::{
    pop_handles, real_topic, AckMessageRequestHeader, BatchAck, BatchAckMessageRequestBody,
    ChangeInvisibleTimeRequestHeader, ExtraInfo, PopMessageRequestHeader,
};
use remoting::{BrokerAddr, ResponseCode};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;

/// Simple consumer settings.
#[derive(Clone, Debug)]
pub struct SimpleConsumerConfig {
    pub consumer_group: String,
    /// How long a receive waits at the broker when nothing is there (long polling, 20 s;
    /// upstream `awaitDuration`).
    pub await_duration: Duration,
    /// FIFO: one batch per queue in flight, handed out in queue order (the group must be
    /// consumed orderly by every member).
    pub fifo: bool,
}

impl SimpleConsumerConfig {
    pub fn new(consumer_group: impl Into<String>) -> Self {
        SimpleConsumerConfig {
            consumer_group: consumer_group.into(),
            await_duration: Duration::from_secs(20),
            fifo: false,
        }
    }

    pub fn await_duration(mut self, d: Duration) -> Self {
        self.await_duration = d;
        self
    }

    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }
}

/// A received message and what acking it needs.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub message: MessageExt,
    /// The topic subscribed to (a retried message keeps it).
    pub topic: String,
    /// The receipt handle (`POP_CK`); replaced by [`SimpleConsumer::change_invisible_duration`].
    pub handle: ExtraInfo,
    /// The broker that handed it out; acks go there (see [`SimpleConsumer::ack`] for a
    /// broker that cannot be reached).
    pub broker: BrokerAddr,
}

/// A consumer that pops and acks; see the module documentation.
pub struct SimpleConsumer {
    instance: Arc<ClientInstance>,
    config: SimpleConsumerConfig,
    /// Topic -> tag expression.
    subscriptions: Mutex<BTreeMap<String, String>>,
    /// Round-robin position over (topic, broker) pairs.
    next: AtomicUsize,
}

impl SimpleConsumer {
    /// Starts the consumer (route refresh in the background).
    pub async fn start(client: ClientConfig, config: SimpleConsumerConfig) -> Result<Self> {
        crate::producer::check_group_name(&config.consumer_group)?;
        let instance = ClientInstance::new(client)?;
        instance.start_background();
        Ok(SimpleConsumer {
            instance,
            config,
            subscriptions: Mutex::new(BTreeMap::new()),
            next: AtomicUsize::new(0),
        })
    }

    /// Receives from `topic` messages whose tag matches `expression` (`*`, `A || B`).
    pub async fn subscribe(&self, topic: &str, expression: &str) -> Result<()> {
        self.instance.update_route(topic).await?;
        if self.instance.routes.route(topic).is_none() {
            return Err(ClientError::NoRoute(topic.to_string()));
        }
        self.subscriptions
            .lock()
            .insert(topic.to_string(), expression.to_string());
        Ok(())
    }

    /// Up to `max` messages (1-32) from the next (topic, broker master) in turn, invisible
    /// to the group for `invisible`. Waits up to the await duration when nothing is there;
    /// an empty list then.
    pub async fn receive(&self, max: i32, invisible: Duration) -> Result<Vec<ReceivedMessage>> {
        if !(1..=32).contains(&max) {
            return Err(ClientError::Config(format!(
                "receive takes 1 to 32 messages, not {max}"
            )));
        }
        let targets = self.targets();
        if targets.is_empty() {
            return Err(ClientError::Config(
                "subscribe to a topic with a writable master before receiving".into(),
            ));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % targets.len();
        let (topic, expression, broker_name, addr) = &targets[i];
        let header = PopMessageRequestHeader {
            consumer_group: self.config.consumer_group.clone(),
            topic: topic.clone(),
            queue_id: -1,
            max_msg_nums: max,
            invisible_time: invisible.as_millis() as i64,
            poll_time: self.config.await_duration.as_millis() as i64,
            born_time: now_millis(),
            init_mode: 0,
            exp_type: Some("TAG".into()),
            exp: Some(expression.clone()),
            order: Some(self.config.fifo),
            attempt_id: None,
        };
        let timeout = self.config.await_duration + self.instance.config.mq_client_api_timeout;
        let raw = self
            .instance
            .api
            .pop_message(addr, &header, timeout)
            .await?;
        if raw.code != ResponseCode::SUCCESS {
            return Ok(Vec::new());
        }
        let messages = MessageExt::decode_all_shared(&raw.body, true)?;
        let handles = pop_handles(&raw.header, &messages, broker_name)?;
        Ok(messages
            .into_iter()
            .zip(handles)
            .map(|(message, handle)| ReceivedMessage {
                message,
                topic: topic.clone(),
                handle,
                broker: addr.clone(),
            })
            .collect())
    }

    /// (topic, expression, broker name, master address) of every subscription.
    fn targets(&self) -> Vec<(String, String, String, BrokerAddr)> {
        let subs = self.subscriptions.lock().clone();
        let mut out = Vec::new();
        for (topic, expression) in subs {
            let Some(route) = self.instance.routes.route(&topic) else {
                continue;
            };
            for bd in &route.broker_datas {
                if let Some(addr) = crate::route::master_addr(bd) {
                    out.push((
                        topic.clone(),
                        expression.clone(),
                        bd.broker_name.clone(),
                        addr,
                    ));
                }
            }
        }
        out
    }

    /// Runs `call` at `handed` (the broker that handed the messages out, which holds their
    /// pop state); when that broker cannot be reached (it died and its group failed over),
    /// once more at the master the cached routes name now for `broker_name`, which rebuilt
    /// that state (upstream resolves the group's master for every ack). Returns the answer
    /// and the broker that gave it.
    async fn settle<T, F, Fut>(
        &self,
        handed: &BrokerAddr,
        broker_name: &str,
        call: F,
    ) -> Result<(T, BrokerAddr)>
    where
        F: Fn(BrokerAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match call(handed.clone()).await {
            Err(ClientError::Remoting(e)) => match self.instance.routes.master_addr(broker_name) {
                Some(now) if &now != handed => Ok((call(now.clone()).await?, now)),
                _ => Err(ClientError::Remoting(e)),
            },
            other => other.map(|t| (t, handed.clone())),
        }
    }

    fn receipt_topic(&self, m: &ReceivedMessage) -> String {
        real_topic(&m.topic, &self.config.consumer_group, m.handle.retry)
    }

    /// Acks a received message at the broker that handed it out, or, when that one cannot be
    /// reached, at its group's master now. A message whose invisible time passed (and that
    /// was handed out again) or that was acked already is refused by the broker (NO_MESSAGE).
    pub async fn ack(&self, m: &ReceivedMessage) -> Result<()> {
        let header = AckMessageRequestHeader {
            consumer_group: self.config.consumer_group.clone(),
            topic: self.receipt_topic(m),
            queue_id: m.handle.queue_id,
            extra_info: m.handle.to_string(),
            offset: m.message.queue_offset,
        };
        let header = &header;
        self.settle(&m.broker, &m.handle.broker_name, |addr| async move {
            self.instance.api.ack_message(&addr, header).await
        })
        .await
        .map(|_| ())
    }

    /// Acks several received messages with one BATCH_ACK_MESSAGE per broker (one record per
    /// pop at the broker). When some are stale the others are still acked and the broker's
    /// NO_MESSAGE error names the stale ones.
    pub async fn ack_batch(&self, msgs: &[ReceivedMessage]) -> Result<()> {
        type PopKey = (String, String, i32, i64, i64, i32, i64, char);
        let mut by_broker: BTreeMap<String, (BrokerAddr, BTreeMap<PopKey, Vec<i64>>)> =
            BTreeMap::new();
        for m in msgs {
            let h = &m.handle;
            let key = (
                m.topic.clone(),
                h.broker_name.clone(),
                h.queue_id,
                h.ck_queue_offset,
                h.pop_time,
                h.revive_qid,
                h.invisible_time,
                h.retry,
            );
            by_broker
                .entry(m.broker.to_string())
                .or_insert_with(|| (m.broker.clone(), BTreeMap::new()))
                .1
                .entry(key)
                .or_default()
                .push(m.message.queue_offset);
        }
        let mut first_error = None;
        for (_, (addr, pops)) in by_broker {
            let mut body = BatchAckMessageRequestBody::default();
            for (
                (topic, broker_name, queue_id, start, pop_time, revive_qid, invisible, mark),
                offsets,
            ) in pops
            {
                body.broker_name = broker_name;
                let mut ack = BatchAck {
                    consumer_group: self.config.consumer_group.clone(),
                    topic,
                    retry: mark.to_string(),
                    start_offset: start,
                    queue_id,
                    revive_queue_id: revive_qid,
                    pop_time,
                    invisible_time: invisible,
                    bit_set: String::new(),
                };
                ack.set_offsets(&offsets);
                body.acks.push(ack);
            }
            let (body, name) = (&body, body.broker_name.clone());
            let acked = self
                .settle(&addr, &name, |addr| async move {
                    self.instance.api.batch_ack_message(&addr, body).await
                })
                .await;
            if let Err(e) = acked {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes a received message invisible for `invisible` from now (where [`Self::ack`]
    /// would ack it); its handle and broker are replaced.
    pub async fn change_invisible_duration(
        &self,
        m: &mut ReceivedMessage,
        invisible: Duration,
    ) -> Result<()> {
        let header = ChangeInvisibleTimeRequestHeader {
            consumer_group: self.config.consumer_group.clone(),
            topic: self.receipt_topic(m),
            queue_id: m.handle.queue_id,
            extra_info: m.handle.to_string(),
            offset: m.message.queue_offset,
            invisible_time: invisible.as_millis() as i64,
        };
        let header = &header;
        let (r, at) = self
            .settle(&m.broker, &m.handle.broker_name, |addr| async move {
                self.instance.api.change_invisible_time(&addr, header).await
            })
            .await?;
        m.broker = at;
        m.handle = ExtraInfo {
            ck_queue_offset: m.message.queue_offset,
            pop_time: r.pop_time,
            invisible_time: r.invisible_time,
            revive_qid: r.revive_qid,
            queue_offset: Some(m.message.queue_offset),
            ..m.handle.clone()
        };
        Ok(())
    }

    /// Stops the background tasks and closes the connections.
    pub async fn shutdown(&self) {
        self.instance.shutdown().await;
    }
}
