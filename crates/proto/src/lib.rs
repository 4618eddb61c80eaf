//! The RocketMQ 5.x gRPC API (`apache.rocketmq.v2`, as published in `apache/rocketmq-apis`):
//! its messages, and the `MessagingService` server and client that `tonic` generates from the
//! `.proto` files under `proto/` at build time.

/// `apache.rocketmq.v2`: messages, enums, `messaging_service_server` and
/// `messaging_service_client`.
pub mod v2 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("apache.rocketmq.v2");
}
