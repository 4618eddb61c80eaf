//! A broker whose store fills its file system (an 8 MiB tmpfs mounted by the test; skipped
//! with a note where mounting is not permitted) refuses sends with `SERVICE_NOT_AVAILABLE` (14)
//! and a remark naming the full disk, and keeps serving pulls of what it acknowledged.
//! The store-level tests (`crates/store/tests/disk_full.rs`) cover restarts and recovery.

mod common;

use std::process::Command;

use common::{props, Env};
use remoting::{ResponseCode, SerializeType};

struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn mount_tmpfs() -> Option<Tmpfs> {
    let dir = tempfile::tempdir().ok()?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(dir.path())
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Tmpfs(dir)),
        other => {
            println!("SKIPPED: cannot mount a tmpfs ({other:?}); the disk-full test needs root");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_on_a_full_disk_are_refused_with_service_not_available() {
    let Some(fs) = mount_tmpfs() else { return };
    let root = fs.0.path().join("store");
    let env = Env::start_with(
        |c| {
            c.store_path_root_dir = root;
            c.mapped_file_size_commit_log = 1024 * 1024;
            c.message_index_enable = false;
            // Only ENOSPC refuses writes here; retention must not delete what was written.
            c.disk_max_used_space_ratio = 100;
        },
        None,
    )
    .await;
    env.create_topic("FullTopic", 1).await;
    let body = "x".repeat(1024);
    let mut acked = 0i64;
    let refused = loop {
        let resp = env
            .send_v2(
                "FullTopic",
                0,
                &body,
                &props("A", &format!("k{acked}")),
                0,
                SerializeType::Json,
            )
            .await;
        if resp.code != ResponseCode::SUCCESS {
            break resp;
        }
        acked += 1;
        assert!(acked < 20_000, "an 8 MiB file system never filled");
    };
    assert_eq!(
        refused.code,
        ResponseCode::SERVICE_NOT_AVAILABLE,
        "{:?}",
        refused.remark
    );
    let remark = refused.remark.clone().unwrap_or_default();
    assert!(
        remark.starts_with("service not available now.") && remark.contains("disk is full"),
        "{remark}"
    );
    assert!(acked > 0);
    // Still serving what it acknowledged.
    env.wait_dispatched("FullTopic", 0, acked).await;
    let got = env.pull("G", "FullTopic", 0, 0, "*").await;
    assert_eq!(got.code, ResponseCode::SUCCESS, "{:?}", got.remark);
    println!("disk full: {acked} sends acknowledged, then refused: {remark}");
    env.stop().await;
}
