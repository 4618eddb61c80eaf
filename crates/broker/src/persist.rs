//! Crash-safe JSON config files under `<storePathRootDir>/config/`: a write goes to
//! `<file>.tmp`, is fsynced, renamed over the file, and the directory is fsynced, so a crash
//! leaves either the old or the new content, never a torn one. Upstream also keeps a `.bak`
//! copy; the rename makes it unnecessary, but a `.bak` left by upstream is read when the main
//! file is missing.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::BrokerError;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `data` atomically (write temp, fsync, rename, fsync the directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BrokerError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Content of `path` (or of `path.bak` when only that exists); `None` when neither exists or
/// the file is empty.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BrokerError> {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    for candidate in [path.to_path_buf(), PathBuf::from(bak)] {
        match fs::read(&candidate) {
            Ok(data) if data.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(data) => return Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&candidate)(e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join("a.json");
        assert!(read_optional(&path).unwrap().is_none());
        write_atomic(&path, b"{\"x\":1}").unwrap();
        write_atomic(&path, b"{\"x\":2}").unwrap();
        assert_eq!(read_optional(&path).unwrap().unwrap(), b"{\"x\":2}");
        assert!(!path.with_extension("json.tmp").exists());
    }
}
