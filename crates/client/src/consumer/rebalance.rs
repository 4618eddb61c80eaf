//! `Rebalancer`: the one rebalance round of the push and lite-pull consumers (upstream
//! `RebalanceImpl.doRebalance`), and the background loop that runs it.
//!
//! A round takes each subscribed topic in turn: its readable queues (fetching the route when
//! none is cached), the group's member list (clustering only), the strategy's share for this
//! client, and hands that share to the consumer (`QueueOwner::assign`), which releases the
//! queues it no longer owns and starts the new ones. Queues of topics no longer subscribed
//! are released. The rules both consumers share live here and nowhere else:
//! - a round is incomplete when any step of any topic failed (no route, no member list), and
//!   the next one comes after [`REBALANCE_RETRY_DELAY`] instead of the full interval;
//! - the assignment changed when the SET of owned queues changed (a swap of queues with the
//!   same count is a change), and a change sends a heartbeat at once, so brokers see the new
//!   subscription before the next periodic one.
//!
//! The cluster is reached through `RebalanceCluster` and the consumer through
//! `QueueOwner`, so rounds can be tested with fixed routes and member lists.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use remoting::broker_headers::{MessageModel, MessageQueue};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::allocate::AllocateStrategy;
use super::queues::group_consumer_ids;
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;

/// Pause before the next rebalance after one that could not finish (a topic without a
/// route yet, such as a retry topic the broker has just created, or no member list).
pub const REBALANCE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What a round reads from the cluster. [`ClientInstance`] is the real one.
pub(crate) trait RebalanceCluster: Send + Sync {
    /// The readable queues of `topic`, fetching its route when none is cached; an error when
    /// the topic has no route.
    fn topic_queues<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<BTreeSet<MessageQueue>>>;
    /// The client ids of `group`'s consumers, sorted and deduplicated.
    fn consumer_ids<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Sends a heartbeat to every known broker.
    fn send_heartbeats(&self) -> BoxFuture<'_, ()>;
}

impl RebalanceCluster for ClientInstance {
    fn topic_queues<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<BTreeSet<MessageQueue>>> {
        Box::pin(async move {
            if self.routes.route(topic).is_none() {
                self.update_route(topic).await?;
            }
            self.routes
                .subscribe_queues(topic)
                .ok_or_else(|| ClientError::NoRoute(topic.to_string()))
        })
    }

    fn consumer_ids<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(group_consumer_ids(self, topic, group))
    }

    fn send_heartbeats(&self) -> BoxFuture<'_, ()> {
        Box::pin(ClientInstance::send_heartbeats(self))
    }
}

/// The consumer side of a round.
pub(crate) trait QueueOwner: Send + Sync {
    /// The queues owned now, of every topic.
    fn owned(&self) -> BTreeSet<MessageQueue>;
    /// Owns exactly `mine` among `topic`'s queues: releases the others and starts the new
    /// ones. A new queue that cannot start now (no lock, no start offset) is left out; the
    /// next round tries again.
    fn assign<'a>(&'a self, topic: &'a str, mine: &'a BTreeSet<MessageQueue>) -> BoxFuture<'a, ()>;
}

/// One consumer's rebalance settings: whose share to compute and how.
pub(crate) struct Rebalancer {
    group: String,
    client_id: String,
    model: MessageModel,
    strategy: Arc<dyn AllocateStrategy>,
}

impl Rebalancer {
    pub fn new(
        group: &str,
        client_id: &str,
        model: MessageModel,
        strategy: Arc<dyn AllocateStrategy>,
    ) -> Self {
        Rebalancer {
            group: group.to_string(),
            client_id: client_id.to_string(),
            model,
            strategy,
        }
    }

    /// The queues of `topic` this client should own: all of them when broadcasting, else the
    /// strategy's share among the group's members.
    async fn allocate(
        &self,
        cluster: &impl RebalanceCluster,
        topic: &str,
    ) -> Result<BTreeSet<MessageQueue>> {
        let all = cluster.topic_queues(topic).await?;
        if self.model == MessageModel::Broadcasting {
            return Ok(all);
        }
        let cids = cluster.consumer_ids(topic, &self.group).await?;
        let mq_all: Vec<MessageQueue> = all.into_iter().collect();
        Ok(self
            .strategy
            .allocate(&self.group, &self.client_id, &mq_all, &cids)
            .into_iter()
            .collect())
    }

    /// One round over `topics` (the subscribed ones): assigns each topic's share, releases
    /// queues of other topics, and sends heartbeats when the set of owned queues changed.
    /// Returns whether every step of every topic succeeded.
    pub async fn round(
        &self,
        cluster: &impl RebalanceCluster,
        owner: &impl QueueOwner,
        topics: &[String],
    ) -> bool {
        let mut complete = true;
        let mut changed = false;
        for topic in topics {
            match self.allocate(cluster, topic).await {
                Ok(mine) => changed |= assign_and_compare(owner, topic, &mine).await,
                Err(e) => {
                    complete = false;
                    warn!(group = %self.group, topic, error = %e, "rebalance failed; retrying soon");
                }
            }
        }
        let stale: BTreeSet<String> = owner
            .owned()
            .into_iter()
            .map(|mq| mq.topic)
            .filter(|t| !topics.contains(t))
            .collect();
        for topic in stale {
            changed |= assign_and_compare(owner, &topic, &BTreeSet::new()).await;
        }
        if changed {
            cluster.send_heartbeats().await;
        }
        complete
    }
}

/// Assigns `mine` to `owner` for `topic`; returns whether the set of `topic`'s owned queues
/// changed.
async fn assign_and_compare(
    owner: &impl QueueOwner,
    topic: &str,
    mine: &BTreeSet<MessageQueue>,
) -> bool {
    let of_topic = |owned: BTreeSet<MessageQueue>| -> BTreeSet<MessageQueue> {
        owned.into_iter().filter(|mq| mq.topic == topic).collect()
    };
    let before = of_topic(owner.owned());
    owner.assign(topic, mine).await;
    before != of_topic(owner.owned())
}

/// How long to wait before the next rebalance: `interval`, or [`REBALANCE_RETRY_DELAY`]
/// when the last one was incomplete (upstream waits the full 20 s).
pub(crate) fn rebalance_wait(complete: bool, interval: Duration) -> Duration {
    if complete {
        interval
    } else {
        interval.min(REBALANCE_RETRY_DELAY)
    }
}

/// A consumer that rebalances in the background with [`rebalance_loop`].
pub(crate) trait Rebalancing: Send + Sync + 'static {
    /// Runs one round; returns whether it was complete.
    fn rebalance_round(self: Arc<Self>) -> BoxFuture<'static, bool>;
    /// The pause between complete rounds.
    fn rebalance_interval(&self) -> Duration;
    /// Notified to start a round at once (NOTIFY_CONSUMER_IDS_CHANGED, a new subscription).
    fn rebalance_requested(&self) -> &Notify;
}

/// Runs rounds until `stop` or until the consumer is gone: after each, waits the interval
/// ([`rebalance_wait`]) or until a round is requested.
pub(crate) async fn rebalance_loop<C: Rebalancing>(weak: Weak<C>, stop: CancellationToken) {
    loop {
        let Some(consumer) = weak.upgrade() else {
            return;
        };
        let complete = consumer.clone().rebalance_round().await;
        let interval = rebalance_wait(complete, consumer.rebalance_interval());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = consumer.rebalance_requested().notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use parking_lot::Mutex;

    use super::*;
    use crate::consumer::allocate::AllocateMessageQueueAveragely;

    /// Fixed routes and member lists; counts heartbeats.
    #[derive(Default)]
    struct FakeCluster {
        /// Readable queues by topic; a topic missing here has no route.
        queues: BTreeMap<String, BTreeSet<MessageQueue>>,
        /// Member list by topic; a topic missing here fails the lookup.
        cids: BTreeMap<String, Vec<String>>,
        heartbeats: Mutex<usize>,
    }

    impl RebalanceCluster for FakeCluster {
        fn topic_queues<'a>(
            &'a self,
            topic: &'a str,
        ) -> BoxFuture<'a, Result<BTreeSet<MessageQueue>>> {
            let r = self
                .queues
                .get(topic)
                .cloned()
                .ok_or_else(|| ClientError::NoRoute(topic.to_string()));
            Box::pin(async move { r })
        }

        fn consumer_ids<'a>(
            &'a self,
            topic: &'a str,
            _group: &'a str,
        ) -> BoxFuture<'a, Result<Vec<String>>> {
            let r = self
                .cids
                .get(topic)
                .cloned()
                .ok_or_else(|| ClientError::BrokerNotFound(format!("any broker of {topic}")));
            Box::pin(async move { r })
        }

        fn send_heartbeats(&self) -> BoxFuture<'_, ()> {
            *self.heartbeats.lock() += 1;
            Box::pin(async {})
        }
    }

    /// Owns what it is assigned, except queues listed in `refuse` (as a queue whose lock or
    /// start offset is not available).
    #[derive(Default)]
    struct FakeOwner {
        owned: Mutex<BTreeSet<MessageQueue>>,
        refuse: BTreeSet<MessageQueue>,
    }

    impl QueueOwner for FakeOwner {
        fn owned(&self) -> BTreeSet<MessageQueue> {
            self.owned.lock().clone()
        }

        fn assign<'a>(
            &'a self,
            topic: &'a str,
            mine: &'a BTreeSet<MessageQueue>,
        ) -> BoxFuture<'a, ()> {
            let mut owned = self.owned.lock();
            owned.retain(|mq| mq.topic != topic || mine.contains(mq));
            owned.extend(mine.iter().filter(|mq| !self.refuse.contains(*mq)).cloned());
            Box::pin(async {})
        }
    }

    fn mqs(topic: &str, ids: impl IntoIterator<Item = i32>) -> BTreeSet<MessageQueue> {
        ids.into_iter()
            .map(|i| MessageQueue::new(topic, "broker-a", i))
            .collect()
    }

    fn cids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn clustering(client_id: &str) -> Rebalancer {
        Rebalancer::new(
            "G",
            client_id,
            MessageModel::Clustering,
            Arc::new(AllocateMessageQueueAveragely),
        )
    }

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_failed_member_list_makes_the_round_incomplete() {
        // T1 rebalances; T2 has a route but its member list cannot be fetched.
        let cluster = FakeCluster {
            queues: [
                ("T1".into(), mqs("T1", 0..4)),
                ("T2".into(), mqs("T2", 0..4)),
            ]
            .into(),
            cids: [("T1".into(), cids(&["c1"]))].into(),
            ..Default::default()
        };
        let owner = FakeOwner::default();
        let complete = clustering("c1")
            .round(&cluster, &owner, &topics(&["T1", "T2"]))
            .await;
        assert!(
            !complete,
            "a failed member list must make the round incomplete"
        );
        assert_eq!(
            owner.owned(),
            mqs("T1", 0..4),
            "the other topic is still assigned"
        );
        assert_eq!(*cluster.heartbeats.lock(), 1);
    }

    #[tokio::test]
    async fn a_missing_route_makes_the_round_incomplete() {
        let cluster = FakeCluster::default();
        let owner = FakeOwner::default();
        assert!(
            !clustering("c1")
                .round(&cluster, &owner, &topics(&["T"]))
                .await
        );
        assert_eq!(*cluster.heartbeats.lock(), 0);
    }

    #[tokio::test]
    async fn a_swap_of_queues_with_the_same_count_sends_a_heartbeat() {
        // Owning queues 0 and 1; a new member ahead of this one moves it to 2 and 3.
        let cluster = FakeCluster {
            queues: [("T".into(), mqs("T", 0..4))].into(),
            cids: [("T".into(), cids(&["c0", "c1"]))].into(),
            ..Default::default()
        };
        let owner = FakeOwner {
            owned: Mutex::new(mqs("T", 0..2)),
            ..Default::default()
        };
        let complete = clustering("c1")
            .round(&cluster, &owner, &topics(&["T"]))
            .await;
        assert!(complete);
        assert_eq!(owner.owned(), mqs("T", 2..4));
        assert_eq!(
            *cluster.heartbeats.lock(),
            1,
            "a swap of queues is a change and must send a heartbeat"
        );
    }

    #[tokio::test]
    async fn an_unchanged_assignment_sends_no_heartbeat() {
        let cluster = FakeCluster {
            queues: [("T".into(), mqs("T", 0..4))].into(),
            cids: [("T".into(), cids(&["c0", "c1"]))].into(),
            ..Default::default()
        };
        let owner = FakeOwner {
            owned: Mutex::new(mqs("T", 0..2)),
            ..Default::default()
        };
        assert!(
            clustering("c0")
                .round(&cluster, &owner, &topics(&["T"]))
                .await
        );
        assert_eq!(owner.owned(), mqs("T", 0..2));
        assert_eq!(*cluster.heartbeats.lock(), 0);
    }

    #[tokio::test]
    async fn a_queue_that_cannot_start_is_no_change() {
        // The share is queue 0, which the consumer cannot start yet (say, not locked).
        let cluster = FakeCluster {
            queues: [("T".into(), mqs("T", 0..1))].into(),
            cids: [("T".into(), cids(&["c0"]))].into(),
            ..Default::default()
        };
        let owner = FakeOwner {
            refuse: mqs("T", 0..1),
            ..Default::default()
        };
        assert!(
            clustering("c0")
                .round(&cluster, &owner, &topics(&["T"]))
                .await
        );
        assert!(owner.owned().is_empty());
        assert_eq!(*cluster.heartbeats.lock(), 0);
    }

    #[tokio::test]
    async fn queues_of_unsubscribed_topics_are_released() {
        let cluster = FakeCluster {
            queues: [("T".into(), mqs("T", 0..2))].into(),
            cids: [("T".into(), cids(&["c0"]))].into(),
            ..Default::default()
        };
        let owner = FakeOwner {
            owned: Mutex::new(mqs("T", 0..2).into_iter().chain(mqs("Old", 0..2)).collect()),
            ..Default::default()
        };
        assert!(
            clustering("c0")
                .round(&cluster, &owner, &topics(&["T"]))
                .await
        );
        assert_eq!(owner.owned(), mqs("T", 0..2));
        assert_eq!(*cluster.heartbeats.lock(), 1);
    }

    #[tokio::test]
    async fn broadcasting_owns_every_queue_without_a_member_list() {
        let cluster = FakeCluster {
            queues: [("T".into(), mqs("T", 0..4))].into(),
            ..Default::default()
        };
        let owner = FakeOwner::default();
        let rebalancer = Rebalancer::new(
            "G",
            "c0",
            MessageModel::Broadcasting,
            Arc::new(AllocateMessageQueueAveragely),
        );
        assert!(rebalancer.round(&cluster, &owner, &topics(&["T"])).await);
        assert_eq!(owner.owned(), mqs("T", 0..4));
        assert_eq!(*cluster.heartbeats.lock(), 1);
    }

    #[test]
    fn an_incomplete_round_is_retried_soon() {
        let interval = Duration::from_secs(20);
        assert_eq!(rebalance_wait(true, interval), interval);
        assert_eq!(rebalance_wait(false, interval), REBALANCE_RETRY_DELAY);
        let short = Duration::from_millis(200);
        assert_eq!(rebalance_wait(false, short), short);
    }
}
