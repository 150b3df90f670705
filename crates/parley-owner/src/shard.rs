//! One shard task: owns a share of the channels and users and is the only code that touches them.
//! It awaits the store only for writes that must be durable before they are acknowledged.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::attributes::AttributeOp;
use parley_core::attributes::MAX_CHANNEL_TOTAL_BYTES;
use parley_core::attributes::MAX_USER_TOTAL_BYTES;
use parley_core::channel::Departure;
use parley_core::channel::Membership;
use parley_core::ids::MessageId;
use parley_core::ids::MessageIdGenerator;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::invitation::Failure;
use parley_core::invitation::Invitation;
use parley_core::invitation::InvitationError;
use parley_core::invitation::Notice;
use parley_core::limits::Limits;
use parley_core::limits::MAX_MEMBERS_LISTED;
use parley_core::ring::Ring;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;
use parley_store::Conversation;
use parley_store::HistoryQuery;
use parley_store::InboxLimits;
use parley_store::Order;
use parley_store::Restriction;
use parley_store::Scope;
use parley_store::Store;
use parley_store::StoredChannelAttributes;
use parley_store::StoredUserAttributes;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::api::AppEvent;
use crate::api::AppEventKind;
use crate::api::ChannelKey;
use crate::api::ChannelSend;
use crate::api::ChannelSent;
use crate::api::EventSink;
use crate::api::Interest;
use crate::api::InvitationSend;
use crate::api::LeaveReason;
use crate::api::Moderation;
use crate::api::OpenSession;
use crate::api::PeerOutcome;
use crate::api::PeerSend;
use crate::api::RegionLink;
use crate::api::RegionRecord;
use crate::api::Resume;
use crate::api::UserKey;
use crate::owner::Edges;
use crate::owner::OwnerConfig;
use crate::owner::storage_error;
use crate::owner::unix_ms;

type Reply<T> = oneshot::Sender<T>;

/// Sequence numbers reserved in the store at a time, so a restart never reuses one.
const SEQUENCE_BLOCK: u64 = 1000;
/// Compare-and-set attempts of one attribute write before it gives up.
const CAS_ATTEMPTS: usize = 8;

pub(crate) enum Command {
    OpenSession {
        open: OpenSession,
        reply: Reply<Result<(), Error>>,
    },
    SessionReady {
        user: UserKey,
        session: SessionRef,
        reply: Reply<Result<(), Error>>,
    },
    CloseSession {
        user: UserKey,
        session: SessionRef,
        reason: LeaveReason,
        reply: Reply<()>,
    },
    SetReachable {
        user: UserKey,
        session: SessionRef,
        reachable: bool,
        reply: Reply<()>,
    },
    SendPeer {
        send: PeerSend,
        limits: InboxLimits,
        reply: Reply<Result<PeerRouted, Error>>,
    },
    Join {
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        resume: Resume,
        reply: Reply<Result<u64, Error>>,
    },
    Leave {
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
        reply: Reply<Result<(), Error>>,
    },
    SendChannel {
        send: ChannelSend,
        reply: Reply<Result<ChannelSent, Error>>,
    },
    Members {
        channel: ChannelKey,
        asker: Option<(UserId, SessionRef)>,
        reply: Reply<Result<Vec<UserId>, Error>>,
    },
    MemberCount {
        channel: ChannelKey,
        reply: Reply<u32>,
    },
    UpdateUserAttributes {
        user: UserKey,
        op: AttributeOp,
        reply: Reply<Result<(), Error>>,
    },
    UpdateChannelAttributes {
        channel: ChannelKey,
        by: UserId,
        op: AttributeOp,
        notify_members: bool,
        reply: Reply<Result<(), Error>>,
    },
    Presence {
        user: UserKey,
        reply: Reply<PeerOnlineState>,
    },
    Moderate {
        action: Moderation,
        reply: Reply<Result<bool, Error>>,
    },
    Subscribe {
        user: UserKey,
        subscriber: SessionRef,
        subscribe: bool,
        reply: Reply<PeerOnlineState>,
    },
    SendInvitation {
        send: InvitationSend,
        reply: Reply<Result<u64, Error>>,
    },
    CancelInvitation {
        callee: UserKey,
        caller: UserId,
        invitation_id: u64,
        reply: Reply<Result<(), Error>>,
    },
    AnswerInvitation {
        callee: UserKey,
        invitation_id: u64,
        accept: bool,
        response: String,
        reply: Reply<Result<(), Error>>,
    },
    /// The callee's client acknowledged an invitation (sent by the shard to itself).
    InvitationReceipt { callee: UserKey, invitation_id: u64 },
    /// The ring changed: drop what node `me` no longer owns, so that stale state never comes
    /// back should the keys return (the edges re-register what is live with the new owners).
    Forget { ring: Arc<Ring>, me: NodeId },
    /// Edge `node` left the cluster (it died, or it restarted): its sessions lost their
    /// connections.
    EdgeGone { node: NodeId, reply: Reply<()> },
    RegionInterest {
        channel: ChannelKey,
        region: String,
        interest: Interest,
        reply: Reply<()>,
    },
    /// Announce every channel with members and every user with sessions to the other regions,
    /// as newly taken up.
    AnnounceRegions { reply: Reply<()> },
    RegionAttributes {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
        reply: Reply<Result<(), Error>>,
    },
    /// An event of an invitation living in `region`, for `callee`'s sessions here.
    RegionCalleeEvent {
        callee: UserKey,
        region: String,
        event: v1::Event,
        receipt: Option<u64>,
        reply: Reply<()>,
    },
    /// A peer message routed to another region ended there.
    RegionPeerOutcome {
        user: UserKey,
        message_id: MessageId,
        outcome: PeerOutcome,
    },
}

/// How much longer than a receipt a peer message in another region may take to be answered
/// (two trips over Kafka).
pub(crate) const REGION_PEER_MARGIN: Duration = Duration::from_secs(5);

/// Where a peer message went.
pub(crate) enum PeerRouted {
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

#[derive(Default)]
struct ChannelEntry {
    membership: Membership,
    last_seq: u64,
    /// Highest sequence number reserved in the store.
    reserved_seq: u64,
    count_sent_at: Option<Instant>,
    /// The last messages, for recovery after a reconnect.
    recent: VecDeque<(u64, Arc<SharedFrame>)>,
    /// Muted members and when their mutes end (ms since the epoch), as stored.
    mutes: HashMap<UserId, i64>,
    /// Other regions with members in the channel, and how many: its messages are published for
    /// them, and its member count is theirs and this region's.
    remote_regions: BTreeMap<String, u32>,
    /// The member count last told to the other regions.
    members_told: Option<u32>,
    /// Messages that crossed from other regions lately, to drop repeats.
    crossed: Crossed,
}

impl ChannelEntry {
    fn local_members(&self) -> u32 {
        u32::try_from(self.membership.member_count()).unwrap_or(u32::MAX)
    }

    /// Members here and in every other region.
    fn all_members(&self) -> u32 {
        self.remote_regions
            .values()
            .fold(self.local_members(), |sum, members| {
                sum.saturating_add(*members)
            })
    }
}

/// How long a callee's region remembers an invitation from another region, for the callee's
/// answers (an invitation expires after 60 s unanswered).
const REMOTE_INVITATION_KEPT: Duration = Duration::from_secs(120);

/// How long after its keys moved an owner holds back crossing messages for channels it has no
/// members of yet (edges re-register their sessions within about a second).
const HANDOFF_GRACE: Duration = Duration::from_secs(5);

/// How many crossing message IDs a channel remembers to drop repeats (a bridge that restarts
/// re-reads at most about a second of records).
const CROSSED_KEPT: usize = 4096;

/// The IDs of the last messages that crossed into a channel from other regions.
#[derive(Default)]
struct Crossed {
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

impl Crossed {
    /// Whether `id` is new; remembers it.
    fn first_time(&mut self, id: MessageId) -> bool {
        if !self.ids.insert(id.0) {
            return false;
        }
        self.order.push_back(id.0);
        if self.order.len() > CROSSED_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

struct UserSession {
    session: SessionRef,
    reachable: bool,
}

struct PendingInvitation {
    machine: Invitation,
    caller: UserId,
    caller_session: SessionRef,
    content: String,
    channel_id: String,
    response: String,
    /// When it ended; ended invitations are kept a while so late calls get ALREADY_ACCEPTED or
    /// ALREADY_ENDED rather than NOT_STARTED.
    ended_at: Option<Instant>,
    /// The callee's region when it is not this one: what the callee is told crosses there.
    callee_region: Option<String>,
}

struct UserEntry {
    sessions: Vec<UserSession>,
    /// Set when the last session was lost (not logged out): UNREACHABLE until then.
    lost_until: Option<Instant>,
    /// The state last told to subscribers.
    announced: PeerOnlineState,
    subscribers: BTreeSet<SessionRef>,
    /// Invitations to this user, by id.
    invitations: BTreeMap<u64, PendingInvitation>,
    /// Why the user's last session ended, for the logout event.
    logout_reason: Option<&'static str>,
}

impl Default for UserEntry {
    fn default() -> Self {
        UserEntry {
            sessions: Vec::new(),
            lost_until: None,
            announced: PeerOnlineState::Offline,
            subscribers: BTreeSet::new(),
            invitations: BTreeMap::new(),
            logout_reason: None,
        }
    }
}

impl UserEntry {
    fn presence(&self) -> PeerOnlineState {
        if self.sessions.iter().any(|session| session.reachable) {
            PeerOnlineState::Online
        } else if !self.sessions.is_empty() || self.lost_until.is_some() {
            PeerOnlineState::Unreachable
        } else {
            PeerOnlineState::Offline
        }
    }

    fn is_forgettable(&self) -> bool {
        self.sessions.is_empty()
            && self.lost_until.is_none()
            && self.subscribers.is_empty()
            && self.invitations.is_empty()
    }
}

/// Where a shard tells the world outside the cluster what happened.
#[derive(Clone)]
pub(crate) struct Outlets {
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) regions: Arc<dyn RegionLink>,
}

pub(crate) struct Shard {
    config: OwnerConfig,
    message_ids: MessageIdGenerator,
    apps: Arc<AppDirectory>,
    edges: Arc<Edges>,
    store: Arc<dyn Store>,
    events: Arc<dyn EventSink>,
    regions: Arc<dyn RegionLink>,
    /// For receipts that arrive after the shard has moved on; weak so the shard still ends when
    /// the owner goes.
    self_tx: mpsc::WeakSender<Command>,
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
}

impl Shard {
    pub(crate) fn new(
        config: OwnerConfig,
        generator: u16,
        apps: Arc<AppDirectory>,
        edges: Arc<Edges>,
        store: Arc<dyn Store>,
        outlets: Outlets,
        self_tx: mpsc::WeakSender<Command>,
    ) -> Self {
        Shard {
            config,
            message_ids: MessageIdGenerator::new(generator),
            apps,
            edges,
            store,
            events: outlets.events,
            regions: outlets.regions,
            self_tx,
            users: HashMap::new(),
            channels: HashMap::new(),
            lingering: HashSet::new(),
            counts_changed: HashSet::new(),
            timed_users: HashSet::new(),
            remote_peers: HashMap::new(),
            crossed_peers: Crossed::default(),
            keys_moved_at: now(),
            remote_invitations: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self, mut command_rx: mpsc::Receiver<Command>) {
        let tick_every = self
            .config
            .member_count_interval
            .min(Duration::from_millis(100));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = command_rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick(now()).await,
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        // A caller that went away no longer wants its reply, so failed sends are ignored.
        match command {
            Command::OpenSession { open, reply } => {
                let _ = reply.send(self.open_session(open).await);
            }
            Command::Moderate { action, reply } => {
                let _ = reply.send(self.moderate(action).await);
            }
            Command::SessionReady {
                user,
                session,
                reply,
            } => {
                let _ = reply.send(self.session_ready(user, session).await);
            }
            Command::CloseSession {
                user,
                session,
                reason,
                reply,
            } => {
                self.close_session(&user, session, reason).await;
                let _ = reply.send(());
            }
            Command::SetReachable {
                user,
                session,
                reachable,
                reply,
            } => {
                if let Some(entry) = self.users.get_mut(&user) {
                    for known in &mut entry.sessions {
                        if known.session == session {
                            known.reachable = reachable;
                        }
                    }
                    self.announce_presence(&user);
                }
                let _ = reply.send(());
            }
            Command::SendPeer {
                send,
                limits,
                reply,
            } => {
                let _ = reply.send(self.send_peer(send, limits).await);
            }
            Command::Join {
                channel,
                uid,
                session,
                resume,
                reply,
            } => {
                let _ = reply.send(self.join(channel, uid, session, resume).await);
            }
            Command::Leave {
                channel,
                uid,
                session,
                reason,
                reply,
            } => {
                let _ = reply.send(self.leave(channel, uid, session, reason).await);
            }
            Command::SendChannel { send, reply } => {
                let _ = reply.send(self.send_channel(send).await);
            }
            Command::Members {
                channel,
                asker,
                reply,
            } => {
                let _ = reply.send(self.members(&channel, asker.as_ref()));
            }
            Command::MemberCount { channel, reply } => {
                let count = self
                    .channels
                    .get(&channel)
                    .map_or(0, ChannelEntry::all_members);
                let _ = reply.send(count);
            }
            Command::UpdateUserAttributes { user, op, reply } => {
                let _ = reply.send(self.update_user_attributes(user, &op).await);
            }
            Command::UpdateChannelAttributes {
                channel,
                by,
                op,
                notify_members,
                reply,
            } => {
                let updated = self
                    .update_channel_attributes(&channel, &by, &op, notify_members)
                    .await;
                let _ = reply.send(updated);
            }
            Command::Forget { ring, me } => {
                self.forget_unowned(&ring, me);
                self.keys_moved_at = now();
            }
            Command::EdgeGone { node, reply } => {
                self.edge_gone(node).await;
                let _ = reply.send(());
            }
            Command::Presence { user, reply } => {
                let state = self
                    .users
                    .get(&user)
                    .map_or(PeerOnlineState::Offline, UserEntry::presence);
                let _ = reply.send(state);
            }
            Command::Subscribe {
                user,
                subscriber,
                subscribe,
                reply,
            } => {
                let entry = self.users.entry(user.clone()).or_default();
                if subscribe {
                    entry.subscribers.insert(subscriber);
                } else {
                    entry.subscribers.remove(&subscriber);
                }
                let state = entry.presence();
                self.forget_user_if_idle(&user);
                let _ = reply.send(state);
            }
            Command::SendInvitation { send, reply } => {
                let callee = UserKey {
                    app: send.caller.app.clone(),
                    uid: send.callee.clone(),
                };
                let here = self
                    .users
                    .get(&callee)
                    .is_some_and(|entry| !entry.sessions.is_empty());
                // Not here: the callee may be in another region.
                let elsewhere = if here {
                    None
                } else {
                    self.region_of(&callee).await
                };
                let _ = reply.send(self.send_invitation(send, elsewhere));
            }
            Command::CancelInvitation {
                callee,
                caller,
                invitation_id,
                reply,
            } => {
                let outcome = self.invitation_call(&callee, invitation_id, |pending| {
                    if pending.caller != caller {
                        return Err(not_started());
                    }
                    pending.machine.cancel().map_err(invitation_error)
                });
                let _ = reply.send(outcome);
            }
            Command::AnswerInvitation {
                callee,
                invitation_id,
                accept,
                response,
                reply,
            } => {
                let here = self
                    .users
                    .get(&callee)
                    .is_some_and(|entry| entry.invitations.contains_key(&invitation_id));
                if !here
                    && self
                        .remote_invitations
                        .contains_key(&(callee.clone(), invitation_id))
                {
                    // The invitation lives in the caller's region: the answer goes there, and
                    // how it went comes back as events.
                    self.regions.publish(RegionRecord::InvitationAnswer {
                        callee,
                        invitation_id,
                        accept,
                        response,
                    });
                    let _ = reply.send(Ok(()));
                    return;
                }
                let outcome = self.invitation_call(&callee, invitation_id, |pending| {
                    let notices = if accept {
                        pending.machine.accept()
                    } else {
                        pending.machine.refuse()
                    }
                    .map_err(invitation_error)?;
                    pending.response = response;
                    Ok(notices)
                });
                let _ = reply.send(outcome);
            }
            Command::InvitationReceipt {
                callee,
                invitation_id,
            } => {
                let _ = self.invitation_call(&callee, invitation_id, |pending| {
                    Ok(pending.machine.receipt())
                });
            }
            Command::RegionInterest {
                channel,
                region,
                interest,
                reply,
            } => {
                self.region_interest(channel, region, interest).await;
                let _ = reply.send(());
            }
            Command::AnnounceRegions { reply } => {
                for (channel, entry) in &self.channels {
                    self.regions.publish(RegionRecord::Interest {
                        channel: channel.clone(),
                        interest: Interest {
                            members: entry.local_members(),
                            fresh: true,
                        },
                    });
                }
                for (user, entry) in &self.users {
                    if !entry.sessions.is_empty() {
                        self.regions.publish(RegionRecord::User {
                            user: user.clone(),
                            online: true,
                        });
                    }
                }
                let _ = reply.send(());
            }
            Command::RegionAttributes {
                channel,
                attributes,
                notify_members,
                reply,
            } => {
                let outcome = self
                    .region_attributes(&channel, attributes, notify_members)
                    .await;
                let _ = reply.send(outcome);
            }
            Command::RegionCalleeEvent {
                callee,
                region,
                event,
                receipt,
                reply,
            } => {
                self.region_callee_event(callee, region, event, receipt);
                let _ = reply.send(());
            }
            Command::RegionPeerOutcome {
                user,
                message_id,
                outcome,
            } => {
                if let Some((waiting, _)) = self.remote_peers.remove(&message_id.0) {
                    let _ = waiting.send(outcome);
                } else {
                    tracing::debug!(uid = %user.uid, "a late or repeated region peer outcome");
                }
            }
        }
    }

    // ---- sessions and presence -------------------------------------------------------------

    async fn open_session(&mut self, open: OpenSession) -> Result<(), Error> {
        // A session registering again (after a ring change) is already here: nothing to do.
        if self.users.get(&open.user).is_some_and(|entry| {
            entry
                .sessions
                .iter()
                .any(|known| known.session == open.session)
        }) {
            return Ok(());
        }
        self.refuse_if_banned(&open.user).await?;
        let entry = self.users.entry(open.user.clone()).or_default();
        let mut replaced = Vec::new();
        if open.multi_login == MultiLogin::Replace {
            for old in entry.sessions.drain(..) {
                if let Some(edge) = self.edges.get(old.session.edge) {
                    edge.end_session(old.session.session, Reason::RemoteLogin);
                }
                replaced.push(old.session);
            }
        }
        entry.sessions.push(UserSession {
            session: open.session,
            reachable: true,
        });
        entry.lost_until = None;
        self.announce_presence(&open.user);
        // The directory is for a node that takes the user over later; a failed write only costs
        // that node a re-registration, so it does not fail the login.
        let (app, uid) = (&open.user.app, &open.user.uid);
        for old in replaced {
            if let Err(error) = self.store.unregister_session(app, uid, old).await {
                tracing::warn!(%error, "session directory update failed");
            }
        }
        if let Err(error) = self.store.register_session(app, uid, open.session).await {
            tracing::warn!(%error, "session directory update failed");
        }
        Ok(())
    }

    /// Fails a login of a banned user with BANNED. When storage cannot say, the login goes on
    /// (availability over enforcement; a ban also ends live sessions when it is set).
    async fn refuse_if_banned(&self, user: &UserKey) -> Result<(), Error> {
        match self
            .store
            .restriction(&user.app, &Scope::Login, &user.uid, unix_ms())
            .await
        {
            Ok(Some(ban)) => Err(Error::new(
                ErrorCode::Banned,
                format!("banned until {} ms since the epoch", ban.until_ms),
            )),
            Ok(None) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, uid = %user.uid, "could not check for a ban; letting the login in");
                Ok(())
            }
        }
    }

    /// Delivers what waited for the user: the offline inbox (oldest first, each removed once its
    /// receipt arrives) and invitations sent while the user was offline.
    async fn session_ready(&mut self, user: UserKey, session: SessionRef) -> Result<(), Error> {
        let limits = self.limits(&user.app);
        let inbox = self
            .store
            .list(
                &user.app,
                &user.uid,
                limits.offline_max_age.as_millis() as i64,
                unix_ms(),
            )
            .await
            .map_err(storage_error)?;
        if let Some(edge) = self.edges.get(session.edge) {
            for stored in inbox {
                let frame = Arc::new(SharedFrame::event(EventKind::MessageFromPeer(
                    v1::MessageFromPeer {
                        peer_id: stored.from.clone(),
                        message: stored.message.clone(),
                        message_id: stored.message_id,
                        server_received_ts: stored.server_received_ts,
                        is_offline_message: true,
                    },
                )));
                let receipt =
                    edge.deliver_peer(session.session, MessageId(stored.message_id), frame);
                let store = self.store.clone();
                let user = user.clone();
                tokio::spawn(async move {
                    if receipt.await.is_ok()
                        && let Err(error) = store.remove(&user.app, &user.uid, &stored).await
                    {
                        tracing::warn!(%error, "removing a delivered offline message failed");
                    }
                });
            }
        }
        let now = now();
        let waiting: Vec<u64> = self
            .users
            .get(&user)
            .map(|entry| entry.invitations.keys().copied().collect())
            .unwrap_or_default();
        for invitation_id in waiting {
            let _ = self.invitation_call(&user, invitation_id, |pending| {
                Ok(pending.machine.callee_online(now))
            });
        }
        Ok(())
    }

    async fn close_session(&mut self, user: &UserKey, session: SessionRef, reason: LeaveReason) {
        let offline_after = self.limits(&user.app).offline_after;
        let Some(entry) = self.users.get_mut(user) else {
            return;
        };
        let before = entry.sessions.len();
        entry.sessions.retain(|known| known.session != session);
        let mut logged_out = false;
        if entry.sessions.len() < before && entry.sessions.is_empty() {
            match reason {
                LeaveReason::ConnectionLost => {
                    entry.lost_until = Some(now() + offline_after);
                    self.timed_users.insert(user.clone());
                    entry.logout_reason.get_or_insert("connection_lost");
                }
                LeaveReason::Left => {
                    logged_out = true;
                    entry.logout_reason.get_or_insert("logout");
                }
            }
        }
        self.announce_presence(user);
        if let Err(error) = self
            .store
            .unregister_session(&user.app, &user.uid, session)
            .await
        {
            tracing::warn!(%error, "session directory update failed");
        }
        if logged_out {
            // Logged out: OFFLINE at once, and attributes go (Agora's behaviour).
            self.clear_user_attributes(user).await;
        }
    }

    async fn clear_user_attributes(&self, user: &UserKey) {
        let cleared = self
            .store
            .set_user_attributes(&user.app, &user.uid, StoredUserAttributes::default())
            .await;
        if let Err(error) = cleared {
            tracing::warn!(%error, uid = %user.uid, "clearing user attributes failed");
        }
    }

    /// Tells subscribers if the user's state changed since they last heard, then forgets an idle
    /// user.
    fn announce_presence(&mut self, user: &UserKey) {
        let Some(entry) = self.users.get_mut(user) else {
            return;
        };
        let state = entry.presence();
        if state != entry.announced {
            let was_offline = entry.announced == PeerOnlineState::Offline;
            let kind = if was_offline {
                entry.logout_reason = None;
                Some(AppEventKind::Login {
                    uid: user.uid.clone(),
                })
            } else if state == PeerOnlineState::Offline {
                Some(AppEventKind::Logout {
                    uid: user.uid.clone(),
                    reason: entry.logout_reason.take().unwrap_or("logout"),
                })
            } else {
                None
            };
            entry.announced = state;
            let frame = SharedFrame::event(EventKind::PeersOnlineStatusChanged(
                v1::PeersOnlineStatusChanged {
                    status: [(user.uid.to_string(), state as i32)].into_iter().collect(),
                },
            ));
            let subscribers: Vec<SessionRef> = entry.subscribers.iter().copied().collect();
            self.send_to(subscribers, frame);
            if let Some(kind) = kind {
                // The other regions learn where the user is, for peer messages.
                self.regions.publish(RegionRecord::User {
                    user: user.clone(),
                    online: matches!(kind, AppEventKind::Login { .. }),
                });
                self.emit(&user.app, kind);
            }
        }
        self.forget_user_if_idle(user);
    }

    fn forget_user_if_idle(&mut self, user: &UserKey) {
        if self.users.get(user).is_some_and(UserEntry::is_forgettable) {
            self.users.remove(user);
            self.timed_users.remove(user);
        }
    }

    // ---- peer messages ---------------------------------------------------------------------

    async fn send_peer(
        &mut self,
        send: PeerSend,
        limits: InboxLimits,
    ) -> Result<PeerRouted, Error> {
        let (message_id, server_received_ts) = match &send.origin {
            Some(origin) => {
                if !self.crossed_peers.first_time(origin.message_id) {
                    return Ok(PeerRouted::Repeat);
                }
                (origin.message_id, origin.server_received_ts)
            }
            None => {
                let now = unix_ms();
                (self.message_ids.next(now as u64), now)
            }
        };
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to,
        };
        let stored = v1::HistoryMessage {
            message_id: message_id.0,
            from: send.from.uid.to_string(),
            message: Some(send.message.clone()),
            server_received_ts,
            seq: 0,
        };
        if send.enable_history {
            let conversation = Conversation::peers(send.from.uid.clone(), receiver.uid.clone());
            let retention_ms = self.limits(&receiver.app).history_retention.as_millis() as i64;
            self.store
                .append(&receiver.app, &conversation, stored.clone(), retention_ms)
                .await
                .map_err(storage_error)?;
        }
        let sessions: Vec<SessionRef> = self
            .users
            .get(&receiver)
            .map(|entry| entry.sessions.iter().map(|known| known.session).collect())
            .unwrap_or_default();
        if sessions.is_empty() && send.origin.is_none() {
            // Not here: maybe in another region (one that crossed in stays here).
            if self.region_of(&receiver).await.is_some() {
                let (outcome_tx, outcome_rx) = oneshot::channel();
                let until = now() + self.config.peer_receipt_timeout + REGION_PEER_MARGIN;
                self.remote_peers.insert(message_id.0, (outcome_tx, until));
                self.regions.publish(RegionRecord::Peer {
                    from: send.from,
                    to: receiver.uid,
                    message: send.message,
                    enable_offline: send.enable_offline,
                    enable_history: send.enable_history,
                    message_id,
                    server_received_ts,
                    trace: send.trace,
                });
                return Ok(PeerRouted::Remote {
                    message_id,
                    server_received_ts,
                    outcome: outcome_rx,
                });
            }
        }
        if sessions.is_empty() && send.enable_offline {
            self.store
                .push(
                    &receiver.app,
                    &receiver.uid,
                    stored,
                    limits,
                    server_received_ts,
                )
                .await
                .map_err(storage_error)?;
            self.emit(
                &receiver.app,
                AppEventKind::PeerMessageCached {
                    from: send.from.uid.clone(),
                    to: receiver.uid.clone(),
                    message_id,
                    message: send.message,
                },
            );
            return Ok(PeerRouted::Cached {
                message_id,
                server_received_ts,
            });
        }
        let frame = Arc::new(
            SharedFrame::event(EventKind::MessageFromPeer(v1::MessageFromPeer {
                peer_id: send.from.uid.to_string(),
                message: Some(send.message),
                message_id: message_id.0,
                server_received_ts,
                is_offline_message: false,
            }))
            .with_trace(send.trace),
        );
        let receipts = sessions
            .iter()
            .filter_map(|session| {
                let edge = self.edges.get(session.edge)?;
                Some(edge.deliver_peer(session.session, message_id, frame.clone()))
            })
            .collect();
        Ok(PeerRouted::Delivered {
            message_id,
            server_received_ts,
            receipts,
        })
    }

    // ---- channels --------------------------------------------------------------------------

    async fn join(
        &mut self,
        key: ChannelKey,
        uid: UserId,
        session: SessionRef,
        resume: Resume,
    ) -> Result<u64, Error> {
        let limits = self.limits(&key.app);
        let taken_up = !self.channels.contains_key(&key);
        if taken_up {
            let high_water = self
                .store
                .high_water(&key.app, &key.channel)
                .await
                .map_err(storage_error)?;
            // Reserve the first block now, so sending needs the store only once per block.
            let reserved_seq = high_water + SEQUENCE_BLOCK;
            self.store
                .set_high_water(&key.app, &key.channel, reserved_seq)
                .await
                .map_err(storage_error)?;
            // The channel has a member again: its attributes no longer expire.
            self.set_attribute_expiry(&key, 0).await?;
            let mutes = self
                .store
                .restrictions(&key.app, &Scope::Channel(key.channel.clone()), unix_ms())
                .await
                .map_err(storage_error)?
                .into_iter()
                .filter_map(|mute| Some((UserId::parse(&mute.uid).ok()?, mute.until_ms)))
                .collect();
            self.channels.insert(
                key.clone(),
                ChannelEntry {
                    last_seq: high_water,
                    reserved_seq,
                    mutes,
                    ..ChannelEntry::default()
                },
            );
        }
        let entry = self.channels.get_mut(&key).expect("inserted above");
        let is_new_member = entry.membership.join(&uid, session)?;
        if taken_up {
            // Other regions learn the channel has members here, and say if they have.
            entry.members_told = Some(entry.local_members());
            self.regions.publish(RegionRecord::Interest {
                channel: key.clone(),
                interest: Interest {
                    members: entry.local_members(),
                    fresh: true,
                },
            });
        }
        match resume {
            Resume::Fresh => {}
            Resume::Client { after } => self.replay(&key, session, after, true).await,
            Resume::Handoff { after } => self.replay(&key, session, after, false).await,
        }
        if is_new_member {
            self.emit(
                &key.app,
                AppEventKind::Join {
                    channel: key.channel.clone(),
                    uid: uid.clone(),
                },
            );
            self.counts_changed.insert(key.clone());
            let entry = &self.channels[&key];
            if entry.membership.member_count() <= limits.member_events_threshold {
                let frame = SharedFrame::event(EventKind::MemberJoined(v1::MemberJoined {
                    channel_id: key.channel.to_string(),
                    member_id: uid.to_string(),
                }));
                self.fan_out(&entry.membership, Some(session), frame);
            }
        }
        Ok(self.channels[&key].last_seq)
    }

    /// Sends a re-joining session what it missed after `after`: from the recovery window, and
    /// before the window from history (a new owner's window starts empty). A client resuming
    /// (`announce`) is then told with ChannelRecovered whether the window reached back far
    /// enough; messages sent without history may be missing when it did not.
    async fn replay(&self, key: &ChannelKey, session: SessionRef, after: u64, announce: bool) {
        let Some(edge) = self.edges.get(session.edge) else {
            return;
        };
        let entry = &self.channels[key];
        let last_seq = entry.last_seq;
        let oldest_kept = entry.recent.front().map_or(last_seq + 1, |(seq, _)| *seq);
        let from_seq = after + 1;
        if oldest_kept > from_seq && after < last_seq {
            for frame in self.history_between(key, after, oldest_kept).await {
                edge.deliver(&[session.session], frame);
            }
        }
        let entry = &self.channels[key];
        for (_, frame) in entry.recent.iter().filter(|(seq, _)| *seq > after) {
            edge.deliver(&[session.session], frame.clone());
        }
        if announce {
            let recovered = SharedFrame::event(EventKind::ChannelRecovered(v1::ChannelRecovered {
                channel_id: key.channel.to_string(),
                from_seq,
                to_seq: last_seq,
                complete: from_seq > last_seq || oldest_kept <= from_seq,
            }));
            edge.deliver(&[session.session], Arc::new(recovered));
        }
    }

    /// The channel's stored messages with `after < seq < before`, oldest first, as frames; at
    /// most a recovery window of them.
    async fn history_between(
        &self,
        key: &ChannelKey,
        after: u64,
        before: u64,
    ) -> Vec<Arc<SharedFrame>> {
        let query = HistoryQuery {
            start_ms: 0,
            end_ms: i64::MAX,
            limit: self.config.recovery_window,
            order: Order::Descending,
            after: None,
        };
        let conversation = Conversation::Channel(key.channel.clone());
        let stored = match self.store.query(&key.app, &conversation, query).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "reading history to replay failed");
                return Vec::new();
            }
        };
        let mut missed: Vec<_> = stored
            .into_iter()
            .filter(|message| message.seq > after && message.seq < before)
            .collect();
        missed.sort_by_key(|message| message.seq);
        missed
            .into_iter()
            .map(|message| {
                Arc::new(SharedFrame::event(EventKind::ChannelMessage(
                    v1::ChannelMessage {
                        channel_id: key.channel.to_string(),
                        member_id: message.from,
                        message: message.message,
                        message_id: message.message_id,
                        server_received_ts: message.server_received_ts,
                        seq: message.seq,
                    },
                )))
            })
            .collect()
    }

    async fn leave(
        &mut self,
        key: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        let departure = match reason {
            LeaveReason::Left => Departure::Now,
            LeaveReason::ConnectionLost => Departure::Linger {
                until: now() + self.config.member_grace,
            },
        };
        let entry = self
            .channels
            .get_mut(&key)
            .ok_or_else(|| Error::new(ErrorCode::NotJoined, "not joined to this channel"))?;
        let left = entry.membership.leave(&uid, session, departure)?;
        if departure != Departure::Now {
            self.lingering.insert(key.clone());
        }
        if left {
            self.announce_left(&key, &[uid], "left").await;
        }
        Ok(())
    }

    async fn send_channel(&mut self, send: ChannelSend) -> Result<ChannelSent, Error> {
        let store = self.store.clone();
        let recovery_window = self.config.recovery_window;
        let retention_ms = self.limits(&send.channel.app).history_retention.as_millis() as i64;
        let entry = match (&send.origin, send.session) {
            (Some(origin), _) => {
                let not_delivered = Ok(ChannelSent {
                    message_id: origin.message_id,
                    server_received_ts: origin.server_received_ts,
                    seq: 0,
                });
                // Nobody is in it here (any more), or it came before: nothing to deliver. Unless
                // the keys moved lately: its members may be on their way (edges re-register
                // them), so the bridge is asked to try again.
                let Some(entry) = self.channels.get_mut(&send.channel) else {
                    if self.keys_moved_at.elapsed() < HANDOFF_GRACE {
                        return Err(Error::new(
                            ErrorCode::Unavailable,
                            "the channel's members may still be coming over",
                        ));
                    }
                    return not_delivered;
                };
                if !entry.crossed.first_time(origin.message_id) {
                    return not_delivered;
                }
                entry
            }
            (None, Some(session)) => self
                .channels
                .get_mut(&send.channel)
                .filter(|entry| entry.membership.is_active(&send.from, session))
                .ok_or_else(|| Error::new(ErrorCode::NotJoined, "not joined to this channel"))?,
            (None, None) => match self.channels.get_mut(&send.channel) {
                Some(entry) => entry,
                // From the backend to a channel nobody is in: no one to number it for.
                None => return self.send_to_empty_channel(send, retention_ms).await,
            },
        };
        // Mutes hold in the region that accepted the message.
        if send.origin.is_none()
            && let Some(until) = entry.mutes.get(&send.from).copied()
        {
            if until > unix_ms() {
                return Err(muted(until));
            }
            entry.mutes.remove(&send.from);
        }
        let seq = entry.last_seq + 1;
        if seq > entry.reserved_seq {
            let reserve = entry.last_seq + SEQUENCE_BLOCK;
            store
                .set_high_water(&send.channel.app, &send.channel.channel, reserve)
                .await
                .map_err(storage_error)?;
            entry.reserved_seq = reserve;
        }
        let (message_id, server_received_ts) = match &send.origin {
            Some(origin) => (origin.message_id, origin.server_received_ts),
            None => {
                let now = unix_ms();
                (self.message_ids.next(now as u64), now)
            }
        };
        if send.enable_history {
            let stored = v1::HistoryMessage {
                message_id: message_id.0,
                from: send.from.to_string(),
                message: Some(send.message.clone()),
                server_received_ts,
                seq,
            };
            let conversation = Conversation::Channel(send.channel.channel.clone());
            store
                .append(&send.channel.app, &conversation, stored, retention_ms)
                .await
                .map_err(storage_error)?;
        }
        entry.last_seq = seq;
        // Accepted here and wanted elsewhere: it crosses (what crossed in never goes back out).
        let crossing = (send.origin.is_none() && !entry.remote_regions.is_empty())
            .then(|| send.message.clone());
        let frame = Arc::new(
            SharedFrame::event(EventKind::ChannelMessage(v1::ChannelMessage {
                channel_id: send.channel.channel.to_string(),
                member_id: send.from.to_string(),
                message: Some(send.message),
                message_id: message_id.0,
                server_received_ts,
                seq,
            }))
            .with_trace(send.trace.clone()),
        );
        entry.recent.push_back((seq, frame.clone()));
        while entry.recent.len() > recovery_window {
            entry.recent.pop_front();
        }
        let entry = &self.channels[&send.channel];
        self.fan_out_shared(&entry.membership, send.session, frame);
        if let Some(message) = crossing {
            self.regions.publish(RegionRecord::Message {
                channel: send.channel,
                from: send.from,
                message,
                enable_history: send.enable_history,
                message_id,
                server_received_ts,
                trace: send.trace,
            });
        }
        Ok(ChannelSent {
            message_id,
            server_received_ts,
            seq,
        })
    }

    /// The other region `user` has sessions in, by the region directory (none without other
    /// regions, or when the directory cannot answer).
    async fn region_of(&self, user: &UserKey) -> Option<String> {
        if !self.regions.spans_regions() {
            return None;
        }
        match self.store.user_regions(&user.app, &user.uid).await {
            Ok(regions) => regions.into_iter().next(),
            Err(error) => {
                tracing::warn!(%error, "the region directory is unavailable");
                None
            }
        }
    }

    /// Another region has `members` in `channel` (none: it no longer wants its messages). A
    /// region that has just taken the channel up (`fresh`) is told how many members this one
    /// has, and what the channel's attributes are. Members here hear the new total.
    async fn region_interest(&mut self, channel: ChannelKey, region: String, interest: Interest) {
        // Without members here there is nothing to send them, and nothing to answer: this
        // region announces itself when it gets a member.
        let Some(entry) = self.channels.get_mut(&channel) else {
            return;
        };
        let before = entry.remote_regions.get(&region).copied();
        if interest.members > 0 {
            entry
                .remote_regions
                .insert(region.clone(), interest.members);
        } else {
            entry.remote_regions.remove(&region);
        }
        if before != entry.remote_regions.get(&region).copied() {
            self.counts_changed.insert(channel.clone());
        }
        if interest.fresh {
            let members = entry.local_members();
            entry.members_told = Some(members);
            self.regions.publish(RegionRecord::Interest {
                channel: channel.clone(),
                interest: Interest {
                    members,
                    fresh: false,
                },
            });
            match self.store.get(&channel.app, &channel.channel).await {
                Ok(Some(record)) => self.regions.publish(RegionRecord::Attributes {
                    channel,
                    attributes: record.attributes,
                    notify_members: false,
                }),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "channel attributes not sent to a new region")
                }
            }
        }
    }

    /// A backend's message to a channel without members: kept in history when asked, with
    /// sequence number 0 (sequence numbers count what members were sent).
    async fn send_to_empty_channel(
        &mut self,
        send: ChannelSend,
        retention_ms: i64,
    ) -> Result<ChannelSent, Error> {
        let server_received_ts = unix_ms();
        let scope = Scope::Channel(send.channel.channel.clone());
        let mute = self
            .store
            .restriction(&send.channel.app, &scope, &send.from, server_received_ts)
            .await
            .map_err(storage_error)?;
        if let Some(mute) = mute {
            return Err(muted(mute.until_ms));
        }
        let message_id = self.message_ids.next(server_received_ts as u64);
        if send.enable_history {
            let stored = v1::HistoryMessage {
                message_id: message_id.0,
                from: send.from.to_string(),
                message: Some(send.message),
                server_received_ts,
                seq: 0,
            };
            let conversation = Conversation::Channel(send.channel.channel.clone());
            self.store
                .append(&send.channel.app, &conversation, stored, retention_ms)
                .await
                .map_err(storage_error)?;
        }
        Ok(ChannelSent {
            message_id,
            server_received_ts,
            seq: 0,
        })
    }

    fn members(
        &self,
        key: &ChannelKey,
        asker: Option<&(UserId, SessionRef)>,
    ) -> Result<Vec<UserId>, Error> {
        let entry = self.channels.get(key);
        let listed = |entry: &ChannelEntry| {
            entry
                .membership
                .uids()
                .take(MAX_MEMBERS_LISTED)
                .cloned()
                .collect()
        };
        match asker {
            // The backend: any channel, empty if nobody is in it.
            None => Ok(entry.map_or_else(Vec::new, listed)),
            Some((uid, session)) => entry
                .filter(|entry| entry.membership.is_active(uid, *session))
                .map(listed)
                .ok_or_else(|| Error::new(ErrorCode::NotJoined, "not joined to this channel")),
        }
    }

    /// MemberLeft for `uids` (if the channel is small enough), then forget an empty channel.
    async fn announce_left(&mut self, key: &ChannelKey, uids: &[UserId], reason: &'static str) {
        for uid in uids {
            self.emit(
                &key.app,
                AppEventKind::Leave {
                    channel: key.channel.clone(),
                    uid: uid.clone(),
                    reason,
                },
            );
        }
        self.counts_changed.insert(key.clone());
        let limits = self.limits(&key.app);
        let entry = &self.channels[key];
        // Announced when the channel was at most at the threshold before these members left.
        if entry.membership.member_count() + uids.len() <= limits.member_events_threshold {
            for uid in uids {
                let frame = SharedFrame::event(EventKind::MemberLeft(v1::MemberLeft {
                    channel_id: key.channel.to_string(),
                    member_id: uid.to_string(),
                }));
                self.fan_out(&entry.membership, None, frame);
            }
        }
        if entry.membership.is_empty() {
            self.channels.remove(key);
            self.regions.publish(RegionRecord::Interest {
                channel: key.clone(),
                interest: Interest {
                    members: 0,
                    fresh: false,
                },
            });
            self.counts_changed.remove(key);
            self.lingering.remove(key);
            let expires_at = unix_ms() + limits.channel_attributes_ttl.as_millis() as i64;
            if let Err(error) = self.set_attribute_expiry(key, expires_at).await {
                tracing::warn!(%error, channel = %key.channel, "could not schedule attribute expiry");
            }
        }
    }

    // ---- attributes ------------------------------------------------------------------------

    /// The user's owner is the only writer of its attributes, so read-apply-write is enough.
    async fn update_user_attributes(
        &mut self,
        user: UserKey,
        op: &AttributeOp,
    ) -> Result<(), Error> {
        if self
            .users
            .get(&user)
            .is_none_or(|entry| entry.sessions.is_empty())
        {
            return Err(Error::new(
                ErrorCode::NotLoggedIn,
                "the user has no session",
            ));
        }
        let stored = self
            .store
            .user_attributes(&user.app, &user.uid)
            .await
            .map_err(storage_error)?;
        let current: BTreeMap<String, String> = stored.attributes.into_iter().collect();
        let next = op.apply(
            &current,
            MAX_USER_TOTAL_BYTES,
            String::as_str,
            str::to_owned,
        )?;
        self.store
            .set_user_attributes(
                &user.app,
                &user.uid,
                StoredUserAttributes {
                    attributes: next.into_iter().collect(),
                },
            )
            .await
            .map_err(storage_error)
    }

    async fn update_channel_attributes(
        &mut self,
        key: &ChannelKey,
        by: &UserId,
        op: &AttributeOp,
        notify_members: bool,
    ) -> Result<(), Error> {
        let has_members = self.channels.contains_key(key);
        let ttl = self.limits(&key.app).channel_attributes_ttl;
        // Read, apply, compare-and-set: another writer in between (another owner during a
        // hand-over) makes the write start over, so the limits hold across writers.
        for _ in 0..CAS_ATTEMPTS {
            let current_record = self
                .store
                .get(&key.app, &key.channel)
                .await
                .map_err(storage_error)?;
            let current: BTreeMap<String, v1::ChannelAttribute> = current_record
                .iter()
                .flat_map(|record| record.attributes.iter().cloned())
                .map(|attribute| (attribute.key.clone(), attribute))
                .collect();
            let now_ms = unix_ms();
            let next = op.apply(
                &current,
                MAX_CHANNEL_TOTAL_BYTES,
                |attribute| attribute.value.as_str(),
                |value| v1::ChannelAttribute {
                    key: String::new(),
                    value: value.to_owned(),
                    last_update_user_id: by.to_string(),
                    last_update_ts: now_ms,
                },
            )?;
            let attributes: Vec<v1::ChannelAttribute> = next
                .into_iter()
                .map(|(key, mut attribute)| {
                    attribute.key = key;
                    attribute
                })
                .collect();
            let record = StoredChannelAttributes {
                attributes: attributes.clone(),
                expires_at_ms: if has_members {
                    0
                } else {
                    now_ms + ttl.as_millis() as i64
                },
            };
            let swapped = self
                .store
                .replace(&key.app, &key.channel, current_record, record)
                .await
                .map_err(storage_error)?;
            if !swapped {
                continue;
            }
            if let Some(entry) = self.channels.get(key)
                && !entry.remote_regions.is_empty()
            {
                self.regions.publish(RegionRecord::Attributes {
                    channel: key.clone(),
                    attributes: attributes.clone(),
                    notify_members,
                });
            }
            if notify_members && let Some(entry) = self.channels.get(key) {
                let frame =
                    SharedFrame::event(EventKind::AttributesUpdated(v1::AttributesUpdated {
                        channel_id: key.channel.to_string(),
                        attributes,
                    }));
                self.fan_out(&entry.membership, None, frame);
            }
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::Unavailable,
            "the channel attributes kept changing, retry",
        ))
    }

    /// Another region changed the channel's attributes: its set replaces this region's (the
    /// last change to arrive wins), and members are told if asked.
    async fn region_attributes(
        &mut self,
        key: &ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
    ) -> Result<(), Error> {
        let ttl = self.limits(&key.app).channel_attributes_ttl;
        let expires_at_ms = if self.channels.contains_key(key) {
            0
        } else {
            unix_ms() + ttl.as_millis() as i64
        };
        let record = StoredChannelAttributes {
            attributes: attributes.clone(),
            expires_at_ms,
        };
        self.store
            .put(&key.app, &key.channel, record)
            .await
            .map_err(storage_error)?;
        if notify_members && let Some(entry) = self.channels.get(key) {
            let frame = SharedFrame::event(EventKind::AttributesUpdated(v1::AttributesUpdated {
                channel_id: key.channel.to_string(),
                attributes,
            }));
            self.fan_out(&entry.membership, None, frame);
        }
        Ok(())
    }

    /// Sets when a channel's stored attributes expire (0: never), if it has any.
    async fn set_attribute_expiry(
        &self,
        key: &ChannelKey,
        expires_at_ms: i64,
    ) -> Result<(), Error> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .store
                .get(&key.app, &key.channel)
                .await
                .map_err(storage_error)?;
            let Some(record) = current.clone() else {
                return Ok(());
            };
            if record.expires_at_ms == expires_at_ms {
                return Ok(());
            }
            let updated = StoredChannelAttributes {
                expires_at_ms,
                ..record
            };
            if self
                .store
                .replace(&key.app, &key.channel, current, updated)
                .await
                .map_err(storage_error)?
            {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorCode::Unavailable,
            "the channel attributes kept changing, retry",
        ))
    }

    // ---- invitations -----------------------------------------------------------------------

    /// Starts an invitation to a callee with sessions here or, `elsewhere`, in another region
    /// (its state and timers stay here; the callee's events cross).
    fn send_invitation(
        &mut self,
        send: InvitationSend,
        elsewhere: Option<String>,
    ) -> Result<u64, Error> {
        let callee = UserKey {
            app: send.caller.app.clone(),
            uid: send.callee.clone(),
        };
        let entry = self.users.entry(callee.clone()).or_default();
        if let Some(restore) = send.restore {
            // Known already (this owner did not change): nothing to rebuild.
            if entry.invitations.contains_key(&restore.invitation_id) {
                return Ok(restore.invitation_id);
            }
            let now = now();
            let sent_at = now.checked_sub(restore.age).unwrap_or(now);
            let callee_online = !entry.sessions.is_empty() || elsewhere.is_some();
            let (machine, notices) = Invitation::restore(
                now,
                sent_at,
                restore.received,
                callee_online,
                self.config.invitation_timers,
            );
            let id = restore.invitation_id;
            self.start_invitation(callee, id, machine, &notices, send, elsewhere);
            return Ok(id);
        }
        if entry
            .invitations
            .values()
            .any(|pending| pending.caller == send.caller.uid && !pending.machine.is_over())
        {
            return Err(Error::new(
                ErrorCode::InvitationAlreadySent,
                "an invitation to this user is already in progress",
            ));
        }
        let callee_online = !entry.sessions.is_empty() || elsewhere.is_some();
        let invitation_id = self.message_ids.next(unix_ms() as u64).0;
        if !callee_online {
            self.emit(
                &callee.app,
                AppEventKind::InvitationToOffline {
                    caller: send.caller.uid.clone(),
                    callee: callee.uid.clone(),
                    invitation_id,
                    content: send.content.clone(),
                    channel_id: send.channel_id.clone(),
                },
            );
        }
        let (machine, notices) =
            Invitation::send(now(), callee_online, self.config.invitation_timers);
        self.start_invitation(callee, invitation_id, machine, &notices, send, elsewhere);
        Ok(invitation_id)
    }

    /// Keeps a new (or rebuilt) invitation to `callee`, starts its timers and tells the clients.
    fn start_invitation(
        &mut self,
        callee: UserKey,
        invitation_id: u64,
        machine: Invitation,
        notices: &[Notice],
        send: InvitationSend,
        callee_region: Option<String>,
    ) {
        self.users
            .entry(callee.clone())
            .or_default()
            .invitations
            .insert(
                invitation_id,
                PendingInvitation {
                    machine,
                    caller: send.caller.uid,
                    caller_session: send.caller_session,
                    content: send.content,
                    channel_id: send.channel_id,
                    response: String::new(),
                    ended_at: None,
                    callee_region,
                },
            );
        self.timed_users.insert(callee.clone());
        self.notify_invitation(&callee, invitation_id, notices);
    }

    /// Runs `call` on one invitation to `callee`, tells the clients what follows, and forgets the
    /// invitation once it has ended.
    fn invitation_call(
        &mut self,
        callee: &UserKey,
        invitation_id: u64,
        call: impl FnOnce(&mut PendingInvitation) -> Result<Vec<Notice>, Error>,
    ) -> Result<(), Error> {
        let pending = self
            .users
            .get_mut(callee)
            .and_then(|entry| entry.invitations.get_mut(&invitation_id))
            .ok_or_else(not_started)?;
        let notices = call(pending)?;
        self.notify_invitation(callee, invitation_id, &notices);
        Ok(())
    }

    fn notify_invitation(&mut self, callee: &UserKey, invitation_id: u64, notices: &[Notice]) {
        let Some(entry) = self.users.get(callee) else {
            return;
        };
        let Some(pending) = entry.invitations.get(&invitation_id) else {
            return;
        };
        let callee_sessions: Vec<SessionRef> =
            entry.sessions.iter().map(|known| known.session).collect();
        let caller_id = pending.caller.to_string();
        let callee_id = callee.uid.to_string();
        for notice in notices {
            let (to_caller, to_callee) = match *notice {
                Notice::DeliverToCallee => {
                    let received =
                        EventKind::RemoteInvitationReceived(v1::RemoteInvitationReceived {
                            invitation_id,
                            caller_id: caller_id.clone(),
                            content: pending.content.clone(),
                            channel_id: pending.channel_id.clone(),
                        });
                    if pending.callee_region.is_some() {
                        self.regions.publish(RegionRecord::CalleeEvent {
                            callee: callee.clone(),
                            event: v1::Event {
                                kind: Some(received),
                            },
                            receipt: Some(invitation_id),
                        });
                        continue;
                    }
                    let frame = Arc::new(SharedFrame::event(received));
                    for session in &callee_sessions {
                        let Some(edge) = self.edges.get(session.edge) else {
                            continue;
                        };
                        let receipt = edge.deliver_peer(
                            session.session,
                            MessageId(invitation_id),
                            frame.clone(),
                        );
                        let self_tx = self.self_tx.clone();
                        let callee = callee.clone();
                        tokio::spawn(async move {
                            if receipt.await.is_ok()
                                && let Some(self_tx) = self_tx.upgrade()
                            {
                                let _ = self_tx
                                    .send(Command::InvitationReceipt {
                                        callee,
                                        invitation_id,
                                    })
                                    .await;
                            }
                        });
                    }
                    continue;
                }
                Notice::ReceivedByPeer => (
                    Some(EventKind::LocalInvitationReceivedByPeer(
                        v1::LocalInvitationReceivedByPeer {
                            invitation_id,
                            callee_id: callee_id.clone(),
                        },
                    )),
                    None,
                ),
                Notice::Accepted => (
                    Some(EventKind::LocalInvitationAccepted(
                        v1::LocalInvitationAccepted {
                            invitation_id,
                            callee_id: callee_id.clone(),
                            response: pending.response.clone(),
                        },
                    )),
                    Some(EventKind::RemoteInvitationAccepted(
                        v1::RemoteInvitationAccepted {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        },
                    )),
                ),
                Notice::Refused => (
                    Some(EventKind::LocalInvitationRefused(
                        v1::LocalInvitationRefused {
                            invitation_id,
                            callee_id: callee_id.clone(),
                            response: pending.response.clone(),
                        },
                    )),
                    Some(EventKind::RemoteInvitationRefused(
                        v1::RemoteInvitationRefused {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        },
                    )),
                ),
                Notice::Canceled => (
                    Some(EventKind::LocalInvitationCanceled(
                        v1::LocalInvitationCanceled {
                            invitation_id,
                            callee_id: callee_id.clone(),
                        },
                    )),
                    pending.machine.was_delivered().then(|| {
                        EventKind::RemoteInvitationCanceled(v1::RemoteInvitationCanceled {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        })
                    }),
                ),
                Notice::Failed(failure) => {
                    let reason = failure_reason(failure) as i32;
                    (
                        Some(EventKind::LocalInvitationFailure(
                            v1::LocalInvitationFailure {
                                invitation_id,
                                callee_id: callee_id.clone(),
                                reason,
                            },
                        )),
                        pending.machine.was_delivered().then(|| {
                            EventKind::RemoteInvitationFailure(v1::RemoteInvitationFailure {
                                invitation_id,
                                caller_id: caller_id.clone(),
                                reason,
                            })
                        }),
                    )
                }
            };
            if let Some(event) = to_caller {
                self.send_to([pending.caller_session], SharedFrame::event(event));
            }
            match (to_callee, &pending.callee_region) {
                (Some(event), Some(_)) => self.regions.publish(RegionRecord::CalleeEvent {
                    callee: callee.clone(),
                    event: v1::Event { kind: Some(event) },
                    receipt: None,
                }),
                (Some(event), None) => {
                    self.send_to(callee_sessions.clone(), SharedFrame::event(event));
                }
                (None, _) => {}
            }
        }
        if pending.machine.is_over()
            && let Some(pending) = self
                .users
                .get_mut(callee)
                .and_then(|entry| entry.invitations.get_mut(&invitation_id))
        {
            pending.ended_at.get_or_insert_with(now);
        }
    }

    /// An event of an invitation that lives in `region`, for the callee's sessions here. The
    /// invitation itself (`receipt`) is acknowledged back to that region, and the invitation
    /// remembered so the callee's answers go there.
    fn region_callee_event(
        &mut self,
        callee: UserKey,
        region: String,
        event: v1::Event,
        receipt: Option<u64>,
    ) {
        let Some(kind) = event.kind else {
            return;
        };
        let sessions: Vec<SessionRef> = self
            .users
            .get(&callee)
            .map(|entry| entry.sessions.iter().map(|known| known.session).collect())
            .unwrap_or_default();
        let Some(invitation_id) = receipt else {
            self.send_to(sessions, SharedFrame::event(kind));
            return;
        };
        let kept_until = now() + REMOTE_INVITATION_KEPT;
        self.remote_invitations
            .insert((callee.clone(), invitation_id), (region, kept_until));
        let frame = Arc::new(SharedFrame::event(kind));
        for session in sessions {
            let Some(edge) = self.edges.get(session.edge) else {
                continue;
            };
            let acknowledged =
                edge.deliver_peer(session.session, MessageId(invitation_id), frame.clone());
            let (regions, callee) = (self.regions.clone(), callee.clone());
            tokio::spawn(async move {
                if acknowledged.await.is_ok() {
                    regions.publish(RegionRecord::InvitationReceipt {
                        callee,
                        invitation_id,
                    });
                }
            });
        }
    }

    // ---- moderation ------------------------------------------------------------------------

    async fn moderate(&mut self, action: Moderation) -> Result<bool, Error> {
        let now_ms = unix_ms();
        match action {
            Moderation::Ban {
                user,
                until_ms,
                reason,
            } => {
                let ban = Restriction {
                    uid: user.uid.to_string(),
                    since_ms: now_ms,
                    until_ms,
                    reason,
                };
                self.store
                    .restrict(&user.app, &Scope::Login, ban)
                    .await
                    .map_err(storage_error)?;
                if let Some(entry) = self.users.get_mut(&user) {
                    entry.logout_reason = Some("banned");
                    for known in &entry.sessions {
                        if let Some(edge) = self.edges.get(known.session.edge) {
                            edge.end_session(known.session.session, Reason::BannedByServer);
                        }
                    }
                }
                Ok(true)
            }
            Moderation::Unban { user } => self
                .store
                .lift(&user.app, &Scope::Login, &user.uid, now_ms)
                .await
                .map_err(storage_error),
            Moderation::Mute {
                channel,
                uid,
                until_ms,
                reason,
            } => {
                let mute = Restriction {
                    uid: uid.to_string(),
                    since_ms: now_ms,
                    until_ms,
                    reason: reason.clone(),
                };
                let scope = Scope::Channel(channel.channel.clone());
                self.store
                    .restrict(&channel.app, &scope, mute)
                    .await
                    .map_err(storage_error)?;
                self.tell_muted(&channel, uid, Some((until_ms, reason)));
                Ok(true)
            }
            Moderation::Unmute { channel, uid } => {
                let scope = Scope::Channel(channel.channel.clone());
                let lifted = self
                    .store
                    .lift(&channel.app, &scope, &uid, now_ms)
                    .await
                    .map_err(storage_error)?;
                if lifted {
                    self.tell_muted(&channel, uid, None);
                }
                Ok(lifted)
            }
            Moderation::Kick {
                channel,
                uid,
                reason,
            } => {
                let Some(entry) = self.channels.get_mut(&channel) else {
                    return Ok(false);
                };
                let Some(sessions) = entry.membership.remove(&uid) else {
                    return Ok(false);
                };
                let frame =
                    SharedFrame::event(EventKind::KickedFromChannel(v1::KickedFromChannel {
                        channel_id: channel.channel.to_string(),
                        reason,
                    }));
                self.send_to(sessions, frame);
                self.announce_left(&channel, &[uid], "kicked").await;
                Ok(true)
            }
        }
    }

    /// Records a mute (its end and reason) or its lifting (`None`) in the live channel, and
    /// tells its members.
    fn tell_muted(&mut self, channel: &ChannelKey, uid: UserId, mute: Option<(i64, String)>) {
        let Some(entry) = self.channels.get_mut(channel) else {
            return;
        };
        match &mute {
            Some((until, _)) => entry.mutes.insert(uid.clone(), *until),
            None => entry.mutes.remove(&uid),
        };
        let frame = SharedFrame::event(EventKind::MemberMuted(v1::MemberMuted {
            channel_id: channel.channel.to_string(),
            member_id: uid.to_string(),
            muted: mute.is_some(),
            until_ts: mute.as_ref().map_or(0, |(until, _)| *until),
            reason: mute.map(|(_, reason)| reason).unwrap_or_default(),
        }));
        let entry = &self.channels[channel];
        self.fan_out(&entry.membership, None, frame);
    }

    fn emit(&mut self, app: &parley_core::ids::AppId, kind: AppEventKind) {
        let ts_ms = unix_ms();
        self.events.emit(AppEvent {
            app: app.clone(),
            id: self.message_ids.next(ts_ms as u64),
            ts_ms,
            kind,
        });
    }

    // ---- timers ----------------------------------------------------------------------------

    /// Treats every session of edge `node` as a lost connection: members linger for their
    /// grace period (a client back through another edge in time causes no churn), users turn
    /// unreachable, then offline.
    async fn edge_gone(&mut self, node: NodeId) {
        let in_channels: Vec<(ChannelKey, UserId, SessionRef)> = self
            .channels
            .iter()
            .flat_map(|(key, entry)| {
                entry
                    .membership
                    .sessions_on(node)
                    .into_iter()
                    .map(move |(uid, session)| (key.clone(), uid, session))
            })
            .collect();
        for (key, uid, session) in in_channels {
            let _ = self
                .leave(key, uid, session, LeaveReason::ConnectionLost)
                .await;
        }
        let sessions: Vec<(UserKey, SessionRef)> = self
            .users
            .iter()
            .flat_map(|(user, entry)| {
                entry
                    .sessions
                    .iter()
                    .filter(|known| known.session.edge == node)
                    .map(move |known| (user.clone(), known.session))
            })
            .collect();
        for (user, session) in sessions {
            self.close_session(&user, session, LeaveReason::ConnectionLost)
                .await;
        }
    }

    fn forget_unowned(&mut self, ring: &Ring, me: NodeId) {
        let before = (self.users.len(), self.channels.len());
        self.users
            .retain(|key, _| ring.user_owner(&key.app, &key.uid) == Some(me));
        self.channels
            .retain(|key, _| ring.channel_owner(&key.app, &key.channel) == Some(me));
        let (users, channels) = (&self.users, &self.channels);
        self.timed_users.retain(|key| users.contains_key(key));
        self.lingering.retain(|key| channels.contains_key(key));
        self.counts_changed.retain(|key| channels.contains_key(key));
        let dropped = (before.0 - self.users.len(), before.1 - self.channels.len());
        if dropped != (0, 0) {
            tracing::info!(
                users = dropped.0,
                channels = dropped.1,
                epoch = ring.epoch(),
                "handed keys over to their new owners"
            );
        }
    }

    async fn on_tick(&mut self, now: Instant) {
        self.remote_peers.retain(|_, (_, until)| *until > now);
        self.remote_invitations.retain(|_, (_, until)| *until > now);
        let lingering: Vec<ChannelKey> = self.lingering.iter().cloned().collect();
        for key in lingering {
            let Some(entry) = self.channels.get_mut(&key) else {
                self.lingering.remove(&key);
                continue;
            };
            let left = entry.membership.expire(now);
            if entry.membership.next_expiry().is_none() {
                self.lingering.remove(&key);
            }
            if !left.is_empty() {
                self.announce_left(&key, &left, "connection_lost").await;
            }
        }

        let interval = self.config.member_count_interval;
        let due: Vec<ChannelKey> = self
            .counts_changed
            .iter()
            .filter(|key| {
                self.channels
                    .get(*key)
                    .and_then(|entry| entry.count_sent_at)
                    .is_none_or(|sent_at| now.duration_since(sent_at) >= interval)
            })
            .cloned()
            .collect();
        for key in due {
            self.counts_changed.remove(&key);
            let Some(entry) = self.channels.get_mut(&key) else {
                continue;
            };
            entry.count_sent_at = Some(now);
            // The other regions hear of a change in this region's count (only of a change: a
            // count heard from them must not echo back).
            let members = entry.local_members();
            if !entry.remote_regions.is_empty() && entry.members_told != Some(members) {
                entry.members_told = Some(members);
                self.regions.publish(RegionRecord::Interest {
                    channel: key.clone(),
                    interest: Interest {
                        members,
                        fresh: false,
                    },
                });
            }
            let frame = SharedFrame::event(EventKind::MemberCountUpdated(v1::MemberCountUpdated {
                channel_id: key.channel.to_string(),
                member_count: entry.all_members(),
            }));
            let entry = &self.channels[&key];
            self.fan_out(&entry.membership, None, frame);
        }

        let timed: Vec<UserKey> = self.timed_users.iter().cloned().collect();
        for user in timed {
            let Some(entry) = self.users.get_mut(&user) else {
                self.timed_users.remove(&user);
                continue;
            };
            let gone_offline = entry.lost_until.is_some_and(|until| now >= until);
            if gone_offline {
                // The lost connection did not come back: OFFLINE, and attributes go.
                entry.lost_until = None;
            }
            let keep_ended = self.config.invitation_timers.answer;
            entry.invitations.retain(|_, pending| {
                pending
                    .ended_at
                    .is_none_or(|ended_at| now.duration_since(ended_at) < keep_ended)
            });
            let due: Vec<u64> = entry
                .invitations
                .iter()
                .filter(|(_, pending)| pending.machine.next_deadline().is_some_and(|at| now >= at))
                .map(|(id, _)| *id)
                .collect();
            let still_timed = entry.lost_until.is_some() || !entry.invitations.is_empty();
            for invitation_id in due {
                let _ = self.invitation_call(&user, invitation_id, |pending| {
                    Ok(pending.machine.on_time(now))
                });
            }
            if !still_timed {
                self.timed_users.remove(&user);
            }
            self.announce_presence(&user);
            if gone_offline {
                self.clear_user_attributes(&user).await;
            }
        }
    }

    // ---- delivery --------------------------------------------------------------------------

    /// Sends `frame` to the channel's live sessions, one call per edge.
    fn fan_out(&self, membership: &Membership, except: Option<SessionRef>, frame: SharedFrame) {
        self.fan_out_shared(membership, except, Arc::new(frame));
    }

    fn fan_out_shared(
        &self,
        membership: &Membership,
        except: Option<SessionRef>,
        frame: Arc<SharedFrame>,
    ) {
        self.send_shared(membership.active_sessions(except), frame);
    }

    fn send_to(&self, sessions: impl IntoIterator<Item = SessionRef>, frame: SharedFrame) {
        self.send_shared(sessions, Arc::new(frame));
    }

    /// Delivers to any sessions, grouped into one call per edge.
    fn send_shared(&self, sessions: impl IntoIterator<Item = SessionRef>, frame: Arc<SharedFrame>) {
        let mut by_edge: BTreeMap<NodeId, Vec<SessionId>> = BTreeMap::new();
        for session in sessions {
            by_edge
                .entry(session.edge)
                .or_default()
                .push(session.session);
        }
        for (node, sessions) in by_edge {
            match self.edges.get(node) {
                Some(edge) => edge.deliver(&sessions, frame.clone()),
                None => tracing::warn!(edge = node.0, "no route to edge, dropping delivery"),
            }
        }
    }

    fn limits(&self, app: &parley_core::ids::AppId) -> Limits {
        self.apps
            .get(app.as_str())
            .map(|app| app.limits.clone())
            .unwrap_or_default()
    }
}

fn muted(until_ms: i64) -> Error {
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

/// The instant used for timers: tokio's clock, so tests can pause time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
