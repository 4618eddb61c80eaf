//! Store-level benchmark (`cargo bench -p apogee-store`): prints figures, asserts nothing.
//!
//! 1. `ASYNC_FLUSH` append of 1 KiB messages from one writer, and how fast the dispatcher
//!    builds the ConsumeQueue/Index behind it;
//! 2. reads of hot data through `get_messages` (zero-copy, and copied into a buffer as a
//!    response would be);
//! 3. `SYNC_FLUSH` with 64 concurrent writers (group commit), without and with
//!    `warmMapedFileEnable`, against the disk's fsync rate (append + `fdatasync`, like
//!    `dd oflag=dsync`) x writers per group commit, probed between the runs.
//!
//! Runs in a temporary directory on the same disk as `/tmp` (or `$APOGEE_BENCH_DIR`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::message::encode_properties;
use store::{AcceptAll, FlushDiskType, MessageInner, MessageStore, StoreConfig};

const BODY: usize = 1024;

/// Errors stop the benchmark with a message instead of a panic.
type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn message(topic: &str, queue: i32, body: &Bytes, props: String) -> MessageInner {
    let mut m = MessageInner::new(topic, queue, body.clone());
    m.properties = props;
    m.store_host = std::net::SocketAddr::from(([127, 0, 0, 1], 10911));
    m
}

/// Appends `n` 1 KiB messages (unique key each, 4 queues) from one writer; returns
/// (seconds, bytes, dispatch lag after the last append).
fn append_run(
    store: &MessageStore,
    rt: &tokio::runtime::Runtime,
    n: u64,
) -> BenchResult<(f64, u64, Duration)> {
    let body = Bytes::from(vec![b'x'; BODY]);
    rt.block_on(async {
        let start = Instant::now();
        let mut bytes = 0u64;
        for i in 0..n {
            let key = i.to_string();
            let props = encode_properties([("TAGS", "TagA"), ("KEYS", key.as_str())]);
            let r = store
                .put_message(message("BenchAsync", (i % 4) as i32, &body, props))
                .await?;
            bytes += r.wrote_bytes as u64;
        }
        let append = start.elapsed().as_secs_f64();
        let lag_start = Instant::now();
        assert!(store.wait_dispatched(Duration::from_secs(60)));
        Ok((append, bytes, lag_start.elapsed()))
    })
}

/// fsyncs per second for `chunk`-byte appends, each followed by `fdatasync`.
fn fsync_rate(dir: &Path, chunk: usize, for_how_long: Duration) -> BenchResult<f64> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let data = vec![7u8; chunk];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_how_long {
        f.write_all(&data)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(rate)
}

fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let base = std::env::var_os("APOGEE_BENCH_DIR").map(std::path::PathBuf::from);
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!(
        "== apogee-store benchmark (1 KiB bodies, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    // `APOGEE_BENCH_ONLY=async|sync` runs one part.
    let only = std::env::var("APOGEE_BENCH_ONLY").unwrap_or_default();
    if only != "sync" {
        bench_async(tmp.path(), &rt)?;
    }
    if only != "async" {
        bench_sync(tmp.path(), &rt, false)?;
        bench_sync(tmp.path(), &rt, true)?;
    }
    Ok(())
}

/// How fast this machine backs memory it has not touched yet (GB/s): every appended page
/// needs a fresh page-cache page, so this bounds a cold append run.
fn fresh_memory_rate() -> f64 {
    let size = 512usize << 20;
    let start = Instant::now();
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    for i in (0..size).step_by(4096) {
        // SAFETY: within the allocation; one byte per page, to fault it in.
        unsafe { p.add(i).write_volatile(1) };
    }
    std::hint::black_box(&v);
    size as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn bench_async(tmp: &Path, rt: &tokio::runtime::Runtime) -> BenchResult {
    println!(
        "fresh-memory fault-in rate of this VM: {:.2} GB/s",
        fresh_memory_rate()
    );
    // --- ASYNC_FLUSH append, one writer. A first run on memory the VM has not touched yet
    // pays for backing every fresh page-cache page; its files are then deleted so the
    // measured run reuses those pages, as a long-running broker does.
    let n: u64 = 2_000_000;
    let mut c = StoreConfig::new(tmp.join("async-warmup"));
    c.flush_disk_type = FlushDiskType::AsyncFlush;
    let store = MessageStore::open(c)?;
    let (secs, bytes, _) = append_run(&store, rt, n)?;
    println!(
        "ASYNC_FLUSH append, 1 writer, fresh memory: {:.0} msg/s, {:.0} MB/s",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    store.shutdown()?;
    drop(store);
    std::fs::remove_dir_all(tmp.join("async-warmup"))?;

    let dir = tmp.join("async");
    let mut c = StoreConfig::new(&dir);
    c.flush_disk_type = FlushDiskType::AsyncFlush;
    let store = MessageStore::open(c)?;
    let (append_secs, bytes, dispatch_lag) = append_run(&store, rt, n)?;
    let dispatch_secs = append_secs + dispatch_lag.as_secs_f64();
    println!(
        "ASYNC_FLUSH append, 1 writer: {:.0} msg/s, {:.0} MB/s ({n} msgs in {append_secs:.2} s)",
        n as f64 / append_secs,
        bytes as f64 / append_secs / 1e6
    );
    println!(
        "dispatch (ConsumeQueue + Index): caught up {:.0} ms after the last append; {:.0} msg/s overall",
        dispatch_lag.as_secs_f64() * 1e3,
        n as f64 / dispatch_secs
    );

    // --- Hot reads.
    let start = Instant::now();
    let (mut read_bytes, mut reads) = (0usize, 0u64);
    for q in 0..4 {
        let mut off = 0;
        let max = store.max_offset("BenchAsync", q);
        while off < max {
            let got = store.get_messages("BenchAsync", q, off, 32, 1 << 20, &AcceptAll);
            read_bytes += got.buffer_total_size;
            reads += got.messages.len() as u64;
            off = got.next_begin_offset;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "hot reads, zero-copy (get_messages, 32 per call): {:.2} GB/s, {:.0} msg/s",
        read_bytes as f64 / secs / 1e9,
        reads as f64 / secs
    );
    let start = Instant::now();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut copied = 0usize;
    for q in 0..4 {
        let mut off = 0;
        let max = store.max_offset("BenchAsync", q);
        while off < max {
            let got = store.get_messages("BenchAsync", q, off, 32, 1 << 20, &AcceptAll);
            out.clear();
            for m in &got.messages {
                out.extend_from_slice(m);
            }
            copied += out.len();
            off = got.next_begin_offset;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "hot reads, copied into a response buffer: {:.2} GB/s",
        copied as f64 / secs / 1e9
    );
    store.shutdown()?;
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn bench_sync(tmp: &Path, rt: &tokio::runtime::Runtime, warm: bool) -> BenchResult {
    // --- SYNC_FLUSH, 64 writers, group commit. This disk's fsync rate drifts a lot from one
    // second to the next, so probes and store runs alternate, and the runs are compared with
    // the mean of the probes taken around them.
    let body = Bytes::from(vec![b'x'; BODY]);
    let dir = tmp.join("sync");
    let mut c = StoreConfig::new(&dir);
    c.flush_disk_type = FlushDiskType::SyncFlush;
    c.warm_mapped_file_enable = warm;
    let store = MessageStore::open(c)?;
    let writers: u64 = 64;
    let group_bytes = writers as usize * (BODY + 100);
    let probe = |tmp: &Path| -> BenchResult<(f64, f64)> {
        let small = fsync_rate(tmp, 4096, Duration::from_millis(700))?;
        let group = fsync_rate(tmp, group_bytes, Duration::from_millis(700))?;
        Ok((small, group))
    };
    let mut probes = vec![probe(tmp)?];
    let (mut msgs, mut secs, mut flushes) = (0u64, 0f64, 0u64);
    for _ in 0..3 {
        let run_for = Duration::from_secs(2);
        let before = store.stats();
        let (m, s) = rt.block_on(async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    let props = encode_properties([("TAGS", "TagA")]);
                    let mut n = 0u64;
                    while start.elapsed() < run_for {
                        let m = message("BenchSync", (w % 8) as i32, &body, props.clone());
                        store.put_message(m).await?;
                        n += 1;
                    }
                    BenchResult::Ok(n)
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await??;
            }
            BenchResult::Ok((total, start.elapsed().as_secs_f64()))
        })?;
        msgs += m;
        secs += s;
        flushes += store.stats().commit_log_flushes - before.commit_log_flushes;
        probes.push(probe(tmp)?);
    }
    store.shutdown()?;
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    let n = probes.len() as f64;
    let small = probes.iter().map(|p| p.0).sum::<f64>() / n;
    let group = probes.iter().map(|p| p.1).sum::<f64>() / n;
    let rate = msgs as f64 / secs;
    println!(
        "fsync rate of the disk, mean of {} probes around the runs: {small:.0}/s at 4 KiB per fsync, {group:.0}/s at {} KiB (one group's bytes) per fsync",
        probes.len(),
        group_bytes / 1024
    );
    println!(
        "SYNC_FLUSH, {writers} writers, warmMapedFileEnable={warm}: {rate:.0} msg/s, {:.0} fsync/s, {:.1} writers per group commit",
        flushes as f64 / secs,
        msgs as f64 / flushes.max(1) as f64
    );
    for (what, f) in [("4 KiB", small), ("group-sized", group)] {
        println!(
            "  = {:.0}% of {what} fsync rate x {writers} writers ({:.0} msg/s); target 60%",
            100.0 * rate / (f * writers as f64),
            f * writers as f64
        );
    }
    Ok(())
}
