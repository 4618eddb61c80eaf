//! NameServer configuration: [`NamesrvConfig`] with upstream's key names (`NamesrvConfig`,
//! `NettyServerConfig`), read from a Java `.properties` text ([`parse_properties`],
//! [`NamesrvConfig::from_properties`]) and written back as one (GET_NAMESRV_CONFIG).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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

/// Conversion of one config field from and to its properties text.
trait ConfigValue: Sized {
    const EXPECTED: &'static str;
    fn parse_config(raw: &str) -> Option<Self>;
    fn format_config(&self) -> String;
}

macro_rules! from_str_config_values {
    ($($t:ty => $expected:literal),*) => {$(
        impl ConfigValue for $t {
            const EXPECTED: &'static str = $expected;
            fn parse_config(raw: &str) -> Option<Self> {
                raw.parse().ok()
            }
            fn format_config(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

from_str_config_values!(
    u16 => "a port number (0-65535)",
    u64 => "a non-negative integer",
    usize => "a non-negative integer",
    IpAddr => "an IP address",
    String => "a string"
);

impl ConfigValue for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse_config(raw: &str) -> Option<Self> {
        if raw.eq_ignore_ascii_case("true") {
            Some(true)
        } else if raw.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
    fn format_config(&self) -> String {
        self.to_string()
    }
}

/// Durations are written in milliseconds, as upstream's `...Interval` keys are.
impl ConfigValue for Duration {
    const EXPECTED: &'static str = "a duration in milliseconds";
    fn parse_config(raw: &str) -> Option<Self> {
        raw.parse().ok().map(Duration::from_millis)
    }
    fn format_config(&self) -> String {
        self.as_millis().to_string()
    }
}

impl ConfigValue for PathBuf {
    const EXPECTED: &'static str = "a file path";
    fn parse_config(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| PathBuf::from(raw))
    }
    fn format_config(&self) -> String {
        self.display().to_string()
    }
}

/// Upstream keys that are accepted and have no effect here (thread pools, Netty tuning, ...).
const IGNORED_KEYS: &[&str] = &[
    "rocketmqHome",
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

/// Declares [`NamesrvConfig`]: one `field: Type = "upstreamKey", default;` per setting.
macro_rules! namesrv_config {
    ($($(#[$meta:meta])* $field:ident: $ty:ty = $key:literal, $default:expr;)*) => {
        /// NameServer settings. Field docs name the properties key.
        #[derive(Clone, Debug, PartialEq)]
        pub struct NamesrvConfig {
            $($(#[$meta])* pub $field: $ty,)*
        }

        impl Default for NamesrvConfig {
            fn default() -> Self {
                NamesrvConfig { $($field: $default,)* }
            }
        }

        impl NamesrvConfig {
            /// Every key this configuration understands.
            pub const KEYS: &'static [&'static str] = &[$($key),*];

            /// Sets `key` from its text; `None` when the key is not one of ours.
            fn set(&mut self, key: &str, raw: &str) -> Option<Result<(), ConfigError>> {
                match key {
                    $($key => Some(match <$ty as ConfigValue>::parse_config(raw) {
                        Some(value) => {
                            self.$field = value;
                            Ok(())
                        }
                        None => Err(ConfigError::InvalidValue {
                            key: key.to_string(),
                            value: raw.to_string(),
                            expected: <$ty as ConfigValue>::EXPECTED,
                        }),
                    }),)*
                    _ => None,
                }
            }

            /// Every setting as `key=value` lines (the GET_NAMESRV_CONFIG body).
            pub fn to_properties(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str($key);
                    out.push('=');
                    out.push_str(&ConfigValue::format_config(&self.$field));
                    out.push('\n');
                )*
                out
            }
        }
    };
}

namesrv_config! {
    /// `listenPort`: TCP port (0 picks a free one).
    listen_port: u16 = "listenPort", 9876;
    /// `bindAddress`: address to listen on.
    bind_address: IpAddr = "bindAddress", IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    /// `kvConfigPath`: file of the KV config (written atomically on every change). Defaults
    /// to upstream's `~/namesrv/kvConfig.json` (from `$HOME`; the working directory without it).
    kv_config_path: PathBuf = "kvConfigPath", default_kv_config_path();
    /// `scanNotActiveBrokerInterval` (ms): how often expired brokers are looked for.
    scan_not_active_broker_interval: Duration = "scanNotActiveBrokerInterval", Duration::from_secs(5);
    /// `brokerChannelExpiredTime` (ms): a broker not heard from for this long is removed,
    /// unless its registration sets its own `heartbeatTimeoutMillis`.
    broker_channel_expired_time: Duration = "brokerChannelExpiredTime", Duration::from_secs(120);
    /// `supportActingMaster`: list a master-less group's lowest-id slave as broker 0 (for
    /// groups whose brokers registered with `enableActingMaster=true`). Upstream's default is
    /// false.
    support_acting_master: bool = "supportActingMaster", true;
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
    delete_topic_with_broker_registration: bool = "deleteTopicWithBrokerRegistration", false;
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
}

fn default_kv_config_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join("namesrv").join("kvConfig.json")
}

impl NamesrvConfig {
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
        let mut keys: Vec<&String> = props.keys().collect();
        keys.sort();
        for key in keys {
            let raw = props[key].trim();
            match next.set(key, raw) {
                Some(result) => result?,
                None if IGNORED_KEYS.contains(&key.as_str()) => {
                    tracing::debug!(key = %key, "NameServer config key has no effect in Apogee")
                }
                None => tracing::warn!(key = %key, "unknown NameServer config key ignored"),
            }
        }
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
        ]);
        keys
    }

    /// `bindAddress:listenPort`.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.listen_port)
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

/// Parses Java `.properties` text: `key=value`, `key: value` or `key value` per line; `#` and
/// `!` start comment lines; a line ending in an odd number of backslashes continues on the next
/// one; `\t`, `\n`, `\r`, `\f`, `\uXXXX` and `\<char>` escapes are decoded. Unlike Java, values
/// are trimmed at the end too. Later duplicates win. Never fails: odd lines become odd keys.
pub fn parse_properties(text: &str) -> HashMap<String, String> {
    let mut props = HashMap::new();
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let mut logical = first.trim_start().to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while ends_with_continuation(&logical) {
            logical.pop();
            match lines.next() {
                Some(next) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_key_value(&logical);
        props.insert(unescape(key), unescape(value).trim_end().to_string());
    }
    props
}

fn ends_with_continuation(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or whitespace (whitespace around it is skipped).
fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => return (&line[..i], line[i + 1..].trim_start()),
            c if c.is_whitespace() => {
                let rest = line[i..].trim_start();
                let rest = rest
                    .strip_prefix('=')
                    .or_else(|| rest.strip_prefix(':'))
                    .unwrap_or(rest);
                return (&line[..i], rest.trim_start());
            }
            _ => {}
        }
    }
    (line, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) if hex.len() == 4 => {
                        out.push(decoded);
                        chars.nth(3);
                    }
                    _ => out.push('u'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_java_properties() {
        let text =
            "# comment\n! also comment\n\nlistenPort=9877\n  kvConfigPath : /tmp/kv.json  \n\
                    key\\=with\\:seps = a\\tb\nspaced value here\nlong=one,\\\n    two\nempty=\n\
                    uni=\\u0041\\u00e9\ntrailing\\\\=x\n";
        let p = parse_properties(text);
        assert_eq!(p["listenPort"], "9877");
        assert_eq!(p["kvConfigPath"], "/tmp/kv.json");
        assert_eq!(p["key=with:seps"], "a\tb");
        assert_eq!(p["spaced"], "value here");
        assert_eq!(p["long"], "one,two");
        assert_eq!(p["empty"], "");
        assert_eq!(p["uni"], "Aé");
        assert_eq!(p["trailing\\"], "x");
        assert_eq!(p.len(), 8);
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in [
            "\\", "a\\", "=", ":x", "\\u12", "\\uZZZZ", "k=\\u00", "é=ü\\",
        ] {
            let _ = parse_properties(text);
        }
    }

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
