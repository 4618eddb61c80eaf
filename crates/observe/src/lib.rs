//! Prometheus exposition for Apogee processes. This crate owns the `/metrics` HTTP endpoint
//! ([`MetricsServer`]), the text rendering of a `prometheus-client` registry ([`render`]), and
//! the two pieces that keep recording off locks on hot paths: [`AtomicHistogram`] (the
//! crate's own histogram takes a lock per observation) and [`SeriesCache`] (a label set
//! resolved once per key, then found without a lock or an allocation). Services define their
//! own metrics and register them; this crate never reaches into a service.

mod histogram;
mod rpc;
mod series;
mod server;

pub use histogram::AtomicHistogram;
pub use rpc::RpcLatency;
pub use series::SeriesCache;
pub use server::{exporter_addr, render, MetricsServer, CONTENT_TYPE};

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The metrics port could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
