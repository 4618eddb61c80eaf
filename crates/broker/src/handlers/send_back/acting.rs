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

use std::time::Duration;

use rand::seq::SliceRandom;
use remoting::broker_headers::{
    ConsumerSendMsgBackRequestHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
};
use remoting::headers::CommandHeader;
use remoting::message::MessageConst;
use remoting::protocol::{from_fastjson, ClusterInfo};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};

use super::Retry;
use crate::state::BrokerState;
use crate::subscription::SubscriptionGroupConfig;
use crate::topic::retry_topic;

/// Timeout of each request this path makes.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Producer group named in the forwarded send (upstream's inner producer group).
const PRODUCER_GROUP: &str = "CLIENT_INNER_PRODUCER";
/// Default topic named in the forwarded send.
const DEFAULT_TOPIC: &str = "TBW102";

pub(super) async fn forward(
    state: &BrokerState,
    h: &ConsumerSendMsgBackRequestHeader,
    group: &SubscriptionGroupConfig,
) -> Result<(), (i32, String)> {
    if !state.config.read().enable_acting_master {
        return Err((
            ResponseCode::SYSTEM_ERROR,
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
    let target = send_to_live_master(state, &header, &retry.ext.body).await?;
    tracing::info!(
        group = %h.group,
        target = %target,
        msg_id = %retry.ext.msg_id(),
        "acting master forwarded a retry message"
    );
    Ok(())
}

/// Sends SEND_MESSAGE_V2 with `header` and `body` to the live masters of our cluster in
/// random order until one accepts it; returns that group's name. SYSTEM_ERROR when there is
/// no live master or none accepts it.
pub(crate) async fn send_to_live_master(
    state: &BrokerState,
    header: &SendMessageRequestHeader,
    body: &[u8],
) -> Result<String, (i32, String)> {
    let masters = live_masters(state).await?;
    if masters.is_empty() {
        return Err((
            ResponseCode::SYSTEM_ERROR,
            format!(
                "acting master {}: no live master in cluster {} to take the message",
                state.broker_addr(),
                state.config.read().broker_cluster_name
            ),
        ));
    }
    let mut last = String::new();
    for (name, addr) in masters {
        let mut cmd =
            RemotingCommand::request(RequestCode::SEND_MESSAGE_V2).with_body(body.to_vec());
        SendMessageRequestHeaderV2::from(header.clone()).write_to(&mut cmd);
        match state.client.invoke(&addr, cmd, TIMEOUT).await {
            Ok(resp) if resp.code == ResponseCode::SUCCESS => return Ok(name),
            Ok(resp) => last = format!("{name} answered {}: {}", resp.code, resp.remark_str()),
            Err(e) => last = format!("{name}: {e}"),
        }
        tracing::warn!(topic = %header.topic, error = %last, "forwarding a message to a live master failed");
    }
    Err((
        ResponseCode::SYSTEM_ERROR,
        format!("acting master could not forward the message: {last}"),
    ))
}

/// `(brokerName, master address)` of every group of our cluster that has a master, in random
/// order.
async fn live_masters(state: &BrokerState) -> Result<Vec<(String, BrokerAddr)>, (i32, String)> {
    let info = cluster_info(state).await?;
    let cluster = state.config.read().broker_cluster_name.clone();
    let names = info
        .cluster_addr_table
        .get(&cluster)
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<(String, BrokerAddr)> = names
        .iter()
        .filter_map(|n| info.broker_addr_table.get(n))
        .filter_map(|bd| {
            let addr = BrokerAddr::parse(bd.master_addr()?)?;
            Some((bd.broker_name.clone(), addr))
        })
        .collect();
    out.shuffle(&mut rand::thread_rng());
    Ok(out)
}

/// GET_BROKER_CLUSTER_INFO from the first NameServer that answers.
pub(crate) async fn cluster_info(state: &BrokerState) -> Result<ClusterInfo, (i32, String)> {
    let name_servers = state.config.read().name_servers();
    let mut last = String::from("no NameServer configured");
    for ns in name_servers {
        let cmd = RemotingCommand::request(RequestCode::GET_BROKER_CLUSTER_INFO);
        let resp = match state.client.invoke_namesrv(&ns, cmd, TIMEOUT).await {
            Ok(r) if r.code == ResponseCode::SUCCESS => r,
            Ok(r) => {
                last = format!("{ns} answered {}: {}", r.code, r.remark_str());
                continue;
            }
            Err(e) => {
                last = format!("{ns}: {e}");
                continue;
            }
        };
        match from_fastjson(&resp.body) {
            Ok(info) => return Ok(info),
            Err(e) => last = format!("{ns}: bad cluster info: {e}"),
        }
    }
    Err((
        ResponseCode::SYSTEM_ERROR,
        format!("cannot read the cluster from a NameServer: {last}"),
    ))
}
