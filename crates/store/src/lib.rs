//! Apogee's storage engine: everything a RocketMQ-compatible broker keeps on disk, behind
//! [`MessageStore`]. It knows nothing of request codes.
//!
//! Layout under `storePathRootDir` (upstream's, so file names and record bytes match):
//! - `commitlog/<20-digit offset>`: every message, in segments ([`message`] has the record
//!   layout, from the `message` crate);
//! - `consumequeue/<topic>/<queueId>/<20-digit offset>`: 20-byte units per queue;
//! - `index/<yyyyMMddHHmmssSSS>`: key lookup;
//! - `checkpoint`, `abort`, `lock`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), store::StoreError> {
//! use store::{AcceptAll, MessageInner, MessageStore, StoreConfig};
//! let store = MessageStore::open(StoreConfig::new("/tmp/apogee-store"))?;
//! let put = store.put_message(MessageInner::new("TopicTest", 0, "hello")).await?;
//! let got = store.get_messages("TopicTest", 0, put.queue_offset, 32, 1 << 20, &AcceptAll);
//! assert_eq!(got.messages.len(), 1);
//! store.shutdown()?;
//! # Ok(()) }
//! ```

mod checkpoint;
mod clean;
mod clock;
mod commit_log;
pub mod config;
pub mod consume_queue;
mod dispatch;
pub mod error;
mod flush;
mod index;
mod log_limit;
mod mapped_file;
mod signal;
mod state;
mod store;

/// The message format (record layout, properties, ids, tag hash), re-exported from the
/// `message` crate so that `store::message::...` paths keep working.
pub use ::message;
pub use ::message::MessageInner;
/// A stored message as the store reads it back (body as stored, properties as a string).
pub use ::message::StoredMessage as MessageExt;
pub use config::{BrokerRole, FlushDiskType, StoreConfig};
pub use consume_queue::{is_storable_topic, CqUnit, CQ_STORE_UNIT_SIZE};
pub use error::{Result, StoreError};
pub use state::{FlushObserver, QueueGrowth, QueueListener};
pub use store::{
    AcceptAll, GetMessageStatus, GetResult, MessageFilter, MessageStore, PutResult, PutStatus,
    QueryResult, StoreStats,
};
