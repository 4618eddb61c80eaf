//! `it-controller CONFIG`: a controller in its own process for the controller-mode failover
//! tests (`it::child::ChildController`). Reads `CONFIG` (upstream `controller.conf`
//! properties), starts the controller, prints one line `READY <listenAddr>` on stdout and runs
//! until it is killed (no shutdown path, as `it-broker`). Logs go to stderr. Exits at once
//! when its stdin closes (the test process died).

use std::io::{Read, Write};

use anyhow::Context;

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
        .context("usage: it-controller CONFIG")?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.to_string_lossy()))?;
    let props = remoting::properties::parse_properties(&text);
    let config = controller::ControllerConfig::from_properties(&props)
        .context("invalid controller config")?;
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let controller = controller::Controller::start(config)
            .await
            .context("cannot start the controller")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", controller.local_addr())?;
        out.flush()?;
        drop(out);
        let _controller = controller;
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })
}
