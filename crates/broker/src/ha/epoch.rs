//! [`EpochFile`]: the master epochs this broker's CommitLog went through and the offset where
//! each started (upstream's `EpochFileCache`), in `storePathEpochFile`
//! (`<storePathRootDir>/epochFileCheckpoint`). A new master appends an entry for its epoch
//! at its CommitLog end before it accepts a write; a slave copies its master's entries as it
//! replicates their data, and the controller-mode replication handshake compares the two
//! lists ([`consistent_point`]) to find where a returning old master's log diverged.
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
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Replaces every entry (a slave that cut its log to its master's takes the master's
    /// entries for what it holds) and writes the file.
    pub(crate) fn replace(&mut self, entries: Vec<EpochEntry>) -> Result<(), EpochFileError> {
        if entries == self.entries {
            return Ok(());
        }
        self.entries = entries;
        durable::write_atomic(&self.path, encode(&self.entries).as_bytes()).map_err(|source| {
            EpochFileError::Io {
                path: self.path.clone(),
                source,
            }
        })
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

/// Where a slave's log (`local` entries, CommitLog end `local_end`) and its master's
/// (`master`, `master_end`) last agree (upstream's `findLastConsistentPoint`): in the newest
/// epoch both have with the same start offset, the lower of the two ends of that epoch. A
/// slave without entries (a fresh one) agrees up to its end if that is not past the
/// master's. `None`: no common epoch, the slave cannot follow this master without losing
/// its whole log (an operator's decision).
pub(crate) fn consistent_point(
    local: &[EpochEntry],
    local_end: i64,
    master: &[EpochEntry],
    master_end: i64,
) -> Option<i64> {
    if local.is_empty() {
        return (local_end <= master_end).then_some(local_end);
    }
    for (i, l) in local.iter().enumerate().rev() {
        let Some(j) = master.iter().position(|m| m.epoch == l.epoch) else {
            continue;
        };
        if master[j].start_offset != l.start_offset {
            continue;
        }
        let l_end = local.get(i + 1).map_or(local_end, |n| n.start_offset);
        let m_end = master.get(j + 1).map_or(master_end, |n| n.start_offset);
        return Some(l_end.min(m_end));
    }
    None
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

    fn e(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    #[test]
    fn consistent_point_is_the_end_of_the_last_common_epoch() {
        // A returning old master: it wrote on in epoch 1 past where the new master took over.
        assert_eq!(
            consistent_point(&[e(1, 0)], 900, &[e(1, 0), e(2, 600)], 1000),
            Some(600)
        );
        // A slave behind its master in the same epoch: nothing to cut.
        assert_eq!(
            consistent_point(&[e(1, 0)], 500, &[e(1, 0)], 800),
            Some(500)
        );
        // Both were masters of later epochs the other never saw.
        assert_eq!(
            consistent_point(
                &[e(1, 0), e(2, 100), e(4, 300)],
                450,
                &[e(1, 0), e(2, 100), e(3, 250)],
                700
            ),
            Some(250)
        );
        // Same epoch number, different start: not the same epoch.
        assert_eq!(
            consistent_point(&[e(1, 0), e(2, 50)], 90, &[e(1, 0), e(2, 60)], 99),
            Some(50)
        );
        // A fresh slave follows; one without entries but longer than the master cannot.
        assert_eq!(consistent_point(&[], 0, &[e(1, 0)], 10), Some(0));
        assert_eq!(consistent_point(&[], 20, &[e(1, 0)], 10), None);
        // No common epoch.
        assert_eq!(consistent_point(&[e(5, 0)], 10, &[e(1, 0)], 10), None);
    }
}
