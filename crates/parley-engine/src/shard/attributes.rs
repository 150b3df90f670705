//! User and channel attributes. Each key's attribute writes run one at a time (the key's
//! commands wait), and channel writes compare-and-set, since another owner may write during a
//! hand-over.

use std::sync::Arc;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::attributes::AttributeOp;
use parley_core::storage::StoreResult;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Respond;
use super::Shard;
use super::effects::StoreWork;
use super::fan_out;
use crate::api::ChannelKey;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;
use crate::storage_error;

impl Shard {
    /// The user's owner is the only writer of its attributes, so read-apply-write is enough.
    pub(super) fn update_user_attributes(
        &mut self,
        user: UserKey,
        op: AttributeOp,
        reply: Respond<ops::UpdateUserAttributes>,
    ) {
        if self
            .users
            .get(&user)
            .is_none_or(|entry| entry.sessions.is_empty())
        {
            reply.send(Err(Error::new(
                ErrorCode::NotLoggedIn,
                "the user has no session",
            )));
            return;
        }
        let key = Key::User(user.clone());
        self.wait(
            Some(key),
            StoreWork::UpdateUserAttributes { user, op, reply },
        );
    }

    pub(super) fn update_channel_attributes(
        &mut self,
        update: ops::UpdateChannelAttributes,
        reply: Respond<ops::UpdateChannelAttributes>,
    ) {
        let ops::UpdateChannelAttributes {
            channel: key,
            by,
            op,
            notify_members,
        } = update;
        let ttl = self.limits(&key.app).channel_attributes_ttl.as_millis() as i64;
        // Attributes of a channel without members expire.
        let ttl = (!self.channels.contains_key(&key)).then_some(ttl);
        let now_ms = self.now.unix_ms;
        self.wait(
            Some(Key::Channel(key.clone())),
            StoreWork::UpdateChannelAttributes {
                channel: key,
                by,
                op,
                ttl_ms: ttl,
                notify_members,
                now_ms,
                reply,
            },
        );
    }

    /// Tells the other regions and (if asked) the members of the channel's new attributes.
    pub(super) fn channel_attributes_set(
        &mut self,
        key: &ChannelKey,
        notify_members: bool,
        set: Result<Vec<v1::ChannelAttribute>, Error>,
        reply: Respond<ops::UpdateChannelAttributes>,
    ) {
        let attributes = match set {
            Ok(attributes) => attributes,
            Err(error) => {
                reply.send(Err(error));
                return;
            }
        };
        if let Some(entry) = self.channels.get(key)
            && !entry.remote_regions.is_empty()
        {
            self.publish(RegionRecord::Attributes {
                channel: key.clone(),
                attributes: attributes.clone(),
                notify_members,
            });
        }
        self.tell_attributes(key, notify_members, attributes);
        reply.send(Ok(()));
    }

    /// Another region changed the channel's attributes: its set replaces this region's (the
    /// last change to arrive wins), and members are told if asked.
    pub(super) fn region_attributes(
        &mut self,
        key: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
        reply: Respond<ops::RegionAttributes>,
    ) {
        let ttl = self.limits(&key.app).channel_attributes_ttl;
        let expires_at_ms = if self.channels.contains_key(&key) {
            0
        } else {
            self.now.unix_ms + ttl.as_millis() as i64
        };
        self.wait(
            Some(Key::Channel(key.clone())),
            StoreWork::PutRegionAttributes {
                channel: key,
                attributes,
                notify_members,
                expires_at_ms,
                reply,
            },
        );
    }

    pub(super) fn region_attributes_set(
        &mut self,
        key: &ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
        stored: StoreResult<()>,
        reply: Respond<ops::RegionAttributes>,
    ) {
        if let Err(error) = stored {
            reply.send(Err(storage_error(error)));
            return;
        }
        self.tell_attributes(key, notify_members, attributes);
        reply.send(Ok(()));
    }

    /// The user's stored attributes, all or those named.
    pub(super) fn user_attributes(
        &mut self,
        read: ops::UserAttributes,
        reply: Respond<ops::UserAttributes>,
    ) {
        self.wait(None, StoreWork::UserAttributes { read, reply });
    }

    /// The channel's stored attributes, all or those named.
    pub(super) fn channel_attributes(
        &mut self,
        read: ops::ChannelAttributes,
        reply: Respond<ops::ChannelAttributes>,
    ) {
        self.wait(None, StoreWork::ChannelAttributes { read, reply });
    }

    fn tell_attributes(
        &mut self,
        key: &ChannelKey,
        notify_members: bool,
        attributes: Vec<v1::ChannelAttribute>,
    ) {
        if notify_members && let Some(entry) = self.channels.get(key) {
            let frame = SharedFrame::event(EventKind::AttributesUpdated(v1::AttributesUpdated {
                channel_id: key.channel.to_string(),
                attributes,
            }));
            fan_out(&mut self.effects, &entry.membership, None, Arc::new(frame));
        }
    }
}
