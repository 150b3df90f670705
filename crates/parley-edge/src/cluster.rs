//! [`EdgeService`]: this edge's [`EdgeSink`] served to owners on other nodes.

use std::sync::Arc;
use std::time::Duration;

use parley_core::ids::MessageId;
use parley_core::ids::SessionId;
use parley_owner::EdgeSink;
use parley_proto::SharedFrame;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::edge_server;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use prost::Message;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::edge::Edge;

/// The longest a peer delivery waits for its receipt; the owner's own timeout is shorter.
const RECEIPT_WAIT: Duration = Duration::from_secs(30);

pub struct EdgeService {
    edge: Arc<Edge>,
}

impl EdgeService {
    pub fn new(edge: Arc<Edge>) -> edge_server::EdgeServer<EdgeService> {
        edge_server::EdgeServer::new(EdgeService { edge })
    }
}

fn frame(bytes: &[u8]) -> Result<Arc<SharedFrame>, Status> {
    v1::ServerFrame::decode(bytes)
        .map(|frame| Arc::new(SharedFrame::new(frame)))
        .map_err(|error| Status::invalid_argument(format!("undecodable frame: {error}")))
}

#[tonic::async_trait]
impl edge_server::Edge for EdgeService {
    async fn deliver(
        &self,
        request: Request<wire::DeliverRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let sessions: Vec<SessionId> = request.sessions.into_iter().map(SessionId).collect();
        self.edge.deliver(&sessions, frame(&request.frame)?);
        Ok(Response::new(wire::Done {}))
    }

    async fn deliver_peer(
        &self,
        request: Request<wire::DeliverPeerRequest>,
    ) -> Result<Response<wire::DeliverPeerReply>, Status> {
        let request = request.into_inner();
        let receipt = self.edge.deliver_peer(
            SessionId(request.session),
            MessageId(request.receipt_id),
            frame(&request.frame)?,
        );
        let received = matches!(
            tokio::time::timeout(RECEIPT_WAIT, receipt).await,
            Ok(Ok(()))
        );
        Ok(Response::new(wire::DeliverPeerReply { received }))
    }

    async fn end_session(
        &self,
        request: Request<wire::EndSessionRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let reason = Reason::try_from(request.reason).unwrap_or(Reason::ServerShutdown);
        self.edge.end_session(SessionId(request.session), reason);
        Ok(Response::new(wire::Done {}))
    }
}
