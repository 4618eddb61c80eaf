//! Queue-level steps shared by the push, pull and lite-pull consumers: the group's member
//! list, the broker to ask about a queue, where a newly owned queue starts, which broker a queue is
//! pulled from next (`PullFrom`), turning a raw
//! pull answer into a [`PullResult`], and the running-info properties they all report.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use remoting::broker_headers::{
    ConsumeFromWhere, ConsumeType, ConsumerRunningInfo, MessageQueue, SubscriptionData,
};
use remoting::message::{MessageConst, MessageExt};
use remoting::protocol::MASTER_ID;
use remoting::{BrokerAddr, ResponseCode};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::offset_store::{OffsetStore, ReadOffsetType};
use super::subscription::matches;
use crate::api::RawPull;
use crate::error::{ClientError, Result};
use crate::instance::ClientInstance;
use crate::route::{find_subscribe_addr, FoundBroker};
use crate::RETRY_GROUP_TOPIC_PREFIX;

/// Sleeps `d`, or less when `stop` is cancelled first (a pull loop's pause must not delay
/// shutdown).
pub(crate) async fn pause_unless_stopped(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// Checks the settings every pulling consumer shares: `pullBatchSize` in 1..=1024 and a
/// positive rebalance interval.
pub(crate) fn check_pull_settings(
    pull_batch_size: i32,
    rebalance_interval: Duration,
) -> Result<()> {
    if !(1..=1024).contains(&pull_batch_size) {
        return Err(ClientError::Config(
            "pullBatchSize must be in 1..=1024".into(),
        ));
    }
    if rebalance_interval.is_zero() {
        return Err(ClientError::Config(
            "the rebalance interval must be positive".into(),
        ));
    }
    Ok(())
}

/// A [`ConsumerRunningInfo`] with the properties every consumer reports: how it consumes,
/// when it started and its group.
pub(crate) fn running_info(
    consume_type: ConsumeType,
    started_at: i64,
    group: &str,
) -> ConsumerRunningInfo {
    let mut info = ConsumerRunningInfo::default();
    let p = &mut info.properties;
    p.insert(
        ConsumerRunningInfo::PROP_CONSUME_TYPE.into(),
        consume_type.name().into(),
    );
    p.insert(
        ConsumerRunningInfo::PROP_CONSUMER_START_TIMESTAMP.into(),
        started_at.to_string(),
    );
    p.insert("consumerGroup".into(), group.to_string());
    info
}

/// The consumer ids of `group`, sorted and deduplicated, from a broker of `topic` (its
/// master when there is one), as every member must see the same list.
pub(crate) async fn group_consumer_ids(
    instance: &ClientInstance,
    topic: &str,
    group: &str,
) -> Result<Vec<String>> {
    let route = instance
        .routes
        .route(topic)
        .ok_or_else(|| ClientError::NoRoute(topic.to_string()))?;
    let mut last = None;
    for bd in &route.broker_datas {
        let Some(found) = find_subscribe_addr(bd, MASTER_ID, false) else {
            continue;
        };
        match instance.api.consumer_id_list(&found.addr, group).await {
            Ok(mut ids) if !ids.is_empty() => {
                ids.sort();
                ids.dedup();
                return Ok(ids);
            }
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::BrokerNotFound(format!("any broker of {topic}"))))
}

/// The broker answering offset questions about `mq`: its group's master, else any broker
/// of the group (refreshing the route once when none is known).
pub(crate) async fn admin_broker(
    instance: &ClientInstance,
    mq: &MessageQueue,
) -> Result<BrokerAddr> {
    let find = || {
        instance
            .routes
            .broker_data(&mq.topic, &mq.broker_name)
            .and_then(|bd| find_subscribe_addr(&bd, MASTER_ID, false))
    };
    if find().is_none() {
        instance.update_route(&mq.topic).await?;
    }
    find()
        .map(|f| f.addr)
        .ok_or_else(|| ClientError::BrokerNotFound(mq.broker_name.clone()))
}

/// Where each queue is pulled from next: the broker id the last pull answer suggested
/// (`suggestWhichBrokerId`), shared by the pulling consumers.
#[derive(Default)]
pub(crate) struct PullFrom(Mutex<HashMap<MessageQueue, i64>>);

impl PullFrom {
    /// The broker to pull `mq` from, by the cached route: the suggested one, else the
    /// group's master, else any broker of the group. `None` when the route does not know
    /// the group (the caller refreshes it).
    pub fn broker(&self, instance: &ClientInstance, mq: &MessageQueue) -> Option<FoundBroker> {
        let suggested = self.0.lock().get(mq).copied().unwrap_or(MASTER_ID);
        instance
            .routes
            .broker_data(&mq.topic, &mq.broker_name)
            .and_then(|bd| find_subscribe_addr(&bd, suggested, false))
    }

    /// Remembers the broker a pull answer suggested for `mq`.
    pub fn remember(&self, mq: &MessageQueue, suggested: i64) {
        self.0.lock().insert(mq.clone(), suggested);
    }
}

/// Where a newly owned queue starts (upstream `computePullFromWhereWithException`): the
/// stored offset, else by `from_where` (a retry topic starts at 0 unless the store knows).
pub(crate) async fn start_offset(
    instance: &ClientInstance,
    offsets: &OffsetStore,
    mq: &MessageQueue,
    from_where: ConsumeFromWhere,
    timestamp: i64,
) -> Result<i64> {
    if let Some(o) = offsets
        .read_offset(mq, ReadOffsetType::ReadFromStore)
        .await?
        .filter(|o| *o >= 0)
    {
        return Ok(o);
    }
    let retry = mq.topic.starts_with(RETRY_GROUP_TOPIC_PREFIX);
    let api = &instance.api;
    match from_where {
        ConsumeFromWhere::ConsumeFromFirstOffset => Ok(0),
        _ if retry => Ok(0),
        ConsumeFromWhere::ConsumeFromTimestamp => {
            api.search_offset(&admin_broker(instance, mq).await?, mq, timestamp)
                .await
        }
        _ => api.max_offset(&admin_broker(instance, mq).await?, mq).await,
    }
}

/// Outcome of one pull (`PullStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages were found (some may have been filtered out).
    Found,
    /// Nothing new at this offset.
    NoNewMsg,
    /// Messages were there, but none matched the subscription.
    NoMatchedMsg,
    /// The offset is outside the queue; start again at `next_begin_offset`.
    OffsetIllegal,
}

/// Result of one pull (`PullResult`).
#[derive(Clone, Debug)]
pub struct PullResult {
    pub pull_status: PullStatus,
    pub next_begin_offset: i64,
    pub min_offset: i64,
    pub max_offset: i64,
    /// Messages that matched the subscription, in queue order.
    pub msg_found_list: Vec<MessageExt>,
}

/// Decodes a pull answer, keeps the messages `sub` matches, and stamps them with the
/// queue's `MIN_OFFSET` / `MAX_OFFSET` (upstream `processPullResult`). On a retry topic of
/// `retry_of_group`, the original topic (`RETRY_TOPIC`) is put back on each message.
pub(crate) fn process_pull(
    mq: &MessageQueue,
    raw: RawPull,
    sub: &SubscriptionData,
    retry_of_group: Option<&str>,
) -> PullResult {
    let h = raw.header;
    let (pull_status, msgs) = match raw.code {
        ResponseCode::SUCCESS => {
            let mut msgs = match MessageExt::decode_all_shared(&raw.body, true) {
                Ok(m) => m,
                Err(e) => {
                    error!(queue = %mq, error = %e, "undecodable pull body; skipping to nextBeginOffset");
                    Vec::new()
                }
            };
            msgs.retain(|m| matches(sub, m));
            let status = if msgs.is_empty() {
                PullStatus::NoMatchedMsg
            } else {
                PullStatus::Found
            };
            (status, msgs)
        }
        ResponseCode::PULL_NOT_FOUND => (PullStatus::NoNewMsg, Vec::new()),
        ResponseCode::PULL_RETRY_IMMEDIATELY => (PullStatus::NoMatchedMsg, Vec::new()),
        _ => (PullStatus::OffsetIllegal, Vec::new()),
    };
    let retry = retry_of_group.map(crate::retry_topic);
    let mut msgs = msgs;
    for m in &mut msgs {
        let p = &mut m.message.properties;
        p.insert(MessageConst::PROPERTY_MIN_OFFSET, h.min_offset.to_string());
        p.insert(MessageConst::PROPERTY_MAX_OFFSET, h.max_offset.to_string());
        if retry.as_deref() == Some(m.message.topic.as_str()) {
            if let Some(original) = m.message.property(MessageConst::PROPERTY_RETRY_TOPIC) {
                m.message.topic = original.to_string();
            }
        }
    }
    PullResult {
        pull_status,
        next_begin_offset: h.next_begin_offset,
        min_offset: h.min_offset,
        max_offset: h.max_offset,
        msg_found_list: msgs,
    }
}
