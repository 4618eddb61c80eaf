//! CONTROLLER_GET_METADATA_INFO: who leads the controller group (served by every controller).

use std::sync::Arc;

use remoting::{RemotingCommand, RemotingError};

use super::{success_with_header, HandlerFuture};
use crate::state::ControllerState;

pub(super) fn metadata(state: Arc<ControllerState>, request: RemotingCommand) -> HandlerFuture {
    Box::pin(
        async move { Ok::<_, RemotingError>(success_with_header(&request, &state.metadata())) },
    )
}
