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

pub(crate) mod acks;
pub(crate) mod master;
pub(crate) mod slave;

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use parking_lot::RwLock;
use remoting::BrokerAddr;
use thiserror::Error;
use tokio::sync::watch;

use acks::AckTable;

/// Size of a master -> slave frame header.
pub(crate) const FRAME_HEADER_LEN: usize = 12;
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

/// Replication state shared by the handlers and the HA tasks.
#[derive(Default)]
pub(crate) struct HaState {
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
}
