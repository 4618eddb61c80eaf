//! RocketMQ remoting protocol: frames, commands, header encodings, typed headers and bodies,
//! and the async TCP server and client that every Apogee process talks through.
//!
//! Frame layout (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | total length, counting everything after itself |
//! | 1 | serialize type of the header (0 JSON, 1 ROCKETMQ binary) |
//! | 3 | header length |
//! | n | header |
//! | rest | body |

pub mod acl;
pub mod addr;
pub mod broker_headers;
pub mod client;
pub mod codec;
pub mod codes;
pub mod command;
pub mod connection;
pub mod controller_headers;
pub mod error;
pub mod header;
pub mod headers;
pub mod pop;
pub mod properties;
pub mod protocol;
pub mod server;
pub mod tls;

/// The message format (records, properties, ids, tag hash), re-exported from the `message`
/// crate so that `remoting::message::...` paths keep working.
pub use ::message;

pub use addr::{BrokerAddr, NameServerAddr};
pub use codes::{RequestCode, ResponseCode};
pub use command::{LanguageCode, RemotingCommand, SerializeType};
pub use error::{RemotingError, WireError};
