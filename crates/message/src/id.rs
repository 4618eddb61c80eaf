//! Message ids: the broker's `offsetMsgId` (store host + commit-log offset, [`create_message_id`]
//! / [`decode_message_id`]) and the client's unique id (`UNIQ_KEY`, [`UniqIdGenerator`]), both
//! uppercase hex as upstream's `MessageDecoder` and `MessageClientIDSetter` write them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::error::MessageError;
use crate::host::put_host;

fn push_hex(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The broker's message id (`offsetMsgId`): uppercase hex of the store host's address
/// (4 or 16 bytes), its port as an `i32` and the commit-log offset as an `i64`: 32 hex digits
/// for IPv4, 56 for IPv6 (upstream `MessageDecoder.createMessageId`). An IPv4-mapped IPv6 host
/// counts as IPv4, as in a stored record.
///
/// ```
/// use message::{create_message_id, decode_message_id};
///
/// let host = "127.0.0.1:10911".parse().unwrap();
/// let id = create_message_id(host, 0x8792);
/// assert_eq!(id, "7F00000100002A9F0000000000008792");
/// assert_eq!(decode_message_id(&id).unwrap(), (host, 0x8792));
/// ```
pub fn create_message_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut raw = Vec::with_capacity(28);
    put_host(&mut raw, &store_host);
    raw.extend_from_slice(&commit_log_offset.to_be_bytes());
    let mut s = String::with_capacity(56);
    push_hex(&mut s, &raw);
    s
}

/// Splits an `offsetMsgId` into store host and commit-log offset (upstream
/// `MessageDecoder.decodeMessageId`); accepts either letter case.
pub fn decode_message_id(msg_id: &str) -> Result<(SocketAddr, i64), MessageError> {
    let bad = || MessageError::Invalid {
        field: "message id",
        value: msg_id.to_string(),
    };
    let bytes = parse_hex(msg_id).ok_or_else(bad)?;
    let ip_len = match bytes.len() {
        16 => 4,
        28 => 16,
        _ => return Err(bad()),
    };
    let ip = if ip_len == 4 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&bytes[..4]);
        IpAddr::V4(Ipv4Addr::from(a))
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let mut port = [0u8; 4];
    port.copy_from_slice(&bytes[ip_len..ip_len + 4]);
    let port = u16::try_from(i32::from_be_bytes(port)).map_err(|_| bad())?;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[ip_len + 4..]);
    Ok((SocketAddr::new(ip, port), i64::from_be_bytes(offset)))
}

/// Makes unique client message ids (`UNIQ_KEY`) in upstream's format
/// (`MessageClientIDSetter`): uppercase hex of
///
/// | bytes | field |
/// |---|---|
/// | 4 / 16 | client IP (IPv4 / IPv6) |
/// | 2 | process id (low 16 bits) |
/// | 4 | per-process random value (upstream: the class loader's hash code) |
/// | 4 | milliseconds since the start of the current month (wraps as an `i32`) |
/// | 2 | counter (low 16 bits) |
///
/// 32 hex digits for an IPv4 client, 56 for IPv6. Upstream counts the month in the JVM's
/// local time zone; this counts it in UTC (the value only has to be unique with the counter).
///
/// ```
/// use message::UniqIdGenerator;
///
/// let ids = UniqIdGenerator::new("10.0.0.7".parse().unwrap(), 0x1234, 0x0BADCAFE);
/// let a = ids.next_id();
/// let b = ids.next_id();
/// assert_eq!(a.len(), 32);
/// assert!(a.starts_with("0A00000712340BADCAFE"));
/// assert_ne!(a, b);
/// ```
#[derive(Debug)]
pub struct UniqIdGenerator {
    prefix: String,
    counter: AtomicU32,
    /// `(start of this month, start of next month)` in ms since the epoch.
    month: Mutex<(i64, i64)>,
}

impl UniqIdGenerator {
    /// A generator for a client at `ip` in process `pid`; `seed` stands for upstream's class
    /// loader hash (pick it at random per process).
    pub fn new(ip: IpAddr, pid: u32, seed: i32) -> Self {
        let mut prefix = String::with_capacity(56);
        match ip {
            IpAddr::V4(ip) => push_hex(&mut prefix, &ip.octets()),
            IpAddr::V6(ip) => push_hex(&mut prefix, &ip.octets()),
        }
        push_hex(&mut prefix, &(pid as u16).to_be_bytes());
        push_hex(&mut prefix, &seed.to_be_bytes());
        UniqIdGenerator {
            prefix,
            counter: AtomicU32::new(0),
            month: Mutex::new((0, 0)),
        }
    }

    /// A new id for the current time.
    pub fn next_id(&self) -> String {
        self.next_id_at(now_millis())
    }

    /// A new id as if the time were `now_millis` (ms since the epoch).
    pub fn next_id_at(&self, now_millis: i64) -> String {
        let start = {
            let mut month = self.month.lock();
            if now_millis >= month.1 || now_millis < month.0 - 1_000_000 {
                *month = month_window(now_millis);
            }
            month.0
        };
        let mut diff = now_millis.wrapping_sub(start) as i32;
        if diff < 0 && diff > -1_000_000 {
            // Clock stepped back a little (NTP): upstream clamps to 0.
            diff = 0;
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) as u16;
        let mut id = String::with_capacity(self.prefix.len() + 12);
        id.push_str(&self.prefix);
        push_hex(&mut id, &diff.to_be_bytes());
        push_hex(&mut id, &counter.to_be_bytes());
        id
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `(first ms of the UTC month holding t, first ms of the next month)`.
fn month_window(t: i64) -> (i64, i64) {
    use chrono::{DateTime, Datelike, NaiveDate};
    let date = DateTime::from_timestamp_millis(t)
        .unwrap_or_default()
        .date_naive();
    let (y, m) = (date.year(), date.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let start_ms = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |d| d.and_utc().timestamp_millis())
    };
    (start_ms(y, m), start_ms(ny, nm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_window_in_utc() {
        // 2026-11-24T23:00:00Z
        let t = 1_795_561_200_000;
        let (start, next) = month_window(t);
        assert_eq!(start, 1_793_491_200_000); // 2026-11-01T00:00:00Z
        assert_eq!(next, 1_796_083_200_000); // 2026-12-01T00:00:00Z
        assert_eq!(month_window(0), (0, 31 * 86_400_000));
        // December rolls into January.
        let dec = 1_765_756_800_000; // 2025-12-15T00:00:00Z
        assert_eq!(month_window(dec).1, 1_767_225_600_000); // 2026-01-01T00:00:00Z
    }

    #[test]
    fn uniq_id_layout() {
        let g = UniqIdGenerator::new("192.0.2.2".parse().unwrap(), 905, -1);
        let t = 1_793_491_200_000 + 0x0102_0304;
        let id = g.next_id_at(t);
        assert_eq!(id, "C00002020389FFFFFFFF010203040000");
        assert_eq!(&g.next_id_at(t)[28..], "0001");
        let v6 = UniqIdGenerator::new("fd00::2".parse().unwrap(), 1, 2);
        assert_eq!(v6.next_id().len(), 56);
    }

    #[test]
    fn message_id_rejects_garbage() {
        assert!(decode_message_id("").is_err());
        assert!(decode_message_id("XYZ").is_err());
        assert!(decode_message_id("7F00000100002A9F00000000000087").is_err());
        // Port beyond u16.
        assert!(decode_message_id("7F00000100FF2A9F0000000000008792").is_err());
        let (h, off) = decode_message_id("7f00000100002a9f0000000000008792").unwrap();
        assert_eq!((h.port(), off), (10911, 0x8792));
    }

    #[test]
    fn message_id_matches_upstream_format() {
        let id = create_message_id("192.168.1.2:10911".parse().unwrap(), 0x1234);
        assert_eq!(id, "C0A8010200002A9F0000000000001234");
        let (addr, off) = decode_message_id(&id).unwrap();
        assert_eq!(addr, "192.168.1.2:10911".parse().unwrap());
        assert_eq!(off, 0x1234);
        let v6 = create_message_id("[::1]:1".parse().unwrap(), 1);
        assert_eq!(v6.len(), 56);
        assert!(decode_message_id("XYZ").is_err());
    }
}
