//! Async TCP server.
//!
//! [`RemotingServer`] accepts connections (at most `max_connections` at a time) and runs each
//! one with the shared connection machinery of [`crate::connection`] (reader and writer tasks,
//! one task per request, dispatch by code through a [`Dispatcher`]).
//!
//! [`RemotingServer::shutdown`] stops accepting, closes every connection and waits for every
//! task the server spawned, handler tasks included.
//!
//! Requests in flight are bounded per connection and per server ([`RequestLimits`]; see
//! [`crate::connection`] for what happens beyond a bound); [`RemotingServer::request_stats`]
//! reads the counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::DEFAULT_MAX_FRAME_SIZE;
use crate::connection::{set_nodelay, spawn_connection, ConnectionContext, RequestGauge};
use crate::error::RemotingError;
use crate::tls::{ServerStream, ServerTls, TlsMode};

/// Re-exported from [`crate::connection`], where the server and the client share them.
pub use crate::connection::{
    Connection, ConnectionListener, Dispatcher, HandlerFuture, LocalEndpoint, RequestHandler,
    RequestLimits, RequestObserver, RequestStats, OVERLOAD_REMARK,
};

/// Listening address and limits of a [`RemotingServer`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest accepted frame (`total` field); a larger one closes the connection.
    pub max_frame_size: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Bounds on requests in flight, per connection and in total.
    pub limits: RequestLimits,
    /// TLS (`permissive` or `enforcing`); `None` serves plaintext only (`disabled`).
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_connections: 10_000,
            limits: RequestLimits::default(),
            tls: None,
        }
    }
}

/// A running server. Dropping it stops accepting and closes its connections without waiting;
/// [`RemotingServer::shutdown`] also waits for every task to end.
pub struct RemotingServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    requests: Arc<RequestGauge>,
    /// `None` once shutdown has awaited it.
    acceptor: Option<JoinHandle<()>>,
    /// What in-process connections need (see [`RemotingServer::local_endpoint`]).
    ctx: ConnectionContext,
}

impl RemotingServer {
    /// Binds `config.listen` and starts accepting. Several servers may share one
    /// dispatcher (pass an `Arc<Dispatcher>`), e.g. a broker's main and fast ports.
    pub async fn start(
        config: ServerConfig,
        dispatcher: impl Into<Arc<Dispatcher>>,
    ) -> Result<RemotingServer, RemotingError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| RemotingError::Io {
                    addr: config.listen.to_string(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| RemotingError::Io {
            addr: config.listen.to_string(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let requests = Arc::new(RequestGauge::new(config.limits));
        let ctx = ConnectionContext {
            dispatcher: dispatcher.into(),
            tracker: tracker.clone(),
            max_frame_size: config.max_frame_size,
            requests: Arc::clone(&requests),
        };
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let tls_mode = config
            .tls
            .as_ref()
            .map_or(TlsMode::Disabled, ServerTls::mode);
        let acceptor = tokio::spawn(accept_loop(
            listener,
            limit,
            shutdown.clone(),
            ctx.clone(),
            config.tls,
        ));
        tracing::info!(%local_addr, tls = ?tls_mode, "remoting server listening");
        Ok(RemotingServer {
            local_addr,
            shutdown,
            tracker,
            requests,
            acceptor: Some(acceptor),
            ctx,
        })
    }

    /// This server for a `RemotingClient` in the same process
    /// (`RemotingClient::add_local`): its requests skip encoding and the
    /// socket and reach the same handlers. Connections made through it close with the server.
    pub fn local_endpoint(&self) -> LocalEndpoint {
        LocalEndpoint {
            ctx: self.ctx.clone(),
            addr: self.local_addr,
            shutdown: self.shutdown.clone(),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Requests in flight now and rejected so far, over all connections.
    pub fn request_stats(&self) -> RequestStats {
        self.requests.stats()
    }

    /// Stop accepting, close every connection, await every task (connection and handler tasks).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(acceptor) = self.acceptor.take() {
            if let Err(e) = acceptor.await {
                tracing::error!("accept loop failed: {e}");
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
        tracing::info!(local_addr = %self.local_addr, "remoting server stopped");
    }
}

impl Drop for RemotingServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    limit: Arc<Semaphore>,
    shutdown: CancellationToken,
    ctx: ConnectionContext,
    tls: Option<ServerTls>,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                tracing::debug!(%remote, "connection accepted");
                set_nodelay(&stream, remote);
                let closed = shutdown.child_token();
                match &tls {
                    None => {
                        spawn_connection(stream, remote, closed, ctx.clone(), Some(permit));
                    }
                    Some(tls) => {
                        let task =
                            classify(stream, remote, closed, ctx.clone(), tls.clone(), permit);
                        ctx.tracker.spawn(task);
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// The task that tells a TLS connection from a plaintext one and starts it (see
/// [`ServerTls::accept`]). Ends early when the server shuts down.
async fn classify(
    stream: TcpStream,
    remote: SocketAddr,
    closed: CancellationToken,
    ctx: ConnectionContext,
    tls: ServerTls,
    permit: OwnedSemaphorePermit,
) {
    let accepted = tokio::select! {
        _ = closed.cancelled() => return,
        accepted = tls.accept(stream, remote) => accepted,
    };
    match accepted {
        Some(ServerStream::Plain(stream)) => {
            spawn_connection(stream, remote, closed, ctx, Some(permit));
        }
        Some(ServerStream::Tls(stream)) => {
            spawn_connection(*stream, remote, closed, ctx, Some(permit));
        }
        None => {}
    }
}
