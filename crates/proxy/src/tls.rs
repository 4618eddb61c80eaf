//! TLS on the gRPC port, upstream's `ProxyAndTlsProtocolNegotiator`: each accepted connection
//! goes through the remoting TLS acceptor ([`ServerTls::accept`]: `permissive` serves TLS and
//! plaintext on one port told apart by the first byte, `enforcing` closes plaintext ones) with
//! `h2` offered by ALPN, and the result is handed to tonic. Also the client side: a tonic
//! [`Channel`] over TLS, for `apogee bench --protocol grpc --tls` and tests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use remoting::tls::{ClientTls, ServerStream, ServerTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

/// The ALPN protocol of gRPC (HTTP/2 over TLS).
const H2: &[u8] = b"h2";

/// Connections accepted but not yet taken by the gRPC server.
const ACCEPTED_QUEUE: usize = 64;

/// A connection of the gRPC port, plaintext or TLS, as tonic serves it.
pub(crate) struct GrpcConn {
    stream: ServerStream,
    info: TcpConnectInfo,
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` until `stop`, with TCP_NODELAY (without it a small
/// response waits for the client's delayed ACK: tens of ms at p99), through `tls` when set,
/// and sends them to the returned receiver, which ends when accepting stops. The handshakes
/// run as tasks of `tasks`, so a slow client does not hold up others.
pub(crate) fn accept(
    listener: TcpListener,
    tls: Option<ServerTls>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> mpsc::Receiver<io::Result<GrpcConn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    let tls = tls.map(|t| t.with_alpn(&[H2]));
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "gRPC accept failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                    }
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
            }
            let info = TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(remote),
            };
            match &tls {
                None => {
                    let conn = GrpcConn {
                        stream: ServerStream::Plain(stream),
                        info,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (tls, tx, stop) = (tls.clone(), tx.clone(), stop.clone());
                    handshakes.spawn(async move {
                        let accepted = tokio::select! {
                            _ = stop.cancelled() => return,
                            accepted = tls.accept(stream, remote) => accepted,
                        };
                        if let Some(stream) = accepted {
                            let _ = tx.send(Ok(GrpcConn { stream, info })).await;
                        }
                    });
                }
            }
        }
    });
    rx
}

/// Connects `endpoint` (its settings; its URI names `addr`, `host:port`), over TLS with `tls`
/// (asking for `h2` by ALPN), or plaintext without.
pub async fn channel(
    endpoint: Endpoint,
    addr: &str,
    tls: Option<&ClientTls>,
) -> Result<Channel, tonic::transport::Error> {
    let Some(tls) = tls else {
        return endpoint.connect().await;
    };
    let tls = tls.with_alpn(&[H2]);
    let addr = addr.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, addr) = (tls.clone(), addr.clone());
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(&addr, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await
}
