//! Group membership under concurrency: one client id over several connections, heartbeats
//! racing the close of their own connection, and the consumer list asked meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use remoting::broker_headers::GetConsumerListByGroupResponseBody;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::protocol::parse_fastjson;
use remoting::server::Connection;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use tokio::sync::mpsc;

const GROUP: &str = "GM";
const CLIENT_ID: &str = "127.0.0.1@same";

fn heartbeat() -> RemotingCommand {
    consumer_heartbeat(CLIENT_ID, GROUP, "TM")
}

fn consumer_list() -> RemotingCommand {
    RemotingCommand::request(RequestCode::GET_CONSUMER_LIST_BY_GROUP)
        .with_ext("consumerGroup", GROUP)
}

/// A client whose NOTIFY_CONSUMER_IDS_CHANGED requests are counted on `tx`.
fn counting_client(tx: mpsc::UnboundedSender<()>) -> RemotingClient {
    let handler = move |_c: Connection, req: RemotingCommand| {
        let tx = tx.clone();
        async move {
            if req.code == RequestCode::NOTIFY_CONSUMER_IDS_CHANGED {
                let _ = tx.send(());
            }
            None
        }
    };
    RemotingClient::new(ClientConfig {
        server_request_handler: Some(Arc::new(handler)),
        ..ClientConfig::default()
    })
}

/// Heartbeats and asks for the consumer list `rounds` times on `client`'s connection; the
/// list must always be exactly the one client id.
async fn hammer(client: RemotingClient, addr: BrokerAddr, rounds: usize) {
    for _ in 0..rounds {
        let r = client.invoke(&addr, heartbeat(), TIMEOUT).await.unwrap();
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        let list = client
            .invoke(&addr, consumer_list(), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(list.code, ResponseCode::SUCCESS, "{}", list.remark_str());
        let ids = GetConsumerListByGroupResponseBody::decode(&list.body).unwrap();
        assert_eq!(ids.consumer_id_list, [CLIENT_ID]);
    }
}

/// Connections the broker lists for the group (GET_CONSUMER_CONNECTION_LIST).
async fn listed_connections(env: &Env) -> usize {
    let resp = env
        .call(
            RemotingCommand::request(RequestCode::GET_CONSUMER_CONNECTION_LIST)
                .with_ext("consumerGroup", GROUP),
        )
        .await;
    assert_eq!(resp.code, ResponseCode::SUCCESS, "{}", resp.remark_str());
    parse_fastjson(&resp.body).unwrap()["connectionSet"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_over_two_connections_stays_a_member_while_connections_come_and_go() {
    let env = Env::start().await;
    env.create_topic("TM", 2).await;
    let (tx_a, mut notes_a) = mpsc::unbounded_channel();
    let a = counting_client(tx_a);
    let (tx_b, _notes_b) = mpsc::unbounded_channel();
    let b = counting_client(tx_b);
    let r = a.invoke(&env.addr, heartbeat(), TIMEOUT).await.unwrap();
    assert_eq!(r.code, ResponseCode::SUCCESS);
    // Joining is one membership change, told to the member.
    tokio::time::timeout(Duration::from_secs(5), notes_a.recv())
        .await
        .expect("no NOTIFY_CONSUMER_IDS_CHANGED on join");

    // Both long-lived connections hammer heartbeat + list while short-lived connections of
    // the same client id send a heartbeat and close at once, so the broker handles their
    // heartbeat around (before or after) their close.
    let addr = env.addr.clone();
    let churn = tokio::spawn(async move {
        for _ in 0..100 {
            let c = RemotingClient::new(ClientConfig::default());
            c.invoke_oneway(&addr, heartbeat()).await.unwrap();
            c.shutdown().await;
        }
    });
    let ha = tokio::spawn(hammer(a.clone(), env.addr.clone(), 200));
    let hb = tokio::spawn(hammer(b.clone(), env.addr.clone(), 200));
    ha.await.unwrap();
    hb.await.unwrap();
    churn.await.unwrap();

    // No connection that closed is left behind: only `a` and `b` remain listed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = listed_connections(&env).await;
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} connections listed, want 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same client over more connections never changed the membership: `a` was told
    // only of its own join.
    assert!(notes_a.try_recv().is_err(), "membership change notified");

    // Closing one of the two connections keeps the client a member; closing both ends it.
    b.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while listed_connections(&env).await != 1 {
        assert!(Instant::now() < deadline, "closed connection still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = a.invoke(&env.addr, consumer_list(), TIMEOUT).await.unwrap();
    assert_eq!(list.code, ResponseCode::SUCCESS, "{}", list.remark_str());
    a.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = env.call(consumer_list()).await;
        if list.code == ResponseCode::SYSTEM_ERROR {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client still a member after closing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}
