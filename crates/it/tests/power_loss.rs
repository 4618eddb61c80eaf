//! Power loss under a real broker: the broker (`it-broker`, a child process) keeps its store on
//! a `testkit::PowerLossDisk`, a FUSE disk on which nothing is durable until fsynced (file
//! data until the file's fsync / fdatasync / msync, names until their directory's fsync; see
//! `testkit::powerloss`). Each test SIGKILLs the broker, cuts the power (every unsynced write,
//! name and dirty page is gone), restarts the broker on what survived and checks:
//!
//! - [`sync_flush_acks_survive_power_cut`]: under `SYNC_FLUSH`, every acknowledged send is
//!   served after the cut, at its queue offset, with its body (the CommitLog rolls over to new
//!   segments on the way, so new files' names must be durable too);
//! - [`async_flush_recovers_torn_tail`]: under `ASYNC_FLUSH`, the cut lands in the middle of
//!   the CommitLog's write-back, leaving a torn record; recovery cuts it, every message below
//!   the checkpoint's flushed offset is served, so is every complete record before the torn
//!   one, and the broker accepts and serves sends again;
//! - [`config_files_survive_power_cut`]: a topic and a group created through the admin
//!   requests (answered once `topics.json` / `subscriptionGroup.json` are durable) and
//!   consumer offsets the broker had persisted (seen in `consumerOffset.json` with a later
//!   write after them, so the write that carried them had finished) are there after the cut;
//! - [`slave_power_cut_recovers_and_catches_up`]: the slave of a `SYNC_MASTER` loses what it
//!   had not flushed; it recovers, replicates again from there and holds every message the
//!   master acknowledged;
//! - [`controller_epoch_and_identity_survive_power_cut`]: in controller mode, the epoch file
//!   (epoch 1 from offset 0) and the granted replica id (`brokerIdentity`) are there after the
//!   cut, and the restarted broker keeps its id and is master again over every acknowledged
//!   `SYNC_FLUSH` send.
//!
//! They need root and `/dev/fuse`, so they are `#[ignore]`d in `cargo test --workspace`;
//! `.ci/run` runs them with `cargo test -p apogee-it --test power_loss -- --ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::BrokerConfig;
use it::child::{TORN_TAIL_LOG, UNCLEAN_RECOVERY_LOG};
use it::{
    broker_config, committed_offset, raw, raw_client, scan_commit_log, wait_until, BrokerRole,
    ChildBroker,
};
use parking_lot::Mutex;
use remoting::client::RemotingClient;
use remoting::message::decode_message_id;
use remoting::protocol::from_fastjson;
use remoting::{RemotingCommand, RequestCode, ResponseCode};
use store::FlushDiskType;
use testkit::PowerLossDisk;

/// Messages of the first batch of [`async_flush_recovers_torn_tail`]: more units than the two
/// pages (`flushConsumeQueueLeastPages`) a ConsumeQueue flush waits for.
const FIRST_BATCH: usize = 2 * 4096 / 20 + 50;
const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");
const TOPIC: &str = "TopicPowerLoss";
const GROUP: &str = "GroupPowerLoss";
/// The group the test's own reads use.
const CHECK_GROUP: &str = "GroupPowerLossCheck";
const QUEUES: i32 = 4;
/// Each wait for an event.
const WAIT: Duration = Duration::from_secs(20);
/// Bodies of about 1 KB: records are larger than two 512-byte sectors, so a torn cut can
/// always land strictly inside one.
const BODY_LEN: usize = 1000;
/// The CommitLog segment size: small, so a few hundred messages roll over to new segments.
const SEGMENT: u64 = 256 * 1024;

/// A message the broker acknowledged, and where it was stored.
#[derive(Clone, Debug)]
struct Acked {
    queue: i32,
    offset: i64,
    phys: u64,
    body: Vec<u8>,
}

fn body(queue: i32, n: usize) -> Vec<u8> {
    let mut b = format!("q{queue}-{n:06}-").into_bytes();
    b.resize(BODY_LEN, b'.');
    b
}

/// Sends one message to `queue`; the acknowledgement, if the broker answered SUCCESS.
async fn send(raw: &RemotingClient, broker: &str, queue: i32, n: usize) -> Option<Acked> {
    let body = body(queue, n);
    let r = raw::try_send_with(raw, broker, TOPIC, queue, &body, &[])
        .await
        .ok()?;
    if r.code != ResponseCode::SUCCESS {
        return None;
    }
    let offset = r.ext("queueOffset")?.parse().ok()?;
    let (_, phys) = decode_message_id(r.ext("msgId")?).ok()?;
    Some(Acked {
        queue,
        offset,
        phys: phys as u64,
        body,
    })
}

/// A broker's config with its store on `disk`.
fn config(
    ns: std::net::SocketAddr,
    disk: &PowerLossDisk,
    flush: FlushDiskType,
    segment: u64,
) -> BrokerConfig {
    let mut c = broker_config(
        ns,
        "C",
        "b1",
        0,
        BrokerRole::AsyncMaster,
        disk.path().join("store"),
    );
    c.flush_disk_type = flush;
    c.mapped_file_size_commit_log = segment;
    c
}

/// Every message of `queue` the broker serves, by queue offset.
async fn served(raw: &RemotingClient, broker: &str, queue: i32) -> BTreeMap<i64, Vec<u8>> {
    let mut out = BTreeMap::new();
    loop {
        let from = out.len() as i64;
        let got = raw::pull(raw, broker, CHECK_GROUP, TOPIC, queue, from).await;
        if got.is_empty() {
            return out;
        }
        for m in got {
            out.insert(m.queue_offset, m.message.body.to_vec());
        }
    }
}

/// Asserts that each of `acked` is served at its queue offset with its body.
async fn assert_served(what: &str, raw: &RemotingClient, broker: &str, acked: &[Acked]) {
    for q in 0..QUEUES {
        let have = served(raw, broker, q).await;
        for a in acked.iter().filter(|a| a.queue == q) {
            assert_eq!(
                have.get(&a.offset).map(|b| String::from_utf8_lossy(&b[..12]).to_string()),
                Some(String::from_utf8_lossy(&a.body[..12]).to_string()),
                "{what}: queue {q} offset {} (CommitLog {}): acknowledged, not served after the power cut ({} served)",
                a.offset,
                a.phys,
                have.len()
            );
        }
    }
}

/// Four senders, one per queue, sending to a broker until stopped.
struct Load {
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the senders; message numbers (in the bodies) start at `first`.
    fn start(raw: &RemotingClient, broker: &str, first: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let senders = (0..QUEUES)
            .map(|q| {
                let (raw, addr, acked, stop) =
                    (raw.clone(), broker.to_string(), acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = first;
                    while !stop.load(Ordering::Acquire) {
                        if let Some(a) = send(&raw, &addr, q, n).await {
                            acked.lock().push(a);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            acked,
            stop,
            senders,
        }
    }

    /// Waits until `n` sends were acknowledged; returns how many were then.
    async fn wait_acked(&self, n: usize, what: &str) -> usize {
        wait_until(what, WAIT * 3, || {
            let acked = self.acked.clone();
            async move { acked.lock().len() >= n }
        })
        .await;
        self.acked.lock().len()
    }

    /// Stops the senders; every acknowledged send.
    async fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Release);
        for s in self.senders {
            s.await.expect("sender");
        }
        let acked = self.acked.lock().clone();
        acked
    }
}

/// Kills the broker, cuts the power and restarts the broker on what survived; waits for its
/// crash recovery.
fn sigkill_cut_restart(m: &mut ChildBroker, disk: &mut PowerLossDisk) {
    m.sigkill();
    let report = disk.power_cut().expect("power cut");
    println!("power cut: {report:?}");
    m.restart();
    m.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);
}

/// (1) `SYNC_FLUSH`: four senders, one per queue, SIGKILL among their sends, power cut:
/// every acknowledged message is served after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
async fn sync_flush_acks_survive_power_cut() {
    let mut disk = PowerLossDisk::mount().expect("mount the power-loss disk");
    let ns = it::start_namesrv(Duration::from_secs(3)).await;
    let mut m = ChildBroker::start(
        Path::new(IT_BROKER),
        config(ns.local_addr(), &disk, FlushDiskType::SyncFlush, SEGMENT),
    );
    let raw = raw_client();
    raw::create_topic(&raw, &m.addr, TOPIC, QUEUES).await;

    let load = Load::start(&raw, &m.addr, 0);
    // Enough for the CommitLog to roll over to a third segment.
    let want = (2 * SEGMENT as usize) / BODY_LEN + 50;
    let acked_at_kill = load.wait_acked(want, "messages acknowledged").await;
    m.sigkill();
    let acked = load.stop().await;
    let report = disk.power_cut().expect("power cut");
    println!("power cut: {report:?}");
    m.restart();
    m.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);

    assert_served("SYNC_FLUSH", &raw, &m.addr, &acked).await;
    println!(
        "SYNC_FLUSH: {} acknowledged ({acked_at_kill} when the kill was sent), all served after the power cut",
        acked.len()
    );
}

/// The checkpoint's CommitLog flushed offset and ConsumeQueue safe offset
/// (`crates/store/src/checkpoint.rs`: big-endian at 48 and 56), if it holds one.
fn checkpoint(bytes: &[u8]) -> Option<(u64, u64)> {
    let at = |i: usize| Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?));
    (bytes.get(40..48)? == b"APOGEE01").then_some(())?;
    Some((at(48)?, at(56)?))
}

/// Where to tear the CommitLog: a sector boundary strictly inside a record, above the first
/// byte that is not durable yet (so the cut keeps some unsynced bytes and loses the rest of
/// that record). The last such record, and the boundary.
fn tear_point(current: &[u8], durable: &[u8]) -> Option<((usize, usize, i32), u64)> {
    let first_volatile = current
        .iter()
        .zip(durable.iter().chain(std::iter::repeat(&0)))
        .position(|(c, d)| c != d)?;
    scan_commit_log(current)
        .0
        .into_iter()
        .rev()
        .find_map(|r @ (pos, size, _)| {
            let p = (pos.max(first_volatile) / 512 + 1) * 512;
            (p < pos + size).then_some((r, p as u64))
        })
}

/// (2) `ASYNC_FLUSH`: a batch is sent and waited for until the checkpoint vouches for it,
/// then a few more are sent (left in the page cache: fewer dirty pages than a flush waits
/// for), the broker is SIGKILLed and the power cut in the middle of the CommitLog's
/// write-back. The restart cuts the torn record and keeps everything before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
async fn async_flush_recovers_torn_tail() {
    let mut disk = PowerLossDisk::mount().expect("mount the power-loss disk");
    let ns = it::start_namesrv(Duration::from_secs(3)).await;
    let mut config = config(
        ns.local_addr(),
        &disk,
        FlushDiskType::AsyncFlush,
        4 * SEGMENT,
    );
    // Without the Index, recovery replays from the checkpoint's ConsumeQueue offset, so a
    // ConsumeQueue the checkpoint vouches for must be on disk. (The Index is flushed every
    // 60 s; its older checkpoint offset would make recovery rebuild every ConsumeQueue.)
    config.message_index_enable = false;
    let root = config.store_path_root_dir.clone();
    let segment = root.join("commitlog").join(format!("{:020}", 0));
    let mut m = ChildBroker::start(Path::new(IT_BROKER), config);
    let raw = raw_client();
    raw::create_topic(&raw, &m.addr, TOPIC, QUEUES).await;

    // The first batch fills more than the pages a ConsumeQueue flush waits for (all in queue
    // 0: the checkpoint's ConsumeQueue offset is the lowest over all queues).
    let mut acked = Vec::new();
    let mut n = 0;
    while n < FIRST_BATCH {
        acked.push(send(&raw, &m.addr, 0, n).await.expect("send acknowledged"));
        n += 1;
    }
    let last = acked.last().map(|a| a.phys).unwrap_or_default();
    let cp_path = root.join("checkpoint");
    wait_until("the checkpoint to vouch for the first batch", WAIT, || {
        let cp = disk
            .durable_bytes(&cp_path)
            .ok()
            .as_deref()
            .and_then(checkpoint);
        async move { cp.is_some_and(|(cl, cq)| cl > last && cq > last) }
    })
    .await;

    // A few more, then the kill; retried (after a plain crash recovery) in the rare case a
    // periodic flush made them durable before the kill, leaving nothing to tear.
    let mut tear = None;
    for _attempt in 0..3 {
        for _ in 0..5 {
            acked.push(
                send(&raw, &m.addr, n as i32 % QUEUES, n)
                    .await
                    .expect("send acknowledged"),
            );
            n += 1;
        }
        m.sigkill();
        let current = std::fs::read(&segment).expect("read the CommitLog");
        let durable = disk.durable_bytes(&segment).expect("durable CommitLog");
        tear = tear_point(&current, &durable).map(|t| (t, current));
        if tear.is_some() {
            break;
        }
        m.restart();
        m.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);
    }
    let (((torn_at, torn_size, torn_queue), keep_below), current) =
        tear.expect("unsynced CommitLog bytes to tear after three tries");
    let (flushed, _) =
        checkpoint(&disk.durable_bytes(&cp_path).expect("checkpoint")).expect("a valid checkpoint");
    let complete: Vec<_> = scan_commit_log(&current)
        .0
        .into_iter()
        .filter(|&(pos, _, _)| pos < torn_at)
        .collect();
    let report = disk
        .power_cut_torn(&segment, keep_below)
        .expect("power cut");
    println!(
        "power cut: {report:?}; flushed {flushed}, record at {torn_at} ({torn_size} bytes) torn at {keep_below}"
    );

    m.restart();
    m.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);
    m.wait_log(TORN_TAIL_LOG, WAIT);
    // Nothing the checkpoint vouched for is lost, and every complete record before the torn
    // one is kept (whether or not it was flushed); the torn one is not served.
    let below: Vec<_> = acked.iter().filter(|a| a.phys < flushed).cloned().collect();
    assert!(
        below.len() >= FIRST_BATCH,
        "the first batch is below the flushed offset"
    );
    assert_served(
        "ASYNC_FLUSH below the flushed offset",
        &raw,
        &m.addr,
        &below,
    )
    .await;
    for q in 0..QUEUES {
        let kept = complete.iter().filter(|r| r.2 == q).count() as i64;
        let max = raw::max_offset(&raw, &m.addr, TOPIC, q).await;
        assert_eq!(max, kept, "queue {q}: max offset after the recovery");
    }
    // The broker accepts sends again: the next one goes where the torn record was.
    let next = send(&raw, &m.addr, torn_queue, n)
        .await
        .expect("a send after the recovery is acknowledged");
    assert_eq!(
        next.phys, torn_at as u64,
        "the first record after the restart"
    );
    wait_until("the message after the recovery to be served", WAIT, || {
        let (raw, addr, next) = (raw.clone(), m.addr.clone(), next.clone());
        async move { served(&raw, &addr, next.queue).await.get(&next.offset) == Some(&next.body) }
    })
    .await;
    println!(
        "ASYNC_FLUSH: {} acknowledged, {} below the flushed offset {flushed}, {} complete records kept, torn record cut",
        acked.len(),
        below.len(),
        complete.len()
    );
}

/// The `config/` file `name` of the store at `root`, parsed (upstream's JSON, integer keys
/// bare; `None` while it is absent).
fn config_file(root: &Path, name: &str) -> Option<serde_json::Value> {
    let path: PathBuf = root.join("config").join(name);
    from_fastjson(&std::fs::read(path).ok()?).ok()
}

/// The offset of `queue` in a parsed `consumerOffset.json`.
fn offset_in(file: &serde_json::Value, queue: i32) -> Option<i64> {
    file["offsetTable"][format!("{TOPIC}@{GROUP}")][queue.to_string()].as_i64()
}

/// Whether the broker serves `topic` (GET_ALL_TOPIC_CONFIG).
async fn has_topic(raw: &RemotingClient, broker: &str, topic: &str) -> bool {
    let addr = remoting::BrokerAddr::parse(broker).expect("broker addr");
    let r = raw
        .invoke(
            &addr,
            RemotingCommand::request(RequestCode::GET_ALL_TOPIC_CONFIG),
            WAIT,
        )
        .await
        .expect("answered");
    let body: serde_json::Value = from_fastjson(&r.body).expect("topic config JSON");
    body["topicConfigTable"].get(topic).is_some()
}

/// (3) Config files: a topic and a group created through the admin requests and consumer
/// offsets the broker had persisted survive the power cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
async fn config_files_survive_power_cut() {
    let mut disk = PowerLossDisk::mount().expect("mount the power-loss disk");
    let ns = it::start_namesrv(Duration::from_secs(3)).await;
    let config = config(
        ns.local_addr(),
        &disk,
        FlushDiskType::AsyncFlush,
        4 * SEGMENT,
    );
    let root = config.store_path_root_dir.clone();
    let mut m = ChildBroker::start(Path::new(IT_BROKER), config);
    let raw = raw_client();
    // Both answer once their file is durable.
    raw::create_topic(&raw, &m.addr, TOPIC, QUEUES).await;
    raw::create_group(&raw, &m.addr, GROUP).await;
    for q in 0..QUEUES {
        for i in 0..10 {
            send(&raw, &m.addr, q, i).await.expect("send acknowledged");
        }
    }
    // Offsets, persisted by the broker's periodic writer: seen in the file, and then a later
    // write seen after them (one writer, writing in order: the write carrying them, and its
    // directory fsync, had finished).
    for q in 0..QUEUES {
        raw::commit_offset(&raw, &m.addr, (GROUP, TOPIC, q), 5 + q as i64).await;
    }
    wait_until("the offsets in consumerOffset.json", WAIT, || {
        let file = config_file(&root, "consumerOffset.json");
        async move {
            file.is_some_and(|f| (0..QUEUES).all(|q| offset_in(&f, q) == Some(5 + q as i64)))
        }
    })
    .await;
    raw::commit_offset(&raw, &m.addr, (GROUP, TOPIC, 0), 9).await;
    wait_until("a later write of consumerOffset.json", WAIT, || {
        let file = config_file(&root, "consumerOffset.json");
        async move { file.is_some_and(|f| offset_in(&f, 0) == Some(9)) }
    })
    .await;

    sigkill_cut_restart(&mut m, &mut disk);

    assert!(
        has_topic(&raw, &m.addr, TOPIC).await,
        "the topic created before the power cut is gone"
    );
    let groups = config_file(&root, "subscriptionGroup.json").expect("subscriptionGroup.json");
    assert!(
        groups["subscriptionGroupTable"].get(GROUP).is_some(),
        "the group created before the power cut is gone: {groups}"
    );
    for q in 1..QUEUES {
        assert_eq!(
            committed_offset(&raw, &m.addr, GROUP, TOPIC, q).await,
            Some(5 + q as i64),
            "queue {q}: the persisted consumer offset after the power cut"
        );
    }
    let q0 = committed_offset(&raw, &m.addr, GROUP, TOPIC, 0).await;
    assert!(
        matches!(q0, Some(5) | Some(9)),
        "queue 0: the persisted consumer offset after the power cut: {q0:?}"
    );
}

/// The entries (`epoch`, `startOffset`) of an epoch file (upstream's `CheckpointFile` text:
/// count, CRC, one `<epoch>-<startOffset>` line per entry); empty when the file is missing.
fn epoch_entries(path: &Path) -> Vec<(i32, i64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (e, o) = l.split_once('-')?;
            Some((e.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// (4) Controller mode: the broker is elected master (its epoch file gets epoch 1 at
/// CommitLog offset 0, its replica id is granted into `brokerIdentity`) and acknowledges
/// `SYNC_FLUSH` sends; after SIGKILL and a power cut both files are there as written, and the
/// restarted broker keeps its id, serves every acknowledged message and is master again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
async fn controller_epoch_and_identity_survive_power_cut() {
    let mut disk = PowerLossDisk::mount().expect("mount the power-loss disk");
    let ctl_dir = tempfile::tempdir().unwrap();
    let ctl = it::ChildController::start_alone(
        Path::new(env!("CARGO_BIN_EXE_it-controller")),
        ctl_dir.path(),
    );
    let ns = it::start_namesrv(Duration::from_secs(3)).await;
    let mut config = config(ns.local_addr(), &disk, FlushDiskType::SyncFlush, SEGMENT);
    config.enable_controller_mode = true;
    config.controller_addr = ctl.addr.clone();
    config.broker_heartbeat_interval = 100;
    config.controller_heart_beat_timeout_mills = 1_000;
    let (epoch_file, identity) = (
        config.epoch_file(),
        config.store_path_root_dir.join("brokerIdentity"),
    );
    let mut m = ChildBroker::start(Path::new(IT_BROKER), config);
    m.wait_log("this broker is now the master", WAIT);
    let raw = raw_client();
    raw::create_topic(&raw, &m.addr, TOPIC, QUEUES).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        let q = n as i32 % QUEUES;
        acked.push(send(&raw, &m.addr, q, n).await.expect("send acknowledged"));
    }
    let written = (
        epoch_entries(&epoch_file),
        std::fs::read_to_string(&identity),
    );
    assert_eq!(written.0, vec![(1, 0)], "the epoch file before the cut");

    m.sigkill();
    let report = disk.power_cut().expect("power cut");
    println!("power cut: {report:?}");
    assert_eq!(
        epoch_entries(&epoch_file),
        written.0,
        "the epoch file after the power cut"
    );
    assert_eq!(
        std::fs::read_to_string(&identity).ok(),
        written.1.ok(),
        "brokerIdentity after the power cut"
    );
    m.restart();
    m.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);
    m.wait_log("this broker is now the master", WAIT);
    assert!(
        m.log()
            .iter()
            .all(|l| !l.contains("replica id from the controllers") || l.contains("id=1")),
        "the restarted broker did not keep replica id 1"
    );
    assert_served("after the power cut", &raw, &m.addr, &acked).await;
    let end = acked.iter().map(|a| a.phys).max().unwrap_or(0);
    let entries = epoch_entries(&epoch_file);
    assert_eq!(entries.first(), Some(&(1, 0)), "epoch file: {entries:?}");
    assert!(
        entries[1..].iter().all(|(_, start)| *start as u64 > end),
        "a later epoch starts inside the acknowledged data: {entries:?}"
    );
}

/// (5) The slave of a `SYNC_MASTER` loses power: its store is on the power-loss disk and its
/// CommitLog is never flushed by the interval during the test, so the cut takes back the data
/// it had acknowledged to the master. Its restart recovers what was durable, replication
/// resumes from there (not from what the master last heard from it), the master acknowledges
/// sends again, and both hold every message the master acknowledged before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
async fn slave_power_cut_recovers_and_catches_up() {
    let mut disk = PowerLossDisk::mount().expect("mount the power-loss disk");
    let ns = it::start_namesrv(Duration::from_secs(3)).await;
    let master_dir = tempfile::tempdir().expect("temp dir");
    let exe = Path::new(IT_BROKER);
    let mut mc = broker_config(
        ns.local_addr(),
        "C",
        "b1",
        0,
        BrokerRole::SyncMaster,
        master_dir.path().join("store"),
    );
    mc.mapped_file_size_commit_log = SEGMENT;
    let m = ChildBroker::start(exe, mc);
    let ha = m.ha_port.expect("a master has an HA port");
    let mut sc = broker_config(
        ns.local_addr(),
        "C",
        "b1",
        1,
        BrokerRole::Slave,
        disk.path().join("store"),
    );
    sc.mapped_file_size_commit_log = SEGMENT;
    sc.ha_master_address = Some(format!("127.0.0.1:{ha}"));
    sc.flush_interval_commit_log = 600_000;
    let mut s = ChildBroker::start(exe, sc);
    let raw = raw_client();
    raw::create_topic(&raw, &m.addr, TOPIC, QUEUES).await;

    let load = Load::start(&raw, &m.addr, 0);
    let want = (2 * SEGMENT as usize) / BODY_LEN + 50;
    load.wait_acked(want, "sends acknowledged with the slave")
        .await;
    s.sigkill();
    let mut acked = load.stop().await;
    let report = disk.power_cut().expect("power cut");
    println!("power cut of the slave: {report:?}");
    assert!(
        report.files_reverted > 0,
        "the cut took nothing back from the slave: {report:?}"
    );
    s.restart();
    s.wait_log(UNCLEAN_RECOVERY_LOG, WAIT);

    // The master acknowledges again once the slave has caught up.
    let load = Load::start(&raw, &m.addr, 1_000_000);
    load.wait_acked(100, "sends acknowledged after the slave's power cut")
        .await;
    acked.extend(load.stop().await);
    it::wait_replicated(
        "the slave to catch up with the master",
        WAIT,
        (&m.addr, &s.addr),
        TOPIC,
        QUEUES,
    )
    .await;
    assert_served("slave after its power cut", &raw, &s.addr, &acked).await;
    assert_served("master", &raw, &m.addr, &acked).await;
    println!(
        "slave power cut: {} acknowledged, all on the slave and the master",
        acked.len()
    );
}
