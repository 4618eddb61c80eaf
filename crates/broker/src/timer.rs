//! Timer messages (upstream 5.x `TimerMessageStore`): the one owner of messages sent with an
//! arbitrary delivery time, from the send path to their delivery.
//!
//! **Send.** A message (not a transactional half message, no delay level) carrying
//! `TIMER_DELAY_SEC`, `TIMER_DELAY_MS` or `TIMER_DELIVER_MS` (absolute ms, looked at in that
//! order, as upstream's `HookUtils.transformTimerMessage`) whose time is in the future is
//! checked against `timerMaxDelaySec` (too far or unparsable: `MESSAGE_ILLEGAL` with
//! upstream's remark; `timerWheelEnable=false`: `SYSTEM_ERROR`) and written to queue 0 of
//! [`TIMER_TOPIC`] with its real topic and queue in `REAL_TOPIC` / `REAL_QID` and its delivery
//! time in `TIMER_OUT_MS` ([`to_timer`]). A time already past is stored to the topic at once.
//! Unlike upstream, `TIMER_OUT_MS` is the requested time itself, not rounded down to the
//! precision: a message is never delivered before it.
//!
//! **Wheel.** [`run`] reads the timer queue in order and keeps each waiting message in a
//! [`Wheel`]: slot time (the delivery time rounded *up* to `timerPrecisionMs`) -> the
//! message's timer-queue offset, CommitLog offset and size (24 bytes a message, a few slots a
//! second). At each slot time it re-reads the due records, writes them to their real topic and
//! queue (batched per queue), with `TIMER_ENQUEUE_MS` / `TIMER_DEQUEUE_MS` added and
//! `REAL_TOPIC` / `REAL_QID` removed, as upstream. Lateness is at most one precision plus the
//! time to write.
//!
//! **Checkpoint.** `config/timerCheckpoint.json` (written by its [`Persister`] after each
//! pass that moved L or T, so at most about once per precision plus once per delivery pass;
//! and at shutdown) holds a [`TimerCheckpoint`]: `lowWaterOffset` L (every timer message
//! below it is delivered), `scannedOffset` S (the next offset to read) and `deliveredUpToMs`
//! T (every message below S due at or before T is delivered; T is a multiple of the
//! precision at or before the last pass, and below the earliest message still waiting). A
//! start reads from L, skips the messages below S due at or before T, and delivers the rest
//! (none is lost: what was not delivered is at or above L). **Duplicate window**: a message
//! delivered after the last checkpoint write and before a crash (`kill -9`) is delivered again
//! on restart: the deliveries of the last precision interval or so (a pass that delivers
//! moves T, or else L, except for a late-read message due in an interval already passed,
//! which the next interval's write covers), more while a delivery keeps failing (T then
//! stays below the failing message).
//!
//! **Slaves** do not deliver while their master is alive: they keep their master's checkpoint,
//! fetched by the slave sync with GET_TIMER_CHECK_POINT (60, upstream's 56-byte body plus an
//! Apogee field: the master's CommitLog end when the checkpoint was taken, [`encode_body`]). A
//! fetched checkpoint is applied (and persisted) only once the slave's CommitLog has reached
//! that end, so the deliveries it vouches for are on the slave too; a slave restarted or
//! promoted as master then goes on from it without loss or early delivery (duplicates: what
//! the master delivered since the last applied sync).
//!
//! **Acting master.** While its master is gone (as for delay levels,
//! [`BrokerContext::serves_as_master`]), a slave delivers from that checkpoint itself, sending
//! each due message to a live master of another group of the cluster, and keeps its own
//! progress. A master starting up asks its group's slaves for their checkpoint with
//! GET_TIMER_CHECK_POINT carrying `masterReturned`; a slave receiving it stops delivering,
//! waits for a pass in flight and answers, and the master takes the slave's checkpoint when it
//! has delivered further ([`TimerService::adopt_if_further`]), so nothing the slave delivered
//! comes again (what the master delivered after the slave's last sync may).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use remoting::message::{find_property, parse_record, MessageConst, Parsed, Properties};
use remoting::RequestCode;
use serde::{Deserialize, Serialize};
use store::{AcceptAll, GetMessageStatus, MessageExt, MessageInner};

use crate::cluster;
use crate::config::BrokerConfig;
use crate::context::{reput_inner, BrokerContext};
use crate::error::{BrokerError, HandlerError};
use crate::persist::Persister;
use crate::topic::TIMER_TOPIC;

/// The one queue of [`TIMER_TOPIC`].
const TIMER_QUEUE: i32 = 0;
/// Records read per store call while scanning the timer queue.
const SCAN_BATCH: usize = 1024;
/// Most messages written per put (one topic and queue).
const PUT_BATCH: usize = 128;
/// Pause after a failed delivery before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often a slave checks whether it should deliver.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// Producer group named in an acting slave's forwarded delivery.
const PRODUCER_GROUP: &str = "TIMER_PRODUCER";
/// Longest sleep between passes with nothing due (the queue's growth wakes it sooner).
const IDLE_PASS: Duration = Duration::from_secs(10);

/// The properties that ask for a timer.
const TIMER_REQUEST_KEYS: [&str; 3] = [
    MessageConst::PROPERTY_TIMER_DELAY_SEC,
    MessageConst::PROPERTY_TIMER_DELAY_MS,
    MessageConst::PROPERTY_TIMER_DELIVER_MS,
];

/// Removes the timer properties of a message sent with a delay level (the level wins, as
/// upstream's `checkIfTimerMessage`).
pub(crate) fn clear_timer_request(props: &mut Properties) {
    for key in TIMER_REQUEST_KEYS {
        props.remove(key);
    }
}

/// Whether a send asks for a timer: one of the request properties is set, and the message is
/// not already a timer message (in the timer topic or with `TIMER_OUT_MS`).
pub(crate) fn requests_timer(topic: &str, props: &Properties) -> bool {
    topic != TIMER_TOPIC
        && props.get(MessageConst::PROPERTY_TIMER_OUT_MS).is_none()
        && TIMER_REQUEST_KEYS.iter().any(|k| props.get(k).is_some())
}

/// Upstream's remark for an illegal timer message (`WHEEL_TIMER_MSG_ILLEGAL`).
fn illegal(config: &BrokerConfig) -> HandlerError {
    HandlerError::MessageIllegal(format!(
        "timer message illegal, the delay time should not be bigger than the max delay {}ms; \
         or if set del msg, the delay time should be bigger than the current time",
        config.timer_max_delay_sec.saturating_mul(1000)
    ))
}

/// Turns a message asking for a timer ([`requests_timer`]) into a timer message, or leaves it
/// for its topic when its time has come already; `now` is the current time in ms.
pub(crate) fn to_timer(
    msg: &mut MessageInner,
    props: &mut Properties,
    config: &BrokerConfig,
    now: i64,
) -> Result<(), HandlerError> {
    if !config.timer_wheel_enable {
        return Err(HandlerError::System(
            "accurate timer message is not enabled, timerWheelEnable is false".into(),
        ));
    }
    if props
        .get(MessageConst::PROPERTY_TIMER_DEL_UNIQKEY)
        .is_some()
    {
        // Upstream cancels a waiting timer message with this; Apogee's wheel cannot.
        return Err(HandlerError::MessageIllegal(
            "timer message deletion (TIMER_DEL_UNIQKEY) is not supported".into(),
        ));
    }
    let number = |key: &str| props.get(key).map(|v| v.trim().parse::<i64>());
    let deliver_ms = if let Some(sec) = number(MessageConst::PROPERTY_TIMER_DELAY_SEC) {
        sec.ok()
            .and_then(|s| s.checked_mul(1000))
            .and_then(|d| now.checked_add(d))
    } else if let Some(ms) = number(MessageConst::PROPERTY_TIMER_DELAY_MS) {
        ms.ok().and_then(|d| now.checked_add(d))
    } else {
        number(MessageConst::PROPERTY_TIMER_DELIVER_MS).and_then(Result::ok)
    };
    let Some(deliver_ms) = deliver_ms else {
        return Err(illegal(config));
    };
    if deliver_ms <= now {
        return Ok(());
    }
    let max_ms = i64::try_from(config.timer_max_delay_sec.saturating_mul(1000)).unwrap_or(i64::MAX);
    if deliver_ms - now > max_ms {
        return Err(illegal(config));
    }
    props.insert(MessageConst::PROPERTY_TIMER_OUT_MS, deliver_ms.to_string());
    props.insert(MessageConst::PROPERTY_REAL_TOPIC, msg.topic.clone());
    props.insert(
        MessageConst::PROPERTY_REAL_QUEUE_ID,
        msg.queue_id.to_string(),
    );
    msg.topic = TIMER_TOPIC.to_string();
    msg.queue_id = TIMER_QUEUE;
    msg.properties = props.to_wire_string();
    Ok(())
}

/// The messages of one slot (their timer-queue offsets: 8 bytes a message, where the record
/// is comes from the queue at delivery) and the lowest of them.
struct Slot {
    min_queue_offset: i64,
    msgs: Vec<i64>,
}

/// The waiting messages by slot. Pure: the time is always passed in.
pub(crate) struct Wheel {
    precision: i64,
    slots: BTreeMap<i64, Slot>,
    len: usize,
}

impl Wheel {
    /// An empty wheel whose slots are `precision_ms` apart (at least 1).
    pub(crate) fn new(precision_ms: u64) -> Wheel {
        Wheel {
            precision: i64::try_from(precision_ms).unwrap_or(i64::MAX).max(1),
            slots: BTreeMap::new(),
            len: 0,
        }
    }

    /// The slot of a delivery time: the first multiple of the precision at or after it, so
    /// that a message is never delivered early.
    fn slot_of(&self, deliver_ms: i64) -> i64 {
        let p = self.precision;
        let down = deliver_ms.div_euclid(p) * p;
        if down == deliver_ms {
            down
        } else {
            down.saturating_add(p)
        }
    }

    /// The last multiple of the precision at or before `ms`.
    fn floor(&self, ms: i64) -> i64 {
        ms.div_euclid(self.precision) * self.precision
    }

    /// Adds the message at `queue_offset` of the timer queue, due at `deliver_ms`.
    pub(crate) fn insert(&mut self, deliver_ms: i64, queue_offset: i64) {
        self.insert_at(self.slot_of(deliver_ms), vec![queue_offset]);
    }

    fn insert_at(&mut self, slot: i64, msgs: Vec<i64>) {
        let Some(min) = msgs.iter().copied().min() else {
            return;
        };
        self.len += msgs.len();
        let s = self.slots.entry(slot).or_insert_with(|| Slot {
            min_queue_offset: min,
            msgs: Vec::new(),
        });
        s.min_queue_offset = s.min_queue_offset.min(min);
        s.msgs.extend(msgs);
    }

    /// Removes and returns the slots due at `now` (slot time at or before it), earliest first.
    pub(crate) fn take_due(&mut self, now: i64) -> Vec<(i64, Vec<i64>)> {
        let later = match now.checked_add(1) {
            Some(after) => self.slots.split_off(&after),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.slots, later);
        due.into_iter()
            .map(|(slot, s)| {
                self.len -= s.msgs.len();
                (slot, s.msgs)
            })
            .collect()
    }

    /// Puts back messages of `slot` whose delivery failed.
    pub(crate) fn put_back(&mut self, slot: i64, msgs: Vec<i64>) {
        self.insert_at(slot, msgs);
    }

    /// The earliest slot time with a message waiting.
    pub(crate) fn next_slot(&self) -> Option<i64> {
        self.slots.keys().next().copied()
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The checkpoint after a pass at `now` that read the timer queue up to `scanned`
    /// (exclusive) and delivered what was due, except what waits in the wheel.
    pub(crate) fn checkpoint(
        &self,
        now: i64,
        scanned: i64,
        commit_log_end: i64,
    ) -> TimerCheckpoint {
        let low_water = self
            .slots
            .values()
            .map(|s| s.min_queue_offset)
            .min()
            .unwrap_or(scanned);
        let mut up_to = self.floor(now);
        if let Some(first) = self.next_slot() {
            // Everything waiting is due after `first - precision`.
            up_to = up_to.min(first.saturating_sub(self.precision));
        }
        TimerCheckpoint {
            low_water_offset: low_water,
            delivered_up_to_ms: up_to,
            scanned_offset: scanned,
            commit_log_end,
            ..TimerCheckpoint::default()
        }
    }
}

/// Progress of timer delivery, persisted in `config/timerCheckpoint.json` (see the module
/// comment for what each field vouches for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TimerCheckpoint {
    /// Every timer message below this timer-queue offset is delivered.
    pub(crate) low_water_offset: i64,
    /// Every message below `scanned_offset` due at or before this time (ms) is delivered.
    pub(crate) delivered_up_to_ms: i64,
    /// The next timer-queue offset to read.
    pub(crate) scanned_offset: i64,
    /// The CommitLog end when it was taken: the deliveries it vouches for are below it.
    pub(crate) commit_log_end: i64,
    /// Data version (upstream `DataVersion`): time of the last change and a change counter.
    pub(crate) version_timestamp: i64,
    pub(crate) version_counter: i64,
}

impl TimerCheckpoint {
    /// Whether the message at `queue_offset` due at `deliver_ms` was delivered before it.
    pub(crate) fn delivered(&self, queue_offset: i64, deliver_ms: i64) -> bool {
        queue_offset < self.low_water_offset
            || (queue_offset < self.scanned_offset && deliver_ms <= self.delivered_up_to_ms)
    }

    /// Same progress (the version aside).
    fn same_progress(&self, other: &TimerCheckpoint) -> bool {
        (
            self.low_water_offset,
            self.delivered_up_to_ms,
            self.scanned_offset,
        ) == (
            other.low_water_offset,
            other.delivered_up_to_ms,
            other.scanned_offset,
        )
    }
}

/// Length of upstream's GET_TIMER_CHECK_POINT body (`TimerCheckpoint.encode`).
const UPSTREAM_BODY_LEN: usize = 56;

/// The GET_TIMER_CHECK_POINT (60) body: upstream's layout, big-endian i64s, then Apogee's
/// field (upstream's decoder reads the first 56 bytes and ignores the rest):
///
/// | bytes | upstream field | Apogee value |
/// |---|---|---|
/// | 0-7 | `lastReadTimeMs` | `deliveredUpToMs` |
/// | 8-15 | `lastTimerLogFlushPos` (where replay starts) | `lowWaterOffset` (our "timer log" is the timer queue) |
/// | 16-23 | `lastTimerQueueOffset` | `scannedOffset` |
/// | 24-31 | `masterTimerQueueOffset` | `scannedOffset` |
/// | 32-39 | `dataVersion.stateVersion` | 0 |
/// | 40-47 | `dataVersion.timestamp` | `versionTimestamp` |
/// | 48-55 | `dataVersion.counter` | `versionCounter` |
/// | 56-63 | - | `commitLogEnd` |
pub(crate) fn encode_body(cp: &TimerCheckpoint) -> Vec<u8> {
    [
        cp.delivered_up_to_ms,
        cp.low_water_offset,
        cp.scanned_offset,
        cp.scanned_offset,
        0,
        cp.version_timestamp,
        cp.version_counter,
        cp.commit_log_end,
    ]
    .iter()
    .flat_map(|v| v.to_be_bytes())
    .collect()
}

/// Reads a GET_TIMER_CHECK_POINT body ([`encode_body`]); a 56-byte upstream body has no
/// CommitLog end (0).
pub(crate) fn decode_body(body: &[u8]) -> Option<TimerCheckpoint> {
    if body.len() < UPSTREAM_BODY_LEN {
        return None;
    }
    let at = |i: usize| -> Option<i64> {
        let bytes = body.get(i * 8..i * 8 + 8)?;
        Some(i64::from_be_bytes(bytes.try_into().ok()?))
    };
    Some(TimerCheckpoint {
        delivered_up_to_ms: at(0)?,
        low_water_offset: at(1)?,
        scanned_offset: at(2)?,
        version_timestamp: at(5)?,
        version_counter: at(6)?,
        commit_log_end: at(7).unwrap_or(0),
    })
}

/// The timer service's state shared with the handlers and the slave sync: the checkpoint and
/// the one writer of its file.
pub(crate) struct TimerService {
    checkpoint: Arc<Mutex<TimerCheckpoint>>,
    /// The only writer of `config/timerCheckpoint.json`.
    persister: Persister,
    /// A slave's fetched master checkpoint its CommitLog does not cover yet.
    pending: Mutex<Option<TimerCheckpoint>>,
    /// Held (shared) by each delivery pass; taken exclusively by a slave handing delivery
    /// back to its returning master.
    delivering: tokio::sync::RwLock<()>,
}

impl TimerService {
    pub(crate) fn load(root: &Path) -> Result<TimerService, BrokerError> {
        let path = root.join("config").join("timerCheckpoint.json");
        let mut cp = TimerCheckpoint::default();
        if let Some(data) = durable::read_optional(&path)? {
            cp = serde_json::from_slice(&data).map_err(|e| BrokerError::Parse {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        let checkpoint = Arc::new(Mutex::new(cp));
        let persister = {
            let checkpoint = checkpoint.clone();
            Persister::new(path, move || {
                let cp = *checkpoint.lock();
                serde_json::to_vec_pretty(&cp).map_err(|e| BrokerError::Parse {
                    path: PathBuf::from("timerCheckpoint.json"),
                    reason: e.to_string(),
                })
            })?
        };
        Ok(TimerService {
            checkpoint,
            persister,
            pending: Mutex::new(None),
            delivering: tokio::sync::RwLock::new(()),
        })
    }

    pub(crate) fn checkpoint(&self) -> TimerCheckpoint {
        *self.checkpoint.lock()
    }

    /// Records new progress (the version changes only when the progress does) and, when a
    /// delivery moved the low water or the delivered time, asks for the file to be written
    /// (off this thread). A scan alone (`scannedOffset`) is written with the next of those:
    /// the file then holds an older, still valid checkpoint, and a busy producer does not
    /// cause a write per pass.
    fn advance(&self, mut next: TimerCheckpoint) {
        let mut cp = self.checkpoint.lock();
        if cp.same_progress(&next) {
            return;
        }
        let delivered = (cp.low_water_offset, cp.delivered_up_to_ms)
            != (next.low_water_offset, next.delivered_up_to_ms);
        next.version_counter = cp.version_counter + 1;
        next.version_timestamp = remoting::message::now_millis();
        *cp = next;
        drop(cp);
        if delivered {
            self.persister.request();
        }
    }

    /// A slave's copy of its master's checkpoint (a GET_TIMER_CHECK_POINT body), applied once
    /// this broker's CommitLog reaches `commit_log_max` (see the module comment); the oldest
    /// checkpoint not applied yet waits for that.
    pub(crate) fn learn_from_master(
        &self,
        body: &[u8],
        commit_log_max: i64,
    ) -> Result<(), BrokerError> {
        let fetched = decode_body(body).ok_or_else(|| BrokerError::Parse {
            path: PathBuf::from("<GET_TIMER_CHECK_POINT body>"),
            reason: format!(
                "{} bytes, expected at least {UPSTREAM_BODY_LEN}",
                body.len()
            ),
        })?;
        let mut pending = self.pending.lock();
        let mut apply = None;
        if let Some(p) = *pending {
            if p.commit_log_end <= commit_log_max {
                apply = Some(p);
                *pending = None;
            }
        }
        if pending.is_none() {
            if fetched.commit_log_end <= commit_log_max {
                apply = Some(fetched);
            } else {
                *pending = Some(fetched);
            }
        }
        drop(pending);
        if let Some(cp) = apply {
            *self.checkpoint.lock() = cp;
            self.persister.request();
        }
        Ok(())
    }

    /// A returning master takes the checkpoint of a slave that delivered as acting master
    /// (its delivered time is later than ours): everything either of them delivered below
    /// it is covered, and what the slave never had is at or above its scanned offset.
    fn adopt_if_further(&self, slave: TimerCheckpoint) -> bool {
        let mut cp = self.checkpoint.lock();
        if slave.delivered_up_to_ms <= cp.delivered_up_to_ms {
            return false;
        }
        *cp = slave;
        drop(cp);
        self.persister.request();
        true
    }

    /// A slave answering its returning master: stops delivering and waits for a delivery
    /// pass in flight, so that the checkpoint it answers next is final.
    pub(crate) async fn hand_back(&self, ctx: &BrokerContext) {
        ctx.ha.master_back.store(true, Ordering::Release);
        let _idle = self.delivering.write().await;
        tracing::info!("the master returned: timer delivery handed back");
    }

    /// Writes the checkpoint file with the latest progress and resolves once it is durable.
    pub(crate) async fn flush(&self) -> Result<(), BrokerError> {
        self.persister.flush().await
    }
}

/// Where the scan of the timer queue is, and what a restart skips.
struct Scan {
    /// The next timer-queue offset to read.
    next: i64,
    /// The checkpoint the broker started from, applied to offsets below `skip_below`.
    start: TimerCheckpoint,
    skip_below: i64,
}

/// Runs timer delivery until the broker stops: on a master after learning a slave's acting
/// progress, on a slave only while it acts as master ([`BrokerContext::serves_as_master`]).
pub(crate) async fn run(state: Arc<BrokerContext>, timer: Arc<TimerService>) {
    if !state.config().is_slave() {
        learn_slave_checkpoint(&state, &timer).await;
    }
    let mut stop = state.stop_signal();
    loop {
        if *stop.borrow() {
            return;
        }
        if state.serves_as_master() {
            deliver_from_checkpoint(&state, &timer, &mut stop).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(IDLE_CHECK) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Delivers while this broker should: first reads the timer queue from the checkpoint's low
/// water up to its end (delivering nothing meanwhile), then, pass after pass, reads what was
/// added, delivers what is due and records the progress.
async fn deliver_from_checkpoint(
    state: &BrokerContext,
    timer: &TimerService,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) {
    let mut wheel = Wheel::new(state.config().timer_precision());
    let start = timer.checkpoint();
    let min = state.store.min_offset(TIMER_TOPIC, TIMER_QUEUE);
    if start.low_water_offset < min {
        tracing::warn!(
            from = start.low_water_offset,
            min,
            "timer messages below the queue's first offset were removed by retention"
        );
    }
    let mut scan = Scan {
        next: start.low_water_offset.max(min),
        start,
        skip_below: start
            .scanned_offset
            .min(state.store.max_offset(TIMER_TOPIC, TIMER_QUEUE)),
    };
    while scan.next < scan.skip_below && !*stop.borrow() {
        if read_some(state, &mut wheel, &mut scan) == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    scan.skip_below = 0;
    tracing::info!(
        waiting = wheel.len(),
        from = start.low_water_offset,
        acting_master = state.config().is_slave(),
        "timer wheel loaded"
    );
    loop {
        if *stop.borrow() || !state.serves_as_master() {
            return;
        }
        while read_some(state, &mut wheel, &mut scan) > 0 {
            tokio::task::yield_now().await;
        }
        let now = remoting::message::now_millis();
        let failed = deliver_due(state, timer, &mut wheel, now).await;
        let end = state.store.commit_log_max_offset();
        timer.advance(wheel.checkpoint(now, scan.next, end));
        let wait = if failed {
            RETRY_PAUSE
        } else {
            wheel
                .next_slot()
                .map(|slot| {
                    let ms = slot.saturating_sub(remoting::message::now_millis()).max(0);
                    Duration::from_millis(ms as u64)
                })
                .unwrap_or(IDLE_PASS)
                .min(IDLE_PASS)
        };
        if wait.is_zero() {
            continue;
        }
        let next = scan.next;
        let store = state.store.clone();
        let grown = move || store.max_offset(TIMER_TOPIC, TIMER_QUEUE) > next;
        state
            .waiters
            .wait_for_growth(
                TIMER_TOPIC,
                TIMER_QUEUE,
                wait,
                grown,
                std::future::pending(),
                stop.clone(),
            )
            .await;
    }
}

/// A master starting up asks its group's slaves (found at the NameServer) for their timer
/// checkpoint, each handing delivery back first, and takes one a slave advanced as acting
/// master ([`TimerService::adopt_if_further`]): what it delivered is not delivered again.
async fn learn_slave_checkpoint(state: &BrokerContext, timer: &TimerService) {
    let answers = cluster::ask_returning_to_slaves(
        state,
        RequestCode::GET_TIMER_CHECK_POINT,
        "timer checkpoint",
    )
    .await;
    for (slave, body) in answers {
        match decode_body(&body) {
            Some(cp) if timer.adopt_if_further(cp) => {
                tracing::info!(%slave, checkpoint = ?cp, "took the timer checkpoint of a slave that acted as master")
            }
            Some(_) => {}
            None => tracing::warn!(%slave, "bad timer checkpoint from a slave"),
        }
    }
}

/// Reads the next records of the timer queue into the wheel; returns how many were read.
fn read_some(state: &BrokerContext, wheel: &mut Wheel, scan: &mut Scan) -> usize {
    let got = state.store.get_messages(
        TIMER_TOPIC,
        TIMER_QUEUE,
        scan.next,
        SCAN_BATCH,
        usize::MAX,
        &AcceptAll,
    );
    match got.status {
        GetMessageStatus::Found => {}
        GetMessageStatus::OffsetTooSmall | GetMessageStatus::OffsetOverflowBadly => {
            tracing::warn!(
                offset = scan.next,
                next = got.next_begin_offset,
                "timer queue offset out of range, moving"
            );
            let moved = got.next_begin_offset != scan.next;
            scan.next = got.next_begin_offset;
            return usize::from(moved);
        }
        _ => return 0,
    }
    let read = got.messages.len();
    for (record, &queue_offset) in got.messages.iter().zip(&got.message_queue_offsets) {
        scan.next = queue_offset + 1;
        let Ok(Parsed::Message(view)) = parse_record(record, false) else {
            tracing::error!(queue_offset, "unreadable timer message skipped");
            continue;
        };
        // Without a readable time it is due now: delivered rather than kept forever.
        let deliver_ms = find_property(&view.properties, MessageConst::PROPERTY_TIMER_OUT_MS)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if queue_offset < scan.skip_below && scan.start.delivered(queue_offset, deliver_ms) {
            continue;
        }
        wheel.insert(deliver_ms, queue_offset);
    }
    if got.next_begin_offset > scan.next {
        scan.next = got.next_begin_offset;
    }
    read
}

/// Delivers every slot due at `now` (an acting slave sends each message to a live master of
/// another group); what cannot be written goes back to the wheel. Returns whether a write
/// failed or delivery is no longer this broker's.
async fn deliver_due(
    state: &BrokerContext,
    timer: &TimerService,
    wheel: &mut Wheel,
    now: i64,
) -> bool {
    let _delivering = timer.delivering.read().await;
    let store_host = state.store_host();
    let acting = state.config().is_slave();
    let mut failed = !state.serves_as_master();
    for (slot, msgs) in wheel.take_due(now) {
        if failed {
            wheel.put_back(slot, msgs);
            continue;
        }
        // (topic, queue) -> messages to write there, with their wheel entries.
        let mut by_queue: HashMap<(String, i32), Vec<(i64, MessageInner)>> = HashMap::new();
        for w in msgs {
            if let Some(msg) = due_message(state, w, store_host, now) {
                by_queue
                    .entry((msg.topic.clone(), msg.queue_id))
                    .or_default()
                    .push((w, msg));
            }
        }
        let mut undelivered = Vec::new();
        for (_, batch) in by_queue {
            let mut rest = batch.into_iter().peekable();
            while rest.peek().is_some() {
                let chunk: Vec<(i64, MessageInner)> = rest.by_ref().take(PUT_BATCH).collect();
                if failed {
                    undelivered.extend(chunk.into_iter().map(|(w, _)| w));
                    continue;
                }
                if acting {
                    for (w, msg) in chunk {
                        if failed {
                            undelivered.push(w);
                            continue;
                        }
                        if let Err(e) =
                            cluster::forward_to_live_master(state, &msg, PRODUCER_GROUP).await
                        {
                            tracing::warn!(error = %e, "acting master's timer delivery failed, will retry");
                            failed = true;
                            undelivered.push(w);
                        }
                    }
                    continue;
                }
                let (ws, inners): (Vec<i64>, Vec<MessageInner>) = chunk.into_iter().unzip();
                if let Err(e) = state.put(inners).await {
                    tracing::warn!(remark = %e.remark, "timer delivery failed, will retry");
                    failed = true;
                    undelivered.extend(ws);
                }
            }
        }
        wheel.put_back(slot, undelivered);
    }
    failed
}

/// The message to write for the due message at `queue_offset` of the timer queue; `None`
/// (logged) when its record cannot be read or names no real topic: such a message is dropped
/// rather than retried forever.
fn due_message(
    state: &BrokerContext,
    queue_offset: i64,
    store_host: std::net::SocketAddr,
    now: i64,
) -> Option<MessageInner> {
    let record = state
        .store
        .commit_log_offset_in_queue(TIMER_TOPIC, TIMER_QUEUE, queue_offset)
        .and_then(|phys| state.store.message_by_offset(phys));
    let Some(record) = record else {
        tracing::error!(
            queue_offset,
            "timer message no longer in the store, dropped"
        );
        return None;
    };
    let ext = match MessageExt::decode(&record) {
        Ok(ext) => ext,
        Err(e) => {
            tracing::error!(queue_offset, error = %e, "unreadable timer message dropped");
            return None;
        }
    };
    let mut props = Properties::parse(&ext.properties);
    let Some(topic) = props.remove(MessageConst::PROPERTY_REAL_TOPIC) else {
        tracing::error!(msg_id = %ext.msg_id(), "timer message without REAL_TOPIC dropped");
        return None;
    };
    let queue_id = props
        .remove(MessageConst::PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    props.insert(
        MessageConst::PROPERTY_TIMER_ENQUEUE_MS,
        ext.store_timestamp.to_string(),
    );
    props.insert(MessageConst::PROPERTY_TIMER_DEQUEUE_MS, now.to_string());
    let mut msg = reput_inner(&ext, store_host);
    msg.topic = topic;
    msg.queue_id = queue_id;
    msg.properties = props.to_wire_string();
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_due_before_its_time_and_at_most_one_precision_late() {
        let mut wheel = Wheel::new(1000);
        wheel.insert(10_001, 0);
        wheel.insert(10_000, 1);
        wheel.insert(10_999, 2);
        assert!(wheel.take_due(9_999).is_empty());
        let due = wheel.take_due(10_000);
        assert_eq!(due, vec![(10_000, vec![1])]);
        assert!(wheel.take_due(10_998).is_empty(), "10,001 is due at 11,000");
        let due = wheel.take_due(11_000);
        assert_eq!(due, vec![(11_000, vec![0, 2])]);
        assert_eq!(wheel.len(), 0);
        // Every delivery time, any clock: never early, late by less than the precision.
        let mut wheel = Wheel::new(200);
        for (i, deliver) in [1, 199, 200, 201, 777, 1_000_003].into_iter().enumerate() {
            wheel.insert(deliver, i as i64);
            let slot = wheel.next_slot().unwrap();
            assert!(
                slot >= deliver && slot - deliver < 200,
                "{deliver} -> {slot}"
            );
            assert!(wheel.take_due(deliver - 1).is_empty());
            assert_eq!(wheel.take_due(slot).len(), 1);
        }
    }

    #[test]
    fn checkpoint_tracks_low_water_and_delivered_time() {
        let mut wheel = Wheel::new(1000);
        // Nothing waiting: all scanned is delivered up to the last whole second.
        let cp = wheel.checkpoint(5_500, 7, 0);
        assert_eq!(
            (
                cp.low_water_offset,
                cp.delivered_up_to_ms,
                cp.scanned_offset
            ),
            (7, 5_000, 7)
        );
        wheel.insert(9_000, 3);
        wheel.insert(6_500, 5);
        let cp = wheel.checkpoint(5_500, 7, 0);
        assert_eq!((cp.low_water_offset, cp.delivered_up_to_ms), (3, 5_000));
        // A failed slot goes back: the delivered time stays below it.
        let due = wheel.take_due(7_200);
        assert_eq!(due.len(), 1);
        let (slot, msgs) = due.into_iter().next().unwrap();
        wheel.put_back(slot, msgs);
        let cp = wheel.checkpoint(7_200, 7, 0);
        assert_eq!(cp.delivered_up_to_ms, 6_000);
        assert!(!cp.delivered(5, 6_500));
        assert!(!cp.delivered(3, 9_000));
        assert!(cp.delivered(4, 5_900), "scanned, due before 6,000");
        assert!(cp.delivered(2, 9_999), "below the low water");
        assert!(!cp.delivered(8, 100), "not scanned yet");
    }

    #[test]
    fn restart_from_a_checkpoint_loses_nothing_and_repeats_nothing_before_it() {
        // Messages (queue offset, delivery ms) and a clock that moves pass by pass.
        let msgs: Vec<(i64, i64)> = (0..40).map(|i| (i, 1_000 + (i * 7_919) % 20_000)).collect();
        let mut wheel = Wheel::new(1000);
        let mut delivered = std::collections::BTreeSet::new();
        let mut cp = TimerCheckpoint::default();
        let mut scanned = 0;
        for now in (0..12_000).step_by(700) {
            // Messages arrive five per pass.
            while scanned < msgs.len() as i64 && scanned < (now / 700 + 1) * 5 {
                let (o, d) = msgs[scanned as usize];
                wheel.insert(d, o);
                scanned += 1;
            }
            for (_, due) in wheel.take_due(now) {
                for o in due {
                    assert!(msgs[o as usize].1 <= now, "early");
                    delivered.insert(o);
                }
            }
            cp = wheel.checkpoint(now, scanned, 0);
        }
        // Crash: rebuild from the checkpoint as `run` does.
        let mut restarted = Wheel::new(1000);
        for &(o, d) in msgs.iter().skip(cp.low_water_offset as usize) {
            if !cp.delivered(o, d) {
                restarted.insert(d, o);
            }
        }
        let again: Vec<i64> = restarted
            .take_due(i64::MAX - 1)
            .into_iter()
            .flat_map(|(_, m)| m)
            .collect();
        for (o, _) in &msgs {
            assert!(
                delivered.contains(o) || again.contains(o),
                "message {o} lost"
            );
        }
        assert!(
            again.iter().all(|o| !delivered.contains(o)),
            "a message delivered before the checkpoint came again: {again:?}"
        );
    }

    #[test]
    fn body_has_upstream_layout_and_our_commit_log_end() {
        let cp = TimerCheckpoint {
            low_water_offset: 3,
            delivered_up_to_ms: 1_700_000_000_000,
            scanned_offset: 9,
            commit_log_end: 4096,
            version_timestamp: 5,
            version_counter: 6,
        };
        let body = encode_body(&cp);
        assert_eq!(body.len(), 64);
        assert_eq!(&body[0..8], &1_700_000_000_000_i64.to_be_bytes());
        assert_eq!(&body[16..24], &9_i64.to_be_bytes());
        assert_eq!(&body[24..32], &9_i64.to_be_bytes());
        assert_eq!(decode_body(&body), Some(cp));
        // Upstream's 56 bytes: no CommitLog end; shorter is refused.
        assert_eq!(decode_body(&body[..56]).map(|c| c.commit_log_end), Some(0));
        assert_eq!(decode_body(&body[..55]), None);
    }

    #[test]
    fn a_slave_applies_a_master_checkpoint_once_its_commit_log_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let timer = TimerService::load(dir.path()).unwrap();
        let first = TimerCheckpoint {
            scanned_offset: 5,
            commit_log_end: 1000,
            ..TimerCheckpoint::default()
        };
        timer.learn_from_master(&encode_body(&first), 900).unwrap();
        assert_eq!(timer.checkpoint().scanned_offset, 0, "not replicated yet");
        let second = TimerCheckpoint {
            scanned_offset: 8,
            commit_log_end: 2000,
            ..first
        };
        timer
            .learn_from_master(&encode_body(&second), 1500)
            .unwrap();
        assert_eq!(timer.checkpoint().scanned_offset, 5, "the first applies");
        timer
            .learn_from_master(&encode_body(&second), 2000)
            .unwrap();
        assert_eq!(timer.checkpoint().scanned_offset, 8);
        assert!(timer.learn_from_master(&[1, 2, 3], 0).is_err());
    }

    #[test]
    fn send_validation_follows_upstream() {
        let config = BrokerConfig::default();
        let now = 1_000_000;
        let timer = |pairs: &[(&str, &str)], config: &BrokerConfig| {
            let mut props = Properties::new();
            for (k, v) in pairs {
                props.insert(*k, *v);
            }
            let mut msg = MessageInner::new("T", 3, &b"x"[..]);
            to_timer(&mut msg, &mut props, config, now).map(|()| msg)
        };
        let m = timer(&[(MessageConst::PROPERTY_TIMER_DELAY_SEC, "10")], &config).unwrap();
        assert_eq!(m.topic, TIMER_TOPIC);
        assert_eq!(m.queue_id, 0);
        let props = Properties::parse(&m.properties);
        assert_eq!(
            props.get(MessageConst::PROPERTY_TIMER_OUT_MS),
            Some("1010000")
        );
        assert_eq!(props.get(MessageConst::PROPERTY_REAL_TOPIC), Some("T"));
        assert_eq!(props.get(MessageConst::PROPERTY_REAL_QUEUE_ID), Some("3"));
        let m = timer(&[(MessageConst::PROPERTY_TIMER_DELAY_MS, "1500")], &config).unwrap();
        assert!(m.properties.contains("1001500"));
        let m = timer(
            &[(MessageConst::PROPERTY_TIMER_DELIVER_MS, "1002345")],
            &config,
        )
        .unwrap();
        assert!(m.properties.contains("1002345"));
        // A time already past: stored to its topic as is.
        let m = timer(&[(MessageConst::PROPERTY_TIMER_DELIVER_MS, "5")], &config).unwrap();
        assert_eq!(m.topic, "T");
        // Too far, unparsable: MESSAGE_ILLEGAL with upstream's remark.
        for bad in [
            (MessageConst::PROPERTY_TIMER_DELAY_SEC, "259201"),
            (MessageConst::PROPERTY_TIMER_DELAY_MS, "soon"),
            (
                MessageConst::PROPERTY_TIMER_DELAY_SEC,
                "9223372036854775807",
            ),
        ] {
            let err = timer(&[bad], &config).unwrap_err();
            assert!(
                matches!(&err, HandlerError::MessageIllegal(r) if r.contains("max delay 259200000ms")),
                "{bad:?}: {err}"
            );
        }
        assert!(timer(
            &[(MessageConst::PROPERTY_TIMER_DELAY_SEC, "259200")],
            &config
        )
        .is_ok());
        let off = BrokerConfig {
            timer_wheel_enable: false,
            ..BrokerConfig::default()
        };
        let err = timer(&[(MessageConst::PROPERTY_TIMER_DELAY_SEC, "1")], &off).unwrap_err();
        assert!(matches!(&err, HandlerError::System(r) if r.contains("timerWheelEnable is false")));
        let mut props = Properties::new();
        props.insert(MessageConst::PROPERTY_TIMER_DELAY_SEC, "1");
        assert!(requests_timer("T", &props));
        assert!(!requests_timer(TIMER_TOPIC, &props));
        clear_timer_request(&mut props);
        assert!(!requests_timer("T", &props));
    }
}
