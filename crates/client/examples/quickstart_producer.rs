//! Quick start: send 10 messages to `TopicTest`.
//!
//! ```sh
//! NAMESRV_ADDR=127.0.0.1:9876 cargo run -p apogee-client --example quickstart_producer
//! ```

use client::{ClientConfig, Producer, ProducerConfig};
use remoting::message::Message;

#[tokio::main]
async fn main() -> Result<(), client::ClientError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let namesrv = std::env::var("NAMESRV_ADDR").unwrap_or_else(|_| "127.0.0.1:9876".into());
    let producer = Producer::start(
        ClientConfig::new(&namesrv)?,
        ProducerConfig::new("please_rename_unique_group_name"),
    )
    .await?;
    for i in 0..10 {
        let msg = Message::new("TopicTest", format!("Hello RocketMQ {i}"))
            .with_tags("TagA")
            .with_keys([format!("key-{i}")]);
        let result = producer.send(msg).await?;
        println!(
            "{:?} msgId={} offsetMsgId={} {} queueOffset={}",
            result.send_status,
            result.msg_id,
            result.offset_msg_id,
            result.message_queue,
            result.queue_offset
        );
    }
    producer.shutdown().await;
    Ok(())
}
