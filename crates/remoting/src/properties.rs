//! The Java `.properties` text of configuration bodies (UPDATE_BROKER_CONFIG,
//! GET_BROKER_CONFIG, UPDATE_NAMESRV_CONFIG, GET_NAMESRV_CONFIG, `broker.conf`): parsing it
//! ([`parse_properties`]), the text form of each setting type ([`SettingFormat`]), and
//! [`settings_struct!`](crate::settings_struct), which declares a settings struct whose fields
//! carry upstream's key names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// A setting whose text does not parse as its type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("config key `{key}` has value `{value}`, expected {expected}")]
pub struct InvalidSetting {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

/// How values of type `T` are read from and written to properties text. Implemented by a
/// format type rather than by `T`, so a crate can give the text form of a type it does not own
/// (a unit struct of its own implementing `SettingFormat<ForeignType>`).
pub trait SettingFormat<T> {
    /// What a valid value looks like, for error messages ("an integer").
    const EXPECTED: &'static str;
    /// The value of `raw` (already trimmed); `None` when it is not one.
    fn parse(raw: &str) -> Option<T>;
    /// The text [`SettingFormat::parse`] reads back.
    fn format(value: &T) -> String;
}

/// The text form of the primitive setting types: numbers, IP addresses, strings, `true` /
/// `false` (any case), paths (not empty), durations (in milliseconds, as upstream's
/// `...Interval` keys) and `Option`s of those (empty text is `None`).
pub struct Plain;

macro_rules! from_str_formats {
    ($($t:ty => $expected:literal),*) => {$(
        impl SettingFormat<$t> for Plain {
            const EXPECTED: &'static str = $expected;
            fn parse(raw: &str) -> Option<$t> {
                raw.parse().ok()
            }
            fn format(value: &$t) -> String {
                value.to_string()
            }
        }
    )*};
}

from_str_formats!(
    u16 => "a port number (0-65535)",
    i32 => "an integer",
    i64 => "an integer",
    u32 => "a non-negative integer",
    u64 => "a non-negative integer",
    usize => "a non-negative integer",
    IpAddr => "an IP address",
    String => "a string"
);

impl SettingFormat<bool> for Plain {
    const EXPECTED: &'static str = "true or false";
    fn parse(raw: &str) -> Option<bool> {
        if raw.eq_ignore_ascii_case("true") {
            Some(true)
        } else if raw.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }
    fn format(value: &bool) -> String {
        value.to_string()
    }
}

impl SettingFormat<Duration> for Plain {
    const EXPECTED: &'static str = "a duration in milliseconds";
    fn parse(raw: &str) -> Option<Duration> {
        raw.parse().ok().map(Duration::from_millis)
    }
    fn format(value: &Duration) -> String {
        value.as_millis().to_string()
    }
}

impl SettingFormat<PathBuf> for Plain {
    const EXPECTED: &'static str = "a path";
    fn parse(raw: &str) -> Option<PathBuf> {
        (!raw.is_empty()).then(|| PathBuf::from(raw))
    }
    fn format(value: &PathBuf) -> String {
        value.display().to_string()
    }
}

impl<T> SettingFormat<Option<T>> for Plain
where
    Plain: SettingFormat<T>,
{
    const EXPECTED: &'static str = <Plain as SettingFormat<T>>::EXPECTED;
    fn parse(raw: &str) -> Option<Option<T>> {
        if raw.is_empty() {
            Some(None)
        } else {
            <Plain as SettingFormat<T>>::parse(raw).map(Some)
        }
    }
    fn format(value: &Option<T>) -> String {
        value
            .as_ref()
            .map(<Plain as SettingFormat<T>>::format)
            .unwrap_or_default()
    }
}

/// Parses `raw` as the value of `key` with format `F`.
pub fn parse_setting<T, F: SettingFormat<T>>(key: &str, raw: &str) -> Result<T, InvalidSetting> {
    F::parse(raw).ok_or_else(|| InvalidSetting {
        key: key.to_string(),
        value: raw.to_string(),
        expected: F::EXPECTED,
    })
}

/// Applies `props` in key order through `set` (a settings struct's `set`). Keys `set` does not
/// know are logged (at debug level when listed in `ignored`: upstream keys with no effect in
/// Apogee); `what` names the process in those logs. Stops at the first invalid value.
pub fn apply_properties(
    props: &HashMap<String, String>,
    ignored: &[&str],
    what: &str,
    mut set: impl FnMut(&str, &str) -> Option<Result<(), InvalidSetting>>,
) -> Result<(), InvalidSetting> {
    let mut keys: Vec<&String> = props.keys().collect();
    keys.sort();
    for key in keys {
        let raw = props[key].trim();
        match set(key, raw) {
            Some(result) => result?,
            None if ignored.contains(&key.as_str()) => {
                tracing::debug!(key = %key, "{what} config key has no effect in Apogee")
            }
            None => tracing::warn!(key = %key, "unknown {what} config key ignored"),
        }
    }
    Ok(())
}

/// Declares a settings struct: `field: Type = "upstreamKey", default;` per setting, or
/// `field: Type as Format = ...` for a type whose text form is not [`Plain`]'s. Generates the
/// struct (`Clone, Debug, PartialEq`), `Default`, `KEYS` (every key), `set(key, raw)` (`None`
/// when the key is not one of ours) and `to_properties()` (every setting as `key=value` lines).
#[macro_export]
macro_rules! settings_struct {
    (
        $(#[$smeta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$meta:meta])* $field:ident: $ty:ty $(as $format:ty)? = $key:literal, $default:expr;)*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug, PartialEq)]
        $vis struct $name {
            $($(#[$meta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $name {
            /// Every key this configuration understands.
            pub const KEYS: &'static [&'static str] = &[$($key),*];

            /// Sets `key` from its text; `None` when the key is not one of ours.
            fn set(
                &mut self,
                key: &str,
                raw: &str,
            ) -> Option<Result<(), $crate::properties::InvalidSetting>> {
                match key {
                    $($key => Some(
                        $crate::properties::parse_setting::<$ty, $crate::settings_struct!(@format $($format)?)>(key, raw)
                            .map(|value| self.$field = value),
                    ),)*
                    _ => None,
                }
            }

            /// Every setting as `key=value` lines.
            pub fn to_properties(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str($key);
                    out.push('=');
                    out.push_str(&<$crate::settings_struct!(@format $($format)?) as $crate::properties::SettingFormat<$ty>>::format(&self.$field));
                    out.push('\n');
                )*
                out
            }
        }
    };
    (@format) => { $crate::properties::Plain };
    (@format $format:ty) => { $format };
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

    crate::settings_struct! {
        /// Test settings.
        struct Demo {
            /// A port.
            port: u16 = "listenPort", 9876;
            path: Option<PathBuf> = "storePath", None;
            every: Duration = "scanInterval", Duration::from_secs(5);
        }
    }

    #[test]
    fn settings_struct_sets_and_formats() {
        let mut d = Demo::default();
        assert!(d.set("nope", "1").is_none());
        assert_eq!(d.set("scanInterval", "50"), Some(Ok(())));
        assert_eq!(d.every, Duration::from_millis(50));
        let err = d.set("listenPort", "98765").unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `listenPort` has value `98765`, expected a port number (0-65535)"
        );
        assert_eq!(
            d.to_properties(),
            "listenPort=9876\nstorePath=\nscanInterval=50\n"
        );
        let props = parse_properties("storePath=/x\nlistenPort=1\nother=2\n");
        apply_properties(&props, &["other"], "test", |k, v| d.set(k, v)).unwrap();
        assert_eq!((d.port, d.path.clone()), (1, Some(PathBuf::from("/x"))));
        assert_eq!(Demo::KEYS, ["listenPort", "storePath", "scanInterval"]);
    }
}
