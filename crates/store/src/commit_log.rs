//! The CommitLog: every message, in arrival order, in segments of `mappedFileSizeCommitLog`
//! bytes named by their 20-digit start offset (layout in [`crate::message`]).
//!
//! One writer appends under the put lock: it assigns the queue offset of each message per
//! (topic, queue), stamps the store time, and encodes the record straight into the mapped
//! segment. A record never spans two segments: when the next record (or batch) does not fit,
//! the writer fills the segment's end with a blank marker and moves to the next segment. The
//! end of the last whole record is published as `max_offset` (Release) once its bytes are in
//! place; `flushed` is everything known to be on disk.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::clock::now_ms;
use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, MappedFileQueue};
use crate::message::{
    self, encode_blank, encode_record, parse_record, sys_flag, MessageInner, Parsed, RecordStamp,
    END_FILE_MIN_BLANK_LENGTH, MAX_PROPERTIES_LENGTH, MAX_TOPIC_LENGTH,
};

/// What one append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Offset of the first record.
    pub(crate) wrote_offset: u64,
    /// Bytes of all records (blank markers not included).
    pub(crate) wrote_bytes: u64,
    /// Queue offset of the first message.
    pub(crate) queue_offset: i64,
    /// Store time stamped on every record.
    pub(crate) store_timestamp: i64,
    /// End of the last record: the flush target for this append.
    pub(crate) end_offset: u64,
}

struct Writer {
    /// Current end of the log (same as the published `max_offset`).
    pos: u64,
    /// Segment `pos` falls in, if it exists yet.
    file: Option<Arc<MappedFile>>,
    /// Next queue offset per topic and queue.
    queue_offsets: HashMap<String, HashMap<i32, i64>>,
}

/// The CommitLog.
pub(crate) struct CommitLog {
    files: MappedFileQueue,
    segment_size: u64,
    max_message_size: usize,
    writer: Mutex<Writer>,
    max_offset: AtomicU64,
    flushed: AtomicU64,
    last_store_timestamp: AtomicI64,
}

/// Where a recovery scan ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Offset of the first byte that is not part of a whole, valid record.
    pub(crate) tail: u64,
    /// Why the scan stopped there, if not at clean zeros or the end of the last segment.
    pub(crate) damage: Option<String>,
}

impl CommitLog {
    pub(crate) fn new(files: MappedFileQueue, max_message_size: usize) -> CommitLog {
        let segment_size = files.file_size();
        CommitLog {
            files,
            segment_size,
            max_message_size,
            writer: Mutex::new(Writer {
                pos: 0,
                file: None,
                queue_offsets: HashMap::new(),
            }),
            max_offset: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            last_store_timestamp: AtomicI64::new(0),
        }
    }

    pub(crate) fn files(&self) -> &MappedFileQueue {
        &self.files
    }

    pub(crate) fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// End of the last whole record.
    pub(crate) fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// Everything below this offset is on disk.
    pub(crate) fn flushed(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Store time of the last appended record (0 before the first append).
    pub(crate) fn last_store_timestamp(&self) -> i64 {
        self.last_store_timestamp.load(Ordering::Relaxed)
    }

    /// Start of the oldest segment (the max offset when there is none).
    pub(crate) fn min_offset(&self) -> u64 {
        self.files.first().map(|f| f.start()).unwrap_or_else(|| self.max_offset())
    }

    /// Sets the end of the log after recovery, and the next queue offset of each queue.
    pub(crate) fn set_recovered(&self, tail: u64, queue_offsets: HashMap<String, HashMap<i32, i64>>) {
        let mut w = self.writer.lock();
        w.pos = tail;
        w.file = self.files.find(tail);
        w.queue_offsets = queue_offsets;
        self.max_offset.store(tail, Ordering::Release);
        self.flushed.store(tail, Ordering::Release);
    }

    /// Checks one message before it is appended.
    fn validate(&self, msg: &MessageInner) -> Result<()> {
        if msg.body.len() > self.max_message_size {
            return Err(StoreError::MessageTooLarge {
                size: msg.body.len(),
                max: self.max_message_size,
            });
        }
        if msg.topic.is_empty() || msg.topic.len() > MAX_TOPIC_LENGTH {
            return Err(StoreError::IllegalMessage(format!(
                "topic must be 1..={MAX_TOPIC_LENGTH} bytes, got {}",
                msg.topic.len()
            )));
        }
        if msg.properties.len() > MAX_PROPERTIES_LENGTH {
            return Err(StoreError::IllegalMessage(format!(
                "properties are {} bytes, limit {MAX_PROPERTIES_LENGTH}",
                msg.properties.len()
            )));
        }
        Ok(())
    }

    /// Appends `msgs` as consecutive records of one segment. A batch must share one topic and
    /// queue and may not hold prepared or rolled-back transactional messages. Encoding and CRCs
    /// are computed before the put lock is taken; the lock covers offset assignment and copying.
    pub(crate) fn append(&self, msgs: &[MessageInner]) -> Result<Appended> {
        let first = msgs
            .first()
            .ok_or_else(|| StoreError::IllegalMessage("empty batch".into()))?;
        let mut lens = Vec::with_capacity(msgs.len());
        let mut crcs = Vec::with_capacity(msgs.len());
        let mut total = 0usize;
        for m in msgs {
            self.validate(m)?;
            if msgs.len() > 1 {
                if m.topic != first.topic || m.queue_id != first.queue_id {
                    return Err(StoreError::IllegalMessage(
                        "a batch must have one topic and queue".into(),
                    ));
                }
                if !counts_in_queue(m.sys_flag) {
                    return Err(StoreError::IllegalMessage(
                        "a batch cannot hold prepared or rolled-back transactional messages".into(),
                    ));
                }
            }
            let len = m.record_len();
            lens.push(len);
            crcs.push(message::body_crc(&m.body));
            total += len;
        }
        if (total + END_FILE_MIN_BLANK_LENGTH) as u64 > self.segment_size {
            return Err(StoreError::MessageTooLarge {
                size: total,
                max: self.segment_size as usize - END_FILE_MIN_BLANK_LENGTH,
            });
        }

        let mut w = self.writer.lock();
        let file = self.file_with_room(&mut w, total as u64)?;
        let store_timestamp = now_ms();
        let wrote_offset = w.pos;
        let in_queue = counts_in_queue(first.sys_flag);
        let first_qoff = {
            let per_topic = match w.queue_offsets.get_mut(first.topic.as_str()) {
                Some(t) => t,
                None => w.queue_offsets.entry(first.topic.clone()).or_default(),
            };
            let next = per_topic.entry(first.queue_id).or_insert(0);
            let q = if in_queue { *next } else { 0 };
            if in_queue {
                *next += msgs.len() as i64;
            }
            q
        };
        let mut pos = wrote_offset;
        for (i, m) in msgs.iter().enumerate() {
            let stamp = RecordStamp {
                queue_offset: if in_queue { first_qoff + i as i64 } else { 0 },
                physical_offset: pos as i64,
                store_timestamp,
                body_crc: crcs[i],
            };
            // SAFETY: we hold the put lock (sole writer) and `pos` is at or past the published
            // end, so no reader sees these bytes until `max_offset` moves past them.
            let slot = unsafe { file.slot_mut(pos - file.start(), lens[i]) };
            encode_record(m, &stamp, slot);
            pos += lens[i] as u64;
        }
        w.pos = pos;
        self.last_store_timestamp
            .store(store_timestamp, Ordering::Relaxed);
        self.max_offset.store(pos, Ordering::Release);
        Ok(Appended {
            wrote_offset,
            wrote_bytes: total as u64,
            queue_offset: first_qoff,
            store_timestamp,
            end_offset: pos,
        })
    }

    /// The segment the writer is in, with room for `len` bytes plus a blank marker; writes the
    /// blank marker and opens the next segment when needed.
    fn file_with_room(&self, w: &mut Writer, len: u64) -> Result<Arc<MappedFile>> {
        loop {
            let file = match &w.file {
                Some(f) if f.start() <= w.pos && w.pos < f.end() => Arc::clone(f),
                _ => {
                    let start = w.pos - w.pos % self.segment_size;
                    let f = match self.files.last() {
                        Some(last) if last.start() == start => last,
                        _ => self.files.create(start)?,
                    };
                    w.file = Some(Arc::clone(&f));
                    f
                }
            };
            let rel = w.pos - file.start();
            let remaining = file.size() - rel;
            if rel + len + END_FILE_MIN_BLANK_LENGTH as u64 <= file.size() {
                return Ok(file);
            }
            // SAFETY: sole writer, unpublished range (see `append`).
            let slot = unsafe { file.slot_mut(rel, END_FILE_MIN_BLANK_LENGTH) };
            encode_blank(slot, remaining as u32);
            w.pos = file.end();
            w.file = None;
            self.max_offset.store(w.pos, Ordering::Release);
        }
    }

    /// Appends raw CommitLog bytes received from a master. `offset` must be this log's end.
    pub(crate) fn append_raw(&self, offset: u64, data: &[u8]) -> Result<u64> {
        let mut w = self.writer.lock();
        if offset != w.pos {
            return Err(StoreError::ReplicationGap {
                offset,
                expected: w.pos,
            });
        }
        let mut rest = data;
        while !rest.is_empty() {
            let file = match &w.file {
                Some(f) if f.start() <= w.pos && w.pos < f.end() => Arc::clone(f),
                _ => {
                    let start = w.pos - w.pos % self.segment_size;
                    let f = match self.files.last() {
                        Some(last) if last.start() == start => last,
                        _ => self.files.create(start)?,
                    };
                    w.file = Some(Arc::clone(&f));
                    f
                }
            };
            let rel = w.pos - file.start();
            let n = rest.len().min((file.size() - rel) as usize);
            // SAFETY: sole writer (put lock), unpublished range.
            unsafe { file.write_at(rel, &rest[..n]) };
            w.pos += n as u64;
            rest = &rest[n..];
            self.max_offset.store(w.pos, Ordering::Release);
        }
        Ok(w.pos)
    }

    /// Flushes everything written so far if at least `least_pages` pages are dirty (0: always).
    /// Only the flush thread (or shutdown, after it stopped) calls this.
    pub(crate) fn flush(&self, least_pages: u32) -> Result<u64> {
        let target = self.max_offset();
        let from = self.flushed();
        if target <= from {
            return Ok(from);
        }
        let page = crate::mapped_file::OS_PAGE_SIZE;
        if least_pages > 0 && target / page - from / page < least_pages as u64 {
            return Ok(from);
        }
        self.files.flush(from, target)?;
        self.flushed.store(target, Ordering::Release);
        Ok(target)
    }

    /// Bytes `[offset, offset + size)` if they are a published part of one segment.
    pub(crate) fn read(&self, offset: u64, size: u64) -> Option<Bytes> {
        if offset + size > self.max_offset() {
            return None;
        }
        let file = self.files.find(offset)?;
        if offset + size > file.end() {
            return None;
        }
        Some(file.slice(offset - file.start(), size))
    }

    /// Published bytes from `offset` to the end of its segment or of the log, at most
    /// `max_len`.
    pub(crate) fn read_from(&self, offset: u64, max_len: u64) -> Option<Bytes> {
        let max = self.max_offset();
        if offset >= max {
            return None;
        }
        let file = self.files.find(offset)?;
        let end = max.min(file.end()).min(offset.saturating_add(max_len));
        Some(file.slice(offset - file.start(), end - offset))
    }

    /// The whole record at `offset`, if a published message starts there.
    pub(crate) fn record_at(&self, offset: u64) -> Option<Bytes> {
        let head = self.read(offset, 4)?;
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        if size < 8 {
            return None;
        }
        self.read(offset, size)
    }

    /// Store timestamp of the record at `offset`, if readable.
    pub(crate) fn store_timestamp_at(&self, offset: u64, size: u64) -> Option<i64> {
        let rec = self.read(offset, size)?;
        let sys = i32::from_be_bytes(rec.get(36..40)?.try_into().ok()?);
        let born_host = if sys & sys_flag::BORNHOST_V6_FLAG != 0 { 20 } else { 8 };
        let at = message::pos::BORN_HOST + born_host;
        Some(i64::from_be_bytes(rec.get(at..at + 8)?.try_into().ok()?))
    }

    /// Scans records from the start of the segment holding `from` (or the first segment) to
    /// the first byte that is not a whole valid record, and reports where and why it stopped.
    pub(crate) fn scan(&self, from: u64, check_crc: bool) -> ScanEnd {
        let files = self.files.files();
        let Some(first) = files.first() else {
            return ScanEnd {
                tail: from,
                damage: None,
            };
        };
        let mut idx = if from <= first.start() {
            0
        } else {
            (((from - first.start()) / self.segment_size) as usize).min(files.len() - 1)
        };
        loop {
            let file = &files[idx];
            let data = file.slice(0, file.size());
            let mut rel = 0usize;
            loop {
                let at = file.start() + rel as u64;
                match parse_record(&data[rel..], check_crc) {
                    Ok(Parsed::Message(v)) => {
                        if v.physical_offset != at as i64 {
                            return ScanEnd {
                                tail: at,
                                damage: Some(format!(
                                    "record at {at} says it is at {}",
                                    v.physical_offset
                                )),
                            };
                        }
                        rel += v.total_size as usize;
                    }
                    Ok(Parsed::Blank(n)) => {
                        if rel + n as usize != data.len() {
                            return ScanEnd {
                                tail: at,
                                damage: Some(format!("blank marker of {n} bytes at {at} does not end the segment")),
                            };
                        }
                        break;
                    }
                    Ok(Parsed::Empty) => {
                        return ScanEnd {
                            tail: at,
                            damage: None,
                        }
                    }
                    Err(e) => {
                        return ScanEnd {
                            tail: at,
                            damage: Some(e.to_string()),
                        }
                    }
                }
                if rel == data.len() {
                    break;
                }
            }
            idx += 1;
            if idx == files.len() {
                return ScanEnd {
                    tail: file.end(),
                    damage: None,
                };
            }
        }
    }

    /// Cuts the log at `tail`: later segments are removed, the rest of the segment is zeroed.
    pub(crate) fn truncate(&self, tail: u64) -> Result<()> {
        self.files.truncate(tail)
    }

    /// Whether the bytes at `offset` are zeros (nothing was written there), or `offset` is the
    /// end of the last segment. Used to trust a clean shutdown's checkpoint.
    pub(crate) fn is_clean_end(&self, offset: u64) -> bool {
        let files = self.files.files();
        match files.last() {
            None => true,
            Some(last) if last.end() == offset => true,
            Some(last) => {
                if offset < last.start() {
                    return false;
                }
                let rel = offset - last.start();
                let data = last.slice(rel, 8);
                matches!(parse_record(&data, false), Ok(Parsed::Empty))
            }
        }
    }

    /// Removes the oldest segments `n` (retention).
    pub(crate) fn remove_first(&self, n: usize) -> Result<Vec<Arc<MappedFile>>> {
        self.files.remove_first(n)
    }
}

/// Whether a message with this sys flag takes a queue offset and a ConsumeQueue unit (prepared
/// and rolled-back transactional messages do not).
pub(crate) fn counts_in_queue(flag: i32) -> bool {
    matches!(
        sys_flag::transaction_value(flag),
        sys_flag::TRANSACTION_NOT_TYPE | sys_flag::TRANSACTION_COMMIT_TYPE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageExt;

    fn log(dir: &std::path::Path, seg: u64) -> CommitLog {
        CommitLog::new(
            MappedFileQueue::load(dir, seg).unwrap().queue,
            4 * 1024 * 1024,
        )
    }

    #[test]
    fn append_assigns_offsets_and_rolls_segments() {
        let dir = tempfile::tempdir().unwrap();
        let cl = log(dir.path(), 64 * 1024);
        let msg = MessageInner::new("T", 1, vec![7u8; 1000]);
        let len = msg.record_len() as u64;
        let mut ends = Vec::new();
        for i in 0..100 {
            let a = cl.append(std::slice::from_ref(&msg)).unwrap();
            assert_eq!(a.queue_offset, i);
            ends.push(a);
        }
        // 64 KiB holds 60 records of ~1.1 KiB plus a blank marker; record 60 starts segment 2.
        let per_seg = (64 * 1024 - 8) / len;
        assert_eq!(ends[per_seg as usize].wrote_offset, 64 * 1024);
        assert_eq!(cl.files().files().len(), 2);
        let rec = cl.record_at(ends[3].wrote_offset).unwrap();
        let ext = MessageExt::decode(&rec).unwrap();
        assert_eq!(ext.queue_offset, 3);
        assert_eq!(ext.commit_log_offset as u64, ends[3].wrote_offset);
        let end = cl.scan(0, true);
        assert_eq!(end.tail, cl.max_offset());
        assert_eq!(end.damage, None);
        // Another queue starts at 0; a prepared message takes no queue offset.
        let other = MessageInner::new("T", 2, "x");
        assert_eq!(cl.append(&[other.clone()]).unwrap().queue_offset, 0);
        let mut prepared = other.clone();
        prepared.sys_flag = sys_flag::TRANSACTION_PREPARED_TYPE;
        assert_eq!(cl.append(&[prepared]).unwrap().queue_offset, 0);
        assert_eq!(cl.append(&[other]).unwrap().queue_offset, 1);
    }

    #[test]
    fn rejects_bad_messages() {
        let dir = tempfile::tempdir().unwrap();
        let cl = log(dir.path(), 64 * 1024);
        let big = MessageInner::new("T", 0, vec![0u8; 4 * 1024 * 1024 + 1]);
        assert!(matches!(
            cl.append(&[big]),
            Err(StoreError::MessageTooLarge { .. })
        ));
        let seg_big = MessageInner::new("T", 0, vec![0u8; 64 * 1024]);
        assert!(matches!(
            cl.append(&[seg_big]),
            Err(StoreError::MessageTooLarge { .. })
        ));
        let long_topic = MessageInner::new("t".repeat(128), 0, "x");
        assert!(matches!(
            cl.append(&[long_topic]),
            Err(StoreError::IllegalMessage(_))
        ));
        assert!(cl.append(&[]).is_err());
        let mixed = [MessageInner::new("A", 0, "x"), MessageInner::new("B", 0, "x")];
        assert!(cl.append(&mixed).is_err());
        assert_eq!(cl.max_offset(), 0);
    }

    #[test]
    fn scan_finds_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cl = log(dir.path(), 64 * 1024);
        let msg = MessageInner::new("T", 1, vec![7u8; 100]);
        let a = cl.append(&[msg.clone()]).unwrap();
        let b = cl.append(&[msg]).unwrap();
        let file = cl.files().last().unwrap();
        // Damage the second record's body: the scan stops at its start.
        unsafe { file.write_at(b.wrote_offset + 150, b"\xFF") };
        let end = cl.scan(0, true);
        assert_eq!(end.tail, a.end_offset);
        assert!(end.damage.unwrap().contains("CRC"));
        cl.truncate(end.tail).unwrap();
        let end = cl.scan(0, true);
        assert_eq!(end, ScanEnd { tail: a.end_offset, damage: None });
    }

    #[test]
    fn raw_append_must_continue_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let cl = log(dir.path(), 64 * 1024);
        assert!(matches!(
            cl.append_raw(5, b"x"),
            Err(StoreError::ReplicationGap { .. })
        ));
        assert_eq!(cl.append_raw(0, &[1u8; 70_000]).unwrap(), 70_000);
        assert_eq!(cl.files().files().len(), 2);
        assert_eq!(cl.read_from(60_000, 1 << 20).unwrap().len(), 64 * 1024 - 60_000);
    }
}
