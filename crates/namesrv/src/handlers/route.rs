//! Route queries: GET_ROUTEINFO_BY_TOPIC (105) and GET_BROKER_CLUSTER_INFO (106).
//!
//! Like the 4.9.8 NameServer, a route is written with quoted `brokerAddrs` keys for clients of
//! version V4_9_4 (401) and later or that ask for standard JSON, and with fastjson's bare keys
//! for older ones (C++ sends 63, ali-ons 121); cluster info always has bare keys.

use std::time::Duration;

use remoting::headers::{CommandHeader, GetRouteInfoRequestHeader};
use remoting::protocol::{version, KeyStyle, NAMESPACE_ORDER_TOPIC_CONFIG};
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{failure, success_with_json};
use crate::state::NamesrvState;

/// Suffix upstream adds to its TOPIC_NOT_EXIST remark (`FAQUrl.suggestTodo`).
const FAQ_SUFFIX: &str = "\nSee http://rocketmq.apache.org/docs/faq/ for further details.";

pub(super) fn route_by_topic(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let h = GetRouteInfoRequestHeader::from_command(req)?;
    let (order_message_enable, not_ready) = {
        let config = state.config.read();
        let wait = Duration::from_secs(config.wait_seconds_for_service);
        (
            config.order_message_enable,
            config.need_wait_for_service && state.started.elapsed() < wait,
        )
    };
    if not_ready {
        return Ok(failure(
            req,
            ResponseCode::SYSTEM_ERROR,
            "name server not ready",
        ));
    }
    let route = state.routes.read().pickup_topic_route_data(&h.topic);
    let Some(mut route) = route else {
        return Ok(failure(
            req,
            ResponseCode::TOPIC_NOT_EXIST,
            format!(
                "No topic route info in name server for the topic: {}{FAQ_SUFFIX}",
                h.topic
            ),
        ));
    };
    if order_message_enable {
        route.order_topic_conf = state.kv.get(NAMESPACE_ORDER_TOPIC_CONFIG, &h.topic);
    }
    let keys = if req.version >= version::V4_9_4 || h.accept_standard_json_only == Some(true) {
        KeyStyle::Quoted
    } else {
        KeyStyle::Bare
    };
    success_with_json(req, &route, keys)
}

pub(super) fn cluster_info(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let info = state.routes.read().cluster_info();
    success_with_json(req, &info, KeyStyle::Bare)
}
