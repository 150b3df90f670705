//! What the app's backend does to its users: bans, mutes, kicks.

use std::sync::Arc;

use parley_core::Error;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::storage::Restriction;
use parley_core::storage::StoreResult;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Respond;
use super::Shard;
use super::effects::StoreWork;
use super::fan_out;
use crate::api::ChannelKey;
use crate::api::Moderation;
use crate::api::UserKey;
use crate::ops;
use crate::storage_error;

impl Shard {
    /// Carries out `action` once the store has it (the key's other commands wait); replies
    /// whether it changed anything.
    pub(super) fn moderate(&mut self, action: Moderation, reply: Respond<ops::Moderate>) {
        let now_ms = self.now.unix_ms;
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
                let key = Key::User(user.clone());
                self.wait(Some(key), StoreWork::Ban { user, ban, reply });
            }
            Moderation::Unban { user } => {
                let key = Key::User(user.clone());
                self.wait(
                    Some(key),
                    StoreWork::Unban {
                        user,
                        now_ms,
                        reply,
                    },
                );
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
                    reason,
                };
                let key = Key::Channel(channel.clone());
                self.wait(
                    Some(key),
                    StoreWork::Mute {
                        channel,
                        uid,
                        mute,
                        reply,
                    },
                );
            }
            Moderation::Unmute { channel, uid } => {
                let key = Key::Channel(channel.clone());
                self.wait(
                    Some(key),
                    StoreWork::Unmute {
                        channel,
                        uid,
                        now_ms,
                        reply,
                    },
                );
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
            let sessions: Vec<SessionRef> =
                entry.sessions.iter().map(|known| known.session).collect();
            for session in sessions {
                self.end_session(session, Reason::BannedByServer);
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
        fan_out(&mut self.effects, &entry.membership, None, Arc::new(frame));
    }
}
