//! [`ControllerState`]: what the request handlers and the liveness scanner share (config,
//! peers, the Raft node, the replicated state, broker liveness), and the decisions they both
//! make through it (decide on the current state, commit the resulting events through Raft,
//! notify brokers). It sits below both `handlers` and `server`, which builds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use openraft::BasicNode;
use parking_lot::{Mutex, RwLock};
use remoting::addr::BrokerAddr;
use remoting::client::RemotingClient;
use remoting::controller_headers::{
    BrokerMemberGroup, ElectMasterResponseBody, GetMetaDataResponseHeader,
    NotifyBrokerRoleChangedRequestHeader,
};
use remoting::headers::CommandHeader;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

use crate::config::{ControllerConfig, Peers};
use crate::liveness::BrokerLiveness;
use crate::metrics::{ControllerMetrics, ElectionResult};
use crate::raft::{ControllerRaft, NodeId};
use crate::replicas::{Decision, ElectRequest, Event, MasterInfo, Refusal, ReplicasInfo};
use crate::store::SharedState;

/// Everything the handlers and the liveness scanner share.
pub(crate) struct ControllerState {
    /// Its configuration; UPDATE_CONTROLLER_CONFIG replaces it (only
    /// [`crate::config::UPDATABLE_KEYS`] change).
    pub(crate) config: RwLock<ControllerConfig>,
    pub(crate) peers: Peers,
    pub(crate) raft: ControllerRaft,
    pub(crate) replicas: SharedState,
    pub(crate) liveness: Mutex<BrokerLiveness>,
    /// Held from a decision until its events are committed, so that every decision sees the
    /// effects of the one before (upstream runs them on one scheduler thread).
    pub(crate) decide: tokio::sync::Mutex<()>,
    /// Set when the controller shuts down: connections closing then are its own doing.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Raft RPCs to peers and role-change notifications to brokers.
    pub(crate) client: RemotingClient,
    pub(crate) metrics: Arc<ControllerMetrics>,
    /// The ACL (`aclEnable=true`): administrative requests need an admin account.
    pub(crate) acl: Option<acl::AclValidator>,
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
            group: Some(self.config.read().group.clone()),
            controller_leader_id: leader.map(|p| p.name.clone()),
            controller_leader_address: leader.map(|p| p.addr.to_string()),
            is_leader: self.leader() == Some(self.peers.self_id),
            peers: Some(self.config.read().peers.clone()),
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
        let unclean = self.config.read().enable_elect_unclean_master;
        let started = Instant::now();
        let result = self
            .decide_and_commit(|replicas| {
                let liveness = self.liveness.lock();
                let now = Instant::now();
                replicas.elect_master(broker_name, request, unclean, &|id| {
                    liveness.candidate(broker_name, id, now)
                })
            })
            .await;
        let code = match &result {
            Ok(_) => ResponseCode::SUCCESS,
            Err(refusal) => refusal.code,
        };
        if let Some(outcome) = ElectionResult::of_code(code) {
            let cluster = self
                .replicas
                .read()
                .group(broker_name)
                .map(|g| g.cluster_name.clone())
                .unwrap_or_default();
            self.metrics
                .record_election(&cluster, broker_name, outcome, started.elapsed());
        }
        if let Ok(info) = &result {
            tracing::info!(broker_name, master = ?info.master_broker_id, epoch = info.master_epoch, "new master elected");
            if self.config.read().notify_broker_role_changed {
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

    /// On the leader, a controller-triggered election for each group whose master is among
    /// `gone` (brokers found dead: heartbeats stopped, or their connection closed).
    pub(crate) async fn masters_lost(
        self: &Arc<Self>,
        gone: Vec<(String, i64, crate::liveness::LiveInfo)>,
        why: &str,
    ) {
        if gone.is_empty()
            || self.leader() != Some(self.peers.self_id)
            || self.stopping.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let groups: BTreeSet<String> = {
            let replicas = self.replicas.read();
            gone.iter()
                .filter(|(name, id, _)| {
                    replicas
                        .group(name)
                        .is_some_and(|g| g.master_broker_id == Some(*id))
                })
                .map(|(name, _, _)| name.clone())
                .collect()
        };
        for broker_name in groups {
            tracing::info!(%broker_name, "{why}");
            if let Err(refusal) = self.elect(&broker_name, ElectRequest::ByController).await {
                tracing::warn!(%broker_name, "election after master loss: {refusal}");
            }
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
