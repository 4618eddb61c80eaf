//! [`Broker`]: a running broker — the store, the managers, the remoting servers (`listenPort`
//! and the fast port, one dispatcher) with the request handlers, and the background tasks (registration, delay delivery, timer
//! delivery, transaction checks, housekeeping), each stopped and awaited by [`Broker::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use observe::MetricsServer;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::server::{RemotingServer, ServerConfig};
use remoting::tls::{ClientTls, ServerTls};
use remoting::RemotingError;
use store::MessageStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::clients::{ConsumerManager, ProducerManager};
use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::error::BrokerError;
use crate::ha::{self, HaState};
use crate::handlers;
use crate::lock::RebalanceLockManager;
use crate::long_poll::PullWaiters;
use crate::membership;
use crate::metrics::{BrokerMetrics, GroupLag, ScrapeValues};
use crate::offset::ConsumerOffsetManager;
use crate::pop::PopService;
use crate::register;
use crate::replicas;
use crate::schedule::{self, DelayOffsets, DelayService};
use crate::services::BrokerServices;
use crate::slave_sync;
use crate::subscription::SubscriptionGroupManager;
use crate::timer::{self, TimerService};
use crate::topic::TopicConfigManager;
use crate::transaction::{self, TransactionService};

/// How often silent clients are looked for.
const CLIENT_SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// A running broker.
pub struct Broker {
    server: RemotingServer,
    services: Arc<BrokerServices>,
    /// The fast ("VIP") port: same dispatcher and limits as `server`.
    fast_server: Option<RemotingServer>,
    tasks: Vec<JoinHandle<()>>,
    client: RemotingClient,
    /// `GET /metrics`, when enabled.
    metrics_server: Option<MetricsServer>,
}

impl Broker {
    /// Opens the store (recovering it if needed), loads the config files, binds
    /// `bindAddress:listenPort` and the fast port, registers with the NameServers and starts
    /// the services. Fails with [`BrokerError::Config`] when `storePathRootDir` is empty.
    pub async fn start(mut config: BrokerConfig) -> Result<Broker, BrokerError> {
        if config.enable_controller_mode {
            // The controllers decide the role; until then the store refuses writes.
            config.broker_role = store::config::BrokerRole::Slave;
        }
        let controller_mode = config.enable_controller_mode;
        if config.store_path_root_dir.as_os_str().is_empty() {
            return Err(BrokerError::Config(
                "config key `storePathRootDir` is not set".into(),
            ));
        }
        // TLS files are read before the store is opened: a bad one stops the start cleanly.
        let tls = ServerTls::new(&config.tls_server_settings()).map_err(RemotingError::from)?;
        let client_tls = match config
            .tls_client_keys()
            .settings()
            .map_err(RemotingError::from)?
        {
            Some(settings) => Some(ClientTls::new(&settings).map_err(RemotingError::from)?),
            None => None,
        };
        let store_config = config.store_config();
        let store = tokio::task::spawn_blocking(move || MessageStore::open(store_config))
            .await
            .map_err(|e| BrokerError::Config(format!("store open task failed: {e}")))??;
        let acl = if config.acl_enable {
            let home = config.rocketmq_home.clone().unwrap_or_default();
            let files = acl::AclFiles::new(home);
            let validator = acl::AclValidator::load(files)
                .map_err(|e| BrokerError::Config(format!("aclEnable=true: {e}")))?;
            Some(Arc::new(validator))
        } else {
            None
        };
        let root = config.store_path_root_dir.clone();
        let waiters = Arc::new(PullWaiters::default());
        {
            let waiters = waiters.clone();
            store.subscribe_queue_growth(Arc::new(move |g: &store::QueueGrowth<'_>| {
                waiters.notify(g.topic, g.queue_id)
            }));
        }
        let (stopping, _) = watch::channel(false);
        let client = RemotingClient::new(ClientConfig {
            tls: client_tls,
            ..ClientConfig::default()
        });
        let state = Arc::new(BrokerContext {
            topics: TopicConfigManager::load(&config)?,
            groups: SubscriptionGroupManager::load(&config)?,
            offsets: ConsumerOffsetManager::load(&root)?,
            consumers: ConsumerManager::default(),
            producers: ProducerManager::default(),
            locks: RebalanceLockManager::new(Duration::from_millis(
                config.rebalance_lock_max_live_time,
            )),
            waiters,
            tasks: TaskTracker::new(),
            stopping,
            started: Instant::now(),
            stats: Default::default(),
            store: store.clone(),
            store_host: Default::default(),
            config: ArcSwap::from_pointee(config.clone()),
            config_update: Default::default(),
            ha: HaState::default(),
            client: client.clone(),
            acl,
            metrics: Arc::new(BrokerMetrics::new(
                &config.broker_cluster_name,
                &config.broker_name,
                config.metrics_enabled(),
            )),
        });
        state
            .ha
            .set_master_ha_addr(config.ha_master_address.clone());
        if state.metrics.enabled() {
            let metrics = state.metrics.clone();
            store.set_flush_observer(Box::new(move |elapsed| metrics.record_flush(elapsed)));
        }
        if config.is_slave() {
            // Replicated messages of a topic whose config is not synchronised yet.
            let weak = Arc::downgrade(&state);
            store.subscribe_queue_growth(Arc::new(move |g: &store::QueueGrowth<'_>| {
                if let Some(state) = weak.upgrade().filter(|s| s.store.is_slave()) {
                    if let Err(e) = state.topics.learn_replicated(g.topic, g.queue_id) {
                        tracing::warn!(topic = g.topic, error = %e, "cannot record a replicated topic");
                    }
                }
            }));
        }
        let server_config = ServerConfig {
            listen: config.listen_addr(),
            max_frame_size: config.max_frame_size,
            max_connections: config.max_connections,
            limits: config.request_limits(),
            tls,
        };
        let services = Arc::new(BrokerServices {
            ctx: state.clone(),
            delay: Arc::new(DelayService::new(
                config.delay_levels(),
                DelayOffsets::load(&root)?,
            )),
            timer: Arc::new(TimerService::load(&root)?),
            transactions: Arc::new(TransactionService::default()),
            pop: Arc::new(PopService::new()),
        });
        if !config.is_slave() {
            services.pop.recover(&state);
        }
        let dispatcher = match handlers::dispatcher(&services) {
            Ok(mut d) => {
                if state.metrics.enabled() {
                    d.set_observer(state.metrics.clone());
                }
                Arc::new(d)
            }
            Err(e) => {
                store.shutdown()?;
                return Err(e.into());
            }
        };
        let server = match RemotingServer::start(server_config.clone(), dispatcher.clone()).await {
            Ok(s) => s,
            Err(e) => {
                store.shutdown()?;
                return Err(e.into());
            }
        };
        // Upstream brokers and VIP-channel clients dial `listenPort - 2`: serve it like the main
        // port (each port admits up to `maxConnections`, as upstream's cloned server config).
        let fast_server = match config.fast_listen_addr() {
            None => None,
            Some(listen) => {
                let fast_config = ServerConfig {
                    listen,
                    ..server_config
                };
                match RemotingServer::start(fast_config, dispatcher).await {
                    Ok(s) => Some(s),
                    Err(source) => {
                        server.shutdown().await;
                        store.shutdown()?;
                        return Err(BrokerError::FastBind {
                            addr: listen,
                            source,
                        });
                    }
                }
            }
        };
        let advertised = SocketAddr::new(config.advertised_ip(), server.local_addr().port());
        // Nothing has read it yet unless a request raced us; then it holds the same address
        // for a fixed port, and the configured one for port 0 (fixed up here for later reads).
        let _ = state.store_host.set(advertised);

        let mut tasks = Vec::new();
        // Controller mode runs both sides of replication; each serves only in its role.
        if config.is_slave() {
            tasks.push(tokio::spawn(ha::slave::run(state.clone())));
            tasks.push(tokio::spawn(slave_sync::run(
                state.clone(),
                services.delay.clone(),
                services.timer.clone(),
            )));
        }
        if !config.is_slave() || controller_mode {
            let listener = match ha::master::bind(&state).await {
                Ok(l) => l,
                Err(e) => {
                    stop_servers(server, fast_server).await;
                    store.shutdown()?;
                    return Err(BrokerError::HaBind(e));
                }
            };
            tasks.push(tokio::spawn(ha::master::run(state.clone(), listener)));
        }
        tasks.push(tokio::spawn(register::run(state.clone(), client.clone())));
        tasks.push(tokio::spawn(housekeeping(services.clone())));
        if let Some(acl) = state.acl.clone() {
            tasks.push(tokio::spawn(watch_acl(acl, state.stop_signal())));
        }
        tasks.push(tokio::spawn(schedule::run(
            state.clone(),
            services.delay.clone(),
        )));
        tasks.push(tokio::spawn(timer::run(
            state.clone(),
            services.timer.clone(),
        )));
        if controller_mode {
            // Readers see only what every SyncStateSet member has (see
            // `MessageStore::set_read_limit`); weak: the table lives in the context.
            let ctx = Arc::downgrade(&state);
            state.ha.acks.set_confirm_sink(Box::new(move |confirmed| {
                if let Some(ctx) = ctx.upgrade() {
                    let limit = confirmed.filter(|_| ctx.config().all_ack_in_sync_state_set);
                    ctx.store.set_read_limit(limit.map(|o| o.max(0) as u64));
                }
            }));
            match replicas::prepare(&state, services.pop.clone()) {
                Ok(task) => tasks.push(tokio::spawn(task)),
                Err(e) => {
                    state.stopping.send_replace(true);
                    for t in tasks {
                        let _ = t.await;
                    }
                    stop_servers(server, fast_server).await;
                    store.shutdown()?;
                    return Err(e);
                }
            }
        }
        if !config.is_slave() || controller_mode {
            tasks.push(tokio::spawn(transaction::run_checks(
                state.clone(),
                services.transactions.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            services
                .pop
                .clone()
                .run_revive(state.clone(), state.stop_signal()),
        ));
        let metrics_server = match config.metrics_addr() {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => serve_metrics(&services, listener),
                Err(e) => {
                    // Several brokers on one host share the default port: the first serves.
                    tracing::warn!(%addr, error = %e, "metrics endpoint not started (metricsPromExporterPort)");
                    None
                }
            },
            None => None,
        };
        tracing::info!(
            addr = %advertised,
            fast = ?fast_server.as_ref().map(|s| s.local_addr()),
            broker = %config.broker_name,
            cluster = %config.broker_cluster_name,
            "broker started"
        );
        Ok(Broker {
            server,
            services,
            fast_server,
            tasks,
            client,
            metrics_server,
        })
    }

    /// Serves this broker's `/metrics` on `listener` (in place of the configured port, which
    /// is not bound when `metricsPromExporterPort` is 0); returns the bound address.
    pub fn serve_metrics(&mut self, listener: tokio::net::TcpListener) -> Option<SocketAddr> {
        self.metrics_server = serve_metrics(&self.services, listener);
        self.metrics_addr()
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|m| m.local_addr())
    }

    /// The main port for a client in this process (see `RemotingServer::local_endpoint`).
    pub fn local_endpoint(&self) -> remoting::server::LocalEndpoint {
        self.server.local_endpoint()
    }

    /// The address the server is bound to (the real port when `listenPort` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The address the fast port is bound to (`fastListenPort`, default `listenPort - 2`);
    /// `None` when `fastListenPortEnable` is false.
    pub fn fast_local_addr(&self) -> Option<SocketAddr> {
        self.fast_server.as_ref().map(|s| s.local_addr())
    }

    /// Requests in flight on the main client port now, and rejected so far (`maxInFlight*`
    /// keys; the fast port has limits and counts of its own).
    pub fn request_stats(&self) -> remoting::server::RequestStats {
        self.server.request_stats()
    }

    /// Long-polling pulls held now (at most `maxHeldPullRequests`).
    pub fn held_pulls(&self) -> usize {
        self.services.waiters.held()
    }

    /// `brokerIP1:port`, the address registered with the NameServers.
    pub fn broker_addr(&self) -> String {
        self.services.broker_addr()
    }

    /// The bound replication port (a master's `haListenPort`); `None` on a slave.
    pub fn ha_port(&self) -> Option<u16> {
        self.services.ha.listen_port.get().copied()
    }

    /// The configuration in force (UPDATE_BROKER_CONFIG may have changed it).
    pub fn config(&self) -> BrokerConfig {
        self.services.config().as_ref().clone()
    }

    /// Stops everything in order: held pulls and services are told to stop, both servers close
    /// every connection and await their handlers, the services end (registration unregisters),
    /// config files are persisted and the store is flushed and closed.
    pub async fn shutdown(self) {
        // `send` would drop the value while no task has subscribed yet (a stop right after
        // start); a task subscribing later must still see it.
        self.services.stopping.send_replace(true);
        stop_servers(self.server, self.fast_server).await;
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!("broker task failed: {e}");
            }
        }
        self.services.tasks.close();
        self.services.tasks.wait().await;
        self.client.shutdown().await;
        persist_all(&self.services).await;
        if let Err(e) = self.services.store.shutdown() {
            tracing::error!(error = %e, "store shutdown failed");
        }
        tracing::info!("broker stopped");
    }
}

/// Starts `/metrics` on `listener`, rendering the broker's metrics (held weakly: the endpoint
/// does not keep a stopped broker alive).
fn serve_metrics(
    services: &Arc<BrokerServices>,
    listener: tokio::net::TcpListener,
) -> Option<MetricsServer> {
    let weak = Arc::downgrade(services);
    let render = Arc::new(move || match weak.upgrade() {
        Some(s) => s.ctx.metrics.render(&scrape_values(&s)),
        None => String::new(),
    });
    match MetricsServer::serve(listener, render) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "metrics endpoint not started");
            None
        }
    }
}

/// Most half-queue records one scrape reads to count unresolved transactions.
const HALF_SCAN_LIMIT: usize = 100_000;

/// The broker's current gauge values for a scrape.
fn scrape_values(services: &BrokerServices) -> ScrapeValues {
    let ctx = &services.ctx;
    let config = ctx.config();
    let now = remoting::message::now_millis();
    let lags = ctx
        .offsets
        .entries()
        .into_iter()
        .map(|(topic, group, queues)| {
            let mut lag = GroupLag::default();
            for (&q, &committed) in &queues {
                let max = ctx.store.max_offset(&topic, q);
                let behind = (max - committed).max(0);
                lag.messages += behind;
                match ctx.offsets.pull_offset(&group, &topic, q) {
                    Some(pulled) => {
                        let pulled = pulled.clamp(committed, max.max(committed));
                        lag.inflight += pulled - committed;
                        lag.ready += (max - pulled).max(0);
                    }
                    None => lag.ready += behind,
                }
                if behind > 0 {
                    if let Some(stored) = ctx.store.message_store_timestamp(&topic, q, committed) {
                        lag.latency_ms = lag.latency_ms.max((now - stored).max(0));
                    }
                }
            }
            (topic, group, lag)
        })
        .collect();
    let max = ctx.store.commit_log_max_offset();
    ScrapeValues {
        half_messages: services.transactions.pending_by_topic(ctx, HALF_SCAN_LIMIT),
        topics: ctx.topics.snapshot().topic_config_table.len(),
        groups: ctx.groups.snapshot().subscription_group_table.len(),
        permission: config.broker_permission,
        producer_connections: ctx.producers.connection_count(),
        consumer_connections: ctx.consumers.connections_per_group(),
        lags,
        storage_size: max - ctx.store.commit_log_min_offset(),
        flush_behind: (max - ctx.store.commit_log_flushed_offset()).max(0),
        dispatch_behind: (max - ctx.store.dispatched_offset()).max(0),
        replication_lag: if config.is_slave() {
            Vec::new()
        } else {
            ctx.ha
                .acks
                .slaves()
                .into_iter()
                .map(|(slave, acked)| (slave, (max - acked).max(0)))
                .collect()
        },
        acting_master: config.is_slave()
            && config.enable_acting_master
            && ctx.ha.master_addr.read().is_none(),
    }
}

/// Shuts both servers down together and waits for them.
async fn stop_servers(server: RemotingServer, fast: Option<RemotingServer>) {
    let fast = async {
        if let Some(fast) = fast {
            fast.shutdown().await;
        }
    };
    tokio::join!(server.shutdown(), fast);
}

/// Writes every config file with the latest state and waits until they are durable (the
/// writes run in parallel on the files' writer threads).
async fn persist_all(state: &BrokerServices) {
    let (offsets, delay_offsets, timer, topics, groups) = tokio::join!(
        state.offsets.flush(),
        state.delay.offsets.flush(),
        state.timer.flush(),
        state.topics.flush(),
        state.groups.flush(),
    );
    for r in [offsets, delay_offsets, timer, topics, groups] {
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot persist broker config");
        }
    }
}

/// Persists offsets every `flushConsumerOffsetInterval` and drops silent clients.
/// How often the ACL files are looked at for changes (upstream `AclFileWatchService`).
const ACL_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Reloads the ACL files when they change; a file that does not load keeps the previous
/// accounts, with an error logged.
async fn watch_acl(acl: Arc<acl::AclValidator>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ACL_WATCH_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        let acl = acl.clone();
        match tokio::task::spawn_blocking(move || acl.reload_if_changed()).await {
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ACL files not reloaded; the previous accounts stay")
            }
            Err(e) => tracing::error!(error = %e, "ACL reload task failed"),
            Ok(Ok(_)) => {}
        }
    }
}

async fn housekeeping(state: Arc<BrokerServices>) {
    let mut stop = state.stop_signal();
    let mut last_scan = Instant::now();
    loop {
        let interval =
            Duration::from_millis(state.config().flush_consumer_offset_interval.max(100));
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        // Written off this thread; a failure is logged by the file's writer.
        state.offsets.persist();
        state.delay.offsets.persist();
        if last_scan.elapsed() >= CLIENT_SCAN_INTERVAL {
            last_scan = Instant::now();
            let expiry = Duration::from_millis(state.config().channel_expired_timeout);
            membership::remove_expired(&state, expiry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_to_start_without_a_store_root() {
        // The default has no store root (no `$HOME` in the library): the broker stops before
        // opening a store, rather than write to a relative `store/`.
        let err = Broker::start(BrokerConfig::default()).await.err();
        assert!(
            matches!(&err, Some(BrokerError::Config(m)) if m.contains("storePathRootDir")),
            "{:?}",
            err.map(|e| e.to_string())
        );
    }
}
