//! The master side of replication: a listener on the HA port and, per slave connection, a
//! reader of the slave's offset reports (they release `SYNC_MASTER` waiters) and a writer
//! that streams CommitLog bytes from the offset the slave first reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{HaError, FRAME_HEADER_LEN};
use crate::context::BrokerContext;

/// Longest pause between two looks at the CommitLog end when no write woke the writer.
const POLL: Duration = Duration::from_millis(200);

/// Binds the HA port: `haListenPort`, else `listenPort + 1`, else (listen port 0) any port.
pub(crate) async fn bind(state: &BrokerContext) -> Result<TcpListener, std::io::Error> {
    let (ip, port) = {
        let c = state.config();
        let port = match c.ha_listen_port {
            Some(p) => p,
            None if c.listen_port == 0 => 0,
            None => state.store_host().port().saturating_add(1),
        };
        (c.bind_address, port)
    };
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    let _ = state.ha.listen_port.set(listener.local_addr()?.port());
    Ok(listener)
}

/// Accepts slaves until the broker stops.
pub(crate) async fn run(state: Arc<BrokerContext>, listener: TcpListener) {
    let mut stop = state.stop_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::info!(%peer, "slave connected for replication");
                let state2 = state.clone();
                state.tasks.spawn(async move {
                    let r = serve(&state2, stream, peer).await;
                    match r {
                        Ok(()) => tracing::info!(%peer, "replication connection closed"),
                        Err(e) => tracing::warn!(%peer, error = %e, "replication connection ended"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "HA accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

fn timeouts(state: &BrokerContext) -> (Duration, Duration, usize) {
    let c = state.config();
    (
        Duration::from_millis(c.ha_send_heartbeat_interval.max(10)),
        Duration::from_millis(c.ha_housekeeping_interval.max(100)),
        c.ha_transfer_batch_size.max(1024),
    )
}

async fn read_report(rd: &mut OwnedReadHalf, silent: Duration) -> Result<i64, HaError> {
    let mut buf = [0u8; 8];
    match tokio::time::timeout(silent, rd.read_exact(&mut buf)).await {
        Ok(r) => {
            r?;
            Ok(i64::from_be_bytes(buf))
        }
        Err(_) => Err(HaError::Timeout),
    }
}

/// Serves one slave connection.
async fn serve(
    state: &Arc<BrokerContext>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(), HaError> {
    stream.set_nodelay(true)?;
    let (_, silent, _) = timeouts(state);
    let controller_mode = state.config().enable_controller_mode;
    let role_epoch = state.ha.role_epoch.subscribe();
    let (mut rd, mut wr) = stream.into_split();
    let (broker_id, learner) = if controller_mode {
        let id = read_report(&mut rd, silent).await?;
        let mut flags = [0u8; 1];
        tokio::time::timeout(silent, rd.read_exact(&mut flags))
            .await
            .map_err(|_| HaError::Timeout)??;
        if state.store.is_slave() {
            return Err(HaError::Protocol(format!(
                "replica {id} connected, but this broker is not the master"
            )));
        }
        wr.write_all(&epoch_table(state)).await?;
        (Some(id), flags[0] & super::HANDSHAKE_ASYNC_LEARNER != 0)
    } else {
        (None, false)
    };
    let start = read_report(&mut rd, silent).await?;
    if start < 0 {
        return Err(HaError::Protocol(format!("negative slave offset {start}")));
    }
    let id = state
        .ha
        .acks
        .slave_connected(peer.to_string(), broker_id, learner);
    let r = serve_slave(state, rd, wr, id, start, role_epoch).await;
    state.ha.acks.slave_disconnected(id);
    r
}

/// The controller-mode handshake answer: the epoch entries and the CommitLog end (see the
/// table in the module above).
fn epoch_table(state: &BrokerContext) -> Vec<u8> {
    let entries = state
        .ha
        .epochs
        .lock()
        .as_ref()
        .map(|f| f.entries().to_vec())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(12 + entries.len() * 12);
    out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
    for e in &entries {
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.start_offset.to_be_bytes());
    }
    out.extend_from_slice(&state.store.commit_log_max_offset().to_be_bytes());
    out
}

async fn serve_slave(
    state: &Arc<BrokerContext>,
    mut rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    id: u64,
    start: i64,
    mut role_epoch: tokio::sync::watch::Receiver<u64>,
) -> Result<(), HaError> {
    let (_, silent, _) = timeouts(state);
    // The master's CommitLog end when data was last sent, and when: a report reaching it
    // means the slave had caught up at that time.
    let sent = parking_lot::Mutex::new((start, Instant::now()));
    state.ha.acks.ack(id, start, Some(*sent.lock()));
    let mut stop = state.stop_signal();
    let reader = async {
        loop {
            let offset = read_report(&mut rd, silent).await?;
            let mark = *sent.lock();
            state.ha.acks.ack(id, offset, Some(mark));
            if offset >= mark.0 {
                // A slave outside the SyncStateSet may have caught up.
                state.ha.replicas_wake.notify_one();
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = stream_log(state, wr, start, &sent) => r,
        _ = stop.changed() => Ok(()),
        _ = role_epoch.changed() => Ok(()),
    }
}

/// Writes CommitLog bytes from `next` on, and a heartbeat frame when idle.
async fn stream_log(
    state: &BrokerContext,
    mut wr: OwnedWriteHalf,
    mut next: i64,
    sent: &parking_lot::Mutex<(i64, Instant)>,
) -> Result<(), HaError> {
    let (heartbeat, _, batch) = timeouts(state);
    let mut written = state.ha.written.subscribe();
    let mut last_write = Instant::now();
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + batch);
    loop {
        if let Some(chunk) = state.store.read_commit_log(next, batch) {
            frame.clear();
            frame.extend_from_slice(&next.to_be_bytes());
            frame.extend_from_slice(&(chunk.len() as i32).to_be_bytes());
            frame.extend_from_slice(&chunk);
            wr.write_all(&frame).await?;
            next += chunk.len() as i64;
            last_write = Instant::now();
            *sent.lock() = (state.store.commit_log_max_offset(), last_write);
            continue;
        }
        if last_write.elapsed() >= heartbeat {
            let mut hb = [0u8; FRAME_HEADER_LEN];
            hb[..8].copy_from_slice(&next.to_be_bytes());
            wr.write_all(&hb).await?;
            last_write = Instant::now();
            *sent.lock() = (next, last_write);
        }
        let idle = heartbeat.saturating_sub(last_write.elapsed()).min(POLL);
        tokio::select! {
            _ = written.changed() => {}
            _ = tokio::time::sleep(idle) => {}
        }
    }
}
