//! The retry / DLQ service behind CONSUMER_SEND_MSG_BACK (36): a consumer failed a message;
//! re-read it by its CommitLog offset and write it to `%RETRY%<group>` with a delay level (0
//! means 3 + reconsumeTimes), or to `%DLQ%<group>` (one queue) once `reconsumeTimes >=
//! maxReconsumeTimes` or when the delay level is negative. The copy carries `RECONSUME_TIME`
//! + 1, `ORIGIN_MESSAGE_ID` and `RETRY_TOPIC`.
//!
//! **Acting master.** On a slave — the acting master of its group while the master is gone
//! (NameServer `supportActingMaster`, broker `enableActingMaster`) — the retry copy goes with
//! SEND_MESSAGE_V2 to a live master of its cluster ([`crate::cluster`]), topic
//! `%RETRY%<group>`, carrying `RETRY_TOPIC`, `ORIGIN_MESSAGE_ID`, `DELAY` (the retry delay
//! level), `reconsumeTimes` + 1 and `maxReconsumeTimes`. The receiving master applies the one
//! DLQ rule (`reconsumeTimes > max` after the increment); a negative delay level (straight to
//! the DLQ) is sent with `maxReconsumeTimes` 0. With no live master anywhere, the answer is
//! SYSTEM_ERROR saying so, and the consumer falls back to its own re-send.

use rand::Rng;
use remoting::broker_headers::{ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader};
use remoting::message::{MessageConst, Properties};
use remoting::protocol::perm;
use store::MessageExt;

use crate::cluster::send_to_live_master;
use crate::context::{reput_inner, BrokerContext};
use crate::error::HandlerError;
use crate::schedule::DelayService;
use crate::subscription::SubscriptionGroupConfig;
use crate::topic::{dlq_topic, retry_topic};

/// Writes the retry (or DLQ) copy of the message a consumer of `h.group` failed; on a slave,
/// forwards it to a live master of the cluster ([`forward`]). Refusals carry upstream's
/// codes: SUBSCRIPTION_GROUP_NOT_EXIST, NO_PERMISSION, SYSTEM_ERROR.
pub(crate) async fn send_back(
    state: &BrokerContext,
    delay: &DelayService,
    h: &ConsumerSendMsgBackRequestHeader,
) -> Result<(), HandlerError> {
    let (slave, auto_group) = {
        let c = state.config();
        (c.is_slave(), c.auto_create_subscription_group)
    };
    let Some(group) = state.groups.find(&h.group, auto_group)? else {
        return Err(HandlerError::GroupNotExist(format!(
            "subscription group not exist, {}",
            h.group
        )));
    };
    if slave {
        return forward(state, h, &group).await;
    }
    if !state.writable() {
        return Err(HandlerError::NoPermission(format!(
            "the broker[{}] sending message is forbidden",
            state.broker_addr()
        )));
    }
    if group.retry_queue_nums <= 0 {
        return Ok(());
    }
    let mut topic = retry_topic(&h.group);
    let mut queue_id = rand::thread_rng().gen_range(0..group.retry_queue_nums);
    let retry_config = state.topics.create_if_missing(
        &topic,
        group.retry_queue_nums,
        perm::PERM_READ | perm::PERM_WRITE,
        0,
    )?;
    if !perm::is_writeable(retry_config.perm) {
        return Err(HandlerError::NoPermission(format!(
            "the topic[{topic}] sending message is forbidden"
        )));
    }
    let retry = Retry::prepare(state, h, &group)?;
    let mut props = retry.props;
    if retry.to_dlq {
        topic = dlq_topic(&h.group);
        queue_id = 0;
        state
            .topics
            .create_if_missing(&topic, 1, perm::PERM_READ | perm::PERM_WRITE, 0)?;
        tracing::info!(group = %h.group, msg_id = %retry.ext.msg_id(), "message moved to the DLQ");
    }
    let mut msg = reput_inner(&retry.ext, state.store_host());
    msg.topic = topic;
    msg.queue_id = queue_id;
    msg.reconsume_times = retry.ext.reconsume_times + 1;
    msg.properties = props.to_wire_string();
    if !retry.to_dlq {
        delay.to_schedule(&mut msg, &mut props, retry.delay_level);
    }
    state
        .put_acked(vec![msg])
        .await
        // Written is enough (as upstream's `isOk`): a flush or slave timeout must not make
        // the consumer send the message back a second time.
        .map_err(HandlerError::from)?;
    if retry.to_dlq {
        let origin = props
            .get(MessageConst::PROPERTY_RETRY_TOPIC)
            .unwrap_or(&retry.ext.topic);
        state.metrics.record_dlq(&h.group, origin);
    }
    Ok(())
}

/// The failed message re-read from the CommitLog and what its retry copy needs.
struct Retry {
    ext: MessageExt,
    /// Properties of the copy: `RETRY_TOPIC`, `ORIGIN_MESSAGE_ID`; no `WAIT` flag; no `DELAY`
    /// for the DLQ.
    props: Properties,
    to_dlq: bool,
    /// Delay level of a retry (0 already replaced by 3 + reconsumeTimes).
    delay_level: i32,
}

impl Retry {
    fn prepare(
        state: &BrokerContext,
        h: &ConsumerSendMsgBackRequestHeader,
        group: &SubscriptionGroupConfig,
    ) -> Result<Retry, HandlerError> {
        let ext = state
            .store
            .message_by_offset(h.offset)
            .and_then(|r| MessageExt::decode(&r).ok())
            .ok_or_else(|| {
                HandlerError::System(format!("look message by offset failed, {}", h.offset))
            })?;
        let mut props = Properties::parse(&ext.properties);
        if !props.contains(MessageConst::PROPERTY_RETRY_TOPIC) {
            props.insert(MessageConst::PROPERTY_RETRY_TOPIC, ext.topic.clone());
        }
        props.remove(MessageConst::PROPERTY_WAIT_STORE_MSG_OK);
        let max = h.max_reconsume_times.unwrap_or(group.retry_max_times);
        let mut delay_level = h.delay_level;
        let to_dlq = ext.reconsume_times >= max || delay_level < 0;
        if to_dlq {
            props.remove(MessageConst::PROPERTY_DELAY_TIME_LEVEL);
        } else if delay_level == 0 {
            delay_level = 3 + ext.reconsume_times;
        }
        let origin = props
            .get(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID)
            .map(str::to_string)
            .unwrap_or_else(|| ext.msg_id());
        props.insert(MessageConst::PROPERTY_ORIGIN_MESSAGE_ID, origin);
        Ok(Retry {
            ext,
            props,
            to_dlq,
            delay_level,
        })
    }
}

/// Producer group named in the forwarded send (upstream's inner producer group).
const PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";
/// Default topic named in the forwarded send.
const DEFAULT_TOPIC: &str = "TBW102";

/// Forwards the retry copy of the failed message to a live master of the cluster.
async fn forward(
    state: &BrokerContext,
    h: &ConsumerSendMsgBackRequestHeader,
    group: &SubscriptionGroupConfig,
) -> Result<(), HandlerError> {
    if !state.config().enable_acting_master {
        return Err(HandlerError::System(
            "broker role is slave and enableActingMaster is off: send the message back to the master".into(),
        ));
    }
    if group.retry_queue_nums <= 0 {
        return Ok(());
    }
    let retry = Retry::prepare(state, h, group)?;
    let mut props = retry.props;
    let max = if retry.to_dlq {
        0
    } else {
        props.insert(
            MessageConst::PROPERTY_DELAY_TIME_LEVEL,
            retry.delay_level.to_string(),
        );
        h.max_reconsume_times.unwrap_or(group.retry_max_times)
    };
    let header = SendMessageRequestHeader {
        producer_group: PRODUCER_GROUP.into(),
        topic: retry_topic(&h.group),
        default_topic: DEFAULT_TOPIC.into(),
        default_topic_queue_nums: 1,
        queue_id: 0,
        sys_flag: retry.ext.sys_flag,
        born_timestamp: retry.ext.born_timestamp,
        flag: retry.ext.flag,
        properties: Some(props.to_wire_string()),
        reconsume_times: Some(retry.ext.reconsume_times + 1),
        unit_mode: Some(false),
        batch: Some(false),
        max_reconsume_times: Some(max),
        bname: None,
    };
    let target = send_to_live_master(state, &header, &retry.ext.body)
        .await
        .map_err(HandlerError::system)?;
    state.metrics.record_send_back_redirected();
    tracing::info!(
        group = %h.group,
        target = %target,
        msg_id = %retry.ext.msg_id(),
        "acting master forwarded a retry message"
    );
    Ok(())
}
