//! One client connection: a reader task that owns the session and a writer task that coalesces
//! outgoing frames.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::ws::CloseFrame;
use axum::extract::ws::Message;
use axum::extract::ws::Utf8Bytes;
use axum::extract::ws::WebSocket;
use bytes::Bytes;
use futures_util::SinkExt;
use futures_util::StreamExt;
use futures_util::stream::SplitSink;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::attributes::AttributeOp;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::rate::TokenBucket;
use parley_core::time::unix_ms;
use parley_owner::InvitationRestore;
use parley_owner::InvitationSend;
use parley_owner::LeaveReason;
use parley_owner::OpenSession;
use parley_owner::Resume;
use parley_owner::UserKey;
use parley_owner::ops;
use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::Utf8;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::connection_state_changed::State;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::edge::Control;
use crate::edge::Edge;
use crate::edge::Outbound;
use crate::edge::Outgoing;
use crate::edge::SessionHandle;
use crate::requests::channel_key;

/// Frames the writer takes from its queue per wake-up, then writes with one flush.
const WRITE_BATCH: usize = 64;
/// Close code for a server-ended session is this plus the `Reason` number (docs/protocol.md).
const CLOSE_CODE_BASE: u16 = 4000;
/// How long the writer may take to flush its last frames after the session ended.
const WRITER_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a connection's session ended.
enum Ending {
    /// The client logged out.
    Logout,
    /// The socket closed or failed.
    Lost,
    /// The server ended it.
    Server(Reason),
}

/// A logged-in session's own state: what it may still do and what to clean up after it.
pub(crate) struct LoggedIn {
    /// Shared with the app directory: a session holds no copy of its app's settings.
    pub(crate) app: Arc<AppConfig>,
    /// The session's place among its app's on this edge, given back with the session (at the
    /// logout reply, so a client told it is out may log in again at once).
    pub(crate) admitted: Option<crate::tally::Held<parley_core::ids::AppId>>,
    pub(crate) user: UserKey,
    pub(crate) session: SessionRef,
    /// Users whose online status this session watches.
    pub(crate) subscriptions: BTreeSet<UserId>,
    pub(crate) message_bucket: TokenBucket,
    pub(crate) join_bucket: TokenBucket,
    pub(crate) query_bucket: TokenBucket,
    pub(crate) renew_bucket: TokenBucket,
    pub(crate) attribute_bucket: TokenBucket,
    pub(crate) status_bucket: TokenBucket,
    pub(crate) invitation_bucket: TokenBucket,
    pub(crate) history_bucket: TokenBucket,
    pub(crate) token_expires_at: Option<Instant>,
    pub(crate) token_warned: bool,
    /// False once the connection has been silent past the app's `unreachable_after`.
    pub(crate) reachable: bool,
}

pub(crate) struct Connection {
    pub(crate) edge: Arc<Edge>,
    pub(crate) handle: Arc<SessionHandle>,
    connected_at: Instant,
    last_frame_at: Instant,
    pub(crate) session: Option<LoggedIn>,
    /// Tells the writer to close at once when the outbound queue is too full to take the close.
    urgent_close_tx: Option<oneshot::Sender<Reason>>,
}

pub(crate) async fn run(edge: Arc<Edge>, socket: WebSocket, codec: Codec) {
    let (sink, stream) = socket.split();
    let (outbound_tx, outbound_rx) = mpsc::channel(edge.config().outbound_queue);
    // Only End is ever sent and one is enough: overflow drops the later ones.
    let (control_tx, control_rx) = mpsc::channel(4);
    let (urgent_close_tx, urgent_close_rx) = oneshot::channel();
    let mut writer = tokio::spawn(write_loop(sink, outbound_rx, urgent_close_rx, codec));
    crate::telemetry::connection_opened();
    let now = Instant::now();
    let mut connection = Connection {
        edge,
        handle: Arc::new(SessionHandle {
            outbound_tx,
            control_tx,
            receipts: Mutex::new(Default::default()),
            channel_seqs: Mutex::new(Default::default()),
            outgoing_invitations: Mutex::new(Default::default()),
        }),
        connected_at: now,
        last_frame_at: now,
        session: None,
        urgent_close_tx: Some(urgent_close_tx),
    };
    let ending = connection.read_loop(stream, control_rx).await;
    Box::pin(connection.finish(ending)).await;
    drop(connection);
    crate::telemetry::connection_closed();
    if tokio::time::timeout(WRITER_DRAIN, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

impl Connection {
    async fn read_loop(
        &mut self,
        mut stream: futures_util::stream::SplitStream<WebSocket>,
        mut control_rx: mpsc::Receiver<Control>,
    ) -> Ending {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                frame = stream.next() => {
                    self.last_frame_at = Instant::now();
                    Box::pin(self.heard_from_client()).await;
                    let frame = match frame {
                        Some(Ok(Message::Text(text))) => Frame::Text(
                            Utf8::try_from(Bytes::from(text)).expect("websocket text is UTF-8"),
                        ),
                        Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => return Ending::Lost,
                        Some(Err(error)) => {
                            // Oversized frames and protocol violations land here, as do resets;
                            // a reset peer never reads the reason, so one answer fits all.
                            tracing::debug!(%error, "websocket read failed");
                            return Ending::Server(Reason::ProtocolError);
                        }
                    };
                    if let Some(ending) = Box::pin(self.on_frame(frame)).await {
                        return ending;
                    }
                }
                Some(control) = control_rx.recv() => match control {
                    Control::End(reason) => return Ending::Server(reason),
                    Control::Reregister => Box::pin(self.reregister()).await,
                },
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(ending) = Box::pin(self.on_timer()).await {
                        return ending;
                    }
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let config = self.edge.config();
        let Some(session) = &self.session else {
            return self.connected_at + config.login_timeout;
        };
        let mut deadline = self.last_frame_at + config.heartbeat_interval * 3;
        if session.reachable {
            deadline = deadline.min(self.last_frame_at + session.app.limits.unreachable_after);
        }
        if let Some(expires_at) = session.token_expires_at {
            deadline = deadline.min(expires_at);
            if !session.token_warned {
                deadline = deadline.min(warning_at(expires_at, config.token_warning));
            }
        }
        deadline
    }

    /// A frame arrived: a session that had gone silent is reachable again.
    async fn heard_from_client(&mut self) {
        if let Some(session) = &mut self.session
            && !session.reachable
        {
            session.reachable = true;
            let user = session.user.clone();
            let session_ref = session.session;
            let _ = self
                .edge
                .owner()
                .ask(ops::SetReachable {
                    user,
                    session: session_ref,
                    reachable: true,
                })
                .await;
        }
    }

    async fn on_timer(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let config = self.edge.config().clone();
        let Some(session) = &mut self.session else {
            return (now >= self.connected_at + config.login_timeout)
                .then_some(Ending::Server(Reason::LoginTimeout));
        };
        if now >= self.last_frame_at + config.heartbeat_interval * 3 {
            return Some(Ending::Server(Reason::HeartbeatTimeout));
        }
        if session.reachable && now >= self.last_frame_at + session.app.limits.unreachable_after {
            session.reachable = false;
            let _ = self
                .edge
                .owner()
                .ask(ops::SetReachable {
                    user: session.user.clone(),
                    session: session.session,
                    reachable: false,
                })
                .await;
        }
        if let Some(expires_at) = session.token_expires_at {
            if now >= expires_at {
                return Some(Ending::Server(Reason::TokenExpired));
            }
            if !session.token_warned && now >= warning_at(expires_at, config.token_warning) {
                session.token_warned = true;
                self.push(Outbound::own(event(
                    v1::event::Kind::TokenPrivilegeWillExpire(v1::TokenPrivilegeWillExpire {}),
                )));
            }
        }
        None
    }

    async fn on_frame(&mut self, frame: Frame) -> Option<Ending> {
        let client_frame: v1::ClientFrame = match Codec::decode(&frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                // The request id is unreadable, so the reply carries id 0.
                self.reply(0, Err(Error::invalid_argument(error.to_string())));
                return None;
            }
        };
        match client_frame.kind {
            Some(v1::client_frame::Kind::Request(request)) => self.on_request(request).await,
            Some(v1::client_frame::Kind::Receipt(receipt)) => {
                let waiting = self
                    .handle
                    .receipts
                    .lock()
                    .remove(&MessageId(receipt.message_id));
                if let Some(waiting) = waiting {
                    let _ = waiting.send(());
                }
                None
            }
            None => {
                self.reply(
                    0,
                    Err(Error::invalid_argument(
                        "frame carries neither request nor receipt",
                    )),
                );
                None
            }
        }
    }

    async fn on_request(&mut self, request: v1::Request) -> Option<Ending> {
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
            _ if self.session.is_none() => Err(Error::new(
                ErrorCode::NotLoggedIn,
                "log in before any other request",
            )),
            Op::Logout(_) => {
                if let Some(session) = &mut self.session {
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

    /// Registers the session, its channels and its subscriptions with the owners again (after a
    /// ring change). Registrations the owner already has are no-ops.
    async fn reregister(&mut self) {
        let Some(session) = &self.session else { return };
        let owner = self.edge.owner();
        let opened = owner
            .ask(OpenSession {
                user: session.user.clone(),
                session: session.session,
                multi_login: session.app.multi_login,
            })
            .await;
        if let Err(error) = opened {
            tracing::warn!(%error, "re-registering a session failed");
        }
        // Peer messages the new owner cached before it knew of this session come now.
        if let Err(error) = owner
            .ask(ops::SessionReady {
                user: session.user.clone(),
                session: session.session,
            })
            .await
        {
            tracing::warn!(%error, "delivering the offline inbox after a hand-off failed");
        }
        for channel in self.handle.joined() {
            let Ok(channel) = ChannelId::parse(&channel) else {
                continue;
            };
            let resume_after = self.handle.channel_seqs.lock().get(channel.as_str());
            let joined = owner
                .ask(ops::Join {
                    channel: crate::requests::channel_key(&session.user, &channel),
                    uid: session.user.uid.clone(),
                    session: session.session,
                    resume: resume_after.map_or(Resume::Fresh, |after| Resume::Handoff { after }),
                })
                .await;
            match joined {
                Ok(_) => {}
                Err(error) if error.code == ErrorCode::AlreadyJoined => {}
                Err(error) => tracing::warn!(%error, channel = %channel, "re-join failed"),
            }
        }
        // Invitations under way are rebuilt by the callee's (possibly new) owner.
        let outgoing: Vec<(u64, Outgoing)> = self
            .handle
            .outgoing_invitations
            .lock()
            .iter()
            .filter(|(_, invitation)| !invitation.over)
            .map(|(id, invitation)| (*id, invitation.clone()))
            .collect();
        for (invitation_id, invitation) in outgoing {
            let restored = owner
                .ask(InvitationSend {
                    caller: session.user.clone(),
                    caller_session: session.session,
                    callee: invitation.callee,
                    content: invitation.content,
                    channel_id: invitation.channel_id,
                    restore: Some(InvitationRestore {
                        invitation_id,
                        age: invitation.sent_at.elapsed(),
                        received: invitation.received,
                    }),
                })
                .await;
            if let Err(error) = restored {
                tracing::warn!(%error, invitation_id, "rebuilding an invitation failed");
            }
        }
        for uid in &session.subscriptions {
            let watched = UserKey {
                app: session.user.app.clone(),
                uid: uid.clone(),
            };
            let subscribe = ops::SubscribePresence {
                user: watched,
                subscriber: session.session,
            };
            if let Err(error) = owner.ask(subscribe).await {
                tracing::warn!(%error, "re-subscribing failed");
            }
        }
    }

    /// Tells the owner the login reply is out, so it may deliver what waited for the user.
    async fn session_ready(&mut self) {
        let Some(session) = &self.session else { return };
        if let Err(error) = self
            .edge
            .owner()
            .ask(ops::SessionReady {
                user: session.user.clone(),
                session: session.session,
            })
            .await
        {
            tracing::warn!(%error, "delivering the offline inbox failed");
        }
    }

    pub(crate) fn logged_in(&mut self) -> Result<&mut LoggedIn, Error> {
        self.session
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::NotLoggedIn, "log in before any other request"))
    }

    pub(crate) fn reply(&self, id: u64, result: Result<ReplyResult, Error>) {
        self.push(Outbound::own(reply_frame(id, result)));
    }

    pub(crate) fn push(&self, outbound: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.handle.outbound_tx.try_send(outbound)
        {
            let _ = self
                .handle
                .control_tx
                .try_send(Control::End(Reason::SlowConsumer));
        }
    }

    /// Hands the session's channels and registration back to the owners, then lets the writer
    /// finish.
    async fn finish(&mut self, ending: Ending) {
        if let Some(session) = self.session.take() {
            self.edge.remove_session(session.session.session);
            let reason = match ending {
                Ending::Logout => LeaveReason::Left,
                Ending::Lost | Ending::Server(_) => LeaveReason::ConnectionLost,
            };
            let owner = self.edge.owner();
            for channel in self.handle.joined() {
                let Ok(channel) = ChannelId::parse(&channel) else {
                    continue;
                };
                let left = owner
                    .ask(ops::Leave {
                        channel: channel_key(&session.user, &channel),
                        uid: session.user.uid.clone(),
                        session: session.session,
                        reason,
                    })
                    .await;
                if let Err(error) = left {
                    tracing::warn!(%error, channel = %channel, "leave on session end failed");
                }
            }
            for uid in &session.subscriptions {
                let watched = UserKey {
                    app: session.user.app.clone(),
                    uid: uid.clone(),
                };
                let unsubscribe = ops::UnsubscribePresence {
                    user: watched,
                    subscriber: session.session,
                };
                if let Err(error) = owner.ask(unsubscribe).await {
                    tracing::warn!(%error, "unsubscribe on session end failed");
                }
            }
            let close = ops::CloseSession {
                user: session.user.clone(),
                session: session.session,
                reason,
            };
            if let Err(error) = owner.ask(close).await {
                tracing::warn!(%error, "close session failed");
            }
            tracing::info!(
                app = %session.user.app,
                uid = %session.user.uid,
                session = %session.session.session,
                reason = match ending {
                    Ending::Logout => "logout",
                    Ending::Lost => "connection lost",
                    Ending::Server(reason) => reason.as_str_name(),
                },
                "session ended"
            );
        }
        let close = match ending {
            Ending::Logout => Some(Outbound::Close(None)),
            Ending::Server(reason) => Some(Outbound::Close(Some(reason))),
            Ending::Lost => None,
        };
        if let Some(close) = close
            && let Err(mpsc::error::TrySendError::Full(_)) = self.handle.outbound_tx.try_send(close)
            && let (Ending::Server(reason), Some(urgent_close_tx)) =
                (ending, self.urgent_close_tx.take())
        {
            let _ = urgent_close_tx.send(reason);
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound_rx: mpsc::Receiver<Outbound>,
    mut urgent_close_rx: oneshot::Receiver<Reason>,
    codec: Codec,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            // A close that could not be queued behind a full queue skips what is queued.
            biased;
            Ok(reason) = &mut urgent_close_rx => {
                write_close(&mut sink, Some(reason), codec).await;
                return;
            }
            received = outbound_rx.recv_many(&mut batch, WRITE_BATCH) => {
                if received == 0 {
                    return;
                }
            }
        }
        for outbound in batch.drain(..) {
            let message = match outbound {
                Outbound::Shared(frame) => to_message(frame.encoded(codec)),
                Outbound::Own(frame) => to_message(&codec.encode(&*frame)),
                Outbound::Close(reason) => {
                    write_close(&mut sink, reason, codec).await;
                    return;
                }
            };
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Writes ConnectionStateChanged for a server-ended session, then the close frame.
async fn write_close(
    sink: &mut SplitSink<WebSocket, Message>,
    reason: Option<Reason>,
    codec: Codec,
) {
    let close = match reason {
        Some(reason) => {
            let state_changed = event(v1::event::Kind::ConnectionStateChanged(
                v1::ConnectionStateChanged {
                    state: state_after(reason) as i32,
                    reason: reason as i32,
                },
            ));
            let _ = sink.feed(to_message(&codec.encode(&state_changed))).await;
            CloseFrame {
                code: CLOSE_CODE_BASE + reason as u16,
                reason: reason.as_str_name().into(),
            }
        }
        None => CloseFrame {
            code: 1000,
            reason: "logout".into(),
        },
    };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// The state a server-ended session leaves the client in: DISCONNECTED where reconnecting makes
/// sense, ABORTED where it does not.
fn state_after(reason: Reason) -> State {
    match reason {
        Reason::LoginTimeout
        | Reason::SlowConsumer
        | Reason::HeartbeatTimeout
        | Reason::ServerShutdown => State::Disconnected,
        _ => State::Aborted,
    }
}

fn to_message(frame: &Frame) -> Message {
    match frame {
        // Shares the encoded bytes (one check, no copy) with every connection the frame goes to.
        Frame::Text(text) => {
            Message::Text(Utf8Bytes::try_from(text.bytes().clone()).expect("Utf8 holds UTF-8"))
        }
        Frame::Binary(bytes) => Message::Binary(bytes.clone()),
    }
}

pub(crate) fn reply_frame(id: u64, result: Result<ReplyResult, Error>) -> v1::ServerFrame {
    let reply = match result {
        Ok(result) => v1::Reply {
            id,
            error: None,
            result: Some(result),
        },
        Err(error) => v1::Reply {
            id,
            error: Some(error.into()),
            result: None,
        },
    };
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Reply(reply)),
    }
}

fn event(kind: v1::event::Kind) -> v1::ServerFrame {
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Event(v1::Event {
            kind: Some(kind),
        })),
    }
}

/// When to warn of a token expiring at `expires_at`.
fn warning_at(expires_at: Instant, warning: std::time::Duration) -> Instant {
    expires_at.checked_sub(warning).unwrap_or(expires_at)
}

/// The monotonic instant of a Unix time, given the Unix time of now.
pub(crate) fn instant_of_unix_secs(at_secs: u64, now_secs: i64) -> Instant {
    let remaining = at_secs.saturating_sub(now_secs.max(0) as u64);
    Instant::now() + std::time::Duration::from_secs(remaining)
}
