//! The `apogee` binary: one executable whose subcommands start Apogee's processes and tools.
//! Config files and environment variables are read here only; libraries take typed configs.

mod acl_args;
mod admin;
mod bench;
mod bench_grpc;
mod broker_cmd;
mod console;
mod controller_cmd;
mod namesrv_cmd;
mod proxy_cmd;
mod quickstart_cmd;
mod standalone_cmd;
mod tls_args;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: per-request allocations were 10% (broker) to 40%
/// (consumer) of CPU time under glibc in `apogee bench` profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "apogee",
    version,
    about = "Apogee: a RocketMQ-compatible message queue"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a NameServer (upstream `mqnamesrv`).
    Namesrv(namesrv_cmd::NamesrvArgs),
    /// Run a controller (upstream `mqcontroller`) from a `controller.conf`: Raft-replicated
    /// broker replica groups and master elections (preview: brokers do not use it yet).
    Controller(controller_cmd::ControllerArgs),
    /// Run a broker (upstream `mqbroker`) from a `broker.conf`.
    Broker(broker_cmd::BrokerArgs),
    /// Run the 5.x gRPC endpoint (upstream `mqproxy`, port 8081) for a cluster.
    Proxy(proxy_cmd::ProxyArgs),
    /// Run a NameServer and one master broker in one process (ports 9876 and 10911).
    Standalone(standalone_cmd::StandaloneArgs),
    /// Administer a cluster (upstream `mqadmin`): topics, groups, brokers, messages.
    Admin(admin::AdminArgs),
    /// Serve the web console for a cluster (upstream `rocketmq-dashboard`) on port 8082.
    Console(console::ConsoleArgs),
    /// Measure produce, consume and end-to-end throughput and latency.
    Bench(bench::BenchArgs),
    /// Start an embedded server, produce and consume a few hundred messages, and exit.
    Quickstart(quickstart_cmd::QuickstartArgs),
}

/// Logs to stderr; `default` applies when `RUST_LOG` is not set.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(std::io::stderr)
        .init();
}

/// Reads a Java `.properties` config file (`key=value` lines with upstream key names); an empty
/// map without a file.
pub(crate) fn read_properties(
    path: Option<&std::path::Path>,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    use anyhow::Context;
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            Ok(namesrv::parse_properties(&text))
        }
        None => Ok(Default::default()),
    }
}

/// The user's home directory, under which the commands keep their files by default as upstream
/// does (`user.home`): `$HOME`, else the user's passwd entry, else (with a warning) the absolute
/// working directory, so a default path is never relative. Only the binary decides this: the
/// libraries take paths in their configs.
pub(crate) fn home_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::home_dir().filter(|h| !h.as_os_str().is_empty()) {
        return home;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| std::path::PathBuf::from("/"));
    tracing::warn!(dir = %cwd.display(), "no home directory (HOME unset, no passwd entry): default paths go under the working directory");
    cwd
}

/// Resolves when the process receives SIGINT or SIGTERM.
/// Sets `rocketmqHome` from `ROCKETMQ_HOME` when the config file names none (upstream reads the
/// home from `-Drocketmq.home.dir` or that variable).
pub(crate) fn default_rocketmq_home(props: &mut std::collections::HashMap<String, String>) {
    if !props.contains_key("rocketmqHome") {
        if let Some(home) = std::env::var_os("ROCKETMQ_HOME") {
            props.insert(
                "rocketmqHome".to_string(),
                home.to_string_lossy().into_owned(),
            );
        }
    }
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Runs the command; an error is printed with its causes on one line and exits with status 1.
fn main() -> std::process::ExitCode {
    match run(Cli::parse_from(admin::upstream_flags(std::env::args_os()))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `e` and its causes joined by `": "`, leaving out a cause whose text the line already ends
/// with (errors that print their source as part of their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The tools print their own output; only warnings from the libraries are wanted there.
    let tool = matches!(
        cli.command,
        Command::Admin(_) | Command::Bench(_) | Command::Quickstart(_)
    );
    init_logging(if tool { "warn" } else { "info,openraft=warn" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Namesrv(args) => namesrv_cmd::run(args).await,
            Command::Controller(args) => controller_cmd::run(args).await,
            Command::Broker(args) => broker_cmd::run(args).await,
            Command::Proxy(args) => proxy_cmd::run(args).await,
            Command::Standalone(args) => standalone_cmd::run(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Console(args) => console::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Quickstart(args) => quickstart_cmd::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let bind = remoting::RemotingError::Io {
            addr: "0.0.0.0:10911".into(),
            source: io,
        };
        let e =
            anyhow::Error::from(broker::BrokerError::from(bind)).context("cannot start the broker");
        assert_eq!(
            error_chain(&e),
            "cannot start the broker: I/O error talking to 0.0.0.0:10911: Address already in use"
        );
    }
}
