//! The Raft group of the controllers, on `openraft`: the type configuration, the network
//! between controllers, and the answers to the peers' Raft RPCs.
//!
//! Wire: a Raft RPC travels as a remoting request on the controller port with an Apogee-private
//! request code ([`RAFT_APPEND_ENTRIES`], [`RAFT_VOTE`], [`RAFT_INSTALL_SNAPSHOT`]); the body is
//! the openraft request as JSON, and the `SUCCESS` response's body is the JSON of
//! `Result<response, RaftError>` as the receiving node's `Raft` returned it. Any other response
//! code, or a transport failure, makes the target unreachable for that call.

// openraft's error types are large by design and its traits return them; boxing only here
// would not make them smaller where openraft passes them on.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use remoting::addr::BrokerAddr;
use remoting::client::RemotingClient;
use remoting::{RemotingCommand, RemotingError, ResponseCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::replicas::Event;

/// A controller's id in the Raft group (its place in the sorted `controllerDLegerPeers`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft types of the controller: commands are [`Event`]s, applying one returns nothing.
    pub TypeConfig:
        D = Event,
        R = (),
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The controller's Raft handle.
pub type ControllerRaft = Raft<TypeConfig>;

/// Apogee-private request code: openraft AppendEntries between controllers.
pub const RAFT_APPEND_ENTRIES: i32 = 31001;
/// Apogee-private request code: openraft Vote between controllers.
pub const RAFT_VOTE: i32 = 31002;
/// Apogee-private request code: openraft InstallSnapshot between controllers.
pub const RAFT_INSTALL_SNAPSHOT: i32 = 31003;

/// Longest wait for a peer's answer when openraft gives no deadline of its own.
const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to peers through one shared remoting client.
pub struct Network {
    client: RemotingClient,
}

impl Network {
    pub fn new(client: RemotingClient) -> Self {
        Network { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The RPC path to one peer.
pub struct PeerConnection {
    client: RemotingClient,
    target: NodeId,
    addr: String,
}

/// Why a peer's answer could not be used.
#[derive(Debug, thiserror::Error)]
enum RpcFailure {
    #[error("peer address `{0}` is not host:port")]
    BadAddress(String),
    #[error("{0}")]
    Remoting(#[from] RemotingError),
    #[error("peer answered code {code}: {remark}")]
    Refused { code: i32, remark: String },
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl PeerConnection {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &self,
        code: i32,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Result<Resp, E>, RpcFailure> {
        // The controller port speaks remoting like a broker's; the typed address is only the
        // client's way to name a host:port.
        let addr = BrokerAddr::parse(&self.addr)
            .ok_or_else(|| RpcFailure::BadAddress(self.addr.clone()))?;
        let body = serde_json::to_vec(req)?;
        let timeout = option.hard_ttl().min(RPC_TIMEOUT);
        let response = self
            .client
            .invoke(
                &addr,
                RemotingCommand::request(code).with_body(body),
                timeout,
            )
            .await?;
        if response.code != ResponseCode::SUCCESS {
            return Err(RpcFailure::Refused {
                code: response.code,
                remark: response.remark_str().to_string(),
            });
        }
        Ok(serde_json::from_slice(&response.body)?)
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let result: Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, _> =
            self.call(RAFT_APPEND_ENTRIES, &rpc, &option).await;
        settle(self.target, result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let result: Result<
            Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
            _,
        > = self.call(RAFT_INSTALL_SNAPSHOT, &rpc, &option).await;
        settle(self.target, result)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let result: Result<Result<VoteResponse<NodeId>, RaftError<NodeId>>, _> =
            self.call(RAFT_VOTE, &rpc, &option).await;
        settle(self.target, result)
    }
}

/// Maps a call's outcome to openraft's error kinds: transport trouble is a network error (the
/// leader retries), an error from the peer's `Raft` is a remote error.
fn settle<T, E: std::error::Error>(
    target: NodeId,
    result: Result<Result<T, RaftError<NodeId, E>>, RpcFailure>,
) -> Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
    match result {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(target, e))),
        Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
    }
}

/// Answers a peer's Raft RPC (one of the private codes) with this node's `raft`.
pub(crate) async fn serve_rpc(raft: &ControllerRaft, request: &RemotingCommand) -> RemotingCommand {
    let body = &request.body[..];
    let answer: Result<Vec<u8>, serde_json::Error> = match request.code {
        RAFT_APPEND_ENTRIES => match serde_json::from_slice(body) {
            Ok(rpc) => serde_json::to_vec(&raft.append_entries(rpc).await),
            Err(e) => Err(e),
        },
        RAFT_VOTE => match serde_json::from_slice(body) {
            Ok(rpc) => serde_json::to_vec(&raft.vote(rpc).await),
            Err(e) => Err(e),
        },
        RAFT_INSTALL_SNAPSHOT => match serde_json::from_slice(body) {
            Ok(rpc) => serde_json::to_vec(&raft.install_snapshot(rpc).await),
            Err(e) => Err(e),
        },
        _ => return RemotingCommand::not_supported(request),
    };
    match answer {
        Ok(bytes) => {
            RemotingCommand::response_to(request, ResponseCode::SUCCESS, None).with_body(bytes)
        }
        Err(e) => RemotingCommand::response_to(
            request,
            ResponseCode::SYSTEM_ERROR,
            Some(format!("bad Raft RPC body: {e}")),
        ),
    }
}
