//! [`NameServer`]: a running NameServer — the remoting server with the request handlers and
//! the task that expires silent brokers, around the state they share
//! ([`NamesrvState`](crate::state::NamesrvState)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use observe::MetricsServer;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use remoting::server::{Connection, ConnectionListener, RemotingServer, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::NamesrvConfig;
use crate::error::NamesrvError;
use crate::handlers;
use crate::kv::KvConfigManager;
use crate::metrics::NamesrvMetrics;
use crate::route::RouteInfoManager;
use crate::state::NamesrvState;

/// Shortest pause between two expiry scans, whatever `scanNotActiveBrokerInterval` says.
const MIN_SCAN_INTERVAL: Duration = Duration::from_millis(10);

/// Unregisters the brokers of a connection when it closes.
struct BrokerHousekeeping(Arc<NamesrvState>);

impl ConnectionListener for BrokerHousekeeping {
    fn on_close(&self, conn: &Connection) {
        self.0.routes.write().on_connection_closed(conn.id());
    }
}

/// A running NameServer.
pub struct NameServer {
    server: RemotingServer,
    state: Arc<NamesrvState>,
    scanner: JoinHandle<()>,
    stop_scanner: oneshot::Sender<()>,
    /// `GET /metrics`, when enabled.
    metrics_server: Option<MetricsServer>,
}

impl NameServer {
    /// Loads the KV configuration, binds `bindAddress:listenPort` and starts serving.
    pub async fn start(config: NamesrvConfig) -> Result<NameServer, NamesrvError> {
        let kv = KvConfigManager::load(&config.kv_config_path)?;
        let tls = remoting::tls::ServerTls::new(&config.tls_server_settings())
            .map_err(remoting::RemotingError::from)?;
        let server_config = ServerConfig {
            listen: config.listen_addr(),
            max_frame_size: config.max_frame_size,
            max_connections: config.max_connections,
            limits: config.request_limits(),
            tls,
        };
        let acl = if config.acl_enable {
            let home = config.rocketmq_home.clone().unwrap_or_default();
            Some(acl::AclValidator::load(acl::AclFiles::new(home))?)
        } else {
            None
        };
        let state = Arc::new(NamesrvState {
            acl,
            routes: RwLock::new(RouteInfoManager::new(config.route_config())),
            config: RwLock::new(config),
            kv,
            unsupported: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            metrics: Arc::new(NamesrvMetrics::new()),
        });
        let mut dispatcher = handlers::dispatcher(&state)?;
        dispatcher.set_observer(state.metrics.clone());
        dispatcher.set_listener(Arc::new(BrokerHousekeeping(state.clone())));
        let server = RemotingServer::start(server_config, dispatcher).await?;
        let (stop_scanner, stop) = oneshot::channel();
        let scanner = tokio::spawn(scan_not_active_brokers(state.clone(), stop));
        tracing::info!(addr = %server.local_addr(), "NameServer started");
        let mut namesrv = NameServer {
            server,
            state,
            scanner,
            stop_scanner,
            metrics_server: None,
        };
        let metrics_addr = namesrv.state.config.read().metrics_addr();
        if let Some(addr) = metrics_addr {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    namesrv.serve_metrics(listener);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "metrics endpoint not started (metricsPromExporterPort)")
                }
            }
        }
        Ok(namesrv)
    }

    /// Serves this NameServer's `/metrics` on `listener` (in place of the configured port,
    /// which is not bound when `metricsPromExporterPort` is 0); returns the bound address.
    pub fn serve_metrics(&mut self, listener: tokio::net::TcpListener) -> Option<SocketAddr> {
        let weak = Arc::downgrade(&self.state);
        let render = Arc::new(move || match weak.upgrade() {
            Some(state) => {
                let refused: Vec<(i32, u64)> = state
                    .unsupported
                    .lock()
                    .iter()
                    .map(|(c, n)| (*c, *n))
                    .collect();
                let (live, topics) = {
                    let routes = state.routes.read();
                    let live = routes
                        .cluster_info()
                        .broker_addr_table
                        .values()
                        .map(|b| b.broker_addrs.len())
                        .sum();
                    (live, routes.all_topic_list().topic_list.len())
                };
                state.metrics.render(&refused, live, topics)
            }
            None => String::new(),
        });
        self.metrics_server = match MetricsServer::serve(listener, render) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint not started");
                None
            }
        };
        self.metrics_addr()
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|m| m.local_addr())
    }

    /// Address the server listens on (the real port when `listenPort` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// How many requests of each code a NameServer does not serve have arrived.
    pub fn unsupported_request_counts(&self) -> BTreeMap<i32, u64> {
        self.state.unsupported.lock().clone()
    }

    /// Read access to the route tables. Do not hold it across an `.await`.
    pub fn route_info(&self) -> RwLockReadGuard<'_, RouteInfoManager> {
        self.state.routes.read()
    }

    /// The configuration in force (UPDATE_NAMESRV_CONFIG may have changed it).
    pub fn config(&self) -> NamesrvConfig {
        self.state.config.read().clone()
    }

    /// Stops the expiry scanner and the remoting server (every connection and handler task).
    pub async fn shutdown(self) {
        // The scanner may have ended already only if it panicked; then there is nothing to stop.
        let _ = self.stop_scanner.send(());
        if let Err(e) = self.scanner.await {
            tracing::error!("broker expiry scanner failed: {e}");
        }
        self.server.shutdown().await;
        tracing::info!("NameServer stopped");
    }
}

/// Every `scanNotActiveBrokerInterval`, unregisters brokers not heard from within their
/// timeout, until `stop` fires.
async fn scan_not_active_brokers(state: Arc<NamesrvState>, mut stop: oneshot::Receiver<()>) {
    loop {
        let interval = state
            .config
            .read()
            .scan_not_active_broker_interval
            .max(MIN_SCAN_INTERVAL);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(interval) => {}
        }
        state.routes.write().scan_not_active_broker(Instant::now());
    }
}
