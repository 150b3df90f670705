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
use std::time::Duration;
use std::time::Instant;

use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
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
use tokio::sync::oneshot;

use super::Command;
use super::Key;
use super::MAX_QUEUED_PER_KEY;
use super::PeerRouted;
use super::Shard;
use super::effects::Effect;
use super::effects::Now;
use super::effects::OnReceipt;
use super::effects::StoreWork;
use super::runtime::perform;
use crate::api::ChannelKey;
use crate::api::LeaveReason;
use crate::api::PeerSend;
use crate::api::Resume;
use crate::api::UserKey;
use crate::ops;
use crate::ops::ChannelSend;
use crate::ops::OpenSession;
use crate::ops::Operation;
use crate::owner::OwnerConfig;

const APP: &str = "0123456789abcdef0123456789abcdef";
const EDGE: NodeId = NodeId(7);

/// What reached the edge, from the shard's effects; receipts are never sent.
#[derive(Default)]
struct Edge {
    events: Vec<(SessionId, EventKind)>,
    receipts: Vec<OnReceipt>,
    ended: Vec<(SessionId, Reason)>,
}

impl Edge {
    /// Whether `session` was sent an event that `is` picks.
    fn saw(&self, session: SessionRef, is: impl Fn(&EventKind) -> bool) -> bool {
        self.to(session).iter().any(is)
    }

    fn to(&self, session: SessionRef) -> Vec<EventKind> {
        self.events
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

/// A shard driven by hand: its effects are read after every input, and its store work runs
/// (on an embedded store) only when a test lets it.
struct Harness {
    shard: Shard,
    store: EmbeddedStore,
    now: Now,
    edge: Edge,
    /// Store work asked for and not yet run.
    pending: Vec<(Option<Key>, StoreWork)>,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("parley-shard-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = EmbeddedStore::open(&dir).unwrap();
        let app = AppConfig::new(AppId::parse(APP).unwrap(), None);
        let now = Now {
            instant: Instant::now(),
            unix_ms: parley_core::time::unix_ms(),
        };
        let apps = Arc::new(AppDirectory::new([app]));
        let shard = Shard::new(OwnerConfig::default(), 1, apps, false, now);
        Harness {
            shard,
            store,
            now,
            edge: Edge::default(),
            pending: Vec::new(),
        }
    }

    /// Reads what the shard decided.
    fn pump(&mut self) {
        for effect in self.shard.take_effects() {
            match effect {
                Effect::Deliver {
                    edge,
                    sessions,
                    frame,
                } => {
                    assert_eq!(edge, EDGE);
                    let event = event_of(&frame);
                    let events = sessions.into_iter().map(|session| (session, event.clone()));
                    self.edge.events.extend(events);
                }
                Effect::DeliverPeer {
                    session,
                    frame,
                    then,
                    ..
                } => {
                    self.edge.events.push((session.session, event_of(&frame)));
                    self.edge.receipts.push(then);
                }
                Effect::EndSession { session, reason } => {
                    self.edge.ended.push((session.session, reason));
                }
                Effect::Store { key, work } => self.pending.push((key, *work)),
                Effect::Event(_) | Effect::Region(_) | Effect::Directory(_) => {}
            }
        }
    }

    fn accept(&mut self, command: Command) {
        self.shard.accept(self.now, command);
        self.pump();
    }

    /// Runs the store work asked for so far, and what it leads to, to its end.
    async fn settle(&mut self) {
        loop {
            let started = self.hold();
            if started.is_empty() {
                return;
            }
            self.finish(started).await;
        }
    }

    /// Takes the store work asked for so far, without running it.
    fn hold(&mut self) -> Vec<(Option<Key>, StoreWork)> {
        self.pump();
        std::mem::take(&mut self.pending)
    }

    /// Lets held store work end: all of it runs, then the shard hears of each in turn.
    async fn finish(&mut self, held: Vec<(Option<Key>, StoreWork)>) {
        let mut answers = Vec::new();
        for (key, work) in held {
            answers.push((key, perform(&self.store, work).await));
        }
        for (key, resumed) in answers {
            self.shard.resume(self.now, key, resumed);
        }
        self.pump();
    }

    /// Hands the shard an operation, as the owner does.
    fn ask<O: Operation>(&mut self, operation: O) -> Answer<O> {
        let (reply, answer) = oneshot::channel();
        self.accept(Command::Call {
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
        self.accept(Command::SendPeer {
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
    let at = Now {
        instant: h.now.instant + later,
        unix_ms: h.now.unix_ms + later.as_millis() as i64,
    };
    h.shard.on_tick(at);
    h.pump();
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
