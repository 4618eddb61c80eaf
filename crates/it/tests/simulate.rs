//! A seeded fault simulation of a small cluster: one NameServer (in-process), group `b1` (a
//! `SYNC_MASTER` and its slave, each a child process that is SIGKILLed and restarted, see
//! [`it::child`]), group `b2` (an in-process master that stays up), a producer and a push
//! consumer that fails chosen messages (send-back, retry, DLQ). Three links run through a
//! `testkit::FaultProxy`: b1's master -> NameServer, b1's slave -> master (HA), and the
//! clients -> NameServer.
//!
//! A seed (`SIM_SEED`, else random; always printed) drives a `StdRng` that draws the whole
//! schedule before anything runs: send bursts (each message with the number of times the
//! listener fails it), SIGKILL and restart of b1's master or slave (never both down), a link
//! cut (blackhole, drop, reset, half-open, delay) and healed, the consumer shut down or crashed
//! (its runtime dropped: no shutdown path, no last commit) and a new one started, pauses. The schedule ends with
//! every link healed and every broker up. After every step the invariants are checked:
//! - every acknowledged (`SEND_OK`) message is readable at its group (b1: its master, or its
//!   slave while the master is down), at the queue offset the send answered;
//! - no request reached a NameServer that it refuses (its count of refused codes stays empty:
//!   no broker request code, e.g. CONSUMER_SEND_MSG_BACK, went to it);
//! - one DLQ rule: a message is in a DLQ only if the listener failed it `maxReconsumeTimes + 1`
//!   times and was meant to fail every delivery;
//! - the committed offset of each queue, read where the consumer reads it (b2's master, the
//!   broker the NameServer lists as b1's id 0), never moves back by more than the consumer's
//!   in-flight window (`HELD_PER_QUEUE`) on one broker process; when b1's master returns (it
//!   gets the slave's offsets back) or a broker restarts (it lost the commits it had not
//!   flushed, and the consumer commits again) it is back there within a bounded wait. When
//!   the master dies, the slave serves the offsets it last
//!   synchronised, which can be further back: that lag is measured and printed, not asserted
//!   (see `Sim::check_offsets`).
//!
//! Beside them a simple consumer pops a second topic (every even key is also sent there) and
//! acks what it gets, except the first delivery of every fifth key: at the end every
//! acknowledged message of that topic was popped and acked, the skipped ones after coming
//! back (POP through kills of b1's master and slave, acting master and cut links).
//!
//! At the end every acknowledged message was consumed (or, when it always fails, is in a DLQ).
//! A failure prints the seed and the steps run; `SIM_SEED=<seed> cargo test -p apogee-it
//! --test simulate -- --ignored seeded` replays it, `scripts/simulate.sh N` runs N seeds.
//!
//! **Replayable, not deterministic.** The same seed gives the same schedule, but the brokers,
//! clients and proxies are real threads, processes and sockets on the OS clock, so where a
//! kill lands among the sends, or when a route expires, differs between runs of one seed. A
//! deterministic run (turmoil's simulated network and clock) needs the remoting layer to run
//! over a transport the simulator provides, and every broker and client in one runtime: that
//! is not done.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::consumer::send_back::SendBackCounts;
use client::consumer::simple::{SimpleConsumer, SimpleConsumerConfig};
use client::{Producer, ProducerConfig};
use common::client_config;
use common::failover::{
    b1_master_in, init_tracing, send_acked, Acked, HELD_PER_QUEUE, PULL_BATCH, PULL_THRESHOLD,
};
use it::{
    cluster_broker_config, committed_offset, namesrv_config, raw, raw_client, route, wait_until,
    BrokerNode, BrokerRole, ChildBroker,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remoting::broker_headers::MessageQueue;
use remoting::client::RemotingClient;
use testkit::{FaultMode, FaultProxy};

const IT_BROKER: &str = env!("CARGO_BIN_EXE_it-broker");

const TOPIC: &str = "SimTopic";
const GROUP: &str = "SimGroup";
const DLQ: &str = "%DLQ%SimGroup";
/// The group the checker's own reads use.
const CHECK_GROUP: &str = "SimCheck";
/// The POP side: every even key is also sent to this topic, popped by a simple consumer of
/// [`POP_GROUP`] and acked, except the first delivery of keys whose number is a multiple of
/// [`POP_SKIP_EVERY`] (left unacked: it must come back after [`POP_INVISIBLE`]).
const POP_TOPIC: &str = "SimPopTopic";
const POP_GROUP: &str = "SimPopGroup";
const POP_SKIP_EVERY: usize = 5;
const POP_INVISIBLE: Duration = Duration::from_secs(2);
const QUEUES: i32 = 2;
/// The consumer's `maxReconsumeTimes`: a message failed this many times plus one is
/// dead-lettered.
const MAX_RECONSUME: u32 = 1;
/// Steps drawn per schedule (the healing tail comes on top).
const STEPS: usize = 24;
/// The seeds the normal `cargo test` runs.
const CI_SEEDS: [u64; 2] = [1, 2];
/// Each wait for an event (an invariant that needs replication or dispatch to catch up).
const WAIT: Duration = Duration::from_secs(15);
/// The final wait for every acknowledged message to be consumed or dead-lettered.
const DRAIN: Duration = Duration::from_secs(30);

/// A link that runs through a fault proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Link {
    /// b1's master registering with the NameServer.
    BrokerNs,
    /// b1's slave replicating from its master's HA port.
    MasterSlave,
    /// The producer and the consumer asking the NameServer for routes.
    ClientNs,
}

const LINKS: [Link; 3] = [Link::BrokerNs, Link::MasterSlave, Link::ClientNs];

/// One step of a schedule.
#[derive(Clone, PartialEq, Eq)]
enum Step {
    /// Send `k<first>`, `k<first+1>`, ... one at a time; `fails[i]` is how many deliveries of
    /// `k<first+i>` the listener fails (more than [`MAX_RECONSUME`]: every one).
    Send {
        first: usize,
        fails: Vec<u32>,
    },
    KillMaster,
    RestartMaster,
    KillSlave,
    RestartSlave,
    /// Shut the consumer down (cleanly: it commits its offsets) and start a new one of the
    /// group, which resumes from the committed offsets.
    RestartConsumer,
    /// Crash the consumer (its runtime is dropped where its tasks stand: no shutdown path,
    /// no last commit, sockets closed as a killed process's are) and start a new one.
    CrashConsumer,
    Cut(Link, FaultMode),
    Heal(Link),
    Pause(Duration),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send { first, fails } => {
                let failing: Vec<String> = fails
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| format!("k{}x{n}", first + i))
                    .collect();
                write!(
                    f,
                    "Send(k{first}..k{}, fail {failing:?})",
                    first + fails.len()
                )
            }
            Step::KillMaster => write!(f, "KillMaster"),
            Step::RestartMaster => write!(f, "RestartMaster"),
            Step::KillSlave => write!(f, "KillSlave"),
            Step::RestartSlave => write!(f, "RestartSlave"),
            Step::RestartConsumer => write!(f, "RestartConsumer"),
            Step::CrashConsumer => write!(f, "CrashConsumer"),
            Step::Cut(l, m) => write!(f, "Cut({l:?}, {m:?})"),
            Step::Heal(l) => write!(f, "Heal({l:?})"),
            Step::Pause(d) => write!(f, "Pause({d:?})"),
        }
    }
}

/// The schedule of `seed`: [`STEPS`] steps drawn from a `StdRng`, each valid in the state
/// the steps before it leave (a broker is restarted only when down, b1 never loses both its
/// brokers, the consumer is restarted only while it reaches the NameServer; every second
/// consumer restart is a crash), then a tail that heals every cut link, restarts every killed
/// broker and sends once more.
fn schedule(seed: u64) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut master_up, mut slave_up) = (true, true);
    let mut consumer_restarts = 0;
    let mut cut = BTreeSet::new();
    let mut next_key = 0;
    let mut send = |rng: &mut StdRng| {
        let n = rng.gen_range(5..25);
        let fails = (0..n)
            .map(|_| match rng.gen_range(0..20) {
                0..=14 => 0,
                15..=17 => rng.gen_range(1..=MAX_RECONSUME),
                _ => MAX_RECONSUME + 1,
            })
            .collect();
        let first = next_key;
        next_key += n;
        Step::Send { first, fails }
    };
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        let step = match rng.gen_range(0..10) {
            0 if master_up && slave_up => {
                master_up = false;
                Step::KillMaster
            }
            0 | 1 if !master_up => {
                master_up = true;
                Step::RestartMaster
            }
            2 if master_up && slave_up => {
                slave_up = false;
                Step::KillSlave
            }
            2 | 3 if !slave_up => {
                slave_up = true;
                Step::RestartSlave
            }
            4 | 5 => {
                let link = LINKS[rng.gen_range(0..LINKS.len())];
                if cut.remove(&link) {
                    Step::Heal(link)
                } else {
                    cut.insert(link);
                    let mode = match rng.gen_range(0..5) {
                        0 => FaultMode::Blackhole,
                        1 => FaultMode::Drop,
                        2 => FaultMode::Reset,
                        3 => FaultMode::HalfOpen,
                        _ => FaultMode::Delay(Duration::from_millis(rng.gen_range(20..200))),
                    };
                    Step::Cut(link, mode)
                }
            }
            6 => Step::Pause(Duration::from_millis(rng.gen_range(100..2_500))),
            // A new consumer must reach the NameServer to find its queues.
            7 if !cut.contains(&Link::ClientNs) => {
                consumer_restarts += 1;
                if consumer_restarts % 2 == 0 {
                    Step::CrashConsumer
                } else {
                    Step::RestartConsumer
                }
            }
            _ => send(&mut rng),
        };
        steps.push(step);
    }
    steps.extend(cut.into_iter().map(Step::Heal));
    if !master_up {
        steps.push(Step::RestartMaster);
    }
    if !slave_up {
        steps.push(Step::RestartSlave);
    }
    steps.push(send(&mut rng));
    steps
}

/// Where a committed offset was read: the broker's address and, for a child broker, the
/// process id of its run.
type Reader = (String, Option<u32>);

/// What the consumer's listener saw, and what it was told to do.
#[derive(Default)]
struct Consumed {
    /// key -> deliveries to fail (set before the key is sent).
    plan: HashMap<String, u32>,
    /// key -> deliveries failed.
    failed: HashMap<String, u32>,
    /// key -> successful consumptions.
    ok: HashMap<String, u32>,
}

/// What the simple consumer received and acked, by key.
#[derive(Default)]
struct Popped {
    received: HashMap<String, u32>,
    /// Keys whose ack was answered SUCCESS.
    acked: BTreeSet<String>,
}

struct Sim {
    seed: u64,
    steps: Vec<Step>,
    /// Steps run so far (printed when a check fails).
    done: usize,
    started: Instant,
    raw: RemotingClient,
    producer: Producer,
    consumer: SimConsumer,
    /// Consumers started so far (each new one gets its own client id).
    consumers: usize,
    consumed: Arc<Mutex<Consumed>>,
    acked: Vec<Acked>,
    /// Keys sent to [`POP_TOPIC`] and acknowledged by a broker.
    pop_sent: Vec<String>,
    popped: Arc<Mutex<Popped>>,
    pop_stop: Arc<AtomicBool>,
    popper: Option<tokio::task::JoinHandle<()>>,
    master_up: bool,
    slave_up: bool,
    /// (group, queue) -> where it was read last, and the highest committed offset seen there.
    committed: BTreeMap<(&'static str, i32), (Reader, i64)>,
    /// How far back b1's slave served a committed offset when it took over from its dead
    /// master, at most (see [`Sim::check_offsets`]).
    failover_lag: i64,
    /// Offset checks put off because the queue's consumer did not own the queue (see
    /// [`Sim::check_offsets`]); none is put off at the end.
    deferred: u32,
    /// Set for the last check: every deferred offset must be back.
    ending: bool,
    proxies: BTreeMap<Link, FaultProxy>,
    m1: ChildBroker,
    s1: ChildBroker,
    m2: BrokerNode,
    ns: namesrv::NameServer,
    // Last: the stores outlive the brokers.
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    /// A failed check (or a wait that timed out) unwinds through here: name the replay.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation FAILED: SIM_SEED={} at step {} of {} after {:?}; replay with \
                 `SIM_SEED={} cargo test -p apogee-it --test simulate -- --ignored seeded`\n\
                 steps run: {:#?}",
                self.seed,
                self.done,
                self.steps.len(),
                self.started.elapsed(),
                self.seed,
                &self.steps[..self.done.min(self.steps.len())],
            );
        }
    }
}

impl Sim {
    async fn start(seed: u64) -> Sim {
        let started = Instant::now();
        let steps = schedule(seed);
        println!("SIM_SEED={seed}: schedule {steps:#?}");
        let dir = tempfile::tempdir().unwrap();
        let mut ns_config = namesrv_config(Duration::from_secs(2));
        ns_config.support_acting_master = true;
        let ns = namesrv::NameServer::start(ns_config).await.unwrap();
        let nsa = ns.local_addr();
        let mut proxies = BTreeMap::new();
        for link in [Link::BrokerNs, Link::ClientNs] {
            proxies.insert(link, FaultProxy::start(nsa).await.unwrap());
        }
        let cfg = |ns: SocketAddr, name: &str, id: i64, role: BrokerRole| {
            cluster_broker_config(ns, dir.path(), (name, id, role), "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms")
        };
        let exe = Path::new(IT_BROKER);
        let mut mc = cfg(
            proxies[&Link::BrokerNs].addr(),
            "b1",
            0,
            BrokerRole::SyncMaster,
        );
        mc.sync_flush_timeout = 300;
        let m1 = ChildBroker::start(exe, mc);
        let ha = m1.ha_port.expect("a master has an HA port");
        let ha_proxy = FaultProxy::start(([127, 0, 0, 1], ha).into())
            .await
            .unwrap();
        let mut sc = cfg(nsa, "b1", 1, BrokerRole::Slave);
        sc.ha_master_address = Some(ha_proxy.addr().to_string());
        proxies.insert(Link::MasterSlave, ha_proxy);
        let s1 = ChildBroker::start(exe, sc);
        let m2 = BrokerNode::start(cfg(nsa, "b2", 0, BrokerRole::AsyncMaster));
        let raw = raw_client();
        for m in [&m1.addr, &m2.addr] {
            raw::create_topic(&raw, m, TOPIC, QUEUES).await;
            raw::create_topic(&raw, m, POP_TOPIC, QUEUES).await;
        }

        let clients_ns = proxies[&Link::ClientNs].addr();
        let producer = Producer::start(
            client_config(clients_ns, Duration::from_millis(200), "sim-producer")
                .send_latency_enable(false),
            ProducerConfig::new("SimPG").send_msg_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
        let consumed = Arc::new(Mutex::new(Consumed::default()));
        let consumer = start_consumer(clients_ns, "sim-consumer-1", consumed.clone()).await;
        let (popped, pop_stop) = (Arc::new(Mutex::new(Popped::default())), Arc::default());
        let popper = tokio::spawn(run_popper(
            clients_ns,
            popped.clone(),
            Arc::clone(&pop_stop),
        ));
        // Both topics' routes cached before any fault: a send to a topic without one asks
        // the NameServer first, which a cut link makes wait out the request timeout (twice:
        // the topic, then TBW102) for every message.
        for topic in [TOPIC, POP_TOPIC] {
            wait_until("the producer to see b1 and b2", WAIT, || {
                let qs = producer.fetch_publish_queues(topic);
                async move {
                    qs.await.is_ok_and(|qs| {
                        ["b1", "b2"]
                            .iter()
                            .all(|b| qs.iter().any(|q| q.broker_name == *b))
                    })
                }
            })
            .await;
        }
        wait_until("the consumer to own every queue", WAIT, || {
            let n = consumer
                .assigned_queues()
                .iter()
                .filter(|q| q.topic == TOPIC)
                .count();
            async move { n == 2 * QUEUES as usize }
        })
        .await;
        Sim {
            seed,
            steps,
            done: 0,
            started,
            raw,
            producer,
            consumer,
            consumers: 1,
            consumed,
            acked: Vec::new(),
            pop_sent: Vec::new(),
            popped,
            pop_stop,
            popper: Some(popper),
            master_up: true,
            slave_up: true,
            committed: BTreeMap::new(),
            failover_lag: 0,
            deferred: 0,
            ending: false,
            proxies,
            m1,
            s1,
            m2,
            ns,
            _dir: dir,
        }
    }

    /// Runs every step, checking the invariants after each, then waits for every
    /// acknowledged message to be consumed or dead-lettered.
    async fn run(mut self) {
        for i in 0..self.steps.len() {
            let step = self.steps[i].clone();
            let started = Instant::now();
            self.apply(&step).await;
            let applied = started.elapsed();
            self.done = i + 1;
            self.check(&format!("after step {i} {step:?}")).await;
            // Where a slow run spends its time (a step, or the checks after it).
            println!(
                "SIM_SEED={}: step {i} {step:?}: {applied:?}, checked after {:?}",
                self.seed,
                started.elapsed()
            );
        }
        let started = Instant::now();
        self.drain().await;
        self.drain_pops().await;
        self.ending = true;
        self.check_offsets("at the end").await;
        println!("SIM_SEED={}: drained in {:?}", self.seed, started.elapsed());
        self.pop_stop.store(true, Ordering::Release);
        if let Some(popper) = self.popper.take() {
            popper.await.expect("the popper");
        }
        let (pops, pop_dups) = {
            let p = self.popped.lock();
            (
                p.received.values().sum::<u32>(),
                p.received
                    .values()
                    .map(|n| n.saturating_sub(1))
                    .sum::<u32>(),
            )
        };
        println!(
            "SIM_SEED={}: POP: {} acknowledged sends, {pops} deliveries, {pop_dups} again",
            self.seed,
            self.pop_sent.len()
        );
        let (failed, dead, dups) = {
            let c = self.consumed.lock();
            (
                c.failed.values().sum::<u32>(),
                c.plan.values().filter(|n| **n > MAX_RECONSUME).count(),
                c.ok.values().map(|n| n.saturating_sub(1)).sum::<u32>(),
            )
        };
        println!(
            "SIM_SEED={}: {} steps, {} acknowledged, {failed} failed deliveries, {dead} meant \
             for the DLQ, {dups} duplicate consumptions, offsets at most {} back at a \
             failover, {} offset checks put off, the last consumer's send-backs {:?}, {:?}",
            self.seed,
            self.steps.len(),
            self.acked.len(),
            self.failover_lag,
            self.deferred,
            self.consumer.send_back_counts(),
            self.started.elapsed()
        );
        std::mem::replace(&mut self.consumer, SimConsumer::Gone)
            .shutdown()
            .await;
        self.producer.shutdown().await;
    }

    async fn apply(&mut self, step: &Step) {
        match step {
            Step::Send { first, fails } => {
                for (i, fails) in fails.iter().enumerate() {
                    self.send(format!("k{}", first + i), *fails).await;
                }
            }
            Step::KillMaster => {
                self.m1.sigkill();
                self.master_up = false;
            }
            Step::RestartMaster => {
                self.m1.restart();
                self.master_up = true;
            }
            Step::KillSlave => {
                self.s1.sigkill();
                self.slave_up = false;
            }
            Step::RestartSlave => {
                self.s1.restart();
                self.slave_up = true;
            }
            Step::RestartConsumer | Step::CrashConsumer => {
                let old = std::mem::replace(&mut self.consumer, SimConsumer::Gone);
                if *step == Step::CrashConsumer {
                    old.crash();
                } else {
                    old.shutdown().await;
                }
                self.consumers += 1;
                self.consumer = start_consumer(
                    self.proxies[&Link::ClientNs].addr(),
                    &format!("sim-consumer-{}", self.consumers),
                    self.consumed.clone(),
                )
                .await;
            }
            Step::Cut(link, mode) => self.proxies[link].set_mode(*mode),
            Step::Heal(link) => self.proxies[link].set_mode(FaultMode::Pass),
            // Time passing is the step: routes expire, retries come due, offsets are synced.
            Step::Pause(d) => tokio::time::sleep(*d).await,
        }
    }

    async fn send(&mut self, key: String, fails: u32) {
        self.consumed.lock().plan.insert(key.clone(), fails);
        if key_number(&key).is_multiple_of(2)
            && send_acked(&self.producer, POP_TOPIC, key.clone())
                .await
                .is_some()
        {
            self.pop_sent.push(key.clone());
        }
        if let Some(a) = send_acked(&self.producer, TOPIC, key).await {
            self.acked.push(a);
        }
    }

    /// Waits until every key acknowledged on [`POP_TOPIC`] was popped and acked, the ones
    /// left unacked at their first delivery after coming back.
    async fn drain_pops(&self) {
        let deadline = Instant::now() + DRAIN;
        loop {
            let missing: Vec<(String, u32)> = {
                let p = self.popped.lock();
                self.pop_sent
                    .iter()
                    .filter(|k| !p.acked.contains(*k))
                    .map(|k| (k.clone(), p.received.get(k).copied().unwrap_or(0)))
                    .collect()
            };
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(
                    "at the end",
                    format!("POP: acknowledged sends never popped and acked (key, deliveries): {missing:?}"),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where group `group` is read now: b1's master, or its slave while the master is down.
    fn reader(&self, group: &str) -> &str {
        match group {
            "b2" => &self.m2.addr,
            _ if self.master_up => &self.m1.addr,
            _ => &self.s1.addr,
        }
    }

    fn fail(&self, what: &str, detail: String) -> ! {
        panic!("SIM_SEED={}: {what}: {detail}", self.seed);
    }

    async fn check(&mut self, what: &str) {
        let refused = self.ns.unsupported_request_counts();
        if !refused.is_empty() {
            self.fail(
                what,
                format!("requests reached the NameServer (code -> count): {refused:?}"),
            );
        }
        self.check_acked_readable(what).await;
        self.check_dlq(what).await;
        self.check_offsets(what).await;
    }

    /// Every acknowledged message is at its queue offset on its group's reader (a slave
    /// indexes what it receives a moment later, a restarted master after its recovery).
    async fn check_acked_readable(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut missing = Vec::new();
            for group in ["b1", "b2"] {
                let reader = self.reader(group);
                let mut stored = HashMap::new();
                for q in 0..QUEUES {
                    for m in raw::pull_all(&self.raw, reader, (CHECK_GROUP, TOPIC), q).await {
                        stored.insert((q, m.queue_offset), m.message.body.to_vec());
                    }
                }
                missing.extend(self.acked.iter().filter(|a| {
                    a.broker == group
                        && stored.get(&(a.queue, a.offset)).map(Vec::as_slice)
                            != Some(a.key.as_bytes())
                }));
            }
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let mut found = Vec::new();
                for a in missing.iter().take(5) {
                    found.push((a.key.clone(), self.copies_of(&a.key).await));
                }
                let mut answers = Vec::new();
                for a in missing.iter().take(5) {
                    let r = raw::pull_response(
                        &self.raw,
                        self.reader(&a.broker),
                        CHECK_GROUP,
                        TOPIC,
                        a.queue,
                        a.offset,
                    )
                    .await;
                    answers.push(match r {
                        Ok(r) => format!(
                            "q{} @{}: code {} {:?} ext {:?} body {} bytes",
                            a.queue,
                            a.offset,
                            r.code,
                            r.remark_str(),
                            r.ext_fields,
                            r.body.len()
                        ),
                        Err(e) => format!("q{} @{}: {e}", a.queue, a.offset),
                    });
                }
                self.fail(
                    what,
                    format!(
                        "{} of {} acknowledged messages not readable at their group (b1 read \
                         at {}): {missing:?}; where the first are stored: {found:?}; the \
                         reader's answers at their offsets: {answers:?}",
                        missing.len(),
                        self.acked.len(),
                        self.reader("b1"),
                    ),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The keys in the DLQ of every broker up now.
    async fn dead_lettered(&self) -> BTreeSet<String> {
        let mut up = vec![&self.m2.addr];
        if self.master_up {
            up.push(&self.m1.addr);
        }
        if self.slave_up {
            up.push(&self.s1.addr);
        }
        let mut keys = BTreeSet::new();
        for broker in up {
            for m in raw::pull_all(&self.raw, broker, (CHECK_GROUP, DLQ), 0).await {
                keys.insert(String::from_utf8_lossy(&m.message.body).to_string());
            }
        }
        keys
    }

    /// Every copy of `key` on every broker (topic, retry topic, DLQ): (broker, topic, queue,
    /// queue offset, reconsume times). For the report of a failed run.
    async fn copies_of(&self, key: &str) -> Vec<(String, String, i32, i64, i32)> {
        let retry = format!("%RETRY%{GROUP}");
        let mut out = Vec::new();
        for broker in [&self.m1.addr, &self.s1.addr, &self.m2.addr] {
            for (topic, queues) in [(TOPIC, QUEUES), (retry.as_str(), 1), (DLQ, 1)] {
                for q in 0..queues {
                    for m in raw::pull_all(&self.raw, broker, (CHECK_GROUP, topic), q).await {
                        if &m.message.body[..] == key.as_bytes() {
                            out.push((
                                broker.clone(),
                                topic.to_string(),
                                q,
                                m.queue_offset,
                                m.reconsume_times,
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// One DLQ rule: only a message meant to fail every delivery, and failed
    /// `maxReconsumeTimes + 1` times, is in a DLQ.
    async fn check_dlq(&self, what: &str) {
        let dead = self.dead_lettered().await;
        let c = self.consumed.lock();
        let wrong: Vec<String> = dead
            .iter()
            .filter(|k| {
                c.plan.get(*k).is_none_or(|p| *p <= MAX_RECONSUME)
                    || c.failed.get(*k).is_none_or(|f| *f <= MAX_RECONSUME)
            })
            .map(|k| {
                format!(
                    "{k} (meant to fail {:?}, failed {:?})",
                    c.plan.get(k),
                    c.failed.get(k)
                )
            })
            .collect();
        if !wrong.is_empty() {
            drop(c);
            self.fail(
                what,
                format!(
                    "in a DLQ without {} failed deliveries: {wrong:?}",
                    MAX_RECONSUME + 1
                ),
            );
        }
    }

    /// Committed offsets, read where the consumer reads them: b2's master, and the broker the
    /// NameServer lists as b1's id 0 (its master, or its slave as acting master while the
    /// master is down or cut off from the NameServer; none while b1 has neither):
    /// - on one reader (one broker process), an offset never goes back by more than the
    ///   consumer's in-flight window ([`HELD_PER_QUEUE`]);
    /// - a reader restarted after SIGKILL has lost what was committed to it after its last
    ///   offsets flush (`flushConsumerOffsetInterval`); the consumer commits again, so within
    ///   [`WAIT`] it serves at least what it had, less the window. Only a consumer that owns
    ///   the queue commits it: while it does not (its route has no such group, so it released
    ///   the queue), the check is put off to a later step, and at the end, with every link
    ///   healed and the consumer owning every queue, none is put off;
    /// - b1's master, back after its slave served, serves at least what the slave had, less
    ///   the window, within [`WAIT`] (the slave hands its offsets back once it sees the
    ///   master);
    /// - b1's slave, serving while its master is down, has the offsets it last synchronised
    ///   (every `slaveSynchronizeInterval`), which may be further back: measured in
    ///   `failover_lag`, not asserted (a consumer that re-reads its offset during the outage,
    ///   after a restart or a rebalance, consumes that lag again).
    async fn check_offsets(&mut self, what: &str) {
        let b1 = route(&self.raw, self.ns.local_addr(), TOPIC)
            .await
            .and_then(|r| b1_master_in(&r).cloned());
        for (group, reader) in [("b1", b1), ("b2", Some(self.m2.addr.clone()))] {
            let Some(reader) = reader else { continue };
            'queues: for q in 0..QUEUES {
                let read = || committed_offset(&self.raw, &reader, GROUP, TOPIC, q);
                let Some(mut now) = read().await else {
                    continue;
                };
                // The reader and its run: a restarted broker keeps its address.
                let run = if reader == self.m1.addr {
                    self.m1.pid()
                } else if reader == self.s1.addr {
                    self.s1.pid()
                } else {
                    None
                };
                let id = (reader.clone(), run);
                let Some(((last, last_run), high)) = self.committed.get(&(group, q)).cloned()
                else {
                    self.committed.insert((group, q), (id, now));
                    continue;
                };
                let to_slave = last != reader && reader == self.s1.addr;
                if to_slave {
                    self.failover_lag = self.failover_lag.max(high - now);
                } else {
                    let same = last == reader && last_run == run;
                    let wait = if same { Duration::ZERO } else { WAIT };
                    let deadline = Instant::now() + wait;
                    while now + HELD_PER_QUEUE < high {
                        if Instant::now() >= deadline
                            && !same
                            && !self.ending
                            && !self.owns(group, q)
                        {
                            // Only the consumer that owns the queue commits it again: keep
                            // the record and look again at a later step.
                            self.deferred += 1;
                            continue 'queues;
                        }
                        if Instant::now() >= deadline {
                            self.fail(
                                what,
                                format!(
                                    "{group} queue {q}: committed offset {now} at {reader}, \
                                     after {high} at {last} (more than the in-flight window \
                                     {HELD_PER_QUEUE} back)"
                                ),
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        now = read().await.unwrap_or(now);
                    }
                }
                let high = if to_slave { now } else { high.max(now) };
                self.committed.insert((group, q), (id, high));
            }
        }
    }

    /// Whether the consumer owns queue `q` of [`TOPIC`] at `group` now.
    fn owns(&self, group: &str, q: i32) -> bool {
        self.consumer
            .assigned_queues()
            .iter()
            .any(|mq| mq.topic == TOPIC && mq.broker_name == group && mq.queue_id == q)
    }

    /// Waits until every acknowledged message was consumed, or is in a DLQ when it was meant
    /// to fail every delivery.
    async fn drain(&self) {
        let deadline = Instant::now() + DRAIN;
        loop {
            let dead = self.dead_lettered().await;
            let missing: Vec<&Acked> = {
                let c = self.consumed.lock();
                self.acked
                    .iter()
                    .filter(|a| {
                        if c.plan[&a.key] > MAX_RECONSUME {
                            !dead.contains(&a.key)
                        } else {
                            !c.ok.contains_key(&a.key)
                        }
                    })
                    .collect()
            };
            if missing.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let mut detail = Vec::new();
                for a in &missing {
                    let (plan, failed, ok) = {
                        let c = self.consumed.lock();
                        let n = |m: &HashMap<String, u32>| m.get(&a.key).copied();
                        (n(&c.plan), n(&c.failed), n(&c.ok))
                    };
                    detail.push(format!(
                        "{a:?}: meant to fail {plan:?}, failed {failed:?}, consumed {ok:?}, \
                         stored as {:?}",
                        self.copies_of(&a.key).await
                    ));
                }
                self.fail(
                    "at the end",
                    format!(
                        "acknowledged but neither consumed nor dead-lettered: {detail:#?}; \
                         assigned {:?}; send-backs {:?}",
                        self.consumer.assigned_queues(),
                        self.consumer.send_back_counts()
                    ),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The push consumer of the simulation, on a runtime of its own so that it can crash.
enum SimConsumer {
    Running {
        consumer: PushConsumer,
        runtime: tokio::runtime::Runtime,
    },
    /// Between a consumer's end and the next one's start.
    Gone,
}

impl SimConsumer {
    fn get(&self) -> &PushConsumer {
        match self {
            SimConsumer::Running { consumer, .. } => consumer,
            SimConsumer::Gone => panic!("no consumer is running"),
        }
    }

    fn assigned_queues(&self) -> BTreeSet<MessageQueue> {
        self.get().assigned_queues()
    }

    fn send_back_counts(&self) -> SendBackCounts {
        self.get().send_back_counts()
    }

    /// A clean shutdown: the consumer commits its offsets.
    async fn shutdown(self) {
        if let SimConsumer::Running { consumer, runtime } = self {
            consumer.shutdown().await;
            runtime.shutdown_background();
        }
    }

    /// A crash: every task of the consumer is dropped where it stands, its sockets close,
    /// nothing of its shutdown runs.
    fn crash(self) {
        if let SimConsumer::Running { consumer, runtime } = self {
            runtime.shutdown_background();
            drop(consumer);
        }
    }
}

/// A consumer of the group on a runtime of its own, `name` making its client id: fails each
/// message as many times as its plan says, every time when that is more than
/// [`MAX_RECONSUME`].
async fn start_consumer(ns: SocketAddr, name: &str, consumed: Arc<Mutex<Consumed>>) -> SimConsumer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("{name}-rt"))
        .enable_all()
        .build()
        .unwrap();
    let consumer = runtime
        .spawn(push_consumer(ns, name.to_string(), consumed))
        .await
        .unwrap();
    SimConsumer::Running { consumer, runtime }
}

/// The push consumer of [`start_consumer`], started on the current runtime.
async fn push_consumer(
    ns: SocketAddr,
    name: String,
    consumed: Arc<Mutex<Consumed>>,
) -> PushConsumer {
    let mut config = PushConsumerConfig::new(GROUP)
        .pull_batch_size(PULL_BATCH)
        .consume_thread_max(4)
        .max_reconsume_times(MAX_RECONSUME as i32)
        .rebalance_interval(Duration::from_millis(500));
    config.pull_threshold_for_queue = PULL_THRESHOLD;
    let listener = MessageListener::concurrently(move |msgs, _| {
        let mut c = consumed.lock();
        let mut status = ConsumeConcurrentlyStatus::ConsumeSuccess;
        for m in msgs {
            let key = String::from_utf8_lossy(&m.message.body).to_string();
            let plan = c.plan.get(&key).copied().unwrap_or(0);
            let failed = c.failed.entry(key.clone()).or_default();
            // Counted over every copy: a message delivered again (a consumer restarted before
            // committing it) uses up its failures, and one meant for the DLQ never succeeds.
            if *failed < plan || plan > MAX_RECONSUME {
                *failed += 1;
                status = ConsumeConcurrentlyStatus::ReconsumeLater;
            } else {
                *c.ok.entry(key).or_default() += 1;
            }
        }
        status
    });
    PushConsumer::start(
        client_config(ns, Duration::from_millis(200), &name),
        config,
        &[(TOPIC, "*")],
        listener,
    )
    .await
    .unwrap()
}

/// The number of key `k<n>`.
fn key_number(key: &str) -> usize {
    key.trim_start_matches('k').parse().unwrap_or(0)
}

/// The simple consumer of [`POP_GROUP`] until `stop`: pops [`POP_TOPIC`] (16 at a time,
/// invisible for [`POP_INVISIBLE`]) and acks each message, except the first delivery of a key
/// whose number is a multiple of [`POP_SKIP_EVERY`]. Errors (a broker down, a link cut, a
/// stale handle) are part of the simulation: the message comes back and is acked then.
async fn run_popper(ns: SocketAddr, popped: Arc<Mutex<Popped>>, stop: Arc<AtomicBool>) {
    let consumer = SimpleConsumer::start(
        client_config(ns, Duration::from_millis(200), "sim-popper"),
        SimpleConsumerConfig::new(POP_GROUP).await_duration(Duration::from_millis(300)),
    )
    .await
    .expect("the simple consumer starts");
    consumer
        .subscribe(POP_TOPIC, "*")
        .await
        .expect("subscribe to the POP topic");
    while !stop.load(Ordering::Acquire) {
        let msgs = match consumer.receive(16, POP_INVISIBLE).await {
            Ok(msgs) => msgs,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for m in msgs {
            let key = String::from_utf8_lossy(&m.message.message.body).to_string();
            let n = {
                let mut p = popped.lock();
                let n = p.received.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            if n == 1 && key_number(&key).is_multiple_of(POP_SKIP_EVERY) {
                continue;
            }
            if consumer.ack(&m).await.is_ok() {
                popped.lock().acked.insert(key);
            }
        }
    }
    consumer.shutdown().await;
}

async fn simulate(seed: u64) {
    let sim = Sim::start(seed).await;
    sim.run().await;
}

/// The seeds CI runs, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_seeds() {
    init_tracing();
    for seed in CI_SEEDS {
        simulate(seed).await;
    }
}

/// One run of `SIM_SEED` (random when unset); `scripts/simulate.sh N` runs N of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "one seed per run: scripts/simulate.sh"]
async fn seeded() {
    init_tracing();
    let seed = match std::env::var("SIM_SEED") {
        Ok(s) => s.parse().expect("SIM_SEED is a u64"),
        Err(_) => rand::random(),
    };
    simulate(seed).await;
}

/// The schedule is a function of the seed alone.
#[test]
fn same_seed_same_schedule() {
    for seed in [1, 2, 99, u64::MAX] {
        assert_eq!(schedule(seed), schedule(seed));
    }
    assert_ne!(schedule(1), schedule(2));
}
