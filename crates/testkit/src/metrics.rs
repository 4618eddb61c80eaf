//! Scraping a process's `/metrics` in tests: a plain HTTP/1.1 GET over loopback, and the
//! answer parsed with a real Prometheus text parser (`prometheus-parse`) for exact checks.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `GET path` with `Connection: close`; returns the whole answer (status line, headers,
/// body).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP endpoint");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the answer");
    out
}

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
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses as Prometheus text");
    Scrape(parsed)
}
