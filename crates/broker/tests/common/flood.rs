//! A flood of pipelined long-polling pulls on a few raw connections, for the back-pressure
//! tests.

use std::net::SocketAddr;

use bytes::BytesMut;
use remoting::broker_headers::PullSysFlag;
use remoting::codec::{decode, encode, DEFAULT_MAX_FRAME_SIZE};
use remoting::{RemotingCommand, SerializeType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{props, pull_request, Env};
use remoting::ResponseCode;

/// The topic the flood pulls from, and its queues.
pub const TOPIC: &str = "FloodTopic";
pub const QUEUES: i32 = 4;

/// A long-polling pull of an empty queue: the broker holds it for `suspend` ms.
pub fn held_pull(queue: i32) -> RemotingCommand {
    pull_request(
        "FloodGroup",
        TOPIC,
        queue,
        0,
        PullSysFlag::FLAG_SUSPEND | PullSysFlag::FLAG_SUBSCRIPTION,
        "*",
        30_000,
    )
}

/// Opens `conns` connections, writes `per_conn` pipelined held pulls on each (in batches, so
/// the flood itself does not need `per_conn` frames of client memory at once) and forwards the
/// code and remark of every answer. The streams are returned so the caller decides when the
/// held pulls end (by dropping them).
pub async fn flood(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
) -> (
    mpsc::UnboundedReceiver<(i32, String)>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let mut sent = 0;
            while sent < per_conn {
                buf.clear();
                let n = (per_conn - sent).min(1000);
                for i in 0..n {
                    let mut req = held_pull(((c + sent + i) % QUEUES as usize) as i32);
                    req.serialize_type = SerializeType::Json;
                    encode(&req, &mut buf).unwrap();
                }
                wr.write_all(&buf).await.unwrap();
                sent += n;
            }
            // Keep the write half (and so the connection) open until the task is aborted.
            std::future::pending::<()>().await;
            drop(wr);
        }));
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Some(cmd) = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap() {
                    let remark = cmd.remark.clone().unwrap_or_default();
                    if tx.send((cmd.code, remark)).is_err() {
                        return;
                    }
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }));
    }
    (rx, tasks)
}

/// Another client is served during a flood: a send to queue 0 of [`TOPIC`], then a pull of
/// another group that finds it.
pub async fn other_client_is_served(env: &Env) {
    let sent = env
        .send_v2(TOPIC, 0, "hello", &props("A", "k1"), 0, SerializeType::Json)
        .await;
    assert_eq!(sent.code, ResponseCode::SUCCESS, "{:?}", sent.remark);
    env.wait_dispatched(TOPIC, 0, 1).await;
    let got = env.pull("OtherGroup", TOPIC, 0, 0, "*").await;
    assert_eq!(got.code, ResponseCode::SUCCESS, "{:?}", got.remark);
}
