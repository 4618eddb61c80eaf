//! [`ChildBroker`]: a broker in its own process (the `it-broker` binary of this crate), for
//! the scenarios that need a real crash. [`ChildBroker::sigkill`] sends SIGKILL: no code of
//! the broker runs after it (no `Drop`, no checkpoint, the `abort` marker stays), so the next
//! [`ChildBroker::restart`] runs the store's crash recovery, as after `kill -9` in
//! production. Bytes the broker wrote stay in the page cache, as they do for a killed
//! process; `tests/power_loss.rs` puts the store on a `testkit::PowerLossDisk` and cuts its
//! power after the kill.
//!
//! The binary's path is only known to the crate's integration tests
//! (`env!("CARGO_BIN_EXE_it-broker")`), so they pass it in.
//!
//! Each run's stderr (the broker's log) is kept in memory: [`ChildBroker::wait_log`] awaits
//! a line, e.g. the store's `CommitLog recovered after an unclean stop`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::BrokerConfig;

/// The signal number of SIGKILL (Linux, and every Unix this runs on).
const SIGKILL: i32 = 9;

/// How long a child may take to end after SIGKILL (a process stuck in a file system request
/// must fail the test, not hang it).
const KILL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a child may take to print its `READY` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The store logs this when it starts after a run that did not shut down (the `abort`
/// marker was found, or the checkpoint does not vouch for the data): it scanned the
/// CommitLog from the checkpoint on and rebuilt the queues.
pub const UNCLEAN_RECOVERY_LOG: &str = "CommitLog recovered after an unclean stop";
/// The store logs this when the scan found a torn record at the tail and cut the log there.
pub const TORN_TAIL_LOG: &str = "cutting torn CommitLog tail";
/// The store logs this after a clean shutdown (no scan).
pub const CLEAN_START_LOG: &str = "clean shutdown; starting without a CommitLog scan";

/// A broker running in a child process; killed (SIGKILL) when dropped.
pub struct ChildBroker {
    exe: PathBuf,
    config: BrokerConfig,
    conf_path: PathBuf,
    /// `ip:port` clients and the NameServer know.
    pub addr: String,
    /// The replication port of a master.
    pub ha_port: Option<u16>,
    run: Option<Run>,
    /// Runs started so far (1 after [`ChildBroker::start`]).
    runs: usize,
}

struct Run {
    child: Child,
    /// Held open: the child exits as soon as it sees EOF on stdin (the test died).
    _stdin: ChildStdin,
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildBroker {
    /// Writes `config` next to its store (`<storePathRootDir>.conf`), starts `exe` on it and
    /// returns once the broker listens. A `listenPort` of 0 gets fixed ports
    /// ([`crate::fix_restartable_ports`]); a restart reuses them.
    pub fn start(exe: &Path, mut config: BrokerConfig) -> ChildBroker {
        crate::fix_restartable_ports(&mut config);
        let root = config.store_path_root_dir.clone();
        let conf_path = root.with_extension("conf");
        let mut node = ChildBroker {
            exe: exe.to_path_buf(),
            config,
            conf_path,
            addr: String::new(),
            ha_port: None,
            run: None,
            runs: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        std::fs::write(&self.conf_path, self.config.to_properties()).expect("write broker.conf");
        let name = format!(
            "{}-{} run {}",
            self.config.broker_name,
            self.config.broker_id,
            self.runs + 1
        );
        let (child, stdin, log, line) = spawn_until_ready(&self.exe, &self.conf_path, &name);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(
            fields.len() == 5 && fields[0] == "READY",
            "unexpected first line from it-broker: {line}"
        );
        let port = |s: &str| s.parse::<u16>().ok();
        self.addr = fields[1].to_string();
        self.config.listen_port = port(fields[2]).expect("listen port");
        self.ha_port = port(fields[3]);
        self.config.ha_listen_port = self.ha_port.or(self.config.ha_listen_port);
        self.config.fast_listen_port = port(fields[4]).or(self.config.fast_listen_port);
        self.runs += 1;
        self.run = Some(Run {
            child,
            _stdin: stdin,
            log,
        });
    }

    /// The configuration it runs with (ports fixed to the bound ones).
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.run.as_ref().map(|r| r.child.id())
    }

    /// Sends SIGKILL and reaps the process. Nothing of the broker runs after it. Panics
    /// (with its log) if the broker had already ended by itself, and if it has not ended
    /// [`KILL_TIMEOUT`] after the signal.
    pub fn sigkill(&mut self) {
        if let Some(mut run) = self.run.take() {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!(
                    "it-broker {}-{} ended by itself before the kill ({status}); its log:\n{}",
                    self.config.broker_name,
                    self.config.broker_id,
                    run.log.lock().unwrap().join("\n")
                );
            }
            // `Child::kill` is SIGKILL on Unix.
            run.child.kill().expect("SIGKILL it-broker");
            let deadline = Instant::now() + KILL_TIMEOUT;
            let status = loop {
                if let Some(status) = run.child.try_wait().expect("reap it-broker") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "it-broker did not end within {KILL_TIMEOUT:?} of SIGKILL"
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            assert_eq!(
                status.signal(),
                Some(SIGKILL),
                "it-broker did not end by SIGKILL: {status}"
            );
        }
    }

    /// Whether the store's `abort` marker is there: after a SIGKILL it must be (the broker
    /// had no chance to remove it), and it makes the next start recover.
    pub fn abort_marker_present(&self) -> bool {
        self.config.store_path_root_dir.join("abort").exists()
    }

    /// Starts it again (after [`ChildBroker::sigkill`]) on the same store, config and ports.
    pub fn restart(&mut self) {
        assert!(self.run.is_none(), "restart of a running it-broker");
        self.spawn();
    }

    /// The log (stderr) of the current run so far.
    pub fn log(&self) -> Vec<String> {
        self.run
            .as_ref()
            .map(|r| r.log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Whether a line of the current run's log contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.log.lock().unwrap().iter().any(|l| l.contains(needle)))
    }

    /// Waits until a line of the current run's log contains `needle`; panics with the log
    /// after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logged(needle) {
            assert!(
                Instant::now() < deadline,
                "{}-{}: no log line with `{needle}` within {timeout:?}; its log:\n{}",
                self.config.broker_name,
                self.config.broker_id,
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
    }
}

/// Starts `exe conf_path` with piped stdio, keeps its stderr lines in a log (echoed with
/// `[name]` when `IT_BROKER_LOG` is set) and waits up to [`START_TIMEOUT`] for its first stdout
/// line (its `READY ...` line), which it returns. Panics with the child's log when it does not
/// start.
fn spawn_until_ready(
    exe: &Path,
    conf_path: &Path,
    name: &str,
) -> (Child, ChildStdin, Arc<Mutex<Vec<String>>>, String) {
    let mut child = Command::new(exe)
        .arg(conf_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let log = log.clone();
        let name = name.to_string();
        let verbose = std::env::var_os("IT_BROKER_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    eprintln!("[{name}] {line}");
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = ready_tx.send(first);
        }
        // Nothing else is printed; drain until the child is gone.
        lines.for_each(drop);
    });
    let Ok(line) = ready_rx.recv_timeout(START_TIMEOUT) else {
        let _ = child.kill();
        let status = child.wait().ok();
        // Give the stderr reader a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "{} {} did not start (exit {status:?}); its log:\n{}",
            exe.display(),
            conf_path.display(),
            log.lock().unwrap().join("\n")
        );
    };
    (child, stdin, log, line)
}

/// A controller running in a child process (the `it-controller` binary); killed (SIGKILL)
/// when dropped. Its log (stderr) is kept like a [`ChildBroker`]'s.
pub struct ChildController {
    /// `ip:port` it listens on (its own entry of `controllerDLegerPeers`).
    pub addr: String,
    child: Child,
    _stdin: ChildStdin,
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildController {
    /// Writes `properties` (a `controller.conf`) to `conf_path`, starts `exe` on it and
    /// returns once it listens.
    pub fn start(exe: &Path, conf_path: &Path, properties: &str) -> ChildController {
        std::fs::write(conf_path, properties).expect("write controller.conf");
        let (child, stdin, log, line) = spawn_until_ready(exe, conf_path, "controller");
        let addr = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["READY", addr] => addr.to_string(),
            _ => panic!("unexpected first line from it-controller: {line}"),
        };
        ChildController {
            addr,
            child,
            _stdin: stdin,
            log,
        }
    }

    /// One controller alone in its Raft group (`controllerDLegerPeers` naming only itself,
    /// on a port free now), its store and `controller.conf` under `dir`; it scans for lost
    /// brokers every 100 ms and has no metrics endpoint.
    pub fn start_alone(exe: &Path, dir: &Path) -> ChildController {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let conf = format!(
            "controllerDLegerGroup=it\ncontrollerDLegerPeers=n0-127.0.0.1:{port}\n\
             controllerDLegerSelfId=n0\ncontrollerStorePath={}\nscanNotActiveBrokerInterval=100\n\
             raftHeartbeatIntervalMillis=50\nmetricsExporterType=DISABLE\n",
            dir.join("controller").display()
        );
        ChildController::start(exe, &dir.join("controller.conf"), &conf)
    }

    /// The log (stderr) so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ChildController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
