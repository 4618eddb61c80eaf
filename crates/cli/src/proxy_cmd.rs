//! `apogee proxy`: the RocketMQ 5.x gRPC endpoint in cluster mode (upstream `mqproxy`): serves
//! `MessagingService` on `grpcServerPort` (8081) and talks remoting to the brokers found through
//! the NameServers. Stateless: any number of proxies can stand behind one address.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use proxy::{Proxy, ProxyConfig};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Upstream's `rmq-proxy.json` (`grpcServerPort`, `namesrvAddr`, `rocketMQClusterName`).
    #[arg(long = "proxy-config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// NameServer addresses, `host:port;host:port` (overrides `namesrvAddr`).
    #[arg(short = 'n', long = "namesrvAddr", env = "NAMESRV_ADDR")]
    namesrv_addr: Option<String>,
    /// gRPC port (overrides `grpcServerPort`).
    #[arg(long = "grpc-port")]
    grpc_port: Option<u16>,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mut config = ProxyConfig::default();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        config = config
            .apply_json(&text)
            .with_context(|| format!("bad proxy config {}", path.display()))?;
    }
    if let Some(n) = &args.namesrv_addr {
        config.namesrv_addr = proxy::parse_namesrv_addr(n)?;
    }
    if let Some(p) = args.grpc_port {
        config.grpc_server_port = p;
    }
    anyhow::ensure!(
        !config.namesrv_addr.is_empty(),
        "namesrvAddr: no NameServer address (-n, NAMESRV_ADDR or the proxy config)"
    );
    let proxy = Proxy::start(config).await?;
    tracing::info!(grpc = %proxy.local_addr(), "Apogee proxy ready");
    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}
