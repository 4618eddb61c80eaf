//! The checkpoint file, the abort marker and the directory lock, all in `storePathRootDir`.
//!
//! `checkpoint` is one 4 KiB page. The first 40 bytes keep upstream's layout; Apogee adds the
//! offsets recovery trusts, guarded by a CRC so a torn checkpoint write is detected:
//!
//! | offset | size | field                                                                 |
//! |--------|------|-----------------------------------------------------------------------|
//! | 0      | 8    | physicMsgTimestamp: store time of the last flushed CommitLog record   |
//! | 8      | 8    | logicsMsgTimestamp: store time of the last record safe in ConsumeQueues |
//! | 16     | 8    | indexMsgTimestamp: store time of the last record safe in the Index    |
//! | 24     | 8    | masterFlushedOffset (upstream 5.x, HA; 0 here)                         |
//! | 32     | 8    | confirmPhyOffset (upstream 5.x; 0 here)                                |
//! | 40     | 8    | magic `APOGEE01`                                                      |
//! | 48     | 8    | CommitLog flushed offset: every record below is on disk               |
//! | 56     | 8    | ConsumeQueue safe offset: units of every record below are on disk     |
//! | 64     | 8    | Index safe offset: entries of every record below are on disk          |
//! | 72     | 4    | CRC-32 of bytes 0..72                                                 |
//!
//! `abort` exists while the store is open: finding it at start means the last run crashed.
//! `lock` is held with `flock` so two processes never open one store.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

const MAGIC: &[u8; 8] = b"APOGEE01";
const FILE_SIZE: usize = 4096;
const CRC_AT: usize = 72;

/// Values kept in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub(crate) physic_msg_timestamp: i64,
    pub(crate) logics_msg_timestamp: i64,
    pub(crate) index_msg_timestamp: i64,
    pub(crate) commit_log_flushed: u64,
    pub(crate) consume_queue_safe: u64,
    pub(crate) index_safe: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; FILE_SIZE] {
        let mut b = [0u8; FILE_SIZE];
        b[0..8].copy_from_slice(&self.physic_msg_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.logics_msg_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.index_msg_timestamp.to_be_bytes());
        b[40..48].copy_from_slice(MAGIC);
        b[48..56].copy_from_slice(&self.commit_log_flushed.to_be_bytes());
        b[56..64].copy_from_slice(&self.consume_queue_safe.to_be_bytes());
        b[64..72].copy_from_slice(&self.index_safe.to_be_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() < CRC_AT + 4 || &b[40..48] != MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes(b[CRC_AT..CRC_AT + 4].try_into().ok()?);
        if crc != crc32fast::hash(&b[..CRC_AT]) {
            return None;
        }
        let i =
            |at: usize| -> Option<i64> { Some(i64::from_be_bytes(b[at..at + 8].try_into().ok()?)) };
        Some(Checkpoint {
            physic_msg_timestamp: i(0)?,
            logics_msg_timestamp: i(8)?,
            index_msg_timestamp: i(16)?,
            commit_log_flushed: i(48)? as u64,
            consume_queue_safe: i(56)? as u64,
            index_safe: i(64)? as u64,
        })
    }
}

/// The checkpoint file.
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: File,
}

impl CheckpointFile {
    /// Opens the checkpoint; returns the stored values when the file holds a valid one.
    pub(crate) fn open(root: &Path) -> Result<(CheckpointFile, Option<Checkpoint>)> {
        let path = root.join("checkpoint");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        let mut buf = vec![0u8; FILE_SIZE];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| StoreError::io(&path, e))?;
        let cp = Checkpoint::decode(&buf[..n]);
        if cp.is_none() && n > 0 {
            tracing::warn!(file = %path.display(), "checkpoint unreadable (torn or foreign); recovering from the start of the CommitLog");
        }
        Ok((CheckpointFile { path, file }, cp))
    }

    /// Writes and syncs `cp`.
    pub(crate) fn write(&self, cp: &Checkpoint) -> Result<()> {
        self.file
            .write_all_at(&cp.encode(), 0)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| StoreError::io(&self.path, e))
    }
}

/// Whether the abort marker exists (the previous run did not shut down cleanly).
pub(crate) fn abort_marker_exists(root: &Path) -> bool {
    root.join("abort").exists()
}

/// Creates the abort marker.
pub(crate) fn create_abort_marker(root: &Path) -> Result<()> {
    let path = root.join("abort");
    File::create(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    Ok(durable::sync_dir(root)?)
}

/// Removes the abort marker.
pub(crate) fn remove_abort_marker(root: &Path) -> Result<()> {
    let path = root.join("abort");
    match fs::remove_file(&path) {
        Ok(()) => Ok(durable::sync_dir(root)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Exclusive lock on `<root>/lock`, held for the life of the store (released by the kernel
/// if the process dies).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(root: &Path) -> Result<DirLock> {
        let path = root.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Locked(root.to_path_buf()));
            }
            return Err(StoreError::io(&path, err));
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_layout_and_round_trip() {
        let cp = Checkpoint {
            physic_msg_timestamp: 1,
            logics_msg_timestamp: 2,
            index_msg_timestamp: 3,
            commit_log_flushed: 0x10,
            consume_queue_safe: 0x20,
            index_safe: 0x30,
        };
        let b = cp.encode();
        assert_eq!(&b[0..8], &[0, 0, 0, 0, 0, 0, 0, 1]); // physicMsgTimestamp
        assert_eq!(&b[8..16], &[0, 0, 0, 0, 0, 0, 0, 2]); // logicsMsgTimestamp
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0, 3]); // indexMsgTimestamp
        assert_eq!(&b[24..40], &[0u8; 16]); // upstream 5.x HA fields
        assert_eq!(&b[40..48], b"APOGEE01"); // magic
        assert_eq!(&b[48..56], &[0, 0, 0, 0, 0, 0, 0, 0x10]); // CommitLog flushed
        assert_eq!(&b[56..64], &[0, 0, 0, 0, 0, 0, 0, 0x20]); // ConsumeQueue safe
        assert_eq!(&b[64..72], &[0, 0, 0, 0, 0, 0, 0, 0x30]); // Index safe
        assert_eq!(Checkpoint::decode(&b), Some(cp));
        let mut torn = b;
        torn[50] ^= 1;
        assert_eq!(Checkpoint::decode(&torn), None);

        let dir = tempfile::tempdir().unwrap();
        let (f, none) = CheckpointFile::open(dir.path()).unwrap();
        assert_eq!(none, None);
        f.write(&cp).unwrap();
        assert_eq!(CheckpointFile::open(dir.path()).unwrap().1, Some(cp));
    }

    #[test]
    fn abort_marker_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!abort_marker_exists(dir.path()));
        create_abort_marker(dir.path()).unwrap();
        assert!(abort_marker_exists(dir.path()));
        remove_abort_marker(dir.path()).unwrap();
        assert!(!abort_marker_exists(dir.path()));
        let lock = DirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(lock);
        assert!(DirLock::acquire(dir.path()).is_ok());
    }
}
