//! Issue 15's report at full size, in CI: 200,000 pipelined long-polling pulls on 4
//! connections with the default limits are answered `SYSTEM_BUSY` beyond the bounds and the
//! process stays under 100 MiB RSS (before back-pressure the broker alone went from 19 MB to
//! 818 MB). Alone in its test binary, so that no other test's memory is counted; broker and
//! flooding client share the process, so the RSS includes both. `--nocapture` prints it;
//! `APOGEE_FLOOD_UNLIMITED=1` lifts every bound, as before back-pressure, for comparison.

mod common;

use common::flood::{flood, other_client_is_served, QUEUES, TOPIC};
use common::Env;
use remoting::ResponseCode;

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 200,000 held pulls with the default limits: the RSS bound, then another client's send and
/// pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_200k_pulls_leaves_rss_under_100_mib() {
    const CONNS: usize = 4;
    const PER_CONN: usize = 50_000;
    // APOGEE_FLOOD_UNLIMITED=1: every bound lifted, as before back-pressure (for comparison).
    let unlimited = std::env::var_os("APOGEE_FLOOD_UNLIMITED").is_some();
    let env = Env::start_with(
        |c| {
            if unlimited {
                c.max_in_flight_requests_per_connection = usize::MAX;
                c.max_in_flight_requests = usize::MAX;
                c.max_held_pull_requests = usize::MAX;
            }
        },
        None,
    )
    .await;
    env.create_topic(TOPIC, QUEUES).await;
    let broker = env.broker.as_ref().unwrap();
    let before = rss_kib();
    let started = std::time::Instant::now();
    let (mut answers, tasks) = flood(broker.local_addr(), CONNS, PER_CONN).await;
    let limits = broker.config().request_limits();
    let held = CONNS
        .saturating_mul(limits.per_connection)
        .min(broker.config().max_held_pull_requests);
    if unlimited {
        // Without bounds the held pulls' 1 s rechecks can keep 2 cores busy enough that the
        // flood is never fully read; report what it reached after a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while broker.held_pulls() < CONNS * PER_CONN && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        println!(
            "UNLIMITED: {} held pulls; RSS {} MiB before, {} MiB after ({:?})",
            broker.held_pulls(),
            before / 1024,
            rss_kib() / 1024,
            started.elapsed()
        );
        for t in tasks {
            t.abort();
        }
        env.stop().await;
        return;
    }
    let mut busy = 0usize;
    while busy < CONNS * PER_CONN - held {
        let (code, remark) =
            tokio::time::timeout(std::time::Duration::from_secs(120), answers.recv())
                .await
                .unwrap_or_else(|_| panic!("only {busy} answers arrived"))
                .unwrap();
        assert_eq!(code, ResponseCode::SYSTEM_BUSY, "{remark}");
        busy += 1;
    }
    let after = rss_kib();
    println!(
        "200,000 held pulls on {CONNS} connections: {busy} answered SYSTEM_BUSY, {} held, \
         {:?} in flight; RSS {} MiB before, {} MiB after ({:?})",
        broker.held_pulls(),
        broker.request_stats(),
        before / 1024,
        after / 1024,
        started.elapsed()
    );
    assert_eq!(broker.held_pulls(), held);
    assert!(after < 100 * 1024, "RSS {after} KiB");
    // Another client is still served: a send, and a pull that finds it.
    other_client_is_served(&env).await;
    for t in tasks {
        t.abort();
    }
    env.stop().await;
}
