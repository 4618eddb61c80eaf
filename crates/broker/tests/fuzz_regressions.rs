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
