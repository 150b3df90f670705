//! One shard: owns a share of the channels and users and is the only code that touches them.
//!
//! A shard is a state machine fed one input at a time (a command, a store answer, a tick) and it
//! never awaits. An operation that needs the store starts it beside the shard ([`Shard::wait`])
//! and carries on when the answer comes back as a [`Resumed`] input. While a key (a user or a
//! channel) waits on the store, later commands for that key queue behind it, in order; every
//! other key goes on. So a slow or frozen store delays only the keys that need it.
//!
//! The handlers are split by concern: `sessions` (logins and presence), `peers`, `channels`,
//! `attributes`, `invitations`, `moderation` and `timers`; `state` holds what is kept per key.

mod attributes;
pub mod channels;
pub mod effects;
mod invitations;
mod moderation;
pub mod peers;
mod reads;
mod sessions;
mod state;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures_channel::oneshot;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppDirectory;
use parley_core::channel::Membership;
use parley_core::ids::AppId;
use parley_core::ids::MessageId;
use parley_core::ids::MessageIdGenerator;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::invitation::Failure;
use parley_core::invitation::InvitationError;
use parley_core::limits::Limits;
use parley_core::ring::Ring;
use parley_core::storage::InboxLimits;
use parley_core::storage::StoreResult;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::connection_state_changed::Reason;

use self::effects::Now;

use self::channels::Joining;
use self::channels::Numbered;
use self::effects::DirectoryWrite;
use self::effects::Effect;
use self::effects::OnReceipt;
use self::effects::StoreWork;
use self::peers::PeerSending;
use self::state::ChannelEntry;
use self::state::Crossed;
use self::state::UserEntry;
use crate::OwnerConfig;
use crate::api::ChannelKey;
use crate::api::PeerOutcome;
use crate::api::PeerSend;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;
use crate::ops::Operation;
use crate::ops::Request;
use crate::ops::Response;
use crate::ops::Route;

type Reply<T> = oneshot::Sender<T>;

/// Commands that may queue behind one key waiting on the store; more are refused with
/// UNAVAILABLE (the store is too slow for them).
const MAX_QUEUED_PER_KEY: usize = 1024;
/// Commands that may queue behind all of a shard's busy keys together; more are refused too.
const MAX_QUEUED: usize = 16 * 1024;

pub enum Command {
    /// An owner operation (`ops.rs`) for a key of this shard.
    Call {
        request: Request,
        reply: Reply<Result<Response, Error>>,
    },
    SendPeer {
        send: PeerSend,
        limits: InboxLimits,
        reply: Reply<Result<PeerRouted, Error>>,
    },
    /// The callee's client acknowledged an invitation (sent by the shard to itself).
    InvitationReceipt { callee: UserKey, invitation_id: u64 },
    /// The ring changed: drop what node `me` no longer owns, so that stale state never comes
    /// back should the keys return (the edges re-register what is live with the new owners).
    Forget { ring: Arc<Ring>, me: NodeId },
    /// Edge `node` left the cluster (it died, or it restarted): its sessions lost their
    /// connections.
    EdgeGone { node: NodeId, reply: Reply<()> },
    /// Announce every channel with members and every user with sessions to the other regions,
    /// as newly taken up.
    AnnounceRegions { reply: Reply<()> },
}

/// How much longer than a receipt a peer message in another region may take to be answered
/// (two trips over Kafka).
pub const REGION_PEER_MARGIN: Duration = Duration::from_secs(5);

/// Where a peer message went.
pub enum PeerRouted {
    /// To the receiver's region; how it ended there comes back.
    Remote {
        message_id: MessageId,
        server_received_ts: i64,
        outcome: oneshot::Receiver<PeerOutcome>,
    },
    /// It crossed in before: its outcome went back then.
    Repeat,
    /// Handed to the receiver's sessions; one receipt per session (none when offline).
    Delivered {
        message_id: MessageId,
        server_received_ts: i64,
        receipts: Vec<oneshot::Receiver<()>>,
    },
    /// Stored in the offline receiver's inbox.
    Cached {
        message_id: MessageId,
        server_received_ts: i64,
    },
}

/// What a command is about: the shard keeps the commands for one key in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    User(UserKey),
    Channel(ChannelKey),
}

impl Command {
    /// The key whose commands must not overtake each other; `None` for commands that only read,
    /// or that are right in any order.
    fn key(&self) -> Option<Key> {
        let request = match self {
            Command::Call { request, .. } => request,
            // A peer message keeps its order with its receiver's store work: one cached while
            // the receiver logs in is in the inbox the login reads.
            Command::SendPeer { send, .. } => {
                return Some(Key::User(UserKey {
                    app: send.from.app.clone(),
                    uid: send.to.clone(),
                }));
            }
            _ => return None,
        };
        match request {
            // Reads of what the shard holds or every owner shares, and an outcome someone is
            // waiting for. (Stored attributes are read in order with the key's writes.)
            Request::Members(_)
            | Request::MemberCount(_)
            | Request::Presence(_)
            | Request::QueryHistory(_)
            | Request::CountHistory(_)
            | Request::Restrictions(_)
            | Request::Events(_)
            | Request::RegionPeerOutcome(_) => None,
            _ => match request.route() {
                Route::User(app, uid) => Some(Key::User(UserKey {
                    app: app.clone(),
                    uid: uid.clone(),
                })),
                Route::Channel(app, channel) => Some(Key::Channel(ChannelKey {
                    app: app.clone(),
                    channel: channel.clone(),
                })),
                Route::Any(_) => None,
            },
        }
    }

    /// Answers the command with `error` without carrying it out.
    fn refuse(self, error: Error) {
        match self {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::SendPeer { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::InvitationReceipt { .. }
            | Command::Forget { .. }
            | Command::EdgeGone { .. }
            | Command::AnnounceRegions { .. } => {}
        }
    }
}

/// Answers an operation whose handler needs no store, once the runtime has carried out what
/// the handler decided ([`Held`]). A caller that went away no longer wants its answer, so a
/// failed send is ignored.
fn answer(held: Held, reply: Reply<Result<Response, Error>>, answer: Result<Response, Error>) {
    hold_reply(&held, reply, answer);
}

/// Sends `value` on `reply` once the runtime has carried out the effects decided before it.
fn hold_reply<T: Send + 'static>(held: &Held, reply: Reply<T>, value: T) {
    held.hold(move || {
        let _ = reply.send(value);
    });
}

/// Answers held back until the runtime has carried out the effects of the input that gave them,
/// so a caller never hears of its request before the deliveries it caused are queued (a join's
/// replay before its reply, for one). Shared with the answers that store work gives.
#[derive(Clone, Default)]
pub struct Held(Arc<parking_lot::Mutex<Vec<Answer>>>);

/// One held answer: sends it.
type Answer = Box<dyn FnOnce() + Send>;

impl Held {
    fn hold(&self, send: impl FnOnce() + Send + 'static) {
        self.0.lock().push(Box::new(send));
    }

    /// Sends every answer held so far, in the order they were given.
    pub fn release(&self) {
        let held = std::mem::take(&mut *self.0.lock());
        for send in held {
            send();
        }
    }
}

/// Where a handler answers an operation `O`.
pub struct Respond<O>(Reply<Result<Response, Error>>, Held, PhantomData<fn() -> O>);

impl<O: Operation> Respond<O> {
    fn new(reply: Reply<Result<Response, Error>>, held: Held) -> Self {
        Respond(reply, held, PhantomData)
    }

    /// Answers once the runtime has carried out what was decided before (see [`Held`]). A
    /// caller that went away no longer wants its answer, so a failed send is ignored.
    pub fn send(self, answer: Result<O::Output, Error>) {
        hold_reply(&self.1, self.0, answer.map(O::response));
    }
}

/// An answer from the store, with what the operation that waited for it needs to go on.
pub enum Resumed {
    BanChecked {
        open: ops::OpenSession,
        ban: StoreResult<Option<parley_core::storage::Restriction>>,
        reply: Respond<ops::OpenSession>,
    },
    InboxListed {
        user: UserKey,
        session: SessionRef,
        inbox: StoreResult<Vec<v1::HistoryMessage>>,
        reply: Respond<ops::SessionReady>,
    },
    PeerStored {
        peer: PeerSending,
        stored: StoreResult<()>,
    },
    PeerLocated {
        peer: PeerSending,
        region: Option<String>,
    },
    PeerCached {
        peer: PeerSending,
        stored: StoreResult<()>,
    },
    ChannelLoaded {
        join: Joining,
        loaded: Result<channels::Loaded, Error>,
    },
    Replayed {
        join: Joining,
        is_new_member: bool,
        after: u64,
        announce: bool,
        oldest_kept: u64,
        stored: StoreResult<Vec<v1::HistoryMessage>>,
    },
    ChannelStored {
        message: Numbered,
        stored: Result<(), Error>,
    },
    ChannelAttributesSet {
        channel: ChannelKey,
        notify_members: bool,
        set: Result<Vec<v1::ChannelAttribute>, Error>,
        reply: Respond<ops::UpdateChannelAttributes>,
    },
    RegionAttributesSet {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
        stored: StoreResult<()>,
        reply: Respond<ops::RegionAttributes>,
    },
    AttributesForRegion {
        channel: ChannelKey,
        stored: StoreResult<Option<parley_core::storage::StoredChannelAttributes>>,
    },
    InvitationLocated {
        send: ops::InvitationSend,
        region: Option<String>,
        reply: Respond<ops::InvitationSend>,
    },
    Banned {
        user: UserKey,
        stored: StoreResult<()>,
        reply: Respond<ops::Moderate>,
    },
    MuteChanged {
        channel: ChannelKey,
        uid: UserId,
        /// The mute's end and reason; `None`: lifted.
        mute: Option<(i64, String)>,
        changed: Result<bool, Error>,
        reply: Respond<ops::Moderate>,
    },
    /// Nothing is left to do here (the operation answered its caller itself).
    Done,
}

/// What waits for a key's store operations to end, in arrival order.
#[derive(Default)]
struct Busy {
    /// Store operations of the key under way.
    waits: usize,
    queued: VecDeque<Queued>,
}

/// Something that came for a busy key: a command, or what a command about every key (an edge
/// gone, a ring change) means for this one, which must not overtake the commands before it.
enum Queued {
    Command(Box<Command>),
    /// Edge `node` is gone: the key's sessions on it lost their connections.
    EdgeGone(NodeId),
    /// The ring gave the key to another node: its state goes.
    Forget,
}

pub struct Shard {
    config: OwnerConfig,
    message_ids: MessageIdGenerator,
    apps: Arc<AppDirectory>,
    /// Whether there are other regions (without, the region directory is never asked).
    spans_regions: bool,
    /// The time of the input being handled.
    now: Now,
    users: HashMap<UserKey, UserEntry>,
    channels: HashMap<ChannelKey, ChannelEntry>,
    /// Channels with lingering sessions, checked on every tick.
    lingering: HashSet<ChannelKey>,
    /// Channels whose member count changed since their last MemberCountUpdated.
    counts_changed: HashSet<ChannelKey>,
    /// Users with a running lost-connection timer or invitation timers.
    timed_users: HashSet<UserKey>,
    /// Peer messages routed to the receiver's region, waiting for how they ended there, by
    /// message ID, with when to stop waiting.
    remote_peers: HashMap<u64, (oneshot::Sender<PeerOutcome>, Instant)>,
    /// Peer messages that crossed in lately, to drop repeats.
    crossed_peers: Crossed,
    /// Invitations from other regions delivered to callees here, with the region they live in
    /// (where the callees' answers go) and until when to remember them.
    remote_invitations: HashMap<(UserKey, u64), (String, Instant)>,
    /// When this shard started or the ring last changed: for a while after, members may still
    /// be coming over to channels it now owns.
    keys_moved_at: Instant,
    /// Keys with store operations under way, and what is queued behind them.
    busy: HashMap<Key, Busy>,
    /// Commands queued behind busy keys, all keys together.
    queued: usize,
    /// What the shard decided since its runtime last looked, for the runtime to carry out.
    effects: Vec<Effect>,
    /// Answers to send once those effects are carried out.
    held: Held,
}

impl Shard {
    pub fn new(
        config: OwnerConfig,
        generator: u16,
        apps: Arc<AppDirectory>,
        spans_regions: bool,
        now: Now,
    ) -> Self {
        Shard {
            config,
            message_ids: MessageIdGenerator::new(generator),
            apps,
            spans_regions,
            now,
            users: HashMap::new(),
            channels: HashMap::new(),
            lingering: HashSet::new(),
            counts_changed: HashSet::new(),
            timed_users: HashSet::new(),
            remote_peers: HashMap::new(),
            crossed_peers: Crossed::default(),
            keys_moved_at: now.instant,
            remote_invitations: HashMap::new(),
            busy: HashMap::new(),
            queued: 0,
            effects: Vec::new(),
            held: Held::default(),
        }
    }

    /// What the shard decided since this was last called.
    pub fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Sends the answers held back so far: call it once the effects taken are carried out.
    pub fn release_answers(&self) {
        self.held.release();
    }

    /// Takes a command: carries it out, or queues it behind its key's store operations.
    pub fn accept(&mut self, now: Now, command: Command) {
        self.now = now;
        if !self.busy.is_empty()
            && let Some(key) = command.key()
            && let Some(busy) = self.busy.get_mut(&key)
        {
            if busy.queued.len() < MAX_QUEUED_PER_KEY && self.queued < MAX_QUEUED {
                busy.queued.push_back(Queued::Command(Box::new(command)));
                self.queued += 1;
            } else {
                command.refuse(Error::new(
                    ErrorCode::Unavailable,
                    "storage is too slow for this key's requests, retry later",
                ));
            }
            return;
        }
        self.handle(command);
    }

    /// Asks the runtime for store work; `key`, if any, takes no other command until it ends.
    /// The answer comes back through [`Shard::resume`].
    fn wait(&mut self, key: Option<Key>, work: StoreWork) {
        if let Some(key) = &key {
            self.busy.entry(key.clone()).or_default().waits += 1;
        }
        self.effects.push(Effect::Store {
            key,
            work: Box::new(work),
        });
    }

    /// Queues a session directory write (never waited for; in order with the others).
    fn write_behind(&mut self, write: DirectoryWrite) {
        self.effects.push(Effect::Directory(write));
    }

    fn publish(&mut self, record: RegionRecord) {
        self.effects.push(Effect::Region(record));
    }

    fn end_session(&mut self, session: SessionRef, reason: Reason) {
        self.effects.push(Effect::EndSession { session, reason });
    }

    fn send_with_receipt(
        &mut self,
        session: SessionRef,
        receipt_id: MessageId,
        frame: Arc<SharedFrame>,
        then: OnReceipt,
    ) {
        self.effects.push(Effect::DeliverPeer {
            session,
            receipt_id,
            frame,
            then,
        });
    }

    /// Goes on with an operation whose store answer came, then frees its key.
    pub fn resume(&mut self, now: Now, key: Option<Key>, resumed: Resumed) {
        self.now = now;
        if let Some(key) = &key
            && let Some(busy) = self.busy.get_mut(key)
        {
            busy.waits = busy.waits.saturating_sub(1);
        }
        match resumed {
            Resumed::BanChecked { open, ban, reply } => self.ban_checked(open, ban, reply),
            Resumed::InboxListed {
                user,
                session,
                inbox,
                reply,
            } => self.inbox_listed(user, session, inbox, reply),
            Resumed::PeerStored { peer, stored } => self.peer_stored(peer, stored),
            Resumed::PeerLocated { peer, region } => self.peer_located(peer, region),
            Resumed::PeerCached { peer, stored } => self.peer_cached(peer, stored),
            Resumed::ChannelLoaded { join, loaded } => self.channel_loaded(join, loaded),
            Resumed::Replayed {
                join,
                is_new_member,
                after,
                announce,
                oldest_kept,
                stored,
            } => {
                let missed = match stored {
                    Ok(stored) => channels::frames_between(&join.key, stored, after, oldest_kept),
                    Err(error) => {
                        tracing::warn!(%error, "reading history to replay failed");
                        Vec::new()
                    }
                };
                self.replayed(join, is_new_member, after, announce, missed);
            }
            Resumed::ChannelStored { message, stored } => self.channel_stored(message, stored),
            Resumed::ChannelAttributesSet {
                channel,
                notify_members,
                set,
                reply,
            } => self.channel_attributes_set(&channel, notify_members, set, reply),
            Resumed::RegionAttributesSet {
                channel,
                attributes,
                notify_members,
                stored,
                reply,
            } => self.region_attributes_set(&channel, attributes, notify_members, stored, reply),
            Resumed::AttributesForRegion { channel, stored } => {
                self.attributes_for_region(channel, stored);
            }
            Resumed::InvitationLocated {
                send,
                region,
                reply,
            } => reply.send(self.send_invitation(send, region)),
            Resumed::Banned {
                user,
                stored,
                reply,
            } => self.banned(&user, stored, reply),
            Resumed::MuteChanged {
                channel,
                uid,
                mute,
                changed,
                reply,
            } => self.mute_changed(&channel, uid, mute, changed, reply),
            Resumed::Done => {}
        }
        if let Some(key) = key {
            self.release(key);
        }
    }

    /// Runs the commands queued behind `key` once nothing of it waits on the store, until one
    /// of them starts a store operation again.
    fn release(&mut self, key: Key) {
        loop {
            let Some(busy) = self.busy.get_mut(&key) else {
                return;
            };
            if busy.waits > 0 {
                return;
            }
            match busy.queued.pop_front() {
                Some(Queued::Command(command)) => {
                    self.queued -= 1;
                    self.handle(*command);
                }
                Some(Queued::EdgeGone(node)) => self.edge_gone_from(&key, node),
                Some(Queued::Forget) => self.forget(&key),
                None => {
                    self.busy.remove(&key);
                    return;
                }
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Call { request, reply } => self.call(request, reply),
            Command::SendPeer {
                send,
                limits,
                reply,
            } => self.send_peer(send, limits, reply),
            Command::InvitationReceipt {
                callee,
                invitation_id,
            } => {
                let _ = self.invitation_call(&callee, invitation_id, |pending| {
                    Ok(pending.machine.receipt())
                });
            }
            Command::Forget { ring, me } => {
                self.forget_unowned(&ring, me);
                self.keys_moved_at = self.now.instant;
            }
            Command::EdgeGone { node, reply } => {
                self.edge_gone(node);
                hold_reply(&self.held, reply, ());
            }
            Command::AnnounceRegions { reply } => {
                self.announce_regions();
                hold_reply(&self.held, reply, ());
            }
        }
    }

    /// Carries out one owner operation: each has its handler here.
    fn call(&mut self, request: Request, reply: Reply<Result<Response, Error>>) {
        match request {
            Request::OpenSession(open) => {
                self.open_session(open, Respond::new(reply, self.held.clone()))
            }
            Request::SessionReady(ops::SessionReady { user, session }) => {
                self.session_ready(user, session, Respond::new(reply, self.held.clone()));
            }
            Request::CloseSession(ops::CloseSession {
                user,
                session,
                reason,
            }) => {
                self.close_session(&user, session, reason);
                answer(self.held.clone(), reply, Ok(Response::CloseSession(())));
            }
            Request::SetReachable(ops::SetReachable {
                user,
                session,
                reachable,
            }) => {
                self.set_reachable(&user, session, reachable);
                answer(self.held.clone(), reply, Ok(Response::SetReachable(())));
            }
            Request::Join(ops::Join {
                channel,
                uid,
                session,
                resume,
            }) => self.join(Joining {
                key: channel,
                uid,
                session,
                resume,
                reply: Respond::new(reply, self.held.clone()),
            }),
            Request::Leave(ops::Leave {
                channel,
                uid,
                session,
                reason,
            }) => answer(
                self.held.clone(),
                reply,
                self.leave(channel, uid, session, reason)
                    .map(Response::Leave),
            ),
            Request::ChannelSend(send) => {
                self.send_channel(send, Respond::new(reply, self.held.clone()))
            }
            Request::Members(ops::Members { channel, asker }) => {
                answer(
                    self.held.clone(),
                    reply,
                    self.members(&channel, asker.as_ref())
                        .map(Response::Members),
                );
            }
            Request::MemberCount(ops::MemberCount { channel }) => {
                let count = self
                    .channels
                    .get(&channel)
                    .map_or(0, ChannelEntry::all_members);
                answer(self.held.clone(), reply, Ok(Response::MemberCount(count)));
            }
            Request::UpdateUserAttributes(ops::UpdateUserAttributes { user, op }) => {
                self.update_user_attributes(user, op, Respond::new(reply, self.held.clone()));
            }
            Request::UserAttributes(read) => {
                self.user_attributes(read, Respond::new(reply, self.held.clone()))
            }
            Request::UpdateChannelAttributes(update) => {
                self.update_channel_attributes(update, Respond::new(reply, self.held.clone()));
            }
            Request::ChannelAttributes(read) => {
                self.channel_attributes(read, Respond::new(reply, self.held.clone()));
            }
            Request::Presence(ops::Presence { user }) => {
                let state = self
                    .users
                    .get(&user)
                    .map_or(PeerOnlineState::Offline, UserEntry::presence);
                answer(self.held.clone(), reply, Ok(Response::Presence(state)));
            }
            Request::SubscribePresence(ops::SubscribePresence { user, subscriber }) => {
                let state = self.subscribe(&user, subscriber, true);
                answer(
                    self.held.clone(),
                    reply,
                    Ok(Response::SubscribePresence(state)),
                );
            }
            Request::UnsubscribePresence(ops::UnsubscribePresence { user, subscriber }) => {
                self.subscribe(&user, subscriber, false);
                answer(
                    self.held.clone(),
                    reply,
                    Ok(Response::UnsubscribePresence(())),
                );
            }
            Request::InvitationSend(send) => {
                self.invite(send, Respond::new(reply, self.held.clone()))
            }
            Request::CancelInvitation(ops::CancelInvitation {
                callee,
                caller,
                invitation_id,
            }) => answer(
                self.held.clone(),
                reply,
                self.cancel_invitation(&callee, &caller, invitation_id)
                    .map(Response::CancelInvitation),
            ),
            Request::AnswerInvitation(ops::AnswerInvitation {
                callee,
                invitation_id,
                accept,
                response,
            }) => answer(
                self.held.clone(),
                reply,
                self.answer_invitation(callee, invitation_id, accept, response)
                    .map(Response::AnswerInvitation),
            ),
            Request::QueryHistory(query) => {
                self.query_history(query, Respond::new(reply, self.held.clone()))
            }
            Request::CountHistory(count) => {
                self.count_history(count, Respond::new(reply, self.held.clone()))
            }
            Request::Moderate(ops::Moderate { action }) => {
                self.moderate(action, Respond::new(reply, self.held.clone()));
            }
            Request::Restrictions(read) => {
                self.restrictions(read, Respond::new(reply, self.held.clone()))
            }
            Request::Events(read) => self.events(read, Respond::new(reply, self.held.clone())),
            Request::RegionInterest(ops::RegionInterest {
                channel,
                region,
                interest,
            }) => {
                self.region_interest(channel, region, interest);
                answer(self.held.clone(), reply, Ok(Response::RegionInterest(())));
            }
            Request::RegionAttributes(ops::RegionAttributes {
                channel,
                attributes,
                notify_members,
            }) => self.region_attributes(
                channel,
                attributes,
                notify_members,
                Respond::new(reply, self.held.clone()),
            ),
            Request::RegionCalleeEvent(ops::RegionCalleeEvent {
                callee,
                region,
                event,
                receipt,
            }) => {
                self.region_callee_event(callee, region, event, receipt);
                answer(
                    self.held.clone(),
                    reply,
                    Ok(Response::RegionCalleeEvent(())),
                );
            }
            Request::RegionInvitationReceipt(ops::RegionInvitationReceipt {
                callee,
                invitation_id,
            }) => {
                let _ = self.invitation_call(&callee, invitation_id, |pending| {
                    Ok(pending.machine.receipt())
                });
                answer(
                    self.held.clone(),
                    reply,
                    Ok(Response::RegionInvitationReceipt(())),
                );
            }
            Request::RegionPeerOutcome(ops::RegionPeerOutcome {
                user,
                message_id,
                outcome,
            }) => {
                if let Some((waiting, _)) = self.remote_peers.remove(&message_id.0) {
                    let _ = waiting.send(outcome);
                } else {
                    tracing::debug!(uid = %user.uid, "a late or repeated region peer outcome");
                }
                answer(
                    self.held.clone(),
                    reply,
                    Ok(Response::RegionPeerOutcome(())),
                );
            }
        }
    }

    fn emit(&mut self, app: &AppId, kind: crate::api::AppEventKind) {
        let ts_ms = self.now.unix_ms;
        let event = crate::api::AppEvent {
            app: app.clone(),
            id: self.message_ids.next(ts_ms as u64),
            ts_ms,
            kind,
        };
        self.effects.push(Effect::Event(event));
    }

    // ---- delivery --------------------------------------------------------------------------

    fn send_to(&mut self, sessions: impl IntoIterator<Item = SessionRef>, frame: SharedFrame) {
        send_shared(&mut self.effects, sessions, Arc::new(frame));
    }

    fn limits(&self, app: &parley_core::ids::AppId) -> Limits {
        self.apps
            .get(app.as_str())
            .map(|app| app.limits.clone())
            .unwrap_or_default()
    }
}

/// Sends `frame` to the channel's live sessions, one delivery per edge.
fn fan_out(
    effects: &mut Vec<Effect>,
    membership: &Membership,
    except: Option<SessionRef>,
    frame: Arc<SharedFrame>,
) {
    send_shared(effects, membership.active_sessions(except), frame);
}

/// Delivers to any sessions, grouped into one delivery per edge.
fn send_shared(
    effects: &mut Vec<Effect>,
    sessions: impl IntoIterator<Item = SessionRef>,
    frame: Arc<SharedFrame>,
) {
    let mut by_edge: BTreeMap<NodeId, Vec<SessionId>> = BTreeMap::new();
    for session in sessions {
        by_edge
            .entry(session.edge)
            .or_default()
            .push(session.session);
    }
    for (edge, sessions) in by_edge {
        effects.push(Effect::Deliver {
            edge,
            sessions,
            frame: frame.clone(),
        });
    }
}

/// MUTED, naming when the mute ends.
pub fn muted(until_ms: i64) -> Error {
    Error::new(
        ErrorCode::Muted,
        format!("muted in this channel until {until_ms} ms since the epoch"),
    )
}

fn not_started() -> Error {
    Error::new(
        ErrorCode::InvitationNotStarted,
        "no invitation with this id is in progress",
    )
}

fn invitation_error(error: InvitationError) -> Error {
    match error {
        InvitationError::AlreadyAccepted => Error::new(
            ErrorCode::InvitationAlreadyAccepted,
            "the invitation was already accepted",
        ),
        InvitationError::AlreadyEnded => Error::new(
            ErrorCode::InvitationAlreadyEnded,
            "the invitation has ended",
        ),
    }
}

fn failure_reason(failure: Failure) -> v1::InvitationFailureReason {
    match failure {
        Failure::PeerOffline => v1::InvitationFailureReason::PeerOffline,
        Failure::PeerNoResponse => v1::InvitationFailureReason::PeerNoResponse,
        Failure::InvitationExpire => v1::InvitationFailureReason::InvitationExpire,
    }
}

fn unavailable(why: &str) -> Error {
    Error::new(ErrorCode::Unavailable, why)
}
