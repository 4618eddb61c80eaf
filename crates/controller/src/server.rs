//! [`Controller`]: a running controller — the Raft node, the remoting server on its own entry
//! of `controllerDLegerPeers`, the task that finds silent brokers and has the leader elect a
//! new master, and the state they share ([`ControllerState`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, SnapshotPolicy};
use parking_lot::Mutex;
use remoting::addr::BrokerAddr;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::controller_headers::{
    BrokerMemberGroup, ElectMasterResponseBody, GetMetaDataResponseHeader,
    NotifyBrokerRoleChangedRequestHeader,
};
use remoting::headers::CommandHeader;
use remoting::server::{RemotingServer, ServerConfig};
use remoting::{RemotingCommand, RequestCode, ResponseCode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ConfigError;
use crate::config::{ControllerConfig, Peers};
use crate::error::ControllerError;
use crate::handlers;
use crate::liveness::BrokerLiveness;
use crate::raft::{ControllerRaft, Network, NodeId};
use crate::replicas::{Decision, ElectRequest, Event, MasterInfo, Refusal, ReplicasInfo};
use crate::store::{LogStore, SharedState, StateMachineStore};

/// Shortest pause between two liveness scans, whatever `scanNotActiveBrokerInterval` says.
const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// Everything the handlers and the liveness scanner share.
pub(crate) struct ControllerState {
    pub(crate) config: ControllerConfig,
    pub(crate) peers: Peers,
    pub(crate) raft: ControllerRaft,
    pub(crate) replicas: SharedState,
    pub(crate) liveness: Mutex<BrokerLiveness>,
    /// Held from a decision until its events are committed, so that every decision sees the
    /// effects of the one before (upstream runs them on one scheduler thread).
    pub(crate) decide: tokio::sync::Mutex<()>,
    /// Raft RPCs to peers and role-change notifications to brokers.
    pub(crate) client: RemotingClient,
}

impl ControllerState {
    /// The Raft leader this node knows of.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// GET_METADATA_INFO's answer: group, leader id and address, whether this node leads, peers.
    pub(crate) fn metadata(&self) -> GetMetaDataResponseHeader {
        let leader = self.leader().and_then(|id| self.peers.by_id.get(&id));
        GetMetaDataResponseHeader {
            group: Some(self.config.group.clone()),
            controller_leader_id: leader.map(|p| p.name.clone()),
            controller_leader_address: leader.map(|p| p.addr.to_string()),
            is_leader: self.leader() == Some(self.peers.self_id),
            peers: Some(self.config.peers.clone()),
        }
    }

    /// `CONTROLLER_NOT_LEADER` carrying the metadata header (the leader's address, if known).
    pub(crate) fn not_leader(&self, request: &RemotingCommand) -> RemotingCommand {
        let meta = self.metadata();
        let remark = match &meta.controller_leader_address {
            Some(addr) => format!("The controller is not in leader state; leader: {addr}"),
            None => "The controller is not in leader state; no leader known".to_string(),
        };
        let mut response = RemotingCommand::response_to(
            request,
            ResponseCode::CONTROLLER_NOT_LEADER,
            Some(remark),
        );
        meta.write_to(&mut response);
        response
    }

    /// Waits until this node is the leader with its state machine up to date (a linearizable
    /// read point); `false` when it is not the leader.
    pub(crate) async fn lead(&self) -> bool {
        self.raft.ensure_linearizable().await.is_ok()
    }

    /// Whether broker `id` of `broker_name` is alive now.
    pub(crate) fn alive(&self, broker_name: &str, id: i64) -> bool {
        self.liveness
            .lock()
            .is_alive(broker_name, id, Instant::now())
    }

    /// Commits `events` through Raft, in order. An error means this node lost leadership or
    /// Raft failed; events before the failed one may be committed.
    pub(crate) async fn commit(&self, events: Vec<Event>) -> Result<(), Refusal> {
        for event in events {
            self.raft.client_write(event).await.map_err(|e| Refusal {
                code: if e.forward_to_leader::<BasicNode>().is_some() {
                    ResponseCode::CONTROLLER_NOT_LEADER
                } else {
                    ResponseCode::CONTROLLER_JRAFT_INTERNAL_ERROR
                },
                remark: format!("commit through Raft failed: {e}"),
            })?;
        }
        Ok(())
    }

    /// Decides with `decide` on the current state and commits the decision's events; a failed
    /// commit replaces the reply with its refusal.
    pub(crate) async fn decide_and_commit<T>(
        &self,
        decide: impl FnOnce(&ReplicasInfo) -> Decision<T>,
    ) -> Result<T, Refusal> {
        let _turn = self.decide.lock().await;
        let decision = decide(&self.replicas.read());
        self.commit(decision.events).await?;
        decision.reply
    }

    /// Runs an election for `broker_name` and, when a new master came out and
    /// `notifyBrokerRoleChanged` is on, tells the group's live brokers.
    pub(crate) async fn elect(
        self: &Arc<Self>,
        broker_name: &str,
        request: ElectRequest,
    ) -> Result<MasterInfo, Refusal> {
        let unclean = self.config.enable_elect_unclean_master;
        let result = self
            .decide_and_commit(|replicas| {
                let liveness = self.liveness.lock();
                let now = Instant::now();
                replicas.elect_master(broker_name, request, unclean, &|id| {
                    liveness.candidate(broker_name, id, now)
                })
            })
            .await;
        if let Ok(info) = &result {
            tracing::info!(broker_name, master = ?info.master_broker_id, epoch = info.master_epoch, "new master elected");
            if self.config.notify_broker_role_changed {
                self.notify_role_changed(broker_name, info);
            }
        }
        result
    }

    /// The ELECT_MASTER response body for `broker_name` with `info`'s SyncStateSet.
    pub(crate) fn elect_body(
        &self,
        broker_name: &str,
        info: &MasterInfo,
    ) -> ElectMasterResponseBody {
        let replicas = self.replicas.read();
        ElectMasterResponseBody {
            broker_member_group: replicas.group(broker_name).map(|g| BrokerMemberGroup {
                cluster: g.cluster_name.clone(),
                broker_name: g.broker_name.clone(),
                broker_addrs: g
                    .replicas
                    .iter()
                    .map(|(id, r)| (*id, r.address.clone()))
                    .collect::<BTreeMap<_, _>>(),
            }),
            sync_state_set: info.sync_state_set.clone(),
        }
    }

    /// Sends NOTIFY_BROKER_ROLE_CHANGED (oneway, in the background) to every live broker of
    /// the group.
    fn notify_role_changed(self: &Arc<Self>, broker_name: &str, info: &MasterInfo) {
        let header = NotifyBrokerRoleChangedRequestHeader {
            master_address: info.master_address.clone(),
            master_epoch: Some(info.master_epoch),
            sync_state_set_epoch: Some(info.sync_state_set_epoch),
            master_broker_id: info.master_broker_id,
        };
        let body = serde_json::to_vec(&self.elect_body(broker_name, info)).unwrap_or_default();
        let targets: Vec<String> = {
            let replicas = self.replicas.read();
            let liveness = self.liveness.lock();
            let now = Instant::now();
            replicas
                .group(broker_name)
                .map(|g| {
                    g.replicas
                        .iter()
                        .filter(|(id, _)| liveness.is_alive(broker_name, **id, now))
                        .map(|(_, r)| r.address.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for target in targets {
            let Some(addr) = BrokerAddr::parse(&target) else {
                tracing::warn!(%target, "cannot notify a broker with an unparsable address");
                continue;
            };
            let mut request = RemotingCommand::request(RequestCode::NOTIFY_BROKER_ROLE_CHANGED)
                .with_body(body.clone());
            header.write_to(&mut request);
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.invoke_oneway(&addr, request).await {
                    tracing::warn!(%addr, "role-change notification failed: {e}");
                }
            });
        }
    }
}

/// A running controller.
pub struct Controller {
    server: RemotingServer,
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
        let client = RemotingClient::new(ClientConfig::default());
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
        };
        let state = Arc::new(ControllerState {
            config,
            peers,
            raft,
            replicas,
            liveness: Mutex::new(BrokerLiveness::default()),
            decide: tokio::sync::Mutex::new(()),
            client,
        });
        let server = RemotingServer::start(server_config, handlers::dispatcher(&state)?).await?;
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
        Ok(Controller {
            server,
            state,
            scanner,
            stop_scanner,
        })
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
        let _ = self.stop_scanner.send(());
        if let Err(e) = self.scanner.await {
            tracing::error!("broker liveness scanner failed: {e}");
        }
        self.server.shutdown().await;
        if let Err(e) = self.state.raft.shutdown().await {
            tracing::error!("Raft node did not stop cleanly: {e}");
        }
        self.state.client.shutdown().await;
        tracing::info!("controller stopped");
    }
}

/// Every `scanNotActiveBrokerInterval`, drops brokers whose heartbeats stopped; on the leader,
/// a group whose master is among them gets a controller-triggered election.
async fn scan_not_active_brokers(state: Arc<ControllerState>, mut stop: oneshot::Receiver<()>) {
    let interval = state
        .config
        .scan_not_active_broker_interval
        .max(MIN_SCAN_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let expired = state.liveness.lock().scan_not_active(Instant::now());
        if expired.is_empty() || state.leader() != Some(state.peers.self_id) {
            continue;
        }
        let groups: BTreeSet<String> = {
            let replicas = state.replicas.read();
            expired
                .iter()
                .filter(|(name, id, _)| {
                    replicas
                        .group(name)
                        .is_some_and(|g| g.master_broker_id == Some(*id))
                })
                .map(|(name, _, _)| name.clone())
                .collect()
        };
        for broker_name in groups {
            tracing::info!(%broker_name, "master stopped sending heartbeats; electing");
            if let Err(refusal) = state.elect(&broker_name, ElectRequest::ByController).await {
                tracing::warn!(%broker_name, "election after master loss: {refusal}");
            }
        }
    }
}
