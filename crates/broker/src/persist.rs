//! The broker's config files under `<storePathRootDir>/config/` (`topics.json`,
//! `subscriptionGroup.json`, `consumerOffset.json`, `delayOffset.json`): how one is replaced
//! without ever being torn, and the one writer each of them has.
//!
//! [`write_atomic`] writes a temporary file whose name no other write uses
//! (`<file>.tmp.<pid>.<n>`), fsyncs it, renames it over the file and fsyncs the directory, so
//! a crash leaves either the old or the new content. Upstream also keeps a `.bak` copy; the
//! rename makes it unnecessary, but a `.bak` left by upstream is read when the main file is
//! missing ([`read_optional`]).
//!
//! [`Persister`] owns one file and is the only thing that writes it. A manager asks it to
//! persist after a change ([`Persister::request`], which never touches the disk); a dedicated
//! thread then takes a snapshot of the manager's table and writes it. Requests coalesce: many
//! requests while a write is in flight lead to one more write, of the then-latest snapshot, and
//! because snapshots are taken by that single thread one after another, an older snapshot is
//! never renamed over a newer one. Callers that must not answer before their change is durable
//! wait for the write covering it ([`Persister::flush`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Distinguishes the temporary files of this process's writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<path>.tmp.<pid>.<n>`: unique among concurrent writes in this process and others.
fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp.push(format!(".tmp.{}.{n}", std::process::id()));
    PathBuf::from(tmp)
}

/// Replaces `path` with `data` atomically: writes a temporary file of its own beside it,
/// fsyncs it, renames it over `path` and fsyncs the directory. Durable when it returns `Ok`;
/// on an error `path` is unchanged and the temporary file is removed. Concurrent calls on one
/// path never tear the file (each leaves one whole content), but which one ends up last is
/// the callers' business: a file written from several places goes through a [`Persister`].
/// Blocks on the disk: not for async runtime threads.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BrokerError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = temp_path(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if let Err(e) = written {
        // Best effort: the file may not even have been created.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes the temporary files of `path` that an earlier process left behind when it died
/// mid-write (`<file>.tmp.<pid>.<n>` with another pid: the store's lock guarantees that process
/// is gone). Best effort: a file that cannot be listed or removed is only logged.
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp.", name.to_string_lossy());
    let own = format!("{prefix}{}.", std::process::id());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && !file.starts_with(&own) {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temporary config file left by a crash")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temporary config file")
                }
            }
        }
    }
}

/// Content of `path` (or of `path.bak` when only that exists); `None` when neither exists or
/// the file is empty.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BrokerError> {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    for candidate in [path.to_path_buf(), PathBuf::from(bak)] {
        match fs::read(&candidate) {
            Ok(data) if data.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(data) => return Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&candidate)(e)),
        }
    }
    Ok(None)
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
        remove_stale_temps(&path);
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
                snapshot().and_then(|data| write_atomic(path, &data))
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
    use std::sync::atomic::AtomicBool;

    #[test]
    fn atomic_write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join("a.json");
        assert!(read_optional(&path).unwrap().is_none());
        write_atomic(&path, b"{\"x\":1}").unwrap();
        write_atomic(&path, b"{\"x\":2}").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"{\"x\":2}");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.json"], "no temporary file is left");
    }

    /// A payload that says which write it is and whose length proves it whole.
    fn payload(writer: usize, seq: usize) -> Vec<u8> {
        let head = format!("{writer}:{seq}:");
        let mut data = head.into_bytes();
        let pad = 8192 + (writer * 977 + seq * 131) % 8192;
        data.extend(vec![b'x'; pad]);
        data.extend(format!(":{pad}").into_bytes());
        data
    }

    fn is_whole(data: &[u8]) -> bool {
        let text = String::from_utf8_lossy(data);
        let mut parts = text.split(':');
        let (Some(w), Some(s), Some(pad), Some(len), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return false;
        };
        let (Ok(w), Ok(s)) = (w.parse::<usize>(), s.parse::<usize>()) else {
            return false;
        };
        payload(w, s) == data && len.parse() == Ok(pad.len())
    }

    /// Fails on a fixed temporary name: one writer truncates or renames away another's
    /// temporary file (rename fails with NotFound, or a torn file is renamed in).
    #[test]
    fn concurrent_writes_to_one_path_never_fail_or_tear() {
        const WRITERS: usize = 8;
        const WRITES: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("config").join("topics.json"));
        write_atomic(&path, &payload(0, 0)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut torn = 0;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(data) = fs::read(&*path) {
                        torn += usize::from(!is_whole(&data));
                    }
                }
                torn
            })
        };
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    (0..WRITES)
                        .filter_map(|s| write_atomic(&path, &payload(w, s)).err())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let errors: Vec<String> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, Ordering::Relaxed);
        let torn = reader.join().unwrap();
        assert!(
            errors.is_empty(),
            "{} concurrent writes failed, first: {:?}",
            errors.len(),
            errors.first()
        );
        assert_eq!(torn, 0, "a reader saw a torn file");
        assert!(is_whole(&fs::read(&*path).unwrap()));
        let left = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(left, 1, "no temporary file is left");
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
