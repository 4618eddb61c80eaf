//! [`AckTable`]: how far the slaves have the master's CommitLog, and the sends waiting for a
//! slave under `SYNC_MASTER`. A waiter is a oneshot keyed by the CommitLog offset it needs;
//! each acknowledgement releases every waiter at or below it. Waiting is asynchronous, so a
//! request-handling task never blocks a thread and sends stay pipelined (upstream lost an
//! order of magnitude of throughput by blocking, issue #1515).

use std::collections::BTreeMap;
use std::time::Duration;

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

#[derive(Default)]
struct Inner {
    /// Highest offset any slave reported (upstream `push2SlaveMaxOffset`).
    acked: i64,
    /// Connected slaves by connection id: the slave's address and the offset it last reported.
    slaves: BTreeMap<u64, (String, i64)>,
    next_slave: u64,
    waiters: BTreeMap<i64, Vec<oneshot::Sender<()>>>,
}

/// Slave acknowledgements and the sends waiting for them.
#[derive(Default)]
pub(crate) struct AckTable {
    inner: Mutex<Inner>,
}

impl AckTable {
    /// A slave at `addr` connected; returns the id its reports and its departure carry.
    pub(crate) fn slave_connected(&self, addr: String) -> u64 {
        let mut g = self.inner.lock();
        let id = g.next_slave;
        g.next_slave += 1;
        g.slaves.insert(id, (addr, 0));
        id
    }

    /// Slave `id` went away.
    pub(crate) fn slave_disconnected(&self, id: u64) {
        self.inner.lock().slaves.remove(&id);
    }

    /// Every connected slave's address and the offset it last reported.
    pub(crate) fn slaves(&self) -> Vec<(String, i64)> {
        self.inner.lock().slaves.values().cloned().collect()
    }

    /// Slave `id` reports it has everything below `offset`; releases the waiters it covers.
    pub(crate) fn ack(&self, id: u64, offset: i64) {
        let ready = {
            let mut g = self.inner.lock();
            if let Some(slave) = g.slaves.get_mut(&id) {
                slave.1 = slave.1.max(offset);
            }
            if offset <= g.acked {
                return;
            }
            g.acked = offset;
            let rest = g.waiters.split_off(&(offset + 1));
            std::mem::replace(&mut g.waiters, rest)
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Waits until a slave has everything below `end`, at most `timeout`. Answers
    /// [`SlaveWait::NotAvailable`] at once when no slave is connected or the nearest one lags
    /// `max_gap` bytes or more.
    pub(crate) async fn wait(&self, end: i64, timeout: Duration, max_gap: u64) -> SlaveWait {
        let rx = {
            let mut g = self.inner.lock();
            if g.acked >= end {
                return SlaveWait::Acked;
            }
            if g.slaves.is_empty() || (end - g.acked) as u64 >= max_gap {
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
        let slave = t.slave_connected("127.0.0.1:1".into());
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
        t.ack(slave, 150);
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
}
