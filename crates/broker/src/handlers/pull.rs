//! PULL_MESSAGE (11): check group, topic and queue, find the subscription (header or
//! heartbeat), read with the tag filter (hash in the ConsumeQueue unit, then the exact tag in
//! the record), commit the consumer's offset if asked, and answer; a pull that finds nothing
//! new and may be suspended is held by long polling until a message arrives or
//! `suspendTimeoutMillis` passes, then answered.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use remoting::broker_headers::{
    MessageModel, PullMessageRequestHeader, PullSysFlag, SubscriptionData, EXPRESSION_TYPE_TAG,
    SUB_ALL,
};
use remoting::message::{tags_hash_code, MessageConst};
use remoting::protocol::perm;
use remoting::server::Connection;
use remoting::{RemotingCommand, ResponseCode};
use store::message::{find_property, parse_record, Parsed};
use store::{GetMessageStatus, GetResult, MessageFilter};

use super::{header, HandlerError, Reply};
use crate::context::BrokerContext;
use crate::services::BrokerServices;

/// Longest hold of a pull, whatever the client asks.
const MAX_SUSPEND: Duration = Duration::from_secs(60);

/// How long a pull that found nothing new is held: the client's suspend timeout with long
/// polling, else `shortPollingTimeMills`; never more than [`MAX_SUSPEND`] (a config value of
/// `u64::MAX` ms overflowed the deadline and panicked the handler).
fn hold_time(c: &crate::config::BrokerConfig, suspend_timeout_millis: i64) -> Duration {
    let asked = if c.long_polling_enable {
        Duration::from_millis(suspend_timeout_millis.max(0) as u64)
    } else {
        Duration::from_millis(c.short_polling_time_mills)
    };
    asked.min(MAX_SUSPEND)
}

/// PULL_MESSAGE (11). A held pull whose connection closes gets no answer.
pub(super) async fn pull(
    state: Arc<BrokerServices>,
    conn: Connection,
    req: RemotingCommand,
) -> Reply {
    let h: PullMessageRequestHeader = header(&req)?;
    let filter = check(&state, &req, &h)?;
    if PullSysFlag::has_commit_offset(h.sys_flag) && !state.config().is_slave() {
        state
            .offsets
            .commit(&h.consumer_group, &h.topic, h.queue_id, h.commit_offset);
    }
    let mut got = read(&state, &h, &filter);
    let nothing_new = matches!(
        got.status,
        GetMessageStatus::OffsetOverflowOne | GetMessageStatus::OffsetFoundNull
    ) || (matches!(
        got.status,
        GetMessageStatus::NoMessageInQueue | GetMessageStatus::NoMatchedLogicQueue
    ) && h.queue_offset == 0);
    if nothing_new && PullSysFlag::has_suspend(h.sys_flag) {
        let (hold, max_held) = {
            let c = state.config();
            (
                hold_time(&c, h.suspend_timeout_millis),
                c.max_held_pull_requests,
            )
        };
        // Refused rather than answered "nothing new": that would have the client pull again
        // at once, while SYSTEM_BUSY makes it back off (upstream clients wait 3 s).
        let Some(_held) = state.waiters.try_hold(max_held) else {
            return Err(HandlerError::Busy(format!(
                "[OVERLOAD]system busy, start flow control for a while \
                 ({max_held} pulls held, maxHeldPullRequests)"
            )));
        };
        let store = state.store.clone();
        let (topic, queue, offset) = (h.topic.clone(), h.queue_id, h.queue_offset);
        let closed = conn.clone();
        state
            .waiters
            .wait_for_growth(
                &h.topic,
                h.queue_id,
                hold,
                move || store.max_offset(&topic, queue) > offset,
                async move { closed.closed().await },
                state.stop_signal(),
            )
            .await;
        if conn.is_closed() {
            return Ok(None);
        }
        got = read(&state, &h, &filter);
    }
    Ok(Some(respond(&state, &req, &h, got)))
}

/// Upstream's checks before a read, in its order; returns the filter to read with.
fn check(
    state: &BrokerContext,
    req: &RemotingCommand,
    h: &PullMessageRequestHeader,
) -> Result<TagFilter, HandlerError> {
    let (broker_perm, auto_group, slave_refuses) = {
        let c = state.config();
        (
            c.broker_permission,
            c.auto_create_subscription_group,
            c.is_slave() && !c.slave_read_enable,
        )
    };
    if slave_refuses {
        return Err(HandlerError::Busy(format!(
            "the slave[{}] pulling message is forbidden (slaveReadEnable=false)",
            state.broker_addr()
        )));
    }
    if !perm::is_readable(broker_perm) {
        return Err(HandlerError::NoPermission(format!(
            "the broker[{}] pulling message is forbidden",
            state.broker_addr()
        )));
    }
    let group = match state.groups.find(&h.consumer_group, auto_group) {
        Ok(Some(g)) => g,
        Ok(None) => {
            return Err(HandlerError::GroupNotExist(format!(
                "subscription group [{}] does not exist",
                h.consumer_group
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if !group.consume_enable {
        return Err(HandlerError::NoPermission(format!(
            "subscription group no permission, {}",
            h.consumer_group
        )));
    }
    let Some(topic) = state.topics.select(&h.topic) else {
        return Err(HandlerError::TopicNotExist(format!(
            "topic[{}] not exist, apply first please!",
            h.topic
        )));
    };
    if !perm::is_readable(topic.perm) {
        return Err(HandlerError::NoPermission(format!(
            "the topic[{}] pulling message is forbidden",
            h.topic
        )));
    }
    if h.queue_id < 0 || h.queue_id >= topic.read_queue_nums {
        return Err(HandlerError::System(format!(
            "queueId[{}] is illegal, topic:[{}] topicConfig.readQueueNums:[{}] consumer:[{}]",
            h.queue_id,
            h.topic,
            topic.read_queue_nums,
            req.ext("clientID").unwrap_or("")
        )));
    }
    let (expression_type, sub_string) = if PullSysFlag::has_subscription(h.sys_flag) {
        (
            h.expression_type
                .clone()
                .unwrap_or_else(|| EXPRESSION_TYPE_TAG.to_string()),
            h.subscription.clone().unwrap_or_default(),
        )
    } else {
        let Some(info) = state.consumers.group(&h.consumer_group) else {
            return Err(HandlerError::SubscriptionNotExist(
                "the consumer's group info not exist".into(),
            ));
        };
        if !group.consume_broadcast_enable && info.message_model == MessageModel::Broadcasting {
            return Err(HandlerError::NoPermission(format!(
                "the consumer group[{}] can not consume by broadcast way",
                h.consumer_group
            )));
        }
        let Some(sub): Option<&SubscriptionData> = info.subscriptions.get(&h.topic) else {
            return Err(HandlerError::SubscriptionNotExist(
                "the consumer's subscription not exist".into(),
            ));
        };
        if sub.sub_version < h.sub_version {
            return Err(HandlerError::SubscriptionNotLatest(
                "the consumer's subscription not latest".into(),
            ));
        }
        (sub.expression_type.clone(), sub.sub_string.clone())
    };
    if !expression_type.is_empty() && expression_type != EXPRESSION_TYPE_TAG {
        return Err(HandlerError::System(format!(
            "The broker does not support consumer to filter message by {expression_type}"
        )));
    }
    Ok(TagFilter::parse(&sub_string))
}

fn read(state: &BrokerContext, h: &PullMessageRequestHeader, filter: &TagFilter) -> GetResult {
    let max_count = h.max_msg_nums.clamp(1, 1024) as usize;
    let max_bytes = h
        .max_msg_bytes
        .filter(|b| *b > 0)
        .map(|b| b as usize)
        .unwrap_or(usize::MAX);
    let got = state.store.get_messages(
        &h.topic,
        h.queue_id,
        h.queue_offset,
        max_count,
        max_bytes,
        filter,
    );
    state
        .stats
        .got_messages
        .fetch_add(got.messages.len() as u64, Ordering::Relaxed);
    state.metrics.record_out(
        &h.topic,
        &h.consumer_group,
        got.messages.len() as u64,
        got.buffer_total_size as u64,
    );
    if state.metrics.enabled() {
        state.offsets.record_pull(
            &h.consumer_group,
            &h.topic,
            h.queue_id,
            got.next_begin_offset,
        );
    }
    got
}

fn status_name(s: GetMessageStatus) -> &'static str {
    match s {
        GetMessageStatus::Found => "FOUND",
        GetMessageStatus::NoMatchedMessage => "NO_MATCHED_MESSAGE",
        GetMessageStatus::MessageWasRemoving => "MESSAGE_WAS_REMOVING",
        GetMessageStatus::OffsetFoundNull => "OFFSET_FOUND_NULL",
        GetMessageStatus::OffsetOverflowBadly => "OFFSET_OVERFLOW_BADLY",
        GetMessageStatus::OffsetOverflowOne => "OFFSET_OVERFLOW_ONE",
        GetMessageStatus::OffsetTooSmall => "OFFSET_TOO_SMALL",
        GetMessageStatus::NoMatchedLogicQueue => "NO_MATCHED_LOGIC_QUEUE",
        GetMessageStatus::NoMessageInQueue => "NO_MESSAGE_IN_QUEUE",
    }
}

fn respond(
    state: &BrokerContext,
    req: &RemotingCommand,
    h: &PullMessageRequestHeader,
    got: GetResult,
) -> RemotingCommand {
    let code = match got.status {
        GetMessageStatus::Found => ResponseCode::SUCCESS,
        GetMessageStatus::MessageWasRemoving | GetMessageStatus::NoMatchedMessage => {
            ResponseCode::PULL_RETRY_IMMEDIATELY
        }
        GetMessageStatus::NoMatchedLogicQueue | GetMessageStatus::NoMessageInQueue => {
            if h.queue_offset != 0 {
                ResponseCode::PULL_OFFSET_MOVED
            } else {
                ResponseCode::PULL_NOT_FOUND
            }
        }
        GetMessageStatus::OffsetFoundNull | GetMessageStatus::OffsetOverflowOne => {
            ResponseCode::PULL_NOT_FOUND
        }
        GetMessageStatus::OffsetOverflowBadly | GetMessageStatus::OffsetTooSmall => {
            ResponseCode::PULL_OFFSET_MOVED
        }
    };
    let suggest = {
        let c = state.config();
        if got.suggest_pulling_from_slave && c.slave_read_enable && !c.is_slave() {
            1
        } else {
            0
        }
    };
    let mut resp = RemotingCommand::response_to(req, code, Some(status_name(got.status).into()))
        .with_ext("suggestWhichBrokerId", suggest)
        .with_ext("nextBeginOffset", got.next_begin_offset)
        .with_ext("maxOffset", got.max_offset)
        .with_ext("minOffset", got.min_offset);
    if code == ResponseCode::SUCCESS {
        let mut body = BytesMut::with_capacity(got.buffer_total_size);
        for m in &got.messages {
            body.extend_from_slice(m);
        }
        resp = resp.with_body(body.freeze());
    }
    resp
}

/// A TAG subscription: every message, or those whose tag is in the set.
pub(crate) struct TagFilter {
    /// `None`: every message (`*` or empty).
    tags: Option<BTreeSet<String>>,
    codes: BTreeSet<i64>,
}

impl TagFilter {
    /// Parses `TagA || TagB`, `*` or an empty expression.
    pub(crate) fn parse(expression: &str) -> TagFilter {
        let expression = expression.trim();
        if expression.is_empty() || expression == SUB_ALL {
            return TagFilter {
                tags: None,
                codes: BTreeSet::new(),
            };
        }
        let tags: BTreeSet<String> = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let codes = tags.iter().map(|t| tags_hash_code(t)).collect();
        TagFilter {
            tags: Some(tags),
            codes,
        }
    }
}

impl MessageFilter for TagFilter {
    fn matches_tags_code(&self, tags_code: i64) -> bool {
        self.tags.is_none() || self.codes.contains(&tags_code)
    }

    fn matches_record(&self, record: &[u8]) -> bool {
        let Some(tags) = &self.tags else {
            return true;
        };
        match parse_record(record, false) {
            Ok(Parsed::Message(v)) => find_property(&v.properties, MessageConst::PROPERTY_TAGS)
                .is_some_and(|t| tags.contains(t)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_bounded_whatever_the_config_or_client_says() {
        let mut c = crate::config::BrokerConfig::default();
        assert_eq!(hold_time(&c, i64::MAX), MAX_SUSPEND);
        assert_eq!(hold_time(&c, -5), Duration::ZERO);
        assert_eq!(hold_time(&c, 1_500), Duration::from_millis(1_500));
        c.long_polling_enable = false;
        c.short_polling_time_mills = u64::MAX;
        assert_eq!(hold_time(&c, 0), MAX_SUSPEND);
        c.short_polling_time_mills = 1_000;
        assert_eq!(hold_time(&c, i64::MAX), Duration::from_secs(1));
    }

    #[test]
    fn tag_expressions() {
        let all = TagFilter::parse("*");
        assert!(all.matches_tags_code(123));
        let ab = TagFilter::parse("TagA || TagB");
        assert!(ab.matches_tags_code(tags_hash_code("TagA")));
        assert!(!ab.matches_tags_code(tags_hash_code("TagC")));
    }
}
