//! [`MetricsServer`]: `GET /metrics` over HTTP/1.1 (axum), answering with whatever the
//! process's render function returns; [`render`] encodes a registry as OpenMetrics text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ObserveError;

/// The scrape answer's content type (OpenMetrics text, which Prometheus negotiates).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` as OpenMetrics text (ending with `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Writing into a String cannot fail; an encoder error is a bug in a metric.
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The function a process gives to answer a scrape: refresh what is computed at scrape time
/// (gauges), then render.
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Where `GET /metrics` listens for upstream's `metricsPromExporterPort` and
/// `metricsPromExporterHost`: `None` for port 0 (no endpoint), every interface when no host
/// is given.
pub fn exporter_addr(port: u16, host: Option<std::net::IpAddr>) -> Option<SocketAddr> {
    let host = host.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    (port != 0).then(|| SocketAddr::new(host, port))
}

/// A running `/metrics` endpoint; it stops when dropped.
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` with `render`'s text; every other path is 404.
    pub async fn start(addr: SocketAddr, render: RenderFn) -> Result<MetricsServer, ObserveError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ObserveError::Bind { addr, source })?;
        Self::serve(listener, render)
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: TcpListener, render: RenderFn) -> Result<MetricsServer, ObserveError> {
        let local_addr = listener.local_addr().map_err(|source| ObserveError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move {
                    // Rendering walks every series; keep it off the runtime's workers.
                    match tokio::task::spawn_blocking(move || render()).await {
                        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
        tracing::info!(addr = %local_addr, "metrics endpoint listening (GET /metrics)");
        Ok(MetricsServer { local_addr, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_the_rendered_registry() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("demo_requests", "Requests", c.clone());
        c.inc_by(3);
        let registry = Arc::new(registry);
        let r = Arc::clone(&registry);
        let server = MetricsServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(move || render(&r)),
        )
        .await
        .unwrap();
        let answer = testkit::metrics::http_get(server.local_addr(), "/metrics").await;
        assert!(answer.contains(CONTENT_TYPE), "{answer}");
        let scrape = testkit::metrics::scrape(server.local_addr()).await;
        assert_eq!(scrape.value("demo_requests_total", &[]), Some(3.0));
        let other = testkit::metrics::http_get(server.local_addr(), "/other").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    }
}
