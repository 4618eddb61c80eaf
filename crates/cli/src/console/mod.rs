//! `apogee console`: a web console served over HTTP (axum), the counterpart of upstream's
//! `rocketmq-dashboard`. It owns the HTTP routes, the JSON API ([`api`]) and the page's assets
//! ([`assets`], compiled into the binary so nothing is fetched at run time). Every figure comes
//! from the cluster over the remoting protocol through the same functions as `apogee admin`,
//! so an API answer has the shape of the matching `apogee admin --json` output. The API is
//! documented in `docs/console-api.yaml` (OpenAPI 3), also served at `/api/openapi.yaml`.

mod api;
mod assets;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::acl_args::AclArgs;
use crate::admin::Admin;
use crate::tls_args::TlsArgs;

/// Port of the console when none is given (upstream `rocketmq-dashboard` serves on 8082 too).
pub(crate) const DEFAULT_CONSOLE_PORT: u16 = 8082;

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// NameServer addresses, `host:port;host:port` (default `$NAMESRV_ADDR`, else 127.0.0.1:9876).
    #[arg(short = 'n', long = "namesrvAddr")]
    namesrv: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = DEFAULT_CONSOLE_PORT)]
    port: u16,
    /// Timeout of each request the console sends to the cluster, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 3000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    acl: AclArgs,
}

/// A running console; dropping it leaves the server running until the runtime stops.
pub(crate) struct Console {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Console {
    /// Binds `addr` and serves the console for the cluster behind `namesrv`, reached over
    /// TLS when `tls` says so, signing with `acl`'s account if any.
    pub(crate) async fn start(
        addr: SocketAddr,
        namesrv: Option<&str>,
        timeout_ms: u64,
        tls: &TlsArgs,
        acl: &AclArgs,
    ) -> anyhow::Result<Console> {
        let admin = Arc::new(Admin::new(namesrv, true, timeout_ms, tls, acl)?);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for the console"))?;
        let local_addr = listener.local_addr()?;
        let app = router(admin);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "console server stopped");
            }
        });
        Ok(Console { local_addr, task })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving.
    pub(crate) fn shutdown(self) {
        self.task.abort();
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/openapi.yaml", get(assets::openapi))
        .route("/api/cluster", get(api::cluster))
        .route("/api/topics", get(api::topics))
        .route("/api/topics/{topic}", get(api::topic))
        .route("/api/groups", get(api::groups))
        .route("/api/groups/{group}", get(api::group))
        .route("/api/messages", get(api::messages_by_key))
        .route("/api/messages/{id}", get(api::message))
        .route("/api/dlq/{group}", get(api::dead_letters))
        .route("/api/dlq/{group}/resend", post(api::resend))
        .with_state(admin)
}

/// `apogee console`: serves until Ctrl-C or SIGTERM.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let console = Console::start(
        SocketAddr::new(args.host, args.port),
        args.namesrv.as_deref(),
        args.timeout_ms,
        &args.tls,
        &args.acl,
    )
    .await?;
    crate::admin::write_stdout(&format!(
        "Apogee console listening on http://{}",
        console.local_addr()
    ))?;
    crate::shutdown_signal().await?;
    console.shutdown();
    Ok(())
}
