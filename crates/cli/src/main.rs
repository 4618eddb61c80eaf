//! The `apogee` binary: one executable whose subcommands start Apogee's processes and tools.
//! Config files and environment variables are read here only; libraries take typed configs.

mod namesrv_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "apogee", version, about = "Apogee: a RocketMQ-compatible message queue")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a NameServer (upstream `mqnamesrv`).
    Namesrv(namesrv_cmd::NamesrvArgs),
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Namesrv(args) => namesrv_cmd::run(args).await,
        }
    })
}
