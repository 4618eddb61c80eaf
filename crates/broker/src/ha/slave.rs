//! The slave side of replication: connects to the master's HA address (from `haMasterAddress`
//! or the registration answer), reports its CommitLog end, and appends every frame it
//! receives verbatim (in controller mode, after its replica id). Reconnects (after a short
//! pause) when the connection ends or the master's address changes. Keeps [`HaState::link_up`](super::HaState) current.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::epoch::{consistent_point, EpochEntry};
use super::{HaError, FRAME_HEADER_LEN, MAX_EPOCH_ENTRIES, MAX_FRAME_BODY};
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
    // Controller mode: the master's epochs not yet in this broker's epoch file.
    let mut to_record: Vec<EpochEntry> = Vec::new();
    if state.config().enable_controller_mode {
        let id = state
            .ha
            .local_id()
            .ok_or_else(|| HaError::Protocol("no replica id from the controllers yet".into()))?;
        let flags = if state.config().async_learner {
            super::HANDSHAKE_ASYNC_LEARNER
        } else {
            0
        };
        let mut hello = [0u8; 9];
        hello[..8].copy_from_slice(&id.to_be_bytes());
        hello[8] = flags;
        wr.write_all(&hello).await?;
        let (master, master_end) = read_epoch_table(&mut rd, silent).await?;
        to_record = agree_with_master(state, &master, master_end).await?;
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
            let end = state.store.append_replicated(offset, &body)?;
            if to_record.first().is_some_and(|e| e.start_offset < end) {
                record_epochs(state, &mut to_record, end)?;
            }
        }
        let now = state.store.commit_log_max_offset();
        if now != reported || last_report.elapsed() >= heartbeat {
            wr.write_all(&now.to_be_bytes()).await?;
            reported = now;
            last_report = Instant::now();
        }
    }
}

/// Reads the master's epoch entries and CommitLog end (controller-mode handshake).
async fn read_epoch_table(
    rd: &mut OwnedReadHalf,
    silent: Duration,
) -> Result<(Vec<EpochEntry>, i64), HaError> {
    let read = async {
        let mut n = [0u8; 4];
        rd.read_exact(&mut n).await?;
        let n = i32::from_be_bytes(n);
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_EPOCH_ENTRIES)
            .ok_or_else(|| HaError::Protocol(format!("bad epoch entry count {n}")))?;
        let mut raw = vec![0u8; n * 12 + 8];
        rd.read_exact(&mut raw).await?;
        let mut entries = Vec::with_capacity(n);
        for chunk in raw[..n * 12].chunks_exact(12) {
            let (epoch, start) = chunk.split_at(4);
            entries.push(EpochEntry {
                epoch: i32::from_be_bytes(epoch.try_into().unwrap_or_default()),
                start_offset: i64::from_be_bytes(start.try_into().unwrap_or_default()),
            });
        }
        let end = i64::from_be_bytes(raw[n * 12..].try_into().unwrap_or_default());
        Ok::<_, HaError>((entries, end))
    };
    tokio::time::timeout(silent, read)
        .await
        .map_err(|_| HaError::Timeout)?
}

/// Cuts this slave's CommitLog to where it agrees with the master, takes the master's
/// entries for what it holds, and returns the master's entries it has no data of yet.
async fn agree_with_master(
    state: &BrokerContext,
    master: &[EpochEntry],
    master_end: i64,
) -> Result<Vec<EpochEntry>, HaError> {
    let local_end = state.store.commit_log_max_offset();
    let local: Vec<EpochEntry> = state
        .ha
        .epochs
        .lock()
        .as_ref()
        .map(|f| f.entries().to_vec())
        .unwrap_or_default();
    let point = consistent_point(&local, local_end, master, master_end).ok_or_else(|| {
        HaError::Protocol(format!(
            "no epoch in common with the master (local {local:?} up to {local_end}, master \
             {master:?} up to {master_end}): this store cannot follow it; move it away to \
             replicate from scratch"
        ))
    })?;
    if point < local_end {
        tracing::warn!(
            local_end,
            point,
            cut = local_end - point,
            "this broker's CommitLog diverged from its master's: cutting it"
        );
        let store = state.store.clone();
        tokio::task::spawn_blocking(move || store.truncate_replicated(point))
            .await
            .map_err(|e| HaError::Protocol(format!("truncation task: {e}")))??;
    }
    let end = state.store.commit_log_max_offset();
    let (held, rest): (Vec<EpochEntry>, Vec<EpochEntry>) =
        master.iter().partition(|e| e.start_offset < end);
    if let Some(f) = state.ha.epochs.lock().as_mut() {
        f.replace(held)
            .map_err(|e| HaError::Protocol(e.to_string()))?;
    }
    Ok(rest)
}

/// Records the master's epochs whose first data this slave now has (its CommitLog reaches
/// past their start).
fn record_epochs(
    state: &BrokerContext,
    to_record: &mut Vec<EpochEntry>,
    end: i64,
) -> Result<(), HaError> {
    let mut guard = state.ha.epochs.lock();
    while let Some(e) = to_record.first().copied().filter(|e| e.start_offset < end) {
        if let Some(f) = guard.as_mut() {
            f.append(e.epoch, e.start_offset)
                .map_err(|err| HaError::Protocol(err.to_string()))?;
        }
        to_record.remove(0);
    }
    Ok(())
}
