//! [`Edge`]: the table of this node's sessions, and the [`EdgeSink`] owners deliver through.

use parking_lot::Mutex;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures_channel::oneshot;
use parley_core::app::AppDirectory;
use parley_core::ids::AppId;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::UserId;
use parley_core::rate::TokenBucket;
use parley_owner::EdgeSink;
use parley_owner::Owners;
use parley_proto::SharedFrame;
use parley_proto::v1::connection_state_changed::Reason;
use tokio::sync::mpsc;

use crate::tally::Held;
use crate::tally::Tally;

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub node: NodeId,
    /// How often clients should ping; silence for three intervals ends the connection.
    pub heartbeat_interval: Duration,
    /// Time a new connection has to log in.
    pub login_timeout: Duration,
    /// TokenPrivilegeWillExpire is sent this long before the token expires.
    pub token_warning: Duration,
    /// Largest WebSocket frame accepted; larger ones close the connection (PROTOCOL_ERROR).
    pub max_frame_bytes: usize,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Client connections one IP address may hold; more are closed when accepted.
    pub max_connections_per_address: usize,
    /// Time a new connection has to get its first request (the WebSocket upgrade) through.
    pub handshake_timeout: Duration,
    /// Logged-in sessions one app may hold on this edge; more logins are refused (EXCEED_LIMIT),
    /// so one app cannot take an edge shared with others.
    pub max_sessions_per_app: usize,
    /// The client port's TLS; without it the port speaks plain text.
    pub tls: Option<Arc<parley_tls::rustls::ServerConfig>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            node: NodeId(0),
            heartbeat_interval: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            token_warning: Duration::from_secs(30),
            max_frame_bytes: 128 * 1024,
            outbound_queue: 1024,
            max_connections_per_address: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_sessions_per_app: 100_000,
            tls: None,
        }
    }
}

/// What a connection's writer sends, in order.
pub(crate) enum Outbound {
    Shared(Arc<SharedFrame>),
    /// Boxed: the queue's slots are as big as its largest variant, and every connection's queue
    /// allocates a block of them up front.
    Own(Box<parley_proto::v1::ServerFrame>),
    /// Close the socket and stop; with a reason, first write ConnectionStateChanged(ABORTED,
    /// reason).
    Close(Option<Reason>),
}

impl Outbound {
    pub(crate) fn own(frame: parley_proto::v1::ServerFrame) -> Outbound {
        Outbound::Own(Box::new(frame))
    }
}

/// What the rest of the node may ask of a connection's task.
pub(crate) enum Control {
    End(Reason),
    /// The ring changed: tell the (possibly new) owners about this session again.
    Reregister,
}

/// A live session as other tasks see it.
pub(crate) struct SessionHandle {
    pub outbound_tx: mpsc::Sender<Outbound>,
    pub control_tx: mpsc::Sender<Control>,
    /// Peer messages awaiting the client's receipt. A blocking lock: touched only for an insert or a
    /// remove, never across an await.
    pub receipts: Mutex<HashMap<MessageId, oneshot::Sender<()>>>,
    /// Per joined channel, the last sequence number this session was handed: re-registering
    /// with a channel's new owner resumes after it, so a hand-off loses nothing. A blocking lock,
    /// never held across an await.
    pub channel_seqs: Mutex<ChannelSeqs>,
    /// Invitations this session sent, for cancel and for rebuilding them with a new owner.
    /// A blocking lock, never held across an await.
    pub outgoing_invitations: Mutex<BTreeMap<u64, Outgoing>>,
}

/// A session's channels and the last sequence number of each it was handed. A list, not a map:
/// a session is in a few channels (at most 20), and every channel message delivered looks its
/// channel up, so a short scan beats hashing the name.
#[derive(Default)]
pub(crate) struct ChannelSeqs(Vec<(Box<str>, u64)>);

impl ChannelSeqs {
    pub(crate) fn get(&self, channel: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(name, _)| &**name == channel)
            .map(|(_, seq)| *seq)
    }

    fn get_mut(&mut self, channel: &str) -> Option<&mut u64> {
        self.0
            .iter_mut()
            .find(|(name, _)| &**name == channel)
            .map(|(_, seq)| seq)
    }

    pub(crate) fn contains_key(&self, channel: &str) -> bool {
        self.get(channel).is_some()
    }

    /// Sets `channel`'s sequence number, adding the channel if it is new.
    pub(crate) fn insert(&mut self, channel: String, seq: u64) {
        match self.get_mut(&channel) {
            Some(last) => *last = seq,
            None => self.0.push((channel.into(), seq)),
        }
    }

    pub(crate) fn remove(&mut self, channel: &str) -> Option<u64> {
        let index = self.0.iter().position(|(name, _)| &**name == channel)?;
        Some(self.0.swap_remove(index).1)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| &**name)
    }
}

/// An invitation a session sent, as its edge sees it go by.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub callee: UserId,
    pub content: String,
    pub channel_id: String,
    pub sent_at: Instant,
    /// The caller was told the callee has it.
    pub received: bool,
    /// The caller was told how it ended.
    pub over: bool,
}

/// What the edge keeps track of in a delivered frame, read once per delivery (not per
/// recipient).
#[derive(Clone, Copy)]
enum Tracked<'a> {
    Nothing,
    /// A channel message: the recipients have seen the channel up to this sequence number.
    ChannelSeq(&'a str, u64),
    /// The recipient is no longer in this channel.
    Kicked(&'a str),
    /// News of an invitation the recipient sent: it was received, or it `ended`.
    Invitation {
        id: u64,
        ended: bool,
    },
}

impl<'a> Tracked<'a> {
    fn of(frame: &'a SharedFrame) -> Self {
        use parley_proto::v1::event::Kind;
        use parley_proto::v1::server_frame;
        let Some(server_frame::Kind::Event(event)) = &frame.message().kind else {
            return Tracked::Nothing;
        };
        let invitation = |id, ended| Tracked::Invitation { id, ended };
        match &event.kind {
            Some(Kind::KickedFromChannel(kicked)) => Tracked::Kicked(&kicked.channel_id),
            Some(Kind::ChannelMessage(message)) => {
                Tracked::ChannelSeq(&message.channel_id, message.seq)
            }
            Some(Kind::LocalInvitationReceivedByPeer(event)) => {
                invitation(event.invitation_id, false)
            }
            Some(Kind::LocalInvitationAccepted(event)) => invitation(event.invitation_id, true),
            Some(Kind::LocalInvitationRefused(event)) => invitation(event.invitation_id, true),
            Some(Kind::LocalInvitationCanceled(event)) => invitation(event.invitation_id, true),
            Some(Kind::LocalInvitationFailure(event)) => invitation(event.invitation_id, true),
            _ => Tracked::Nothing,
        }
    }
}

impl SessionHandle {
    /// Notes what a delivery tells this session about its channels and invitations.
    fn note(&self, news: Tracked<'_>) {
        match news {
            Tracked::Nothing => {}
            Tracked::ChannelSeq(channel, seq) => self.saw(channel, seq),
            Tracked::Kicked(channel) => {
                self.channel_seqs.lock().remove(channel);
            }
            Tracked::Invitation { id, ended } => {
                let mut outgoing = self.outgoing_invitations.lock();
                if let Some(invitation) = outgoing.get_mut(&id) {
                    invitation.received = true;
                    invitation.over |= ended;
                }
            }
        }
    }

    /// Whether the session is in `channel` (joined, and not kicked since).
    pub(crate) fn is_joined(&self, channel: &str) -> bool {
        self.channel_seqs.lock().contains_key(channel)
    }

    /// The channels the session is in.
    pub(crate) fn joined(&self) -> Vec<String> {
        self.channel_seqs.lock().keys().map(str::to_owned).collect()
    }

    /// Notes that the session has seen `channel` up to `seq`.
    pub(crate) fn saw(&self, channel: &str, seq: u64) {
        let mut seqs = self.channel_seqs.lock();
        if let Some(last) = seqs.get_mut(channel) {
            *last = (*last).max(seq);
        }
    }
}

/// Receipts a session may have outstanding before abandoned ones are swept.
const RECEIPT_SWEEP_AT: usize = 1024;
/// Login buckets kept before full (idle) ones are forgotten.
const LOGIN_BUCKET_SWEEP_AT: usize = 10_000;

pub struct Edge {
    config: EdgeConfig,
    apps: Arc<AppDirectory>,
    owner: Arc<dyn Owners>,
    next_session: AtomicU64,
    // A blocking lock: lookups on every delivery, inserts and removes at login and logout; never held
    // across an await.
    sessions: RwLock<HashMap<SessionId, Arc<SessionHandle>>>,
    /// Logged-in sessions per app.
    app_sessions: Tally<AppId>,
    /// Login attempts per app and uid, across connections.
    login_buckets: Mutex<HashMap<(AppId, UserId), TokenBucket>>,
    /// Server API requests per app.
    api_buckets: Mutex<HashMap<AppId, TokenBucket>>,
    /// Set once the edge sends its clients away (shutdown, drain): logins are refused so that
    /// clients reconnect to another edge.
    closing: std::sync::atomic::AtomicBool,
}

impl Edge {
    pub fn new(config: EdgeConfig, apps: Arc<AppDirectory>, owner: Arc<dyn Owners>) -> Arc<Edge> {
        Arc::new(Edge {
            config,
            apps,
            owner,
            next_session: AtomicU64::new(1),
            sessions: RwLock::new(HashMap::new()),
            login_buckets: Mutex::new(HashMap::new()),
            app_sessions: Tally::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            api_buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub(crate) fn apps(&self) -> &AppDirectory {
        &self.apps
    }

    pub(crate) fn owner(&self) -> &dyn Owners {
        &*self.owner
    }

    pub(crate) fn new_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// A place for one more session of `app` on this edge, unless it holds its limit.
    pub(crate) fn admit(&self, app: &AppId) -> Option<Held<AppId>> {
        self.app_sessions
            .take(app.clone(), self.config.max_sessions_per_app)
    }

    pub(crate) fn insert_session(&self, session: SessionId, handle: Arc<SessionHandle>) {
        self.sessions.write().insert(session, handle);
    }

    pub(crate) fn remove_session(&self, session: SessionId) {
        self.sessions.write().remove(&session);
    }

    fn session(&self, session: SessionId) -> Option<Arc<SessionHandle>> {
        self.sessions.read().get(&session).cloned()
    }

    /// Number of logged-in sessions on this edge.
    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }

    /// After a ring change: every session registers itself, its channels and its status
    /// subscriptions with the owners again, so owners that took keys over know them.
    pub fn reregister_all(&self) {
        let handles: Vec<Arc<SessionHandle>> = self.sessions.read().values().cloned().collect();
        for handle in handles {
            // A full control queue means the session is ending anyway.
            let _ = handle.control_tx.try_send(Control::Reregister);
        }
    }

    /// Ends every session (on shutdown) and waits up to `grace` for them to be gone.
    pub async fn end_all_sessions(&self, reason: Reason, grace: Duration) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<Arc<SessionHandle>> = self.sessions.read().values().cloned().collect();
        for handle in handles {
            let _ = handle.control_tx.try_send(Control::End(reason));
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes one server API request from `app`'s bucket.
    pub(crate) fn allow_api_call(
        &self,
        app: &AppId,
        rate: parley_core::rate::Rate,
        now: Instant,
    ) -> bool {
        self.api_buckets
            .lock()
            .entry(app.clone())
            .or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(now)
    }

    /// Whether the edge is sending its clients away.
    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes new logins again (a drained node that was brought back).
    pub fn reopen(&self) {
        self.closing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Takes a login attempt from the (app, uid) bucket.
    pub(crate) fn allow_login(
        &self,
        app: &AppId,
        uid: &UserId,
        rate: parley_core::rate::Rate,
    ) -> bool {
        let now = Instant::now();
        let mut buckets = self.login_buckets.lock();
        if buckets.len() >= LOGIN_BUCKET_SWEEP_AT {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry((app.clone(), uid.clone()))
            .or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(now)
    }

    /// Queues a frame for a session; a full queue ends the session as a slow consumer.
    fn enqueue(&self, session: SessionId, handle: &SessionHandle, outbound: Outbound) {
        match handle.outbound_tx.try_send(outbound) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(session = %session, "outbound queue full, ending slow consumer");
                crate::telemetry::slow_consumer();
                let _ = handle
                    .control_tx
                    .try_send(Control::End(Reason::SlowConsumer));
            }
            // The connection is ending; its task cleans up.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl EdgeSink for Edge {
    fn deliver(&self, sessions: &[SessionId], frame: Arc<SharedFrame>) {
        // One read lock for the whole batch; `enqueue` never blocks.
        let span = crate::telemetry::delivering(&frame, sessions.len());
        let _entered = span.enter();
        let table = self.sessions.read();
        let news = Tracked::of(&frame);
        for session in sessions {
            if let Some(handle) = table.get(session) {
                handle.note(news);
                self.enqueue(*session, handle, Outbound::Shared(frame.clone()));
            }
        }
    }

    fn deliver_peer(
        &self,
        session: SessionId,
        message_id: MessageId,
        frame: Arc<SharedFrame>,
        receipt_tx: oneshot::Sender<()>,
    ) {
        let span = crate::telemetry::delivering(&frame, 1);
        let _entered = span.enter();
        if let Some(handle) = self.session(session) {
            {
                let mut receipts = handle.receipts.lock();
                if receipts.len() >= RECEIPT_SWEEP_AT {
                    receipts.retain(|_, waiting| !waiting.is_canceled());
                }
                receipts.insert(message_id, receipt_tx);
            }
            self.enqueue(session, &handle, Outbound::Shared(frame));
        }
    }

    fn end_session(&self, session: SessionId, reason: Reason) {
        if let Some(handle) = self.session(session) {
            let _ = handle.control_tx.try_send(Control::End(reason));
        }
    }
}
