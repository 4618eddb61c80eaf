//! The proxy's settings: upstream's `rmq-proxy.json` keys that apply.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use remoting::properties::{Plain, SettingFormat};
use remoting::tls::{TlsMode, TlsServerSettings};
use remoting::NameServerAddr;
use serde_json::{Map, Value};

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
    /// TLS of the gRPC port: `tls.server.mode` (`permissive`: TLS and plaintext on one port),
    /// the certificate and key from `tlsCertPath` / `tlsKeyPath`, or a self-signed one
    /// generated at start when neither is set or `tlsTestModeEnable` is `true`.
    pub tls: TlsServerSettings,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            grpc_server_port: 8081,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            namesrv_addr: Vec::new(),
            cluster_name: "DefaultCluster".into(),
            tls: TlsServerSettings::default(),
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
        self.apply_tls_keys(obj)?;
        Ok(self)
    }

    /// `tls.server.mode`, `tlsCertPath`, `tlsKeyPath` and `tlsTestModeEnable`. Upstream's
    /// default test mode (a self-signed certificate) is kept unless a certificate is given;
    /// `tlsTestModeEnable: true` forces it, `false` without a certificate is an error.
    fn apply_tls_keys(&mut self, obj: &Map<String, Value>) -> Result<(), ConfigError> {
        if let Some(m) = obj.get("tls.server.mode") {
            self.tls.mode = m
                .as_str()
                .and_then(|s| <Plain as SettingFormat<TlsMode>>::parse(s.trim()))
                .ok_or_else(|| ConfigError::Key {
                    key: "tls.server.mode",
                    reason: format!("not {}: {m}", <Plain as SettingFormat<TlsMode>>::EXPECTED),
                })?;
        }
        for (key, slot) in [
            ("tlsCertPath", &mut self.tls.cert_path),
            ("tlsKeyPath", &mut self.tls.key_path),
        ] {
            if let Some(p) = obj.get(key) {
                let s = p.as_str().ok_or_else(|| ConfigError::Key {
                    key,
                    reason: format!("not a path: {p}"),
                })?;
                *slot = (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
            }
        }
        let Some(t) = obj.get("tlsTestModeEnable") else {
            return Ok(());
        };
        let test_mode = t
            .as_bool()
            .or_else(|| t.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| ConfigError::Key {
                key: "tlsTestModeEnable",
                reason: format!("not true or false: {t}"),
            })?;
        if test_mode {
            self.tls.cert_path = None;
            self.tls.key_path = None;
        } else if self.tls.cert_path.is_none() || self.tls.key_path.is_none() {
            return Err(ConfigError::Key {
                key: "tlsTestModeEnable",
                reason: "false needs tlsCertPath and tlsKeyPath".into(),
            });
        }
        Ok(())
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

    #[test]
    fn tls_keys_and_test_mode() {
        let d = ProxyConfig::default();
        assert_eq!(d.tls.mode, TlsMode::Permissive);
        assert_eq!(d.tls.cert_path, None);
        let c = ProxyConfig::default()
            .apply_json(r#"{"tls.server.mode": "ENFORCING", "tlsCertPath": "/pki/c.pem", "tlsKeyPath": "/pki/k.pem"}"#)
            .unwrap();
        assert_eq!(c.tls.mode, TlsMode::Enforcing);
        assert_eq!(c.tls.cert_path, Some(PathBuf::from("/pki/c.pem")));
        assert_eq!(c.tls.key_path, Some(PathBuf::from("/pki/k.pem")));
        let forced = ProxyConfig::default()
            .apply_json(r#"{"tlsCertPath": "/pki/c.pem", "tlsKeyPath": "/pki/k.pem", "tlsTestModeEnable": "true"}"#)
            .unwrap();
        assert_eq!(forced.tls.cert_path, None);
        let e = ProxyConfig::default()
            .apply_json(r#"{"tlsTestModeEnable": false}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("tlsTestModeEnable"), "{e}");
        let e = ProxyConfig::default()
            .apply_json(r#"{"tls.server.mode": "sometimes"}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("tls.server.mode"), "{e}");
    }
}
