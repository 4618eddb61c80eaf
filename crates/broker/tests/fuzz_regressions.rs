//! Regression tests for what the request fuzzer (`crates/it/tests/request_fuzz.rs`) found:
//! each test sends the failing request shape to a real broker and checks it is answered.

mod common;

use std::time::Duration;

use common::*;
use remoting::{RemotingCommand, RequestCode, ResponseCode};

/// The longest any of these answers may take.
const QUICK: Duration = Duration::from_secs(5);

/// Fuzz seed 1437730 (case 807 of broker connection 0): a two-way END_TRANSACTION with
/// `commitOrRollback` 0 ("not a transaction") was never answered.
#[tokio::test]
async fn end_transaction_not_a_transaction_is_answered() {
    let env = Env::start().await;
    let req = RemotingCommand::request(RequestCode::END_TRANSACTION)
        .with_ext("producerGroup", "PG")
        .with_ext("tranStateTableOffset", 2)
        .with_ext("commitLogOffset", 1)
        .with_ext("commitOrRollback", 0)
        .with_ext("fromTransactionCheck", false)
        .with_ext("msgId", "");
    let resp = env
        .client
        .invoke(&env.addr, req, QUICK)
        .await
        .expect("END_TRANSACTION answered");
    assert_eq!(resp.code, ResponseCode::SUCCESS, "{}", resp.remark_str());
    env.stop().await;
}

/// Fuzz seed 1437730: UPDATE_AND_CREATE_TOPIC accepted `readQueueNums`/`writeQueueNums` up to
/// `i32::MAX`; GET_TOPIC_STATS_INFO and GET_CONSUME_STATS then walked two billion queues,
/// holding a runtime thread for minutes and starving every other request.
#[tokio::test]
async fn topic_queue_counts_are_bounded() {
    let env = Env::start().await;
    for (read, write) in [(i32::MAX, 4), (4, i32::MAX), (70_000, 70_000)] {
        let resp = env
            .call(
                RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
                    .with_ext("topic", "Huge")
                    .with_ext("readQueueNums", read)
                    .with_ext("writeQueueNums", write)
                    .with_ext("perm", 6),
            )
            .await;
        assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR, "{read}/{write}");
        assert!(
            resp.remark_str().contains("QueueNums"),
            "{}",
            resp.remark_str()
        );
    }
    // The largest count still accepted is served quickly.
    let resp = env
        .call(
            RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
                .with_ext("topic", "Wide")
                .with_ext("readQueueNums", 1024)
                .with_ext("writeQueueNums", 1024)
                .with_ext("perm", 6),
        )
        .await;
    assert_eq!(resp.code, ResponseCode::SUCCESS, "{}", resp.remark_str());
    let stats = env
        .client
        .invoke(
            &env.addr,
            RemotingCommand::request(RequestCode::GET_TOPIC_STATS_INFO).with_ext("topic", "Wide"),
            QUICK,
        )
        .await
        .expect("stats answered");
    assert_eq!(stats.code, ResponseCode::SUCCESS, "{}", stats.remark_str());
    env.stop().await;
}

/// The same for a group's retry topic: `retryQueueNums` is bounded too.
#[tokio::test]
async fn retry_queue_count_is_bounded() {
    let env = Env::start().await;
    let body = format!(r#"{{"groupName":"G","retryQueueNums":{}}}"#, i32::MAX);
    let resp = env
        .call(
            RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
                .with_body(body.into_bytes()),
        )
        .await;
    assert_eq!(resp.code, ResponseCode::SYSTEM_ERROR);
    assert!(
        resp.remark_str().contains("retryQueueNums"),
        "{}",
        resp.remark_str()
    );
    env.stop().await;
}

/// cargo-fuzz `message_decoder` crash-cbaeea48: a batch entry whose size field says 0 panicked
/// the batch decoder in debug builds; the broker answers MESSAGE_ILLEGAL.
#[tokio::test]
async fn batch_entry_of_size_zero_is_refused() {
    let env = Env::start().await;
    env.create_topic("B", 1).await;
    let req = RemotingCommand::request(RequestCode::SEND_BATCH_MESSAGE)
        .with_ext("a", "PG")
        .with_ext("b", "B")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 0)
        .with_ext("h", 0)
        .with_body(vec![0u8; 5]);
    let resp = env.call(req).await;
    assert_eq!(
        resp.code,
        ResponseCode::MESSAGE_ILLEGAL,
        "{}",
        resp.remark_str()
    );
    env.stop().await;
}

/// Fuzz seed 1437730 (about one run in six): a send-back for a group whose name holds NUL
/// wrote a message to `%DLQ%<group>`, whose ConsumeQueue directory cannot exist; the
/// dispatcher retried that record forever and no later message of any topic became readable.
/// Now the retry/DLQ topic is refused (SYSTEM_ERROR naming it) and nothing is written.
#[tokio::test]
async fn send_back_for_a_group_that_cannot_name_a_directory_is_refused() {
    let env = Env::start().await;
    env.create_topic("T", 1).await;
    let sent = env.send_v1("T", 0, "first", "").await;
    assert_eq!(sent.code, 0, "{}", sent.remark_str());
    env.wait_dispatched("T", 0, 1).await;
    let first = env.pull_all("G", "T", 0, 0).await;
    assert_eq!(first.len(), 1);
    // maxReconsumeTimes 0: straight to the DLQ.
    let resp = env
        .call(send_back(first[0].commit_log_offset, "bad/\0group", 0))
        .await;
    assert_eq!(
        resp.code,
        ResponseCode::SYSTEM_ERROR,
        "{}",
        resp.remark_str()
    );
    assert!(
        resp.remark_str().contains("cannot be created"),
        "{}",
        resp.remark_str()
    );
    let sent = env.send_v1("T", 0, "second", "").await;
    assert_eq!(sent.code, 0, "{}", sent.remark_str());
    env.wait_dispatched("T", 0, 2).await;
    env.stop().await;
}
