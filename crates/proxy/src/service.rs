//! `MessagingService`: each call as remoting requests (upstream's proxy activities).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::api::ClientApi;
use client::route::{master_addr, TopicPublishInfo};
use futures::Stream;
use proto::v2::messaging_service_server::MessagingService;
use proto::v2::*;
use remoting::broker_headers::{
    ConsumerSendMsgBackRequestHeader, EndTransactionRequestHeader,
    GetSubscriptionGroupConfigRequestHeader, SendMessageRequestHeader,
};
use remoting::headers::CommandHeader;
use remoting::message::{decode_message_id, now_millis, MessageExt, MessageSysFlag};
use remoting::pop::{
    order_count, pop_handles, real_topic, AckMessageRequestHeader,
    ChangeInvisibleTimeRequestHeader, ExtraInfo, PopMessageRequestHeader,
};
use remoting::protocol::{perm, TopicRouteData};
use remoting::{BrokerAddr, RemotingCommand, RemotingError, RequestCode, ResponseCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response};

use crate::convert::{duration, is_transactional, now_timestamp, to_grpc, to_remoting};
use crate::receipt::Receipt;
use crate::status::{from_client_error, not_implemented, ok, overall, status};
use crate::transaction::{HalfHandle, Producers};

type Rpc<T> = Result<Response<T>, tonic::Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The producer group the proxy's sends carry (gRPC producers have none).
const PROXY_PRODUCER_GROUP: &str = "PROXY_SEND";
/// Long polling when the client gives none (upstream's default).
const DEFAULT_LONG_POLLING: Duration = Duration::from_secs(20);
/// How long a send may take at the broker.
const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Upstream's `maxMessageSize` default, told to producers in their settings.
const MAX_BODY_SIZE: i32 = 4 * 1024 * 1024;
/// How long a forward to the DLQ may take at the broker (upstream's send-back timeout).
const SEND_BACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages one receive asks the broker for (the POP limit).
const MAX_BATCH: i32 = 32;

/// How long a route the data path (send, receive, ack, end transaction) uses is kept before the
/// NameServer is asked again; QueryRoute and QueryAssignment always ask.
const ROUTE_CACHE: Duration = Duration::from_secs(2);
/// How long whether a group is FIFO is remembered (a group made FIFO takes effect within it).
const FIFO_CACHE: Duration = Duration::from_secs(10);
/// Room for commands queued to one client's Telemetry stream.
const TELEMETRY_QUEUE: usize = 64;

/// The service state: a remoting client API, the proxy's own address, and the producers whose
/// Telemetry streams are open here (for transaction check-backs).
pub struct Messaging {
    api: Arc<ClientApi>,
    local_addr: SocketAddr,
    producers: Arc<Producers>,
    /// Ends the Telemetry streams when the proxy stops.
    stop: CancellationToken,
    /// The tasks reading Telemetry streams.
    tasks: TaskTracker,
    next_stream: AtomicU64,
    /// Whether a group is FIFO, and when that was asked (see [`FIFO_CACHE`]).
    fifo_groups: parking_lot::Mutex<HashMap<String, (bool, Instant)>>,
    /// Routes for the data path, and when they were asked (see [`ROUTE_CACHE`]).
    routes: parking_lot::Mutex<HashMap<String, (Arc<CachedRoute>, Instant)>>,
}

/// Why one send attempt failed.
enum SendFailure {
    /// The master of `broker_name` could not be connected to (it is gone, and the kept route
    /// still lists it): nothing was sent, so another group may take the message.
    Unreachable { broker_name: String, status: Status },
    /// Anything else: the answer to give.
    Refused(Status),
}

impl From<Status> for SendFailure {
    fn from(s: Status) -> Self {
        SendFailure::Refused(s)
    }
}

/// Most broker groups one message is tried on (upstream producers' default attempts).
const SEND_ATTEMPTS: usize = 3;

/// A route of the data path with the writable queues sends pick from (round robin, shared by
/// all sends while the route is kept).
struct CachedRoute {
    route: TopicRouteData,
    publish: TopicPublishInfo,
}

/// The client id a call carries (`x-mq-client-id`, as upstream's clients send it).
fn client_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn name(r: Option<&Resource>) -> &str {
    r.map(|r| r.name.as_str()).unwrap_or("")
}

fn endpoints_of(addr: SocketAddr) -> Endpoints {
    Endpoints {
        scheme: if addr.is_ipv4() {
            AddressScheme::IPv4
        } else {
            AddressScheme::IPv6
        } as i32,
        addresses: vec![Address {
            host: addr.ip().to_string(),
            port: i32::from(addr.port()),
        }],
    }
}

fn permission(readable: bool, writable: bool) -> Permission {
    match (readable, writable) {
        (true, true) => Permission::ReadWrite,
        (true, false) => Permission::Read,
        (false, true) => Permission::Write,
        (false, false) => Permission::None,
    }
}

/// Every type: Apogee's topics do not carry a message type.
fn accepted_types() -> Vec<i32> {
    [
        MessageType::Normal,
        MessageType::Fifo,
        MessageType::Delay,
        MessageType::Transaction,
    ]
    .into_iter()
    .map(|t| t as i32)
    .collect()
}

fn topic_resource(topic: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: topic.to_string(),
    }
}

impl Messaging {
    pub fn new(
        api: Arc<ClientApi>,
        local_addr: SocketAddr,
        producers: Arc<Producers>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Messaging {
            api,
            local_addr,
            producers,
            stop,
            tasks,
            next_stream: AtomicU64::new(0),
            fifo_groups: Default::default(),
            routes: Default::default(),
        }
    }

    /// The endpoints clients are told about: the ones they reached the proxy at (as upstream),
    /// else the proxy's bound address (this host's address when bound to all interfaces).
    fn endpoints(&self, asked: Option<&Endpoints>) -> Endpoints {
        asked
            .filter(|e| !e.addresses.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                let mut addr = self.local_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip(client::config::local_ip());
                }
                endpoints_of(addr)
            })
    }

    /// The route of `topic`, or the status to answer.
    async fn route(&self, topic: &str) -> Result<TopicRouteData, Status> {
        if topic.is_empty() {
            return Err(status(Code::IllegalTopic, "topic name is empty"));
        }
        match self.api.topic_route(topic).await {
            Ok(Some(route)) => Ok(route),
            Ok(None) => Err(status(
                Code::TopicNotFound,
                format!("topic {topic} does not exist"),
            )),
            Err(e) => Err(from_client_error(&e)),
        }
    }

    /// The route of `topic` for the data path: asked at most every [`ROUTE_CACHE`] (a route
    /// per message would double the requests of a send).
    async fn cached_route(&self, topic: &str) -> Result<Arc<CachedRoute>, Status> {
        let now = Instant::now();
        if let Some((route, at)) = self.routes.lock().get(topic) {
            if now.duration_since(*at) < ROUTE_CACHE {
                return Ok(route.clone());
            }
        }
        let route = self.route(topic).await?;
        let route = Arc::new(CachedRoute {
            publish: TopicPublishInfo::from_route(topic, &route),
            route,
        });
        let mut routes = self.routes.lock();
        routes.retain(|_, (_, at)| now.duration_since(*at) < ROUTE_CACHE);
        routes.insert(topic.to_string(), (route.clone(), now));
        Ok(route)
    }

    /// The master address of `broker_name` in `route`.
    fn master(route: &TopicRouteData, broker_name: &str) -> Result<BrokerAddr, Status> {
        route
            .broker_datas
            .iter()
            .find(|bd| bd.broker_name == broker_name)
            .and_then(master_addr)
            .ok_or_else(|| {
                status(
                    Code::HaNotAvailable,
                    format!("broker {broker_name} has no master"),
                )
            })
    }

    /// Sends `m`; a master that cannot be connected to (gone while the kept route still lists
    /// it) is given up for the route's other groups, at most [`SEND_ATTEMPTS`] in all, and the
    /// kept route is dropped.
    async fn send_one(
        &self,
        route: &CachedRoute,
        topic: &str,
        m: &proto::v2::Message,
    ) -> SendResultEntry {
        let mut avoid = Vec::new();
        let failed = loop {
            match self.try_send(route, topic, m, &avoid).await {
                Ok(entry) => return entry,
                Err(SendFailure::Unreachable {
                    broker_name,
                    status,
                }) => {
                    self.routes.lock().remove(topic);
                    avoid.push(broker_name);
                    if avoid.len() >= SEND_ATTEMPTS {
                        break status;
                    }
                }
                Err(SendFailure::Refused(s)) => break s,
            }
        };
        SendResultEntry {
            status: Some(failed),
            message_id: m
                .system_properties
                .as_ref()
                .map(|s| s.message_id.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// One attempt of sending `m`, to a group not in `avoid` (a FIFO message always goes to
    /// its message group's queue).
    async fn try_send(
        &self,
        route: &CachedRoute,
        topic: &str,
        m: &proto::v2::Message,
        avoid: &[String],
    ) -> Result<SendResultEntry, SendFailure> {
        let msg = to_remoting(topic, m)?;
        let info = &route.publish;
        let group = m
            .system_properties
            .as_ref()
            .and_then(|s| s.message_group.as_deref())
            .filter(|g| !g.is_empty());
        let mq = match group {
            // FIFO: one message group always goes to the same queue.
            Some(g) if !info.queues.is_empty() => {
                let h = crc32fast::hash(g.as_bytes()) as usize;
                info.queues.get(h % info.queues.len())
            }
            _ => info.select(|q| !avoid.contains(&q.broker_name)),
        }
        .ok_or_else(|| {
            status(
                Code::HaNotAvailable,
                format!("topic {topic} has no writable queue"),
            )
        })?;
        let addr = Self::master(&route.route, &mq.broker_name)?;
        let transactional = is_transactional(m);
        let header = SendMessageRequestHeader {
            // A transaction's group is its topic (see `transaction`).
            producer_group: if transactional {
                topic.to_string()
            } else {
                PROXY_PRODUCER_GROUP.into()
            },
            topic: topic.to_string(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: mq.queue_id,
            sys_flag: if transactional {
                MessageSysFlag::TRANSACTION_PREPARED_TYPE
            } else {
                0
            },
            born_timestamp: now_millis(),
            flag: msg.flag,
            properties: Some(msg.properties.to_wire_string()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(false),
            max_reconsume_times: None,
            bname: Some(mq.broker_name.clone()),
        };
        let id = msg.uniq_key().unwrap_or_default().to_string();
        let has_timer = msg
            .property(remoting::message::MessageConst::PROPERTY_TIMER_DELIVER_MS)
            .is_some();
        let sent = self
            .api
            .send_message(
                &addr,
                &mq.broker_name,
                header,
                msg.body.clone(),
                id.clone(),
                SEND_TIMEOUT,
            )
            .await
            .map_err(|e| {
                let mut s = from_client_error(&e);
                if has_timer && s.code == Code::BadRequest as i32 {
                    s.code = Code::IllegalDeliveryTime as i32;
                }
                match e {
                    client::ClientError::Remoting(RemotingError::Connect { .. })
                        if group.is_none() =>
                    {
                        SendFailure::Unreachable {
                            broker_name: mq.broker_name.clone(),
                            status: s,
                        }
                    }
                    _ => SendFailure::Refused(s),
                }
            })?;
        let transaction_id = if transactional {
            let (_, commit_log_offset) = decode_message_id(&sent.offset_msg_id).map_err(|e| {
                status(
                    Code::InternalServerError,
                    format!("broker answered a bad message id: {e}"),
                )
            })?;
            HalfHandle {
                tran_state_table_offset: sent.queue_offset,
                commit_log_offset,
                broker_name: mq.broker_name.clone(),
            }
            .to_string()
        } else {
            sent.transaction_id.unwrap_or_default()
        };
        Ok(SendResultEntry {
            status: Some(ok()),
            message_id: id,
            transaction_id,
            offset: sent.queue_offset,
            recall_handle: String::new(),
        })
    }

    /// Whether `group` is a FIFO group (`consumeMessageOrderly` in its config at the broker
    /// `addr`; GET_SUBSCRIPTIONGROUP_CONFIG), as upstream's proxy decides an orderly receive.
    /// A group the broker does not know is not FIFO; an answer is remembered for
    /// [`FIFO_CACHE`], a failure is not.
    async fn is_fifo(&self, addr: &BrokerAddr, group: &str) -> bool {
        let now = Instant::now();
        if let Some((fifo, at)) = self.fifo_groups.lock().get(group) {
            if now.duration_since(*at) < FIFO_CACHE {
                return *fifo;
            }
        }
        let mut cmd = RemotingCommand::request(RequestCode::GET_SUBSCRIPTIONGROUP_CONFIG);
        GetSubscriptionGroupConfigRequestHeader {
            group: group.to_string(),
        }
        .write_to(&mut cmd);
        let fifo = match self
            .api
            .transport()
            .invoke(addr, cmd, self.api.timeout())
            .await
        {
            Ok(r) if r.code == ResponseCode::SUCCESS => {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v.get("consumeMessageOrderly")?.as_bool())
                    .unwrap_or(false)
            }
            Ok(r) if r.code == ResponseCode::SUBSCRIPTION_GROUP_NOT_EXIST => false,
            Ok(r) => {
                tracing::debug!(%group, code = r.code, "cannot tell whether the group is FIFO");
                return false;
            }
            Err(e) => {
                tracing::debug!(%group, error = %e, "cannot tell whether the group is FIFO");
                return false;
            }
        };
        let mut cache = self.fifo_groups.lock();
        cache.retain(|_, (_, at)| now.duration_since(*at) < FIFO_CACHE);
        cache.insert(group.to_string(), (fifo, now));
        fifo
    }

    /// The POP for a receive; `Ok(None)` when nothing came within the long polling time.
    async fn pop(
        &self,
        req: &ReceiveMessageRequest,
    ) -> Result<Option<(Vec<MessageExt>, Vec<ExtraInfo>, String, Duration)>, Status> {
        let group = name(req.group.as_ref());
        if group.is_empty() {
            return Err(status(
                Code::IllegalConsumerGroup,
                "consumer group is empty",
            ));
        }
        let mq = req.message_queue.clone().unwrap_or_default();
        let topic = name(mq.topic.as_ref()).to_string();
        let invisible = duration(req.invisible_duration.as_ref())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| status(Code::IllegalInvisibleTime, "invisible duration is required"))?;
        let polling = match &req.long_polling_timeout {
            None => DEFAULT_LONG_POLLING,
            Some(d) => duration(Some(d)).ok_or_else(|| {
                status(Code::IllegalPollingTime, "long polling timeout is negative")
            })?,
        };
        let expression = req.filter_expression.clone().unwrap_or_default();
        if FilterType::try_from(expression.r#type) == Ok(FilterType::Sql) {
            return Err(not_implemented("SQL92 filtering"));
        }
        let route = self.cached_route(&topic).await?;
        let broker_name = match mq.broker.as_ref().map(|b| b.name.as_str()) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => route
                .route
                .broker_datas
                .iter()
                .find(|bd| master_addr(bd).is_some())
                .map(|bd| bd.broker_name.clone())
                .ok_or_else(|| {
                    status(Code::HaNotAvailable, format!("topic {topic} has no master"))
                })?,
        };
        let addr = Self::master(&route.route, &broker_name)?;
        let exp = match expression.expression.trim() {
            "" => "*".to_string(),
            e => e.to_string(),
        };
        let header = PopMessageRequestHeader {
            consumer_group: group.to_string(),
            topic: topic.clone(),
            queue_id: -1,
            max_msg_nums: req.batch_size.clamp(1, MAX_BATCH),
            invisible_time: invisible.as_millis() as i64,
            poll_time: polling.as_millis() as i64,
            born_time: now_millis(),
            init_mode: 0,
            exp_type: Some("TAG".into()),
            exp: Some(exp),
            order: Some(self.is_fifo(&addr, group).await),
            attempt_id: req.attempt_id.clone(),
        };
        let order = header.order == Some(true);
        let raw = self
            .api
            .pop_message(&addr, &header, polling + self.api.timeout())
            .await
            .map_err(|e| from_client_error(&e))?;
        match raw.code {
            ResponseCode::SUCCESS => {}
            ResponseCode::POLLING_TIMEOUT
            | ResponseCode::PULL_NOT_FOUND
            | ResponseCode::NO_MESSAGE => return Ok(None),
            ResponseCode::POLLING_FULL => {
                return Err(status(
                    Code::TooManyRequests,
                    "too many receives held at the broker",
                ))
            }
            code => {
                return Err(from_client_error(&client::ClientError::Broker {
                    addr: addr.to_string(),
                    code,
                    remark: String::new(),
                }))
            }
        }
        let mut messages = MessageExt::decode_all_shared(&raw.body, true)
            .map_err(|e| status(Code::InternalServerError, format!("broker answer: {e}")))?;
        if order {
            // An orderly pop counts a queue's deliveries in `orderCountInfo` (as upstream's
            // client reads it): the attempt of a batch handed out again.
            let info = raw.header.order_count_info.as_deref().unwrap_or("");
            for m in &mut messages {
                if let Some(n) = order_count(info, &m.message.topic, m.queue_id, m.queue_offset) {
                    m.reconsume_times = m.reconsume_times.max(n);
                }
            }
        }
        let handles = pop_handles(&raw.header, &messages, &broker_name)
            .map_err(|e| status(Code::InternalServerError, format!("broker answer: {e}")))?;
        Ok(Some((messages, handles, topic, invisible)))
    }

    /// The broker, header fields and real topic of a receipt handle.
    async fn handle_target(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(BrokerAddr, Receipt, String, i64), Status> {
        let receipt = Receipt::parse(receipt_handle)
            .map_err(|e| status(Code::InvalidReceiptHandle, e.to_string()))?;
        let handle = &receipt.info;
        let offset = handle
            .queue_offset
            .ok_or_else(|| status(Code::InvalidReceiptHandle, "receipt handle has no offset"))?;
        if group.is_empty() {
            return Err(status(
                Code::IllegalConsumerGroup,
                "consumer group is empty",
            ));
        }
        let route = self.cached_route(topic).await?;
        let addr = Self::master(&route.route, &handle.broker_name)?;
        let real = real_topic(topic, group, handle.retry);
        Ok((addr, receipt, real, offset))
    }

    async fn ack_one(&self, group: &str, topic: &str, e: &AckMessageEntry) -> Status {
        let (addr, receipt, real, offset) =
            match self.handle_target(group, topic, &e.receipt_handle).await {
                Ok(t) => t,
                Err(s) => return s,
            };
        let handle = receipt.info;
        let header = AckMessageRequestHeader {
            consumer_group: group.to_string(),
            topic: real,
            queue_id: handle.queue_id,
            extra_info: handle.to_string(),
            offset,
        };
        match self.api.ack_message(&addr, &header).await {
            Ok(()) => ok(),
            Err(e) => from_client_error(&e),
        }
    }

    async fn change_invisible(
        &self,
        req: &ChangeInvisibleDurationRequest,
    ) -> Result<String, Status> {
        let group = name(req.group.as_ref());
        let topic = name(req.topic.as_ref());
        let invisible = duration(req.invisible_duration.as_ref())
            .ok_or_else(|| status(Code::IllegalInvisibleTime, "invisible duration is required"))?;
        let (addr, receipt, real, offset) = self
            .handle_target(group, topic, &req.receipt_handle)
            .await?;
        let handle = receipt.info;
        let header = ChangeInvisibleTimeRequestHeader {
            consumer_group: group.to_string(),
            topic: real,
            queue_id: handle.queue_id,
            extra_info: handle.to_string(),
            offset,
            invisible_time: invisible.as_millis() as i64,
        };
        let r = self
            .api
            .change_invisible_time(&addr, &header)
            .await
            .map_err(|e| from_client_error(&e))?;
        Ok(Receipt {
            info: ExtraInfo {
                ck_queue_offset: offset,
                pop_time: r.pop_time,
                invisible_time: r.invisible_time,
                revive_qid: r.revive_qid,
                queue_offset: Some(offset),
                ..handle
            },
            commit_log_offset: receipt.commit_log_offset,
        }
        .to_string())
    }

    /// ForwardMessageToDeadLetterQueue as upstream's proxy does it: CONSUMER_SEND_MSG_BACK with
    /// delay level -1 (straight to `%DLQ%<group>`, the broker's one DLQ rule) to the master of
    /// the message's group as the route lists it (the acting master while the master is gone,
    /// which forwards it to a live master), then an ack of the handle. Only a broker address
    /// can be given here: this never goes to a NameServer.
    async fn forward_to_dlq(
        &self,
        req: &ForwardMessageToDeadLetterQueueRequest,
    ) -> Result<(), Status> {
        let group = name(req.group.as_ref());
        let topic = name(req.topic.as_ref());
        let (addr, receipt, real, offset) = self
            .handle_target(group, topic, &req.receipt_handle)
            .await?;
        let commit_log_offset = receipt
            .commit_log_offset
            .ok_or_else(|| status(Code::InvalidReceiptHandle, "commit log offset is empty"))?;
        let handle = receipt.info;
        let header = ConsumerSendMsgBackRequestHeader {
            offset: commit_log_offset,
            group: group.to_string(),
            delay_level: -1,
            origin_msg_id: Some(req.message_id.clone()).filter(|m| !m.is_empty()),
            origin_topic: Some(real.clone()),
            unit_mode: false,
            max_reconsume_times: Some(0),
            bname: Some(handle.broker_name.clone()),
        };
        self.api
            .consumer_send_msg_back(&addr, &header, SEND_BACK_TIMEOUT)
            .await
            .map_err(|e| from_client_error(&e))?;
        let ack = AckMessageRequestHeader {
            consumer_group: group.to_string(),
            topic: real,
            queue_id: handle.queue_id,
            extra_info: handle.to_string(),
            offset,
        };
        // The copy is in the DLQ: a failed ack only means the message may be handed out once
        // more (upstream ignores it too).
        if let Err(e) = self.api.ack_message(&addr, &ack).await {
            tracing::debug!(error = %e, "ack after a forward to the DLQ failed");
        }
        Ok(())
    }

    /// EndTransaction as END_TRANSACTION to the master of the half message's group (two-way,
    /// so a refusal reaches the client; upstream sends it oneway and answers OK).
    async fn end(&self, req: &EndTransactionRequest) -> Result<(), Status> {
        let topic = name(req.topic.as_ref());
        if req.transaction_id.is_empty() {
            return Err(status(
                Code::InvalidTransactionId,
                "transaction id cannot be empty",
            ));
        }
        let half = HalfHandle::parse(&req.transaction_id).ok_or_else(|| {
            status(
                Code::InvalidTransactionId,
                format!(
                    "{} is not a transaction id of this proxy",
                    req.transaction_id
                ),
            )
        })?;
        let commit_or_rollback = match TransactionResolution::try_from(req.resolution) {
            Ok(TransactionResolution::Commit) => MessageSysFlag::TRANSACTION_COMMIT_TYPE,
            Ok(TransactionResolution::Rollback) => MessageSysFlag::TRANSACTION_ROLLBACK_TYPE,
            _ => MessageSysFlag::TRANSACTION_NOT_TYPE,
        };
        let route = self.cached_route(topic).await?;
        let addr = Self::master(&route.route, &half.broker_name)?;
        let header = EndTransactionRequestHeader {
            topic: Some(topic.to_string()),
            producer_group: topic.to_string(),
            tran_state_table_offset: half.tran_state_table_offset,
            commit_log_offset: half.commit_log_offset,
            commit_or_rollback,
            from_transaction_check: TransactionSource::try_from(req.source)
                == Ok(TransactionSource::SourceServerCheck),
            msg_id: req.message_id.clone(),
            transaction_id: Some(req.message_id.clone()),
            bname: Some(half.broker_name.clone()),
        };
        let mut cmd = RemotingCommand::request(RequestCode::END_TRANSACTION);
        header.write_to(&mut cmd);
        let resp = self
            .api
            .transport()
            .invoke(&addr, cmd, self.api.timeout())
            .await
            .map_err(|e| from_client_error(&client::ClientError::from(e)))?;
        if resp.code != ResponseCode::SUCCESS {
            return Err(from_client_error(&client::ClientError::Broker {
                addr: addr.to_string(),
                code: resp.code,
                remark: resp.remark_str().to_string(),
            }));
        }
        Ok(())
    }

    /// The settings answered to a client's (upstream's `ClientActivity` defaults): what the
    /// client sent, with the retry policy, the body limit and metrics off filled in.
    fn answer_settings(mut s: Settings) -> Settings {
        let consumer = matches!(s.pub_sub, Some(settings::PubSub::Subscription(_)));
        s.backoff_policy = Some(RetryPolicy {
            max_attempts: if consumer { 17 } else { 3 },
            strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                ExponentialBackoff {
                    initial: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    max: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                    multiplier: 2.0,
                },
            )),
        });
        s.request_timeout.get_or_insert(prost_types::Duration {
            seconds: 3,
            nanos: 0,
        });
        s.metric = Some(Metric {
            on: false,
            endpoints: None,
        });
        match &mut s.pub_sub {
            Some(settings::PubSub::Publishing(p)) => {
                p.max_body_size = MAX_BODY_SIZE;
                p.validate_message_type = false;
            }
            Some(settings::PubSub::Subscription(sub)) => {
                sub.receive_batch_size.get_or_insert(MAX_BATCH);
                sub.long_polling_timeout
                    .get_or_insert(prost_types::Duration {
                        seconds: DEFAULT_LONG_POLLING.as_secs() as i64,
                        nanos: 0,
                    });
            }
            None => {}
        }
        s
    }
}

fn one<T: Send + 'static>(item: T) -> BoxStream<T> {
    Box::pin(futures::stream::iter([Ok(item)]))
}

#[tonic::async_trait]
impl MessagingService for Messaging {
    async fn query_route(&self, request: Request<QueryRouteRequest>) -> Rpc<QueryRouteResponse> {
        let req = request.into_inner();
        let topic = name(req.topic.as_ref());
        let route = match self.route(topic).await {
            Ok(r) => r,
            Err(s) => {
                return Ok(Response::new(QueryRouteResponse {
                    status: Some(s),
                    message_queues: vec![],
                }))
            }
        };
        let endpoints = self.endpoints(req.endpoints.as_ref());
        let mut queues = Vec::new();
        for qd in &route.queue_datas {
            let n = qd.read_queue_nums.max(qd.write_queue_nums);
            for id in 0..n {
                let p = permission(
                    perm::is_readable(qd.perm) && id < qd.read_queue_nums,
                    perm::is_writeable(qd.perm) && id < qd.write_queue_nums,
                );
                queues.push(MessageQueue {
                    topic: req.topic.clone(),
                    id,
                    permission: p as i32,
                    broker: Some(Broker {
                        name: qd.broker_name.clone(),
                        id: 0,
                        endpoints: Some(endpoints.clone()),
                    }),
                    accept_message_types: accepted_types(),
                });
            }
        }
        Ok(Response::new(QueryRouteResponse {
            status: Some(ok()),
            message_queues: queues,
        }))
    }

    async fn heartbeat(&self, _request: Request<HeartbeatRequest>) -> Rpc<HeartbeatResponse> {
        Ok(Response::new(HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(&self, request: Request<SendMessageRequest>) -> Rpc<SendMessageResponse> {
        let req = request.into_inner();
        let Some(first) = req.messages.first() else {
            return Ok(Response::new(SendMessageResponse {
                status: Some(status(Code::BadRequest, "no message to send")),
                entries: vec![],
            }));
        };
        let topic = name(first.topic.as_ref()).to_string();
        if req.messages.iter().any(|m| name(m.topic.as_ref()) != topic) {
            return Ok(Response::new(SendMessageResponse {
                status: Some(status(
                    Code::IllegalTopic,
                    "messages of one send must share a topic",
                )),
                entries: vec![],
            }));
        }
        let route = match self.cached_route(&topic).await {
            Ok(r) => r,
            Err(s) => {
                return Ok(Response::new(SendMessageResponse {
                    status: Some(s),
                    entries: vec![],
                }))
            }
        };
        let mut entries = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            entries.push(self.send_one(&route, &topic, m).await);
        }
        let st = overall(entries.iter().filter_map(|e| e.status.as_ref()));
        Ok(Response::new(SendMessageResponse {
            status: Some(st),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> Rpc<QueryAssignmentResponse> {
        let req = request.into_inner();
        let topic = name(req.topic.as_ref());
        let route = match self.route(topic).await {
            Ok(r) => r,
            Err(s) => {
                return Ok(Response::new(QueryAssignmentResponse {
                    status: Some(s),
                    assignments: vec![],
                }))
            }
        };
        let endpoints = self.endpoints(req.endpoints.as_ref());
        // One assignment per readable broker group with a master, queue -1 (any queue), as
        // upstream's RouteActivity.
        let assignments = route
            .queue_datas
            .iter()
            .filter(|qd| perm::is_readable(qd.perm) && qd.read_queue_nums > 0)
            .filter(|qd| Self::master(&route, &qd.broker_name).is_ok())
            .map(|qd| Assignment {
                message_queue: Some(MessageQueue {
                    topic: Some(topic_resource(topic)),
                    id: -1,
                    permission: Permission::ReadWrite as i32,
                    broker: Some(Broker {
                        name: qd.broker_name.clone(),
                        id: 0,
                        endpoints: Some(endpoints.clone()),
                    }),
                    accept_message_types: accepted_types(),
                }),
            })
            .collect();
        Ok(Response::new(QueryAssignmentResponse {
            status: Some(ok()),
            assignments,
        }))
    }

    type ReceiveMessageStream = BoxStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Rpc<Self::ReceiveMessageStream> {
        use receive_message_response::Content;
        let req = request.into_inner();
        let answer = |s: Status| ReceiveMessageResponse {
            content: Some(Content::Status(s)),
        };
        let items: Vec<ReceiveMessageResponse> = match self.pop(&req).await {
            Err(s) => vec![answer(s)],
            Ok(None) => vec![answer(status(Code::MessageNotFound, "no new message"))],
            Ok(Some((messages, handles, topic, invisible))) => {
                let mut out = vec![answer(ok())];
                out.extend(messages.iter().zip(handles).map(|(m, h)| {
                    let handle = Receipt {
                        info: ExtraInfo {
                            queue_offset: Some(m.queue_offset),
                            ..h
                        },
                        commit_log_offset: Some(m.commit_log_offset),
                    };
                    ReceiveMessageResponse {
                        content: Some(Content::Message(to_grpc(
                            &topic,
                            m,
                            handle.to_string(),
                            invisible,
                        ))),
                    }
                }));
                out.push(ReceiveMessageResponse {
                    content: Some(Content::DeliveryTimestamp(now_timestamp())),
                });
                out
            }
        };
        Ok(Response::new(Box::pin(futures::stream::iter(
            items.into_iter().map(Ok),
        ))))
    }

    async fn ack_message(&self, request: Request<AckMessageRequest>) -> Rpc<AckMessageResponse> {
        let req = request.into_inner();
        let group = name(req.group.as_ref());
        let topic = name(req.topic.as_ref());
        let mut entries = Vec::with_capacity(req.entries.len());
        for e in &req.entries {
            entries.push(AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: Some(self.ack_one(group, topic, e).await),
            });
        }
        let st = overall(entries.iter().filter_map(|e| e.status.as_ref()));
        Ok(Response::new(AckMessageResponse {
            status: Some(st),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Rpc<ForwardMessageToDeadLetterQueueResponse> {
        let st = match self.forward_to_dlq(request.get_ref()).await {
            Ok(()) => ok(),
            Err(s) => s,
        };
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(st),
        }))
    }

    type PullMessageStream = BoxStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        _request: Request<PullMessageRequest>,
    ) -> Rpc<Self::PullMessageStream> {
        Ok(Response::new(one(PullMessageResponse {
            content: Some(pull_message_response::Content::Status(not_implemented(
                "PullMessage",
            ))),
        })))
    }

    async fn update_offset(
        &self,
        _request: Request<UpdateOffsetRequest>,
    ) -> Rpc<UpdateOffsetResponse> {
        Ok(Response::new(UpdateOffsetResponse {
            status: Some(not_implemented("UpdateOffset")),
        }))
    }

    async fn get_offset(&self, _request: Request<GetOffsetRequest>) -> Rpc<GetOffsetResponse> {
        Ok(Response::new(GetOffsetResponse {
            status: Some(not_implemented("GetOffset")),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        _request: Request<QueryOffsetRequest>,
    ) -> Rpc<QueryOffsetResponse> {
        Ok(Response::new(QueryOffsetResponse {
            status: Some(not_implemented("QueryOffset")),
            offset: 0,
        }))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Rpc<EndTransactionResponse> {
        let st = match self.end(request.get_ref()).await {
            Ok(()) => ok(),
            Err(s) => s,
        };
        Ok(Response::new(EndTransactionResponse { status: Some(st) }))
    }

    type TelemetryStream = BoxStream<TelemetryCommand>;

    /// Answers each settings command with the settings the client is to use; a producer's
    /// stream is registered for its topics' transaction check-backs until it ends (or the
    /// proxy stops). Other commands (thread stack traces, verify results) need no answer.
    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<TelemetryCommand>>,
    ) -> Rpc<Self::TelemetryStream> {
        let client = client_id(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(TELEMETRY_QUEUE);
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let producers = self.producers.clone();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                let cmd = tokio::select! {
                    _ = stop.cancelled() => break,
                    cmd = inbound.message() => cmd,
                };
                let settings = match cmd {
                    Ok(Some(TelemetryCommand {
                        command: Some(telemetry_command::Command::Settings(s)),
                        ..
                    })) => s,
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(client = %client, error = %e, "telemetry stream failed");
                        break;
                    }
                };
                if let Some(settings::PubSub::Publishing(p)) = &settings.pub_sub {
                    let groups = p
                        .topics
                        .iter()
                        .map(|t| t.name.clone())
                        .filter(|t| !t.is_empty())
                        .collect();
                    producers.register(stream, &client, groups, tx.clone());
                }
                let answer = TelemetryCommand {
                    status: Some(ok()),
                    command: Some(telemetry_command::Command::Settings(
                        Messaging::answer_settings(settings),
                    )),
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
            producers.unregister(stream);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> Rpc<NotifyClientTerminationResponse> {
        let client = client_id(&request);
        if !client.is_empty() {
            self.producers.unregister_client(&client);
        }
        Ok(Response::new(NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Rpc<ChangeInvisibleDurationResponse> {
        let req = request.into_inner();
        let (st, handle) = match self.change_invisible(&req).await {
            Ok(h) => (ok(), h),
            Err(s) => (s, String::new()),
        };
        Ok(Response::new(ChangeInvisibleDurationResponse {
            status: Some(st),
            receipt_handle: handle,
        }))
    }

    async fn recall_message(
        &self,
        _request: Request<RecallMessageRequest>,
    ) -> Rpc<RecallMessageResponse> {
        Ok(Response::new(RecallMessageResponse {
            status: Some(not_implemented("RecallMessage")),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<SyncLiteSubscriptionRequest>,
    ) -> Rpc<SyncLiteSubscriptionResponse> {
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(not_implemented("SyncLiteSubscription")),
        }))
    }
}
