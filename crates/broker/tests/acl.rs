//! A broker with `aclEnable=true` over TCP: unsigned, unknown, wrongly signed and
//! unpermitted requests are answered as upstream 4.9.8 answers them (code 1 with an
//! `AclException` remark) and a refused send stores nothing; every request code the broker
//! serves is refused without credentials, so a new handler cannot bypass the check.

mod common;

use common::*;
use remoting::acl::Credentials;
use remoting::{RemotingCommand, RequestCode, ResponseCode, SerializeType};

const PLAIN_ACL: &str = r#"
accounts:
  - accessKey: producerAK
    secretKey: producerSK
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - Orders=PUB|SUB
  - accessKey: adminAK1
    secretKey: adminSK1
    admin: true
"#;

async fn acl_env() -> (tempfile::TempDir, Env) {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("conf")).unwrap();
    std::fs::write(home.path().join("conf/plain_acl.yml"), PLAIN_ACL).unwrap();
    let path = home.path().to_path_buf();
    let mut env = Env::start_with(
        move |c| {
            c.acl_enable = true;
            c.rocketmq_home = Some(path);
        },
        None,
    )
    .await;
    env.credentials = Some(Credentials::new("adminAK1", "adminSK1"));
    env.create_topic("Orders", 1).await;
    env.create_topic("Secret", 1).await;
    (home, env)
}

fn assert_refused(r: &RemotingCommand, message: &str) {
    assert_eq!(r.code, ResponseCode::SYSTEM_ERROR, "{}", r.remark_str());
    assert_eq!(
        r.remark_str(),
        format!("org.apache.rocketmq.acl.common.AclException: {message}")
    );
}

async fn send(env: &Env, topic: &str) -> RemotingCommand {
    env.send_v2(topic, 0, "body", &props("A", "k"), 0, SerializeType::Json)
        .await
}

async fn max_offset(env: &Env, topic: &str) -> i64 {
    let r = env
        .call(
            RemotingCommand::request(RequestCode::GET_MAX_OFFSET)
                .with_ext("topic", topic)
                .with_ext("queueId", 0),
        )
        .await;
    r.ext("offset").unwrap().parse().unwrap()
}

#[tokio::test]
async fn acl_refuses_as_upstream_and_stores_nothing_refused() {
    let (_home, mut env) = acl_env().await;
    env.credentials = None;
    assert_refused(&send(&env, "Orders").await, "No accessKey is configured");
    env.credentials = Some(Credentials::new("nobodyAK", "whatever1"));
    assert_refused(&send(&env, "Orders").await, "No acl config for nobodyAK");
    env.credentials = Some(Credentials::new("producerAK", "wrongSK1"));
    assert_refused(
        &send(&env, "Orders").await,
        "Check signature failed for accessKey=producerAK",
    );
    env.credentials = Some(Credentials::new("producerAK", "producerSK"));
    assert_refused(
        &send(&env, "Secret").await,
        "No default permission for topic:Secret",
    );
    let ok = send(&env, "Orders").await;
    assert_eq!(ok.code, ResponseCode::SUCCESS, "{}", ok.remark_str());
    // Admin requests need the admin account.
    let create = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "Another")
        .with_ext("readQueueNums", 1)
        .with_ext("writeQueueNums", 1)
        .with_ext("perm", 6);
    assert_refused(
        &env.call(create).await,
        "Need admin permission for request code=17, but accessKey=producerAK is not",
    );

    env.credentials = Some(Credentials::new("adminAK1", "adminSK1"));
    env.wait_dispatched("Orders", 0, 1).await;
    assert_eq!(
        max_offset(&env, "Orders").await,
        1,
        "only the permitted send"
    );
    assert_eq!(
        max_offset(&env, "Secret").await,
        0,
        "the refused send stored nothing"
    );
    env.stop().await;
}

#[tokio::test]
async fn every_served_code_is_refused_without_credentials() {
    let (_home, mut env) = acl_env().await;
    env.credentials = None;
    for code in broker::served_codes() {
        let r = env.call(RemotingCommand::request(code)).await;
        assert_refused(&r, "No accessKey is configured");
    }
    env.stop().await;
}

#[tokio::test]
async fn acl_admin_requests_change_the_accounts_at_once() {
    let (home, mut env) = acl_env().await;
    let create = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_ACL_CONFIG)
        .with_ext("accessKey", "newcomerAK")
        .with_ext("secretKey", "newcomerSK")
        .with_ext("defaultTopicPerm", "DENY")
        .with_ext("topicPerms", "Secret=PUB,Orders=SUB")
        .with_ext("admin", false);
    // Only an admin may change the ACL (upstream 4.9 lets any signed account).
    env.credentials = Some(Credentials::new("producerAK", "producerSK"));
    assert_refused(
        &env.call(create.clone()).await,
        "Need admin permission for request code=50, but accessKey=producerAK is not",
    );
    env.credentials = Some(Credentials::new("adminAK1", "adminSK1"));
    let r = env.call(create).await;
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
    let file = std::fs::read_to_string(home.path().join("conf/plain_acl.yml")).unwrap();
    assert!(file.contains("newcomerAK"), "{file}");

    // The new account works at once, with its permissions.
    env.credentials = Some(Credentials::new("newcomerAK", "newcomerSK"));
    assert_eq!(send(&env, "Secret").await.code, ResponseCode::SUCCESS);
    assert_refused(
        &send(&env, "Orders").await,
        "No default permission for topic:Orders",
    );

    let versions = env
        .call(RemotingCommand::request(
            RequestCode::GET_BROKER_CLUSTER_ACL_INFO,
        ))
        .await;
    assert_eq!(versions.code, ResponseCode::SUCCESS);
    assert_eq!(versions.ext("brokerName"), Some(BROKER_NAME));
    assert!(versions.ext("version").unwrap().contains("\"counter\":2"));
    assert!(versions
        .ext("allAclFileVersion")
        .unwrap()
        .contains("plain_acl.yml"));

    env.credentials = Some(Credentials::new("adminAK1", "adminSK1"));
    let delete = RemotingCommand::request(RequestCode::DELETE_ACL_CONFIG)
        .with_ext("accessKey", "newcomerAK");
    assert_eq!(env.call(delete.clone()).await.code, ResponseCode::SUCCESS);
    let again = env.call(delete).await;
    assert_eq!(
        again.code,
        210,
        "DELETE_ACL_CONFIG_FAILED: {}",
        again.remark_str()
    );
    env.credentials = Some(Credentials::new("newcomerAK", "newcomerSK"));
    assert_refused(&send(&env, "Secret").await, "No acl config for newcomerAK");

    // A global white list entry for this host lets unsigned requests through.
    env.credentials = Some(Credentials::new("adminAK1", "adminSK1"));
    let white = RemotingCommand::request(RequestCode::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG)
        .with_ext("globalWhiteAddrs", "127.0.0.1")
        .with_ext("aclFileFullPath", "");
    assert_eq!(env.call(white).await.code, ResponseCode::SUCCESS);
    env.credentials = None;
    assert_eq!(send(&env, "Secret").await.code, ResponseCode::SUCCESS);
    env.stop().await;
}
