//! What the `apogee` binary's tests share: a NameServer and a broker started in the test
//! process on ephemeral 127.0.0.1 ports, with their data in a temporary directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use broker::{Broker, BrokerConfig};
use namesrv::{NameServer, NamesrvConfig};

/// Starts a NameServer and one master broker under `dir`; `broker` is the broker's config
/// before the NameServer address, ports, advertised address and store path are filled in.
#[allow(dead_code)] // each test file uses one of the two
pub async fn start_servers(dir: &Path, broker: BrokerConfig) -> (NameServer, Broker) {
    start_servers_with(dir, NamesrvConfig::default(), broker).await
}

/// [`start_servers`] with the NameServer's config too (its port and KV path are filled in).
pub async fn start_servers_with(
    dir: &Path,
    namesrv: NamesrvConfig,
    broker: BrokerConfig,
) -> (NameServer, Broker) {
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        kv_config_path: dir.join("kv.json"),
        ..namesrv
    })
    .await
    .unwrap();
    let broker = Broker::start(BrokerConfig {
        namesrv_addr: format!("127.0.0.1:{}", namesrv.local_addr().port()),
        listen_port: 0,
        broker_ip1: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        store_path_root_dir: dir.join("store"),
        ..broker
    })
    .await
    .unwrap();
    (namesrv, broker)
}
