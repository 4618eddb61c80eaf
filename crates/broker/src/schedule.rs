//! Delayed messages. A message with delay level `n` is written to `SCHEDULE_TOPIC_XXXX`
//! queue `n - 1` with its real topic and queue in `REAL_TOPIC` / `REAL_QID`; one task per
//! level reads that queue in order and, when a message's time has come (store time + the
//! level's delay), writes it to its real queue. Each level's progress (the next queue offset
//! to deliver) is persisted in `config/delayOffset.json` as upstream does
//! (`{"offsetTable":{1:5,2:0}}`, written by the file's [`Persister`] off the caller's thread),
//! so a restart neither loses nor repeats deliveries beyond the last persist.
//!
//! **Acting master.** A slave runs the same tasks on its replicated `SCHEDULE_TOPIC_XXXX`,
//! but delivers only while its master is gone ([`BrokerContext::serves_as_master`]): it then sends each due
//! message to a live master of the cluster (as the acting master's send-back does) and keeps
//! its own progress. A master starting up first asks its group's slaves (found at the
//! NameServer) for their progress with GET_ALL_DELAY_OFFSET carrying `masterReturned`
//! ([`GetAllDelayOffsetRequestHeader`]); a
//! slave receiving it stops delivering, waits for a delivery in flight and answers; the
//! master keeps each level's larger offset, so nothing the slave delivered is delivered
//! again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use remoting::message::{now_millis, MessageConst, Properties};
use remoting::protocol::{from_fastjson, to_fastjson, KeyStyle};
use remoting::RequestCode;
use serde::{Deserialize, Serialize};
use store::{AcceptAll, GetMessageStatus, MessageExt};
use tokio::task::JoinSet;

use crate::cluster;
use crate::context::{reput_inner, BrokerContext};
use crate::error::BrokerError;
use crate::persist::Persister;
use crate::topic::SCHEDULE_TOPIC;

/// Messages read per pass of a level task.
const BATCH: usize = 32;
/// Pause after a failed delivery before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often a slave checks whether it should deliver.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// Producer group named in a slave's forwarded delivery.
const PRODUCER_GROUP: &str = "SCHEDULE_PRODUCER";

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct DelayOffsetFile {
    offset_table: BTreeMap<i32, i64>,
}

/// Next queue offset to deliver, per delay level.
pub(crate) struct DelayOffsets {
    table: Arc<Mutex<BTreeMap<i32, i64>>>,
    /// The only writer of `config/delayOffset.json`.
    persister: Persister,
    /// Held (shared) by each delivery with its progress update; taken exclusively by a slave
    /// handing delivery back to its master.
    delivering: tokio::sync::RwLock<()>,
}

impl DelayOffsets {
    pub(crate) fn load(root: &Path) -> Result<DelayOffsets, BrokerError> {
        let path = root.join("config").join("delayOffset.json");
        let mut table = BTreeMap::new();
        if let Some(data) = durable::read_optional(&path)? {
            let file: DelayOffsetFile = from_fastjson(&data).map_err(|e| BrokerError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            table = file.offset_table;
        }
        let table = Arc::new(Mutex::new(table));
        let persister = {
            let table = table.clone();
            Persister::new(path, move || encode_table(table.lock().clone()))?
        };
        Ok(DelayOffsets {
            table,
            persister,
            delivering: tokio::sync::RwLock::new(()),
        })
    }

    pub(crate) fn get(&self, level: i32) -> i64 {
        self.table.lock().get(&level).copied().unwrap_or(0)
    }

    fn set(&self, level: i32, offset: i64) {
        self.table.lock().insert(level, offset);
    }

    /// Every level's progress (GET_ALL_DELAY_OFFSET, runtime info).
    pub(crate) fn snapshot(&self) -> BTreeMap<i32, i64> {
        self.table.lock().clone()
    }

    /// Every level's progress in upstream's `delayOffset.json` shape (the file's, and the
    /// GET_ALL_DELAY_OFFSET body).
    pub(crate) fn encode(&self) -> Result<Vec<u8>, BrokerError> {
        encode_table(self.snapshot())
    }

    /// Merges a master's GET_ALL_DELAY_OFFSET body, keeping each level's larger offset;
    /// returns whether any level moved.
    pub(crate) fn merge_max(&self, body: &[u8]) -> Result<bool, BrokerError> {
        let file: DelayOffsetFile = from_fastjson(body).map_err(|e| BrokerError::Parse {
            path: PathBuf::from("<GET_ALL_DELAY_OFFSET body>"),
            reason: e.to_string(),
        })?;
        let mut table = self.table.lock();
        let mut moved = false;
        for (level, offset) in file.offset_table {
            let cur = table.entry(level).or_insert(i64::MIN);
            if offset > *cur {
                *cur = offset;
                moved = true;
            }
        }
        Ok(moved)
    }

    /// Asks for `config/delayOffset.json` to be rewritten and returns at once (see
    /// [`Persister::request`]).
    pub(crate) fn persist(&self) {
        self.persister.request();
    }

    /// Writes `config/delayOffset.json` with the progress made before the call and resolves
    /// once it is durable (the I/O runs on the file's writer thread).
    pub(crate) async fn flush(&self) -> Result<(), BrokerError> {
        self.persister.flush().await
    }
}

/// Every level's progress in upstream's `delayOffset.json` shape.
fn encode_table(offset_table: BTreeMap<i32, i64>) -> Result<Vec<u8>, BrokerError> {
    Ok(to_fastjson(
        &DelayOffsetFile { offset_table },
        KeyStyle::Bare,
    )?)
}

/// The delay service: the configured levels and each level's delivery progress. One per
/// broker; [`run`] delivers, the send and send-back paths schedule with
/// [`DelayService::to_schedule`].
pub(crate) struct DelayService {
    /// Delay of each level, level 1 first (`messageDelayLevel`, fixed while running).
    levels: Vec<Duration>,
    pub(crate) offsets: DelayOffsets,
}

impl DelayService {
    pub(crate) fn new(levels: Vec<Duration>, offsets: DelayOffsets) -> DelayService {
        DelayService { levels, offsets }
    }

    /// Turns `msg` (properties already parsed into `props`) into a delayed one: real topic
    /// and queue saved in properties, written to the level's schedule queue. `level` is
    /// clamped to the configured levels.
    pub(crate) fn to_schedule(
        &self,
        msg: &mut store::MessageInner,
        props: &mut Properties,
        level: i32,
    ) {
        to_schedule(msg, props, level, self.levels.len());
    }

    /// A slave answering its returning master: stops delivering and waits for a delivery in
    /// flight, so that the progress it answers next is final.
    pub(crate) async fn hand_back(&self, ctx: &BrokerContext) {
        ctx.ha.master_back.store(true, Ordering::Release);
        let _idle = self.offsets.delivering.write().await;
        tracing::info!("the master returned: delayed delivery handed back");
    }
}

/// Queue of `SCHEDULE_TOPIC_XXXX` that holds `level` (levels start at 1).
pub(crate) fn queue_of_level(level: i32) -> i32 {
    level - 1
}

/// [`DelayService::to_schedule`] with `levels` levels.
fn to_schedule(msg: &mut store::MessageInner, props: &mut Properties, level: i32, levels: usize) {
    let level = level.clamp(1, levels.max(1) as i32);
    props.insert(MessageConst::PROPERTY_REAL_TOPIC, msg.topic.clone());
    props.insert(
        MessageConst::PROPERTY_REAL_QUEUE_ID,
        msg.queue_id.to_string(),
    );
    props.insert(MessageConst::PROPERTY_DELAY_TIME_LEVEL, level.to_string());
    msg.topic = SCHEDULE_TOPIC.to_string();
    msg.queue_id = queue_of_level(level);
    msg.properties = props.to_wire_string();
}

/// Runs delayed delivery until the broker stops: on a master after learning its slaves'
/// progress, one task per level.
pub(crate) async fn run(state: Arc<BrokerContext>, delay: Arc<DelayService>) {
    if !state.config().is_slave() {
        learn_slave_progress(&state, &delay).await;
    }
    let mut levels = JoinSet::new();
    for level in 1..=delay.levels.len() as i32 {
        levels.spawn(run_level(state.clone(), delay.clone(), level));
    }
    while levels.join_next().await.is_some() {}
}

/// A master starting up merges the delay progress of its group's slaves (keeping each
/// level's larger offset): what a slave delivered as acting master is not delivered again.
async fn learn_slave_progress(state: &BrokerContext, delay: &DelayService) {
    let answers = cluster::ask_returning_to_slaves(
        state,
        RequestCode::GET_ALL_DELAY_OFFSET,
        "delay progress",
    )
    .await;
    for (slave, body) in answers {
        match delay.offsets.merge_max(&body) {
            Ok(moved) => {
                if moved {
                    delay.offsets.persist();
                }
                tracing::info!(%slave, moved, "learnt a slave's delay progress");
            }
            Err(e) => tracing::warn!(%slave, error = %e, "bad delay progress"),
        }
    }
}

/// Delivers the messages of one level until the broker stops.
async fn run_level(state: Arc<BrokerContext>, delay: Arc<DelayService>, level: i32) {
    if delay.levels.get((level - 1) as usize).is_none() {
        return;
    }
    let queue = queue_of_level(level);
    let mut stop = state.stop_signal();
    loop {
        if *stop.borrow() {
            return;
        }
        if !state.serves_as_master() {
            tokio::select! {
                _ = tokio::time::sleep(IDLE_CHECK) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let wait = deliver_due(&state, &delay, level, queue).await;
        let offset = delay.offsets.get(level);
        let store = state.store.clone();
        let has_more = move || store.max_offset(SCHEDULE_TOPIC, queue) > offset;
        match wait {
            // Nothing stored past our offset: sleep until the queue grows.
            None => {
                state
                    .waiters
                    .wait_for_growth(
                        SCHEDULE_TOPIC,
                        queue,
                        Duration::from_secs(10),
                        has_more,
                        std::future::pending(),
                        stop.clone(),
                    )
                    .await;
            }
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Where a level's progress moves when its queue, holding `(min, max)`, no longer covers it
/// (a read at `offset` answered `status`, OFFSET_TOO_SMALL or OFFSET_OVERFLOW_BADLY): to `min` when
/// retention removed old messages, to `max` when the store was replaced. `None`: stay and
/// wait for the queue to grow, as an acting master (`slave`) must when its progress, learnt
/// from its master, is ahead of what it has replicated yet. Never answers `offset` itself,
/// so the caller's loop always moves or waits.
fn resync(
    status: GetMessageStatus,
    (min, max): (i64, i64),
    offset: i64,
    slave: bool,
) -> Option<i64> {
    let next = match status {
        GetMessageStatus::OffsetTooSmall => min,
        GetMessageStatus::OffsetOverflowBadly if !slave => max,
        _ => return None,
    };
    (next != offset).then_some(next)
}

/// Delivers due messages of a level; returns how long to wait for the next one to become due
/// (`None`: no message waiting).
async fn deliver_due(
    state: &BrokerContext,
    delay: &DelayService,
    level: i32,
    queue: i32,
) -> Option<Duration> {
    let wait = delay.levels.get((level - 1) as usize).copied()?;
    loop {
        let offset = delay.offsets.get(level);
        let got =
            state
                .store
                .get_messages(SCHEDULE_TOPIC, queue, offset, BATCH, usize::MAX, &AcceptAll);
        match got.status {
            GetMessageStatus::Found => {}
            GetMessageStatus::OffsetTooSmall | GetMessageStatus::OffsetOverflowBadly => {
                // `None`: wait for the queue to grow.
                let bounds = (got.min_offset, got.max_offset);
                let next = resync(got.status, bounds, offset, state.store.is_slave())?;
                tracing::warn!(
                    level,
                    offset,
                    next,
                    "delay queue offset out of range, moving"
                );
                delay.offsets.set(level, next);
                continue;
            }
            _ => return None,
        }
        for (record, queue_offset) in got.messages.iter().zip(&got.message_queue_offsets) {
            let Ok(ext) = MessageExt::decode(record) else {
                tracing::error!(level, queue_offset, "unreadable delayed message skipped");
                delay.offsets.set(level, queue_offset + 1);
                continue;
            };
            let due = ext.store_timestamp + wait.as_millis() as i64;
            let now = now_millis();
            if due > now {
                return Some(Duration::from_millis((due - now) as u64));
            }
            let _delivering = delay.offsets.delivering.read().await;
            if !state.serves_as_master() {
                return Some(IDLE_CHECK);
            }
            if let Err(remark) = deliver(state, &ext).await {
                tracing::warn!(level, queue_offset, %remark, "delayed delivery failed, will retry");
                return Some(RETRY_PAUSE);
            }
            delay.offsets.set(level, queue_offset + 1);
        }
        if got.messages.is_empty() {
            return None;
        }
    }
}

/// Writes a due message to its real topic and queue; an acting slave sends it to a live
/// master instead.
async fn deliver(state: &BrokerContext, ext: &MessageExt) -> Result<(), String> {
    let mut props = Properties::parse(&ext.properties);
    let Some(topic) = props
        .get(MessageConst::PROPERTY_REAL_TOPIC)
        .map(str::to_string)
    else {
        // Nothing to deliver to: drop it rather than block the level.
        tracing::error!(msg_id = %ext.msg_id(), "delayed message without REAL_TOPIC dropped");
        return Ok(());
    };
    let queue_id = props
        .get(MessageConst::PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    props.remove(MessageConst::PROPERTY_DELAY_TIME_LEVEL);
    let mut msg = reput_inner(ext, state.store_host());
    msg.topic = topic;
    msg.queue_id = queue_id;
    msg.properties = props.to_wire_string();
    if state.config().is_slave() {
        let target = cluster::forward_to_live_master(state, &msg, PRODUCER_GROUP)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(msg_id = %ext.msg_id(), topic = %msg.topic, %target, "acting master delivered a delayed message");
        return Ok(());
    }
    state.put(vec![msg]).await.map(|_| ()).map_err(|e| e.remark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_level_moves_to_the_queue_or_waits_but_never_stays() {
        // A slave's store answers the offset asked as the next one (offsetCheckInSlave off):
        // taking that answer spun the acting master's level task without ever yielding.
        let ahead = GetMessageStatus::OffsetOverflowBadly;
        assert_eq!(
            resync(ahead, (0, 3), 6, true),
            None,
            "an acting master waits"
        );
        assert_eq!(
            resync(ahead, (0, 3), 6, false),
            Some(3),
            "a master moves to the end"
        );
        let behind = GetMessageStatus::OffsetTooSmall;
        assert_eq!(resync(behind, (5, 9), 2, true), Some(5));
        assert_eq!(resync(behind, (5, 9), 2, false), Some(5));
        for slave in [false, true] {
            for (status, min, max) in [
                (GetMessageStatus::OffsetTooSmall, 4, 9),
                (GetMessageStatus::OffsetOverflowBadly, 0, 4),
            ] {
                assert_eq!(resync(status, (min, max), 4, slave), None);
            }
        }
    }
}
