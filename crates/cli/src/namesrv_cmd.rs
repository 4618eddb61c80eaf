//! `apogee namesrv`: reads an upstream-style `namesrv.conf` (Java properties) and runs a
//! NameServer until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use namesrv::{NameServer, NamesrvConfig};

#[derive(Args, Debug)]
pub struct NamesrvArgs {
    /// Config file in upstream's `key=value` format (e.g. `listenPort=9876`).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Port to listen on; overrides `listenPort` from the config file (default 9876).
    #[arg(long = "listen-port")]
    listen_port: Option<u16>,
}

pub async fn run(args: NamesrvArgs) -> anyhow::Result<()> {
    let mut props = crate::read_properties(args.config.as_deref())?;
    if let Some(port) = args.listen_port {
        props.insert("listenPort".to_string(), port.to_string());
    }
    // `enableControllerInNamesrv=true` runs a controller in this process, configured by the
    // controller keys of the same file (as upstream's `NamesrvStartup`).
    crate::default_rocketmq_home(&mut props);
    if !props.contains_key("metricsPromExporterPort") {
        // Apogee's default NameServer metrics port (the broker's is upstream's 5557).
        props.insert("metricsPromExporterPort".to_string(), "5558".to_string());
    }
    let embedded = props
        .get("enableControllerInNamesrv")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let (props, controller_props) = if embedded {
        crate::controller_cmd::split_embedded(&props)
    } else {
        (props, Default::default())
    };
    // Upstream's defaults put the KV config under the user's home directory.
    let mut config = NamesrvConfig::with_home(&crate::home_dir());
    config.update(&props).context("invalid NameServer config")?;
    let controller = if embedded {
        Some(crate::controller_cmd::start(&controller_props).await?)
    } else {
        None
    };
    let server = NameServer::start(config)
        .await
        .context("cannot start the NameServer")?;
    tracing::info!(addr = %server.local_addr(), "NameServer started");
    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    if let Some(controller) = controller {
        controller.shutdown().await;
    }
    Ok(())
}
