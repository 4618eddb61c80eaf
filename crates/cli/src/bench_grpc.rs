//! The gRPC side of `apogee bench produce --protocol grpc`: sends through a 5.x endpoint
//! (`apogee proxy`, or `apogee standalone` on 8081) with the `tonic` client generated in the
//! `proto` crate, so the endpoint is measured with the same tool and the same message shape
//! (a `--size` body starting with the send time, `--tags`, timer messages) as remoting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use proto::v2::messaging_service_client::MessagingServiceClient;
use proto::v2::{
    Code, Message, MessageType, QueryRouteRequest, Resource, SendMessageRequest, SystemProperties,
};
use remoting::message::{Message as RemotingMessage, MessageConst};
use tonic::transport::{Channel, Endpoint};

/// A gRPC sender: one HTTP/2 connection; clones share it (calls are multiplexed).
#[derive(Clone)]
pub struct GrpcSender {
    client: MessagingServiceClient<Channel>,
    topic: String,
}

/// Message ids: unique per process run (the proxy needs one per message).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn message_id() -> String {
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("01{:08X}{:08X}{:016X}", std::process::id(), start as u32, n)
}

fn resource(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

impl GrpcSender {
    /// Connects to `endpoint` (`host:port`) and checks that `topic` has a route there.
    pub async fn connect(endpoint: &str, topic: &str) -> anyhow::Result<GrpcSender> {
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .with_context(|| format!("not an endpoint: {endpoint}"))?
            .tcp_nodelay(true)
            .initial_connection_window_size(4 * 1024 * 1024)
            .initial_stream_window_size(4 * 1024 * 1024)
            .connect()
            .await
            .with_context(|| format!("cannot connect to the gRPC endpoint {endpoint}"))?;
        let mut client = MessagingServiceClient::new(channel);
        let route = client
            .query_route(QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            })
            .await
            .with_context(|| format!("QueryRoute at {endpoint}"))?
            .into_inner();
        let st = route.status.unwrap_or_default();
        if st.code != Code::Ok as i32 {
            anyhow::bail!("cannot get a route for topic `{topic}`: {}", st.message);
        }
        Ok(GrpcSender {
            client,
            topic: topic.to_string(),
        })
    }

    /// Sends `msgs` (built as for remoting: body, tag, `TIMER_DELIVER_MS`) as one
    /// SendMessage.
    pub async fn send(&self, msgs: Vec<RemotingMessage>) -> anyhow::Result<()> {
        let messages = msgs
            .into_iter()
            .map(|m| {
                let due_ms = m
                    .property(MessageConst::PROPERTY_TIMER_DELIVER_MS)
                    .and_then(|v| v.parse::<u64>().ok());
                (m.tags().map(str::to_string), due_ms, m.body)
            })
            .map(|(tag, due_ms, body)| Message {
                topic: resource(&self.topic),
                user_properties: Default::default(),
                system_properties: Some(SystemProperties {
                    tag,
                    message_id: message_id(),
                    message_type: if due_ms.is_some() {
                        MessageType::Delay
                    } else {
                        MessageType::Normal
                    } as i32,
                    delivery_timestamp: due_ms.map(|ms| prost_types::Timestamp {
                        seconds: (ms / 1000) as i64,
                        nanos: ((ms % 1000) * 1_000_000) as i32,
                    }),
                    ..Default::default()
                }),
                body,
            })
            .collect();
        let r = self
            .client
            .clone()
            .send_message(SendMessageRequest { messages })
            .await?
            .into_inner();
        let st = r.status.unwrap_or_default();
        if st.code != Code::Ok as i32 {
            anyhow::bail!("send refused: {} {}", st.code, st.message);
        }
        Ok(())
    }
}
