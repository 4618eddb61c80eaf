//! Master/slave replication (upstream's `HAService`): a master streams its CommitLog to its
//! slaves byte for byte; a slave appends what it receives and its own dispatcher builds the
//! ConsumeQueues and the Index. This module owns the wire format, the master's listener
//! ([`master`]), the slave's client ([`slave`]) and the table of sends waiting for a slave
//! under `SYNC_MASTER` ([`acks`]).
//!
//! The HA port (`haListenPort`, default `listenPort + 1`) speaks upstream's protocol:
//!
//! | direction | bytes | field |
//! |---|---|---|
//! | slave -> master | 8 | CommitLog max offset of the slave (i64 BE); sent on connect, after each append, and every `haSendHeartbeatInterval` |
//! | master -> slave | 8 | CommitLog offset of the first body byte (i64 BE) |
//! | | 4 | body size (i32 BE); 0 is a heartbeat |
//! | | size | CommitLog bytes, at most `haTransferBatchSize`, never across a segment end |
//!
//! The master starts streaming at the offset the slave first reports (upstream starts a fresh
//! slave at the last segment; Apogee replicates everything the master still has).
//!
//! In controller mode (`enableControllerMode=true`) a handshake comes first (Apogee's, not
//! upstream's `AutoSwitchHAClient` one, which carries the same facts):
//!
//! | direction | bytes | field |
//! |---|---|---|
//! | slave -> master | 8 | replica id (i64 BE): which SyncStateSet member this connection is |
//! | | 1 | flags: bit 0 ([`HANDSHAKE_ASYNC_LEARNER`]) an `asyncLearner`, never a SyncStateSet member |
//! | master -> slave | 4 | number of epoch entries `n` (i32 BE, at most [`MAX_EPOCH_ENTRIES`]) |
//! | | n × 12 | epoch (i32 BE), its start offset (i64 BE), oldest first |
//! | | 8 | the master's CommitLog end (i64 BE) |
//!
//! The slave cuts its CommitLog to the last point where its epochs agree with the master's
//! ([`epoch::consistent_point`]; a returning old master loses what it never replicated), takes
//! the master's entries for what it holds, and then reports its end as above; it records each
//! further master epoch once it has data of it.
//! Either side of a controller-mode group listens on the HA port, but only the master serves:
//! a broker that is not master closes the connection, and a role change closes every
//! replication connection (`role_epoch`).

pub(crate) mod acks;
pub(crate) mod epoch;
pub(crate) mod master;
pub(crate) mod slave;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};
use remoting::BrokerAddr;
use thiserror::Error;
use tokio::sync::{watch, Notify};

use acks::AckTable;

/// Handshake flag of a slave configured `asyncLearner=true`.
pub(crate) const HANDSHAKE_ASYNC_LEARNER: u8 = 1;
/// Size of a master -> slave frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// Most epoch entries a slave accepts in the controller-mode handshake.
pub(crate) const MAX_EPOCH_ENTRIES: usize = 100_000;
/// Largest body a slave accepts in one frame (the master sends `haTransferBatchSize`).
pub(crate) const MAX_FRAME_BODY: usize = 64 * 1024 * 1024;

/// Why a replication connection ended.
#[derive(Debug, Error)]
pub(crate) enum HaError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer silent for too long")]
    Timeout,
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A role decision of the controllers (NOTIFY_BROKER_ROLE_CHANGED, or an answer to
/// REGISTER_BROKER / ELECT_MASTER / GET_REPLICA_INFO).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RoleNotice {
    pub(crate) master_broker_id: Option<i64>,
    pub(crate) master_address: Option<String>,
    pub(crate) master_epoch: i32,
    pub(crate) sync_state_set_epoch: i32,
    pub(crate) sync_state_set: BTreeSet<i64>,
}

/// Replication state shared by the handlers and the HA tasks.
#[derive(Default)]
pub(crate) struct HaState {
    /// Controller mode: 0 until the controllers gave this broker a role, then bumped at
    /// every role change (NameServer registration waits for it and follows it; replication
    /// connections end when it changes).
    pub(crate) role_epoch: watch::Sender<u64>,
    /// Controller mode: this broker's replica id (-1 until assigned; 0 is never assigned).
    pub(crate) local_id: AtomicI64,
    /// Controller mode: the epoch file (loaded at start); the master sends its entries in the
    /// replication handshake, a slave copies them as it replicates their data.
    pub(crate) epochs: Mutex<Option<epoch::EpochFile>>,
    /// Controller mode: the latest NOTIFY_BROKER_ROLE_CHANGED, for the replicas task.
    pub(crate) role_notice: Mutex<Option<RoleNotice>>,
    /// Wakes the replicas task: a notice arrived, or a slave caught up (SyncStateSet check).
    pub(crate) replicas_wake: Notify,
    /// Slave: held for as long as a replication connection appends; a role change takes it
    /// to know no replicated append is in progress.
    pub(crate) replica_link: tokio::sync::Mutex<()>,
    /// Master: end offset of the newest write, watched by the connection writers.
    pub(crate) written: watch::Sender<i64>,
    /// Master: slave acknowledgements and the sends waiting for them.
    pub(crate) acks: AckTable,
    /// The bound HA port, once listening (master) — registered as `haServerAddr`.
    pub(crate) listen_port: OnceLock<u16>,
    /// Slave: the master's HA address (`haMasterAddress`, or learnt at registration).
    pub(crate) master_ha_addr: watch::Sender<Option<String>>,
    /// Slave: the master's broker address, learnt at registration; `None` while it is gone.
    pub(crate) master_addr: RwLock<Option<BrokerAddr>>,
    /// Slave: the replication connection to the master is up.
    pub(crate) link_up: AtomicBool,
    /// Slave: a returning master took delayed delivery back (see `schedule`); cleared when
    /// the replication connection to it, once up, drops again.
    pub(crate) master_back: AtomicBool,
}

impl HaState {
    /// Records that the CommitLog now ends at `end` (wakes the connection writers).
    pub(crate) fn note_written(&self, end: i64) {
        self.written.send_if_modified(|w| {
            let grew = end > *w;
            if grew {
                *w = end;
            }
            grew
        });
    }

    /// Sets the master's HA address (slave); wakes the HA client when it changes.
    pub(crate) fn set_master_ha_addr(&self, addr: Option<String>) {
        self.master_ha_addr.send_if_modified(|cur| {
            let changed = *cur != addr;
            if changed {
                *cur = addr;
            }
            changed
        });
    }

    /// Controller mode: this broker's replica id, once assigned.
    pub(crate) fn local_id(&self) -> Option<i64> {
        let id = self.local_id.load(Ordering::Acquire);
        (id > 0).then_some(id)
    }

    /// Controller mode: the newest epoch of the epoch file (0: none).
    pub(crate) fn last_epoch(&self) -> i32 {
        self.epochs
            .lock()
            .as_ref()
            .and_then(|f| f.last())
            .map_or(0, |e| e.epoch)
    }

    /// Controller mode: records a role change (see `role_epoch`).
    pub(crate) fn role_changed(&self) {
        self.role_epoch.send_modify(|e| *e += 1);
    }
}
