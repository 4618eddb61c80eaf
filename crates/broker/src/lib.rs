//! Apogee broker: the request handlers of a RocketMQ broker (send, pull with long polling,
//! offsets, heartbeats, send-back, transactions, queries, admin), the topic and group configs,
//! the retry / DLQ / delay / transaction services and registration with the NameServers, on
//! top of the [`store`] crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), broker::BrokerError> {
//! let mut config = broker::BrokerConfig::default();
//! config.namesrv_addr = "127.0.0.1:9876".into();
//! let broker = broker::Broker::start(config).await?;
//! println!("broker listening on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod broker;
pub mod clients;
mod cluster;
pub mod config;
pub mod error;
mod ha;
mod handlers;
pub mod lock;
mod long_poll;
pub mod offset;
mod persist;
mod register;
mod schedule;
mod slave_sync;
mod state;
pub mod subscription;
pub mod topic;
mod transaction;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
