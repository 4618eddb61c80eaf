//! [`EpochFile`]: the master epochs this broker's CommitLog went through and the offset where
//! each started (upstream's `EpochFileCache`), in `storePathEpochFile`
//! (`<storePathRootDir>/epochFileCheckpoint`). A new master appends an entry for its epoch
//! at its CommitLog end before it accepts a write; the replication handshake of the next step
//! compares these entries to find where a returning old master's log diverged.
//!
//! The file is upstream's `CheckpointFile` text, so either implementation reads the other's:
//!
//! | line | content |
//! |---|---|
//! | 1 | number of entries |
//! | 2 | CRC32 of the entry lines (each with its `\n`), masked to 31 bits, in decimal |
//! | 3.. | `<epoch>-<startOffset>`, one entry per line, oldest first |
//!
//! Written whole with `durable::write_atomic` (never torn).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// One master epoch and the CommitLog offset of its first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub(crate) epoch: i32,
    pub(crate) start_offset: i64,
}

/// A bad or unreadable epoch file.
#[derive(Debug, Error)]
pub(crate) enum EpochFileError {
    #[error("epoch file {path}: {source}")]
    Io {
        path: PathBuf,
        source: durable::FileError,
    },
    #[error("epoch file {path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// The epoch entries, kept in memory and in the file.
#[derive(Debug)]
pub(crate) struct EpochFile {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochFile {
    /// Reads `path` (no file: no entries).
    pub(crate) fn load(path: &Path) -> Result<EpochFile, EpochFileError> {
        let data = durable::read_optional(path).map_err(|source| EpochFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let entries = match data {
            None => Vec::new(),
            Some(bytes) => decode(&bytes).map_err(|why| EpochFileError::Damaged {
                path: path.to_path_buf(),
                why,
            })?,
        };
        Ok(EpochFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The newest entry.
    pub(crate) fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Every entry, oldest first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Records that `epoch` starts at `start_offset` and writes the file. An epoch not newer
    /// than the last one changes nothing (the same election seen twice).
    pub(crate) fn append(&mut self, epoch: i32, start_offset: i64) -> Result<(), EpochFileError> {
        if self.last().is_some_and(|l| l.epoch >= epoch) {
            return Ok(());
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        durable::write_atomic(&self.path, encode(&self.entries).as_bytes()).map_err(|source| {
            EpochFileError::Io {
                path: self.path.clone(),
                source,
            }
        })
    }
}

fn crc(text: &str) -> i32 {
    (crc32fast::hash(text.as_bytes()) & 0x7FFF_FFFF) as i32
}

fn encode(entries: &[EpochEntry]) -> String {
    let body: String = entries
        .iter()
        .map(|e| format!("{}-{}\n", e.epoch, e.start_offset))
        .collect();
    format!("{}\n{}\n{body}", entries.len(), crc(&body))
}

fn decode(bytes: &[u8]) -> Result<Vec<EpochEntry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("first line is not the entry count")?;
    let expected_crc: i32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("second line is not the CRC")?;
    let mut body = String::new();
    let mut entries = Vec::new();
    for line in lines {
        body.push_str(line);
        body.push('\n');
        let (epoch, start) = line
            .split_once('-')
            .ok_or_else(|| format!("entry `{line}` is not <epoch>-<startOffset>"))?;
        let epoch = epoch
            .trim()
            .parse()
            .map_err(|_| format!("bad epoch in `{line}`"))?;
        let start_offset = start
            .trim()
            .parse()
            .map_err(|_| format!("bad start offset in `{line}`"))?;
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    if entries.len() != count {
        return Err(format!(
            "{count} entries announced, {} found",
            entries.len()
        ));
    }
    // Upstream's NOT_CHECK_CRC_MAGIC_CODE skips the check.
    if expected_crc != 0 && crc(&body) != expected_crc {
        return Err(format!("CRC {expected_crc} does not match the entries"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_file_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochFileCheckpoint");
        let mut f = EpochFile::load(&path).unwrap();
        assert_eq!(f.last(), None);
        f.append(1, 0).unwrap();
        f.append(3, 4096).unwrap();
        f.append(3, 9999).unwrap(); // not newer: ignored
        let text = std::fs::read_to_string(&path).unwrap();
        let body = "1-0\n3-4096\n";
        let crc = (crc32fast::hash(body.as_bytes()) & 0x7FFF_FFFF) as i32;
        assert_eq!(text, format!("2\n{crc}\n{body}"));
        let again = EpochFile::load(&path).unwrap();
        assert_eq!(
            again.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 3,
                    start_offset: 4096
                }
            ]
        );
    }

    #[test]
    fn damaged_files_are_errors() {
        for bad in [
            "x\n0\n",
            "2\n0\n1-0\n",
            "1\n12345\n1-0\n",
            "1\n0\n1_0\n",
            "1\n0\nx-0\n",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(decode(b"1\n0\n2-10\n").unwrap().len(), 1);
    }
}
