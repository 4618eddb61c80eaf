//! [`BrokerContext`]: the resources the request handlers and the services share — the config
//! snapshot, the store, the topic / group / offset / client managers, the replication state,
//! the outgoing client and the stop signal — and the one write path (`put`, `put_acked`).
//! It owns no service: the services (see the `services` module) are built on top of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use remoting::client::RemotingClient;
use remoting::protocol::perm;
use remoting::ResponseCode;
use store::{BrokerRole, MessageInner, MessageStore, PutResult, PutStatus, StoreError};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::clients::{ConsumerManager, ProducerManager};
use crate::config::BrokerConfig;
use crate::error::PutError;
use crate::ha::acks::SlaveWait;
use crate::ha::HaState;
use crate::lock::RebalanceLockManager;
use crate::long_poll::PullWaiters;
use crate::metrics::BrokerMetrics;
use crate::offset::ConsumerOffsetManager;
use crate::subscription::SubscriptionGroupManager;
use crate::topic::TopicConfigManager;

/// Counters shown by GET_BROKER_RUNTIME_INFO.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) put_messages: AtomicU64,
    pub(crate) got_messages: AtomicU64,
}

/// The shared resources of a running broker.
pub(crate) struct BrokerContext {
    /// The config in force, an immutable snapshot replaced whole by UPDATE_BROKER_CONFIG;
    /// read it with [`Self::config`].
    pub(crate) config: ArcSwap<BrokerConfig>,
    /// Serialises config updates, so that none is lost; readers never take it.
    pub(crate) config_update: Mutex<()>,
    pub(crate) store: MessageStore,
    /// `brokerIP1:port` once the server is bound.
    pub(crate) store_host: OnceLock<SocketAddr>,
    pub(crate) topics: TopicConfigManager,
    pub(crate) groups: SubscriptionGroupManager,
    pub(crate) offsets: ConsumerOffsetManager,
    pub(crate) consumers: ConsumerManager,
    pub(crate) producers: ProducerManager,
    pub(crate) locks: RebalanceLockManager,
    pub(crate) waiters: Arc<PullWaiters>,
    /// Short-lived tasks (notifications, check-backs); awaited on shutdown.
    pub(crate) tasks: TaskTracker,
    /// Becomes true when the broker stops; long-lived tasks and held pulls watch it.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) started: Instant,
    pub(crate) stats: Stats,
    /// Replication: master's written end and slave acks, slave's master addresses.
    pub(crate) ha: HaState,
    /// Outgoing requests (NameServers, the master, other groups' masters).
    pub(crate) client: RemotingClient,
    /// Prometheus metrics (recorded by the services, rendered on scrape).
    pub(crate) metrics: Arc<BrokerMetrics>,
    /// The ACL (`aclEnable=true`): every request is checked before its handler runs.
    pub(crate) acl: Option<Arc<acl::AclValidator>>,
}

impl BrokerContext {
    /// The config in force: a snapshot that later updates do not change (no lock, no copy).
    pub(crate) fn config(&self) -> Arc<BrokerConfig> {
        self.config.load_full()
    }

    /// Applies `props` (upstream config keys) to a copy of the config in force and swaps it
    /// in; on an invalid value nothing changes.
    pub(crate) fn update_config(
        &self,
        props: &std::collections::HashMap<String, String>,
    ) -> Result<(), crate::error::BrokerError> {
        let _one_at_a_time = self.config_update.lock();
        let mut next = BrokerConfig::clone(&self.config.load());
        next.update(props)?;
        self.config.store(Arc::new(next));
        Ok(())
    }

    /// The broker's address as clients and NameServers know it (`brokerIP1:listenPort`).
    pub(crate) fn store_host(&self) -> SocketAddr {
        *self.store_host.get_or_init(|| {
            let c = self.config();
            SocketAddr::new(c.advertised_ip(), c.listen_port)
        })
    }

    /// `ip:port` text of [`Self::store_host`].
    pub(crate) fn broker_addr(&self) -> String {
        self.store_host().to_string()
    }

    /// Whether the broker accepts writes (master with write permission).
    pub(crate) fn writable(&self) -> bool {
        let c = self.config();
        !c.is_slave() && perm::is_writeable(c.broker_permission)
    }

    /// Whether this broker acts as its group's master now: a master always; a slave only as
    /// an acting master (never in controller mode) — `enableActingMaster` on, no master at
    /// the NameServer, no replication connection, and no returning master has taken over
    /// since the connection was last up.
    pub(crate) fn serves_as_master(&self) -> bool {
        let c = self.config();
        if !c.is_slave() {
            return true;
        }
        // In controller mode the controllers elect a real master instead (and a broker
        // without a role yet is a slave until they say otherwise).
        !c.enable_controller_mode
            && c.enable_acting_master
            && self.ha.master_addr.read().is_none()
            && !self.ha.link_up.load(Ordering::Acquire)
            && !self.ha.master_back.load(Ordering::Acquire)
    }

    /// A receiver that sees `true` when the broker stops. Subscribed after the stop (a task
    /// first polled during shutdown), its `changed()` still fires at once.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        let mut rx = self.stopping.subscribe();
        if *rx.borrow() {
            rx.mark_changed();
        }
        rx
    }

    /// Appends one message (or a batch when `msgs` has several) and maps store failures to
    /// upstream codes. `FLUSH_DISK_TIMEOUT` is reported in the result's status, not as an error.
    pub(crate) async fn put(&self, msgs: Vec<MessageInner>) -> Result<PutResult, PutError> {
        let n = msgs.len() as u64;
        if msgs.is_empty() {
            return Err(map_store_error(StoreError::IllegalMessage(
                "no message to write".into(),
            )));
        }
        // A one-element batch is written exactly as a single message.
        let result = self.store.put_messages(msgs).await;
        match result {
            Ok(r) => {
                self.stats.put_messages.fetch_add(n, Ordering::Relaxed);
                self.ha
                    .note_written(r.wrote_offset + i64::from(r.wrote_bytes.max(0)));
                Ok(r)
            }
            Err(e) => Err(map_store_error(e)),
        }
    }

    /// [`Self::put`] for a client's write, answered with its response code: SUCCESS, or
    /// FLUSH_DISK_TIMEOUT when the flush policy did not hold in time; under `SYNC_MASTER`
    /// also FLUSH_SLAVE_TIMEOUT when no slave acknowledged within `syncFlushTimeout` and
    /// SLAVE_NOT_AVAILABLE when no slave is connected or in sync. In controller mode the
    /// wait is for every member of the SyncStateSet with `allAckInSyncStateSet`, else for
    /// `inSyncReplicas` - 1 slaves (none by default), and a SyncStateSet smaller than
    /// `minInSyncReplicas` refuses the write. The
    /// wait for the slave is asynchronous (see [`crate::ha::acks`]).
    ///
    /// Nothing is written before every topic change made so far is in `topics.json` on disk
    /// (at once when it is: one lock, no I/O). The send and send-back paths create the topic a
    /// message needs (first send, retry, DLQ topics) before they put it, so a crash can never
    /// keep an answered message and lose its topic (upstream writes the file before it stores
    /// the message). While the file cannot be written, the write is refused with SYSTEM_ERROR
    /// naming it and nothing is stored.
    pub(crate) async fn put_acked(
        &self,
        msgs: Vec<MessageInner>,
    ) -> Result<(PutResult, i32), PutError> {
        if let Err(e) = self.topics.durable().await {
            return Err(PutError {
                code: ResponseCode::SYSTEM_ERROR,
                remark: format!("the topic config is not on disk, nothing was written: {e}"),
            });
        }
        let (sync, timeout, gap) = {
            let c = self.config();
            let sync = if c.enable_controller_mode {
                // As upstream: refused before it is stored while the SyncStateSet is too
                // small; with `allAckInSyncStateSet` every member acknowledges, else
                // `inSyncReplicas` replicas (the master and that many slaves less one).
                if c.broker_role != BrokerRole::Slave
                    && self.ha.acks.in_sync_replicas() < c.min_in_sync_replicas
                {
                    return Err(PutError {
                        code: ResponseCode::SYSTEM_ERROR,
                        remark: "in-sync replicas not enough".into(),
                    });
                }
                if c.all_ack_in_sync_state_set {
                    ReplicaWait::SyncStateSet
                } else {
                    ReplicaWait::Slaves(c.in_sync_replicas.saturating_sub(1))
                }
            } else if c.broker_role == BrokerRole::SyncMaster {
                ReplicaWait::SyncStateSet
            } else {
                ReplicaWait::Slaves(0)
            };
            (
                sync,
                Duration::from_millis(c.sync_flush_timeout),
                c.ha_max_gap_not_in_sync,
            )
        };
        let r = self.put(msgs).await?;
        if r.status == PutStatus::FlushDiskTimeout {
            return Ok((r, ResponseCode::FLUSH_DISK_TIMEOUT));
        }
        let end = r.wrote_offset + i64::from(r.wrote_bytes.max(0));
        let waited = match sync {
            ReplicaWait::Slaves(0) => return Ok((r, ResponseCode::SUCCESS)),
            ReplicaWait::Slaves(n) => self.ha.acks.wait_slaves(end, n, timeout).await,
            ReplicaWait::SyncStateSet => self.ha.acks.wait(end, timeout, gap).await,
        };
        let code = match waited {
            SlaveWait::Acked => ResponseCode::SUCCESS,
            SlaveWait::Timeout => ResponseCode::FLUSH_SLAVE_TIMEOUT,
            SlaveWait::NotAvailable => ResponseCode::SLAVE_NOT_AVAILABLE,
        };
        Ok((r, code))
    }
}

/// Which replicas a write waits for before it is answered.
enum ReplicaWait {
    /// That many slaves (0: none).
    Slaves(usize),
    /// Under `SYNC_MASTER` any one slave; in controller mode every SyncStateSet member.
    SyncStateSet,
}

/// Response code of a store failure (as upstream's `PutMessageStatus` mapping).
fn map_store_error(e: StoreError) -> PutError {
    let code = match &e {
        StoreError::MessageTooLarge { .. } | StoreError::IllegalMessage(_) => {
            ResponseCode::MESSAGE_ILLEGAL
        }
        StoreError::DiskFull { .. } | StoreError::NotWritable(_) => {
            ResponseCode::SERVICE_NOT_AVAILABLE
        }
        _ => ResponseCode::SYSTEM_ERROR,
    };
    if code == ResponseCode::SERVICE_NOT_AVAILABLE {
        // Repeats for every send while it lasts; the store logs the cause once per interval.
        tracing::debug!(error = %e, "message write refused");
    } else {
        tracing::warn!(error = %e, "message write failed");
    }
    let remark = match &e {
        // Upstream's wording, with the actual cause in the brackets.
        StoreError::DiskFull { .. } => format!(
            "service not available now. It may be caused by one of the following reasons: \
             the broker's disk is full [{e}], messages are put to the slave, message store \
             has been shut down, etc."
        ),
        _ => e.to_string(),
    };
    PutError { code, remark }
}

/// A stored message made ready to be written again (delay delivery, retry, transaction
/// commit): same body, flags, hosts and times; the caller changes topic, queue and properties.
pub(crate) fn reput_inner(ext: &store::MessageExt, store_host: SocketAddr) -> MessageInner {
    MessageInner {
        topic: ext.topic.clone(),
        queue_id: ext.queue_id,
        flag: ext.flag,
        body: ext.body.clone(),
        properties: ext.properties.clone(),
        sys_flag: ext.sys_flag,
        born_timestamp: ext.born_timestamp,
        born_host: ext.born_host,
        store_host,
        reconsume_times: ext.reconsume_times,
        prepared_transaction_offset: ext.prepared_transaction_offset,
    }
}
