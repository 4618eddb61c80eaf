//! [`ReplicasInfo`]: the controller's replicated state — per broker group (keyed by brokerName,
//! as upstream's `ReplicasInfoManager`) its replica ids and addresses, SyncStateSet, master id
//! and the two epochs — and the rules that decide each request.
//!
//! Every mutating operation is split in two, as upstream does: a *decision* (`apply_broker_id`,
//! `register_broker`, `alter_sync_state_set`, `elect_master`, `clean_broker_data`) reads the
//! state and returns a reply plus the [`Event`]s to commit, and [`ReplicasInfo::apply`] performs
//! an event. Only events go through Raft, so every controller applies the same sequence. Plain
//! synchronous code: liveness is asked of a predicate the caller passes in.

use std::collections::{BTreeMap, BTreeSet};

use remoting::ResponseCode;
use serde::{Deserialize, Serialize};

/// The id the first broker of a group must apply for (upstream `FIRST_BROKER_CONTROLLER_ID`).
pub const FIRST_BROKER_CONTROLLER_ID: i64 = 1;

/// One replica of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub address: String,
    /// `address;timestamp` chosen by the broker when it applied for its id; a re-apply with the
    /// same code gets the same id back.
    pub register_check_code: String,
}

/// One broker group (upstream `BrokerReplicaInfo` + `SyncStateInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerGroup {
    pub cluster_name: String,
    pub broker_name: String,
    pub replicas: BTreeMap<i64, Replica>,
    pub master_broker_id: Option<i64>,
    pub master_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
    pub sync_state_set_epoch: i32,
}

impl BrokerGroup {
    /// Address of replica `id`, if registered.
    pub fn address_of(&self, id: i64) -> Option<&str> {
        self.replicas.get(&id).map(|r| r.address.as_str())
    }

    /// The id a new broker should apply for: one past the largest assigned.
    pub fn next_broker_id(&self) -> i64 {
        self.replicas
            .keys()
            .next_back()
            .map_or(FIRST_BROKER_CONTROLLER_ID, |id| id + 1)
    }
}

/// A state change committed through Raft (upstream's `EventMessage` kinds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A broker got `broker_id` (creates the group on its first id).
    ApplyBrokerId {
        cluster_name: String,
        broker_name: String,
        address: String,
        broker_id: i64,
        register_check_code: String,
    },
    /// A registered broker reported a new address.
    UpdateBrokerAddress {
        broker_name: String,
        broker_id: i64,
        address: String,
    },
    /// `new_master` became master (both epochs + 1, SyncStateSet = {master}); `None`: the
    /// master is gone and none was elected (master epoch + 1, no master).
    ElectMaster {
        broker_name: String,
        new_master: Option<i64>,
    },
    /// The master's new SyncStateSet (SyncStateSet epoch + 1).
    AlterSyncStateSet {
        broker_name: String,
        sync_state_set: BTreeSet<i64>,
    },
    /// Removes the listed replicas, or the whole group when `broker_ids` is `None`.
    CleanBrokerData {
        broker_name: String,
        broker_ids: Option<BTreeSet<i64>>,
    },
}

/// A request refused, with upstream's response code and a remark saying why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{remark} (code {code})")]
pub struct Refusal {
    pub code: i32,
    pub remark: String,
}

fn refuse(code: i32, remark: impl Into<String>) -> Refusal {
    Refusal {
        code,
        remark: remark.into(),
    }
}

/// What a decision returns: the reply for the caller and the events to commit first. A refusal
/// may still carry events (an election that finds no master records that the master is gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<T> {
    pub reply: Result<T, Refusal>,
    pub events: Vec<Event>,
}

impl<T> Decision<T> {
    fn ok(reply: T, events: Vec<Event>) -> Self {
        Decision {
            reply: Ok(reply),
            events,
        }
    }
    fn refused(refusal: Refusal) -> Self {
        Decision {
            reply: Err(refusal),
            events: Vec::new(),
        }
    }
}

/// Master view of a group after a decision (header fields of several responses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterInfo {
    pub master_broker_id: Option<i64>,
    pub master_address: Option<String>,
    pub master_epoch: i32,
    pub sync_state_set_epoch: i32,
    pub sync_state_set: BTreeSet<i64>,
}

/// Liveness facts the election policy ranks candidates by (from broker heartbeats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pub alive: bool,
    pub epoch: i32,
    pub max_offset: i64,
    pub election_priority: i32,
}

/// How an election is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectRequest {
    /// The controller noticed the master is gone (upstream: brokerId -1).
    ByController,
    /// A broker asks; on a group's first election it becomes master.
    ByBroker(i64),
    /// `electMaster -b group -i id`: only `id` may win (upstream `designateElect`).
    Designated(i64),
}

/// The controller's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasInfo {
    groups: BTreeMap<String, BrokerGroup>,
}

impl ReplicasInfo {
    /// The group named `broker_name`.
    pub fn group(&self, broker_name: &str) -> Option<&BrokerGroup> {
        self.groups.get(broker_name)
    }

    /// Every group, by brokerName.
    pub fn groups(&self) -> impl Iterator<Item = &BrokerGroup> {
        self.groups.values()
    }

    /// CONTROLLER_GET_NEXT_BROKER_ID: the id a new broker of the group should apply for.
    pub fn next_broker_id(&self, broker_name: &str) -> i64 {
        self.groups
            .get(broker_name)
            .map_or(FIRST_BROKER_CONTROLLER_ID, BrokerGroup::next_broker_id)
    }

    /// CONTROLLER_APPLY_BROKER_ID: `broker_id` is granted if the group is new and the id is the
    /// first one, or the id is free, or it was granted to the same `register_check_code`
    /// (whose part before `;` is the broker's address).
    pub fn apply_broker_id(
        &self,
        cluster_name: &str,
        broker_name: &str,
        broker_id: i64,
        register_check_code: &str,
    ) -> Decision<()> {
        let address = register_check_code
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        let event = Event::ApplyBrokerId {
            cluster_name: cluster_name.to_string(),
            broker_name: broker_name.to_string(),
            address,
            broker_id,
            register_check_code: register_check_code.to_string(),
        };
        let granted = match self.groups.get(broker_name) {
            None => broker_id == FIRST_BROKER_CONTROLLER_ID,
            Some(group) => group
                .replicas
                .get(&broker_id)
                .is_none_or(|r| r.register_check_code == register_check_code),
        };
        if granted {
            Decision::ok((), vec![event])
        } else {
            Decision::refused(refuse(
                ResponseCode::CONTROLLER_BROKER_ID_INVALID,
                format!("broker id {broker_id} cannot be applied for in broker-set {broker_name}"),
            ))
        }
    }

    /// CONTROLLER_REGISTER_BROKER: a broker with an applied id reports its address; the reply
    /// names the master if one exists and is alive.
    pub fn register_broker(
        &self,
        broker_name: &str,
        broker_id: i64,
        address: &str,
        alive: &dyn Fn(i64) -> bool,
    ) -> Decision<MasterInfo> {
        let Some(group) = self.groups.get(broker_name) else {
            return Decision::refused(refuse(
                ResponseCode::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                format!("broker-set {broker_name} has not been registered in the controller"),
            ));
        };
        let Some(replica) = group.replicas.get(&broker_id) else {
            return Decision::refused(refuse(
                ResponseCode::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                format!(
                    "broker id {broker_id} has not been registered in broker-set {broker_name}"
                ),
            ));
        };
        let mut info = MasterInfo {
            sync_state_set: group.sync_state_set.clone(),
            sync_state_set_epoch: group.sync_state_set_epoch,
            ..MasterInfo::default()
        };
        if let Some(master) = group.master_broker_id.filter(|m| alive(*m)) {
            info.master_broker_id = Some(master);
            info.master_address = group.address_of(master).map(str::to_string);
            info.master_epoch = group.master_epoch;
        }
        let mut events = Vec::new();
        if replica.address != address {
            events.push(Event::UpdateBrokerAddress {
                broker_name: broker_name.to_string(),
                broker_id,
                address: address.to_string(),
            });
            if info.master_broker_id == Some(broker_id) {
                info.master_address = Some(address.to_string());
            }
        }
        Decision::ok(info, events)
    }

    /// CONTROLLER_GET_REPLICA_INFO: the group's master (even a dead one) and SyncStateSet.
    pub fn replica_info(&self, broker_name: &str) -> Result<MasterInfo, Refusal> {
        let group = self.groups.get(broker_name).ok_or_else(|| {
            refuse(
                ResponseCode::CONTROLLER_BROKER_METADATA_NOT_EXIST,
                "Broker metadata is not existed",
            )
        })?;
        Ok(master_info(group))
    }

    /// CONTROLLER_ALTER_SYNC_STATE_SET: only the current master, with the current master and
    /// SyncStateSet epochs, may change the set; every member must be a registered, live replica
    /// and the master must stay in it. Returns the new SyncStateSet epoch.
    pub fn alter_sync_state_set(
        &self,
        broker_name: &str,
        master_broker_id: i64,
        master_epoch: i32,
        new_set: &BTreeSet<i64>,
        sync_state_set_epoch: i32,
        alive: &dyn Fn(i64) -> bool,
    ) -> Decision<i32> {
        use ResponseCode as R;
        let Some(group) = self.groups.get(broker_name) else {
            return Decision::refused(refuse(
                R::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                "Broker metadata is not existed",
            ));
        };
        if *new_set == group.sync_state_set {
            return Decision::refused(refuse(
                R::CONTROLLER_ALTER_SYNC_STATE_SET_FAILED,
                "The new SyncStateSet equals the old one, nothing to update",
            ));
        }
        if group.master_broker_id != Some(master_broker_id) {
            return Decision::refused(refuse(
                R::CONTROLLER_INVALID_MASTER,
                format!(
                    "broker {master_broker_id} is not the master of {broker_name} (master: {:?})",
                    group.master_broker_id
                ),
            ));
        }
        if master_epoch != group.master_epoch {
            return Decision::refused(refuse(
                R::CONTROLLER_FENCED_MASTER_EPOCH,
                format!(
                    "master epoch {master_epoch} is stale; current is {}",
                    group.master_epoch
                ),
            ));
        }
        if sync_state_set_epoch != group.sync_state_set_epoch {
            return Decision::refused(refuse(
                R::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH,
                format!(
                    "SyncStateSet epoch {sync_state_set_epoch} is stale; current is {}",
                    group.sync_state_set_epoch
                ),
            ));
        }
        for id in new_set {
            if !group.replicas.contains_key(id) {
                return Decision::refused(refuse(
                    R::CONTROLLER_INVALID_REPLICAS,
                    format!("replica {id} is not registered in {broker_name}"),
                ));
            }
            if !alive(*id) {
                return Decision::refused(refuse(
                    R::CONTROLLER_BROKER_NOT_ALIVE,
                    format!("replica {id} of {broker_name} is not alive"),
                ));
            }
        }
        if !new_set.contains(&master_broker_id) {
            return Decision::refused(refuse(
                R::CONTROLLER_INVALID_MASTER,
                "the new SyncStateSet must contain the master",
            ));
        }
        Decision::ok(
            group.sync_state_set_epoch + 1,
            vec![Event::AlterSyncStateSet {
                broker_name: broker_name.to_string(),
                sync_state_set: new_set.clone(),
            }],
        )
    }

    /// CONTROLLER_ELECT_MASTER, upstream's `DefaultElectPolicy`: candidates are the live members
    /// of the SyncStateSet, then (only with `unclean`) every live replica. A live old master
    /// keeps its place (`CONTROLLER_MASTER_STILL_EXIST`) unless another id is designated; else
    /// the best candidate wins (highest epoch, highest max offset, lowest election priority,
    /// lowest id). If nobody can be master, a controller-triggered election records that the
    /// group has no master (`CONTROLLER_MASTER_NOT_AVAILABLE`); a broker's request just fails.
    pub fn elect_master(
        &self,
        broker_name: &str,
        request: ElectRequest,
        unclean: bool,
        candidate: &dyn Fn(i64) -> Candidate,
    ) -> Decision<MasterInfo> {
        use ResponseCode as R;
        let Some(group) = self.groups.get(broker_name) else {
            return Decision::refused(refuse(
                R::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED,
                "Broker hasn't been registered",
            ));
        };
        let old_master = group.master_broker_id;
        let first_time = old_master.is_none() && group.master_epoch == 0;
        let mut new_master = match request {
            ElectRequest::ByBroker(id) if first_time && group.replicas.contains_key(&id) => {
                Some(id)
            }
            _ => None,
        };
        if new_master.is_none() {
            let prefer = match request {
                ElectRequest::Designated(id) => Some(id),
                _ => None,
            };
            new_master = choose(&group.sync_state_set, old_master, prefer, candidate);
            if new_master.is_none() && unclean {
                let all: BTreeSet<i64> = group.replicas.keys().copied().collect();
                new_master = choose(&all, old_master, prefer, candidate);
            }
        }
        match new_master {
            Some(m) if Some(m) == old_master => Decision {
                reply: Err(refuse(
                    R::CONTROLLER_MASTER_STILL_EXIST,
                    format!("the old master {m} of {broker_name} is still alive"),
                )),
                events: Vec::new(),
            },
            Some(m) => Decision::ok(
                MasterInfo {
                    master_broker_id: Some(m),
                    master_address: group.address_of(m).map(str::to_string),
                    master_epoch: group.master_epoch + 1,
                    sync_state_set_epoch: group.sync_state_set_epoch + 1,
                    sync_state_set: BTreeSet::from([m]),
                },
                vec![Event::ElectMaster {
                    broker_name: broker_name.to_string(),
                    new_master: Some(m),
                }],
            ),
            None if request == ElectRequest::ByController => Decision {
                reply: Err(refuse(
                    R::CONTROLLER_MASTER_NOT_AVAILABLE,
                    "Old master has down and failed to elect a new broker master",
                )),
                events: vec![Event::ElectMaster {
                    broker_name: broker_name.to_string(),
                    new_master: None,
                }],
            },
            None => Decision::refused(refuse(
                R::CONTROLLER_ELECT_MASTER_FAILED,
                "Failed to elect a new master",
            )),
        }
    }

    /// CLEAN_BROKER_DATA: removes the listed replicas (all of the group when `ids` is empty).
    /// A live replica is only removed with `clean_living`.
    pub fn clean_broker_data(
        &self,
        broker_name: &str,
        ids: &BTreeSet<i64>,
        clean_living: bool,
        alive: &dyn Fn(i64) -> bool,
    ) -> Decision<()> {
        let invalid = ResponseCode::CONTROLLER_INVALID_CLEAN_BROKER_METADATA;
        let Some(group) = self.groups.get(broker_name) else {
            return Decision::refused(refuse(
                invalid,
                format!("broker-set {broker_name} does not exist"),
            ));
        };
        let targets: Vec<i64> = if ids.is_empty() {
            group.replicas.keys().copied().collect()
        } else {
            ids.iter().copied().collect()
        };
        for id in &targets {
            if !group.replicas.contains_key(id) {
                return Decision::refused(refuse(
                    invalid,
                    format!("broker id {id} does not exist in {broker_name}"),
                ));
            }
            if !clean_living && alive(*id) {
                return Decision::refused(refuse(
                    invalid,
                    format!("broker {id} of {broker_name} is still alive"),
                ));
            }
        }
        Decision::ok(
            (),
            vec![Event::CleanBrokerData {
                broker_name: broker_name.to_string(),
                broker_ids: (!ids.is_empty()).then(|| ids.clone()),
            }],
        )
    }

    /// Performs a committed event. Events are applied in log order on every controller; one
    /// that no longer fits the state (its group was cleaned meanwhile) changes nothing.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ApplyBrokerId {
                cluster_name,
                broker_name,
                address,
                broker_id,
                register_check_code,
            } => {
                let group = self
                    .groups
                    .entry(broker_name.clone())
                    .or_insert_with(|| BrokerGroup {
                        cluster_name: cluster_name.clone(),
                        broker_name: broker_name.clone(),
                        ..BrokerGroup::default()
                    });
                group.replicas.insert(
                    *broker_id,
                    Replica {
                        address: address.clone(),
                        register_check_code: register_check_code.clone(),
                    },
                );
            }
            Event::UpdateBrokerAddress {
                broker_name,
                broker_id,
                address,
            } => {
                if let Some(r) = self
                    .groups
                    .get_mut(broker_name)
                    .and_then(|g| g.replicas.get_mut(broker_id))
                {
                    r.address = address.clone();
                }
            }
            Event::ElectMaster {
                broker_name,
                new_master,
            } => {
                if let Some(group) = self.groups.get_mut(broker_name) {
                    group.master_broker_id = *new_master;
                    group.master_epoch += 1;
                    if let Some(m) = new_master {
                        group.sync_state_set = BTreeSet::from([*m]);
                        group.sync_state_set_epoch += 1;
                    }
                }
            }
            Event::AlterSyncStateSet {
                broker_name,
                sync_state_set,
            } => {
                if let Some(group) = self.groups.get_mut(broker_name) {
                    group.sync_state_set = sync_state_set.clone();
                    group.sync_state_set_epoch += 1;
                }
            }
            Event::CleanBrokerData {
                broker_name,
                broker_ids,
            } => {
                let Some(ids) = broker_ids else {
                    self.groups.remove(broker_name);
                    return;
                };
                if let Some(group) = self.groups.get_mut(broker_name) {
                    for id in ids {
                        group.replicas.remove(id);
                        group.sync_state_set.remove(id);
                        if group.master_broker_id == Some(*id) {
                            group.master_broker_id = None;
                        }
                    }
                    if group.replicas.is_empty() {
                        self.groups.remove(broker_name);
                    }
                }
            }
        }
    }
}

fn master_info(group: &BrokerGroup) -> MasterInfo {
    MasterInfo {
        master_broker_id: group.master_broker_id,
        master_address: group
            .master_broker_id
            .and_then(|m| group.address_of(m))
            .map(str::to_string),
        master_epoch: group.master_epoch,
        sync_state_set_epoch: group.sync_state_set_epoch,
        sync_state_set: group.sync_state_set.clone(),
    }
}

/// Upstream's `tryElect` over `ids`, keeping only live candidates.
fn choose(
    ids: &BTreeSet<i64>,
    old_master: Option<i64>,
    prefer: Option<i64>,
    candidate: &dyn Fn(i64) -> Candidate,
) -> Option<i64> {
    let live: Vec<(i64, Candidate)> = ids
        .iter()
        .map(|&id| (id, candidate(id)))
        .filter(|(_, c)| c.alive)
        .collect();
    if live.is_empty() {
        return None;
    }
    if let Some(old) = old_master {
        if live.iter().any(|(id, _)| *id == old) && prefer.is_none_or(|p| p == old) {
            return Some(old);
        }
    }
    if let Some(p) = prefer {
        return live.iter().any(|(id, _)| *id == p).then_some(p);
    }
    live.into_iter()
        .min_by_key(|(id, c)| {
            (
                std::cmp::Reverse(c.epoch),
                std::cmp::Reverse(c.max_offset),
                c.election_priority,
                *id,
            )
        })
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decides on `$state` and applies the decision's events, as a committed command would.
    macro_rules! commit {
        ($state:ident, $decision:expr $(,)?) => {{
            let d = $decision;
            for e in &d.events {
                $state.apply(e);
            }
            d.reply
        }};
    }

    fn live(_: i64) -> bool {
        true
    }

    fn all_live(_: i64) -> Candidate {
        Candidate {
            alive: true,
            ..Candidate::default()
        }
    }

    /// Group `b1` with replicas 1..=n registered, 1 elected master on its first election.
    fn group_with(n: i64) -> ReplicasInfo {
        let mut s = ReplicasInfo::default();
        for id in 1..=n {
            assert_eq!(s.next_broker_id("b1"), id);
            let code = format!("127.0.0.1:{};{id}", 10910 + id);
            commit!(s, s.apply_broker_id("c1", "b1", id, &code)).expect("apply id");
            let addr = format!("127.0.0.1:{}", 10910 + id);
            commit!(s, s.register_broker("b1", id, &addr, &live)).expect("register");
        }
        let info = commit!(
            s,
            s.elect_master("b1", ElectRequest::ByBroker(1), false, &all_live),
        )
        .expect("first election");
        assert_eq!(info.master_broker_id, Some(1));
        s
    }

    #[test]
    fn register_assigns_ids_and_first_elect_makes_master() {
        let s = group_with(2);
        let g = s.group("b1").expect("group");
        assert_eq!(g.replicas.len(), 2);
        assert_eq!(g.master_broker_id, Some(1));
        assert_eq!((g.master_epoch, g.sync_state_set_epoch), (1, 1));
        assert_eq!(g.sync_state_set, BTreeSet::from([1]));
        assert_eq!(s.next_broker_id("b1"), 3);
    }

    #[test]
    fn apply_broker_id_rules() {
        let s = ReplicasInfo::default();
        let d = s.apply_broker_id("c1", "b1", 2, "a:1;1");
        assert_eq!(
            d.reply.expect_err("not first").code,
            ResponseCode::CONTROLLER_BROKER_ID_INVALID
        );
        let s = group_with(1);
        // Taken by another broker.
        let d = s.apply_broker_id("c1", "b1", 1, "other:1;9");
        assert!(d.reply.is_err());
        // Same broker again: granted.
        assert!(s
            .apply_broker_id("c1", "b1", 1, "127.0.0.1:10911;1")
            .reply
            .is_ok());
        // Unknown id in a known group cannot register.
        let d = s.register_broker("b1", 5, "x:1", &live);
        assert_eq!(
            d.reply.expect_err("unknown").code,
            ResponseCode::CONTROLLER_BROKER_NEED_TO_BE_REGISTERED
        );
    }

    #[test]
    fn register_reports_live_master_and_address_change() {
        let s = group_with(2);
        let d = s.register_broker("b1", 2, "10.0.0.2:10911", &live);
        assert_eq!(d.events.len(), 1);
        let info = d.reply.expect("ok");
        assert_eq!(info.master_broker_id, Some(1));
        assert_eq!(info.master_address.as_deref(), Some("127.0.0.1:10911"));
        let d = s.register_broker("b1", 2, "127.0.0.1:10912", &|id| id != 1);
        assert!(d.events.is_empty());
        assert_eq!(d.reply.expect("ok").master_broker_id, None);
    }

    #[test]
    fn alter_sync_state_set_checks_master_and_epochs() {
        let mut s = group_with(3);
        let set = BTreeSet::from([1, 2]);
        let code = |d: Decision<i32>| d.reply.expect_err("refused").code;
        assert_eq!(
            code(s.alter_sync_state_set("b1", 1, 0, &set, 1, &live)),
            ResponseCode::CONTROLLER_FENCED_MASTER_EPOCH
        );
        assert_eq!(
            code(s.alter_sync_state_set("b1", 1, 1, &set, 0, &live)),
            ResponseCode::CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH
        );
        assert_eq!(
            code(s.alter_sync_state_set("b1", 2, 1, &set, 1, &live)),
            ResponseCode::CONTROLLER_INVALID_MASTER
        );
        assert_eq!(
            code(s.alter_sync_state_set("b1", 1, 1, &BTreeSet::from([1, 9]), 1, &live)),
            ResponseCode::CONTROLLER_INVALID_REPLICAS
        );
        assert_eq!(
            code(s.alter_sync_state_set("b1", 1, 1, &set, 1, &|id| id != 2)),
            ResponseCode::CONTROLLER_BROKER_NOT_ALIVE
        );
        assert_eq!(
            code(s.alter_sync_state_set("b1", 1, 1, &BTreeSet::from([2]), 1, &live)),
            ResponseCode::CONTROLLER_INVALID_MASTER
        );
        let epoch = commit!(s, s.alter_sync_state_set("b1", 1, 1, &set, 1, &live));
        assert_eq!(epoch, Ok(2));
        let g = s.group("b1").expect("group");
        assert_eq!((g.sync_state_set.clone(), g.sync_state_set_epoch), (set, 2));
    }

    fn with_isr_1_2() -> ReplicasInfo {
        let mut s = group_with(3);
        commit!(
            s,
            s.alter_sync_state_set("b1", 1, 1, &BTreeSet::from([1, 2]), 1, &live),
        )
        .expect("alter");
        s
    }

    #[test]
    fn elect_within_sync_state_set_when_master_dies() {
        let mut s = with_isr_1_2();
        let still = s.elect_master("b1", ElectRequest::ByController, false, &all_live);
        assert_eq!(
            still.reply.expect_err("alive").code,
            ResponseCode::CONTROLLER_MASTER_STILL_EXIST
        );
        let not_1 = |id: i64| Candidate {
            alive: id != 1,
            ..Candidate::default()
        };
        let info = commit!(
            s,
            s.elect_master("b1", ElectRequest::ByController, false, &not_1),
        )
        .expect("elected");
        // 3 is alive but not in the SyncStateSet.
        assert_eq!(info.master_broker_id, Some(2));
        let g = s.group("b1").expect("group");
        assert_eq!((g.master_epoch, g.sync_state_set_epoch), (2, 3));
        assert_eq!(g.sync_state_set, BTreeSet::from([2]));
    }

    #[test]
    fn unclean_election_off_leaves_no_master_and_reads_work() {
        let mut s = with_isr_1_2();
        let only_3 = |id: i64| Candidate {
            alive: id == 3,
            ..Candidate::default()
        };
        let d = s.elect_master("b1", ElectRequest::ByController, false, &only_3);
        assert_eq!(d.events.len(), 1);
        let r = commit!(s, d);
        assert_eq!(
            r.expect_err("none").code,
            ResponseCode::CONTROLLER_MASTER_NOT_AVAILABLE
        );
        let info = s.replica_info("b1").expect("readable");
        assert_eq!(info.master_broker_id, None);
        assert_eq!(info.master_epoch, 2);
        // With unclean election on, 3 wins.
        let info = commit!(
            s,
            s.elect_master("b1", ElectRequest::ByController, true, &only_3),
        )
        .expect("unclean");
        assert_eq!(info.master_broker_id, Some(3));
    }

    #[test]
    fn manual_elect_picks_the_designated_broker() {
        let mut s = with_isr_1_2();
        let d = s.elect_master("b1", ElectRequest::Designated(3), false, &all_live);
        assert_eq!(
            d.reply.expect_err("3 not in ISR").code,
            ResponseCode::CONTROLLER_ELECT_MASTER_FAILED
        );
        let info = commit!(
            s,
            s.elect_master("b1", ElectRequest::Designated(2), false, &all_live),
        )
        .expect("designated");
        assert_eq!(info.master_broker_id, Some(2));
        assert_eq!(s.group("b1").map(|g| g.master_epoch), Some(2));
    }

    #[test]
    fn election_prefers_highest_epoch_then_offset() {
        let mut s = group_with(3);
        commit!(
            s,
            s.alter_sync_state_set("b1", 1, 1, &BTreeSet::from([1, 2, 3]), 1, &live),
        )
        .expect("alter");
        let c = |id: i64| Candidate {
            alive: id != 1,
            epoch: 1,
            max_offset: if id == 3 { 100 } else { 50 },
            election_priority: 0,
        };
        let info = commit!(
            s,
            s.elect_master("b1", ElectRequest::ByController, false, &c)
        )
        .expect("elected");
        assert_eq!(info.master_broker_id, Some(3));
    }

    #[test]
    fn clean_broker_data_refuses_live_brokers_unless_asked() {
        let mut s = with_isr_1_2();
        let d = s.clean_broker_data("b1", &BTreeSet::from([2]), false, &live);
        assert!(d.reply.is_err());
        commit!(
            s,
            s.clean_broker_data("b1", &BTreeSet::from([2]), false, &|id| id != 2),
        )
        .expect("clean 2");
        let g = s.group("b1").expect("group");
        assert!(!g.replicas.contains_key(&2));
        assert_eq!(g.sync_state_set, BTreeSet::from([1]));
        commit!(s, s.clean_broker_data("b1", &BTreeSet::new(), true, &live)).expect("all");
        assert!(s.group("b1").is_none());
    }
}
