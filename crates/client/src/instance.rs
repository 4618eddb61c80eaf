//! [`ClientInstance`]: what one started producer or consumer shares with its helpers (upstream
//! `MQClientInstance`): the transport, the route cache, fault tolerance, the unique-id
//! generator, the registered groups, and the background tasks (route refresh, heartbeats,
//! offset persistence) and the answers to requests brokers send to the client.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use remoting::broker_headers::*;
use remoting::client::{ClientConfig as RemotingClientConfig, RemotingClient};
use remoting::headers::CommandHeader;
use remoting::message::{MessageExt, UniqIdGenerator};
use remoting::server::{Connection, HandlerFuture, RequestHandler};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api::ClientApi;
use crate::config::ClientConfig;
use crate::error::Result;
use crate::fault::LatencyFaultTolerance;
use crate::route::RouteCache;
use crate::transport::Transport;

/// What the instance needs from a consumer registered with it.
pub(crate) trait ConsumerHandle: Send + Sync + 'static {
    /// The group's entry in heartbeats.
    fn consumer_data(&self) -> ConsumerData;
    /// Starts a rebalance soon (NOTIFY_CONSUMER_IDS_CHANGED).
    fn rebalance_now(&self);
    /// Answer to GET_CONSUMER_RUNNING_INFO.
    fn running_info(&self) -> ConsumerRunningInfo;
    /// RESET_CONSUMER_CLIENT_OFFSET for `topic`. By default the offsets are stored; owned
    /// queues move to them on the next rebalance or seek.
    fn reset_offsets(
        &self,
        _topic: String,
        offsets: BTreeMap<MessageQueue, i64>,
    ) -> BoxFuture<'static, ()> {
        self.offsets().store_reset(offsets)
    }
    /// Commits the offsets of every owned queue.
    fn persist_offsets(&self) -> BoxFuture<'static, ()>;
    /// The consumer's offsets.
    fn offsets(&self) -> Arc<dyn ConsumerOffsets>;
    /// Answer to GET_CONSUMER_STATUS_FROM_CLIENT: the offsets of `topic`'s queues.
    fn consumer_status(&self, topic: &str) -> BTreeMap<MessageQueue, i64> {
        self.offsets()
            .in_memory()
            .into_iter()
            .filter(|(mq, _)| mq.topic == topic)
            .collect()
    }
    /// CONSUME_MESSAGE_DIRECTLY: runs the listener on `msg`; `None` when this consumer has
    /// no listener (pull consumers).
    fn consume_message_directly(
        &self,
        _msg: MessageExt,
        _broker_name: Option<String>,
    ) -> BoxFuture<'static, Option<ConsumeMessageDirectlyResult>> {
        Box::pin(async { None })
    }
}

/// What the instance needs from a consumer's offset store (the store itself lives in
/// [`consumer::offset_store`](super::consumer::offset_store) and uses the instance, so the
/// instance only sees this).
pub(crate) trait ConsumerOffsets: Send + Sync + 'static {
    /// The offsets held in memory, by queue.
    fn in_memory(&self) -> BTreeMap<MessageQueue, i64>;
    /// Stores offsets a broker reset (RESET_CONSUMER_CLIENT_OFFSET) and pushes them to the
    /// broker; one that cannot be stored is logged and skipped.
    fn store_reset(self: Arc<Self>, offsets: BTreeMap<MessageQueue, i64>)
        -> BoxFuture<'static, ()>;
}

/// What the instance needs from a transactional producer (CHECK_TRANSACTION_STATE).
pub(crate) trait TransactionCheckHandle: Send + Sync + 'static {
    fn check_transaction_state(
        &self,
        broker: BrokerAddr,
        header: CheckTransactionStateRequestHeader,
        msg: MessageExt,
    );
}

/// State shared by one started client (producer or consumer) and its background tasks.
pub(crate) struct ClientInstance {
    pub config: ClientConfig,
    pub client_id: String,
    pub api: ClientApi,
    pub routes: RouteCache,
    pub fault: LatencyFaultTolerance,
    pub uniq: UniqIdGenerator,
    producers: Mutex<Vec<String>>,
    consumers: Mutex<HashMap<String, Arc<dyn ConsumerHandle>>>,
    tx_checker: Mutex<Option<Arc<dyn TransactionCheckHandle>>>,
    /// Owned by this instance when it created the transport itself.
    remoting: Option<RemotingClient>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Held by a send-back's fallback re-send from its first attempt to its last, so that one
    /// re-send's route refresh cannot replace the route another one is sending with (the
    /// fallback is rare and its re-sends go one at a time).
    pub fallback_resend: tokio::sync::Mutex<()>,
}

impl ClientInstance {
    /// An instance with its own [`RemotingClient`], answering broker-initiated requests.
    pub fn new(mut config: ClientConfig) -> Result<Arc<Self>> {
        config.validate()?;
        config.resolve_instance_name();
        Ok(Arc::new_cyclic(|weak: &Weak<ClientInstance>| {
            let handler = Arc::new(BrokerRequests {
                instance: weak.clone(),
            });
            let remoting = RemotingClient::new(RemotingClientConfig {
                connect_timeout: config.mq_client_api_timeout,
                server_request_handler: Some(handler),
                tls: config.tls.clone(),
                credentials: config.credentials.clone(),
                ..Default::default()
            });
            Self::build(config, Arc::new(remoting.clone()), Some(remoting))
        }))
    }

    /// An instance over `transport` (brokers' own requests are not answered).
    #[cfg(test)]
    pub fn with_transport(
        mut config: ClientConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        config.resolve_instance_name();
        Ok(Arc::new(Self::build(config, transport, None)))
    }

    fn build(
        config: ClientConfig,
        transport: Arc<dyn Transport>,
        remoting: Option<RemotingClient>,
    ) -> Self {
        let client_id = config.client_id();
        let ip = config
            .client_ip
            .parse()
            .unwrap_or_else(|_| crate::config::local_ip());
        let seed: i32 = rand::random();
        ClientInstance {
            api: ClientApi::new(
                transport,
                config.namesrv_addr.clone(),
                config.mq_client_api_timeout,
            ),
            routes: RouteCache::new(),
            fault: LatencyFaultTolerance::new(config.send_latency_enable),
            uniq: UniqIdGenerator::new(ip, std::process::id(), seed),
            producers: Mutex::new(Vec::new()),
            consumers: Mutex::new(HashMap::new()),
            tx_checker: Mutex::new(None),
            remoting,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            fallback_resend: tokio::sync::Mutex::new(()),
            client_id,
            config,
        }
    }

    /// Fetches `topic`'s route and caches it; returns whether it changed. `Ok(false)` also
    /// when the topic does not exist.
    pub async fn update_route(&self, topic: &str) -> Result<bool> {
        match self.api.topic_route(topic).await? {
            Some(route) => Ok(self.routes.update(topic, route)),
            None => Ok(false),
        }
    }

    /// Caches a route for `topic` made from `default_topic`'s (auto-creation through
    /// `TBW102`): every queue count capped at `queue_nums`.
    pub async fn update_route_from_default(
        &self,
        topic: &str,
        default_topic: &str,
        queue_nums: i32,
    ) -> Result<bool> {
        let Some(mut route) = self.api.topic_route(default_topic).await? else {
            return Ok(false);
        };
        for qd in &mut route.queue_datas {
            let n = queue_nums.min(qd.read_queue_nums);
            qd.read_queue_nums = n;
            qd.write_queue_nums = n;
        }
        Ok(self.routes.update(topic, route))
    }

    pub fn register_producer(&self, group: &str) {
        let mut p = self.producers.lock();
        if !p.iter().any(|g| g == group) {
            p.push(group.to_string());
        }
    }

    pub fn register_consumer(&self, group: &str, handle: Arc<dyn ConsumerHandle>) {
        self.consumers.lock().insert(group.to_string(), handle);
    }

    pub fn set_transaction_checker(&self, checker: Arc<dyn TransactionCheckHandle>) {
        *self.tx_checker.lock() = Some(checker);
    }

    fn consumer(&self, group: &str) -> Option<Arc<dyn ConsumerHandle>> {
        self.consumers.lock().get(group).cloned()
    }

    /// The heartbeat body: every producer and consumer group of this instance.
    pub fn heartbeat_data(&self) -> HeartbeatData {
        HeartbeatData {
            client_id: self.client_id.clone(),
            producer_data_set: self
                .producers
                .lock()
                .iter()
                .map(|g| ProducerData {
                    group_name: g.clone(),
                })
                .collect(),
            consumer_data_set: self
                .consumers
                .lock()
                .values()
                .map(|c| c.consumer_data())
                .collect(),
            ..Default::default()
        }
    }

    /// Sends a heartbeat to every broker of every cached route (consumers only need masters,
    /// but slaves serve pulls too, so all of them get one).
    pub async fn send_heartbeats(&self) {
        let data = self.heartbeat_data();
        if data.producer_data_set.is_empty() && data.consumer_data_set.is_empty() {
            return;
        }
        for (name, id, addr) in self.routes.all_brokers() {
            if let Err(e) = self.api.heartbeat(&addr, &data).await {
                warn!(broker = %name, id, %addr, error = %e, "heartbeat failed");
            }
        }
    }

    /// Refreshes every cached route (the 30 s poll).
    pub async fn refresh_routes(&self) {
        for topic in self.routes.topics() {
            if let Err(e) = self.update_route(&topic).await {
                debug!(topic, error = %e, "route refresh failed");
            }
        }
    }

    /// Starts route refresh, heartbeats and offset persistence.
    pub fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let routes = self.config.poll_name_server_interval;
        self.spawn_periodic(routes, weak.clone(), |i| {
            Box::pin(async move { i.refresh_routes().await })
        });
        let beats = self.config.heartbeat_broker_interval;
        self.spawn_periodic(beats, weak.clone(), |i| {
            Box::pin(async move { i.send_heartbeats().await })
        });
        let persist = self.config.persist_consumer_offset_interval;
        self.spawn_periodic(persist, weak, |i| {
            Box::pin(async move {
                let consumers: Vec<_> = i.consumers.lock().values().cloned().collect();
                for c in consumers {
                    c.persist_offsets().await;
                }
            })
        });
    }

    /// Runs `job` every `period` until shutdown; holds only a weak reference in between.
    fn spawn_periodic(
        &self,
        period: Duration,
        weak: Weak<ClientInstance>,
        job: fn(Arc<ClientInstance>) -> BoxFuture<'static, ()>,
    ) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(instance) = weak.upgrade() else {
                    break;
                };
                job(instance).await;
            }
        });
    }

    /// Unregisters every group from every known broker, stops the background tasks and
    /// closes the connections.
    pub async fn shutdown(&self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let producers = self.producers.lock().clone();
        let consumers: Vec<String> = self.consumers.lock().keys().cloned().collect();
        for (_, _, addr) in self.routes.all_brokers() {
            let headers = producers
                .iter()
                .map(|g| (Some(g.clone()), None))
                .chain(consumers.iter().map(|g| (None, Some(g.clone()))));
            for (producer_group, consumer_group) in headers {
                let header = UnregisterClientRequestHeader {
                    client_id: self.client_id.clone(),
                    producer_group,
                    consumer_group,
                };
                if let Err(e) = self.api.unregister_client(&addr, &header).await {
                    debug!(%addr, error = %e, "unregister failed");
                }
            }
        }
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(r) = &self.remoting {
            r.shutdown().await;
        }
        info!(client_id = %self.client_id, "client shut down");
    }
}

/// Answers requests brokers send to this client.
struct BrokerRequests {
    instance: Weak<ClientInstance>,
}

impl RequestHandler for BrokerRequests {
    fn handle(&self, conn: Connection, req: RemotingCommand) -> HandlerFuture {
        let instance = self.instance.upgrade();
        Box::pin(async move {
            let Some(instance) = instance else {
                return Some(RemotingCommand::not_supported(&req));
            };
            handle_broker_request(&instance, &conn, req).await
        })
    }
}

async fn handle_broker_request(
    instance: &ClientInstance,
    conn: &Connection,
    req: RemotingCommand,
) -> Option<RemotingCommand> {
    let fail = |req: &RemotingCommand, remark: String| {
        Some(RemotingCommand::response_to(
            req,
            ResponseCode::SYSTEM_ERROR,
            Some(remark),
        ))
    };
    match req.code {
        RequestCode::NOTIFY_CONSUMER_IDS_CHANGED => {
            match NotifyConsumerIdsChangedRequestHeader::from_command(&req) {
                Ok(h) => {
                    info!(group = %h.consumer_group, broker = %conn.remote_addr(), "consumer ids changed");
                    if let Some(c) = instance.consumer(&h.consumer_group) {
                        c.rebalance_now();
                    }
                }
                Err(e) => warn!(error = %e, "bad NOTIFY_CONSUMER_IDS_CHANGED"),
            }
            None
        }
        RequestCode::GET_CONSUMER_RUNNING_INFO => {
            let h = match GetConsumerRunningInfoRequestHeader::from_command(&req) {
                Ok(h) => h,
                Err(e) => return fail(&req, e.to_string()),
            };
            let Some(c) = instance.consumer(&h.consumer_group) else {
                return fail(
                    &req,
                    format!(
                        "The Consumer Group <{}> not exist in this consumer",
                        h.consumer_group
                    ),
                );
            };
            match c.running_info().encode() {
                Ok(body) => Some(
                    RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None).with_body(body),
                ),
                Err(e) => fail(&req, e.to_string()),
            }
        }
        RequestCode::RESET_CONSUMER_CLIENT_OFFSET => {
            let parsed = ResetOffsetRequestHeader::from_command(&req)
                .and_then(|h| ResetOffsetBody::decode(&req.body).map(|b| (h, b)));
            match parsed {
                Ok((h, body)) => {
                    if let Some(c) = instance.consumer(&h.group) {
                        c.reset_offsets(h.topic, body.offset_table).await;
                    }
                    Some(RemotingCommand::response_to(
                        &req,
                        ResponseCode::SUCCESS,
                        None,
                    ))
                }
                Err(e) => fail(&req, e.to_string()),
            }
        }
        RequestCode::GET_CONSUMER_STATUS_FROM_CLIENT => {
            let h = match GetConsumerStatusRequestHeader::from_command(&req) {
                Ok(h) => h,
                Err(e) => return fail(&req, e.to_string()),
            };
            let body = GetConsumerStatusBody {
                message_queue_table: instance
                    .consumer(&h.group)
                    .map(|c| c.consumer_status(&h.topic))
                    .unwrap_or_default(),
            };
            match body.encode() {
                Ok(body) => Some(
                    RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None).with_body(body),
                ),
                Err(e) => fail(&req, e.to_string()),
            }
        }
        RequestCode::CONSUME_MESSAGE_DIRECTLY => {
            let h = match ConsumeMessageDirectlyResultRequestHeader::from_command(&req) {
                Ok(h) => h,
                Err(e) => return fail(&req, e.to_string()),
            };
            let msg = match MessageExt::decode(&req.body, true) {
                Ok((m, _)) => m,
                Err(e) => return fail(&req, e.to_string()),
            };
            let result = match instance.consumer(&h.consumer_group) {
                Some(c) => c.consume_message_directly(msg, h.broker_name).await,
                None => None,
            };
            match result.map(|r| r.encode()) {
                Some(Ok(body)) => Some(
                    RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None).with_body(body),
                ),
                Some(Err(e)) => fail(&req, e.to_string()),
                None => fail(
                    &req,
                    format!(
                        "The Consumer Group <{}> not exist in this consumer",
                        h.consumer_group
                    ),
                ),
            }
        }
        RequestCode::CHECK_TRANSACTION_STATE => {
            let checker = instance.tx_checker.lock().clone();
            let header = CheckTransactionStateRequestHeader::from_command(&req);
            let msg = MessageExt::decode(&req.body, true);
            let broker = BrokerAddr::parse(&conn.remote_addr().to_string());
            match (checker, header, msg, broker) {
                (Some(checker), Ok(header), Ok((msg, _)), Some(broker)) => {
                    checker.check_transaction_state(broker, header, msg);
                }
                (checker, header, msg, _) => warn!(
                    has_checker = checker.is_some(),
                    header_ok = header.is_ok(),
                    msg_ok = msg.is_ok(),
                    "cannot handle CHECK_TRANSACTION_STATE"
                ),
            }
            None
        }
        _ => Some(RemotingCommand::not_supported(&req)),
    }
}
