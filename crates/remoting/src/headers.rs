//! Typed request and response headers. A header travels as the command's `extFields`, a flat
//! string map with upstream's camelCase keys; [`CommandHeader`] converts between the two.
//!
//! Every header is declared with the `command_header!` macro, so parsing follows one rule set,
//! taken from the field's type:
//!
//! | field type | key absent | value |
//! |---|---|---|
//! | `String` | [`RemotingError::MissingField`] | taken as is |
//! | `i32`, `i64` | [`RemotingError::MissingField`] | trimmed, decimal; otherwise [`RemotingError::InvalidField`] |
//! | `bool` | `false` (Java primitive default) | `true` in any case is true, anything else false (Java's `Boolean.parseBoolean`) |
//! | `Option<T>` | `None` | as `T` |
//!
//! Unknown keys (e.g. `AccessKey`, `Signature`, `bname`) are ignored. Writing leaves `None`
//! fields out.

use std::collections::HashMap;

use crate::command::RemotingCommand;
use crate::error::RemotingError;

/// A typed view of a command's `extFields`.
pub trait CommandHeader: Sized {
    /// Adds the fields as they go on the wire to `out` (replacing fields of the same name).
    fn write_fields(&self, out: &mut HashMap<String, String>);

    /// The fields as they go on the wire.
    fn to_ext_fields(&self) -> HashMap<String, String> {
        let mut fields = HashMap::new();
        self.write_fields(&mut fields);
        fields
    }

    /// Parses the fields; see the module table for the rules.
    fn from_ext_fields(fields: &HashMap<String, String>) -> Result<Self, RemotingError>;

    /// Parses the header of `cmd`.
    fn from_command(cmd: &RemotingCommand) -> Result<Self, RemotingError> {
        Self::from_ext_fields(&cmd.ext_fields)
    }

    /// Adds this header's fields to `cmd` (replacing fields of the same name).
    fn write_to(&self, cmd: &mut RemotingCommand) {
        self.write_fields(&mut cmd.ext_fields);
    }
}

/// One header field's conversion from and to its `extFields` text.
pub trait HeaderField: Sized {
    /// Parses the value of `key` (`None` when the key is absent).
    fn parse_field(key: &'static str, raw: Option<&str>) -> Result<Self, RemotingError>;
    /// Writes the value under `key`, or nothing for an absent optional field.
    fn write_field(&self, key: &'static str, out: &mut HashMap<String, String>);
}

/// Parses a present value of a scalar field type.
trait FieldValue: Sized + ToString {
    /// Value when the key is absent, for types with a Java primitive default.
    const ABSENT: Option<Self>;
    fn parse_value(key: &'static str, raw: &str) -> Result<Self, RemotingError>;
}

impl FieldValue for String {
    const ABSENT: Option<Self> = None;
    fn parse_value(_key: &'static str, raw: &str) -> Result<Self, RemotingError> {
        Ok(raw.to_string())
    }
}

impl FieldValue for bool {
    const ABSENT: Option<Self> = Some(false);
    fn parse_value(_key: &'static str, raw: &str) -> Result<Self, RemotingError> {
        Ok(raw.trim().eq_ignore_ascii_case("true"))
    }
}

macro_rules! numeric_field_values {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            const ABSENT: Option<Self> = None;
            fn parse_value(key: &'static str, raw: &str) -> Result<Self, RemotingError> {
                raw.trim().parse().map_err(|_| RemotingError::InvalidField {
                    field: key,
                    value: raw.to_string(),
                })
            }
        }
    )*};
}

numeric_field_values!(i32, i64);

macro_rules! header_fields {
    ($($t:ty),*) => {$(
        impl HeaderField for $t {
            fn parse_field(key: &'static str, raw: Option<&str>) -> Result<Self, RemotingError> {
                match raw {
                    Some(raw) => <$t as FieldValue>::parse_value(key, raw),
                    None => <$t as FieldValue>::ABSENT.ok_or(RemotingError::MissingField(key)),
                }
            }
            fn write_field(&self, key: &'static str, out: &mut HashMap<String, String>) {
                out.insert(key.to_string(), self.to_string());
            }
        }

        impl HeaderField for Option<$t> {
            fn parse_field(key: &'static str, raw: Option<&str>) -> Result<Self, RemotingError> {
                raw.map(|raw| <$t as FieldValue>::parse_value(key, raw)).transpose()
            }
            fn write_field(&self, key: &'static str, out: &mut HashMap<String, String>) {
                if let Some(value) = self {
                    out.insert(key.to_string(), value.to_string());
                }
            }
        }
    )*};
}

header_fields!(String, bool, i32, i64);

/// Declares header structs: `pub field: Type => "wireKey"` per field, and implements
/// [`CommandHeader`] for each from the field types (module table).
macro_rules! command_header {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty => $key:literal,)+
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)+
        }

        impl $crate::headers::CommandHeader for $name {
            fn write_fields(&self, fields: &mut ::std::collections::HashMap<String, String>) {
                $($crate::headers::HeaderField::write_field(&self.$field, $key, fields);)+
            }

            fn from_ext_fields(
                fields: &::std::collections::HashMap<String, String>,
            ) -> Result<Self, $crate::error::RemotingError> {
                Ok($name {
                    $($field: $crate::headers::HeaderField::parse_field(
                        $key,
                        fields.get($key).map(String::as_str),
                    )?,)+
                })
            }
        }
    )*};
}

// Also used by `broker_headers`, so that every typed header follows the same rules.
pub(crate) use command_header;

command_header! {
    /// PUT_KV_CONFIG (100).
    pub struct PutKVConfigRequestHeader {
        pub namespace: String => "namespace",
        pub key: String => "key",
        pub value: String => "value",
    }

    /// GET_KV_CONFIG (101).
    pub struct GetKVConfigRequestHeader {
        pub namespace: String => "namespace",
        pub key: String => "key",
    }

    /// Answer to GET_KV_CONFIG.
    pub struct GetKVConfigResponseHeader {
        pub value: Option<String> => "value",
    }

    /// DELETE_KV_CONFIG (102).
    pub struct DeleteKVConfigRequestHeader {
        pub namespace: String => "namespace",
        pub key: String => "key",
    }

    /// GET_KVLIST_BY_NAMESPACE (219).
    pub struct GetKVListByNamespaceRequestHeader {
        pub namespace: String => "namespace",
    }

    /// REGISTER_BROKER (103). The body is a `RegisterBrokerBody` (deflated when `compressed`);
    /// `bodyCrc32` is upstream's CRC32 of the body masked to 31 bits, 0 meaning unchecked.
    pub struct RegisterBrokerRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub ha_server_addr: String => "haServerAddr",
        pub broker_id: i64 => "brokerId",
        /// How long the NameServer keeps the broker without a new registration (5.x).
        pub heartbeat_timeout_millis: Option<i64> => "heartbeatTimeoutMillis",
        /// Absent from brokers older than 5.0, which never get an acting master.
        pub enable_acting_master: Option<bool> => "enableActingMaster",
        pub compressed: bool => "compressed",
        pub body_crc32: Option<i32> => "bodyCrc32",
        /// 5.x zone-aware routing (`MixAll.ZONE_NAME`).
        pub zone_name: Option<String> => "zoneName",
    }

    /// Answer to REGISTER_BROKER: the group master's HA and broker addresses, for a slave.
    pub struct RegisterBrokerResponseHeader {
        pub ha_server_addr: Option<String> => "haServerAddr",
        pub master_addr: Option<String> => "masterAddr",
    }

    /// UNREGISTER_BROKER (104).
    pub struct UnRegisterBrokerRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub broker_id: i64 => "brokerId",
    }

    /// BROKER_HEARTBEAT (904), the 5.x lightweight keep-alive between registrations.
    pub struct BrokerHeartbeatRequestHeader {
        pub cluster_name: String => "clusterName",
        pub broker_addr: String => "brokerAddr",
        pub broker_name: String => "brokerName",
        pub broker_id: Option<i64> => "brokerId",
        pub epoch: Option<i32> => "epoch",
        pub max_offset: Option<i64> => "maxOffset",
        pub confirm_offset: Option<i64> => "confirmOffset",
        /// Upstream's key is spelled `heartbeatTimeoutMills`.
        pub heartbeat_timeout_millis: Option<i64> => "heartbeatTimeoutMills",
        pub election_priority: Option<i32> => "electionPriority",
    }

    /// QUERY_DATA_VERSION (322); the body is the broker's `DataVersion`.
    pub struct QueryDataVersionRequestHeader {
        pub broker_name: String => "brokerName",
        pub broker_addr: String => "brokerAddr",
        pub cluster_name: String => "clusterName",
        pub broker_id: i64 => "brokerId",
    }

    /// Answer to QUERY_DATA_VERSION: whether the NameServer's copy differs.
    pub struct QueryDataVersionResponseHeader {
        pub changed: bool => "changed",
    }

    /// GET_BROKER_MEMBER_GROUP (901).
    pub struct GetBrokerMemberGroupRequestHeader {
        pub cluster_name: String => "clusterName",
        pub broker_name: String => "brokerName",
    }

    /// GET_ROUTEINFO_BY_TOPIC (105).
    pub struct GetRouteInfoRequestHeader {
        pub topic: String => "topic",
        /// Asks for standard JSON (quoted keys) whatever the request version.
        pub accept_standard_json_only: Option<bool> => "acceptStandardJsonOnly",
    }

    /// WIPE_WRITE_PERM_OF_BROKER (205).
    pub struct WipeWritePermOfBrokerRequestHeader {
        pub broker_name: String => "brokerName",
    }

    /// Answer to WIPE_WRITE_PERM_OF_BROKER.
    pub struct WipeWritePermOfBrokerResponseHeader {
        pub wipe_topic_count: i32 => "wipeTopicCount",
    }

    /// ADD_WRITE_PERM_OF_BROKER (327).
    pub struct AddWritePermOfBrokerRequestHeader {
        pub broker_name: String => "brokerName",
    }

    /// Answer to ADD_WRITE_PERM_OF_BROKER.
    pub struct AddWritePermOfBrokerResponseHeader {
        pub add_topic_count: i32 => "addTopicCount",
    }

    /// DELETE_TOPIC_IN_NAMESRV (216); without a cluster the topic goes from every cluster.
    pub struct DeleteTopicFromNamesrvRequestHeader {
        pub topic: String => "topic",
        pub cluster_name: Option<String> => "clusterName",
    }

    /// REGISTER_TOPIC_IN_NAMESRV (217); the body is a `TopicRouteData` with the queue data.
    pub struct RegisterTopicRequestHeader {
        pub topic: String => "topic",
    }

    /// GET_TOPICS_BY_CLUSTER (224).
    pub struct GetTopicsByClusterRequestHeader {
        pub cluster: String => "cluster",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn register_broker_header_as_the_4_9_8_broker_sends_it() {
        let ext = fields(&[
            ("brokerId", "0"),
            ("bodyCrc32", "1736963873"),
            ("clusterName", "RefCluster"),
            ("brokerAddr", "127.0.0.1:10911"),
            ("haServerAddr", "127.0.0.1:10912"),
            ("compressed", "false"),
            ("brokerName", "broker-ref"),
        ]);
        let h = RegisterBrokerRequestHeader::from_ext_fields(&ext).unwrap();
        assert_eq!(h.broker_id, 0);
        assert_eq!(h.body_crc32, Some(1_736_963_873));
        assert!(!h.compressed);
        assert_eq!(h.enable_acting_master, None);
        assert_eq!(h.heartbeat_timeout_millis, None);
        assert_eq!(h.to_ext_fields(), ext);
    }

    #[test]
    fn missing_and_invalid_fields() {
        let err = UnRegisterBrokerRequestHeader::from_ext_fields(&fields(&[("brokerName", "b")]))
            .unwrap_err();
        assert!(matches!(err, RemotingError::MissingField("brokerAddr")));
        let err = UnRegisterBrokerRequestHeader::from_ext_fields(&fields(&[
            ("brokerName", "b"),
            ("brokerAddr", "a:1"),
            ("clusterName", "c"),
            ("brokerId", "x1"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            RemotingError::InvalidField {
                field: "brokerId",
                ..
            }
        ));
        let err = GetRouteInfoRequestHeader::from_ext_fields(&fields(&[
            ("topic", "t"),
            ("acceptStandardJsonOnly", "yes"),
        ]));
        assert_eq!(err.unwrap().accept_standard_json_only, Some(false));
    }

    #[test]
    fn lenient_scalars_and_unknown_keys() {
        let h = DeleteTopicFromNamesrvRequestHeader::from_ext_fields(&fields(&[
            ("topic", "T"),
            ("AccessKey", ""),
            ("Signature", "x"),
        ]))
        .unwrap();
        assert_eq!(h.cluster_name, None);
        let h = WipeWritePermOfBrokerResponseHeader::from_ext_fields(&fields(&[(
            "wipeTopicCount",
            " 12 ",
        )]))
        .unwrap();
        assert_eq!(h.wipe_topic_count, 12);
        let h = RegisterBrokerRequestHeader::from_ext_fields(&fields(&[
            ("brokerName", "b"),
            ("brokerAddr", "a:1"),
            ("clusterName", "c"),
            ("haServerAddr", "a:2"),
            ("brokerId", "1"),
            ("compressed", "TRUE"),
            ("enableActingMaster", "true"),
        ]))
        .unwrap();
        assert!(h.compressed);
        assert_eq!(h.enable_acting_master, Some(true));
        assert_eq!(h.body_crc32, None);
    }

    #[test]
    fn write_to_command() {
        let mut cmd = RemotingCommand::default();
        GetRouteInfoRequestHeader {
            topic: "T".into(),
            accept_standard_json_only: None,
        }
        .write_to(&mut cmd);
        assert_eq!(cmd.ext_fields, fields(&[("topic", "T")]));
        assert_eq!(
            GetRouteInfoRequestHeader::from_command(&cmd).unwrap().topic,
            "T"
        );
    }
}
