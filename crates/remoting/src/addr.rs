//! Typed addresses. A broker and a NameServer are different types so that a request meant for
//! a broker (send, pull, send-back, ...) cannot be aimed at a NameServer by mistake: there is
//! no conversion between the two, and the client only sends NameServer-served request codes
//! to a [`NameServerAddr`].

use std::fmt;

/// `host:port` of a broker, as it appears in a route's `brokerAddrs`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerAddr(String);

/// `host:port` of a NameServer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameServerAddr(String);

macro_rules! typed_addr {
    ($t:ident) => {
        impl $t {
            /// Wraps `host:port`; returns `None` when the string is blank or has no port.
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.trim();
                let (host, port) = s.rsplit_once(':')?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return None;
                }
                Some(Self(s.to_string()))
            }

            /// The `host:port` text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_addr!(BrokerAddr);
typed_addr!(NameServerAddr);

impl NameServerAddr {
    /// Parses a `namesrvAddr` list (`host:port;host:port`, commas accepted too).
    pub fn parse_list(s: &str) -> Vec<NameServerAddr> {
        s.split([';', ','])
            .filter_map(NameServerAddr::parse)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            BrokerAddr::parse("127.0.0.1:10911").unwrap().as_str(),
            "127.0.0.1:10911"
        );
        assert!(BrokerAddr::parse("").is_none());
        assert!(BrokerAddr::parse("127.0.0.1").is_none());
        assert!(BrokerAddr::parse(":80").is_none());
        assert_eq!(NameServerAddr::parse_list("a:1; b:2,c:3").len(), 3);
    }
}
