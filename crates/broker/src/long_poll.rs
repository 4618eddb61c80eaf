//! Long polling: a pull that finds no new message is held ([`PullWaiters::wait_for_growth`])
//! until the store reports growth of its queue, the client's suspend timeout passes, the
//! connection closes or the broker stops. The store calls [`PullWaiters::notify`] from its
//! dispatcher for every message that reaches a ConsumeQueue.
//!
//! Held pulls are counted: [`PullWaiters::try_hold`] refuses a hold beyond
//! `maxHeldPullRequests` (the pull handler then answers `SYSTEM_BUSY`), so pulls parked by
//! clients cannot grow the broker's memory without bound even within the remoting server's
//! in-flight bounds (which count every request, held or not).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Queue id to wait on for growth of any queue of a topic (a POP of every queue).
pub(crate) const ANY_QUEUE: i32 = -1;

/// Longest sleep between two looks at the queue, in case a notification is missed.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One [`Notify`] per (topic, queue) someone waits on.
#[derive(Default)]
pub(crate) struct PullWaiters {
    map: Mutex<HashMap<String, HashMap<i32, Arc<Notify>>>>,
    /// Pulls held now (live [`Held`] guards).
    held: AtomicUsize,
}

/// One held pull's slot; released when dropped.
pub(crate) struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PullWaiters {
    /// A slot for one more held pull, or None when `max` are held already. One atomic
    /// increment; keep the guard for as long as the pull is held.
    pub(crate) fn try_hold(&self, max: usize) -> Option<Held<'_>> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= max {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Held(&self.held))
    }

    /// Pulls held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Wakes everyone waiting on the queue, and those waiting on any queue of the topic
    /// ([`ANY_QUEUE`]). Cheap when nobody waits.
    pub(crate) fn notify(&self, topic: &str, queue_id: i32) {
        let map = self.map.lock();
        if let Some(queues) = map.get(topic) {
            for q in [queue_id, ANY_QUEUE] {
                if let Some(n) = queues.get(&q) {
                    n.notify_waiters();
                }
            }
        }
    }

    fn acquire(&self, topic: &str, queue_id: i32) -> Arc<Notify> {
        self.map
            .lock()
            .entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_default()
            .clone()
    }

    fn release(&self, topic: &str, queue_id: i32, notify: Arc<Notify>) {
        let mut map = self.map.lock();
        // Two references left: the map's and ours; nobody else waits.
        if Arc::strong_count(&notify) == 2 {
            if let Some(queues) = map.get_mut(topic) {
                queues.remove(&queue_id);
                if queues.is_empty() {
                    map.remove(topic);
                }
            }
        }
    }

    /// Waits until `ready()` holds (checked after every notification and at least every
    /// second), `timeout` passes, `closed` resolves or `stop` turns true. Returns `ready()`.
    pub(crate) async fn wait_for_growth(
        &self,
        topic: &str,
        queue_id: i32,
        timeout: Duration,
        ready: impl Fn() -> bool,
        closed: impl std::future::Future<Output = ()>,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let notify = self.acquire(topic, queue_id);
        tokio::pin!(closed);
        let result = loop {
            let notified = notify.notified();
            if ready() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || *stop.borrow() {
                break false;
            }
            let nap = (deadline - now).min(RECHECK_INTERVAL);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(nap) => {}
                _ = &mut closed => break false,
                _ = stop.changed() => {}
            }
        };
        self.release(topic, queue_id, notify);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn wakes_on_notify_and_times_out() {
        let w = Arc::new(PullWaiters::default());
        let flag = Arc::new(AtomicBool::new(false));
        let (_tx, stop) = watch::channel(false);
        let (w2, f2) = (w.clone(), flag.clone());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move {
                let start = std::time::Instant::now();
                let ok = w2
                    .wait_for_growth(
                        "T",
                        0,
                        Duration::from_secs(30),
                        || f2.load(Ordering::SeqCst),
                        std::future::pending(),
                        stop,
                    )
                    .await;
                (ok, start.elapsed())
            }
        });
        tokio::task::yield_now().await;
        flag.store(true, Ordering::SeqCst);
        w.notify("T", 0);
        let (ok, took) = waiter.await.unwrap();
        assert!(ok && took < Duration::from_secs(10));
        let ok = w
            .wait_for_growth(
                "T",
                1,
                Duration::from_millis(20),
                || false,
                std::future::pending(),
                stop,
            )
            .await;
        assert!(!ok);
        assert!(w.map.lock().is_empty());
    }

    #[test]
    fn holds_are_bounded_and_released() {
        let w = PullWaiters::default();
        let a = w.try_hold(2).unwrap();
        let b = w.try_hold(2).unwrap();
        assert!(w.try_hold(2).is_none());
        assert_eq!(w.held(), 2);
        drop(a);
        let c = w.try_hold(2).unwrap();
        drop((b, c));
        assert_eq!(w.held(), 0);
    }
}
