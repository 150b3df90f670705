//! The owners over the network: [`OwnerService`] serves a local owner to other nodes,
//! [`RemoteOwners`] is what an edge calls (it routes each request by the ring and implements
//! [`Owners`]), and [`RemoteEdge`] is how an owner reaches an edge on another node (it
//! implements [`EdgeSink`]).
//!
//! Every operation takes one path (`ops.rs` defines them): the caller routes its request by its
//! key, to the owner in this process or over gRPC as JSON; the callee checks the key against its
//! own ring (waiting briefly for a newer epoch the caller routed by) and answers "not the owner",
//! naming the owner, when another node has it; the caller retries there once.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::Stream;
use futures_util::StreamExt;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ring::Ring;
use parley_proto::SharedFrame;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::edge_client::EdgeClient;
use parley_proto::cluster::v1::owner_client::OwnerClient;
use parley_proto::cluster::v1::owner_server;
use parley_proto::cluster_auth::ClusterChannel;
use parley_proto::v1::connection_state_changed::Reason;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tonic::Status;

use crate::api::EdgeSink;
use crate::api::PeerDispatch;
use crate::api::PeerSend;
use crate::ops::Owners;
use crate::ops::Request;
use crate::ops::Response;
use crate::ops::Route;
use crate::wire::OWNER_KEY;
use crate::wire::error_of;
use crate::wire::from_peer_outcome;
use crate::wire::peer_outcome;
use crate::wire::status_of;

/// Which nodes exist, where they listen, and the ring of owners. Shared by everything on a node
/// that routes; replaced as a whole when the cluster changes.
#[derive(Clone, Debug)]
pub struct Topology {
    pub ring: Ring,
    /// The gRPC address (`HOST:PORT`) of every node.
    pub addresses: BTreeMap<NodeId, String>,
    /// The nodes that serve clients.
    pub edges: std::collections::BTreeSet<NodeId>,
}

/// The node's topology as everything on it that routes sees it: the node's runtime publishes
/// each newer one, and a reader looks at the latest or waits for an epoch ([`reach_epoch`]).
pub type SharedTopology = tokio::sync::watch::Receiver<Arc<Topology>>;

/// Waits up to `within` until `topology` is at `epoch` or newer; whether it got there.
pub async fn reach_epoch(topology: &SharedTopology, epoch: u64, within: Duration) -> bool {
    let mut topology = topology.clone();
    let reached = topology.wait_for(|topology| topology.ring.epoch() >= epoch);
    matches!(tokio::time::timeout(within, reached).await, Ok(Ok(_)))
}

/// Receipts this owner node waits for from edges on other nodes, by receipt id.
#[derive(Default)]
pub struct Receipts {
    // A blocking lock: an insert or a remove per delivery, never held across an await.
    waiting: parking_lot::Mutex<std::collections::HashMap<u64, oneshot::Sender<()>>>,
}

/// How long an owner waits to learn a ring epoch a caller already routes by.
const EPOCH_CATCH_UP: Duration = Duration::from_secs(1);

/// Waiting receipts kept before abandoned ones are swept.
const RECEIPT_SWEEP_AT: usize = 4096;

impl Receipts {
    fn wait(&self, receipt_id: u64, receipt_tx: oneshot::Sender<()>) {
        let mut waiting = self.waiting.lock();
        if waiting.len() >= RECEIPT_SWEEP_AT {
            waiting.retain(|_, sender| !sender.is_canceled());
        }
        waiting.insert(receipt_id, receipt_tx);
    }

    /// Completes (received) or drops (not received) the wait for `receipt_id`.
    fn settle(&self, receipt_id: u64, received: bool) {
        let waiting = self.waiting.lock().remove(&receipt_id);
        if let (Some(sender), true) = (waiting, received) {
            let _ = sender.send(());
        }
    }
}

/// How long a call to another node may take to be answered (a streamed answer: its first
/// message). A frozen node costs its callers this much, not forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn lazy_channel(address: &str) -> Result<ClusterChannel, Error> {
    parley_proto::cluster_auth::channel(address, |endpoint| {
        endpoint
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
    })
    .map_err(|error| Error::internal(format!("bad node address {address}: {error}")))
}

/// The node that owns `route` by `ring` (any node for a read of shared state).
fn owner_of(ring: &Ring, route: Route<'_>) -> Option<NodeId> {
    match route {
        Route::User(app, uid) => ring.user_owner(app, uid),
        Route::Channel(app, channel) => ring.channel_owner(app, channel),
        Route::Any(_) => ring.nodes().first().copied(),
    }
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|error| Error::internal(format!("encoding a call: {error}")))
}

/// A call or an answer that does not decode is a bug or a version mismatch between nodes, never
/// a client's fault.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|error| Error::internal(format!("malformed cluster message: {error}")))
}

// ---- server ------------------------------------------------------------------------------------

/// Serves this node's owner to the cluster, refusing keys the ring gives to another node.
pub struct OwnerService {
    node: NodeId,
    owner: Arc<dyn Owners>,
    topology: SharedTopology,
    receipts: Arc<Receipts>,
}

impl OwnerService {
    pub fn new(
        node: NodeId,
        owner: Arc<dyn Owners>,
        topology: SharedTopology,
        receipts: Arc<Receipts>,
    ) -> owner_server::OwnerServer<OwnerService> {
        owner_server::OwnerServer::new(OwnerService {
            node,
            owner,
            topology,
            receipts,
        })
    }

    /// FAILED_PRECONDITION naming the owner when the ring gives the key to another node.
    ///
    /// A caller that routed by a newer epoch than this node knows waits (briefly) for this node
    /// to learn it, so a node never serves a key by a ring older than its caller's.
    async fn check(&self, epoch: u64, route: Route<'_>) -> Result<(), Status> {
        if let Route::Any(_) = route {
            return Ok(());
        }
        reach_epoch(&self.topology, epoch, EPOCH_CATCH_UP).await;
        let found = owner_of(&self.topology.borrow().ring, route);
        match found {
            Some(node) if node == self.node => Ok(()),
            Some(node) => {
                let mut status = Status::failed_precondition("not the owner of this key");
                status
                    .metadata_mut()
                    .insert(OWNER_KEY, tonic::metadata::MetadataValue::from(node.0));
                Err(status)
            }
            None => Err(status_of(Error::new(
                ErrorCode::Unavailable,
                "the ring is empty",
            ))),
        }
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<wire::SendPeerProgress, Status>> + Send>>;

#[tonic::async_trait]
impl owner_server::Owner for OwnerService {
    async fn call(
        &self,
        request: tonic::Request<wire::CallRequest>,
    ) -> Result<tonic::Response<wire::CallReply>, Status> {
        let call = request.into_inner();
        let request: Request = decode(&call.request).map_err(status_of)?;
        self.check(call.epoch, request.route()).await?;
        let response = self.owner.call(request).await.map_err(status_of)?;
        Ok(tonic::Response::new(wire::CallReply {
            response: encode(&response).map_err(status_of)?.into(),
        }))
    }

    type SendPeerStream = ProgressStream;

    async fn send_peer(
        &self,
        request: tonic::Request<wire::CallRequest>,
    ) -> Result<tonic::Response<Self::SendPeerStream>, Status> {
        let call = request.into_inner();
        let send: PeerSend = decode(&call.request).map_err(status_of)?;
        self.check(call.epoch, Route::User(&send.from.app, &send.to))
            .await?;
        let dispatch = self.owner.send_peer(send).await.map_err(status_of)?;
        let dispatched = wire::SendPeerProgress {
            step: Some(wire::send_peer_progress::Step::Dispatched(
                wire::Dispatched {
                    message_id: dispatch.message_id.0,
                    server_received_ts: dispatch.server_received_ts,
                },
            )),
        };
        let outcome = dispatch.outcome.map(|outcome| {
            Ok(wire::SendPeerProgress {
                step: Some(wire::send_peer_progress::Step::Outcome(
                    peer_outcome(outcome) as i32,
                )),
            })
        });
        let stream = futures_util::stream::once(async move { Ok(dispatched) })
            .chain(futures_util::stream::once(outcome));
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn receipt(
        &self,
        request: tonic::Request<wire::ReceiptRequest>,
    ) -> Result<tonic::Response<wire::Done>, Status> {
        let request = request.into_inner();
        self.receipts.settle(request.receipt_id, request.received);
        Ok(tonic::Response::new(wire::Done {}))
    }
}

// ---- client ------------------------------------------------------------------------------------

/// Where a call goes: the owner in this process, or another node.
enum Hop {
    Local(Arc<dyn Owners>),
    Remote(NodeId),
}

/// The owners as an edge sees them: each request goes to the owner of its key, in-process when
/// that is this node, over gRPC otherwise, once more to the node named by a "not the owner"
/// answer.
pub struct RemoteOwners {
    topology: SharedTopology,
    local: Option<(NodeId, Arc<dyn Owners>)>,
    // A blocking lock: a lookup or an insert per call, never held across an await.
    clients: RwLock<BTreeMap<NodeId, OwnerClient<ClusterChannel>>>,
}

impl RemoteOwners {
    pub fn new(topology: SharedTopology, local: Option<(NodeId, Arc<dyn Owners>)>) -> Self {
        RemoteOwners {
            topology,
            local,
            clients: RwLock::new(BTreeMap::new()),
        }
    }

    fn client(&self, node: NodeId) -> Result<OwnerClient<ClusterChannel>, Error> {
        if let Some(client) = self.clients.read().get(&node) {
            return Ok(client.clone());
        }
        let address = self
            .topology
            .borrow()
            .addresses
            .get(&node)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "no address for an owner node"))?;
        let client = OwnerClient::new(lazy_channel(&address)?);
        self.clients.write().insert(node, client.clone());
        Ok(client)
    }

    fn hop(&self, route: Route<'_>) -> Result<Hop, Error> {
        // A read of shared state is answered here when this node has an owner.
        if let (Route::Any(_), Some((_, owner))) = (route, &self.local) {
            return Ok(Hop::Local(owner.clone()));
        }
        let node = owner_of(&self.topology.borrow().ring, route)
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "no owner nodes"))?;
        Ok(match &self.local {
            Some((local, owner)) if *local == node => Hop::Local(owner.clone()),
            _ => Hop::Remote(node),
        })
    }

    /// Tells owner node `node` how a delivery it asked a receipt for ended.
    pub async fn report_receipt(&self, node: NodeId, receipt_id: u64, received: bool) {
        let reported = match self.client(node) {
            Ok(mut client) => client
                .receipt(wire::ReceiptRequest {
                    receipt_id,
                    received,
                })
                .await
                .map(drop)
                .map_err(|status| status.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = reported {
            tracing::warn!(owner = node.0, %error, "reporting a receipt failed");
        }
    }

    /// Calls `node` with `request` (encoded) stamped with this node's ring epoch; if it answers
    /// that another node owns the key, calls that one instead.
    async fn remote<T, F, Fut>(&self, node: NodeId, request: Vec<u8>, call: F) -> Result<T, Error>
    where
        F: Fn(OwnerClient<ClusterChannel>, wire::CallRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let call_request = wire::CallRequest {
            epoch: self.topology.borrow().ring.epoch(),
            request: request.into(),
        };
        match call(self.client(node)?, call_request.clone()).await {
            Ok(value) => Ok(value),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let owner = status
                    .metadata()
                    .get(OWNER_KEY)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .map(NodeId)
                    .ok_or_else(|| error_of(&status))?;
                call(self.client(owner)?, call_request)
                    .await
                    .map_err(|status| error_of(&status))
            }
            Err(status) => Err(error_of(&status)),
        }
    }
}

#[async_trait]
impl Owners for RemoteOwners {
    async fn call(&self, request: Request) -> Result<Response, Error> {
        let node = match self.hop(request.route())? {
            Hop::Local(owner) => return owner.call(request).await,
            Hop::Remote(node) => node,
        };
        let reply = self
            .remote(node, encode(&request)?, |mut client, call| async move {
                client.call(call).await.map(tonic::Response::into_inner)
            })
            .await?;
        decode(&reply.response)
    }

    async fn send_peer(&self, send: PeerSend) -> Result<PeerDispatch, Error> {
        let node = match self.hop(Route::User(&send.from.app, &send.to))? {
            Hop::Local(owner) => return owner.send_peer(send).await,
            Hop::Remote(node) => node,
        };
        let mut progress = self
            .remote(node, encode(&send)?, |mut client, call| async move {
                client
                    .send_peer(call)
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        let dispatched = match progress.message().await {
            Ok(Some(wire::SendPeerProgress {
                step: Some(wire::send_peer_progress::Step::Dispatched(dispatched)),
            })) => dispatched,
            Ok(_) => return Err(Error::internal("owner sent no dispatch")),
            Err(status) => return Err(error_of(&status)),
        };
        let outcome = async move {
            match progress.message().await {
                Ok(Some(wire::SendPeerProgress {
                    step: Some(wire::send_peer_progress::Step::Outcome(outcome)),
                })) => from_peer_outcome(
                    wire::PeerOutcome::try_from(outcome).unwrap_or(wire::PeerOutcome::Unreachable),
                ),
                _ => crate::api::PeerOutcome::Unreachable,
            }
        };
        Ok(PeerDispatch {
            message_id: MessageId(dispatched.message_id),
            server_received_ts: dispatched.server_received_ts,
            outcome: outcome.boxed(),
        })
    }
}

// ---- owner → edge ------------------------------------------------------------------------------

/// Calls to one remote edge that must keep their order. Overflow policy: a delivery that does not
/// fit is dropped and logged (the edge is too slow to keep up; its clients recover missed channel
/// messages by sequence number when they reconnect).
const EDGE_QUEUE: usize = 16 * 1024;

enum EdgeCall {
    Deliver(wire::DeliverRequest),
    End(wire::EndSessionRequest),
}

/// An edge on another node, as an owner delivers to it: one ordered stream of calls (peer
/// deliveries included, so they keep their order too); receipts come back through
/// `Owner.Receipt` into [`Receipts`].
pub struct RemoteEdge {
    node: NodeId,
    /// The owner node delivering, which the edge reports receipts to.
    owner: NodeId,
    receipts: Arc<Receipts>,
    calls_tx: mpsc::Sender<EdgeCall>,
}

impl RemoteEdge {
    pub fn connect(
        node: NodeId,
        address: &str,
        owner: NodeId,
        receipts: Arc<Receipts>,
    ) -> Result<Arc<RemoteEdge>, Error> {
        let client = EdgeClient::new(lazy_channel(address)?);
        let (calls_tx, mut calls_rx) = mpsc::channel(EDGE_QUEUE);
        let mut sender = client;
        tokio::spawn(async move {
            while let Some(call) = calls_rx.recv().await {
                let sent = match call {
                    EdgeCall::Deliver(request) => sender.deliver(request).await.map(drop),
                    EdgeCall::End(request) => sender.end_session(request).await.map(drop),
                };
                if let Err(status) = sent {
                    tracing::warn!(edge = node.0, %status, "delivery to an edge failed");
                }
            }
        });
        Ok(Arc::new(RemoteEdge {
            node,
            owner,
            receipts,
            calls_tx,
        }))
    }

    fn queue(&self, call: EdgeCall) {
        if self.calls_tx.try_send(call).is_err() {
            tracing::warn!(edge = self.node.0, "edge queue full, dropping a delivery");
        }
    }
}

impl EdgeSink for RemoteEdge {
    fn deliver(&self, sessions: &[SessionId], frame: Arc<SharedFrame>) {
        self.queue(EdgeCall::Deliver(wire::DeliverRequest {
            sessions: sessions.iter().map(|session| session.0).collect(),
            frame: frame.message().encode_to_vec().into(),
            receipt_id: 0,
            receipt_to: 0,
            traceparent: frame.trace().unwrap_or_default().to_owned(),
        }));
    }

    fn deliver_peer(
        &self,
        session: SessionId,
        receipt_id: MessageId,
        frame: Arc<SharedFrame>,
        receipt: oneshot::Sender<()>,
    ) {
        self.receipts.wait(receipt_id.0, receipt);
        self.queue(EdgeCall::Deliver(wire::DeliverRequest {
            sessions: vec![session.0],
            frame: frame.message().encode_to_vec().into(),
            receipt_id: receipt_id.0,
            receipt_to: self.owner.0,
            traceparent: frame.trace().unwrap_or_default().to_owned(),
        }));
    }

    fn end_session(&self, session: SessionId, reason: Reason) {
        self.queue(EdgeCall::End(wire::EndSessionRequest {
            session: session.0,
            reason: reason as i32,
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use parley_core::app::MultiLogin;
    use parley_core::attributes::AttributeOp;
    use parley_core::ids::AppId;
    use parley_core::ids::ChannelId;
    use parley_core::ids::SessionRef;
    use parley_core::ids::UserId;
    use parley_proto::v1;
    use parley_store::Conversation;
    use parley_store::EventStream;
    use parley_store::HistoryQuery;
    use parley_store::Order;
    use parley_store::Restriction;
    use parley_store::Scope;
    use parley_store::StoredEvent;

    use super::*;
    use crate::api::ChannelKey;
    use crate::api::ChannelSent;
    use crate::api::Interest;
    use crate::api::InvitationRestore;
    use crate::api::LeaveReason;
    use crate::api::Moderation;
    use crate::api::PeerOutcome;
    use crate::api::RegionOrigin;
    use crate::api::Resume;
    use crate::api::UserKey;
    use crate::ops;

    fn app() -> AppId {
        AppId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn uid(raw: &str) -> UserId {
        UserId::parse(raw).unwrap()
    }

    fn user(raw: &str) -> UserKey {
        UserKey {
            app: app(),
            uid: uid(raw),
        }
    }

    fn channel() -> ChannelKey {
        ChannelKey {
            app: app(),
            channel: ChannelId::parse("room 1").unwrap(),
        }
    }

    fn session() -> SessionRef {
        SessionRef {
            edge: NodeId(2),
            session: SessionId(u64::MAX),
        }
    }

    fn body() -> v1::MessageBody {
        v1::MessageBody {
            description: "a picture".into(),
            content: Some(v1::message_body::Content::Raw(vec![0, 255, 7].into())),
        }
    }

    fn attribute() -> v1::ChannelAttribute {
        v1::ChannelAttribute {
            key: "topic".into(),
            value: "héllo".into(),
            last_update_user_id: "alice".into(),
            last_update_ts: 1_700_000_000_000,
        }
    }

    /// One request of every operation, with a response each, as the cluster carries them.
    fn samples() -> Vec<(Request, Response)> {
        let pairs = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        vec![
            (
                Request::OpenSession(ops::OpenSession {
                    user: user("alice"),
                    session: session(),
                    multi_login: MultiLogin::AllowMany,
                }),
                Response::OpenSession(()),
            ),
            (
                Request::SessionReady(ops::SessionReady {
                    user: user("alice"),
                    session: session(),
                }),
                Response::SessionReady(()),
            ),
            (
                Request::CloseSession(ops::CloseSession {
                    user: user("alice"),
                    session: session(),
                    reason: LeaveReason::ConnectionLost,
                }),
                Response::CloseSession(()),
            ),
            (
                Request::SetReachable(ops::SetReachable {
                    user: user("alice"),
                    session: session(),
                    reachable: false,
                }),
                Response::SetReachable(()),
            ),
            (
                Request::Join(ops::Join {
                    channel: channel(),
                    uid: uid("alice"),
                    session: session(),
                    resume: Resume::Handoff { after: 41 },
                }),
                Response::Join(42),
            ),
            (
                Request::Leave(ops::Leave {
                    channel: channel(),
                    uid: uid("alice"),
                    session: session(),
                    reason: LeaveReason::Left,
                }),
                Response::Leave(()),
            ),
            (
                Request::ChannelSend(ops::ChannelSend {
                    channel: channel(),
                    from: uid("alice"),
                    session: None,
                    message: body(),
                    enable_history: true,
                    origin: Some(RegionOrigin {
                        region: "eu".into(),
                        message_id: MessageId(u64::MAX - 1),
                        server_received_ts: -1,
                    }),
                    trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                }),
                Response::ChannelSend(ChannelSent {
                    message_id: MessageId(7),
                    server_received_ts: 8,
                    seq: 9,
                }),
            ),
            (
                Request::Members(ops::Members {
                    channel: channel(),
                    asker: Some((uid("alice"), session())),
                }),
                Response::Members(vec![uid("alice"), uid("b-o_b")]),
            ),
            (
                Request::MemberCount(ops::MemberCount { channel: channel() }),
                Response::MemberCount(u32::MAX),
            ),
            (
                Request::UpdateUserAttributes(ops::UpdateUserAttributes {
                    user: user("alice"),
                    op: AttributeOp::AddOrUpdate(pairs.clone()),
                }),
                Response::UpdateUserAttributes(()),
            ),
            (
                Request::UserAttributes(ops::UserAttributes {
                    user: user("alice"),
                    keys: vec!["a".into()],
                }),
                Response::UserAttributes(pairs.clone()),
            ),
            (
                Request::UpdateChannelAttributes(ops::UpdateChannelAttributes {
                    channel: channel(),
                    by: uid("alice"),
                    op: AttributeOp::DeleteKeys(vec!["a".into()]),
                    notify_members: true,
                }),
                Response::UpdateChannelAttributes(()),
            ),
            (
                Request::ChannelAttributes(ops::ChannelAttributes {
                    channel: channel(),
                    keys: Vec::new(),
                }),
                Response::ChannelAttributes(vec![attribute()]),
            ),
            (
                Request::Presence(ops::Presence {
                    user: user("alice"),
                }),
                Response::Presence(v1::PeerOnlineState::Unreachable),
            ),
            (
                Request::SubscribePresence(ops::SubscribePresence {
                    user: user("alice"),
                    subscriber: session(),
                }),
                Response::SubscribePresence(v1::PeerOnlineState::Online),
            ),
            (
                Request::UnsubscribePresence(ops::UnsubscribePresence {
                    user: user("alice"),
                    subscriber: session(),
                }),
                Response::UnsubscribePresence(()),
            ),
            (
                Request::InvitationSend(ops::InvitationSend {
                    caller: user("alice"),
                    caller_session: session(),
                    callee: uid("bob"),
                    content: "call".into(),
                    channel_id: "room".into(),
                    restore: Some(InvitationRestore {
                        invitation_id: 5,
                        age: Duration::from_millis(1500),
                        received: true,
                    }),
                }),
                Response::InvitationSend(5),
            ),
            (
                Request::CancelInvitation(ops::CancelInvitation {
                    callee: user("bob"),
                    caller: uid("alice"),
                    invitation_id: 5,
                }),
                Response::CancelInvitation(()),
            ),
            (
                Request::AnswerInvitation(ops::AnswerInvitation {
                    callee: user("bob"),
                    invitation_id: 5,
                    accept: false,
                    response: "busy".into(),
                }),
                Response::AnswerInvitation(()),
            ),
            (
                Request::QueryHistory(ops::QueryHistory {
                    app: app(),
                    conversation: Conversation::peers(uid("bob"), uid("alice")),
                    query: HistoryQuery {
                        start_ms: 0,
                        end_ms: i64::MAX,
                        limit: 100,
                        order: Order::Descending,
                        after: Some((3, 4)),
                    },
                }),
                Response::QueryHistory(vec![v1::HistoryMessage {
                    message_id: 1,
                    from: "alice".into(),
                    message: Some(body()),
                    server_received_ts: 2,
                    seq: 3,
                }]),
            ),
            (
                Request::CountHistory(ops::CountHistory {
                    app: app(),
                    conversation: Conversation::Channel(channel().channel),
                    start_ms: 1,
                    end_ms: 2,
                }),
                Response::CountHistory(10),
            ),
            (
                Request::Moderate(ops::Moderate {
                    action: Moderation::Mute {
                        channel: channel(),
                        uid: uid("bob"),
                        until_ms: 9,
                        reason: "spam".into(),
                    },
                }),
                Response::Moderate(true),
            ),
            (
                Request::Restrictions(ops::Restrictions {
                    app: app(),
                    scope: Scope::Login,
                }),
                Response::Restrictions(vec![Restriction {
                    uid: "bob".into(),
                    since_ms: 1,
                    until_ms: 2,
                    reason: "abuse".into(),
                }]),
            ),
            (
                Request::Events(ops::Events {
                    app: app(),
                    stream: EventStream::Channels,
                    after: 3,
                    limit: 4,
                }),
                Response::Events(vec![StoredEvent {
                    id: 1,
                    ts_ms: 2,
                    kind: "join".into(),
                    uid: "bob".into(),
                    channel_id: "room".into(),
                    reason: String::new(),
                }]),
            ),
            (
                Request::RegionInterest(ops::RegionInterest {
                    channel: channel(),
                    region: "us".into(),
                    interest: Interest {
                        members: 3,
                        fresh: true,
                    },
                }),
                Response::RegionInterest(()),
            ),
            (
                Request::RegionAttributes(ops::RegionAttributes {
                    channel: channel(),
                    attributes: vec![attribute()],
                    notify_members: true,
                }),
                Response::RegionAttributes(()),
            ),
            (
                Request::RegionCalleeEvent(ops::RegionCalleeEvent {
                    callee: user("bob"),
                    region: "us".into(),
                    event: v1::Event {
                        kind: Some(v1::event::Kind::RemoteInvitationCanceled(
                            v1::RemoteInvitationCanceled {
                                invitation_id: 5,
                                caller_id: "alice".into(),
                            },
                        )),
                    },
                    receipt: Some(5),
                }),
                Response::RegionCalleeEvent(()),
            ),
            (
                Request::RegionInvitationReceipt(ops::RegionInvitationReceipt {
                    callee: user("bob"),
                    invitation_id: 5,
                }),
                Response::RegionInvitationReceipt(()),
            ),
            (
                Request::RegionPeerOutcome(ops::RegionPeerOutcome {
                    user: user("bob"),
                    message_id: MessageId(6),
                    outcome: PeerOutcome::TimedOut,
                }),
                Response::RegionPeerOutcome(()),
            ),
        ]
    }

    #[test]
    fn every_operation_crosses_the_wire_unchanged() {
        let samples = samples();
        let covered: BTreeSet<&str> = samples.iter().map(|(request, _)| request.name()).collect();
        let all: BTreeSet<&str> = Request::NAMES.iter().copied().collect();
        assert_eq!(covered, all, "a sample of every operation");
        for (request, response) in samples {
            let decoded: Request = decode(&encode(&request).unwrap()).unwrap();
            assert_eq!(decoded, request);
            let decoded: Response = decode(&encode(&response).unwrap()).unwrap();
            assert_eq!(decoded, response);
        }
    }

    #[test]
    fn a_request_naming_an_invalid_id_is_refused_when_decoded() {
        let request = Request::Presence(ops::Presence {
            user: user("alice"),
        });
        let wire = String::from_utf8(encode(&request).unwrap())
            .unwrap()
            .replace("alice", "null");
        let error = decode::<Request>(wire.as_bytes()).unwrap_err();
        assert_eq!(error.code, ErrorCode::Internal);
    }
}
