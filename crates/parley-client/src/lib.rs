//! The Parley Rust SDK.
//!
//! ```no_run
//! # async fn demo() -> Result<(), parley_client::ClientError> {
//! use parley_client::{Client, ClientConfig, Message};
//! let config = ClientConfig::new("ws://127.0.0.1:8080/v1/ws", "0123456789abcdef0123456789abcdef", "alice");
//! let (client, mut events) = Client::login(config).await?;
//! client.join("lobby").await?;
//! client.send_message("lobby", Message::text("hello")).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! One task per client owns the WebSocket: it sends requests in the order they were made, matches
//! replies to them, acknowledges peer messages, pings, and when the connection drops it reconnects,
//! logs in again and re-joins the channels the client was in.
//!
//! Architecture invariant: this crate depends on no server crate, only on the wire (`parley-proto`).

mod connection;

use std::time::Duration;

use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

pub use parley_proto::v1::ErrorCode;
pub use parley_proto::v1::PeerMessageResult;
pub use parley_proto::v1::connection_state_changed::Reason as ConnectionChangeReason;
pub use parley_proto::v1::connection_state_changed::State as ConnectionState;
/// Everything the client reports as it happens: the server's events and its own connection
/// state changes, in the shapes of the wire protocol.
pub use parley_proto::v1::event::Kind as Event;

/// Requests a caller may queue before `request` waits. Overflow policy: callers wait.
const COMMAND_QUEUE: usize = 256;
/// Events buffered for the application. Overflow policy: the client stops reading the socket
/// until the application catches up (the server then ends the session as a slow consumer if it
/// does not).
const EVENT_QUEUE: usize = 1024;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub url: String,
    /// More edges of the same cluster: reconnecting tries them in turn when one cannot be
    /// reached.
    pub fallback_urls: Vec<String>,
    pub app_id: String,
    pub uid: String,
    pub token: String,
    pub codec: Codec,
    /// Reconnect (and re-join channels) when the connection drops.
    pub reconnect: bool,
    /// How long a request may wait for its reply.
    pub request_timeout: Duration,
    /// Certificate authorities (a PEM file) that wss:// servers are checked against, instead
    /// of the system's (which honour `SSL_CERT_FILE`).
    pub tls_roots: Option<std::path::PathBuf>,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, app_id: impl Into<String>, uid: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            fallback_urls: Vec::new(),
            app_id: app_id.into(),
            uid: uid.into(),
            token: String::new(),
            codec: Codec::Proto,
            reconnect: true,
            request_timeout: Duration::from_secs(15),
            tls_roots: None,
        }
    }

    pub fn tls_roots(mut self, pem_file: impl Into<std::path::PathBuf>) -> Self {
        self.tls_roots = Some(pem_file.into());
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    pub fn fallback_urls(mut self, urls: impl IntoIterator<Item = String>) -> Self {
        self.fallback_urls = urls.into_iter().collect();
        self
    }

    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }
}

/// A failed request: the server's error code, or one the client chose for a local failure
/// (TIMEOUT when no reply came in time, NOT_LOGGED_IN when the session is over).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: String,
}

impl ClientError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
        }
    }

    fn from_wire(error: v1::Error) -> Self {
        ClientError {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Internal),
            message: error.message,
        }
    }
}

/// A message body: text, or raw bytes with an optional description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message(pub v1::MessageBody);

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Message(v1::MessageBody {
            content: Some(v1::message_body::Content::Text(text.into())),
            description: String::new(),
        })
    }

    pub fn raw(bytes: impl Into<Vec<u8>>, description: impl Into<String>) -> Self {
        Message(v1::MessageBody {
            content: Some(v1::message_body::Content::Raw(bytes.into().into())),
            description: description.into(),
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerMessageOptions {
    pub enable_offline_messaging: bool,
    pub enable_historical_messaging: bool,
}

/// A reply that is on its way.
pub struct PendingReply {
    reply_rx: oneshot::Receiver<Result<ReplyResult, ClientError>>,
    timeout: Duration,
}

impl PendingReply {
    pub async fn wait(self) -> Result<ReplyResult, ClientError> {
        match tokio::time::timeout(self.timeout, self.reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::new(
                ErrorCode::NotLoggedIn,
                "the session has ended",
            )),
            Err(_) => Err(ClientError::new(ErrorCode::Timeout, "no reply in time")),
        }
    }
}

pub(crate) struct Command {
    op: Op,
    reply_to: ReplyTo,
}

/// Where the reply to a request goes.
pub(crate) enum ReplyTo {
    /// To the caller that awaits it.
    Caller(oneshot::Sender<Result<ReplyResult, ClientError>>),
    /// Onto the ordered stream of [`Client::login_ordered`], with this tag.
    Stream(u64),
}

/// What the ordered stream of [`Client::login_ordered`] carries: events and replies, in the
/// order they arrived from the server.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    Reply {
        tag: u64,
        result: Result<ReplyResult, ClientError>,
    },
}

/// Where the connection task sends what arrives.
pub(crate) enum Sink {
    Events(mpsc::Sender<Event>),
    Ordered(mpsc::Sender<Incoming>),
}

/// A logged-in client. Cheap to clone; the session ends when the last clone is dropped or on
/// [`Client::logout`].
#[derive(Clone)]
pub struct Client {
    command_tx: mpsc::Sender<Command>,
    request_timeout: Duration,
}

impl Client {
    /// Connects and logs in. Events (including later connection state changes) arrive on the
    /// returned receiver.
    pub async fn login(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::Receiver<Event>), ClientError> {
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let client = Client::start(config, Sink::Events(event_tx)).await?;
        Ok((client, event_rx))
    }

    /// Like [`Client::login`], but replies to requests made with [`Client::send_tagged`] arrive
    /// on the same stream as events, in the order the server sent them (what `parley client`
    /// needs to print "in arrival order").
    pub async fn login_ordered(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::Receiver<Incoming>), ClientError> {
        let (incoming_tx, incoming_rx) = mpsc::channel(EVENT_QUEUE);
        let client = Client::start(config, Sink::Ordered(incoming_tx)).await?;
        Ok((client, incoming_rx))
    }

    async fn start(config: ClientConfig, sink: Sink) -> Result<Client, ClientError> {
        let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let request_timeout = config.request_timeout;
        connection::start(config, command_rx, sink).await?;
        Ok(Client {
            command_tx,
            request_timeout,
        })
    }

    /// Queues a request whose reply arrives on the ordered stream with `tag`.
    pub async fn send_tagged(&self, op: Op, tag: u64) -> Result<(), ClientError> {
        self.command_tx
            .send(Command {
                op,
                reply_to: ReplyTo::Stream(tag),
            })
            .await
            .map_err(|_| ClientError::new(ErrorCode::NotLoggedIn, "the session has ended"))
    }

    /// Queues a request; requests reach the server in the order this is called and awaited.
    pub async fn request(&self, op: Op) -> Result<PendingReply, ClientError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.command_tx
            .send(Command {
                op,
                reply_to: ReplyTo::Caller(reply_tx),
            })
            .await
            .map_err(|_| ClientError::new(ErrorCode::NotLoggedIn, "the session has ended"))?;
        Ok(PendingReply {
            reply_rx,
            timeout: self.request_timeout,
        })
    }

    async fn call(&self, op: Op) -> Result<ReplyResult, ClientError> {
        self.request(op).await?.wait().await
    }

    pub async fn send_message_to_peer(
        &self,
        peer_id: &str,
        message: Message,
        options: PeerMessageOptions,
    ) -> Result<v1::SendMessageToPeerResult, ClientError> {
        let op = Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: peer_id.into(),
            message: Some(message.0),
            enable_offline_messaging: options.enable_offline_messaging,
            enable_historical_messaging: options.enable_historical_messaging,
        });
        match self.call(op).await? {
            ReplyResult::SendMessageToPeer(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    pub async fn join(&self, channel_id: &str) -> Result<(), ClientError> {
        self.call(Op::Join(v1::JoinRequest {
            channel_id: channel_id.into(),
            resume_after_seq: None,
        }))
        .await
        .map(drop)
    }

    pub async fn leave(&self, channel_id: &str) -> Result<(), ClientError> {
        self.call(Op::Leave(v1::LeaveRequest {
            channel_id: channel_id.into(),
        }))
        .await
        .map(drop)
    }

    pub async fn send_message(
        &self,
        channel_id: &str,
        message: Message,
    ) -> Result<v1::SendMessageResult, ClientError> {
        let op = Op::SendMessage(v1::SendMessageRequest {
            channel_id: channel_id.into(),
            message: Some(message.0),
            enable_historical_messaging: false,
        });
        match self.call(op).await? {
            ReplyResult::SendMessage(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_members(&self, channel_id: &str) -> Result<Vec<String>, ClientError> {
        let op = Op::GetMembers(v1::GetMembersRequest {
            channel_id: channel_id.into(),
        });
        match self.call(op).await? {
            ReplyResult::GetMembers(result) => Ok(result.members),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_channel_member_count(
        &self,
        channel_ids: &[&str],
    ) -> Result<Vec<(String, u32)>, ClientError> {
        let op = Op::GetChannelMemberCount(v1::GetChannelMemberCountRequest {
            channel_ids: channel_ids.iter().map(|id| id.to_string()).collect(),
        });
        match self.call(op).await? {
            ReplyResult::GetChannelMemberCount(result) => Ok(result
                .counts
                .into_iter()
                .map(|count| (count.channel_id, count.member_count))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn renew_token(&self, token: &str) -> Result<(), ClientError> {
        self.call(Op::RenewToken(v1::RenewTokenRequest {
            token: token.into(),
        }))
        .await
        .map(drop)
    }

    /// Logs out; the event stream then reports DISCONNECTED/LOGOUT and ends.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call(Op::Logout(v1::LogoutRequest {})).await.map(drop)
    }
}

fn unexpected(result: ReplyResult) -> ClientError {
    ClientError::new(
        ErrorCode::Internal,
        format!("unexpected reply from server: {result:?}"),
    )
}
