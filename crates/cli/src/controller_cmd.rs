//! `apogee controller`: reads an upstream-style `controller.conf` (Java properties:
//! `controllerDLegerGroup`, `controllerDLegerPeers`, `controllerDLegerSelfId`,
//! `controllerStorePath`, ...) and runs a controller until SIGINT/SIGTERM. Also starts the
//! controller embedded in `apogee namesrv` when `enableControllerInNamesrv=true`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use controller::{Controller, ControllerConfig};

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Config file in upstream's `key=value` format.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let mut props = crate::read_properties(args.config.as_deref())?;
    if !props.contains_key("metricsPromExporterPort") {
        // Apogee's default controller metrics port (broker 5557, NameServer 5558).
        props.insert("metricsPromExporterPort".to_string(), "5559".to_string());
    }
    let controller = start(&props).await?;
    crate::shutdown_signal().await?;
    tracing::info!("shutting down");
    controller.shutdown().await;
    Ok(())
}

/// Starts a controller from `props` (upstream key names; a bad value names its key).
pub async fn start(props: &HashMap<String, String>) -> anyhow::Result<Controller> {
    let mut props = props.clone();
    if !props.contains_key("controllerStorePath") {
        // Upstream's default, `${user.home}/DledgerController`; the library reads no environment.
        let dir = crate::home_dir().join("DledgerController");
        props.insert(
            "controllerStorePath".to_string(),
            dir.to_string_lossy().into_owned(),
        );
    }
    let config = ControllerConfig::from_properties(&props).context("invalid controller config")?;
    let controller = Controller::start(config)
        .await
        .context("cannot start the controller")?;
    tracing::info!(addr = %controller.local_addr(), "controller started");
    Ok(controller)
}

/// Splits a `namesrv.conf` that embeds a controller: the controller's keys go to the
/// controller, the rest to the NameServer (so neither warns about the other's keys). The
/// metrics keys stay with the NameServer: an embedded controller serves no `/metrics` of its
/// own.
pub fn split_embedded(
    props: &HashMap<String, String>,
) -> (HashMap<String, String>, HashMap<String, String>) {
    props
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| {
            k.starts_with("metrics") || !ControllerConfig::KEYS.contains(&k.as_str())
        })
}
