//! The slave side of replication: connects to the master's HA address (from `haMasterAddress`
//! or the registration answer), reports its CommitLog end, and appends every frame it
//! receives verbatim (in controller mode, after its replica id). Reconnects (after a short
//! pause) when the connection ends or the master's address changes. Keeps [`HaState::link_up`](super::HaState) current.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HaError, FRAME_HEADER_LEN, MAX_FRAME_BODY};
use crate::context::BrokerContext;

/// Pause before reconnecting to the master.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Replicates from the master until the broker stops.
pub(crate) async fn run(state: Arc<BrokerContext>) {
    let mut stop = state.stop_signal();
    let mut master = state.ha.master_ha_addr.subscribe();
    loop {
        let addr = master.borrow_and_update().clone();
        match addr {
            None => {
                tokio::select! {
                    _ = master.changed() => continue,
                    _ = stop.changed() => return,
                }
            }
            Some(addr) => {
                let changed = tokio::select! {
                    r = replicate(&state, &addr) => {
                        if let Err(e) = r {
                            tracing::info!(master = %addr, error = %e, "replication interrupted");
                        }
                        false
                    }
                    _ = master.changed() => true,
                    _ = stop.changed() => return,
                };
                if state.ha.link_up.swap(false, Ordering::AcqRel) {
                    state.ha.master_back.store(false, Ordering::Release);
                }
                if changed {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                    _ = master.changed() => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

async fn replicate(state: &BrokerContext, addr: &str) -> Result<(), HaError> {
    let (heartbeat, silent) = {
        let c = state.config();
        (
            Duration::from_millis(c.ha_send_heartbeat_interval.max(10)),
            Duration::from_millis(c.ha_housekeeping_interval.max(100)),
        )
    };
    // Held while this connection may append (see `HaState::replica_link`).
    let _link = state.ha.replica_link.lock().await;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| HaError::Timeout)??;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    if state.config().enable_controller_mode {
        let id = state
            .ha
            .local_id()
            .ok_or_else(|| HaError::Protocol("no replica id from the controllers yet".into()))?;
        wr.write_all(&id.to_be_bytes()).await?;
    }
    state.ha.link_up.store(true, Ordering::Release);
    let mut reported = state.store.commit_log_max_offset();
    wr.write_all(&reported.to_be_bytes()).await?;
    tracing::info!(master = %addr, offset = reported, "replicating from master");
    let mut last_report = Instant::now();
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut body = Vec::new();
    loop {
        tokio::time::timeout(silent, rd.read_exact(&mut header))
            .await
            .map_err(|_| HaError::Timeout)??;
        let offset = i64::from_be_bytes(header[..8].try_into().unwrap_or_default());
        let size = i32::from_be_bytes(header[8..].try_into().unwrap_or_default());
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_FRAME_BODY)
            .ok_or_else(|| HaError::Protocol(format!("bad frame size {size}")))?;
        if size > 0 {
            body.resize(size, 0);
            rd.read_exact(&mut body).await?;
            let local = state.store.commit_log_max_offset();
            if offset != local {
                return Err(HaError::Protocol(format!(
                    "master sent offset {offset}, slave CommitLog ends at {local}"
                )));
            }
            state.store.append_replicated(offset, &body)?;
        }
        let now = state.store.commit_log_max_offset();
        if now != reported || last_report.elapsed() >= heartbeat {
            wr.write_all(&now.to_be_bytes()).await?;
            reported = now;
            last_report = Instant::now();
        }
    }
}
