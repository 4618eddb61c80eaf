//! The shape of registrations as upstream sends them (captures README item 8): a topic made by
//! UPDATE_AND_CREATE_TOPIC is registered with a two-way 103, a topic the broker auto-creates
//! (first send via TBW102, a group's `%RETRY%` topic) with a oneway 103. A second "NameServer"
//! address records the frames the broker sends it (next to the real NameServer).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use remoting::broker_headers::{ConsumerData, HeartbeatData};
use remoting::server::{Connection, Dispatcher, RemotingServer, ServerConfig};
use remoting::{RemotingCommand, RequestCode, ResponseCode, SerializeType};
use tokio::sync::mpsc;

/// A listener that records each REGISTER_BROKER as (oneway, body text) and answers SUCCESS.
async fn recorder() -> (RemotingServer, mpsc::UnboundedReceiver<(bool, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut d = Dispatcher::new();
    d.register(
        RequestCode::REGISTER_BROKER,
        Arc::new(move |_c: Connection, req: RemotingCommand| {
            let _ = tx.send((
                req.is_oneway(),
                String::from_utf8_lossy(&req.body).into_owned(),
            ));
            async move {
                Some(RemotingCommand::response_to(
                    &req,
                    ResponseCode::SUCCESS,
                    None,
                ))
            }
        }),
    )
    .expect("each code is registered once");
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    };
    (RemotingServer::start(config, d).await.unwrap(), rx)
}

/// Whether the first registration whose body names `topic` was oneway.
async fn first_naming(rx: &mut mpsc::UnboundedReceiver<(bool, String)>, topic: &str) -> bool {
    let quoted = format!("\"{topic}\"");
    loop {
        let (oneway, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no registration with {topic}"))
            .unwrap();
        if body.contains(&quoted) {
            return oneway;
        }
    }
}

#[tokio::test]
async fn admin_topics_register_two_way_and_auto_created_ones_oneway() {
    let (capture, mut frames) = recorder().await;
    let capture_addr = capture.local_addr();
    let env = Env::start_with(
        |c| {
            c.namesrv_addr = format!("{};{capture_addr}", c.namesrv_addr);
            c.auto_create_topic_enable = true;
            // Only changes register during the test, not the period.
            c.register_name_server_period = 600_000;
        },
        None,
    )
    .await;
    // The registration at start is two-way.
    let (oneway, _) = tokio::time::timeout(Duration::from_secs(10), frames.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!oneway);

    env.create_topic("TAdmin", 2).await;
    assert!(
        !first_naming(&mut frames, "TAdmin").await,
        "admin topic: want two-way"
    );

    let r = env
        .send_v2("TAuto", -1, "x", &props("A", "k"), 0, SerializeType::Json)
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    assert!(
        first_naming(&mut frames, "TAuto").await,
        "auto-created topic: want oneway"
    );

    let hb = HeartbeatData {
        client_id: "c1".into(),
        consumer_data_set: vec![ConsumerData {
            group_name: "GAuto".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = env
        .call(RemotingCommand::request(RequestCode::HEART_BEAT).with_body(hb.encode().unwrap()))
        .await;
    assert_eq!(r.code, 0, "{}", r.remark_str());
    assert!(
        first_naming(&mut frames, "%RETRY%GAuto").await,
        "retry topic: want oneway"
    );
    env.stop().await;
    capture.shutdown().await;
}
