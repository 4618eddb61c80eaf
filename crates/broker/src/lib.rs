//! Apogee broker: the request handlers of a RocketMQ broker (send, pull with long polling,
//! offsets, heartbeats, send-back, transactions, queries, admin), the topic and group configs,
//! the retry / DLQ / delay / transaction services and registration with the NameServers, on
//! top of the [`store`] crate.
//!
//! Layers, each using only those before it: the shared resources (`context`: config
//! snapshot, store, managers, the write path), the services built on them (`services` lists
//! them: send policy, retry / DLQ, delay, timer messages, transactions, cluster, membership, registration,
//! replication), and the request handlers (`handlers`: one dispatch table keyed by request
//! code, one function per code, calling services). [`Broker`] builds and runs them.
//!
//! ```no_run
//! # async fn run() -> Result<(), broker::BrokerError> {
//! let mut config = broker::BrokerConfig::default();
//! config.namesrv_addr = "127.0.0.1:9876".into();
//! config.store_path_root_dir = "/var/lib/apogee/store".into();
//! let broker = broker::Broker::start(config).await?;
//! println!("broker listening on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod broker;
pub mod clients;
pub mod config;
pub mod error;
pub mod lock;
mod long_poll;
pub mod offset;
mod persist;
pub mod subscription;
pub mod topic;

// The shared resources, then the services built on them, then the request handlers.
mod context;
mod services;

mod cluster;
mod ha;
mod membership;
mod metrics;
mod pop;
mod register;
mod replicas;
mod retry;
mod schedule;
mod send_policy;
mod slave_sync;
mod timer;
mod transaction;

mod handlers;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use handlers::served_codes;
