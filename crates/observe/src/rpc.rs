//! [`RpcLatency`]: upstream's `rocketmq_rpc_latency` histogram (milliseconds, by request and
//! response code), shared by every process that serves remoting requests.

use std::time::Duration;

use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::registry::Registry;

use crate::{AtomicHistogram, SeriesCache};

/// Upstream's RPC latency buckets, in milliseconds.
const RPC_LATENCY_BUCKETS_MS: &[f64] = &[1.0, 3.0, 5.0, 7.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct LatencyHistogram;
impl MetricConstructor<AtomicHistogram> for LatencyHistogram {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(RPC_LATENCY_BUCKETS_MS)
    }
}

/// Request latencies by `(request code, response code)`; a oneway request (no response) is
/// recorded with `response_code="-1"` and `result="oneway"`.
pub struct RpcLatency {
    family: Family<Labels, AtomicHistogram, LatencyHistogram>,
    series: SeriesCache<(i32, Option<i32>), AtomicHistogram>,
}

impl RpcLatency {
    /// Registers `rocketmq_rpc_latency` in `registry`.
    pub fn register(registry: &mut Registry) -> RpcLatency {
        let family = Family::new_with_constructor(LatencyHistogram);
        registry.register(
            "rocketmq_rpc_latency",
            "Time from a request's arrival to its answer, in milliseconds",
            family.clone(),
        );
        RpcLatency {
            family,
            series: SeriesCache::default(),
        }
    }

    /// Records one request.
    pub fn record(&self, request_code: i32, response_code: Option<i32>, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.series.with(
            &(request_code, response_code),
            |&(req, resp)| {
                let labels: Labels = vec![
                    ("protocol_type", "remoting".to_string()),
                    ("request_code", req.to_string()),
                    (
                        "response_code",
                        resp.map_or_else(|| "-1".to_string(), |c| c.to_string()),
                    ),
                    (
                        "result",
                        if resp.is_some() { "success" } else { "oneway" }.to_string(),
                    ),
                ];
                self.family.get_or_create(&labels).clone()
            },
            |h| h.observe(ms),
        );
    }
}
