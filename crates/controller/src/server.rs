//! [`Controller`]: a running controller — the Raft node, the remoting server on its own entry
//! of `controllerDLegerPeers`, the task that finds silent brokers and has the leader elect a
//! new master. The state they share is in `state`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use observe::MetricsServer;
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::server::{RemotingServer, ServerConfig};
use remoting::RemotingError;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ConfigError;
use crate::config::ControllerConfig;
use crate::error::ControllerError;
use crate::handlers;
use crate::liveness::BrokerLiveness;
use crate::metrics::{dir_size, ControllerMetrics, Role, ScrapeValues};
use crate::raft::{ControllerRaft, Network, NodeId};
use crate::replicas::ReplicasInfo;
use crate::state::ControllerState;
use crate::store::{LogStore, StateMachineStore};

/// Shortest pause between two liveness scans, whatever `scanNotActiveBrokerInterval` says.
const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// A running controller.
pub struct Controller {
    server: RemotingServer,
    /// `GET /metrics`, when served.
    metrics_server: Option<MetricsServer>,
    state: Arc<ControllerState>,
    scanner: JoinHandle<()>,
    stop_scanner: oneshot::Sender<()>,
}

impl Controller {
    /// Opens the Raft store under `controllerStorePath`, starts the Raft node, listens on this
    /// controller's entry of `controllerDLegerPeers`, and — on the peer with the lowest id, when
    /// the store holds no Raft state yet — initializes the group with every peer as voter.
    pub async fn start(config: ControllerConfig) -> Result<Controller, ControllerError> {
        let peers = config.peers()?;
        if config.store_path.as_os_str().is_empty() {
            return Err(ControllerError::Config(ConfigError::InvalidValue {
                key: "controllerStorePath".into(),
                value: String::new(),
                expected: "the directory of the controller's Raft store",
            }));
        }
        let dir = config.store_path.join("raft");
        let log = LogStore::open(&dir).map_err(|e| ControllerError::Storage(e.to_string()))?;
        let sm =
            StateMachineStore::open(&dir).map_err(|e| ControllerError::Storage(e.to_string()))?;
        let replicas = sm.shared();
        let server_tls = remoting::tls::ServerTls::new(&config.tls_server_settings())
            .map_err(RemotingError::from)?;
        let client_tls = match config
            .tls_client_keys()
            .settings()
            .map_err(RemotingError::from)?
        {
            Some(settings) => {
                Some(remoting::tls::ClientTls::new(&settings).map_err(RemotingError::from)?)
            }
            None => None,
        };
        let client = RemotingClient::new(ClientConfig {
            tls: client_tls,
            ..ClientConfig::default()
        });
        let beat = config.raft_heartbeat_interval.as_millis().max(10) as u64;
        let raft_config = openraft::Config {
            cluster_name: config.group.clone(),
            heartbeat_interval: beat,
            election_timeout_min: beat * 3,
            election_timeout_max: beat * 6,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs_since_last.max(1)),
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let raft = ControllerRaft::new(
            peers.self_id,
            Arc::new(raft_config),
            Network::new(client.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let server_config = ServerConfig {
            listen: peers.me().addr,
            max_frame_size: config.max_frame_size,
            max_connections: config.max_connections,
            // Controller traffic is small (heartbeats, elections, Raft); the defaults bound a flood.
            limits: remoting::server::RequestLimits::default(),
            tls: server_tls,
        };
        let metrics = Arc::new(ControllerMetrics::new(
            &peers.me().addr.to_string(),
            &config.group,
            &peers.me().name,
            config.metrics_enabled(),
        ));
        let acl = if config.acl_enable {
            let home = config.rocketmq_home.clone().unwrap_or_default();
            Some(acl::AclValidator::load(acl::AclFiles::new(home))?)
        } else {
            None
        };
        let state = Arc::new(ControllerState {
            acl,
            config: RwLock::new(config),
            peers,
            raft,
            replicas,
            liveness: Mutex::new(BrokerLiveness::default()),
            decide: tokio::sync::Mutex::new(()),
            stopping: Default::default(),
            client,
            metrics,
        });
        let mut dispatcher = handlers::dispatcher(&state)?;
        if state.config.read().metrics_enabled() {
            dispatcher.set_observer(state.metrics.clone());
        }
        let server = RemotingServer::start(server_config, dispatcher).await?;
        let lowest = state.peers.by_id.keys().next().copied();
        let initialized = state
            .raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        if lowest == Some(state.peers.self_id) && !initialized {
            let members: BTreeMap<NodeId, BasicNode> = state
                .peers
                .by_id
                .iter()
                .map(|(id, p)| (*id, BasicNode::new(p.addr.to_string())))
                .collect();
            state
                .raft
                .initialize(members)
                .await
                .map_err(|e| ControllerError::Raft(e.to_string()))?;
            tracing::info!("controller group initialized");
        }
        let (stop_scanner, stop) = oneshot::channel();
        let scanner = tokio::spawn(scan_not_active_brokers(state.clone(), stop));
        tracing::info!(addr = %server.local_addr(), id = state.peers.me().name, "controller started");
        let mut controller = Controller {
            server,
            metrics_server: None,
            state,
            scanner,
            stop_scanner,
        };
        let metrics_addr = controller.state.config.read().metrics_addr();
        if let Some(addr) = metrics_addr {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    controller.serve_metrics(listener);
                }
                // A busy metrics port costs the metrics, not the controller.
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "metrics endpoint not started (metricsPromExporterPort)")
                }
            }
        }
        Ok(controller)
    }

    /// Serves this controller's `/metrics` on `listener` (in place of the configured port,
    /// e.g. port 0 in tests); returns its address, `None` when it could not start.
    pub fn serve_metrics(&mut self, listener: tokio::net::TcpListener) -> Option<SocketAddr> {
        let weak = Arc::downgrade(&self.state);
        let render = Arc::new(move || match weak.upgrade() {
            Some(state) => state.metrics.render(&scrape_values(&state)),
            None => String::new(),
        });
        match MetricsServer::serve(listener, render) {
            Ok(server) => self.metrics_server = Some(server),
            Err(e) => tracing::warn!(error = %e, "metrics endpoint not started"),
        }
        self.metrics_addr()
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Address the remoting server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// This controller's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.state.peers.self_id
    }

    /// The Raft leader this controller knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.state.leader()
    }

    /// A copy of the replicated state as applied on this controller.
    pub fn replicas(&self) -> ReplicasInfo {
        self.state.replicas.read().clone()
    }

    /// Stops the scanner, the remoting server and the Raft node. Nothing is handed over: to
    /// the other controllers this looks like a crash (the store is durable at every step).
    pub async fn shutdown(self) {
        // Closing the server closes brokers' connections: not a sign they died.
        self.state
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.stop_scanner.send(());
        if let Err(e) = self.scanner.await {
            tracing::error!("broker liveness scanner failed: {e}");
        }
        self.server.shutdown().await;
        drop(self.metrics_server);
        if let Err(e) = self.state.raft.shutdown().await {
            tracing::error!("Raft node did not stop cleanly: {e}");
        }
        self.state.client.shutdown().await;
        tracing::info!("controller stopped");
    }
}

/// The controller's current gauge values for a scrape.
fn scrape_values(state: &ControllerState) -> ScrapeValues {
    let role = match state.raft.metrics().borrow().state {
        ServerState::Leader => Role::Leader,
        ServerState::Candidate => Role::Candidate,
        ServerState::Follower => Role::Follower,
        ServerState::Learner | ServerState::Shutdown => Role::Unknown,
    };
    ScrapeValues {
        role,
        disk_usage: dir_size(&state.config.read().store_path),
        active_brokers: state
            .liveness
            .lock()
            .alive_per_group(Instant::now())
            .into_iter()
            .collect(),
    }
}

/// Every `scanNotActiveBrokerInterval`, drops brokers whose heartbeats stopped; on the leader,
/// a group whose master is among them gets a controller-triggered election.
async fn scan_not_active_brokers(state: Arc<ControllerState>, mut stop: oneshot::Receiver<()>) {
    let interval = state
        .config
        .read()
        .scan_not_active_broker_interval
        .max(MIN_SCAN_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let expired = state.liveness.lock().scan_not_active(Instant::now());
        state
            .masters_lost(expired, "master stopped sending heartbeats; electing")
            .await;
    }
}
