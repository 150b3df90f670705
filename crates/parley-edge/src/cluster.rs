//! [`EdgeService`]: this edge's [`EdgeSink`] served to owners on other nodes.

use std::sync::Arc;
use std::time::Duration;

use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_owner::EdgeSink;
use parley_owner::cluster::RemoteOwners;
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
    /// How receipts get back to the owner node that asked for them.
    owners: Arc<RemoteOwners>,
}

impl EdgeService {
    pub fn new(edge: Arc<Edge>, owners: Arc<RemoteOwners>) -> edge_server::EdgeServer<EdgeService> {
        edge_server::EdgeServer::new(EdgeService { edge, owners })
    }
}

fn frame(bytes: &[u8], traceparent: String) -> Result<Arc<SharedFrame>, Status> {
    let trace = parley_owner::trace_of(traceparent);
    v1::ServerFrame::decode(bytes)
        .map(|frame| Arc::new(SharedFrame::new(frame).with_trace(trace)))
        .map_err(|error| Status::invalid_argument(format!("undecodable frame: {error}")))
}

#[tonic::async_trait]
impl edge_server::Edge for EdgeService {
    async fn deliver(
        &self,
        request: Request<wire::DeliverRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let frame = frame(&request.frame, request.traceparent)?;
        if request.receipt_id == 0 {
            let sessions: Vec<SessionId> = request.sessions.into_iter().map(SessionId).collect();
            self.edge.deliver(&sessions, frame);
            return Ok(Response::new(wire::Done {}));
        }
        // Queued now, in order; the receipt is reported back when it comes.
        let session = *request
            .sessions
            .first()
            .ok_or_else(|| Status::invalid_argument("a receipt needs a session"))?;
        let (receipt_tx, receipt) = futures_channel::oneshot::channel();
        self.edge.deliver_peer(
            SessionId(session),
            MessageId(request.receipt_id),
            frame,
            receipt_tx,
        );
        let owners = self.owners.clone();
        let owner = NodeId(request.receipt_to);
        tokio::spawn(async move {
            let received = matches!(
                tokio::time::timeout(RECEIPT_WAIT, receipt).await,
                Ok(Ok(()))
            );
            owners
                .report_receipt(owner, request.receipt_id, received)
                .await;
        });
        Ok(Response::new(wire::Done {}))
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
