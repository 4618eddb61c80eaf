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
    self, encode_blank, encode_record, parse_record, MessageInner, MessageSysFlag, Parsed,
    RecordStamp, END_FILE_MIN_BLANK_LENGTH, MAX_PROPERTIES_LENGTH, MAX_TOPIC_LENGTH,
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

/// How the writer puts bytes into a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Encode straight into the shared mapping: no syscall per append, the fastest path when
    /// flushes are rare (`ASYNC_FLUSH`); pages are pre-faulted by the warm-up thread.
    Mmap,
    /// Encode into a staging buffer that the flush thread writes with one `pwrite` per group
    /// commit, just before its fsync; readers see records once written. Used for
    /// `SYNC_FLUSH`: pages never dirtied through a mapping need no write-protect and TLB
    /// shootdown at each fsync, which makes frequent small fsyncs several times cheaper
    /// (most of all on VMs), and one syscall per group replaces one per message.
    Pwrite,
}

struct Writer {
    /// Current end of the log (same as the published `max_offset`).
    pos: u64,
    /// `Pwrite` mode: records appended but not yet written to the file (`[max_offset, pos)`),
    /// all in `staged_file` from `staged_rel` on. The flush thread writes them with one
    /// `pwrite` per group commit.
    staged: Vec<u8>,
    staged_file: Option<Arc<MappedFile>>,
    staged_rel: u64,
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
    mode: WriteMode,
    writer: Mutex<Writer>,
    /// Held while the warm-up thread writes zeros and while staged records are written.
    zero_lock: Mutex<()>,
    max_offset: AtomicU64,
    /// End of the last appended record, readable or still staged.
    appended: AtomicU64,
    flushed: AtomicU64,
    last_store_timestamp: AtomicI64,
    warmed: AtomicU64,
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
    pub(crate) fn new(
        files: MappedFileQueue,
        max_message_size: usize,
        mode: WriteMode,
    ) -> CommitLog {
        let segment_size = files.file_size();
        CommitLog {
            files,
            segment_size,
            max_message_size,
            mode,
            zero_lock: Mutex::new(()),
            writer: Mutex::new(Writer {
                pos: 0,
                staged: Vec::new(),
                staged_file: None,
                staged_rel: 0,
                file: None,
                queue_offsets: HashMap::new(),
            }),
            max_offset: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            last_store_timestamp: AtomicI64::new(0),
            warmed: AtomicU64::new(0),
        }
    }

    pub(crate) fn files(&self) -> &MappedFileQueue {
        &self.files
    }

    pub(crate) fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub(crate) fn mode(&self) -> WriteMode {
        self.mode
    }

    /// End of the last whole record.
    pub(crate) fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// End of the last appended record, including records staged but not yet readable.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
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
        self.files
            .first()
            .map(|f| f.start())
            .unwrap_or_else(|| self.max_offset())
    }

    /// Sets the end of the log after recovery, and the next queue offset of each queue.
    pub(crate) fn set_recovered(
        &self,
        tail: u64,
        queue_offsets: HashMap<String, HashMap<i32, i64>>,
    ) {
        let mut w = self.writer.lock();
        w.pos = tail;
        w.file = self.files.find(tail);
        w.queue_offsets = queue_offsets;
        w.staged.clear();
        w.staged_file = None;
        self.max_offset.store(tail, Ordering::Release);
        self.appended.store(tail, Ordering::Release);
        self.flushed.store(tail, Ordering::Release);
    }

    /// Replaces the next queue offset of each queue (a slave becoming master).
    pub(crate) fn set_queue_offsets(&self, queue_offsets: HashMap<String, HashMap<i32, i64>>) {
        self.writer.lock().queue_offsets = queue_offsets;
    }

    /// The put lock, for a caller that must wait for a write in progress to finish.
    pub(crate) fn lock_writer(&self) -> impl Drop + '_ {
        self.writer.lock()
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
        if !crate::consume_queue::is_storable_topic(&msg.topic) {
            return Err(StoreError::IllegalMessage(format!(
                "topic {:?} cannot name a ConsumeQueue directory (`/`, NUL, `.` or `..`)",
                msg.topic
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
        // (record length, body CRC) of each message; no allocation for a single message.
        let mut one = [(0usize, 0i32)];
        let mut many = Vec::new();
        let meta: &mut [(usize, i32)] = if msgs.len() == 1 {
            &mut one
        } else {
            many.resize(msgs.len(), (0, 0));
            &mut many
        };
        let mut total = 0usize;
        for (m, slot) in msgs.iter().zip(meta.iter_mut()) {
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
            *slot = (m.record_len(), message::body_crc(&m.body));
            total += slot.0;
        }
        if (total + END_FILE_MIN_BLANK_LENGTH) as u64 > self.segment_size {
            return Err(StoreError::MessageTooLarge {
                size: total,
                max: self.segment_size as usize - END_FILE_MIN_BLANK_LENGTH,
            });
        }

        let mut guard = self.writer.lock();
        let w = &mut *guard;
        let file = self.file_with_room(w, total as u64)?;
        let store_timestamp = now_ms();
        let wrote_offset = w.pos;
        let in_queue = counts_in_queue(first.sys_flag);
        let first_qoff = match w.queue_offsets.get(first.topic.as_str()) {
            Some(t) if in_queue => t.get(&first.queue_id).copied().unwrap_or(0),
            _ => 0,
        };
        let encode_all = |dst: &mut [u8]| {
            let mut at = 0usize;
            for (i, (m, &(len, crc))) in msgs.iter().zip(meta.iter()).enumerate() {
                let stamp = RecordStamp {
                    queue_offset: if in_queue { first_qoff + i as i64 } else { 0 },
                    physical_offset: (wrote_offset + at as u64) as i64,
                    store_timestamp,
                    body_crc: crc,
                };
                encode_record(m, &stamp, &mut dst[at..at + len]);
                at += len;
            }
        };
        let rel = wrote_offset - file.start();
        match self.mode {
            WriteMode::Mmap => {
                // SAFETY: we hold the put lock (sole writer) and `rel` is at or past the
                // published end, so no reader sees these bytes until `max_offset` moves.
                encode_all(unsafe { file.slot_mut(rel, total) });
            }
            WriteMode::Pwrite => {
                if w.staged.is_empty() {
                    w.staged_file = Some(Arc::clone(&file));
                    w.staged_rel = rel;
                }
                let at = w.staged.len();
                w.staged.resize(at + total, 0);
                encode_all(&mut w.staged[at..]);
            }
        }
        if in_queue {
            let per_topic = match w.queue_offsets.get_mut(first.topic.as_str()) {
                Some(t) => t,
                None => w.queue_offsets.entry(first.topic.clone()).or_default(),
            };
            per_topic.insert(first.queue_id, first_qoff + msgs.len() as i64);
        }
        let pos = wrote_offset + total as u64;
        w.pos = pos;
        self.last_store_timestamp
            .store(store_timestamp, Ordering::Relaxed);
        if self.mode == WriteMode::Mmap {
            self.max_offset.store(pos, Ordering::Release);
        }
        self.appended.store(pos, Ordering::Release);
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
            let file = self.writer_file(w)?;
            let rel = w.pos - file.start();
            let remaining = file.size() - rel;
            if rel + len + END_FILE_MIN_BLANK_LENGTH as u64 <= file.size() {
                return Ok(file);
            }
            let mut blank = [0u8; END_FILE_MIN_BLANK_LENGTH];
            encode_blank(&mut blank, remaining as u32);
            match self.mode {
                // SAFETY: sole writer (put lock), unpublished range.
                WriteMode::Mmap => unsafe { file.write_at(rel, &blank) },
                WriteMode::Pwrite => {
                    if w.staged.is_empty() {
                        w.staged_file = Some(Arc::clone(&file));
                        w.staged_rel = rel;
                    }
                    w.staged.extend_from_slice(&blank);
                }
            }
            w.pos = file.end();
            w.file = None;
            self.appended.store(w.pos, Ordering::Release);
            // Staged bytes never span two segments.
            self.commit_locked(w)?;
        }
    }

    /// Writes the staged records (`Pwrite` mode) and publishes the end of the log. Caller
    /// holds the put lock.
    fn commit_locked(&self, w: &mut Writer) -> Result<()> {
        if !w.staged.is_empty() {
            if let Some(file) = &w.staged_file {
                let _z = self.zero_lock.lock();
                file.write_through(w.staged_rel, &w.staged)?;
            }
            w.staged.clear();
            w.staged_file = None;
        }
        self.max_offset.store(w.pos, Ordering::Release);
        Ok(())
    }

    /// The segment holding the writer's position, opened (or created) if needed.
    fn writer_file(&self, w: &mut Writer) -> Result<Arc<MappedFile>> {
        if let Some(f) = &w.file {
            if f.start() <= w.pos && w.pos < f.end() {
                return Ok(Arc::clone(f));
            }
        }
        let start = w.pos - w.pos % self.segment_size;
        let f = match self.files.find(start) {
            Some(f) => f,
            None => self.files.create(start)?,
        };
        w.file = Some(Arc::clone(&f));
        Ok(f)
    }

    /// Prepares the region up to `ahead` bytes past the end of the log (but not beyond the
    /// next segment), creating the next segment when the region reaches it. `Mmap` mode: faults
    /// the pages in for writing, so appends take no page faults (zero-filling a fresh page
    /// costs about as much as writing it). `Pwrite` mode (`warmMapedFileEnable`): writes zeros
    /// to disk, so a group commit's fsync finds allocated, initialized blocks and has no block
    /// or extent metadata to write. Returns whether it did anything. Warm-up thread only.
    pub(crate) fn warm(&self, ahead: u64) -> Result<bool> {
        const CHUNK: u64 = 2 * 1024 * 1024;
        let page = crate::mapped_file::OS_PAGE_SIZE;
        let head = self.appended();
        // At most up to the end of the segment after the current one.
        let target = (head + ahead).min(head - head % self.segment_size + 2 * self.segment_size);
        let mut did = false;
        loop {
            let floor = match self.mode {
                WriteMode::Mmap => head - head % page,
                WriteMode::Pwrite => head.div_ceil(page) * page,
            };
            let from = self.warmed.load(Ordering::Acquire).max(floor);
            if from >= target {
                return Ok(did);
            }
            let start = from - from % self.segment_size;
            let file = match self.files.find(from) {
                Some(f) => f,
                None => self.files.create(start)?,
            };
            let end = (from + CHUNK).min(file.end()).min(target);
            match self.mode {
                WriteMode::Mmap => file.populate_for_write(from - file.start(), end - from)?,
                WriteMode::Pwrite => {
                    {
                        // No commit runs while the zeros are written, and they only go past
                        // every appended record, so they can never land on data.
                        let _z = self.zero_lock.lock();
                        if from < self.appended() {
                            return Ok(did);
                        }
                        file.write_zeros(from - file.start(), end - from)?;
                    }
                    file.write_out(from - file.start(), end - from)?;
                }
            }
            self.warmed.store(end, Ordering::Release);
            did = true;
        }
    }

    /// End of the region [`CommitLog::warm`] has faulted in.
    pub(crate) fn warmed(&self) -> u64 {
        self.warmed.load(Ordering::Acquire)
    }

    /// Removes segments created ahead of the writer (at shutdown).
    pub(crate) fn remove_unused_segments(&self) -> Result<()> {
        self.files.remove_from(self.max_offset())
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
            let file = self.writer_file(&mut w)?;
            let rel = w.pos - file.start();
            let n = rest.len().min((file.size() - rel) as usize);
            match self.mode {
                // SAFETY: sole writer (put lock), unpublished range.
                WriteMode::Mmap => unsafe { file.write_at(rel, &rest[..n]) },
                WriteMode::Pwrite => file.write_through(rel, &rest[..n])?,
            }
            w.pos += n as u64;
            rest = &rest[n..];
            self.max_offset.store(w.pos, Ordering::Release);
            self.appended.store(w.pos, Ordering::Release);
        }
        Ok(w.pos)
    }

    /// `Pwrite` mode: writes the staged records to the page cache (no-op in `Mmap` mode).
    /// On failure (e.g. [`StoreError::DiskFull`]) the records stay staged, so calling this
    /// again retries the same write: nothing is lost, since the bytes never reached the
    /// file. Only the flush thread (or shutdown, after it stopped) calls this.
    pub(crate) fn commit(&self) -> Result<()> {
        if self.mode == WriteMode::Pwrite {
            let mut w = self.writer.lock();
            self.commit_locked(&mut w)?;
        }
        Ok(())
    }

    /// Flushes everything written so far if at least `least_pages` pages are dirty (0: always).
    /// Only the flush thread (or shutdown, after it stopped) calls this.
    pub(crate) fn flush(&self, least_pages: u32) -> Result<u64> {
        if self.mode == WriteMode::Pwrite {
            let mut w = self.writer.lock();
            self.commit_locked(&mut w)?;
        }
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
        let born_host = if sys & MessageSysFlag::BORNHOST_V6_FLAG != 0 {
            20
        } else {
            8
        };
        let at = message::pos::BORN_HOST + born_host;
        Some(i64::from_be_bytes(rec.get(at..at + 8)?.try_into().ok()?))
    }

    /// Scans records from the start of the segment holding `from` (or the first segment) to
    /// the first byte that is not a whole valid record, and reports where and why it stopped.
    ///
    /// `limit` is where real bytes end (the original length of a last file that was found
    /// short and extended with zeros): a record reaching past it is torn, even when its body
    /// CRC holds (the CRC does not cover the topic and properties at the end of a record).
    pub(crate) fn scan(&self, from: u64, check_crc: bool, limit: u64) -> ScanEnd {
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
                        if at + v.total_size as u64 > limit {
                            return ScanEnd {
                                tail: at,
                                damage: Some(format!(
                                    "record at {at} reaches past the end of the file at {limit}"
                                )),
                            };
                        }
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
                                damage: Some(format!(
                                    "blank marker of {n} bytes at {at} does not end the segment"
                                )),
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
        if files.last().is_some_and(|l| offset > l.end()) {
            return false;
        }
        // Zeros at `offset`, and at the start of every segment made ahead of the writer.
        files.iter().filter(|f| f.end() > offset).all(|f| {
            let at = offset.max(f.start()) - f.start();
            matches!(parse_record(&f.slice(at, 8), false), Ok(Parsed::Empty))
        })
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
        MessageSysFlag::transaction_value(flag),
        MessageSysFlag::TRANSACTION_NOT_TYPE | MessageSysFlag::TRANSACTION_COMMIT_TYPE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageExt;

    fn log(dir: &std::path::Path, seg: u64) -> CommitLog {
        log_with(dir, seg, WriteMode::Mmap)
    }

    fn log_with(dir: &std::path::Path, seg: u64, mode: WriteMode) -> CommitLog {
        CommitLog::new(
            MappedFileQueue::load(dir, seg, mode == WriteMode::Mmap)
                .unwrap()
                .queue,
            4 * 1024 * 1024,
            mode,
        )
    }

    #[test]
    fn pwrite_and_mmap_modes_write_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ma, mb) = (
            log_with(a.path(), 64 * 1024, WriteMode::Mmap),
            log_with(b.path(), 64 * 1024, WriteMode::Pwrite),
        );
        let msg = MessageInner::new("T", 1, vec![5u8; 3000]);
        for _ in 0..30 {
            let (x, y) = (
                ma.append(std::slice::from_ref(&msg)).unwrap(),
                mb.append(std::slice::from_ref(&msg)).unwrap(),
            );
            assert_eq!(
                (x.wrote_offset, x.queue_offset),
                (y.wrote_offset, y.queue_offset)
            );
        }
        // Staged records are invisible until the flush writes them.
        assert!(mb.max_offset() < ma.max_offset());
        assert_eq!(mb.flush(0).unwrap(), ma.max_offset());
        assert_eq!(ma.max_offset(), mb.max_offset());
        for off in [0, 64 * 1024] {
            let (x, y) = (
                ma.read_from(off, 1 << 20).unwrap(),
                mb.read_from(off, 1 << 20).unwrap(),
            );
            // Store timestamps may differ; compare everything else of the first record.
            assert_eq!(x.len(), y.len());
            assert_eq!(&x[..56], &y[..56]);
            assert_eq!(&x[64..3000], &y[64..3000]);
        }
        assert_eq!(mb.scan(0, true, u64::MAX).damage, None);
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
        let end = cl.scan(0, true, u64::MAX);
        assert_eq!(end.tail, cl.max_offset());
        assert_eq!(end.damage, None);
        // Another queue starts at 0; a prepared message takes no queue offset.
        let other = MessageInner::new("T", 2, "x");
        assert_eq!(
            cl.append(std::slice::from_ref(&other))
                .unwrap()
                .queue_offset,
            0
        );
        let mut prepared = other.clone();
        prepared.sys_flag = MessageSysFlag::TRANSACTION_PREPARED_TYPE;
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
        let mixed = [
            MessageInner::new("A", 0, "x"),
            MessageInner::new("B", 0, "x"),
        ];
        assert!(cl.append(&mixed).is_err());
        assert_eq!(cl.max_offset(), 0);
    }

    #[test]
    fn scan_finds_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cl = log(dir.path(), 64 * 1024);
        let msg = MessageInner::new("T", 1, vec![7u8; 100]);
        let a = cl.append(std::slice::from_ref(&msg)).unwrap();
        let b = cl.append(&[msg]).unwrap();
        let file = cl.files().last().unwrap();
        // Damage the second record's body: the scan stops at its start.
        unsafe { file.write_at(b.wrote_offset + 150, b"\xFF") };
        let end = cl.scan(0, true, u64::MAX);
        assert_eq!(end.tail, a.end_offset);
        assert!(end.damage.unwrap().contains("CRC"));
        cl.truncate(end.tail).unwrap();
        let end = cl.scan(0, true, u64::MAX);
        assert_eq!(
            end,
            ScanEnd {
                tail: a.end_offset,
                damage: None
            }
        );
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
        assert_eq!(
            cl.read_from(60_000, 1 << 20).unwrap().len(),
            64 * 1024 - 60_000
        );
    }
}
