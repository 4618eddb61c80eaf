//! Typed store configuration. Field names mirror upstream `MessageStoreConfig` keys in
//! snake_case (`mappedFileSizeCommitLog` -> `mapped_file_size_commit_log`) and defaults are
//! upstream's; the broker maps `broker.conf` keys onto this struct.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// When a write counts as stored (`flushDiskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushDiskType {
    /// Acknowledge once the bytes are in the page cache; a flush thread writes them out every
    /// `flush_interval_commit_log` ms when at least `flush_commit_log_least_pages` are dirty.
    #[default]
    AsyncFlush,
    /// Acknowledge once the bytes are on disk; concurrent writers share one fsync (group commit).
    SyncFlush,
}

/// Role of the broker that owns this store (`brokerRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerRole {
    /// Master; replication is asynchronous.
    #[default]
    AsyncMaster,
    /// Master; a write also waits for a slave (the broker's HA service enforces this).
    SyncMaster,
    /// Slave: no local writes, only [`crate::MessageStore::append_replicated`].
    Slave,
}

/// Store configuration. `StoreConfig::default()` is upstream's default except for the root
/// directory, which the caller must set (upstream: `$HOME/store`).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `storePathRootDir`: holds `commitlog/`, `consumequeue/`, `index/`, `checkpoint`, `abort`
    /// and `lock`.
    pub store_path_root_dir: PathBuf,
    /// `storePathCommitLog`: CommitLog directory; default `<root>/commitlog`.
    pub store_path_commit_log: Option<PathBuf>,
    /// `mappedFileSizeCommitLog`: bytes per CommitLog segment (1 GiB).
    pub mapped_file_size_commit_log: u64,
    /// `mappedFileSizeConsumeQueue`: bytes per ConsumeQueue file (300,000 units x 20 bytes);
    /// rounded down to whole units.
    pub mapped_file_size_consume_queue: u64,
    /// `flushDiskType`.
    pub flush_disk_type: FlushDiskType,
    /// `flushIntervalCommitLog`: ms between async flushes (500).
    pub flush_interval_commit_log: u64,
    /// `flushCommitLogLeastPages`: dirty 4 KiB pages needed before an async flush (4).
    pub flush_commit_log_least_pages: u32,
    /// `flushCommitLogThoroughInterval`: ms after which an async flush ignores the page minimum
    /// (10,000).
    pub flush_commit_log_thorough_interval: u64,
    /// `syncFlushTimeout`: ms a `SYNC_FLUSH` write waits for its fsync before it is answered
    /// with `FLUSH_DISK_TIMEOUT` (5,000; 0 means do not wait).
    pub sync_flush_timeout: u64,
    /// `flushIntervalConsumeQueue`: ms between ConsumeQueue/Index flushes and checkpoints (1,000).
    pub flush_interval_consume_queue: u64,
    /// `flushConsumeQueueLeastPages`: dirty pages needed before a ConsumeQueue flush (2).
    pub flush_consume_queue_least_pages: u32,
    /// `flushConsumeQueueThoroughInterval`: ms after which every dirty ConsumeQueue and the Index
    /// are flushed regardless of size (60,000).
    pub flush_consume_queue_thorough_interval: u64,
    /// `warmMapedFileEnable`: under `SYNC_FLUSH`, write zeros ahead of the writer so each
    /// group-commit fsync finds initialized blocks (about 1.5x faster small fsyncs on
    /// ext4/xfs) at the cost of writing every CommitLog byte twice (false).
    pub warm_mapped_file_enable: bool,
    /// `maxMessageSize`: largest body accepted, bytes (4 MiB).
    pub max_message_size: usize,
    /// `checkCRCOnRecover`: verify body CRCs while recovering (true).
    pub check_crc_on_recover: bool,
    /// `fileReservedTime`: hours a CommitLog segment is kept after its last write (72).
    pub file_reserved_time: u64,
    /// `deleteWhen`: hours of the day (local time, `;`-separated) when expired files are deleted
    /// ("04").
    pub delete_when: String,
    /// `diskMaxUsedSpaceRatio`: percent of the disk in use past which expired-or-not files are
    /// considered for deletion (75).
    pub disk_max_used_space_ratio: u32,
    /// `diskSpaceCleanForciblyRatio`: percent past which the oldest segments are deleted even if
    /// not expired (85).
    pub disk_space_clean_forcibly_ratio: u32,
    /// `diskSpaceWarningLevelRatio`: percent past which writes are refused as disk full (90).
    pub disk_space_warning_level_ratio: u32,
    /// `cleanFileForciblyEnable`: allow deleting unexpired segments when the disk is nearly full
    /// (true).
    pub clean_file_forcibly_enable: bool,
    /// `cleanResourceInterval`: ms between retention checks (10,000).
    pub clean_resource_interval: u64,
    /// `deleteCommitLogFilesInterval`: ms pause between two deleted segments (100).
    pub delete_commit_log_files_interval: u64,
    /// `messageIndexEnable`: build the key Index (true).
    pub message_index_enable: bool,
    /// `maxHashSlotNum`: hash slots per Index file (5,000,000).
    pub max_hash_slot_num: u32,
    /// `maxIndexNum`: entries per Index file (20,000,000).
    pub max_index_num: u32,
    /// `maxMsgsNumBatch`: most results of one key query (64).
    pub max_msgs_num_batch: usize,
    /// `messageDelayLevel`: delay of each level (`<n><ms|s|m|h|d>`, space-separated), for
    /// the tag code of scheduled messages.
    pub message_delay_level: String,
    /// `brokerRole`.
    pub broker_role: BrokerRole,
    /// `offsetCheckInSlave`: let a slave correct a consumer's bad offset (false).
    pub offset_check_in_slave: bool,
    /// `maxTransferBytesOnMessageInMemory`: pull size cap when data is in memory (256 KiB).
    pub max_transfer_bytes_on_message_in_memory: usize,
    /// `maxTransferCountOnMessageInMemory`: pull count cap when data is in memory (32).
    pub max_transfer_count_on_message_in_memory: usize,
    /// `maxTransferBytesOnMessageInDisk`: pull size cap when data is likely on disk (64 KiB).
    pub max_transfer_bytes_on_message_in_disk: usize,
    /// `maxTransferCountOnMessageInDisk`: pull count cap when data is likely on disk (8).
    pub max_transfer_count_on_message_in_disk: usize,
    /// `accessMessageInMemoryMaxRatio`: percent of RAM behind the head beyond which data is
    /// taken to be on disk, and a pull suggests the slave (40).
    pub access_message_in_memory_max_ratio: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            store_path_root_dir: PathBuf::from("store"),
            store_path_commit_log: None,
            mapped_file_size_commit_log: 1024 * 1024 * 1024,
            mapped_file_size_consume_queue: 300_000 * 20,
            flush_disk_type: FlushDiskType::AsyncFlush,
            flush_interval_commit_log: 500,
            flush_commit_log_least_pages: 4,
            flush_commit_log_thorough_interval: 10_000,
            sync_flush_timeout: 5_000,
            flush_interval_consume_queue: 1_000,
            flush_consume_queue_least_pages: 2,
            flush_consume_queue_thorough_interval: 60_000,
            warm_mapped_file_enable: false,
            max_message_size: 4 * 1024 * 1024,
            check_crc_on_recover: true,
            file_reserved_time: 72,
            delete_when: "04".into(),
            disk_max_used_space_ratio: 75,
            disk_space_clean_forcibly_ratio: 85,
            disk_space_warning_level_ratio: 90,
            clean_file_forcibly_enable: true,
            clean_resource_interval: 10_000,
            delete_commit_log_files_interval: 100,
            message_index_enable: true,
            max_hash_slot_num: 5_000_000,
            max_index_num: 5_000_000 * 4,
            max_msgs_num_batch: 64,
            message_delay_level: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
                .into(),
            broker_role: BrokerRole::AsyncMaster,
            offset_check_in_slave: false,
            max_transfer_bytes_on_message_in_memory: 256 * 1024,
            max_transfer_count_on_message_in_memory: 32,
            max_transfer_bytes_on_message_in_disk: 64 * 1024,
            max_transfer_count_on_message_in_disk: 8,
            access_message_in_memory_max_ratio: 40,
        }
    }
}

impl StoreConfig {
    /// Upstream defaults with the given root directory.
    pub fn new(store_path_root_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            store_path_root_dir: store_path_root_dir.into(),
            ..StoreConfig::default()
        }
    }

    /// Directory of the CommitLog segments.
    pub fn commit_log_dir(&self) -> PathBuf {
        self.store_path_commit_log
            .clone()
            .unwrap_or_else(|| self.store_path_root_dir.join("commitlog"))
    }

    /// Directory of the ConsumeQueues (`<root>/consumequeue`).
    pub fn consume_queue_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("consumequeue")
    }

    /// Directory of the Index files (`<root>/index`).
    pub fn index_dir(&self) -> PathBuf {
        self.store_path_root_dir.join("index")
    }

    /// Bytes per ConsumeQueue file, whole units only.
    pub(crate) fn consume_queue_file_size(&self) -> u64 {
        self.mapped_file_size_consume_queue / crate::consume_queue::CQ_STORE_UNIT_SIZE
            * crate::consume_queue::CQ_STORE_UNIT_SIZE
    }

    pub(crate) fn sync_flush_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_flush_timeout)
    }

    /// Delay in ms of each level (index 0 is level 1), parsed from `message_delay_level`.
    pub fn delay_levels_ms(&self) -> Result<Vec<i64>> {
        self.message_delay_level
            .split_whitespace()
            .map(|level| {
                let num = level.trim_end_matches(|c: char| c.is_ascii_alphabetic());
                let unit = &level[num.len()..];
                let factor = match unit {
                    "ms" => 1,
                    "s" => 1_000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    "d" => 86_400_000,
                    _ => return Err(StoreError::Config(format!("bad delay level {level:?}"))),
                };
                num.parse::<i64>()
                    .map(|n| n * factor)
                    .map_err(|_| StoreError::Config(format!("bad delay level {level:?}")))
            })
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let min_segment = 64 * 1024;
        if self.mapped_file_size_commit_log < min_segment {
            return Err(StoreError::Config(format!(
                "mappedFileSizeCommitLog must be at least {min_segment} bytes"
            )));
        }
        if self.mapped_file_size_commit_log > i32::MAX as u64 {
            return Err(StoreError::Config(
                "mappedFileSizeCommitLog must fit in a Java int (< 2 GiB)".into(),
            ));
        }
        if self.consume_queue_file_size() == 0 {
            return Err(StoreError::Config(
                "mappedFileSizeConsumeQueue must hold at least one unit".into(),
            ));
        }
        if self.message_index_enable && (self.max_hash_slot_num == 0 || self.max_index_num < 2) {
            return Err(StoreError::Config(
                "maxHashSlotNum must be > 0 and maxIndexNum > 1".into(),
            ));
        }
        self.delay_levels_ms()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstream() {
        let c = StoreConfig::new("/tmp/x");
        assert_eq!(c.mapped_file_size_commit_log, 1 << 30);
        assert_eq!(c.consume_queue_file_size(), 6_000_000);
        assert_eq!(c.max_message_size, 4 << 20);
        assert_eq!(c.file_reserved_time, 72);
        assert_eq!(c.flush_disk_type, FlushDiskType::AsyncFlush);
        assert_eq!(c.commit_log_dir(), PathBuf::from("/tmp/x/commitlog"));
        let levels = c.delay_levels_ms().unwrap();
        assert_eq!(levels.len(), 18);
        assert_eq!(levels[0], 1_000);
        assert_eq!(levels[17], 7_200_000);
        let mut c2 = c.clone();
        c2.message_delay_level = "500ms 2d".into();
        assert_eq!(c2.delay_levels_ms().unwrap(), vec![500, 172_800_000]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut c = StoreConfig::new("/tmp/x");
        c.message_delay_level = "1x".into();
        assert!(matches!(c.validate(), Err(StoreError::Config(_))));
        let mut c = StoreConfig::new("/tmp/x");
        c.mapped_file_size_commit_log = 10;
        assert!(c.validate().is_err());
        c.mapped_file_size_commit_log = 1 << 20;
        c.mapped_file_size_consume_queue = 19;
        assert!(c.validate().is_err());
    }
}
