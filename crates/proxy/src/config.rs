//! The proxy's settings: upstream's `rmq-proxy.json` keys that apply.

use std::net::{IpAddr, Ipv4Addr};

use remoting::NameServerAddr;
use serde_json::Value;

/// A bad `rmq-proxy.json` value, naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("rmq-proxy.json is not a JSON object: {0}")]
    Json(String),
    #[error("{key}: {reason}")]
    Key { key: &'static str, reason: String },
}

/// Proxy settings (upstream `ProxyConfig` names).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// `grpcServerPort` (8081); 0 picks a free port.
    pub grpc_server_port: u16,
    /// Where to listen (all interfaces).
    pub bind_address: IpAddr,
    /// `namesrvAddr`: the NameServers, tried in order.
    pub namesrv_addr: Vec<NameServerAddr>,
    /// `rocketMQClusterName` (`DefaultCluster`).
    pub cluster_name: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            grpc_server_port: 8081,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            namesrv_addr: Vec::new(),
            cluster_name: "DefaultCluster".into(),
        }
    }
}

impl ProxyConfig {
    /// Applies the keys of an `rmq-proxy.json` text over `self`; other keys are ignored.
    pub fn apply_json(mut self, text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::Json("not an object".into()))?;
        if let Some(p) = obj.get("grpcServerPort") {
            let n = p
                .as_u64()
                .or_else(|| p.as_str().and_then(|s| s.trim().parse().ok()))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| ConfigError::Key {
                    key: "grpcServerPort",
                    reason: format!("not a port: {p}"),
                })?;
            self.grpc_server_port = n;
        }
        if let Some(a) = obj.get("namesrvAddr") {
            let s = a.as_str().ok_or_else(|| ConfigError::Key {
                key: "namesrvAddr",
                reason: format!("not a string: {a}"),
            })?;
            self.namesrv_addr = parse_namesrv_addr(s)?;
        }
        if let Some(c) = obj.get("rocketMQClusterName") {
            let s = c.as_str().filter(|s| !s.is_empty());
            self.cluster_name = s
                .ok_or_else(|| ConfigError::Key {
                    key: "rocketMQClusterName",
                    reason: format!("not a cluster name: {c}"),
                })?
                .to_string();
        }
        Ok(self)
    }
}

/// `host:port;host:port` (`namesrvAddr`).
pub fn parse_namesrv_addr(s: &str) -> Result<Vec<NameServerAddr>, ConfigError> {
    let addrs = s
        .split(';')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            NameServerAddr::parse(a).ok_or_else(|| ConfigError::Key {
                key: "namesrvAddr",
                reason: format!("not host:port: {a}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(ConfigError::Key {
            key: "namesrvAddr",
            reason: "no address".into(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_and_bad_values() {
        let c = ProxyConfig::default()
            .apply_json(r#"{"grpcServerPort": 9081, "namesrvAddr": "127.0.0.1:9876;127.0.0.2:9876", "rocketMQClusterName": "C", "other": 1}"#)
            .unwrap();
        assert_eq!(c.grpc_server_port, 9081);
        assert_eq!(c.namesrv_addr.len(), 2);
        assert_eq!(c.cluster_name, "C");
        let e = ProxyConfig::default()
            .apply_json(r#"{"grpcServerPort": 70000}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("grpcServerPort"), "{e}");
        let e = ProxyConfig::default()
            .apply_json(r#"{"namesrvAddr": "nope"}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("namesrvAddr"), "{e}");
    }
}
