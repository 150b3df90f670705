//! The owner API over the network: [`OwnerService`] serves a local owner to other nodes,
//! [`RemoteOwners`] is what an edge calls (it routes each call by the ring and implements
//! [`OwnerApi`]), and [`RemoteEdge`] is how an owner reaches an edge on another node (it
//! implements [`EdgeSink`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::Stream;
use futures_util::StreamExt;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::MultiLogin;
use parley_core::attributes::AttributeOp;
use parley_core::ids::AppId;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::ring::Ring;
use parley_proto::SharedFrame;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::edge_client::EdgeClient;
use parley_proto::cluster::v1::owner_client::OwnerClient;
use parley_proto::cluster::v1::owner_server;
use parley_proto::cluster_auth::ClusterChannel;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_store::Conversation;
use parley_store::EventStream;
use parley_store::HistoryQuery;
use parley_store::Order;
use parley_store::Restriction;
use parley_store::Scope;
use parley_store::StoredEvent;
use prost::Message;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::api::ChannelKey;
use crate::api::ChannelSend;
use crate::api::ChannelSent;
use crate::api::EdgeSink;
use crate::api::Interest;
use crate::api::InvitationRestore;
use crate::api::InvitationSend;
use crate::api::LeaveReason;
use crate::api::Moderation;
use crate::api::OpenSession;
use crate::api::OwnerApi;
use crate::api::PeerDispatch;
use crate::api::PeerOutcome;
use crate::api::PeerSend;
use crate::api::Resume;
use crate::api::UserKey;
use crate::wire::*;

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
    // A std lock: an insert or a remove per delivery, never held across an await.
    waiting: std::sync::Mutex<std::collections::HashMap<u64, oneshot::Sender<()>>>,
}

/// How long an owner waits to learn a ring epoch a caller already routes by.
const EPOCH_CATCH_UP: Duration = Duration::from_secs(1);

/// Waiting receipts kept before abandoned ones are swept.
const RECEIPT_SWEEP_AT: usize = 4096;

impl Receipts {
    fn wait(&self, receipt_id: u64) -> oneshot::Receiver<()> {
        let (receipt_tx, receipt_rx) = oneshot::channel();
        let mut waiting = self.waiting.lock().expect("receipt lock poisoned");
        if waiting.len() >= RECEIPT_SWEEP_AT {
            waiting.retain(|_, sender| !sender.is_closed());
        }
        waiting.insert(receipt_id, receipt_tx);
        receipt_rx
    }

    /// Completes (received) or drops (not received) the wait for `receipt_id`.
    fn settle(&self, receipt_id: u64, received: bool) {
        let waiting = self
            .waiting
            .lock()
            .expect("receipt lock poisoned")
            .remove(&receipt_id);
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

// ---- server ------------------------------------------------------------------------------------

/// Serves this node's owner to the cluster, refusing keys the ring gives to another node.
pub struct OwnerService {
    node: NodeId,
    owner: Arc<dyn OwnerApi>,
    topology: SharedTopology,
    receipts: Arc<Receipts>,
}

impl OwnerService {
    pub fn new(
        node: NodeId,
        owner: Arc<dyn OwnerApi>,
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
    async fn check(
        &self,
        epoch: u64,
        owner: impl Fn(&Ring) -> Option<NodeId>,
    ) -> Result<(), Status> {
        reach_epoch(&self.topology, epoch, EPOCH_CATCH_UP).await;
        let found = owner(&self.topology.borrow().ring);
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

    async fn check_user(&self, user: &UserKey, epoch: u64) -> Result<(), Status> {
        self.check(epoch, |ring| ring.user_owner(&user.app, &user.uid))
            .await
    }

    async fn check_channel(&self, channel: &ChannelKey, epoch: u64) -> Result<(), Status> {
        self.check(epoch, |ring| {
            ring.channel_owner(&channel.app, &channel.channel)
        })
        .await
    }
}

fn done() -> Result<Response<wire::Done>, Status> {
    Ok(Response::new(wire::Done {}))
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<wire::SendPeerProgress, Status>> + Send>>;

#[tonic::async_trait]
impl owner_server::Owner for OwnerService {
    async fn open_session(
        &self,
        request: Request<wire::OpenSessionRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let open = OpenSession {
            user,
            session: from_session_ref(request.session)?,
            multi_login: if request.allow_many {
                MultiLogin::AllowMany
            } else {
                MultiLogin::Replace
            },
        };
        self.owner.open_session(open).await.map_err(status_of)?;
        done()
    }

    async fn session_ready(
        &self,
        request: Request<wire::SessionRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let session = from_session_ref(request.session)?;
        self.owner
            .session_ready(user, session)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn close_session(
        &self,
        request: Request<wire::CloseSessionRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let reason = if request.connection_lost {
            LeaveReason::ConnectionLost
        } else {
            LeaveReason::Left
        };
        let session = from_session_ref(request.session)?;
        self.owner
            .close_session(user, session, reason)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn set_reachable(
        &self,
        request: Request<wire::SetReachableRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let session = from_session_ref(request.session)?;
        self.owner
            .set_reachable(user, session, request.reachable)
            .await
            .map_err(status_of)?;
        done()
    }

    type SendPeerStream = ProgressStream;

    async fn send_peer(
        &self,
        request: Request<wire::SendPeerRequest>,
    ) -> Result<Response<Self::SendPeerStream>, Status> {
        let request = request.into_inner();
        let from = from_user_key(request.from)?;
        let receiver = UserKey {
            app: from.app.clone(),
            uid: uid(&request.to)?,
        };
        self.check_user(&receiver, request.epoch).await?;
        let send = PeerSend {
            from,
            to: receiver.uid,
            message: request.message.ok_or_else(|| malformed("message"))?,
            enable_offline: request.enable_offline,
            enable_history: request.enable_history,
            origin: request.origin.map(from_region_origin),
            trace: trace_of(request.traceparent),
        };
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
        Ok(Response::new(Box::pin(stream)))
    }

    async fn join(
        &self,
        request: Request<wire::JoinRequest>,
    ) -> Result<Response<wire::JoinReply>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let last_seq = self
            .owner
            .join(
                channel,
                uid(&request.uid)?,
                from_session_ref(request.session)?,
                match (request.resume_after, request.handoff) {
                    (None, _) => Resume::Fresh,
                    (Some(after), false) => Resume::Client { after },
                    (Some(after), true) => Resume::Handoff { after },
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::JoinReply { last_seq }))
    }

    async fn leave(
        &self,
        request: Request<wire::LeaveRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let reason = if request.connection_lost {
            LeaveReason::ConnectionLost
        } else {
            LeaveReason::Left
        };
        self.owner
            .leave(
                channel,
                uid(&request.uid)?,
                from_session_ref(request.session)?,
                reason,
            )
            .await
            .map_err(status_of)?;
        done()
    }

    async fn send_channel(
        &self,
        request: Request<wire::SendChannelRequest>,
    ) -> Result<Response<wire::SendChannelReply>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let sent = self
            .owner
            .send_channel(ChannelSend {
                channel,
                from: uid(&request.from)?,
                session: request
                    .session
                    .map(|session| from_session_ref(Some(session)))
                    .transpose()?,
                message: request.message.ok_or_else(|| malformed("message"))?,
                enable_history: request.enable_history,
                origin: request.origin.map(from_region_origin),
                trace: trace_of(request.traceparent),
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::SendChannelReply {
            message_id: sent.message_id.0,
            server_received_ts: sent.server_received_ts,
            seq: sent.seq,
        }))
    }

    async fn members(
        &self,
        request: Request<wire::MembersRequest>,
    ) -> Result<Response<wire::MembersReply>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let members = self
            .owner
            .members(
                channel,
                match request.session {
                    Some(session) => Some((uid(&request.uid)?, from_session_ref(Some(session))?)),
                    None => None,
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::MembersReply {
            members: members.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn member_count(
        &self,
        request: Request<wire::ChannelRequest>,
    ) -> Result<Response<wire::MemberCountReply>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let count = self.owner.member_count(channel).await.map_err(status_of)?;
        Ok(Response::new(wire::MemberCountReply { count }))
    }

    async fn update_user_attributes(
        &self,
        request: Request<wire::UpdateUserAttributesRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let op = from_attribute_op(request.op)?;
        self.owner
            .update_user_attributes(user, op)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn user_attributes(
        &self,
        request: Request<wire::UserAttributesRequest>,
    ) -> Result<Response<wire::UserAttributesReply>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        let attributes = self
            .owner
            .user_attributes(user, request.keys)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::UserAttributesReply {
            attributes: attributes.into_iter().collect(),
        }))
    }

    async fn update_channel_attributes(
        &self,
        request: Request<wire::UpdateChannelAttributesRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let op = from_attribute_op(request.op)?;
        self.owner
            .update_channel_attributes(channel, uid(&request.by)?, op, request.notify_members)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn channel_attributes(
        &self,
        request: Request<wire::ChannelAttributesRequest>,
    ) -> Result<Response<wire::ChannelAttributesReply>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        let attributes = self
            .owner
            .channel_attributes(channel, request.keys)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::ChannelAttributesReply { attributes }))
    }

    async fn presence(
        &self,
        request: Request<wire::UserRequest>,
    ) -> Result<Response<wire::PresenceReply>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let state = self.owner.presence(user).await.map_err(status_of)?;
        Ok(Response::new(wire::PresenceReply {
            state: state as i32,
        }))
    }

    async fn subscribe_presence(
        &self,
        request: Request<wire::SubscribePresenceRequest>,
    ) -> Result<Response<wire::PresenceReply>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let subscriber = from_session_ref(request.subscriber)?;
        let state = self
            .owner
            .subscribe_presence(user, subscriber)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::PresenceReply {
            state: state as i32,
        }))
    }

    async fn unsubscribe_presence(
        &self,
        request: Request<wire::SubscribePresenceRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let subscriber = from_session_ref(request.subscriber)?;
        self.owner
            .unsubscribe_presence(user, subscriber)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn send_invitation(
        &self,
        request: Request<wire::SendInvitationRequest>,
    ) -> Result<Response<wire::SendInvitationReply>, Status> {
        let request = request.into_inner();
        let caller = from_user_key(request.caller)?;
        let callee = UserKey {
            app: caller.app.clone(),
            uid: uid(&request.callee)?,
        };
        self.check_user(&callee, request.epoch).await?;
        let invitation_id = self
            .owner
            .send_invitation(InvitationSend {
                caller,
                caller_session: from_session_ref(request.caller_session)?,
                callee: callee.uid,
                content: request.content,
                channel_id: request.channel_id,
                restore: (request.restore_id != 0).then(|| InvitationRestore {
                    invitation_id: request.restore_id,
                    age: Duration::from_millis(request.restore_age_ms),
                    received: request.restore_received,
                }),
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::SendInvitationReply { invitation_id }))
    }

    async fn cancel_invitation(
        &self,
        request: Request<wire::CancelInvitationRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let callee = from_user_key(request.callee)?;
        self.check_user(&callee, request.epoch).await?;
        self.owner
            .cancel_invitation(callee, uid(&request.caller)?, request.invitation_id)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn answer_invitation(
        &self,
        request: Request<wire::AnswerInvitationRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let callee = from_user_key(request.callee)?;
        self.check_user(&callee, request.epoch).await?;
        self.owner
            .answer_invitation(
                callee,
                request.invitation_id,
                request.accept,
                request.response,
            )
            .await
            .map_err(status_of)?;
        done()
    }

    async fn query_history(
        &self,
        request: Request<wire::QueryHistoryRequest>,
    ) -> Result<Response<wire::QueryHistoryReply>, Status> {
        let request = request.into_inner();
        let app = AppId::parse(&request.app_id).map_err(status_of)?;
        let query = HistoryQuery {
            start_ms: request.start_ms,
            end_ms: request.end_ms,
            limit: request.limit as usize,
            order: if request.descending {
                Order::Descending
            } else {
                Order::Ascending
            },
            after: request
                .has_after
                .then_some((request.after_ts, request.after_id)),
        };
        let conversation = from_conversation(request.conversation)?;
        let messages = self
            .owner
            .query_history(app, conversation, query)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::QueryHistoryReply { messages }))
    }

    async fn count_history(
        &self,
        request: Request<wire::CountHistoryRequest>,
    ) -> Result<Response<wire::CountHistoryReply>, Status> {
        let request = request.into_inner();
        let app = AppId::parse(&request.app_id).map_err(status_of)?;
        let conversation = from_conversation(request.conversation)?;
        let count = self
            .owner
            .count_history(app, conversation, request.start_ms, request.end_ms)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::CountHistoryReply { count }))
    }

    async fn moderate(
        &self,
        request: Request<wire::ModerateRequest>,
    ) -> Result<Response<wire::ModerateReply>, Status> {
        let request = request.into_inner();
        let epoch = request.epoch;
        let action = crate::wire::from_moderate_request(request)?;
        match &action {
            Moderation::Ban { user, .. } | Moderation::Unban { user } => {
                self.check_user(user, epoch).await?;
            }
            Moderation::Mute { channel, .. }
            | Moderation::Unmute { channel, .. }
            | Moderation::Kick { channel, .. } => self.check_channel(channel, epoch).await?,
        }
        let changed = self.owner.moderate(action).await.map_err(status_of)?;
        Ok(Response::new(wire::ModerateReply { changed }))
    }

    async fn restrictions(
        &self,
        request: Request<wire::RestrictionsRequest>,
    ) -> Result<Response<wire::RestrictionsReply>, Status> {
        let request = request.into_inner();
        let app = AppId::parse(&request.app_id).map_err(status_of)?;
        let scope = crate::wire::scope_of(&request.channel_id)?;
        let restrictions = self
            .owner
            .restrictions(app, scope)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::RestrictionsReply {
            restrictions: restrictions
                .into_iter()
                .map(crate::wire::restriction)
                .collect(),
        }))
    }

    async fn events(
        &self,
        request: Request<wire::EventsRequest>,
    ) -> Result<Response<wire::EventsReply>, Status> {
        let request = request.into_inner();
        let app = AppId::parse(&request.app_id).map_err(status_of)?;
        let stream = crate::wire::stream_of(&request.stream)?;
        let events = self
            .owner
            .events(app, stream, request.after, request.limit as usize)
            .await
            .map_err(status_of)?;
        Ok(Response::new(wire::EventsReply {
            events: events.into_iter().map(crate::wire::event).collect(),
        }))
    }

    async fn region_interest(
        &self,
        request: Request<wire::RegionInterestRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        self.owner
            .region_interest(
                channel,
                request.region,
                from_region_interest(request.interest.unwrap_or_default()),
            )
            .await
            .map_err(status_of)?;
        done()
    }

    async fn region_attributes(
        &self,
        request: Request<wire::RegionAttributesRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let channel = from_channel_key(request.channel)?;
        self.check_channel(&channel, request.epoch).await?;
        let set = request.attributes.unwrap_or_default();
        self.owner
            .region_attributes(channel, set.attributes, set.notify_members)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn region_callee_event(
        &self,
        request: Request<wire::RegionCalleeEventRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let callee = from_user_key(request.callee)?;
        self.check_user(&callee, request.epoch).await?;
        let event = request.event.ok_or_else(|| malformed("event"))?;
        let receipt = (event.receipt_invitation_id != 0).then_some(event.receipt_invitation_id);
        self.owner
            .region_callee_event(
                callee,
                request.region,
                event.event.ok_or_else(|| malformed("event"))?,
                receipt,
            )
            .await
            .map_err(status_of)?;
        done()
    }

    async fn region_invitation_receipt(
        &self,
        request: Request<wire::RegionInvitationReceiptRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let callee = from_user_key(request.callee)?;
        self.check_user(&callee, request.epoch).await?;
        self.owner
            .region_invitation_receipt(callee, request.invitation_id)
            .await
            .map_err(status_of)?;
        done()
    }

    async fn region_peer_outcome(
        &self,
        request: Request<wire::RegionPeerOutcomeRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        let user = from_user_key(request.user)?;
        self.check_user(&user, request.epoch).await?;
        let outcome =
            wire::PeerOutcome::try_from(request.outcome).map_err(|_| malformed("outcome"))?;
        self.owner
            .region_peer_outcome(
                user,
                MessageId(request.message_id),
                from_peer_outcome(outcome),
            )
            .await
            .map_err(status_of)?;
        done()
    }

    async fn receipt(
        &self,
        request: Request<wire::ReceiptRequest>,
    ) -> Result<Response<wire::Done>, Status> {
        let request = request.into_inner();
        self.receipts.settle(request.receipt_id, request.received);
        done()
    }
}

// ---- client ------------------------------------------------------------------------------------

/// Requests that carry the ring epoch they were routed by.
trait Routed: Clone {
    fn set_epoch(&mut self, epoch: u64);
}

macro_rules! routed {
    ($($request:ident),* $(,)?) => {
        $(impl Routed for wire::$request {
            fn set_epoch(&mut self, epoch: u64) {
                self.epoch = epoch;
            }
        })*
    };
}

routed!(
    AnswerInvitationRequest,
    CancelInvitationRequest,
    ChannelAttributesRequest,
    ChannelRequest,
    CloseSessionRequest,
    JoinRequest,
    LeaveRequest,
    MembersRequest,
    ModerateRequest,
    OpenSessionRequest,
    RegionAttributesRequest,
    RegionCalleeEventRequest,
    RegionInterestRequest,
    RegionInvitationReceiptRequest,
    RegionPeerOutcomeRequest,
    SendChannelRequest,
    SendInvitationRequest,
    SendPeerRequest,
    SessionRequest,
    SetReachableRequest,
    SubscribePresenceRequest,
    UpdateChannelAttributesRequest,
    UpdateUserAttributesRequest,
    UserAttributesRequest,
    UserRequest
);

/// A copy of `request` stamped with `epoch`, for one attempt.
fn stamped<R: Routed>(request: &R, epoch: u64) -> R {
    let mut request = request.clone();
    request.set_epoch(epoch);
    request
}

/// Where a call goes: the owner in this process, or another node.
enum Route {
    Local(Arc<dyn OwnerApi>),
    Remote(NodeId),
}

/// The owners as an edge sees them: each call goes to the owner of its key, in-process when that
/// is this node, over gRPC otherwise, once more to the node named by a "not the owner" answer.
pub struct RemoteOwners {
    topology: SharedTopology,
    local: Option<(NodeId, Arc<dyn OwnerApi>)>,
    // A std lock: a lookup or an insert per call, never held across an await.
    clients: RwLock<BTreeMap<NodeId, OwnerClient<ClusterChannel>>>,
}

impl RemoteOwners {
    pub fn new(topology: SharedTopology, local: Option<(NodeId, Arc<dyn OwnerApi>)>) -> Self {
        RemoteOwners {
            topology,
            local,
            clients: RwLock::new(BTreeMap::new()),
        }
    }

    fn client(&self, node: NodeId) -> Result<OwnerClient<ClusterChannel>, Error> {
        if let Some(client) = self
            .clients
            .read()
            .expect("client lock poisoned")
            .get(&node)
        {
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
        self.clients
            .write()
            .expect("client lock poisoned")
            .insert(node, client.clone());
        Ok(client)
    }

    fn route(&self, owner: impl FnOnce(&Ring) -> Option<NodeId>) -> Result<Route, Error> {
        let node = owner(&self.topology.borrow().ring)
            .ok_or_else(|| Error::new(ErrorCode::Unavailable, "no owner nodes"))?;
        Ok(match &self.local {
            Some((local, owner)) if *local == node => Route::Local(owner.clone()),
            _ => Route::Remote(node),
        })
    }

    fn user_route(&self, user: &UserKey) -> Result<Route, Error> {
        self.route(|ring| ring.user_owner(&user.app, &user.uid))
    }

    fn channel_route(&self, channel: &ChannelKey) -> Result<Route, Error> {
        self.route(|ring| ring.channel_owner(&channel.app, &channel.channel))
    }

    /// Any owner will do (reads that go straight to the shared store).
    fn any_route(&self) -> Result<Route, Error> {
        if let Some((_, owner)) = &self.local {
            return Ok(Route::Local(owner.clone()));
        }
        self.route(|ring| ring.nodes().first().copied())
    }

    fn epoch(&self) -> u64 {
        self.topology.borrow().ring.epoch()
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

    /// Calls `node`; if it answers that another node owns the key, calls that one instead.
    async fn remote<T, F, Fut>(&self, node: NodeId, call: F) -> Result<T, Error>
    where
        F: Fn(OwnerClient<ClusterChannel>, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let epoch = self.epoch();
        match call(self.client(node)?, epoch).await {
            Ok(value) => Ok(value),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let owner = status
                    .metadata()
                    .get(OWNER_KEY)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .map(NodeId)
                    .ok_or_else(|| error_of(&status))?;
                call(self.client(owner)?, epoch)
                    .await
                    .map_err(|status| error_of(&status))
            }
            Err(status) => Err(error_of(&status)),
        }
    }
}

#[async_trait]
impl OwnerApi for RemoteOwners {
    async fn open_session(&self, open: OpenSession) -> Result<(), Error> {
        match self.user_route(&open.user)? {
            Route::Local(owner) => owner.open_session(open).await,
            Route::Remote(node) => {
                let request = wire::OpenSessionRequest {
                    epoch: 0,
                    user: Some(user_key(&open.user)),
                    session: Some(session_ref(open.session)),
                    allow_many: open.multi_login == MultiLogin::AllowMany,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.open_session(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn session_ready(&self, user: UserKey, session: SessionRef) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.session_ready(user, session).await,
            Route::Remote(node) => {
                let request = wire::SessionRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    session: Some(session_ref(session)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.session_ready(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn close_session(
        &self,
        user: UserKey,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.close_session(user, session, reason).await,
            Route::Remote(node) => {
                let request = wire::CloseSessionRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    session: Some(session_ref(session)),
                    connection_lost: reason == LeaveReason::ConnectionLost,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.close_session(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn set_reachable(
        &self,
        user: UserKey,
        session: SessionRef,
        reachable: bool,
    ) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.set_reachable(user, session, reachable).await,
            Route::Remote(node) => {
                let request = wire::SetReachableRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    session: Some(session_ref(session)),
                    reachable,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.set_reachable(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn send_peer(&self, send: PeerSend) -> Result<PeerDispatch, Error> {
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to.clone(),
        };
        let node = match self.user_route(&receiver)? {
            Route::Local(owner) => return owner.send_peer(send).await,
            Route::Remote(node) => node,
        };
        let request = wire::SendPeerRequest {
            epoch: 0,
            from: Some(user_key(&send.from)),
            to: send.to.to_string(),
            message: Some(send.message),
            enable_offline: send.enable_offline,
            enable_history: send.enable_history,
            origin: send.origin.map(region_origin),
            traceparent: send.trace.unwrap_or_default(),
        };
        let mut progress = self
            .remote(node, |mut client, epoch| {
                let request = stamped(&request, epoch);
                async move { client.send_peer(request).await.map(Response::into_inner) }
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

    async fn join(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        resume: Resume,
    ) -> Result<u64, Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => owner.join(channel, uid, session, resume).await,
            Route::Remote(node) => {
                let (resume_after, handoff) = match resume {
                    Resume::Fresh => (None, false),
                    Resume::Client { after } => (Some(after), false),
                    Resume::Handoff { after } => (Some(after), true),
                };
                let request = wire::JoinRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    uid: uid.to_string(),
                    session: Some(session_ref(session)),
                    resume_after,
                    handoff,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .join(request)
                            .await
                            .map(|reply| reply.into_inner().last_seq)
                    }
                })
                .await
            }
        }
    }

    async fn leave(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => owner.leave(channel, uid, session, reason).await,
            Route::Remote(node) => {
                let request = wire::LeaveRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    uid: uid.to_string(),
                    session: Some(session_ref(session)),
                    connection_lost: reason == LeaveReason::ConnectionLost,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.leave(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn send_channel(&self, send: ChannelSend) -> Result<ChannelSent, Error> {
        match self.channel_route(&send.channel)? {
            Route::Local(owner) => owner.send_channel(send).await,
            Route::Remote(node) => {
                let request = wire::SendChannelRequest {
                    epoch: 0,
                    channel: Some(channel_key(&send.channel)),
                    from: send.from.to_string(),
                    session: send.session.map(session_ref),
                    message: Some(send.message),
                    enable_history: send.enable_history,
                    origin: send.origin.map(region_origin),
                    traceparent: send.trace.unwrap_or_default(),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client.send_channel(request).await.map(|reply| {
                            let reply = reply.into_inner();
                            ChannelSent {
                                message_id: MessageId(reply.message_id),
                                server_received_ts: reply.server_received_ts,
                                seq: reply.seq,
                            }
                        })
                    }
                })
                .await
            }
        }
    }

    async fn members(
        &self,
        channel: ChannelKey,
        asker: Option<(UserId, SessionRef)>,
    ) -> Result<Vec<UserId>, Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => owner.members(channel, asker).await,
            Route::Remote(node) => {
                let request = wire::MembersRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    uid: asker
                        .as_ref()
                        .map(|(uid, _)| uid.to_string())
                        .unwrap_or_default(),
                    session: asker.map(|(_, session)| session_ref(session)),
                };
                let members = self
                    .remote(node, |mut client, epoch| {
                        let request = stamped(&request, epoch);
                        async move {
                            client
                                .members(request)
                                .await
                                .map(|reply| reply.into_inner().members)
                        }
                    })
                    .await?;
                members.iter().map(|member| UserId::parse(member)).collect()
            }
        }
    }

    async fn member_count(&self, channel: ChannelKey) -> Result<u32, Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => owner.member_count(channel).await,
            Route::Remote(node) => {
                let request = wire::ChannelRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .member_count(request)
                            .await
                            .map(|reply| reply.into_inner().count)
                    }
                })
                .await
            }
        }
    }

    async fn update_user_attributes(&self, user: UserKey, op: AttributeOp) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.update_user_attributes(user, op).await,
            Route::Remote(node) => {
                let request = wire::UpdateUserAttributesRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    op: Some(attribute_op(&op)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.update_user_attributes(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn user_attributes(
        &self,
        user: UserKey,
        keys: Vec<String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        match self.any_route()? {
            Route::Local(owner) => owner.user_attributes(user, keys).await,
            Route::Remote(node) => {
                let request = wire::UserAttributesRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    keys,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .user_attributes(request)
                            .await
                            .map(|reply| reply.into_inner().attributes.into_iter().collect())
                    }
                })
                .await
            }
        }
    }

    async fn update_channel_attributes(
        &self,
        channel: ChannelKey,
        by: UserId,
        op: AttributeOp,
        notify_members: bool,
    ) -> Result<(), Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => {
                owner
                    .update_channel_attributes(channel, by, op, notify_members)
                    .await
            }
            Route::Remote(node) => {
                let request = wire::UpdateChannelAttributesRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    by: by.to_string(),
                    op: Some(attribute_op(&op)),
                    notify_members,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.update_channel_attributes(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn channel_attributes(
        &self,
        channel: ChannelKey,
        keys: Vec<String>,
    ) -> Result<Vec<v1::ChannelAttribute>, Error> {
        match self.any_route()? {
            Route::Local(owner) => owner.channel_attributes(channel, keys).await,
            Route::Remote(node) => {
                let request = wire::ChannelAttributesRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    keys,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .channel_attributes(request)
                            .await
                            .map(|reply| reply.into_inner().attributes)
                    }
                })
                .await
            }
        }
    }

    async fn presence(&self, user: UserKey) -> Result<v1::PeerOnlineState, Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.presence(user).await,
            Route::Remote(node) => {
                let request = wire::UserRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client.presence(request).await.map(|reply| {
                            v1::PeerOnlineState::try_from(reply.into_inner().state)
                                .unwrap_or(v1::PeerOnlineState::Offline)
                        })
                    }
                })
                .await
            }
        }
    }

    async fn subscribe_presence(
        &self,
        user: UserKey,
        subscriber: SessionRef,
    ) -> Result<v1::PeerOnlineState, Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.subscribe_presence(user, subscriber).await,
            Route::Remote(node) => {
                let request = wire::SubscribePresenceRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    subscriber: Some(session_ref(subscriber)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client.subscribe_presence(request).await.map(|reply| {
                            v1::PeerOnlineState::try_from(reply.into_inner().state)
                                .unwrap_or(v1::PeerOnlineState::Offline)
                        })
                    }
                })
                .await
            }
        }
    }

    async fn unsubscribe_presence(
        &self,
        user: UserKey,
        subscriber: SessionRef,
    ) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.unsubscribe_presence(user, subscriber).await,
            Route::Remote(node) => {
                let request = wire::SubscribePresenceRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    subscriber: Some(session_ref(subscriber)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.unsubscribe_presence(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn send_invitation(&self, send: InvitationSend) -> Result<u64, Error> {
        let callee = UserKey {
            app: send.caller.app.clone(),
            uid: send.callee.clone(),
        };
        match self.user_route(&callee)? {
            Route::Local(owner) => owner.send_invitation(send).await,
            Route::Remote(node) => {
                let request = wire::SendInvitationRequest {
                    epoch: 0,
                    caller: Some(user_key(&send.caller)),
                    caller_session: Some(session_ref(send.caller_session)),
                    callee: send.callee.to_string(),
                    content: send.content,
                    channel_id: send.channel_id,
                    restore_id: send.restore.map_or(0, |restore| restore.invitation_id),
                    restore_age_ms: send
                        .restore
                        .map_or(0, |restore| restore.age.as_millis() as u64),
                    restore_received: send.restore.is_some_and(|restore| restore.received),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .send_invitation(request)
                            .await
                            .map(|reply| reply.into_inner().invitation_id)
                    }
                })
                .await
            }
        }
    }

    async fn cancel_invitation(
        &self,
        callee: UserKey,
        caller: UserId,
        invitation_id: u64,
    ) -> Result<(), Error> {
        match self.user_route(&callee)? {
            Route::Local(owner) => owner.cancel_invitation(callee, caller, invitation_id).await,
            Route::Remote(node) => {
                let request = wire::CancelInvitationRequest {
                    epoch: 0,
                    callee: Some(user_key(&callee)),
                    caller: caller.to_string(),
                    invitation_id,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.cancel_invitation(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn answer_invitation(
        &self,
        callee: UserKey,
        invitation_id: u64,
        accept: bool,
        response: String,
    ) -> Result<(), Error> {
        match self.user_route(&callee)? {
            Route::Local(owner) => {
                owner
                    .answer_invitation(callee, invitation_id, accept, response)
                    .await
            }
            Route::Remote(node) => {
                let request = wire::AnswerInvitationRequest {
                    epoch: 0,
                    callee: Some(user_key(&callee)),
                    invitation_id,
                    accept,
                    response,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.answer_invitation(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn query_history(
        &self,
        app: AppId,
        conversation: Conversation,
        query: HistoryQuery,
    ) -> Result<Vec<v1::HistoryMessage>, Error> {
        match self.any_route()? {
            Route::Local(owner) => owner.query_history(app, conversation, query).await,
            Route::Remote(node) => {
                let (after_ts, after_id) = query.after.unwrap_or_default();
                let request = wire::QueryHistoryRequest {
                    app_id: app.to_string(),
                    conversation: Some(crate::wire::conversation(&conversation)),
                    start_ms: query.start_ms,
                    end_ms: query.end_ms,
                    limit: u32::try_from(query.limit).unwrap_or(u32::MAX),
                    descending: query.order == Order::Descending,
                    after_ts,
                    after_id,
                    has_after: query.after.is_some(),
                };
                self.remote(node, |mut client, _| {
                    let request = request.clone();
                    async move {
                        client
                            .query_history(request)
                            .await
                            .map(|reply| reply.into_inner().messages)
                    }
                })
                .await
            }
        }
    }

    async fn count_history(
        &self,
        app: AppId,
        conversation: Conversation,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<u64, Error> {
        match self.any_route()? {
            Route::Local(owner) => {
                owner
                    .count_history(app, conversation, start_ms, end_ms)
                    .await
            }
            Route::Remote(node) => {
                let request = wire::CountHistoryRequest {
                    app_id: app.to_string(),
                    conversation: Some(crate::wire::conversation(&conversation)),
                    start_ms,
                    end_ms,
                };
                self.remote(node, |mut client, _| {
                    let request = request.clone();
                    async move {
                        client
                            .count_history(request)
                            .await
                            .map(|reply| reply.into_inner().count)
                    }
                })
                .await
            }
        }
    }

    async fn moderate(&self, action: Moderation) -> Result<bool, Error> {
        let route = match &action {
            Moderation::Ban { user, .. } | Moderation::Unban { user } => self.user_route(user)?,
            Moderation::Mute { channel, .. }
            | Moderation::Unmute { channel, .. }
            | Moderation::Kick { channel, .. } => self.channel_route(channel)?,
        };
        match route {
            Route::Local(owner) => owner.moderate(action).await,
            Route::Remote(node) => {
                let request = crate::wire::moderate_request(&action);
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move {
                        client
                            .moderate(request)
                            .await
                            .map(|reply| reply.into_inner().changed)
                    }
                })
                .await
            }
        }
    }

    async fn restrictions(&self, app: AppId, scope: Scope) -> Result<Vec<Restriction>, Error> {
        match self.any_route()? {
            Route::Local(owner) => owner.restrictions(app, scope).await,
            Route::Remote(node) => {
                let request = wire::RestrictionsRequest {
                    app_id: app.to_string(),
                    channel_id: match &scope {
                        Scope::Login => String::new(),
                        Scope::Channel(channel) => channel.to_string(),
                    },
                };
                self.remote(node, |mut client, _| {
                    let request = request.clone();
                    async move {
                        client.restrictions(request).await.map(|reply| {
                            reply
                                .into_inner()
                                .restrictions
                                .into_iter()
                                .map(crate::wire::from_restriction)
                                .collect()
                        })
                    }
                })
                .await
            }
        }
    }

    async fn events(
        &self,
        app: AppId,
        stream: EventStream,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, Error> {
        match self.any_route()? {
            Route::Local(owner) => owner.events(app, stream, after, limit).await,
            Route::Remote(node) => {
                let request = wire::EventsRequest {
                    app_id: app.to_string(),
                    stream: stream.as_str().to_owned(),
                    after,
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                };
                self.remote(node, |mut client, _| {
                    let request = request.clone();
                    async move {
                        client.events(request).await.map(|reply| {
                            reply
                                .into_inner()
                                .events
                                .into_iter()
                                .map(crate::wire::from_event)
                                .collect()
                        })
                    }
                })
                .await
            }
        }
    }

    async fn region_interest(
        &self,
        channel: ChannelKey,
        region: String,
        interest: Interest,
    ) -> Result<(), Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => owner.region_interest(channel, region, interest).await,
            Route::Remote(node) => {
                let request = wire::RegionInterestRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    region,
                    interest: Some(region_interest(interest)),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.region_interest(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn region_attributes(
        &self,
        channel: ChannelKey,
        attributes: Vec<parley_proto::v1::ChannelAttribute>,
        notify_members: bool,
    ) -> Result<(), Error> {
        match self.channel_route(&channel)? {
            Route::Local(owner) => {
                owner
                    .region_attributes(channel, attributes, notify_members)
                    .await
            }
            Route::Remote(node) => {
                let request = wire::RegionAttributesRequest {
                    epoch: 0,
                    channel: Some(channel_key(&channel)),
                    attributes: Some(wire::RegionAttributes {
                        attributes,
                        notify_members,
                    }),
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.region_attributes(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn region_callee_event(
        &self,
        callee: UserKey,
        region: String,
        event: parley_proto::v1::Event,
        receipt: Option<u64>,
    ) -> Result<(), Error> {
        match self.user_route(&callee)? {
            Route::Local(owner) => {
                owner
                    .region_callee_event(callee, region, event, receipt)
                    .await
            }
            Route::Remote(node) => {
                let request = wire::RegionCalleeEventRequest {
                    epoch: 0,
                    callee: Some(user_key(&callee)),
                    event: Some(wire::RegionCalleeEvent {
                        callee: callee.uid.to_string(),
                        event: Some(event),
                        receipt_invitation_id: receipt.unwrap_or(0),
                    }),
                    region,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.region_callee_event(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn region_invitation_receipt(
        &self,
        callee: UserKey,
        invitation_id: u64,
    ) -> Result<(), Error> {
        match self.user_route(&callee)? {
            Route::Local(owner) => owner.region_invitation_receipt(callee, invitation_id).await,
            Route::Remote(node) => {
                let request = wire::RegionInvitationReceiptRequest {
                    epoch: 0,
                    callee: Some(user_key(&callee)),
                    invitation_id,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.region_invitation_receipt(request).await.map(drop) }
                })
                .await
            }
        }
    }

    async fn region_peer_outcome(
        &self,
        user: UserKey,
        message_id: MessageId,
        outcome: PeerOutcome,
    ) -> Result<(), Error> {
        match self.user_route(&user)? {
            Route::Local(owner) => owner.region_peer_outcome(user, message_id, outcome).await,
            Route::Remote(node) => {
                let request = wire::RegionPeerOutcomeRequest {
                    epoch: 0,
                    user: Some(user_key(&user)),
                    message_id: message_id.0,
                    outcome: peer_outcome(outcome) as i32,
                };
                self.remote(node, |mut client, epoch| {
                    let request = stamped(&request, epoch);
                    async move { client.region_peer_outcome(request).await.map(drop) }
                })
                .await
            }
        }
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
    ) -> oneshot::Receiver<()> {
        let receipt_rx = self.receipts.wait(receipt_id.0);
        self.queue(EdgeCall::Deliver(wire::DeliverRequest {
            sessions: vec![session.0],
            frame: frame.message().encode_to_vec().into(),
            receipt_id: receipt_id.0,
            receipt_to: self.owner.0,
            traceparent: frame.trace().unwrap_or_default().to_owned(),
        }));
        receipt_rx
    }

    fn end_session(&self, session: SessionId, reason: Reason) {
        self.queue(EdgeCall::End(wire::EndSessionRequest {
            session: session.0,
            reason: reason as i32,
        }));
    }
}
