//! The send path (upstream `DefaultMQProducerImpl.sendDefaultImpl` / `sendKernelImpl`):
//! validate, find the topic's publish info (through `TBW102` for a topic that does not exist
//! yet), choose a queue away from the group that failed last, build the SEND_MESSAGE_V2
//! request (unique id, compression, transaction flag, retry-topic header fields), send to the
//! group's master and retry on another group for retriable failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use remoting::broker_headers::{MessageQueue, SendMessageRequestHeader};
use remoting::message::{
    compress_body, encode_batch, now_millis, Message, MessageConst, MessageSysFlag,
};
use tracing::{debug, warn};

use super::{ProducerConfig, SendResult, SendStatus, RETRY_RESPONSE_CODES};
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::route::TopicPublishInfo;
use crate::RETRY_GROUP_TOPIC_PREFIX;

/// How a send waits for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommunicationMode {
    Sync,
    Async,
    Oneway,
}

/// What one attempt sends.
struct Outgoing {
    msg: Message,
    batch: bool,
    /// `UNIQ_KEY`(s) reported in the result.
    uniq_ids: String,
}

/// Longest topic name a producer accepts (retry and DLQ topics may be longer).
const TOPIC_MAX_LENGTH: usize = 127;
const RETRY_OR_DLQ_TOPIC_MAX_LENGTH: usize = 255;

/// Checks a topic name as upstream's `Validators.checkTopic`.
pub(crate) fn check_topic(topic: &str) -> Result<()> {
    let bad = |why: String| Err(ClientError::InvalidMessage(why));
    if topic.trim().is_empty() {
        return bad("the topic is blank".into());
    }
    let max = if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with("%DLQ%") {
        RETRY_OR_DLQ_TOPIC_MAX_LENGTH
    } else {
        TOPIC_MAX_LENGTH
    };
    if topic.len() > max {
        return bad(format!("topic {topic} is longer than {max} characters"));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-');
    if !topic.chars().all(legal) {
        return bad(format!("topic {topic} may only contain [%|a-zA-Z0-9_-]"));
    }
    Ok(())
}

/// Checks a producer or consumer group name (upstream `Validators.checkGroup`).
pub(crate) fn check_group_name(group: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-');
    if group.trim().is_empty()
        || group.len() > RETRY_OR_DLQ_TOPIC_MAX_LENGTH
        || !group.chars().all(legal)
    {
        return Err(ClientError::Config(format!(
            "group `{group}` must be 1..=255 characters of [%|a-zA-Z0-9_-]"
        )));
    }
    Ok(())
}

/// A producer's send path over a client instance.
pub(crate) struct SendEngine {
    instance: Arc<ClientInstance>,
    config: ProducerConfig,
}

impl SendEngine {
    pub fn new(instance: Arc<ClientInstance>, config: ProducerConfig) -> Self {
        SendEngine { instance, config }
    }

    pub fn instance(&self) -> &Arc<ClientInstance> {
        &self.instance
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    fn check_message(&self, msg: &Message) -> Result<()> {
        check_topic(&msg.topic)?;
        if msg.body.is_empty() {
            return Err(ClientError::InvalidMessage(
                "the message body is empty".into(),
            ));
        }
        if msg.body.len() > self.config.max_message_size {
            return Err(ClientError::InvalidMessage(format!(
                "the message body is {} bytes, more than maxMessageSize {}",
                msg.body.len(),
                self.config.max_message_size
            )));
        }
        Ok(())
    }

    /// The publish info of `topic` (upstream `tryToFindTopicPublishInfo`): cached, else
    /// fetched, else borrowed from the default topic's route so the broker auto-creates it.
    pub async fn publish_info(&self, topic: &str) -> Result<Arc<TopicPublishInfo>> {
        if let Some(info) = self.instance.routes.publish_info(topic).filter(|i| i.ok()) {
            return Ok(info);
        }
        if let Err(e) = self.instance.update_route(topic).await {
            debug!(topic, error = %e, "route lookup failed");
        }
        if let Some(info) = self.instance.routes.publish_info(topic).filter(|i| i.ok()) {
            return Ok(info);
        }
        self.instance
            .update_route_from_default(
                topic,
                &self.config.create_topic_key,
                self.config.default_topic_queue_nums,
            )
            .await?;
        self.instance
            .routes
            .publish_info(topic)
            .filter(|i| i.ok())
            .ok_or_else(|| ClientError::NoRoute(topic.to_string()))
    }

    /// The message's `UNIQ_KEY`, set first when absent (upstream `MessageClientIDSetter.setUniqID`):
    /// retries of one send keep the same id.
    fn stamp_uniq_key(&self, msg: &mut Message) -> String {
        if let Some(u) = msg.uniq_key() {
            return u.to_string();
        }
        let u = self.instance.uniq.next_id();
        msg.properties.insert(
            MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
            u.clone(),
        );
        u
    }

    /// Sends one message with retries (upstream `sendDefaultImpl`); a oneway send makes one
    /// attempt and reports no broker data.
    pub async fn send(
        &self,
        mut msg: Message,
        mode: CommunicationMode,
        timeout: Duration,
    ) -> Result<SendResult> {
        self.check_message(&msg)?;
        let uniq = self.stamp_uniq_key(&mut msg);
        let out = Outgoing {
            msg,
            batch: false,
            uniq_ids: uniq,
        };
        self.send_default(out, mode, timeout).await
    }

    /// Sends messages of one topic as one batch.
    pub async fn send_batch(&self, msgs: Vec<Message>, timeout: Duration) -> Result<SendResult> {
        let Some(first) = msgs.first() else {
            return Err(ClientError::InvalidMessage("empty batch".into()));
        };
        let topic = first.topic.clone();
        if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
            return Err(ClientError::InvalidMessage(
                "retry topics cannot be batched".into(),
            ));
        }
        let mut ids = Vec::with_capacity(msgs.len());
        let mut stamped = Vec::with_capacity(msgs.len());
        for mut m in msgs {
            self.check_message(&m)?;
            if m.topic != topic {
                return Err(ClientError::InvalidMessage(
                    "a batch holds one topic only".into(),
                ));
            }
            if m.delay_time_level() > 0 {
                return Err(ClientError::InvalidMessage(
                    "delayed messages cannot be batched".into(),
                ));
            }
            let id = self.stamp_uniq_key(&mut m);
            ids.push(id);
            stamped.push(m);
        }
        let body = encode_batch(&stamped)?;
        if body.len() > self.config.max_message_size {
            return Err(ClientError::InvalidMessage(format!(
                "the batch is {} bytes, more than maxMessageSize {}",
                body.len(),
                self.config.max_message_size
            )));
        }
        let msg = Message::new(topic, body)
            .with_property(MessageConst::PROPERTY_WAIT_STORE_MSG_OK, "true");
        let out = Outgoing {
            msg,
            batch: true,
            uniq_ids: ids.join(","),
        };
        self.send_default(out, CommunicationMode::Sync, timeout)
            .await
    }

    /// Sends to the queue `selector` picks; one attempt.
    pub async fn send_with_selector<F>(
        &self,
        mut msg: Message,
        selector: F,
        timeout: Duration,
    ) -> Result<SendResult>
    where
        F: FnOnce(&[MessageQueue], &Message) -> Option<MessageQueue>,
    {
        self.check_message(&msg)?;
        let start = Instant::now();
        let info = self.publish_info(&msg.topic).await?;
        let mq = selector(&info.queues, &msg)
            .ok_or_else(|| ClientError::InvalidMessage("the selector chose no queue".into()))?;
        let uniq = self.stamp_uniq_key(&mut msg);
        let out = Outgoing {
            msg,
            batch: false,
            uniq_ids: uniq,
        };
        let left = timeout
            .checked_sub(start.elapsed())
            .ok_or_else(|| ClientError::Timeout("send with selector".into()))?;
        self.send_kernel(&out, &mq, CommunicationMode::Sync, left)
            .await
    }

    async fn send_default(
        &self,
        out: Outgoing,
        mode: CommunicationMode,
        timeout: Duration,
    ) -> Result<SendResult> {
        let start = Instant::now();
        let info = self.publish_info(&out.msg.topic).await?;
        let attempts = match mode {
            CommunicationMode::Sync => 1 + self.config.retry_times_when_send_failed,
            CommunicationMode::Async => 1 + self.config.retry_times_when_send_async_failed,
            CommunicationMode::Oneway => 1,
        };
        let mut last_broker: Option<String> = None;
        let mut brokers = Vec::new();
        let mut last_err: Option<ClientError> = None;
        let mut not_stored: Option<SendResult> = None;
        for _ in 0..attempts {
            let Some(mq) = self
                .instance
                .fault
                .select_queue(&info, last_broker.as_deref())
            else {
                break;
            };
            let Some(left) = timeout.checked_sub(start.elapsed()) else {
                last_err = Some(ClientError::Timeout(format!(
                    "send to {} took over {timeout:?}",
                    out.msg.topic
                )));
                break;
            };
            brokers.push(mq.broker_name.clone());
            last_broker = Some(mq.broker_name.clone());
            let began = Instant::now();
            let result = self.send_kernel(&out, &mq, mode, left).await;
            let latency = began.elapsed().as_millis() as u64;
            match result {
                Ok(r) => {
                    self.instance
                        .fault
                        .update(&mq.broker_name, latency, false, true);
                    if r.send_status != SendStatus::SendOk
                        && self.config.retry_another_broker_when_not_store_ok
                    {
                        not_stored = Some(r);
                        continue;
                    }
                    return Ok(r);
                }
                Err(e) => {
                    let retriable = match &e {
                        ClientError::Remoting(_) => {
                            self.instance
                                .fault
                                .update(&mq.broker_name, latency, true, false);
                            true
                        }
                        ClientError::Broker { code, .. } => {
                            self.instance
                                .fault
                                .update(&mq.broker_name, latency, true, true);
                            RETRY_RESPONSE_CODES.contains(code)
                        }
                        ClientError::BrokerNotFound(_) => {
                            self.instance
                                .fault
                                .update(&mq.broker_name, latency, false, true);
                            true
                        }
                        _ => false,
                    };
                    warn!(topic = %out.msg.topic, broker = %mq.broker_name, error = %e, retriable, "send attempt failed");
                    if !retriable {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        if let Some(r) = not_stored {
            return Ok(r);
        }
        Err(ClientError::SendFailed {
            topic: out.msg.topic.clone(),
            attempts: brokers.len(),
            brokers,
            last: Box::new(last_err.unwrap_or_else(|| ClientError::NoRoute(out.msg.topic.clone()))),
        })
    }

    /// One attempt on `mq` (upstream `sendKernelImpl`).
    async fn send_kernel(
        &self,
        out: &Outgoing,
        mq: &MessageQueue,
        mode: CommunicationMode,
        timeout: Duration,
    ) -> Result<SendResult> {
        let broker_name = mq.broker_name.as_str();
        let addr = match self.master_of(&mq.topic, broker_name) {
            Some(a) => a,
            None => {
                // The route may be stale: refresh once.
                let _ = self.instance.update_route(&mq.topic).await;
                self.master_of(&mq.topic, broker_name)
                    .ok_or_else(|| ClientError::BrokerNotFound(broker_name.to_string()))?
            }
        };
        let (header, body) = self.build_request(out, mq);
        match mode {
            CommunicationMode::Oneway => {
                self.instance
                    .api
                    .send_message_oneway(&addr, header, body)
                    .await?;
                Ok(SendResult {
                    send_status: SendStatus::SendOk,
                    msg_id: out.uniq_ids.clone(),
                    offset_msg_id: String::new(),
                    message_queue: mq.clone(),
                    queue_offset: -1,
                    transaction_id: None,
                    region_id: String::new(),
                    trace_on: false,
                })
            }
            _ => {
                self.instance
                    .api
                    .send_message(
                        &addr,
                        broker_name,
                        header,
                        body,
                        out.uniq_ids.clone(),
                        timeout,
                    )
                    .await
            }
        }
    }

    /// The master of `broker_name` in `topic`'s route, else in any cached route.
    fn master_of(&self, topic: &str, broker_name: &str) -> Option<remoting::BrokerAddr> {
        self.instance
            .routes
            .broker_data(topic, broker_name)
            .and_then(|bd| crate::route::master_addr(&bd))
            .or_else(|| self.instance.routes.master_addr(broker_name))
    }

    /// The request header and body of an attempt.
    fn build_request(
        &self,
        out: &Outgoing,
        mq: &MessageQueue,
    ) -> (SendMessageRequestHeader, Bytes) {
        let msg = &out.msg;
        let mut sys_flag = 0;
        let mut body = msg.body.clone();
        if !out.batch && body.len() > self.config.compress_msg_body_over_howmuch {
            match compress_body(&body, self.config.compress_level) {
                Ok(z) => {
                    body = Bytes::from(z);
                    sys_flag |=
                        MessageSysFlag::COMPRESSED_FLAG | MessageSysFlag::COMPRESSION_ZLIB_TYPE;
                }
                Err(e) => warn!(error = %e, "compression failed; sending uncompressed"),
            }
        }
        if msg.property(MessageConst::PROPERTY_TRANSACTION_PREPARED) == Some("true") {
            sys_flag |= MessageSysFlag::TRANSACTION_PREPARED_TYPE;
        }
        let mut header = SendMessageRequestHeader {
            producer_group: self.config.producer_group.clone(),
            topic: msg.topic.clone(),
            default_topic: self.config.create_topic_key.clone(),
            default_topic_queue_nums: self.config.default_topic_queue_nums,
            queue_id: mq.queue_id,
            sys_flag,
            born_timestamp: now_millis(),
            flag: msg.flag,
            properties: Some(msg.properties.to_wire_string()),
            reconsume_times: Some(0),
            unit_mode: Some(self.instance.config.unit_mode),
            batch: Some(out.batch),
            max_reconsume_times: None,
            bname: Some(mq.broker_name.clone()),
        };
        if msg.topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) {
            // A re-sent failed message: the broker takes these two from the header.
            if let Some(n) = msg
                .property(MessageConst::PROPERTY_RECONSUME_TIME)
                .and_then(|v| v.parse().ok())
            {
                header.reconsume_times = Some(n);
            }
            header.max_reconsume_times = msg
                .property(MessageConst::PROPERTY_MAX_RECONSUME_TIMES)
                .and_then(|v| v.parse().ok());
        }
        (header, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_rules() {
        assert!(check_topic("TopicTest").is_ok());
        assert!(check_topic("%RETRY%group_1-a|b").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("bad topic").is_err());
        assert!(check_topic(&"t".repeat(128)).is_err());
        assert!(check_topic(&format!("%RETRY%{}", "g".repeat(200))).is_ok());
    }
}
