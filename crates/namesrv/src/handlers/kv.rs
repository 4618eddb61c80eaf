//! KV configuration requests: PUT_KV_CONFIG (100), GET_KV_CONFIG (101), DELETE_KV_CONFIG (102),
//! GET_KVLIST_BY_NAMESPACE (219).

use remoting::headers::{
    CommandHeader, DeleteKVConfigRequestHeader, GetKVConfigRequestHeader,
    GetKVConfigResponseHeader, GetKVListByNamespaceRequestHeader, PutKVConfigRequestHeader,
};
use remoting::protocol::KeyStyle;
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{failure, success, success_with_header, success_with_json};
use crate::state::NamesrvState;

pub(super) fn put(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let h = PutKVConfigRequestHeader::from_command(req)?;
    Ok(match state.kv.put(&h.namespace, &h.key, &h.value) {
        Ok(()) => success(req),
        Err(e) => failure(req, ResponseCode::SYSTEM_ERROR, e.to_string()),
    })
}

pub(super) fn get(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let h = GetKVConfigRequestHeader::from_command(req)?;
    Ok(match state.kv.get(&h.namespace, &h.key) {
        Some(value) => success_with_header(req, &GetKVConfigResponseHeader { value: Some(value) }),
        None => failure(
            req,
            ResponseCode::QUERY_NOT_FOUND,
            format!("No config item, Namespace: {} Key: {}", h.namespace, h.key),
        ),
    })
}

pub(super) fn delete(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let h = DeleteKVConfigRequestHeader::from_command(req)?;
    Ok(match state.kv.delete(&h.namespace, &h.key) {
        Ok(()) => success(req),
        Err(e) => failure(req, ResponseCode::SYSTEM_ERROR, e.to_string()),
    })
}

pub(super) fn list_by_namespace(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    let h = GetKVListByNamespaceRequestHeader::from_command(req)?;
    match state.kv.namespace(&h.namespace) {
        Some(table) => success_with_json(req, &table, KeyStyle::Quoted),
        None => Ok(failure(
            req,
            ResponseCode::QUERY_NOT_FOUND,
            format!("No config item, Namespace: {}", h.namespace),
        )),
    }
}
