//! A NameServer with `aclEnable=true` over TCP: administrative requests need a signed request
//! from an admin account (refused with upstream's `AclException` remark otherwise, and nothing
//! changes); route reads and broker registration stay open.

mod common;

use common::*;
use remoting::acl::{sign, Credentials};
use remoting::{RemotingCommand, RequestCode, ResponseCode};

const PLAIN_ACL: &str = "
accounts:
  - accessKey: appAccess
    secretKey: appSecret
    defaultTopicPerm: PUB|SUB
  - accessKey: adminAccess
    secretKey: adminSecret
    admin: true
";

fn put_kv(value: &str) -> RemotingCommand {
    RemotingCommand::request(RequestCode::PUT_KV_CONFIG)
        .with_ext("namespace", "ns")
        .with_ext("key", "k")
        .with_ext("value", value)
}

fn signed(mut cmd: RemotingCommand, ak: &str, sk: &str) -> RemotingCommand {
    sign(&mut cmd, &Credentials::new(ak, sk));
    cmd
}

#[tokio::test]
async fn admin_requests_need_an_admin_account() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("conf")).unwrap();
    std::fs::write(home.path().join("conf/plain_acl.yml"), PLAIN_ACL).unwrap();
    let home_path = home.path().display().to_string();
    let s = start(&[("aclEnable", "true"), ("rocketmqHome", &home_path)]).await;
    let get = || {
        RemotingCommand::request(RequestCode::GET_KV_CONFIG)
            .with_ext("namespace", "ns")
            .with_ext("key", "k")
    };
    let refused = |r: &RemotingCommand, why: &str| {
        assert_eq!(r.code, ResponseCode::SYSTEM_ERROR, "{}", r.remark_str());
        assert_eq!(
            r.remark_str(),
            format!("org.apache.rocketmq.acl.common.AclException: {why}")
        );
    };
    refused(&s.call(put_kv("a")).await, "No accessKey is configured");
    refused(
        &s.call(signed(put_kv("a"), "appAccess", "appSecret")).await,
        "Need admin permission for request code=100, but accessKey=appAccess is not",
    );
    refused(
        &s.call(signed(put_kv("a"), "adminAccess", "wrongSecret"))
            .await,
        "Check signature failed for accessKey=adminAccess",
    );
    assert_eq!(
        s.call(get()).await.code,
        ResponseCode::QUERY_NOT_FOUND,
        "nothing was stored by the refused requests"
    );
    let ok = s
        .call(signed(put_kv("a"), "adminAccess", "adminSecret"))
        .await;
    assert_eq!(ok.code, ResponseCode::SUCCESS, "{}", ok.remark_str());
    let got = s.call(get()).await;
    assert_eq!(got.ext("value"), Some("a"));
    // Reads and registration need nothing.
    let broker = Broker::new("b1", 0, "127.0.0.1:10911");
    assert_eq!(
        s.call(broker.register(&[("T1", 4)], 1)).await.code,
        ResponseCode::SUCCESS
    );
    assert!(s.route("T1").await.is_some());
    s.stop().await;
}
