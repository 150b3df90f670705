//! A node of a cluster: any of the edge, owner and meta roles. Data nodes (edges, owners)
//! heartbeat to meta and take every newer topology it sends: the ring of owners that are up, the
//! edges deliveries go to, everyone's addresses.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::ids::NodeId;
use parley_core::ring::DEFAULT_VIRTUAL_NODES;
use parley_core::ring::Ring;
use parley_edge::Edge;
use parley_edge::EdgeConfig;
use parley_edge::cluster::EdgeService;
use parley_events::PipelineConfig;
use parley_meta::MetaConfig;
use parley_meta::MetaNode;
use parley_meta::handoff;
use parley_meta::handoff::Applied;
use parley_owner::EdgeSink;
use parley_owner::Owner;
use parley_owner::OwnerConfig;
use parley_owner::Owners;
use parley_owner::cluster::OwnerService;
use parley_owner::cluster::Receipts;
use parley_owner::cluster::RemoteEdge;
use parley_owner::cluster::RemoteOwners;
use parley_owner::cluster::SharedTopology;
use parley_owner::cluster::Topology;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::NodeStatus;
use parley_proto::cluster::v1::cluster_client;
use parley_proto::cluster::v1::cluster_server;
use parley_proto::v1::connection_state_changed::Reason;
use parley_store::Store;
use parley_tls::ServerStream;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long sessions get to say goodbye when the node stops or drains.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a node is and where the others reach it.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub node: NodeId,
    pub edge: bool,
    pub owner: bool,
    /// `HOST:PORT` of this node's cluster gRPC API, as the others reach it.
    pub grpc_address: String,
    /// `HOST:PORT` of an edge's client API, as clients reach it.
    pub http_address: String,
    /// The meta nodes' gRPC addresses, for data nodes to heartbeat to.
    pub metas: Vec<String>,
    /// Set when this node is a meta node too.
    pub meta: Option<MetaConfig>,
}

/// The topology of a meta answer: the ring of the owners that are up, at meta's epoch.
pub fn topology(cluster: &wire::ClusterTopology) -> Topology {
    let owners: Vec<NodeId> = handoff::ring_owners(cluster)
        .into_iter()
        .map(NodeId)
        .collect();
    Topology {
        ring: Ring::new(cluster.epoch, &owners, DEFAULT_VIRTUAL_NODES),
        addresses: cluster
            .nodes
            .iter()
            .map(|info| (NodeId(info.node), info.grpc_address.clone()))
            .collect::<BTreeMap<_, _>>(),
        // A draining edge still has clients until they are gone.
        edges: cluster
            .nodes
            .iter()
            .filter(|info| info.edge && info.status() != NodeStatus::Down)
            .map(|info| NodeId(info.node))
            .collect(),
    }
}

/// What a running node serves.
pub struct ClusterNode {
    pub spec: NodeSpec,
    handle: ClusterHandle,
    /// This node's edge's view of the owners.
    owners: Option<Arc<RemoteOwners>>,
    pub meta: Option<Arc<MetaNode>>,
    /// The client-facing router when this node is an edge.
    pub router: Option<parley_edge::Router>,
}

/// Builds the node `spec` describes. `store` is needed by owners only.
pub async fn node(
    spec: NodeSpec,
    apps: AppDirectory,
    mut owner_config: OwnerConfig,
    mut edge_config: EdgeConfig,
    events: PipelineConfig,
    regions: Option<parley_bridge::RegionConfig>,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<ClusterNode> {
    let me = spec.node;
    // The apps of the node's own configuration; meta's come on top with every topology.
    let local_apps: Vec<AppConfig> = apps.all().iter().map(|app| app.as_ref().clone()).collect();
    let apps = Arc::new(apps);
    let (published, shared): (watch::Sender<Arc<Topology>>, SharedTopology) =
        watch::channel(Arc::new(Topology {
            ring: Ring::new(0, &[], DEFAULT_VIRTUAL_NODES),
            addresses: BTreeMap::new(),
            edges: BTreeSet::new(),
        }));
    let (owner, bridge) = if spec.owner {
        owner_config.node = me;
        let store = store.ok_or_else(|| anyhow::anyhow!("an owner needs a store"))?;
        let (owner, bridge) =
            crate::node::start_owner(owner_config, &apps, store, events, regions).await?;
        (Some(owner), bridge)
    } else {
        (None, None)
    };
    let (edge, owners) = if spec.edge {
        edge_config.node = me;
        let local = owner.clone().map(|owner| (me, owner as Arc<dyn Owners>));
        let owners = Arc::new(RemoteOwners::new(shared.clone(), local));
        (
            Some(Edge::new(edge_config, apps.clone(), owners.clone())),
            Some(owners),
        )
    } else {
        (None, None)
    };
    if let (Some(owner), Some(edge)) = (&owner, &edge) {
        owner.register_edge(me, edge.clone());
    }
    // Owners bring in the other regions' traffic, each record to its key's owner.
    if let (Some(owner), Some(mut bridge)) = (&owner, bridge) {
        bridge.owners = match &owners {
            Some(owners) => owners.clone(),
            None => Arc::new(RemoteOwners::new(
                shared.clone(),
                Some((me, owner.clone() as Arc<dyn Owners>)),
            )),
        };
        tokio::spawn(bridge.run());
    }
    let meta = match &spec.meta {
        Some(config) => Some(MetaNode::start(config.clone()).await?),
        None => None,
    };
    let router = edge.clone().map(parley_edge::router);
    let handle = ClusterHandle {
        inner: Arc::new(HandleInner {
            me,
            topology: published,
            receipts: Arc::new(Receipts::default()),
            edge,
            owner,
            leaving: AtomicBool::new(false),
            apps: apps.clone(),
            local_apps,
        }),
    };
    handle.observe_ring();
    Ok(ClusterNode {
        handle,
        spec,
        owners,
        meta,
        router,
    })
}

/// What can still be reached of a node once it serves: its view of the cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    me: NodeId,
    /// Published to everything on the node that routes ([`SharedTopology`]).
    topology: watch::Sender<Arc<Topology>>,
    /// Receipts this node's owner awaits from edges on other nodes.
    receipts: Arc<Receipts>,
    edge: Option<Arc<Edge>>,
    owner: Option<Arc<Owner>>,
    /// Set once meta said this node drains or is down: its clients have been sent away.
    leaving: AtomicBool,
    /// What the edge and owner serve: `local_apps` and meta's apps (meta's win).
    apps: Arc<AppDirectory>,
    local_apps: Vec<AppConfig>,
}

impl ClusterHandle {
    /// Makes this node the whole cluster, with no meta: its ring is itself alone (`parley dev`).
    pub fn stand_alone(&self) {
        let me = self.inner.me;
        self.inner.topology.send_replace(Arc::new(Topology {
            ring: Ring::new(1, &[me], DEFAULT_VIRTUAL_NODES),
            addresses: BTreeMap::new(),
            edges: BTreeSet::from([me]),
        }));
    }

    /// The node's edge, when it is one.
    pub fn edge(&self) -> Option<Arc<Edge>> {
        self.inner.edge.clone()
    }

    /// The node's current topology.
    pub fn topology(&self) -> Arc<Topology> {
        self.inner.topology.borrow().clone()
    }

    /// Whether this data node should take traffic: meta has given it a ring with owners in it
    /// and has not told it to drain.
    pub fn ready(&self) -> Result<(), String> {
        let topology = self.topology();
        if topology.ring.epoch() == 0 {
            return Err("no topology from meta yet".to_owned());
        }
        if topology.ring.nodes().is_empty() {
            return Err("no owner is up".to_owned());
        }
        if self.inner.leaving.load(Ordering::SeqCst) {
            return Err("draining".to_owned());
        }
        Ok(())
    }

    /// The ring epoch as a gauge, read at each collection.
    fn observe_ring(&self) {
        let inner = Arc::downgrade(&self.inner);
        parley_telemetry::meter()
            .u64_observable_gauge("parley.ring.epoch")
            .with_description("The epoch of the ring of owners this node uses")
            .with_callback(move |observer| {
                if let Some(inner) = inner.upgrade() {
                    let epoch = inner.topology.borrow().ring.epoch();
                    observer.observe(epoch, &[]);
                }
            })
            .build();
    }
}

/// Carries out what meta's newer topologies mean for this node (`parley_meta::handoff` decides
/// it), one topology at a time: the one task that owns what the node has applied. Meta's answers
/// reach it through a watch, so the heartbeat loop never waits for it; topologies that arrive
/// while one is being applied are taken as one, the newest.
struct HandOff {
    handle: ClusterHandle,
    applied: Applied,
}

impl HandOff {
    async fn run(mut self, mut from_meta: watch::Receiver<Option<wire::ClusterTopology>>) {
        while from_meta.changed().await.is_ok() {
            let next = from_meta.borrow_and_update().clone();
            if let Some(next) = next {
                self.apply(&next).await;
            }
        }
    }

    async fn apply(&mut self, cluster: &wire::ClusterTopology) {
        let inner = &self.handle.inner;
        inner
            .apps
            .replace(handoff::apps(&inner.local_apps, cluster));
        let plan = handoff::plan(&self.applied, cluster, inner.me.0);
        if !plan.newer {
            return;
        }
        if let Some(owner) = &inner.owner {
            for node in &plan.edges_gone {
                owner.unregister_edge(NodeId(*node));
                self.applied.edges.remove(node);
            }
            for (node, run) in plan.edges_new {
                let id = NodeId(node);
                match RemoteEdge::connect(id, &run.address, inner.me, inner.receipts.clone()) {
                    Ok(sink) => {
                        owner.register_edge(id, sink as Arc<dyn EdgeSink>);
                        self.applied.edges.insert(node, run);
                    }
                    Err(error) => tracing::warn!(edge = node, %error, "cannot reach an edge"),
                }
            }
        }
        let next = topology(cluster);
        tracing::info!(
            node = inner.me.0,
            epoch = cluster.epoch,
            owners = ?next.ring.nodes(),
            "new topology"
        );
        let ring = Arc::new(next.ring.clone());
        inner.topology.send_replace(Arc::new(next));
        self.applied.topology = Some(cluster.clone());
        if let Some(owner) = &inner.owner {
            // Gone, or a new run of it: the sessions it held are lost either way.
            for node in &plan.edges_gone {
                let owner = owner.clone();
                let node = NodeId(*node);
                tokio::spawn(async move { owner.edge_gone(node).await });
            }
            // Queued on every shard before the next topology is taken, so no shard drops keys
            // by an older ring after it served a newer one.
            if plan.owners_changed {
                owner.forget_unowned(ring, inner.me).await;
            }
        }
        if plan.owners_changed
            && let Some(edge) = &inner.edge
        {
            edge.reregister_all();
        }
        match plan.leaving {
            Some(true) => {
                inner.leaving.store(true, Ordering::SeqCst);
                if let Some(edge) = inner.edge.clone() {
                    // Clients move to another edge and resume there.
                    tracing::info!(node = inner.me.0, "sending this edge's clients away");
                    tokio::spawn(async move {
                        edge.end_all_sessions(Reason::ServerShutdown, SHUTDOWN_GRACE)
                            .await
                    });
                }
            }
            Some(false) => {
                inner.leaving.store(false, Ordering::SeqCst);
                if let Some(edge) = &inner.edge {
                    edge.reopen();
                }
            }
            None => {}
        }
    }
}

impl ClusterNode {
    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    /// This node as it introduces itself to meta.
    fn info(&self, incarnation: u64) -> wire::NodeInfo {
        wire::NodeInfo {
            node: self.spec.node.0,
            edge: self.spec.edge,
            owner: self.spec.owner,
            grpc_address: self.spec.grpc_address.clone(),
            http_address: self.spec.http_address.clone(),
            status: NodeStatus::Up as i32,
            incarnation,
        }
    }
}

/// Serves the node's gRPC API on `grpc`, and its clients on `http` when it is an edge, until
/// `shutdown` completes; a data node follows meta meanwhile.
///
/// On shutdown a data node first asks meta to drain it, so owners hand their keys over and
/// clients reconnect elsewhere before the node is gone.
pub async fn serve(
    node: ClusterNode,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    let me = node.spec.node;
    tracing::info!(node = me.0, %grpc_addr, "cluster api listening");
    let inner = &node.handle.inner;
    let owner_service = inner.owner.clone().map(|owner| {
        OwnerService::new(
            me,
            owner as Arc<dyn Owners>,
            inner.topology.subscribe(),
            inner.receipts.clone(),
        )
    });
    let edge_service = match (&inner.edge, &node.owners) {
        (Some(edge), Some(owners)) => Some(EdgeService::new(edge.clone(), owners.clone())),
        _ => None,
    };
    let (raft_service, meta_service) = match &node.meta {
        Some(meta) => {
            let (raft, api) = meta.services();
            (Some(raft), Some(api))
        }
        None => (None, None),
    };
    let status_service = cluster_server::ClusterServer::new(StatusService {
        handle: node.handle(),
    });
    let mut grpc_stop = stop_rx.clone();
    // With cluster TLS, only mutual TLS (the handshake is done as each connection is first read).
    let acceptor = parley_proto::cluster_auth::cluster_acceptor();
    let grpc_server = tonic::transport::Server::builder()
        // Every service of the cluster API takes only calls that carry the cluster secret.
        .layer(tonic::service::InterceptorLayer::new(
            parley_proto::cluster_auth::check_cluster_secret,
        ))
        .add_optional_service(owner_service)
        .add_optional_service(edge_service)
        .add_optional_service(raft_service)
        .add_optional_service(meta_service)
        .add_service(status_service)
        .serve_with_incoming_shutdown(
            // Answers and deliveries to other nodes go out at once (no Nagle delay).
            tokio_stream::StreamExt::map(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                move |tcp| tcp.map(|tcp| ServerStream::new(tcp, acceptor.as_ref())),
            ),
            async move {
                let _ = grpc_stop.wait_for(|stop| *stop).await;
            },
        );
    let data_node = node.spec.edge || node.spec.owner;
    let following = (data_node && !node.spec.metas.is_empty()).then(|| {
        let (to_handoff, from_meta) = watch::channel(None);
        let handoff = HandOff {
            handle: node.handle(),
            applied: Applied::default(),
        };
        let applied = inner.topology.subscribe();
        [
            tokio::spawn(handoff.run(from_meta)),
            tokio::spawn(parley_meta::watch::follow(
                node.info(rand::random()),
                node.spec.metas.clone(),
                move |cluster| {
                    to_handoff.send_replace(Some(cluster));
                },
                move || applied.borrow().ring.epoch(),
            )),
        ]
    });
    let handle = node.handle();
    let metas = node.spec.metas.clone();
    let meta = node.meta.clone();
    let edge_config = inner.edge.as_ref().map(|edge| edge.config().clone());
    let http_server = async {
        match (node.router, http, edge_config) {
            (Some(router), Some(listener), Some(config)) => {
                let mut http_stop = stop_rx.clone();
                parley_edge::serve(listener, router, &config, async move {
                    let _ = http_stop.wait_for(|stop| *stop).await;
                })
                .await
            }
            _ => Ok(()),
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        if data_node && !metas.is_empty() {
            leave_gracefully(&handle, &metas).await;
        }
        for task in following.into_iter().flatten() {
            task.abort();
        }
        // Clients first, so they hear SERVER_SHUTDOWN and reconnect elsewhere.
        if let Some(edge) = &handle.inner.edge {
            edge.end_all_sessions(Reason::ServerShutdown, SHUTDOWN_GRACE)
                .await;
        }
        if let Some(meta) = meta {
            meta.shutdown().await;
        }
        let _ = stop_tx.send(true);
    });
    let (grpc_result, http_result) = tokio::join!(grpc_server, http_server);
    grpc_result?;
    http_result?;
    Ok(())
}

/// Asks meta to drain this node and waits (a little) until the others have been told: owners
/// then hold nothing and edges have sent their clients away before the node stops.
async fn leave_gracefully(handle: &ClusterHandle, metas: &[String]) {
    let me = handle.inner.me;
    let drained = tokio::time::timeout(
        SHUTDOWN_GRACE,
        parley_meta::watch::command(metas, |mut client| async move {
            client.drain(wire::NodeCommand { node: me.0 }).await
        }),
    )
    .await;
    match drained {
        Ok(Ok(reply)) => {
            // The others hear of the new epoch within a heartbeat hold; so does this node.
            let topology = handle.inner.topology.subscribe();
            if parley_owner::cluster::reach_epoch(&topology, reply.epoch, SHUTDOWN_GRACE).await {
                tracing::info!(node = me.0, epoch = reply.epoch, "drained");
            } else {
                tracing::warn!(
                    node = me.0,
                    epoch = reply.epoch,
                    "drained, but its epoch never came"
                );
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "draining on shutdown failed"),
        Err(_) => tracing::warn!("draining on shutdown timed out"),
    }
}

/// Answers `parley cluster status --node`.
struct StatusService {
    handle: ClusterHandle,
}

#[tonic::async_trait]
impl cluster_server::Cluster for StatusService {
    async fn status(
        &self,
        _request: tonic::Request<wire::Done>,
    ) -> Result<tonic::Response<wire::StatusReply>, tonic::Status> {
        let topology = self.handle.topology();
        let me = self.handle.inner.me;
        let owners = topology.ring.nodes();
        let members = topology
            .addresses
            .iter()
            .map(|(node, address)| wire::MemberStatus {
                node: node.0,
                address: address.clone(),
                edge: topology.edges.contains(node),
                owner: owners.contains(node),
                sessions: match (&self.handle.inner.edge, *node == me) {
                    (Some(edge), true) => edge.session_count() as u64,
                    _ => 0,
                },
            })
            .collect();
        Ok(tonic::Response::new(wire::StatusReply {
            node: me.0,
            ring_epoch: topology.ring.epoch(),
            members,
        }))
    }
}

/// `parley cluster …`: asks meta (or one node) and prints the answer as one JSON line.
pub async fn operate(command: crate::cli::ClusterCommand) -> anyhow::Result<()> {
    use crate::cli::ClusterCommand;
    let line = match command {
        ClusterCommand::Status { meta, node } => match node {
            Some(node) => node_status(&node).await?,
            None => {
                let topology = parley_meta::watch::command(&meta, |mut client| async move {
                    client.topology(wire::TopologyRequest {}).await
                })
                .await?;
                topology_json(&topology)
            }
        },
        ClusterCommand::AddNode {
            meta,
            node_id,
            address,
        } => {
            let reply = parley_meta::watch::command(&meta, |mut client| {
                let address = address.clone();
                async move {
                    client
                        .add_meta(wire::AddMetaRequest {
                            node: node_id,
                            address,
                        })
                        .await
                }
            })
            .await?;
            serde_json::json!({ "added": node_id, "epoch": reply.epoch })
        }
        ClusterCommand::RemoveNode { meta, node_id } => {
            let reply = parley_meta::watch::command(&meta, |mut client| async move {
                client
                    .remove_node(wire::NodeCommand { node: node_id })
                    .await
            })
            .await?;
            serde_json::json!({ "removed": node_id, "epoch": reply.epoch })
        }
        ClusterCommand::PutApp {
            meta,
            app_id,
            app_certificate,
            allow_multi_login,
            customer_key,
            webhook,
        } => {
            crate::node::customer_keys(&customer_key)?;
            webhook.webhook()?;
            let reply = parley_meta::watch::command(&meta, |mut client| {
                let app = wire::AppInfo {
                    app_id: app_id.clone(),
                    certificate: app_certificate.clone().unwrap_or_default(),
                    allow_multi_login,
                    customer_keys: customer_key.clone(),
                    webhook_url: webhook.webhook_url.clone().unwrap_or_default(),
                    webhook_secret: webhook.webhook_secret.clone().unwrap_or_default(),
                };
                async move { client.put_app(app).await }
            })
            .await?;
            serde_json::json!({ "app": app_id, "epoch": reply.epoch })
        }
        ClusterCommand::RemoveApp { meta, app_id } => {
            let reply = parley_meta::watch::command(&meta, |mut client| {
                let request = wire::AppRequest {
                    app_id: app_id.clone(),
                };
                async move { client.remove_app(request).await }
            })
            .await?;
            serde_json::json!({ "removedApp": app_id, "epoch": reply.epoch })
        }
        ClusterCommand::Drain { meta, node_id } => {
            let reply = parley_meta::watch::command(&meta, |mut client| async move {
                client.drain(wire::NodeCommand { node: node_id }).await
            })
            .await?;
            serde_json::json!({ "draining": node_id, "epoch": reply.epoch })
        }
    };
    println!("{line}");
    Ok(())
}

fn topology_json(topology: &wire::ClusterTopology) -> serde_json::Value {
    let owners = handoff::ring_owners(topology);
    let nodes: Vec<serde_json::Value> = topology
        .nodes
        .iter()
        .map(|info| {
            let mut roles = Vec::new();
            if info.edge {
                roles.push("edge");
            }
            if info.owner {
                roles.push("owner");
            }
            serde_json::json!({
                "node": info.node,
                "roles": roles,
                "address": info.grpc_address,
                "clientAddress": info.http_address,
                "status": match info.status() {
                    NodeStatus::Up => "up",
                    NodeStatus::Draining => "draining",
                    NodeStatus::Down => "down",
                    NodeStatus::Unspecified => "unknown",
                },
                "inRing": owners.contains(&info.node),
            })
        })
        .collect();
    let metas: Vec<serde_json::Value> = topology
        .metas
        .iter()
        .map(|meta| {
            serde_json::json!({
                "node": meta.node,
                "address": meta.address,
                "leader": meta.leader,
                "voter": meta.voter,
            })
        })
        .collect();
    // Certificates stay out of the output.
    let apps: Vec<&str> = topology
        .apps
        .iter()
        .map(|app| app.app_id.as_str())
        .collect();
    serde_json::json!({
        "ringEpoch": topology.epoch,
        "nodes": nodes,
        "metas": metas,
        "apps": apps,
    })
}

/// What one node knows of the cluster.
async fn node_status(node_address: &str) -> anyhow::Result<serde_json::Value> {
    let channel = parley_proto::cluster_auth::channel(node_address, |endpoint| endpoint)?;
    let mut client = cluster_client::ClusterClient::new(channel);
    let status = client.status(wire::Done {}).await?.into_inner();
    let members: Vec<serde_json::Value> = status
        .members
        .iter()
        .map(|member| {
            let mut roles = Vec::new();
            if member.edge {
                roles.push("edge");
            }
            if member.owner {
                roles.push("owner");
            }
            serde_json::json!({
                "node": member.node,
                "address": member.address,
                "roles": roles,
                "sessions": member.sessions,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "node": status.node,
        "ringEpoch": status.ring_epoch,
        "members": members,
    }))
}
