//! Disk-full tests of the store's own threads, in process. The CommitLog segment in use has
//! room (preallocated under `ASYNC_FLUSH`), so appends go on while the file system is full,
//! but the dispatcher must create ConsumeQueue files (new queues; files of 16 units) and Index
//! files (rolled over every few keys; each message has a `UNIQ_KEY` and a `KEYS` entry) on
//! the full disk. Each cycle fills the file system, writes, frees a little space, writes,
//! frees the rest and waits for dispatch and writes to resume by themselves. Nothing may panic
//! (a panic hook records panics on the store's threads), shutdown must succeed, and after a
//! reopen every acknowledged message must be readable at its queue offset and by its key.
//!
//! Runs on a small tmpfs, or ext4 on a loop device, mounted by the test (skipped with a note
//! where mounting is not permitted).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store::{AcceptAll, FlushDiskType, GetMessageStatus, MessageInner, MessageStore, StoreConfig};

/// Panics seen on threads named `store-*`, with their message.
static STORE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOKED: AtomicBool = AtomicBool::new(false);
/// The tests run one at a time: a child process (`mount`) forked by one test while another
/// opens its store can briefly hold that store's directory lock, failing a reopen.
static SERIAL: Mutex<()> = Mutex::new(());

fn record_store_panics() {
    if HOOKED.swap(true, Ordering::AcqRel) {
        return;
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name.starts_with("store-") {
            if let Ok(mut p) = STORE_PANICS.lock() {
                p.push(format!("{name}: {info}"));
            }
        }
        default(info);
    }));
}

/// A small file system mounted at a temporary directory (a tmpfs, or ext4 on a loop device
/// backed by an image file), unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
    _image: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs, or with `ext4` an ext4 of that size; None (after printing why)
    /// where that is not allowed.
    fn mount_kind(size: &str, ext4: bool) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let mut image_dir = None;
        let out = if ext4 {
            let img_dir = tempfile::tempdir().ok()?;
            let img = img_dir.path().join("fs.img");
            let made = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&img)
                .arg(size)
                .output();
            match made {
                Ok(o) if o.status.success() => {}
                other => {
                    println!("SKIPPED: cannot make an ext4 image ({other:?})");
                    return None;
                }
            }
            let out = Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(dir.path())
                .output();
            image_dir = Some(img_dir);
            out
        } else {
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
        };
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir,
                _image: image_dir,
            }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a small file system ({}); the disk-full test needs root",
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

    fn mount(size: &str) -> Option<Tmpfs> {
        Self::mount_kind(size, false)
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

fn config(dir: &Path, mode: FlushDiskType, warm: bool) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.flush_disk_type = mode;
    c.warm_mapped_file_enable = warm;
    c.mapped_file_size_commit_log = 256 * 1024;
    c.mapped_file_size_consume_queue = 16 * 20;
    c.flush_interval_commit_log = 10;
    c.flush_interval_consume_queue = 10;
    c.max_hash_slot_num = 16;
    c.max_index_num = 16;
    // Only ENOSPC stops writes here: no ratio-based refusal and no retention deletes.
    c.disk_max_used_space_ratio = 100;
    c.disk_space_clean_forcibly_ratio = 100;
    c.disk_space_warning_level_ratio = 100;
    c
}

/// Writes `path` until the file system refuses (ENOSPC).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    for chunk in [64 * 1024, 4096, 512] {
        let buf = vec![0x5Au8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

#[derive(Debug)]
struct Ack {
    topic: String,
    queue: i32,
    qoff: i64,
    key: String,
}

fn message(topic: &str, queue: i32, key: &str) -> MessageInner {
    let mut m = MessageInner::new(topic, queue, key.repeat(200).into_bytes());
    let uniq = format!("U-{key}");
    m.properties = store::message::encode_properties([("UNIQ_KEY", uniq.as_str()), ("KEYS", key)]);
    m.store_host = "127.0.0.1:10911".parse().expect("address");
    m
}

async fn put(store: &MessageStore, acks: &mut Vec<Ack>, topic: &str, queue: i32, key: &str) {
    let r = store
        .put_message(message(topic, queue, key))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert_eq!(r.status, store::PutStatus::PutOk, "{key}");
    acks.push(Ack {
        topic: topic.to_string(),
        queue,
        qoff: r.queue_offset,
        key: key.to_string(),
    });
}

async fn try_put(
    store: &MessageStore,
    acks: &mut Vec<Ack>,
    topic: &str,
    queue: i32,
    key: &str,
) -> bool {
    match store.put_message(message(topic, queue, key)).await {
        Ok(r) if r.status == store::PutStatus::PutOk => {
            acks.push(Ack {
                topic: topic.to_string(),
                queue,
                qoff: r.queue_offset,
                key: key.to_string(),
            });
            true
        }
        Ok(r) => panic!("{key}: {:?}", r.status),
        Err(e) => {
            assert!(e.to_string().contains("disk full"), "{key}: {e}");
            false
        }
    }
}

fn dispatch_while_full(mode: FlushDiskType, warm: bool, before: usize) {
    dispatch_while_full_on(mode, warm, before, false)
}

fn dispatch_while_full_on(mode: FlushDiskType, warm: bool, before: usize, ext4: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    record_store_panics();
    let Some(fs) = Tmpfs::mount_kind(if ext4 { "8M" } else { "6m" }, ext4) else {
        return;
    };
    let root: PathBuf = fs.path().join("store");
    let filler = fs.path().join("filler");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut acks = Vec::new();
    rt.block_on(async {
        let store = MessageStore::open(config(&root, mode, warm)).expect("open");
        for n in 0..before {
            put(&store, &mut acks, "T0", 0, &format!("before-{n}")).await;
        }
        assert!(store.wait_dispatched(Duration::from_secs(5)));
        let mut n = 0;
        for cycle in 0..4 {
            fill(&filler);
            let mut refused = 0;
            for _ in 0..200 {
                n += 1;
                let topic = format!("T{}", n % 7);
                if !try_put(&store, &mut acks, &topic, n % 5, &format!("c{cycle}-{n}")).await {
                    refused += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            // A little space returns, then all of it.
            let len = std::fs::metadata(&filler).map(|m| m.len()).unwrap_or(0);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&filler)
                .expect("filler");
            f.set_len(len.saturating_sub(48 * 1024)).expect("shrink");
            drop(f);
            for _ in 0..100 {
                n += 1;
                let topic = format!("U{}", n % 11);
                if !try_put(&store, &mut acks, &topic, n % 3, &format!("c{cycle}-{n}")).await {
                    refused += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(&filler).expect("free space");
            println!("cycle {cycle}: {refused} puts refused on the full disk");
            let started = Instant::now();
            assert!(
                store.wait_dispatched(Duration::from_secs(10)),
                "dispatch did not resume after space returned"
            );
            println!("dispatch resumed after {:?}", started.elapsed());
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                n += 1;
                if try_put(&store, &mut acks, "T1", 1, &format!("after-{n}")).await {
                    break;
                }
                assert!(Instant::now() < deadline, "writes did not resume");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        store.shutdown().expect("shutdown");
    });
    let panics = STORE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "store threads panicked: {panics:#?}");
    println!("{} acknowledged", acks.len());

    let store = MessageStore::open(config(&root, mode, warm)).expect("reopen");
    for a in &acks {
        let got = store.get_messages(&a.topic, a.queue, a.qoff, 1, 1 << 20, &AcceptAll);
        assert_eq!(got.status, GetMessageStatus::Found, "{a:?}");
        let m = store::MessageExt::decode(&got.messages[0]).expect("decode");
        assert_eq!(m.property("KEYS"), Some(a.key.as_str()), "{a:?}");
        let hits = store.query_by_key(&a.topic, &a.key, 4, 0, i64::MAX);
        assert_eq!(hits.messages.len(), 1, "{a:?} by key");
    }
    store.shutdown().expect("shutdown");
}

#[test]
fn async_dispatch_on_a_full_disk() {
    dispatch_while_full(FlushDiskType::AsyncFlush, false, 10);
}

#[test]
fn async_fresh_store_on_a_full_disk() {
    dispatch_while_full(FlushDiskType::AsyncFlush, false, 0);
}

#[test]
fn sync_dispatch_on_a_full_disk() {
    dispatch_while_full(FlushDiskType::SyncFlush, false, 10);
}

#[test]
fn sync_fresh_store_on_a_full_disk() {
    dispatch_while_full(FlushDiskType::SyncFlush, true, 0);
}

/// `SYNC_FLUSH`: the disk fills just as the CommitLog reaches the end of a segment, so the
/// blank marker closing it cannot be written; once space returns, writes go on in the next
/// segment and every acknowledged message is readable.
#[test]
fn sync_segment_roll_on_a_full_disk() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    record_store_panics();
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let root: PathBuf = fs.path().join("store");
    let filler = fs.path().join("filler");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut acks = Vec::new();
    let seg = 256 * 1024;
    rt.block_on(async {
        let store =
            MessageStore::open(config(&root, FlushDiskType::SyncFlush, false)).expect("open");
        let mut n = 0;
        while (store.commit_log_max_offset() as u64) + 6000 < seg {
            n += 1;
            put(&store, &mut acks, "T0", 0, &format!("before-{n}")).await;
        }
        fill(&filler);
        let mut refused = 0;
        for _ in 0..20 {
            n += 1;
            if !try_put(&store, &mut acks, "T0", 0, &format!("full-{n}")).await {
                refused += 1;
            }
        }
        println!("{refused} refused");
        std::fs::remove_file(&filler).expect("free space");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut after = 0;
        while after < 20 {
            n += 1;
            if try_put(&store, &mut acks, "T0", 0, &format!("after-{n}")).await {
                after += 1;
            } else {
                assert!(Instant::now() < deadline, "writes did not resume");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(store.wait_dispatched(Duration::from_secs(5)));
        store.shutdown().expect("shutdown");
    });
    let panics = STORE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "store threads panicked: {panics:#?}");
    let store = MessageStore::open(config(&root, FlushDiskType::SyncFlush, false)).expect("reopen");
    for a in &acks {
        let got = store.get_messages(&a.topic, a.queue, a.qoff, 1, 1 << 20, &AcceptAll);
        assert_eq!(got.status, GetMessageStatus::Found, "{a:?}");
    }
    store.shutdown().expect("shutdown");
}

#[test]
fn async_dispatch_on_a_full_ext4() {
    dispatch_while_full_on(FlushDiskType::AsyncFlush, false, 10, true);
}

#[test]
fn sync_dispatch_on_a_full_ext4() {
    dispatch_while_full_on(FlushDiskType::SyncFlush, true, 10, true);
}

/// A fresh store on a full disk: the first segment cannot be created, then space for it (but
/// not for an Index file) returns, so the first record is appended but cannot be indexed, then
/// all space returns.
fn fresh_store_index_blocked(mode: FlushDiskType, free_first: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    record_store_panics();
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let root: PathBuf = fs.path().join("store");
    let filler = fs.path().join("filler");
    let mut c = config(&root, mode, false);
    c.max_index_num = 40_000; // 800 KB Index files
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut acks = Vec::new();
    rt.block_on(async {
        let store = MessageStore::open(c.clone()).expect("open");
        fill(&filler);
        assert!(!try_put(&store, &mut acks, "T0", 0, "first").await);
        let len = std::fs::metadata(&filler).map(|m| m.len()).unwrap_or(0);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .expect("filler");
        f.set_len(len.saturating_sub(400 * 1024)).expect("shrink");
        drop(f);
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while acks.len() < 50 && Instant::now() < deadline {
            n += 1;
            if !try_put(
                &store,
                &mut acks,
                &format!("T{}", n % 3),
                n % 2,
                &format!("k{n}"),
            )
            .await
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        println!("{} acknowledged with the Index blocked", acks.len());
        assert_eq!(store.dispatched_offset(), 0, "the first record was indexed");
        if free_first {
            std::fs::remove_file(&filler).expect("free space");
            assert!(
                store.wait_dispatched(Duration::from_secs(10)),
                "dispatch did not resume after space returned"
            );
            store.shutdown().expect("shutdown");
        } else {
            // Shut down on the full disk: an error is fine, a panic is not.
            if let Err(e) = store.shutdown() {
                println!("shutdown on a full disk: {e}");
            }
            drop(store);
            std::fs::remove_file(&filler).expect("free space");
        }
    });
    let panics = STORE_PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(panics.is_empty(), "store threads panicked: {panics:#?}");
    let store = MessageStore::open(c).expect("reopen");
    for a in &acks {
        let got = store.get_messages(&a.topic, a.queue, a.qoff, 1, 1 << 20, &AcceptAll);
        assert_eq!(got.status, GetMessageStatus::Found, "{a:?}");
        let hits = store.query_by_key(&a.topic, &a.key, 4, 0, i64::MAX);
        assert_eq!(hits.messages.len(), 1, "{a:?} by key");
    }
    store.shutdown().expect("shutdown");
}

#[test]
fn async_fresh_store_index_blocked() {
    fresh_store_index_blocked(FlushDiskType::AsyncFlush, true);
}

#[test]
fn async_shutdown_with_the_index_blocked() {
    fresh_store_index_blocked(FlushDiskType::AsyncFlush, false);
}

#[test]
fn sync_shutdown_with_the_index_blocked() {
    fresh_store_index_blocked(FlushDiskType::SyncFlush, false);
}

#[test]
fn sync_fresh_store_index_blocked() {
    fresh_store_index_blocked(FlushDiskType::SyncFlush, true);
}
