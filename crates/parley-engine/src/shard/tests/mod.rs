//! The shard alone: inputs fed by hand at a time the test chooses, its effects read back. No
//! runtime, server, socket, store or sleep: the store work the shard asks for is answered by
//! [`Stored`] (what a store would hold, in memory) only when a test lets it, so a test can hold
//! some and see what waits behind it.

mod attributes;
mod channels;
mod invitations;
mod moderation;
mod peers;
mod regions;
mod sessions;
mod waiting;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_channel::oneshot;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::attributes::MAX_CHANNEL_TOTAL_BYTES;
use parley_core::attributes::MAX_USER_TOTAL_BYTES;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::ring::Ring;
use parley_core::storage::Conversation;
use parley_core::storage::InboxLimits;
use parley_core::storage::Restriction;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;

use super::Command;
use super::Key;
use super::MAX_QUEUED_PER_KEY;
use super::PeerRouted;
use super::Resumed;
use super::Shard;
use super::effects::Effect;
use super::effects::Now;
use super::effects::OnReceipt;
use super::effects::StoreWork;
use super::muted;
use crate::OwnerConfig;
use crate::api::AppEventKind;
use crate::api::ChannelKey;
use crate::api::ChannelSent;
use crate::api::LeaveReason;
use crate::api::PeerSend;
use crate::api::RegionRecord;
use crate::api::Resume;
use crate::api::UserKey;
use crate::ops;
use crate::ops::ChannelSend;
use crate::ops::OpenSession;
use crate::ops::Operation;

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
    stored: Stored,
    now: Now,
    edge: Edge,
    /// What the shard told the other regions, in order.
    regions: Vec<RegionRecord>,
    /// The app events it emitted, in order.
    events: Vec<AppEventKind>,
    /// Store work asked for and not yet run.
    pending: Vec<(Option<Key>, StoreWork)>,
}

impl Harness {
    fn new() -> Harness {
        Harness::spanning(false)
    }

    /// A shard of a region among others (`spans_regions`), or the only one.
    fn spanning(spans_regions: bool) -> Harness {
        let app = AppConfig::new(AppId::parse(APP).unwrap(), None);
        let now = Now {
            instant: Instant::now(),
            unix_ms: parley_core::time::unix_ms(),
        };
        let apps = Arc::new(AppDirectory::new([app]));
        let shard = Shard::new(OwnerConfig::default(), 1, apps, spans_regions, now);
        Harness {
            shard,
            stored: Stored::default(),
            now,
            edge: Edge::default(),
            regions: Vec::new(),
            events: Vec::new(),
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
                Effect::Region(record) => self.regions.push(record),
                Effect::Event(event) => self.events.push(event.kind),
                Effect::Directory(_) => {}
            }
        }
        self.shard.release_answers();
    }

    fn accept(&mut self, command: Command) {
        self.shard.accept(self.now, command);
        self.pump();
    }

    /// Runs the store work asked for so far, and what it leads to, to its end.
    fn settle(&mut self) {
        loop {
            let started = self.hold();
            if started.is_empty() {
                return;
            }
            self.finish(started);
        }
    }

    /// Takes the store work asked for so far, without running it.
    fn hold(&mut self) -> Vec<(Option<Key>, StoreWork)> {
        self.pump();
        std::mem::take(&mut self.pending)
    }

    /// Lets held store work end: all of it is done, then the shard hears of each in turn.
    fn finish(&mut self, held: Vec<(Option<Key>, StoreWork)>) {
        let mut answers = Vec::new();
        for (key, work) in held {
            answers.push((key, self.stored.answer(work)));
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

    fn login(&mut self, uid: &str, session: SessionRef) {
        let mut answer = self.ask(OpenSession {
            user: user_key(uid),
            session,
            multi_login: MultiLogin::Replace,
        });
        self.settle();
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
        self.0
            .try_recv()
            .expect("the shard still has the reply")
            .expect("the answer has come")
    }

    fn is_pending(&mut self) -> bool {
        matches!(self.0.try_recv(), Ok(None))
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
        let answer = self.0.try_recv().expect("the shard still has the reply");
        O::output(answer.expect("the answer has come")?)
    }

    fn is_pending(&mut self) -> bool {
        matches!(self.0.try_recv(), Ok(None))
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

/// What a store would hold, in memory, with just the behaviour the shard relies on: it answers
/// the shard's store work as the runtime's store procedures would (those run against the real
/// stores in the end-to-end suites). One app, so keys leave it out where the store would not.
#[derive(Default)]
struct Stored {
    bans: HashMap<UserKey, Restriction>,
    mutes: HashMap<(ChannelKey, UserId), Restriction>,
    inboxes: HashMap<UserKey, Vec<v1::HistoryMessage>>,
    history: HashMap<Conversation, Vec<v1::HistoryMessage>>,
    high_water: HashMap<ChannelKey, u64>,
    user_attributes: HashMap<UserKey, BTreeMap<String, String>>,
    channel_attributes: HashMap<ChannelKey, BTreeMap<String, v1::ChannelAttribute>>,
    /// The regions users have sessions in, by the other regions' word.
    user_regions: HashMap<UserKey, String>,
}

impl Stored {
    fn answer(&mut self, work: StoreWork) -> Resumed {
        match work {
            StoreWork::CheckBan {
                open,
                now_ms,
                reply,
            } => {
                let ban = self
                    .bans
                    .get(&open.user)
                    .filter(|ban| ban.until_ms > now_ms)
                    .cloned();
                Resumed::BanChecked {
                    open,
                    ban: Ok(ban),
                    reply,
                }
            }
            StoreWork::ListInbox {
                user,
                session,
                reply,
                ..
            } => Resumed::InboxListed {
                inbox: Ok(self.inboxes.get(&user).cloned().unwrap_or_default()),
                user,
                session,
                reply,
            },
            StoreWork::ClearUserAttributes { user } => {
                self.user_attributes.remove(&user);
                Resumed::Done
            }
            StoreWork::AppendPeer { peer, .. } => {
                let conversation =
                    Conversation::peers(peer.send.from.uid.clone(), peer.receiver.uid.clone());
                self.history
                    .entry(conversation)
                    .or_default()
                    .push(peer.stored.clone());
                Resumed::PeerStored {
                    peer,
                    stored: Ok(()),
                }
            }
            StoreWork::CachePeer { peer } => {
                self.inboxes
                    .entry(peer.receiver.clone())
                    .or_default()
                    .push(peer.stored.clone());
                Resumed::PeerCached {
                    peer,
                    stored: Ok(()),
                }
            }
            StoreWork::LoadChannel {
                join,
                block,
                now_ms,
            } => {
                let high_water = self.high_water.get(&join.key).copied().unwrap_or(0);
                self.high_water.insert(join.key.clone(), high_water + block);
                let mutes = self
                    .mutes
                    .iter()
                    .filter(|((channel, _), mute)| *channel == join.key && mute.until_ms > now_ms)
                    .map(|((_, uid), mute)| (uid.clone(), mute.until_ms))
                    .collect();
                let loaded = crate::Loaded {
                    high_water,
                    reserved_seq: high_water + block,
                    mutes,
                };
                Resumed::ChannelLoaded {
                    join,
                    loaded: Ok(loaded),
                }
            }
            StoreWork::Replay {
                join,
                is_new_member,
                after,
                announce,
                oldest_kept,
                ..
            } => {
                let conversation = Conversation::Channel(join.key.channel.clone());
                let stored = self.history.get(&conversation).cloned().unwrap_or_default();
                Resumed::Replayed {
                    join,
                    is_new_member,
                    after,
                    announce,
                    oldest_kept,
                    stored: Ok(stored),
                }
            }
            StoreWork::StoreNumbered { message, .. } => {
                let send = &message.send;
                if let Some(reserve) = message.reserve {
                    self.high_water.insert(send.channel.clone(), reserve);
                }
                if send.enable_history {
                    let conversation = Conversation::Channel(send.channel.channel.clone());
                    self.history
                        .entry(conversation)
                        .or_default()
                        .push(v1::HistoryMessage {
                            message_id: message.message_id.0,
                            from: send.from.to_string(),
                            message: Some(send.message.clone()),
                            server_received_ts: message.server_received_ts,
                            seq: message.seq,
                        });
                }
                Resumed::ChannelStored {
                    message,
                    stored: Ok(()),
                }
            }
            StoreWork::SendToEmptyChannel {
                send,
                message_id,
                server_received_ts,
                reply,
                ..
            } => {
                let mute = self
                    .mutes
                    .get(&(send.channel.clone(), send.from.clone()))
                    .filter(|mute| mute.until_ms > server_received_ts);
                if let Some(mute) = mute {
                    reply.send(Err(muted(mute.until_ms)));
                    return Resumed::Done;
                }
                if send.enable_history {
                    let conversation = Conversation::Channel(send.channel.channel.clone());
                    self.history
                        .entry(conversation)
                        .or_default()
                        .push(v1::HistoryMessage {
                            message_id: message_id.0,
                            from: send.from.to_string(),
                            message: Some(send.message.clone()),
                            server_received_ts,
                            seq: 0,
                        });
                }
                reply.send(Ok(ChannelSent {
                    message_id,
                    server_received_ts,
                    seq: 0,
                }));
                Resumed::Done
            }
            StoreWork::ExpireAttributes { .. } => Resumed::Done,
            StoreWork::Ban { user, ban, reply } => {
                self.bans.insert(user.clone(), ban);
                Resumed::Banned {
                    user,
                    stored: Ok(()),
                    reply,
                }
            }
            StoreWork::Unban { user, reply, .. } => {
                reply.send(Ok(self.bans.remove(&user).is_some()));
                Resumed::Done
            }
            StoreWork::Mute {
                channel,
                uid,
                mute,
                reply,
            } => {
                let until_and_reason = (mute.until_ms, mute.reason.clone());
                self.mutes.insert((channel.clone(), uid.clone()), mute);
                Resumed::MuteChanged {
                    channel,
                    uid,
                    mute: Some(until_and_reason),
                    changed: Ok(true),
                    reply,
                }
            }
            StoreWork::Unmute {
                channel,
                uid,
                reply,
                ..
            } => {
                let lifted = self.mutes.remove(&(channel.clone(), uid.clone())).is_some();
                Resumed::MuteChanged {
                    channel,
                    uid,
                    mute: None,
                    changed: Ok(lifted),
                    reply,
                }
            }
            StoreWork::UpdateUserAttributes { user, op, reply } => {
                let current = self.user_attributes.entry(user).or_default();
                let next = op.apply(current, MAX_USER_TOTAL_BYTES, String::as_str, str::to_owned);
                reply.send(next.map(|next| *current = next));
                Resumed::Done
            }
            StoreWork::UpdateChannelAttributes {
                channel,
                by,
                op,
                notify_members,
                now_ms,
                reply,
                ..
            } => {
                let current = self.channel_attributes.entry(channel.clone()).or_default();
                let next = op.apply(
                    current,
                    MAX_CHANNEL_TOTAL_BYTES,
                    |attribute| attribute.value.as_str(),
                    |value| v1::ChannelAttribute {
                        key: String::new(),
                        value: value.to_owned(),
                        last_update_user_id: by.to_string(),
                        last_update_ts: now_ms,
                    },
                );
                let set = next.map(|next| {
                    *current = next
                        .into_iter()
                        .map(|(key, attribute)| {
                            let attribute = v1::ChannelAttribute {
                                key: key.clone(),
                                ..attribute
                            };
                            (key, attribute)
                        })
                        .collect();
                    current.values().cloned().collect()
                });
                Resumed::ChannelAttributesSet {
                    channel,
                    notify_members,
                    set,
                    reply,
                }
            }
            StoreWork::UserAttributes { read, reply } => {
                let stored = self.user_attributes.get(&read.user).cloned();
                let wanted = |key: &String| read.keys.is_empty() || read.keys.contains(key);
                reply.send(Ok(stored
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(key, _)| wanted(key))
                    .collect()));
                Resumed::Done
            }
            StoreWork::ChannelAttributes { read, reply } => {
                let stored = self.channel_attributes.get(&read.channel).cloned();
                let wanted = |key: &String| read.keys.is_empty() || read.keys.contains(key);
                reply.send(Ok(stored
                    .unwrap_or_default()
                    .into_values()
                    .filter(|attribute| wanted(&attribute.key))
                    .collect()));
                Resumed::Done
            }
            StoreWork::LocatePeer { peer } => Resumed::PeerLocated {
                region: self.user_regions.get(&peer.receiver).cloned(),
                peer,
            },
            StoreWork::AttributesForRegion { channel } => {
                let stored = self.channel_attributes.get(&channel).map(|attributes| {
                    parley_core::storage::StoredChannelAttributes {
                        attributes: attributes.values().cloned().collect(),
                        expires_at_ms: 0,
                    }
                });
                Resumed::AttributesForRegion {
                    channel,
                    stored: Ok(stored),
                }
            }
            StoreWork::LocateCallee { .. }
            | StoreWork::PutRegionAttributes { .. }
            | StoreWork::QueryHistory { .. }
            | StoreWork::CountHistory { .. }
            | StoreWork::Restrictions { .. }
            | StoreWork::Events { .. } => panic!("no test here asks for this store work"),
        }
    }
}
