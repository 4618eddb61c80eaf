//! Remote address white lists (upstream `RemoteAddressStrategyFactory`), for IPv4: `*` (every
//! address), an exact address, trailing `*` segments (`192.168.*`, `192.168.0.*`), ranges in a
//! segment (`192.168.1.1-100`, `192.168.1-10.*`) and lists (`192.168.1.{1,2,3}`). IPv6 addresses
//! match exactly. A blank pattern matches nothing.

use std::net::IpAddr;

use crate::error::AclError;

/// One segment of an IPv4 pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Any,
    Range(u8, u8),
}

/// A compiled white-list pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressPattern {
    Nothing,
    Everything,
    Exact(IpAddr),
    V4([Segment; 4]),
    List(Vec<IpAddr>),
}

fn octet(s: &str, pattern: &str) -> Result<u8, AclError> {
    s.trim()
        .parse::<u8>()
        .map_err(|_| AclError::Address(pattern.to_string()))
}

impl AddressPattern {
    /// Compiles `pattern`; a malformed one is an error naming it.
    pub fn parse(pattern: &str) -> Result<AddressPattern, AclError> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(AddressPattern::Nothing);
        }
        if p == "*" || p == "*.*.*.*" {
            return Ok(AddressPattern::Everything);
        }
        if let Ok(ip) = p.parse::<IpAddr>() {
            return Ok(AddressPattern::Exact(ip));
        }
        let bad = || AclError::Address(pattern.to_string());
        if let (Some(open), true) = (p.find('{'), p.ends_with('}')) {
            let prefix = &p[..open];
            let list = p[open + 1..p.len() - 1]
                .split(',')
                .map(|last| {
                    format!("{prefix}{}", last.trim())
                        .parse::<IpAddr>()
                        .map_err(|_| bad())
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(AddressPattern::List(list));
        }
        let parts: Vec<&str> = p.split('.').collect();
        if parts.len() > 4 || parts.is_empty() {
            return Err(bad());
        }
        let mut segs = [Segment::Any, Segment::Any, Segment::Any, Segment::Any];
        let mut star = false;
        for (i, part) in parts.iter().enumerate() {
            let part = part.trim();
            segs[i] = if part == "*" {
                star = true;
                Segment::Any
            } else if star {
                // Upstream: `*` may only be followed by `*`.
                return Err(bad());
            } else if let Some((lo, hi)) = part.split_once('-') {
                let (lo, hi) = (octet(lo, pattern)?, octet(hi, pattern)?);
                if lo > hi {
                    return Err(bad());
                }
                Segment::Range(lo, hi)
            } else {
                let v = octet(part, pattern)?;
                Segment::Range(v, v)
            };
        }
        if parts.len() < 4 && !star {
            return Err(bad());
        }
        Ok(AddressPattern::V4(segs))
    }

    /// Whether `ip` is allowed.
    pub fn matches(&self, ip: IpAddr) -> bool {
        match self {
            AddressPattern::Nothing => false,
            AddressPattern::Everything => true,
            AddressPattern::Exact(a) => *a == ip,
            AddressPattern::List(list) => list.contains(&ip),
            AddressPattern::V4(segs) => match ip {
                IpAddr::V4(v4) => segs.iter().zip(v4.octets()).all(|(s, o)| match s {
                    Segment::Any => true,
                    Segment::Range(lo, hi) => (*lo..=*hi).contains(&o),
                }),
                IpAddr::V6(_) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_as_upstream() {
        let p = |s| AddressPattern::parse(s).unwrap();
        assert!(p("*").matches(ip("10.1.2.3")));
        assert!(!p("").matches(ip("10.1.2.3")));
        assert!(p("192.168.0.*").matches(ip("192.168.0.9")));
        assert!(!p("192.168.0.*").matches(ip("192.168.1.9")));
        assert!(p("192.168.*").matches(ip("192.168.7.9")));
        assert!(p("192.168.1.1-100").matches(ip("192.168.1.100")));
        assert!(!p("192.168.1.1-100").matches(ip("192.168.1.101")));
        assert!(p("192.168.1-10.*").matches(ip("192.168.10.1")));
        assert!(p("127.0.0.{1,2}").matches(ip("127.0.0.2")));
        assert!(!p("127.0.0.{1,2}").matches(ip("127.0.0.3")));
        assert!(p("127.0.0.1").matches(ip("127.0.0.1")));
        assert!(p("::1").matches(ip("::1")));
        for bad in ["192.168", "192.*.1.1", "1.2.3.300", "1.2.3.9-1", "a.b.c.d"] {
            assert!(AddressPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
