//! A message's properties: the property names (upstream `MessageConst`) and the properties
//! string codec, `name\x01value` pairs joined by `\x02`.
//!
//! There is one parser ([`property_pairs`], behind [`Properties::parse`], [`decode_properties`]
//! and [`find_property`]) and one writer ([`join_pairs`]): clients and brokers write no trailing
//! separator ([`Properties::to_wire_string`]), the store's own writers end every pair with one
//! ([`encode_properties`]), as upstream's `MessageDecoder.messageProperties2String` does.

use std::collections::HashMap;

/// Separates a property's name from its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separates one property from the next.
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// Property names (upstream `MessageConst`).
#[derive(Clone, Copy, Debug)]
pub struct MessageConst;

impl MessageConst {
    pub const PROPERTY_KEYS: &'static str = "KEYS";
    pub const PROPERTY_TAGS: &'static str = "TAGS";
    pub const PROPERTY_WAIT_STORE_MSG_OK: &'static str = "WAIT";
    pub const PROPERTY_DELAY_TIME_LEVEL: &'static str = "DELAY";
    pub const PROPERTY_RETRY_TOPIC: &'static str = "RETRY_TOPIC";
    pub const PROPERTY_REAL_TOPIC: &'static str = "REAL_TOPIC";
    pub const PROPERTY_REAL_QUEUE_ID: &'static str = "REAL_QID";
    pub const PROPERTY_TRANSACTION_PREPARED: &'static str = "TRAN_MSG";
    pub const PROPERTY_PRODUCER_GROUP: &'static str = "PGROUP";
    pub const PROPERTY_MIN_OFFSET: &'static str = "MIN_OFFSET";
    pub const PROPERTY_MAX_OFFSET: &'static str = "MAX_OFFSET";
    pub const PROPERTY_BUYER_ID: &'static str = "BUYER_ID";
    pub const PROPERTY_ORIGIN_MESSAGE_ID: &'static str = "ORIGIN_MESSAGE_ID";
    pub const PROPERTY_TRANSFER_FLAG: &'static str = "TRANSFER_FLAG";
    pub const PROPERTY_CORRECTION_FLAG: &'static str = "CORRECTION_FLAG";
    pub const PROPERTY_MQ2_FLAG: &'static str = "MQ2_FLAG";
    pub const PROPERTY_RECONSUME_TIME: &'static str = "RECONSUME_TIME";
    pub const PROPERTY_MSG_REGION: &'static str = "MSG_REGION";
    pub const PROPERTY_TRACE_SWITCH: &'static str = "TRACE_ON";
    pub const PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX: &'static str = "UNIQ_KEY";
    pub const PROPERTY_EXTEND_UNIQ_INFO: &'static str = "EXTEND_UNIQ_INFO";
    pub const PROPERTY_MAX_RECONSUME_TIMES: &'static str = "MAX_RECONSUME_TIMES";
    pub const PROPERTY_CONSUME_START_TIMESTAMP: &'static str = "CONSUME_START_TIME";
    pub const PROPERTY_INNER_NUM: &'static str = "INNER_NUM";
    pub const PROPERTY_INNER_BASE: &'static str = "INNER_BASE";
    pub const DUP_INFO: &'static str = "DUP_INFO";
    pub const PROPERTY_CHECK_IMMUNITY_TIME_IN_SECONDS: &'static str =
        "CHECK_IMMUNITY_TIME_IN_SECONDS";
    pub const PROPERTY_TRANSACTION_PREPARED_QUEUE_OFFSET: &'static str =
        "TRAN_PREPARED_QUEUE_OFFSET";
    pub const PROPERTY_TRANSACTION_ID: &'static str = "__transactionId__";
    pub const PROPERTY_TRANSACTION_CHECK_TIMES: &'static str = "TRANSACTION_CHECK_TIMES";
    pub const PROPERTY_INSTANCE_ID: &'static str = "INSTANCE_ID";
    pub const PROPERTY_CORRELATION_ID: &'static str = "CORRELATION_ID";
    pub const PROPERTY_MESSAGE_REPLY_TO_CLIENT: &'static str = "REPLY_TO_CLIENT";
    pub const PROPERTY_MESSAGE_TTL: &'static str = "TTL";
    pub const PROPERTY_REPLY_MESSAGE_ARRIVE_TIME: &'static str = "ARRIVE_TIME";
    pub const PROPERTY_PUSH_REPLY_TIME: &'static str = "PUSH_REPLY_TIME";
    pub const PROPERTY_CLUSTER: &'static str = "CLUSTER";
    pub const PROPERTY_MESSAGE_TYPE: &'static str = "MSG_TYPE";
    pub const PROPERTY_POP_CK: &'static str = "POP_CK";
    pub const PROPERTY_POP_CK_OFFSET: &'static str = "POP_CK_OFFSET";
    pub const PROPERTY_FIRST_POP_TIME: &'static str = "1ST_POP_TIME";
    pub const PROPERTY_SHARDING_KEY: &'static str = "__SHARDINGKEY";
    pub const PROPERTY_FORWARD_QUEUE_ID: &'static str = "PROPERTY_FORWARD_QUEUE_ID";
    pub const PROPERTY_REDIRECT: &'static str = "REDIRECT";
    pub const PROPERTY_INNER_MULTI_DISPATCH: &'static str = "INNER_MULTI_DISPATCH";
    pub const PROPERTY_INNER_MULTI_QUEUE_OFFSET: &'static str = "INNER_MULTI_QUEUE_OFFSET";
    pub const PROPERTY_TRACE_CONTEXT: &'static str = "TRACE_CONTEXT";
    pub const PROPERTY_TIMER_DELAY_SEC: &'static str = "TIMER_DELAY_SEC";
    pub const PROPERTY_TIMER_DELIVER_MS: &'static str = "TIMER_DELIVER_MS";
    pub const PROPERTY_BORN_HOST: &'static str = "__BORNHOST";
    pub const PROPERTY_BORN_TIMESTAMP: &'static str = "BORN_TIMESTAMP";
    pub const PROPERTY_TIMER_ENQUEUE_MS: &'static str = "TIMER_ENQUEUE_MS";
    pub const PROPERTY_TIMER_DEQUEUE_MS: &'static str = "TIMER_DEQUEUE_MS";
    pub const PROPERTY_TIMER_ROLL_TIMES: &'static str = "TIMER_ROLL_TIMES";
    pub const PROPERTY_TIMER_OUT_MS: &'static str = "TIMER_OUT_MS";
    pub const PROPERTY_TIMER_DEL_UNIQKEY: &'static str = "TIMER_DEL_UNIQKEY";
    pub const PROPERTY_TIMER_DELAY_LEVEL: &'static str = "TIMER_DELAY_LEVEL";
    pub const PROPERTY_TIMER_DELAY_MS: &'static str = "TIMER_DELAY_MS";
    pub const PROPERTY_CRC32: &'static str = "__CRC32#";
    pub const PROPERTY_DLQ_ORIGIN_TOPIC: &'static str = "DLQ_ORIGIN_TOPIC";
    pub const PROPERTY_DLQ_ORIGIN_MESSAGE_ID: &'static str = "DLQ_ORIGIN_MESSAGE_ID";
    /// Prefix of properties a broker does not store.
    pub const PROPERTY_TRANSIENT_PREFIX: &'static str = "__RMQ.TRANSIENT.";
    /// Separates the keys inside the `KEYS` property.
    pub const KEY_SEPARATOR: &'static str = " ";
}

/// A message's properties: `name -> value`, in insertion order.
///
/// On the wire they are one string: `name\x01value` pairs joined by `\x02`. Parsing accepts a
/// trailing `\x02` (C++, ali-ons and Rust clients send one) and skips malformed pairs (no
/// separator, empty name or empty value) as upstream does; a repeated name keeps the last value.
/// Writing emits no trailing separator, as Java 4.9 clients and brokers do.
///
/// ```
/// use message::Properties;
///
/// let p = Properties::parse("TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2\u{2}");
/// assert_eq!(p.get("TAGS"), Some("TagA"));
/// assert_eq!(p.to_wire_string(), "TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the wire string. Linear in its length: a repeated name is found through an index,
    /// not by scanning the pairs so far (a request header may carry hundreds of thousands).
    pub fn parse(s: &str) -> Self {
        let mut entries: Vec<(String, String)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (k, v) in property_pairs(s) {
            match index.get(k) {
                Some(&i) => entries[i].1 = v.to_string(),
                None => {
                    index.insert(k, entries.len());
                    entries.push((k.to_string(), v.to_string()));
                }
            }
        }
        Properties { entries }
    }

    /// The wire string (no trailing separator).
    pub fn to_wire_string(&self) -> String {
        join_pairs(self.iter(), false)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` (keeping its position when it already exists); returns the old value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let name = name.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.entries.push((name, value));
                None
            }
        }
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }

    /// `(name, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Properties::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

/// Encodes properties as upstream's `messageProperties2String` does: `name\x01value\x02` for
/// each pair, in the given order (every pair, the last included, ends with the separator).
pub fn encode_properties<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    join_pairs(pairs, true)
}

/// Decodes a properties string (upstream `string2messageProperties`): pairs shorter than three
/// characters or without a name or value are skipped; a later duplicate name wins.
pub fn decode_properties(props: &str) -> HashMap<String, String> {
    property_pairs(props)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Value of property `name` in an encoded properties string, without allocating. The last
/// occurrence wins, as in [`decode_properties`].
pub fn find_property<'a>(props: &'a str, name: &str) -> Option<&'a str> {
    property_pairs(props)
        .filter(|(k, _)| *k == name)
        .last()
        .map(|(_, v)| v)
}

/// The `(name, value)` pairs of a properties string, in order, repeats included. A trailing
/// separator (C++, ali-ons and Rust clients send one) and malformed pairs (no `\x01`, empty name
/// or empty value) are skipped, as upstream does; a value may contain `\x01`.
pub fn property_pairs(props: &str) -> impl Iterator<Item = (&str, &str)> {
    props.split(PROPERTY_SEPARATOR).filter_map(|pair| {
        let (k, v) = pair.split_once(NAME_VALUE_SEPARATOR)?;
        if k.is_empty() || v.is_empty() {
            None
        } else {
            Some((k, v))
        }
    })
}

/// Joins pairs into a properties string; with `trailing`, the last pair ends with a separator
/// too.
pub fn join_pairs<'a, I>(pairs: I, trailing: bool) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 && !trailing {
            out.push(PROPERTY_SEPARATOR);
        }
        out.push_str(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
        if trailing {
            out.push(PROPERTY_SEPARATOR);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn properties_parse_like_upstream() {
        let p =
            Properties::parse("A\u{1}1\u{2}\u{2}B\u{1}\u{2}\u{1}x\u{2}C\u{1}3\u{1}4\u{2}A\u{1}5");
        assert_eq!(p.get("A"), Some("5"));
        assert_eq!(p.get("B"), None);
        assert_eq!(p.get("C"), Some("3\u{1}4"));
        assert_eq!(p.len(), 2);
        assert_eq!(p.to_wire_string(), "A\u{1}5\u{2}C\u{1}3\u{1}4");
        assert!(Properties::parse("").is_empty());
    }

    #[test]
    fn properties_follow_upstream_rules() {
        let s = encode_properties([("KEYS", "k1 k2"), ("TAGS", "t")]);
        assert_eq!(s, "KEYS\u{1}k1 k2\u{2}TAGS\u{1}t\u{2}");
        let m = decode_properties(&s);
        assert_eq!(m.get("KEYS").map(String::as_str), Some("k1 k2"));
        assert_eq!(find_property(&s, "TAGS"), Some("t"));
        assert_eq!(find_property(&s, "NONE"), None);
        // Pairs without a name or a value, and a missing trailing separator.
        let m = decode_properties("\u{1}x\u{2}a\u{1}\u{2}b\u{1}c");
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("b").map(String::as_str), Some("c"));
    }

    /// Fuzz seed 1437730: a send whose `properties` header held 20,000 to 200,000 distinct
    /// names took quadratic time to parse, holding a broker thread for minutes.
    #[test]
    fn many_distinct_properties_parse_in_linear_time() {
        let n = 200_000;
        let s = (0..n)
            .map(|i| format!("k{i}\u{1}v"))
            .collect::<Vec<_>>()
            .join("\u{2}");
        let started = std::time::Instant::now();
        let p = Properties::parse(&s);
        assert_eq!(p.len(), n);
        assert_eq!(p.get("k199999"), Some("v"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Repeated names still keep the first position and the last value.
        let p = Properties::parse("A\u{1}1\u{2}B\u{1}2\u{2}A\u{1}3");
        assert_eq!(p.to_wire_string(), "A\u{1}3\u{2}B\u{1}2");
    }

    proptest! {
        #[test]
        fn properties_round_trip(props in proptest::collection::btree_map("[A-Za-z_]{1,8}", "[ -~]{1,16}", 0..8)) {
            let s = encode_properties(props.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let back = decode_properties(&s);
            prop_assert_eq!(back.len(), props.len());
            for (k, v) in &props {
                prop_assert_eq!(back.get(k), Some(v));
            }
        }
    }
}
