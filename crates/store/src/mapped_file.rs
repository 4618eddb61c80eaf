//! Memory-mapped, fixed-size files named by the 20-digit offset of their first byte, and the
//! ordered queue of them that makes up a CommitLog or a ConsumeQueue.
//!
//! Why mmap: a 1 KiB append must cost about a memcpy to reach 1M msg/s, and a pull must hand
//! out the stored bytes without copying them. Under `ASYNC_FLUSH` writes go straight into the
//! shared mapping (no syscall); reads are always [`Bytes`] slices that keep the mapping alive,
//! and a flush is an `msync` of the dirty range. Files written through the mapping are
//! preallocated with `fallocate` when created, so a full disk is an error at creation time
//! rather than a `SIGBUS` on a later page fault. Under `SYNC_FLUSH` the CommitLog is written
//! with `pwrite` instead (see `commit_log::WriteMode`): it reports a full disk as an error,
//! and fsyncs are much cheaper for pages never dirtied through a mapping.
//!
//! Concurrency contract (the reason for the `unsafe` below): each file has one writer at a
//! time (the CommitLog's put lock, or the dispatcher for ConsumeQueues), which only writes at
//! or beyond the file's published end; readers only read below it, after loading the published
//! end with `Acquire` (the writer stores it with `Release` after writing). Bytes once published
//! are never written again while the store is open, except by recovery, which runs before any
//! reader exists.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};
use parking_lot::RwLock;

use crate::error::{Result, StoreError};

/// Size of an OS page; flush thresholds count these.
pub(crate) const OS_PAGE_SIZE: u64 = 4096;

/// Owner handed to [`Bytes::from_owner`]: keeps the mapping alive while any slice exists.
struct MapOwner(Arc<MmapRaw>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` bytes while `self.0` lives. `Bytes::from_owner`
        // calls this once, when the file is mapped and before any writer exists; afterwards
        // only sub-slices of published (immutable) bytes are dereferenced.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

/// One mapped file.
pub(crate) struct MappedFile {
    path: PathBuf,
    start: u64,
    size: u64,
    /// Whether every block is reserved (see [`MappedFile::open`]); only then may the file be
    /// written through the mapping.
    prealloc: bool,
    file: File,
    map: Arc<MmapRaw>,
    view: Bytes,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("start", &self.start)
            .field("size", &self.size)
            .finish()
    }
}

/// Name of the file whose first byte is at `offset`.
pub(crate) fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

impl MappedFile {
    /// Opens (creating if needed) `path` as a file of exactly `size` bytes and maps it.
    /// Returns the file and its length before it was extended.
    /// With `prealloc`, disk blocks are reserved (`fallocate`) for the whole file before it is
    /// mapped, also for a file that already has its full length (it may be sparse: written by
    /// a `SYNC_FLUSH` run, or copied), so a full disk is a [`StoreError::DiskFull`] here and
    /// never a `SIGBUS` on a later write through the mapping. Without `prealloc` the file is
    /// sparse and only ever written with `pwrite` (which reports a full disk as an error).
    pub(crate) fn open(
        path: &Path,
        start: u64,
        size: u64,
        prealloc: bool,
    ) -> Result<(MappedFile, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let old_len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        if old_len > size {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: start,
                reason: format!("file is {old_len} bytes, larger than the configured {size}"),
            });
        }
        let grown = if prealloc {
            // Reserving blocks that are already allocated is a cheap no-op.
            preallocate(&file, 0, size)
        } else if old_len < size {
            file.set_len(size)
        } else {
            Ok(())
        };
        if let Err(e) = grown {
            let err = StoreError::io(path, e);
            if old_len == 0 {
                let _ = fs::remove_file(path);
            }
            return Err(err);
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| StoreError::io(path, e))?;
        let map = Arc::new(map);
        let view = Bytes::from_owner(MapOwner(Arc::clone(&map)));
        Ok((
            MappedFile {
                path: path.to_path_buf(),
                start,
                size,
                prealloc,
                file,
                map,
                view,
            },
            old_len,
        ))
    }

    /// Offset of the first byte.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Offset one past the last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Zero-copy slice `[pos, pos + len)` (file-relative).
    ///
    /// The caller must only ask for published bytes (see the module docs).
    pub(crate) fn slice(&self, pos: u64, len: u64) -> Bytes {
        let end = (pos + len).min(self.size);
        let pos = pos.min(end);
        self.view.slice(pos as usize..end as usize)
    }

    /// Mutable access to `[pos, pos + len)` (file-relative) for writing.
    ///
    /// # Safety
    /// The caller must be the file's only writer and the range must be unpublished: no reader
    /// may look at it until the writer publishes it, and no other `&mut` to it may exist.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slot_mut(&self, pos: u64, len: usize) -> &mut [u8] {
        assert!(
            pos + len as u64 <= self.size,
            "write past the end of {:?}",
            self.path
        );
        std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos as usize), len)
    }

    /// Writes `data` at `pos` (file-relative).
    ///
    /// # Safety
    /// As [`MappedFile::slot_mut`].
    pub(crate) unsafe fn write_at(&self, pos: u64, data: &[u8]) {
        self.slot_mut(pos, data.len()).copy_from_slice(data);
    }

    /// Writes `data` at `pos` (file-relative) with `pwrite`, through the page cache.
    pub(crate) fn write_through(&self, pos: u64, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if pos + data.len() as u64 > self.size {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                offset: self.start + pos,
                reason: "write past the end of the file".into(),
            });
        }
        self.file
            .write_all_at(data, pos)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// Writes zeros to `[pos, pos + len)` (file-relative) with `pwrite`.
    pub(crate) fn write_zeros(&self, pos: u64, len: u64) -> Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = pos;
        while at < pos + len {
            let n = (pos + len - at).min(ZEROS.len() as u64) as usize;
            self.write_through(at, &ZEROS[..n])?;
            at += n as u64;
        }
        Ok(())
    }

    /// Starts and waits for the write-out of `[pos, pos + len)` (file-relative), without the
    /// cache flush of an fsync.
    pub(crate) fn write_out(&self, pos: u64, len: u64) -> Result<()> {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                pos as libc::off64_t,
                len as libc::off64_t,
                flags,
            )
        };
        if rc != 0 {
            return Err(StoreError::io(&self.path, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Makes `[from, to)` (file-relative) durable.
    pub(crate) fn flush_range(&self, from: u64, to: u64) -> Result<()> {
        let to = to.min(self.size);
        if to <= from {
            return Ok(());
        }
        self.map
            .flush_range(from as usize, (to - from) as usize)
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// Sets `[from, size)` (file-relative) to zeros, keeping the blocks allocated. Used by
    /// recovery to cut a torn tail, so stale bytes behind the cut can never be read as records.
    pub(crate) fn zero_from(&self, from: u64) -> Result<()> {
        if from >= self.size {
            return Ok(());
        }
        let len = self.size - from;
        let fd = self.file.as_raw_fd();
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            // No ZERO_RANGE support (tmpfs), or no room to zero a sparse range. Never write
            // through the mapping here: a hole that cannot get a block would be a SIGBUS.
            // A sparse file loses the range's blocks instead (a hole reads as zeros and needs
            // no space); otherwise zeros are written with `pwrite`, which reports a full disk
            // as an error. Recovery runs alone, so nobody reads these bytes meanwhile.
            // SAFETY: plain syscall on an fd we own.
            let punched = !self.prealloc
                && unsafe {
                    libc::fallocate(
                        fd,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        from as libc::off_t,
                        len as libc::off_t,
                    )
                } == 0;
            if !punched {
                self.write_zeros(from, len)?;
            }
        }
        self.flush_range(from, self.size)
    }

    /// Faults `[pos, pos + len)` (file-relative) in for writing, so later writes there take no
    /// page fault. Contents are unchanged, so this is safe while the writer works nearby.
    pub(crate) fn populate_for_write(&self, pos: u64, len: u64) -> Result<()> {
        let page = OS_PAGE_SIZE as usize;
        let start = (pos as usize) & !(page - 1);
        let end = ((pos + len).min(self.size)) as usize;
        if end <= start {
            return Ok(());
        }
        // SAFETY: the range lies inside our mapping; MADV_POPULATE_WRITE does not change data.
        let rc = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast(),
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc != 0 {
            return Err(StoreError::io(&self.path, std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Refuses (as [`StoreError::DiskFull`]) a sparse file whose holes the file system could
    /// not back right now. Call it before the first access through the mapping of a file
    /// that is not preallocated and may be read past its written end (the last CommitLog
    /// segment, which recovery scans): on tmpfs even a read fault on a hole allocates a page,
    /// and with no page left it is a `SIGBUS`. Preallocated files have no holes.
    pub(crate) fn ensure_backed(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        if self.prealloc {
            return Ok(());
        }
        let meta = self
            .file
            .metadata()
            .map_err(|e| StoreError::io(&self.path, e))?;
        let holes = self.size.saturating_sub(meta.blocks().saturating_mul(512));
        match free_bytes(&self.file) {
            Some(free) if holes > 0 && free < holes => {
                tracing::error!(
                    file = %self.path.display(),
                    unbacked = holes,
                    free,
                    "not enough free space to back this file; free space and restart"
                );
                Err(StoreError::DiskFull {
                    path: self.path.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Last modification time of the file.
    pub(crate) fn modified(&self) -> Result<SystemTime> {
        self.file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| StoreError::io(&self.path, e))
    }

    /// Removes the file from disk; the mapping lives until the last slice is dropped.
    pub(crate) fn remove(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }
}

/// Reserves disk blocks for `[offset, offset + len)` and sets the file length.
fn preallocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // The file system cannot preallocate: fall back to a sparse file, but only when the
        // free space could hold the whole range (a best effort: space can still run out
        // later, which is why file systems that can preallocate are preferred).
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            if free_bytes(file).is_some_and(|free| free < len) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            file.set_len(offset + len)
        }
        _ => Err(err),
    }
}

/// Bytes an unprivileged writer may still allocate on the file system holding `file`.
fn free_bytes(file: &File) -> Option<u64> {
    // SAFETY: `st` is a plain C struct filled by fstatvfs; read only on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Ordered files covering one contiguous offset range, each `file_size` bytes.
pub(crate) struct MappedFileQueue {
    dir: PathBuf,
    file_size: u64,
    prealloc: bool,
    files: RwLock<Vec<Arc<MappedFile>>>,
}

/// What loading a queue found.
pub(crate) struct Loaded {
    pub(crate) queue: MappedFileQueue,
    /// Length of the last file before it was extended to full size, if it was short (a file
    /// cut by hand or by a crash while it was created).
    pub(crate) short_last: Option<u64>,
}

impl MappedFileQueue {
    /// Loads every file of `dir` (creating `dir` if needed). Files must be contiguous and of
    /// full size, except that the last may be short; it is then extended with zeros.
    /// `prealloc` as in [`MappedFile::open`].
    pub(crate) fn load(dir: &Path, file_size: u64, prealloc: bool) -> Result<Loaded> {
        durable::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            match (name.len() == 20, name.parse::<u64>()) {
                (true, Ok(start)) => names.push(start),
                _ => tracing::warn!(dir = %dir.display(), file = %name, "ignoring unexpected file"),
            }
        }
        names.sort_unstable();
        let mut files = Vec::with_capacity(names.len());
        let mut short_last = None;
        for (i, &start) in names.iter().enumerate() {
            let path = dir.join(file_name(start));
            if start % file_size != 0 {
                return Err(StoreError::Corrupt {
                    path,
                    offset: start,
                    reason: format!("start offset is not a multiple of the file size {file_size}"),
                });
            }
            if let Some(prev) = files.last().map(|f: &Arc<MappedFile>| f.end()) {
                if prev != start {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: prev,
                        reason: format!("missing file: previous file ends at {prev}"),
                    });
                }
            }
            let is_last = i + 1 == names.len();
            let len = fs::metadata(&path)
                .map_err(|e| StoreError::io(&path, e))?
                .len();
            if len != file_size && !is_last {
                return Err(StoreError::Corrupt {
                    path,
                    offset: start,
                    reason: format!("file is {len} bytes, expected {file_size}"),
                });
            }
            let (mf, old_len) = MappedFile::open(&path, start, file_size, prealloc)?;
            if is_last {
                // Recovery reads the last file past its written end.
                mf.ensure_backed()?;
            }
            if old_len < file_size {
                tracing::warn!(file = %path.display(), old_len, "last file was short; extended with zeros");
                short_last = Some(old_len);
            }
            files.push(Arc::new(mf));
        }
        Ok(Loaded {
            queue: MappedFileQueue {
                dir: dir.to_path_buf(),
                file_size,
                prealloc,
                files: RwLock::new(files),
            },
            short_last,
        })
    }

    pub(crate) fn file_size(&self) -> u64 {
        self.file_size
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.files.read().is_empty()
    }

    pub(crate) fn first(&self) -> Option<Arc<MappedFile>> {
        self.files.read().first().cloned()
    }

    pub(crate) fn last(&self) -> Option<Arc<MappedFile>> {
        self.files.read().last().cloned()
    }

    /// Snapshot of all files, oldest first.
    pub(crate) fn files(&self) -> Vec<Arc<MappedFile>> {
        self.files.read().clone()
    }

    /// The file holding `offset`, if any.
    pub(crate) fn find(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let files = self.files.read();
        let first = files.first()?;
        if offset < first.start() {
            return None;
        }
        let idx = ((offset - first.start()) / self.file_size) as usize;
        files
            .get(idx)
            .filter(|f| f.start() <= offset && offset < f.end())
            .cloned()
    }

    /// The file starting at `start`: the last file if it starts there, else a new file, which
    /// must follow the last one (any multiple of the file size when the queue is empty).
    pub(crate) fn create(&self, start: u64) -> Result<Arc<MappedFile>> {
        let mut files = self.files.write();
        if let Some(last) = files.last() {
            if last.start() == start {
                return Ok(Arc::clone(last));
            }
            if last.end() != start {
                return Err(StoreError::Corrupt {
                    path: self.dir.join(file_name(start)),
                    offset: start,
                    reason: format!(
                        "new file would not follow the last one (ends at {})",
                        last.end()
                    ),
                });
            }
        }
        let path = self.dir.join(file_name(start));
        let (mf, old_len) = MappedFile::open(&path, start, self.file_size, self.prealloc)?;
        if let Err(e) = mf.ensure_backed() {
            if old_len == 0 {
                let _ = fs::remove_file(&path);
            }
            return Err(e);
        }
        // The new file's name: without it a power cut loses the whole file, synced or not.
        durable::sync_dir(&self.dir)?;
        let mf = Arc::new(mf);
        files.push(Arc::clone(&mf));
        Ok(mf)
    }

    /// Removes files that start at or after `offset` (files created ahead of the writer).
    pub(crate) fn remove_from(&self, offset: u64) -> Result<()> {
        let mut files = self.files.write();
        while files.last().is_some_and(|f| f.start() >= offset) {
            if let Some(f) = files.pop() {
                f.remove()?;
            }
        }
        Ok(())
    }

    /// Makes `[from, to)` durable across however many files it spans.
    pub(crate) fn flush(&self, from: u64, to: u64) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        for f in self.files() {
            if f.end() <= from || f.start() >= to {
                continue;
            }
            let lo = from.max(f.start()) - f.start();
            let hi = to.min(f.end()) - f.start();
            f.flush_range(lo, hi)?;
        }
        Ok(())
    }

    /// Removes files that start at or after `offset` and zeroes the file holding `offset` from
    /// there on. Recovery only.
    pub(crate) fn truncate(&self, offset: u64) -> Result<()> {
        self.remove_from(offset)?;
        let files = self.files.read();
        if let Some(last) = files.last() {
            if offset < last.end() {
                last.zero_from(offset - last.start())?;
            }
        }
        Ok(())
    }

    /// Removes the first `n` files (retention). Returns the removed files.
    pub(crate) fn remove_first(&self, n: usize) -> Result<Vec<Arc<MappedFile>>> {
        let mut files = self.files.write();
        let n = n.min(files.len());
        let removed: Vec<_> = files.drain(..n).collect();
        drop(files);
        for f in &removed {
            f.remove()?;
        }
        Ok(removed)
    }

    /// Removes every file and the directory.
    pub(crate) fn destroy(&self) -> Result<()> {
        let mut files = self.files.write();
        for f in files.drain(..) {
            f.remove()?;
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&self.dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_find_flush_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let q = MappedFileQueue::load(dir.path(), 4096, true).unwrap().queue;
        assert!(q.is_empty());
        let a = q.create(0).unwrap();
        let b = q.create(4096).unwrap();
        assert!(q.create(0).is_err());
        unsafe {
            a.write_at(10, b"abc");
            b.write_at(0, b"xyz");
        }
        q.flush(0, 8192).unwrap();
        assert_eq!(&q.find(10).unwrap().slice(10, 3)[..], b"abc");
        assert_eq!(q.find(4096).unwrap().start(), 4096);
        assert!(q.find(8192).is_none());
        assert_eq!(
            fs::read(dir.path().join("00000000000000004096"))
                .unwrap()
                .len(),
            4096
        );
        q.truncate(11).unwrap();
        assert_eq!(q.files().len(), 1);
        assert_eq!(&a.slice(10, 3)[..], b"a\0\0");
        // Reload: a short last file is extended and reported.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join("00000000000000000000"))
            .unwrap();
        f.set_len(100).unwrap();
        drop((a, b, q));
        let loaded = MappedFileQueue::load(dir.path(), 4096, true).unwrap();
        assert_eq!(loaded.short_last, Some(100));
        assert_eq!(loaded.queue.last().unwrap().slice(10, 1)[0], b'a');
    }

    #[test]
    fn gaps_and_bad_sizes_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(file_name(0)), vec![0u8; 4096]).unwrap();
        fs::write(dir.path().join(file_name(8192)), vec![0u8; 4096]).unwrap();
        assert!(matches!(
            MappedFileQueue::load(dir.path(), 4096, true),
            Err(StoreError::Corrupt { .. })
        ));
        fs::remove_file(dir.path().join(file_name(8192))).unwrap();
        fs::write(dir.path().join(file_name(4096)), vec![0u8; 4096]).unwrap();
        fs::write(dir.path().join(file_name(0)), vec![0u8; 100]).unwrap();
        assert!(matches!(
            MappedFileQueue::load(dir.path(), 4096, true),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
