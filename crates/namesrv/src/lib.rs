//! Apogee NameServer: the route registry of a RocketMQ cluster.
//!
//! Brokers register their topics here (REGISTER_BROKER every 30 s) and clients ask for topic
//! routes (GET_ROUTEINFO_BY_TOPIC); see upstream's `namesrv` module. [`NameServer::start`] runs
//! one on a [`NamesrvConfig`]; [`route::RouteInfoManager`] holds the tables and rules,
//! [`kv::KvConfigManager`] the persisted KV configuration, and `handlers` answers every request
//! code a NameServer serves. Any other code (a broker request sent to a NameServer by mistake)
//! is answered `REQUEST_CODE_NOT_SUPPORTED` at once and counted
//! ([`NameServer::unsupported_request_counts`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), namesrv::NamesrvError> {
//! let props = namesrv::parse_properties("listenPort=9876\n");
//! let config = namesrv::NamesrvConfig::from_properties(&props)?;
//! let server = namesrv::NameServer::start(config).await?;
//! println!("NameServer listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
mod handlers;
pub mod kv;
mod metrics;
pub mod route;
mod server;
mod state;

pub use config::{ConfigError, NamesrvConfig};
pub use error::NamesrvError;
pub use remoting::properties::parse_properties;
pub use route::RouteInfoManager;
pub use server::NameServer;
