//! Transactional sends against a real broker: commit, rollback, and an unknown outcome
//! resolved by the broker's check-back.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client::consumer::push::{
    ConsumeConcurrentlyStatus, MessageListener, PushConsumer, PushConsumerConfig,
};
use client::{LocalTransactionState, ProducerConfig, TransactionListener, TransactionProducer};
use remoting::broker_headers::ConsumeFromWhere;
use remoting::message::{Message, MessageConst, MessageExt};
use support::{collect, eventually, Cluster};
use tokio::sync::mpsc;

struct Local {
    checks: AtomicUsize,
}

impl TransactionListener for Local {
    fn execute_local_transaction(&self, msg: &Message) -> LocalTransactionState {
        match &msg.body[..] {
            b"commit" => LocalTransactionState::CommitMessage,
            b"rollback" => LocalTransactionState::RollbackMessage,
            _ => LocalTransactionState::Unknow,
        }
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        assert_eq!(&msg.message.body[..], b"unknown");
        self.checks.fetch_add(1, Ordering::SeqCst);
        LocalTransactionState::CommitMessage
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_rollback_and_check_back() {
    let cluster = Cluster::start().await;
    cluster.create_topic("TxTopic", 2).await;
    let listener = Arc::new(Local {
        checks: AtomicUsize::new(0),
    });
    let producer = TransactionProducer::start(
        cluster.client_config(),
        ProducerConfig::new("PG_tx"),
        listener.clone(),
    )
    .await
    .unwrap();
    for (body, state) in [
        ("commit", LocalTransactionState::CommitMessage),
        ("rollback", LocalTransactionState::RollbackMessage),
        ("unknown", LocalTransactionState::Unknow),
    ] {
        let r = producer
            .send_message_in_transaction(Message::new("TxTopic", body))
            .await
            .unwrap();
        assert_eq!(r.local_transaction_state, state);
        assert!(r.send_result.transaction_id.is_some());
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = PushConsumer::start(
        cluster.client_config(),
        PushConsumerConfig::new("CG_tx")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset),
        &[("TxTopic", "*")],
        MessageListener::concurrently(move |msgs, _| {
            for m in msgs {
                tx.send(m.clone()).unwrap();
            }
            ConsumeConcurrentlyStatus::ConsumeSuccess
        }),
    )
    .await
    .unwrap();
    let got = collect(&mut rx, 2).await;
    let bodies: BTreeSet<Vec<u8>> = got.iter().map(|m| m.message.body.to_vec()).collect();
    assert_eq!(
        bodies,
        [b"commit".to_vec(), b"unknown".to_vec()]
            .into_iter()
            .collect()
    );
    for m in &got {
        // A committed message is an ordinary one for consumers.
        assert_eq!(m.message.topic, "TxTopic");
        assert!(m
            .message
            .property(MessageConst::PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)
            .is_some());
    }
    eventually("a check-back", || async {
        listener.checks.load(Ordering::SeqCst) >= 1
    })
    .await;
    // The rolled-back message never arrives.
    assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv())
        .await
        .is_err());
    consumer.shutdown().await;
    producer.shutdown().await;
    cluster.stop().await;
}
