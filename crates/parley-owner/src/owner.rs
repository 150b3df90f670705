//! [`Owner`]: routes each request to the shard task that owns its key.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::Hash;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use parley_core::Error;
use parley_core::app::AppDirectory;
use parley_core::ids::NodeId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::api::ChannelKey;
use crate::api::ChannelSend;
use crate::api::ChannelSent;
use crate::api::EdgeSink;
use crate::api::LeaveReason;
use crate::api::OpenSession;
use crate::api::OwnerApi;
use crate::api::PeerDispatch;
use crate::api::PeerOutcome;
use crate::api::PeerSend;
use crate::api::UserKey;
use crate::shard::Command;
use crate::shard::Shard;

/// Requests a shard may have queued before callers wait. Overflow policy: callers wait (the
/// client connection that drives them stops being read), nothing is dropped.
const SHARD_MAILBOX: usize = 4096;

#[derive(Clone, Debug)]
pub struct OwnerConfig {
    /// This node; also the generator number in message IDs.
    pub node: NodeId,
    /// Tasks that split the owned channels and users between them.
    pub shards: usize,
    /// How long a member whose connection was lost stays in its channels.
    pub member_grace: Duration,
    /// Least time between two MemberCountUpdated events of one channel.
    pub member_count_interval: Duration,
    /// How long a peer message waits for the receiving client's receipt.
    pub peer_receipt_timeout: Duration,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            node: NodeId(0),
            shards: 8,
            member_grace: Duration::from_secs(20),
            member_count_interval: Duration::from_secs(1),
            peer_receipt_timeout: Duration::from_secs(10),
        }
    }
}

/// Edges this owner delivers to, by node.
#[derive(Default)]
pub(crate) struct Edges {
    // A std lock: read on every delivery, written only when an edge comes or goes, never held
    // across an await.
    sinks: RwLock<HashMap<NodeId, Arc<dyn EdgeSink>>>,
}

impl Edges {
    pub(crate) fn get(&self, node: NodeId) -> Option<Arc<dyn EdgeSink>> {
        self.sinks
            .read()
            .expect("edge table lock poisoned")
            .get(&node)
            .cloned()
    }
}

/// The owner of every channel and user in `parley dev` (and, in a cluster, of its ring share).
pub struct Owner {
    shards: Vec<mpsc::Sender<Command>>,
    hasher: RandomState,
    edges: Arc<Edges>,
    config: OwnerConfig,
}

impl Owner {
    /// Starts the shard tasks. They end when the `Owner` is dropped.
    pub fn start(config: OwnerConfig, apps: Arc<AppDirectory>) -> Arc<Owner> {
        let edges = Arc::new(Edges::default());
        let shards = (0..config.shards.max(1))
            .map(|index| {
                let (command_tx, command_rx) = mpsc::channel(SHARD_MAILBOX);
                let generator = u16::try_from((config.node.0 << 4) | index as u64).unwrap_or(0);
                let shard = Shard::new(config.clone(), generator, apps.clone(), edges.clone());
                tokio::spawn(shard.run(command_rx));
                command_tx
            })
            .collect();
        Arc::new(Owner {
            shards,
            hasher: RandomState::new(),
            edges,
            config,
        })
    }

    pub fn register_edge(&self, node: NodeId, sink: Arc<dyn EdgeSink>) {
        self.edges
            .sinks
            .write()
            .expect("edge table lock poisoned")
            .insert(node, sink);
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

    fn user_shard(&self, user: &UserKey) -> &mpsc::Sender<Command> {
        self.shard_for(("user", user))
    }

    fn channel_shard(&self, channel: &ChannelKey) -> &mpsc::Sender<Command> {
        self.shard_for(("channel", channel))
    }
}

#[async_trait]
impl OwnerApi for Owner {
    async fn open_session(&self, open: OpenSession) -> Result<(), Error> {
        let shard = self.user_shard(&open.user);
        self.ask(shard, |reply| Command::OpenSession { open, reply })
            .await
    }

    async fn close_session(&self, user: UserKey, session: SessionRef) -> Result<(), Error> {
        let shard = self.user_shard(&user);
        self.ask(shard, |reply| Command::CloseSession {
            user,
            session,
            reply,
        })
        .await
    }

    async fn send_peer(&self, send: PeerSend) -> Result<PeerDispatch, Error> {
        let receiver = UserKey {
            app: send.from.app.clone(),
            uid: send.to.clone(),
        };
        let shard = self.user_shard(&receiver);
        let routed = self
            .ask(shard, |reply| Command::SendPeer { send, reply })
            .await?;
        let timeout = self.config.peer_receipt_timeout;
        let receipts = routed.receipts;
        let outcome = async move {
            if receipts.is_empty() {
                return PeerOutcome::Unreachable;
            }
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
        Ok(PeerDispatch {
            message_id: routed.message_id,
            server_received_ts: routed.server_received_ts,
            outcome: outcome.boxed(),
        })
    }

    async fn join(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
    ) -> Result<(), Error> {
        let shard = self.channel_shard(&channel);
        self.ask(shard, |reply| Command::Join {
            channel,
            uid,
            session,
            reply,
        })
        .await?
    }

    async fn leave(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
        reason: LeaveReason,
    ) -> Result<(), Error> {
        let shard = self.channel_shard(&channel);
        self.ask(shard, |reply| Command::Leave {
            channel,
            uid,
            session,
            reason,
            reply,
        })
        .await?
    }

    async fn send_channel(&self, send: ChannelSend) -> Result<ChannelSent, Error> {
        let shard = self.channel_shard(&send.channel);
        self.ask(shard, |reply| Command::SendChannel { send, reply })
            .await?
    }

    async fn members(
        &self,
        channel: ChannelKey,
        uid: UserId,
        session: SessionRef,
    ) -> Result<Vec<UserId>, Error> {
        let shard = self.channel_shard(&channel);
        self.ask(shard, |reply| Command::Members {
            channel,
            uid,
            session,
            reply,
        })
        .await?
    }

    async fn member_count(&self, channel: ChannelKey) -> Result<u32, Error> {
        let shard = self.channel_shard(&channel);
        self.ask(shard, |reply| Command::MemberCount { channel, reply })
            .await
    }
}
