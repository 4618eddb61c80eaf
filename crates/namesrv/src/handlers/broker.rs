//! Broker membership requests: REGISTER_BROKER (103), UNREGISTER_BROKER (104),
//! BROKER_HEARTBEAT (904), QUERY_DATA_VERSION (322), GET_BROKER_MEMBER_GROUP (901).

use std::time::{Duration, Instant};

use remoting::headers::{
    BrokerHeartbeatRequestHeader, CommandHeader, GetBrokerMemberGroupRequestHeader,
    QueryDataVersionRequestHeader, QueryDataVersionResponseHeader, RegisterBrokerRequestHeader,
    RegisterBrokerResponseHeader, UnRegisterBrokerRequestHeader,
};
use remoting::protocol::{
    from_fastjson, to_fastjson, version, DataVersion, GetBrokerMemberGroupResponseBody, KeyStyle,
    RegisterBrokerBody, TopicConfigSerializeWrapper, NAMESPACE_ORDER_TOPIC_CONFIG,
};
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{failure, success, success_with_header, success_with_json};
use crate::route::{BrokerAddrInfo, BrokerRegistration};
use crate::state::NamesrvState;

type Result = std::result::Result<RemotingCommand, RemotingError>;

/// Upstream's body checksum: CRC32 masked to 31 bits (`UtilAll.crc32`).
pub(crate) fn body_crc32(body: &[u8]) -> i32 {
    // The mask keeps the value within i32.
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

/// Topic configs and filter servers of a REGISTER_BROKER body, by broker version: a
/// `RegisterBrokerBody` (JSON, or deflated when `compressed`) since 3.0.11, a bare
/// `TopicConfigSerializeWrapper` before. An empty body registers no topics.
fn decode_register_body(
    req: &RemotingCommand,
    h: &RegisterBrokerRequestHeader,
) -> std::result::Result<(TopicConfigSerializeWrapper, Option<Vec<String>>), RemotingError> {
    let old_broker = req.version < version::V3_0_11;
    if req.body.is_empty() {
        let filter_servers = (!old_broker).then(Vec::new);
        return Ok((TopicConfigSerializeWrapper::default(), filter_servers));
    }
    if old_broker {
        return Ok((from_fastjson(&req.body)?, None));
    }
    let body = RegisterBrokerBody::decode(&req.body, h.compressed)?;
    Ok((
        body.topic_config_serialize_wrapper,
        Some(body.filter_server_list),
    ))
}

pub(super) fn register(state: &NamesrvState, conn: &Connection, req: &RemotingCommand) -> Result {
    let h = RegisterBrokerRequestHeader::from_command(req)?;
    if let Some(expected) = h.body_crc32.filter(|crc| *crc != 0) {
        let actual = body_crc32(&req.body);
        if actual != expected {
            tracing::warn!(remote = %conn.remote_addr(), expected, actual, "register broker body crc32 mismatch");
            return Ok(failure(req, ResponseCode::SYSTEM_ERROR, "crc32 not match"));
        }
    }
    let (topic_config, filter_server_list) = decode_register_body(req, &h)?;
    let registration = BrokerRegistration {
        cluster_name: h.cluster_name,
        broker_addr: h.broker_addr,
        broker_name: h.broker_name,
        broker_id: h.broker_id,
        ha_server_addr: h.ha_server_addr,
        zone_name: h.zone_name,
        heartbeat_timeout: h
            .heartbeat_timeout_millis
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
        enable_acting_master: h.enable_acting_master,
        topic_config,
        filter_server_list,
        connection_id: Some(conn.id()),
    };
    let result = {
        let mut routes = state.routes.write();
        let result = routes.register_broker(registration, Instant::now());
        // The connection may have closed (and been cleaned up) while we registered on it.
        if conn.is_closed() {
            routes.on_connection_closed(conn.id());
        }
        result
    };
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_addr(), "register broker failed: {e}");
            return Ok(failure(
                req,
                ResponseCode::SYSTEM_ERROR,
                format!("register broker failed: {e}"),
            ));
        }
    };
    let mut response = success_with_header(
        req,
        &RegisterBrokerResponseHeader {
            ha_server_addr: result.ha_server_addr,
            master_addr: result.master_addr,
        },
    );
    if state.config.read().return_order_topic_config_to_broker {
        if let Some(table) = state.kv.namespace(NAMESPACE_ORDER_TOPIC_CONFIG) {
            response = response.with_body(to_fastjson(&table, KeyStyle::Quoted)?);
        }
    }
    Ok(response)
}

pub(super) fn unregister(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = UnRegisterBrokerRequestHeader::from_command(req)?;
    state.routes.write().unregister_broker(&h);
    Ok(success(req))
}

pub(super) fn heartbeat(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = BrokerHeartbeatRequestHeader::from_command(req)?;
    let broker = BrokerAddrInfo::new(&h.cluster_name, &h.broker_addr);
    state
        .routes
        .write()
        .update_broker_info_update_timestamp(&broker, Instant::now());
    Ok(success(req))
}

pub(super) fn query_data_version(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result {
    let h = QueryDataVersionRequestHeader::from_command(req)?;
    let broker_version: Option<DataVersion> = if req.body.is_empty() {
        None
    } else {
        Some(from_fastjson(&req.body)?)
    };
    let broker = BrokerAddrInfo::new(&h.cluster_name, &h.broker_addr);
    let (changed, ours) = {
        let mut routes = state.routes.write();
        let ours = routes.query_broker_topic_config(&broker).cloned();
        routes.update_broker_info_update_timestamp(&broker, Instant::now());
        (ours.is_none() || ours != broker_version, ours)
    };
    let mut response = success_with_header(req, &QueryDataVersionResponseHeader { changed });
    if let Some(ours) = ours {
        response = response.with_body(to_fastjson(&ours, KeyStyle::Quoted)?);
    }
    Ok(response)
}

pub(super) fn member_group(state: &NamesrvState, _: &Connection, req: &RemotingCommand) -> Result {
    let h = GetBrokerMemberGroupRequestHeader::from_command(req)?;
    let body = GetBrokerMemberGroupResponseBody {
        broker_member_group: state
            .routes
            .read()
            .broker_member_group(&h.cluster_name, &h.broker_name),
    };
    success_with_json(req, &body, KeyStyle::Bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_masked_like_upstream() {
        assert_eq!(body_crc32(b""), 0);
        // CRC32("123456789") = 0xCBF43926; masked to 31 bits.
        assert_eq!(body_crc32(b"123456789"), 0x4BF4_3926);
    }
}
