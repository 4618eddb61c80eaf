//! Quick start: consume `TopicTest` until Ctrl-C.
//!
//! ```sh
//! NAMESRV_ADDR=127.0.0.1:9876 cargo run -p apogee-client --example quickstart_consumer
//! ```

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::ClientConfig;
use remoting::broker_headers::ConsumeFromWhere;

#[tokio::main]
async fn main() -> Result<(), client::ClientError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let consumer = PushConsumer::start(
        ClientConfig::new(&namesrv)?,
        PushConsumerConfig::new("please_rename_unique_group_name_4")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset),
        &[("TopicTest", "*")],
        MessageListener::concurrently(|msgs, _ctx| {
            for m in msgs {
                println!(
                    "{} queueOffset={} reconsumeTimes={} body={}",
                    m.msg_id(),
                    m.queue_offset,
                    m.reconsume_times,
                    String::from_utf8_lossy(&m.message.body)
                );
            }
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }),
    )
    .await?;
    println!("consumer {} started; Ctrl-C to stop", consumer.client_id());
    let _ = tokio::signal::ctrl_c().await;
    consumer.shutdown().await;
    Ok(())
}
