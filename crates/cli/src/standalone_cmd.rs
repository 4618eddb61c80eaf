//! `apogee standalone`: a NameServer and one master broker in one process, topic
//! auto-creation on, upstream's default ports (9876, 10911): the quickest way to a working
//! RocketMQ endpoint on one machine, with the 5.x gRPC endpoint on 8081 and the web console on
//! 8082.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use broker::{Broker, BrokerConfig};
use clap::Args;
use namesrv::{NameServer, NamesrvConfig};

use crate::console::Console;

#[derive(Args, Debug)]
pub struct StandaloneArgs {
    /// Directory for the message store and config files (default `$HOME/apogee-standalone`).
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// NameServer port.
    #[arg(long = "namesrv-port", default_value_t = 9876)]
    namesrv_port: u16,
    /// Broker port.
    #[arg(long = "broker-port", default_value_t = 10911)]
    broker_port: u16,
    /// Port of the broker's Prometheus `GET /metrics` (0: none).
    #[arg(long = "metrics-port", default_value_t = 5557)]
    metrics_port: u16,
    /// Port of the NameServer's Prometheus `GET /metrics` (0: none).
    #[arg(long = "namesrv-metrics-port", default_value_t = 5558)]
    namesrv_metrics_port: u16,
    /// Port of the web console (`apogee console`) for this server (0: none).
    #[arg(long = "console-port", default_value_t = crate::console::DEFAULT_CONSOLE_PORT)]
    console_port: u16,
    /// Port of the 5.x gRPC endpoint (`apogee proxy`, upstream's local mode) (0: none).
    #[arg(long = "proxy-port", default_value_t = 8081)]
    proxy_port: u16,
    /// Turn ACL on (`aclEnable=true`) for the broker and the NameServer, with the accounts of
    /// `DIR/conf/plain_acl.yml` (DIR is the `rocketmqHome`).
    #[arg(long = "acl-home", value_name = "DIR")]
    acl_home: Option<PathBuf>,
    /// Address the broker advertises to clients.
    #[arg(long = "broker-ip", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    broker_ip: IpAddr,
}

pub async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| crate::home_dir().join("apogee-standalone"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let namesrv_config = NamesrvConfig {
        listen_port: args.namesrv_port,
        kv_config_path: data_dir.join("namesrv").join("kvConfig.json"),
        metrics_prom_exporter_port: args.namesrv_metrics_port,
        acl_enable: args.acl_home.is_some(),
        rocketmq_home: args.acl_home.clone(),
        ..NamesrvConfig::default()
    };
    let namesrv = NameServer::start(namesrv_config)
        .await
        .context("cannot start the NameServer")?;
    let broker_config = BrokerConfig {
        broker_cluster_name: "DefaultCluster".into(),
        broker_name: "broker-a".into(),
        namesrv_addr: format!("127.0.0.1:{}", namesrv.local_addr().port()),
        listen_port: args.broker_port,
        broker_ip1: Some(args.broker_ip),
        store_path_root_dir: data_dir.join("store"),
        auto_create_topic_enable: true,
        auto_create_subscription_group: true,
        metrics_prom_exporter_port: args.metrics_port,
        acl_enable: args.acl_home.is_some(),
        rocketmq_home: args.acl_home.clone(),
        ..BrokerConfig::default()
    };
    // Upstream's local mode: the proxy's TLS follows the broker's `tls.server.*` settings.
    let proxy_tls = broker_config.tls_server_settings();
    let broker = match Broker::start(broker_config).await {
        Ok(b) => b,
        Err(e) => {
            namesrv.shutdown().await;
            return Err(e).context("cannot start the broker");
        }
    };
    let console = if args.console_port == 0 {
        None
    } else {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.console_port);
        let namesrv_addr = format!("127.0.0.1:{}", namesrv.local_addr().port());
        match Console::start(
            addr,
            Some(&namesrv_addr),
            3000,
            &Default::default(),
            &Default::default(),
        )
        .await
        {
            Ok(c) => Some(c),
            // Like the metrics port: a busy console port costs the console, not the server.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "console not started");
                None
            }
        }
    };
    let grpc = if args.proxy_port == 0 {
        None
    } else {
        let config = proxy::ProxyConfig {
            grpc_server_port: args.proxy_port,
            namesrv_addr: proxy::parse_namesrv_addr(&format!(
                "127.0.0.1:{}",
                namesrv.local_addr().port()
            ))?,
            tls: proxy_tls,
            ..proxy::ProxyConfig::default()
        };
        // Upstream's local mode: the proxy calls this broker in-process.
        let local = vec![(broker.broker_addr().to_string(), broker.local_endpoint())];
        match proxy::Proxy::start_with_local(config, local).await {
            Ok(p) => Some(p),
            // Like the console: a busy gRPC port costs the 5.x endpoint, not the server.
            Err(e) => {
                tracing::warn!(error = %e, "gRPC proxy not started");
                None
            }
        }
    };
    tracing::info!(
        namesrv = %namesrv.local_addr(),
        grpc = ?grpc.as_ref().map(|p| p.local_addr().to_string()),
        broker = %broker.broker_addr(),
        metrics = ?broker.metrics_addr(),
        console = ?console.as_ref().map(|c| format!("http://{}", c.local_addr())),
        data_dir = %data_dir.display(),
        start_ms = started.elapsed().as_millis() as u64,
        "Apogee standalone ready"
    );
    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    if let Some(c) = console {
        c.shutdown();
    }
    if let Some(p) = grpc {
        p.shutdown().await;
    }
    broker.shutdown().await;
    namesrv.shutdown().await;
    Ok(())
}
