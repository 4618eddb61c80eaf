//! Controller configuration: [`ControllerConfig`] with upstream's key names
//! (`ControllerConfig`), read from a Java `.properties` text, and the parsed peer list
//! ([`Peers`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use remoting::properties::{apply_properties, InvalidSetting};
use remoting::tls::{ClientAuth, Secret, TlsClientKeys, TlsMode, TlsServerSettings};
use thiserror::Error;

use crate::raft::NodeId;

/// A configuration value that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config key `{key}` has value `{value}`, expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    /// UPDATE_CONTROLLER_CONFIG named a key that is only read at start (upstream's black list
    /// remark, with the key).
    #[error("Can not update config in black list: {0}")]
    NotUpdatable(String),
}

impl From<InvalidSetting> for ConfigError {
    fn from(e: InvalidSetting) -> Self {
        ConfigError::InvalidValue {
            key: e.key,
            value: e.value,
            expected: e.expected,
        }
    }
}

/// Upstream keys that are accepted and have no effect here.
const IGNORED_KEYS: &[&str] = &[
    // Apogee always checks client certificates against `tls.server.trustCertPath` when
    // `tls.server.need.client.auth` asks for them (upstream only with this key true).
    "tls.server.authClient",
    "configStorePath",
    "controllerType",
    "controllerThreadPoolNums",
    "controllerRequestThreadPoolQueueCapacity",
    "mappedFileSize",
    "controllerStorePath.dledger",
    "isProcessReadEvent",
    "electMasterMaxRetryCount",
    "jRaftGroupId",
    "jRaftServerId",
    "jRaftInitConf",
    "jRaftControllerRPCAddr",
    "enableControllerInNamesrv",
    "listenPort",
];

remoting::settings_struct! {
    /// Controller settings. Field docs name the properties key.
    pub struct ControllerConfig {
        /// `controllerDLegerGroup`: name of the Raft group (reported by GET_METADATA_INFO).
        group: String = "controllerDLegerGroup", "DefaultControllerGroup".to_string();
        /// `controllerDLegerPeers`: `id-host:port;...`, every controller of the group.
        peers: String = "controllerDLegerPeers", "n0-127.0.0.1:9877".to_string();
        /// `controllerDLegerSelfId`: this controller's id in `controllerDLegerPeers`; its entry
        /// there is the address it listens on.
        self_id: String = "controllerDLegerSelfId", "n0".to_string();
        /// `controllerStorePath`: directory of the Raft log, vote and snapshots. No default in
        /// the library (the `apogee` binary uses upstream's `~/DledgerController`); a
        /// controller refuses to start without one.
        store_path: PathBuf = "controllerStorePath", PathBuf::new();
        /// `enableElectUncleanMaster`: elect a replica outside the SyncStateSet when none in it
        /// is alive (may lose messages).
        enable_elect_unclean_master: bool = "enableElectUncleanMaster", false;
        /// `notifyBrokerRoleChanged`: tell a group's brokers (NOTIFY_BROKER_ROLE_CHANGED) when
        /// the controller elected a new master.
        notify_broker_role_changed: bool = "notifyBrokerRoleChanged", true;
        /// `scanNotActiveBrokerInterval` (ms): how often silent brokers are looked for.
        scan_not_active_broker_interval: Duration = "scanNotActiveBrokerInterval", Duration::from_secs(5);
        /// `controllerHeartBeatTimeoutMills` (ms): a broker not heard from for this long is dead
        /// (unless its heartbeat names its own timeout).
        controller_heart_beat_timeout: Duration = "controllerHeartBeatTimeoutMills", Duration::from_secs(10);
        /// `raftHeartbeatIntervalMillis` (ms, Apogee): Raft leader heartbeat; elections time
        /// out after 3-6 of these.
        raft_heartbeat_interval: Duration = "raftHeartbeatIntervalMillis", Duration::from_millis(200);
        /// `snapshotLogsSinceLast` (Apogee): take a state-machine snapshot after this many log
        /// entries.
        snapshot_logs_since_last: u64 = "snapshotLogsSinceLast", 1000;
        /// `maxFrameSize` (bytes): larger frames close the connection.
        max_frame_size: usize = "maxFrameSize", remoting::codec::DEFAULT_MAX_FRAME_SIZE;
        /// `maxConnections`: connections served at once.
        max_connections: usize = "maxConnections", 10_000;
        /// `aclEnable`: administrative requests (manual elections with `designateElect`,
        /// `CLEAN_BROKER_DATA`) need a signed request from an admin account of
        /// `<rocketmqHome>/conf/plain_acl.yml`; brokers' own requests stay open.
        acl_enable: bool = "aclEnable", false;
        /// `rocketmqHome`: where `conf/plain_acl.yml` is read from.
        rocketmq_home: Option<PathBuf> = "rocketmqHome", None;
        /// `metricsExporterType`: `DISABLE` records nothing; `PROM` (and upstream's `OTLP_GRPC`
        /// and `LOG`, which have no exporter here) record and serve `/metrics`.
        metrics_exporter_type: String = "metricsExporterType", "PROM".to_string();
        /// `metricsPromExporterPort`: port of `GET /metrics`; 0 serves none (the library
        /// default; `apogee controller` serves on 5559).
        metrics_prom_exporter_port: u16 = "metricsPromExporterPort", 0;
        /// `metricsPromExporterHost`: address of the metrics port; default all interfaces.
        metrics_prom_exporter_host: Option<IpAddr> = "metricsPromExporterHost", None;
        /// `tls.server.mode`: `disabled`, `permissive` (upstream's default: TLS and plaintext
        /// on the same port, told apart by the first byte) or `enforcing` (TLS only). See
        /// `remoting::tls`. Upstream reads the `tls.*` keys as JVM system properties.
        tls_server_mode: TlsMode = "tls.server.mode", TlsMode::Permissive;
        /// `tls.server.certPath`: PEM certificate chain; unset: a self-signed certificate is
        /// generated at start.
        tls_server_cert_path: Option<PathBuf> = "tls.server.certPath", None;
        /// `tls.server.keyPath`: PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1).
        tls_server_key_path: Option<PathBuf> = "tls.server.keyPath", None;
        /// `tls.server.keyPassword`: encrypted keys are not supported (start fails naming
        /// the key); never written back in a config dump.
        tls_server_key_password: Option<String> as Secret = "tls.server.keyPassword", None;
        /// `tls.server.trustCertPath`: PEM certificates client certificates are checked against.
        tls_server_trust_cert_path: Option<PathBuf> = "tls.server.trustCertPath", None;
        /// `tls.server.need.client.auth`: `none`, `optional` or `require`.
        tls_server_need_client_auth: ClientAuth = "tls.server.need.client.auth", ClientAuth::None;
        /// `tls.config.file`: a properties file whose `tls.*` keys override these.
        tls_config_file: Option<PathBuf> = "tls.config.file", None;
        /// `tls.test.mode.enable`: upstream's test mode (self-signed server certificate, clients
        /// trust any). The server generates a self-signed certificate whenever none is
        /// configured, whatever this says; outgoing TLS connections (`tls.enable`) accept any
        /// certificate while it is true.
        tls_test_mode_enable: bool = "tls.test.mode.enable", true;
        /// `tls.enable`: the controller's own connections (Raft RPCs to the other controllers,
        /// requests to brokers) use TLS.
        tls_enable: bool = "tls.enable", false;
        /// `tls.client.authServer`: check the server's certificate against
        /// `tls.client.trustCertPath` (only when `tls.test.mode.enable` is false).
        tls_client_auth_server: bool = "tls.client.authServer", false;
        /// `tls.client.trustCertPath`: PEM certificates servers' chains must lead to.
        tls_client_trust_cert_path: Option<PathBuf> = "tls.client.trustCertPath", None;
        /// `tls.client.certPath`: PEM certificate shown to servers that ask for one.
        tls_client_cert_path: Option<PathBuf> = "tls.client.certPath", None;
        /// `tls.client.keyPath`: its PEM private key.
        tls_client_key_path: Option<PathBuf> = "tls.client.keyPath", None;
        /// `tls.client.keyPassword`: as `tls.server.keyPassword`.
        tls_client_key_password: Option<String> as Secret = "tls.client.keyPassword", None;
    }
}

/// The keys UPDATE_CONTROLLER_CONFIG may change: the ones read while the controller runs
/// (each election, each role-change notice, each heartbeat). Every other key is only read at
/// start, so a change would show in GET_CONTROLLER_CONFIG without taking effect: it is refused
/// as upstream refuses the keys of its `configBlackList`.
pub const UPDATABLE_KEYS: &[&str] = &[
    "enableElectUncleanMaster",
    "notifyBrokerRoleChanged",
    "controllerHeartBeatTimeoutMills",
];

/// One controller of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its id as written in `controllerDLegerPeers` (`n0`).
    pub name: String,
    pub addr: SocketAddr,
}

/// The controllers of the group by Raft node id: ids are the places of the peers sorted by
/// name, so every controller derives the same ids from the same peer list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers {
    pub by_id: BTreeMap<NodeId, Peer>,
    pub self_id: NodeId,
}

impl Peers {
    /// This controller.
    pub fn me(&self) -> &Peer {
        // `parse` only builds a `Peers` whose `self_id` is a key.
        &self.by_id[&self.self_id]
    }
}

impl ControllerConfig {
    /// The TLS settings of the controller port.
    pub fn tls_server_settings(&self) -> TlsServerSettings {
        TlsServerSettings {
            mode: self.tls_server_mode,
            cert_path: self.tls_server_cert_path.clone(),
            key_path: self.tls_server_key_path.clone(),
            key_password: self.tls_server_key_password.clone(),
            trust_cert_path: self.tls_server_trust_cert_path.clone(),
            need_client_auth: self.tls_server_need_client_auth,
            config_file: self.tls_config_file.clone(),
        }
    }

    /// The `tls.*` keys of the controller's own connections.
    pub fn tls_client_keys(&self) -> TlsClientKeys {
        TlsClientKeys {
            enable: self.tls_enable,
            test_mode: self.tls_test_mode_enable,
            auth_server: self.tls_client_auth_server,
            trust_cert_path: self.tls_client_trust_cert_path.clone(),
            cert_path: self.tls_client_cert_path.clone(),
            key_path: self.tls_client_key_path.clone(),
            key_password: self.tls_client_key_password.clone(),
            config_file: self.tls_config_file.clone(),
        }
    }

    /// Defaults overridden by `props` (upstream key names). Unknown keys are logged and
    /// skipped; a value that does not parse is an error naming the key.
    pub fn from_properties(
        props: &HashMap<String, String>,
    ) -> Result<ControllerConfig, ConfigError> {
        let mut config = ControllerConfig::default();
        apply_properties(props, IGNORED_KEYS, "controller", |key, raw| {
            config.set(key, raw)
        })?;
        config.peers()?;
        if !["DISABLE", "PROM", "OTLP_GRPC", "LOG"]
            .iter()
            .any(|t| config.metrics_exporter_type.eq_ignore_ascii_case(t))
        {
            return Err(ConfigError::InvalidValue {
                key: "metricsExporterType".into(),
                value: config.metrics_exporter_type.clone(),
                expected: "DISABLE, PROM, OTLP_GRPC or LOG",
            });
        }
        Ok(config)
    }

    /// This configuration with `props` applied (UPDATE_CONTROLLER_CONFIG): every key must be
    /// one of [`UPDATABLE_KEYS`] and its value must parse, else nothing is applied.
    pub fn updated(
        &self,
        props: &HashMap<String, String>,
    ) -> Result<ControllerConfig, ConfigError> {
        let mut next = self.clone();
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        for key in keys {
            if !UPDATABLE_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::NotUpdatable(key.clone()));
            }
            if let Some(result) = next.set(key, props[key].trim()) {
                result?;
            }
        }
        Ok(next)
    }

    /// Whether metrics are recorded (`metricsExporterType` is not `DISABLE`).
    pub fn metrics_enabled(&self) -> bool {
        !self.metrics_exporter_type.eq_ignore_ascii_case("DISABLE")
    }

    /// Where `/metrics` is served: `None` when metrics are disabled or
    /// `metricsPromExporterPort` is 0.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        if !self.metrics_enabled() {
            return None;
        }
        observe::exporter_addr(
            self.metrics_prom_exporter_port,
            self.metrics_prom_exporter_host,
        )
    }

    /// Parses `controllerDLegerPeers` and finds `controllerDLegerSelfId` in it.
    pub fn peers(&self) -> Result<Peers, ConfigError> {
        let invalid = |key: &str, value: &str, expected| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let mut named = BTreeMap::new();
        for item in self
            .peers
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (name, addr) = item.split_once('-').ok_or_else(|| {
                invalid("controllerDLegerPeers", &self.peers, "`id-host:port;...`")
            })?;
            let addr: SocketAddr = addr.trim().parse().map_err(|_| {
                invalid(
                    "controllerDLegerPeers",
                    &self.peers,
                    "`id-host:port;...` with IP addresses",
                )
            })?;
            if named.insert(name.trim().to_string(), addr).is_some() {
                return Err(invalid(
                    "controllerDLegerPeers",
                    &self.peers,
                    "distinct ids",
                ));
            }
        }
        if named.is_empty() {
            return Err(invalid(
                "controllerDLegerPeers",
                &self.peers,
                "at least one peer",
            ));
        }
        let by_id: BTreeMap<NodeId, Peer> = named
            .into_iter()
            .enumerate()
            .map(|(i, (name, addr))| (i as NodeId, Peer { name, addr }))
            .collect();
        let self_id = by_id
            .iter()
            .find(|(_, p)| p.name == self.self_id)
            .map(|(id, _)| *id)
            .ok_or_else(|| {
                invalid(
                    "controllerDLegerSelfId",
                    &self.self_id,
                    "an id listed in controllerDLegerPeers",
                )
            })?;
        Ok(Peers { by_id, self_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> HashMap<String, String> {
        remoting::properties::parse_properties(text)
    }

    #[test]
    fn peers_parse_and_self_is_found() {
        let config = ControllerConfig::from_properties(&props(
            "controllerDLegerPeers=n1-127.0.0.1:9878;n0-127.0.0.1:9877;n2-127.0.0.1:9879\n\
             controllerDLegerSelfId=n1\nenableElectUncleanMaster=true\n",
        ))
        .expect("valid");
        let peers = config.peers().expect("peers");
        assert_eq!(peers.self_id, 1);
        assert_eq!(peers.me().addr.port(), 9878);
        assert!(config.enable_elect_unclean_master);
    }

    #[test]
    fn only_keys_read_while_running_are_updated() {
        let c = ControllerConfig::default();
        let next = c
            .updated(&props(
                "enableElectUncleanMaster=true\ncontrollerHeartBeatTimeoutMills=3000\n",
            ))
            .unwrap();
        assert!(next.enable_elect_unclean_master);
        assert_eq!(next.controller_heart_beat_timeout, Duration::from_secs(3));
        assert_eq!(
            c.updated(&props(
                "enableElectUncleanMaster=true\ncontrollerDLegerPeers=n0-1.2.3.4:1\n"
            )),
            Err(ConfigError::NotUpdatable("controllerDLegerPeers".into()))
        );
        assert!(matches!(
            c.updated(&props("notifyBrokerRoleChanged=maybe\n")),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = ControllerConfig::from_properties(&props("controllerDLegerSelfId=n7\n"))
            .expect_err("unknown self");
        assert!(e.to_string().contains("controllerDLegerSelfId"));
        let e = ControllerConfig::from_properties(&props("controllerHeartBeatTimeoutMills=x\n"))
            .expect_err("bad number");
        assert!(e.to_string().contains("controllerHeartBeatTimeoutMills"));
    }
}
