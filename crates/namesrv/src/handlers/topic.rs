//! Topic-level requests: WIPE_WRITE_PERM_OF_BROKER (205), ADD_WRITE_PERM_OF_BROKER (327),
//! GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206), DELETE_TOPIC_IN_NAMESRV (216),
//! REGISTER_TOPIC_IN_NAMESRV (217), GET_TOPICS_BY_CLUSTER (224),
//! GET_SYSTEM_TOPIC_LIST_FROM_NS (304) and the unit topic lists (311, 312, 313).

use remoting::headers::{
    AddWritePermOfBrokerRequestHeader, AddWritePermOfBrokerResponseHeader, CommandHeader,
    DeleteTopicFromNamesrvRequestHeader, GetTopicsByClusterRequestHeader,
    RegisterTopicRequestHeader, WipeWritePermOfBrokerRequestHeader,
    WipeWritePermOfBrokerResponseHeader,
};
use remoting::protocol::{from_fastjson, KeyStyle, TopicList, TopicRouteData};
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{failure, success, success_with_header, success_with_json};
use crate::config::NamesrvConfig;
use crate::route::RouteInfoManager;
use crate::state::NamesrvState;

type Result = std::result::Result<RemotingCommand, RemotingError>;

pub(super) fn wipe_write_perm(
    state: &NamesrvState,
    conn: &Connection,
    req: &RemotingCommand,
) -> Result {
    let h = WipeWritePermOfBrokerRequestHeader::from_command(req)?;
    let wipe_topic_count = state
        .routes
        .write()
        .wipe_write_perm_of_broker(&h.broker_name);
    tracing::info!(broker = %h.broker_name, remote = %conn.remote_addr(), wipe_topic_count, "write permission wiped");
    Ok(success_with_header(
        req,
        &WipeWritePermOfBrokerResponseHeader { wipe_topic_count },
    ))
}

pub(super) fn add_write_perm(
    state: &NamesrvState,
    conn: &Connection,
    req: &RemotingCommand,
) -> Result {
    let h = AddWritePermOfBrokerRequestHeader::from_command(req)?;
    let add_topic_count = state
        .routes
        .write()
        .add_write_perm_of_broker(&h.broker_name);
    tracing::info!(broker = %h.broker_name, remote = %conn.remote_addr(), add_topic_count, "write permission added");
    Ok(success_with_header(
        req,
        &AddWritePermOfBrokerResponseHeader { add_topic_count },
    ))
}

pub(super) fn delete(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = DeleteTopicFromNamesrvRequestHeader::from_command(req)?;
    let cluster = h.cluster_name.as_deref().filter(|c| !c.is_empty());
    state.routes.write().delete_topic(&h.topic, cluster);
    Ok(success(req))
}

pub(super) fn register(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = RegisterTopicRequestHeader::from_command(req)?;
    if !req.body.is_empty() {
        let route: TopicRouteData = from_fastjson(&req.body)?;
        state
            .routes
            .write()
            .register_topic(&h.topic, &route.queue_datas);
    }
    Ok(success(req))
}

/// Answers a topic list, or `SYSTEM_ERROR "disable"` when `enabled` says the list is off.
fn topic_list(
    state: &NamesrvState,
    req: &RemotingCommand,
    enabled: fn(&NamesrvConfig) -> bool,
    list: impl FnOnce(&RouteInfoManager) -> TopicList,
) -> Result {
    if !enabled(&state.config.read()) {
        return Ok(failure(req, ResponseCode::SYSTEM_ERROR, "disable"));
    }
    let topics = list(&state.routes.read());
    success_with_json(req, &topics, KeyStyle::Quoted)
}

pub(super) fn all_topics(state: &NamesrvState, conn: &Connection, req: &RemotingCommand) -> Result {
    tracing::info!(remote = %conn.remote_addr(), "all topic list requested");
    topic_list(
        state,
        req,
        |c| c.enable_all_topic_list,
        RouteInfoManager::all_topic_list,
    )
}

pub(super) fn by_cluster(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = GetTopicsByClusterRequestHeader::from_command(req)?;
    topic_list(
        state,
        req,
        |c| c.enable_topic_list,
        |r| r.topics_by_cluster(&h.cluster),
    )
}

pub(super) fn system_topics(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    topic_list(state, req, |_| true, RouteInfoManager::system_topic_list)
}

pub(super) fn unit_topics(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    topic_list(
        state,
        req,
        |c| c.enable_topic_list,
        RouteInfoManager::unit_topics,
    )
}

pub(super) fn has_unit_sub_topics(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result {
    topic_list(
        state,
        req,
        |c| c.enable_topic_list,
        RouteInfoManager::has_unit_sub_topic_list,
    )
}

pub(super) fn has_unit_sub_ununit_topics(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result {
    topic_list(
        state,
        req,
        |c| c.enable_topic_list,
        RouteInfoManager::has_unit_sub_ununit_topic_list,
    )
}
