//! Property tests of the tolerant fastjson reader and the bare-key writer: no input panics,
//! and whatever we write reads back to the same value.

use std::collections::BTreeMap;

use proptest::prelude::*;
use remoting::protocol::{
    from_fastjson, parse_fastjson, to_fastjson, BrokerData, KeyStyle, TopicRouteData,
};

proptest! {
    #[test]
    fn reader_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_fastjson(&bytes);
        let _ = from_fastjson::<TopicRouteData>(&bytes);
    }

    #[test]
    fn reader_never_panics_on_json_like_text(text in "[{}\\[\\]:,\"\\\\ 0-9a-z.\\-]{0,200}") {
        let _ = parse_fastjson(text.as_bytes());
    }

    #[test]
    fn broker_data_round_trips_in_both_styles(
        addrs in proptest::collection::btree_map(any::<i64>(), "[ -~]{0,20}", 0..5),
        name in "\\PC{0,16}",
        acting in any::<bool>(),
    ) {
        let data = BrokerData {
            broker_addrs: addrs,
            broker_name: name.clone(),
            cluster: name,
            enable_acting_master: acting,
            zone_name: None,
        };
        for style in [KeyStyle::Quoted, KeyStyle::Bare] {
            let bytes = to_fastjson(&data, style).unwrap();
            prop_assert_eq!(from_fastjson::<BrokerData>(&bytes).unwrap(), data.clone());
        }
    }

    #[test]
    fn string_keys_stay_quoted(keys in proptest::collection::vec("\\PC{0,8}", 0..5)) {
        let table: BTreeMap<String, i32> = keys.into_iter().map(|k| (k, 1)).collect();
        let bytes = to_fastjson(&table, KeyStyle::Bare).unwrap();
        let standard: BTreeMap<String, i32> = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(standard, table.clone());
        prop_assert_eq!(parse_fastjson(&bytes).unwrap(), serde_json::to_value(&table).unwrap());
    }
}
