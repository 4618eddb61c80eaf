//! [`Transport`]: the calls the client makes on the network, with typed addresses.
//!
//! Everything in this crate talks to brokers and NameServers through this trait, so that a
//! request meant for a broker can only be given a [`BrokerAddr`] and only NameServer request
//! codes go to a [`NameServerAddr`]. [`RemotingClient`] is the implementation used in
//! production; tests may wrap it to observe which addresses were contacted.

use std::time::Duration;

use futures::future::BoxFuture;
use remoting::client::RemotingClient;
use remoting::{BrokerAddr, NameServerAddr, RemotingCommand, RemotingError};

/// Request/response transport with typed addresses.
pub trait Transport: Send + Sync + 'static {
    /// A two-way request to a broker.
    fn invoke<'a>(
        &'a self,
        addr: &'a BrokerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>>;

    /// A oneway request to a broker.
    fn invoke_oneway<'a>(
        &'a self,
        addr: &'a BrokerAddr,
        req: RemotingCommand,
    ) -> BoxFuture<'a, Result<(), RemotingError>>;

    /// A two-way request to a NameServer (only codes a NameServer serves).
    fn invoke_namesrv<'a>(
        &'a self,
        addr: &'a NameServerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>>;
}

impl Transport for RemotingClient {
    fn invoke<'a>(
        &'a self,
        addr: &'a BrokerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>> {
        Box::pin(RemotingClient::invoke(self, addr, req, timeout))
    }

    fn invoke_oneway<'a>(
        &'a self,
        addr: &'a BrokerAddr,
        req: RemotingCommand,
    ) -> BoxFuture<'a, Result<(), RemotingError>> {
        Box::pin(RemotingClient::invoke_oneway(self, addr, req))
    }

    fn invoke_namesrv<'a>(
        &'a self,
        addr: &'a NameServerAddr,
        req: RemotingCommand,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RemotingCommand, RemotingError>> {
        Box::pin(RemotingClient::invoke_namesrv(self, addr, req, timeout))
    }
}
