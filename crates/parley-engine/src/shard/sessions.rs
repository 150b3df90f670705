//! Logins, sessions and presence.

use std::sync::Arc;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::MultiLogin;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionRef;
use parley_core::storage::Restriction;
use parley_core::storage::StoreResult;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Queued;
use super::Respond;
use super::Shard;
use super::effects::DirectoryWrite;
use super::effects::OnReceipt;
use super::effects::StoreWork;
use super::state::UserEntry;
use super::state::UserSession;
use crate::api::AppEventKind;
use crate::api::LeaveReason;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;
use crate::ops::OpenSession;
use crate::storage_error;

impl Shard {
    /// A login: checks for a ban (the user's commands wait for the answer), then records the
    /// session.
    pub(super) fn open_session(&mut self, open: OpenSession, reply: Respond<OpenSession>) {
        // A session registering again (after a ring change) is already here: nothing to do.
        if self.has_session(&open.user, open.session) {
            reply.send(Ok(()));
            return;
        }
        let key = Key::User(open.user.clone());
        let now_ms = self.now.unix_ms;
        self.wait(
            Some(key),
            StoreWork::CheckBan {
                open,
                now_ms,
                reply,
            },
        );
    }

    /// A banned user's login fails with BANNED. When storage cannot say, the login goes on
    /// (availability over enforcement; a ban also ends live sessions when it is set).
    pub(super) fn ban_checked(
        &mut self,
        open: OpenSession,
        ban: StoreResult<Option<Restriction>>,
        reply: Respond<OpenSession>,
    ) {
        match ban {
            Ok(Some(ban)) => {
                reply.send(Err(Error::new(
                    ErrorCode::Banned,
                    format!("banned until {} ms since the epoch", ban.until_ms),
                )));
                return;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, uid = %open.user.uid, "could not check for a ban; letting the login in");
            }
        }
        if self.has_session(&open.user, open.session) {
            reply.send(Ok(()));
            return;
        }
        let entry = self.users.entry(open.user.clone()).or_default();
        let mut replaced = Vec::new();
        if open.multi_login == MultiLogin::Replace {
            replaced.extend(entry.sessions.drain(..).map(|old| old.session));
        }
        for old in &replaced {
            self.end_session(*old, Reason::RemoteLogin);
        }
        let entry = self.users.entry(open.user.clone()).or_default();
        entry.sessions.push(UserSession {
            session: open.session,
            reachable: true,
        });
        entry.lost_until = None;
        self.announce_presence(&open.user);
        // The directory is for a node that takes the user over later; a failed write only costs
        // that node a re-registration, so it does not fail the login.
        for old in replaced {
            self.write_behind(DirectoryWrite::Unregister {
                user: open.user.clone(),
                session: old,
            });
        }
        self.write_behind(DirectoryWrite::Register {
            user: open.user,
            session: open.session,
        });
        reply.send(Ok(()));
    }

    fn has_session(&self, user: &UserKey, session: SessionRef) -> bool {
        self.users
            .get(user)
            .is_some_and(|entry| entry.sessions.iter().any(|known| known.session == session))
    }

    /// Delivers what waited for the user: the offline inbox (oldest first, each removed once its
    /// receipt arrives) and invitations sent while the user was offline.
    pub(super) fn session_ready(
        &mut self,
        user: UserKey,
        session: SessionRef,
        reply: Respond<ops::SessionReady>,
    ) {
        let max_age_ms = self.limits(&user.app).offline_max_age.as_millis() as i64;
        let key = Key::User(user.clone());
        let now_ms = self.now.unix_ms;
        self.wait(
            Some(key),
            StoreWork::ListInbox {
                user,
                session,
                max_age_ms,
                now_ms,
                reply,
            },
        );
    }

    pub(super) fn inbox_listed(
        &mut self,
        user: UserKey,
        session: SessionRef,
        inbox: StoreResult<Vec<v1::HistoryMessage>>,
        reply: Respond<ops::SessionReady>,
    ) {
        let inbox = match inbox {
            Ok(inbox) => inbox,
            Err(error) => {
                reply.send(Err(storage_error(error)));
                return;
            }
        };
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
            let receipt_id = MessageId(stored.message_id);
            let then = OnReceipt::LeaveInbox {
                user: user.clone(),
                stored,
            };
            self.send_with_receipt(session, receipt_id, frame, then);
        }
        let now = self.now.instant;
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
        reply.send(Ok(()));
    }

    pub(super) fn close_session(
        &mut self,
        user: &UserKey,
        session: SessionRef,
        reason: LeaveReason,
    ) {
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
                    entry.lost_until = Some(self.now.instant + offline_after);
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
        self.write_behind(DirectoryWrite::Unregister {
            user: user.clone(),
            session,
        });
        if logged_out {
            // Logged out: OFFLINE at once, and attributes go (Agora's behaviour).
            self.clear_user_attributes(user);
        }
    }

    /// Clears the user's attributes; the user's commands wait until they are gone, so a new
    /// session's attributes are never cleared after being set.
    pub(super) fn clear_user_attributes(&mut self, user: &UserKey) {
        self.wait(
            Some(Key::User(user.clone())),
            StoreWork::ClearUserAttributes { user: user.clone() },
        );
    }

    pub(super) fn set_reachable(&mut self, user: &UserKey, session: SessionRef, reachable: bool) {
        if let Some(entry) = self.users.get_mut(user) {
            for known in &mut entry.sessions {
                if known.session == session {
                    known.reachable = reachable;
                }
            }
            self.announce_presence(user);
        }
    }

    /// Subscribes `subscriber` to the user's presence (or stops); returns the user's state.
    pub(super) fn subscribe(
        &mut self,
        user: &UserKey,
        subscriber: SessionRef,
        subscribe: bool,
    ) -> PeerOnlineState {
        let entry = self.users.entry(user.clone()).or_default();
        if subscribe {
            entry.subscribers.insert(subscriber);
        } else {
            entry.subscribers.remove(&subscriber);
        }
        let state = entry.presence();
        self.forget_user_if_idle(user);
        state
    }

    /// Treats every session of edge `node` as a lost connection: members linger for their
    /// grace period (a client back through another edge in time causes no churn), users turn
    /// unreachable, then offline. A key waiting on the store takes it after what it has queued
    /// (a login or a join from that edge may still be on its way in).
    pub(super) fn edge_gone(&mut self, node: NodeId) {
        let keys: Vec<Key> = self
            .channels
            .keys()
            .map(|channel| Key::Channel(channel.clone()))
            .chain(self.users.keys().map(|user| Key::User(user.clone())))
            .filter(|key| !self.busy.contains_key(key))
            .collect();
        for key in keys {
            self.edge_gone_from(&key, node);
        }
        for busy in self.busy.values_mut() {
            busy.queued.push_back(Queued::EdgeGone(node));
        }
    }

    /// What edge `node` being gone means for one key.
    pub(super) fn edge_gone_from(&mut self, key: &Key, node: NodeId) {
        match key {
            Key::Channel(channel) => {
                let Some(entry) = self.channels.get(channel) else {
                    return;
                };
                for (uid, session) in entry.membership.sessions_on(node) {
                    let _ = self.leave(channel.clone(), uid, session, LeaveReason::ConnectionLost);
                }
            }
            Key::User(user) => {
                let sessions: Vec<SessionRef> = self
                    .sessions_of(user)
                    .into_iter()
                    .filter(|session| session.edge == node)
                    .collect();
                for session in sessions {
                    self.close_session(user, session, LeaveReason::ConnectionLost);
                }
            }
        }
    }

    /// Tells subscribers if the user's state changed since they last heard, then forgets an idle
    /// user.
    pub(super) fn announce_presence(&mut self, user: &UserKey) {
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
                self.publish(RegionRecord::User {
                    user: user.clone(),
                    online: matches!(kind, AppEventKind::Login { .. }),
                });
                self.emit(&user.app, kind);
            }
        }
        self.forget_user_if_idle(user);
    }

    pub(super) fn forget_user_if_idle(&mut self, user: &UserKey) {
        if self.users.get(user).is_some_and(UserEntry::is_forgettable) {
            self.users.remove(user);
            self.timed_users.remove(user);
        }
    }
}
