//! The task that owns a client's WebSocket: requests out, replies and events in, heartbeats and
//! reconnects.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::StreamExt;
use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::v1;
use parley_proto::v1::client_frame::Kind as ClientKind;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_proto::v1::server_frame::Kind as ServerKind;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::ClientConfig;
use crate::ClientError;
use crate::Command;
use crate::ConnectionChangeReason as Reason;
use crate::ConnectionState as State;
use crate::ErrorCode;
use crate::Event;
use crate::Incoming;
use crate::ReplyTo;
use crate::Sink;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(200);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a wss:// URL is checked with: the configured authorities, else the system's.
fn tls_config(
    config: &ClientConfig,
) -> Result<Option<Arc<parley_tls::rustls::ClientConfig>>, ClientError> {
    let secure = std::iter::once(&config.url)
        .chain(&config.fallback_urls)
        .any(|url| url.starts_with("wss://"));
    if !secure {
        return Ok(None);
    }
    let roots = match &config.tls_roots {
        Some(path) => parley_tls::roots_from_file(path),
        None => parley_tls::system_roots(),
    };
    roots
        .and_then(|roots| parley_tls::client_config(roots, None, &[b"http/1.1"]))
        .map(Some)
        .map_err(|error| ClientError::new(ErrorCode::InvalidArgument, error.to_string()))
}

/// Connects and logs in, then hands the socket to a new task.
pub(crate) async fn start(
    config: ClientConfig,
    command_rx: mpsc::Receiver<Command>,
    sink: Sink,
) -> Result<(), ClientError> {
    let tls = tls_config(&config)?;
    let mut manager = Manager {
        config,
        tls,
        sink,
        pending: HashMap::new(),
        next_id: 1,
        joined: BTreeMap::new(),
        heartbeat: Duration::from_secs(5),
        url_index: 0,
        seen_peer: Seen::default(),
    };
    let socket = manager.connect_and_login().await?;
    manager
        .emit(state_changed(State::Connected, Reason::LoginSuccess))
        .await;
    tokio::spawn(manager.run(socket, command_rx));
    Ok(())
}

enum SessionEnd {
    /// The server ended the session with this reason; do not reconnect.
    Aborted(Reason),
    LoggedOut,
    /// Every `Client` handle was dropped.
    Abandoned,
    /// The connection failed; reconnect.
    Lost,
}

enum Pending {
    Caller {
        reply_to: ReplyTo,
        /// Remembered so the client knows which channels to re-join after a reconnect.
        effect: Effect,
    },
    Ping,
}

enum Effect {
    Joined(String),
    Left(String),
    /// A channel message of ours: a replay must not hand it back to us.
    Sent(String),
    LoggedOut,
    None,
}

struct Manager {
    config: ClientConfig,
    /// For wss:// URLs.
    tls: Option<Arc<parley_tls::rustls::ClientConfig>>,
    sink: Sink,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Joined channels, with what is needed to resume them after a reconnect.
    joined: BTreeMap<String, JoinedChannel>,
    heartbeat: Duration,
    /// Which of the configured URLs to connect to next.
    url_index: usize,
    /// Recent peer message IDs: one delivered again (live, then from the offline inbox when its
    /// receipt was lost with a connection) is acknowledged again but not handed on twice.
    seen_peer: Seen,
}

/// How many message IDs a client remembers (per channel, and for peer messages) to drop
/// repeats.
const SEEN_MESSAGES: usize = 512;

/// The most recent [`SEEN_MESSAGES`] message IDs.
#[derive(Default)]
struct Seen {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    /// Records a message ID; false if it was seen before.
    fn first_sight(&mut self, message_id: u64) -> bool {
        if !self.ids.insert(message_id) {
            return false;
        }
        self.order.push_back(message_id);
        if self.order.len() > SEEN_MESSAGES
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

#[derive(Default)]
struct JoinedChannel {
    /// The highest sequence number seen (or the channel's at join time).
    last_seq: u64,
    /// Recent message IDs, to drop a message delivered twice (live and by recovery).
    seen: Seen,
}

impl JoinedChannel {
    /// Records a message; false if it was seen before.
    fn first_sight(&mut self, message_id: u64, seq: u64) -> bool {
        if !self.seen.first_sight(message_id) {
            return false;
        }
        self.last_seq = self.last_seq.max(seq);
        true
    }
}

impl Manager {
    async fn run(mut self, mut socket: Socket, mut command_rx: mpsc::Receiver<Command>) {
        loop {
            let end = self.session(&mut socket, &mut command_rx).await;
            self.fail_pending().await;
            match end {
                SessionEnd::Aborted(reason) => {
                    self.emit(state_changed(State::Aborted, reason)).await;
                    return;
                }
                SessionEnd::LoggedOut => {
                    let _ = socket.close(None).await;
                    self.emit(state_changed(State::Disconnected, Reason::Logout))
                        .await;
                    return;
                }
                SessionEnd::Abandoned => {
                    let _ = self.call_inline(&mut socket, logout_op()).await;
                    return;
                }
                SessionEnd::Lost if !self.config.reconnect => {
                    self.emit(state_changed(State::Disconnected, Reason::Interrupted))
                        .await;
                    return;
                }
                SessionEnd::Lost => {
                    self.emit(state_changed(State::Reconnecting, Reason::Interrupted))
                        .await;
                    match self.reconnect().await {
                        Ok(new_socket) => {
                            socket = new_socket;
                            self.emit(state_changed(State::Connected, Reason::LoginSuccess))
                                .await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "reconnect gave up");
                            self.emit(state_changed(State::Aborted, Reason::LoginFailure))
                                .await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Serves one connection until it ends.
    async fn session(
        &mut self,
        socket: &mut Socket,
        command_rx: &mut mpsc::Receiver<Command>,
    ) -> SessionEnd {
        let mut ping = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                command = command_rx.recv() => {
                    let Some(Command { op, reply_to }) = command else {
                        return SessionEnd::Abandoned;
                    };
                    let effect = match &op {
                        Op::Join(join) => Effect::Joined(join.channel_id.clone()),
                        Op::Leave(leave) => Effect::Left(leave.channel_id.clone()),
                        Op::SendMessage(send) => Effect::Sent(send.channel_id.clone()),
                        Op::Logout(_) => Effect::LoggedOut,
                        _ => Effect::None,
                    };
                    let id = self.take_id();
                    self.pending.insert(id, Pending::Caller { reply_to, effect });
                    if self.send_request(socket, id, op).await.is_err() {
                        return SessionEnd::Lost;
                    }
                }
                frame = socket.next() => {
                    last_heard = Instant::now();
                    let frame = match frame {
                        Some(Ok(WsMessage::Text(text))) => Frame::Text(text.as_str().into()),
                        Some(Ok(WsMessage::Binary(bytes))) => Frame::Binary(bytes),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return SessionEnd::Lost,
                    };
                    let server_frame = match Codec::decode::<v1::ServerFrame>(&frame) {
                        Ok(server_frame) => server_frame,
                        Err(error) => {
                            tracing::warn!(%error, "undecodable frame from server");
                            continue;
                        }
                    };
                    match server_frame.kind {
                        Some(ServerKind::Reply(reply)) => {
                            if let Some(end) = self.on_reply(reply).await {
                                return end;
                            }
                        }
                        Some(ServerKind::Event(event)) => {
                            if let Some(end) = self.on_event(socket, event).await {
                                return end;
                            }
                        }
                        None => {}
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > self.heartbeat * 3 {
                        return SessionEnd::Lost;
                    }
                    let id = self.take_id();
                    self.pending.insert(id, Pending::Ping);
                    if self.send_request(socket, id, Op::Ping(v1::PingRequest {})).await.is_err() {
                        return SessionEnd::Lost;
                    }
                }
            }
        }
    }

    async fn on_reply(&mut self, reply: v1::Reply) -> Option<SessionEnd> {
        let Some(Pending::Caller { reply_to, effect }) = self.pending.remove(&reply.id) else {
            return None;
        };
        let result = reply_result(reply);
        let mut end = None;
        if let Ok(result) = &result {
            match effect {
                Effect::Joined(channel) => {
                    let last_seq = match result {
                        ReplyResult::Join(join) => join.last_seq,
                        _ => 0,
                    };
                    self.joined.insert(
                        channel,
                        JoinedChannel {
                            last_seq,
                            ..JoinedChannel::default()
                        },
                    );
                }
                Effect::Left(channel) => {
                    self.joined.remove(&channel);
                }
                Effect::Sent(channel) => {
                    if let (Some(joined), ReplyResult::SendMessage(sent)) =
                        (self.joined.get_mut(&channel), result)
                    {
                        joined.first_sight(sent.message_id, sent.seq);
                    }
                }
                Effect::LoggedOut => end = Some(SessionEnd::LoggedOut),
                Effect::None => {}
            }
        }
        self.answer(reply_to, result).await;
        end
    }

    async fn answer(&self, reply_to: ReplyTo, result: Result<ReplyResult, ClientError>) {
        // Whoever asked and went away no longer wants the answer.
        match (reply_to, &self.sink) {
            (ReplyTo::Caller(reply_tx), _) => {
                let _ = reply_tx.send(result);
            }
            (ReplyTo::Stream(tag), Sink::Ordered(incoming_tx)) => {
                let _ = incoming_tx.send(Incoming::Reply { tag, result }).await;
            }
            (ReplyTo::Stream(_), Sink::Events(_)) => {}
        }
    }

    async fn on_event(&mut self, socket: &mut Socket, event: v1::Event) -> Option<SessionEnd> {
        let kind = event.kind?;
        match &kind {
            Event::ConnectionStateChanged(changed) => {
                // The server ended the session. DISCONNECTED (shutdown, heartbeat, slow reader)
                // invites a reconnect; ABORTED (remote login, expired token, ban) does not.
                if changed.state() == State::Disconnected {
                    return Some(SessionEnd::Lost);
                }
                let reason = Reason::try_from(changed.reason).unwrap_or(Reason::Interrupted);
                return Some(SessionEnd::Aborted(reason));
            }
            Event::MessageFromPeer(v1::MessageFromPeer { message_id, .. })
            | Event::RemoteInvitationReceived(v1::RemoteInvitationReceived {
                invitation_id: message_id,
                ..
            }) => {
                let receipt = v1::ClientFrame {
                    kind: Some(ClientKind::Receipt(v1::PeerMessageReceipt {
                        message_id: *message_id,
                    })),
                };
                if self.send_frame(socket, &receipt).await.is_err() {
                    return Some(SessionEnd::Lost);
                }
                if matches!(kind, Event::MessageFromPeer(_))
                    && !self.seen_peer.first_sight(*message_id)
                {
                    return None;
                }
            }
            Event::ChannelMessage(message) => {
                if let Some(channel) = self.joined.get_mut(&message.channel_id)
                    && !channel.first_sight(message.message_id, message.seq)
                {
                    return None;
                }
            }
            // No longer a member: a reconnect must not join it again.
            Event::KickedFromChannel(kicked) => {
                self.joined.remove(&kicked.channel_id);
            }
            _ => {}
        }
        self.emit(kind).await;
        None
    }

    /// Connects, logs in and re-joins channels, retrying with backoff until it works or the
    /// server refuses the login for good.
    async fn reconnect(&mut self) -> Result<Socket, ClientError> {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            let mut socket = match self.connect_and_login().await {
                Ok(socket) => socket,
                Err(error) if is_permanent(&error) => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, "reconnect attempt failed");
                    // The next attempt tries the next edge.
                    self.url_index += 1;
                    continue;
                }
            };
            let mut rejoined = true;
            let resume: Vec<(String, u64)> = self
                .joined
                .iter()
                .map(|(channel, joined)| (channel.clone(), joined.last_seq))
                .collect();
            for (channel, last_seq) in resume {
                // The server replays what came after `last_seq`, then says ChannelRecovered.
                let op = Op::Join(v1::JoinRequest {
                    channel_id: channel.clone(),
                    resume_after_seq: Some(last_seq),
                });
                match self.call_inline(&mut socket, op).await {
                    Ok(_) => {}
                    Err(error) if error.code == ErrorCode::AlreadyJoined => {}
                    Err(error) => {
                        tracing::debug!(%error, %channel, "re-join failed");
                        rejoined = false;
                        break;
                    }
                }
            }
            if rejoined {
                return Ok(socket);
            }
        }
    }

    async fn connect_and_login(&mut self) -> Result<Socket, ClientError> {
        let unavailable = |error: String| ClientError::new(ErrorCode::Unavailable, error);
        let urls: Vec<&String> = std::iter::once(&self.config.url)
            .chain(&self.config.fallback_urls)
            .collect();
        let url = urls[self.url_index % urls.len()].clone();
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| ClientError::new(ErrorCode::InvalidArgument, error.to_string()))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(self.config.codec.subprotocol()),
        );
        // Nagle off: a receipt or a message must not wait behind an unacknowledged frame.
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            self.tls.clone().map(Connector::Rustls),
        );
        let connected = tokio::time::timeout(LOGIN_TIMEOUT, connecting)
            .await
            .map_err(|_| ClientError::new(ErrorCode::Timeout, "connect timed out"))
            .and_then(|connected| connected.map_err(|error| unavailable(error.to_string())));
        let (mut socket, _) = match connected {
            Ok(connected) => connected,
            Err(error) => return Err(error),
        };
        let login = Op::Login(v1::LoginRequest {
            app_id: self.config.app_id.clone(),
            uid: self.config.uid.clone(),
            token: self.config.token.clone(),
        });
        match tokio::time::timeout(LOGIN_TIMEOUT, self.call_inline(&mut socket, login)).await {
            Err(_) => Err(ClientError::new(ErrorCode::Timeout, "login timed out")),
            Ok(Err(error)) => Err(error),
            Ok(Ok(ReplyResult::Login(login))) => {
                if login.heartbeat_interval_ms > 0 {
                    self.heartbeat = Duration::from_millis(u64::from(login.heartbeat_interval_ms));
                }
                Ok(socket)
            }
            Ok(Ok(other)) => Err(crate::unexpected(other)),
        }
    }

    /// Sends one request and waits for its reply on a socket the main loop is not serving,
    /// passing on any events that arrive meanwhile.
    async fn call_inline(
        &mut self,
        socket: &mut Socket,
        op: Op,
    ) -> Result<ReplyResult, ClientError> {
        let lost = || ClientError::new(ErrorCode::Unavailable, "connection lost");
        let id = self.take_id();
        self.send_request(socket, id, op)
            .await
            .map_err(|_| lost())?;
        loop {
            let frame = match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => Frame::Text(text.as_str().into()),
                Some(Ok(WsMessage::Binary(bytes))) => Frame::Binary(bytes),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(lost()),
            };
            match Codec::decode::<v1::ServerFrame>(&frame).map(|frame| frame.kind) {
                Ok(Some(ServerKind::Reply(reply))) if reply.id == id => return reply_result(reply),
                Ok(Some(ServerKind::Event(event))) => {
                    let session_ended = self.on_event(socket, event).await.is_some();
                    if session_ended {
                        return Err(lost());
                    }
                }
                _ => {}
            }
        }
    }

    async fn send_request(
        &self,
        socket: &mut Socket,
        id: u64,
        op: Op,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let frame = v1::ClientFrame {
            kind: Some(ClientKind::Request(v1::Request { id, op: Some(op) })),
        };
        self.send_frame(socket, &frame).await
    }

    async fn send_frame(
        &self,
        socket: &mut Socket,
        frame: &v1::ClientFrame,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let message = match self.config.codec.encode(frame) {
            Frame::Text(text) => WsMessage::Text(text.as_str().into()),
            Frame::Binary(bytes) => WsMessage::Binary(bytes),
        };
        socket.send(message).await
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn fail_pending(&mut self) {
        let mut pending: Vec<(u64, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, pending) in pending {
            if let Pending::Caller { reply_to, .. } = pending {
                let error =
                    ClientError::new(ErrorCode::Unavailable, "connection lost before the reply");
                self.answer(reply_to, Err(error)).await;
            }
        }
    }

    async fn emit(&self, event: Event) {
        // An application that dropped its receiver no longer wants events.
        match &self.sink {
            Sink::Events(event_tx) => {
                let _ = event_tx.send(event).await;
            }
            Sink::Ordered(incoming_tx) => {
                let _ = incoming_tx.send(Incoming::Event(event)).await;
            }
        }
    }
}

fn reply_result(reply: v1::Reply) -> Result<ReplyResult, ClientError> {
    match (reply.error, reply.result) {
        (Some(error), _) => Err(ClientError::from_wire(error)),
        (None, Some(result)) => Ok(result),
        (None, None) => Err(ClientError::new(ErrorCode::Internal, "empty reply")),
    }
}

fn is_permanent(error: &ClientError) -> bool {
    matches!(
        error.code,
        ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::InvalidAppId
            | ErrorCode::InvalidUserid
            | ErrorCode::Banned
    )
}

fn state_changed(state: State, reason: Reason) -> Event {
    Event::ConnectionStateChanged(v1::ConnectionStateChanged {
        state: state as i32,
        reason: reason as i32,
    })
}

fn logout_op() -> Op {
    Op::Logout(v1::LogoutRequest {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_seen_once_among_the_most_recent() {
        let mut seen = Seen::default();
        assert!(seen.first_sight(1));
        assert!(!seen.first_sight(1));
        for id in 2..=SEEN_MESSAGES as u64 {
            assert!(seen.first_sight(id));
        }
        assert!(!seen.first_sight(1), "still among the most recent");
        assert!(seen.first_sight(SEEN_MESSAGES as u64 + 1));
        // The oldest is forgotten once more than SEEN_MESSAGES came after it.
        assert!(seen.first_sight(1));
        assert_eq!(seen.ids.len(), SEEN_MESSAGES);
    }
}
