//! Small files that must survive a crash whole: the broker's config files, the NameServer's KV
//! configuration, a broadcasting consumer's local offsets. One implementation for all of them.
//!
//! [`write_atomic`] writes a temporary file whose name no other write uses
//! (`<file>.tmp.<pid>.<n>`), fsyncs it, renames it over the file and fsyncs the directory, so a
//! crash leaves either the old or the new content, never a torn one, and concurrent writes of
//! one path never truncate each other's temporary file. Which of two concurrent writes ends up
//! last is the caller's business (the broker gives each file one writer thread).
//! [`remove_stale_temps`] clears what a process that died mid-write left behind, and
//! [`read_optional`] reads a file that may not exist yet, falling back to upstream's `.bak`.
//! [`sync_dir`] and [`create_dir_all`] make names durable (new directories, new files of the
//! store): after a power cut a name survives only once its directory was fsynced.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// An I/O failure on a named file.
#[derive(Debug, Error)]
#[error("I/O error on {path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Distinguishes the temporary files of this process's writes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<file>.tmp.`: the prefix of every temporary file of `path`.
fn temp_prefix(path: &Path) -> OsString {
    let mut prefix = path.file_name().unwrap_or_default().to_owned();
    prefix.push(".tmp.");
    prefix
}

/// `<path>.tmp.<pid>.<n>`: unique among concurrent writes in this process and others.
fn temp_path(path: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = temp_prefix(path);
    name.push(format!("{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `data` atomically: writes a temporary file of its own beside it (the
/// directory is created if needed), fsyncs it, renames it over `path` and fsyncs the
/// directory. Durable when it returns `Ok`; on an error `path` is unchanged and the temporary
/// file is removed. Blocks on the disk: not for async runtime threads.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    let dir = parent_dir(path);
    create_dir_all(dir)?;
    let tmp = temp_path(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .map_err(at(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(at(path)));
    if let Err(e) = written {
        // Best effort: the file may not even have been created.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Fsyncs the directory `dir`: the names created, renamed or removed in it so far are
/// durable when it returns `Ok` (an fsync of a file does not make its name durable).
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// [`fs::create_dir_all`] whose result survives a power cut: the parent of every directory
/// it creates is fsynced, so each new name is durable when it returns `Ok`. A directory that
/// already existed is left as it is.
pub fn create_dir_all(dir: &Path) -> Result<(), FileError> {
    let mut missing = Vec::new();
    let mut at_dir = dir;
    while !at_dir.is_dir() {
        missing.push(at_dir);
        match at_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at_dir = parent,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(at(dir))?;
    // Outermost first: a name is only reachable once its parent's name is durable.
    for created in missing.iter().rev() {
        sync_dir(parent_dir(created))?;
    }
    Ok(())
}

/// Removes the temporary files of `path` that another process left when it died mid-write
/// (`<file>.tmp.<pid>.<n>` with a pid other than ours). Call it only when no other live
/// process writes `path` (the broker's store lock, for example, guarantees that). Best effort:
/// what cannot be listed or removed is logged; returns how many files were removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let prefix = temp_prefix(path);
    let prefix = prefix.to_string_lossy();
    let own = format!("{prefix}{}.", std::process::id());
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(prefix.as_ref()) || name.starts_with(&own) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                removed += 1;
                tracing::info!(file = %entry.path().display(), "removed a temporary file left by a crash");
            }
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temporary file")
            }
        }
    }
    removed
}

/// `<path>.bak`, upstream's backup copy of a config file.
pub fn bak_path(path: &Path) -> PathBuf {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    PathBuf::from(bak)
}

/// Content of `path`, or of `path.bak` when only that exists (upstream keeps one); `None` when
/// neither exists or holds more than whitespace.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    for candidate in [path.to_path_buf(), bak_path(path)] {
        match fs::read(&candidate) {
            Ok(data) if data.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(data) => return Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(at(&candidate)(e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn write_then_read_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join("a.json");
        assert!(read_optional(&path).unwrap().is_none());
        write_atomic(&path, b"{\"x\":1}").unwrap();
        write_atomic(&path, b"{\"x\":2}").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"{\"x\":2}");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("a.json")]);
    }

    #[test]
    fn create_dir_all_creates_nested_directories_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b").join("c");
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all(&nested).unwrap();
        let file = dir.path().join("a").join("f");
        fs::write(&file, b"x").unwrap();
        assert!(create_dir_all(&file.join("d")).is_err());
        sync_dir(&nested).unwrap();
    }

    #[test]
    fn the_backup_is_read_when_the_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        fs::write(bak_path(&path), b"old").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"old");
        fs::write(&path, b"  \n").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"old");
    }

    /// A fixed temporary name fails this: writers truncate and rename each other's file.
    #[test]
    fn concurrent_writers_never_fail_or_tear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.json");
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|w| vec![b'a' + w; 64 * 1024]).collect();
        write_atomic(&path, &payloads[0]).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut torn = 0;
                while !stop.load(Ordering::Relaxed) {
                    let data = fs::read(&path).unwrap();
                    if !payloads.contains(&data) {
                        torn += 1;
                    }
                }
                torn
            });
            let writers: Vec<_> = payloads
                .iter()
                .map(|p| s.spawn(|| (0..30).filter(|_| write_atomic(&path, p).is_err()).count()))
                .collect();
            let failed: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(failed, 0, "concurrent writes failed");
            assert_eq!(reader.join().unwrap(), 0, "a reader saw a torn file");
        });
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_a_dead_writers_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let stale = dir.path().join("topics.json.tmp.4000000000.7");
        let ours = dir
            .path()
            .join(format!("topics.json.tmp.{}.3", std::process::id()));
        let other_file = dir.path().join("offsets.json.tmp.4000000000.1");
        for f in [&stale, &ours, &other_file] {
            fs::write(f, b"{").unwrap();
        }
        assert_eq!(remove_stale_temps(&path), 1);
        assert!(!stale.exists());
        assert!(ours.exists(), "a write of this process may be in flight");
        assert!(
            other_file.exists(),
            "another file's temporary files are its own"
        );
    }
}
