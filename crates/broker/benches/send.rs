//! The send handler without sockets (`cargo bench -p apogee-broker --bench send`): a real
//! broker (temporary store, `ASYNC_FLUSH`, no NameServer) answers SEND_MESSAGE_V2 requests
//! that reach it through its in-process endpoint (the connection `apogee standalone`'s proxy
//! uses), so the figure is the request path — header decode, properties, the CommitLog
//! append, the answer — with the network taken out.
//!
//! - `send 1 KiB, one at a time`: one request in flight;
//! - `send 1 KiB, 64 in flight`: 64 requests per iteration, awaited together (per-message
//!   cost is the time divided by 64).

use std::net::IpAddr;
use std::time::Duration;

use broker::{Broker, BrokerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::future::join_all;
use remoting::broker_headers::SendMessageRequestHeaderV2;
use remoting::client::{ClientConfig, RemotingClient};
use remoting::headers::CommandHeader;
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

const TOPIC: &str = "BenchSend";
const TIMEOUT: Duration = Duration::from_secs(10);

fn send_request(queue: i32) -> RemotingCommand {
    let mut cmd =
        RemotingCommand::request(RequestCode::SEND_MESSAGE_V2).with_body(vec![b'x'; 1024]);
    SendMessageRequestHeaderV2 {
        a: "bench_producer_group".into(),
        b: TOPIC.into(),
        c: "TBW102".into(),
        d: 4,
        e: queue,
        f: 0,
        g: 1_796_000_000_000,
        h: 0,
        i: Some("UNIQ_KEY\u{1}7F00000100002A9F0000000000000001\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA\u{2}".into()),
        j: Some(0),
        k: Some(false),
        l: None,
        m: Some(false),
        n: Some("bench".into()),
    }
    .write_to(&mut cmd);
    cmd
}

async fn send(client: &RemotingClient, addr: &BrokerAddr, queue: i32) {
    let r = client
        .invoke(addr, send_request(queue), TIMEOUT)
        .await
        .expect("the broker answers");
    assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = BrokerConfig {
        broker_name: "bench".into(),
        listen_port: 0,
        bind_address: "127.0.0.1".parse::<IpAddr>().expect("an address"),
        broker_ip1: Some("127.0.0.1".parse().expect("an address")),
        store_path_root_dir: dir.path().join("store"),
        metrics_exporter_type: "DISABLE".into(),
        ..BrokerConfig::default()
    };
    let (broker, client, addr) = rt.block_on(async {
        let broker = Broker::start(config).await.expect("the broker starts");
        let client = RemotingClient::new(ClientConfig::default());
        let addr = BrokerAddr::parse(&broker.broker_addr().to_string()).expect("an address");
        client.add_local(&addr.to_string(), broker.local_endpoint());
        let create = RemotingCommand::request(RequestCode::UPDATE_AND_CREATE_TOPIC)
            .with_ext("topic", TOPIC)
            .with_ext("readQueueNums", 8)
            .with_ext("writeQueueNums", 8)
            .with_ext("perm", 6);
        let r = client
            .invoke(&addr, create, TIMEOUT)
            .await
            .expect("answered");
        assert_eq!(r.code, ResponseCode::SUCCESS, "{}", r.remark_str());
        (broker, client, addr)
    });
    let mut group = c.benchmark_group("send");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send 1 KiB, one at a time", |b| {
        b.to_async(&rt).iter(|| send(&client, &addr, 0))
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("send 1 KiB, 64 in flight", |b| {
        b.to_async(&rt)
            .iter(|| join_all((0..64).map(|i| send(&client, &addr, i % 8))))
    });
    group.finish();
    rt.block_on(async {
        client.shutdown().await;
        broker.shutdown().await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
