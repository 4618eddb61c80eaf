//! Transactional producer (upstream `TransactionMQProducer`): a half message is sent with
//! `TRAN_MSG=true` (invisible to consumers), the local transaction runs, and a oneway
//! END_TRANSACTION commits or rolls it back. When the outcome was unknown, the broker later
//! asks (CHECK_TRANSACTION_STATE) and the listener's check answers.

use std::sync::Arc;

use remoting::broker_headers::{CheckTransactionStateRequestHeader, EndTransactionRequestHeader};
use remoting::message::{decode_message_id, Message, MessageConst, MessageExt, MessageSysFlag};
use remoting::BrokerAddr;
use tracing::{error, warn};

use super::{Producer, ProducerConfig, SendResult, SendStatus};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::instance::{ClientInstance, TransactionCheckHandle};

/// Outcome of a local transaction (`LocalTransactionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalTransactionState {
    CommitMessage,
    RollbackMessage,
    /// Not known yet: the broker will ask again later.
    Unknow,
}

impl LocalTransactionState {
    /// The END_TRANSACTION `commitOrRollback` value.
    pub fn commit_or_rollback(self) -> i32 {
        match self {
            LocalTransactionState::CommitMessage => MessageSysFlag::TRANSACTION_COMMIT_TYPE,
            LocalTransactionState::RollbackMessage => MessageSysFlag::TRANSACTION_ROLLBACK_TYPE,
            LocalTransactionState::Unknow => MessageSysFlag::TRANSACTION_NOT_TYPE,
        }
    }
}

/// The application's side of transactions.
pub trait TransactionListener: Send + Sync + 'static {
    /// Runs the local transaction after the half message is stored.
    fn execute_local_transaction(&self, msg: &Message) -> LocalTransactionState;
    /// Answers the broker's check of a half message whose outcome it does not know.
    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState;
}

/// Result of [`TransactionProducer::send_message_in_transaction`].
#[derive(Clone, Debug)]
pub struct TransactionSendResult {
    pub send_result: SendResult,
    pub local_transaction_state: LocalTransactionState,
}

/// A started transactional producer.
#[derive(Clone)]
pub struct TransactionProducer {
    producer: Producer,
    listener: Arc<dyn TransactionListener>,
}

struct Checker {
    instance: std::sync::Weak<ClientInstance>,
    group: String,
    listener: Arc<dyn TransactionListener>,
}

impl TransactionCheckHandle for Checker {
    fn check_transaction_state(
        &self,
        broker: BrokerAddr,
        header: CheckTransactionStateRequestHeader,
        msg: MessageExt,
    ) {
        let Some(instance) = self.instance.upgrade() else {
            return;
        };
        let listener = self.listener.clone();
        let group = self.group.clone();
        instance.tasks.clone().spawn(async move {
            let state = listener.check_local_transaction(&msg);
            let msg_id = msg
                .message
                .uniq_key()
                .map(str::to_string)
                .unwrap_or_else(|| msg.offset_msg_id.clone());
            let end = EndTransactionRequestHeader {
                topic: Some(msg.message.topic.clone()),
                producer_group: group,
                tran_state_table_offset: header.tran_state_table_offset,
                commit_log_offset: header.commit_log_offset,
                commit_or_rollback: state.commit_or_rollback(),
                from_transaction_check: true,
                msg_id,
                transaction_id: header.transaction_id.clone(),
                bname: header.bname.clone(),
            };
            if state != LocalTransactionState::CommitMessage {
                warn!(?state, msg_id = %end.msg_id, "transaction check did not commit");
            }
            if let Err(e) = instance
                .api
                .end_transaction_oneway(&broker, &end, None)
                .await
            {
                error!(%broker, error = %e, "END_TRANSACTION after a check failed");
            }
        });
    }
}

impl TransactionProducer {
    /// Starts a transactional producer whose half messages are checked with `listener`.
    pub async fn start(
        client: ClientConfig,
        config: ProducerConfig,
        listener: Arc<dyn TransactionListener>,
    ) -> Result<Self> {
        let instance = ClientInstance::new(client)?;
        instance.set_transaction_checker(Arc::new(Checker {
            instance: Arc::downgrade(&instance),
            group: config.producer_group.clone(),
            listener: listener.clone(),
        }));
        let producer = Producer::start_on(instance, config)?;
        Ok(TransactionProducer { producer, listener })
    }

    /// The underlying producer, for ordinary sends.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends `msg` as a half message, runs the local transaction, and ends it.
    pub async fn send_message_in_transaction(
        &self,
        mut msg: Message,
    ) -> Result<TransactionSendResult> {
        if msg.delay_time_level() > 0 {
            return Err(ClientError::InvalidMessage(
                "transactional messages cannot be delayed".into(),
            ));
        }
        let engine = self.producer.engine();
        msg.properties
            .insert(MessageConst::PROPERTY_TRANSACTION_PREPARED, "true");
        msg.properties.insert(
            MessageConst::PROPERTY_PRODUCER_GROUP,
            engine.config().producer_group.clone(),
        );
        let send_result = self.producer.send(msg.clone()).await?;
        let state = match send_result.send_status {
            SendStatus::SendOk => {
                if let Some(tid) = send_result
                    .transaction_id
                    .as_deref()
                    .filter(|t| !t.is_empty())
                {
                    msg.properties
                        .insert(MessageConst::PROPERTY_TRANSACTION_ID, tid.to_string());
                }
                self.listener.execute_local_transaction(&msg)
            }
            _ => LocalTransactionState::RollbackMessage,
        };
        if let Err(e) = self.end_transaction(&msg, &send_result, state).await {
            warn!(error = %e, "END_TRANSACTION failed; the broker will check back");
        }
        // Upstream's transaction id is the message's UNIQ_KEY when the broker names none.
        let mut send_result = send_result;
        if send_result.transaction_id.is_none() {
            send_result.transaction_id = Some(send_result.msg_id.clone());
        }
        Ok(TransactionSendResult {
            send_result,
            local_transaction_state: state,
        })
    }

    async fn end_transaction(
        &self,
        msg: &Message,
        r: &SendResult,
        state: LocalTransactionState,
    ) -> Result<()> {
        let id = if r.offset_msg_id.is_empty() {
            &r.msg_id
        } else {
            &r.offset_msg_id
        };
        let (_, commit_log_offset) = decode_message_id(id)?;
        let engine = self.producer.engine();
        let broker_name = &r.message_queue.broker_name;
        let addr = engine
            .instance()
            .routes
            .master_addr(broker_name)
            .ok_or_else(|| ClientError::BrokerNotFound(broker_name.clone()))?;
        let header = EndTransactionRequestHeader {
            topic: Some(msg.topic.clone()),
            producer_group: engine.config().producer_group.clone(),
            tran_state_table_offset: r.queue_offset,
            commit_log_offset,
            commit_or_rollback: state.commit_or_rollback(),
            from_transaction_check: false,
            msg_id: r.msg_id.clone(),
            transaction_id: r.transaction_id.clone(),
            bname: Some(broker_name.clone()),
        };
        engine
            .instance()
            .api
            .end_transaction_oneway(&addr, &header, None)
            .await
    }

    /// Shuts the producer down.
    pub async fn shutdown(&self) {
        self.producer.shutdown().await;
    }
}
