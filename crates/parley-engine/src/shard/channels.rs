//! Channels: joining (taking a channel up from the store), leaving, messages, members, and
//! what other regions say of their members.

use std::collections::HashMap;
use std::sync::Arc;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::channel::Departure;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::limits::MAX_MEMBERS_LISTED;
use parley_core::storage::HistoryQuery;
use parley_core::storage::Order;
use parley_core::storage::StoreResult;
use parley_core::storage::StoredChannelAttributes;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Respond;
use super::Shard;
use super::effects::Effect;
use super::effects::StoreWork;
use super::fan_out;
use super::muted;
use super::send_shared;
use super::state::ChannelEntry;
use super::state::HANDOFF_GRACE;
use super::unavailable;
use crate::api::AppEventKind;
use crate::api::ChannelKey;
use crate::api::ChannelSent;
use crate::api::Interest;
use crate::api::LeaveReason;
use crate::api::RegionRecord;
use crate::api::Resume;
use crate::ops;
use crate::ops::ChannelSend;

/// Sequence numbers reserved in the store at a time, so a restart never reuses one.
pub const SEQUENCE_BLOCK: u64 = 1000;

/// A join on its way, between store operations.
pub struct Joining {
    pub key: ChannelKey,
    pub uid: UserId,
    pub session: SessionRef,
    pub resume: Resume,
    pub reply: Respond<ops::Join>,
}

/// What taking a channel up reads from the store.
pub struct Loaded {
    /// The highest sequence number a member may have seen.
    pub high_water: u64,
    /// The end of the block of numbers now reserved.
    pub reserved_seq: u64,
    /// Muted members and when their mutes end.
    pub mutes: HashMap<UserId, i64>,
}

/// A channel message with its sequence number, waiting for the store.
pub struct Numbered {
    pub send: ChannelSend,
    pub seq: u64,
    /// The sequence number reserved in the store with it, when it needed a new block.
    pub reserve: Option<u64>,
    pub message_id: MessageId,
    pub server_received_ts: i64,
    reply: Respond<ChannelSend>,
}

impl Shard {
    /// Joins a live channel at once; a channel nobody is in is taken up from the store first
    /// (the channel's other commands wait for that).
    pub(super) fn join(&mut self, join: Joining) {
        if self.channels.contains_key(&join.key) {
            self.join_live(join, false);
            return;
        }
        let key = Key::Channel(join.key.clone());
        let now_ms = self.now.unix_ms;
        self.wait(
            Some(key),
            StoreWork::LoadChannel {
                join,
                block: SEQUENCE_BLOCK,
                now_ms,
            },
        );
    }

    pub(super) fn channel_loaded(&mut self, join: Joining, loaded: Result<Loaded, Error>) {
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                join.reply.send(Err(error));
                return;
            }
        };
        let taken_up = !self.channels.contains_key(&join.key);
        if taken_up {
            self.channels.insert(
                join.key.clone(),
                ChannelEntry {
                    last_seq: loaded.high_water,
                    reserved_seq: loaded.reserved_seq,
                    mutes: loaded.mutes,
                    ..ChannelEntry::default()
                },
            );
        }
        self.join_live(join, taken_up);
    }

    fn join_live(&mut self, join: Joining, taken_up: bool) {
        let entry = self
            .channels
            .get_mut(&join.key)
            .expect("joined channels are live");
        let is_new_member = match entry.membership.join(&join.uid, join.session) {
            Ok(is_new_member) => is_new_member,
            Err(error) => {
                join.reply.send(Err(error));
                return;
            }
        };
        if taken_up {
            // Other regions learn the channel has members here, and say if they have.
            let members = entry.local_members();
            entry.members_told = Some(members);
            self.publish(RegionRecord::Interest {
                channel: join.key.clone(),
                interest: Interest {
                    members,
                    fresh: true,
                },
            });
        }
        let (after, announce) = match join.resume {
            Resume::Fresh => {
                self.joined(join, is_new_member);
                return;
            }
            Resume::Client { after } => (after, true),
            Resume::Handoff { after } => (after, false),
        };
        // What the session missed from before the recovery window comes from history (a new
        // owner's window starts empty); the channel's messages wait until it is replayed.
        let entry = &self.channels[&join.key];
        let oldest_kept = entry
            .recent
            .front()
            .map_or(entry.last_seq + 1, |(seq, _)| *seq);
        if oldest_kept <= after + 1 || after >= entry.last_seq {
            self.replayed(join, is_new_member, after, announce, Vec::new());
            return;
        }
        let query = HistoryQuery {
            start_ms: 0,
            end_ms: i64::MAX,
            limit: self.config.recovery_window,
            order: Order::Descending,
            after: None,
        };
        self.wait(
            Some(Key::Channel(join.key.clone())),
            StoreWork::Replay {
                join,
                is_new_member,
                after,
                announce,
                oldest_kept,
                query,
            },
        );
    }

    /// Sends a re-joining session what it missed after `after`: `missed` (from history), then
    /// the recovery window. A client resuming (`announce`) is then told with ChannelRecovered
    /// whether that reached back far enough; messages sent without history may be missing when
    /// it did not.
    pub(super) fn replayed(
        &mut self,
        join: Joining,
        is_new_member: bool,
        after: u64,
        announce: bool,
        missed: Vec<Arc<SharedFrame>>,
    ) {
        if let Some(entry) = self.channels.get(&join.key) {
            let session = [join.session];
            for frame in missed {
                send_shared(&mut self.effects, session, frame);
            }
            for (_, frame) in entry.recent.iter().filter(|(seq, _)| *seq > after) {
                send_shared(&mut self.effects, session, frame.clone());
            }
            if announce {
                let last_seq = entry.last_seq;
                let oldest_kept = entry.recent.front().map_or(last_seq + 1, |(seq, _)| *seq);
                let from_seq = after + 1;
                let recovered =
                    SharedFrame::event(EventKind::ChannelRecovered(v1::ChannelRecovered {
                        channel_id: join.key.channel.to_string(),
                        from_seq,
                        to_seq: last_seq,
                        complete: from_seq > last_seq || oldest_kept <= from_seq,
                    }));
                send_shared(&mut self.effects, session, Arc::new(recovered));
            }
        }
        self.joined(join, is_new_member);
    }

    /// Tells the channel of its new member, and the joiner where the channel's numbering is.
    fn joined(&mut self, join: Joining, is_new_member: bool) {
        let Some(entry) = self.channels.get(&join.key) else {
            // Its members all went while it replayed.
            join.reply
                .send(Err(unavailable("the channel changed while joining, retry")));
            return;
        };
        let last_seq = entry.last_seq;
        if is_new_member {
            let threshold = self.limits(&join.key.app).member_events_threshold;
            if entry.membership.member_count() <= threshold {
                let frame = SharedFrame::event(EventKind::MemberJoined(v1::MemberJoined {
                    channel_id: join.key.channel.to_string(),
                    member_id: join.uid.to_string(),
                }));
                fan_out(
                    &mut self.effects,
                    &entry.membership,
                    Some(join.session),
                    Arc::new(frame),
                );
            }
            self.emit(
                &join.key.app,
                AppEventKind::Join {
                    channel: join.key.channel.clone(),
                    uid: join.uid.clone(),
                },
            );
            self.counts_changed.insert(join.key.clone());
        }
        join.reply.send(Ok(last_seq));
    }

    pub(super) fn leave(
        &mut self,
        key: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        let departure = match reason {
            LeaveReason::Left => Departure::Now,
            LeaveReason::ConnectionLost => Departure::Linger {
                until: self.now.instant + self.config.member_grace,
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
            self.announce_left(&key, &[uid], "left");
        }
        Ok(())
    }

    /// Numbers a message and hands it to the members; one kept in history (or the first of a
    /// new block of numbers) waits for the store first, and the channel's later messages wait
    /// behind it, so members see them in order.
    pub(super) fn send_channel(&mut self, send: ChannelSend, reply: Respond<ChannelSend>) {
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
                    let since_moved = self
                        .now
                        .instant
                        .saturating_duration_since(self.keys_moved_at);
                    reply.send(if since_moved < HANDOFF_GRACE {
                        Err(unavailable(
                            "the channel's members may still be coming over",
                        ))
                    } else {
                        not_delivered
                    });
                    return;
                };
                if !entry.crossed.first_time(origin.message_id) {
                    reply.send(not_delivered);
                    return;
                }
                entry
            }
            (None, Some(session)) => match self
                .channels
                .get_mut(&send.channel)
                .filter(|entry| entry.membership.is_active(&send.from, session))
            {
                Some(entry) => entry,
                None => {
                    reply.send(Err(Error::new(
                        ErrorCode::NotJoined,
                        "not joined to this channel",
                    )));
                    return;
                }
            },
            (None, None) => match self.channels.get_mut(&send.channel) {
                Some(entry) => entry,
                // From the backend to a channel nobody is in: no one to number it for.
                None => {
                    self.send_to_empty_channel(send, reply);
                    return;
                }
            },
        };
        // Mutes hold in the region that accepted the message.
        if send.origin.is_none()
            && let Some(until) = entry.mutes.get(&send.from).copied()
        {
            if until > self.now.unix_ms {
                reply.send(Err(muted(until)));
                return;
            }
            entry.mutes.remove(&send.from);
        }
        let seq = entry.last_seq + 1;
        let reserve = (seq > entry.reserved_seq).then_some(entry.last_seq + SEQUENCE_BLOCK);
        let (message_id, server_received_ts) = match &send.origin {
            Some(origin) => (origin.message_id, origin.server_received_ts),
            None => {
                let now = self.now.unix_ms;
                (self.message_ids.next(now as u64), now)
            }
        };
        let message = Numbered {
            send,
            seq,
            reserve,
            message_id,
            server_received_ts,
            reply,
        };
        if reserve.is_none() && !message.send.enable_history {
            self.channel_stored(message, Ok(()));
            return;
        }
        let retention_ms = self
            .limits(&message.send.channel.app)
            .history_retention
            .as_millis() as i64;
        self.wait(
            Some(Key::Channel(message.send.channel.clone())),
            StoreWork::StoreNumbered {
                message,
                retention_ms,
            },
        );
    }

    /// Delivers a numbered message once the store has what it needed.
    pub(super) fn channel_stored(&mut self, message: Numbered, stored: Result<(), Error>) {
        let Numbered {
            send,
            seq,
            reserve,
            message_id,
            server_received_ts,
            reply,
        } = message;
        if let Err(error) = stored {
            reply.send(Err(error));
            return;
        }
        let sent = ChannelSent {
            message_id,
            server_received_ts,
            seq,
        };
        let recovery_window = self.config.recovery_window;
        let Some(entry) = self.channels.get_mut(&send.channel) else {
            // Its members all went meanwhile: it is kept, with nobody to tell.
            reply.send(Ok(sent));
            return;
        };
        if let Some(reserve) = reserve {
            entry.reserved_seq = entry.reserved_seq.max(reserve);
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
        fan_out(&mut self.effects, &entry.membership, send.session, frame);
        if let Some(message) = crossing {
            self.publish(RegionRecord::Message {
                channel: send.channel,
                from: send.from,
                message,
                enable_history: send.enable_history,
                message_id,
                server_received_ts,
                trace: send.trace,
            });
        }
        reply.send(Ok(sent));
    }

    /// A backend's message to a channel without members: kept in history when asked, with
    /// sequence number 0 (sequence numbers count what members were sent).
    fn send_to_empty_channel(&mut self, send: ChannelSend, reply: Respond<ChannelSend>) {
        let server_received_ts = self.now.unix_ms;
        let message_id = self.message_ids.next(server_received_ts as u64);
        let retention_ms = self.limits(&send.channel.app).history_retention.as_millis() as i64;
        self.wait(
            Some(Key::Channel(send.channel.clone())),
            StoreWork::SendToEmptyChannel {
                send,
                message_id,
                server_received_ts,
                retention_ms,
                reply,
            },
        );
    }

    pub(super) fn members(
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

    /// MemberLeft for `uids` (if the channel is small enough), then forget an empty channel
    /// (its attributes start to expire; its next join waits for that to be written).
    pub(super) fn announce_left(
        &mut self,
        key: &ChannelKey,
        uids: &[UserId],
        reason: &'static str,
    ) {
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
                fan_out(&mut self.effects, &entry.membership, None, Arc::new(frame));
            }
        }
        if entry.membership.is_empty() {
            self.channels.remove(key);
            self.publish(RegionRecord::Interest {
                channel: key.clone(),
                interest: Interest {
                    members: 0,
                    fresh: false,
                },
            });
            self.counts_changed.remove(key);
            self.lingering.remove(key);
            let expires_at_ms = self.now.unix_ms + limits.channel_attributes_ttl.as_millis() as i64;
            self.wait(
                Some(Key::Channel(key.clone())),
                StoreWork::ExpireAttributes {
                    channel: key.clone(),
                    expires_at_ms,
                },
            );
        }
    }

    /// Another region has `members` in `channel` (none: it no longer wants its messages). A
    /// region that has just taken the channel up (`fresh`) is told how many members this one
    /// has, and what the channel's attributes are. Members here hear the new total.
    pub(super) fn region_interest(
        &mut self,
        channel: ChannelKey,
        region: String,
        interest: Interest,
    ) {
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
            self.publish(RegionRecord::Interest {
                channel: channel.clone(),
                interest: Interest {
                    members,
                    fresh: false,
                },
            });
            // In order with the channel's attribute writes, so an older set never crosses last.
            self.wait(
                Some(Key::Channel(channel.clone())),
                StoreWork::AttributesForRegion { channel },
            );
        }
    }

    /// The channel's attributes as they are, for a region that has just taken it up.
    pub(super) fn attributes_for_region(
        &mut self,
        channel: ChannelKey,
        stored: StoreResult<Option<StoredChannelAttributes>>,
    ) {
        match stored {
            Ok(Some(record)) => self.publish(RegionRecord::Attributes {
                channel,
                attributes: record.attributes,
                notify_members: false,
            }),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "channel attributes not sent to a new region"),
        }
    }

    /// Tells the other regions of every channel with members and every user with sessions here,
    /// as newly taken up.
    pub(super) fn announce_regions(&mut self) {
        for (channel, entry) in &self.channels {
            self.effects.push(Effect::Region(RegionRecord::Interest {
                channel: channel.clone(),
                interest: Interest {
                    members: entry.local_members(),
                    fresh: true,
                },
            }));
        }
        for (user, entry) in &self.users {
            if !entry.sessions.is_empty() {
                self.effects.push(Effect::Region(RegionRecord::User {
                    user: user.clone(),
                    online: true,
                }));
            }
        }
    }
}

/// The stored messages with `after < seq < before`, oldest first, as frames.
pub(super) fn frames_between(
    key: &ChannelKey,
    stored: Vec<v1::HistoryMessage>,
    after: u64,
    before: u64,
) -> Vec<Arc<SharedFrame>> {
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
