//! Controller mode, broker side (upstream's `ReplicasManager`): with
//! `enableControllerMode=true` the controllers (`controllerAddr`), not `brokerRole` /
//! `brokerId`, decide what this broker is. One long-lived task ([`run`]) owns it:
//!
//! 1. **Start**: find the controller leader (CONTROLLER_GET_METADATA_INFO to each controller;
//!    one that says it leads is used at the address it was asked at),
//!    get a replica id (the one in `brokerIdentity`, else CONTROLLER_GET_NEXT_BROKER_ID then
//!    CONTROLLER_APPLY_BROKER_ID, see [`identity`]), CONTROLLER_REGISTER_BROKER, one
//!    heartbeat, then take the role the answer gives, or ask for an election
//!    (CONTROLLER_ELECT_MASTER with its own id) when the group has no live master. Retried
//!    every second until it works; until then the store refuses writes and the broker does
//!    not register with the NameServers.
//! 2. **Running**: BROKER_HEARTBEAT to every controller every `brokerHeartbeatInterval` (its
//!    own task, so a role switch never delays it); NOTIFY_BROKER_ROLE_CHANGED applied as soon
//!    as it arrives; CONTROLLER_GET_REPLICA_INFO every `syncBrokerMetadataPeriod` as the
//!    fallback (a newer master epoch than ours is applied; a newer epoch without a master
//!    makes this broker ask for an election); the leader looked up again every
//!    `syncControllerMetadataPeriod` and whenever a controller answers CONTROLLER_NOT_LEADER.
//! 3. **Role switch, no restart.** Slave -> master: stop replicating (and wait until no
//!    replicated append is in progress), cut the CommitLog to its last whole record and take
//!    the queue offsets from the ConsumeQueues (`MessageStore::become_master`), append the
//!    new epoch and its start offset to the epoch file (`ha::epoch`), make sure the topic
//!    table has every queue the store holds (it may lag the replicated data), then accept writes as
//!    `SYNC_MASTER` and register with the NameServers as broker 0. Master -> slave: refuse
//!    writes (`MessageStore::become_slave`), close the replication connections it served,
//!    ask the new master for its HA address (EXCHANGE_BROKER_HA_INFO) and replicate from it,
//!    register under its replica id. NameServer registration follows `HaState::role_epoch`.
//! 4. **SyncStateSet** (master): a slave that reports the master's CommitLog end is added to
//!    the set of replicas writes wait for at once (`AckTable::try_expand`, atomically with
//!    that check, so every write acknowledged before is on it), then reported with
//!    CONTROLLER_ALTER_SYNC_STATE_SET; a member that has not caught up for
//!    `haMaxTimeSlaveNotCatchup` (or is not connected) is reported removed every
//!    `checkSyncStateSetPeriod`, and writes stop waiting for it once the controller agreed.
//!    A change refused or unanswered leaves writes waiting for both sets until the controller
//!    says which it holds: a master never acts on a set the controller did not confirm, so
//!    one cut off from the controllers cannot acknowledge alone (the fencing argument is in
//!    `docs/architecture.md`, "Controller mode").
//!    With `allAckInSyncStateSet=true` a send is answered once every member has it
//!    (`BrokerContext::put_acked`); `minInSyncReplicas` refuses sends while the set is smaller.
//!
//! 5. **Returning old master**: it registers, is told to follow the new master, and the
//!    replication handshake (`ha` module docs) cuts its CommitLog to where its epochs agree
//!    with the new master's before it replicates.

pub(crate) mod identity;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remoting::controller_headers::{
    AlterSyncStateSetRequestHeader, AlterSyncStateSetResponseHeader, ApplyBrokerIdRequestHeader,
    ElectMasterRequestHeader, ElectMasterResponseBody, ElectMasterResponseHeader,
    ExchangeHaInfoRequestHeader, ExchangeHaInfoResponseHeader, GetMetaDataResponseHeader,
    GetNextBrokerIdRequestHeader, GetNextBrokerIdResponseHeader, GetReplicaInfoRequestHeader,
    GetReplicaInfoResponseHeader, RegisterBrokerToControllerRequestHeader,
    RegisterBrokerToControllerResponseHeader, SyncStateSet,
};
use remoting::headers::{BrokerHeartbeatRequestHeader, CommandHeader};
use remoting::{BrokerAddr, RemotingCommand, RemotingError, RequestCode, ResponseCode};
use store::config::BrokerRole;
use thiserror::Error;

use crate::context::BrokerContext;
use crate::error::BrokerError;
use crate::ha::epoch::EpochFile;
use crate::ha::RoleNotice;
use crate::pop::PopService;
use identity::{Identity, IdentityFiles};

/// Timeout of each request to a controller or to the master.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between two start attempts.
const RETRY: Duration = Duration::from_secs(1);
/// Longest wait for the dispatcher when a slave becomes master.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest period of any of the periodic tasks, whatever the config says.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Why a step of the controller protocol failed.
#[derive(Debug, Error)]
pub(crate) enum ReplicasError {
    #[error("no controller leader known (controllerAddr: {0})")]
    NoLeader(String),
    #[error("{addr}: {source}")]
    Remoting { addr: String, source: RemotingError },
    #[error("{addr} refused: {remark} (code {code})")]
    Refused {
        addr: String,
        code: i32,
        remark: String,
    },
    #[error("{0}")]
    Local(String),
}

/// What the task knows of its group.
struct Manager {
    ctx: Arc<BrokerContext>,
    controllers: Vec<BrokerAddr>,
    leader: Option<BrokerAddr>,
    files: IdentityFiles,
    /// This broker's replica id (0 until assigned).
    id: i64,
    master_epoch: i32,
    master_id: Option<i64>,
    /// The SyncStateSet the controller agreed to, and its epoch.
    sync_set: BTreeSet<i64>,
    sync_set_epoch: i32,
    /// Slave: the master whose HA address is still to be asked for.
    master_to_follow: Option<BrokerAddr>,
    /// POP state: rebuilt from the replicated revive log on promotion, dropped on demotion.
    pop: Arc<PopService>,
}

/// Reads the epoch file and builds the task's state; an unreadable file stops the start.
pub(crate) fn prepare(
    ctx: &Arc<BrokerContext>,
    pop: Arc<PopService>,
) -> Result<impl std::future::Future<Output = ()>, BrokerError> {
    let config = ctx.config();
    let epochs =
        EpochFile::load(&config.epoch_file()).map_err(|e| BrokerError::Config(e.to_string()))?;
    *ctx.ha.epochs.lock() = Some(epochs);
    let manager = Manager {
        ctx: ctx.clone(),
        controllers: config.controllers(),
        leader: None,
        files: IdentityFiles::new(&config.store_path_root_dir),
        id: 0,
        master_epoch: 0,
        master_id: None,
        sync_set: BTreeSet::new(),
        sync_set_epoch: 0,
        master_to_follow: None,
        pop,
    };
    Ok(manager.run())
}

fn period(ms: u64) -> Duration {
    Duration::from_millis(ms).max(MIN_PERIOD)
}

fn ticker(ms: u64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period(ms));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

impl Manager {
    async fn run(mut self) {
        let mut stop = self.ctx.stop_signal();
        loop {
            match self.start_up().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "controller mode: start not complete; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.changed() => return,
            }
        }
        self.ctx.tasks.spawn(heartbeats(
            self.ctx.clone(),
            self.controllers.clone(),
            self.id,
        ));
        let c = self.ctx.config();
        let mut sync_broker = ticker(c.sync_broker_metadata_period);
        let mut sync_controller = ticker(c.sync_controller_metadata_period);
        let mut check_set = ticker(c.check_sync_state_set_period);
        loop {
            // In this order when several are due: a request to an unreachable controller
            // takes its whole timeout, after which every tick is due, and a random pick could
            // put off the SyncStateSet check (what fences a cut-off master) for many rounds.
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = self.ctx.ha.replicas_wake.notified() => {
                    let notice = self.ctx.ha.role_notice.lock().take();
                    if let Some(n) = notice {
                        if let Err(e) = self.apply(n).await {
                            tracing::warn!(error = %e, "role change not applied");
                        }
                    }
                    self.check_sync_state_set(false).await;
                }
                _ = check_set.tick() => self.check_sync_state_set(true).await,
                _ = sync_broker.tick() => {
                    if let Err(e) = self.sync_replica_info().await {
                        tracing::warn!(error = %e, "cannot read the group's replica info");
                    }
                }
                _ = sync_controller.tick() => {
                    if let Err(e) = self.find_leader().await {
                        tracing::warn!(error = %e, "cannot find the controller leader");
                    }
                }
            }
            if self.master_to_follow.is_some() {
                self.follow_master().await;
            }
        }
    }

    fn addrs(&self) -> String {
        self.ctx.config().controller_addr.clone()
    }

    /// Asks each controller who leads. A controller that answers it leads is used at the
    /// address it was asked at (a `controllerAddr` entry, which may be a proxy, NAT or
    /// another name than its own peer address); otherwise the leader address it names.
    async fn find_leader(&mut self) -> Result<BrokerAddr, ReplicasError> {
        for addr in &self.controllers {
            let req = RemotingCommand::request(RequestCode::CONTROLLER_GET_METADATA_INFO);
            let Ok(resp) = self.ctx.client.invoke(addr, req, TIMEOUT).await else {
                continue;
            };
            let leader = GetMetaDataResponseHeader::from_command(&resp)
                .ok()
                .and_then(|h| {
                    if h.is_leader {
                        Some(addr.clone())
                    } else {
                        h.controller_leader_address
                            .and_then(|a| BrokerAddr::parse(&a))
                    }
                });
            if let Some(leader) = leader {
                if self.leader.as_ref() != Some(&leader) {
                    tracing::info!(%leader, "controller leader");
                }
                self.leader = Some(leader.clone());
                return Ok(leader);
            }
        }
        self.leader = None;
        Err(ReplicasError::NoLeader(self.addrs()))
    }

    /// Sends `req` to the controller leader; follows one CONTROLLER_NOT_LEADER answer. A
    /// refusal (any other code than SUCCESS) is an error carrying the code.
    async fn call(&mut self, req: RemotingCommand) -> Result<RemotingCommand, ReplicasError> {
        let mut leader = match self.leader.clone() {
            Some(l) => l,
            None => self.find_leader().await?,
        };
        for attempt in 0..2 {
            let resp = match self.ctx.client.invoke(&leader, req.clone(), TIMEOUT).await {
                Ok(r) => r,
                Err(source) => {
                    self.leader = None;
                    return Err(ReplicasError::Remoting {
                        addr: leader.to_string(),
                        source,
                    });
                }
            };
            if resp.code == ResponseCode::SUCCESS {
                return Ok(resp);
            }
            if resp.code == ResponseCode::CONTROLLER_NOT_LEADER && attempt == 0 {
                let next = GetMetaDataResponseHeader::from_command(&resp)
                    .ok()
                    .and_then(|h| h.controller_leader_address)
                    .and_then(|a| BrokerAddr::parse(&a));
                leader = match next {
                    Some(l) => l,
                    None => self.find_leader().await?,
                };
                self.leader = Some(leader.clone());
                continue;
            }
            return Err(ReplicasError::Refused {
                addr: leader.to_string(),
                code: resp.code,
                remark: resp.remark_str().to_string(),
            });
        }
        Err(ReplicasError::NoLeader(self.addrs()))
    }

    async fn start_up(&mut self) -> Result<(), ReplicasError> {
        self.find_leader().await?;
        if self.id == 0 {
            self.id = self.obtain_id().await?;
            self.ctx.ha.local_id.store(self.id, Ordering::Release);
            tracing::info!(id = self.id, "replica id from the controllers");
        }
        let notice = self.register().await?;
        send_heartbeats(&self.ctx, &self.controllers, self.id).await;
        let notice = match notice.master_broker_id {
            Some(_) => notice,
            None => self.elect().await?,
        };
        self.apply(notice).await
    }

    /// The granted id, or a new one applied for (upstream's register states).
    async fn obtain_id(&mut self) -> Result<i64, ReplicasError> {
        let c = self.ctx.config();
        let matches = |i: &Identity| {
            i.cluster_name == c.broker_cluster_name && i.broker_name == c.broker_name
        };
        if let Some(id) = self.files.granted()? {
            if !matches(&id) {
                return Err(ReplicasError::Local(format!(
                    "brokerIdentity names {}/{} but this broker is {}/{}: move the store or fix \
                     brokerClusterName / brokerName",
                    id.cluster_name, id.broker_name, c.broker_cluster_name, c.broker_name
                )));
            }
            return Ok(id.broker_id);
        }
        let pending = match self.files.pending()? {
            Some(p) if matches(&p) => p,
            _ => {
                let mut req = RemotingCommand::request(RequestCode::CONTROLLER_GET_NEXT_BROKER_ID);
                GetNextBrokerIdRequestHeader {
                    cluster_name: c.broker_cluster_name.clone(),
                    broker_name: c.broker_name.clone(),
                }
                .write_to(&mut req);
                let resp = self.call(req).await?;
                let next = GetNextBrokerIdResponseHeader::from_command(&resp)
                    .ok()
                    .and_then(|h| h.next_broker_id)
                    .ok_or_else(|| {
                        ReplicasError::Local("GET_NEXT_BROKER_ID answered no id".into())
                    })?;
                let p = Identity {
                    cluster_name: c.broker_cluster_name.clone(),
                    broker_name: c.broker_name.clone(),
                    broker_id: next,
                    check_code: Some(format!(
                        "{};{}",
                        self.ctx.broker_addr(),
                        remoting::message::now_millis()
                    )),
                };
                self.files.write_pending(&p)?;
                p
            }
        };
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_APPLY_BROKER_ID);
        ApplyBrokerIdRequestHeader {
            cluster_name: pending.cluster_name.clone(),
            broker_name: pending.broker_name.clone(),
            applied_broker_id: pending.broker_id,
            register_check_code: pending.check_code.clone().unwrap_or_default(),
        }
        .write_to(&mut req);
        match self.call(req).await {
            Ok(_) => {
                self.files.write_granted(&pending)?;
                Ok(pending.broker_id)
            }
            Err(e @ ReplicasError::Refused { .. }) => {
                // Taken by another broker meanwhile: start over with the next id.
                self.files.clear_pending()?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn register(&mut self) -> Result<RoleNotice, ReplicasError> {
        let c = self.ctx.config();
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_REGISTER_BROKER);
        RegisterBrokerToControllerRequestHeader {
            cluster_name: c.broker_cluster_name.clone(),
            broker_name: c.broker_name.clone(),
            broker_id: self.id,
            broker_address: self.ctx.broker_addr(),
            invoke_time: Some(remoting::message::now_millis()),
        }
        .write_to(&mut req);
        let resp = self.call(req).await?;
        let h = RegisterBrokerToControllerResponseHeader::from_command(&resp)
            .map_err(|e| ReplicasError::Local(format!("REGISTER_BROKER answer: {e}")))?;
        let set = sync_state_set_body(&resp.body);
        Ok(RoleNotice {
            master_broker_id: h.master_broker_id,
            master_address: h.master_address,
            master_epoch: h.master_epoch.unwrap_or_default(),
            sync_state_set_epoch: h.sync_state_set_epoch.unwrap_or(set.sync_state_set_epoch),
            sync_state_set: set.sync_state_set,
        })
    }

    /// CONTROLLER_ELECT_MASTER with this broker's id; the answer names the master, new or
    /// still alive.
    async fn elect(&mut self) -> Result<RoleNotice, ReplicasError> {
        let c = self.ctx.config();
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_ELECT_MASTER);
        ElectMasterRequestHeader {
            cluster_name: Some(c.broker_cluster_name.clone()),
            broker_name: c.broker_name.clone(),
            broker_id: Some(self.id),
            designate_elect: false,
            invoke_time: Some(remoting::message::now_millis()),
        }
        .write_to(&mut req);
        let resp = match self.call(req).await {
            Ok(r) => r,
            // The old master is alive: the answer still names it.
            Err(ReplicasError::Refused { code, .. })
                if code == ResponseCode::CONTROLLER_MASTER_STILL_EXIST =>
            {
                return self.replica_info().await;
            }
            Err(e) => return Err(e),
        };
        let h = ElectMasterResponseHeader::from_command(&resp)
            .map_err(|e| ReplicasError::Local(format!("ELECT_MASTER answer: {e}")))?;
        let body: ElectMasterResponseBody = serde_json::from_slice(&resp.body).unwrap_or_default();
        Ok(RoleNotice {
            master_broker_id: h.master_broker_id,
            master_address: h.master_address,
            master_epoch: h.master_epoch.unwrap_or_default(),
            sync_state_set_epoch: h.sync_state_set_epoch.unwrap_or_default(),
            sync_state_set: body.sync_state_set,
        })
    }

    async fn replica_info(&mut self) -> Result<RoleNotice, ReplicasError> {
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_GET_REPLICA_INFO);
        GetReplicaInfoRequestHeader {
            broker_name: self.ctx.config().broker_name.clone(),
        }
        .write_to(&mut req);
        let resp = self.call(req).await?;
        let h = GetReplicaInfoResponseHeader::from_command(&resp)
            .map_err(|e| ReplicasError::Local(format!("GET_REPLICA_INFO answer: {e}")))?;
        let set = sync_state_set_body(&resp.body);
        Ok(RoleNotice {
            master_broker_id: h.master_broker_id,
            master_address: h.master_address,
            master_epoch: h.master_epoch.unwrap_or_default(),
            sync_state_set_epoch: set.sync_state_set_epoch,
            sync_state_set: set.sync_state_set,
        })
    }

    /// The periodic fallback (upstream `schedulingSyncBrokerMetadata`).
    async fn sync_replica_info(&mut self) -> Result<(), ReplicasError> {
        let n = match self.replica_info().await {
            Ok(n) => n,
            Err(ReplicasError::Refused { code, .. })
                if code == ResponseCode::CONTROLLER_BROKER_METADATA_NOT_EXIST =>
            {
                // The controllers lost (or cleaned) this group: register again.
                let n = self.register().await?;
                return self.apply(n).await;
            }
            Err(e) => return Err(e),
        };
        if n.master_epoch > self.master_epoch {
            if n.master_broker_id.is_some() && n.master_address.is_some() {
                self.apply(n).await
            } else {
                // The master is gone and none was elected: ask for this broker.
                let n = self.elect().await?;
                self.apply(n).await
            }
        } else {
            if n.master_epoch == self.master_epoch && self.is_master() {
                self.agreed_sync_set(n.sync_state_set, n.sync_state_set_epoch);
            }
            Ok(())
        }
    }

    fn is_master(&self) -> bool {
        !self.ctx.store.is_slave()
    }

    async fn apply(&mut self, n: RoleNotice) -> Result<(), ReplicasError> {
        match (n.master_broker_id, n.master_address.clone()) {
            (Some(m), _) if m == self.id => self.change_to_master(n).await,
            (Some(m), Some(addr)) => self.change_to_slave(&addr, n.master_epoch, m).await,
            _ => Ok(()),
        }
    }

    /// Swaps in a config with `broker_id` and `role` (what NameServer registration and the
    /// request paths read).
    fn set_role(&self, broker_id: i64, role: BrokerRole) {
        let _one_at_a_time = self.ctx.config_update.lock();
        let mut next = crate::config::BrokerConfig::clone(&self.ctx.config.load());
        next.broker_id = broker_id;
        next.broker_role = role;
        self.ctx.config.store(Arc::new(next));
    }

    async fn change_to_master(&mut self, n: RoleNotice) -> Result<(), ReplicasError> {
        if n.master_epoch < self.master_epoch
            || (n.master_epoch == self.master_epoch && self.is_master())
        {
            if n.master_epoch == self.master_epoch {
                self.agreed_sync_set(n.sync_state_set, n.sync_state_set_epoch);
            }
            return Ok(());
        }
        let started = Instant::now();
        let end = if self.is_master() {
            // Re-elected (a new epoch, same master): the new epoch starts at our end.
            self.ctx.store.commit_log_max_offset()
        } else {
            self.ctx.ha.set_master_ha_addr(None);
            *self.ctx.ha.master_addr.write() = None;
            self.master_to_follow = None;
            // No replicated append runs once the replication task let go of the link.
            let _link = self.ctx.ha.replica_link.lock().await;
            let store = self.ctx.store.clone();
            let end = tokio::task::spawn_blocking(move || store.become_master(SWITCH_TIMEOUT))
                .await
                .map_err(|e| ReplicasError::Local(format!("role switch task: {e}")))?
                .map_err(|e| ReplicasError::Local(format!("cannot become master: {e}")))?;
            // The pops the old master handed out and the acks it took are in the replicated
            // revive log: rebuild them before this broker takes pops, so unacked messages
            // come back after their invisible time and acks of them are accepted here.
            let (pop, ctx) = (self.pop.clone(), self.ctx.clone());
            tokio::task::spawn_blocking(move || pop.recover(&ctx))
                .await
                .map_err(|e| ReplicasError::Local(format!("POP recovery task: {e}")))?;
            end
        };
        if let Some(f) = self.ctx.ha.epochs.lock().as_mut() {
            f.append(n.master_epoch, end)
                .map_err(|e| ReplicasError::Local(e.to_string()))?;
        }
        self.master_epoch = n.master_epoch;
        self.master_id = Some(self.id);
        self.sync_set = n.sync_state_set;
        self.sync_set.insert(self.id);
        self.sync_set_epoch = n.sync_state_set_epoch;
        self.ctx
            .ha
            .acks
            .set_required(Some((self.id, self.sync_set.clone())));
        self.ctx.ha.note_written(end);
        // The topic table may lag the replicated data (synchronised every
        // `slaveSynchronizeInterval`, or not persisted before a crash): every queue with
        // messages must take sends.
        for (topic, queue) in self.ctx.store.queue_ids() {
            if let Err(e) = self.ctx.topics.learn_replicated(&topic, queue) {
                tracing::warn!(%topic, queue, error = %e, "cannot record a replicated queue");
            }
        }
        self.set_role(0, BrokerRole::SyncMaster);
        self.ctx.ha.role_changed();
        tracing::info!(
            id = self.id,
            epoch = self.master_epoch,
            start_offset = end,
            sync_state_set = ?self.sync_set,
            elapsed = ?started.elapsed(),
            "this broker is now the master of its group"
        );
        Ok(())
    }

    async fn change_to_slave(
        &mut self,
        master_addr: &str,
        epoch: i32,
        master_id: i64,
    ) -> Result<(), ReplicasError> {
        if epoch < self.master_epoch
            || (epoch == self.master_epoch && self.master_id == Some(master_id))
        {
            return Ok(());
        }
        let addr = BrokerAddr::parse(master_addr).ok_or_else(|| {
            ReplicasError::Local(format!(
                "the controller named master address `{master_addr}`"
            ))
        })?;
        if self.is_master() {
            self.ctx.store.become_slave();
            self.ctx.ha.acks.set_required(None);
            // The new master revives what this one handed out (see change_to_master).
            self.pop.forget_all();
        }
        self.master_epoch = epoch;
        self.master_id = Some(master_id);
        self.set_role(self.id, BrokerRole::Slave);
        *self.ctx.ha.master_addr.write() = Some(addr.clone());
        self.ctx.ha.set_master_ha_addr(None);
        self.master_to_follow = Some(addr);
        self.ctx.ha.role_changed();
        tracing::info!(id = self.id, master = master_id, epoch, %master_addr, "this broker is now a slave");
        self.follow_master().await;
        Ok(())
    }

    /// Asks the master for its HA address (EXCHANGE_BROKER_HA_INFO) and points replication
    /// at it; retried on the next tick when the master does not answer.
    async fn follow_master(&mut self) {
        let Some(master) = self.master_to_follow.clone() else {
            return;
        };
        let mut req = RemotingCommand::request(RequestCode::EXCHANGE_BROKER_HA_INFO);
        ExchangeHaInfoRequestHeader {
            master_ha_address: None,
            master_flush_offset: None,
            master_address: None,
        }
        .write_to(&mut req);
        let ha = match self.ctx.client.invoke(&master, req, TIMEOUT).await {
            Ok(resp) if resp.code == ResponseCode::SUCCESS => {
                ExchangeHaInfoResponseHeader::from_command(&resp)
                    .ok()
                    .and_then(|h| h.master_ha_address)
                    .filter(|a| !a.is_empty())
            }
            Ok(resp) => {
                tracing::warn!(%master, code = resp.code, remark = resp.remark_str(), "master refused EXCHANGE_BROKER_HA_INFO");
                None
            }
            Err(e) => {
                tracing::warn!(%master, error = %e, "master did not answer EXCHANGE_BROKER_HA_INFO");
                None
            }
        };
        if let Some(ha) = ha {
            tracing::info!(%master, %ha, "replicating from the new master");
            self.ctx.ha.set_master_ha_addr(Some(ha));
            self.master_to_follow = None;
        }
    }

    /// The controller agreed to `set` (epoch `epoch`): writes now wait for exactly it.
    fn agreed_sync_set(&mut self, mut set: BTreeSet<i64>, epoch: i32) {
        if epoch <= self.sync_set_epoch || !self.is_master() {
            return;
        }
        set.insert(self.id);
        if set != self.sync_set {
            tracing::info!(from = ?self.sync_set, to = ?set, epoch, "SyncStateSet changed");
        }
        self.sync_set = set;
        self.sync_set_epoch = epoch;
        self.ctx
            .ha
            .acks
            .set_required(Some((self.id, self.sync_set.clone())));
    }

    /// Master: adds slaves that caught up, and (`shrink`) drops members that fell behind
    /// or went away, reporting the new set to the controller.
    async fn check_sync_state_set(&mut self, shrink: bool) {
        if !self.is_master() || self.id == 0 {
            return;
        }
        let c = self.ctx.config();
        let max_lag = Duration::from_millis(c.ha_max_time_slave_not_catchup);
        let epoch_start = self
            .ctx
            .ha
            .epochs
            .lock()
            .as_ref()
            .and_then(|f| f.last())
            .map_or(0, |e| e.start_offset);
        let replicas = self.ctx.ha.acks.replicas();
        let mut next = self.sync_set.clone();
        let now = Instant::now();
        if shrink {
            next.retain(|id| {
                *id == self.id
                    || replicas
                        .get(id)
                        .and_then(|(_, caught_up)| *caught_up)
                        .is_some_and(|t| now.saturating_duration_since(t) <= max_lag)
            });
        }
        let store = &self.ctx.store;
        for (id, (offset, _)) in &replicas {
            if !next.contains(id)
                && *offset >= epoch_start
                && self
                    .ctx
                    .ha
                    .acks
                    .try_expand(*id, &|| store.commit_log_max_offset())
            {
                next.insert(*id);
            }
        }
        if next == self.sync_set {
            return;
        }
        let mut req = RemotingCommand::request(RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET);
        AlterSyncStateSetRequestHeader {
            broker_name: c.broker_name.clone(),
            master_broker_id: self.id,
            master_epoch: self.master_epoch,
            invoke_time: Some(remoting::message::now_millis()),
        }
        .write_to(&mut req);
        let body = SyncStateSet {
            sync_state_set: next.clone(),
            sync_state_set_epoch: self.sync_set_epoch,
        };
        let req = match serde_json::to_vec(&body) {
            Ok(b) => req.with_body(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a SyncStateSet");
                return;
            }
        };
        match self.call(req).await {
            Ok(resp) => match AlterSyncStateSetResponseHeader::from_command(&resp) {
                Ok(h) => self.agreed_sync_set(next, h.new_sync_state_set_epoch),
                Err(e) => tracing::warn!(error = %e, "bad ALTER_SYNC_STATE_SET answer"),
            },
            Err(e) => {
                tracing::warn!(error = %e, proposed = ?next, "SyncStateSet change refused");
                // The controller may hold either set (a lost answer looks like a refusal):
                // writes wait for every member of both until it tells which, so a replica
                // it could elect never misses an acknowledged write. A shrink is thus only
                // in force once agreed; a member added stays required until then.
                let both: BTreeSet<i64> = self.sync_set.union(&next).copied().collect();
                self.ctx.ha.acks.set_required(Some((self.id, both)));
            }
        }
    }
}

fn sync_state_set_body(body: &[u8]) -> SyncStateSet {
    if body.is_empty() {
        return SyncStateSet::default();
    }
    serde_json::from_slice(body).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable SyncStateSet body from the controller");
        SyncStateSet::default()
    })
}

/// BROKER_HEARTBEAT (oneway) to every controller, every `brokerHeartbeatInterval`, until the
/// broker stops.
async fn heartbeats(ctx: Arc<BrokerContext>, controllers: Vec<BrokerAddr>, id: i64) {
    let mut stop = ctx.stop_signal();
    let mut tick = ticker(ctx.config().broker_heartbeat_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => send_heartbeats(&ctx, &controllers, id).await,
            _ = stop.changed() => return,
        }
    }
}

async fn send_heartbeats(ctx: &BrokerContext, controllers: &[BrokerAddr], id: i64) {
    let c = ctx.config();
    let max = ctx.store.commit_log_max_offset();
    let header = BrokerHeartbeatRequestHeader {
        cluster_name: c.broker_cluster_name.clone(),
        broker_addr: ctx.broker_addr(),
        broker_name: c.broker_name.clone(),
        broker_id: Some(id),
        epoch: Some(ctx.ha.last_epoch()),
        max_offset: Some(max),
        confirm_offset: Some(max),
        heartbeat_timeout_millis: Some(c.controller_heart_beat_timeout_mills as i64),
        election_priority: None,
    };
    for addr in controllers {
        let mut req = RemotingCommand::request(RequestCode::BROKER_HEARTBEAT);
        header.write_to(&mut req);
        match tokio::time::timeout(TIMEOUT, ctx.client.invoke_oneway(addr, req)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(controller = %addr, error = %e, "heartbeat not sent"),
            Err(_) => tracing::debug!(controller = %addr, "heartbeat timed out"),
        }
    }
}
