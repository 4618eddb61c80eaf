//! [`ControllerMetrics`]: the controller's Prometheus metrics under upstream 5.x's names
//! (`ControllerMetricsConstant`): `role`, `dledger_disk_usage`, `active_broker_num`,
//! `request_total` and `request_latency` (µs) per request type, `election_total` per result,
//! with the constant labels `address`, `group` and `peer_id`; plus Apogee's
//! `apogee_controller_election_duration` (ms, decision and Raft commit of one election).
//! Counters are recorded where the work happens; gauges are read when `/metrics` is scraped.

use std::path::Path;
use std::time::Duration;

use observe::AtomicHistogram;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remoting::server::RequestObserver;
use remoting::{RequestCode, ResponseCode};

type Labels = Vec<(&'static str, String)>;

/// Upstream's request latency buckets, in microseconds (1 µs to 10 s).
const LATENCY_BUCKETS_US: &[f64] = &[
    1.0, 3.0, 5.0, 10.0, 30.0, 50.0, 100.0, 300.0, 500.0, 1e3, 3e3, 5e3, 1e4, 3e4, 5e4, 1e5, 3e5,
    5e5, 1e6, 3e6, 5e6, 1e7,
];

/// Buckets of the election duration, in milliseconds.
const ELECTION_BUCKETS_MS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

#[derive(Clone)]
struct LatencyHistogram;
impl MetricConstructor<AtomicHistogram> for LatencyHistogram {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(LATENCY_BUCKETS_US)
    }
}

/// Upstream's `RequestType` name of a controller request code; other codes (Raft RPCs) are
/// not counted, as upstream.
fn request_type(code: i32) -> Option<&'static str> {
    Some(match code {
        RequestCode::CONTROLLER_ALTER_SYNC_STATE_SET => "CONTROLLER_ALTER_SYNC_STATE_SET",
        RequestCode::CONTROLLER_ELECT_MASTER => "CONTROLLER_ELECT_MASTER",
        RequestCode::CONTROLLER_REGISTER_BROKER => "CONTROLLER_REGISTER_BROKER",
        RequestCode::CONTROLLER_GET_REPLICA_INFO => "CONTROLLER_GET_REPLICA_INFO",
        RequestCode::CONTROLLER_GET_METADATA_INFO => "CONTROLLER_GET_METADATA_INFO",
        RequestCode::CONTROLLER_GET_SYNC_STATE_DATA => "CONTROLLER_GET_SYNC_STATE_DATA",
        RequestCode::GET_BROKER_EPOCH_CACHE => "CONTROLLER_GET_BROKER_EPOCH_CACHE",
        RequestCode::NOTIFY_BROKER_ROLE_CHANGED => "CONTROLLER_NOTIFY_BROKER_ROLE_CHANGED",
        RequestCode::BROKER_HEARTBEAT => "CONTROLLER_BROKER_HEARTBEAT",
        RequestCode::UPDATE_CONTROLLER_CONFIG => "CONTROLLER_UPDATE_CONTROLLER_CONFIG",
        RequestCode::GET_CONTROLLER_CONFIG => "CONTROLLER_GET_CONTROLLER_CONFIG",
        RequestCode::CLEAN_BROKER_DATA => "CONTROLLER_CLEAN_BROKER_DATA",
        RequestCode::CONTROLLER_GET_NEXT_BROKER_ID => "CONTROLLER_GET_NEXT_BROKER_ID",
        RequestCode::CONTROLLER_APPLY_BROKER_ID => "CONTROLLER_APPLY_BROKER_ID",
        _ => return None,
    })
}

/// What an election came to (upstream's `ElectionResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElectionResult {
    NewMasterElected,
    KeepCurrentMaster,
    NoMasterElected,
}

impl ElectionResult {
    /// The result upstream records for an election answered with `code`; `None` for answers
    /// it does not count (this node is not the leader, Raft failed).
    pub(crate) fn of_code(code: i32) -> Option<ElectionResult> {
        match code {
            ResponseCode::SUCCESS => Some(ElectionResult::NewMasterElected),
            ResponseCode::CONTROLLER_MASTER_STILL_EXIST => Some(ElectionResult::KeepCurrentMaster),
            ResponseCode::CONTROLLER_MASTER_NOT_AVAILABLE
            | ResponseCode::CONTROLLER_ELECT_MASTER_FAILED => Some(ElectionResult::NoMasterElected),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ElectionResult::NewMasterElected => "new_master_elected",
            ElectionResult::KeepCurrentMaster => "keep_current_master",
            ElectionResult::NoMasterElected => "no_master_elected",
        }
    }
}

/// Upstream's value of the `role` gauge: 0 unknown, 1 candidate, 2 follower, 3 leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Unknown = 0,
    Candidate = 1,
    Follower = 2,
    Leader = 3,
}

/// What the scrape-time gauges show, read from the controller by its owner.
pub(crate) struct ScrapeValues {
    pub(crate) role: Role,
    pub(crate) disk_usage: u64,
    /// Live brokers per (cluster, brokerName).
    pub(crate) active_brokers: Vec<((String, String), usize)>,
}

/// Every metric of one controller.
pub(crate) struct ControllerMetrics {
    enabled: bool,
    registry: Registry,
    role: Gauge,
    disk_usage: Gauge,
    active_brokers: Family<Labels, Gauge>,
    requests: Family<Labels, Counter>,
    request_latency: Family<Labels, AtomicHistogram, LatencyHistogram>,
    elections: Family<Labels, Counter>,
    election_duration: AtomicHistogram,
}

impl ControllerMetrics {
    /// Registers every metric with this controller's constant labels; a disabled set records
    /// nothing.
    pub(crate) fn new(address: &str, group: &str, peer_id: &str, enabled: bool) -> Self {
        let mut registry = Registry::with_labels(
            [
                ("address".into(), address.to_string().into()),
                ("group".into(), group.to_string().into()),
                ("peer_id".into(), peer_id.to_string().into()),
            ]
            .into_iter(),
        );
        let role = Gauge::default();
        let disk_usage = Gauge::default();
        let active_brokers = Family::<Labels, Gauge>::default();
        let requests = Family::<Labels, Counter>::default();
        let request_latency = Family::new_with_constructor(LatencyHistogram);
        let elections = Family::<Labels, Counter>::default();
        let election_duration = AtomicHistogram::new(ELECTION_BUCKETS_MS);
        let r = &mut registry;
        r.register(
            "role",
            "Role of this controller: 0 unknown, 1 candidate, 2 follower, 3 leader",
            role.clone(),
        );
        r.register(
            "dledger_disk_usage",
            "Bytes of the controller's Raft store (controllerStorePath)",
            disk_usage.clone(),
        );
        r.register(
            "active_broker_num",
            "Brokers heard from within their heartbeat timeout",
            active_brokers.clone(),
        );
        // prometheus-client appends `_total` to counters: these are `request_total` and
        // `election_total`, upstream's names.
        r.register("request", "Controller requests answered", requests.clone());
        r.register(
            "request_latency",
            "Time from a controller request's arrival to its answer, in microseconds",
            request_latency.clone(),
        );
        r.register("election", "Master elections run", elections.clone());
        r.register(
            "apogee_controller_election_duration",
            "Time to decide and commit one master election, in milliseconds",
            election_duration.clone(),
        );
        ControllerMetrics {
            enabled,
            registry,
            role,
            disk_usage,
            active_brokers,
            requests,
            request_latency,
            elections,
            election_duration,
        }
    }

    /// An election of `broker_set` in `cluster` that came to `result` in `elapsed`.
    pub(crate) fn record_election(
        &self,
        cluster: &str,
        broker_set: &str,
        result: ElectionResult,
        elapsed: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let labels: Labels = vec![
            ("cluster", cluster.to_string()),
            ("broker_set", broker_set.to_string()),
            ("election_result", result.label().to_string()),
        ];
        self.elections.get_or_create(&labels).inc();
        self.election_duration
            .observe(elapsed.as_secs_f64() * 1000.0);
    }

    /// Sets the scrape-time gauges from `v` and renders everything.
    pub(crate) fn render(&self, v: &ScrapeValues) -> String {
        self.role.set(v.role as i64);
        self.disk_usage
            .set(i64::try_from(v.disk_usage).unwrap_or(i64::MAX));
        self.active_brokers.clear();
        for ((cluster, broker_set), n) in &v.active_brokers {
            let labels: Labels = vec![
                ("cluster", cluster.clone()),
                ("broker_set", broker_set.clone()),
            ];
            self.active_brokers.get_or_create(&labels).set(*n as i64);
        }
        observe::render(&self.registry)
    }
}

/// Counts every answered controller request and its latency.
impl RequestObserver for ControllerMetrics {
    fn observe(&self, request_code: i32, response_code: Option<i32>, elapsed: Duration) {
        let Some(kind) = request_type(request_code).filter(|_| self.enabled) else {
            return;
        };
        let status = match response_code {
            Some(ResponseCode::SUCCESS) | None => "success",
            Some(_) => "failed",
        };
        let labels: Labels = vec![
            ("request_type", kind.to_string()),
            ("request_handle_status", status.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.request_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1e6);
    }
}

/// Bytes of every file under `dir` (0 when it cannot be read).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
