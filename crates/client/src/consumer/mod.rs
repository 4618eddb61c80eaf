//! Consumers: queue allocation, process queues, offset stores, subscriptions, the send-back
//! decision, the queue steps they share ([`queues`]), the rebalance round ([`rebalance`]),
//! the push, pull and lite-pull consumers built from them, and the POP-based simple consumer.

pub mod allocate;
pub mod lite_pull;
pub mod offset_store;
pub mod process_queue;
pub mod pull;
pub mod push;
pub mod queues;
pub mod rebalance;
pub mod send_back;
pub mod simple;
pub mod subscription;
