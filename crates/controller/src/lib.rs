//! Apogee controller: the Raft-replicated registry of broker replica groups that decides who is
//! master (upstream's `controller` module, with DLedger replaced by `openraft`).
//!
//! - [`replicas::ReplicasInfo`]: the state machine and its rules (register, SyncStateSet,
//!   elections), plain synchronous code.
//! - [`store`]: the Raft log and state machine persisted under `controllerStorePath`.
//! - [`raft`]: openraft's type configuration and the network between controllers (Raft RPCs
//!   in remoting frames with private request codes on the controller port).
//! - [`liveness::BrokerLiveness`]: broker heartbeats, local to each controller.
//! - `metrics`: `GET /metrics` under upstream's controller metric names.
//! - `handlers`: the controller request codes (1001-1013 region, BROKER_HEARTBEAT,
//!   CLEAN_BROKER_DATA); [`Controller`] runs all of it on a [`ControllerConfig`].
//!
//! ```no_run
//! # async fn run() -> Result<(), controller::ControllerError> {
//! let props = remoting::properties::parse_properties(
//!     "controllerDLegerPeers=n0-127.0.0.1:9877\ncontrollerDLegerSelfId=n0\n",
//! );
//! let config = controller::ControllerConfig::from_properties(&props)?;
//! let controller = controller::Controller::start(config).await?;
//! controller.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
mod handlers;
pub mod liveness;
mod metrics;
pub mod raft;
pub mod replicas;
mod server;
mod state;
pub mod store;

pub use config::{ConfigError, ControllerConfig};
pub use error::ControllerError;
pub use handlers::CONTROLLER_REQUEST_CODES;
pub use server::Controller;
