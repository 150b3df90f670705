//! The runtime around a shard of the engine (`parley_engine::Shard`): feeds it its commands, its store answers and its ticks, and
//! carries out what it decides ([`Effect`]). The store work runs side by side, so a slow store
//! delays only the keys that wait on it. The only code here that decides anything is the
//! composition of store calls a piece of store work is made of.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::attributes::AttributeOp;
use parley_core::attributes::MAX_CHANNEL_TOTAL_BYTES;
use parley_core::attributes::MAX_USER_TOTAL_BYTES;
use parley_core::ids::MessageId;
use parley_core::ids::UserId;
use parley_core::time::unix_ms;
use parley_proto::v1;
use parley_store::Conversation;
use parley_store::Scope;
use parley_store::Store;
use parley_store::StoredChannelAttributes;
use parley_store::StoredUserAttributes;
use tokio::sync::mpsc;

use parley_engine::Command;
use parley_engine::DirectoryWrite;
use parley_engine::Effect;
use parley_engine::Key;
use parley_engine::Loaded;
use parley_engine::Now;
use parley_engine::Numbered;
use parley_engine::OnReceipt;
use parley_engine::Resumed;
use parley_engine::Shard;
use parley_engine::StoreWork;
use parley_engine::muted;
use parley_engine::storage_error;

use crate::api::ChannelKey;
use crate::api::EventSink;
use crate::api::RegionLink;
use crate::api::RegionRecord;
use crate::ops::ChannelSend;
use crate::owner::Edges;

/// Store work a shard may have under way before it stops taking commands (they then wait in
/// its mailbox).
const MAX_WAITING: usize = 4096;
/// Session directory writes that may wait for the store; more are dropped (a node that takes a
/// user over then misses a session until its edge registers it again).
const WRITE_BEHIND: usize = 4096;
/// Compare-and-set attempts of one attribute write before it gives up.
const CAS_ATTEMPTS: usize = 8;

/// Store work under way: the key it holds up (if any) and the answer for the shard.
type Waiting = BoxFuture<'static, (Option<Key>, Resumed)>;

/// The time now, as a shard decides by it: tokio's clock for timers, so tests can pause time.
pub(crate) fn now() -> Now {
    Now {
        instant: tokio::time::Instant::now().into_std(),
        unix_ms: unix_ms(),
    }
}

/// What a shard's effects reach.
#[derive(Clone)]
pub(crate) struct Outlets {
    pub(crate) edges: Arc<Edges>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) regions: Arc<dyn RegionLink>,
}

struct Runtime {
    outlets: Outlets,
    /// For receipts that come after the shard has moved on; weak so the shard still ends when
    /// the owner goes.
    self_tx: mpsc::WeakSender<Command>,
    /// Session directory writes, done in order by one task beside the shard.
    directory: mpsc::Sender<DirectoryWrite>,
    waiting: FuturesUnordered<Waiting>,
}

/// Runs `shard` until its mailbox closes.
pub(crate) async fn run(
    mut shard: Shard,
    outlets: Outlets,
    self_tx: mpsc::WeakSender<Command>,
    mut command_rx: mpsc::Receiver<Command>,
    tick_every: Duration,
) {
    let (directory, writes) = mpsc::channel(WRITE_BEHIND);
    tokio::spawn(write_directory(outlets.store.clone(), writes));
    let mut runtime = Runtime {
        outlets,
        self_tx,
        directory,
        waiting: FuturesUnordered::new(),
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for effect in shard.take_effects() {
            runtime.apply(effect);
        }
        // Only now: a caller hears of its request after what it caused is queued.
        shard.release_answers();
        tokio::select! {
            Some((key, resumed)) = runtime.waiting.next(), if !runtime.waiting.is_empty() => {
                shard.resume(now(), key, resumed);
            }
            command = command_rx.recv(), if runtime.waiting.len() < MAX_WAITING => match command {
                Some(command) => shard.accept(now(), command),
                None => break,
            },
            _ = tick.tick() => shard.on_tick(now()),
        }
    }
}

impl Runtime {
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Deliver {
                edge,
                sessions,
                frame,
            } => match self.outlets.edges.get(edge) {
                Some(sink) => sink.deliver(&sessions, frame),
                None => tracing::warn!(edge = edge.0, "no route to edge, dropping delivery"),
            },
            Effect::DeliverPeer {
                session,
                receipt_id,
                frame,
                then,
            } => {
                let Some(sink) = self.outlets.edges.get(session.edge) else {
                    tracing::warn!(edge = session.edge.0, "no route to edge, dropping delivery");
                    return;
                };
                let receipt = match then {
                    OnReceipt::Caller(receipt) => receipt,
                    then => self.on_receipt(then),
                };
                sink.deliver_peer(session.session, receipt_id, frame, receipt);
            }
            Effect::EndSession { session, reason } => {
                if let Some(sink) = self.outlets.edges.get(session.edge) {
                    sink.end_session(session.session, reason);
                }
            }
            Effect::Event(event) => self.outlets.events.emit(event),
            Effect::Region(record) => self.outlets.regions.publish(record),
            Effect::Store { key, work } => {
                let store = self.outlets.store.clone();
                self.waiting
                    .push(async move { (key, perform(&*store, *work).await) }.boxed());
            }
            Effect::Directory(write) => {
                if self.directory.try_send(write).is_err() {
                    tracing::warn!("session directory writes are backed up; one dropped");
                }
            }
        }
    }

    /// Waits beside the shard for a receipt that leads somewhere other than a caller.
    fn on_receipt(&self, then: OnReceipt) -> oneshot::Sender<()> {
        let (receipt_tx, receipt_rx) = oneshot::channel();
        let (store, regions) = (self.outlets.store.clone(), self.outlets.regions.clone());
        let self_tx = self.self_tx.clone();
        tokio::spawn(async move {
            if receipt_rx.await.is_err() {
                return;
            }
            match then {
                OnReceipt::Caller(_) => {}
                OnReceipt::LeaveInbox { user, stored } => {
                    if let Err(error) = store.remove(&user.app, &user.uid, &stored).await {
                        tracing::warn!(%error, "removing a delivered offline message failed");
                    }
                }
                OnReceipt::Invitation {
                    callee,
                    invitation_id,
                } => {
                    if let Some(self_tx) = self_tx.upgrade() {
                        let receipt = Command::InvitationReceipt {
                            callee,
                            invitation_id,
                        };
                        let _ = self_tx.send(receipt).await;
                    }
                }
                OnReceipt::RegionInvitation {
                    callee,
                    invitation_id,
                } => regions.publish(RegionRecord::InvitationReceipt {
                    callee,
                    invitation_id,
                }),
            }
        });
        receipt_tx
    }
}

/// Writes the session directory in order (a register never overtakes the unregister before it).
async fn write_directory(store: Arc<dyn Store>, mut writes: mpsc::Receiver<DirectoryWrite>) {
    while let Some(write) = writes.recv().await {
        let written = match &write {
            DirectoryWrite::Register { user, session } => {
                store.register_session(&user.app, &user.uid, *session).await
            }
            DirectoryWrite::Unregister { user, session } => {
                store
                    .unregister_session(&user.app, &user.uid, *session)
                    .await
            }
        };
        if let Err(error) = written {
            tracing::warn!(%error, ?write, "a session directory write failed");
        }
    }
}

/// Does one piece of store work; what comes back goes to the shard.
pub(crate) async fn perform(store: &dyn Store, work: StoreWork) -> Resumed {
    match work {
        StoreWork::CheckBan {
            open,
            now_ms,
            reply,
        } => {
            let (app, uid) = (&open.user.app, &open.user.uid);
            let ban = store.restriction(app, &Scope::Login, uid, now_ms).await;
            Resumed::BanChecked { open, ban, reply }
        }
        StoreWork::ListInbox {
            user,
            session,
            max_age_ms,
            now_ms,
            reply,
        } => {
            let inbox = store.list(&user.app, &user.uid, max_age_ms, now_ms).await;
            Resumed::InboxListed {
                user,
                session,
                inbox,
                reply,
            }
        }
        StoreWork::ClearUserAttributes { user } => {
            let cleared = store
                .set_user_attributes(&user.app, &user.uid, StoredUserAttributes::default())
                .await;
            if let Err(error) = cleared {
                tracing::warn!(%error, uid = %user.uid, "clearing user attributes failed");
            }
            Resumed::Done
        }
        StoreWork::AppendPeer { peer, retention_ms } => {
            let conversation =
                Conversation::peers(peer.send.from.uid.clone(), peer.receiver.uid.clone());
            let stored = store
                .append(
                    &peer.receiver.app,
                    &conversation,
                    peer.stored.clone(),
                    retention_ms,
                )
                .await;
            Resumed::PeerStored { peer, stored }
        }
        StoreWork::LocatePeer { peer } => {
            let (app, uid) = (&peer.receiver.app, &peer.receiver.uid);
            let region = first_region(store.user_regions(app, uid).await);
            Resumed::PeerLocated { peer, region }
        }
        StoreWork::CachePeer { peer } => {
            let stored = store
                .push(
                    &peer.receiver.app,
                    &peer.receiver.uid,
                    peer.stored.clone(),
                    peer.limits,
                    peer.server_received_ts,
                )
                .await;
            Resumed::PeerCached { peer, stored }
        }
        StoreWork::LoadChannel {
            join,
            block,
            now_ms,
        } => {
            let loaded = load_channel(store, &join.key, block, now_ms).await;
            Resumed::ChannelLoaded { join, loaded }
        }
        StoreWork::Replay {
            join,
            is_new_member,
            after,
            announce,
            oldest_kept,
            query,
        } => {
            let conversation = Conversation::Channel(join.key.channel.clone());
            let stored = store.query(&join.key.app, &conversation, query).await;
            Resumed::Replayed {
                join,
                is_new_member,
                after,
                announce,
                oldest_kept,
                stored,
            }
        }
        StoreWork::StoreNumbered {
            message,
            retention_ms,
        } => {
            let stored = store_numbered(store, &message, retention_ms).await;
            Resumed::ChannelStored { message, stored }
        }
        StoreWork::SendToEmptyChannel {
            send,
            message_id,
            server_received_ts,
            retention_ms,
            reply,
        } => {
            let sent =
                send_to_empty_channel(store, &send, message_id, server_received_ts, retention_ms)
                    .await
                    .map(|()| crate::api::ChannelSent {
                        message_id,
                        server_received_ts,
                        seq: 0,
                    });
            reply.send(sent);
            Resumed::Done
        }
        StoreWork::ExpireAttributes {
            channel,
            expires_at_ms,
        } => {
            if let Err(error) = set_attribute_expiry(store, &channel, expires_at_ms).await {
                tracing::warn!(%error, channel = %channel.channel, "could not schedule attribute expiry");
            }
            Resumed::Done
        }
        StoreWork::AttributesForRegion { channel } => {
            let stored = store.get(&channel.app, &channel.channel).await;
            Resumed::AttributesForRegion { channel, stored }
        }
        StoreWork::LocateCallee {
            send,
            callee,
            reply,
        } => {
            let region = first_region(store.user_regions(&callee.app, &callee.uid).await);
            Resumed::InvitationLocated {
                send,
                region,
                reply,
            }
        }
        StoreWork::Ban { user, ban, reply } => {
            let stored = store.restrict(&user.app, &Scope::Login, ban).await;
            Resumed::Banned {
                user,
                stored,
                reply,
            }
        }
        StoreWork::Unban {
            user,
            now_ms,
            reply,
        } => {
            let lifted = store
                .lift(&user.app, &Scope::Login, &user.uid, now_ms)
                .await;
            reply.send(lifted.map_err(storage_error));
            Resumed::Done
        }
        StoreWork::Mute {
            channel,
            uid,
            mute,
            reply,
        } => {
            let scope = Scope::Channel(channel.channel.clone());
            let until_and_reason = (mute.until_ms, mute.reason.clone());
            let stored = store.restrict(&channel.app, &scope, mute).await;
            Resumed::MuteChanged {
                channel,
                uid,
                mute: Some(until_and_reason),
                changed: stored.map(|()| true).map_err(storage_error),
                reply,
            }
        }
        StoreWork::Unmute {
            channel,
            uid,
            now_ms,
            reply,
        } => {
            let scope = Scope::Channel(channel.channel.clone());
            let lifted = store.lift(&channel.app, &scope, &uid, now_ms).await;
            Resumed::MuteChanged {
                channel,
                uid,
                mute: None,
                changed: lifted.map_err(storage_error),
                reply,
            }
        }
        StoreWork::UpdateUserAttributes { user, op, reply } => {
            reply.send(update_user_attributes(store, &user, &op).await);
            Resumed::Done
        }
        StoreWork::UpdateChannelAttributes {
            channel,
            by,
            op,
            ttl_ms,
            notify_members,
            now_ms,
            reply,
        } => {
            let set = write_channel_attributes(store, &channel, &by, &op, ttl_ms, now_ms).await;
            Resumed::ChannelAttributesSet {
                channel,
                notify_members,
                set,
                reply,
            }
        }
        StoreWork::PutRegionAttributes {
            channel,
            attributes,
            notify_members,
            expires_at_ms,
            reply,
        } => {
            let record = StoredChannelAttributes {
                attributes: attributes.clone(),
                expires_at_ms,
            };
            let stored = store.put(&channel.app, &channel.channel, record).await;
            Resumed::RegionAttributesSet {
                channel,
                attributes,
                notify_members,
                stored,
                reply,
            }
        }
        StoreWork::UserAttributes { read, reply } => {
            let stored = store.user_attributes(&read.user.app, &read.user.uid).await;
            reply.send(stored.map_err(storage_error).map(|stored| {
                stored
                    .attributes
                    .into_iter()
                    .filter(|(key, _)| read.keys.is_empty() || read.keys.contains(key))
                    .collect()
            }));
            Resumed::Done
        }
        StoreWork::ChannelAttributes { read, reply } => {
            let stored = store.get(&read.channel.app, &read.channel.channel).await;
            reply.send(stored.map_err(storage_error).map(|record| {
                record
                    .unwrap_or_default()
                    .attributes
                    .into_iter()
                    .filter(|attribute| read.keys.is_empty() || read.keys.contains(&attribute.key))
                    .collect()
            }));
            Resumed::Done
        }
        StoreWork::QueryHistory { read, reply } => {
            let found = store.query(&read.app, &read.conversation, read.query).await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        }
        StoreWork::CountHistory { read, reply } => {
            let counted = store
                .count(&read.app, &read.conversation, read.start_ms, read.end_ms)
                .await;
            reply.send(counted.map_err(storage_error));
            Resumed::Done
        }
        StoreWork::Restrictions {
            read,
            now_ms,
            reply,
        } => {
            let found = store.restrictions(&read.app, &read.scope, now_ms).await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        }
        StoreWork::Events { read, reply } => {
            let found = store
                .events(&read.app, read.stream, read.after, read.limit)
                .await;
            reply.send(found.map_err(storage_error));
            Resumed::Done
        }
    }
}

/// The first region the directory names; none when it cannot say.
fn first_region(regions: parley_store::StoreResult<Vec<String>>) -> Option<String> {
    match regions {
        Ok(regions) => regions.into_iter().next(),
        Err(error) => {
            tracing::warn!(%error, "the region directory is unavailable");
            None
        }
    }
}

/// Reads where the channel's numbering stands and reserves the next `block` (so sending needs
/// the store only once per block), stops its attributes expiring (it has a member again), and
/// reads its mutes.
async fn load_channel(
    store: &dyn Store,
    key: &ChannelKey,
    block: u64,
    now_ms: i64,
) -> Result<Loaded, Error> {
    let high_water = store
        .high_water(&key.app, &key.channel)
        .await
        .map_err(storage_error)?;
    let reserved_seq = high_water + block;
    store
        .set_high_water(&key.app, &key.channel, reserved_seq)
        .await
        .map_err(storage_error)?;
    set_attribute_expiry(store, key, 0).await?;
    let mutes = store
        .restrictions(&key.app, &Scope::Channel(key.channel.clone()), now_ms)
        .await
        .map_err(storage_error)?
        .into_iter()
        .filter_map(|mute| Some((UserId::parse(&mute.uid).ok()?, mute.until_ms)))
        .collect();
    Ok(Loaded {
        high_water,
        reserved_seq,
        mutes,
    })
}

/// Reserves a new block of sequence numbers and keeps the message in history, as it needs.
async fn store_numbered(
    store: &dyn Store,
    message: &Numbered,
    retention_ms: i64,
) -> Result<(), Error> {
    let send = &message.send;
    if let Some(reserve) = message.reserve {
        store
            .set_high_water(&send.channel.app, &send.channel.channel, reserve)
            .await
            .map_err(storage_error)?;
    }
    if send.enable_history {
        let stored = v1::HistoryMessage {
            message_id: message.message_id.0,
            from: send.from.to_string(),
            message: Some(send.message.clone()),
            server_received_ts: message.server_received_ts,
            seq: message.seq,
        };
        let conversation = Conversation::Channel(send.channel.channel.clone());
        store
            .append(&send.channel.app, &conversation, stored, retention_ms)
            .await
            .map_err(storage_error)?;
    }
    Ok(())
}

/// A backend's message to a channel without members: refused if its sender is muted there,
/// kept in history (with sequence number 0) when asked.
async fn send_to_empty_channel(
    store: &dyn Store,
    send: &ChannelSend,
    message_id: MessageId,
    server_received_ts: i64,
    retention_ms: i64,
) -> Result<(), Error> {
    let (app, channel) = (&send.channel.app, &send.channel.channel);
    let scope = Scope::Channel(channel.clone());
    let mute = store
        .restriction(app, &scope, &send.from, server_received_ts)
        .await
        .map_err(storage_error)?;
    if let Some(mute) = mute {
        return Err(muted(mute.until_ms));
    }
    if send.enable_history {
        let stored = v1::HistoryMessage {
            message_id: message_id.0,
            from: send.from.to_string(),
            message: Some(send.message.clone()),
            server_received_ts,
            seq: 0,
        };
        let conversation = Conversation::Channel(channel.clone());
        store
            .append(app, &conversation, stored, retention_ms)
            .await
            .map_err(storage_error)?;
    }
    Ok(())
}

/// Read, apply, write: the user's owner is the only writer of its attributes.
async fn update_user_attributes(
    store: &dyn Store,
    user: &crate::api::UserKey,
    op: &AttributeOp,
) -> Result<(), Error> {
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
}

fn kept_changing() -> Error {
    Error::new(
        ErrorCode::Unavailable,
        "the channel attributes kept changing, retry",
    )
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
    now_ms: i64,
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
async fn set_attribute_expiry(
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
