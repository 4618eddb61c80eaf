//! CONSUMER_SEND_MSG_BACK on a slave — the acting master of its group while the master is
//! gone (NameServer `supportActingMaster`, broker `enableActingMaster`). The slave re-reads
//! the failed message from its own CommitLog and sends the retry copy with SEND_MESSAGE_V2 to
//! a live master of its cluster (found with GET_BROKER_CLUSTER_INFO), topic
//! `%RETRY%<group>`, carrying `RETRY_TOPIC`, `ORIGIN_MESSAGE_ID`, `DELAY` (the retry delay
//! level), `reconsumeTimes` + 1 and `maxReconsumeTimes`. The receiving master applies the one
//! DLQ rule (`reconsumeTimes > max` after the increment); a negative delay level (straight to
//! the DLQ) is sent with `maxReconsumeTimes` 0. With no live master anywhere, the answer is
//! SYSTEM_ERROR saying so, and the consumer falls back to its own re-send. The acting
//! master's delayed delivery (`schedule`) forwards due messages the same way.

use remoting::broker_headers::{ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader};
use remoting::message::MessageConst;

use super::Retry;
use crate::cluster::send_to_live_master;
use crate::handlers::HandlerError;
use crate::state::BrokerState;
use crate::subscription::SubscriptionGroupConfig;
use crate::topic::retry_topic;

/// Producer group named in the forwarded send (upstream's inner producer group).
const PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";
/// Default topic named in the forwarded send.
const DEFAULT_TOPIC: &str = "TBW102";

/// Forwards the retry copy of the failed message to a live master of the cluster.
pub(super) async fn forward(
    state: &BrokerState,
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
    tracing::info!(
        group = %h.group,
        target = %target,
        msg_id = %retry.ext.msg_id(),
        "acting master forwarded a retry message"
    );
    Ok(())
}
