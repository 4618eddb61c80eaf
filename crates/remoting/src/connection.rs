//! One live connection (TCP, or TLS over TCP), whoever opened it, and the machinery the server and the client
//! share to run it: a reader task and a writer task fed by a channel, request routing by code
//! ([`Dispatcher`], [`RequestHandler`]) and response matching by opaque.
//!
//! A [`Connection`] is accepted by the server or opened by the client; either side may send
//! requests on it ([`Connection::invoke`], [`Connection::send_oneway`]). Responses coming back
//! (flag bit 0) are matched to those requests by opaque. A request's handler is polled once
//! by the reader: if it finishes there (no waiting), its answer is queued at once, with no
//! task spawned (the send path's common case); if it waits (a long-polling pull, a sync flush
//! or replication), it goes on in a task of its own, so it does not hold up the others. The
//! response carries the request's opaque, the response flag and the request's serialize type,
//! and is dropped for a oneway request. A code without handler (and no default handler) is
//! answered `REQUEST_CODE_NOT_SUPPORTED` right away by the reader. A malformed or oversized
//! frame is logged and closes that connection only.
//!
//! Back-pressure ([`RequestLimits`]): a request is *in flight* from the moment its frame is
//! decoded until its handler's answer is queued for writing. Each costs a task and its state
//! (a held long-polling pull is about 4 KB), so the number in flight is bounded per connection
//! and per server; taking a slot is two atomic increments, with no lock. Beyond a bound:
//! - a two-way request is answered at once with `SYSTEM_BUSY` (2) and upstream's remark
//!   [`OVERLOAD_REMARK`] (what upstream answers when its request executor is full). Answering
//!   rather than no longer reading the socket keeps the connection usable for what must get
//!   through: responses to the server's own requests (e.g. GET_CONSUMER_RUNNING_INFO) arrive on
//!   the same connection, and a client that gets an answer backs off (upstream clients retry
//!   a pull 3 s after an error) instead of timing out. The answer is small and goes through
//!   the connection's bounded write queue: a client that does not read its answers fills that
//!   queue, and then the reader waits for room, so that client is no longer read at all (TCP
//!   flow control) and still cannot make the server buffer without bound;
//! - a oneway request (no answer possible) is dropped;
//! - either way the rejection is counted ([`RequestStats`]) and logged at most once every
//!   [`REJECT_LOG_INTERVAL`], with the count since the previous line.
//!
//! Responses (to requests this side sent) are never limited: their waiter is already counted.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::codes::ResponseCode;
use crate::command::{next_opaque, RemotingCommand, SerializeType, FLAG_ONEWAY, FLAG_RESPONSE};
use crate::error::RemotingError;

/// Commands queued for a connection's writer before senders wait.
const WRITE_QUEUE: usize = 1024;
/// The writer gathers queued frames into one write up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Bodies at least this large are written from their own buffer instead of being copied.
const LARGE_BODY: usize = 16 * 1024;
/// Free space the reader keeps in its buffer before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Remark of the `SYSTEM_BUSY` answer to a request over a [`RequestLimits`] bound; upstream's
/// wording when its request executor rejects a request (`NettyRemotingAbstract`).
pub const OVERLOAD_REMARK: &str = "[OVERLOAD]system busy, start flow control for a while";
/// Shortest interval between two log lines about rejected requests.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bounds on the requests a server handles at once (see the module docs for what happens
/// beyond them). The defaults leave room for far more than a benchmark client's 64 requests in
/// flight, and for a consumer holding one long-polling pull per queue, while capping what
/// one client can make the server hold (4 connections x 2048 held pulls x ~4 KB = ~32 MB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests (two-way and oneway) in flight on one connection.
    pub per_connection: usize,
    /// Two-way requests in flight on all connections of the server together.
    pub total: usize,
    /// Oneway requests in flight on all connections of the server together.
    pub oneway_total: usize,
}

impl RequestLimits {
    /// Default of [`RequestLimits::per_connection`].
    pub const DEFAULT_PER_CONNECTION: usize = 2048;
    /// Default of [`RequestLimits::total`].
    pub const DEFAULT_TOTAL: usize = 32_768;
    /// Default of [`RequestLimits::oneway_total`].
    pub const DEFAULT_ONEWAY_TOTAL: usize = 4096;

    /// No bound: for a client, which only gets requests from servers it chose to connect to.
    pub const fn unlimited() -> Self {
        RequestLimits {
            per_connection: usize::MAX,
            total: usize::MAX,
            oneway_total: usize::MAX,
        }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            per_connection: Self::DEFAULT_PER_CONNECTION,
            total: Self::DEFAULT_TOTAL,
            oneway_total: Self::DEFAULT_ONEWAY_TOTAL,
        }
    }
}

/// A snapshot of a server's request counters (a gauge for monitoring and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Two-way requests in flight now.
    pub in_flight: usize,
    /// Oneway requests in flight now.
    pub oneway_in_flight: usize,
    /// Requests refused so far for being over a bound (answered `SYSTEM_BUSY` or dropped).
    pub rejected: u64,
}

/// Which bound a request was over.
#[derive(Clone, Copy, Debug)]
enum Overload {
    Connection,
    Server,
}

/// The in-flight counters shared by the connections of one server (or client).
pub(crate) struct RequestGauge {
    limits: RequestLimits,
    two_way: AtomicUsize,
    oneway: AtomicUsize,
    rejected: AtomicU64,
    /// Rejections not yet reported in a log line.
    unlogged: AtomicU64,
    /// Milliseconds after `epoch` of the last log line about rejections, plus one (0: none).
    last_log: AtomicU64,
    epoch: Instant,
}

impl RequestGauge {
    pub(crate) fn new(limits: RequestLimits) -> Self {
        RequestGauge {
            limits,
            two_way: AtomicUsize::new(0),
            oneway: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            in_flight: self.two_way.load(Ordering::Relaxed),
            oneway_in_flight: self.oneway.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Takes a slot on `conn` and on the server for one request, or says which bound is full.
    fn try_acquire(self: &Arc<Self>, conn: &Connection, oneway: bool) -> Result<Permit, Overload> {
        let per_conn = &conn.inner.in_flight;
        if per_conn.fetch_add(1, Ordering::AcqRel) >= self.limits.per_connection {
            per_conn.fetch_sub(1, Ordering::AcqRel);
            return Err(Overload::Connection);
        }
        let (counter, limit) = if oneway {
            (&self.oneway, self.limits.oneway_total)
        } else {
            (&self.two_way, self.limits.total)
        };
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            per_conn.fetch_sub(1, Ordering::AcqRel);
            return Err(Overload::Server);
        }
        Ok(Permit {
            gauge: Arc::clone(self),
            conn: conn.clone(),
            oneway,
        })
    }

    /// Counts a rejection and logs, at most once per [`REJECT_LOG_INTERVAL`], how many there
    /// were since the last line.
    fn rejected(&self, conn: &Connection, cmd: &RemotingCommand, why: Overload) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let interval = millis(REJECT_LOG_INTERVAL);
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_log
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another reader logs this round
        }
        let count = self.unlogged.swap(0, Ordering::AcqRel);
        let stats = self.stats();
        tracing::warn!(
            conn = conn.id(),
            remote = %conn.remote_addr(),
            code = cmd.code,
            oneway = cmd.is_oneway(),
            limit = ?why,
            rejected = count,
            in_flight = stats.in_flight,
            oneway_in_flight = stats.oneway_in_flight,
            on_connection = conn.in_flight(),
            limits = ?self.limits,
            "requests over the in-flight limit answered SYSTEM_BUSY (oneway: dropped); \
             logged at most every {REJECT_LOG_INTERVAL:?}"
        );
    }
}

/// One request's slot in the in-flight counters, released when dropped (when the handler's
/// answer is queued, or the handler task ends otherwise).
struct Permit {
    gauge: Arc<RequestGauge>,
    conn: Connection,
    oneway: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = if self.oneway {
            &self.gauge.oneway
        } else {
            &self.gauge.two_way
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.conn.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Boxed future returned by [`RequestHandler::handle`].
pub type HandlerFuture = Pin<Box<dyn Future<Output = Option<RemotingCommand>> + Send + 'static>>;

/// Handles one request code (or all of them, as a default handler).
pub trait RequestHandler: Send + Sync + 'static {
    /// Returns the response or None for no reply. The server fixes up opaque, the response flag
    /// and serialize type from the request; a response to a oneway request is dropped.
    /// Requests are processed concurrently (a handler may await for a long time, e.g. a
    /// long-polling pull, without blocking other requests on the same connection).
    fn handle(&self, conn: Connection, request: RemotingCommand) -> HandlerFuture;
}

impl<F, Fut> RequestHandler for F
where
    F: Fn(Connection, RemotingCommand) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<RemotingCommand>> + Send + 'static,
{
    fn handle(&self, conn: Connection, request: RemotingCommand) -> HandlerFuture {
        Box::pin(self(conn, request))
    }
}

/// Told when connections open and close; each call happens exactly once per connection.
pub trait ConnectionListener: Send + Sync + 'static {
    fn on_connect(&self, _conn: &Connection) {}
    fn on_close(&self, _conn: &Connection) {}
}

/// Told of every request a server answered or dropped, with the time from its dispatch to
/// its answer being queued (request latency metrics). Called on the runtime: keep it cheap.
pub trait RequestObserver: Send + Sync + 'static {
    /// `response_code` is `None` for a oneway request and for one its handler left
    /// unanswered.
    fn observe(&self, request_code: i32, response_code: Option<i32>, elapsed: Duration);
}

/// Routing table from request code to handler, plus a connection listener and a request
/// observer.
#[derive(Default)]
pub struct Dispatcher {
    handlers: HashMap<i32, Arc<dyn RequestHandler>>,
    default: Option<Arc<dyn RequestHandler>>,
    listener: Option<Arc<dyn ConnectionListener>>,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl Dispatcher {
    /// An empty table: every request is answered `REQUEST_CODE_NOT_SUPPORTED`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `code` to `handler`. A code already registered is refused with
    /// [`RemotingError::DuplicateHandler`] and the first registration stays: two handlers for
    /// one code is a bug in the server's table, to be reported when it starts.
    pub fn register(
        &mut self,
        code: i32,
        handler: Arc<dyn RequestHandler>,
    ) -> Result<(), RemotingError> {
        match self.handlers.entry(code) {
            std::collections::hash_map::Entry::Occupied(_) => {
                Err(RemotingError::DuplicateHandler(code))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(handler);
                Ok(())
            }
        }
    }

    /// Handler for codes without a registered handler. Without one the server answers
    /// REQUEST_CODE_NOT_SUPPORTED (3) itself, immediately.
    pub fn set_default(&mut self, handler: Arc<dyn RequestHandler>) {
        self.default = Some(handler);
    }

    /// Listener told of every connection opening and closing.
    pub fn set_listener(&mut self, listener: Arc<dyn ConnectionListener>) {
        self.listener = Some(listener);
    }

    /// Observer told of every request answered (see [`RequestObserver`]).
    pub fn set_observer(&mut self, observer: Arc<dyn RequestObserver>) {
        self.observer = Some(observer);
    }

    fn handler_for(&self, code: i32) -> Option<&Arc<dyn RequestHandler>> {
        self.handlers.get(&code).or(self.default.as_ref())
    }
}

/// Source of connection ids, unique within the process.
static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct ConnectionInner {
    id: u64,
    remote: SocketAddr,
    writer: mpsc::Sender<RemotingCommand>,
    /// Cancelled when the connection closes, for any reason.
    closed: CancellationToken,
    /// Requests sent on this connection awaiting their response, by opaque. `None` once the
    /// connection is closed (then nothing can wait forever on it).
    pending: Mutex<Option<HashMap<i32, oneshot::Sender<RemotingCommand>>>>,
    /// Requests received on this connection and not yet answered (see [`RequestLimits`]).
    in_flight: AtomicUsize,
}

/// A live connection (accepted by the server or opened by the client). Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("remote", &self.inner.remote)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Removes a pending entry when an `invoke` ends in any way (timeout, drop).
struct PendingGuard<'a> {
    conn: &'a Connection,
    opaque: i32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.conn.inner.pending.lock().as_mut() {
            pending.remove(&self.opaque);
        }
    }
}

impl Connection {
    fn new(
        remote: SocketAddr,
        writer: mpsc::Sender<RemotingCommand>,
        closed: CancellationToken,
    ) -> Self {
        Connection {
            inner: Arc::new(ConnectionInner {
                id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                remote,
                writer,
                closed,
                pending: Mutex::new(Some(HashMap::new())),
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Id unique among the connections of this process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Address of the peer.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote
    }

    /// Requests received on this connection whose answer is not queued yet.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the connection has closed (no more commands can be sent).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves once the connection has closed; lets a long-running handler give up early.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Server-initiated oneway request (e.g. NOTIFY_CONSUMER_IDS_CHANGED, CHECK_TRANSACTION_STATE).
    /// Sets the oneway flag; returns once the command is queued for writing.
    pub async fn send_oneway(&self, mut cmd: RemotingCommand) -> Result<(), RemotingError> {
        cmd.flag |= FLAG_ONEWAY;
        self.send(cmd).await
    }

    /// Server-initiated request awaiting the client's response (e.g. GET_CONSUMER_RUNNING_INFO).
    /// The request keeps its opaque unless one with the same opaque is already waiting on this
    /// connection, in which case it gets a fresh one.
    pub async fn invoke(
        &self,
        mut cmd: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        cmd.flag &= !(FLAG_ONEWAY | FLAG_RESPONSE);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock();
            let Some(pending) = pending.as_mut() else {
                return Err(self.closed_error());
            };
            while pending.contains_key(&cmd.opaque) {
                cmd.opaque = next_opaque();
            }
            pending.insert(cmd.opaque, tx);
        }
        let _guard = PendingGuard {
            conn: self,
            opaque: cmd.opaque,
        };
        let sent = tokio::time::timeout(timeout, async {
            self.send(cmd).await?;
            rx.await.map_err(|_| self.closed_error())
        })
        .await;
        sent.unwrap_or_else(|_| {
            Err(RemotingError::Timeout {
                addr: self.inner.remote.to_string(),
                millis: millis(timeout),
            })
        })
    }

    /// Queues `cmd` for the writer; a command its binary header cannot carry fails here rather
    /// than in the writer, where it could only be dropped (and its caller time out).
    async fn send(&self, cmd: RemotingCommand) -> Result<(), RemotingError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if cmd.serialize_type == SerializeType::RocketMq {
            crate::header::binary_code_version(&cmd)?;
        }
        self.inner
            .writer
            .send(cmd)
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> RemotingError {
        RemotingError::ConnectionClosed(self.inner.remote.to_string())
    }

    /// Marks the connection closed and fails every pending request.
    fn close(&self) {
        self.inner.closed.cancel();
        // Dropping the senders wakes every waiting `invoke` with ConnectionClosed.
        self.inner.pending.lock().take();
    }

    /// Hands a response to the `invoke` waiting for it.
    fn complete(&self, response: RemotingCommand) {
        let waiter = self
            .inner
            .pending
            .lock()
            .as_mut()
            .and_then(|p| p.remove(&response.opaque));
        match waiter {
            // The waiter may have just timed out; then the response is dropped.
            Some(tx) => drop(tx.send(response)),
            None => tracing::debug!(
                conn = self.inner.id,
                opaque = response.opaque,
                code = response.code,
                "response to no pending request dropped"
            ),
        }
    }
}

/// `d` in whole milliseconds, as reported in timeout errors.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Everything a connection's tasks need besides the socket.
#[derive(Clone)]
pub(crate) struct ConnectionContext {
    pub(crate) dispatcher: Arc<Dispatcher>,
    pub(crate) tracker: TaskTracker,
    pub(crate) max_frame_size: usize,
    /// In-flight request counters and their bounds, shared by all connections.
    pub(crate) requests: Arc<RequestGauge>,
}

/// A byte stream a connection runs over, split into the halves its reader and writer tasks
/// own. The connection code is generic over it, so the plaintext path keeps TCP's lock-free
/// halves and static calls; TLS streams split through tokio's [`tokio::io::split`].
pub(crate) trait Transport: Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Whether written bytes may wait in the stream until flushed (TLS records do; a TCP
    /// socket's flush does nothing, so the plaintext writer skips it).
    const NEEDS_FLUSH: bool = true;
    fn split(self) -> (Self::Read, Self::Write);
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    const NEEDS_FLUSH: bool = false;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl Transport for tokio_rustls::client::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Turns off Nagle on a fresh TCP connection (small request/response frames: do not wait to
/// coalesce them). Done before any TLS handshake, on the socket itself.
pub(crate) fn set_nodelay(stream: &TcpStream, remote: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, "set_nodelay failed: {e}");
    }
}

/// Starts the reader and writer of a connection over `stream`, in `ctx.tracker`. `closed` is
/// cancelled to close the connection (and is cancelled when it closes by itself). The
/// listener (if any) is told of the connection before this returns and of its end once both
/// tasks are done; `permit` is held until then.
pub(crate) fn spawn_connection<S: Transport>(
    stream: S,
    remote: SocketAddr,
    closed: CancellationToken,
    ctx: ConnectionContext,
    permit: Option<OwnedSemaphorePermit>,
) -> Connection {
    let (rd, wr) = stream.split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let conn = Connection::new(remote, tx, closed);
    if let Some(listener) = &ctx.dispatcher.listener {
        listener.on_connect(&conn);
    }
    let writer = ctx
        .tracker
        .spawn(write_loop(wr, rx, conn.clone(), S::NEEDS_FLUSH));
    let driver_conn = conn.clone();
    ctx.tracker.clone().spawn(async move {
        read_loop(rd, &driver_conn, &ctx).await;
        driver_conn.close();
        if let Err(e) = writer.await {
            tracing::error!(conn = driver_conn.id(), "connection writer failed: {e}");
        }
        tracing::debug!(conn = driver_conn.id(), remote = %driver_conn.remote_addr(), "connection closed");
        if let Some(listener) = &ctx.dispatcher.listener {
            listener.on_close(&driver_conn);
        }
        drop(permit);
    });
    conn
}

/// A server a client in the same process reaches without a socket (see
/// `RemotingServer::local_endpoint`).
#[derive(Clone)]
pub struct LocalEndpoint {
    pub(crate) ctx: ConnectionContext,
    pub(crate) addr: SocketAddr,
    pub(crate) shutdown: CancellationToken,
}

/// Opens an in-process connection from a client (`client`, with its `closed` token) to
/// `server`: two [`Connection`]s whose write queues feed each other's [`dispatch`] directly,
/// so commands cross as values, with no encoding, no frames and no system calls. Everything
/// else is as over TCP: the server's handlers, limits, observer and connection listener, the
/// client's handler for requests the server sends, matching of responses by opaque. Closes
/// when either side shuts down or `closed` is cancelled; the server's listener is told then.
pub(crate) fn spawn_local_connection(
    client: &ConnectionContext,
    server: &LocalEndpoint,
    closed: CancellationToken,
) -> Connection {
    let (to_server, server_rx) = mpsc::channel(WRITE_QUEUE);
    let (to_client, client_rx) = mpsc::channel(WRITE_QUEUE);
    let client_side = Connection::new(server.addr, to_server, closed.clone());
    let server_side = Connection::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        to_client,
        closed.clone(),
    );
    let server_ctx = server.ctx.clone();
    if let Some(listener) = &server_ctx.dispatcher.listener {
        listener.on_connect(&server_side);
    }
    // Client to server: requests to the server's handlers, responses to its invokes.
    let (conn, ctx, stop, server_stop) = (
        server_side.clone(),
        server_ctx.clone(),
        closed.clone(),
        server.shutdown.clone(),
    );
    let peer = client_side.clone();
    server_ctx.tracker.spawn(async move {
        pump(server_rx, &conn, &ctx, &stop, &server_stop).await;
        conn.close();
        peer.close();
        if let Some(listener) = &ctx.dispatcher.listener {
            listener.on_close(&conn);
        }
    });
    // Server to client.
    let (conn, ctx, stop) = (client_side.clone(), client.clone(), closed);
    client.tracker.spawn(async move {
        pump(client_rx, &conn, &ctx, &stop, &stop).await;
        conn.close();
    });
    client_side
}

/// Dispatches what one side of an in-process pair writes, as the other side's reader would a
/// frame, until `stop` or `also` is cancelled or the writer is gone; then cancels `stop`.
async fn pump(
    mut rx: mpsc::Receiver<RemotingCommand>,
    conn: &Connection,
    ctx: &ConnectionContext,
    stop: &CancellationToken,
    also: &CancellationToken,
) {
    loop {
        let cmd = tokio::select! {
            _ = stop.cancelled() => break,
            _ = also.cancelled() => break,
            cmd = rx.recv() => cmd,
        };
        match cmd {
            Some(cmd) => dispatch(cmd, conn, ctx).await,
            None => break,
        }
    }
    stop.cancel();
}

/// Reads frames until EOF, an error, a bad frame or the connection being closed.
async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, conn: &Connection, ctx: &ConnectionContext) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            match codec::decode(&mut buf, ctx.max_frame_size) {
                Ok(Some(cmd)) => dispatch(cmd, conn, ctx).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(
                        conn = conn.id(),
                        remote = %conn.remote_addr(),
                        "closing connection after a bad frame: {e}"
                    );
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            _ = conn.closed() => return,
            read = rd.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(conn = conn.id(), "read failed: {e}");
                return;
            }
        }
    }
}

/// Routes one received command: a response to its waiter, a request to its handler task.
async fn dispatch(cmd: RemotingCommand, conn: &Connection, ctx: &ConnectionContext) {
    if cmd.is_response() {
        conn.complete(cmd);
        return;
    }
    let started = Instant::now();
    let observer = ctx.dispatcher.observer.as_ref();
    let observed = |code: Option<i32>| {
        if let Some(o) = observer {
            o.observe(cmd.code, code, started.elapsed());
        }
    };
    let Some(handler) = ctx.dispatcher.handler_for(cmd.code) else {
        tracing::debug!(
            conn = conn.id(),
            code = cmd.code,
            "request code not supported"
        );
        if !cmd.is_oneway() {
            observed(Some(ResponseCode::REQUEST_CODE_NOT_SUPPORTED));
            // Fails only when the connection is closing, and then nobody gets an answer.
            let _ = conn.send(RemotingCommand::not_supported(&cmd)).await;
        }
        return;
    };
    let permit = match ctx.requests.try_acquire(conn, cmd.is_oneway()) {
        Ok(permit) => permit,
        Err(why) => {
            ctx.requests.rejected(conn, &cmd, why);
            observed((!cmd.is_oneway()).then_some(ResponseCode::SYSTEM_BUSY));
            if !cmd.is_oneway() {
                let busy = RemotingCommand::response_to(
                    &cmd,
                    ResponseCode::SYSTEM_BUSY,
                    Some(OVERLOAD_REMARK.to_string()),
                );
                // Waits while the write queue is full: then this connection is not read.
                let _ = conn.send(busy).await;
            }
            return;
        }
    };
    // What the response needs from the request; the request itself goes to the handler.
    let request = RemotingCommand {
        code: cmd.code,
        language: cmd.language,
        version: cmd.version,
        opaque: cmd.opaque,
        flag: cmd.flag,
        serialize_type: cmd.serialize_type,
        ..RemotingCommand::default()
    };
    // Polled once here: a handler that finishes without waiting (most sends, queries) is
    // answered from the reader, in order, with no task spawned; one that waits (a held pull,
    // a sync flush or replication) goes on in a task of its own. The no-op waker of this
    // first poll is replaced at the task's first poll, as every future re-registers its
    // waker when polled.
    let mut future = AssertUnwindSafe(handler.handle(conn.clone(), cmd)).catch_unwind();
    let first = future.poll_unpin(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    if let std::task::Poll::Ready(outcome) = first {
        answer(outcome, request, conn, observer.cloned(), started, permit).await;
        return;
    }
    let conn = conn.clone();
    let observer = observer.cloned();
    ctx.tracker.spawn(async move {
        let outcome = future.await;
        answer(outcome, request, &conn, observer, started, permit).await;
    });
}

/// Sends a handler's response (or a SYSTEM_ERROR one if it panicked) unless the request was
/// oneway; records it with the observer; releases the request's permit once queued.
async fn answer(
    outcome: std::thread::Result<Option<RemotingCommand>>,
    request: RemotingCommand,
    conn: &Connection,
    observer: Option<Arc<dyn RequestObserver>>,
    started: Instant,
    permit: Permit,
) {
    let response = match outcome {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(code = request.code, "request handler panicked");
            Some(RemotingCommand::response_to(
                &request,
                ResponseCode::SYSTEM_ERROR,
                Some(format!("handler of request code {} failed", request.code)),
            ))
        }
    };
    let answered = response
        .as_ref()
        .filter(|_| !request.is_oneway())
        .map(|r| r.code);
    if let Some(o) = &observer {
        o.observe(request.code, answered, started.elapsed());
    }
    let Some(mut response) = response else {
        return;
    };
    if request.is_oneway() {
        return;
    }
    response.opaque = request.opaque;
    response.flag |= FLAG_RESPONSE;
    response.serialize_type = request.serialize_type;
    // Fails only when the connection has closed: the peer is gone.
    let _ = conn.send(response).await;
    drop(permit);
}

/// Writes queued commands, gathering what is queued into few writes, until the connection
/// closes or a write fails; then closes the connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<RemotingCommand>,
    conn: Connection,
    needs_flush: bool,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    'outer: loop {
        let first = tokio::select! {
            _ = conn.closed() => break,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
        };
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            if let Err(e) = codec::encode_head(&cmd, &mut buf) {
                tracing::error!(
                    conn = conn.id(),
                    code = cmd.code,
                    opaque = cmd.opaque,
                    "cannot encode command: {e}"
                );
            } else if cmd.body.len() >= LARGE_BODY {
                if !write_all(&mut wr, &buf, &conn).await
                    || !write_all(&mut wr, &cmd.body, &conn).await
                {
                    break 'outer;
                }
                buf.clear();
            } else {
                buf.extend_from_slice(&cmd.body);
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if !write_all(&mut wr, &buf, &conn).await {
                break;
            }
            buf.clear();
        }
        // TLS may hold written records until flushed; TCP never does.
        if needs_flush && !flush(&mut wr, &conn).await {
            break;
        }
    }
    conn.close();
}

/// Writes `bytes`, giving up when the connection closes; false when the write did not happen.
async fn write_all<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8], conn: &Connection) -> bool {
    let written = tokio::select! {
        _ = conn.closed() => return false,
        written = wr.write_all(bytes) => written,
    };
    match written {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(conn = conn.id(), "write failed: {e}");
            false
        }
    }
}

/// Flushes what the writer holds, giving up when the connection closes; false on failure.
async fn flush<W: AsyncWrite + Unpin>(wr: &mut W, conn: &Connection) -> bool {
    let flushed = tokio::select! {
        _ = conn.closed() => return false,
        flushed = wr.flush() => flushed,
    };
    match flushed {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(conn = conn.id(), "flush failed: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_none() -> Arc<dyn RequestHandler> {
        Arc::new(|_conn: Connection, _req: RemotingCommand| async { None })
    }

    #[test]
    fn a_code_registered_twice_is_refused() {
        let mut d = Dispatcher::new();
        assert!(d.register(10, answer_none()).is_ok());
        assert!(matches!(
            d.register(10, answer_none()),
            Err(RemotingError::DuplicateHandler(10))
        ));
        assert!(d.register(11, answer_none()).is_ok());
    }
}
