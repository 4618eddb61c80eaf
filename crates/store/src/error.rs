//! The store's error type. Each variant is something a caller can act on; the broker maps
//! them to upstream response codes (e.g. `MessageTooLarge` -> `MESSAGE_ILLEGAL`, `DiskFull` and
//! `NotWritable` -> `SERVICE_NOT_AVAILABLE`). A flush timeout is not an error: the message is
//! written, and [`crate::PutStatus::FlushDiskTimeout`] says the flush policy did not hold.

use std::io;
use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system has no room (ENOSPC / EDQUOT), or disk use is past the warning ratio.
    #[error("disk full: {path}")]
    DiskFull {
        /// File or directory that could not grow.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The body is larger than `maxMessageSize`, or the record larger than a segment.
    #[error("message too large: {size} bytes, limit {max}")]
    MessageTooLarge {
        /// Size of the offending body (or batch).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The message cannot be encoded (topic or properties too long, empty batch, ...).
    #[error("illegal message: {0}")]
    IllegalMessage(String),
    /// A store file is damaged somewhere other than a torn tail; the store refuses to open
    /// rather than serve or overwrite it. Inspect the file (or move it away) and restart.
    #[error("corrupt store file {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Offset of the damage (CommitLog-wide for CommitLog files).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The store does not accept writes now: it is a slave, it is shutting down, or an earlier
    /// flush failed (after a failed fsync the page cache can no longer be trusted).
    #[error("store not writable: {0}")]
    NotWritable(String),
    /// Another process holds the store directory's lock file.
    #[error("store directory {0} is locked by another process")]
    Locked(PathBuf),
    /// Replicated bytes do not start where this CommitLog ends.
    #[error(
        "replicated data at offset {offset} does not continue the CommitLog (ends at {expected})"
    )]
    ReplicationGap {
        /// Offset the data was meant for.
        offset: u64,
        /// Offset the CommitLog ends at.
        expected: u64,
    },
    /// The configuration cannot work (e.g. a zero segment size).
    #[error("invalid store config: {0}")]
    Config(String),
}

impl StoreError {
    /// Wraps an I/O error, classifying "no space" errors as [`StoreError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::DiskFull { path },
            _ => StoreError::Io { path, source },
        }
    }
}

impl From<durable::FileError> for StoreError {
    fn from(e: durable::FileError) -> StoreError {
        StoreError::io(e.path, e.source)
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_disk_full() {
        let full = StoreError::io("/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(full, StoreError::DiskFull { .. }));
        let quota = StoreError::io("/x", io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(matches!(quota, StoreError::DiskFull { .. }));
        let other = StoreError::io("/x", io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, StoreError::Io { .. }));
    }
}
