//! One client connection: a reader task that owns the session and a writer task that coalesces
//! outgoing frames.

use parking_lot::Mutex;
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
use parley_core::ids::MessageId;
use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::Utf8;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::connection_state_changed::State;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::edge::Control;
use crate::edge::Edge;
use crate::edge::Outbound;
use crate::edge::SessionHandle;
use crate::session::Ending;
use crate::session::Session;
use crate::session::event;

/// Frames the writer takes from its queue per wake-up, then writes with one flush.
const WRITE_BATCH: usize = 64;
/// Close code for a server-ended session is this plus the `Reason` number (docs/protocol.md).
const CLOSE_CODE_BASE: u16 = 4000;
/// How long the writer may take to flush its last frames after the session ended.
const WRITER_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// One WebSocket: its session, and when it connected and was last heard from.
struct Connection {
    session: Session,
    connected_at: Instant,
    last_frame_at: Instant,
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
    let session = Session {
        edge,
        handle: Arc::new(SessionHandle {
            outbound_tx,
            control_tx,
            receipts: Mutex::new(Default::default()),
            channel_seqs: Mutex::new(Default::default()),
            outgoing_invitations: Mutex::new(Default::default()),
        }),
        logged_in: None,
    };
    let mut connection = Connection {
        session,
        connected_at: now,
        last_frame_at: now,
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
                    // A frame came: a session that had gone silent is reachable again.
                    Box::pin(self.session.set_reachable(true)).await;
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
                    Control::Reregister => Box::pin(self.session.reregister()).await,
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
        let config = self.session.edge.config();
        let Some(session) = &self.session.logged_in else {
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

    async fn on_timer(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let config = self.session.edge.config().clone();
        let Some(session) = &self.session.logged_in else {
            return (now >= self.connected_at + config.login_timeout)
                .then_some(Ending::Server(Reason::LoginTimeout));
        };
        if now >= self.last_frame_at + config.heartbeat_interval * 3 {
            return Some(Ending::Server(Reason::HeartbeatTimeout));
        }
        if now >= self.last_frame_at + session.app.limits.unreachable_after {
            self.session.set_reachable(false).await;
        }
        let Some(session) = &mut self.session.logged_in else {
            return None;
        };
        if let Some(expires_at) = session.token_expires_at {
            if now >= expires_at {
                return Some(Ending::Server(Reason::TokenExpired));
            }
            if !session.token_warned && now >= warning_at(expires_at, config.token_warning) {
                session.token_warned = true;
                self.session.push(Outbound::own(event(
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
                self.session
                    .reply(0, Err(Error::invalid_argument(error.to_string())));
                return None;
            }
        };
        match client_frame.kind {
            Some(v1::client_frame::Kind::Request(request)) => self.session.dispatch(request).await,
            Some(v1::client_frame::Kind::Receipt(receipt)) => {
                let waiting = self
                    .session
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
                self.session.reply(
                    0,
                    Err(Error::invalid_argument(
                        "frame carries neither request nor receipt",
                    )),
                );
                None
            }
        }
    }

    /// Hands the session back to the owners, then queues the close for the writer (or, when
    /// its queue is full, has it close at once).
    async fn finish(&mut self, ending: Ending) {
        self.session.finish(ending).await;
        let close = match ending {
            Ending::Logout => Some(Outbound::Close(None)),
            Ending::Server(reason) => Some(Outbound::Close(Some(reason))),
            Ending::Lost => None,
        };
        if let Some(close) = close
            && let Err(mpsc::error::TrySendError::Full(_)) =
                self.session.handle.outbound_tx.try_send(close)
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

/// When to warn of a token expiring at `expires_at`.
fn warning_at(expires_at: Instant, warning: std::time::Duration) -> Instant {
    expires_at.checked_sub(warning).unwrap_or(expires_at)
}
