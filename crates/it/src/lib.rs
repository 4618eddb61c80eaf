//! Harness for Apogee's scenario tests (`tests/`): a NameServer and brokers started
//! in-process over real TCP on 127.0.0.1 ephemeral ports, each broker with its own temp
//! store and its own tokio runtime on its own thread, so that a broker can be *killed*:
//! [`BrokerNode::kill`] drops that runtime without [`broker::Broker::shutdown`] — no
//! UNREGISTER_BROKER, no final persist of offsets or configs, every socket closed at once (the
//! NameServer drops the broker when its connection closes, as for a `kill -9`). The CommitLog
//! bytes already written stay, as the page cache keeps them for a killed process.
//! [`BrokerNode::restart`] starts it again on the same store and ports.
//!
//! That kill is not a crash for the store: dropping the runtime drops the store, whose `Drop`
//! shuts it down cleanly (checkpoint written, `abort` marker removed), so no crash recovery
//! runs on restart. Scenarios that need a real crash run the broker in its own process
//! ([`child::ChildBroker`], the `it-broker` binary) and SIGKILL it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig};
use namesrv::{NameServer, NamesrvConfig};
use remoting::client::{ClientConfig, RemotingClient};
use remoting::headers::{CommandHeader, GetRouteInfoRequestHeader};
use remoting::protocol::{from_fastjson, TopicRouteData};
use remoting::{NameServerAddr, RemotingCommand, RequestCode, ResponseCode};
pub use store::BrokerRole;
use tokio::sync::oneshot;

pub mod child;

pub use child::{ChildBroker, ChildController};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// NameServer settings for a test: an ephemeral loopback port, silent brokers dropped after
/// `expiry` (checked every 200 ms).
pub fn namesrv_config(expiry: Duration) -> NamesrvConfig {
    NamesrvConfig {
        listen_port: 0,
        bind_address: LOCALHOST,
        broker_channel_expired_time: expiry,
        scan_not_active_broker_interval: Duration::from_millis(200),
        ..NamesrvConfig::default()
    }
}

/// A NameServer started with [`namesrv_config`].
pub async fn start_namesrv(expiry: Duration) -> NameServer {
    NameServer::start(namesrv_config(expiry))
        .await
        .expect("namesrv starts")
}

/// Broker settings for a test: loopback, ephemeral ports, fast registration, replication
/// heartbeats and slave synchronisation, a store under `dir`.
pub fn broker_config(
    namesrv: SocketAddr,
    cluster: &str,
    name: &str,
    id: i64,
    role: BrokerRole,
    dir: PathBuf,
) -> BrokerConfig {
    BrokerConfig {
        broker_cluster_name: cluster.into(),
        broker_name: name.into(),
        broker_id: id,
        broker_role: role,
        namesrv_addr: namesrv.to_string(),
        listen_port: 0,
        bind_address: LOCALHOST,
        broker_ip1: Some(LOCALHOST),
        store_path_root_dir: dir,
        mapped_file_size_commit_log: 16 * 1024 * 1024,
        mapped_file_size_consume_queue: 30_000 * 20,
        register_name_server_period: 300,
        slave_synchronize_interval: 300,
        ha_send_heartbeat_interval: 500,
        ha_housekeeping_interval: 3_000,
        flush_consumer_offset_interval: 200,
        ..BrokerConfig::default()
    }
}

/// [`broker_config`] for broker `name`, id `id` of cluster `C` with its store in
/// `<dir>/<name>-<id>` and `messageDelayLevel` = `delay_levels` (tests shorten the delays).
pub fn cluster_broker_config(
    namesrv: SocketAddr,
    dir: &std::path::Path,
    (name, id, role): (&str, i64, BrokerRole),
    delay_levels: &str,
) -> BrokerConfig {
    let mut c = broker_config(
        namesrv,
        "C",
        name,
        id,
        role,
        dir.join(format!("{name}-{id}")),
    );
    c.message_delay_level = delay_levels.into();
    c
}

/// A broker running on its own runtime and thread.
pub struct BrokerNode {
    config: BrokerConfig,
    /// `ip:port` clients and the NameServer know.
    pub addr: String,
    /// The replication port of a master.
    pub ha_port: Option<u16>,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// Gives a broker whose `listenPort` is 0 fixed ports it can be restarted on: a listen port
/// `p` and the two beside it (`p - 2` fast, `p + 1` HA), all free now and below the kernel's
/// ephemeral range (32768-60999 here), so no socket another test opens meanwhile gets them
/// while the broker is down. (Ephemeral ports freed by a killed broker were handed to other
/// tests' brokers before its restart.) Picks are spread by the process id and a counter.
pub fn fix_restartable_ports(config: &mut BrokerConfig) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    if config.listen_port != 0 {
        return;
    }
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = 20_002 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 12_000) as u16;
        let free = [p - 2, p, p + 1]
            .iter()
            .all(|q| std::net::TcpListener::bind((LOCALHOST, *q)).is_ok());
        if free {
            config.listen_port = p;
            if config.ha_listen_port.is_none_or(|x| x == 0) {
                config.ha_listen_port = Some(p + 1);
            }
            if config.fast_listen_port.is_none_or(|x| x == 0) {
                config.fast_listen_port = Some(p - 2);
            }
            return;
        }
    }
}

impl BrokerNode {
    /// Starts a broker; returns once it is listening. A `listenPort` of 0 gets fixed ports
    /// ([`fix_restartable_ports`]), kept by [`BrokerNode::restart`].
    pub fn start(mut config: BrokerConfig) -> BrokerNode {
        fix_restartable_ports(&mut config);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<bool>();
        let cfg = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let broker = Broker::start(cfg).await.expect("broker starts");
                let _ = ready_tx.send((
                    broker.broker_addr(),
                    broker.local_addr(),
                    broker.ha_port(),
                    broker.fast_local_addr(),
                ));
                let graceful = stop_rx.await.unwrap_or(false);
                if graceful {
                    broker.shutdown().await;
                } else {
                    // Killed: nothing is unregistered or persisted; dropping the runtime
                    // below ends every task and closes every socket.
                    drop(broker);
                }
            });
            drop(rt);
        });
        let (addr, local, ha_port, fast) = ready_rx.recv().expect("broker started");
        let mut config = config;
        // A restart reuses the same ports.
        config.listen_port = local.port();
        config.ha_listen_port = ha_port.or(config.ha_listen_port);
        config.fast_listen_port = fast.map(|a| a.port()).or(config.fast_listen_port);
        BrokerNode {
            config,
            addr,
            ha_port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The configuration it runs with (ports fixed to the bound ones).
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    fn end(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Kills the broker abruptly (see the crate docs).
    pub fn kill(&mut self) {
        self.end(false);
    }

    /// Starts the broker again on the same store and ports.
    pub fn restart(&mut self) {
        self.end(true);
        *self = BrokerNode::start(self.config.clone());
    }

    /// Stops it cleanly.
    pub fn stop(&mut self) {
        self.end(true);
    }
}

impl Drop for BrokerNode {
    fn drop(&mut self) {
        self.end(true);
    }
}

/// The complete records at the start of a CommitLog segment's bytes: (position, size, queue
/// id) of each, and where they end (the first byte that does not start a complete record).
pub fn scan_commit_log(bytes: &[u8]) -> (Vec<(usize, usize, i32)>, usize) {
    const MAGICS: [u32; 2] = [0xDAA3_20A7, 0xDAA3_20AB];
    let be32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut records = Vec::new();
    let mut pos = 0;
    while pos + 16 <= bytes.len() {
        let size = be32(pos) as usize;
        if size < 16 || pos + size > bytes.len() || !MAGICS.contains(&be32(pos + 4)) {
            break;
        }
        records.push((pos, size, be32(pos + 12) as i32));
        pos += size;
    }
    (records, pos)
}

/// Polls `check` every 20 ms until it returns true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `slave` has as many messages as `master` in every queue of `topic` (`queues`
/// of them); panics naming `what` after `timeout`.
pub async fn wait_replicated(
    what: &str,
    timeout: Duration,
    (master, slave): (&str, &str),
    topic: &str,
    queues: i32,
) {
    let raw = raw_client();
    wait_until(what, timeout, || {
        let raw = &raw;
        async move {
            for q in 0..queues {
                let on_m = raw::max_offset(raw, master, topic, q).await;
                if on_m < 0 || raw::max_offset(raw, slave, topic, q).await != on_m {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// The route of `topic` as the NameServer answers it now (`None`: TOPIC_NOT_EXIST).
pub async fn route(
    client: &RemotingClient,
    namesrv: SocketAddr,
    topic: &str,
) -> Option<TopicRouteData> {
    let ns = NameServerAddr::parse(&namesrv.to_string()).expect("namesrv addr");
    let mut cmd = RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC);
    GetRouteInfoRequestHeader {
        topic: topic.into(),
        accept_standard_json_only: None,
    }
    .write_to(&mut cmd);
    let resp = client
        .invoke_namesrv(&ns, cmd, Duration::from_secs(3))
        .await
        .ok()?;
    if resp.code != ResponseCode::SUCCESS {
        return None;
    }
    from_fastjson(&resp.body).ok()
}

/// A raw remoting client for requests a test makes by hand.
pub fn raw_client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}

/// Raw requests a test makes to brokers.
pub mod raw {
    use std::time::Duration;

    use remoting::broker_headers::{
        GetMaxOffsetRequestHeader, PullMessageRequestHeader, SendMessageRequestHeader,
        SendMessageRequestHeaderV2,
    };
    use remoting::client::RemotingClient;
    use remoting::headers::CommandHeader;
    use remoting::message::{MessageExt, Properties};
    use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

    const T: Duration = Duration::from_secs(5);

    fn addr(a: &str) -> BrokerAddr {
        BrokerAddr::parse(a).expect("broker addr")
    }

    /// SEND_MESSAGE_V2 of `body` to queue `queue` of `topic` (created from TBW102 if new);
    /// returns the response (code, `msgId` ext).
    pub async fn send(
        client: &RemotingClient,
        broker: &str,
        topic: &str,
        queue: i32,
        body: &[u8],
    ) -> RemotingCommand {
        send_with(client, broker, topic, queue, body, &[]).await
    }

    /// [`send`] with extra message properties (e.g. `DELAY`).
    pub async fn send_with(
        client: &RemotingClient,
        broker: &str,
        topic: &str,
        queue: i32,
        body: &[u8],
        properties: &[(&str, &str)],
    ) -> RemotingCommand {
        try_send_with(client, broker, topic, queue, body, properties)
            .await
            .expect("send answered")
    }

    /// [`send_with`] that reports a failed call (the broker is gone, a timeout) instead of
    /// panicking.
    pub async fn try_send_with(
        client: &RemotingClient,
        broker: &str,
        topic: &str,
        queue: i32,
        body: &[u8],
        properties: &[(&str, &str)],
    ) -> Result<RemotingCommand, remoting::RemotingError> {
        let mut props = Properties::new();
        props.insert("WAIT", "true");
        for (k, v) in properties {
            props.insert(*k, *v);
        }
        let h = SendMessageRequestHeader {
            producer_group: "PG".into(),
            topic: topic.into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: queue,
            sys_flag: 0,
            born_timestamp: 0,
            flag: 0,
            properties: Some(props.to_wire_string()),
            reconsume_times: Some(0),
            unit_mode: Some(false),
            batch: Some(false),
            max_reconsume_times: None,
            bname: None,
        };
        let mut cmd =
            RemotingCommand::request(RequestCode::SEND_MESSAGE_V2).with_body(body.to_vec());
        SendMessageRequestHeaderV2::from(h).write_to(&mut cmd);
        client.invoke(&addr(broker), cmd, T).await
    }

    /// The body of `broker`'s SUCCESS answer to request `code` (no header); `None` when it
    /// does not answer or refuses.
    pub async fn body_of(client: &RemotingClient, broker: &str, code: i32) -> Option<bytes::Bytes> {
        match client
            .invoke(&addr(broker), RemotingCommand::request(code), T)
            .await
        {
            Ok(r) if r.code == ResponseCode::SUCCESS => Some(r.body),
            _ => None,
        }
    }

    /// GET_MAX_OFFSET of a queue (-1 when the request fails).
    pub async fn max_offset(client: &RemotingClient, broker: &str, topic: &str, queue: i32) -> i64 {
        let mut cmd = RemotingCommand::request(RequestCode::GET_MAX_OFFSET);
        GetMaxOffsetRequestHeader {
            topic: topic.into(),
            queue_id: queue,
            committed: None,
            bname: None,
        }
        .write_to(&mut cmd);
        match client.invoke(&addr(broker), cmd, T).await {
            Ok(r) if r.code == ResponseCode::SUCCESS => {
                r.ext("offset").and_then(|o| o.parse().ok()).unwrap_or(-1)
            }
            _ => -1,
        }
    }

    /// PULL_MESSAGE without suspension: the messages from `offset` on.
    pub async fn pull(
        client: &RemotingClient,
        broker: &str,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
    ) -> Vec<MessageExt> {
        match pull_response(client, broker, group, topic, queue, offset).await {
            Ok(r) if r.code == ResponseCode::SUCCESS => {
                MessageExt::decode_all(&r.body, true).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The broker's whole answer to the PULL_MESSAGE [`pull`] sends.
    pub async fn pull_response(
        client: &RemotingClient,
        broker: &str,
        group: &str,
        topic: &str,
        queue: i32,
        offset: i64,
    ) -> Result<RemotingCommand, remoting::RemotingError> {
        let mut cmd = RemotingCommand::request(RequestCode::PULL_MESSAGE);
        PullMessageRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: queue,
            queue_offset: offset,
            max_msg_nums: 32,
            // FLAG_SUBSCRIPTION: the subscription travels in the header (no heartbeat).
            sys_flag: 0b100,
            commit_offset: 0,
            suspend_timeout_millis: 0,
            subscription: Some("*".into()),
            sub_version: 0,
            expression_type: Some("TAG".into()),
            max_msg_bytes: None,
            request_source: None,
            proxy_frowardclient_id: None,
            bname: None,
        }
        .write_to(&mut cmd);
        client.invoke(&addr(broker), cmd, T).await
    }

    /// Every message of `queue` of `topic` on `broker` as `group` reads it, from queue offset 0
    /// on: [`pull`]s of 32 from after the last one until none is left.
    pub async fn pull_all(
        client: &RemotingClient,
        broker: &str,
        (group, topic): (&str, &str),
        queue: i32,
    ) -> Vec<MessageExt> {
        let mut out: Vec<MessageExt> = Vec::new();
        loop {
            let from = out.last().map_or(0, |m| m.queue_offset + 1);
            let got = pull(client, broker, group, topic, queue, from).await;
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    /// UPDATE_AND_CREATE_TOPIC: `topic` with `queues` read and write queues, read-write.
    pub async fn create_topic(client: &RemotingClient, broker: &str, topic: &str, queues: i32) {
        let cmd = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
            .with_ext("topic", topic)
            .with_ext("readQueueNums", queues)
            .with_ext("writeQueueNums", queues)
            .with_ext("perm", 6);
        let r = client
            .invoke(&addr(broker), cmd, T)
            .await
            .expect("answered");
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }

    /// UPDATE_CONSUMER_OFFSET (two-way) as a consumer sends it.
    pub async fn commit_offset(
        client: &RemotingClient,
        broker: &str,
        (group, topic, queue): (&str, &str, i32),
        offset: i64,
    ) {
        use remoting::broker_headers::UpdateConsumerOffsetRequestHeader;
        let mut cmd = RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET);
        UpdateConsumerOffsetRequestHeader {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: queue,
            commit_offset: offset,
            bname: None,
        }
        .write_to(&mut cmd);
        let r = client
            .invoke(&addr(broker), cmd, T)
            .await
            .expect("answered");
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }

    /// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP with defaults.
    pub async fn create_group(client: &RemotingClient, broker: &str, group: &str) {
        let body = format!(r#"{{"groupName":"{group}"}}"#);
        let cmd = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(body.into_bytes());
        let r = client
            .invoke(&addr(broker), cmd, T)
            .await
            .expect("answered");
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    }
}

/// QUERY_CONSUMER_OFFSET on one broker (`None` when it has none or does not answer).
pub async fn committed_offset(
    client: &RemotingClient,
    broker: &str,
    group: &str,
    topic: &str,
    queue: i32,
) -> Option<i64> {
    use remoting::broker_headers::QueryConsumerOffsetRequestHeader;
    let mut cmd = RemotingCommand::request(RequestCode::QUERY_CONSUMER_OFFSET);
    QueryConsumerOffsetRequestHeader {
        consumer_group: group.into(),
        topic: topic.into(),
        queue_id: queue,
        set_zero_if_not_found: Some(false),
        bname: None,
    }
    .write_to(&mut cmd);
    let addr = remoting::BrokerAddr::parse(broker)?;
    let r = client
        .invoke(&addr, cmd, Duration::from_secs(3))
        .await
        .ok()?;
    if r.code != ResponseCode::SUCCESS {
        return None;
    }
    r.ext("offset")?.parse().ok()
}

/// Waits until QUERY_CONSUMER_OFFSET on `broker` answers `want` for queues `0..queues` of
/// `topic`; panics naming `what` after `timeout`.
pub async fn wait_committed(
    client: &RemotingClient,
    broker: &str,
    (group, topic, queues): (&str, &str, i32),
    want: i64,
    what: &str,
    timeout: Duration,
) {
    wait_until(what, timeout, || async move {
        for q in 0..queues {
            if committed_offset(client, broker, group, topic, q).await != Some(want) {
                return false;
            }
        }
        true
    })
    .await;
}
