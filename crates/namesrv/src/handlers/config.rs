//! NameServer configuration requests: UPDATE_NAMESRV_CONFIG (318, body: properties text) and
//! GET_NAMESRV_CONFIG (319, answers the configuration as properties text). Changes apply to
//! the running server (route rules, topic-list switches, ...); listening settings only take
//! effect on the next start, and nothing is written to disk.

use remoting::properties::parse_properties;
use remoting::server::Connection;
use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::{failure, success};
use crate::state::NamesrvState;

pub(super) fn update(
    state: &NamesrvState,
    conn: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    if req.body.is_empty() {
        return Ok(success(req));
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| RemotingError::InvalidBody("config update is not UTF-8".into()))?;
    let props = parse_properties(text);
    let mut config = state.config.write();
    if let Some(key) = config
        .black_listed_keys()
        .into_iter()
        .find(|k| props.contains_key(*k))
    {
        tracing::warn!(%key, remote = %conn.remote_addr(), "refused update of a black-listed config key");
        return Ok(failure(
            req,
            ResponseCode::NO_PERMISSION,
            "Can not update config in black list.",
        ));
    }
    if let Err(e) = config.update(&props) {
        return Ok(failure(req, ResponseCode::SYSTEM_ERROR, e.to_string()));
    }
    tracing::info!(remote = %conn.remote_addr(), keys = ?props.keys().collect::<Vec<_>>(), "NameServer config updated");
    state.routes.write().set_config(config.route_config());
    Ok(success(req))
}

pub(super) fn get(
    state: &NamesrvState,
    _: &Connection,
    req: &RemotingCommand,
) -> Result<RemotingCommand, RemotingError> {
    Ok(success(req).with_body(state.config.read().to_properties()))
}
