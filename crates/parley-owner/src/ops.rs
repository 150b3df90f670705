//! The owner operations (defined once, in `parley_engine::ops`) and how callers ask them:
//! [`Owners`], the one owner of `parley dev` or a cluster's (`cluster::RemoteOwners`).

use async_trait::async_trait;
use parley_core::Error;

pub use parley_engine::ops::*;

use crate::api::PeerDispatch;
use crate::api::PeerSend;

/// The owners, as an edge or the bridge sees them: the one owner of `parley dev`, or a cluster's
/// (`cluster::RemoteOwners`), each request answered by the owner of its key.
#[async_trait]
pub trait Owners: Send + Sync + 'static {
    async fn call(&self, request: Request) -> Result<Response, Error>;

    /// A peer message: answered once it is handed to the receiver's sessions (or stored, or
    /// sent to the receiver's region), with how it ended to come. Splitting the two lets an edge
    /// keep a client's messages in order without waiting for each receipt.
    async fn send_peer(&self, send: PeerSend) -> Result<PeerDispatch, Error>;
}

impl dyn Owners {
    pub async fn ask<O: Operation>(&self, operation: O) -> Result<O::Output, Error> {
        O::output(self.call(operation.into_request()).await?)
    }
}
