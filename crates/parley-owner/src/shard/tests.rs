//! The shard alone: commands and store answers fed by hand, what reaches the edge and the
//! callers checked. No server, no socket, no sleep; store operations run only when a test lets
//! them, so a test can hold one and see what waits behind it.

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

#[tokio::test]
async fn a_channel_waiting_on_the_store_holds_up_only_its_own_commands() {
    let mut h = Harness::new("holds-up");
    let (alice, carol, bob, dave) = (session(1), session(2), session(3), session(4));
    let mut joins = [
        h.join("live", "alice", alice),
        h.join("live", "carol", carol),
    ];
    h.settle().await;
    for join in &mut joins {
        assert_eq!(join.now(), Ok(0));
    }

    // "slow" is taken up from the store, which is held: its commands wait, in order.
    let mut bob_joins = h.join("slow", "bob", bob);
    let held = h.hold();
    assert_eq!(held.len(), 1);
    let mut dave_joins = h.join("slow", "dave", dave);
    let mut bob_sends = h.send("slow", "bob", bob, "after my join", false);
    assert!(bob_joins.is_pending() && dave_joins.is_pending() && bob_sends.is_pending());

    // "live" needs no store and goes on.
    let sent = h
        .send("live", "alice", alice, "hello", false)
        .now()
        .unwrap();
    assert_eq!(sent.seq, 1);
    assert_eq!(
        channel_messages(&h.edge.to(carol)),
        [(1, "hello".to_owned())]
    );
    assert!(
        h.hold().is_empty(),
        "a live channel's message waits on nothing"
    );

    h.finish(held).await;
    h.settle().await;
    assert_eq!(bob_joins.now(), Ok(0));
    assert_eq!(dave_joins.now(), Ok(0));
    assert_eq!(bob_sends.now().unwrap().seq, 1);
    assert_eq!(
        channel_messages(&h.edge.to(dave)),
        [(1, "after my join".to_owned())]
    );
}

#[tokio::test]
async fn messages_reach_members_in_sequence_order_when_some_wait_for_history() {
    let mut h = Harness::new("order");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;

    let mut first = h.send("room", "alice", alice, "kept", true);
    let held = h.hold();
    let mut second = h.send("room", "alice", alice, "not kept", false);
    assert!(first.is_pending() && second.is_pending());
    assert!(channel_messages(&h.edge.to(bob)).is_empty());

    h.finish(held).await;
    assert_eq!(first.now().unwrap().seq, 1);
    assert_eq!(second.now().unwrap().seq, 2);
    assert_eq!(
        channel_messages(&h.edge.to(bob)),
        [(1, "kept".to_owned()), (2, "not kept".to_owned())]
    );
}

#[tokio::test]
async fn a_slow_key_refuses_what_would_queue_past_its_bound() {
    let mut h = Harness::new("bound");
    let _first = h.join("slow", "alice", session(1));
    let _held = h.hold();
    let mut queued: Vec<_> = (0..MAX_QUEUED_PER_KEY)
        .map(|n| h.join("slow", "bob", session(100 + n as u64)))
        .collect();
    let mut refused = h.join("slow", "carol", session(99));
    assert_eq!(refused.now().unwrap_err().code, ErrorCode::Unavailable);
    assert!(queued.iter_mut().all(Answer::is_pending));
}

#[tokio::test]
async fn a_peer_message_waiting_for_history_holds_up_only_its_receivers() {
    let mut h = Harness::new("peers");
    let (bob, carol) = (session(2), session(3));
    h.login("bob", bob).await;
    h.login("carol", carol).await;

    let mut kept = h.send_peer("alice", "bob", true);
    let held = h.hold();
    assert_eq!(held.len(), 1);
    // Another receiver's message goes at once; bob's next one waits its turn.
    let mut to_carol = h.send_peer("dave", "carol", false);
    assert!(matches!(to_carol.now(), Ok(PeerRouted::Delivered { .. })));
    let mut to_bob = h.send_peer("dave", "bob", false);
    assert!(kept.is_pending() && to_bob.is_pending());

    h.finish(held).await;
    assert!(matches!(kept.now(), Ok(PeerRouted::Delivered { .. })));
    assert!(matches!(to_bob.now(), Ok(PeerRouted::Delivered { .. })));
    assert_eq!(h.edge.to(bob).len(), 2);
}

#[tokio::test]
async fn a_message_cached_while_its_receiver_logs_in_is_in_the_inbox_the_login_reads() {
    let mut h = Harness::new("inbox");
    let bob = session(2);
    let (reply, mut cached) = oneshot::channel();
    h.shard.accept(Command::SendPeer {
        send: PeerSend {
            from: user_key("alice"),
            to: UserId::parse("bob").unwrap(),
            message: text_body("while you were away"),
            enable_offline: true,
            enable_history: false,
            origin: None,
            trace: None,
        },
        limits: InboxLimits {
            max_count: 10,
            max_age_ms: 60_000,
        },
        reply,
    });
    let pushing = h.hold();
    // Bob logs in while the message is being stored: the login and its inbox read come after.
    let mut login = h.ask(OpenSession {
        user: user_key("bob"),
        session: bob,
        multi_login: MultiLogin::Replace,
    });
    let mut ready = h.ask(ops::SessionReady {
        user: user_key("bob"),
        session: bob,
    });
    // Whatever can go on does, and the login is still waiting for the message to be stored.
    h.settle().await;
    assert!(login.is_pending() && ready.is_pending());
    h.finish(pushing).await;
    h.settle().await;
    assert!(matches!(
        cached.try_recv(),
        Ok(Ok(PeerRouted::Cached { .. }))
    ));
    login.now().unwrap();
    ready.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::MessageFromPeer(message) if message.is_offline_message
    )));
}

#[tokio::test]
async fn a_ring_change_takes_a_loading_channel_after_the_commands_before_it() {
    let mut h = Harness::new("moved");
    let mut join = h.join("room", "alice", session(1));
    let held = h.hold();
    let mut count = h.ask(ops::MemberCount {
        channel: channel_key("room"),
    });
    assert_eq!(count.now(), Ok(0), "reads are not held up");
    // A ring without this node: every key moved away. The join came first and is answered;
    // then the channel's state goes.
    let ring = Arc::new(Ring::new(2, &[NodeId(9)], 8));
    h.shard.accept(Command::Forget {
        ring,
        me: NodeId(1),
    });
    let mut after = h.join("room", "bob", session(2));
    h.finish(held).await;
    assert_eq!(join.now(), Ok(0));
    // What came after the ring change finds the channel as a new owner would: empty, its
    // numbering past the block the first join reserved.
    h.settle().await;
    assert_eq!(after.now(), Ok(1000));
    let members = h
        .ask(ops::Members {
            channel: channel_key("room"),
            asker: None,
        })
        .now();
    assert_eq!(members, Ok(vec![UserId::parse("bob").unwrap()]));
}

#[tokio::test]
async fn an_edge_gone_takes_a_login_still_checking_for_a_ban_too() {
    let mut h = Harness::new("edge-gone");
    let bob = session(2);
    let mut login = h.ask(OpenSession {
        user: user_key("bob"),
        session: bob,
        multi_login: MultiLogin::Replace,
    });
    let checking = h.hold();
    let (reply, _gone) = oneshot::channel();
    h.shard.accept(Command::EdgeGone { node: EDGE, reply });
    h.finish(checking).await;
    login.now().unwrap();
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(
        state,
        Ok(PeerOnlineState::Unreachable),
        "its session was lost with its edge"
    );
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

#[tokio::test]
async fn presence_goes_online_then_unreachable_then_offline() {
    let mut h = Harness::new("presence");
    let (watcher, bob) = (session(1), session(2));
    let subscribed = h
        .ask(ops::SubscribePresence {
            user: user_key("bob"),
            subscriber: watcher,
        })
        .now();
    assert_eq!(subscribed, Ok(PeerOnlineState::Offline));

    h.login("bob", bob).await;
    h.ask(ops::CloseSession {
        user: user_key("bob"),
        session: bob,
        reason: LeaveReason::ConnectionLost,
    })
    .now()
    .unwrap();
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(state, Ok(PeerOnlineState::Unreachable));
    // The lost connection did not come back in time.
    tick_after(&mut h, Duration::from_secs(60));
    h.settle().await;
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Offline
        ]
    );
}

#[tokio::test]
async fn a_second_login_ends_the_first_with_remote_login() {
    let mut h = Harness::new("replace");
    let (first, second) = (session(1), session(2));
    h.login("bob", first).await;
    h.login("bob", second).await;
    assert_eq!(
        *h.edge.ended.lock().unwrap(),
        [(first.session, Reason::RemoteLogin)]
    );
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(state, Ok(PeerOnlineState::Online));
}

#[tokio::test]
async fn a_member_whose_connection_was_lost_lingers_then_leaves() {
    let mut h = Harness::new("linger");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob,
        reason: LeaveReason::ConnectionLost,
    })
    .now()
    .unwrap();
    let left = |h: &Harness| {
        h.edge
            .to(alice)
            .iter()
            .filter(|event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob"))
            .count()
    };
    tick_after(&mut h, Duration::from_secs(1));
    assert_eq!(left(&h), 0, "still within its grace period");
    tick_after(&mut h, Duration::from_secs(60));
    assert_eq!(left(&h), 1);
    let members = h
        .ask(ops::Members {
            channel: channel_key("room"),
            asker: None,
        })
        .now();
    assert_eq!(members, Ok(vec![UserId::parse("alice").unwrap()]));
}

#[tokio::test]
async fn a_muted_member_cannot_send_until_unmuted() {
    let mut h = Harness::new("mute");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    let far = parley_core::time::unix_ms() + 60_000;
    let mut muted = h.ask(ops::Moderate {
        action: crate::api::Moderation::Mute {
            channel: channel_key("room"),
            uid: UserId::parse("bob").unwrap(),
            until_ms: far,
            reason: "spam".into(),
        },
    });
    h.settle().await;
    assert_eq!(muted.now(), Ok(true));
    assert!(h.edge.saw(alice,
        |event| matches!(event, EventKind::MemberMuted(mute) if mute.member_id == "bob" && mute.muted)
    ));
    let refused = h.send("room", "bob", bob, "hi", false).now().unwrap_err();
    assert_eq!(refused.code, ErrorCode::Muted);

    let mut unmuted = h.ask(ops::Moderate {
        action: crate::api::Moderation::Unmute {
            channel: channel_key("room"),
            uid: UserId::parse("bob").unwrap(),
        },
    });
    h.settle().await;
    assert_eq!(unmuted.now(), Ok(true));
    assert_eq!(
        h.send("room", "bob", bob, "back", false).now().unwrap().seq,
        1
    );
}

#[tokio::test]
async fn a_kicked_member_is_told_and_the_others_see_it_leave() {
    let mut h = Harness::new("kick");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    let kicked = h
        .ask(ops::Moderate {
            action: crate::api::Moderation::Kick {
                channel: channel_key("room"),
                uid: UserId::parse("bob").unwrap(),
                reason: "bye".into(),
            },
        })
        .now();
    assert_eq!(kicked, Ok(true));
    assert!(h.edge.saw(
        bob,
        |event| matches!(event, EventKind::KickedFromChannel(kick) if kick.reason == "bye")
    ));
    assert!(h.edge.saw(
        alice,
        |event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob")
    ));
    let refused = h.send("room", "bob", bob, "still here?", false).now();
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotJoined);
}

#[tokio::test]
async fn a_client_back_from_a_reconnect_gets_what_it_missed() {
    let mut h = Harness::new("resume");
    let (alice, bob, bob_again) = (session(1), session(2), session(3));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    for text in ["one", "two", "three"] {
        h.send("room", "alice", alice, text, false).now().unwrap();
    }
    let mut joined = h.ask(ops::Join {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob_again,
        resume: Resume::Client { after: 1 },
    });
    h.settle().await;
    assert_eq!(joined.now(), Ok(3));
    let events = h.edge.to(bob_again);
    assert_eq!(
        channel_messages(&events),
        [(2, "two".to_owned()), (3, "three".to_owned())]
    );
    assert!(matches!(
        events.last(),
        Some(EventKind::ChannelRecovered(recovered))
            if recovered.from_seq == 2 && recovered.to_seq == 3 && recovered.complete
    ));
}

#[tokio::test]
async fn an_accepted_invitation_is_told_to_both_sides() {
    let mut h = Harness::new("invitation");
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice).await;
    h.login("bob", bob).await;
    let invitation_id = h
        .ask(crate::ops::InvitationSend {
            caller: user_key("alice"),
            caller_session: alice,
            callee: UserId::parse("bob").unwrap(),
            content: "call me".into(),
            channel_id: "room".into(),
            restore: None,
        })
        .now()
        .unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationReceived(received)
            if received.invitation_id == invitation_id && received.content == "call me"
    )));
    let again = h
        .ask(crate::ops::InvitationSend {
            caller: user_key("alice"),
            caller_session: alice,
            callee: UserId::parse("bob").unwrap(),
            content: "again".into(),
            channel_id: "room".into(),
            restore: None,
        })
        .now();
    assert_eq!(again.unwrap_err().code, ErrorCode::InvitationAlreadySent);

    h.ask(ops::AnswerInvitation {
        callee: user_key("bob"),
        invitation_id,
        accept: true,
        response: "coming".into(),
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationAccepted(accepted) if accepted.response == "coming"
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationAccepted(_)
    )));
    let late = h
        .ask(ops::CancelInvitation {
            callee: user_key("bob"),
            caller: UserId::parse("alice").unwrap(),
            invitation_id,
        })
        .now();
    assert_eq!(late.unwrap_err().code, ErrorCode::InvitationAlreadyAccepted);
}

#[tokio::test]
async fn a_banned_user_is_logged_out_and_cannot_log_in_again() {
    let mut h = Harness::new("ban");
    let bob = session(2);
    h.login("bob", bob).await;
    let mut banned = h.ask(ops::Moderate {
        action: crate::api::Moderation::Ban {
            user: user_key("bob"),
            until_ms: parley_core::time::unix_ms() + 60_000,
            reason: "abuse".into(),
        },
    });
    h.settle().await;
    assert_eq!(banned.now(), Ok(true));
    assert_eq!(
        *h.edge.ended.lock().unwrap(),
        [(bob.session, Reason::BannedByServer)]
    );
    let mut again = h.ask(OpenSession {
        user: user_key("bob"),
        session: session(3),
        multi_login: MultiLogin::Replace,
    });
    h.settle().await;
    assert_eq!(again.now().unwrap_err().code, ErrorCode::Banned);
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

#[tokio::test]
async fn an_invitation_to_a_callee_who_never_comes_fails_with_peer_offline() {
    let mut h = Harness::new("invite-offline");
    let alice = session(1);
    h.login("alice", alice).await;
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    tick_after(&mut h, Duration::from_secs(120));
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationFailure(failure)
            if failure.invitation_id == invitation_id
                && failure.reason == v1::InvitationFailureReason::PeerOffline as i32
    )));
}

#[tokio::test]
async fn an_offline_callee_gets_the_invitation_when_it_logs_in() {
    let mut h = Harness::new("invite-later");
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice).await;
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    h.login("bob", bob).await;
    let mut ready = h.ask(ops::SessionReady {
        user: user_key("bob"),
        session: bob,
    });
    h.settle().await;
    ready.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationReceived(received) if received.invitation_id == invitation_id
    )));
}

#[tokio::test]
async fn a_refused_invitation_is_told_to_both_sides() {
    let mut h = Harness::new("invite-refuse");
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice).await;
    h.login("bob", bob).await;
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    h.ask(ops::AnswerInvitation {
        callee: user_key("bob"),
        invitation_id,
        accept: false,
        response: "busy".into(),
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationRefused(refused) if refused.response == "busy"
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationRefused(_)
    )));
}

#[tokio::test]
async fn a_canceled_invitation_is_told_to_both_sides_and_only_its_caller_may_cancel() {
    let mut h = Harness::new("invite-cancel");
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice).await;
    h.login("bob", bob).await;
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    let cancel = |caller: &str| ops::CancelInvitation {
        callee: user_key("bob"),
        caller: UserId::parse(caller).unwrap(),
        invitation_id,
    };
    let stranger = h.ask(cancel("mallory")).now();
    assert_eq!(stranger.unwrap_err().code, ErrorCode::InvitationNotStarted);
    h.ask(cancel("alice")).now().unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationCanceled(_)
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationCanceled(_)
    )));
}

#[tokio::test]
async fn a_logout_is_offline_at_once_and_a_silent_connection_unreachable() {
    let mut h = Harness::new("logout");
    let (watcher, bob) = (session(1), session(2));
    h.ask(ops::SubscribePresence {
        user: user_key("bob"),
        subscriber: watcher,
    })
    .now()
    .unwrap();
    h.login("bob", bob).await;
    let reachable = |h: &mut Harness, reachable| {
        h.ask(ops::SetReachable {
            user: user_key("bob"),
            session: bob,
            reachable,
        })
        .now()
        .unwrap();
    };
    reachable(&mut h, false);
    reachable(&mut h, true);
    h.ask(ops::CloseSession {
        user: user_key("bob"),
        session: bob,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    h.settle().await;
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Online,
            PeerOnlineState::Offline
        ]
    );
}

#[tokio::test]
async fn a_leave_is_told_at_once_and_member_counts_go_out_on_the_tick() {
    let mut h = Harness::new("leave");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    tick_after(&mut h, Duration::from_secs(5));
    let counts = |h: &Harness| -> Vec<u32> {
        h.edge
            .to(alice)
            .iter()
            .filter_map(|event| match event {
                EventKind::MemberCountUpdated(count) => Some(count.member_count),
                _ => None,
            })
            .collect()
    };
    assert_eq!(counts(&h), [2]);
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(
        alice,
        |event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob")
    ));
    tick_after(&mut h, Duration::from_secs(10));
    assert_eq!(counts(&h), [2, 1]);
    // The last member leaves: the channel is forgotten (its attributes start to expire).
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("alice").unwrap(),
        session: alice,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert!(h.shard.channels.is_empty());
}

#[tokio::test]
async fn user_attributes_need_a_session_and_read_back_as_written() {
    let mut h = Harness::new("user-attributes");
    let update = || ops::UpdateUserAttributes {
        user: user_key("bob"),
        op: parley_core::attributes::AttributeOp::Set(
            [("mood".to_owned(), "calm".to_owned())].into(),
        ),
    };
    let refused = h.ask(update()).now();
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotLoggedIn);
    h.login("bob", session(2)).await;
    let mut updated = h.ask(update());
    h.settle().await;
    updated.now().unwrap();
    let mut read = h.ask(ops::UserAttributes {
        user: user_key("bob"),
        keys: Vec::new(),
    });
    h.settle().await;
    assert_eq!(
        read.now(),
        Ok([("mood".to_owned(), "calm".to_owned())].into())
    );
}

#[tokio::test]
async fn channel_attribute_changes_reach_the_members_when_asked() {
    let mut h = Harness::new("channel-attributes");
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle().await;
    let mut updated = h.ask(ops::UpdateChannelAttributes {
        channel: channel_key("room"),
        by: UserId::parse("alice").unwrap(),
        op: parley_core::attributes::AttributeOp::AddOrUpdate(
            [("topic".to_owned(), "rust".to_owned())].into(),
        ),
        notify_members: true,
    });
    h.settle().await;
    updated.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::AttributesUpdated(updated)
            if updated.attributes.iter().any(|attribute| attribute.value == "rust")
    )));
    let mut read = h.ask(ops::ChannelAttributes {
        channel: channel_key("room"),
        keys: vec!["topic".into()],
    });
    h.settle().await;
    let attributes = read.now().unwrap();
    assert_eq!(attributes.len(), 1);
    assert_eq!(attributes[0].last_update_user_id, "alice");
}
