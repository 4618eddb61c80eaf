//! Async TCP client: one pooled [`Connection`] per address, opened on first use and replaced
//! on the next call after it has failed or closed. Requests are matched to responses by opaque
//! with a per-call timeout (a timed-out request leaves nothing behind); every request still
//! waiting when its connection drops fails with `ConnectionClosed`.
//!
//! Requests the server sends on a client connection (`NOTIFY_CONSUMER_IDS_CHANGED`,
//! `GET_CONSUMER_RUNNING_INFO`, ...) go to [`ClientConfig::server_request_handler`], whose
//! response is written back; without a hook they are answered `REQUEST_CODE_NOT_SUPPORTED`.
//!
//! With [`ClientConfig::tls`] every connection runs a TLS handshake right after connecting,
//! within the connect timeout; a refused certificate fails the call with
//! [`RemotingError::Connect`] naming the reason.
//!
//! NameServers and brokers have distinct address types; [`RemotingClient::invoke_namesrv`]
//! refuses, before any I/O, a request code that a NameServer does not serve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acl::Credentials;
use crate::addr::{BrokerAddr, NameServerAddr};
use crate::codec::DEFAULT_MAX_FRAME_SIZE;
use crate::codes::is_namesrv_request;
use crate::command::{RemotingCommand, SerializeType};
use crate::connection::{
    millis, set_nodelay, spawn_connection, spawn_local_connection, Connection, ConnectionContext,
    Dispatcher, LocalEndpoint, RequestGauge, RequestHandler, RequestLimits,
};
use crate::error::RemotingError;
use crate::tls::ClientTls;

/// Settings of a [`RemotingClient`].
#[derive(Clone)]
pub struct ClientConfig {
    /// Limit on opening a TCP connection (the call's own timeout also bounds it).
    pub connect_timeout: Duration,
    /// Largest frame accepted from a server.
    pub max_frame_size: usize,
    /// Handles requests initiated by a server; `None` answers them "not supported".
    pub server_request_handler: Option<Arc<dyn RequestHandler>>,
    /// Speak TLS on every connection; `None` for plaintext.
    pub tls: Option<ClientTls>,
    /// Sign every request with these (ACL 1.0, see [`crate::acl`]); `None` sends unsigned.
    pub credentials: Option<Credentials>,
    /// Header encoding of requests. `RocketMq`: upstream's binary layout for every request
    /// whose code fits its 16 bits (see [`crate::header::binary_code_version`]), JSON for the
    /// others (the POP codes); `Json`: JSON for all, as upstream's clients by default.
    pub serialize_type: SerializeType,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            server_request_handler: None,
            tls: None,
            credentials: None,
            serialize_type: SerializeType::Json,
        }
    }
}

/// The connection to one address; the async lock makes concurrent first calls share one
/// connect.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

struct ClientInner {
    connect_timeout: Duration,
    tls: Option<ClientTls>,
    credentials: Option<Credentials>,
    serialize_type: SerializeType,
    ctx: ConnectionContext,
    slots: Mutex<HashMap<String, Slot>>,
    /// Addresses served in this process, reached without a socket.
    locals: Mutex<HashMap<String, LocalEndpoint>>,
    shutdown: CancellationToken,
}

/// Remoting client, cheap to clone (clones share connections).
#[derive(Clone)]
pub struct RemotingClient {
    inner: Arc<ClientInner>,
}

impl RemotingClient {
    /// A client with no connection yet.
    pub fn new(config: ClientConfig) -> Self {
        let mut dispatcher = Dispatcher::new();
        if let Some(hook) = config.server_request_handler {
            dispatcher.set_default(hook);
        }
        RemotingClient {
            inner: Arc::new(ClientInner {
                connect_timeout: config.connect_timeout,
                tls: config.tls,
                credentials: config.credentials,
                serialize_type: config.serialize_type,
                ctx: ConnectionContext {
                    dispatcher: Arc::new(dispatcher),
                    tracker: TaskTracker::new(),
                    max_frame_size: config.max_frame_size,
                    // Requests come only from servers this client chose to connect to.
                    requests: Arc::new(RequestGauge::new(RequestLimits::unlimited())),
                },
                slots: Mutex::new(HashMap::new()),
                locals: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Sends `req` to a broker and waits up to `timeout` (connecting included) for the answer.
    pub async fn invoke(
        &self,
        addr: &BrokerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        self.invoke_at(addr.as_str(), req, timeout).await
    }

    /// Sends `req` to a broker as a oneway request (no answer).
    pub async fn invoke_oneway(
        &self,
        addr: &BrokerAddr,
        req: RemotingCommand,
    ) -> Result<(), RemotingError> {
        self.oneway_at(addr.as_str(), req).await
    }

    /// Refuses (RemotingError::NotANameServerRequest, no I/O) any code not in NAMESRV_REQUEST_CODES.
    pub async fn invoke_namesrv(
        &self,
        addr: &NameServerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        check_namesrv(&req)?;
        self.invoke_at(addr.as_str(), req, timeout).await
    }

    /// Oneway request to a NameServer; refuses codes a NameServer does not serve, like
    /// [`RemotingClient::invoke_namesrv`].
    pub async fn invoke_namesrv_oneway(
        &self,
        addr: &NameServerAddr,
        req: RemotingCommand,
    ) -> Result<(), RemotingError> {
        check_namesrv(&req)?;
        self.oneway_at(addr.as_str(), req).await
    }

    /// Requests to `addr` go to `server` in this process, without encoding or a socket (see
    /// `RemotingServer::local_endpoint`); a connection already open to
    /// `addr` is used until it closes.
    pub fn add_local(&self, addr: &str, server: LocalEndpoint) {
        self.inner.locals.lock().insert(addr.to_string(), server);
    }

    /// Closes every connection (pending requests fail) and waits for the connection tasks;
    /// later calls fail with `Shutdown`.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.slots.lock().clear();
        self.inner.ctx.tracker.close();
        self.inner.ctx.tracker.wait().await;
    }

    /// `req` in this client's header encoding, signed when this client has credentials.
    fn prepared(&self, mut req: RemotingCommand) -> RemotingCommand {
        if self.inner.serialize_type == SerializeType::RocketMq
            && crate::header::binary_code_version(&req).is_ok()
        {
            req.serialize_type = SerializeType::RocketMq;
        }
        if let Some(creds) = &self.inner.credentials {
            crate::acl::sign(&mut req, creds);
        }
        req
    }

    async fn invoke_at(
        &self,
        addr: &str,
        req: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let req = self.prepared(req);
        let deadline = Instant::now() + timeout;
        let conn = tokio::time::timeout_at(deadline, self.connection(addr))
            .await
            .map_err(|_| RemotingError::Timeout {
                addr: addr.to_string(),
                millis: millis(timeout),
            })??;
        let remaining = deadline.saturating_duration_since(Instant::now());
        conn.invoke(req, remaining).await.map_err(|e| match e {
            // Report the caller's timeout, not what was left of it after connecting.
            RemotingError::Timeout { .. } => RemotingError::Timeout {
                addr: addr.to_string(),
                millis: millis(timeout),
            },
            other => other,
        })
    }

    async fn oneway_at(&self, addr: &str, req: RemotingCommand) -> Result<(), RemotingError> {
        let req = self.prepared(req);
        self.connection(addr).await?.send_oneway(req).await
    }

    /// The live connection to `addr`, opening one when there is none or it has closed.
    async fn connection(&self, addr: &str) -> Result<Connection, RemotingError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(RemotingError::Shutdown);
        }
        let slot = self
            .inner
            .slots
            .lock()
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = self.connect(addr).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self, addr: &str) -> Result<Connection, RemotingError> {
        let local = self.inner.locals.lock().get(addr).cloned();
        if let Some(server) = local {
            if server.shutdown.is_cancelled() {
                return Err(RemotingError::ConnectionClosed(addr.to_string()));
            }
            let closed = self.inner.shutdown.child_token();
            return Ok(spawn_local_connection(&self.inner.ctx, &server, closed));
        }
        let limit = self.inner.connect_timeout;
        let deadline = Instant::now() + limit;
        let connected = tokio::select! {
            _ = self.inner.shutdown.cancelled() => return Err(RemotingError::Shutdown),
            connected = tokio::time::timeout_at(deadline, TcpStream::connect(addr)) => connected,
        };
        let stream = connected
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} ms", millis(limit)),
                ))
            })
            .map_err(|source| RemotingError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let remote = stream
            .peer_addr()
            .map_err(|source| RemotingError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        tracing::debug!(addr, %remote, "connected");
        set_nodelay(&stream, remote);
        let closed = self.inner.shutdown.child_token();
        let Some(tls) = &self.inner.tls else {
            return Ok(spawn_connection(
                stream,
                remote,
                closed,
                self.inner.ctx.clone(),
                None,
            ));
        };
        let handshake = tokio::select! {
            _ = self.inner.shutdown.cancelled() => return Err(RemotingError::Shutdown),
            handshake = tokio::time::timeout_at(
                deadline,
                tls.connect(addr, stream),
            ) => handshake,
        };
        let stream = handshake
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("TLS handshake not finished within {} ms", millis(limit)),
                ))
            })
            .map_err(|source| RemotingError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        tracing::debug!(addr, %remote, "TLS handshake done");
        Ok(spawn_connection(
            stream,
            remote,
            closed,
            self.inner.ctx.clone(),
            None,
        ))
    }
}

fn check_namesrv(req: &RemotingCommand) -> Result<(), RemotingError> {
    if is_namesrv_request(req.code) {
        Ok(())
    } else {
        Err(RemotingError::NotANameServerRequest(req.code))
    }
}
