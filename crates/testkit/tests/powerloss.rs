//! The power-loss disk through the kernel: what `write`, mmap stores, `fsync`, `msync` and a
//! directory fsync make durable, and what a cut drops. Needs root and `/dev/fuse`; `.ci/run`
//! runs it with `cargo test -p apogee-testkit --test powerloss -- --ignored`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use testkit::PowerLossDisk;

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

#[test]
#[ignore = "needs root and /dev/fuse (CI runs it with --ignored)"]
fn writes_names_and_mmap_stores_survive_only_once_synced() {
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

    // Stores through a shared mapping: durable up to the last msync.
    let mapped = dir.join("mapped");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&mapped)
        .unwrap();
    f.set_len(8192).unwrap();
    sync_dir(&dir);
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f).unwrap() };
    map[..5].copy_from_slice(b"first");
    map.flush().unwrap();
    map[4096..4102].copy_from_slice(b"second");
    drop(map);
    drop(f);
    assert_eq!(&fs::read(&mapped).unwrap()[4096..4102], b"second");

    let report = disk.power_cut().unwrap();
    assert!(report.files_reverted >= 2, "{report:?}");
    assert_eq!(fs::read(&synced).unwrap(), b"durable");
    assert!(!unnamed.exists(), "a name that was never synced survived");
    let bytes = fs::read(&mapped).unwrap();
    assert_eq!(bytes.len(), 8192);
    assert_eq!(&bytes[..5], b"first");
    assert!(
        bytes[4096..].iter().all(|b| *b == 0),
        "an unsynced mmap store survived"
    );

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
