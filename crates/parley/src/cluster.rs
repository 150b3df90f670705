//! A node of a cluster: any of the edge and owner roles, talking to the other nodes over gRPC,
//! with the ring and addresses given up front (a static topology; meta and openraft come next).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use parley_core::app::AppDirectory;
use parley_core::ids::NodeId;
use parley_core::ring::DEFAULT_VIRTUAL_NODES;
use parley_core::ring::Ring;
use parley_edge::Edge;
use parley_edge::EdgeConfig;
use parley_edge::cluster::EdgeService;
use parley_owner::EdgeSink;
use parley_owner::Owner;
use parley_owner::OwnerApi;
use parley_owner::OwnerConfig;
use parley_owner::cluster::OwnerService;
use parley_owner::cluster::Receipts;
use parley_owner::cluster::RemoteEdge;
use parley_owner::cluster::RemoteOwners;
use parley_owner::cluster::SharedTopology;
use parley_owner::cluster::Topology;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::cluster_client;
use parley_proto::cluster::v1::cluster_server;
use parley_proto::v1::connection_state_changed::Reason;
use parley_store::Store;
use tokio::net::TcpListener;

/// How long sessions get to say goodbye when the node stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One node of the cluster as the others know it.
#[derive(Clone, Debug)]
pub struct Member {
    pub node: NodeId,
    pub grpc_address: String,
    pub edge: bool,
    pub owner: bool,
}

/// The ring of the owners among `members`, with every member's address.
pub fn topology(members: &[Member], epoch: u64) -> Topology {
    let owners: Vec<NodeId> = members
        .iter()
        .filter(|member| member.owner)
        .map(|member| member.node)
        .collect();
    Topology {
        ring: Ring::new(epoch, &owners, DEFAULT_VIRTUAL_NODES),
        addresses: members
            .iter()
            .map(|member| (member.node, member.grpc_address.clone()))
            .collect::<BTreeMap<_, _>>(),
        edges: members
            .iter()
            .filter(|member| member.edge)
            .map(|member| member.node)
            .collect(),
    }
}

/// What a running node serves.
pub struct ClusterNode {
    pub node: NodeId,
    pub topology: SharedTopology,
    /// Receipts this node's owner awaits from edges on other nodes.
    receipts: Arc<Receipts>,
    /// This node's edge's view of the owners.
    owners: Option<Arc<RemoteOwners>>,
    pub edge: Option<Arc<Edge>>,
    pub owner: Option<Arc<Owner>>,
    /// The client-facing router when this node is an edge.
    pub router: Option<parley_edge::Router>,
}

/// Builds node `me` of `members`. Every node must be given the same members.
pub async fn node(
    me: NodeId,
    members: &[Member],
    apps: AppDirectory,
    mut owner_config: OwnerConfig,
    mut edge_config: EdgeConfig,
    store: Arc<dyn Store>,
) -> anyhow::Result<ClusterNode> {
    let this = members
        .iter()
        .find(|member| member.node == me)
        .ok_or_else(|| anyhow::anyhow!("node {} is not among the members", me.0))?
        .clone();
    let apps = Arc::new(apps);
    let shared: SharedTopology = Arc::new(RwLock::new(topology(members, 1)));

    let owner = if this.owner {
        owner_config.node = me;
        let owner = Owner::start(owner_config, apps.clone(), store)
            .await
            .map_err(|error| anyhow::anyhow!("start the owner: {error}"))?;
        Some(owner)
    } else {
        None
    };
    let (edge, owners) = if this.edge {
        edge_config.node = me;
        let local = owner.clone().map(|owner| (me, owner as Arc<dyn OwnerApi>));
        let owners = Arc::new(RemoteOwners::new(shared.clone(), local));
        (
            Some(Edge::new(edge_config, apps, owners.clone())),
            Some(owners),
        )
    } else {
        (None, None)
    };
    let receipts = Arc::new(Receipts::default());
    if let Some(owner) = &owner {
        for member in members.iter().filter(|member| member.edge) {
            let sink: Arc<dyn EdgeSink> = match &edge {
                Some(edge) if member.node == me => edge.clone(),
                _ => RemoteEdge::connect(member.node, &member.grpc_address, me, receipts.clone())
                    .map_err(|error| anyhow::anyhow!("edge {}: {error}", member.node.0))?,
            };
            owner.register_edge(member.node, sink);
        }
    }
    let router = edge.clone().map(parley_edge::router);
    Ok(ClusterNode {
        node: me,
        topology: shared,
        receipts,
        owners,
        edge,
        owner,
        router,
    })
}

/// What can still be reached of a node once it serves: for changing its view of the cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    topology: SharedTopology,
    edge: Option<Arc<Edge>>,
}

impl ClusterHandle {
    /// Installs a new topology (a newer ring epoch); an edge then re-registers its sessions,
    /// channels and subscriptions with the owners, so owners that took keys over know them.
    pub fn set_topology(&self, topology: Topology) {
        *self.topology.write().expect("topology lock poisoned") = topology;
        if let Some(edge) = &self.edge {
            edge.reregister_all();
        }
    }
}

impl ClusterNode {
    pub fn handle(&self) -> ClusterHandle {
        ClusterHandle {
            topology: self.topology.clone(),
            edge: self.edge.clone(),
        }
    }
}

/// Serves the node's gRPC API on `grpc`, and its clients on `http` when it is an edge, until
/// `shutdown` completes.
pub async fn serve(
    node: ClusterNode,
    grpc: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    tracing::info!(node = node.node.0, %grpc_addr, "cluster api listening");
    let owner_service = node.owner.clone().map(|owner| {
        OwnerService::new(
            node.node,
            owner as Arc<dyn OwnerApi>,
            node.topology.clone(),
            node.receipts.clone(),
        )
    });
    let edge_service = match (&node.edge, &node.owners) {
        (Some(edge), Some(owners)) => Some(EdgeService::new(edge.clone(), owners.clone())),
        _ => None,
    };
    let status_service = cluster_server::ClusterServer::new(StatusService {
        node: node.node,
        topology: node.topology.clone(),
        edge: node.edge.clone(),
    });
    let mut grpc_stop = stop_rx.clone();
    let grpc_server = tonic::transport::Server::builder()
        .add_optional_service(owner_service)
        .add_optional_service(edge_service)
        .add_service(status_service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            async move {
                let _ = grpc_stop.wait_for(|stop| *stop).await;
            },
        );
    let http_server = async {
        match (node.router, http) {
            (Some(router), Some(listener)) => {
                let mut http_stop = stop_rx.clone();
                parley_edge::serve(listener, router, async move {
                    let _ = http_stop.wait_for(|stop| *stop).await;
                })
                .await
            }
            _ => Ok(()),
        }
    };
    let edge = node.edge.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Clients first, so they hear SERVER_SHUTDOWN and reconnect elsewhere.
        if let Some(edge) = edge {
            edge.end_all_sessions(Reason::ServerShutdown, SHUTDOWN_GRACE)
                .await;
        }
        let _ = stop_tx.send(true);
    });
    let (grpc_result, http_result) = tokio::join!(grpc_server, http_server);
    grpc_result?;
    http_result?;
    Ok(())
}

/// Answers `parley cluster status`.
struct StatusService {
    node: NodeId,
    topology: SharedTopology,
    edge: Option<Arc<Edge>>,
}

#[tonic::async_trait]
impl cluster_server::Cluster for StatusService {
    async fn status(
        &self,
        _request: tonic::Request<wire::Done>,
    ) -> Result<tonic::Response<wire::StatusReply>, tonic::Status> {
        let topology = self
            .topology
            .read()
            .expect("topology lock poisoned")
            .clone();
        let owners = topology.ring.nodes();
        let members = topology
            .addresses
            .iter()
            .map(|(node, address)| wire::MemberStatus {
                node: node.0,
                address: address.clone(),
                edge: topology.edges.contains(node),
                owner: owners.contains(node),
                sessions: match (&self.edge, *node == self.node) {
                    (Some(edge), true) => edge.session_count() as u64,
                    _ => 0,
                },
            })
            .collect();
        Ok(tonic::Response::new(wire::StatusReply {
            node: self.node.0,
            ring_epoch: topology.ring.epoch(),
            members,
        }))
    }
}

/// `parley cluster status --node HOST:PORT`: what that node knows of the cluster, as JSON.
pub async fn print_status(node_address: &str) -> anyhow::Result<()> {
    let mut client =
        cluster_client::ClusterClient::connect(format!("http://{node_address}")).await?;
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
    println!(
        "{}",
        serde_json::json!({
            "node": status.node,
            "ringEpoch": status.ring_epoch,
            "members": members,
        })
    );
    Ok(())
}
