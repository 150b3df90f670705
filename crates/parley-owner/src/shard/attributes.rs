//! User and channel attributes. Each key's attribute writes run one at a time (the key's
//! commands wait), and channel writes compare-and-set, since another owner may write during a
//! hand-over.

use std::collections::BTreeMap;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::attributes::AttributeOp;
use parley_core::attributes::MAX_CHANNEL_TOTAL_BYTES;
use parley_core::attributes::MAX_USER_TOTAL_BYTES;
use parley_core::ids::UserId;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;
use parley_store::Store;
use parley_store::StoreResult;
use parley_store::StoredChannelAttributes;
use parley_store::StoredUserAttributes;

use super::Key;
use super::Respond;
use super::Resumed;
use super::Shard;
use crate::api::ChannelKey;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;
use crate::owner::storage_error;
use parley_core::time::unix_ms;

/// Compare-and-set attempts of one attribute write before it gives up.
const CAS_ATTEMPTS: usize = 8;

fn kept_changing() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the channel attributes kept changing, retry",
    )
}

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
        let store = self.store.clone();
        self.wait(Some(Key::User(user.clone())), async move {
            let updated = async {
                let stored = store
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
                let attributes = StoredUserAttributes {
                    attributes: next.into_iter().collect(),
                };
                store
                    .set_user_attributes(&user.app, &user.uid, attributes)
                    .await
                    .map_err(storage_error)
            };
            reply.send(updated.await);
            Resumed::Done
        });
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
        let store = self.store.clone();
        self.wait(Some(Key::Channel(key.clone())), async move {
            let set = write_channel_attributes(&*store, &key, &by, &op, ttl).await;
            Resumed::ChannelAttributesSet {
                channel: key,
                notify_members,
                set,
                reply,
            }
        });
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
            self.regions.publish(RegionRecord::Attributes {
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
            unix_ms() + ttl.as_millis() as i64
        };
        let store = self.store.clone();
        self.wait(Some(Key::Channel(key.clone())), async move {
            let record = StoredChannelAttributes {
                attributes: attributes.clone(),
                expires_at_ms,
            };
            let stored = store.put(&key.app, &key.channel, record).await;
            Resumed::RegionAttributesSet {
                channel: key,
                attributes,
                notify_members,
                stored,
                reply,
            }
        });
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
        let store = self.store.clone();
        self.wait(None, async move {
            let (user, keys) = (read.user, read.keys);
            let stored = store.user_attributes(&user.app, &user.uid).await;
            reply.send(stored.map_err(storage_error).map(|stored| {
                stored
                    .attributes
                    .into_iter()
                    .filter(|(key, _)| keys.is_empty() || keys.contains(key))
                    .collect()
            }));
            Resumed::Done
        });
    }

    /// The channel's stored attributes, all or those named.
    pub(super) fn channel_attributes(
        &mut self,
        read: ops::ChannelAttributes,
        reply: Respond<ops::ChannelAttributes>,
    ) {
        let store = self.store.clone();
        self.wait(None, async move {
            let (channel, keys) = (read.channel, read.keys);
            let stored = store.get(&channel.app, &channel.channel).await;
            reply.send(stored.map_err(storage_error).map(|record| {
                record
                    .unwrap_or_default()
                    .attributes
                    .into_iter()
                    .filter(|attribute| keys.is_empty() || keys.contains(&attribute.key))
                    .collect()
            }));
            Resumed::Done
        });
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
            self.fan_out(&entry.membership, None, frame);
        }
    }
}

/// Read, apply, compare-and-set: another writer in between (another owner during a hand-over)
/// makes the write start over, so the limits hold across writers. `ttl_ms`: the channel has no
/// members, so its attributes expire. Returns the new set.
async fn write_channel_attributes(
    store: &dyn Store,
    key: &ChannelKey,
    by: &UserId,
    op: &AttributeOp,
    ttl_ms: Option<i64>,
) -> Result<Vec<v1::ChannelAttribute>, Error> {
    for _ in 0..CAS_ATTEMPTS {
        let current_record = store
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
            expires_at_ms: ttl_ms.map_or(0, |ttl| now_ms + ttl),
        };
        let swapped = store
            .replace(&key.app, &key.channel, current_record, record)
            .await
            .map_err(storage_error)?;
        if swapped {
            return Ok(attributes);
        }
    }
    Err(kept_changing())
}

/// Sets when a channel's stored attributes expire (0: never), if it has any.
pub(super) async fn set_attribute_expiry(
    store: &dyn Store,
    key: &ChannelKey,
    expires_at_ms: i64,
) -> Result<(), Error> {
    for _ in 0..CAS_ATTEMPTS {
        let current = store
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
        if store
            .replace(&key.app, &key.channel, current, updated)
            .await
            .map_err(storage_error)?
        {
            return Ok(());
        }
    }
    Err(kept_changing())
}
