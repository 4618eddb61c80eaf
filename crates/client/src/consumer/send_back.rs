//! Send-back: what happens to a message whose consumption failed in clustering mode.
//!
//! 1. If the consumer's route lists a **master** for the message's broker group, send
//!    CONSUMER_SEND_MSG_BACK there (the broker re-reads the message by commit-log offset and
//!    writes it to `%RETRY%group` or the DLQ).
//! 2. Otherwise send **no request at all** for it, and re-send the message through the
//!    producer path to `%RETRY%group` (any writable master) with `ORIGIN_MESSAGE_ID`,
//!    `RETRY_TOPIC`, `RECONSUME_TIME` + 1, `MAX_RECONSUME_TIMES` and the delay level, and
//!    without `TRAN_MSG`. The same happens when the send-back itself fails. If every attempt
//!    fails, the retry topic's route is refreshed from the NameServer once and the re-send
//!    tried again (the cached route may list only groups that are gone). Re-sends of one
//!    client go one at a time, so that one's refresh cannot pull the route from under another.
//! 3. If that fails too, the caller keeps the message in its process queue (so its offset is
//!    not committed past it) and consumes it again after a pause, as [`local_retry`] makes
//!    it: the same message with one more reconsumption and `ORIGIN_MESSAGE_ID`.
//!
//! [`decide_send_back`] is step 1/2 as a pure function. It takes the group as the consumer's
//! route lists it and can only produce a [`BrokerAddr`]: there is no NameServer address in
//! this path, so a send-back cannot reach a NameServer (upstream issue #8963).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use remoting::broker_headers::{ConsumerSendMsgBackRequestHeader, MessageQueue};
use remoting::message::{Message, MessageConst, MessageExt};
use remoting::protocol::BrokerData;
use remoting::BrokerAddr;
use tracing::warn;

use crate::error::ClientError;
use crate::instance::ClientInstance;
use crate::producer::{CommunicationMode, SendEngine, SendResult};
use crate::route::master_addr;

/// Timeout of CONSUMER_SEND_MSG_BACK (upstream: 5 s).
pub const SEND_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with a failed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendBackDecision {
    /// Send CONSUMER_SEND_MSG_BACK to the group's master.
    SendBack {
        broker: BrokerAddr,
        header: ConsumerSendMsgBackRequestHeader,
    },
    /// No request to the message's group: re-send `message` to `%RETRY%group`.
    Fallback { message: Message, reason: String },
}

/// Decides where a failed message goes (see the module docs).
///
/// `group_in_route` is the message's broker group as the consumer's route for the queue's
/// topic lists it (`None` when the route has no such group). `delay_level` is the listener's
/// `delayLevelWhenNextConsume` (0: the broker picks 3 + reconsume times; < 0: DLQ).
///
/// ```
/// use client::consumer::send_back::{decide_send_back, SendBackDecision};
/// use remoting::message::{Message, MessageConst, MessageExt};
/// use remoting::protocol::BrokerData;
///
/// let mut msg = MessageExt::new(Message::new("T", &b"x"[..]));
/// msg.reconsume_times = 2;
/// // The route lists only a slave (id 1) for broker-a: no master.
/// let slave_only = BrokerData {
///     broker_name: "broker-a".into(),
///     broker_addrs: [(1, "127.0.0.1:10921".to_string())].into_iter().collect(),
///     ..Default::default()
/// };
/// match decide_send_back(Some(&slave_only), "broker-a", &msg, "G", 0, 16) {
///     SendBackDecision::Fallback { message, .. } => {
///         assert_eq!(message.topic, "%RETRY%G");
///         assert_eq!(message.property(MessageConst::PROPERTY_RECONSUME_TIME), Some("3"));
///         assert_eq!(message.property(MessageConst::PROPERTY_DELAY_TIME_LEVEL), Some("5"));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
pub fn decide_send_back(
    group_in_route: Option<&BrokerData>,
    broker_name: &str,
    msg: &MessageExt,
    consumer_group: &str,
    delay_level: i32,
    max_reconsume_times: i32,
) -> SendBackDecision {
    let reason = match group_in_route {
        None => format!("the consumer's route has no broker group {broker_name}"),
        Some(bd) => match master_addr(bd) {
            Some(broker) => {
                return SendBackDecision::SendBack {
                    broker,
                    header: send_back_header(
                        msg,
                        broker_name,
                        consumer_group,
                        delay_level,
                        max_reconsume_times,
                    ),
                }
            }
            None => format!("the consumer's route has no master for broker group {broker_name}"),
        },
    };
    SendBackDecision::Fallback {
        message: retry_message(msg, consumer_group, delay_level, max_reconsume_times),
        reason,
    }
}

/// The CONSUMER_SEND_MSG_BACK header for `msg` (upstream `consumerSendMessageBack`).
pub fn send_back_header(
    msg: &MessageExt,
    broker_name: &str,
    consumer_group: &str,
    delay_level: i32,
    max_reconsume_times: i32,
) -> ConsumerSendMsgBackRequestHeader {
    ConsumerSendMsgBackRequestHeader {
        offset: msg.commit_log_offset,
        group: consumer_group.to_string(),
        delay_level,
        origin_msg_id: Some(msg.msg_id().to_string()),
        origin_topic: Some(msg.message.topic.clone()),
        unit_mode: false,
        max_reconsume_times: Some(max_reconsume_times),
        bname: Some(broker_name.to_string()),
    }
}

/// The message re-sent to `%RETRY%group` when no send-back can be made (upstream
/// `sendMessageBackAsNormalMessage`, keeping `ORIGIN_MESSAGE_ID`, which upstream loses on
/// some paths, issue #9481).
///
/// Delay level: `delay_level` when positive, else 3 + reconsume times as the broker would
/// pick. A negative `delay_level` asks for the DLQ: `RECONSUME_TIME` is then set past
/// `max_reconsume_times`, so the broker's one DLQ rule sends it there.
pub fn retry_message(
    msg: &MessageExt,
    consumer_group: &str,
    delay_level: i32,
    max_reconsume_times: i32,
) -> Message {
    let mut m = Message {
        topic: crate::retry_topic(consumer_group),
        flag: msg.message.flag,
        properties: msg.message.properties.clone(),
        body: msg.message.body.clone(),
    };
    let p = &mut m.properties;
    p.insert(
        MessageConst::PROPERTY_ORIGIN_MESSAGE_ID,
        origin_message_id(msg),
    );
    p.insert(
        MessageConst::PROPERTY_RETRY_TOPIC,
        msg.message.topic.clone(),
    );
    let reconsume = if delay_level < 0 {
        max_reconsume_times.max(msg.reconsume_times) + 1
    } else {
        msg.reconsume_times + 1
    };
    p.insert(MessageConst::PROPERTY_RECONSUME_TIME, reconsume.to_string());
    p.insert(
        MessageConst::PROPERTY_MAX_RECONSUME_TIMES,
        max_reconsume_times.to_string(),
    );
    p.remove(MessageConst::PROPERTY_TRANSACTION_PREPARED);
    let level = if delay_level > 0 {
        delay_level
    } else {
        3 + msg.reconsume_times.max(0)
    };
    p.insert(MessageConst::PROPERTY_DELAY_TIME_LEVEL, level.to_string());
    m
}

/// The id a retry of `msg` carries as `ORIGIN_MESSAGE_ID`: the one it already has (it is a
/// retry itself), else its message id.
fn origin_message_id(msg: &MessageExt) -> String {
    msg.message
        .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
        .filter(|o| !o.trim().is_empty())
        .unwrap_or_else(|| msg.msg_id())
        .to_string()
}

/// The copy of `msg` consumed again locally when neither the send-back nor the re-send
/// worked (step 3 of the module docs). It is the same message, so it keeps its id and queue
/// offset; like any redelivery it counts one more reconsumption and carries
/// `ORIGIN_MESSAGE_ID`, so a listener sees the same retry properties as for a message that
/// came back through `%RETRY%group`.
pub fn local_retry(msg: &MessageExt) -> MessageExt {
    let mut again = msg.clone();
    again.reconsume_times += 1;
    let origin = origin_message_id(msg);
    again
        .message
        .properties
        .insert(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID, origin);
    again
}

/// How a send-back ended.
#[derive(Debug)]
pub enum SendBackOutcome {
    /// The group's master accepted CONSUMER_SEND_MSG_BACK.
    SentBack,
    /// The message was re-sent to `%RETRY%group` through the producer path.
    Resent(SendResult),
    /// Both failed: consume it again locally later, and do not commit past it.
    Failed(ClientError),
}

/// How many failed messages took each path (see [`SendBackOutcome`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendBackCounts {
    /// Accepted by the master's CONSUMER_SEND_MSG_BACK.
    pub sent_back: u64,
    /// Re-sent to `%RETRY%group` through the producer path.
    pub resent: u64,
    /// Neither worked: kept for local reconsumption.
    pub failed: u64,
}

/// Thread-safe [`SendBackCounts`].
#[derive(Debug, Default)]
pub(crate) struct SendBackCounters {
    sent_back: AtomicU64,
    resent: AtomicU64,
    failed: AtomicU64,
}

impl SendBackCounters {
    pub fn record(&self, outcome: &SendBackOutcome) {
        let counter = match outcome {
            SendBackOutcome::SentBack => &self.sent_back,
            SendBackOutcome::Resent(_) => &self.resent,
            SendBackOutcome::Failed(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SendBackCounts {
        SendBackCounts {
            sent_back: self.sent_back.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Runs the send-back for a message pulled from `mq` (steps 1 and 2 of the module docs) with
/// `producer` as the fallback path. Every fallback is logged at warn level with its reason.
pub(crate) async fn send_back(
    instance: &ClientInstance,
    producer: &SendEngine,
    mq: &MessageQueue,
    msg: &MessageExt,
    consumer_group: &str,
    delay_level: i32,
    max_reconsume_times: i32,
) -> SendBackOutcome {
    let group = instance.routes.broker_data(&mq.topic, &mq.broker_name);
    let decision = decide_send_back(
        group.as_ref(),
        &mq.broker_name,
        msg,
        consumer_group,
        delay_level,
        max_reconsume_times,
    );
    let (message, reason) = match decision {
        SendBackDecision::SendBack { broker, header } => {
            match instance
                .api
                .consumer_send_msg_back(&broker, &header, SEND_BACK_TIMEOUT)
                .await
            {
                Ok(()) => return SendBackOutcome::SentBack,
                Err(e) => (
                    retry_message(msg, consumer_group, delay_level, max_reconsume_times),
                    format!("CONSUMER_SEND_MSG_BACK to {broker} failed: {e}"),
                ),
            }
        }
        SendBackDecision::Fallback { message, reason } => (message, reason),
    };
    warn!(
        group = consumer_group,
        msg_id = msg.msg_id(),
        queue = %mq,
        %reason,
        "send-back falls back to re-sending the message to the retry topic"
    );
    let timeout = producer.config().send_msg_timeout;
    let _one_at_a_time = instance.fallback_resend.lock().await;
    let first = producer
        .send(message.clone(), CommunicationMode::Sync, timeout)
        .await;
    let result = match first {
        Ok(r) => Ok(r),
        Err(e) => {
            // Every attempt failed: the cached route of the retry topic may list only groups
            // that are gone. Ask the NameServer once and try again.
            warn!(group = consumer_group, msg_id = msg.msg_id(), error = %e, "re-send to the retry topic failed; refreshing its route");
            if let Err(e) = instance.update_route(&message.topic).await {
                warn!(topic = %message.topic, error = %e, "route refresh failed");
            }
            producer
                .send(message, CommunicationMode::Sync, timeout)
                .await
        }
    };
    match result {
        Ok(r) => SendBackOutcome::Resent(r),
        Err(e) => {
            warn!(group = consumer_group, msg_id = msg.msg_id(), error = %e, "re-send to the retry topic failed; will consume again locally");
            SendBackOutcome::Failed(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::group;

    fn failed_msg() -> MessageExt {
        let mut m = MessageExt::new(
            Message::new("T", &b"payload"[..])
                .with_tags("TagA")
                .with_property(
                    MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                    "UNIQ1",
                )
                .with_property(MessageConst::PROPERTY_TRANSACTION_PREPARED, "true"),
        );
        m.reconsume_times = 1;
        m.commit_log_offset = 4242;
        m
    }

    #[test]
    fn a_local_retry_is_the_same_message_with_retry_properties() {
        let msg = failed_msg();
        let again = local_retry(&msg);
        assert_eq!(again.reconsume_times, 2);
        assert_eq!(again.queue_offset, msg.queue_offset);
        assert_eq!(again.msg_id(), "UNIQ1");
        assert_eq!(
            again
                .message
                .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some("UNIQ1")
        );
        assert_eq!(again.message.topic, "T");
        // A retry of a retry keeps the first origin.
        let mut retried = msg.clone();
        retried
            .message
            .properties
            .insert(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID, "FIRST");
        let again = local_retry(&local_retry(&retried));
        assert_eq!(again.reconsume_times, 3);
        assert_eq!(
            again
                .message
                .property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some("FIRST")
        );
    }

    #[test]
    fn master_present_means_send_back_to_it() {
        let bd = group("broker-a", &[(0, 10911), (1, 10921)]);
        match decide_send_back(Some(&bd), "broker-a", &failed_msg(), "G", 0, 16) {
            SendBackDecision::SendBack { broker, header } => {
                assert_eq!(broker.as_str(), "127.0.0.1:10911");
                assert_eq!(header.offset, 4242);
                assert_eq!(header.group, "G");
                assert_eq!(header.delay_level, 0);
                assert_eq!(header.origin_msg_id.as_deref(), Some("UNIQ1"));
                assert_eq!(header.origin_topic.as_deref(), Some("T"));
                assert_eq!(header.max_reconsume_times, Some(16));
                assert_eq!(header.bname.as_deref(), Some("broker-a"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_master_or_no_group_means_fallback_with_every_property() {
        let slaves = group("broker-a", &[(1, 10921), (2, 10931)]);
        for route in [Some(&slaves), None] {
            let SendBackDecision::Fallback { message, reason } =
                decide_send_back(route, "broker-a", &failed_msg(), "G", 0, 16)
            else {
                panic!("expected a fallback");
            };
            assert!(reason.contains("broker-a"));
            assert_eq!(message.topic, "%RETRY%G");
            assert_eq!(&message.body[..], b"payload");
            let p = |k| message.property(k);
            assert_eq!(p(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID), Some("UNIQ1"));
            assert_eq!(p(MessageConst::PROPERTY_RETRY_TOPIC), Some("T"));
            assert_eq!(p(MessageConst::PROPERTY_RECONSUME_TIME), Some("2"));
            assert_eq!(p(MessageConst::PROPERTY_MAX_RECONSUME_TIMES), Some("16"));
            assert_eq!(p(MessageConst::PROPERTY_DELAY_TIME_LEVEL), Some("4"));
            assert_eq!(p(MessageConst::PROPERTY_TRANSACTION_PREPARED), None);
            assert_eq!(p(MessageConst::PROPERTY_TAGS), Some("TagA"));
        }
    }

    #[test]
    fn existing_origin_id_and_explicit_delay_are_kept() {
        let mut m = failed_msg();
        m.message
            .properties
            .insert(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID, "FIRST");
        let r = retry_message(&m, "G", 7, 16);
        assert_eq!(
            r.property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some("FIRST")
        );
        assert_eq!(
            r.property(MessageConst::PROPERTY_DELAY_TIME_LEVEL),
            Some("7")
        );
        // No UNIQ_KEY: the broker's offset id is the origin.
        let mut bare = MessageExt::new(Message::new("T", &b"x"[..]));
        bare.commit_log_offset = 16;
        let r = retry_message(&bare, "G", 0, 16);
        assert_eq!(
            r.property(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
            Some(bare.offset_msg_id.as_str())
        );
        // Negative delay level: straight to the DLQ under any broker's rule.
        let r = retry_message(&failed_msg(), "G", -1, 16);
        let times: i32 = r
            .property(MessageConst::PROPERTY_RECONSUME_TIME)
            .unwrap()
            .parse()
            .unwrap();
        assert!(times > 16);
    }

    mod against_real_connections {
        //! The send-back path over a real [`RemotingClient`] wrapped to record every address
        //! it is asked to contact. Brokers are closed ports on 127.0.0.1 (connections are
        //! refused), so the path runs to its last step without any server.

        use std::sync::Arc;
        use std::time::Duration;

        use futures::future::BoxFuture;
        use parking_lot::Mutex;
        use remoting::broker_headers::SendMessageRequestHeaderV2;
        use remoting::client::RemotingClient;
        use remoting::headers::CommandHeader;
        use remoting::message::Properties;
        use remoting::{NameServerAddr, RemotingCommand, RemotingError, RequestCode};

        use super::*;
        use crate::producer::{ProducerConfig, CLIENT_INNER_PRODUCER_GROUP};
        use crate::route::tests::{queues, route};
        use crate::transport::Transport;
        use crate::ClientConfig;

        #[derive(Debug, Clone)]
        enum Call {
            Broker(BrokerAddr, RemotingCommand),
            NameServer(NameServerAddr, RemotingCommand),
        }

        struct Recording {
            inner: RemotingClient,
            calls: Mutex<Vec<Call>>,
        }

        impl Transport for Recording {
            fn invoke<'a>(
                &'a self,
                addr: &'a BrokerAddr,
                req: RemotingCommand,
                timeout: Duration,
            ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>> {
                self.calls
                    .lock()
                    .push(Call::Broker(addr.clone(), req.clone()));
                Box::pin(self.inner.invoke(addr, req, timeout))
            }

            fn invoke_oneway<'a>(
                &'a self,
                addr: &'a BrokerAddr,
                req: RemotingCommand,
            ) -> BoxFuture<'a, Result<(), RemotingError>> {
                self.calls
                    .lock()
                    .push(Call::Broker(addr.clone(), req.clone()));
                Box::pin(self.inner.invoke_oneway(addr, req))
            }

            fn invoke_namesrv<'a>(
                &'a self,
                addr: &'a NameServerAddr,
                req: RemotingCommand,
                timeout: Duration,
            ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>> {
                self.calls
                    .lock()
                    .push(Call::NameServer(addr.clone(), req.clone()));
                Box::pin(self.inner.invoke_namesrv(addr, req, timeout))
            }
        }

        /// A port on 127.0.0.1 nothing listens on.
        fn closed_port() -> u16 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        }

        struct Setup {
            recording: Arc<Recording>,
            instance: Arc<ClientInstance>,
            engine: SendEngine,
        }

        fn setup(message_group_ids: &[(i64, u16)], retry_master: u16, namesrv: u16) -> Setup {
            let recording = Arc::new(Recording {
                inner: RemotingClient::new(Default::default()),
                calls: Mutex::new(Vec::new()),
            });
            let config = ClientConfig::new(&format!("127.0.0.1:{namesrv}"))
                .unwrap()
                .client_ip("127.0.0.1")
                .instance_name("send-back-test");
            let instance = ClientInstance::with_transport(config, recording.clone()).unwrap();
            instance.routes.update(
                "T",
                route(
                    vec![crate::route::tests::group("broker-a", message_group_ids)],
                    vec![queues("broker-a", 6, 4)],
                ),
            );
            instance.routes.update(
                "%RETRY%G",
                route(
                    vec![crate::route::tests::group("broker-b", &[(0, retry_master)])],
                    vec![queues("broker-b", 6, 1)],
                ),
            );
            let engine = SendEngine::new(
                instance.clone(),
                ProducerConfig::new(CLIENT_INNER_PRODUCER_GROUP)
                    .send_msg_timeout(Duration::from_secs(2)),
            );
            Setup {
                recording,
                instance,
                engine,
            }
        }

        fn consumed_message() -> MessageExt {
            let mut m = failed_msg();
            m.commit_log_offset = 777;
            m.queue_offset = 3;
            m
        }

        /// Checks a recorded re-send to %RETRY%G and returns its header.
        fn assert_retry_send(cmd: &RemotingCommand) -> SendMessageRequestHeaderV2 {
            assert_eq!(cmd.code, RequestCode::SEND_MESSAGE_V2);
            let h = SendMessageRequestHeaderV2::from_command(cmd).unwrap();
            assert_eq!(h.b, "%RETRY%G");
            assert_eq!(h.j, Some(2), "reconsumeTimes = RECONSUME_TIME");
            assert_eq!(h.l, Some(16), "maxReconsumeTimes");
            assert_eq!(
                h.f & remoting::message::MessageSysFlag::TRANSACTION_PREPARED_TYPE,
                0
            );
            let props = Properties::parse(h.i.as_deref().unwrap());
            assert_eq!(
                props.get(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID),
                Some("UNIQ1")
            );
            assert_eq!(props.get(MessageConst::PROPERTY_RETRY_TOPIC), Some("T"));
            assert_eq!(props.get(MessageConst::PROPERTY_RECONSUME_TIME), Some("2"));
            assert_eq!(
                props.get(MessageConst::PROPERTY_MAX_RECONSUME_TIMES),
                Some("16")
            );
            assert_eq!(
                props.get(MessageConst::PROPERTY_DELAY_TIME_LEVEL),
                Some("4")
            );
            assert_eq!(props.get(MessageConst::PROPERTY_TRANSACTION_PREPARED), None);
            assert_eq!(
                props.get(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX),
                Some("UNIQ1")
            );
            assert_eq!(&cmd.body[..], b"payload");
            h
        }

        /// The only request a send-back may make to a NameServer: the retry topic's route,
        /// after every re-send attempt failed.
        fn assert_retry_route_lookup(addr: &NameServerAddr, cmd: &RemotingCommand, port: u16) {
            assert_eq!(addr.to_string(), format!("127.0.0.1:{port}"));
            assert_eq!(cmd.code, RequestCode::GET_ROUTEINFO_BY_TOPIC);
            assert_eq!(cmd.ext("topic"), Some("%RETRY%G"));
        }

        #[tokio::test]
        async fn a_route_with_no_master_sends_nothing_but_a_route_lookup_to_a_nameserver() {
            let (slave, retry_master, namesrv) = (closed_port(), closed_port(), closed_port());
            let s = setup(&[(1, slave)], retry_master, namesrv);
            let mq = MessageQueue::new("T", "broker-a", 0);
            let outcome =
                send_back(&s.instance, &s.engine, &mq, &consumed_message(), "G", 0, 16).await;
            assert!(matches!(outcome, SendBackOutcome::Failed(_)), "{outcome:?}");

            let calls = s.recording.calls.lock().clone();
            assert!(!calls.is_empty());
            for call in &calls {
                match call {
                    Call::NameServer(addr, cmd) => assert_retry_route_lookup(addr, cmd, namesrv),
                    Call::Broker(addr, cmd) => {
                        // Nothing to the message's (masterless) group, no send-back at all.
                        assert_eq!(addr.as_str(), format!("127.0.0.1:{retry_master}"));
                        assert_ne!(cmd.code, RequestCode::CONSUMER_SEND_MSG_BACK);
                        assert_retry_send(cmd);
                    }
                }
            }
            // The inner producer tried 1 + retryTimesWhenSendFailed times, asked the
            // NameServer for the retry topic's route once, and tried again.
            assert_eq!(calls.len(), 7);
            assert!(matches!(calls[3], Call::NameServer(..)));
            s.instance.shutdown().await;
        }

        #[tokio::test]
        async fn a_route_with_a_master_sends_back_there_first() {
            let (master_a, retry_master, namesrv) = (closed_port(), closed_port(), closed_port());
            let s = setup(&[(0, master_a), (1, closed_port())], retry_master, namesrv);
            let mq = MessageQueue::new("T", "broker-a", 0);
            let outcome =
                send_back(&s.instance, &s.engine, &mq, &consumed_message(), "G", 0, 16).await;
            assert!(matches!(outcome, SendBackOutcome::Failed(_)), "{outcome:?}");

            let calls = s.recording.calls.lock().clone();
            let Call::Broker(first_addr, first) = &calls[0] else {
                panic!("first call went to a NameServer");
            };
            assert_eq!(first_addr.as_str(), format!("127.0.0.1:{master_a}"));
            assert_eq!(first.code, RequestCode::CONSUMER_SEND_MSG_BACK);
            let h = ConsumerSendMsgBackRequestHeader::from_command(first).unwrap();
            assert_eq!((h.offset, h.group.as_str(), h.delay_level), (777, "G", 0));
            assert_eq!(h.origin_msg_id.as_deref(), Some("UNIQ1"));
            assert_eq!(h.bname.as_deref(), Some("broker-a"));
            // The send-back failed (refused), so the fallback re-sent it to the retry topic.
            assert!(calls.len() > 1);
            for call in &calls[1..] {
                match call {
                    Call::NameServer(addr, cmd) => assert_retry_route_lookup(addr, cmd, namesrv),
                    Call::Broker(addr, cmd) => {
                        assert_eq!(addr.as_str(), format!("127.0.0.1:{retry_master}"));
                        assert_retry_send(cmd);
                    }
                }
            }
            s.instance.shutdown().await;
        }
    }
}
