//! Disk-full tests: the store runs in a child process (`store-disk-writer`) on a small tmpfs
//! (mounted by the test; skipped with a note where mounting is not permitted), so a SIGBUS
//! from touching an unbacked mapping shows up as a death by signal and fails the test.
//!
//! Each run: fill the file system until writes are refused, kill the writer, restart it on
//! the full disk (it must either serve or exit with a clear error, never die by a signal),
//! free space and restart (writes go on), fill again until refused, free more space and see
//! writes resume in the same process, then check every acknowledged message is present.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use store::{AcceptAll, GetMessageStatus, MessageStore, StoreConfig};

const SEGMENT: u64 = 1024 * 1024;
const CQ_UNITS: u64 = 1000;
const FILLER: usize = 1024 * 1024;
/// Longest wait for any expected line from the writer.
const WAIT: Duration = Duration::from_secs(30);

/// A tmpfs mounted at a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts an 8 MiB tmpfs, or returns None (after printing why) where that is not allowed.
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs ({}); the disk-full test needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount ({e}); the disk-full test needs root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

mod writer;

use writer::{parse_ack, Ack};

/// The config `store-disk-writer` uses, for opening its store in the test.
fn config(dir: &Path, mode: &str) -> StoreConfig {
    let mut c = writer::config(dir, mode, SEGMENT, CQ_UNITS);
    c.disk_max_used_space_ratio = 100;
    c.disk_space_clean_forcibly_ratio = 100;
    c.disk_space_warning_level_ratio = 100;
    c
}

enum Line {
    Ready,
    Ack(Ack),
    Refused(String),
    Other,
}

fn parse(line: &str) -> Line {
    if line.starts_with("ready") {
        return Line::Ready;
    }
    if let Some(why) = line.strip_prefix("refused ") {
        return Line::Refused(why.to_string());
    }
    match parse_ack(line) {
        Some(a) => Line::Ack(a),
        None => Line::Other,
    }
}

struct Writer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Writer {
    fn spawn(dir: &Path, mode: &str, run: usize) -> Writer {
        let (mut child, lines) = writer::spawn(
            env!("CARGO_BIN_EXE_store-disk-writer"),
            dir,
            mode,
            run,
            SEGMENT,
            CQ_UNITS,
            Stdio::piped(),
        );
        let mut stderr = child.stderr.take().expect("stderr piped");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Writer {
            child,
            lines,
            stderr,
        }
    }

    /// Next line, None at EOF. Panics after [`WAIT`].
    fn next(&self, what: &str) -> Option<Line> {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => Some(parse(&line)),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no line from the writer while {what}"),
        }
    }

    /// Reads lines into `acks` until one matches `stop`; panics at EOF.
    fn until(&self, acks: &mut Vec<Ack>, what: &str, stop: impl Fn(&Line) -> bool) -> Line {
        loop {
            let Some(line) = self.next(what) else {
                panic!("writer ended while {what}");
            };
            if let Line::Ack(a) = &line {
                acks.push(a.clone());
            }
            if stop(&line) {
                return line;
            }
        }
    }

    /// Kills the writer (SIGKILL) and collects the acknowledgements it printed before.
    fn kill(mut self, acks: &mut Vec<Ack>) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "the writer died before it was killed"
        );
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
        for line in self.lines.iter() {
            if let Line::Ack(a) = parse(&line) {
                acks.push(a);
            }
        }
    }

    /// Waits for the writer to exit by itself; returns its status and stderr.
    fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().expect("wait");
        let stderr = self.stderr.join().unwrap_or_default();
        (status, stderr)
    }
}

fn fill(path: &Path) {
    std::fs::write(path, vec![0x5Au8; FILLER]).expect("write a filler file");
}

fn verify(dir: &Path, mode: &str, acks: &[Ack]) {
    let store = MessageStore::open(config(dir, mode)).expect("reopen after space returned");
    for a in acks {
        writer::check_acked(&store, a);
        let got = store.get_messages("CrashTopic", a.queue, a.qoff, 1, 1 << 20, &AcceptAll);
        assert_eq!(got.status, GetMessageStatus::Found, "{a:?}");
    }
    store.shutdown().expect("shutdown");
}

fn disk_full_cycle(mode: &str) {
    let Some(fs) = Tmpfs::mount() else { return };
    let started = Instant::now();
    let root: PathBuf = fs.path().join("store");
    let spare: Vec<PathBuf> = (0..3)
        .map(|i| fs.path().join(format!("spare{i}")))
        .collect();
    for s in &spare {
        fill(s);
    }
    let mut acks = Vec::new();

    // 1. Fill the disk until writes are refused, then crash.
    let w = Writer::spawn(&root, mode, 0);
    w.until(&mut acks, "starting", |l| matches!(l, Line::Ready));
    let Line::Refused(why) = w.until(&mut acks, "filling the disk", |l| {
        matches!(l, Line::Refused(_))
    }) else {
        unreachable!()
    };
    assert!(
        why.contains("disk full"),
        "refusal names the full disk: {why}"
    );
    w.kill(&mut acks);
    let filled = acks.len();
    assert!(filled > 0, "nothing was written before the disk filled");

    // 2. Restart on the full disk: serve (writes refused) or exit with a clear error.
    let w = Writer::spawn(&root, mode, 1);
    match w.next("restarting on a full disk") {
        Some(Line::Ready) => {
            println!("disk full {mode}: restarted on the full disk, serving");
            w.until(&mut acks, "writing on a full disk", |l| {
                matches!(l, Line::Refused(_))
            });
            w.kill(&mut acks);
        }
        first => {
            assert!(first.is_none(), "unexpected first line from the writer");
            let (status, stderr) = w.wait();
            assert_eq!(
                status.signal(),
                None,
                "the store died by signal on a full disk: {status:?}\n{stderr}"
            );
            assert_eq!(status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains("disk full"),
                "the error names the full disk: {stderr}"
            );
            println!(
                "disk full {mode}: restart on the full disk refused: {}",
                stderr.trim()
            );
        }
    }

    // 3. Free space: a restart writes again, until the disk is full again.
    std::fs::remove_file(&spare[0]).expect("free space");
    let w = Writer::spawn(&root, mode, 2);
    w.until(&mut acks, "restarting after space returned", |l| {
        matches!(l, Line::Ready)
    });
    let before = acks.len();
    w.until(&mut acks, "filling the disk again", |l| {
        matches!(l, Line::Refused(_))
    });
    assert!(acks.len() > before, "no write after space returned");

    // 4. Free space while the writer runs: writes resume by themselves.
    std::fs::remove_file(&spare[1]).expect("free space");
    let before = acks.len();
    w.until(&mut acks, "waiting for writes to resume", |l| {
        matches!(l, Line::Ack(_))
    });
    assert!(acks.len() > before);
    w.kill(&mut acks);

    // The writer may have filled the disk again before it was killed; opening the store
    // then is refused (its last segment's holes could not be backed), so free space first.
    std::fs::remove_file(&spare[2]).expect("free space");
    verify(&root, mode, &acks);
    println!(
        "disk full {mode}: {} acknowledged ({filled} before the first refusal), {:?}",
        acks.len(),
        started.elapsed()
    );
}

#[test]
fn sync_flush_on_a_full_disk() {
    disk_full_cycle("sync");
}

#[test]
fn async_flush_on_a_full_disk() {
    disk_full_cycle("async");
}
