//! [`ClientConfig`]: settings shared by producers and consumers, under upstream's names
//! (`ClientConfig.java`) with upstream's defaults.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use remoting::acl::Credentials;
use remoting::tls::ClientTls;
use remoting::NameServerAddr;

use crate::error::{ClientError, Result};

/// Instance name that is replaced by `pid#nanos` when a client starts, so that every
/// producer and consumer of a process gets its own client id (upstream 5.x behaviour).
pub const DEFAULT_INSTANCE_NAME: &str = "DEFAULT";

/// Settings every client has. Build it with [`ClientConfig::new`] and the chainable setters.
///
/// ```
/// use std::time::Duration;
/// use client::ClientConfig;
///
/// let config = ClientConfig::new("127.0.0.1:9876;127.0.0.2:9876")
///     .unwrap()
///     .instance_name("orders")
///     .poll_name_server_interval(Duration::from_secs(10));
/// assert_eq!(config.namesrv_addr.len(), 2);
/// assert_eq!(config.heartbeat_broker_interval, Duration::from_secs(30));
/// assert!(config.client_id().ends_with("@orders"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `namesrvAddr`: the NameServers, tried in turn.
    pub namesrv_addr: Vec<NameServerAddr>,
    /// `clientIP`: this host's address as brokers see it (default: first non-loopback address).
    pub client_ip: String,
    /// `instanceName` (default `DEFAULT`, replaced by `pid#nanos` on start).
    pub instance_name: String,
    /// `unitName`, appended to the client id when set.
    pub unit_name: Option<String>,
    /// `unitMode`.
    pub unit_mode: bool,
    /// `pollNameServerInterval`: how often routes are refreshed (30 s).
    pub poll_name_server_interval: Duration,
    /// `heartbeatBrokerInterval`: how often every broker gets a heartbeat (30 s).
    pub heartbeat_broker_interval: Duration,
    /// `persistConsumerOffsetInterval`: how often consumer offsets are committed (5 s).
    pub persist_consumer_offset_interval: Duration,
    /// `pullTimeDelayMillsWhenException`: pause after a failed pull (1 s).
    pub pull_time_delay_when_exception: Duration,
    /// `mqClientApiTimeout`: timeout of NameServer and broker calls other than sends and
    /// long-polling pulls (3 s).
    pub mq_client_api_timeout: Duration,
    /// `sendLatencyEnable`: avoid, for a while, a broker that just failed or answered slowly.
    /// Upstream's default is false; Apogee's is true, as its issue asks for this behaviour.
    pub send_latency_enable: bool,
    /// TLS on every NameServer and broker connection (upstream's `useTLS`); `None` for
    /// plaintext. Build it with [`remoting::tls::ClientTls::new`].
    pub tls: Option<ClientTls>,
    /// ACL 1.0 account every request is signed with (upstream's `AclClientRPCHook` with
    /// `SessionCredentials`); `None` sends unsigned requests.
    pub credentials: Option<Credentials>,
}

impl ClientConfig {
    /// A config for the NameServers in `namesrv_addr` (`host:port` separated by `;`).
    pub fn new(namesrv_addr: &str) -> Result<Self> {
        let addrs = NameServerAddr::parse_list(namesrv_addr);
        if addrs.is_empty() {
            return Err(ClientError::Config(format!(
                "namesrvAddr `{namesrv_addr}` holds no host:port"
            )));
        }
        Ok(ClientConfig {
            namesrv_addr: addrs,
            client_ip: local_ip().to_string(),
            instance_name: DEFAULT_INSTANCE_NAME.to_string(),
            unit_name: None,
            unit_mode: false,
            poll_name_server_interval: Duration::from_secs(30),
            heartbeat_broker_interval: Duration::from_secs(30),
            persist_consumer_offset_interval: Duration::from_secs(5),
            pull_time_delay_when_exception: Duration::from_secs(1),
            mq_client_api_timeout: Duration::from_secs(3),
            send_latency_enable: true,
            tls: None,
            credentials: None,
        })
    }

    /// Sets `clientIP`.
    pub fn client_ip(mut self, ip: impl Into<String>) -> Self {
        self.client_ip = ip.into();
        self
    }

    /// Sets `instanceName`.
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance_name = name.into();
        self
    }

    /// Sets `unitName`.
    pub fn unit_name(mut self, name: impl Into<String>) -> Self {
        self.unit_name = Some(name.into());
        self
    }

    /// Sets `pollNameServerInterval`.
    pub fn poll_name_server_interval(mut self, d: Duration) -> Self {
        self.poll_name_server_interval = d;
        self
    }

    /// Sets `heartbeatBrokerInterval`.
    pub fn heartbeat_broker_interval(mut self, d: Duration) -> Self {
        self.heartbeat_broker_interval = d;
        self
    }

    /// Sets `persistConsumerOffsetInterval`.
    pub fn persist_consumer_offset_interval(mut self, d: Duration) -> Self {
        self.persist_consumer_offset_interval = d;
        self
    }

    /// Signs every request with the account `access_key` / `secret_key` (brokers with
    /// `aclEnable=true` check it).
    pub fn credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials::new(access_key, secret_key));
        self
    }

    /// Connects with TLS (see [`ClientConfig::tls`]).
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets `mqClientApiTimeout`.
    pub fn mq_client_api_timeout(mut self, d: Duration) -> Self {
        self.mq_client_api_timeout = d;
        self
    }

    /// Sets `sendLatencyEnable`.
    pub fn send_latency_enable(mut self, enable: bool) -> Self {
        self.send_latency_enable = enable;
        self
    }

    /// `clientIP@instanceName[@unitName]`, the id brokers know this client by.
    pub fn client_id(&self) -> String {
        let mut id = format!("{}@{}", self.client_ip, self.instance_name);
        if let Some(unit) = self.unit_name.as_deref().filter(|u| !u.trim().is_empty()) {
            id.push('@');
            id.push_str(unit);
        }
        id
    }

    /// Replaces the `DEFAULT` instance name by `pid#nanos` (upstream
    /// `changeInstanceNameToPID`), so each started client has its own id.
    pub(crate) fn resolve_instance_name(&mut self) {
        if self.instance_name == DEFAULT_INSTANCE_NAME {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            self.instance_name = format!("{}#{}", std::process::id(), nanos);
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let positive = [
            ("pollNameServerInterval", self.poll_name_server_interval),
            ("heartbeatBrokerInterval", self.heartbeat_broker_interval),
            (
                "persistConsumerOffsetInterval",
                self.persist_consumer_offset_interval,
            ),
            ("mqClientApiTimeout", self.mq_client_api_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(ClientError::Config(format!("{name} must be positive")));
            }
        }
        if self.client_ip.trim().is_empty() {
            return Err(ClientError::Config("clientIP is blank".into()));
        }
        Ok(())
    }
}

/// This host's address as upstream picks it: the first non-loopback IPv4 address, else the
/// first non-loopback IPv6 one, else 127.0.0.1.
pub fn local_ip() -> IpAddr {
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        .or_else(|| {
            addrs
                .iter()
                .find(|ip| ip.is_ipv6() && !ip.is_loopback() && !ip.is_unspecified())
        })
        .copied()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let c = ClientConfig::new("127.0.0.1:9876").unwrap();
        assert_eq!(c.poll_name_server_interval, Duration::from_secs(30));
        assert_eq!(c.heartbeat_broker_interval, Duration::from_secs(30));
        assert_eq!(c.persist_consumer_offset_interval, Duration::from_secs(5));
        assert_eq!(c.mq_client_api_timeout, Duration::from_secs(3));
        assert_eq!(c.instance_name, "DEFAULT");
        assert!(c.validate().is_ok());
        assert!(ClientConfig::new("nonsense").is_err());
    }

    #[test]
    fn client_id_and_instance_name() {
        let mut c = ClientConfig::new("127.0.0.1:9876")
            .unwrap()
            .client_ip("10.0.0.1")
            .unit_name("u1");
        assert_eq!(c.client_id(), "10.0.0.1@DEFAULT@u1");
        c.resolve_instance_name();
        let pid = std::process::id().to_string();
        assert!(c.instance_name.starts_with(&format!("{pid}#")));
        let named = ClientConfig::new("127.0.0.1:9876")
            .unwrap()
            .instance_name("x");
        let mut resolved = named.clone();
        resolved.resolve_instance_name();
        assert_eq!(resolved.instance_name, "x");
        assert!(named
            .poll_name_server_interval(Duration::ZERO)
            .validate()
            .is_err());
    }
}
