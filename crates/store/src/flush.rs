//! CommitLog flushing, on its own thread so no tokio worker ever blocks in `msync`.
//!
//! `ASYNC_FLUSH`: every `flushIntervalCommitLog` ms, flush if at least
//! `flushCommitLogLeastPages` pages are dirty (all of them every
//! `flushCommitLogThoroughInterval` ms), as upstream's `FlushRealTimeService`.
//!
//! `SYNC_FLUSH` (group commit, as upstream's `GroupCommitService`): a writer appends, registers
//! as waiting and awaits the published flushed offset (a `watch` channel), without holding a
//! thread. The flush thread takes the current end of the log, makes it durable with one
//! `msync`, publishes it, and so releases every waiter at or below it at once. To fill each
//! fsync, the thread first waits (briefly, bounded by 3/4 of the last fsync's duration) until as
//! many writers are waiting as the previous fsync released: writers released together come back
//! together, and one fsync then covers them all instead of splitting them in two groups. The
//! window is polled (yielding the CPU), not slept in: a futex wake-up can cost as much as the
//! whole wait on a VM. `SYNC_FLUSH` writes go through `pwrite` (see `WriteMode::Pwrite`).
//!
//! A full disk while writing out staged records (`SYNC_FLUSH`) is not fatal: the records stay
//! staged, waiters and new writes are refused as disk full, and the thread retries every
//! [`RETRY_AFTER_FAILURE`] until the write goes through, so writes resume by themselves once
//! space returns. Any other flush failure poisons the store for writes (after a failed fsync
//! the page cache can no longer be trusted). Either way failures are logged at most once per
//! interval, with a count (`log_limit`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::FlushDiskType;
use crate::error::StoreError;
use crate::state::{FlushState, Inner};

/// Pause of the group-commit thread after a failed flush, before it tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

impl Inner {
    /// Body of the flush thread.
    pub(crate) fn run_flusher(self: Arc<Self>) {
        match self.config.flush_disk_type {
            FlushDiskType::AsyncFlush => self.run_async_flusher(),
            FlushDiskType::SyncFlush => self.run_group_commit(),
        }
    }

    fn run_async_flusher(&self) {
        let interval = Duration::from_millis(self.config.flush_interval_commit_log.max(1));
        let thorough = Duration::from_millis(self.config.flush_commit_log_thorough_interval);
        let mut last_thorough = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            self.signals
                .flush
                .wait_unless(interval, || self.stopping.load(Ordering::Acquire));
            let least = if last_thorough.elapsed() >= thorough {
                last_thorough = Instant::now();
                0
            } else {
                self.config.flush_commit_log_least_pages
            };
            self.flush_commit_log(least);
        }
    }

    fn run_group_commit(&self) {
        let mut last_group: u64 = 0;
        let mut last_fsync = Duration::from_micros(200);
        let mut covered: u64 = self.waiters_registered.load(Ordering::Acquire);
        loop {
            let stopping = self.stopping.load(Ordering::Acquire);
            let work = || {
                self.commit_log.appended() > self.commit_log.flushed()
                    || self.stopping.load(Ordering::Acquire)
            };
            if !stopping && !work() {
                // Upstream also wakes every 10 ms to flush writes that did not wait.
                self.signals
                    .flush
                    .wait_unless(Duration::from_millis(10), work);
                continue;
            }
            if stopping {
                self.flush_commit_log(0);
                return;
            }
            if last_group > 1 {
                let window =
                    (last_fsync * 3 / 4).clamp(Duration::from_micros(50), Duration::from_millis(2));
                let deadline = Instant::now() + window;
                let enough = || {
                    self.waiters_registered.load(Ordering::SeqCst) - covered >= last_group
                        || self.stopping.load(Ordering::Acquire)
                };
                // Poll rather than sleep: the window is short, and a futex wake-up costs as
                // much as the wait on a VM.
                while !enough() && Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            let registered = self.waiters_registered.load(Ordering::Acquire);
            let start = Instant::now();
            if !self.flush_commit_log(0) {
                // Without a pause a failing flush would spin: the log stays ahead of it.
                self.signals.flush.wait_unless(RETRY_AFTER_FAILURE, || {
                    self.stopping.load(Ordering::Acquire)
                });
                continue;
            }
            last_fsync = start.elapsed();
            last_group = registered - covered;
            covered = registered;
        }
    }

    /// Flushes the CommitLog and publishes the result to waiting writers; returns whether it
    /// succeeded. A write-out that found no space fails the waiters as disk full and refuses
    /// writes until a later call succeeds; any other failure poisons the store for writes and
    /// fails the waiters for good (see the module docs).
    pub(crate) fn flush_commit_log(&self, least_pages: u32) -> bool {
        let ts = self.commit_log.last_store_timestamp();
        let before = self.commit_log.flushed();
        let started = Instant::now();
        let result = match self.commit_log.commit() {
            Err(e @ StoreError::DiskFull { .. }) => {
                self.flush_errors.failed(&e, Instant::now());
                self.no_space.store(true, Ordering::Release);
                self.flush_state
                    .send_if_modified(|s| !std::mem::replace(&mut s.stalled, true));
                return false;
            }
            Err(e) => Err(e),
            Ok(()) => self.commit_log.flush(least_pages),
        };
        match result {
            Ok(flushed) => {
                self.flush_errors.succeeded();
                self.no_space.store(false, Ordering::Release);
                if flushed > before {
                    self.flushes.fetch_add(1, Ordering::Relaxed);
                    if let Some(observe) = self.flush_observer.get() {
                        observe(started.elapsed());
                    }
                }
                if flushed >= self.commit_log.max_offset() {
                    self.flushed_ts.store(ts, Ordering::Release);
                }
                self.flush_state.send_if_modified(|s| {
                    let changed = s.flushed != flushed || s.stalled;
                    s.flushed = flushed;
                    s.stalled = false;
                    changed
                });
                if self.config.flush_disk_type == FlushDiskType::SyncFlush {
                    self.signals.dispatch.notify();
                }
                true
            }
            Err(e) => {
                if !self.is_poisoned.load(Ordering::Acquire) {
                    tracing::error!(error = %e, "CommitLog flush failed; refusing further writes");
                }
                self.flush_errors.failed(&e, Instant::now());
                self.poison(format!("CommitLog flush failed: {e}"));
                self.flush_state
                    .send_modify(|s: &mut FlushState| s.failed = true);
                false
            }
        }
    }
}
