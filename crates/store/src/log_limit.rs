//! Logging of an error that repeats: a background loop (the flush thread, housekeeping) that
//! retries a failing disk operation many times a second must not write one line per attempt
//! (a full disk once produced 230,574 identical lines within seconds). [`RepeatedError`] logs
//! the first failure, then at most one line per interval carrying the number of failures
//! since the last line, and one line when the operation succeeds again.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Interval between two lines about the same repeated error.
pub(crate) const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limited log of one operation's failures.
pub(crate) struct RepeatedError {
    what: &'static str,
    interval: Duration,
    /// Set while the operation fails; lets [`RepeatedError::succeeded`] skip the lock.
    failing: AtomicBool,
    state: Mutex<Repeats>,
}

#[derive(Default)]
struct Repeats {
    last_logged: Option<Instant>,
    since_logged: u64,
    total: u64,
}

/// What [`RepeatedError::failed`] did with one failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Logged {
    /// A line was written; it counted this many failures (this one included).
    Line(u64),
    /// Counted for the next line.
    Counted,
}

impl RepeatedError {
    /// `what` names the operation in the log ("CommitLog flush").
    pub(crate) fn new(what: &'static str, interval: Duration) -> Self {
        RepeatedError {
            what,
            interval,
            failing: AtomicBool::new(false),
            state: Mutex::new(Repeats::default()),
        }
    }

    /// Records one failure at `now`: logs it (error level) if it is the first since the last
    /// success or `interval` has passed since the last line, else only counts it.
    pub(crate) fn failed(&self, error: &dyn Display, now: Instant) -> Logged {
        self.failing.store(true, Ordering::Release);
        let mut s = self.state.lock();
        s.total += 1;
        s.since_logged += 1;
        let due = match s.last_logged {
            None => true,
            Some(at) => now.duration_since(at) >= self.interval,
        };
        if !due {
            return Logged::Counted;
        }
        let count = std::mem::take(&mut s.since_logged);
        s.last_logged = Some(now);
        tracing::error!(
            failures = count,
            total = s.total,
            "{} failed: {error}; retrying (logged at most every {:?})",
            self.what,
            self.interval
        );
        Logged::Line(count)
    }

    /// Records a success. After failures, logs once that the operation works again and
    /// returns how many failures there were; otherwise a single atomic load.
    pub(crate) fn succeeded(&self) -> Option<u64> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.failing.store(false, Ordering::Release);
        let total = std::mem::take(&mut *self.state.lock()).total;
        tracing::info!(failures = total, "{} works again", self.what);
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let log = RepeatedError::new("CommitLog flush", Duration::from_secs(10));
        let t0 = Instant::now();
        let err = "disk full: /x";
        assert_eq!(log.failed(&err, t0), Logged::Line(1));
        for i in 1..1000u64 {
            assert_eq!(
                log.failed(&err, t0 + Duration::from_millis(i)),
                Logged::Counted
            );
        }
        assert_eq!(
            log.failed(&err, t0 + Duration::from_secs(10)),
            Logged::Line(1000)
        );
        assert_eq!(log.succeeded(), Some(1001));
        assert_eq!(log.succeeded(), None);
        // After a success the next failure is logged at once.
        assert_eq!(
            log.failed(&err, t0 + Duration::from_secs(11)),
            Logged::Line(1)
        );
    }
}
