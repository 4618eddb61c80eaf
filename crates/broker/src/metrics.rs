//! [`BrokerMetrics`]: the broker's Prometheus metrics, under upstream 5.x's names and labels
//! (`BrokerMetricsConstant`, `RemotingMetricsConstant`, `DefaultStoreMetricsConstant`), with
//! the constant labels `cluster`, `node_type="broker"` and `node_id` (the broker name).
//!
//! Counters and histograms are recorded where the work happens (send, pull, DLQ, every
//! answered request) through per-key handles resolved once ([`observe::SeriesCache`]): a
//! message costs a few atomic adds, no lock and no allocation. Gauges (topic and group counts,
//! connections, consumer lag, storage) are computed when `/metrics` is scraped
//! ([`BrokerMetrics::render`]).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use observe::{AtomicHistogram, RpcLatency, SeriesCache};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remoting::server::RequestObserver;

use crate::topic::{DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};

/// Label pairs of one series (besides the registry's constant labels).
type Labels = Vec<(&'static str, String)>;

/// Upstream's message size buckets: 1 KiB, 4 KiB, 512 KiB, 1 MiB, 2 MiB, 4 MiB.
const MESSAGE_SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    524_288.0,
    1_048_576.0,
    2_097_152.0,
    4_194_304.0,
];

/// Buckets of `apogee_storage_flush_latency`, in milliseconds.
const FLUSH_LATENCY_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0];

#[derive(Clone)]
struct SizeHistogram;
impl MetricConstructor<AtomicHistogram> for SizeHistogram {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(MESSAGE_SIZE_BUCKETS)
    }
}

/// Upstream's `TopicMessageType` as a metrics label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageType {
    Normal = 0,
    Fifo = 1,
    Delay = 2,
    Transaction = 3,
}

impl MessageType {
    /// The type upstream's `getMessageType` derives from a send's properties (one pass over
    /// the properties string).
    pub(crate) fn of_properties(props: &str) -> MessageType {
        let (mut tran, mut fifo, mut delay) = (false, false, false);
        for pair in props.split('\u{2}') {
            let (name, value) = pair.split_once('\u{1}').unwrap_or((pair, ""));
            match name {
                "TRAN_MSG" => tran |= value.eq_ignore_ascii_case("true"),
                "__SHARDINGKEY" => fifo = true,
                "__STARTDELIVERTIME" | "DELAY" | "TIMER_DELIVER_MS" | "TIMER_DELAY_SEC"
                | "TIMER_DELAY_MS" => delay = true,
                _ => {}
            }
        }
        if tran {
            MessageType::Transaction
        } else if fifo {
            MessageType::Fifo
        } else if delay {
            MessageType::Delay
        } else {
            MessageType::Normal
        }
    }

    fn label(self) -> &'static str {
        match self {
            MessageType::Normal => "Normal",
            MessageType::Fifo => "FIFO",
            MessageType::Delay => "Delay",
            MessageType::Transaction => "Transaction",
        }
    }
}

/// Upstream's "system topic" test for the `is_system` label.
fn is_system_topic(topic: &str) -> bool {
    topic.starts_with("rmq_sys_")
        || topic.starts_with("RMQ_SYS_")
        || matches!(
            topic,
            "TBW102"
                | "SCHEDULE_TOPIC_XXXX"
                | "BenchmarkTest"
                | "OFFSET_MOVED_EVENT"
                | "SELF_TEST_TOPIC"
        )
}

/// Upstream's system consumer groups (`MixAll.isSysConsumerGroup`).
fn is_system_group(group: &str) -> bool {
    group.starts_with("CID_RMQ_SYS_")
}

fn is_retry_or_dlq(topic: &str) -> bool {
    topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) || topic.starts_with(DLQ_GROUP_TOPIC_PREFIX)
}

/// The handles of one (topic, message type) series of sends.
#[derive(Clone)]
struct InSeries {
    messages: Counter,
    bytes: Counter,
    size: AtomicHistogram,
}

/// The send series of one topic, one per message type, made on first use.
#[derive(Default)]
struct TopicIn {
    by_type: [OnceLock<InSeries>; 4],
}

/// The handles of one (topic, group) series of pulled messages.
#[derive(Clone)]
struct OutSeries {
    messages: Counter,
    bytes: Counter,
}

/// Every metric of one broker.
pub(crate) struct BrokerMetrics {
    /// `false` with `metricsExporterType=DISABLE`: nothing is recorded.
    enabled: bool,
    registry: Registry,
    messages_in: Family<Labels, Counter>,
    throughput_in: Family<Labels, Counter>,
    message_size: Family<Labels, AtomicHistogram, SizeHistogram>,
    messages_out: Family<Labels, Counter>,
    throughput_out: Family<Labels, Counter>,
    send_to_dlq: Family<Labels, Counter>,
    rpc_latency: RpcLatency,
    in_series: SeriesCache<String, Arc<TopicIn>>,
    out_series: SeriesCache<String, Arc<SeriesCache<String, OutSeries>>>,
    topic_number: Gauge,
    consumer_group_number: Gauge,
    broker_permission: Gauge,
    producer_connections: Gauge,
    consumer_connections: Family<Labels, Gauge>,
    consumer_lag_messages: Family<Labels, Gauge>,
    consumer_lag_latency: Family<Labels, Gauge>,
    consumer_inflight_messages: Family<Labels, Gauge>,
    consumer_ready_messages: Family<Labels, Gauge>,
    half_messages: Family<Labels, Gauge>,
    flush_latency: AtomicHistogram,
    storage_size: Gauge,
    flush_behind: Gauge,
    dispatch_behind: Gauge,
    replication_lag: Family<Labels, Gauge>,
    acting_master: Gauge,
    send_back_redirected: Counter,
}

impl BrokerMetrics {
    /// Registers every metric with the constant labels of this broker; a disabled set records
    /// nothing (and costs one branch per message).
    pub(crate) fn new(cluster: &str, broker_name: &str, enabled: bool) -> BrokerMetrics {
        let mut registry = Registry::with_labels(
            [
                ("cluster".into(), cluster.to_string().into()),
                ("node_type".into(), "broker".into()),
                ("node_id".into(), broker_name.to_string().into()),
            ]
            .into_iter(),
        );
        let messages_in = Family::<Labels, Counter>::default();
        let throughput_in = Family::<Labels, Counter>::default();
        let message_size = Family::new_with_constructor(SizeHistogram);
        let messages_out = Family::<Labels, Counter>::default();
        let throughput_out = Family::<Labels, Counter>::default();
        let send_to_dlq = Family::<Labels, Counter>::default();
        let topic_number = Gauge::default();
        let consumer_group_number = Gauge::default();
        let broker_permission = Gauge::default();
        let producer_connections = Gauge::default();
        let consumer_connections = Family::<Labels, Gauge>::default();
        let consumer_lag_messages = Family::<Labels, Gauge>::default();
        let consumer_lag_latency = Family::<Labels, Gauge>::default();
        let consumer_inflight_messages = Family::<Labels, Gauge>::default();
        let consumer_ready_messages = Family::<Labels, Gauge>::default();
        let half_messages = Family::<Labels, Gauge>::default();
        let flush_latency = AtomicHistogram::new(FLUSH_LATENCY_BUCKETS);
        let storage_size = Gauge::default();
        let flush_behind = Gauge::default();
        let dispatch_behind = Gauge::default();
        let replication_lag = Family::<Labels, Gauge>::default();
        let acting_master = Gauge::default();
        let send_back_redirected = Counter::default();
        let r = &mut registry;
        r.register(
            "rocketmq_messages_in",
            "Messages sent by clients and stored",
            messages_in.clone(),
        );
        r.register(
            "rocketmq_throughput_in",
            "Bytes of messages sent by clients and stored",
            throughput_in.clone(),
        );
        r.register(
            "rocketmq_message_size",
            "Size of stored messages, in bytes",
            message_size.clone(),
        );
        r.register(
            "rocketmq_messages_out",
            "Messages delivered to consumers",
            messages_out.clone(),
        );
        r.register(
            "rocketmq_throughput_out",
            "Bytes of messages delivered to consumers",
            throughput_out.clone(),
        );
        r.register(
            "rocketmq_send_to_dlq_messages",
            "Messages moved to a dead-letter queue",
            send_to_dlq.clone(),
        );
        let rpc_latency = RpcLatency::register(r);
        r.register(
            "rocketmq_topic_number",
            "Topics on this broker",
            topic_number.clone(),
        );
        r.register(
            "rocketmq_consumer_group_number",
            "Subscription groups on this broker",
            consumer_group_number.clone(),
        );
        r.register(
            "rocketmq_broker_permission",
            "brokerPermission (6 read-write, 4 read-only, 2 write-only)",
            broker_permission.clone(),
        );
        r.register(
            "rocketmq_producer_connections",
            "Producer connections",
            producer_connections.clone(),
        );
        r.register(
            "rocketmq_consumer_connections",
            "Consumer connections per group",
            consumer_connections.clone(),
        );
        r.register(
            "rocketmq_consumer_lag_messages",
            "Messages not yet consumed (max offset minus committed offset) per group and topic",
            consumer_lag_messages.clone(),
        );
        r.register(
            "rocketmq_consumer_lag_latency",
            "Milliseconds since the oldest unconsumed message was stored, per group and topic",
            consumer_lag_latency.clone(),
        );
        r.register(
            "rocketmq_consumer_inflight_messages",
            "Messages pulled but not yet committed, per group and topic",
            consumer_inflight_messages.clone(),
        );
        r.register(
            "rocketmq_consumer_ready_messages",
            "Messages stored but not yet pulled, per group and topic",
            consumer_ready_messages.clone(),
        );
        r.register(
            "rocketmq_half_messages",
            "Transactional half messages not yet committed or rolled back, per topic",
            half_messages.clone(),
        );
        r.register(
            "apogee_storage_flush_latency",
            "Duration of CommitLog flushes (write-out and fsync) that wrote something, in milliseconds",
            flush_latency.clone(),
        );
        r.register(
            "rocketmq_storage_size",
            "Bytes of CommitLog held on disk",
            storage_size.clone(),
        );
        r.register(
            "rocketmq_storage_flush_behind_bytes",
            "CommitLog bytes written but not yet flushed",
            flush_behind.clone(),
        );
        r.register(
            "rocketmq_storage_dispatch_behind_bytes",
            "CommitLog bytes not yet indexed into consume queues",
            dispatch_behind.clone(),
        );
        r.register(
            "apogee_replication_lag_bytes",
            "On a master: CommitLog bytes each connected slave lacks (label slave: its address)",
            replication_lag.clone(),
        );
        r.register(
            "apogee_acting_master",
            "1 while this slave serves as its group's acting master, else 0",
            acting_master.clone(),
        );
        r.register(
            "apogee_send_back_redirected",
            "CONSUMER_SEND_MSG_BACK requests this acting master forwarded to a live master",
            send_back_redirected.clone(),
        );
        BrokerMetrics {
            enabled,
            registry,
            messages_in,
            throughput_in,
            message_size,
            messages_out,
            throughput_out,
            send_to_dlq,
            rpc_latency,
            in_series: SeriesCache::default(),
            out_series: SeriesCache::default(),
            topic_number,
            consumer_group_number,
            broker_permission,
            producer_connections,
            consumer_connections,
            consumer_lag_messages,
            consumer_lag_latency,
            consumer_inflight_messages,
            consumer_ready_messages,
            half_messages,
            flush_latency,
            storage_size,
            flush_behind,
            dispatch_behind,
            replication_lag,
            acting_master,
            send_back_redirected,
        }
    }

    /// A client's send of `count` messages of `bytes` in all to `topic`, stored (upstream
    /// counts neither retry nor DLQ topics here).
    pub(crate) fn record_in(&self, topic: &str, kind: MessageType, count: u64, bytes: u64) {
        if !self.enabled || count == 0 || is_retry_or_dlq(topic) {
            return;
        }
        let make = |_: &String| Arc::new(TopicIn::default());
        self.in_series.with(topic, make, |topic_in| {
            let series = topic_in.by_type[kind as usize].get_or_init(|| {
                let labels: Labels = vec![
                    ("topic", topic.to_string()),
                    ("message_type", kind.label().to_string()),
                    ("is_system", is_system_topic(topic).to_string()),
                ];
                InSeries {
                    messages: self.messages_in.get_or_create(&labels).clone(),
                    bytes: self.throughput_in.get_or_create(&labels).clone(),
                    size: self.message_size.get_or_create(&labels).clone(),
                }
            });
            series.messages.inc_by(count);
            series.bytes.inc_by(bytes);
            series.size.observe((bytes / count) as f64);
        });
    }

    /// `count` messages of `bytes` in all pulled by `group` from `topic`.
    pub(crate) fn record_out(&self, topic: &str, group: &str, count: u64, bytes: u64) {
        if !self.enabled || count == 0 || is_retry_or_dlq(topic) {
            return;
        }
        let make_series = |group: &String| {
            let labels: Labels = vec![
                ("topic", topic.to_string()),
                ("consumer_group", group.clone()),
                (
                    "is_system",
                    (is_system_topic(topic) || is_system_group(group)).to_string(),
                ),
            ];
            OutSeries {
                messages: self.messages_out.get_or_create(&labels).clone(),
                bytes: self.throughput_out.get_or_create(&labels).clone(),
            }
        };
        self.out_series.with(
            topic,
            |_| Arc::new(SeriesCache::default()),
            |by_group| {
                by_group.with(group, make_series, |series| {
                    series.messages.inc_by(count);
                    series.bytes.inc_by(bytes);
                })
            },
        );
    }

    /// A message of `group` (consuming `topic`) moved to the group's DLQ (rare: no cache).
    pub(crate) fn record_dlq(&self, group: &str, topic: &str) {
        if !self.enabled {
            return;
        }
        let labels: Labels = vec![
            ("consumer_group", group.to_string()),
            ("topic", topic.to_string()),
            (
                "is_system",
                (is_system_topic(topic) || is_system_group(group)).to_string(),
            ),
        ];
        self.send_to_dlq.get_or_create(&labels).inc();
    }

    /// A send-back this acting master forwarded to a live master of another group.
    pub(crate) fn record_send_back_redirected(&self) {
        if self.enabled {
            self.send_back_redirected.inc();
        }
    }

    /// One CommitLog flush that wrote something took `elapsed` (called on the flush thread).
    pub(crate) fn record_flush(&self, elapsed: Duration) {
        if self.enabled {
            self.flush_latency.observe(elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Whether anything is recorded.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets the scrape-time gauges from `v` and renders everything.
    pub(crate) fn render(&self, v: &ScrapeValues) -> String {
        self.topic_number.set(v.topics as i64);
        self.consumer_group_number.set(v.groups as i64);
        self.broker_permission.set(i64::from(v.permission));
        self.producer_connections.set(v.producer_connections as i64);
        self.consumer_connections.clear();
        for (group, n) in &v.consumer_connections {
            let labels: Labels = vec![
                ("consumer_group", group.clone()),
                ("is_system", is_system_group(group).to_string()),
            ];
            self.consumer_connections
                .get_or_create(&labels)
                .set(*n as i64);
        }
        self.consumer_lag_messages.clear();
        self.consumer_lag_latency.clear();
        self.consumer_inflight_messages.clear();
        self.consumer_ready_messages.clear();
        for (topic, group, lag) in &v.lags {
            let labels: Labels = vec![
                ("topic", topic.clone()),
                ("consumer_group", group.clone()),
                (
                    "is_retry",
                    topic.starts_with(RETRY_GROUP_TOPIC_PREFIX).to_string(),
                ),
                (
                    "is_system",
                    (is_system_topic(topic) || is_system_group(group)).to_string(),
                ),
            ];
            self.consumer_lag_messages
                .get_or_create(&labels)
                .set(lag.messages);
            self.consumer_lag_latency
                .get_or_create(&labels)
                .set(lag.latency_ms);
            self.consumer_inflight_messages
                .get_or_create(&labels)
                .set(lag.inflight);
            self.consumer_ready_messages
                .get_or_create(&labels)
                .set(lag.ready);
        }
        self.half_messages.clear();
        for (topic, n) in &v.half_messages {
            let labels: Labels = vec![("topic", topic.clone())];
            self.half_messages.get_or_create(&labels).set(*n);
        }
        self.storage_size.set(v.storage_size);
        self.flush_behind.set(v.flush_behind);
        self.dispatch_behind.set(v.dispatch_behind);
        self.replication_lag.clear();
        for (slave, lag) in &v.replication_lag {
            let labels: Labels = vec![("slave", slave.clone())];
            self.replication_lag.get_or_create(&labels).set(*lag);
        }
        self.acting_master.set(i64::from(v.acting_master));
        observe::render(&self.registry)
    }
}

/// How far one group is behind on one topic, summed (or, for the latency, the worst) over the
/// queues it has committed offsets for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupLag {
    /// Max offset minus committed offset.
    pub(crate) messages: i64,
    /// Pulled (the offset the last pull was answered with) minus committed.
    pub(crate) inflight: i64,
    /// Max offset minus pulled (minus committed where nothing was pulled yet).
    pub(crate) ready: i64,
    /// Milliseconds since the message at the committed offset was stored (0 when caught up).
    pub(crate) latency_ms: i64,
}

/// What the scrape-time gauges show, read from the broker by its owner.
#[derive(Default)]
pub(crate) struct ScrapeValues {
    pub(crate) topics: usize,
    pub(crate) groups: usize,
    pub(crate) permission: i32,
    pub(crate) producer_connections: usize,
    pub(crate) consumer_connections: Vec<(String, usize)>,
    /// `(topic, group, lag)` of every committed (topic, group).
    pub(crate) lags: Vec<(String, String, GroupLag)>,
    /// Unresolved half messages per real topic.
    pub(crate) half_messages: BTreeMap<String, i64>,
    pub(crate) storage_size: i64,
    pub(crate) flush_behind: i64,
    pub(crate) dispatch_behind: i64,
    /// `(slave address, bytes it lacks)` of every connected slave (master only).
    pub(crate) replication_lag: Vec<(String, i64)>,
    pub(crate) acting_master: bool,
}

/// Records every answered request into `rocketmq_rpc_latency`.
impl RequestObserver for BrokerMetrics {
    fn observe(&self, request_code: i32, response_code: Option<i32>, elapsed: Duration) {
        self.rpc_latency
            .record(request_code, response_code, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_follows_upstream_precedence() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}\u{1}{v}\u{2}"))
                .collect::<String>()
        };
        assert_eq!(MessageType::of_properties(""), MessageType::Normal);
        assert_eq!(
            MessageType::of_properties(&p(&[("TRAN_MSG", "true"), ("DELAY", "3")])),
            MessageType::Transaction
        );
        assert_eq!(
            MessageType::of_properties(&p(&[("__SHARDINGKEY", "g"), ("DELAY", "3")])),
            MessageType::Fifo
        );
        assert_eq!(
            MessageType::of_properties(&p(&[("TIMER_DELAY_SEC", "5")])),
            MessageType::Delay
        );
    }

    #[test]
    fn sends_are_counted_per_topic_and_type_without_retry_topics() {
        let m = BrokerMetrics::new("C", "b", true);
        m.record_in("T", MessageType::Normal, 2, 2048);
        m.record_in("T", MessageType::Normal, 1, 100);
        m.record_in("%RETRY%G", MessageType::Normal, 1, 100);
        let text = observe::render(&m.registry);
        assert!(
            text.contains(r#"rocketmq_messages_in_total{cluster="C",node_type="broker",node_id="b",topic="T",message_type="Normal",is_system="false"} 3"#),
            "{text}"
        );
        assert!(!text.contains("%RETRY%"), "{text}");
    }
}
