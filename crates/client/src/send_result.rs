//! The value types a send produces ([`SendResult`], [`SendStatus`]). They live below both
//! [`api`](super::api), which builds them from a broker's answer, and
//! [`producer`](super::producer), which returns them, so that the request layer does not
//! depend on the producer.

use remoting::broker_headers::MessageQueue;

/// How a broker acknowledged a send (`SendStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    SendOk,
    FlushDiskTimeout,
    FlushSlaveTimeout,
    SlaveNotAvailable,
}

/// Result of a send (`SendResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendResult {
    pub send_status: SendStatus,
    /// The client id(s) (`UNIQ_KEY`; comma-separated for a batch).
    pub msg_id: String,
    /// The broker's id(s): store host + commit-log offset.
    pub offset_msg_id: String,
    pub message_queue: MessageQueue,
    pub queue_offset: i64,
    pub transaction_id: Option<String>,
    pub region_id: String,
    pub trace_on: bool,
}
