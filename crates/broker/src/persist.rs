//! The broker's config files under `<storePathRootDir>/config/` (`topics.json`,
//! `subscriptionGroup.json`, `consumerOffset.json`, `delayOffset.json`): how one is replaced
//! without ever being torn, and the one writer each of them has.
//!
//! Each write goes through [`durable::write_atomic`] (a temporary file of its own, fsync,
//! rename, directory fsync), so a crash leaves either the old or the new content. Upstream
//! also keeps a `.bak` copy; the rename makes it unnecessary, but a `.bak` left by upstream is
//! read when the main file is missing ([`durable::read_optional`]).
//!
//! [`Persister`] owns one file and is the only thing that writes it. A manager asks it to
//! persist after a change ([`Persister::request`], which never touches the disk); a dedicated
//! thread then takes a snapshot of the manager's table and writes it. Requests coalesce: many
//! requests while a write is in flight lead to one more write, of the then-latest snapshot, and
//! because snapshots are taken by that single thread one after another, an older snapshot is
//! never renamed over a newer one. Callers that must not answer before their change is durable
//! wait for the write covering it ([`Persister::flush`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

use crate::error::BrokerError;

/// Pause before a failed write is tried again (no new request is needed for the retry).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Produces the bytes of the file from the owner's current state; called on the writer
/// thread only, once per write.
type Snapshot = Box<dyn FnMut() -> Result<Vec<u8>, BrokerError> + Send>;

/// The single writer of one config file (see the module comment).
pub(crate) struct Persister {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer: a request, or closing.
    work: Condvar,
    /// Wakes blocking waiters after each attempt.
    done: Condvar,
    /// [`State::attempted`], for async waiters.
    attempted: watch::Sender<u64>,
}

/// Generations count requests: request `g` is covered by any write whose snapshot was taken
/// after it, that is by the attempt of any generation `>= g`.
#[derive(Default)]
struct State {
    /// Generation of the latest request.
    requested: u64,
    /// Generation of the latest finished attempt (successful or not).
    attempted: u64,
    /// Generation of the latest successful write.
    written: u64,
    /// Why the latest attempt failed, `None` when it succeeded.
    failure: Option<Failure>,
    /// Attempts so far (tests check the coalescing with it).
    attempts: u64,
    /// Set when the owner is dropped: the writer writes what was requested and ends.
    closed: bool,
}

/// A failed attempt, kept so that every waiter it concerns gets it.
#[derive(Clone)]
struct Failure {
    path: PathBuf,
    kind: std::io::ErrorKind,
    reason: String,
}

impl Failure {
    fn new(error: &BrokerError, file: &Path) -> Failure {
        match error {
            BrokerError::Io { path, source } => Failure {
                path: path.clone(),
                kind: source.kind(),
                reason: source.to_string(),
            },
            other => Failure {
                path: file.to_path_buf(),
                kind: std::io::ErrorKind::Other,
                reason: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> BrokerError {
        BrokerError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.reason.clone()),
        }
    }
}

impl Persister {
    /// Starts the writer thread of `path`; `snapshot` is called on it to produce the bytes of
    /// each write and must read the owner's state as it is at that moment.
    pub(crate) fn new(
        path: PathBuf,
        snapshot: impl FnMut() -> Result<Vec<u8>, BrokerError> + Send + 'static,
    ) -> Result<Persister, BrokerError> {
        let shared = Arc::new(Shared {
            path: path.clone(),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            attempted: watch::Sender::new(0),
        });
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The store's lock keeps other processes out, so another pid's temp file is a crash's.
        durable::remove_stale_temps(&path);
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("persist {name}"))
                .spawn(move || run_writer(&shared, Box::new(snapshot)))
                .map_err(io_err(&path))?
        };
        Ok(Persister {
            shared,
            writer: Some(writer),
        })
    }

    /// Marks the file dirty and returns the generation of this request; the writer thread
    /// writes a snapshot taken after this call. Never waits for the disk (only for a lock held
    /// while counters are updated), so it may be called from the send path on a runtime
    /// thread. Durable once [`Self::wait`] of the generation says so.
    pub(crate) fn request(&self) -> u64 {
        let generation = {
            let mut s = self.shared.state.lock();
            s.requested += 1;
            s.requested
        };
        self.shared.work.notify_one();
        generation
    }

    /// Waits (asynchronously) for the write covering request `generation`: `Ok` once it is
    /// durable, the error of the attempt that covered it otherwise.
    pub(crate) async fn wait(&self, generation: u64) -> Result<(), BrokerError> {
        let mut attempted = self.shared.attempted.subscribe();
        // The sender lives in `shared`, as long as `self`: the wait ends only when reached.
        let _ = attempted.wait_for(|a| *a >= generation).await;
        self.outcome(&self.shared.state.lock(), generation)
    }

    /// [`Self::wait`] blocking the calling thread: not for async runtime threads.
    #[cfg(test)]
    pub(crate) fn wait_blocking(&self, generation: u64) -> Result<(), BrokerError> {
        let mut s = self.shared.state.lock();
        while s.attempted < generation {
            self.shared.done.wait(&mut s);
        }
        self.outcome(&s, generation)
    }

    /// The generation of the latest successful write (0 before any).
    pub(crate) fn written(&self) -> u64 {
        self.shared.state.lock().written
    }

    /// Requests a write and waits (asynchronously) until it is durable.
    pub(crate) async fn flush(&self) -> Result<(), BrokerError> {
        let generation = self.request();
        self.wait(generation).await
    }

    /// Requests a write and blocks the calling thread until it is durable: for tests, tools
    /// and other non-async callers.
    #[cfg(test)]
    pub(crate) fn persist_now(&self) -> Result<(), BrokerError> {
        let generation = self.request();
        self.wait_blocking(generation)
    }

    /// Waits for the writes already requested, without requesting one.
    #[cfg(test)]
    pub(crate) fn settle(&self) -> Result<(), BrokerError> {
        let generation = self.shared.state.lock().requested;
        self.wait_blocking(generation)
    }

    /// Write attempts so far.
    #[cfg(test)]
    fn attempts(&self) -> u64 {
        self.shared.state.lock().attempts
    }

    fn outcome(&self, s: &State, generation: u64) -> Result<(), BrokerError> {
        if s.written >= generation {
            return Ok(());
        }
        Err(match &s.failure {
            Some(f) if s.attempted >= generation => f.to_error(),
            _ => io_err(&self.shared.path)(std::io::Error::other(
                "the config file's writer stopped before writing",
            )),
        })
    }
}

impl Drop for Persister {
    /// Writes what was requested and not yet written (one write), then stops the writer.
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "config file writer panicked");
            }
        }
    }
}

/// The writer thread: waits for requests, writes the latest snapshot, retries a failed write
/// every [`RETRY_PAUSE`] while the file stays unwritten, and logs each distinct failure once.
fn run_writer(shared: &Shared, mut snapshot: Snapshot) {
    let path = shared.path.as_path();
    let mut logged: Option<String> = None;
    let mut retry_at: Option<Instant> = None;
    let mut state = shared.state.lock();
    loop {
        let retry_due =
            state.requested > state.written && retry_at.is_some_and(|t| Instant::now() >= t);
        if state.requested <= state.attempted && !retry_due {
            if state.closed {
                return;
            }
            match retry_at.filter(|_| state.requested > state.written) {
                Some(at) => {
                    shared.work.wait_until(&mut state, at);
                }
                None => shared.work.wait(&mut state),
            }
            continue;
        }
        let generation = state.requested;
        let result = MutexGuard::unlocked(&mut state, || {
            catch_unwind(AssertUnwindSafe(|| {
                snapshot().and_then(|data| Ok(durable::write_atomic(path, &data)?))
            }))
            .unwrap_or_else(|_| {
                Err(io_err(path)(std::io::Error::other(
                    "taking the snapshot panicked",
                )))
            })
        });
        state.attempted = generation;
        state.attempts += 1;
        match result {
            Ok(()) => {
                state.written = generation;
                state.failure = None;
                retry_at = None;
                if logged.take().is_some() {
                    tracing::info!(path = %path.display(), "config file written again");
                }
            }
            Err(e) => {
                let failure = Failure::new(&e, path);
                // The temporary file's name changes on every attempt: a failure is told apart
                // by its cause only.
                if logged.as_deref() != Some(failure.reason.as_str()) {
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "cannot write config file; retrying every {RETRY_PAUSE:?} until it is written"
                    );
                    logged = Some(failure.reason.clone());
                }
                state.failure = Some(failure);
                retry_at = Some(Instant::now() + RETRY_PAUSE);
            }
        }
        shared.attempted.send_replace(generation);
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn temporary_files_of_a_dead_writer_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let stale = dir.path().join("topics.json.tmp.4000000000.7");
        let other_file = dir.path().join("consumerOffset.json.tmp.4000000000.1");
        fs::write(&stale, b"{").unwrap();
        fs::write(&other_file, b"{").unwrap();
        let _p = Persister::new(path, || Ok(b"{}".to_vec())).unwrap();
        assert!(!stale.exists(), "a crashed writer's temp file is removed");
        assert!(
            other_file.exists(),
            "another file's temp files are its own persister's"
        );
    }
    /// A persister of a counter whose snapshots take `delay` to produce.
    fn counter_persister(
        path: &Path,
        delay: Duration,
    ) -> (Arc<AtomicU64>, Arc<Mutex<Vec<u64>>>, Persister) {
        let value = Arc::new(AtomicU64::new(0));
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        let p = {
            let (value, snapshots) = (value.clone(), snapshots.clone());
            Persister::new(path.to_path_buf(), move || {
                let v = value.load(Ordering::SeqCst);
                snapshots.lock().push(v);
                std::thread::sleep(delay);
                Ok(v.to_string().into_bytes())
            })
            .unwrap()
        };
        (value, snapshots, p)
    }

    fn read_u64(path: &Path) -> u64 {
        String::from_utf8(fs::read(path).unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    #[test]
    fn requests_coalesce_and_the_file_only_moves_forward() {
        const THREADS: u64 = 8;
        const CHANGES: u64 = 50;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumerOffset.json");
        let (value, snapshots, p) = counter_persister(&path, Duration::from_millis(5));
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..CHANGES {
                        value.fetch_add(1, Ordering::SeqCst);
                        p.request();
                    }
                });
            }
            // The file never goes back to an older value.
            s.spawn(|| {
                let mut last = 0;
                while value.load(Ordering::SeqCst) < THREADS * CHANGES || p.settle().is_err() {
                    if let Ok(text) = fs::read_to_string(&path) {
                        let v: u64 = text.parse().unwrap();
                        assert!(v >= last, "file went back from {last} to {v}");
                        last = v;
                    }
                    std::thread::yield_now();
                }
            });
        });
        p.settle().unwrap();
        assert_eq!(read_u64(&path), THREADS * CHANGES);
        let taken = snapshots.lock().clone();
        assert!(taken.windows(2).all(|w| w[0] <= w[1]), "{taken:?}");
        // Requests made while a write is in flight share the next write (exact counts:
        // `request_never_waits_for_a_write_in_flight`).
        assert!(
            p.attempts() < THREADS * CHANGES,
            "{} writes for {} requests",
            p.attempts(),
            THREADS * CHANGES
        );
    }

    #[test]
    fn request_never_waits_for_a_write_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let value = Arc::new(AtomicU64::new(0));
        let p = {
            let value = value.clone();
            Persister::new(path.clone(), move || {
                let _ = entered_tx.send(());
                // Stuck "on the disk" until the test opens the gate.
                let _ = gate_rx.recv();
                Ok(value.load(Ordering::SeqCst).to_string().into_bytes())
            })
            .unwrap()
        };
        let first = p.request();
        entered_rx.recv().unwrap();
        // The writer is stuck in a write: requests still return at once.
        let started = Instant::now();
        let mut last = first;
        for _ in 0..1000 {
            value.fetch_add(1, Ordering::SeqCst);
            last = p.request();
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(gate_tx);
        p.wait_blocking(first).unwrap();
        p.wait_blocking(last).unwrap();
        assert_eq!(read_u64(&path), 1000);
        assert_eq!(p.attempts(), 2, "the 1000 requests made one more write");
    }

    #[tokio::test]
    async fn flush_waits_for_durability_and_drop_writes_what_was_requested() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delayOffset.json");
        let (value, _, p) = counter_persister(&path, Duration::from_millis(20));
        value.store(7, Ordering::SeqCst);
        p.flush().await.unwrap();
        assert_eq!(read_u64(&path), 7);
        value.store(8, Ordering::SeqCst);
        p.request();
        drop(p);
        assert_eq!(read_u64(&path), 8);
    }

    #[test]
    fn a_failed_write_is_reported_to_waiters_and_retried_without_spinning() {
        let dir = tempfile::tempdir().unwrap();
        // `config` is a file: the directory cannot be created.
        let blocker = dir.path().join("config");
        fs::write(&blocker, b"").unwrap();
        let path = blocker.join("subscriptionGroup.json");
        let (value, _, p) = counter_persister(&path, Duration::ZERO);
        value.store(3, Ordering::SeqCst);
        let err = p.persist_now().unwrap_err();
        assert!(matches!(err, BrokerError::Io { .. }), "{err}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(p.attempts(), 1, "no retry before the pause");
        // The disk recovers: the write is retried without a new request.
        fs::remove_file(&blocker).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read(&path).is_err() {
            assert!(
                Instant::now() < deadline,
                "the failed write was not retried"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(read_u64(&path), 3);
        p.persist_now().unwrap();
    }
}
