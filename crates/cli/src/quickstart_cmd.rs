//! `apogee quickstart`: a guided first run. It starts a NameServer and a broker in this
//! process (temporary directory, ephemeral ports, short retry delays), creates a topic,
//! produces a few hundred messages, consumes them with a push consumer that fails one message
//! once so it comes back through the group's retry topic, prints what happened, and exits.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use broker::{Broker, BrokerConfig};
use clap::Args;
use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{ClientConfig, Producer, ProducerConfig};
use namesrv::{NameServer, NamesrvConfig};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::client::{ClientConfig as RemotingClientConfig, RemotingClient};
use remoting::message::Message;
use remoting::{BrokerAddr, ResponseCode};

const TOPIC: &str = "QuickStartTopic";
const GROUP: &str = "quickstart_consumer";
/// Delay levels of the embedded broker: every level 200 ms, so the retry shows up at once.
const FAST_DELAY_LEVELS: &str =
    "200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms";

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Messages to produce.
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// What the consumer saw.
#[derive(Default)]
struct Seen {
    first_delivery: HashSet<String>,
    retried: Vec<(String, i32, Instant)>,
    failed_at: Option<Instant>,
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("apogee-quickstart-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let namesrv = NameServer::start(NamesrvConfig {
        listen_port: 0,
        kv_config_path: dir.path().join("namesrv").join("kvConfig.json"),
        ..NamesrvConfig::default()
    })
    .await
    .context("cannot start the NameServer")?;
    let ns_addr = format!("127.0.0.1:{}", namesrv.local_addr().port());
    let broker = match Broker::start(BrokerConfig {
        broker_cluster_name: "QuickStartCluster".into(),
        broker_name: "broker-qs".into(),
        namesrv_addr: ns_addr.clone(),
        listen_port: 0,
        broker_ip1: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        store_path_root_dir: dir.path().join("store"),
        auto_create_topic_enable: true,
        auto_create_subscription_group: true,
        message_delay_level: FAST_DELAY_LEVELS.into(),
        ..BrokerConfig::default()
    })
    .await
    {
        Ok(b) => b,
        Err(e) => {
            namesrv.shutdown().await;
            return Err(e).context("cannot start the broker");
        }
    };
    println!(
        "1. Started an embedded NameServer at {ns_addr} and broker {} in {} ms (data in {})",
        broker.broker_addr(),
        started.elapsed().as_millis(),
        dir.path().display()
    );
    let result = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        walkthrough(&ns_addr, &broker.broker_addr(), args.messages),
    )
    .await;
    broker.shutdown().await;
    namesrv.shutdown().await;
    match result {
        Ok(r) => r?,
        Err(_) => bail!("quickstart did not finish within {} s", args.timeout),
    }
    println!(
        "Done in {:.2} s. Everything was in a temporary directory, now removed.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn walkthrough(ns_addr: &str, broker_addr: &str, count: usize) -> anyhow::Result<()> {
    // 2. Create the topic on the broker, as `apogee admin updateTopic` does.
    let addr = BrokerAddr::parse(broker_addr).context("bad broker address")?;
    let remoting = RemotingClient::new(RemotingClientConfig::default());
    let cmd = crate::admin::update_topic_command(TOPIC, 4, 4, 6, false);
    let resp = remoting.invoke(&addr, cmd, Duration::from_secs(3)).await?;
    remoting.shutdown().await;
    if resp.code != ResponseCode::SUCCESS {
        bail!("cannot create topic {TOPIC}: {}", resp.remark_str());
    }
    println!("2. Created topic {TOPIC} with 4 queues (apogee admin updateTopic -t {TOPIC} -b {broker_addr} -r 4 -w 4)");

    // 3. Produce.
    let client = ClientConfig::new(ns_addr)?.poll_name_server_interval(Duration::from_millis(500));
    let producer =
        Producer::start(client.clone(), ProducerConfig::new("quickstart_producer")).await?;
    // The broker registers the new topic with the NameServer in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.fetch_publish_queues(TOPIC).await.is_err() {
        if Instant::now() > deadline {
            bail!("the NameServer never learned about {TOPIC}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..count {
        let msg = Message::new(TOPIC, format!("Hello Apogee #{i}"))
            .with_tags(if i % 2 == 0 { "TagA" } else { "TagB" })
            .with_keys([format!("order-{i}")]);
        let p = producer.clone();
        sends.spawn(async move { p.send(msg).await });
        if sends.len() >= 16 {
            if let Some(r) = sends.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    println!(
        "3. Sent {count} messages (sync, 16 in flight) in {} ms",
        t0.elapsed().as_millis()
    );
    producer.shutdown().await;

    // 4. Consume, failing message #7 the first time.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener_seen = seen.clone();
    let listener = MessageListener::concurrently(move |msgs, _ctx| {
        let mut s = listener_seen.lock().unwrap_or_else(|e| e.into_inner());
        for m in msgs {
            let body = String::from_utf8_lossy(&m.message.body).into_owned();
            if m.reconsume_times > 0 {
                s.retried.push((body, m.reconsume_times, Instant::now()));
                continue;
            }
            if body.ends_with("#7") && s.failed_at.is_none() {
                s.failed_at = Some(Instant::now());
                return ConsumeConcurrentlyStatus::ReconsumeLater;
            }
            s.first_delivery.insert(body);
        }
        ConsumeConcurrentlyStatus::ConsumeSuccess
    });
    let t1 = Instant::now();
    let consumer = PushConsumer::start(
        client,
        PushConsumerConfig::new(GROUP)
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .rebalance_interval(Duration::from_millis(500)),
        &[(TOPIC, "*")],
        listener,
    )
    .await?;
    loop {
        {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if s.first_delivery.len() + 1 >= count && !s.retried.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await;
    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "4. Consumed {} messages in {} ms with consumer group {GROUP}",
        s.first_delivery.len() + 1,
        t1.elapsed().as_millis()
    );
    if let (Some(failed), Some((body, times, at))) = (s.failed_at, s.retried.first()) {
        println!(
            "5. \"{body}\" failed on first delivery (RECONSUME_LATER); the broker re-delivered it through %RETRY%{GROUP} {} ms later with reconsumeTimes={times}, and it succeeded",
            at.duration_since(failed).as_millis()
        );
    }
    Ok(())
}
