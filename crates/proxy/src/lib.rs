//! The RocketMQ 5.x gRPC endpoint (upstream's proxy): `apache.rocketmq.v2.MessagingService`
//! served with `tonic`, each call turned into remoting requests to the NameServers and brokers
//! through the client's [`ClientApi`]. The proxy keeps no state of its own (routes are asked for
//! per call, receipt handles carry what an ack needs, transaction ids what ending a
//! transaction needs), so any number of instances can stand behind one address. The one thing
//! an instance holds is its clients' Telemetry streams: a broker's transaction check-back goes
//! to the instance whose producer heartbeat it has, which passes it to one of its producers
//! (`transaction`).

mod config;
mod convert;
mod receipt;
mod service;
mod status;
mod tls;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use client::api::ClientApi;
use proto::v2::messaging_service_server::MessagingServiceServer;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::server::LocalEndpoint;
use remoting::tls::{ServerTls, TlsError};
use remoting::SerializeType;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::transaction::{heartbeat_loop, CheckHandler, Producers};

pub use config::{parse_namesrv_addr, ConfigError, ProxyConfig};
pub use tls::channel;

/// HTTP/2 flow-control window of each gRPC connection and stream, in bytes.
const HTTP2_WINDOW: u32 = 4 * 1024 * 1024;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("gRPC port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS of the gRPC port: {0}")]
    Tls(#[from] TlsError),
}

/// A running proxy; [`Proxy::shutdown`] stops it.
pub struct Proxy {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// The heartbeat task and the Telemetry stream readers.
    tasks: TaskTracker,
    remoting: RemotingClient,
}

impl Proxy {
    /// Binds `grpcServerPort` on `config.bind_address` and serves until shut down, with TLS
    /// as `config.tls` says (the certificate is read, or generated, before binding).
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        Self::start_with_local(config, Vec::new()).await
    }

    /// [`Proxy::start`] for upstream's local mode: requests to each `(address, endpoint)` of
    /// `local` (a broker in this process, as its route names it) reach its handlers without
    /// encoding or a socket; other brokers are reached over TCP as usual.
    pub async fn start_with_local(
        config: ProxyConfig,
        local: Vec<(String, LocalEndpoint)>,
    ) -> Result<Proxy, ProxyError> {
        let tls = ServerTls::new(&config.tls)?;
        let addr = SocketAddr::new(config.bind_address, config.grpc_server_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let producers = Arc::new(Producers::default());
        let remoting = RemotingClient::new(ClientConfig {
            server_request_handler: Some(Arc::new(CheckHandler {
                producers: producers.clone(),
            })),
            // Binary headers where the code allows: cheaper for both ends than JSON.
            serialize_type: SerializeType::RocketMq,
            ..Default::default()
        });
        for (addr, endpoint) in local {
            remoting.add_local(&addr, endpoint);
        }
        let api = Arc::new(ClientApi::new(
            Arc::new(remoting.clone()),
            config.namesrv_addr.clone(),
            Duration::from_secs(3),
        ));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeat_loop(api.clone(), producers.clone(), stop.clone()));
        let svc = service::Messaging::new(api, local_addr, producers, stop.clone(), tasks.clone());
        let stopped = stop.clone();
        let incoming = ReceiverStream::new(tls::accept(listener, tls, stop.clone(), &tasks));
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                // Room for many small calls in flight on one connection (h2's default
                // connection window is 64 KiB).
                .initial_connection_window_size(Some(HTTP2_WINDOW))
                .initial_stream_window_size(Some(HTTP2_WINDOW))
                .add_service(MessagingServiceServer::new(svc))
                .serve_with_incoming_shutdown(incoming, async move {
                    stopped.cancelled().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        });
        tracing::info!(addr = %local_addr, tls = ?config.tls.mode, "gRPC proxy listening");
        Ok(Proxy {
            local_addr,
            stop,
            task,
            tasks,
            remoting,
        })
    }

    /// The bound address (the port when `grpcServerPort` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends the Telemetry streams, lets calls in progress finish, closes the
    /// broker connections.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.task.await;
        self.remoting.shutdown().await;
    }
}
