//! The gRPC side of `apogee bench produce|consume --protocol grpc`: sends, and receives and
//! acks, through a 5.x endpoint (`apogee proxy`, or `apogee standalone` on 8081) with the
//! `tonic` client generated in the `proto` crate, so the endpoint is measured with the same
//! tool and the same message shape (a `--size` body starting with the send time, `--tags`,
//! timer messages) as remoting. `--tls` connects over TLS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use proto::v2::messaging_service_client::MessagingServiceClient;
use proto::v2::receive_message_response::Content;
use proto::v2::{
    AckMessageEntry, AckMessageRequest, Code, FilterExpression, FilterType, Message, MessageQueue,
    MessageType, QueryAssignmentRequest, QueryRouteRequest, ReceiveMessageRequest, Resource,
    SendMessageRequest, SystemProperties,
};
use remoting::message::{Message as RemotingMessage, MessageConst};
use remoting::tls::ClientTls;
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

/// One HTTP/2 connection to `endpoint` (`host:port`), over TLS with `tls`, after checking
/// that `topic` has a route there.
async fn connect(
    endpoint: &str,
    topic: &str,
    tls: Option<&ClientTls>,
) -> anyhow::Result<MessagingServiceClient<Channel>> {
    let settings = Endpoint::from_shared(format!("http://{endpoint}"))
        .with_context(|| format!("not an endpoint: {endpoint}"))?
        .tcp_nodelay(true)
        .initial_connection_window_size(4 * 1024 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024);
    let channel = proxy::channel(settings, endpoint, tls)
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
    Ok(client)
}

impl GrpcSender {
    /// Connects to `endpoint` (`host:port`) and checks that `topic` has a route there.
    pub async fn connect(
        endpoint: &str,
        topic: &str,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<GrpcSender> {
        Ok(GrpcSender {
            client: connect(endpoint, topic, tls).await?,
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

/// A gRPC consumer of one group (a 5.x SimpleConsumer's calls): its own HTTP/2 connection,
/// receiving from the queues QueryAssignment gave it (one per broker group) in turn.
pub struct GrpcReceiver {
    client: MessagingServiceClient<Channel>,
    topic: String,
    group: String,
    expression: String,
    queues: Vec<MessageQueue>,
    next: usize,
}

/// What one receive returned: per message its body and born time (ms), and the receipt
/// handles to ack.
pub struct Received {
    pub messages: Vec<(bytes::Bytes, i64)>,
    handles: Vec<String>,
}

impl GrpcReceiver {
    /// Connects to `endpoint` for `group` on `topic`, filtering by the tag `expression`.
    pub async fn connect(
        endpoint: &str,
        topic: &str,
        group: &str,
        expression: &str,
        tls: Option<&ClientTls>,
    ) -> anyhow::Result<GrpcReceiver> {
        let mut client = connect(endpoint, topic, tls).await?;
        let a = client
            .query_assignment(QueryAssignmentRequest {
                topic: resource(topic),
                group: resource(group),
                endpoints: None,
            })
            .await
            .with_context(|| format!("QueryAssignment at {endpoint}"))?
            .into_inner();
        let st = a.status.unwrap_or_default();
        if st.code != Code::Ok as i32 {
            anyhow::bail!("no assignment for `{topic}`: {}", st.message);
        }
        let queues: Vec<MessageQueue> = a
            .assignments
            .into_iter()
            .filter_map(|a| a.message_queue)
            .collect();
        if queues.is_empty() {
            anyhow::bail!("no assignment for `{topic}`: no broker group with a master");
        }
        Ok(GrpcReceiver {
            client,
            topic: topic.to_string(),
            group: group.to_string(),
            expression: expression.to_string(),
            queues,
            next: 0,
        })
    }

    /// One ReceiveMessage of up to `batch` messages from the next assigned queue, invisible
    /// for `invisible`, long polling up to 1 s; empty when nothing came.
    pub async fn receive(&mut self, batch: i32, invisible: Duration) -> anyhow::Result<Received> {
        let queue = self.queues[self.next % self.queues.len()].clone();
        self.next = self.next.wrapping_add(1);
        let mut stream = self
            .client
            .receive_message(ReceiveMessageRequest {
                group: resource(&self.group),
                message_queue: Some(queue),
                filter_expression: Some(FilterExpression {
                    r#type: FilterType::Tag as i32,
                    expression: self.expression.clone(),
                }),
                batch_size: batch,
                invisible_duration: prost_types::Duration::try_from(invisible).ok(),
                auto_renew: false,
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                attempt_id: None,
            })
            .await?
            .into_inner();
        let mut got = Received {
            messages: Vec::new(),
            handles: Vec::new(),
        };
        while let Some(item) = stream.message().await? {
            match item.content {
                Some(Content::Message(m)) => {
                    let sys = m.system_properties.unwrap_or_default();
                    let born = sys
                        .born_timestamp
                        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                    got.handles.extend(sys.receipt_handle);
                    got.messages.push((m.body, born));
                }
                Some(Content::Status(st))
                    if st.code != Code::Ok as i32 && st.code != Code::MessageNotFound as i32 =>
                {
                    anyhow::bail!("receive refused: {} {}", st.code, st.message);
                }
                _ => {}
            }
        }
        Ok(got)
    }

    /// Acks what `received` returned, with one AckMessage.
    pub async fn ack(&mut self, received: &Received) -> anyhow::Result<()> {
        let entries = received
            .handles
            .iter()
            .map(|h| AckMessageEntry {
                message_id: String::new(),
                receipt_handle: h.clone(),
                lite_topic: None,
            })
            .collect();
        let r = self
            .client
            .ack_message(AckMessageRequest {
                group: resource(&self.group),
                topic: resource(&self.topic),
                entries,
            })
            .await?
            .into_inner();
        let st = r.status.unwrap_or_default();
        if st.code != Code::Ok as i32 {
            anyhow::bail!("ack refused: {} {}", st.code, st.message);
        }
        Ok(())
    }
}
