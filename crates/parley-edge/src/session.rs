//! A connection's session: what it holds once logged in ([`LoggedIn`]), and the owner calls that
//! register it, re-register it after a ring change and hand it back when it ends. The request
//! handlers are `requests.rs`; the socket and its timers are `connection.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::ids::ChannelId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::rate::TokenBucket;
use parley_owner::ChannelKey;
use parley_owner::InvitationRestore;
use parley_owner::InvitationSend;
use parley_owner::LeaveReason;
use parley_owner::OpenSession;
use parley_owner::Resume;
use parley_owner::UserKey;
use parley_owner::ops;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::reply::Result as ReplyResult;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::edge::Control;
use crate::edge::Edge;
use crate::edge::Outbound;
use crate::edge::Outgoing;
use crate::edge::SessionHandle;

/// Why a connection's session ended.
#[derive(Clone, Copy)]
pub(crate) enum Ending {
    /// The client logged out.
    Logout,
    /// The socket closed or failed.
    Lost,
    /// The server ended it.
    Server(Reason),
}

/// A logged-in session's own state: what it may still do and what to clean up after it.
pub(crate) struct LoggedIn {
    /// Shared with the app directory: a session holds no copy of its app's settings.
    pub(crate) app: Arc<AppConfig>,
    /// The session's place among its app's on this edge, given back with the session (at the
    /// logout reply, so a client told it is out may log in again at once).
    pub(crate) admitted: Option<crate::tally::Held<parley_core::ids::AppId>>,
    pub(crate) user: UserKey,
    pub(crate) session: SessionRef,
    /// Users whose online status this session watches.
    pub(crate) subscriptions: BTreeSet<UserId>,
    pub(crate) message_bucket: TokenBucket,
    pub(crate) join_bucket: TokenBucket,
    pub(crate) query_bucket: TokenBucket,
    pub(crate) renew_bucket: TokenBucket,
    pub(crate) attribute_bucket: TokenBucket,
    pub(crate) status_bucket: TokenBucket,
    pub(crate) invitation_bucket: TokenBucket,
    pub(crate) history_bucket: TokenBucket,
    pub(crate) token_expires_at: Option<Instant>,
    pub(crate) token_warned: bool,
    /// False once the connection has been silent past the app's `unreachable_after`.
    pub(crate) reachable: bool,
}

/// One connection's session: the edge it is on, its handle in the edge's session table (its
/// outbound queue), and, once logged in, its own state.
pub(crate) struct Session {
    pub(crate) edge: Arc<Edge>,
    pub(crate) handle: Arc<SessionHandle>,
    pub(crate) logged_in: Option<LoggedIn>,
}

impl Session {
    /// Tells the owner whether the session's connection is heard from (`false`: silent past the
    /// app's `unreachable_after`).
    pub(crate) async fn set_reachable(&mut self, reachable: bool) {
        let Some(session) = &mut self.logged_in else {
            return;
        };
        if session.reachable == reachable {
            return;
        }
        session.reachable = reachable;
        let set = ops::SetReachable {
            user: session.user.clone(),
            session: session.session,
            reachable,
        };
        let _ = self.edge.owner().ask(set).await;
    }

    /// Registers the session, its channels and its subscriptions with the owners again (after a
    /// ring change). Registrations the owner already has are no-ops.
    pub(crate) async fn reregister(&mut self) {
        let Some(session) = &self.logged_in else {
            return;
        };
        let owner = self.edge.owner();
        let opened = owner
            .ask(OpenSession {
                user: session.user.clone(),
                session: session.session,
                multi_login: session.app.multi_login,
            })
            .await;
        if let Err(error) = opened {
            tracing::warn!(%error, "re-registering a session failed");
        }
        // Peer messages the new owner cached before it knew of this session come now.
        if let Err(error) = owner
            .ask(ops::SessionReady {
                user: session.user.clone(),
                session: session.session,
            })
            .await
        {
            tracing::warn!(%error, "delivering the offline inbox after a hand-off failed");
        }
        for channel in self.handle.joined() {
            let Ok(channel) = ChannelId::parse(&channel) else {
                continue;
            };
            let resume_after = self.handle.channel_seqs.lock().get(channel.as_str());
            let joined = owner
                .ask(ops::Join {
                    channel: channel_key(&session.user, &channel),
                    uid: session.user.uid.clone(),
                    session: session.session,
                    resume: resume_after.map_or(Resume::Fresh, |after| Resume::Handoff { after }),
                })
                .await;
            match joined {
                Ok(_) => {}
                Err(error) if error.code == ErrorCode::AlreadyJoined => {}
                Err(error) => tracing::warn!(%error, channel = %channel, "re-join failed"),
            }
        }
        // Invitations under way are rebuilt by the callee's (possibly new) owner.
        let outgoing: Vec<(u64, Outgoing)> = self
            .handle
            .outgoing_invitations
            .lock()
            .iter()
            .filter(|(_, invitation)| !invitation.over)
            .map(|(id, invitation)| (*id, invitation.clone()))
            .collect();
        for (invitation_id, invitation) in outgoing {
            let restored = owner
                .ask(InvitationSend {
                    caller: session.user.clone(),
                    caller_session: session.session,
                    callee: invitation.callee,
                    content: invitation.content,
                    channel_id: invitation.channel_id,
                    restore: Some(InvitationRestore {
                        invitation_id,
                        age: invitation.sent_at.elapsed(),
                        received: invitation.received,
                    }),
                })
                .await;
            if let Err(error) = restored {
                tracing::warn!(%error, invitation_id, "rebuilding an invitation failed");
            }
        }
        for uid in &session.subscriptions {
            let watched = UserKey {
                app: session.user.app.clone(),
                uid: uid.clone(),
            };
            let subscribe = ops::SubscribePresence {
                user: watched,
                subscriber: session.session,
            };
            if let Err(error) = owner.ask(subscribe).await {
                tracing::warn!(%error, "re-subscribing failed");
            }
        }
    }

    /// Tells the owner the login reply is out, so it may deliver what waited for the user.
    pub(crate) async fn session_ready(&mut self) {
        let Some(session) = &self.logged_in else {
            return;
        };
        if let Err(error) = self
            .edge
            .owner()
            .ask(ops::SessionReady {
                user: session.user.clone(),
                session: session.session,
            })
            .await
        {
            tracing::warn!(%error, "delivering the offline inbox failed");
        }
    }

    pub(crate) fn logged_in(&mut self) -> Result<&mut LoggedIn, Error> {
        self.logged_in
            .as_mut()
            .ok_or_else(|| Error::new(ErrorCode::NotLoggedIn, "log in before any other request"))
    }

    pub(crate) fn reply(&self, id: u64, result: Result<ReplyResult, Error>) {
        self.push(Outbound::own(reply_frame(id, result)));
    }

    pub(crate) fn push(&self, outbound: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.handle.outbound_tx.try_send(outbound)
        {
            let _ = self
                .handle
                .control_tx
                .try_send(Control::End(Reason::SlowConsumer));
        }
    }

    /// Hands the session's channels and registration back to the owners.
    pub(crate) async fn finish(&mut self, ending: Ending) {
        if let Some(session) = self.logged_in.take() {
            self.edge.remove_session(session.session.session);
            let reason = match ending {
                Ending::Logout => LeaveReason::Left,
                Ending::Lost | Ending::Server(_) => LeaveReason::ConnectionLost,
            };
            let owner = self.edge.owner();
            for channel in self.handle.joined() {
                let Ok(channel) = ChannelId::parse(&channel) else {
                    continue;
                };
                let left = owner
                    .ask(ops::Leave {
                        channel: channel_key(&session.user, &channel),
                        uid: session.user.uid.clone(),
                        session: session.session,
                        reason,
                    })
                    .await;
                if let Err(error) = left {
                    tracing::warn!(%error, channel = %channel, "leave on session end failed");
                }
            }
            for uid in &session.subscriptions {
                let watched = UserKey {
                    app: session.user.app.clone(),
                    uid: uid.clone(),
                };
                let unsubscribe = ops::UnsubscribePresence {
                    user: watched,
                    subscriber: session.session,
                };
                if let Err(error) = owner.ask(unsubscribe).await {
                    tracing::warn!(%error, "unsubscribe on session end failed");
                }
            }
            let close = ops::CloseSession {
                user: session.user.clone(),
                session: session.session,
                reason,
            };
            if let Err(error) = owner.ask(close).await {
                tracing::warn!(%error, "close session failed");
            }
            tracing::info!(
                app = %session.user.app,
                uid = %session.user.uid,
                session = %session.session.session,
                reason = match ending {
                    Ending::Logout => "logout",
                    Ending::Lost => "connection lost",
                    Ending::Server(reason) => reason.as_str_name(),
                },
                "session ended"
            );
        }
    }
}

pub(crate) fn reply_frame(id: u64, result: Result<ReplyResult, Error>) -> v1::ServerFrame {
    let reply = match result {
        Ok(result) => v1::Reply {
            id,
            error: None,
            result: Some(result),
        },
        Err(error) => v1::Reply {
            id,
            error: Some(error.into()),
            result: None,
        },
    };
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Reply(reply)),
    }
}

pub(crate) fn event(kind: v1::event::Kind) -> v1::ServerFrame {
    v1::ServerFrame {
        kind: Some(v1::server_frame::Kind::Event(v1::Event {
            kind: Some(kind),
        })),
    }
}

pub(crate) fn channel_key(user: &UserKey, channel: &ChannelId) -> ChannelKey {
    ChannelKey {
        app: user.app.clone(),
        channel: channel.clone(),
    }
}

/// The monotonic instant of a Unix time, given the Unix time of now.
pub(crate) fn instant_of_unix_secs(at_secs: u64, now_secs: i64) -> Instant {
    let remaining = at_secs.saturating_sub(now_secs.max(0) as u64);
    Instant::now() + std::time::Duration::from_secs(remaining)
}
