//! What the app's backend does to its users: bans, mutes, kicks.

use parley_core::Error;
use parley_core::ids::UserId;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;
use parley_store::Restriction;
use parley_store::Scope;
use parley_store::StoreResult;

use super::Key;
use super::Respond;
use super::Resumed;
use super::Shard;
use crate::api::ChannelKey;
use crate::api::Moderation;
use crate::api::UserKey;
use crate::ops;
use crate::owner::storage_error;
use parley_core::time::unix_ms;

impl Shard {
    /// Carries out `action` once the store has it (the key's other commands wait); replies
    /// whether it changed anything.
    pub(super) fn moderate(&mut self, action: Moderation, reply: Respond<ops::Moderate>) {
        let now_ms = unix_ms();
        let store = self.store.clone();
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
                self.wait(Some(Key::User(user.clone())), async move {
                    let stored = store.restrict(&user.app, &Scope::Login, ban).await;
                    Resumed::Banned {
                        user,
                        stored,
                        reply,
                    }
                });
            }
            Moderation::Unban { user } => {
                self.wait(Some(Key::User(user.clone())), async move {
                    let lifted = store
                        .lift(&user.app, &Scope::Login, &user.uid, now_ms)
                        .await;
                    reply.send(lifted.map_err(storage_error));
                    Resumed::Done
                });
            }
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
                self.wait(Some(Key::Channel(channel.clone())), async move {
                    let scope = Scope::Channel(channel.channel.clone());
                    let stored = store.restrict(&channel.app, &scope, mute).await;
                    Resumed::MuteChanged {
                        channel,
                        uid,
                        mute: Some((until_ms, reason)),
                        changed: stored.map(|()| true).map_err(storage_error),
                        reply,
                    }
                });
            }
            Moderation::Unmute { channel, uid } => {
                self.wait(Some(Key::Channel(channel.clone())), async move {
                    let scope = Scope::Channel(channel.channel.clone());
                    let lifted = store.lift(&channel.app, &scope, &uid, now_ms).await;
                    Resumed::MuteChanged {
                        channel,
                        uid,
                        mute: None,
                        changed: lifted.map_err(storage_error),
                        reply,
                    }
                });
            }
            Moderation::Kick {
                channel,
                uid,
                reason,
            } => {
                reply.send(Ok(self.kick(&channel, uid, reason)));
            }
        }
    }

    /// The ban is stored: the user's sessions end (BANNED_BY_SERVER).
    pub(super) fn banned(
        &mut self,
        user: &UserKey,
        stored: StoreResult<()>,
        reply: Respond<ops::Moderate>,
    ) {
        if let Err(error) = stored {
            reply.send(Err(storage_error(error)));
            return;
        }
        if let Some(entry) = self.users.get_mut(user) {
            entry.logout_reason = Some("banned");
            for known in &entry.sessions {
                if let Some(edge) = self.edges.get(known.session.edge) {
                    edge.end_session(known.session.session, Reason::BannedByServer);
                }
            }
        }
        reply.send(Ok(true));
    }

    /// A mute was stored or lifted: the live channel keeps it and its members are told.
    pub(super) fn mute_changed(
        &mut self,
        channel: &ChannelKey,
        uid: UserId,
        mute: Option<(i64, String)>,
        changed: Result<bool, Error>,
        reply: Respond<ops::Moderate>,
    ) {
        if changed == Ok(true) {
            self.tell_muted(channel, uid, mute);
        }
        reply.send(changed);
    }

    fn kick(&mut self, channel: &ChannelKey, uid: UserId, reason: String) -> bool {
        let Some(entry) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(sessions) = entry.membership.remove(&uid) else {
            return false;
        };
        let frame = SharedFrame::event(EventKind::KickedFromChannel(v1::KickedFromChannel {
            channel_id: channel.channel.to_string(),
            reason,
        }));
        self.send_to(sessions, frame);
        self.announce_left(channel, &[uid], "kicked");
        true
    }

    /// Records a mute (its end and reason) or its lifting (`None`) in the live channel, and
    /// tells its members.
    pub(super) fn tell_muted(
        &mut self,
        channel: &ChannelKey,
        uid: UserId,
        mute: Option<(i64, String)>,
    ) {
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
}
