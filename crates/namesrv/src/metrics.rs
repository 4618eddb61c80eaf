//! [`NamesrvMetrics`]: the NameServer's Prometheus metrics, with the constant label
//! `node_type="namesrv"`: `rocketmq_rpc_latency` for every request answered, the requests of
//! codes a NameServer does not serve (a broker request such as CONSUMER_SEND_MSG_BACK sent to
//! a NameServer is a client's misroute), live brokers and topics.

use std::time::Duration;

use observe::RpcLatency;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remoting::server::RequestObserver;

type Labels = Vec<(&'static str, String)>;

/// Every metric of one NameServer.
pub(crate) struct NamesrvMetrics {
    registry: Registry,
    rpc_latency: RpcLatency,
    refused: Family<Labels, Counter>,
    brokers: Gauge,
    topics: Gauge,
}

impl NamesrvMetrics {
    pub(crate) fn new() -> NamesrvMetrics {
        let mut registry =
            Registry::with_labels([("node_type".into(), "namesrv".into())].into_iter());
        let rpc_latency = RpcLatency::register(&mut registry);
        let refused = Family::<Labels, Counter>::default();
        let brokers = Gauge::default();
        let topics = Gauge::default();
        registry.register(
            "apogee_namesrv_refused_requests",
            "Requests of codes a NameServer does not serve (misrouted broker requests), by code",
            refused.clone(),
        );
        registry.register(
            "apogee_namesrv_live_brokers",
            "Broker addresses registered and alive",
            brokers.clone(),
        );
        registry.register(
            "rocketmq_topic_number",
            "Topics in the route table",
            topics.clone(),
        );
        NamesrvMetrics {
            registry,
            rpc_latency,
            refused,
            brokers,
            topics,
        }
    }

    /// Sets the scrape-time values (refused requests per code, live broker addresses,
    /// topics) and renders everything.
    pub(crate) fn render(
        &self,
        refused: &[(i32, u64)],
        live_brokers: usize,
        topics: usize,
    ) -> String {
        for (code, n) in refused {
            let labels: Labels = vec![("request_code", code.to_string())];
            self.refused
                .get_or_create(&labels)
                .inner()
                .store(*n, std::sync::atomic::Ordering::Relaxed);
        }
        self.brokers.set(live_brokers as i64);
        self.topics.set(topics as i64);
        observe::render(&self.registry)
    }
}

impl RequestObserver for NamesrvMetrics {
    fn observe(&self, request_code: i32, response_code: Option<i32>, elapsed: Duration) {
        self.rpc_latency
            .record(request_code, response_code, elapsed);
    }
}
