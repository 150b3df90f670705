//! The shard alone: commands and store answers fed by hand, what reaches the edge and the
//! callers checked. No server, no socket, no sleep; store operations run only when a test lets
//! them, so a test can hold one and see what waits behind it.

mod attributes;
mod channels;
mod invitations;
mod moderation;
mod sessions;
mod waiting;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use futures_util::future::join_all;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::ring::Ring;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;
use parley_store::EmbeddedStore;
use parley_store::InboxLimits;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::Command;
use super::MAX_QUEUED_PER_KEY;
use super::Outlets;
use super::PeerRouted;
use super::Shard;
use super::Waiting;
use crate::api::ChannelKey;
use crate::api::EdgeSink;
use crate::api::LeaveReason;
use crate::api::NoEvents;
use crate::api::NoRegions;
use crate::api::PeerSend;
use crate::api::Resume;
use crate::api::UserKey;
use crate::ops;
use crate::ops::ChannelSend;
use crate::ops::OpenSession;
use crate::ops::Operation;
use crate::owner::Edges;
use crate::owner::OwnerConfig;

const APP: &str = "0123456789abcdef0123456789abcdef";
const EDGE: NodeId = NodeId(7);

/// An edge that records what it is sent; receipts stay pending.
#[derive(Default)]
struct Edge {
    events: Mutex<Vec<(SessionId, EventKind)>>,
    receipts: Mutex<Vec<oneshot::Sender<()>>>,
    ended: Mutex<Vec<(SessionId, Reason)>>,
}

impl Edge {
    /// Whether `session` was sent an event that `is` picks.
    fn saw(&self, session: SessionRef, is: impl Fn(&EventKind) -> bool) -> bool {
        self.to(session).iter().any(is)
    }

    fn to(&self, session: SessionRef) -> Vec<EventKind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(to, _)| *to == session.session)
            .map(|(_, event)| event.clone())
            .collect()
    }
}

fn event_of(frame: &SharedFrame) -> EventKind {
    match &frame.message().kind {
        Some(v1::server_frame::Kind::Event(v1::Event { kind: Some(kind) })) => kind.clone(),
        other => panic!("not an event: {other:?}"),
    }
}

impl EdgeSink for Edge {
    fn deliver(&self, sessions: &[SessionId], frame: Arc<SharedFrame>) {
        let event = event_of(&frame);
        let mut events = self.events.lock().unwrap();
        events.extend(sessions.iter().map(|session| (*session, event.clone())));
    }

    fn deliver_peer(
        &self,
        session: SessionId,
        _receipt_id: MessageId,
        frame: Arc<SharedFrame>,
    ) -> oneshot::Receiver<()> {
        self.events
            .lock()
            .unwrap()
            .push((session, event_of(&frame)));
        let (receipt_tx, receipt_rx) = oneshot::channel();
        self.receipts.lock().unwrap().push(receipt_tx);
        receipt_rx
    }

    fn end_session(&self, session: SessionId, reason: Reason) {
        self.ended.lock().unwrap().push((session, reason));
    }
}

struct Harness {
    shard: Shard,
    edge: Arc<Edge>,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("parley-shard-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
        let app = AppConfig::new(AppId::parse(APP).unwrap(), None);
        let edges = Arc::new(Edges::default());
        let edge = Arc::new(Edge::default());
        edges.register(EDGE, edge.clone());
        let (self_tx, _) = mpsc::channel(1);
        let shard = Shard::new(
            OwnerConfig::default(),
            1,
            Arc::new(AppDirectory::new([app])),
            edges,
            store,
            Outlets {
                events: Arc::new(NoEvents),
                regions: Arc::new(NoRegions),
            },
            self_tx.downgrade(),
        );
        Harness { shard, edge }
    }

    /// Runs the store operations started so far, and those they start, to their end.
    async fn settle(&mut self) {
        loop {
            let started = self.hold();
            if started.is_empty() {
                return;
            }
            self.finish(started).await;
        }
    }

    /// Takes the store operations started so far, without running them.
    fn hold(&mut self) -> Vec<Waiting> {
        self.shard.started.drain(..).collect()
    }

    /// Lets held store operations end.
    async fn finish(&mut self, held: Vec<Waiting>) {
        for (key, resumed) in join_all(held).await {
            self.shard.resume(key, resumed);
        }
    }

    /// Hands the shard an operation, as the owner does.
    fn ask<O: Operation>(&mut self, operation: O) -> Answer<O> {
        let (reply, answer) = oneshot::channel();
        self.shard.accept(Command::Call {
            request: operation.into_request(),
            reply,
        });
        Answer(answer, std::marker::PhantomData)
    }

    fn join(&mut self, channel: &str, uid: &str, session: SessionRef) -> Answer<ops::Join> {
        self.ask(ops::Join {
            channel: channel_key(channel),
            uid: UserId::parse(uid).unwrap(),
            session,
            resume: Resume::Fresh,
        })
    }

    fn send(
        &mut self,
        channel: &str,
        uid: &str,
        session: SessionRef,
        text: &str,
        enable_history: bool,
    ) -> Answer<ChannelSend> {
        self.ask(ChannelSend {
            channel: channel_key(channel),
            from: UserId::parse(uid).unwrap(),
            session: Some(session),
            message: text_body(text),
            enable_history,
            origin: None,
            trace: None,
        })
    }

    async fn login(&mut self, uid: &str, session: SessionRef) {
        let mut answer = self.ask(OpenSession {
            user: user_key(uid),
            session,
            multi_login: MultiLogin::Replace,
        });
        self.settle().await;
        answer.now().unwrap();
    }

    fn send_peer(&mut self, from: &str, to: &str, enable_history: bool) -> PeerAnswer {
        let (reply, answer) = oneshot::channel();
        self.shard.accept(Command::SendPeer {
            send: PeerSend {
                from: user_key(from),
                to: UserId::parse(to).unwrap(),
                message: text_body("hi"),
                enable_offline: false,
                enable_history,
                origin: None,
                trace: None,
            },
            limits: InboxLimits {
                max_count: 10,
                max_age_ms: 60_000,
            },
            reply,
        });
        PeerAnswer(answer)
    }
}

/// How a peer message was routed, looked at without waiting.
struct PeerAnswer(oneshot::Receiver<Result<PeerRouted, parley_core::Error>>);

impl PeerAnswer {
    fn now(&mut self) -> Result<PeerRouted, parley_core::Error> {
        self.0.try_recv().expect("the answer has come")
    }

    fn is_pending(&mut self) -> bool {
        matches!(self.0.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }
}

/// A caller's answer to an operation `O`, looked at without waiting.
struct Answer<O>(
    oneshot::Receiver<Result<ops::Response, parley_core::Error>>,
    std::marker::PhantomData<O>,
);

impl<O: Operation> Answer<O> {
    /// The answer, which must have come.
    fn now(&mut self) -> Result<O::Output, parley_core::Error> {
        O::output(self.0.try_recv().expect("the answer has come")?)
    }

    fn is_pending(&mut self) -> bool {
        matches!(self.0.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }
}

fn session(n: u64) -> SessionRef {
    SessionRef {
        edge: EDGE,
        session: SessionId(n),
    }
}

fn channel_key(channel: &str) -> ChannelKey {
    ChannelKey {
        app: AppId::parse(APP).unwrap(),
        channel: ChannelId::parse(channel).unwrap(),
    }
}

fn user_key(uid: &str) -> UserKey {
    UserKey {
        app: AppId::parse(APP).unwrap(),
        uid: UserId::parse(uid).unwrap(),
    }
}

fn text_body(text: &str) -> v1::MessageBody {
    v1::MessageBody {
        description: String::new(),
        content: Some(v1::message_body::Content::Text(text.to_owned())),
    }
}

/// The (sequence number, text) of the channel messages among `events`.
fn channel_messages(events: &[EventKind]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|event| match event {
            EventKind::ChannelMessage(message) => match &message.message {
                Some(v1::MessageBody {
                    content: Some(v1::message_body::Content::Text(text)),
                    ..
                }) => Some((message.seq, text.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The presence states `watcher` was told of `uid`, in order.
fn presence_told(h: &Harness, watcher: SessionRef, uid: &str) -> Vec<PeerOnlineState> {
    h.edge
        .to(watcher)
        .iter()
        .filter_map(|event| match event {
            EventKind::PeersOnlineStatusChanged(changed) => changed.status.get(uid).copied(),
            _ => None,
        })
        .map(|state| PeerOnlineState::try_from(state).unwrap())
        .collect()
}

/// Runs the shard's timers as they stand `later` from now.
fn tick_after(h: &mut Harness, later: Duration) {
    h.shard.on_tick(Instant::now() + later);
}

fn invite(h: &mut Harness, caller: &str, caller_session: SessionRef, callee: &str) -> u64 {
    h.ask(crate::ops::InvitationSend {
        caller: user_key(caller),
        caller_session,
        callee: UserId::parse(callee).unwrap(),
        content: "call".into(),
        channel_id: "room".into(),
        restore: None,
    })
    .now()
    .unwrap()
}
