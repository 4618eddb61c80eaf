//! ConsumeQueue: the per-(topic, queue) index of the CommitLog, under
//! `consumequeue/<topic>/<queueId>/`, in files of `mappedFileSizeConsumeQueue` bytes named by
//! the 20-digit byte offset of their first unit. Unit `n` (queue offset `n`) is at byte
//! `n * 20`:
//!
//! | offset | size | field                                                  |
//! |--------|------|--------------------------------------------------------|
//! | 0      | 8    | CommitLog offset of the message (i64, big-endian)      |
//! | 8      | 4    | record size (i32)                                      |
//! | 12     | 8    | tag hash (i64; delivery time for scheduled messages)   |
//!
//! A unit of all zeros was never written. Units before a queue's first real message in its
//! first file are "blank" (offset 0, size `i32::MAX`, tag 0), as upstream fills them. Only the
//! dispatcher writes; readers see units below the published max offset.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::Result;
use crate::mapped_file::{MappedFile, MappedFileQueue, OS_PAGE_SIZE};

/// Bytes per unit.
pub const CQ_STORE_UNIT_SIZE: u64 = 20;

/// Whether `topic` can name a ConsumeQueue directory: not empty, not `.` or `..`, without `/`
/// or NUL. The CommitLog refuses messages of other topics; the dispatcher skips records that
/// already hold one (a store written before this check), since no retry could ever index them
/// and waiting on one would stop every queue behind it.
pub fn is_storable_topic(topic: &str) -> bool {
    !topic.is_empty() && topic != "." && topic != ".." && !topic.contains(['/', '\0'])
}

/// One ConsumeQueue unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqUnit {
    /// CommitLog offset of the record.
    pub phys_offset: i64,
    /// Size of the record.
    pub size: i32,
    /// Tag hash.
    pub tags_code: i64,
}

impl CqUnit {
    const BLANK: CqUnit = CqUnit {
        phys_offset: 0,
        size: i32::MAX,
        tags_code: 0,
    };

    /// Decodes a unit from 20 bytes (missing bytes read as zeros).
    pub fn decode(b: &[u8]) -> CqUnit {
        let mut full = [0u8; 20];
        let n = b.len().min(20);
        full[..n].copy_from_slice(&b[..n]);
        let b = &full;
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[0..8]);
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[8..12]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[12..20]);
        CqUnit {
            phys_offset: i64::from_be_bytes(p),
            size: i32::from_be_bytes(s),
            tags_code: i64::from_be_bytes(t),
        }
    }

    /// Encodes the unit.
    pub fn encode(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[0..8].copy_from_slice(&self.phys_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.size.to_be_bytes());
        out[12..20].copy_from_slice(&self.tags_code.to_be_bytes());
        out
    }

    /// A unit that was written (not zeros).
    fn is_present(&self) -> bool {
        self.size != 0
    }

    /// A placeholder unit before the queue's first message.
    pub fn is_blank(&self) -> bool {
        *self == CqUnit::BLANK
    }
}

/// One ConsumeQueue.
pub(crate) struct ConsumeQueue {
    topic: String,
    queue_id: i32,
    files: MappedFileQueue,
    /// One past the last published unit (the queue's max offset).
    max_units: AtomicU64,
    /// First readable unit (the queue's min offset).
    min_units: AtomicU64,
    /// Units below this are on disk.
    flushed_units: AtomicU64,
}

impl ConsumeQueue {
    /// Opens (or creates) the queue in `dir` and finds its end.
    pub(crate) fn load(
        dir: &Path,
        topic: &str,
        queue_id: i32,
        file_size: u64,
    ) -> Result<ConsumeQueue> {
        let loaded = MappedFileQueue::load(dir, file_size, true)?;
        let cq = ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            files: loaded.queue,
            max_units: AtomicU64::new(0),
            min_units: AtomicU64::new(0),
            flushed_units: AtomicU64::new(0),
        };
        let end = cq.find_end();
        let min = cq
            .files
            .first()
            .map(|f| f.start() / CQ_STORE_UNIT_SIZE)
            .unwrap_or(0);
        cq.set_bounds(min.min(end), end);
        cq.flushed_units.store(end, Ordering::Release);
        Ok(cq)
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn queue_id(&self) -> i32 {
        self.queue_id
    }

    fn units_per_file(&self) -> u64 {
        self.files.file_size() / CQ_STORE_UNIT_SIZE
    }

    /// Reads unit `n` from the files, published or not (recovery and the writer only).
    fn raw_unit(&self, n: u64) -> Option<CqUnit> {
        let at = n * CQ_STORE_UNIT_SIZE;
        let f = self.files.find(at)?;
        Some(CqUnit::decode(&f.slice(at - f.start(), CQ_STORE_UNIT_SIZE)))
    }

    /// First unit that was never written, assuming written units form a prefix of the last file.
    fn find_end(&self) -> u64 {
        let Some(last) = self.files.last() else {
            return 0;
        };
        let first = last.start() / CQ_STORE_UNIT_SIZE;
        let (mut lo, mut hi) = (first, first + self.units_per_file());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.raw_unit(mid).is_some_and(|u| u.is_present()) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn set_bounds(&self, min: u64, max: u64) {
        self.min_units.store(min, Ordering::Release);
        self.max_units.store(max, Ordering::Release);
    }

    /// Drops units whose record starts at or after `phys` (and unwritten holes before them),
    /// zeroing them on disk. Recovery only.
    pub(crate) fn truncate_from_phys(&self, phys: u64) -> Result<()> {
        let min = self.min_offset();
        let mut end = self.max_offset();
        while end > min {
            match self.raw_unit(end - 1) {
                Some(u) if u.is_present() && (u.is_blank() || (u.phys_offset as u64) < phys) => {
                    break
                }
                _ => end -= 1,
            }
        }
        if end < self.max_offset() || self.raw_unit(end).is_some_and(|u| u.is_present()) {
            self.files.truncate(end * CQ_STORE_UNIT_SIZE)?;
        }
        self.set_bounds(min.min(end), end);
        self.flushed_units.store(end, Ordering::Release);
        Ok(())
    }

    /// Max offset: one past the last unit.
    pub(crate) fn max_offset(&self) -> u64 {
        self.max_units.load(Ordering::Acquire)
    }

    /// Min offset: first readable unit.
    pub(crate) fn min_offset(&self) -> u64 {
        self.min_units.load(Ordering::Acquire)
    }

    /// Writes the unit for queue offset `qoff`. Units already present (a replay) are left
    /// alone; a gap before `qoff` is filled with blank units. Dispatcher only.
    pub(crate) fn put(&self, qoff: u64, unit: CqUnit) -> Result<()> {
        let cur = self.max_offset();
        if qoff < cur {
            return Ok(());
        }
        if self.files.is_empty() {
            let at = qoff * CQ_STORE_UNIT_SIZE;
            let start = at - at % self.files.file_size();
            let f = self.files.create(start)?;
            self.fill_blank(&f, start / CQ_STORE_UNIT_SIZE, qoff)?;
            self.min_units.store(qoff, Ordering::Release);
            self.flushed_units
                .store(start / CQ_STORE_UNIT_SIZE, Ordering::Release);
        } else if qoff > cur {
            tracing::warn!(topic = %self.topic, queue = self.queue_id, expected = cur, got = qoff,
                "ConsumeQueue gap; filling with blank units");
            let mut n = cur;
            while n < qoff {
                self.write_unit(n, CqUnit::BLANK)?;
                n += 1;
            }
        }
        self.write_unit(qoff, unit)?;
        self.max_units.store(qoff + 1, Ordering::Release);
        Ok(())
    }

    fn fill_blank(&self, f: &MappedFile, from: u64, to: u64) -> Result<()> {
        for n in from..to {
            // SAFETY: dispatcher is the only writer; these units are unpublished.
            unsafe { f.write_at(n * CQ_STORE_UNIT_SIZE - f.start(), &CqUnit::BLANK.encode()) };
        }
        Ok(())
    }

    fn write_unit(&self, n: u64, unit: CqUnit) -> Result<()> {
        let at = n * CQ_STORE_UNIT_SIZE;
        let f = match self.files.last() {
            Some(f) if f.start() <= at && at < f.end() => f,
            Some(f) if f.end() == at => self.files.create(at)?,
            _ => match self.files.find(at) {
                Some(f) => f,
                None => self.files.create(at - at % self.files.file_size())?,
            },
        };
        // SAFETY: dispatcher is the only writer; unit `n` is not yet published.
        unsafe { f.write_at(at - f.start(), &unit.encode()) };
        Ok(())
    }

    /// Published unit at `qoff`.
    pub(crate) fn unit(&self, qoff: u64) -> Option<CqUnit> {
        if qoff < self.min_offset() || qoff >= self.max_offset() {
            return None;
        }
        self.raw_unit(qoff)
    }

    /// Published units from `qoff` to the end of its file or of the queue, as one slice.
    pub(crate) fn units_from(&self, qoff: u64) -> Option<Bytes> {
        let max = self.max_offset();
        if qoff < self.min_offset() || qoff >= max {
            return None;
        }
        let at = qoff * CQ_STORE_UNIT_SIZE;
        let f = self.files.find(at)?;
        let end = (max * CQ_STORE_UNIT_SIZE).min(f.end());
        Some(f.slice(at - f.start(), end - at))
    }

    /// Flushes written units if at least `least_pages` pages are dirty (0: any).
    pub(crate) fn flush(&self, least_pages: u32) -> Result<()> {
        let from = self.flushed_units.load(Ordering::Acquire) * CQ_STORE_UNIT_SIZE;
        let max = self.max_offset();
        let to = max * CQ_STORE_UNIT_SIZE;
        if to <= from {
            return Ok(());
        }
        if least_pages > 0 && to / OS_PAGE_SIZE - from / OS_PAGE_SIZE < least_pages as u64 {
            return Ok(());
        }
        self.files.flush(from, to)?;
        self.flushed_units.store(max, Ordering::Release);
        Ok(())
    }

    /// CommitLog offset of the oldest unit not yet on disk, if any.
    pub(crate) fn first_unflushed_phys(&self) -> Option<u64> {
        let n = self.flushed_units.load(Ordering::Acquire);
        if n >= self.max_offset() {
            return None;
        }
        let u = self.raw_unit(n)?;
        Some(if u.is_blank() {
            0
        } else {
            u.phys_offset as u64
        })
    }

    /// Deletes files (never the last) whose units all point below `cl_min`, then moves the
    /// min offset to the first unit at or after `cl_min`. Returns files deleted.
    pub(crate) fn delete_expired(&self, cl_min: u64) -> Result<usize> {
        let files = self.files.files();
        let mut n = 0;
        for f in files.iter().take(files.len().saturating_sub(1)) {
            let last_unit =
                CqUnit::decode(&f.slice(f.size() - CQ_STORE_UNIT_SIZE, CQ_STORE_UNIT_SIZE));
            if last_unit.is_present()
                && !last_unit.is_blank()
                && (last_unit.phys_offset as u64) < cl_min
            {
                n += 1;
            } else {
                break;
            }
        }
        if n > 0 {
            self.files.remove_first(n)?;
        }
        self.correct_min_offset(cl_min);
        Ok(n)
    }

    /// Moves the min offset to the first unit whose record is at or after `cl_min`.
    pub(crate) fn correct_min_offset(&self, cl_min: u64) {
        let first_file = self
            .files
            .first()
            .map(|f| f.start() / CQ_STORE_UNIT_SIZE)
            .unwrap_or(0);
        let (mut lo, mut hi) = (self.min_offset().max(first_file), self.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.raw_unit(mid) {
                Some(u) if u.is_blank() || (u.phys_offset as u64) < cl_min => lo = mid + 1,
                _ => hi = mid,
            }
        }
        self.min_units.store(lo, Ordering::Release);
    }

    /// Removes every file of this queue.
    pub(crate) fn destroy(&self) -> Result<()> {
        self.max_units.store(0, Ordering::Release);
        self.min_units.store(0, Ordering::Release);
        self.files.destroy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(phys: i64) -> CqUnit {
        CqUnit {
            phys_offset: phys,
            size: 100,
            tags_code: phys * 7,
        }
    }

    #[test]
    fn golden_unit() {
        let u = CqUnit {
            phys_offset: 0x0102,
            size: 0x0304,
            tags_code: -1,
        };
        #[rustfmt::skip]
        let expected = [
            0, 0, 0, 0, 0, 0, 1, 2,                          // CommitLog offset
            0, 0, 3, 4,                                      // size
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  // tag hash
        ];
        assert_eq!(u.encode(), expected);
        assert_eq!(CqUnit::decode(&expected), u);
    }

    #[test]
    fn put_read_reload_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 20 * 10).unwrap();
        for i in 0..25 {
            cq.put(i, unit(i as i64 * 100)).unwrap();
        }
        cq.put(3, unit(999)).unwrap(); // replay: ignored
        assert_eq!(cq.max_offset(), 25);
        assert_eq!(cq.unit(3), Some(unit(300)));
        assert_eq!(cq.units_from(8).unwrap().len(), 2 * 20);
        assert_eq!(cq.first_unflushed_phys(), Some(0));
        cq.flush(0).unwrap();
        assert_eq!(cq.first_unflushed_phys(), None);
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 200).unwrap();
        assert_eq!(cq.max_offset(), 25);
        cq.truncate_from_phys(1250).unwrap();
        assert_eq!(cq.max_offset(), 13);
        assert_eq!(cq.unit(12), Some(unit(1200)));
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 200).unwrap();
        assert_eq!(cq.max_offset(), 13);
        // Exactly a file boundary.
        cq.truncate_from_phys(1000).unwrap();
        assert_eq!(cq.max_offset(), 10);
        cq.put(10, unit(1000)).unwrap();
        assert_eq!(cq.max_offset(), 11);
    }

    #[test]
    fn first_unit_mid_file_gets_blank_prefix_and_retention_moves_min() {
        let dir = tempfile::tempdir().unwrap();
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 200).unwrap();
        cq.put(5, unit(5000)).unwrap();
        assert_eq!(cq.min_offset(), 5);
        assert_eq!(cq.max_offset(), 6);
        assert!(cq.raw_unit(0).unwrap().is_blank());
        for i in 6..35 {
            cq.put(i, unit(i as i64 * 1000)).unwrap();
        }
        // Files: units 0-9, 10-19, 20-29, 30-34. Records below 21,500 are gone.
        assert_eq!(cq.delete_expired(21_500).unwrap(), 2);
        assert_eq!(cq.min_offset(), 22);
        assert_eq!(cq.unit(21), None);
        assert_eq!(cq.unit(22), Some(unit(22_000)));
        drop(cq);
        let cq = ConsumeQueue::load(dir.path(), "T", 0, 200).unwrap();
        assert_eq!(cq.min_offset(), 20);
        cq.correct_min_offset(21_500);
        assert_eq!(cq.min_offset(), 22);
        assert_eq!(cq.max_offset(), 35);
    }
}
