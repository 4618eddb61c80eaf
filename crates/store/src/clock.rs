//! Wall-clock helpers: milliseconds since the epoch, and local calendar time (for Index file
//! names and the `deleteWhen` hour), as upstream uses them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Local calendar time of a millisecond timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) millis: u32,
}

/// Converts `ms` to local time (UTC if the C library cannot).
pub(crate) fn local_time(ms: i64) -> LocalTime {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: `tm` is a plain C struct; localtime_r writes it and we read it only on success.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        // SAFETY: as above.
        unsafe { libc::gmtime_r(&secs, &mut tm) };
    }
    LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        millis: ms.rem_euclid(1000) as u32,
    }
}

impl LocalTime {
    /// `yyyyMMddHHmmssSSS`, upstream's Index file name format.
    pub(crate) fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}{:03}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_format_has_17_digits() {
        let t = local_time(now_ms());
        let s = t.compact();
        assert_eq!(s.len(), 17);
        assert!(s.bytes().all(|b| b.is_ascii_digit()));
        assert!(t.hour < 24 && t.month >= 1 && t.month <= 12);
    }
}
