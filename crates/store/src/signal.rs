//! A wake-up signal between store threads (writer -> dispatcher, writer -> flusher, shutdown ->
//! everyone) that costs the notifier only a fence and a load when nobody is waiting.
//!
//! Lost wake-ups are impossible: the waiter publishes `waiting` and then re-checks its
//! condition; the notifier publishes its condition and then reads `waiting`, both separated by
//! a `SeqCst` fence, so at least one of them sees the other.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// One signal, waited on by one thread at a time.
#[derive(Default)]
pub(crate) struct Signal {
    mx: Mutex<()>,
    cv: Condvar,
    waiting: AtomicBool,
}

impl Signal {
    /// Wakes the waiter, if any. Call after making the waiter's condition true.
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) {
            let _g = self.mx.lock();
            self.cv.notify_all();
        }
    }

    /// Sleeps until `ready()` holds, a notification arrives, or `timeout` passes.
    pub(crate) fn wait_unless(&self, timeout: Duration, ready: impl Fn() -> bool) {
        self.wait_until(Instant::now() + timeout, ready);
    }

    /// Sleeps until `ready()` holds, a notification arrives, or `deadline` passes.
    pub(crate) fn wait_until(&self, deadline: Instant, ready: impl Fn() -> bool) {
        let mut g = self.mx.lock();
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !ready() {
            self.cv.wait_until(&mut g, deadline);
        }
        self.waiting.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn no_lost_wakeups() {
        let sig = Arc::new(Signal::default());
        let val = Arc::new(AtomicU64::new(0));
        let (s, v) = (Arc::clone(&sig), Arc::clone(&val));
        let t = std::thread::spawn(move || {
            for i in 1..=2000u64 {
                v.store(i, Ordering::SeqCst);
                s.notify();
            }
        });
        let start = Instant::now();
        let mut seen = 0;
        while seen < 2000 {
            sig.wait_unless(Duration::from_secs(5), || val.load(Ordering::SeqCst) > seen);
            seen = val.load(Ordering::SeqCst);
        }
        t.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
