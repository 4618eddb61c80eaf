//! The Index: lookup of messages by key (`KEYS`, space-separated) and unique key (`UNIQ_KEY`)
//! within a time range, in files under `index/` named by their creation time
//! (`yyyyMMddHHmmssSSS`). Each key is stored as `topic#key`. One file:
//!
//! | offset                      | size       | field                                        |
//! |-----------------------------|------------|----------------------------------------------|
//! | 0                           | 8          | beginTimestamp (store time of first entry)   |
//! | 8                           | 8          | endTimestamp                                 |
//! | 16                          | 8          | beginPhyOffset                               |
//! | 24                          | 8          | endPhyOffset                                 |
//! | 32                          | 4          | hashSlotCount (slots in use)                 |
//! | 36                          | 4          | indexCount (next entry number; starts at 1)  |
//! | 40                          | 4 x slots  | slot: number of the newest entry, 0 = none   |
//! | 40 + 4 x slots + 20 x n     | 20         | entry n: keyHash i32, phyOffset i64, timeDiff i32 (s since beginTimestamp), prevIndex i32 |
//!
//! `keyHash` is `abs(String.hashCode(topic#key))` (0 for `i32::MIN`), slot = `keyHash % slots`;
//! entries of one slot form a chain through `prevIndex`. Entries are appended in CommitLog
//! order, which lets recovery cut them at a CommitLog offset and rebuild the slots.

use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::clock::{local_time, now_ms};
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;
use crate::message::{find_property, java_hash_code, MessageConst, MessageSysFlag};

const HEADER_SIZE: u64 = 40;
const SLOT_SIZE: u64 = 4;
const ENTRY_SIZE: u64 = 20;

/// Index file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Header {
    begin_timestamp: i64,
    end_timestamp: i64,
    begin_phy_offset: i64,
    end_phy_offset: i64,
    hash_slot_count: i32,
    index_count: i32,
}

impl Header {
    fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&self.begin_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.end_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.begin_phy_offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.end_phy_offset.to_be_bytes());
        b[32..36].copy_from_slice(&self.hash_slot_count.to_be_bytes());
        b[36..40].copy_from_slice(&self.index_count.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Header {
        Header {
            begin_timestamp: be_i64(&b[0..8]),
            end_timestamp: be_i64(&b[8..16]),
            begin_phy_offset: be_i64(&b[16..24]),
            end_phy_offset: be_i64(&b[24..32]),
            hash_slot_count: be_i32(&b[32..36]),
            index_count: be_i32(&b[36..40]),
        }
    }
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    i32::from_be_bytes(a)
}

/// Upstream `indexKeyHashMethod`: `abs(hashCode)`, with `i32::MIN` mapped to 0.
fn key_hash(key: &str) -> i32 {
    let h = java_hash_code(key).wrapping_abs();
    h.max(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key_hash: i32,
    phy_offset: i64,
    time_diff: i32,
    prev_index: i32,
}

/// One Index file. All access goes through [`IndexService`]'s lock: writes under the write
/// guard, reads under the read guard.
struct IndexFile {
    file: MappedFile,
    slots: u64,
    entries: u64,
    header: Header,
}

impl IndexFile {
    fn open(path: &Path, slots: u64, entries: u64) -> Result<IndexFile> {
        let size = HEADER_SIZE + slots * SLOT_SIZE + entries * ENTRY_SIZE;
        let (file, old_len) = MappedFile::open(path, 0, size, true)?;
        let mut header = Header::decode(&file.slice(0, HEADER_SIZE));
        if old_len == 0 || header.index_count < 1 {
            header = Header {
                index_count: 1,
                ..Header::default()
            };
        }
        let mut f = IndexFile {
            file,
            slots,
            entries,
            header,
        };
        if f.header.index_count as u64 > entries {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: 36,
                reason: format!(
                    "indexCount {} exceeds maxIndexNum {entries}",
                    f.header.index_count
                ),
            });
        }
        f.write_header();
        Ok(f)
    }

    fn count(&self) -> u64 {
        self.header.index_count as u64
    }

    fn is_full(&self) -> bool {
        self.count() >= self.entries
    }

    fn is_empty(&self) -> bool {
        self.count() <= 1
    }

    fn slot_pos(&self, hash: i32) -> u64 {
        HEADER_SIZE + (hash as u64 % self.slots) * SLOT_SIZE
    }

    fn entry_pos(&self, n: u64) -> u64 {
        HEADER_SIZE + self.slots * SLOT_SIZE + n * ENTRY_SIZE
    }

    fn read_slot(&self, hash: i32) -> i32 {
        be_i32(&self.file.slice(self.slot_pos(hash), SLOT_SIZE))
    }

    fn read_entry(&self, n: u64) -> Entry {
        let b = self.file.slice(self.entry_pos(n), ENTRY_SIZE);
        Entry {
            key_hash: be_i32(&b[0..4]),
            phy_offset: be_i64(&b[4..12]),
            time_diff: be_i32(&b[12..16]),
            prev_index: be_i32(&b[16..20]),
        }
    }

    /// Caller holds the service's write guard.
    fn write(&self, pos: u64, data: &[u8]) {
        // SAFETY: the service's write guard excludes every reader and other writer.
        unsafe { self.file.write_at(pos, data) };
    }

    fn write_header(&mut self) {
        self.write(0, &self.header.encode());
    }

    /// Adds `key` for the record at `phy` stored at `ts`; false when the file is full.
    fn put(&mut self, key: &str, phy: i64, ts: i64) -> bool {
        if self.is_full() {
            return false;
        }
        let hash = key_hash(key);
        let mut prev = self.read_slot(hash);
        if prev <= 0 || prev as u64 > self.count() {
            prev = 0;
        }
        let diff = if self.header.begin_timestamp <= 0 {
            0
        } else {
            ((ts - self.header.begin_timestamp) / 1000).clamp(0, i32::MAX as i64)
        };
        let n = self.count();
        let mut e = [0u8; 20];
        e[0..4].copy_from_slice(&hash.to_be_bytes());
        e[4..12].copy_from_slice(&phy.to_be_bytes());
        e[12..16].copy_from_slice(&(diff as i32).to_be_bytes());
        e[16..20].copy_from_slice(&prev.to_be_bytes());
        self.write(self.entry_pos(n), &e);
        self.write(self.slot_pos(hash), &(n as i32).to_be_bytes());
        if self.is_empty() {
            self.header.begin_phy_offset = phy;
            self.header.begin_timestamp = ts;
        }
        if prev == 0 {
            self.header.hash_slot_count += 1;
        }
        self.header.index_count += 1;
        self.header.end_phy_offset = phy;
        self.header.end_timestamp = ts;
        self.write_header();
        true
    }

    fn time_matched(&self, begin: i64, end: i64) -> bool {
        let (b, e) = (self.header.begin_timestamp, self.header.end_timestamp);
        (begin < b && end > e) || (begin >= b && begin <= e) || (end >= b && end <= e)
    }

    fn select(&self, out: &mut Vec<u64>, key: &str, max: usize, begin: i64, end: i64) {
        let hash = key_hash(key);
        let mut next = self.read_slot(hash);
        if next <= 0 || next as u64 >= self.count() || self.is_empty() {
            return;
        }
        let mut steps = 0u64;
        while out.len() < max && steps < self.count() {
            steps += 1;
            let e = self.read_entry(next as u64);
            if e.time_diff < 0 {
                break;
            }
            let t = self.header.begin_timestamp + e.time_diff as i64 * 1000;
            if e.key_hash == hash && t >= begin && t <= end && e.phy_offset >= 0 {
                out.push(e.phy_offset as u64);
            }
            if e.prev_index <= 0
                || e.prev_index as u64 >= self.count()
                || e.prev_index == next
                || t < begin
            {
                break;
            }
            next = e.prev_index;
        }
    }

    /// Keeps only entries whose record is before `phy`, rebuilding slots and header. Recovery.
    fn truncate_from_phys(&mut self, phy: u64) -> Result<()> {
        let (mut lo, mut hi) = (1u64, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if (self.read_entry(mid).phy_offset as u64) < phy {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let keep = lo;
        if keep == self.count() {
            return Ok(());
        }
        let slots_end = HEADER_SIZE + self.slots * SLOT_SIZE;
        // Zero the slots and the dropped entries, then re-link the kept entries.
        let zeros = vec![0u8; (1 << 20).min(slots_end as usize)];
        let mut pos = HEADER_SIZE;
        while pos < slots_end {
            let n = (slots_end - pos).min(zeros.len() as u64) as usize;
            self.write(pos, &zeros[..n]);
            pos += n as u64;
        }
        self.file.zero_from(self.entry_pos(keep))?;
        let mut used = 0;
        for n in 1..keep {
            let e = self.read_entry(n);
            if self.read_slot(e.key_hash) == 0 {
                used += 1;
            }
            self.write(self.slot_pos(e.key_hash), &(n as i32).to_be_bytes());
        }
        self.header.index_count = keep as i32;
        self.header.hash_slot_count = used;
        if keep > 1 {
            let last = self.read_entry(keep - 1);
            self.header.end_phy_offset = last.phy_offset;
            // Entries keep whole seconds; round up so time matching stays inclusive.
            self.header.end_timestamp =
                self.header.begin_timestamp + last.time_diff as i64 * 1000 + 999;
        } else {
            self.header = Header {
                index_count: 1,
                ..Header::default()
            };
        }
        self.write_header();
        self.file.flush_range(0, self.file.size())
    }
}

/// What the dispatcher hands the Index for one record.
pub(crate) struct IndexRequest<'a> {
    pub(crate) topic: &'a str,
    pub(crate) properties: &'a str,
    pub(crate) phys_offset: u64,
    pub(crate) store_timestamp: i64,
    pub(crate) sys_flag: i32,
}

struct Files {
    list: Vec<IndexFile>,
    /// CommitLog offset of the first record indexed since the last flush.
    dirty_since: Option<u64>,
}

/// All Index files.
pub(crate) struct IndexService {
    dir: PathBuf,
    slots: u64,
    entries: u64,
    files: RwLock<Files>,
}

/// Result of a key query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IndexHits {
    pub(crate) phys_offsets: Vec<u64>,
    pub(crate) last_update_timestamp: i64,
    pub(crate) last_update_phy_offset: i64,
}

impl IndexService {
    /// Loads the files of `dir`.
    pub(crate) fn load(dir: &Path, slots: u32, entries: u32) -> Result<IndexService> {
        durable::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 17 && name.bytes().all(|b| b.is_ascii_digit()) {
                names.push(name);
            } else {
                tracing::warn!(dir = %dir.display(), file = %name, "ignoring unexpected file");
            }
        }
        names.sort();
        let mut list = Vec::with_capacity(names.len());
        for name in names {
            list.push(IndexFile::open(
                &dir.join(name),
                slots as u64,
                entries as u64,
            )?);
        }
        Ok(IndexService {
            dir: dir.to_path_buf(),
            slots: slots as u64,
            entries: entries as u64,
            files: RwLock::new(Files {
                list,
                dirty_since: None,
            }),
        })
    }

    fn new_file(&self, files: &mut Files) -> Result<()> {
        let (end_phy, end_ts) = files
            .list
            .last()
            .map(|f| (f.header.end_phy_offset, f.header.end_timestamp))
            .unwrap_or((0, 0));
        if let Some(prev) = files.list.last() {
            prev.file.flush_range(0, prev.file.size())?;
        }
        let mut ms = now_ms();
        let mut path = self.dir.join(local_time(ms).compact());
        while path.exists() {
            ms += 1;
            path = self.dir.join(local_time(ms).compact());
        }
        let mut f = IndexFile::open(&path, self.slots, self.entries)?;
        durable::sync_dir(&self.dir)?;
        if end_phy > 0 {
            f.header.begin_phy_offset = end_phy;
            f.header.end_phy_offset = end_phy;
        }
        if end_ts > 0 {
            f.header.begin_timestamp = end_ts;
            f.header.end_timestamp = end_ts;
        }
        f.write_header();
        files.list.push(f);
        Ok(())
    }

    /// Whether there is no Index file.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.read().list.is_empty()
    }

    /// CommitLog offset of the last record with an entry, if any.
    fn last_indexed(files: &Files) -> Option<u64> {
        files
            .list
            .iter()
            .rev()
            .find(|f| !f.is_empty())
            .map(|f| f.header.end_phy_offset as u64)
    }

    /// Indexes the keys of one record. Records at or before the last indexed one are skipped,
    /// so a replay after recovery adds nothing twice.
    pub(crate) fn build(&self, req: &IndexRequest<'_>) -> Result<()> {
        if MessageSysFlag::transaction_value(req.sys_flag)
            == MessageSysFlag::TRANSACTION_ROLLBACK_TYPE
        {
            return Ok(());
        }
        let uniq = find_property(
            req.properties,
            MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
        );
        let keys = find_property(req.properties, MessageConst::PROPERTY_KEYS);
        if uniq.is_none() && keys.is_none() {
            return Ok(());
        }
        let mut files = self.files.write();
        if Self::last_indexed(&files).is_some_and(|l| req.phys_offset <= l) {
            return Ok(());
        }
        // A retried record is skipped whole (above), so its keys must all go in or none: open
        // the next file before the first key when they would not all fit, so a failure to
        // create it (a full disk) leaves nothing of this record behind.
        let wanted = uniq.is_some() as u64
            + keys.map_or(0, |ks| {
                ks.split(MessageConst::KEY_SEPARATOR)
                    .filter(|k| !k.is_empty())
                    .count() as u64
            });
        let room = files
            .list
            .last()
            .map_or(0, |f| f.entries.saturating_sub(f.count()));
        if room < wanted.min(self.entries.saturating_sub(1)) {
            self.new_file(&mut files)?;
        }
        let put = |files: &mut Files, key: &str| -> Result<()> {
            let full = format!("{}#{}", req.topic, key);
            loop {
                if files.list.last().is_none_or(|f| f.is_full()) {
                    self.new_file(files)?;
                }
                let Some(f) = files.list.last_mut() else {
                    continue;
                };
                if f.put(&full, req.phys_offset as i64, req.store_timestamp) {
                    files.dirty_since.get_or_insert(req.phys_offset);
                    return Ok(());
                }
            }
        };
        if let Some(u) = uniq {
            put(&mut files, u)?;
        }
        if let Some(keys) = keys {
            for k in keys
                .split(MessageConst::KEY_SEPARATOR)
                .filter(|k| !k.is_empty())
            {
                put(&mut files, k)?;
            }
        }
        Ok(())
    }

    /// CommitLog offsets of records with `topic#key` stored within `[begin, end]` (ms), newest
    /// first, at most `max`.
    pub(crate) fn query(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> IndexHits {
        let files = self.files.read();
        let mut hits = IndexHits::default();
        if let Some(last) = files.list.last() {
            hits.last_update_timestamp = last.header.end_timestamp;
            hits.last_update_phy_offset = last.header.end_phy_offset;
        }
        let full = format!("{topic}#{key}");
        for f in files.list.iter().rev() {
            if f.time_matched(begin, end) {
                f.select(&mut hits.phys_offsets, &full, max, begin, end);
            }
            if f.header.begin_timestamp < begin || hits.phys_offsets.len() >= max {
                break;
            }
        }
        hits
    }

    /// Flushes every file with entries added since the last flush.
    pub(crate) fn flush(&self) -> Result<()> {
        let dirty = {
            let mut files = self.files.write();
            files.dirty_since.take()
        };
        if dirty.is_none() {
            return Ok(());
        }
        let files = self.files.read();
        let res = files
            .list
            .iter()
            .rev()
            .take_while(|f| dirty.is_some_and(|d| f.header.end_phy_offset as u64 >= d))
            .try_for_each(|f| f.file.flush_range(0, f.file.size()));
        drop(files);
        if res.is_err() {
            let mut files = self.files.write();
            let merged = match (files.dirty_since, dirty) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            files.dirty_since = merged;
        }
        res
    }

    /// CommitLog offset of the oldest record whose entries are not on disk yet.
    pub(crate) fn first_unflushed_phys(&self) -> Option<u64> {
        self.files.read().dirty_since
    }

    /// Drops entries of records at or after `phy`. Recovery only.
    pub(crate) fn truncate_from_phys(&self, phy: u64) -> Result<()> {
        let mut files = self.files.write();
        while let Some(last) = files.list.last_mut() {
            if !last.is_empty() && (last.header.begin_phy_offset as u64) >= phy {
                last.file.remove()?;
                files.list.pop();
                continue;
            }
            last.truncate_from_phys(phy)?;
            break;
        }
        Ok(())
    }

    /// Deletes files (never the last) whose entries all point below `cl_min`.
    pub(crate) fn delete_expired(&self, cl_min: u64) -> Result<usize> {
        let mut files = self.files.write();
        let mut n = 0;
        while files.list.len() > 1 {
            let first = &files.list[0];
            if (first.header.end_phy_offset as u64) < cl_min {
                first.file.remove()?;
                files.list.remove(0);
                n += 1;
            } else {
                break;
            }
        }
        Ok(n)
    }

    #[cfg(test)]
    fn file_count(&self) -> usize {
        self.files.read().list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::encode_properties;

    fn req<'a>(props: &'a str, phys: u64, ts: i64) -> IndexRequest<'a> {
        IndexRequest {
            topic: "T",
            properties: props,
            phys_offset: phys,
            store_timestamp: ts,
            sys_flag: 0,
        }
    }

    #[test]
    fn golden_header_and_entry() {
        let dir = tempfile::tempdir().unwrap();
        let svc = IndexService::load(dir.path(), 4, 10).unwrap();
        let props = encode_properties([("KEYS", "k")]);
        svc.build(&req(&props, 0x10, 5_000)).unwrap();
        let files = svc.files.read();
        let f = &files.list[0];
        #[rustfmt::skip]
        let header = [
            0, 0, 0, 0, 0, 0, 0x13, 0x88,   // beginTimestamp 5000
            0, 0, 0, 0, 0, 0, 0x13, 0x88,   // endTimestamp 5000
            0, 0, 0, 0, 0, 0, 0, 0x10,      // beginPhyOffset
            0, 0, 0, 0, 0, 0, 0, 0x10,      // endPhyOffset
            0, 0, 0, 1,                     // hashSlotCount
            0, 0, 0, 2,                     // indexCount (next entry)
        ];
        assert_eq!(&f.file.slice(0, 40)[..], &header);
        let hash = key_hash("T#k");
        assert_eq!(hash, java_hash_code("T#k").abs());
        // Slot of the key points at entry 1.
        assert_eq!(f.read_slot(hash), 1);
        let entry = f.file.slice(HEADER_SIZE + 4 * 4 + 20, 20);
        let mut expected = Vec::new();
        expected.extend_from_slice(&hash.to_be_bytes()); // keyHash
        expected.extend_from_slice(&0x10i64.to_be_bytes()); // phyOffset
        expected.extend_from_slice(&0i32.to_be_bytes()); // timeDiff
        expected.extend_from_slice(&0i32.to_be_bytes()); // prevIndex
        assert_eq!(&entry[..], &expected[..]);
        assert_eq!(key_hash("polygenelubricants"), 0);
    }

    #[test]
    fn query_rolls_files_truncates_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let svc = IndexService::load(dir.path(), 3, 5).unwrap();
        for i in 0..20u64 {
            let key = format!("k{}", i % 4);
            let uniq = format!("u{i}");
            let props = encode_properties([("KEYS", key.as_str()), ("UNIQ_KEY", uniq.as_str())]);
            svc.build(&req(&props, i * 100, 1_000_000 + i as i64 * 1000))
                .unwrap();
        }
        // Replays are ignored.
        let props = encode_properties([("KEYS", "k0")]);
        svc.build(&req(&props, 1900, 1_019_000)).unwrap();
        // 40 entries, 4 per file.
        assert_eq!(svc.file_count(), 10);
        let hits = svc.query("T", "k1", 64, 0, i64::MAX);
        assert_eq!(hits.phys_offsets, vec![1700, 1300, 900, 500, 100]);
        assert_eq!(
            svc.query("T", "u7", 64, 0, i64::MAX).phys_offsets,
            vec![700]
        );
        assert_eq!(svc.query("T", "k1", 2, 0, i64::MAX).phys_offsets.len(), 2);
        assert_eq!(
            svc.query("T", "k1", 64, 1_012_000, i64::MAX).phys_offsets,
            vec![1700, 1300]
        );
        assert!(svc
            .query("Other", "k1", 64, 0, i64::MAX)
            .phys_offsets
            .is_empty());
        svc.truncate_from_phys(1250).unwrap();
        assert_eq!(
            svc.query("T", "k1", 64, 0, i64::MAX).phys_offsets,
            vec![900, 500, 100]
        );
        assert!(svc
            .query("T", "u13", 64, 0, i64::MAX)
            .phys_offsets
            .is_empty());
        assert_eq!(
            svc.query("T", "u12", 64, 0, i64::MAX).phys_offsets,
            vec![1200]
        );
        // Rebuilding continues after the cut.
        let props = encode_properties([("KEYS", "k1")]);
        svc.build(&req(&props, 1300, 1_013_000)).unwrap();
        assert_eq!(
            svc.query("T", "k1", 64, 0, i64::MAX).phys_offsets,
            vec![1300, 900, 500, 100]
        );
        svc.flush().unwrap();
        assert_eq!(svc.first_unflushed_phys(), None);
        let before = svc.file_count();
        assert!(svc.delete_expired(450).unwrap() > 0);
        assert!(svc.file_count() < before);
        assert_eq!(
            svc.query("T", "k1", 64, 0, i64::MAX).phys_offsets,
            vec![1300, 900, 500]
        );
        drop(svc);
        let svc = IndexService::load(dir.path(), 3, 5).unwrap();
        assert_eq!(
            svc.query("T", "k1", 64, 0, i64::MAX).phys_offsets,
            vec![1300, 900, 500]
        );
    }
}
