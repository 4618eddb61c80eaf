//! Apogee's RocketMQ-protocol client: producers, push, pull and lite-pull consumers, and the send-back path that
//! never misroutes. It talks to any RocketMQ-compatible cluster (Apogee or Apache RocketMQ)
//! over the remoting protocol, with upstream's names, defaults and behaviour.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | [`ClientConfig`]: NameServers, client id, intervals, timeouts |
//! | [`transport`] | [`Transport`]: typed-address requests ([`remoting::client::RemotingClient`] implements it) |
//! | [`api`] | one typed method per request (send, pull, offsets, send-back, heartbeat, locks, ...) |
//! | [`send_result`] | [`SendResult`], [`SendStatus`]: what a send returns |
//! | [`route`] | route cache, publish and subscribe queues, broker address lookups |
//! | [`fault`] | latency fault tolerance (avoid a failing broker group for a while) |
//! | [`producer`] | [`Producer`], [`TransactionProducer`], the send path with retries |
//! | [`consumer`] | allocation strategies, process queues, offset stores, send-back decision, the rebalance round, push, pull and lite-pull consumers |
//!
//! Addresses are typed: a broker request can only be given a [`remoting::BrokerAddr`], and
//! the send-back path has no NameServer address at all, so a CONSUMER_SEND_MSG_BACK can
//! never reach a NameServer (upstream issue #8963).

pub mod api;
pub mod config;
pub mod consumer;
pub mod error;
pub mod fault;
pub(crate) mod instance;
pub mod producer;
pub mod route;
pub mod send_result;
pub mod transport;

pub use config::ClientConfig;
pub use error::{ClientError, Result};
pub use producer::{
    LocalTransactionState, Producer, ProducerConfig, SendResult, SendStatus, TransactionListener,
    TransactionProducer, TransactionSendResult,
};
pub use transport::Transport;

pub use remoting::message::{
    dlq_topic, retry_topic, DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX,
};
