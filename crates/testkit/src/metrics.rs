//! Scraping a process's `/metrics` in tests: a plain HTTP/1.1 GET over loopback ([`crate::http`]),
//! and the answer parsed with a real Prometheus text parser (`prometheus-parse`) for exact checks.

use std::net::SocketAddr;

pub use crate::http::http_get;
use crate::http::status_and_body;

/// A parsed scrape.
pub struct Scrape(pub prometheus_parse::Scrape);

impl Scrape {
    /// The value of the sample named `name` whose labels include every pair of `labels`
    /// (counter, gauge or untyped); `None` when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }
}

/// Scrapes `http://addr/metrics`, asserting a 200 answer, and parses the body.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let answer = http_get(addr, "/metrics").await;
    let (status, body) = status_and_body(&answer);
    assert_eq!(status, 200, "{answer}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses as Prometheus text");
    Scrape(parsed)
}
