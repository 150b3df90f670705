//! One shard task: owns a share of the channels and users and is the only code that touches them.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use parley_core::Error;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::channel::Departure;
use parley_core::channel::Membership;
use parley_core::ids::MessageId;
use parley_core::ids::MessageIdGenerator;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::limits::Limits;
use parley_core::limits::MAX_MEMBERS_LISTED;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::api::ChannelKey;
use crate::api::ChannelSend;
use crate::api::ChannelSent;
use crate::api::LeaveReason;
use crate::api::OpenSession;
use crate::api::PeerSend;
use crate::api::UserKey;
use crate::owner::Edges;
use crate::owner::OwnerConfig;

type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    OpenSession {
        open: OpenSession,
        reply: Reply<()>,
    },
    CloseSession {
        user: UserKey,
        session: SessionRef,
        reply: Reply<()>,
    },
    SendPeer {
        send: PeerSend,
        reply: Reply<PeerRouted>,
    },
    Join {
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reply: Reply<Result<(), Error>>,
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
        uid: UserId,
        session: SessionRef,
        reply: Reply<Result<Vec<UserId>, Error>>,
    },
    MemberCount {
        channel: ChannelKey,
        reply: Reply<u32>,
    },
}

/// A peer message handed to the receiver's sessions.
pub(crate) struct PeerRouted {
    pub message_id: MessageId,
    pub server_received_ts: i64,
    /// One per receiving session; empty when the receiver is offline.
    pub receipts: Vec<oneshot::Receiver<()>>,
}

#[derive(Default)]
struct ChannelEntry {
    membership: Membership,
    last_seq: u64,
    count_sent_at: Option<Instant>,
}

pub(crate) struct Shard {
    config: OwnerConfig,
    message_ids: MessageIdGenerator,
    apps: Arc<AppDirectory>,
    edges: Arc<Edges>,
    users: HashMap<UserKey, Vec<SessionRef>>,
    channels: HashMap<ChannelKey, ChannelEntry>,
    /// Channels with lingering sessions, checked on every tick.
    lingering: HashSet<ChannelKey>,
    /// Channels whose member count changed since their last MemberCountUpdated.
    counts_changed: HashSet<ChannelKey>,
}

impl Shard {
    pub(crate) fn new(
        config: OwnerConfig,
        generator: u16,
        apps: Arc<AppDirectory>,
        edges: Arc<Edges>,
    ) -> Self {
        Shard {
            config,
            message_ids: MessageIdGenerator::new(generator),
            apps,
            edges,
            users: HashMap::new(),
            channels: HashMap::new(),
            lingering: HashSet::new(),
            counts_changed: HashSet::new(),
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
                    Some(command) => self.handle(command),
                    None => break,
                },
                _ = tick.tick() => self.on_tick(now()),
            }
        }
    }

    fn handle(&mut self, command: Command) {
        // A caller that went away no longer wants its reply, so failed sends are ignored.
        match command {
            Command::OpenSession { open, reply } => {
                self.open_session(open);
                let _ = reply.send(());
            }
            Command::CloseSession {
                user,
                session,
                reply,
            } => {
                self.close_session(&user, session);
                let _ = reply.send(());
            }
            Command::SendPeer { send, reply } => {
                let _ = reply.send(self.send_peer(send));
            }
            Command::Join {
                channel,
                uid,
                session,
                reply,
            } => {
                let _ = reply.send(self.join(channel, uid, session));
            }
            Command::Leave {
                channel,
                uid,
                session,
                reason,
                reply,
            } => {
                let _ = reply.send(self.leave(channel, uid, session, reason));
            }
            Command::SendChannel { send, reply } => {
                let _ = reply.send(self.send_channel(send));
            }
            Command::Members {
                channel,
                uid,
                session,
                reply,
            } => {
                let _ = reply.send(self.members(&channel, &uid, session));
            }
            Command::MemberCount { channel, reply } => {
                let count = self
                    .channels
                    .get(&channel)
                    .map_or(0, |entry| entry.membership.member_count());
                let _ = reply.send(u32::try_from(count).unwrap_or(u32::MAX));
            }
        }
    }

    fn open_session(&mut self, open: OpenSession) {
        let sessions = self.users.entry(open.user).or_default();
        if open.multi_login == MultiLogin::Replace {
            for old in sessions.drain(..) {
                if let Some(edge) = self.edges.get(old.edge) {
                    edge.end_session(old.session, Reason::RemoteLogin);
                }
            }
        }
        sessions.push(open.session);
    }

    fn close_session(&mut self, user: &UserKey, session: SessionRef) {
        if let Some(sessions) = self.users.get_mut(user) {
            sessions.retain(|existing| *existing != session);
            if sessions.is_empty() {
                self.users.remove(user);
            }
        }
    }

    fn send_peer(&mut self, send: PeerSend) -> PeerRouted {
        let server_received_ts = now_ms();
        let message_id = self.message_ids.next(server_received_ts as u64);
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to,
        };
        let sessions = self.users.get(&receiver).cloned().unwrap_or_default();
        let frame = Arc::new(SharedFrame::event(EventKind::MessageFromPeer(
            v1::MessageFromPeer {
                peer_id: send.from.uid.to_string(),
                message: Some(send.message),
                message_id: message_id.0,
                server_received_ts,
                is_offline_message: false,
            },
        )));
        let receipts = sessions
            .iter()
            .filter_map(|session| {
                let edge = self.edges.get(session.edge)?;
                Some(edge.deliver_peer(session.session, message_id, frame.clone()))
            })
            .collect();
        PeerRouted {
            message_id,
            server_received_ts,
            receipts,
        }
    }

    fn join(&mut self, key: ChannelKey, uid: UserId, session: SessionRef) -> Result<(), Error> {
        let announce_threshold = self.limits(&key).member_events_threshold;
        let entry = self.channels.entry(key.clone()).or_default();
        let is_new_member = entry.membership.join(&uid, session)?;
        if is_new_member {
            self.counts_changed.insert(key.clone());
            let entry = &self.channels[&key];
            if entry.membership.member_count() <= announce_threshold {
                let frame = SharedFrame::event(EventKind::MemberJoined(v1::MemberJoined {
                    channel_id: key.channel.to_string(),
                    member_id: uid.to_string(),
                }));
                self.fan_out(&entry.membership, Some(session), frame);
            }
        }
        Ok(())
    }

    fn leave(
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
        let entry = self.channels.get_mut(&key).ok_or_else(|| {
            Error::new(
                parley_core::ErrorCode::NotJoined,
                "not joined to this channel",
            )
        })?;
        let left = entry.membership.leave(&uid, session, departure)?;
        if departure != Departure::Now {
            self.lingering.insert(key.clone());
        }
        if left {
            self.announce_left(&key, &[uid]);
        }
        Ok(())
    }

    fn send_channel(&mut self, send: ChannelSend) -> Result<ChannelSent, Error> {
        let entry = self
            .channels
            .get_mut(&send.channel)
            .filter(|entry| entry.membership.is_active(&send.from, send.session))
            .ok_or_else(|| {
                Error::new(
                    parley_core::ErrorCode::NotJoined,
                    "not joined to this channel",
                )
            })?;
        entry.last_seq += 1;
        let seq = entry.last_seq;
        let server_received_ts = now_ms();
        let message_id = self.message_ids.next(server_received_ts as u64);
        let frame = SharedFrame::event(EventKind::ChannelMessage(v1::ChannelMessage {
            channel_id: send.channel.channel.to_string(),
            member_id: send.from.to_string(),
            message: Some(send.message),
            message_id: message_id.0,
            server_received_ts,
            seq,
        }));
        let entry = &self.channels[&send.channel];
        self.fan_out(&entry.membership, Some(send.session), frame);
        Ok(ChannelSent {
            message_id,
            server_received_ts,
            seq,
        })
    }

    fn members(
        &self,
        key: &ChannelKey,
        uid: &UserId,
        session: SessionRef,
    ) -> Result<Vec<UserId>, Error> {
        self.channels
            .get(key)
            .filter(|entry| entry.membership.is_active(uid, session))
            .map(|entry| {
                entry
                    .membership
                    .uids()
                    .take(MAX_MEMBERS_LISTED)
                    .cloned()
                    .collect()
            })
            .ok_or_else(|| {
                Error::new(
                    parley_core::ErrorCode::NotJoined,
                    "not joined to this channel",
                )
            })
    }

    fn on_tick(&mut self, now: Instant) {
        let lingering: Vec<ChannelKey> = self.lingering.iter().cloned().collect();
        for key in lingering {
            let Some(entry) = self.channels.get_mut(&key) else {
                self.lingering.remove(&key);
                continue;
            };
            if entry.membership.next_expiry().is_none_or(|at| at > now) {
                if entry.membership.next_expiry().is_none() {
                    self.lingering.remove(&key);
                }
                continue;
            }
            let left = entry.membership.expire(now);
            if entry.membership.next_expiry().is_none() {
                self.lingering.remove(&key);
            }
            if !left.is_empty() {
                self.announce_left(&key, &left);
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
            let frame = SharedFrame::event(EventKind::MemberCountUpdated(v1::MemberCountUpdated {
                channel_id: key.channel.to_string(),
                member_count: u32::try_from(entry.membership.member_count()).unwrap_or(u32::MAX),
            }));
            let entry = &self.channels[&key];
            self.fan_out(&entry.membership, None, frame);
        }
    }

    /// MemberLeft for `uids` (if the channel is small enough), then forget an empty channel.
    fn announce_left(&mut self, key: &ChannelKey, uids: &[UserId]) {
        self.counts_changed.insert(key.clone());
        let threshold = self.limits(key).member_events_threshold;
        let entry = &self.channels[key];
        // Announced when the channel was at most at the threshold before these members left.
        if entry.membership.member_count() + uids.len() <= threshold {
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
            self.counts_changed.remove(key);
            self.lingering.remove(key);
        }
    }

    /// Sends `frame` to the channel's live sessions, one call per edge.
    fn fan_out(&self, membership: &Membership, except: Option<SessionRef>, frame: SharedFrame) {
        let mut by_edge: BTreeMap<NodeId, Vec<SessionId>> = BTreeMap::new();
        for session in membership.active_sessions(except) {
            by_edge
                .entry(session.edge)
                .or_default()
                .push(session.session);
        }
        if by_edge.is_empty() {
            return;
        }
        let frame = Arc::new(frame);
        for (node, sessions) in by_edge {
            match self.edges.get(node) {
                Some(edge) => edge.deliver(&sessions, frame.clone()),
                None => tracing::warn!(edge = node.0, "no route to edge, dropping delivery"),
            }
        }
    }

    fn limits(&self, key: &ChannelKey) -> Limits {
        self.apps
            .get(key.app.as_str())
            .map(|app| app.limits.clone())
            .unwrap_or_default()
    }
}

/// The instant used for grace periods: tokio's clock, so tests can pause time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
