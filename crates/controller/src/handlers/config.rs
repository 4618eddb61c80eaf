//! GET_CONTROLLER_CONFIG and UPDATE_CONTROLLER_CONFIG (upstream's `getControllerConfig` /
//! `updateControllerConfig`): this controller's own settings as Java properties text. Served
//! by every controller for itself (nothing of it is replicated); an update changes the running
//! controller only (not its config file, as upstream without `configStorePath`).

use std::sync::Arc;

use remoting::{RemotingCommand, RemotingError, ResponseCode};

use super::HandlerFuture;
use crate::config::ConfigError;
use crate::state::ControllerState;

/// SUCCESS with every setting as `key=value` lines (secrets left out).
pub(super) fn get_config(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(async move {
        let text = state.config.read().to_properties();
        Ok::<_, RemotingError>(
            RemotingCommand::response_to(&request, ResponseCode::SUCCESS, None)
                .with_body(text.into_bytes()),
        )
    })
}

/// Applies the body's `key=value` lines: SUCCESS, or NO_PERMISSION naming a key that is
/// only read at start (nothing applied), or SYSTEM_ERROR naming a value that does not parse.
pub(super) fn update_config(
    state: Arc<ControllerState>,
    request: RemotingCommand,
) -> HandlerFuture {
    Box::pin(async move {
        let text = std::str::from_utf8(&request.body)
            .map_err(|e| RemotingError::InvalidBody(format!("config body is not UTF-8: {e}")))?;
        let props = remoting::properties::parse_properties(text);
        let mut config = state.config.write();
        let response = match config.updated(&props) {
            Ok(next) => {
                *config = next;
                tracing::info!(?props, "controller config updated");
                RemotingCommand::response_to(&request, ResponseCode::SUCCESS, None)
            }
            Err(e @ ConfigError::NotUpdatable(_)) => RemotingCommand::response_to(
                &request,
                ResponseCode::NO_PERMISSION,
                Some(e.to_string()),
            ),
            Err(e) => RemotingCommand::response_to(
                &request,
                ResponseCode::SYSTEM_ERROR,
                Some(e.to_string()),
            ),
        };
        Ok(response)
    })
}
