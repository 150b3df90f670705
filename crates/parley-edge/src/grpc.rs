//! The server API over gRPC (`proto/parley/server/v1/server.proto`), on the edge's HTTP port:
//! the operations of `server_api.rs`, with credentials read from request metadata.

use std::sync::Arc;

use parley_core::Error;
use parley_proto::grpc_error;
use parley_proto::server::v1 as api;
use parley_proto::server::v1::server_api_server::ServerApi;
use parley_proto::server::v1::server_api_server::ServerApiServer;
use parley_store::Restriction;
use parley_store::Scope;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::edge::Edge;
use crate::server_api;
use crate::server_api::Call;
use crate::server_api::Failure;

/// The routes of the gRPC server API, to merge into the edge's router.
pub fn routes(edge: Arc<Edge>) -> axum::Router {
    tonic::service::Routes::new(ServerApiServer::new(GrpcApi { edge })).into_axum_router()
}

struct GrpcApi {
    edge: Arc<Edge>,
}

/// A failure as a gRPC status, with the same meaning as the REST API's HTTP status.
fn status_of(error: Error) -> Status {
    let code = match server_api::failure(error.code) {
        Failure::Unauthenticated => tonic::Code::Unauthenticated,
        Failure::Forbidden => tonic::Code::PermissionDenied,
        Failure::NotFound => tonic::Code::NotFound,
        Failure::BadRequest => tonic::Code::InvalidArgument,
        Failure::Conflict => tonic::Code::FailedPrecondition,
        Failure::TooOften => tonic::Code::ResourceExhausted,
        Failure::Timeout => tonic::Code::DeadlineExceeded,
        Failure::Unavailable => tonic::Code::Unavailable,
        Failure::Internal => tonic::Code::Internal,
    };
    grpc_error::status(code, error.code, error.message)
}

type GrpcResult<T> = Result<Response<T>, Status>;

impl GrpcApi {
    /// Checks the call's credentials (metadata) against `app_id`.
    fn authorize<T>(&self, request: &Request<T>, app_id: &str) -> Result<Call, Status> {
        let metadata = request.metadata();
        server_api::authorize(&self.edge, app_id, |name| {
            metadata.get(name).and_then(|value| value.to_str().ok())
        })
        .map_err(status_of)
    }
}

fn reply<T>(result: Result<T, Error>) -> GrpcResult<T> {
    result.map(Response::new).map_err(status_of)
}

fn restriction(restriction: Restriction) -> api::Restriction {
    api::Restriction {
        uid: restriction.uid,
        since_ts: restriction.since_ms,
        until_ts: restriction.until_ms,
        reason: restriction.reason,
    }
}

fn history_range(request: &api::HistoryRequest) -> server_api::HistoryRange {
    server_api::HistoryRange {
        start: request.start,
        end: request.end,
        limit: request.limit as usize,
        descending: request.descending,
        cursor: Some(request.cursor.clone()),
    }
}

fn conversation(
    call: &Call,
    request: &api::HistoryRequest,
) -> Result<parley_store::Conversation, Error> {
    match &request.conversation {
        Some(api::history_request::Conversation::ChannelId(channel)) => {
            server_api::channel_conversation(call, channel)
        }
        Some(api::history_request::Conversation::Peer(peer)) => {
            server_api::peer_conversation(call, &peer.uid, &peer.peer_id)
        }
        None => Err(Error::invalid_argument(
            "name a channel_id or a peer conversation",
        )),
    }
}

#[tonic::async_trait]
impl ServerApi for GrpcApi {
    async fn send_peer_message(
        &self,
        request: Request<api::SendPeerMessageRequest>,
    ) -> GrpcResult<api::SendPeerMessageReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let send = request.into_inner();
        let sent = server_api::send_peer(
            &self.edge,
            &call,
            server_api::PeerMessage {
                from: send.from,
                to: send.to,
                message: send.message,
                enable_offline: send.enable_offline_messaging,
                enable_history: send.enable_historical_messaging,
                wait_for_ack: send.wait_for_ack,
            },
        )
        .await;
        reply(sent.map(|sent| api::SendPeerMessageReply {
            message_id: sent.message_id.0,
            server_received_ts: sent.server_received_ts,
            result: sent.result.to_owned(),
        }))
    }

    async fn send_channel_message(
        &self,
        request: Request<api::SendChannelMessageRequest>,
    ) -> GrpcResult<api::SendChannelMessageReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let send = request.into_inner();
        let sent = server_api::send_channel(
            &self.edge,
            &call,
            &send.from,
            &send.channel_id,
            send.message,
            send.enable_historical_messaging,
        )
        .await;
        reply(sent.map(|sent| api::SendChannelMessageReply {
            message_id: sent.message_id.0,
            server_received_ts: sent.server_received_ts,
            seq: sent.seq,
        }))
    }

    async fn user_status(
        &self,
        request: Request<api::UserRequest>,
    ) -> GrpcResult<api::UserStatusReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let status = server_api::user_status(&self.edge, &call, &request.get_ref().uid).await;
        reply(status.map(|(uid, state)| api::UserStatusReply {
            uid: uid.to_string(),
            state: state as i32,
        }))
    }

    async fn channel_member_count(
        &self,
        request: Request<api::ChannelRequest>,
    ) -> GrpcResult<api::ChannelMemberCountReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let count =
            server_api::member_count(&self.edge, &call, &request.get_ref().channel_id).await;
        reply(count.map(|count| api::ChannelMemberCountReply { count }))
    }

    async fn channel_members(
        &self,
        request: Request<api::ChannelRequest>,
    ) -> GrpcResult<api::ChannelMembersReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let members = server_api::members(&self.edge, &call, &request.get_ref().channel_id).await;
        reply(members.map(|members| api::ChannelMembersReply {
            members: members.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn query_history(
        &self,
        request: Request<api::HistoryRequest>,
    ) -> GrpcResult<api::QueryHistoryReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let request = request.into_inner();
        let conversation = conversation(&call, &request).map_err(status_of)?;
        let page =
            server_api::history_page(&self.edge, &call, conversation, history_range(&request))
                .await;
        reply(page.map(|(messages, next)| api::QueryHistoryReply { messages, next }))
    }

    async fn count_history(
        &self,
        request: Request<api::HistoryRequest>,
    ) -> GrpcResult<api::CountHistoryReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let request = request.into_inner();
        let conversation = conversation(&call, &request).map_err(status_of)?;
        let count =
            server_api::history_count(&self.edge, &call, conversation, history_range(&request))
                .await;
        reply(count.map(|count| api::CountHistoryReply { count }))
    }

    async fn ban(&self, request: Request<api::RestrictRequest>) -> GrpcResult<api::RestrictReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let ban = request.into_inner();
        let until = server_api::restrict(
            &self.edge,
            &call,
            Scope::Login,
            &ban.uid,
            ban.duration_seconds,
            ban.reason,
        )
        .await;
        reply(until.map(|until_ts| api::RestrictReply { until_ts }))
    }

    async fn unban(&self, request: Request<api::LiftRequest>) -> GrpcResult<api::LiftReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let lifted =
            server_api::lift(&self.edge, &call, Scope::Login, &request.get_ref().uid).await;
        reply(lifted.map(|lifted| api::LiftReply { lifted }))
    }

    async fn list_bans(
        &self,
        request: Request<api::ListRestrictionsRequest>,
    ) -> GrpcResult<api::ListRestrictionsReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let bans = server_api::restrictions(&self.edge, &call, Scope::Login).await;
        reply(bans.map(|bans| api::ListRestrictionsReply {
            restrictions: bans.into_iter().map(restriction).collect(),
        }))
    }

    async fn mute(&self, request: Request<api::RestrictRequest>) -> GrpcResult<api::RestrictReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let mute = request.into_inner();
        let scope = server_api::channel_scope(&mute.channel_id).map_err(status_of)?;
        let until = server_api::restrict(
            &self.edge,
            &call,
            scope,
            &mute.uid,
            mute.duration_seconds,
            mute.reason,
        )
        .await;
        reply(until.map(|until_ts| api::RestrictReply { until_ts }))
    }

    async fn unmute(&self, request: Request<api::LiftRequest>) -> GrpcResult<api::LiftReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let lift = request.into_inner();
        let scope = server_api::channel_scope(&lift.channel_id).map_err(status_of)?;
        let lifted = server_api::lift(&self.edge, &call, scope, &lift.uid).await;
        reply(lifted.map(|lifted| api::LiftReply { lifted }))
    }

    async fn list_mutes(
        &self,
        request: Request<api::ListRestrictionsRequest>,
    ) -> GrpcResult<api::ListRestrictionsReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let scope = server_api::channel_scope(&request.get_ref().channel_id).map_err(status_of)?;
        let mutes = server_api::restrictions(&self.edge, &call, scope).await;
        reply(mutes.map(|mutes| api::ListRestrictionsReply {
            restrictions: mutes.into_iter().map(restriction).collect(),
        }))
    }

    async fn kick(&self, request: Request<api::KickRequest>) -> GrpcResult<api::KickReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let kick = request.into_inner();
        let kicked =
            server_api::kick(&self.edge, &call, &kick.channel_id, &kick.uid, kick.reason).await;
        reply(kicked.map(|kicked| api::KickReply { kicked }))
    }

    async fn events(&self, request: Request<api::EventsRequest>) -> GrpcResult<api::EventsReply> {
        let call = self.authorize(&request, &request.get_ref().app_id)?;
        let page = request.into_inner();
        let events = server_api::events(
            &self.edge,
            &call,
            &page.stream,
            page.after,
            page.limit as usize,
        )
        .await;
        reply(events.map(|(events, next)| {
            api::EventsReply {
                events: events
                    .into_iter()
                    .map(|event| api::AppEvent {
                        id: event.id,
                        r#type: event.kind,
                        ts: event.ts_ms,
                        uid: event.uid,
                        channel_id: event.channel_id,
                        reason: event.reason,
                    })
                    .collect(),
                next,
            }
        }))
    }
}
