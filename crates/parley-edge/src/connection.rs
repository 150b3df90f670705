//! One client connection: a reader task that owns the session and a writer task that coalesces
//! outgoing frames.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::extract::ws::CloseFrame;
use axum::extract::ws::Message;
use axum::extract::ws::WebSocket;
use futures_util::SinkExt;
use futures_util::StreamExt;
use futures_util::stream::SplitSink;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::limits::MAX_MEMBER_COUNT_CHANNELS;
use parley_core::limits::MAX_MESSAGE_BYTES;
use parley_core::rate::TokenBucket;
use parley_owner::ChannelKey;
use parley_owner::ChannelSend;
use parley_owner::LeaveReason;
use parley_owner::OpenSession;
use parley_owner::PeerOutcome;
use parley_owner::PeerSend;
use parley_owner::UserKey;
use parley_proto::Codec;
use parley_proto::Frame;
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
use crate::edge::SessionHandle;

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

struct LoggedIn {
    app: AppConfig,
    user: UserKey,
    session: SessionRef,
    joined: HashSet<ChannelId>,
    message_bucket: TokenBucket,
    join_bucket: TokenBucket,
    query_bucket: TokenBucket,
    renew_bucket: TokenBucket,
    token_expires_at: Option<Instant>,
    token_warned: bool,
}

struct Connection {
    edge: Arc<Edge>,
    handle: Arc<SessionHandle>,
    connected_at: Instant,
    last_frame_at: Instant,
    session: Option<LoggedIn>,
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
    let now = Instant::now();
    let mut connection = Connection {
        edge,
        handle: Arc::new(SessionHandle {
            outbound_tx,
            control_tx,
            receipts: Mutex::new(Default::default()),
        }),
        connected_at: now,
        last_frame_at: now,
        session: None,
        urgent_close_tx: Some(urgent_close_tx),
    };
    let ending = connection.read_loop(stream, control_rx).await;
    connection.finish(ending).await;
    drop(connection);
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
                    let frame = match frame {
                        Some(Ok(Message::Text(text))) => Frame::Text(text.to_string()),
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
                    if let Some(ending) = self.on_frame(frame).await {
                        return ending;
                    }
                }
                Some(Control::End(reason)) = control_rx.recv() => return Ending::Server(reason),
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(ending) = self.on_timer() {
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
        if let Some(expires_at) = session.token_expires_at {
            deadline = deadline.min(expires_at);
            if !session.token_warned {
                deadline = deadline.min(warning_at(expires_at, config.token_warning));
            }
        }
        deadline
    }

    fn on_timer(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let config = self.edge.config().clone();
        let Some(session) = &mut self.session else {
            return (now >= self.connected_at + config.login_timeout)
                .then_some(Ending::Server(Reason::LoginTimeout));
        };
        if now >= self.last_frame_at + config.heartbeat_interval * 3 {
            return Some(Ending::Server(Reason::HeartbeatTimeout));
        }
        if let Some(expires_at) = session.token_expires_at {
            if now >= expires_at {
                return Some(Ending::Server(Reason::TokenExpired));
            }
            if !session.token_warned && now >= warning_at(expires_at, config.token_warning) {
                session.token_warned = true;
                self.push(Outbound::Own(event(
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
                    .expect("receipt lock poisoned")
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
            Op::Login(login) => self.login(login).await,
            Op::Ping(_) => Ok(ReplyResult::Pong(v1::PongResult {
                server_time_ms: unix_ms(),
            })),
            _ if self.session.is_none() => Err(Error::new(
                ErrorCode::NotLoggedIn,
                "log in before any other request",
            )),
            Op::Logout(_) => {
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
        };
        self.reply(id, result);
        None
    }

    async fn login(&mut self, login: v1::LoginRequest) -> Result<ReplyResult, Error> {
        if self.session.is_some() {
            return Err(Error::new(ErrorCode::AlreadyLoggedIn, "already logged in"));
        }
        let app = self.edge.apps().get(&login.app_id)?.clone();
        let uid = UserId::parse(&login.uid)?;
        if !self
            .edge
            .allow_login(&app.app_id, &uid, app.limits.login_rate)
        {
            return Err(Error::too_often("login"));
        }
        let now_secs = unix_ms() / 1000;
        let expires_at_secs = app.authenticate(uid.as_str(), &login.token, now_secs as u64)?;

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
            .open_session(OpenSession {
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
        self.session = Some(LoggedIn {
            user,
            session,
            joined: HashSet::new(),
            message_bucket: TokenBucket::new(limits.message_rate, now.into_std()),
            join_bucket: TokenBucket::new(limits.join_rate, now.into_std()),
            query_bucket: TokenBucket::new(limits.query_rate, now.into_std()),
            renew_bucket: TokenBucket::new(limits.renew_token_rate, now.into_std()),
            token_expires_at: expires_at_secs.map(|at| instant_of_unix_secs(at, now_secs)),
            token_warned: false,
            app,
        });
        Ok(ReplyResult::Login(v1::LoginResult {
            session_id: session_id.to_string(),
            server_time_ms: unix_ms(),
            heartbeat_interval_ms: self.edge.config().heartbeat_interval.as_millis() as u32,
            token_expire_ms: expires_at_secs.map_or(0, |at| at as i64 * 1000),
        }))
    }

    fn renew_token(&mut self, renew: v1::RenewTokenRequest) -> Result<ReplyResult, Error> {
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

    async fn send_message_to_peer(
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
        let message = validate_message(send.message)?;
        let dispatch = edge
            .owner()
            .send_peer(PeerSend {
                from: session.user.clone(),
                to,
                message,
            })
            .await?;
        let outbound_tx = self.handle.outbound_tx.clone();
        tokio::spawn(async move {
            let result = match dispatch.outcome.await {
                PeerOutcome::Received => Ok(v1::PeerMessageResult::ReceivedByPeer),
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
            let _ = outbound_tx.try_send(Outbound::Own(reply_frame(id, result)));
        });
        Ok(())
    }

    async fn join(&mut self, join: v1::JoinRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.join_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("join"));
        }
        let channel = ChannelId::parse(&join.channel_id)?;
        if session.joined.contains(&channel) {
            return Err(Error::new(
                ErrorCode::AlreadyJoined,
                "already joined this channel",
            ));
        }
        let max = session.app.limits.max_channels_per_user;
        if session.joined.len() >= max {
            return Err(Error::new(
                ErrorCode::ExceedLimit,
                format!("at most {max} channels may be joined at once"),
            ));
        }
        edge.owner()
            .join(
                channel_key(&session.user, &channel),
                session.user.uid.clone(),
                session.session,
            )
            .await?;
        session.joined.insert(channel);
        Ok(ReplyResult::Empty(v1::Empty {}))
    }

    async fn leave(&mut self, leave: v1::LeaveRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.join_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("leave"));
        }
        let channel = ChannelId::parse(&leave.channel_id)?;
        if !session.joined.remove(&channel) {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        edge.owner()
            .leave(
                channel_key(&session.user, &channel),
                session.user.uid.clone(),
                session.session,
                LeaveReason::Left,
            )
            .await?;
        Ok(ReplyResult::Empty(v1::Empty {}))
    }

    async fn send_message(&mut self, send: v1::SendMessageRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.message_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("message"));
        }
        let channel = ChannelId::parse(&send.channel_id)?;
        if !session.joined.contains(&channel) {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        let message = validate_message(send.message)?;
        let sent = edge
            .owner()
            .send_channel(ChannelSend {
                channel: channel_key(&session.user, &channel),
                from: session.user.uid.clone(),
                session: session.session,
                message,
            })
            .await?;
        Ok(ReplyResult::SendMessage(v1::SendMessageResult {
            message_id: sent.message_id.0,
            server_received_ts: sent.server_received_ts,
            seq: sent.seq,
        }))
    }

    async fn get_members(&mut self, get: v1::GetMembersRequest) -> Result<ReplyResult, Error> {
        let edge = self.edge.clone();
        let session = self.logged_in()?;
        if !session.query_bucket.try_take(std::time::Instant::now()) {
            return Err(Error::too_often("getMembers"));
        }
        let channel = ChannelId::parse(&get.channel_id)?;
        if !session.joined.contains(&channel) {
            return Err(Error::new(
                ErrorCode::NotJoined,
                "not joined to this channel",
            ));
        }
        let members = edge
            .owner()
            .members(
                channel_key(&session.user, &channel),
                session.user.uid.clone(),
                session.session,
            )
            .await?;
        Ok(ReplyResult::GetMembers(v1::GetMembersResult {
            members: members.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn get_channel_member_count(
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
            edge.owner()
                .member_count(channel_key(&session.user, channel))
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

    fn logged_in(&mut self) -> Result<&mut LoggedIn, Error> {
        self.session
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::NotLoggedIn, "log in before any other request"))
    }

    fn reply(&self, id: u64, result: Result<ReplyResult, Error>) {
        self.push(Outbound::Own(reply_frame(id, result)));
    }

    fn push(&self, outbound: Outbound) {
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
            for channel in &session.joined {
                let left = owner
                    .leave(
                        channel_key(&session.user, channel),
                        session.user.uid.clone(),
                        session.session,
                        reason,
                    )
                    .await;
                if let Err(error) = left {
                    tracing::warn!(%error, channel = %channel, "leave on session end failed");
                }
            }
            if let Err(error) = owner
                .close_session(session.user.clone(), session.session)
                .await
            {
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
                Outbound::Own(frame) => to_message(&codec.encode(&frame)),
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
        Frame::Text(text) => Message::Text(text.clone().into()),
        Frame::Binary(bytes) => Message::Binary(bytes.clone()),
    }
}

fn validate_message(message: Option<v1::MessageBody>) -> Result<v1::MessageBody, Error> {
    let invalid = |why: &str| Error::new(ErrorCode::InvalidMessage, why);
    let message = message.ok_or_else(|| invalid("message is missing"))?;
    let content_len = match &message.content {
        None => return Err(invalid("message has neither text nor raw content")),
        Some(v1::message_body::Content::Text(text)) if text.is_empty() => {
            return Err(invalid("text message is empty"));
        }
        Some(v1::message_body::Content::Raw(raw)) if raw.is_empty() => {
            return Err(invalid("raw message is empty"));
        }
        Some(v1::message_body::Content::Text(text)) => text.len(),
        Some(v1::message_body::Content::Raw(raw)) => raw.len(),
    };
    if content_len + message.description.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(&format!(
            "message is larger than {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(message)
}

fn channel_key(user: &UserKey, channel: &ChannelId) -> ChannelKey {
    ChannelKey {
        app: user.app.clone(),
        channel: channel.clone(),
    }
}

fn reply_frame(id: u64, result: Result<ReplyResult, Error>) -> v1::ServerFrame {
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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The monotonic instant of a Unix time, given the Unix time of now.
fn instant_of_unix_secs(at_secs: u64, now_secs: i64) -> Instant {
    let remaining = at_secs.saturating_sub(now_secs.max(0) as u64);
    Instant::now() + std::time::Duration::from_secs(remaining)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Option<v1::MessageBody> {
        Some(v1::MessageBody {
            content: Some(v1::message_body::Content::Text(text.into())),
            description: String::new(),
        })
    }

    #[test]
    fn messages_up_to_32_kb_pass_and_larger_ones_do_not() {
        assert!(validate_message(text(&"x".repeat(MAX_MESSAGE_BYTES))).is_ok());
        let too_big = validate_message(text(&"x".repeat(MAX_MESSAGE_BYTES + 1))).unwrap_err();
        assert_eq!(too_big.code, ErrorCode::InvalidMessage);
        assert_eq!(
            validate_message(text("")).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            validate_message(None).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
        let raw_with_description = Some(v1::MessageBody {
            content: Some(v1::message_body::Content::Raw(vec![1; 32_000].into())),
            description: "d".repeat(769),
        });
        assert!(
            validate_message(raw_with_description).is_err(),
            "description counts"
        );
    }
}
