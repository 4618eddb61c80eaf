//! Back-pressure over real TCP: a flood of pipelined long-polling pulls on a few connections is
//! answered `SYSTEM_BUSY` beyond the in-flight and held-pull bounds, the number of held pulls
//! stays at its bound, and another client's send and pull are still served at once.
//!
//! `flood_rss.rs` runs issue 15's flood at full size, alone in its process, and bounds the RSS.

mod common;

use common::flood::{flood, other_client_is_served, QUEUES, TOPIC};
use common::Env;
use remoting::ResponseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_long_polling_pulls_is_bounded() {
    const CONNS: usize = 4;
    const PER_CONN: usize = 5_000; // 20,000 in all
    const PER_CONN_LIMIT: usize = 250;
    const MAX_HELD: usize = 600;
    let env = Env::start_with(
        |c| {
            c.max_in_flight_requests_per_connection = PER_CONN_LIMIT;
            c.max_held_pull_requests = MAX_HELD;
        },
        None,
    )
    .await;
    env.create_topic(TOPIC, QUEUES).await;
    let broker = env.broker.as_ref().unwrap();
    let (mut answers, tasks) = flood(broker.local_addr(), CONNS, PER_CONN).await;

    // Every pull that is not held is answered SYSTEM_BUSY at once, by the remoting bound or
    // the held-pull bound; the held ones stay unanswered.
    let busy = CONNS * PER_CONN - MAX_HELD;
    for n in 0..busy {
        let (code, remark) = tokio::time::timeout(common::TIMEOUT, answers.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {busy} answers arrived"))
            .unwrap();
        assert_eq!(code, ResponseCode::SYSTEM_BUSY, "{remark}");
        assert!(
            remark.starts_with("[OVERLOAD]system busy, start flow control for a while"),
            "{remark}"
        );
    }
    assert_eq!(broker.held_pulls(), MAX_HELD);
    let stats = broker.request_stats();
    assert!(
        stats.in_flight <= CONNS * PER_CONN_LIMIT,
        "in flight {stats:?}"
    );
    // Both bounds answered: the remoting one (counted in `rejected`) and the held-pull one.
    assert!(
        stats.rejected > 0 && stats.rejected < busy as u64,
        "{stats:?}"
    );

    // Another client is served at once: a send, then a pull that finds it.
    other_client_is_served(&env).await;
    // The send also released the held pulls of queue 0 with the message.
    let (code, _) = tokio::time::timeout(common::TIMEOUT, answers.recv())
        .await
        .expect("a held pull answered")
        .unwrap();
    assert_eq!(code, ResponseCode::SUCCESS);

    for t in tasks {
        t.abort();
    }
    env.stop().await;
}
