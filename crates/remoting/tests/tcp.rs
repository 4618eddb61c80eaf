//! Server and client over real TCP on 127.0.0.1.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::codec::{decode, encode, DEFAULT_MAX_FRAME_SIZE};
use remoting::server::{
    Connection, ConnectionListener, Dispatcher, RemotingServer, RequestHandler, RequestLimits,
    ServerConfig, OVERLOAD_REMARK,
};
use remoting::{
    BrokerAddr, NameServerAddr, RemotingCommand, RemotingError, RequestCode, ResponseCode,
    SerializeType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// Generous bound for things that should happen at once; only reached when a test fails.
const LONG: Duration = Duration::from_secs(10);

const ECHO: i32 = 1001;
const SLOW: i32 = 1000;
const HANG: i32 = 1002;

fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// Answers code 0 with the request's body and ext fields.
fn echo() -> Arc<dyn RequestHandler> {
    Arc::new(|_conn: Connection, req: RemotingCommand| async move {
        let mut resp = RemotingCommand::response_to(&req, ResponseCode::SUCCESS, None)
            .with_body(req.body.clone());
        resp.ext_fields = req.ext_fields;
        Some(resp)
    })
}

/// Never answers; returns once its connection has closed.
fn hang() -> Arc<dyn RequestHandler> {
    Arc::new(|conn: Connection, _req: RemotingCommand| async move {
        conn.closed().await;
        None
    })
}

fn echo_dispatcher() -> Dispatcher {
    let mut d = Dispatcher::new();
    d.register(ECHO, echo())
        .expect("each code is registered once");
    d.register(HANG, hang())
        .expect("each code is registered once");
    d
}

fn broker(server: &RemotingServer) -> BrokerAddr {
    BrokerAddr::parse(&server.local_addr().to_string()).unwrap()
}

fn client() -> RemotingClient {
    RemotingClient::new(ClientConfig::default())
}

async fn write_frame(stream: &mut TcpStream, cmd: &RemotingCommand) {
    let mut buf = BytesMut::new();
    encode(cmd, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

/// Next frame from `stream`, `None` at EOF.
async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<RemotingCommand> {
    loop {
        if let Some(cmd) = decode(buf, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            return Some(cmd);
        }
        let n = tokio::time::timeout(LONG, stream.read_buf(buf))
            .await
            .expect("peer silent")
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}

/// Waits until the server closes `stream` (reads nothing but EOF or a reset).
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = BytesMut::new();
    assert!(
        read_frame(stream, &mut buf).await.is_none(),
        "expected the connection to close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_matched_by_opaque_out_of_order() {
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut d = echo_dispatcher();
    let gate = release.clone();
    d.register(
        SLOW,
        Arc::new(move |_conn: Connection, req: RemotingCommand| {
            let gate = gate.clone();
            let started = started_tx.clone();
            async move {
                started.send(()).unwrap();
                gate.notified().await;
                Some(RemotingCommand::response_to(&req, 0, Some("slow".into())))
            }
        }),
    )
    .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let addr = broker(&server);
    let client = client();

    let slow = tokio::spawn({
        let (client, addr) = (client.clone(), addr.clone());
        async move {
            client
                .invoke(&addr, RemotingCommand::request(SLOW), LONG)
                .await
        }
    });
    started.recv().await.unwrap();
    // The slow request is held by its handler; a later request on the same connection passes it.
    let fast = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO).with_ext("who", "fast"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(fast.ext("who"), Some("fast"));
    assert!(!slow.is_finished());
    release.notify_one();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.remark_str(), "slow");

    // Many at once, each answer to its own request.
    let calls = (0..64u32).map(|i| {
        let (client, addr) = (client.clone(), addr.clone());
        async move {
            let req = RemotingCommand::request(ECHO).with_body(i.to_be_bytes().to_vec());
            let opaque = req.opaque;
            let resp = client.invoke(&addr, req, LONG).await.unwrap();
            assert_eq!(resp.opaque, opaque);
            assert_eq!(&resp.body[..], &i.to_be_bytes());
            assert!(resp.is_response());
        }
    });
    futures::future::join_all(calls).await;

    client.shutdown().await;
    server.shutdown().await;
}

/// Upstream's binary header has a 16-bit code: a request with a larger code (POP_MESSAGE) and
/// binary headers fails at once with a clear error instead of timing out.
#[tokio::test]
async fn a_code_too_large_for_binary_headers_fails_at_once() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let client = client();
    let mut req = RemotingCommand::request(200_050);
    req.serialize_type = SerializeType::RocketMq;
    let started = std::time::Instant::now();
    let err = client
        .invoke(&broker(&server), req, LONG)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("JSON headers"), "{err}");
    assert!(started.elapsed() < LONG);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn binary_request_gets_binary_response() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let client = client();
    let mut req = RemotingCommand::request(ECHO).with_ext("k", "v");
    req.serialize_type = SerializeType::RocketMq;
    let resp = client.invoke(&broker(&server), req, LONG).await.unwrap();
    assert_eq!(resp.serialize_type, SerializeType::RocketMq);
    assert_eq!(resp.ext("k"), Some("v"));
    client.shutdown().await;
    server.shutdown().await;
}

/// A client configured for binary headers uses them for every code that fits 16 bits and
/// JSON for the others (POP codes), so both reach the server.
#[tokio::test]
async fn a_binary_header_client_falls_back_to_json_for_large_codes() {
    const LARGE: i32 = 200_050;
    let mut d = echo_dispatcher();
    d.register(LARGE, echo())
        .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let client = RemotingClient::new(ClientConfig {
        serialize_type: SerializeType::RocketMq,
        ..ClientConfig::default()
    });
    for (code, expected) in [
        (ECHO, SerializeType::RocketMq),
        (LARGE, SerializeType::Json),
    ] {
        let req = RemotingCommand::request(code).with_ext("k", "v");
        let resp = client.invoke(&broker(&server), req, LONG).await.unwrap();
        assert_eq!(resp.serialize_type, expected, "code {code}");
        assert_eq!(resp.ext("k"), Some("v"));
    }
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn oneway_request_gets_no_reply() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut d = echo_dispatcher();
    d.register(
        RequestCode::UPDATE_CONSUMER_OFFSET,
        Arc::new(move |_conn: Connection, req: RemotingCommand| {
            let seen = seen_tx.clone();
            async move {
                // A handler may return a response; for a oneway request it is dropped.
                let resp = RemotingCommand::response_to(&req, 0, None);
                seen.send(req).unwrap();
                Some(resp)
            }
        }),
    )
    .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();

    let oneway = RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET).into_oneway();
    write_frame(&mut stream, &oneway).await;
    let got = seen.recv().await.unwrap();
    assert_eq!(got.opaque, oneway.opaque);
    assert!(got.is_oneway());

    // A oneway request to a code without handler gets nothing either.
    write_frame(&mut stream, &RemotingCommand::request(4242).into_oneway()).await;

    let two_way = RemotingCommand::request(ECHO);
    write_frame(&mut stream, &two_way).await;
    let mut buf = BytesMut::new();
    let first = read_frame(&mut stream, &mut buf).await.unwrap();
    assert_eq!(
        first.opaque, two_way.opaque,
        "the first frame back answers the two-way request"
    );

    // Same through the client API.
    let client = client();
    client
        .invoke_oneway(
            &broker(&server),
            RemotingCommand::request(RequestCode::UPDATE_CONSUMER_OFFSET),
        )
        .await
        .unwrap();
    assert!(seen.recv().await.unwrap().is_oneway());

    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_code_is_answered_not_supported() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let client = client();
    let resp = client
        .invoke(&broker(&server), RemotingCommand::request(9999), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::REQUEST_CODE_NOT_SUPPORTED);
    assert!(resp.remark_str().contains("9999"), "{}", resp.remark_str());
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn default_handler_takes_unregistered_codes() {
    let mut d = Dispatcher::new();
    d.set_default(echo());
    let server = RemotingServer::start(config(), d).await.unwrap();
    let client = client();
    let resp = client
        .invoke(
            &broker(&server),
            RemotingCommand::request(9999).with_ext("a", "b"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    assert_eq!(resp.ext("a"), Some("b"));
    client.shutdown().await;
    server.shutdown().await;
}

fn buggy(req: &RemotingCommand) -> Option<RemotingCommand> {
    panic!("handler bug on request {}", req.code)
}

#[tokio::test]
async fn panicking_handler_answers_system_error() {
    let mut d = Dispatcher::new();
    d.register(
        7,
        Arc::new(|_conn: Connection, req: RemotingCommand| async move { buggy(&req) }),
    )
    .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let client = client();
    let resp = client
        .invoke(&broker(&server), RemotingCommand::request(7), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_timeout() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let addr = broker(&server);
    let client = client();
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(HANG),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::Timeout { millis: 100, .. }),
        "{err:?}"
    );
    // The connection is still good.
    let resp = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_closes_only_its_connection() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let addr = broker(&server);
    let client = client();
    client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();

    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], // "GET " read as a 1.2 GB frame length
        &[0, 0, 0, 8, 0, 0, 0, 4, b'n', b'o', b'p', b'e'][..], // JSON header that is not JSON
        &[0, 0, 0, 4, 9, 0, 0, 0][..],             // serialize type 9
    ] {
        let mut bad = TcpStream::connect(server.local_addr()).await.unwrap();
        bad.write_all(garbage).await.unwrap();
        expect_closed(&mut bad).await;
    }

    let resp = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO).with_ext("still", "ok"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.ext("still"), Some("ok"));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    let config = ServerConfig {
        max_frame_size: 1024,
        ..config()
    };
    let server = RemotingServer::start(config, echo_dispatcher())
        .await
        .unwrap();

    // Only the length prefix is sent: refused before the rest would be buffered.
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    raw.write_all(&100_000u32.to_be_bytes()).await.unwrap();
    expect_closed(&mut raw).await;

    let client = client();
    let addr = broker(&server);
    let big = RemotingCommand::request(ECHO).with_body(vec![0u8; 2048]);
    let err = client.invoke(&addr, big, LONG).await.unwrap_err();
    assert!(matches!(err, RemotingError::ConnectionClosed(_)), "{err:?}");
    // The next call opens a new connection.
    let resp = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO).with_body(vec![1u8; 512]),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.body.len(), 512);
    client.shutdown().await;
    server.shutdown().await;
}

/// Counts listener calls and keeps the last connection.
#[derive(Default)]
struct Tracker {
    connected: AtomicUsize,
    closed: AtomicUsize,
    last: Mutex<Option<Connection>>,
    notify: Notify,
}

impl ConnectionListener for Tracker {
    fn on_connect(&self, conn: &Connection) {
        self.connected.fetch_add(1, Ordering::SeqCst);
        *self.last.lock() = Some(conn.clone());
        self.notify.notify_one();
    }

    fn on_close(&self, _conn: &Connection) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_requests_reach_the_client_hook() {
    server_initiated_requests(false).await;
}

/// The same over an in-process connection (`RemotingClient::add_local`): no socket, the same
/// handlers, hook, listener calls and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_connection_behaves_as_a_socket() {
    server_initiated_requests(true).await;
}

/// A server that shuts down closes its in-process connections: waiting requests and later
/// ones fail at once instead of timing out.
#[tokio::test]
async fn an_in_process_connection_closes_with_its_server() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let client = client();
    client.add_local(&server.local_addr().to_string(), server.local_endpoint());
    let addr = broker(&server);
    client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    let held = {
        let (client, addr) = (client.clone(), addr.clone());
        tokio::spawn(async move {
            client
                .invoke(&addr, RemotingCommand::request(HANG), LONG)
                .await
        })
    };
    tokio::task::yield_now().await;
    let started = std::time::Instant::now();
    server.shutdown().await;
    let err = held.await.unwrap().unwrap_err();
    assert!(matches!(err, RemotingError::ConnectionClosed(_)), "{err:?}");
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::ConnectionClosed(_)), "{err:?}");
    assert!(started.elapsed() < LONG);
    client.shutdown().await;
}

async fn server_initiated_requests(local: bool) {
    let tracker = Arc::new(Tracker::default());
    let mut d = echo_dispatcher();
    d.set_listener(tracker.clone());
    let server = RemotingServer::start(config(), d).await.unwrap();

    let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
    let hook: Arc<dyn RequestHandler> = Arc::new(move |_conn: Connection, req: RemotingCommand| {
        let hook_tx = hook_tx.clone();
        async move {
            let resp = (req.code == RequestCode::GET_CONSUMER_RUNNING_INFO).then(|| {
                RemotingCommand::response_to(&req, 0, None).with_body(&b"{\"running\":true}"[..])
            });
            hook_tx.send(req).unwrap();
            resp
        }
    });
    let client = RemotingClient::new(ClientConfig {
        server_request_handler: Some(hook),
        ..ClientConfig::default()
    });
    if local {
        client.add_local(&server.local_addr().to_string(), server.local_endpoint());
    }
    let echoed = client
        .invoke(
            &broker(&server),
            RemotingCommand::request(ECHO)
                .with_ext("k", "v")
                .with_body(&b"body"[..]),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(
        (echoed.ext("k"), &echoed.body[..]),
        (Some("v"), &b"body"[..])
    );
    let conn = tracker
        .last
        .lock()
        .clone()
        .expect("on_connect ran before the request");
    assert!(!conn.is_closed());
    // An in-process connection has no peer port.
    assert_eq!(conn.remote_addr().port() == 0, local);

    let notify = RemotingCommand::request(RequestCode::NOTIFY_CONSUMER_IDS_CHANGED)
        .with_ext("consumerGroup", "G");
    conn.send_oneway(notify).await.unwrap();
    let got = hook_rx.recv().await.unwrap();
    assert_eq!(got.code, RequestCode::NOTIFY_CONSUMER_IDS_CHANGED);
    assert_eq!(got.ext("consumerGroup"), Some("G"));
    assert!(got.is_oneway());

    let resp = conn
        .invoke(
            RemotingCommand::request(RequestCode::GET_CONSUMER_RUNNING_INFO),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    assert_eq!(&resp.body[..], b"{\"running\":true}");
    assert_eq!(
        hook_rx.recv().await.unwrap().code,
        RequestCode::GET_CONSUMER_RUNNING_INFO
    );

    // A client hook that returns nothing for a two-way request: the server's invoke times out.
    let err = conn
        .invoke(
            RemotingCommand::request(RequestCode::CHECK_TRANSACTION_STATE),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Timeout { .. }), "{err:?}");

    client.shutdown().await;
    server.shutdown().await;
    assert_eq!(tracker.connected.load(Ordering::SeqCst), 1);
    assert_eq!(tracker.closed.load(Ordering::SeqCst), 1);
    assert!(conn.is_closed());
    let err = conn
        .send_oneway(RemotingCommand::request(40))
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::ConnectionClosed(_)));
}

#[tokio::test]
async fn client_without_hook_answers_not_supported() {
    let tracker = Arc::new(Tracker::default());
    let mut d = echo_dispatcher();
    d.set_listener(tracker.clone());
    let server = RemotingServer::start(config(), d).await.unwrap();
    let client = client();
    client
        .invoke(&broker(&server), RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    let conn = tracker.last.lock().clone().unwrap();
    let resp = conn
        .invoke(
            RemotingCommand::request(RequestCode::GET_CONSUMER_RUNNING_INFO),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::REQUEST_CODE_NOT_SUPPORTED);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn pending_requests_fail_when_the_connection_drops() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut d = Dispatcher::new();
    d.register(
        HANG,
        Arc::new(move |conn: Connection, _req: RemotingCommand| {
            let started = started_tx.clone();
            async move {
                started.send(()).unwrap();
                conn.closed().await;
                None
            }
        }),
    )
    .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let addr = broker(&server);
    let client = client();
    let pending = tokio::spawn({
        let (client, addr) = (client.clone(), addr.clone());
        async move {
            client
                .invoke(&addr, RemotingCommand::request(HANG), LONG)
                .await
        }
    });
    started.recv().await.unwrap();
    server.shutdown().await;
    // Fails as soon as the connection drops, not when the 10 s timeout expires.
    let err = tokio::time::timeout(LONG / 2, pending)
        .await
        .expect("the pending call ended with its connection")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RemotingError::ConnectionClosed(_)), "{err:?}");
    client.shutdown().await;
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    let local = server.local_addr();
    let addr = broker(&server);
    let client = client();
    client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    server.shutdown().await;

    // Down: the call fails (the old connection is closed or the connect is refused).
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RemotingError::ConnectionClosed(_) | RemotingError::Connect { .. }
        ),
        "{err:?}"
    );

    let server = RemotingServer::start(
        ServerConfig {
            listen: local,
            ..config()
        },
        echo_dispatcher(),
    )
    .await
    .unwrap();
    // Up again on the same port: the next calls use a new connection.
    let resp = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO).with_ext("again", "1"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.ext("again"), Some("1"));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_awaits_handlers_and_closes_connections() {
    let finished = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let tracker = Arc::new(Tracker::default());
    let mut d = echo_dispatcher();
    d.set_listener(tracker.clone());
    let done = finished.clone();
    d.register(
        SLOW,
        Arc::new(move |conn: Connection, _req: RemotingCommand| {
            let (done, started) = (done.clone(), started_tx.clone());
            async move {
                started.send(()).unwrap();
                conn.closed().await;
                // Still running after the connection closed: shutdown must wait for this.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                done.store(true, Ordering::SeqCst);
                None
            }
        }),
    )
    .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    write_frame(&mut raw, &RemotingCommand::request(SLOW).into_oneway()).await;
    started.recv().await.unwrap();

    tokio::time::timeout(LONG, server.shutdown()).await.unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before the handler ended"
    );
    assert_eq!(tracker.connected.load(Ordering::SeqCst), 1);
    assert_eq!(tracker.closed.load(Ordering::SeqCst), 1);
    expect_closed(&mut raw).await;
}

#[tokio::test]
async fn namesrv_calls_refuse_broker_codes_without_io() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = NameServerAddr::parse(&listener.local_addr().unwrap().to_string()).unwrap();
    let client = client();
    let err = client
        .invoke_namesrv(
            &addr,
            RemotingCommand::request(RequestCode::CONSUMER_SEND_MSG_BACK),
            LONG,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::NotANameServerRequest(36)),
        "{err:?}"
    );
    let err = client
        .invoke_namesrv_oneway(&addr, RemotingCommand::request(RequestCode::SEND_MESSAGE))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RemotingError::NotANameServerRequest(10)),
        "{err:?}"
    );

    // Had the client connected, its connection would be accepted before this probe.
    let probe = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_, peer) = listener.accept().await.unwrap();
    assert_eq!(
        peer,
        probe.local_addr().unwrap(),
        "the client opened no connection"
    );
    client.shutdown().await;
}

#[tokio::test]
async fn namesrv_call_goes_through() {
    let mut d = Dispatcher::new();
    d.register(RequestCode::GET_ROUTEINFO_BY_TOPIC, echo())
        .expect("each code is registered once");
    let server = RemotingServer::start(config(), d).await.unwrap();
    let addr = NameServerAddr::parse(&server.local_addr().to_string()).unwrap();
    let client = client();
    let resp = client
        .invoke_namesrv(
            &addr,
            RemotingCommand::request(RequestCode::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", "T"),
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(resp.ext("topic"), Some("T"));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn connect_failure_and_shutdown_errors() {
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = BrokerAddr::parse(&port.to_string()).unwrap();
    let client = client();
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Connect { .. }), "{err:?}");
    client.shutdown().await;
    let err = client
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap_err();
    assert!(matches!(err, RemotingError::Shutdown), "{err:?}");
}

#[tokio::test]
async fn connection_limit_holds_extra_connections() {
    let config = ServerConfig {
        max_connections: 1,
        ..config()
    };
    let server = RemotingServer::start(config, echo_dispatcher())
        .await
        .unwrap();
    let addr = broker(&server);
    let first = client();
    first
        .invoke(&addr, RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    let second = client();
    let waiting = tokio::spawn({
        let (second, addr) = (second.clone(), addr.clone());
        async move {
            second
                .invoke(&addr, RemotingCommand::request(ECHO), LONG)
                .await
        }
    });
    // The second connection is not served while the first holds the only slot.
    let mut waiting = waiting;
    let held = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
    assert!(
        held.is_err(),
        "second connection was served beyond the limit"
    );
    first.shutdown().await;
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.code, 0);
    second.shutdown().await;
    server.shutdown().await;
}

/// A client that stops reading (its responses pile up until the socket buffers are full) and a
/// client that stopped in the middle of a frame stall only themselves: another client keeps
/// getting answers at once.
#[tokio::test]
async fn a_slow_reader_and_a_dead_sender_do_not_stall_other_clients() {
    let server = RemotingServer::start(config(), echo_dispatcher())
        .await
        .unwrap();
    // Slow reader: 64 requests with 1 MiB bodies echoed back, and it never reads.
    let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
    let body = vec![7u8; 1 << 20];
    for _ in 0..64 {
        let req = RemotingCommand::request(ECHO).with_body(body.clone());
        let mut buf = BytesMut::new();
        encode(&req, &mut buf).unwrap();
        if tokio::time::timeout(Duration::from_millis(200), slow.write_all(&buf))
            .await
            .is_err()
        {
            break; // the server stopped reading from us: its writes to us are blocked
        }
    }
    // Dead sender: half a frame, then silence.
    let mut dead = TcpStream::connect(server.local_addr()).await.unwrap();
    dead.write_all(&[0, 0, 1, 0, 0, 0]).await.unwrap();

    let c = client();
    let addr = broker(&server);
    for i in 0..20 {
        let resp = c
            .invoke(&addr, RemotingCommand::request(ECHO).with_ext("i", i), LONG)
            .await
            .unwrap();
        assert_eq!(resp.ext("i"), Some(i.to_string().as_str()));
    }
    drop((slow, dead));
    server.shutdown().await;
}

/// Writes `count` pipelined requests built by `make` on one connection while reading the
/// answers; returns the answers once `expect` have arrived.
async fn flood(
    server: std::net::SocketAddr,
    count: usize,
    expect: usize,
    make: fn() -> RemotingCommand,
) -> (Vec<RemotingCommand>, TcpStream) {
    let stream = TcpStream::connect(server).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        for _ in 0..count {
            encode(&make(), &mut buf).unwrap();
        }
        wr.write_all(&buf).await.unwrap();
        wr
    });
    let mut answers = Vec::with_capacity(expect);
    let mut buf = BytesMut::new();
    while answers.len() < expect {
        if let Some(cmd) = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            answers.push(cmd);
            continue;
        }
        let n = tokio::time::timeout(LONG, rd.read_buf(&mut buf))
            .await
            .expect("server silent during the flood")
            .unwrap();
        assert!(n > 0, "server closed the connection during the flood");
    }
    let wr = writer.await.unwrap();
    (answers, rd.reunite(wr).unwrap())
}

/// A flood of pipelined requests that the handler holds (like long-polling pulls) on a few
/// connections: beyond the per-connection bound each is answered SYSTEM_BUSY with upstream's
/// remark at once, the number held stays at the bound, and another client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_held_requests_gets_system_busy_beyond_the_bound() {
    const CONNS: usize = 4;
    const PER_CONN: usize = 100;
    const SENT: usize = 5_000; // 20,000 in all
    let server = RemotingServer::start(
        ServerConfig {
            limits: RequestLimits {
                per_connection: PER_CONN,
                total: 1_000,
                oneway_total: 10,
            },
            ..config()
        },
        echo_dispatcher(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let floods: Vec<_> = (0..CONNS)
        .map(|_| {
            tokio::spawn(flood(addr, SENT, SENT - PER_CONN, || {
                RemotingCommand::request(HANG)
            }))
        })
        .collect();
    let mut held_streams = Vec::new();
    for f in floods {
        let (answers, stream) = f.await.unwrap();
        for a in &answers {
            assert_eq!(a.code, ResponseCode::SYSTEM_BUSY);
            assert_eq!(a.remark.as_deref(), Some(OVERLOAD_REMARK));
            assert!(a.is_response());
        }
        held_streams.push(stream);
    }
    // Everything over the bound was answered, so what is left is held: exactly the bound.
    let stats = server.request_stats();
    assert_eq!(stats.in_flight, CONNS * PER_CONN);
    assert_eq!(stats.rejected, (CONNS * (SENT - PER_CONN)) as u64);

    // Another client is served at once (awaited; the bound is per connection).
    let client = client();
    let resp = client
        .invoke(&broker(&server), RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::SUCCESS);

    // Oneway requests over the server's oneway bound are dropped, not answered or queued:
    // the first frame back on this connection answers the two-way request sent after them.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    for _ in 0..50 {
        encode(&RemotingCommand::request(HANG).into_oneway(), &mut buf).unwrap();
    }
    let two_way = RemotingCommand::request(ECHO);
    encode(&two_way, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut rbuf = BytesMut::new();
    let first = read_frame(&mut stream, &mut rbuf).await.unwrap();
    assert_eq!(
        (first.opaque, first.code),
        (two_way.opaque, ResponseCode::SUCCESS)
    );
    let stats = server.request_stats();
    assert_eq!(stats.oneway_in_flight, 10);
    assert_eq!(stats.rejected, (CONNS * (SENT - PER_CONN) + 40) as u64);

    // Closing the flooding connections ends their held requests and frees the slots.
    drop(held_streams);
    drop(stream);
    wait_idle(&server).await;
    client.shutdown().await;
    server.shutdown().await;
}

/// The server-wide bound: once the flooders hold `total` requests, a request on any other
/// connection is answered SYSTEM_BUSY too, and is served again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_wide_bound_answers_system_busy_everywhere() {
    let server = RemotingServer::start(
        ServerConfig {
            limits: RequestLimits {
                per_connection: 1_000,
                total: 300,
                oneway_total: 10,
            },
            ..config()
        },
        echo_dispatcher(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (busy, stream) = flood(addr, 1_000, 700, || RemotingCommand::request(HANG)).await;
    assert!(busy.iter().all(|c| c.code == ResponseCode::SYSTEM_BUSY));
    assert_eq!(server.request_stats().in_flight, 300);

    let client = client();
    let resp = client
        .invoke(&broker(&server), RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::SYSTEM_BUSY);
    assert_eq!(resp.remark.as_deref(), Some(OVERLOAD_REMARK));

    drop(stream);
    wait_idle(&server).await;
    let resp = client
        .invoke(&broker(&server), RemotingCommand::request(ECHO), LONG)
        .await
        .unwrap();
    assert_eq!(resp.code, ResponseCode::SUCCESS);
    client.shutdown().await;
    server.shutdown().await;
}

/// Waits (up to [`LONG`]) until the server has no request in flight.
async fn wait_idle(server: &RemotingServer) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let s = server.request_stats();
        if s.in_flight + s.oneway_in_flight == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never freed: {s:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
