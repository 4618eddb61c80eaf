//! Transactional messages through the proxy (upstream's proxy `TransactionService`,
//! `ProxyClientRemotingProcessor` and `GrpcClientChannel` check-back), in three parts:
//!
//! - [`HalfHandle`]: what END_TRANSACTION needs of a half message (its broker group, its offset
//!   in the half queue, its CommitLog offset), carried *in the transaction id* handed to the
//!   client. Upstream keeps this in a table in the proxy's memory; carrying it keeps the proxy
//!   stateless for sends: any instance behind one address can end any transaction.
//! - [`Producers`]: the Telemetry streams of the producers connected to *this* instance, by
//!   producer group. As upstream, a gRPC producer's group is the topic it publishes to (the
//!   proxy writes it into `PGROUP` of every half message). A background task
//!   ([`heartbeat_loop`]) heartbeats each group with online producers to the masters of its
//!   topic, so a broker's check pass has a connection to send CHECK_TRANSACTION_STATE on.
//! - [`CheckHandler`]: CHECK_TRANSACTION_STATE arriving on that connection is turned into a
//!   `RecoverOrphanedTransactionCommand` on the Telemetry stream of one producer of the half
//!   message's group; the client's EndTransaction (source `SOURCE_SERVER_CHECK`) then becomes
//!   END_TRANSACTION like any other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use client::api::ClientApi;
use client::route::master_addr;
use parking_lot::Mutex;
use proto::v2::{telemetry_command, RecoverOrphanedTransactionCommand, TelemetryCommand};
use rand::seq::SliceRandom;
use remoting::broker_headers::{CheckTransactionStateRequestHeader, HeartbeatData, ProducerData};
use remoting::connection::{Connection, HandlerFuture, RequestHandler};
use remoting::headers::CommandHeader;
use remoting::message::{MessageConst, MessageExt};
use remoting::{RemotingCommand, RequestCode};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::convert::to_grpc;

/// How often the producer groups online here are heartbeated to their brokers (upstream's
/// `transactionHeartbeatPeriodSecond` is 20; a broker drops a silent client after 120 s).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);

/// The client id of the proxy's producer heartbeats (upstream: `rmq-proxy-producer-client`).
const HEARTBEAT_CLIENT_ID: &str = "apogee-proxy-producer-client";

/// Where a half message is: the transaction id the proxy hands to the client, as
/// `<queue offset in the half queue>:<CommitLog offset>:<broker name>` (the broker name last,
/// so it may hold any character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfHandle {
    pub tran_state_table_offset: i64,
    pub commit_log_offset: i64,
    pub broker_name: String,
}

impl HalfHandle {
    /// Parses a transaction id; `None` when it is not one this proxy made.
    pub fn parse(s: &str) -> Option<HalfHandle> {
        let mut f = s.splitn(3, ':');
        let tran_state_table_offset = f.next()?.parse().ok()?;
        let commit_log_offset = f.next()?.parse().ok()?;
        let broker_name = f.next().filter(|b| !b.is_empty())?.to_string();
        Some(HalfHandle {
            tran_state_table_offset,
            commit_log_offset,
            broker_name,
        })
    }
}

impl fmt::Display for HalfHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.tran_state_table_offset, self.commit_log_offset, self.broker_name
        )
    }
}

/// Where the commands for one client's Telemetry stream go.
pub type TelemetrySender = mpsc::Sender<Result<TelemetryCommand, tonic::Status>>;

struct Stream {
    client_id: String,
    groups: Vec<String>,
    tx: TelemetrySender,
}

/// The producers connected to this proxy instance: their Telemetry streams by producer group.
#[derive(Default)]
pub struct Producers {
    streams: Mutex<HashMap<u64, Stream>>,
    /// Told when a group may have come online, so it is heartbeated at once.
    changed: Notify,
}

impl Producers {
    /// Registers (or re-registers, with new topics) Telemetry stream `stream` of `client_id`
    /// as a producer of `groups`.
    pub fn register(&self, stream: u64, client_id: &str, groups: Vec<String>, tx: TelemetrySender) {
        let new_group = {
            let mut streams = self.streams.lock();
            let known: BTreeSet<&String> = streams.values().flat_map(|s| &s.groups).collect();
            let new_group = groups.iter().any(|g| !known.contains(g));
            streams.insert(
                stream,
                Stream {
                    client_id: client_id.to_string(),
                    groups,
                    tx,
                },
            );
            new_group
        };
        if new_group {
            self.changed.notify_one();
        }
    }

    /// Forgets Telemetry stream `stream` (it ended).
    pub fn unregister(&self, stream: u64) {
        self.streams.lock().remove(&stream);
    }

    /// Forgets every stream of `client_id` (NotifyClientTermination).
    pub fn unregister_client(&self, client_id: &str) {
        self.streams.lock().retain(|_, s| s.client_id != client_id);
    }

    /// The producer groups with a producer online here.
    pub fn groups(&self) -> BTreeSet<String> {
        self.streams
            .lock()
            .values()
            .flat_map(|s| s.groups.iter().cloned())
            .collect()
    }

    /// The streams of `group`'s producers, in random order.
    fn senders(&self, group: &str) -> Vec<TelemetrySender> {
        let mut out: Vec<TelemetrySender> = self
            .streams
            .lock()
            .values()
            .filter(|s| s.groups.iter().any(|g| g == group))
            .map(|s| s.tx.clone())
            .collect();
        out.shuffle(&mut rand::thread_rng());
        out
    }

    /// Hands `cmd` to one producer of `group` whose stream has room; false when none could
    /// take it (the broker checks the half message again on a later pass).
    pub fn deliver(&self, group: &str, cmd: TelemetryCommand) -> bool {
        self.senders(group)
            .into_iter()
            .any(|tx| tx.try_send(Ok(cmd.clone())).is_ok())
    }
}

/// Heartbeats every producer group online here to the masters of its topic, every
/// [`HEARTBEAT_PERIOD`] and as soon as a group comes online, until `stop`.
pub async fn heartbeat_loop(
    api: Arc<ClientApi>,
    producers: Arc<Producers>,
    stop: CancellationToken,
) {
    loop {
        heartbeat_once(&api, &producers).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = producers.changed.notified() => {}
            _ = tokio::time::sleep(HEARTBEAT_PERIOD) => {}
        }
    }
}

async fn heartbeat_once(api: &ClientApi, producers: &Producers) {
    let mut by_broker: BTreeMap<String, (remoting::BrokerAddr, Vec<ProducerData>)> =
        BTreeMap::new();
    for group in producers.groups() {
        // The group is the topic (see the module docs).
        let route = match api.topic_route(&group).await {
            Ok(Some(route)) => route,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(%group, error = %e, "no route for a producer heartbeat");
                continue;
            }
        };
        for bd in &route.broker_datas {
            if let Some(addr) = master_addr(bd) {
                by_broker
                    .entry(addr.to_string())
                    .or_insert_with(|| (addr, Vec::new()))
                    .1
                    .push(ProducerData {
                        group_name: group.clone(),
                    });
            }
        }
    }
    for (addr, producer_data_set) in by_broker.into_values() {
        let data = HeartbeatData {
            client_id: HEARTBEAT_CLIENT_ID.into(),
            producer_data_set,
            ..Default::default()
        };
        if let Err(e) = api.heartbeat(&addr, &data).await {
            tracing::debug!(broker = %addr, error = %e, "producer heartbeat failed");
        }
    }
}

/// Answers requests brokers send on the proxy's connections: CHECK_TRANSACTION_STATE goes to
/// a producer's Telemetry stream; anything else is "not supported".
pub struct CheckHandler {
    pub producers: Arc<Producers>,
}

impl CheckHandler {
    fn check(&self, conn: &Connection, req: &RemotingCommand) {
        let header = match CheckTransactionStateRequestHeader::from_command(req) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "CHECK_TRANSACTION_STATE with a bad header");
                return;
            }
        };
        let msg = match MessageExt::decode(&req.body, true) {
            Ok((m, _)) => m,
            Err(e) => {
                tracing::warn!(error = %e, "CHECK_TRANSACTION_STATE with a bad message");
                return;
            }
        };
        let Some(group) = msg
            .message
            .property(MessageConst::PROPERTY_PRODUCER_GROUP)
            .map(str::to_string)
        else {
            tracing::warn!("CHECK_TRANSACTION_STATE for a half message without a producer group");
            return;
        };
        let Some(broker_name) = header.bname.clone().filter(|b| !b.is_empty()) else {
            tracing::warn!(broker = %conn.remote_addr(), "CHECK_TRANSACTION_STATE without bname");
            return;
        };
        let handle = HalfHandle {
            tran_state_table_offset: header.tran_state_table_offset,
            commit_log_offset: header.commit_log_offset,
            broker_name,
        };
        let topic = msg.message.topic.clone();
        let cmd = TelemetryCommand {
            status: None,
            command: Some(
                telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    RecoverOrphanedTransactionCommand {
                        message: Some(to_grpc(&topic, &msg, String::new(), Duration::ZERO)),
                        transaction_id: handle.to_string(),
                    },
                ),
            ),
        };
        if !self.producers.deliver(&group, cmd) {
            tracing::debug!(%group, "no producer online here for a transaction check");
        }
    }
}

impl RequestHandler for CheckHandler {
    fn handle(&self, conn: Connection, request: RemotingCommand) -> HandlerFuture {
        let answer = if request.code == RequestCode::CHECK_TRANSACTION_STATE {
            self.check(&conn, &request);
            None
        } else {
            Some(RemotingCommand::not_supported(&request))
        };
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_foreign_ones_are_refused() {
        let h = HalfHandle {
            tran_state_table_offset: 7,
            commit_log_offset: 123_456,
            broker_name: "broker:a".into(),
        };
        assert_eq!(h.to_string(), "7:123456:broker:a");
        assert_eq!(HalfHandle::parse(&h.to_string()), Some(h));
        for bad in [
            "",
            "7",
            "7:1",
            "7:1:",
            "x:1:b",
            "7:y:b",
            "AC1400FF00002A9F0000000000000000",
        ] {
            assert_eq!(HalfHandle::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn checks_go_to_a_producer_of_the_group_with_room() {
        let p = Producers::default();
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(1);
        p.register(1, "c1", vec!["T".into()], tx1);
        p.register(2, "c2", vec!["U".into()], tx2);
        assert_eq!(p.groups().into_iter().collect::<Vec<_>>(), ["T", "U"]);
        assert!(p.deliver("T", TelemetryCommand::default()));
        assert!(rx1.try_recv().is_ok());
        assert!(rx2.try_recv().is_err());
        assert!(!p.deliver("V", TelemetryCommand::default()));
        // A full stream takes nothing more.
        assert!(p.deliver("T", TelemetryCommand::default()));
        assert!(!p.deliver("T", TelemetryCommand::default()));
        p.unregister(1);
        p.unregister_client("c2");
        assert!(p.groups().is_empty());
        assert!(!p.deliver("U", TelemetryCommand::default()));
    }
}
