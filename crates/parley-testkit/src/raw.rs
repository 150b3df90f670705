//! A protocol-level client: sends exactly the frames a test asks for and shows every frame the
//! server sends. No automatic receipts, pings or reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::StreamExt;
use parley_proto::Codec;
use parley_proto::Frame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::request::Op;
use parley_proto::v1::server_frame::Kind as ServerKind;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::PROMPTLY;
use crate::TestServer;

pub struct RawClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    codec: Codec,
    next_id: u64,
    /// Events read while waiting for something else, oldest first.
    events: VecDeque<EventKind>,
    /// Replies read while waiting for something else.
    replies: VecDeque<v1::Reply>,
    closed: Option<Option<CloseFrame>>,
}

impl RawClient {
    pub async fn connect(url: &str, codec: Codec) -> RawClient {
        let mut request = url.into_client_request().expect("valid url");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(codec.subprotocol()),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("connect to test server");
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|value| value.to_str().ok()),
            Some(codec.subprotocol()),
            "the server agrees to the subprotocol"
        );
        RawClient {
            socket,
            codec,
            next_id: 0,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            closed: None,
        }
    }

    /// Connects and logs in `uid` with a valid token; panics if login fails.
    pub async fn login(server: &TestServer, uid: &str, codec: Codec) -> RawClient {
        let mut client = RawClient::connect(&server.ws_url(), codec).await;
        let reply = client
            .call(Op::Login(v1::LoginRequest {
                app_id: server.app_id().into(),
                uid: uid.into(),
                token: server.token(uid),
            }))
            .await;
        assert!(reply.error.is_none(), "login of {uid} failed: {reply:?}");
        client
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, op: Op) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let frame = v1::ClientFrame {
            kind: Some(v1::client_frame::Kind::Request(v1::Request {
                id,
                op: Some(op),
            })),
        };
        self.send_frame(&frame).await;
        id
    }

    pub async fn send_frame(&mut self, frame: &v1::ClientFrame) {
        let message = match self.codec.encode(frame) {
            Frame::Text(text) => Message::Text(text.as_str().into()),
            Frame::Binary(bytes) => Message::Binary(bytes),
        };
        self.send_raw(message).await;
    }

    /// Sends any WebSocket message, well-formed or not.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket
            .send(message)
            .await
            .expect("send to test server");
    }

    /// Acknowledges a peer message.
    pub async fn receipt(&mut self, message_id: u64) {
        let frame = v1::ClientFrame {
            kind: Some(v1::client_frame::Kind::Receipt(v1::PeerMessageReceipt {
                message_id,
            })),
        };
        self.send_frame(&frame).await;
    }

    pub async fn call(&mut self, op: Op) -> v1::Reply {
        let id = self.send(op).await;
        self.reply(id).await
    }

    /// Waits for the reply to request `id`.
    pub async fn reply(&mut self, id: u64) -> v1::Reply {
        loop {
            if let Some(at) = self.replies.iter().position(|reply| reply.id == id) {
                return self.replies.remove(at).expect("position is in range");
            }
            self.read_one(PROMPTLY)
                .await
                .unwrap_or_else(|| panic!("no reply to request {id}"));
        }
    }

    /// Waits for the first event that `matches`, leaving the others queued.
    pub async fn event(&mut self, matches: impl Fn(&EventKind) -> bool) -> EventKind {
        loop {
            if let Some(at) = self.events.iter().position(&matches) {
                return self.events.remove(at).expect("position is in range");
            }
            if self.read_one(PROMPTLY).await.is_none() {
                panic!("expected event did not arrive; queued: {:?}", self.events);
            }
        }
    }

    /// Asserts no event that `matches` arrives within `wait`.
    pub async fn no_event(&mut self, wait: Duration, matches: impl Fn(&EventKind) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.events.iter().find(|event| matches(event)) {
                panic!("unexpected event {event:?}");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.read_one(left).await.is_none() {
                if let Some(event) = self.events.iter().find(|event| matches(event)) {
                    panic!("unexpected event {event:?}");
                }
                return;
            }
        }
    }

    /// Waits for the server to close the connection; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        while self.closed.is_none() {
            if self.read_one(PROMPTLY).await.is_none() && self.closed.is_none() {
                panic!("connection was not closed");
            }
        }
        self.closed.clone().flatten()
    }

    /// All events queued so far.
    pub fn queued_events(&self) -> &VecDeque<EventKind> {
        &self.events
    }

    /// Reads one frame into the queues. `None` on timeout or once closed.
    async fn read_one(&mut self, wait: Duration) -> Option<()> {
        if self.closed.is_some() {
            return None;
        }
        let message = tokio::time::timeout(wait, self.socket.next()).await.ok()?;
        let frame = match message {
            Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().into()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
            Some(Ok(Message::Close(close))) => {
                self.closed = Some(close);
                return Some(());
            }
            Some(Ok(_)) => return Some(()),
            Some(Err(_)) | None => {
                self.closed = Some(None);
                return Some(());
            }
        };
        let is_text = matches!(frame, Frame::Text(_));
        assert_eq!(
            is_text,
            self.codec == Codec::Json,
            "the server answers in the negotiated framing"
        );
        let frame: v1::ServerFrame = Codec::decode(&frame).expect("server frames decode");
        match frame.kind {
            Some(ServerKind::Reply(reply)) => self.replies.push_back(reply),
            Some(ServerKind::Event(v1::Event { kind: Some(kind) })) => self.events.push_back(kind),
            other => panic!("server sent an empty frame: {other:?}"),
        }
        Some(())
    }
}
