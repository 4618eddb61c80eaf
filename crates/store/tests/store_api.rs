//! The public API of `MessageStore`: puts, reads and their statuses, filters, key queries,
//! time lookups, listeners, restart, replication, retention and errors.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use store::message::{encode_properties, tags_hash_code as tags_code};
use store::{
    AcceptAll, BrokerRole, FlushDiskType, GetMessageStatus, MessageExt, MessageInner, MessageStore,
    PutStatus, StoreConfig, StoreError,
};

fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.mapped_file_size_commit_log = 64 * 1024;
    c.mapped_file_size_consume_queue = 50 * 20;
    c.max_hash_slot_num = 64;
    c.max_index_num = 256;
    // Whatever the disk of the machine running the tests, retention stays time-based.
    c.disk_max_used_space_ratio = 100;
    c.disk_space_clean_forcibly_ratio = 100;
    c.disk_space_warning_level_ratio = 100;
    c
}

fn msg(topic: &str, queue: i32, key: &str, tag: &str, body: &[u8]) -> MessageInner {
    let mut m = MessageInner::new(topic, queue, Bytes::copy_from_slice(body));
    m.properties = encode_properties([
        ("KEYS", key),
        ("TAGS", tag),
        ("UNIQ_KEY", &format!("U-{key}")),
    ]);
    m.store_host = "10.1.2.3:10911".parse().unwrap();
    m.born_host = "10.9.9.9:5555".parse().unwrap();
    m
}

#[tokio::test]
async fn put_get_statuses_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let got = store.get_messages("T", 0, 0, 32, 1 << 20, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::NoMatchedLogicQueue);

    let mut results = Vec::new();
    for i in 0..100 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let r = store
            .put_message(msg(
                "T",
                0,
                &format!("k{i}"),
                tag,
                format!("body-{i}").as_bytes(),
            ))
            .await
            .unwrap();
        assert_eq!(r.status, PutStatus::PutOk);
        assert_eq!(r.queue_offset, i);
        assert_eq!(r.msg_ids().len(), 1);
        results.push(r);
    }
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(store.max_offset("T", 0), 100);
    assert_eq!(store.min_offset("T", 0), 0);

    let got = store.get_messages("T", 0, 10, 5, 1 << 20, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.messages.len(), 5);
    assert_eq!(got.next_begin_offset, 15);
    assert_eq!(got.message_queue_offsets, vec![10, 11, 12, 13, 14]);
    let m = MessageExt::decode(&got.messages[0]).unwrap();
    assert_eq!(&m.body[..], b"body-10");
    assert_eq!(m.msg_id(), results[10].msg_id());
    assert_eq!(m.born_host, "10.9.9.9:5555".parse().unwrap());

    // Tag filter on the unit's tag hash.
    let even = tags_code("even");
    let filter = move |code: i64| code == even;
    let got = store.get_messages("T", 0, 0, 10, 1 << 20, &filter);
    assert_eq!(got.messages.len(), 10);
    assert!(got.message_queue_offsets.iter().all(|o| o % 2 == 0));
    let none = |_: i64| false;
    let got = store.get_messages("T", 0, 0, 10, 1 << 20, &none);
    assert_eq!(got.status, GetMessageStatus::NoMatchedMessage);
    // One pass scans at most one ConsumeQueue file (50 units here).
    assert_eq!(got.next_begin_offset, 50);

    // Byte cap: always at least one message.
    let got = store.get_messages("T", 0, 0, 32, 1, &AcceptAll);
    assert_eq!(got.messages.len(), 1);
    // Upstream's in-memory count cap (32).
    let got = store.get_messages("T", 0, 0, 1000, 1 << 30, &AcceptAll);
    assert_eq!(got.messages.len(), 32);

    let s = |o| store.get_messages("T", 0, o, 1, 1 << 20, &AcceptAll).status;
    assert_eq!(s(100), GetMessageStatus::OffsetOverflowOne);
    assert_eq!(s(101), GetMessageStatus::OffsetOverflowBadly);
    assert_eq!(s(-1), GetMessageStatus::OffsetTooSmall);

    let by_off = store.message_by_offset(results[42].wrote_offset).unwrap();
    assert_eq!(MessageExt::decode(&by_off).unwrap().queue_offset, 42);
    assert_eq!(
        store.message_by_offset_and_size(results[42].wrote_offset, results[42].wrote_bytes),
        Some(by_off)
    );
    assert!(store
        .message_by_offset(results[42].wrote_offset + 1)
        .is_none());
    assert_eq!(
        store.commit_log_offset_in_queue("T", 0, 42),
        Some(results[42].wrote_offset)
    );
    store.shutdown().unwrap();
    assert!(matches!(
        store.put_message(msg("T", 0, "x", "x", b"x")).await,
        Err(StoreError::NotWritable(_))
    ));
}

#[tokio::test]
async fn batch_keys_time_and_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let grown = Arc::new(AtomicI64::new(0));
    let g = Arc::clone(&grown);
    store.subscribe_queue_growth(Arc::new(move |ev| {
        if ev.topic == "B" && ev.queue_id == 3 {
            g.store(ev.max_offset, Ordering::SeqCst);
        }
    }));
    let batch: Vec<_> = (0..10)
        .map(|i| msg("B", 3, &format!("bk{i}"), "t", b"batch"))
        .collect();
    let r = store.put_messages(batch).await.unwrap();
    assert_eq!((r.msg_num, r.queue_offset), (10, 0));
    let ids = r.msg_ids();
    assert_eq!(ids.len(), 10);
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(grown.load(Ordering::SeqCst), 10);
    let got = store.get_messages("B", 3, 0, 32, 1 << 20, &AcceptAll);
    let got_ids: Vec<_> = got
        .messages
        .iter()
        .map(|m| MessageExt::decode(m).unwrap().msg_id())
        .collect();
    assert_eq!(got_ids, ids);
    // A batch must be one queue.
    let mixed = vec![msg("B", 1, "a", "t", b"x"), msg("B", 2, "b", "t", b"x")];
    assert!(matches!(
        store.put_messages(mixed).await,
        Err(StoreError::IllegalMessage(_))
    ));

    // Keys: KEYS and UNIQ_KEY, topic-scoped.
    store
        .put_message(msg("Other", 0, "bk4", "t", b"other"))
        .await
        .unwrap();
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    let q = store.query_by_key("B", "bk4", 32, 0, i64::MAX);
    assert_eq!(q.messages.len(), 1);
    assert_eq!(
        MessageExt::decode(&q.messages[0]).unwrap().property("KEYS"),
        Some("bk4")
    );
    assert_eq!(
        store
            .query_by_key("B", "U-bk7", 32, 0, i64::MAX)
            .messages
            .len(),
        1
    );
    assert!(store
        .query_by_key("B", "nope", 32, 0, i64::MAX)
        .messages
        .is_empty());
    assert!(store.query_by_key("B", "bk4", 32, 0, 1).messages.is_empty());

    // Time lookups.
    let first = store.earliest_message_time().unwrap();
    assert_eq!(store.earliest_message_time_in_queue("B", 3), Some(first));
    assert_eq!(store.offset_by_time("B", 3, 0), 0);
    assert_eq!(store.offset_by_time("B", 3, first), 0);
    assert_eq!(store.offset_by_time("B", 3, i64::MAX), 10);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = store
        .put_message(msg("B", 3, "late", "t", b"late"))
        .await
        .unwrap();
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(store.offset_by_time("B", 3, later.store_timestamp), 10);
    assert_eq!(
        store.message_store_timestamp("B", 3, 10),
        Some(later.store_timestamp)
    );
    store.shutdown().unwrap();
}

#[tokio::test]
async fn clean_restart_keeps_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    for i in 0..300 {
        store
            .put_message(msg("R", i % 3, &format!("k{i}"), "t", &[i as u8; 500]))
            .await
            .unwrap();
    }
    let end = store.commit_log_max_offset();
    store.shutdown().unwrap();
    drop(store);
    assert!(!dir.path().join("abort").exists());

    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.commit_log_max_offset(), end);
    for q in 0..3 {
        assert_eq!(store.max_offset("R", q), 100);
    }
    let r = store
        .put_message(msg("R", 1, "again", "t", b"x"))
        .await
        .unwrap();
    assert_eq!(r.queue_offset, 100);
    assert_eq!(r.wrote_offset, end);
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    let got = store.get_messages("R", 1, 0, 200, 1 << 30, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(
        store.query_by_key("R", "k4", 8, 0, i64::MAX).messages.len(),
        1
    );
    // The directory is locked while open.
    assert!(matches!(
        MessageStore::open(config(dir.path())),
        Err(StoreError::Locked(_))
    ));
    store.shutdown().unwrap();
}

#[tokio::test]
async fn sync_flush_acknowledges_after_fsync_and_reports_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.flush_disk_type = FlushDiskType::SyncFlush;
    let store = MessageStore::open(c).unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let r = store
                    .put_message(msg("S", w, &format!("k{i}"), "t", b"sync"))
                    .await
                    .unwrap();
                assert_eq!(r.status, PutStatus::PutOk);
                assert!(store.commit_log_flushed_offset() >= r.wrote_offset + r.wrote_bytes as i64);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.shutdown().unwrap();
    drop(store);

    // A zero timeout means "do not wait": the put is stored but reported as
    // FLUSH_DISK_TIMEOUT unless the flush already happened.
    let mut c = config(dir.path());
    c.flush_disk_type = FlushDiskType::SyncFlush;
    c.sync_flush_timeout = 0;
    let store = MessageStore::open(c).unwrap();
    let mut timeouts = 0;
    let mut offsets = Vec::new();
    for i in 0..20 {
        let r = store
            .put_message(msg("S", 0, &format!("t{i}"), "t", b"late"))
            .await
            .unwrap();
        if r.status == PutStatus::FlushDiskTimeout {
            timeouts += 1;
        }
        offsets.push(r.wrote_offset);
    }
    assert!(timeouts > 0);
    // The messages were stored all the same: readable once the flush thread writes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while offsets
        .iter()
        .any(|&o| store.message_by_offset(o).is_none())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "timed-out puts never became readable"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    store.shutdown().unwrap();
}

#[tokio::test]
async fn errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let big = MessageInner::new("T", 0, vec![0u8; 4 * 1024 * 1024 + 1]);
    assert!(matches!(
        store.put_message(big).await,
        Err(StoreError::MessageTooLarge { .. })
    ));
    let too_big_for_segment = MessageInner::new("T", 0, vec![0u8; 70 * 1024]);
    assert!(matches!(
        store.put_message(too_big_for_segment).await,
        Err(StoreError::MessageTooLarge { .. })
    ));
    let mut long_props = MessageInner::new("T", 0, "x");
    long_props.properties = "a".repeat(40_000);
    assert!(matches!(
        store.put_message(long_props).await,
        Err(StoreError::IllegalMessage(_))
    ));
    assert!(matches!(
        store.append_replicated(0, b"x"),
        Err(StoreError::NotWritable(_))
    ));
    store.shutdown().unwrap();

    let mut bad = config(dir.path());
    bad.mapped_file_size_commit_log = 1;
    assert!(matches!(
        MessageStore::open(bad),
        Err(StoreError::Config(_))
    ));
}

#[tokio::test]
async fn slave_rebuilds_queues_from_replicated_bytes() {
    let master_dir = tempfile::tempdir().unwrap();
    let slave_dir = tempfile::tempdir().unwrap();
    let master = MessageStore::open(config(master_dir.path())).unwrap();
    for i in 0..200 {
        master
            .put_message(msg(
                "H",
                i % 2,
                &format!("k{i}"),
                "t",
                &vec![b'h'; 300 + i as usize],
            ))
            .await
            .unwrap();
    }
    let mut sc = config(slave_dir.path());
    sc.broker_role = BrokerRole::Slave;
    let slave = MessageStore::open(sc).unwrap();
    assert!(matches!(
        slave.put_message(msg("H", 0, "k", "t", b"x")).await,
        Err(StoreError::NotWritable(_))
    ));
    // Ship in odd-sized chunks, as an HA stream may, including chunks that split records.
    let mut pos = 0i64;
    while let Some(chunk) = master.read_commit_log(pos, 7_000) {
        let end = slave.append_replicated(pos, &chunk).unwrap();
        assert_eq!(end, pos + chunk.len() as i64);
        pos = end;
    }
    assert!(matches!(
        slave.append_replicated(pos + 1, b"x"),
        Err(StoreError::ReplicationGap { .. })
    ));
    assert_eq!(
        slave.commit_log_max_offset(),
        master.commit_log_max_offset()
    );
    assert!(slave.wait_dispatched(Duration::from_secs(5)));
    for q in 0..2 {
        assert_eq!(slave.max_offset("H", q), 100);
        let a = master.get_messages("H", q, 0, 32, 1 << 20, &AcceptAll);
        let b = slave.get_messages("H", q, 0, 32, 1 << 20, &AcceptAll);
        assert_eq!(a.messages, b.messages);
    }
    assert_eq!(
        slave.query_by_key("H", "k7", 4, 0, i64::MAX).messages.len(),
        1
    );
    master.shutdown().unwrap();
    slave.shutdown().unwrap();
}

/// A record whose topic cannot name a ConsumeQueue directory (written by a store without the
/// check; here forged in replicated bytes) is left out of the queues: the dispatcher does not
/// wait on it, so the records behind it are readable.
#[tokio::test]
async fn a_record_whose_topic_cannot_be_a_directory_does_not_stop_dispatch() {
    let master_dir = tempfile::tempdir().unwrap();
    let slave_dir = tempfile::tempdir().unwrap();
    let master = MessageStore::open(config(master_dir.path())).unwrap();
    assert!(matches!(
        master.put_message(msg("A/\0Z", 0, "k", "t", b"x")).await,
        Err(StoreError::IllegalMessage(_))
    ));
    master
        .put_message(msg("AQQZ", 0, "k0", "t", b"poisoned"))
        .await
        .unwrap();
    master
        .put_message(msg("H", 0, "k1", "t", b"behind it"))
        .await
        .unwrap();
    let mut bytes = master.read_commit_log(0, 1 << 20).unwrap().to_vec();
    let at = bytes
        .windows(4)
        .position(|w| w == b"AQQZ")
        .expect("topic in the record");
    bytes[at + 1..at + 3].copy_from_slice(b"/\0");
    let mut sc = config(slave_dir.path());
    sc.broker_role = BrokerRole::Slave;
    let slave = MessageStore::open(sc).unwrap();
    slave.append_replicated(0, &bytes).unwrap();
    assert!(slave.wait_dispatched(Duration::from_secs(5)));
    let got = slave.get_messages("H", 0, 0, 32, 1 << 20, &AcceptAll);
    assert_eq!(got.messages.len(), 1);
    master.shutdown().unwrap();
    slave.shutdown().unwrap();
}

#[tokio::test]
async fn slave_becomes_master_at_its_last_whole_record_and_back() {
    let master_dir = tempfile::tempdir().unwrap();
    let slave_dir = tempfile::tempdir().unwrap();
    let master = MessageStore::open(config(master_dir.path())).unwrap();
    let mut ends = Vec::new();
    for i in 0..20 {
        let r = master
            .put_message(msg("P", i % 2, &format!("k{i}"), "t", &[b'p'; 500]))
            .await
            .unwrap();
        ends.push(r.wrote_offset + i64::from(r.wrote_bytes));
    }
    let mut sc = config(slave_dir.path());
    sc.broker_role = BrokerRole::Slave;
    let slave = MessageStore::open(sc).unwrap();
    // Replication stopped 100 bytes into the 20th record.
    let cut = ends[18] + 100;
    let bytes = master.read_commit_log(0, cut as usize).unwrap();
    assert_eq!(bytes.len() as i64, cut);
    slave.append_replicated(0, &bytes).unwrap();
    assert!(slave.is_slave());
    let end = tokio::task::spawn_blocking({
        let slave = slave.clone();
        move || slave.become_master(Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(end, ends[18], "cut to the last whole record");
    assert!(!slave.is_slave());
    assert_eq!(slave.commit_log_max_offset(), ends[18]);
    // Queue 0 holds records 0, 2, .., 18 (10), queue 1 records 1, .., 17 (9): the next
    // write to each takes the next queue offset.
    let r0 = slave
        .put_message(msg("P", 0, "n0", "t", b"new"))
        .await
        .unwrap();
    let r1 = slave
        .put_message(msg("P", 1, "n1", "t", b"new"))
        .await
        .unwrap();
    assert_eq!((r0.queue_offset, r1.queue_offset), (10, 9));
    assert_eq!(r0.wrote_offset, ends[18]);
    assert!(matches!(
        slave.append_replicated(slave.commit_log_max_offset(), b"x"),
        Err(StoreError::NotWritable(_))
    ));
    slave.become_slave();
    assert!(matches!(
        slave.put_message(msg("P", 0, "k", "t", b"x")).await,
        Err(StoreError::NotWritable(_))
    ));
    assert!(slave.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(slave.max_offset("P", 0), 11);
    master.shutdown().unwrap();
    slave.shutdown().unwrap();
}

#[tokio::test]
async fn slave_cut_to_its_masters_log_replicates_again_from_there() {
    let old_dir = tempfile::tempdir().unwrap();
    let new_dir = tempfile::tempdir().unwrap();
    let slave_dir = tempfile::tempdir().unwrap();
    // Two masters that agree on 10 records and then diverge: `new` replicated the first 10
    // from `old` (so they are the same bytes, store timestamps included) and was then made
    // master.
    let old = MessageStore::open(config(old_dir.path())).unwrap();
    let mut nc = config(new_dir.path());
    nc.broker_role = BrokerRole::Slave;
    let new = MessageStore::open(nc).unwrap();
    let mut common_end = 0;
    for i in 0..10 {
        let r = old
            .put_message(msg("D", i % 2, &format!("c{i}"), "t", &[b'c'; 300]))
            .await
            .unwrap();
        common_end = r.wrote_offset + i64::from(r.wrote_bytes);
    }
    let common = old.read_commit_log(0, common_end as usize).unwrap();
    new.append_replicated(0, &common).unwrap();
    assert!(new.wait_dispatched(Duration::from_secs(5)));
    let promoted = new.clone();
    tokio::task::spawn_blocking(move || promoted.become_master(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    for i in 0..7 {
        old.put_message(msg("D", i % 2, &format!("old{i}"), "t", &[b'o'; 200]))
            .await
            .unwrap();
    }
    for i in 0..4 {
        new.put_message(msg("D", i % 2, &format!("new{i}"), "t", &[b'n'; 450]))
            .await
            .unwrap();
    }
    let mut sc = config(slave_dir.path());
    sc.broker_role = BrokerRole::Slave;
    let slave = MessageStore::open(sc).unwrap();
    let bytes = old.read_commit_log(0, 1 << 20).unwrap();
    slave.append_replicated(0, &bytes).unwrap();
    assert!(slave.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(slave.max_offset("D", 0), 9);
    assert_eq!(slave.truncate_replicated(common_end).unwrap(), common_end);
    assert_eq!(slave.commit_log_max_offset(), common_end);
    assert_eq!((slave.max_offset("D", 0), slave.max_offset("D", 1)), (5, 5));
    assert!(slave
        .query_by_key("D", "old1", 4, 0, i64::MAX)
        .messages
        .is_empty());
    let rest = new.read_commit_log(common_end, 1 << 20).unwrap();
    slave.append_replicated(common_end, &rest).unwrap();
    assert!(slave.wait_dispatched(Duration::from_secs(5)));
    assert_eq!(
        slave.read_commit_log(0, 1 << 20),
        new.read_commit_log(0, 1 << 20),
        "byte-identical with the new master"
    );
    for q in 0..2 {
        let a = new.get_messages("D", q, 0, 32, 1 << 20, &AcceptAll);
        let b = slave.get_messages("D", q, 0, 32, 1 << 20, &AcceptAll);
        assert_eq!(a.messages, b.messages);
    }
    assert_eq!(
        slave
            .query_by_key("D", "new3", 4, 0, i64::MAX)
            .messages
            .len(),
        1
    );
    // The cut is durable: a restart recovers the new log, not the old end.
    slave.shutdown().unwrap();
    drop(slave);
    let mut sc = config(slave_dir.path());
    sc.broker_role = BrokerRole::Slave;
    let slave = MessageStore::open(sc).unwrap();
    assert_eq!(slave.commit_log_max_offset(), new.commit_log_max_offset());
    old.shutdown().unwrap();
    new.shutdown().unwrap();
    slave.shutdown().unwrap();
}

#[tokio::test]
async fn retention_deletes_old_segments_and_moves_queue_minimums() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let mut offsets = Vec::new();
    for i in 0..400 {
        let r = store
            .put_message(msg("E", 0, &format!("k{i}"), "t", &[1u8; 700]))
            .await
            .unwrap();
        offsets.push(r.wrote_offset);
    }
    assert!(store.wait_dispatched(Duration::from_secs(5)));
    let cl_dir = dir.path().join("commitlog");
    let mut segs: Vec<_> = std::fs::read_dir(&cl_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 4);
    // Nothing has expired yet.
    assert_eq!(store.delete_expired_files().unwrap(), 0);
    // Age the first two segments past fileReservedTime (72 h).
    let old = SystemTime::now() - Duration::from_secs(100 * 3600);
    for p in &segs[..2] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert_eq!(store.delete_expired_files().unwrap(), 2);
    assert!(!segs[0].exists() && !segs[1].exists());
    let cl_min = store.commit_log_min_offset();
    assert_eq!(cl_min, 2 * 64 * 1024);
    let first_kept = offsets.iter().position(|&o| o >= cl_min).unwrap() as i64;
    assert_eq!(store.min_offset("E", 0), first_kept);
    let got = store.get_messages("E", 0, 0, 32, 1 << 20, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::OffsetTooSmall);
    assert_eq!(got.next_begin_offset, first_kept);
    let got = store.get_messages("E", 0, first_kept, 32, 1 << 20, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert!(store.message_by_offset(offsets[0]).is_none());
    assert!(store
        .query_by_key("E", "k0", 4, 0, i64::MAX)
        .messages
        .is_empty());
    assert!(store.earliest_message_time().is_some());
    store.shutdown().unwrap();
    drop(store);
    // After a restart the minimums hold.
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.min_offset("E", 0), first_kept);
    assert_eq!(store.max_offset("E", 0), 400);
    store.delete_topic("E").unwrap();
    assert_eq!(store.max_offset("E", 0), 0);
    store.shutdown().unwrap();
}
