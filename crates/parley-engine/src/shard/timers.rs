//! What happens with time: lingering members leave, member counts go out, lost users go
//! offline, invitations time out; and what a ring change drops.

use std::sync::Arc;

use parley_core::ids::NodeId;
use parley_core::ring::Ring;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Queued;
use super::Shard;
use super::effects::Now;
use super::fan_out;
use crate::api::ChannelKey;
use crate::api::Interest;
use crate::api::RegionRecord;
use crate::api::UserKey;

impl Shard {
    /// Drops the state of every key the ring no longer gives node `me`, so that it never
    /// comes back should the key return (the edges re-register what is live with the new
    /// owners). A key waiting on the store is dropped after what it has queued, which came
    /// before the ring changed.
    pub(super) fn forget_unowned(&mut self, ring: &Ring, me: NodeId) {
        let owned = |key: &Key| match key {
            Key::User(user) => ring.user_owner(&user.app, &user.uid) == Some(me),
            Key::Channel(channel) => ring.channel_owner(&channel.app, &channel.channel) == Some(me),
        };
        let unowned: Vec<Key> = self
            .users
            .keys()
            .map(|user| Key::User(user.clone()))
            .chain(
                self.channels
                    .keys()
                    .map(|channel| Key::Channel(channel.clone())),
            )
            .chain(self.busy.keys().cloned())
            .filter(|key| !owned(key))
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let mut dropped = 0;
        for key in unowned {
            match self.busy.get_mut(&key) {
                Some(busy) => busy.queued.push_back(Queued::Forget),
                None => {
                    self.forget(&key);
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            tracing::info!(
                keys = dropped,
                epoch = ring.epoch(),
                "handed keys over to their new owners"
            );
        }
    }

    /// Drops everything kept of `key`.
    pub(super) fn forget(&mut self, key: &Key) {
        match key {
            Key::User(user) => {
                self.users.remove(user);
                self.timed_users.remove(user);
            }
            Key::Channel(channel) => {
                self.channels.remove(channel);
                self.lingering.remove(channel);
                self.counts_changed.remove(channel);
            }
        }
    }

    pub fn on_tick(&mut self, clock: Now) {
        self.now = clock;
        let now = clock.instant;
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
                self.announce_left(&key, &left, "connection_lost");
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
                self.publish(RegionRecord::Interest {
                    channel: key.clone(),
                    interest: Interest {
                        members,
                        fresh: false,
                    },
                });
            }
            let entry = &self.channels[&key];
            let frame = SharedFrame::event(EventKind::MemberCountUpdated(v1::MemberCountUpdated {
                channel_id: key.channel.to_string(),
                member_count: entry.all_members(),
            }));
            fan_out(&mut self.effects, &entry.membership, None, Arc::new(frame));
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
                self.clear_user_attributes(&user);
            }
        }
    }
}
