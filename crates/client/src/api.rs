//! [`ClientApi`]: one typed method per request the client makes (upstream `MQClientAPIImpl`):
//! it builds the command from a typed header or body, sends it through the [`Transport`] to a
//! typed address, and turns the answer into a typed result or a [`ClientError`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoting::broker_headers::*;
use remoting::headers::{CommandHeader, GetRouteInfoRequestHeader};
use remoting::pop::{
    AckMessageRequestHeader, BatchAckMessageRequestBody, ChangeInvisibleTimeRequestHeader,
    ChangeInvisibleTimeResponseHeader, PopMessageRequestHeader, PopMessageResponseHeader,
};
use remoting::protocol::{from_fastjson, TopicRouteData};
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RequestCode, ResponseCode};
use tracing::{debug, warn};

use crate::error::{ClientError, Result};
use crate::send_result::{SendResult, SendStatus};
use crate::transport::Transport;

/// Answer to a pull before message decoding (upstream `PullResultExt`).
#[derive(Clone, Debug)]
pub struct RawPull {
    /// The response code: SUCCESS, PULL_NOT_FOUND, PULL_RETRY_IMMEDIATELY or PULL_OFFSET_MOVED.
    pub code: i32,
    pub header: PullMessageResponseHeader,
    pub body: Bytes,
}

/// Answer to a POP_MESSAGE before message decoding: SUCCESS with records, or
/// POLLING_TIMEOUT / POLLING_FULL / PULL_NOT_FOUND with none.
#[derive(Clone, Debug)]
pub struct RawPop {
    pub code: i32,
    pub header: PopMessageResponseHeader,
    pub body: Bytes,
}

/// Typed requests over a [`Transport`].
pub struct ClientApi {
    transport: Arc<dyn Transport>,
    namesrvs: Vec<NameServerAddr>,
    /// Index of the NameServer that answered last; tried first next time.
    current_ns: AtomicUsize,
    /// `mqClientApiTimeout`.
    timeout: Duration,
}

/// The command `code` carrying `header`.
fn request(code: i32, header: &impl CommandHeader) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(code);
    header.write_to(&mut cmd);
    cmd
}

/// `resp` when its code is SUCCESS, else the broker's error.
fn ok(addr: &BrokerAddr, resp: RemotingCommand) -> Result<RemotingCommand> {
    if resp.code == ResponseCode::SUCCESS {
        Ok(resp)
    } else {
        Err(broker_error(addr, &resp))
    }
}

fn broker_error(addr: &BrokerAddr, resp: &RemotingCommand) -> ClientError {
    ClientError::Broker {
        addr: addr.to_string(),
        code: resp.code,
        remark: resp.remark_str().to_string(),
    }
}

impl ClientApi {
    /// Requests through `transport`; NameServers are tried in the order given.
    pub fn new(
        transport: Arc<dyn Transport>,
        namesrvs: Vec<NameServerAddr>,
        timeout: Duration,
    ) -> Self {
        ClientApi {
            transport,
            namesrvs,
            current_ns: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// `mqClientApiTimeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GET_ROUTEINFO_BY_TOPIC, asking each NameServer in turn until one answers. `Ok(None)`
    /// when the topic does not exist (TOPIC_NOT_EXIST).
    pub async fn topic_route(&self, topic: &str) -> Result<Option<TopicRouteData>> {
        if self.namesrvs.is_empty() {
            return Err(ClientError::Config("no NameServer address".into()));
        }
        let header = GetRouteInfoRequestHeader {
            topic: topic.to_string(),
            accept_standard_json_only: Some(true),
        };
        let start = self.current_ns.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.namesrvs.len() {
            let idx = (start + i) % self.namesrvs.len();
            let ns = &self.namesrvs[idx];
            let req = request(RequestCode::GET_ROUTEINFO_BY_TOPIC, &header);
            match self.transport.invoke_namesrv(ns, req, self.timeout).await {
                Ok(resp) => {
                    self.current_ns.store(idx, Ordering::Relaxed);
                    return match resp.code {
                        ResponseCode::SUCCESS => Ok(Some(from_fastjson(&resp.body)?)),
                        ResponseCode::TOPIC_NOT_EXIST => Ok(None),
                        code => Err(ClientError::Broker {
                            addr: ns.to_string(),
                            code,
                            remark: resp.remark_str().to_string(),
                        }),
                    };
                }
                Err(e) => {
                    warn!(namesrv = %ns, topic, error = %e, "route request failed");
                    last = Some(e);
                }
            }
        }
        Err(last
            .map(ClientError::from)
            .unwrap_or_else(|| ClientError::NoRoute(topic.into())))
    }

    /// SEND_MESSAGE_V2 (or SEND_BATCH_MESSAGE when `header.batch`), waiting for the answer.
    pub async fn send_message(
        &self,
        addr: &BrokerAddr,
        broker_name: &str,
        header: SendMessageRequestHeader,
        body: Bytes,
        uniq_ids: String,
        timeout: Duration,
    ) -> Result<SendResult> {
        let topic = header.topic.clone();
        let cmd = send_command(header, body);
        let resp = self.transport.invoke(addr, cmd, timeout).await?;
        let status = match resp.code {
            ResponseCode::SUCCESS => SendStatus::SendOk,
            ResponseCode::FLUSH_DISK_TIMEOUT => SendStatus::FlushDiskTimeout,
            ResponseCode::FLUSH_SLAVE_TIMEOUT => SendStatus::FlushSlaveTimeout,
            ResponseCode::SLAVE_NOT_AVAILABLE => SendStatus::SlaveNotAvailable,
            _ => return Err(broker_error(addr, &resp)),
        };
        let h = SendMessageResponseHeader::from_command(&resp)?;
        Ok(SendResult {
            send_status: status,
            msg_id: uniq_ids,
            offset_msg_id: h.msg_id,
            message_queue: MessageQueue::new(topic, broker_name, h.queue_id),
            queue_offset: h.queue_offset,
            transaction_id: h.transaction_id,
            region_id: h
                .msg_region
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "DefaultRegion".to_string()),
            trace_on: h.trace_on.unwrap_or(true),
        })
    }

    /// SEND_MESSAGE_V2 oneway.
    pub async fn send_message_oneway(
        &self,
        addr: &BrokerAddr,
        header: SendMessageRequestHeader,
        body: Bytes,
    ) -> Result<()> {
        let cmd = send_command(header, body).into_oneway();
        Ok(self.transport.invoke_oneway(addr, cmd).await?)
    }

    /// PULL_MESSAGE; `timeout` must exceed the header's suspend time for long polling.
    pub async fn pull_message(
        &self,
        addr: &BrokerAddr,
        header: &PullMessageRequestHeader,
        timeout: Duration,
    ) -> Result<RawPull> {
        let resp = self
            .transport
            .invoke(addr, request(RequestCode::PULL_MESSAGE, header), timeout)
            .await?;
        match resp.code {
            ResponseCode::SUCCESS
            | ResponseCode::PULL_NOT_FOUND
            | ResponseCode::PULL_RETRY_IMMEDIATELY
            | ResponseCode::PULL_OFFSET_MOVED => Ok(RawPull {
                code: resp.code,
                header: PullMessageResponseHeader::from_command(&resp)?,
                body: resp.body,
            }),
            _ => Err(broker_error(addr, &resp)),
        }
    }

    /// POP_MESSAGE; `timeout` must exceed the header's poll time.
    pub async fn pop_message(
        &self,
        addr: &BrokerAddr,
        header: &PopMessageRequestHeader,
        timeout: Duration,
    ) -> Result<RawPop> {
        let resp = self
            .transport
            .invoke(addr, request(RequestCode::POP_MESSAGE, header), timeout)
            .await?;
        match resp.code {
            ResponseCode::SUCCESS
            | ResponseCode::POLLING_TIMEOUT
            | ResponseCode::POLLING_FULL
            | ResponseCode::PULL_NOT_FOUND => Ok(RawPop {
                code: resp.code,
                header: PopMessageResponseHeader::from_command(&resp)?,
                body: resp.body,
            }),
            _ => Err(broker_error(addr, &resp)),
        }
    }

    /// ACK_MESSAGE. A stale handle is the broker's NO_MESSAGE error.
    pub async fn ack_message(
        &self,
        addr: &BrokerAddr,
        header: &AckMessageRequestHeader,
    ) -> Result<()> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::ACK_MESSAGE, header),
                self.timeout,
            )
            .await?;
        ok(addr, resp).map(|_| ())
    }

    /// BATCH_ACK_MESSAGE. When some acks are stale the broker applies the others and answers
    /// NO_MESSAGE naming the stale ones.
    pub async fn batch_ack_message(
        &self,
        addr: &BrokerAddr,
        body: &BatchAckMessageRequestBody,
    ) -> Result<()> {
        let json = serde_json::to_vec(body)
            .map_err(|e| ClientError::InvalidMessage(format!("batch ack body: {e}")))?;
        let cmd = RemotingCommand::request(RequestCode::BATCH_ACK_MESSAGE).with_body(json);
        let resp = self.transport.invoke(addr, cmd, self.timeout).await?;
        ok(addr, resp).map(|_| ())
    }

    /// CHANGE_MESSAGE_INVISIBLETIME; answers the fields of the message's new handle.
    pub async fn change_invisible_time(
        &self,
        addr: &BrokerAddr,
        header: &ChangeInvisibleTimeRequestHeader,
    ) -> Result<ChangeInvisibleTimeResponseHeader> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::CHANGE_MESSAGE_INVISIBLETIME, header),
                self.timeout,
            )
            .await?;
        let resp = ok(addr, resp)?;
        Ok(ChangeInvisibleTimeResponseHeader::from_command(&resp)?)
    }

    /// QUERY_CONSUMER_OFFSET; `Ok(None)` when the broker has no offset for the queue
    /// (QUERY_NOT_FOUND).
    pub async fn query_consumer_offset(
        &self,
        addr: &BrokerAddr,
        header: &QueryConsumerOffsetRequestHeader,
    ) -> Result<Option<i64>> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::QUERY_CONSUMER_OFFSET, header),
                self.timeout,
            )
            .await?;
        if resp.code == ResponseCode::QUERY_NOT_FOUND {
            return Ok(None);
        }
        let resp = ok(addr, resp)?;
        Ok(Some(
            QueryConsumerOffsetResponseHeader::from_command(&resp)?.offset,
        ))
    }

    /// UPDATE_CONSUMER_OFFSET, oneway (as Java and Rust clients send it).
    pub async fn update_consumer_offset_oneway(
        &self,
        addr: &BrokerAddr,
        header: &UpdateConsumerOffsetRequestHeader,
    ) -> Result<()> {
        let cmd = request(RequestCode::UPDATE_CONSUMER_OFFSET, header).into_oneway();
        Ok(self.transport.invoke_oneway(addr, cmd).await?)
    }

    /// UPDATE_CONSUMER_OFFSET, waiting for the answer.
    pub async fn update_consumer_offset(
        &self,
        addr: &BrokerAddr,
        header: &UpdateConsumerOffsetRequestHeader,
    ) -> Result<()> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::UPDATE_CONSUMER_OFFSET, header),
                self.timeout,
            )
            .await?;
        ok(addr, resp).map(|_| ())
    }

    /// GET_MAX_OFFSET.
    pub async fn max_offset(&self, addr: &BrokerAddr, mq: &MessageQueue) -> Result<i64> {
        let header = GetMaxOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            committed: None,
            bname: Some(mq.broker_name.clone()),
        };
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::GET_MAX_OFFSET, &header),
                self.timeout,
            )
            .await?;
        Ok(GetMaxOffsetResponseHeader::from_command(&ok(addr, resp)?)?.offset)
    }

    /// GET_MIN_OFFSET.
    pub async fn min_offset(&self, addr: &BrokerAddr, mq: &MessageQueue) -> Result<i64> {
        let header = GetMinOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            bname: Some(mq.broker_name.clone()),
        };
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::GET_MIN_OFFSET, &header),
                self.timeout,
            )
            .await?;
        Ok(GetMinOffsetResponseHeader::from_command(&ok(addr, resp)?)?.offset)
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first offset stored at or after `timestamp` (ms).
    pub async fn search_offset(
        &self,
        addr: &BrokerAddr,
        mq: &MessageQueue,
        timestamp: i64,
    ) -> Result<i64> {
        let header = SearchOffsetRequestHeader {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            timestamp,
            boundary_type: None,
            bname: Some(mq.broker_name.clone()),
        };
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::SEARCH_OFFSET_BY_TIMESTAMP, &header),
                self.timeout,
            )
            .await?;
        Ok(SearchOffsetResponseHeader::from_command(&ok(addr, resp)?)?.offset)
    }

    /// CONSUMER_SEND_MSG_BACK. Only a [`BrokerAddr`] can be given: this request never goes to
    /// a NameServer.
    pub async fn consumer_send_msg_back(
        &self,
        addr: &BrokerAddr,
        header: &ConsumerSendMsgBackRequestHeader,
        timeout: Duration,
    ) -> Result<()> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::CONSUMER_SEND_MSG_BACK, header),
                timeout,
            )
            .await?;
        ok(addr, resp).map(|_| ())
    }

    /// HEART_BEAT.
    pub async fn heartbeat(&self, addr: &BrokerAddr, data: &HeartbeatData) -> Result<()> {
        let cmd = RemotingCommand::request(RequestCode::HEART_BEAT).with_body(data.encode()?);
        let resp = self.transport.invoke(addr, cmd, self.timeout).await?;
        ok(addr, resp).map(|_| ())
    }

    /// GET_CONSUMER_LIST_BY_GROUP: the client ids of the group's consumers.
    pub async fn consumer_id_list(&self, addr: &BrokerAddr, group: &str) -> Result<Vec<String>> {
        let header = GetConsumerListByGroupRequestHeader {
            consumer_group: group.to_string(),
        };
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::GET_CONSUMER_LIST_BY_GROUP, &header),
                self.timeout,
            )
            .await?;
        let resp = ok(addr, resp)?;
        Ok(GetConsumerListByGroupResponseBody::decode(&resp.body)?.consumer_id_list)
    }

    /// LOCK_BATCH_MQ: returns the queues now locked by this client.
    pub async fn lock_batch_mq(
        &self,
        addr: &BrokerAddr,
        body: &LockBatchRequestBody,
    ) -> Result<BTreeSet<MessageQueue>> {
        let cmd = RemotingCommand::request(RequestCode::LOCK_BATCH_MQ).with_body(body.encode()?);
        let resp = ok(addr, self.transport.invoke(addr, cmd, self.timeout).await?)?;
        Ok(LockBatchResponseBody::decode(&resp.body)?.lock_ok_mq_set)
    }

    /// UNLOCK_BATCH_MQ, oneway or two-way.
    pub async fn unlock_batch_mq(
        &self,
        addr: &BrokerAddr,
        body: &UnlockBatchRequestBody,
        oneway: bool,
    ) -> Result<()> {
        let cmd = RemotingCommand::request(RequestCode::UNLOCK_BATCH_MQ).with_body(body.encode()?);
        if oneway {
            return Ok(self
                .transport
                .invoke_oneway(addr, cmd.into_oneway())
                .await?);
        }
        ok(addr, self.transport.invoke(addr, cmd, self.timeout).await?).map(|_| ())
    }

    /// END_TRANSACTION, oneway.
    pub async fn end_transaction_oneway(
        &self,
        addr: &BrokerAddr,
        header: &EndTransactionRequestHeader,
        remark: Option<String>,
    ) -> Result<()> {
        let mut cmd = request(RequestCode::END_TRANSACTION, header).into_oneway();
        cmd.remark = remark;
        Ok(self.transport.invoke_oneway(addr, cmd).await?)
    }

    /// UNREGISTER_CLIENT.
    pub async fn unregister_client(
        &self,
        addr: &BrokerAddr,
        header: &UnregisterClientRequestHeader,
    ) -> Result<()> {
        let resp = self
            .transport
            .invoke(
                addr,
                request(RequestCode::UNREGISTER_CLIENT, header),
                self.timeout,
            )
            .await?;
        debug!(broker = %addr, code = resp.code, "unregistered client");
        ok(addr, resp).map(|_| ())
    }
}

/// The send command: V2 one-letter header, SEND_BATCH_MESSAGE for batches.
fn send_command(header: SendMessageRequestHeader, body: Bytes) -> RemotingCommand {
    let code = if header.batch == Some(true) {
        RequestCode::SEND_BATCH_MESSAGE
    } else {
        RequestCode::SEND_MESSAGE_V2
    };
    request(code, &SendMessageRequestHeaderV2::from(header)).with_body(body)
}
