//! How a record and a message id hold a host: 4 or 16 address bytes, then the port as an `i32`.
//! An IPv4-mapped IPv6 address is held as IPv4, as Java turns it into an `Inet4Address`.

use std::net::{IpAddr, SocketAddr};

use bytes::BufMut;

/// Appends a host as a record and a message id hold it: the 4 or 16 address bytes (an
/// IPv4-mapped IPv6 address as IPv4, as Java does), then the port as an `i32`.
pub(crate) fn put_host(out: &mut impl BufMut, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => out.put_slice(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => out.put_slice(&v4.octets()),
            None => out.put_slice(&v6.octets()),
        },
    }
    out.put_i32(i32::from(addr.port()));
}

/// Whether `addr` is held as IPv6 (16 address bytes).
pub(crate) fn is_v6(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(_) => false,
        // Java turns an IPv4-mapped IPv6 address into an Inet4Address; do the same.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_none(),
    }
}
