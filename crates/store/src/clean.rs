//! Retention (upstream `CleanCommitLogService` / `CleanConsumeQueueService`): delete CommitLog
//! segments not written for `fileReservedTime` hours, at the `deleteWhen` hour or whenever the
//! disk is fuller than `diskMaxUsedSpaceRatio`; past `diskSpaceCleanForciblyRatio` delete the
//! oldest segments even if they are not expired; past `diskSpaceWarningLevelRatio` refuse
//! writes as disk full. ConsumeQueue and Index files then follow the CommitLog's new minimum
//! offset. The active segment, and anything not yet dispatched, is never deleted.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::clock::{local_time, now_ms};
use crate::config::StoreConfig;
use crate::error::Result;
use crate::state::Inner;

/// Most segments deleted in one pass (upstream `DELETE_FILES_BATCH_MAX`).
const DELETE_FILES_BATCH_MAX: usize = 10;

/// What the disk usage calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SpaceDecision {
    /// Past `diskMaxUsedSpaceRatio`: delete expired segments now, whatever the hour.
    pub(crate) space_to_delete: bool,
    /// Past `diskSpaceCleanForciblyRatio`: delete even unexpired segments.
    pub(crate) clean_immediately: bool,
    /// Past `diskSpaceWarningLevelRatio`: refuse writes.
    pub(crate) disk_full: bool,
}

pub(crate) fn space_decision(used_ratio: f64, config: &StoreConfig) -> SpaceDecision {
    let pct = |p: u32| p as f64 / 100.0;
    SpaceDecision {
        space_to_delete: used_ratio > pct(config.disk_max_used_space_ratio),
        clean_immediately: used_ratio > pct(config.disk_space_clean_forcibly_ratio),
        disk_full: used_ratio > pct(config.disk_space_warning_level_ratio),
    }
}

/// Whether `hour` is one of the `;`-separated hours of `delete_when`.
pub(crate) fn is_time_to_delete(delete_when: &str, hour: u32) -> bool {
    delete_when
        .split(';')
        .any(|h| h.trim().parse::<u32>().is_ok_and(|h| h == hour))
}

/// Fraction of the file system holding `path` that is in use.
fn disk_used_ratio(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `st` is a plain C struct filled by statvfs; read only on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
        return None;
    }
    Some((st.f_blocks - st.f_bfree) as f64 / st.f_blocks as f64)
}

impl Inner {
    /// One retention pass; `manual` acts as if it were `deleteWhen` time. Returns the number of
    /// CommitLog segments deleted.
    pub(crate) fn clean(&self, manual: bool) -> Result<usize> {
        let dirs = [
            self.config.commit_log_dir(),
            self.config.consume_queue_dir(),
        ];
        let used = dirs
            .iter()
            .filter_map(|d| disk_used_ratio(d))
            .fold(0.0f64, f64::max);
        let space = space_decision(used, &self.config);
        if space.disk_full != self.disk_full.swap(space.disk_full, Ordering::AcqRel) {
            if space.disk_full {
                tracing::error!(used_ratio = used, "disk nearly full; refusing writes");
            } else {
                tracing::info!(
                    used_ratio = used,
                    "disk space back to normal; accepting writes"
                );
            }
        }
        let time_up =
            manual || is_time_to_delete(&self.config.delete_when, local_time(now_ms()).hour);
        let mut deleted = 0;
        if time_up || space.space_to_delete {
            let force = space.clean_immediately && self.config.clean_file_forcibly_enable;
            deleted = self.delete_expired_segments(force)?;
            if deleted == 0 && space.space_to_delete {
                tracing::warn!(
                    used_ratio = used,
                    "disk space is short but no segment could be deleted"
                );
            }
        }
        let cl_min = self.commit_log.min_offset();
        let queues: Vec<_> = self
            .queues
            .read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        for q in queues {
            q.delete_expired(cl_min)?;
        }
        if let Some(index) = &self.index {
            index.delete_expired(cl_min)?;
        }
        Ok(deleted)
    }

    fn delete_expired_segments(&self, force: bool) -> Result<usize> {
        let reserved = Duration::from_secs(self.config.file_reserved_time * 3600);
        let dispatched = self.dispatched.load(Ordering::Acquire);
        let files = self.commit_log.files().files();
        let now = SystemTime::now();
        let mut deleted = 0;
        for f in files
            .iter()
            .take(files.len().saturating_sub(1))
            .take(DELETE_FILES_BATCH_MAX)
        {
            let expired = f
                .modified()?
                .checked_add(reserved)
                .is_some_and(|t| now >= t);
            if !(expired || force) || f.end() > dispatched {
                break;
            }
            if deleted > 0 && self.config.delete_commit_log_files_interval > 0 {
                std::thread::sleep(Duration::from_millis(
                    self.config.delete_commit_log_files_interval,
                ));
            }
            tracing::info!(file = %f.path().display(), force, "deleting CommitLog segment");
            self.commit_log.remove_first(1)?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_ratios() {
        let c = StoreConfig::new("/tmp/x");
        assert_eq!(space_decision(0.5, &c), SpaceDecision::default());
        let d = space_decision(0.80, &c);
        assert!(d.space_to_delete && !d.clean_immediately && !d.disk_full);
        let d = space_decision(0.86, &c);
        assert!(d.space_to_delete && d.clean_immediately && !d.disk_full);
        let d = space_decision(0.95, &c);
        assert!(d.space_to_delete && d.clean_immediately && d.disk_full);
        assert!(is_time_to_delete("04", 4));
        assert!(!is_time_to_delete("04", 5));
        assert!(is_time_to_delete("03;05", 5));
        assert!(!is_time_to_delete("", 0));
        assert!(disk_used_ratio(Path::new("/")).is_some_and(|r| (0.0..=1.0).contains(&r)));
    }
}
