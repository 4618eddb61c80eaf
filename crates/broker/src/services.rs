//! [`BrokerServices`]: what a request handler works with — the shared [`BrokerContext`] and
//! the broker's services, each the one owner of its job:
//!
//! | service | module | owns |
//! |---|---|---|
//! | send policy | [`crate::send_policy`] | topic auto-create, retry / DLQ topic rules, half messages, delay levels of a send |
//! | retry / DLQ | [`crate::retry`] | CONSUMER_SEND_MSG_BACK, the acting master's forward |
//! | delay | [`crate::schedule`] | delay levels, delivery progress, delivery |
//! | timer messages | [`crate::timer`] | timer properties of a send, the timer wheel, its checkpoint, delivery |
//! | transactions | [`crate::transaction`] | half messages resolved, END_TRANSACTION, checks |
//! | POP | [`crate::pop`] | pop checkpoints, acks, FIFO batches, the revive log and revive task |
//! | cluster | [`crate::cluster`] | the cluster map, sending to a live master of another group |
//! | membership | [`crate::membership`] | telling consumer groups their membership changed |
//! | registration | [`crate::register`] | registering with the NameServers |
//! | replication | [`crate::ha`], [`crate::slave_sync`] | the HA stream, a slave's config sync |
//!
//! Services take the context (and the services they build on) as arguments; none knows the
//! request handlers.

use std::ops::Deref;
use std::sync::Arc;

use crate::context::BrokerContext;
use crate::pop::PopService;
use crate::schedule::DelayService;
use crate::timer::TimerService;
use crate::transaction::TransactionService;

/// The context and the services that keep state of their own.
pub(crate) struct BrokerServices {
    pub(crate) ctx: Arc<BrokerContext>,
    pub(crate) delay: Arc<DelayService>,
    pub(crate) timer: Arc<TimerService>,
    pub(crate) transactions: Arc<TransactionService>,
    pub(crate) pop: Arc<PopService>,
}

impl Deref for BrokerServices {
    type Target = BrokerContext;

    /// The shared context, so that handlers read `services.store`, `services.topics`, ...
    fn deref(&self) -> &BrokerContext {
        &self.ctx
    }
}
