//! [`AckTable`]: how far the slaves have the master's CommitLog, and the sends waiting for a
//! slave under `SYNC_MASTER`. A waiter is a oneshot keyed by the CommitLog offset it needs;
//! each acknowledgement releases every waiter at or below it. Waiting is asynchronous, so a
//! request-handling task never blocks a thread and sends stay pipelined (upstream lost an
//! order of magnitude of throughput by blocking, issue #1515).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Outcome of waiting for a slave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlaveWait {
    /// A slave has the bytes.
    Acked,
    /// No slave acknowledged in time (`FLUSH_SLAVE_TIMEOUT`).
    Timeout,
    /// No slave connected, or the slaves are too far behind (`SLAVE_NOT_AVAILABLE`).
    NotAvailable,
}

/// One connected slave.
struct Slave {
    addr: String,
    /// Offset it last reported.
    offset: i64,
    /// Its replica id (controller mode: sent first on the HA connection).
    broker_id: Option<i64>,
    /// Controller mode: an asynchronous learner, never a SyncStateSet member.
    learner: bool,
    /// Last time it had everything the master had written when it was last sent data
    /// (controller mode: `haMaxTimeSlaveNotCatchup` counts from here); `None` until then.
    caught_up: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    /// Highest offset any slave reported (upstream `push2SlaveMaxOffset`).
    acked: i64,
    /// Connected slaves by connection id.
    slaves: BTreeMap<u64, Slave>,
    next_slave: u64,
    waiters: BTreeMap<i64, Vec<oneshot::Sender<()>>>,
    /// Writes waiting for a number of slaves (controller mode, `inSyncReplicas`): by that
    /// number, then by offset.
    counted: BTreeMap<usize, BTreeMap<i64, Vec<oneshot::Sender<()>>>>,
    /// Controller mode: this master's replica id and the replicas that must acknowledge a
    /// write (the SyncStateSet; while a change is being reported, old and new together).
    /// `None`: any one slave acknowledges (master/slave mode).
    required: Option<(i64, BTreeSet<i64>)>,
}

impl Inner {
    /// Offset below which every required slave has the log: with `required`, the lowest
    /// offset of its members (a member without a connection has nothing; only the master:
    /// everything); otherwise the highest any slave reported.
    fn watermark(&self) -> i64 {
        let Some((me, set)) = &self.required else {
            return self.acked;
        };
        set.iter()
            .filter(|id| *id != me)
            .map(|id| {
                self.slaves
                    .values()
                    .filter(|s| s.broker_id == Some(*id))
                    .map(|s| s.offset)
                    .max()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Offset below which `n` (at least 1) distinct slaves have the log; -1 while fewer than
    /// `n` are connected.
    fn watermark_of(&self, n: usize) -> i64 {
        let mut best: BTreeMap<Option<i64>, i64> = BTreeMap::new();
        let mut anonymous = Vec::new();
        for s in self.slaves.values() {
            match s.broker_id {
                Some(_) => {
                    let e = best.entry(s.broker_id).or_insert(s.offset);
                    *e = (*e).max(s.offset);
                }
                None => anonymous.push(s.offset),
            }
        }
        let mut offsets: Vec<i64> = best.into_values().chain(anonymous).collect();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        offsets.get(n.max(1) - 1).copied().unwrap_or(-1)
    }

    /// Takes the waiters the watermarks cover.
    fn release(&mut self) -> Vec<oneshot::Sender<()>> {
        let mark = self.watermark();
        let mut ready: Vec<oneshot::Sender<()>> = if mark == i64::MAX {
            std::mem::take(&mut self.waiters)
                .into_values()
                .flatten()
                .collect()
        } else {
            let rest = self.waiters.split_off(&(mark + 1));
            std::mem::replace(&mut self.waiters, rest)
                .into_values()
                .flatten()
                .collect()
        };
        let counts: Vec<usize> = self.counted.keys().copied().collect();
        for n in counts {
            let mark = self.watermark_of(n);
            if let Some(waiting) = self.counted.get_mut(&n) {
                let rest = waiting.split_off(&(mark + 1));
                ready.extend(std::mem::replace(waiting, rest).into_values().flatten());
                if waiting.is_empty() {
                    self.counted.remove(&n);
                }
            }
        }
        ready
    }
}

/// Told the offset below which every required replica has the log after each
/// acknowledgement and each change of the required set (`None`: no required set, or only
/// the master in it).
pub(crate) type ConfirmSink = Box<dyn Fn(Option<i64>) + Send + Sync>;

/// Slave acknowledgements and the sends waiting for them.
#[derive(Default)]
pub(crate) struct AckTable {
    inner: Mutex<Inner>,
    sink: std::sync::OnceLock<ConfirmSink>,
}

impl AckTable {
    /// Installs the [`ConfirmSink`] (once; later calls are ignored).
    pub(crate) fn set_confirm_sink(&self, sink: ConfirmSink) {
        let _ = self.sink.set(sink);
    }

    fn confirmed(g: &Inner) -> Option<i64> {
        g.required.as_ref()?;
        let mark = g.watermark();
        (mark != i64::MAX).then_some(mark)
    }

    fn tell(&self, confirmed: Option<i64>) {
        if let Some(sink) = self.sink.get() {
            sink(confirmed);
        }
    }

    /// A slave at `addr` connected (`learner`: an asynchronous learner, see
    /// [`Self::replicas`]); returns the id its reports and its departure carry.
    pub(crate) fn slave_connected(
        &self,
        addr: String,
        broker_id: Option<i64>,
        learner: bool,
    ) -> u64 {
        let mut g = self.inner.lock();
        let id = g.next_slave;
        g.next_slave += 1;
        g.slaves.insert(
            id,
            Slave {
                addr,
                offset: 0,
                broker_id,
                learner,
                caught_up: None,
            },
        );
        id
    }

    /// Slave `id` went away.
    pub(crate) fn slave_disconnected(&self, id: u64) {
        self.inner.lock().slaves.remove(&id);
    }

    /// Every connected slave's address and the offset it last reported.
    pub(crate) fn slaves(&self) -> Vec<(String, i64)> {
        self.inner
            .lock()
            .slaves
            .values()
            .map(|s| (s.addr.clone(), s.offset))
            .collect()
    }

    /// Slave `id` reports it has everything below `offset`; releases the waiters it covers.
    /// `caught_up`: the master's CommitLog end when it last sent data, and when; the slave
    /// has caught up then if `offset` reaches it.
    pub(crate) fn ack(&self, id: u64, offset: i64, caught_up: Option<(i64, Instant)>) {
        let ready = {
            let mut g = self.inner.lock();
            if let Some(slave) = g.slaves.get_mut(&id) {
                slave.offset = slave.offset.max(offset);
                if let Some((end, at)) = caught_up {
                    if offset >= end && slave.caught_up.is_none_or(|t| at > t) {
                        slave.caught_up = Some(at);
                    }
                }
            }
            g.acked = g.acked.max(offset);
            (g.release(), Self::confirmed(&g))
        };
        let (ready, confirmed) = ready;
        self.tell(confirmed);
        for tx in ready {
            let _ = tx.send(());
        }
    }

    /// Controller mode: the replicas (`set`, with this master's id `me`) whose
    /// acknowledgement a write needs; `None` goes back to "any slave".
    pub(crate) fn set_required(&self, required: Option<(i64, BTreeSet<i64>)>) {
        let ready = {
            let mut g = self.inner.lock();
            g.required = required;
            (g.release(), Self::confirmed(&g))
        };
        let (ready, confirmed) = ready;
        self.tell(confirmed);
        for tx in ready {
            let _ = tx.send(());
        }
    }

    /// Controller mode: how many replicas the SyncStateSet in force has (the master too).
    pub(crate) fn in_sync_replicas(&self) -> usize {
        self.inner
            .lock()
            .required
            .as_ref()
            .map_or(1, |(_, set)| set.len())
    }

    /// Controller mode: the connected slaves that may be SyncStateSet members (asynchronous
    /// learners are not) by replica id — the offset each last reported and when it was last
    /// caught up (the best connection when one has several).
    pub(crate) fn replicas(&self) -> BTreeMap<i64, (i64, Option<Instant>)> {
        let g = self.inner.lock();
        let mut out: BTreeMap<i64, (i64, Option<Instant>)> = BTreeMap::new();
        for s in g.slaves.values().filter(|s| !s.learner) {
            if let Some(id) = s.broker_id {
                let e = out.entry(id).or_insert((s.offset, s.caught_up));
                e.0 = e.0.max(s.offset);
                e.1 = e.1.max(s.caught_up);
            }
        }
        out
    }

    /// Controller mode: if replica `id` (not a learner) has everything the master has written
    /// (`master_end()`, read under the table's lock), writes wait for it from now on as if
    /// it were in the SyncStateSet, and true is answered. Atomic with the check: every
    /// write answered before waited for a watermark at most `master_end()`, so the replica
    /// has every acknowledged message before it is reported in sync.
    pub(crate) fn try_expand(&self, id: i64, master_end: &dyn Fn() -> i64) -> bool {
        let mut g = self.inner.lock();
        let offset = g
            .slaves
            .values()
            .filter(|s| s.broker_id == Some(id) && !s.learner)
            .map(|s| s.offset)
            .max();
        let Some(offset) = offset else {
            return false;
        };
        if offset < master_end() {
            return false;
        }
        match &mut g.required {
            Some((_, set)) => {
                set.insert(id);
                true
            }
            None => false,
        }
    }

    /// Waits until `n` distinct connected slaves (learners too, as upstream counts its
    /// connections) have everything below `end`, at most `timeout` (controller mode with
    /// `inSyncReplicas` n + 1). Answers [`SlaveWait::NotAvailable`] at once when fewer than
    /// `n` slaves are connected; `n` 0 is acknowledged at once.
    pub(crate) async fn wait_slaves(&self, end: i64, n: usize, timeout: Duration) -> SlaveWait {
        if n == 0 {
            return SlaveWait::Acked;
        }
        let rx = {
            let mut g = self.inner.lock();
            if g.watermark_of(n) >= end {
                return SlaveWait::Acked;
            }
            let connected: std::collections::BTreeSet<Option<i64>> = g
                .slaves
                .iter()
                .map(|(conn, s)| s.broker_id.or(Some(-(*conn as i64) - 1)))
                .collect();
            if connected.len() < n {
                return SlaveWait::NotAvailable;
            }
            let (tx, rx) = oneshot::channel();
            g.counted
                .entry(n)
                .or_default()
                .entry(end)
                .or_default()
                .push(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => SlaveWait::Acked,
            _ => {
                let mut g = self.inner.lock();
                if let Some(waiting) = g.counted.get_mut(&n) {
                    if let Some(list) = waiting.get_mut(&end) {
                        list.retain(|tx| !tx.is_closed());
                        if list.is_empty() {
                            waiting.remove(&end);
                        }
                    }
                    if waiting.is_empty() {
                        g.counted.remove(&n);
                    }
                }
                SlaveWait::Timeout
            }
        }
    }

    /// Waits until the slaves have everything below `end`, at most `timeout`: any one slave,
    /// or with a required set (controller mode) every member. Answers
    /// [`SlaveWait::NotAvailable`] at once when no slave (or a required member) is
    /// connected, or (any-slave mode) the nearest one lags `max_gap` bytes or more.
    pub(crate) async fn wait(&self, end: i64, timeout: Duration, max_gap: u64) -> SlaveWait {
        let rx = {
            let mut g = self.inner.lock();
            if g.watermark() >= end {
                return SlaveWait::Acked;
            }
            let unavailable = match &g.required {
                None => g.slaves.is_empty() || (end - g.acked) as u64 >= max_gap,
                Some((me, set)) => set
                    .iter()
                    .any(|id| id != me && !g.slaves.values().any(|s| s.broker_id == Some(*id))),
            };
            if unavailable {
                return SlaveWait::NotAvailable;
            }
            let (tx, rx) = oneshot::channel();
            g.waiters.entry(end).or_default().push(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => SlaveWait::Acked,
            _ => {
                // Drop our closed sender (and any other timed-out ones) from the table.
                let mut g = self.inner.lock();
                if let Some(list) = g.waiters.get_mut(&end) {
                    list.retain(|tx| !tx.is_closed());
                    if list.is_empty() {
                        g.waiters.remove(&end);
                    }
                }
                SlaveWait::Timeout
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_are_released_in_offset_order_and_time_out() {
        let t = Arc::new(AckTable::default());
        let gap = u64::MAX;
        assert_eq!(
            t.wait(10, Duration::from_secs(1), gap).await,
            SlaveWait::NotAvailable
        );
        let slave = t.slave_connected("127.0.0.1:1".into(), None, false);
        let a = tokio::spawn({
            let t = t.clone();
            async move { t.wait(100, Duration::from_secs(10), gap).await }
        });
        let b = tokio::spawn({
            let t = t.clone();
            async move { t.wait(200, Duration::from_millis(50), gap).await }
        });
        // Wait until both are registered.
        while t.inner.lock().waiters.len() < 2 {
            tokio::task::yield_now().await;
        }
        t.ack(slave, 150, None);
        assert_eq!(t.slaves(), vec![("127.0.0.1:1".to_string(), 150)]);
        assert_eq!(a.await.unwrap(), SlaveWait::Acked);
        assert_eq!(b.await.unwrap(), SlaveWait::Timeout);
        assert!(t.inner.lock().waiters.is_empty());
        assert_eq!(t.wait(150, Duration::ZERO, gap).await, SlaveWait::Acked);
        assert_eq!(
            t.wait(1000, Duration::from_secs(1), 100).await,
            SlaveWait::NotAvailable
        );
        t.slave_disconnected(slave);
        assert!(t.slaves().is_empty());
    }

    #[tokio::test]
    async fn with_a_required_set_every_member_must_acknowledge() {
        let t = Arc::new(AckTable::default());
        let gap = u64::MAX;
        // Only the master (id 1) in the set: nothing to wait for.
        t.set_required(Some((1, BTreeSet::from([1]))));
        assert_eq!(t.in_sync_replicas(), 1);
        assert_eq!(t.wait(100, Duration::ZERO, gap).await, SlaveWait::Acked);
        t.set_required(Some((1, BTreeSet::from([1, 2, 3]))));
        // Replica 3 is not connected.
        let two = t.slave_connected("127.0.0.1:2".into(), Some(2), false);
        assert_eq!(
            t.wait(100, Duration::from_secs(1), gap).await,
            SlaveWait::NotAvailable
        );
        let three = t.slave_connected("127.0.0.1:3".into(), Some(3), false);
        let w = tokio::spawn({
            let t = t.clone();
            async move { t.wait(100, Duration::from_secs(10), gap).await }
        });
        while t.inner.lock().waiters.is_empty() {
            tokio::task::yield_now().await;
        }
        let at = Instant::now();
        t.ack(two, 150, Some((150, at)));
        assert!(!w.is_finished(), "replica 3 has not acknowledged yet");
        t.ack(three, 90, Some((150, at)));
        tokio::task::yield_now().await;
        assert!(!w.is_finished());
        t.ack(three, 100, None);
        assert_eq!(w.await.unwrap(), SlaveWait::Acked);
        let replicas = t.replicas();
        assert_eq!(replicas[&2], (150, Some(at)));
        assert_eq!(
            replicas[&3],
            (100, None),
            "replica 3 never reached the master's end"
        );
        assert!(!t.try_expand(3, &|| 150));
        assert!(t.try_expand(2, &|| 150));
        // Shrunk to the master and replica 2: replica 3's lag no longer holds writes.
        t.set_required(Some((1, BTreeSet::from([1, 2]))));
        assert_eq!(t.wait(150, Duration::ZERO, gap).await, SlaveWait::Acked);
        t.slave_disconnected(two);
        t.slave_disconnected(three);
    }

    #[tokio::test]
    async fn a_count_of_slaves_acknowledges_and_learners_are_no_members() {
        let t = Arc::new(AckTable::default());
        assert_eq!(
            t.wait_slaves(100, 0, Duration::ZERO).await,
            SlaveWait::Acked
        );
        let two = t.slave_connected("127.0.0.1:2".into(), Some(2), false);
        assert_eq!(
            t.wait_slaves(100, 2, Duration::from_secs(1)).await,
            SlaveWait::NotAvailable,
            "only one slave connected"
        );
        let learner = t.slave_connected("127.0.0.1:3".into(), Some(3), true);
        let w = tokio::spawn({
            let t = t.clone();
            async move { t.wait_slaves(100, 2, Duration::from_secs(10)).await }
        });
        while t.inner.lock().counted.is_empty() {
            tokio::task::yield_now().await;
        }
        t.ack(two, 150, None);
        tokio::task::yield_now().await;
        assert!(!w.is_finished(), "one of two slaves has it");
        t.ack(learner, 100, None);
        assert_eq!(w.await.unwrap(), SlaveWait::Acked);
        assert!(t.inner.lock().counted.is_empty());
        assert_eq!(
            t.wait_slaves(200, 1, Duration::from_millis(20)).await,
            SlaveWait::Timeout
        );
        assert!(t.inner.lock().counted.is_empty());
        // The learner counts as an acknowledging slave but is no SyncStateSet candidate.
        assert_eq!(t.replicas().keys().copied().collect::<Vec<_>>(), vec![2]);
        t.set_required(Some((1, BTreeSet::from([1]))));
        assert!(
            !t.try_expand(3, &|| 100),
            "a learner joined the SyncStateSet"
        );
        assert!(t.try_expand(2, &|| 150));
    }
}
