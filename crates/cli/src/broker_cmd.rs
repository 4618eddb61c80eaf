//! `apogee broker`: reads an upstream-style `broker.conf` (Java properties with upstream key
//! names) and runs a broker until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use broker::{Broker, BrokerConfig};
use clap::Args;

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Config file in upstream's `key=value` format (`brokerName=broker-a`, ...).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// NameServer addresses (`host:port;host:port`); overrides `namesrvAddr` and the
    /// `NAMESRV_ADDR` environment variable.
    #[arg(short = 'n', long = "namesrv-addr")]
    namesrv_addr: Option<String>,
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let mut props = crate::read_properties(args.config.as_deref())?;
    if let Some(addr) = args.namesrv_addr {
        props.insert("namesrvAddr".to_string(), addr);
    } else if !props.contains_key("namesrvAddr") {
        if let Ok(addr) = std::env::var("NAMESRV_ADDR") {
            props.insert("namesrvAddr".to_string(), addr);
        }
    }
    if !props.contains_key("storePathRootDir") {
        // Upstream's default, `${user.home}/store`; the broker library reads no environment.
        let root = crate::home_dir().join("store");
        props.insert(
            "storePathRootDir".to_string(),
            root.to_string_lossy().into_owned(),
        );
    }
    crate::default_rocketmq_home(&mut props);
    if !props.contains_key("metricsPromExporterPort") {
        // Upstream's default metrics port; the broker library's default is "off".
        props.insert("metricsPromExporterPort".to_string(), "5557".to_string());
    }
    let config = BrokerConfig::from_properties(&props).context("invalid broker config")?;
    if config.name_servers().is_empty() {
        tracing::warn!("no NameServer configured (namesrvAddr, -n or NAMESRV_ADDR): clients cannot find this broker");
    }
    let broker = Broker::start(config)
        .await
        .context("cannot start the broker")?;
    tracing::info!(addr = %broker.broker_addr(), "broker started");
    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    broker.shutdown().await;
    Ok(())
}
