//! Test-only helpers shared by the crates' test suites: access to the wire captures recorded
//! between upstream RocketMQ 4.9.8 and real clients (`../shared/captures` beside the repo, one
//! JSON object per frame). When the captures are not there, loaders return `None` after
//! printing a note, and the tests that need them skip. [`fault`] holds the loopback
//! [`FaultProxy`] that tests put between two components to partition them; [`metrics`]
//! scrapes and parses a `/metrics` endpoint; [`http`] is a bare HTTP/1.1 client for them;
//! [`pki`] makes certificates for TLS tests; [`powerloss`] is a FUSE disk that loses what was
//! not synced when a test cuts its power.

pub mod fault;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod powerloss;
pub use fault::{FaultMode, FaultProxy};
pub use pki::TestPki;
pub use powerloss::PowerLossDisk;

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

/// Captures of client traffic (each has NameServer and broker connections).
pub const CLIENT_CAPTURES: &[&str] = &[
    "java-4.9.8.jsonl",
    "java-4.9.8-rocketmq-header.jsonl",
    "cpp-0.4.4.jsonl",
    "ali-ons-3.12.0.jsonl",
    "rust-client-1.0.0.jsonl",
    "mqadmin-4.9.8.jsonl",
];

/// The upstream broker's own connection to the NameServer.
pub const BROKER_CAPTURE: &str = "broker-4.9.8-to-namesrv.jsonl";

/// The captures directory, or `None` (with a note on stdout) when it is absent.
pub fn captures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/captures");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("note: {} is absent; capture tests skipped", dir.display());
        None
    }
}

/// Every line of one capture file, parsed; `None` when the captures are absent.
///
/// # Panics
/// On a line that is not JSON: the captures are fixed test data, so that is a broken checkout.
pub fn capture(file: &str) -> Option<Vec<Value>> {
    let path = captures_dir()?.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read capture {}: {e}", path.display()));
    Some(
        text.lines()
            .map(|l| serde_json::from_str(l).expect("capture line is JSON"))
            .collect(),
    )
}

/// Decodes a base64 field of a capture line (`frame_b64`, `body_b64`); empty when absent.
///
/// # Panics
/// On invalid base64 (broken test data).
pub fn b64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap_or(""))
        .expect("capture field is base64")
}
