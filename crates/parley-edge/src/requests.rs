//! The request handlers of a session ([`Session::dispatch`] and one method per operation): each
//! validates its input (`validate.rs`), polices the session's limits, and forwards to the owners.

use std::collections::BTreeSet;
use std::collections::HashMap;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::attributes::AttributeOp;
use parley_core::ids::ChannelId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::limits::MAX_MEMBER_COUNT_CHANNELS;
use parley_core::limits::MAX_STATUS_QUERY;
use parley_core::limits::MAX_STATUS_SUBSCRIPTIONS;
use parley_core::rate::TokenBucket;
use parley_owner::ChannelSend;
use parley_owner::InvitationSend;
use parley_owner::LeaveReason;
use parley_owner::OpenSession;
use parley_owner::PeerOutcome;
use parley_owner::PeerSend;
use parley_owner::Resume;
use parley_owner::UserKey;
use parley_owner::ops;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_store::Conversation;
use parley_store::HistoryQuery;
use parley_store::Order;
use tokio::time::Instant;
use tracing::Instrument;

use crate::edge::Outbound;
use crate::edge::Outgoing;
use crate::edge::SessionHandle;
use crate::session::Ending;
use crate::session::LoggedIn;
use crate::session::Session;
use crate::session::channel_key;
use crate::session::event;
use crate::session::instant_of_unix_secs;
use crate::session::reply_frame;
use crate::validate;
use parley_core::time::unix_ms;

/// Outgoing invitations a session remembers (for cancel); older ones are forgotten.
const MAX_OUTGOING_INVITATIONS: usize = 64;

impl Session {
    /// Carries out one request and replies to it; `Some` when the session ends with it (a
    /// logout).
    pub(crate) async fn dispatch(&mut self, request: v1::Request) -> Option<Ending> {
        let id = request.id;
        let Some(op) = request.op else {
            self.reply(
                id,
                Err(Error::invalid_argument("unknown or missing operation")),
            );
            return None;
        };
        let result = match op {
            Op::Login(login) => {
                let result = self.login(login).await;
                crate::telemetry::login(&result);
                let logged_in = result.is_ok();
                self.reply(id, result);
                if logged_in {
                    // After the reply, so the client hears of its login before what waited for it.
                    self.session_ready().await;
                }
                return None;
            }
            Op::Ping(_) => Ok(ReplyResult::Pong(v1::PongResult {
                server_time_ms: unix_ms(),
            })),
            _ if self.logged_in.is_none() => Err(Error::new(
                ErrorCode::NotLoggedIn,
                "log in before any other request",
            )),
            Op::Logout(_) => {
                if let Some(session) = &mut self.logged_in {
                    session.admitted = None;
                }
                self.reply(id, Ok(ReplyResult::Empty(v1::Empty {})));
                return Some(Ending::Logout);
            }
            Op::RenewToken(renew) => self.renew_token(renew),
            Op::SendMessageToPeer(send) => match self.send_message_to_peer(id, send).await {
                // The reply comes when the peer acknowledges.
                Ok(()) => return None,
                Err(error) => Err(error),
            },
            Op::Join(join) => self.join(join).await,
            Op::Leave(leave) => self.leave(leave).await,
            Op::SendMessage(send) => self.send_message(send).await,
            Op::GetMembers(get) => self.get_members(get).await,
            Op::GetChannelMemberCount(get) => self.get_channel_member_count(get).await,
            Op::SendLocalInvitation(send) => self.send_local_invitation(send).await,
            Op::CancelLocalInvitation(cancel) => self.cancel_local_invitation(cancel).await,
            Op::AcceptRemoteInvitation(accept) => {
                self.answer_remote_invitation(accept.invitation_id, true, accept.response)
                    .await
            }
            Op::RefuseRemoteInvitation(refuse) => {
                self.answer_remote_invitation(refuse.invitation_id, false, refuse.response)
                    .await
            }
            Op::SetLocalUserAttributes(set) => {
                self.update_user_attributes(AttributeOp::Set(set.attributes.into_iter().collect()))
                    .await
            }
            Op::AddOrUpdateLocalUserAttributes(add) => {
                self.update_user_attributes(AttributeOp::AddOrUpdate(
                    add.attributes.into_iter().collect(),
                ))
                .await
            }
            Op::DeleteLocalUserAttributesByKeys(delete) => {
                self.update_user_attributes(AttributeOp::DeleteKeys(delete.keys))
                    .await
            }
            Op::ClearLocalUserAttributes(_) => {
                self.update_user_attributes(AttributeOp::Clear).await
            }
            Op::GetUserAttributes(get) => self.get_user_attributes(get).await,
            Op::SetChannelAttributes(set) => {
                let op = AttributeOp::Set(set.attributes.into_iter().collect());
                self.update_channel_attributes(
                    &set.channel_id,
                    op,
                    set.enable_notification_to_channel_members,
                )
                .await
            }
            Op::AddOrUpdateChannelAttributes(add) => {
                let op = AttributeOp::AddOrUpdate(add.attributes.into_iter().collect());
                self.update_channel_attributes(
                    &add.channel_id,
                    op,
                    add.enable_notification_to_channel_members,
                )
                .await
            }
            Op::DeleteChannelAttributesByKeys(delete) => {
                self.update_channel_attributes(
                    &delete.channel_id,
                    AttributeOp::DeleteKeys(delete.keys),
                    delete.enable_notification_to_channel_members,
                )
                .await
            }
            Op::ClearChannelAttributes(clear) => {
                self.update_channel_attributes(
                    &clear.channel_id,
                    AttributeOp::Clear,
                    clear.enable_notification_to_channel_members,
                )
                .await
            }
            Op::GetChannelAttributes(get) => self.get_channel_attributes(get).await,
            Op::QueryPeersOnlineStatus(query) => self.query_peers_online_status(query).await,
            Op::SubscribePeersOnlineStatus(subscribe) => {
                match self.subscribe_peers_online_status(subscribe).await {
                    Ok(initial) => {
                        self.reply(id, Ok(ReplyResult::Empty(v1::Empty {})));
                        self.push(Outbound::own(event(
                            v1::event::Kind::PeersOnlineStatusChanged(initial),
                        )));
                        return None;
                    }
                    Err(error) => Err(error),
                }
            }
            Op::UnsubscribePeersOnlineStatus(unsubscribe) => {
                self.unsubscribe_peers_online_status(unsubscribe).await
            }
            Op::QueryHistory(query) => self.query_history(query).await,
            Op::CountHistory(count) => self.count_history(count).await,
        };
        self.reply(id, result);
        None
    }

    pub(crate) async fn login(&mut self, login: v1::LoginRequest) -> Result<ReplyResult, Error> {
        if self.logged_in.is_some() {
            return Err(Error::new(ErrorCode::AlreadyLoggedIn, "already logged in"));
        }
        if self.edge.is_closing() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "this edge is going away: connect to another",
            ));
        }
        let app = self.edge.apps().get(&login.app_id)?;
        let uid = UserId::parse(&login.uid)?;
        if !self
            .edge
            .allow_login(&app.app_id, &uid, app.limits.login_rate)
        {
            return Err(Error::too_often("login"));
        }
        let now_secs = unix_ms() / 1000;
        let expires_at_secs = app.authenticate(uid.as_str(), &login.token, now_secs as u64)?;
        let Some(admitted) = self.edge.admit(&app.app_id) else {
            crate::telemetry::connection_refused("per_app");
            return Err(Error::new(
                ErrorCode::ExceedLimit,
                "this app holds as many sessions on this edge as it may: try another edge or later",
            ));
        };

        let session_id = self.edge.new_session_id();
        let session = SessionRef {
            edge: self.edge.config().node,
            session: session_id,
        };
        let user = UserKey {
            app: app.app_id.clone(),
            uid,
        };
        // In the table before the owner knows it, so deliveries that follow can find it.
        self.edge.insert_session(session_id, self.handle.clone());
        let opened = self
            .edge
            .owner()
            .ask(OpenSession {
                user: user.clone(),
                session,
                multi_login: app.multi_login,
            })
            .await;
        if let Err(error) = opened {
            self.edge.remove_session(session_id);
            return Err(error);
        }
        tracing::info!(app = %user.app, uid = %user.uid, session = %session_id, "logged in");

        let now = Instant::now();
        let limits = app.limits.clone();
        let bucket = |rate| TokenBucket::new(rate, now.into_std());
        self.logged_in = Some(LoggedIn {
            user,
            session,
            subscriptions: BTreeSet::new(),
            message_bucket: bucket(limits.message_rate),
            join_bucket: bucket(limits.join_rate),
            query_bucket: bucket(limits.query_rate),
            renew_bucket: bucket(limits.renew_token_rate),
            attribute_bucket: bucket(limits.attribute_rate),
            status_bucket: bucket(limits.status_rate),
            invitation_bucket: bucket(limits.invitation_rate),
            history_bucket: bucket(limits.history_rate),
            token_expires_at: expires_at_secs.map(|at| instant_of_unix_secs(at, now_secs)),
            token_warned: false,
            reachable: true,
            app,
            admitted: Some(admitted),
        });
        Ok(ReplyResult::Login(v1::LoginResult {
            session_id: session_id.to_string(),
            server_time_ms: unix_ms(),
            heartbeat_interval_ms: self.edge.config().heartbeat_interval.as_millis() as u32,
            token_expire_ms: expires_at_secs.map_or(0, |at| at as i64 * 1000),
        }))
    }

    pub(crate) fn renew_token(
        &mut self,
        renew: v1::RenewTokenRequest,
    ) -> Result<ReplyResult, Error> {
        let session = self.logged_in()?;
        if !session.renew_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("renewToken"));
        }
        let now_secs = unix_ms() / 1000;
        let expires_at_secs =
            session
                .app
                .authenticate(session.user.uid.as_str(), &renew.token, now_secs as u64)?;
        session.token_expires_at = expires_at_secs.map(|at| instant_of_unix_secs(at, now_secs));
        session.token_warned = false;
        Ok(ReplyResult::Empty(v1::Empty {}))
    }

    pub(crate) async fn send_message_to_peer(
        &mut self,
        id: u64,
        send: v1::SendMessageToPeerRequest,
    ) -> Result<(), Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.message_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("message"));
        }
        let to = UserId::parse(&send.peer_id)?;
        let message = validate::message(send.message)?;
        let (span, trace) = crate::telemetry::sent("peer", session.user.app.as_str());
        let dispatch = edge
            .owner()
            .send_peer(PeerSend {
                from: session.user.clone(),
                to,
                message,
                enable_offline: send.enable_offline_messaging,
                enable_history: send.enable_historical_messaging,
                origin: None,
                trace,
            })
            .instrument(span)
            .await?;
        let outbound_tx = self.handle.outbound_tx.clone();
        tokio::spawn(async move {
            let result = match dispatch.outcome.await {
                PeerOutcome::Received => Ok(v1::PeerMessageResult::ReceivedByPeer),
                PeerOutcome::Cached => Ok(v1::PeerMessageResult::CachedByServer),
                PeerOutcome::Unreachable => Ok(v1::PeerMessageResult::PeerUnreachable),
                PeerOutcome::TimedOut => Err(Error::new(
                    ErrorCode::Timeout,
                    "the peer did not acknowledge in time",
                )),
            };
            let result = result.map(|result| {
                ReplyResult::SendMessageToPeer(v1::SendMessageToPeerResult {
                    result: result as i32,
                    message_id: dispatch.message_id.0,
                    server_received_ts: dispatch.server_received_ts,
                })
            });
            // A full queue here means the session is already ending as a slow consumer.
            let _ = outbound_tx.try_send(Outbound::own(reply_frame(id, result)));
        });
        Ok(())
    }

    pub(crate) async fn join(&mut self, join: v1::JoinRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        if !session.join_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("join"));
        }
        let channel = ChannelId::parse(&join.channel_id)?;
        if handle.is_joined(channel.as_str()) {
            return Err(Error::new(
                ErrorCode::AlreadyJoined,
                "already joined this channel",
            ));
        }
        let max = session.app.limits.max_channels_per_user;
        if handle.joined().len() >= max {
            return Err(Error::new(
                ErrorCode::ExceedLimit,
                format!("at most {max} channels may be joined at once"),
            ));
        }
        let last_seq = edge
            .owner()
            .ask(ops::Join {
                channel: channel_key(&session.user, &channel),
                uid: session.user.uid.clone(),
                session: session.session,
                resume: match join.resume_after_seq {
                    Some(after) => Resume::Client { after },
                    None => Resume::Fresh,
                },
            })
            .await?;
        handle
            .channel_seqs
            .lock()
            .insert(channel.to_string(), last_seq);
        Ok(ReplyResult::Join(v1::JoinResult { last_seq }))
    }

    pub(crate) async fn leave(&mut self, leave: v1::LeaveRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        if !session.join_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("leave"));
        }
        let channel = ChannelId::parse(&leave.channel_id)?;
        let was_joined = handle
            .channel_seqs
            .lock()
            .remove(channel.as_str())
            .is_some();
        if !was_joined {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        edge.owner()
            .ask(ops::Leave {
                channel: channel_key(&session.user, &channel),
                uid: session.user.uid.clone(),
                session: session.session,
                reason: LeaveReason::Left,
            })
            .await?;
        Ok(ReplyResult::Empty(v1::Empty {}))
    }

    pub(crate) async fn send_message(
        &mut self,
        send: v1::SendMessageRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        if !session.message_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("message"));
        }
        let channel = ChannelId::parse(&send.channel_id)?;
        if !handle.is_joined(channel.as_str()) {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        let message = validate::message(send.message)?;
        let (span, trace) = crate::telemetry::sent("channel", session.user.app.as_str());
        let sent = edge
            .owner()
            .ask(ChannelSend {
                channel: channel_key(&session.user, &channel),
                from: session.user.uid.clone(),
                session: Some(session.session),
                message,
                enable_history: send.enable_historical_messaging,
                origin: None,
                trace,
            })
            .instrument(span)
            .await?;
        // The sender is not sent its own message; it has seen it all the same.
        self.handle.saw(channel.as_str(), sent.seq);
        Ok(ReplyResult::SendMessage(v1::SendMessageResult {
            message_id: sent.message_id.0,
            server_received_ts: sent.server_received_ts,
            seq: sent.seq,
        }))
    }

    pub(crate) async fn get_members(
        &mut self,
        get: v1::GetMembersRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        if !session.query_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("getMembers"));
        }
        let channel = ChannelId::parse(&get.channel_id)?;
        if !handle.is_joined(channel.as_str()) {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        let members = edge
            .owner()
            .ask(ops::Members {
                channel: channel_key(&session.user, &channel),
                asker: Some((session.user.uid.clone(), session.session)),
            })
            .await?;
        Ok(ReplyResult::GetMembers(v1::GetMembersResult {
            members: members.iter().map(ToString::to_string).collect(),
        }))
    }

    pub(crate) async fn get_channel_member_count(
        &mut self,
        get: v1::GetChannelMemberCountRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.query_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("getChannelMemberCount"));
        }
        if get.channel_ids.is_empty() || get.channel_ids.len() > MAX_MEMBER_COUNT_CHANNELS {
            return Err(Error::invalid_argument(format!(
                "between 1 and {MAX_MEMBER_COUNT_CHANNELS} channel ids are needed"
            )));
        }
        let channels = get
            .channel_ids
            .iter()
            .map(|raw| ChannelId::parse(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let counts = futures_util::future::try_join_all(channels.iter().map(|channel| {
            edge.owner().ask(ops::MemberCount {
                channel: channel_key(&session.user, channel),
            })
        }))
        .await?;
        Ok(ReplyResult::GetChannelMemberCount(
            v1::GetChannelMemberCountResult {
                counts: channels
                    .iter()
                    .zip(counts)
                    .map(|(channel, member_count)| v1::ChannelMemberCount {
                        channel_id: channel.to_string(),
                        member_count,
                    })
                    .collect(),
            },
        ))
    }

    pub(crate) async fn send_local_invitation(
        &mut self,
        send: v1::SendLocalInvitationRequest,
    ) -> Result<ReplyResult, Error> {
        let handle = self.handle.clone();
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.invitation_bucket, "invitation")?;
        let callee = UserId::parse(&send.callee_id)?;
        if callee == session.user.uid {
            return Err(Error::invalid_argument("cannot invite yourself"));
        }
        validate::invitation_text("content", &send.content)?;
        if !send.channel_id.is_empty() {
            ChannelId::parse(&send.channel_id)?;
        }
        let invitation_id = edge
            .owner()
            .ask(InvitationSend {
                caller: session.user.clone(),
                caller_session: session.session,
                callee: callee.clone(),
                content: send.content.clone(),
                channel_id: send.channel_id.clone(),
                restore: None,
            })
            .await?;
        let mut outgoing = handle.outgoing_invitations.lock();
        outgoing.insert(
            invitation_id,
            Outgoing {
                callee,
                content: send.content,
                channel_id: send.channel_id,
                sent_at: std::time::Instant::now(),
                received: false,
                over: false,
            },
        );
        while outgoing.len() > MAX_OUTGOING_INVITATIONS {
            outgoing.pop_first();
        }
        Ok(ReplyResult::SendLocalInvitation(
            v1::SendLocalInvitationResult { invitation_id },
        ))
    }

    pub(crate) async fn cancel_local_invitation(
        &mut self,
        cancel: v1::CancelLocalInvitationRequest,
    ) -> Result<ReplyResult, Error> {
        let handle = self.handle.clone();
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.invitation_bucket, "invitation")?;
        let callee = handle
            .outgoing_invitations
            .lock()
            .get(&cancel.invitation_id)
            .map(|outgoing| outgoing.callee.clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::InvitationNotStarted,
                    "no invitation with this id was sent by you",
                )
            })?;
        edge.owner()
            .ask(ops::CancelInvitation {
                callee: UserKey {
                    app: session.user.app.clone(),
                    uid: callee,
                },
                caller: session.user.uid.clone(),
                invitation_id: cancel.invitation_id,
            })
            .await?;
        Ok(empty())
    }

    pub(crate) async fn answer_remote_invitation(
        &mut self,
        invitation_id: u64,
        accept: bool,
        response: String,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.invitation_bucket, "invitation")?;
        validate::invitation_text("response", &response)?;
        edge.owner()
            .ask(ops::AnswerInvitation {
                callee: session.user.clone(),
                invitation_id,
                accept,
                response,
            })
            .await?;
        Ok(empty())
    }

    pub(crate) async fn update_user_attributes(
        &mut self,
        op: AttributeOp,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.attribute_bucket, "attribute")?;
        op.validate()?;
        edge.owner()
            .ask(ops::UpdateUserAttributes {
                user: session.user.clone(),
                op,
            })
            .await?;
        Ok(empty())
    }

    pub(crate) async fn get_user_attributes(
        &mut self,
        get: v1::GetUserAttributesRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.query_bucket, "getUserAttributes")?;
        let uid = UserId::parse(&get.user_id)?;
        let attributes = edge
            .owner()
            .ask(ops::UserAttributes {
                user: UserKey {
                    app: session.user.app.clone(),
                    uid,
                },
                keys: get.keys,
            })
            .await?;
        Ok(ReplyResult::UserAttributes(v1::UserAttributesResult {
            attributes: attributes.into_iter().collect(),
        }))
    }

    pub(crate) async fn update_channel_attributes(
        &mut self,
        channel_id: &str,
        op: AttributeOp,
        notify_members: bool,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.attribute_bucket, "attribute")?;
        let channel = ChannelId::parse(channel_id)?;
        op.validate()?;
        edge.owner()
            .ask(ops::UpdateChannelAttributes {
                channel: channel_key(&session.user, &channel),
                by: session.user.uid.clone(),
                op,
                notify_members,
            })
            .await?;
        Ok(empty())
    }

    pub(crate) async fn get_channel_attributes(
        &mut self,
        get: v1::GetChannelAttributesRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.query_bucket, "getChannelAttributes")?;
        let channel = ChannelId::parse(&get.channel_id)?;
        let attributes = edge
            .owner()
            .ask(ops::ChannelAttributes {
                channel: channel_key(&session.user, &channel),
                keys: get.keys,
            })
            .await?;
        Ok(ReplyResult::ChannelAttributes(
            v1::ChannelAttributesResult { attributes },
        ))
    }

    pub(crate) async fn query_peers_online_status(
        &mut self,
        query: v1::QueryPeersOnlineStatusRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.status_bucket, "queryPeersOnlineStatus")?;
        let peers = validate::peer_ids(&query.peer_ids, MAX_STATUS_QUERY)?;
        let states = futures_util::future::try_join_all(peers.iter().map(|uid| {
            edge.owner().ask(ops::Presence {
                user: UserKey {
                    app: session.user.app.clone(),
                    uid: uid.clone(),
                },
            })
        }))
        .await?;
        Ok(ReplyResult::QueryPeersOnlineStatus(
            v1::QueryPeersOnlineStatusResult {
                status: peers
                    .iter()
                    .zip(states)
                    .map(|(uid, state)| (uid.to_string(), state != v1::PeerOnlineState::Offline))
                    .collect(),
            },
        ))
    }

    /// Subscribes and returns the subscribed users' current states, which the caller sends as a
    /// PeersOnlineStatusChanged event after the reply.
    pub(crate) async fn subscribe_peers_online_status(
        &mut self,
        subscribe: v1::SubscribePeersOnlineStatusRequest,
    ) -> Result<v1::PeersOnlineStatusChanged, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.status_bucket, "subscribePeersOnlineStatus")?;
        let peers = validate::peer_ids(&subscribe.peer_ids, MAX_STATUS_SUBSCRIPTIONS)?;
        let new: Vec<UserId> = peers
            .into_iter()
            .filter(|uid| !session.subscriptions.contains(uid))
            .collect();
        if session.subscriptions.len() + new.len() > MAX_STATUS_SUBSCRIPTIONS {
            return Err(Error::new(
                ErrorCode::ExceedLimit,
                format!("at most {MAX_STATUS_SUBSCRIPTIONS} users may be watched at once"),
            ));
        }
        let mut status = HashMap::new();
        for uid in new {
            let state = edge
                .owner()
                .ask(ops::SubscribePresence {
                    user: UserKey {
                        app: session.user.app.clone(),
                        uid: uid.clone(),
                    },
                    subscriber: session.session,
                })
                .await?;
            status.insert(uid.to_string(), state as i32);
            session.subscriptions.insert(uid);
        }
        Ok(v1::PeersOnlineStatusChanged { status })
    }

    pub(crate) async fn unsubscribe_peers_online_status(
        &mut self,
        unsubscribe: v1::UnsubscribePeersOnlineStatusRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        take(&mut session.status_bucket, "unsubscribePeersOnlineStatus")?;
        let peers = validate::peer_ids(&unsubscribe.peer_ids, MAX_STATUS_SUBSCRIPTIONS)?;
        for uid in peers {
            if session.subscriptions.remove(&uid) {
                edge.owner()
                    .ask(ops::UnsubscribePresence {
                        user: UserKey {
                            app: session.user.app.clone(),
                            uid,
                        },
                        subscriber: session.session,
                    })
                    .await?;
            }
        }
        Ok(empty())
    }

    pub(crate) async fn query_history(
        &mut self,
        query: v1::QueryHistoryRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        take(&mut session.history_bucket, "queryHistory")?;
        let order = match query.order() {
            v1::HistoryOrder::Desc => Order::Descending,
            _ => Order::Ascending,
        };
        let conversation = conversation(
            session,
            &handle,
            query.conversation.map(|which| match which {
                v1::query_history_request::Conversation::PeerId(peer) => Which::Peer(peer),
                v1::query_history_request::Conversation::ChannelId(channel) => {
                    Which::Channel(channel)
                }
            }),
        )?;
        check_time_range(query.start_time, query.end_time)?;
        let limit = validate::history_limit(query.limit as usize)?;
        let after = validate::cursor(&query.cursor)?;
        let messages = edge
            .owner()
            .ask(ops::QueryHistory {
                app: session.user.app.clone(),
                conversation,
                query: HistoryQuery {
                    start_ms: query.start_time,
                    end_ms: query.end_time,
                    limit,
                    order,
                    after,
                },
            })
            .await?;
        let next = validate::next_cursor(&messages, limit);
        Ok(ReplyResult::QueryHistory(v1::QueryHistoryResult {
            messages,
            next,
        }))
    }

    pub(crate) async fn count_history(
        &mut self,
        count: v1::CountHistoryRequest,
    ) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let handle = self.handle.clone();
        let session = self.logged_in()?;
        take(&mut session.history_bucket, "countHistory")?;
        let conversation = conversation(
            session,
            &handle,
            count.conversation.map(|which| match which {
                v1::count_history_request::Conversation::PeerId(peer) => Which::Peer(peer),
                v1::count_history_request::Conversation::ChannelId(channel) => {
                    Which::Channel(channel)
                }
            }),
        )?;
        check_time_range(count.start_time, count.end_time)?;
        let count = edge
            .owner()
            .ask(ops::CountHistory {
                app: session.user.app.clone(),
                conversation,
                start_ms: count.start_time,
                end_ms: count.end_time,
            })
            .await?;
        Ok(ReplyResult::CountHistory(v1::CountHistoryResult { count }))
    }
}

fn empty() -> ReplyResult {
    ReplyResult::Empty(v1::Empty {})
}

/// Takes one token from a session's bucket, or fails with TOO_OFTEN.
fn take(bucket: &mut TokenBucket, what: &str) -> Result<(), Error> {
    if bucket.try_take(std::time::Instant::now()) {
        Ok(())
    } else {
        Err(Error::too_often(what))
    }
}

enum Which {
    Peer(String),
    Channel(String),
}

/// The conversation a history request names: with a peer, or in a channel the session joined.
fn conversation(
    session: &LoggedIn,
    handle: &SessionHandle,
    which: Option<Which>,
) -> Result<Conversation, Error> {
    match which {
        Some(Which::Peer(peer)) => Ok(Conversation::peers(
            session.user.uid.clone(),
            UserId::parse(&peer)?,
        )),
        Some(Which::Channel(channel)) => {
            let channel = ChannelId::parse(&channel)?;
            if !handle.is_joined(channel.as_str()) {
                return Err(Error::new(
                    ErrorCode::NotJoined,
                    "join the channel to read its history",
                ));
            }
            Ok(Conversation::Channel(channel))
        }
        None => Err(Error::invalid_argument("name a peerId or a channelId")),
    }
}

/// A session's history range must hold something: an empty one is refused, not answered empty.
fn check_time_range(start: i64, end: i64) -> Result<(), Error> {
    if validate::time_range_is_empty(start, end)? {
        return Err(Error::invalid_argument("the time range is empty"));
    }
    Ok(())
}
