//! `it-broker CONFIG`: a broker in its own process for the crash scenario tests
//! (`it::child::ChildBroker`). Reads `CONFIG` (upstream `broker.conf` properties, as
//! `BrokerConfig::to_properties` writes them), starts the broker, prints one line
//! `READY <brokerAddr> <listenPort> <haPort|-> <fastPort|->` on stdout and then runs until
//! it is killed. It has no shutdown path at all: no signal handler, no `Broker::shutdown`;
//! a test ends it with SIGKILL. Logs go to stderr (`RUST_LOG`, default `info`), where the
//! tests look for the store's recovery lines.
//!
//! When its stdin closes (the test process died without killing it) it exits at once,
//! still without any shutdown, so that no orphan keeps ports or store locks.

use std::io::{Read, Write};

use anyhow::Context;
use broker::{Broker, BrokerConfig};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let path = std::env::args_os()
        .nth(1)
        .context("usage: it-broker CONFIG")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.to_string_lossy()))?;
    let props = remoting::properties::parse_properties(&text);
    let config = BrokerConfig::from_properties(&props).context("invalid broker config")?;
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        // The parent is gone: leave as a crash would, without any shutdown.
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let broker = Broker::start(config)
            .await
            .context("cannot start the broker")?;
        let port = |p: Option<u16>| p.map_or("-".to_string(), |p| p.to_string());
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "READY {} {} {} {}",
            broker.broker_addr(),
            broker.local_addr().port(),
            port(broker.ha_port()),
            port(broker.fast_local_addr().map(|a| a.port())),
        )?;
        out.flush()?;
        drop(out);
        // Runs until SIGKILL; the broker is never dropped.
        let _broker = broker;
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })
}
