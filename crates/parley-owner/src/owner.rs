//! [`Owner`]: routes each request to the shard task that owns its key; reads of what every
//! owner shares (history, restrictions, event logs) go to the shards in turn.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::Hash;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use futures_channel::oneshot;
use futures_util::FutureExt;
use parley_core::Error;
use parley_core::app::AppDirectory;
use parley_core::ids::AppId;
use parley_core::ids::MessageId;
use parley_core::ids::NodeId;
use parley_core::ring::Ring;
use parley_core::time::unix_ms;
use parley_engine::Command;
use parley_engine::OwnerConfig;
use parley_engine::PeerRouted;
use parley_engine::REGION_PEER_MARGIN;
use parley_engine::Shard;
use parley_engine::history_cutoff;
use parley_engine::storage_error;
use parley_proto::v1;
use parley_store::InboxLimits;
use parley_store::Store;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::api::EdgeSink;
use crate::api::EventSink;
use crate::api::PeerDispatch;
use crate::api::PeerOutcome;
use crate::api::PeerSend;
use crate::api::RegionLink;
use crate::api::UserKey;
use crate::ops::Owners;
use crate::ops::Request;
use crate::ops::Response;
use crate::ops::Route;
use crate::runtime;
use crate::runtime::Outlets;

/// Requests a shard may have queued before callers wait. Overflow policy: callers wait (the
/// client connection that drives them stops being read), nothing is dropped.
const SHARD_MAILBOX: usize = 4096;
/// How often expired channel attributes and old history are swept.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(30);

/// Edges this owner delivers to, by node.
#[derive(Default)]
pub(crate) struct Edges {
    // A blocking lock: read on every delivery, written only when an edge comes or goes, never held
    // across an await.
    sinks: RwLock<HashMap<NodeId, Arc<dyn EdgeSink>>>,
}

impl Edges {
    pub(crate) fn register(&self, node: NodeId, sink: Arc<dyn EdgeSink>) {
        self.sinks.write().insert(node, sink);
    }

    pub(crate) fn unregister(&self, node: NodeId) {
        self.sinks.write().remove(&node);
    }

    pub(crate) fn get(&self, node: NodeId) -> Option<Arc<dyn EdgeSink>> {
        self.sinks.read().get(&node).cloned()
    }
}

/// The owner of every channel and user in `parley dev` (and, in a cluster, of its ring share).
pub struct Owner {
    shards: Vec<mpsc::Sender<Command>>,
    hasher: RandomState,
    /// The shard the next read of shared state goes to.
    next_any: AtomicUsize,
    edges: Arc<Edges>,
    apps: Arc<AppDirectory>,
    store: Arc<dyn Store>,
    config: OwnerConfig,
}

impl Owner {
    /// Starts the shard tasks and the maintenance task. They end when the `Owner` is dropped.
    pub async fn start(
        config: OwnerConfig,
        apps: Arc<AppDirectory>,
        store: Arc<dyn Store>,
        events: Arc<dyn EventSink>,
        regions: Arc<dyn RegionLink>,
    ) -> Result<Arc<Owner>, Error> {
        // Nothing has members yet: attributes left without an expiry by a crash get one now.
        let ttl = apps
            .all()
            .iter()
            .map(|app| app.limits.channel_attributes_ttl)
            .max()
            .unwrap_or_default();
        let now = unix_ms();
        store
            .expire(now, Some(now + ttl.as_millis() as i64))
            .await
            .map_err(storage_error)?;

        let edges = Arc::new(Edges::default());
        let shards = (0..config.shards.max(1))
            .map(|index| {
                let (command_tx, command_rx) = mpsc::channel(SHARD_MAILBOX);
                let generator = u16::try_from((config.node.0 << 4) | index as u64).unwrap_or(0);
                let shard = Shard::new(
                    config.clone(),
                    generator,
                    apps.clone(),
                    regions.spans_regions(),
                    runtime::now(),
                );
                let outlets = Outlets {
                    edges: edges.clone(),
                    store: store.clone(),
                    events: events.clone(),
                    regions: regions.clone(),
                };
                let tick_every = config.member_count_interval.min(Duration::from_millis(100));
                let self_tx = command_tx.downgrade();
                tokio::spawn(runtime::run(
                    shard, outlets, self_tx, command_rx, tick_every,
                ));
                command_tx
            })
            .collect::<Vec<_>>();
        observe_mailboxes(&shards);
        let owner = Arc::new(Owner {
            shards,
            hasher: RandomState::new(),
            next_any: AtomicUsize::new(0),
            edges,
            apps,
            store,
            config,
        });
        tokio::spawn(maintain(Arc::downgrade(&owner)));
        Ok(owner)
    }

    pub fn register_edge(&self, node: NodeId, sink: Arc<dyn EdgeSink>) {
        self.edges.register(node, sink);
    }

    /// Forgets an edge that left the cluster.
    pub fn unregister_edge(&self, node: NodeId) {
        self.edges.unregister(node);
    }

    /// The edges deliveries can go to.
    pub fn edge_nodes(&self) -> Vec<NodeId> {
        self.edges.sinks.read().keys().copied().collect()
    }

    /// Edge `node` left the cluster: its sessions count as lost connections.
    pub async fn edge_gone(&self, node: NodeId) {
        for shard in &self.shards {
            let _ = self
                .ask(shard, |reply| Command::EdgeGone { node, reply })
                .await;
        }
    }

    /// After a ring change: has every shard drop the state of users and channels that node
    /// `me` no longer owns, once past the requests it already had and before any queued after.
    /// Returns once every shard has it queued (waiting only while a mailbox is full), not once
    /// they are done: a shard behind on slow storage does not hold up the next ring change.
    pub async fn forget_unowned(&self, ring: Arc<Ring>, me: NodeId) {
        for shard in &self.shards {
            let ring = ring.clone();
            let _ = shard.send(Command::Forget { ring, me }).await;
        }
    }

    /// Tells the other regions again of every channel with members here, asking for their
    /// answer (the region bridge does this when it starts: what was said before it read
    /// anything is not lost on it).
    pub async fn announce_regions(&self) {
        for shard in &self.shards {
            let _ = self
                .ask(shard, |reply| Command::AnnounceRegions { reply })
                .await;
        }
    }

    fn shard_for(&self, key: impl Hash) -> &mpsc::Sender<Command> {
        let index = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[index]
    }

    async fn ask<T>(
        &self,
        shard: &mpsc::Sender<Command>,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply_tx, reply_rx) = oneshot::channel();
        shard
            .send(command(reply_tx))
            .await
            .map_err(|_| Error::internal("owner shard stopped"))?;
        reply_rx
            .await
            .map_err(|_| Error::internal("owner shard dropped a request"))
    }

    /// The shard of the key `route` names.
    fn shard_of(&self, route: Route<'_>) -> &mpsc::Sender<Command> {
        match route {
            Route::User(app, uid) => self.shard_for(("user", app, uid)),
            Route::Channel(app, channel) => self.shard_for(("channel", app, channel)),
            // Any shard can: they take turns, so a burst of reads holds up no one shard.
            Route::Any(_) => {
                let turn = self.next_any.fetch_add(1, Ordering::Relaxed);
                &self.shards[turn % self.shards.len()]
            }
        }
    }

    fn inbox_limits(&self, app: &AppId) -> InboxLimits {
        let limits = self
            .apps
            .get(app.as_str())
            .map(|app| app.limits.clone())
            .unwrap_or_default();
        InboxLimits {
            max_count: limits.offline_max_count,
            max_age_ms: limits.offline_max_age.as_millis() as i64,
        }
    }
}

/// Sweeps expired channel attributes and history past retention, until the owner is gone.
async fn maintain(owner: std::sync::Weak<Owner>) {
    let mut every = tokio::time::interval(MAINTENANCE_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(owner) = owner.upgrade() else { return };
        if let Err(error) = owner.store.expire(unix_ms(), None).await {
            tracing::warn!(%error, "channel attribute expiry failed");
        }
        for app in owner.apps.all() {
            let cutoff = history_cutoff(&app.limits, unix_ms());
            match owner.store.purge(&app.app_id, cutoff).await {
                Ok(0) => {}
                Ok(purged) => {
                    tracing::info!(app = %app.app_id, purged, "history past retention purged")
                }
                Err(error) => tracing::warn!(%error, "history purge failed"),
            }
        }
    }
}

#[async_trait]
impl Owners for Owner {
    async fn call(&self, mut request: Request) -> Result<Response, Error> {
        let span = match &mut request {
            Request::ChannelSend(send) => owner_span(&mut send.trace, "channel"),
            _ => tracing::Span::none(),
        };
        let shard = self.shard_of(request.route());
        self.ask(shard, |reply| Command::Call { request, reply })
            .instrument(span)
            .await?
    }

    async fn send_peer(&self, mut send: PeerSend) -> Result<PeerDispatch, Error> {
        let span = owner_span(&mut send.trace, "peer");
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to.clone(),
        };
        let offline_copy = send
            .enable_offline
            .then(|| (send.from.uid.clone(), send.message.clone()));
        let limits = self.inbox_limits(&receiver.app);
        let shard = self.shard_of(Route::User(&receiver.app, &receiver.uid));
        let routed = self
            .ask(shard, |reply| Command::SendPeer {
                send,
                limits,
                reply,
            })
            .instrument(span)
            .await??;
        let (message_id, server_received_ts, receipts) = match routed {
            PeerRouted::Cached {
                message_id,
                server_received_ts,
            } => {
                return Ok(PeerDispatch {
                    message_id,
                    server_received_ts,
                    outcome: async { PeerOutcome::Cached }.boxed(),
                });
            }
            PeerRouted::Delivered {
                message_id,
                server_received_ts,
                receipts,
            } => (message_id, server_received_ts, receipts),
            PeerRouted::Remote {
                message_id,
                server_received_ts,
                outcome,
            } => {
                // The receiver's region keeps it for them if they are gone: nothing is kept here.
                let wait = self.config.peer_receipt_timeout + REGION_PEER_MARGIN;
                let outcome = async move {
                    match tokio::time::timeout(wait, outcome).await {
                        Ok(Ok(outcome)) => outcome,
                        _ => PeerOutcome::TimedOut,
                    }
                };
                return Ok(PeerDispatch {
                    message_id,
                    server_received_ts,
                    outcome: outcome.boxed(),
                });
            }
            PeerRouted::Repeat => {
                // Only a message from another region repeats; its first copy answered.
                return Ok(PeerDispatch {
                    message_id: MessageId(0),
                    server_received_ts: 0,
                    outcome: async { PeerOutcome::Received }.boxed(),
                });
            }
        };
        let timeout = self.config.peer_receipt_timeout;
        let store = self.store.clone();
        let outcome = async move {
            let outcome = if receipts.is_empty() {
                PeerOutcome::Unreachable
            } else {
                // The first receipt wins; a receiver that ends without one is a session that ended.
                let any_receipt = futures_util::future::select_ok(
                    receipts
                        .into_iter()
                        .map(|receipt| Box::pin(receipt.map(|result| result.map_err(|_| ())))),
                );
                match tokio::time::timeout(timeout, any_receipt).await {
                    Ok(Ok(_)) => PeerOutcome::Received,
                    Ok(Err(())) => PeerOutcome::Unreachable,
                    Err(_) => PeerOutcome::TimedOut,
                }
            };
            // The peer's sessions vanished before acknowledging: keep the message if asked to.
            match (outcome, offline_copy) {
                (PeerOutcome::Unreachable | PeerOutcome::TimedOut, Some((from, body))) => {
                    let stored = v1::HistoryMessage {
                        message_id: message_id.0,
                        from: from.to_string(),
                        message: Some(body),
                        server_received_ts,
                        seq: 0,
                    };
                    match store
                        .push(&receiver.app, &receiver.uid, stored, limits, unix_ms())
                        .await
                    {
                        Ok(()) => PeerOutcome::Cached,
                        Err(error) => {
                            tracing::warn!(%error, "offline copy of an unacknowledged message failed");
                            outcome
                        }
                    }
                }
                _ => outcome,
            }
        };
        Ok(PeerDispatch {
            message_id,
            server_received_ts,
            outcome: outcome.boxed(),
        })
    }
}

/// The owner's span of a traced message, a child of its sender's: sequencing, storing and
/// handing it to the edges. `trace` then names this span, so the edges' deliveries hang under
/// it. An untraced message gets no span.
fn owner_span(trace: &mut Option<String>, kind: &'static str) -> tracing::Span {
    let Some(parent) = trace.as_deref() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "process",
        otel.kind = "consumer",
        parley.role = "owner",
        messaging.system = "parley",
        messaging.operation.type = "process",
        parley.message.kind = kind,
    );
    parley_telemetry::follow(&span, parent);
    if let Some(own) = parley_telemetry::traceparent(&span) {
        *trace = Some(own);
    }
    span
}

/// The commands waiting in each shard's mailbox, as a gauge (a shard that falls behind shows
/// here before its callers time out). Weak senders: the gauge keeps no shard alive.
fn observe_mailboxes(shards: &[mpsc::Sender<Command>]) {
    let mailboxes: Vec<_> = shards.iter().map(mpsc::Sender::downgrade).collect();
    parley_telemetry::meter()
        .u64_observable_gauge("parley.shard.queue.depth")
        .with_description("Commands waiting in an owner shard's mailbox")
        .with_unit("{command}")
        .with_callback(move |observer| {
            for (index, mailbox) in mailboxes.iter().enumerate() {
                if let Some(mailbox) = mailbox.upgrade() {
                    let waiting = mailbox.max_capacity() - mailbox.capacity();
                    observer.observe(
                        waiting as u64,
                        &[parley_telemetry::KeyValue::new("shard", index as i64)],
                    );
                }
            }
        })
        .build();
}
