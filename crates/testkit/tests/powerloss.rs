//! The power-loss disk through the kernel: what `write`, `fsync` and a directory fsync make
//! durable, and what a cut drops. Needs root and `/dev/fuse`; `.ci/run` runs it with
//! `cargo test -p apogee-testkit --test powerloss -- --ignored`.
//!
//! Stores through a shared mapping and `msync` are not tried here: this process serves the
//! mount, and a process that dirties pages of its own FUSE mount can end up waiting on its
//! own write-back (seen once: `munmap` stuck in `fuse_vma_close`). The broker tests
//! (`crates/it/tests/power_loss.rs`) cover them, the broker being another process.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use testkit::PowerLossDisk;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
fn writes_and_names_survive_only_once_synced() {
    let mut disk = PowerLossDisk::mount().unwrap();
    let root = disk.path().to_path_buf();
    let dir = root.join("d");
    fs::create_dir(&dir).unwrap();
    sync_dir(&root);

    // write(2): durable after fsync, later writes are not.
    let synced = dir.join("synced");
    let mut f = File::create(&synced).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    f.write_all(b" volatile").unwrap();
    drop(f);
    // A name never synced (the root is not synced again): gone, even though its data was.
    let unnamed = root.join("unnamed");
    let mut f = File::create(&unnamed).unwrap();
    f.write_all(b"x").unwrap();
    f.sync_all().unwrap();
    drop(f);

    sync_dir(&dir);

    let report = disk.power_cut().unwrap();
    assert!(report.files_reverted >= 1, "{report:?}");
    assert_eq!(fs::read(&synced).unwrap(), b"durable");
    assert!(!unnamed.exists(), "a name that was never synced survived");

    // A torn cut keeps a prefix of one file's unsynced bytes.
    let mut f = OpenOptions::new().append(true).open(&synced).unwrap();
    f.write_all(b"0123456789").unwrap();
    drop(f);
    assert_eq!(disk.durable_bytes(&synced).unwrap(), b"durable");
    disk.power_cut_torn(&synced, 12).unwrap();
    assert_eq!(fs::read(&synced).unwrap(), b"durable01234");
}

#[test]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
fn a_cut_with_a_process_holding_nothing_open_never_hangs() {
    // Mount, cut and drop repeatedly: each step is bounded, none may hang.
    let mut disk = PowerLossDisk::mount().unwrap();
    for round in 0..3 {
        let path = disk.path().join(format!("f{round}"));
        fs::write(&path, b"x").unwrap();
        disk.power_cut().unwrap();
        assert!(!path.exists());
    }
}
