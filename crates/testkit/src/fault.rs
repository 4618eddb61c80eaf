//! A loopback TCP fault proxy: a test puts it between two components (broker and NameServer,
//! slave and master HA port, client and broker) by handing one side the proxy's address instead
//! of the other's, then switches its [`FaultMode`] while traffic flows to inject a partition
//! that is really on the wire.
//!
//! Each accepted connection gets its own upstream connection to the target and one task that
//! pumps both directions. The pumps read the mode before every read and again before writing
//! each chunk, so a switch applies to the next chunk on every live connection. A connection
//! ends as a whole when either side closes (no half-close is forwarded; the remoting protocol
//! never half-closes) or when the mode becomes [`FaultMode::Drop`] or [`FaultMode::Reset`].
//! Dropping the proxy closes its listener and every connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to traffic, switchable at run time with [`FaultProxy::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward every byte both ways.
    Pass,
    /// Forward, but hold each chunk (one read, in either direction) this long first.
    Delay(Duration),
    /// Accept and keep connections but forward nothing either way: bytes wait unread in the
    /// kernel buffers, as packets are lost and retransmitted on a real partition, and flow
    /// again when the mode is switched back to [`FaultMode::Pass`].
    Blackhole,
    /// Close every existing connection (FIN to both sides) and each new one at once.
    Drop,
    /// Close every existing connection and each new one with a TCP RST (`SO_LINGER` 0, which does not block on close).
    Reset,
    /// Forward client -> target, read and discard target -> client: the client's requests
    /// arrive, their answers never do.
    HalfOpen,
}

/// A proxy listening on `127.0.0.1:0` that forwards each connection to one target.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<FaultMode>,
    live: watch::Receiver<usize>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds an ephemeral loopback port and starts forwarding to `target` in
    /// [`FaultMode::Pass`]. Must be called inside a tokio runtime; the proxy's tasks run on it.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        FaultProxy::start_on(TcpListener::bind("127.0.0.1:0").await?, target)
    }

    /// [`FaultProxy::start`] on a listener the caller bound, for a target whose address
    /// depends on the proxy's own port (a server that advertises the proxy's address).
    pub fn start_on(listener: TcpListener, target: SocketAddr) -> io::Result<FaultProxy> {
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(FaultMode::Pass);
        let (live_tx, live) = watch::channel(0usize);
        let accept = tokio::spawn(accept_loop(listener, target, mode_rx, live_tx));
        Ok(FaultProxy {
            addr,
            mode,
            live,
            accept,
        })
    }

    /// The address to give the side that connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; live connections apply it to their next chunk.
    pub fn set_mode(&self, mode: FaultMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.mode.borrow()
    }

    /// Connections forwarded right now (accepted and upstream connected, not yet closed).
    pub fn connections(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until `pred(connections())` holds; `false` when `timeout` passes first.
    pub async fn wait_connections(&self, timeout: Duration, pred: impl Fn(usize) -> bool) -> bool {
        let mut live = self.live.clone();
        tokio::time::timeout(timeout, live.wait_for(|n| pred(*n)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet: aborting it ends them all.
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<FaultMode>,
    live: watch::Sender<usize>,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((client, _)) = accepted else { continue };
        match *mode.borrow() {
            FaultMode::Drop => {
                drop(client);
                continue;
            }
            FaultMode::Reset => {
                let _ = client.set_zero_linger();
                drop(client);
                continue;
            }
            _ => {}
        }
        let (mode, live) = (mode.clone(), live.clone());
        conns.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            live.send_modify(|n| *n += 1);
            connection(&client, &server, mode).await;
            live.send_modify(|n| *n -= 1);
        });
    }
}

/// Pumps one connection until a side closes or the mode closes it.
async fn connection(client: &TcpStream, server: &TcpStream, mode: watch::Receiver<FaultMode>) {
    let mut closing = mode.clone();
    let ended_by_mode = tokio::select! {
        _ = pump(client, server, Direction::ToTarget, mode.clone()) => false,
        _ = pump(server, client, Direction::ToClient, mode) => false,
        r = closing.wait_for(|m| matches!(m, FaultMode::Drop | FaultMode::Reset)) => r.is_ok(),
    };
    if ended_by_mode && *closing.borrow() == FaultMode::Reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    // Both streams are dropped by the caller's task: FIN, or RST with linger 0.
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToTarget,
    ToClient,
}

/// Copies `from` -> `to` under the mode; returns on EOF or an error of either side.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    dir: Direction,
    mut mode: watch::Receiver<FaultMode>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Blackhole: do not read, so the bytes wait in the kernel until the mode changes.
        if *mode.borrow_and_update() == FaultMode::Blackhole {
            if mode.changed().await.is_err() {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            r = from.readable() => r?,
            r = mode.changed() => { if r.is_err() { return Ok(()) } continue }
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // The chunk is read; what happens to it is decided by the mode now.
        let m = *mode.borrow();
        match m {
            FaultMode::HalfOpen if dir == Direction::ToClient => continue,
            FaultMode::Delay(d) => tokio::time::sleep(d).await,
            FaultMode::Blackhole => {
                // Switched while this chunk was read: hold it until the partition heals.
                let _ = mode.wait_for(|m| *m != FaultMode::Blackhole).await;
            }
            _ => {}
        }
        write_all(to, &buf[..n]).await?;
    }
}

async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each mode over real loopback TCP: an echo target that also reports what it received.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    const BOUND: Duration = Duration::from_secs(5);
    /// How long a test waits to see that nothing arrives (an absence cannot be awaited).
    const QUIET: Duration = Duration::from_millis(300);

    /// An echo server; every chunk it receives is also sent on the channel.
    async fn echo_target() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let _ = tx.send(buf[..n].to_vec());
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(BOUND, s.read_exact(&mut buf))
            .await
            .expect("read within bound")
            .expect("read");
        buf
    }

    async fn setup() -> (FaultProxy, TcpStream, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (target, rx) = echo_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        assert_eq!(read_exact(&mut c, 5).await, b"hello");
        assert!(proxy.wait_connections(BOUND, |n| n == 1).await);
        (proxy, c, rx)
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let (proxy, mut c, mut rx) = setup().await;
        assert_eq!(proxy.mode(), FaultMode::Pass);
        assert_eq!(rx.recv().await.unwrap(), b"hello");
        c.write_all(b"again").await.unwrap();
        assert_eq!(read_exact(&mut c, 5).await, b"again");
    }

    #[tokio::test]
    async fn delay_holds_each_chunk() {
        let (proxy, mut c, _rx) = setup().await;
        let d = Duration::from_millis(150);
        proxy.set_mode(FaultMode::Delay(d));
        let start = std::time::Instant::now();
        c.write_all(b"slow").await.unwrap();
        assert_eq!(read_exact(&mut c, 4).await, b"slow");
        // One delay on the way there, one on the way back.
        assert!(start.elapsed() >= 2 * d, "round trip {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn blackhole_forwards_nothing_then_heals() {
        let (proxy, mut c, mut rx) = setup().await;
        assert_eq!(rx.recv().await.unwrap(), b"hello");
        proxy.set_mode(FaultMode::Blackhole);
        c.write_all(b"lost?").await.unwrap();
        let mut buf = [0u8; 8];
        assert!(tokio::time::timeout(QUIET, c.read(&mut buf)).await.is_err());
        assert!(
            rx.try_recv().is_err(),
            "target got bytes through a blackhole"
        );
        assert_eq!(proxy.connections(), 1, "the connection is kept");
        proxy.set_mode(FaultMode::Pass);
        assert_eq!(read_exact(&mut c, 5).await, b"lost?");
    }

    #[tokio::test]
    async fn drop_closes_existing_and_new_connections() {
        let (proxy, mut c, _rx) = setup().await;
        proxy.set_mode(FaultMode::Drop);
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(BOUND, c.read(&mut buf)).await.unwrap();
        assert_eq!(n.unwrap(), 0, "existing connection closed with FIN");
        assert!(proxy.wait_connections(BOUND, |n| n == 0).await);
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let n = tokio::time::timeout(BOUND, c2.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(n.unwrap(), 0, "new connection closed at once");
    }

    #[tokio::test]
    async fn reset_sends_rst() {
        let (proxy, mut c, _rx) = setup().await;
        proxy.set_mode(FaultMode::Reset);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(BOUND, c.read(&mut buf)).await.unwrap();
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let r = tokio::time::timeout(BOUND, c2.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionReset));
    }

    #[tokio::test]
    async fn half_open_delivers_requests_but_no_answers() {
        let (proxy, mut c, mut rx) = setup().await;
        assert_eq!(rx.recv().await.unwrap(), b"hello");
        proxy.set_mode(FaultMode::HalfOpen);
        c.write_all(b"req").await.unwrap();
        let got = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
        assert_eq!(got.unwrap(), b"req", "the request reached the target");
        let mut buf = [0u8; 8];
        assert!(tokio::time::timeout(QUIET, c.read(&mut buf)).await.is_err());
        assert_eq!(proxy.connections(), 1, "the connection is kept");
    }
}
