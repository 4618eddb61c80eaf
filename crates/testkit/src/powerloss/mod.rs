//! [`PowerLossDisk`]: a FUSE file system whose writes are volatile until synced, and a
//! [`PowerLossDisk::power_cut`] that drops whatever was not. A test runs real code (a broker
//! in a child process) with its data under [`PowerLossDisk::path`], kills it, cuts the power
//! and starts it again on what survived: a missing `fsync`, `fdatasync`, `msync` or directory
//! fsync then shows as lost data, which a SIGKILL alone never shows (the page cache outlives
//! a killed process).
//!
//! This module owns the mount and the cut; [`model`] owns the durability model (which
//! operations are volatile, what a cut keeps: read its module comment) and [`fs`] the
//! translation of kernel requests into it. The data lives in memory and outlives mounts:
//! the disk handle and each mount's file system share one model.
//!
//! A cut, in this order, each step bounded by [`STEP_TIMEOUT`] (a step that hangs fails the
//! test instead of hanging it):
//! 1. the caller has SIGKILLed and reaped every process using the disk;
//! 2. the FUSE connection is aborted (`/sys/fs/fuse/connections/<dev>/abort`; the `fusectl`
//!    file system is mounted there first if it is not): the kernel fails every pending
//!    request and drops the connection's page cache, dirty pages included, exactly what a
//!    power cut does to a machine's page cache;
//! 3. the mount point is detached (`umount2(MNT_DETACH)`), which never waits;
//! 4. the session thread, which sees the device gone, is joined;
//! 5. the model drops every volatile change, and a new session mounts it at the same path.
//!
//! Needs root and `/dev/fuse` (mounting is a plain `mount(2)`; no `fusermount3` needed).

mod fs;
mod model;

pub use model::CutReport;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use fuser::{BackgroundSession, MountOption};
use thiserror::Error;

use fs::VolatileFs;
use model::Model;

/// The bound on each step of mounting and of a cut.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the kernel lists FUSE connections (the `fusectl` file system).
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// A failure of the disk itself (not of the code under test).
#[derive(Debug, Error)]
pub enum PowerLossError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{path}: errno {errno}")]
    Path { path: PathBuf, errno: i32 },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> PowerLossError {
    let what = what.into();
    move |source| PowerLossError::Io { what, source }
}

/// Runs `f` on a thread of its own and waits at most [`STEP_TIMEOUT`] for it. A step that
/// times out is left running (it is stuck in the kernel; the test fails instead).
fn within<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PowerLossError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("powerloss {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(io_error(format!("spawn a thread to {what}")))?;
    rx.recv_timeout(STEP_TIMEOUT)
        .map_err(|_| PowerLossError::Timeout {
            what: what.to_string(),
            timeout: STEP_TIMEOUT,
        })
}

/// A live mount: its session thread and its connection's abort file.
struct Mounted {
    session: BackgroundSession,
    abort: PathBuf,
}

/// A mounted [`model`] disk (see the module comment). Dropping it disconnects it (as
/// [`PowerLossDisk::power_cut`] does, without remounting) and removes its directory.
pub struct PowerLossDisk {
    mountpoint: PathBuf,
    model: Arc<Mutex<Model>>,
    mounted: Option<Mounted>,
    // Last: removed after the disk is unmounted.
    _dir: tempfile::TempDir,
}

impl PowerLossDisk {
    /// Mounts an empty disk on a new temporary directory.
    pub fn mount() -> Result<PowerLossDisk, PowerLossError> {
        let dir = tempfile::tempdir().map_err(io_error("create a mount point"))?;
        let mountpoint = dir.path().join("disk");
        std::fs::create_dir(&mountpoint).map_err(io_error("create a mount point"))?;
        let model = Arc::new(Mutex::new(Model::new()));
        let mounted = mount(&mountpoint, model.clone())?;
        Ok(PowerLossDisk {
            mountpoint,
            model,
            mounted: Some(mounted),
            _dir: dir,
        })
    }

    /// Where the disk is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every change not synced is gone, and the disk is mounted again at the
    /// same path. Every process using the disk must have been killed and reaped before.
    pub fn power_cut(&mut self) -> Result<CutReport, PowerLossError> {
        self.disconnect()?;
        let report = self.lock().power_cut();
        self.remount()?;
        Ok(report)
    }

    /// [`PowerLossDisk::power_cut`] in the middle of writing `file` back: its current bytes
    /// below `keep_below` reach the disk, the rest of its unsynced bytes do not.
    pub fn power_cut_torn(
        &mut self,
        file: &Path,
        keep_below: u64,
    ) -> Result<CutReport, PowerLossError> {
        let relative = self.relative(file)?;
        self.disconnect()?;
        let report = self
            .lock()
            .power_cut_torn(&relative, keep_below)
            .map_err(|errno| PowerLossError::Path {
                path: file.to_path_buf(),
                errno,
            });
        self.remount()?;
        report
    }

    /// The bytes of `file` (a path under [`PowerLossDisk::path`]) that a power cut now would
    /// leave.
    pub fn durable_bytes(&self, file: &Path) -> Result<Vec<u8>, PowerLossError> {
        let relative = self.relative(file)?;
        self.lock()
            .durable_bytes(&relative)
            .map_err(|errno| PowerLossError::Path {
                path: file.to_path_buf(),
                errno,
            })
    }

    fn relative(&self, file: &Path) -> Result<PathBuf, PowerLossError> {
        file.strip_prefix(&self.mountpoint)
            .map(Path::to_path_buf)
            .map_err(|_| PowerLossError::Path {
                path: file.to_path_buf(),
                errno: libc::EXDEV,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remount(&mut self) -> Result<(), PowerLossError> {
        self.mounted = Some(mount(&self.mountpoint, self.model.clone())?);
        Ok(())
    }

    /// Steps 2 to 4 of the module comment.
    fn disconnect(&mut self) -> Result<(), PowerLossError> {
        let Some(Mounted { session, abort }) = self.mounted.take() else {
            return Ok(());
        };
        within("abort the FUSE connection", move || {
            std::fs::write(abort, "1")
        })?
        .map_err(io_error("abort the FUSE connection"))?;
        let target = CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|e| io_error("unmount")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        within("unmount", move || {
            // SAFETY: a valid NUL-terminated path; MNT_DETACH never waits for users.
            let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })?
        .map_err(io_error("unmount"))?;
        // The session ends with the device gone; how it ended does not matter any more.
        within("join the FUSE session", move || session.join())?.ok();
        Ok(())
    }
}

impl Drop for PowerLossDisk {
    fn drop(&mut self) {
        if let Err(e) = self.disconnect() {
            eprintln!(
                "powerloss: could not unmount {}: {e}",
                self.mountpoint.display()
            );
        }
    }
}

/// Mounts `model` at `mountpoint` (a session thread of its own) and finds its connection.
fn mount(mountpoint: &Path, model: Arc<Mutex<Model>>) -> Result<Mounted, PowerLossError> {
    let at = mountpoint.to_path_buf();
    let session = within("mount the FUSE file system", move || {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("apogee-powerloss".into()),
            MountOption::RW,
        ];
        fuser::spawn_mount(VolatileFs::new(model), &at, &config)
    })?
    .map_err(io_error(format!("mount FUSE on {}", mountpoint.display())))?;
    let at = mountpoint.to_path_buf();
    let dev = within("stat the mount point", move || std::fs::metadata(at))?
        .map_err(io_error("stat the mount point"))?
        .dev();
    // The connection's name is the kernel's dev_t of the mount: major << 20 | minor.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let conn = Path::new(FUSECTL).join(((major << 20) | minor).to_string());
    if !conn.exists() {
        mount_fusectl()?;
    }
    let abort = conn.join("abort");
    if !abort.exists() {
        return Err(io_error(format!("find {}", abort.display()))(
            io::ErrorKind::NotFound.into(),
        ));
    }
    Ok(Mounted { session, abort })
}

/// Mounts the `fusectl` file system on [`FUSECTL`] (absent on some machines).
fn mount_fusectl() -> Result<(), PowerLossError> {
    let c = |s: &str| CString::new(s).map_err(|e| io_error("mount fusectl")(io::Error::other(e)));
    let (source, target, kind) = (c("fusectl")?, c(FUSECTL)?, c("fusectl")?);
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let err = io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::EBUSY) {
        Ok(())
    } else {
        Err(io_error(format!("mount fusectl on {FUSECTL}"))(err))
    }
}
