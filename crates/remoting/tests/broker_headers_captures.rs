//! Golden tests of the broker-side typed headers and bodies: every captured request a client
//! sent to the 4.9.8 broker (Java with JSON and binary headers, C++, ali-ons, Rust, mqadmin),
//! every answer, and every broker-initiated request parses into its typed form; typed headers
//! write back the values the Java client wrote.

mod message_support;

use std::collections::{BTreeMap, HashMap};

use message_support::Frame;
use remoting::broker_headers::*;
use remoting::headers::CommandHeader;
use remoting::message::{tags_hash_code, MessageConst, Properties};
use remoting::{RequestCode, ResponseCode};

/// Parses `frame` as `H`, checks that writing it and parsing again gives the same header, and
/// (for clients that send every value as a JSON string) that each written field has the
/// captured text.
fn parse<H: CommandHeader + PartialEq + std::fmt::Debug>(frame: &Frame) -> H {
    let header = H::from_command(&frame.cmd).unwrap_or_else(|e| {
        panic!(
            "{} conn {} code {}: {e}; ext {:?}",
            frame.file, frame.conn, frame.cmd.code, frame.cmd.ext_fields
        )
    });
    let written = header.to_ext_fields();
    assert_eq!(H::from_ext_fields(&written).unwrap(), header);
    let strings_only = frame
        .json
        .pointer("/header/extFields")
        .and_then(|v| v.as_object())
        .is_none_or(|m| m.values().all(|v| v.is_string()));
    if strings_only {
        for (k, v) in &written {
            assert_eq!(
                frame.cmd.ext(k),
                Some(v.as_str()),
                "{}: field {k} written differently",
                frame.file
            );
        }
    }
    header
}

fn requests(frames: &[Frame], code: i32) -> Vec<&Frame> {
    let found: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.peer == "broker" && f.is_request(code))
        .collect();
    assert!(!found.is_empty(), "no captured request with code {code}");
    found
}

#[test]
fn send_headers_of_every_client() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    let mut seen = BTreeMap::new();
    for f in requests(&frames, RequestCode::SEND_MESSAGE) {
        let h: SendMessageRequestHeader = parse(f);
        assert!(h.topic.starts_with("CAP_"));
        assert_eq!(h.default_topic, "TBW102");
        assert_eq!(h.default_topic_queue_nums, 4);
        assert!((0..4).contains(&h.queue_id));
        assert_eq!(h.sys_flag, 0);
        assert!(h.born_timestamp > 1_700_000_000_000);
        assert_eq!(h.batch, Some(false), "C++ sends \"0\", Rust \"false\"");
        let props = Properties::parse(h.properties.as_deref().unwrap());
        assert!(props.contains(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX));
        *seen.entry(f.file.clone()).or_insert(0) += 1;
    }
    for code in [
        RequestCode::SEND_MESSAGE_V2,
        RequestCode::SEND_BATCH_MESSAGE,
    ] {
        for f in requests(&frames, code) {
            let v2: SendMessageRequestHeaderV2 = parse(f);
            let v1 = SendMessageRequestHeader::from(v2.clone());
            assert_eq!(SendMessageRequestHeaderV2::from(v1.clone()), v2);
            assert!(v1.topic.starts_with("CAP_"), "{}", v1.topic);
            assert_eq!(v1.producer_group, f.cmd.ext("a").unwrap());
            assert_eq!(
                v1.batch.unwrap_or(false),
                code == RequestCode::SEND_BATCH_MESSAGE
            );
            if f.file.starts_with("ali-ons") {
                // Numbers and booleans as JSON scalars, no `m`/`n`.
                assert_eq!(v1.unit_mode, Some(false));
                assert_eq!(v1.bname, None);
            } else {
                assert_eq!(v1.bname.as_deref(), Some("broker-ref"));
            }
            let tran = Properties::parse(v1.properties.as_deref().unwrap_or(""))
                .get(MessageConst::PROPERTY_TRANSACTION_PREPARED)
                .map(str::to_string);
            if tran.as_deref() == Some("true") {
                assert_eq!(
                    v1.sys_flag, 4,
                    "half messages carry TRANSACTION_PREPARED_TYPE"
                );
            }
            *seen.entry(f.file.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    for code in [
        RequestCode::SEND_MESSAGE,
        RequestCode::SEND_MESSAGE_V2,
        RequestCode::SEND_BATCH_MESSAGE,
    ] {
        for (_, resp) in message_support::exchanges(&frames, code) {
            let h: SendMessageResponseHeader = parse(resp);
            assert!(h.msg_id.len() >= 32);
            assert!(h.queue_offset >= 0);
            assert_eq!(h.msg_region.as_deref(), Some("DefaultRegion"));
            assert_eq!(h.trace_on, Some(true));
        }
    }
}

#[test]
fn pull_headers_and_sys_flags() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    for f in requests(&frames, RequestCode::PULL_MESSAGE) {
        let h: PullMessageRequestHeader = parse(f);
        assert_eq!(h.max_msg_nums, 32);
        assert!(PullSysFlag::has_suspend(h.sys_flag));
        assert!(matches!(h.suspend_timeout_millis, 15_000 | 20_000));
        if f.file.starts_with("cpp") || f.file.starts_with("ali-ons") {
            assert!(PullSysFlag::has_subscription(h.sys_flag));
            assert_eq!(h.subscription.as_deref(), Some("*"));
            assert_eq!(h.expression_type, None);
        } else {
            assert!(!PullSysFlag::has_subscription(h.sys_flag));
            assert_eq!(h.expression_type.as_deref(), Some(EXPRESSION_TYPE_TAG));
        }
        if PullSysFlag::has_commit_offset(h.sys_flag) {
            assert!(h.commit_offset >= 0);
        }
    }
    let mut answers = 0;
    for (req, resp) in message_support::exchanges(&frames, RequestCode::PULL_MESSAGE) {
        if !matches!(
            resp.cmd.code,
            ResponseCode::SUCCESS | ResponseCode::PULL_NOT_FOUND
        ) {
            continue;
        }
        answers += 1;
        let h: PullMessageResponseHeader = parse(resp);
        let asked: PullMessageRequestHeader =
            PullMessageRequestHeader::from_command(&req.cmd).unwrap();
        assert_eq!(h.suggest_which_broker_id, 0);
        assert!(h.min_offset <= h.next_begin_offset && h.next_begin_offset <= h.max_offset);
        assert!(h.next_begin_offset >= asked.queue_offset);
    }
    assert!(answers >= 30);
}

#[test]
fn offset_and_query_headers() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    for f in requests(&frames, RequestCode::QUERY_CONSUMER_OFFSET) {
        let h: QueryConsumerOffsetRequestHeader = parse(f);
        assert!(h.consumer_group.starts_with("CG_"));
    }
    for (_, resp) in message_support::exchanges(&frames, RequestCode::QUERY_CONSUMER_OFFSET) {
        let h: QueryConsumerOffsetResponseHeader = parse(resp);
        assert!(h.offset >= 0);
    }
    for f in requests(&frames, RequestCode::UPDATE_CONSUMER_OFFSET) {
        let h: UpdateConsumerOffsetRequestHeader = parse(f);
        // ali-ons commits -1 for a queue it has not consumed from.
        assert!(h.commit_offset >= -1);
        // Java and Rust send it oneway.
        if f.file.starts_with("java") || f.file.starts_with("rust") {
            assert!(f.cmd.is_oneway());
        }
    }
    let max: GetMaxOffsetRequestHeader = parse(requests(&frames, RequestCode::GET_MAX_OFFSET)[0]);
    assert_eq!(
        (max.topic.as_str(), max.queue_id, max.committed),
        ("CAP_java_x", 2, None)
    );
    let min: GetMinOffsetRequestHeader = parse(requests(&frames, RequestCode::GET_MIN_OFFSET)[0]);
    assert_eq!(min.bname.as_deref(), Some("broker-ref"));
    let earliest: GetEarliestMsgStoretimeRequestHeader =
        parse(requests(&frames, RequestCode::GET_EARLIEST_MSG_STORETIME)[0]);
    assert_eq!(earliest.queue_id, 2);
    let search: SearchOffsetRequestHeader =
        parse(requests(&frames, RequestCode::SEARCH_OFFSET_BY_TIMESTAMP)[0]);
    assert!(search.timestamp > 0);
    for (_, r) in message_support::exchanges(&frames, RequestCode::GET_MAX_OFFSET) {
        assert_eq!(parse::<GetMaxOffsetResponseHeader>(r).offset, 2);
    }
    for (_, r) in message_support::exchanges(&frames, RequestCode::GET_MIN_OFFSET) {
        assert_eq!(parse::<GetMinOffsetResponseHeader>(r).offset, 0);
    }
    for (_, r) in message_support::exchanges(&frames, RequestCode::SEARCH_OFFSET_BY_TIMESTAMP) {
        assert_eq!(parse::<SearchOffsetResponseHeader>(r).offset, 0);
    }
    for (_, r) in message_support::exchanges(&frames, RequestCode::GET_EARLIEST_MSG_STORETIME) {
        assert!(parse::<GetEarliestMsgStoretimeResponseHeader>(r).timestamp > 0);
    }
    for f in requests(&frames, RequestCode::QUERY_MESSAGE) {
        let h: QueryMessageRequestHeader = parse(f);
        assert!(matches!(h.max_num, 32 | 64), "Java client 32, mqadmin 64");
        assert!(h.end_timestamp > h.begin_timestamp);
        assert_eq!(h.unique_key_query, Some(false));
    }
    for (_, r) in message_support::exchanges(&frames, RequestCode::QUERY_MESSAGE) {
        let h: QueryMessageResponseHeader = parse(r);
        assert!(h.index_last_update_phyoffset > 0);
    }
    let view: ViewMessageRequestHeader =
        parse(requests(&frames, RequestCode::VIEW_MESSAGE_BY_ID)[0]);
    assert_eq!(view.offset, 14492);
    assert_eq!(view.topic, None);
}

#[test]
fn send_back_transaction_and_membership_headers() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    for f in requests(&frames, RequestCode::CONSUMER_SEND_MSG_BACK) {
        let h: ConsumerSendMsgBackRequestHeader = parse(f);
        // The very first message of the commit log has offset 0.
        assert!(h.offset >= 0);
        assert_eq!(h.delay_level, 0);
        assert!(!h.unit_mode);
        if f.file.starts_with("cpp") {
            // C++ sends only group, offset and delayLevel.
            assert_eq!(h.origin_msg_id, None);
            assert_eq!(h.max_reconsume_times, None);
        } else {
            assert_eq!(h.max_reconsume_times, Some(16));
            assert!(h.origin_topic.unwrap().starts_with("CAP_"));
            let id = h.origin_msg_id.unwrap();
            assert!(id.len() == 32 || id.len() == 56, "{id}");
        }
    }
    let ends = requests(&frames, RequestCode::END_TRANSACTION);
    let kinds: Vec<i32> = ends
        .iter()
        .map(|f| {
            assert!(f.cmd.is_oneway());
            let h: EndTransactionRequestHeader = parse(f);
            assert!(!h.from_transaction_check);
            assert!(h.commit_log_offset > 0);
            h.commit_or_rollback
        })
        .collect();
    assert_eq!(kinds, vec![8, 12]);

    for f in requests(&frames, RequestCode::UNREGISTER_CLIENT) {
        let h: UnregisterClientRequestHeader = parse(f);
        assert!(!h.client_id.is_empty());
        assert!(h.producer_group.is_some() || h.consumer_group.is_some());
    }
    for f in requests(&frames, RequestCode::GET_CONSUMER_LIST_BY_GROUP) {
        let h: GetConsumerListByGroupRequestHeader = parse(f);
        assert!(h.consumer_group.starts_with("CG_"));
    }
    let mut listed = 0;
    for (req, resp) in message_support::exchanges(&frames, RequestCode::GET_CONSUMER_LIST_BY_GROUP)
    {
        let body = GetConsumerListByGroupResponseBody::decode(&resp.cmd.body).unwrap();
        assert!(!body.consumer_id_list.is_empty(), "{}", req.file);
        listed += 1;
    }
    assert!(listed >= 20);
    // Broker-initiated, oneway, JSON even on the binary-header connection.
    let notes: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.dir == "s2c" && f.is_notify())
        .collect();
    assert!(notes.len() >= 5);
    for f in notes {
        assert!(f.cmd.is_oneway());
        let h: NotifyConsumerIdsChangedRequestHeader = parse(f);
        assert!(h.consumer_group.starts_with("CG_"));
    }
}

trait NotifyFrame {
    fn is_notify(&self) -> bool;
}

impl NotifyFrame for Frame {
    fn is_notify(&self) -> bool {
        !self.cmd.is_response() && self.cmd.code == RequestCode::NOTIFY_CONSUMER_IDS_CHANGED
    }
}

#[test]
fn heartbeat_and_lock_bodies() {
    let Some(frames) = message_support::load_all() else {
        return;
    };
    let mut consumers = HashMap::new();
    for f in requests(&frames, RequestCode::HEART_BEAT) {
        let hb = HeartbeatData::decode(&f.cmd.body)
            .unwrap_or_else(|e| panic!("{}: {e}: {:?}", f.file, f.cmd.body));
        assert!(!hb.client_id.is_empty());
        for c in &hb.consumer_data_set {
            assert_eq!(c.consume_type, ConsumeType::ConsumePassively);
            assert_eq!(c.message_model, MessageModel::Clustering);
            assert!(!c.subscription_data_set.is_empty());
            for s in &c.subscription_data_set {
                // ali-ons omits expressionType; the default is TAG.
                assert_eq!(s.expression_type, EXPRESSION_TYPE_TAG);
                // The Rust client sends subVersion 0 in its first heartbeats.
                assert!(s.sub_version >= 0);
                if s.sub_string != SUB_ALL {
                    // Tag expressions travel parsed: tags and their Java hash codes.
                    assert!(!s.tags_set.is_empty(), "{}: {}", f.file, s.sub_string);
                    let codes: std::collections::BTreeSet<i32> = s
                        .tags_set
                        .iter()
                        .map(|t| tags_hash_code(t) as i32)
                        .collect();
                    assert_eq!(codes, s.code_set);
                }
            }
            consumers.insert(f.file.clone(), c.consume_from_where);
        }
        // Writing and reading back keeps everything.
        assert_eq!(HeartbeatData::decode(&hb.encode().unwrap()).unwrap(), hb);
    }
    assert!(consumers.len() >= 4, "{consumers:?}");
    for code in [RequestCode::LOCK_BATCH_MQ, RequestCode::UNLOCK_BATCH_MQ] {
        for f in requests(&frames, code) {
            let body = if code == RequestCode::LOCK_BATCH_MQ {
                LockBatchRequestBody::decode(&f.cmd.body).unwrap()
            } else {
                let u = UnlockBatchRequestBody::decode(&f.cmd.body).unwrap();
                LockBatchRequestBody {
                    client_id: u.client_id,
                    consumer_group: u.consumer_group,
                    mq_set: u.mq_set,
                    only_this_broker: u.only_this_broker,
                }
            };
            assert!(!body.mq_set.is_empty());
            assert!(body.consumer_group.starts_with("CG_"));
            assert!(!body.only_this_broker);
            if f.file.starts_with("java") && body.mq_set.len() == 1 {
                // Same bytes as the Java client wrote (fields in alphabetical order; sets of
                // several queues come in HashSet order, ours are sorted).
                assert_eq!(body.encode().unwrap(), f.cmd.body.to_vec());
            }
        }
    }
    for (req, resp) in message_support::exchanges(&frames, RequestCode::LOCK_BATCH_MQ) {
        let asked = LockBatchRequestBody::decode(&req.cmd.body).unwrap();
        let got = LockBatchResponseBody::decode(&resp.cmd.body).unwrap();
        assert!(got.lock_ok_mq_set.is_subset(&asked.mq_set));
        assert_eq!(
            LockBatchResponseBody::decode(&got.encode().unwrap()).unwrap(),
            got
        );
    }
}

#[test]
fn lenient_scalars_like_cpp_and_ali_ons() {
    let fields: HashMap<String, String> = [
        ("offset", "22696"),
        ("group", "CG"),
        ("delayLevel", " 3 "),
        ("unitMode", "TRUE"),
        ("AccessKey", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let h = ConsumerSendMsgBackRequestHeader::from_ext_fields(&fields).unwrap();
    assert_eq!((h.offset, h.delay_level, h.unit_mode), (22696, 3, true));
    let mut missing = fields.clone();
    missing.remove("group");
    assert!(ConsumerSendMsgBackRequestHeader::from_ext_fields(&missing).is_err());
}
