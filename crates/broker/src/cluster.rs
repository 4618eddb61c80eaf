//! The broker's view of the rest of its cluster: the cluster map read from a NameServer
//! (GET_BROKER_CLUSTER_INFO) and sending a message to a live master of another group, which an
//! acting master (a slave whose master is gone) does for send-backs and due delayed and timer
//! messages.

use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use remoting::broker_headers::{
    GetAllDelayOffsetRequestHeader, SendMessageRequestHeader, SendMessageRequestHeaderV2,
};
use remoting::headers::CommandHeader;
use remoting::message::{MessageConst, Properties};
use remoting::protocol::{from_fastjson, ClusterInfo};
use remoting::{BrokerAddr, RemotingCommand, RequestCode, ResponseCode};
use thiserror::Error;

use crate::context::BrokerContext;

/// Default topic named in a forwarded message's header.
const DEFAULT_TOPIC: &str = "TBW102";

/// Timeout of each request made here.
const TIMEOUT: Duration = Duration::from_secs(3);

/// No NameServer or no live master answered as needed; the text says who answered what.
#[derive(Debug, Error)]
#[error("{0}")]
pub(crate) struct ClusterError(String);

/// Sends SEND_MESSAGE_V2 with `header` and `body` to the live masters of our cluster in
/// random order until one accepts it; returns that group's name. SYSTEM_ERROR when there is
/// no live master or none accepts it.
pub(crate) async fn send_to_live_master(
    state: &BrokerContext,
    header: &SendMessageRequestHeader,
    body: &[u8],
) -> Result<String, ClusterError> {
    let masters = live_masters(state).await?;
    if masters.is_empty() {
        return Err(ClusterError(format!(
            "acting master {}: no live master in cluster {} to take the message",
            state.broker_addr(),
            state.config().broker_cluster_name
        )));
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
    Err(ClusterError(format!(
        "acting master could not forward the message: {last}"
    )))
}

/// [`send_to_live_master`] of a message this broker writes on its own (a due delayed or
/// timer message), sent as `producer_group`.
pub(crate) async fn forward_to_live_master(
    state: &BrokerContext,
    msg: &store::MessageInner,
    producer_group: &str,
) -> Result<String, ClusterError> {
    let props = Properties::parse(&msg.properties);
    let header = SendMessageRequestHeader {
        producer_group: producer_group.into(),
        topic: msg.topic.clone(),
        default_topic: DEFAULT_TOPIC.into(),
        default_topic_queue_nums: 1,
        queue_id: msg.queue_id,
        sys_flag: msg.sys_flag,
        born_timestamp: msg.born_timestamp,
        flag: msg.flag,
        max_reconsume_times: props
            .get(MessageConst::PROPERTY_MAX_RECONSUME_TIMES)
            .and_then(|m| m.parse().ok()),
        properties: Some(msg.properties.clone()),
        reconsume_times: Some(msg.reconsume_times),
        unit_mode: Some(false),
        batch: Some(false),
        bname: None,
    };
    send_to_live_master(state, &header, &msg.body).await
}

/// A master starting up asks the other brokers of its group (found at the NameServer) with
/// `code` carrying `masterReturned` ([`GetAllDelayOffsetRequestHeader`]), so that a slave
/// that acted as master hands its delivery back first; returns `(slave address, body)` of each
/// SUCCESS answer. Failures are logged, naming `what` was asked for.
pub(crate) async fn ask_returning_to_slaves(
    state: &BrokerContext,
    code: i32,
    what: &str,
) -> Vec<(String, Bytes)> {
    let info = match cluster_info(state).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the slaves to learn their {what}");
            return Vec::new();
        }
    };
    let me = state.broker_addr();
    let Some(group) = info.broker_addr_table.get(&state.config().broker_name) else {
        return Vec::new();
    };
    let mut answers = Vec::new();
    for addr in group.broker_addrs.values().filter(|a| **a != me) {
        let Some(slave) = BrokerAddr::parse(addr) else {
            continue;
        };
        let mut cmd = RemotingCommand::request(code);
        GetAllDelayOffsetRequestHeader {
            master_returned: true,
        }
        .write_to(&mut cmd);
        match state.client.invoke(&slave, cmd, TIMEOUT).await {
            Ok(r) if r.code == ResponseCode::SUCCESS => answers.push((addr.clone(), r.body)),
            Ok(r) => {
                tracing::warn!(slave = %addr, code = r.code, remark = r.remark_str(), "slave refused its {what}")
            }
            Err(e) => {
                tracing::warn!(slave = %addr, error = %e, "cannot ask a slave for its {what}")
            }
        }
    }
    answers
}

/// `(brokerName, master address)` of every group of our cluster that has a master, in random
/// order.
async fn live_masters(state: &BrokerContext) -> Result<Vec<(String, BrokerAddr)>, ClusterError> {
    let info = cluster_info(state).await?;
    let names = info
        .cluster_addr_table
        .get(&state.config().broker_cluster_name)
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
pub(crate) async fn cluster_info(state: &BrokerContext) -> Result<ClusterInfo, ClusterError> {
    let name_servers = state.config().name_servers();
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
    Err(ClusterError(format!(
        "cannot read the cluster from a NameServer: {last}"
    )))
}
