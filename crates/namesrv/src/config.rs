//! NameServer configuration: [`NamesrvConfig`] with upstream's key names (`NamesrvConfig`,
//! `NettyServerConfig`), read from a Java `.properties` text ([`NamesrvConfig::from_properties`],
//! text format in [`remoting::properties`]) and written back as one (GET_NAMESRV_CONFIG).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use remoting::properties::{apply_properties, InvalidSetting};
use remoting::tls::{ClientAuth, Secret, TlsMode, TlsServerSettings};
use thiserror::Error;

use crate::route::RouteConfig;

/// A configuration value that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config key `{key}` has value `{value}`, expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("config key `{0}` cannot be changed at run time")]
    Blacklisted(String),
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

/// Upstream keys that are accepted and have no effect here (thread pools, Netty tuning, ...).
const IGNORED_KEYS: &[&str] = &[
    // Apogee always checks client certificates against `tls.server.trustCertPath` when
    // `tls.server.need.client.auth` asks for them (upstream only with this key true).
    "tls.server.authClient",
    "configStorePath",
    "productEnvName",
    "clusterTest",
    "clientRequestThreadPoolNums",
    "defaultThreadPoolNums",
    "clientRequestThreadPoolQueueCapacity",
    "defaultThreadPoolQueueCapacity",
    "unRegisterBrokerQueueCapacity",
    "notifyMinBrokerIdChanged",
    "enableControllerInNamesrv",
    "serverWorkerThreads",
    "serverCallbackExecutorThreads",
    "serverSelectorThreads",
    "serverOnewaySemaphoreValue",
    "serverAsyncSemaphoreValue",
    "serverChannelMaxIdleTimeSeconds",
    "serverSocketSndBufSize",
    "serverSocketRcvBufSize",
    "writeBufferHighWaterMark",
    "writeBufferLowWaterMark",
    "serverSocketBacklog",
    "serverNettyWorkerGroupEnable",
    "serverPooledByteBufAllocatorEnable",
    "enableShutdownGracefully",
    "shutdownWaitTimeSeconds",
    "useEpollNativeSelector",
];

remoting::settings_struct! {
    /// NameServer settings. Field docs name the properties key.
    pub struct NamesrvConfig {
        /// `listenPort`: TCP port (0 picks a free one).
        listen_port: u16 = "listenPort", 9876;
        /// `bindAddress`: address to listen on.
        bind_address: IpAddr = "bindAddress", IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        /// `kvConfigPath`: file of the KV config (written atomically on every change). Defaults
        /// to `namesrv/kvConfig.json` under the working directory; [`NamesrvConfig::with_home`]
        /// puts it under a home directory as upstream does (`~/namesrv/kvConfig.json`).
        kv_config_path: PathBuf = "kvConfigPath", kv_config_path_in(Path::new(""));
        /// `scanNotActiveBrokerInterval` (ms): how often expired brokers are looked for.
        scan_not_active_broker_interval: Duration = "scanNotActiveBrokerInterval", Duration::from_secs(5);
        /// `brokerChannelExpiredTime` (ms): a broker not heard from for this long is removed,
        /// unless its registration sets its own `heartbeatTimeoutMillis`.
        broker_channel_expired_time: Duration = "brokerChannelExpiredTime", RouteConfig::DEFAULT.broker_channel_expired_time;
        /// `supportActingMaster`: list a master-less group's lowest-id slave as broker 0 (for
        /// groups whose brokers registered with `enableActingMaster=true`). Upstream's default is
        /// false.
        support_acting_master: bool = "supportActingMaster", RouteConfig::DEFAULT.support_acting_master;
        /// `orderMessageEnable`: fill routes' `orderTopicConf` from the ORDER_TOPIC_CONFIG KV namespace.
        order_message_enable: bool = "orderMessageEnable", false;
        /// `returnOrderTopicConfigToBroker`: answer REGISTER_BROKER with the ORDER_TOPIC_CONFIG table.
        return_order_topic_config_to_broker: bool = "returnOrderTopicConfigToBroker", true;
        /// `enableAllTopicList`: serve GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
        enable_all_topic_list: bool = "enableAllTopicList", true;
        /// `enableTopicList`: serve the by-cluster and unit topic lists.
        enable_topic_list: bool = "enableTopicList", true;
        /// `deleteTopicWithBrokerRegistration`: a registration drops the broker's topics it no
        /// longer lists.
        delete_topic_with_broker_registration: bool = "deleteTopicWithBrokerRegistration", RouteConfig::DEFAULT.delete_topic_with_broker_registration;
        /// `needWaitForService`: refuse route queries for `waitSecondsForService` after start.
        need_wait_for_service: bool = "needWaitForService", false;
        /// `waitSecondsForService` (s).
        wait_seconds_for_service: u64 = "waitSecondsForService", 45;
        /// `configBlackList`: `;`-separated keys UPDATE_NAMESRV_CONFIG may not change.
        config_black_list: String = "configBlackList", "configBlackList;configStorePath;kvConfigPath".to_string();
        /// `maxFrameSize` (bytes): larger frames close the connection.
        max_frame_size: usize = "maxFrameSize", remoting::codec::DEFAULT_MAX_FRAME_SIZE;
        /// `maxConnections`: connections served at once.
        max_connections: usize = "maxConnections", 10_000;
        /// `maxInFlightRequestsPerConnection` (Apogee key): requests received on one
        /// connection and not answered yet; beyond it a request is answered `SYSTEM_BUSY`
        /// (oneway: dropped). Upstream bounds its request queues instead.
        max_in_flight_requests_per_connection: usize = "maxInFlightRequestsPerConnection", remoting::server::RequestLimits::DEFAULT_PER_CONNECTION;
        /// `maxInFlightRequests` (Apogee key): two-way requests in flight on all connections.
        max_in_flight_requests: usize = "maxInFlightRequests", remoting::server::RequestLimits::DEFAULT_TOTAL;
        /// `maxInFlightOnewayRequests` (Apogee key): oneway requests in flight on all
        /// connections; beyond it they are dropped. (Upstream's `serverOnewaySemaphoreValue`
        /// and `serverAsyncSemaphoreValue` bound the server's own outgoing requests instead.)
        max_in_flight_oneway_requests: usize = "maxInFlightOnewayRequests", remoting::server::RequestLimits::DEFAULT_ONEWAY_TOTAL;
        /// `metricsPromExporterPort` (the broker's key): port of `GET /metrics`; 0 serves
        /// nothing. The library default is 0; `apogee namesrv` supplies 5558.
        metrics_prom_exporter_port: u16 = "metricsPromExporterPort", 0;
        /// `metricsPromExporterHost`: address of the metrics port; default all interfaces.
        metrics_prom_exporter_host: Option<IpAddr> = "metricsPromExporterHost", None;
        /// `aclEnable` (Apogee; upstream 4.9's NameServer has no ACL): administrative requests
        /// (KV config, topic deletion and registration, broker write permission, config
        /// updates) need a signed request from an admin account of
        /// `<rocketmqHome>/conf/plain_acl.yml` or a white-listed address; route reads and
        /// broker registration stay open.
        acl_enable: bool = "aclEnable", false;
        /// `rocketmqHome`: where `conf/plain_acl.yml` is read from (the `apogee` binary uses
        /// `$ROCKETMQ_HOME`).
        rocketmq_home: Option<PathBuf> = "rocketmqHome", None;
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
        /// configured, whatever this says; outgoing TLS connections accept any certificate
        /// while it is true (a NameServer opens none).
        tls_test_mode_enable: bool = "tls.test.mode.enable", true;
    }
}

/// Where upstream keeps the KV config below a home directory: `<home>/namesrv/kvConfig.json`.
pub fn kv_config_path_in(home: &Path) -> PathBuf {
    home.join("namesrv").join("kvConfig.json")
}

impl NamesrvConfig {
    /// The TLS settings of this server's ports.
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
    /// The defaults, with the files upstream keeps in the user's home directory placed under
    /// `home` instead of the working directory (`kvConfigPath` = `<home>/namesrv/kvConfig.json`).
    /// The library never looks up a home directory itself; a binary passes one in.
    pub fn with_home(home: &Path) -> NamesrvConfig {
        NamesrvConfig {
            kv_config_path: kv_config_path_in(home),
            ..NamesrvConfig::default()
        }
    }

    /// Defaults overridden by `props` (upstream key names). Unknown keys are logged and
    /// skipped; a value that does not parse is an error naming the key.
    pub fn from_properties(props: &HashMap<String, String>) -> Result<NamesrvConfig, ConfigError> {
        let mut config = NamesrvConfig::default();
        config.update(props)?;
        Ok(config)
    }

    /// Applies `props` on top of this configuration; on error nothing is changed.
    pub fn update(&mut self, props: &HashMap<String, String>) -> Result<(), ConfigError> {
        let mut next = self.clone();
        apply_properties(props, IGNORED_KEYS, "NameServer", |key, raw| {
            next.set(key, raw)
        })?;
        *self = next;
        Ok(())
    }

    /// Keys UPDATE_NAMESRV_CONFIG refuses: `configBlackList` plus upstream's fixed ones.
    pub fn black_listed_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .config_black_list
            .split(';')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        keys.extend([
            "configBlackList",
            "configStorePath",
            "kvConfigPath",
            "rocketmqHome",
            "aclEnable",
        ]);
        keys
    }

    /// `bindAddress:listenPort`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.listen_port)
    }

    /// Where `/metrics` is served: `None` when `metricsPromExporterPort` is 0.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        observe::exporter_addr(
            self.metrics_prom_exporter_port,
            self.metrics_prom_exporter_host,
        )
    }

    /// Bounds on requests in flight, from the `maxInFlight*` keys (0 is taken as 1).
    pub fn request_limits(&self) -> remoting::server::RequestLimits {
        remoting::server::RequestLimits {
            per_connection: self.max_in_flight_requests_per_connection.max(1),
            total: self.max_in_flight_requests.max(1),
            oneway_total: self.max_in_flight_oneway_requests.max(1),
        }
    }

    /// The settings the route tables apply.
    pub fn route_config(&self) -> RouteConfig {
        RouteConfig {
            broker_channel_expired_time: self.broker_channel_expired_time,
            support_acting_master: self.support_acting_master,
            delete_topic_with_broker_registration: self.delete_topic_with_broker_registration,
        }
    }
}

#[cfg(test)]
mod tests {
    use remoting::properties::parse_properties;

    use super::*;

    #[test]
    fn config_from_properties() {
        let props = parse_properties(
            "listenPort=0\nscanNotActiveBrokerInterval=50\nbrokerChannelExpiredTime=300\n\
             supportActingMaster=FALSE\nserverWorkerThreads=4\nnoSuchKey=1\n",
        );
        let c = NamesrvConfig::from_properties(&props).unwrap();
        assert_eq!(c.listen_port, 0);
        assert_eq!(c.scan_not_active_broker_interval, Duration::from_millis(50));
        assert_eq!(c.broker_channel_expired_time, Duration::from_millis(300));
        assert!(!c.support_acting_master);
        assert_eq!(c.max_connections, 10_000);
    }

    #[test]
    fn bad_values_are_named() {
        let props = parse_properties("listenPort=98765\n");
        let err = NamesrvConfig::from_properties(&props).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `listenPort` has value `98765`, expected a port number (0-65535)"
        );
        let err = NamesrvConfig::from_properties(&parse_properties("orderMessageEnable=yes"))
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidValue { key, .. } if key == "orderMessageEnable")
        );
    }

    #[test]
    fn properties_round_trip() {
        let c = NamesrvConfig {
            listen_port: 1234,
            kv_config_path: PathBuf::from("/x/kv.json"),
            ..NamesrvConfig::default()
        };
        let again = NamesrvConfig::from_properties(&parse_properties(&c.to_properties())).unwrap();
        assert_eq!(again, c);
        assert_eq!(NamesrvConfig::KEYS.len(), c.to_properties().lines().count());
    }

    #[test]
    fn home_is_passed_in_not_looked_up() {
        assert_eq!(
            NamesrvConfig::default().kv_config_path,
            PathBuf::from("namesrv/kvConfig.json")
        );
        let c = NamesrvConfig::with_home(Path::new("/home/mq"));
        assert_eq!(
            c.kv_config_path,
            PathBuf::from("/home/mq/namesrv/kvConfig.json")
        );
        assert_eq!(
            c,
            NamesrvConfig {
                kv_config_path: c.kv_config_path.clone(),
                ..NamesrvConfig::default()
            }
        );
    }

    #[test]
    fn tls_keys_are_read_and_bad_values_named() {
        let c = NamesrvConfig::from_properties(&parse_properties(
            "tls.server.mode=ENFORCING\ntls.server.need.client.auth=require\n\
             tls.server.certPath=/pki/ns.pem\ntls.server.keyPath=/pki/ns.key\n\
             tls.server.trustCertPath=/pki/ca.pem\ntls.server.keyPassword=hunter2\n\
             tls.config.file=/etc/rocketmq/tls.properties\ntls.test.mode.enable=false\n",
        ))
        .unwrap();
        let tls = c.tls_server_settings();
        assert_eq!(tls.mode, remoting::tls::TlsMode::Enforcing);
        assert_eq!(tls.need_client_auth, ClientAuth::Require);
        assert_eq!(tls.cert_path, Some(PathBuf::from("/pki/ns.pem")));
        assert_eq!(tls.key_path, Some(PathBuf::from("/pki/ns.key")));
        assert_eq!(tls.trust_cert_path, Some(PathBuf::from("/pki/ca.pem")));
        assert_eq!(tls.key_password.as_deref(), Some("hunter2"));
        assert!(
            !c.to_properties().contains("hunter2"),
            "the password is not echoed"
        );
        assert_eq!(
            NamesrvConfig::default().tls_server_mode,
            TlsMode::Permissive
        );
        for bad in ["tls.server.mode=on", "tls.server.need.client.auth=yes"] {
            let err = NamesrvConfig::from_properties(&parse_properties(bad)).unwrap_err();
            let key = bad.split('=').next().unwrap();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: k, .. } if k == key),
                "{err}"
            );
        }
    }

    #[test]
    fn update_is_all_or_nothing() {
        let mut c = NamesrvConfig::default();
        let props = HashMap::from([
            ("enableTopicList".to_string(), "false".to_string()),
            ("listenPort".to_string(), "x".to_string()),
        ]);
        assert!(c.update(&props).is_err());
        assert!(c.enable_topic_list);
        assert!(c.black_listed_keys().contains(&"kvConfigPath"));
    }
}
