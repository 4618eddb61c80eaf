//! `apogee bench produce|consume|e2e`: load generator and meter that speaks only the RocketMQ
//! protocol (through the client crate), so any RocketMQ-compatible cluster can be measured.
//!
//! - `produce`: `--concurrency` senders (or that many sends in flight with `--async`), each
//!   sending `--batch` messages of `--size` bytes per request; latency is per request.
//! - `consume`: a push consumer in `--group`; latency is store-to-consume age from the send
//!   time that bench producers write in the first 8 bytes of every body (big-endian
//!   microseconds since the epoch), falling back to the born timestamp.
//! - `e2e`: both at once, on a fresh consumer group; latency is send-to-consume.
//! - timer messages: `produce --timer-spread-secs S [--timer-after-secs A]` sends every
//!   message as a timer message due at a time spread evenly over `[start + A, start + A + S)`;
//!   `consume --timer` then measures delivery lateness: consume time minus the message's
//!   `TIMER_OUT_MS` (its requested time), and counts messages consumed before it (`early`)
//!   and without it (`errors`).
//!
//! - `produce --protocol grpc [--endpoint host:port]`: the same sends through a 5.x gRPC
//!   endpoint (`apogee proxy`, or `apogee standalone` on 8081), one SendMessage per request,
//!   over one HTTP/2 connection ([`crate::bench_grpc`]); `consume --protocol grpc`:
//!   `--concurrency` consumers receiving and acking through it.
//!
//! A progress line is drawn every second on stderr; the summary gives msg/s, MB/s (10^6
//! bytes), latency percentiles from an HDR histogram (microsecond resolution) and errors.
//! `--json` prints the summary as one JSON object on stdout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::consumer::simple::{SimpleConsumer, SimpleConsumerConfig};
use client::{ClientConfig, Producer, ProducerConfig};

use crate::bench_grpc::{GrpcReceiver, GrpcSender};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::message::{Message, MessageConst, MessageExt};
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Produce,
    Consume,
    E2e,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Remoting,
    Grpc,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum From {
    First,
    Last,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// NameServer addresses (default `$NAMESRV_ADDR`, else 127.0.0.1:9876).
    #[arg(short = 'n', long = "namesrvAddr")]
    namesrv: Option<String>,
    /// Topic.
    #[arg(long, default_value = "BenchmarkTest")]
    topic: String,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Senders (sync) or sends in flight (--async); consume threads for consume.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages per send request (SEND_BATCH_MESSAGE when > 1); listener batch for consume.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Run time in seconds (default 10 unless --count is given).
    #[arg(long)]
    duration: Option<u64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Limit sending to this many messages per second in total (open loop, for latency at a
    /// given load).
    #[arg(long)]
    rate: Option<u64>,
    /// Send asynchronously (up to --concurrency in flight) instead of with sync senders.
    #[arg(long = "async")]
    is_async: bool,
    /// Consumer group (consume, e2e) or producer group (produce).
    #[arg(long)]
    group: Option<String>,
    /// Tag put on every message (produce) or subscribed to (consume).
    #[arg(long)]
    tags: Option<String>,
    /// Where a new consumer group starts.
    #[arg(long = "from", value_enum, default_value = "last")]
    from: From,
    /// consume: pop and ack (POP consumption, `--concurrency` simple consumers, each
    /// receiving up to 32 messages at a time and acking them with one batch ack) instead of a
    /// push consumer. A new POP group starts at the queues' first message.
    #[arg(long)]
    pop: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// produce: send timer messages due at times spread evenly over this many seconds.
    #[arg(long)]
    timer_spread_secs: Option<u64>,
    /// produce, with --timer-spread-secs: the spread starts this many seconds after the run.
    #[arg(long, default_value_t = 0)]
    timer_after_secs: u64,
    /// consume: latency is delivery lateness, consume time minus `TIMER_OUT_MS`.
    #[arg(long)]
    timer: bool,
    /// produce, consume: `remoting` (NameServer and brokers) or `grpc` (a 5.x endpoint,
    /// --endpoint; consume receives and acks like --pop).
    #[arg(long, value_enum, default_value = "remoting")]
    protocol: Protocol,
    /// The gRPC endpoint (`host:port`) for --protocol grpc.
    #[arg(long, default_value = "127.0.0.1:8081")]
    endpoint: String,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(flatten)]
    acl: crate::acl_args::AclArgs,
}

/// Counters and the latency histogram one side of a run fills.
struct Meter {
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Timer messages consumed before their time (`consume --timer`).
    early: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

impl Meter {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Meter {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            early: AtomicU64::new(0),
            // 1 µs .. 1 h, 3 significant digits.
            hist: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3)?),
        }))
    }

    fn record(&self, micros: u64) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(micros.max(1));
    }

    fn summary(&self, mode: &str, seconds: f64) -> serde_json::Value {
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        let messages = self.messages.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = seconds.max(1e-9);
        let ms = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        json!({
            "mode": mode,
            "messages": messages,
            "errors": self.errors.load(Ordering::Relaxed),
            "early": self.early.load(Ordering::Relaxed),
            "seconds": round3(seconds),
            "msgs_per_sec": round3(messages as f64 / secs),
            "mb_per_sec": round3(bytes as f64 / secs / 1e6),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let namesrv = crate::admin::namesrv_list(args.namesrv.as_deref())?;
    if args.concurrency == 0 || args.batch == 0 {
        anyhow::bail!("--concurrency and --batch must be at least 1");
    }
    if args.timer_spread_secs.is_some() && args.batch > 1 {
        anyhow::bail!("--timer-spread-secs sends timer messages, which cannot be batched");
    }
    if args.timer_spread_secs == Some(0) {
        anyhow::bail!("--timer-spread-secs must be at least 1");
    }
    if args.protocol == Protocol::Grpc && args.mode == Mode::E2e {
        anyhow::bail!("--protocol grpc measures produce and consume, not e2e");
    }
    let duration = match (args.duration, args.count) {
        (Some(d), _) => Some(Duration::from_secs(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let summary = match args.mode {
        Mode::Produce => {
            let meter = Meter::new()?;
            let secs = produce(&args, &namesrv, duration, meter.clone()).await?;
            meter.summary("produce", secs)
        }
        Mode::Consume if args.protocol == Protocol::Grpc => consume_grpc(&args, duration).await?,
        Mode::Consume if args.pop => consume_pop(&args, &namesrv, duration).await?,
        Mode::Consume => consume_only(&args, &namesrv, duration).await?,
        Mode::E2e => e2e(&args, &namesrv, duration).await?,
    };
    report(&args, &summary)
}

fn report(args: &BenchArgs, s: &serde_json::Value) -> anyhow::Result<()> {
    if args.json {
        return crate::admin::write_stdout(&s.to_string());
    }
    let mut text = format!(
        "{} {}: {} messages in {:.2} s, {} errors\n  throughput: {:.0} msg/s, {:.2} MB/s\n  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        s["mode"].as_str().unwrap_or(""),
        args.topic,
        s["messages"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["errors"],
        s["msgs_per_sec"].as_f64().unwrap_or(0.0),
        s["mb_per_sec"].as_f64().unwrap_or(0.0),
        s["p50_ms"].as_f64().unwrap_or(0.0),
        s["p90_ms"].as_f64().unwrap_or(0.0),
        s["p99_ms"].as_f64().unwrap_or(0.0),
        s["p999_ms"].as_f64().unwrap_or(0.0),
        s["max_ms"].as_f64().unwrap_or(0.0),
    );
    if args.timer {
        text.push_str(&format!(
            "\n  timer: latency is lateness after TIMER_OUT_MS; {} consumed early, {} without TIMER_OUT_MS",
            s["early"], s["errors"]
        ));
    }
    if let Some(p) = s.get("produce") {
        text.push_str(&format!(
            "\n  produce: {} messages, {:.0} msg/s, send p99 {:.3} ms, {} errors",
            p["messages"],
            p["msgs_per_sec"].as_f64().unwrap_or(0.0),
            p["p99_ms"].as_f64().unwrap_or(0.0),
            p["errors"]
        ));
    }
    crate::admin::write_stdout(&text)
}

/// Draws `label` progress every second until `stop` is set.
fn spawn_progress(
    label: &'static str,
    meter: Arc<Meter>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_msgs, mut last_bytes) = (0, 0);
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let msgs = meter.messages.load(Ordering::Relaxed);
            let bytes = meter.bytes.load(Ordering::Relaxed);
            let line = format!(
                "{label}: {msgs} msgs  {} msg/s  {:.1} MB/s  errors {}",
                msgs - last_msgs,
                (bytes - last_bytes) as f64 / 1e6,
                meter.errors.load(Ordering::Relaxed)
            );
            (last_msgs, last_bytes) = (msgs, bytes);
            if bar.is_hidden() {
                eprintln!("{:>4}s {line}", started.elapsed().as_secs());
            } else {
                bar.set_message(line);
            }
        }
        bar.finish_and_clear();
    })
}

/// Stops senders when the duration is over or the message budget is spent, and paces them
/// with `--rate`.
struct Budget {
    started: Instant,
    deadline: Option<Instant>,
    count: Option<u64>,
    rate: Option<u64>,
    claimed: AtomicU64,
}

impl Budget {
    /// Claims up to `n` messages, waiting for their turn under `--rate`; 0 when the run is
    /// over.
    async fn claim(&self, n: usize) -> usize {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return 0;
        }
        let n = n as u64;
        let before = self.claimed.fetch_add(n, Ordering::Relaxed);
        let granted = match self.count {
            Some(c) if before >= c => return 0,
            Some(c) => (c - before).min(n),
            None => n,
        };
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = self.started + Duration::from_secs_f64(before as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        granted as usize
    }
}

/// Delivery times of `produce --timer-spread-secs`: the n-th message is due at
/// `first_ms + n * golden ratio (mod spread)`, which spreads any number of messages evenly.
struct TimerSpread {
    first_ms: u64,
    spread_ms: u64,
    sent: AtomicU64,
}

impl TimerSpread {
    fn next_due_ms(&self) -> u64 {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        // Fractional part of n * (golden ratio - 1), in 2^-64 units.
        let frac = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let offset = ((u128::from(frac) * u128::from(self.spread_ms)) >> 64) as u64;
        self.first_ms + offset
    }
}

/// A bench message: body of `size` bytes starting with the send time; a timer message when
/// `timer` is given.
fn bench_message(
    topic: &str,
    template: &[u8],
    tags: Option<&str>,
    timer: Option<&TimerSpread>,
) -> Message {
    let mut body = template.to_vec();
    if body.len() >= 8 {
        body[..8].copy_from_slice(&now_micros().to_be_bytes());
    }
    let mut msg = Message::new(topic.to_string(), body);
    if let Some(t) = tags {
        msg = msg.with_tags(t.to_string());
    }
    if let Some(timer) = timer {
        msg = msg.with_deliver_time_ms(timer.next_due_ms() as i64);
    }
    msg
}

/// Runs the producers; returns the elapsed seconds.
async fn produce(
    args: &BenchArgs,
    namesrv: &str,
    duration: Option<Duration>,
    meter: Arc<Meter>,
) -> anyhow::Result<f64> {
    let producer = match args.protocol {
        Protocol::Remoting => {
            let group = args
                .group
                .clone()
                .unwrap_or_else(|| "bench_producer".to_string());
            let producer = Producer::start(
                args.acl
                    .apply(args.tls.apply(ClientConfig::new(namesrv)?)?)?,
                ProducerConfig::new(group),
            )
            .await
            .context("cannot start the producer")?;
            // Resolve the route once up front so a missing topic fails fast and clearly.
            producer
                .fetch_publish_queues(&args.topic)
                .await
                .with_context(|| format!("cannot get a route for topic `{}`", args.topic))?;
            Sender::Remoting(producer)
        }
        Protocol::Grpc => Sender::Grpc(
            GrpcSender::connect(&args.endpoint, &args.topic, args.tls.client_tls()?.as_ref())
                .await?,
        ),
    };
    let started = Instant::now();
    let budget = Arc::new(Budget {
        started,
        deadline: duration.map(|d| started + d),
        count: args.count,
        rate: args.rate,
        claimed: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress("produce", meter.clone(), stop.clone());
    let template: Arc<[u8]> = vec![b'a'; args.size].into();
    let tags = args.tags.clone();
    let timer = args.timer_spread_secs.map(|secs| {
        Arc::new(TimerSpread {
            first_ms: now_micros() / 1000 + args.timer_after_secs * 1000,
            spread_ms: secs * 1000,
            sent: AtomicU64::new(0),
        })
    });
    let batch = args.batch;
    let mut workers = Vec::new();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let senders = if args.is_async { 1 } else { args.concurrency };
    for _ in 0..senders {
        let (producer, meter, budget, template, tags, topic, permits, timer) = (
            producer.clone(),
            meter.clone(),
            budget.clone(),
            template.clone(),
            tags.clone(),
            args.topic.clone(),
            permits.clone(),
            timer.clone(),
        );
        let is_async = args.is_async;
        workers.push(tokio::spawn(async move {
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                let n = budget.claim(batch).await;
                if n == 0 {
                    break;
                }
                let msgs: Vec<Message> = (0..n)
                    .map(|_| bench_message(&topic, &template, tags.as_deref(), timer.as_deref()))
                    .collect();
                let task = send_once(producer.clone(), msgs, meter.clone(), template.len());
                if is_async {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    inflight.spawn(async move {
                        task.await;
                        drop(permit);
                    });
                    while inflight.try_join_next().is_some() {}
                } else {
                    task.await;
                }
            }
            while inflight.join_next().await.is_some() {}
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    if let Sender::Remoting(p) = producer {
        p.shutdown().await;
    }
    Ok(secs)
}

/// What `produce` sends with.
#[derive(Clone)]
enum Sender {
    Remoting(Producer),
    Grpc(GrpcSender),
}

/// Sends `msgs` as one request (a batch when more than one) and records the outcome.
async fn send_once(producer: Sender, mut msgs: Vec<Message>, meter: Arc<Meter>, size: usize) {
    let n = msgs.len() as u64;
    let t0 = Instant::now();
    let result: anyhow::Result<()> = match producer {
        Sender::Grpc(g) => g.send(msgs).await,
        Sender::Remoting(producer) if msgs.len() == 1 => match msgs.pop() {
            Some(m) => producer.send(m).await.map(|_| ()).map_err(Into::into),
            None => return,
        },
        Sender::Remoting(producer) => producer
            .send_batch(msgs)
            .await
            .map(|_| ())
            .map_err(Into::into),
    };
    match result {
        Ok(()) => {
            meter.record(t0.elapsed().as_micros() as u64);
            meter.messages.fetch_add(n, Ordering::Relaxed);
            meter.bytes.fetch_add(n * size as u64, Ordering::Relaxed);
        }
        Err(e) => {
            if meter.errors.fetch_add(n, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "send failed");
            }
        }
    }
}

/// Send time of a consumed message in microseconds since the epoch: from its body (written
/// by bench producers), else its born timestamp (`born_ms`).
fn sent_micros(body: &[u8], born_ms: i64, now: u64) -> u64 {
    let sent = match body.get(..8) {
        Some(head) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(head);
            u64::from_be_bytes(b)
        }
        None => 0,
    };
    // A body not written by bench: fall back to the born timestamp (ms).
    if sent == 0 || sent > now || now - sent > 3_600_000_000 {
        (born_ms.max(0) as u64) * 1000
    } else {
        sent
    }
}

/// A delivered timer message's requested time (`TIMER_OUT_MS`) in µs since the epoch.
fn timer_out_micros(m: &MessageExt) -> Option<u64> {
    m.message
        .property(MessageConst::PROPERTY_TIMER_OUT_MS)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| ms * 1000)
}

/// Starts a push consumer that records into `meter`; `first` is set at the first message.
/// Messages sent before `since` (µs since the epoch) are not counted.
async fn start_consumer(
    args: &BenchArgs,
    since: u64,
    namesrv: &str,
    group: &str,
    from: ConsumeFromWhere,
    meter: Arc<Meter>,
    first: Arc<Mutex<Option<Instant>>>,
) -> anyhow::Result<PushConsumer> {
    let mut config = PushConsumerConfig::new(group)
        .consume_from_where(from)
        .consume_thread_max(args.concurrency.clamp(1, 64))
        .consume_message_batch_max_size(if args.batch > 1 { args.batch } else { 32 })
        .pull_batch_size(32)
        .rebalance_interval(Duration::from_secs(2));
    config.pull_threshold_for_queue = 4096;
    let expr = args.tags.clone().unwrap_or_else(|| "*".to_string());
    let timer = args.timer;
    let client = args
        .acl
        .apply(args.tls.apply(ClientConfig::new(namesrv)?)?)?
        .poll_name_server_interval(Duration::from_secs(5));
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        {
            let mut f = first.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(Instant::now);
        }
        let (mut bytes, mut count) = (0u64, 0u64);
        let now = now_micros();
        {
            let mut h = meter.hist.lock().unwrap_or_else(|e| e.into_inner());
            for m in msgs {
                let sent = sent_micros(&m.message.body, m.born_timestamp, now);
                if sent < since {
                    continue;
                }
                bytes += m.message.body.len() as u64;
                count += 1;
                if !timer {
                    h.saturating_record(now.saturating_sub(sent).max(1));
                    continue;
                }
                match timer_out_micros(m) {
                    Some(due) if due > now => {
                        meter.early.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(due) => h.saturating_record((now - due).max(1)),
                    None => {
                        meter.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        meter.bytes.fetch_add(bytes, Ordering::Relaxed);
        meter.messages.fetch_add(count, Ordering::Relaxed);
        ConsumeConcurrentlyStatus::ConsumeSuccess
    });
    PushConsumer::start(
        client,
        config,
        &[(args.topic.as_str(), expr.as_str())],
        listener,
    )
    .await
    .context("cannot start the consumer")
}

/// Waits until `count` messages are counted or `duration` since `started` passed; returns
/// the moment it stopped waiting.
async fn wait_for_count(
    meter: &Meter,
    started: Instant,
    duration: Option<Duration>,
    count: Option<u64>,
) -> Instant {
    wait_until(duration.map(|d| started + d), || {
        count.is_some_and(|c| meter.messages.load(Ordering::Relaxed) >= c)
    })
    .await;
    Instant::now()
}

/// When the first message arrived, else `started`.
fn first_or(first: &Mutex<Option<Instant>>, started: Instant) -> Instant {
    first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(started)
}

/// Polls `done` every 10 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Option<Instant>, mut done: impl FnMut() -> bool) {
    while !done() && deadline.is_none_or(|d| Instant::now() < d) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn consume_only(
    args: &BenchArgs,
    namesrv: &str,
    duration: Option<Duration>,
) -> anyhow::Result<serde_json::Value> {
    let meter = Meter::new()?;
    let first = Arc::new(Mutex::new(None));
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| "bench_consumer".to_string());
    let from = match args.from {
        From::First => ConsumeFromWhere::ConsumeFromFirstOffset,
        From::Last => ConsumeFromWhere::ConsumeFromLastOffset,
    };
    let started = Instant::now();
    let consumer =
        start_consumer(args, 0, namesrv, &group, from, meter.clone(), first.clone()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress("consume", meter.clone(), stop.clone());
    let end = wait_for_count(&meter, started, duration, args.count).await;
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    consumer.shutdown().await;
    let since = first_or(&first, started);
    Ok(meter.summary(
        "consume",
        end.saturating_duration_since(since).as_secs_f64(),
    ))
}

/// `consume --pop`: `--concurrency` simple consumers pop (up to 32 at a time, 60 s
/// invisible) and ack what each pop returned with one batch ack; latency is from send to
/// receipt.
async fn consume_pop(
    args: &BenchArgs,
    namesrv: &str,
    duration: Option<Duration>,
) -> anyhow::Result<serde_json::Value> {
    let meter = Meter::new()?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| "bench_pop_consumer".to_string());
    let expr = args.tags.clone().unwrap_or_else(|| "*".to_string());
    let mut consumers = Vec::new();
    for _ in 0..args.concurrency {
        let client = args
            .acl
            .apply(args.tls.apply(ClientConfig::new(namesrv)?)?)?
            .poll_name_server_interval(Duration::from_secs(5));
        let c = SimpleConsumer::start(
            client,
            SimpleConsumerConfig::new(group.as_str()).await_duration(Duration::from_secs(1)),
        )
        .await
        .context("cannot start a simple consumer")?;
        c.subscribe(&args.topic, &expr)
            .await
            .with_context(|| format!("cannot subscribe to {}", args.topic))?;
        consumers.push(Arc::new(c));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in &consumers {
        let (c, meter, stop, first) = (c.clone(), meter.clone(), stop.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let msgs = match c.receive(32, Duration::from_secs(60)).await {
                    Ok(m) => m,
                    Err(_) => {
                        meter.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if msgs.is_empty() {
                    continue;
                }
                let batch = msgs
                    .iter()
                    .map(|m| (&m.message.message.body[..], m.message.born_timestamp));
                note_received(&meter, &first, batch.clone());
                if c.ack_batch(&msgs).await.is_err() {
                    meter.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                note_acked(&meter, batch);
            }
        }));
    }
    let secs = run_receivers(args, duration, "pop", &meter, stop, &first, started, tasks).await;
    for c in &consumers {
        c.shutdown().await;
    }
    Ok(meter.summary("consume --pop", secs))
}

/// `consume --protocol grpc`: `--concurrency` consumers, each on its own connection to
/// `--endpoint`, receive (up to 32 at a time, 60 s invisible) and ack what each receive
/// returned with one AckMessage, as a 5.x SimpleConsumer does; latency is from send to
/// receipt. A new group starts at the queues' first message, as with `--pop`.
async fn consume_grpc(
    args: &BenchArgs,
    duration: Option<Duration>,
) -> anyhow::Result<serde_json::Value> {
    let meter = Meter::new()?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| "bench_grpc_consumer".to_string());
    let expr = args.tags.clone().unwrap_or_else(|| "*".to_string());
    let tls = args.tls.client_tls()?;
    let mut consumers = Vec::new();
    for _ in 0..args.concurrency {
        consumers.push(
            GrpcReceiver::connect(&args.endpoint, &args.topic, &group, &expr, tls.as_ref()).await?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in consumers {
        let (meter, stop, first) = (meter.clone(), stop.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = match c.receive(32, Duration::from_secs(60)).await {
                    Ok(got) => got,
                    Err(_) => {
                        meter.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if got.messages.is_empty() {
                    continue;
                }
                let batch = got.messages.iter().map(|(b, born)| (&b[..], *born));
                note_received(&meter, &first, batch.clone());
                if c.ack(&got).await.is_err() {
                    meter.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                note_acked(&meter, batch);
            }
        }));
    }
    let secs = run_receivers(args, duration, "grpc", &meter, stop, &first, started, tasks).await;
    Ok(meter.summary("consume --protocol grpc", secs))
}

/// A received batch (bodies and born times, ms): notes the first receipt and each message's
/// latency from its send.
fn note_received<'a>(
    meter: &Meter,
    first: &Mutex<Option<Instant>>,
    batch: impl Iterator<Item = (&'a [u8], i64)>,
) {
    first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Instant::now);
    let now = now_micros();
    for (body, born_ms) in batch {
        meter.record(now.saturating_sub(sent_micros(body, born_ms, now)));
    }
}

/// An acked batch: counts its messages and bytes.
fn note_acked<'a>(meter: &Meter, batch: impl Iterator<Item = (&'a [u8], i64)>) {
    let (n, bytes) = batch.fold((0u64, 0u64), |(n, b), (body, _)| {
        (n + 1, b + body.len() as u64)
    });
    meter.bytes.fetch_add(bytes, Ordering::Relaxed);
    meter.messages.fetch_add(n, Ordering::Relaxed);
}

/// Lets the receive loops `tasks` run until `--count` messages or `duration`, shows progress
/// as `label`, then stops and joins them; the seconds measured, from the first message.
#[allow(clippy::too_many_arguments)]
async fn run_receivers(
    args: &BenchArgs,
    duration: Option<Duration>,
    label: &'static str,
    meter: &Arc<Meter>,
    stop: Arc<AtomicBool>,
    first: &Mutex<Option<Instant>>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> f64 {
    let progress = spawn_progress(label, meter.clone(), stop.clone());
    let end = wait_for_count(meter, started, duration, args.count).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = progress.await;
    end.saturating_duration_since(first_or(first, started))
        .as_secs_f64()
}

async fn e2e(
    args: &BenchArgs,
    namesrv: &str,
    duration: Option<Duration>,
) -> anyhow::Result<serde_json::Value> {
    let consumed = Meter::new()?;
    let produced = Meter::new()?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("bench_e2e_{}", std::process::id()));
    let first = Arc::new(Mutex::new(None));
    // A new group may start at offset 0 (upstream brokers do that while the queue's start
    // is still in memory): count only what this run sends.
    let consumer = start_consumer(
        args,
        now_micros(),
        namesrv,
        &group,
        ConsumeFromWhere::ConsumeFromLastOffset,
        consumed.clone(),
        first,
    )
    .await?;
    // Produce only once the consumer owns queues, so nothing is skipped.
    wait_until(Some(Instant::now() + Duration::from_secs(10)), || {
        !consumer.assigned_queues().is_empty()
    })
    .await;
    if consumer.assigned_queues().is_empty() {
        consumer.shutdown().await;
        anyhow::bail!("the consumer got no queue of `{}` within 10 s", args.topic);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = spawn_progress("e2e consumed", consumed.clone(), stop.clone());
    let secs = produce(args, namesrv, duration, produced.clone()).await;
    let secs = match secs {
        Ok(s) => s,
        Err(e) => {
            consumer.shutdown().await;
            return Err(e);
        }
    };
    // Let the consumer catch up with what was acknowledged (bounded).
    let target = produced.messages.load(Ordering::Relaxed);
    wait_until(Some(Instant::now() + Duration::from_secs(10)), || {
        consumed.messages.load(Ordering::Relaxed) >= target
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = progress.await;
    consumer.shutdown().await;
    let mut summary = consumed.summary("e2e", secs);
    summary["errors"] = json!(produced.errors.load(Ordering::Relaxed));
    summary["produce"] = produced.summary("produce", secs);
    Ok(summary)
}
