//! Settings shared by the scenario tests that run Apogee's client; [`failover`] holds what
//! the two failover files share.

// Each test file uses part of it.
#[allow(dead_code)]
pub mod failover;

use std::net::SocketAddr;
use std::time::Duration;

use client::ClientConfig;

/// A client of the NameServer at `ns`, fast enough for tests: heartbeats every 500 ms,
/// offsets persisted every 200 ms, routes polled every `poll`; `name` makes the instance
/// (and so the client id) distinct per NameServer.
// Not every test file runs Apogee's client (the gRPC one uses only `failover`).
#[allow(dead_code)]
pub fn client_config(ns: SocketAddr, poll: Duration, name: &str) -> ClientConfig {
    let mut c = ClientConfig::new(&ns.to_string())
        .unwrap()
        .instance_name(format!("{name}-{}", ns.port()));
    c.client_ip = "127.0.0.1".into();
    c.poll_name_server_interval = poll;
    c.heartbeat_broker_interval = Duration::from_millis(500);
    c.persist_consumer_offset_interval = Duration::from_millis(200);
    c.pull_time_delay_when_exception = Duration::from_millis(100);
    c.mq_client_api_timeout = Duration::from_secs(2);
    c
}
