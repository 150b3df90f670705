//! A meta node: Raft over the cluster state, the leader's failure detector, and the API that
//! data nodes heartbeat to and operators command.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::BasicNode;
use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::storage::Adaptor;
use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::meta_server;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::network::Network;
use crate::network::RaftService;
use crate::state::AppRecord;
use crate::state::ClusterState;
use crate::state::Command;
use crate::state::NodeRecord;
use crate::state::NodeStatus;
use crate::state::forgive_deafness;
use crate::state::silent_nodes;
use crate::store::MetaStorage;
use crate::store::TypeConfig;

/// gRPC metadata naming the leader's address when a follower refuses a command.
pub const LEADER_KEY: &str = "parley-meta-leader";

type MetaRaft = openraft::Raft<TypeConfig>;

#[derive(Clone, Debug)]
pub struct MetaConfig {
    pub node: u64,
    /// `HOST:PORT` other nodes reach this meta node's gRPC API at.
    pub address: String,
    /// The first voters (`id → HOST:PORT`, this node among them), to form a new cluster. A
    /// node that was already part of a cluster ignores it; empty: wait to be added.
    pub initial_members: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    /// Silence after which the leader takes a data node out of the ring.
    pub node_timeout: Duration,
    /// Silence after which the leader forgets a node it marked down (a restart of it joins
    /// again).
    pub forget_after: Duration,
    /// How long the leader holds a heartbeat waiting for a newer epoch before answering.
    pub heartbeat_hold: Duration,
}

impl MetaConfig {
    pub fn new(node: u64, address: String, data_dir: PathBuf) -> MetaConfig {
        MetaConfig {
            node,
            address,
            initial_members: BTreeMap::new(),
            data_dir,
            node_timeout: Duration::from_millis(1000),
            forget_after: Duration::from_secs(3600),
            heartbeat_hold: Duration::from_millis(200),
        }
    }
}

pub struct MetaNode {
    config: MetaConfig,
    raft: MetaRaft,
    cluster: watch::Receiver<ClusterState>,
    /// When the leader last heard each data node (only the leader's entries matter).
    last_heard: Mutex<HashMap<u64, Instant>>,
}

impl MetaNode {
    /// Opens the node's Raft log in `config.data_dir`, forms the cluster when it is new, and
    /// starts the failure detector.
    pub async fn start(config: MetaConfig) -> anyhow::Result<Arc<MetaNode>> {
        let storage = MetaStorage::open(&config.data_dir)?;
        let cluster = storage.watch();
        let (log, state_machine) = Adaptor::new(storage);
        let raft_config = openraft::Config {
            cluster_name: "parley-meta".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
            ..Default::default()
        }
        .validate()?;
        let raft = openraft::Raft::new(
            config.node,
            Arc::new(raft_config),
            Network,
            log,
            state_machine,
        )
        .await?;
        if !config.initial_members.is_empty() {
            let members: BTreeMap<u64, BasicNode> = config
                .initial_members
                .iter()
                .map(|(node, address)| (*node, BasicNode::new(address)))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {}
                // Formed before (by this node or another): nothing to do.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let meta = Arc::new(MetaNode {
            config,
            raft,
            cluster,
            last_heard: Mutex::new(HashMap::new()),
        });
        tokio::spawn(detect_failures(Arc::downgrade(&meta)));
        observe_raft(&meta);
        Ok(meta)
    }

    /// The services to add to this node's gRPC server.
    pub fn services(
        self: &Arc<Self>,
    ) -> (
        parley_proto::cluster::v1::raft_server::RaftServer<RaftService>,
        meta_server::MetaServer<MetaService>,
    ) {
        (
            RaftService::new(self.raft.clone()),
            meta_server::MetaServer::new(MetaService { meta: self.clone() }),
        )
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.config.node)
    }

    /// The leader's address, when one is known.
    pub fn leader_address(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
    }

    pub fn cluster(&self) -> ClusterState {
        self.cluster.borrow().clone()
    }

    /// Stops Raft (for tests that kill a meta node in-process).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    fn not_leader(&self) -> Status {
        let mut status = Status::unavailable("this meta node is not the leader");
        if let Some(leader) = self
            .leader_address()
            .and_then(|address| address.parse().ok())
        {
            status.metadata_mut().insert(LEADER_KEY, leader);
        }
        status
    }

    async fn write(&self, command: Command) -> Result<u64, Status> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data.epoch),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }

    fn topology(&self, cluster: &ClusterState) -> wire::ClusterTopology {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let metas = membership
            .nodes()
            .map(|(node, address)| wire::MetaMember {
                node: *node,
                address: address.addr.clone(),
                leader: metrics.current_leader == Some(*node),
                voter: voters.contains(node),
            })
            .collect();
        wire::ClusterTopology {
            epoch: cluster.epoch,
            nodes: cluster
                .nodes
                .iter()
                .map(|(node, record)| node_info(*node, record))
                .collect(),
            metas,
            apps: cluster
                .apps
                .iter()
                .map(|(app_id, app)| wire::AppInfo {
                    app_id: app_id.clone(),
                    certificate: app.certificate.clone().unwrap_or_default(),
                    allow_multi_login: app.allow_multi_login,
                    customer_keys: app.customer_keys.clone(),
                    webhook_url: app.webhook.clone().unwrap_or_default().0,
                    webhook_secret: app.webhook.clone().unwrap_or_default().1,
                })
                .collect(),
        }
    }
}

fn node_info(node: u64, record: &NodeRecord) -> wire::NodeInfo {
    wire::NodeInfo {
        node,
        edge: record.edge,
        owner: record.owner,
        grpc_address: record.grpc_address.clone(),
        http_address: record.http_address.clone(),
        incarnation: record.incarnation,
        status: match record.status {
            NodeStatus::Up => wire::NodeStatus::Up,
            NodeStatus::Draining => wire::NodeStatus::Draining,
            NodeStatus::Down => wire::NodeStatus::Down,
        } as i32,
    }
}

/// How often the leader looks for silent nodes.
const DETECTION_TICK: Duration = Duration::from_millis(100);

/// The leader's loop: marks down the data nodes it has not heard from within the timeout. A
/// new leader first gives every node a full timeout to find it; a leader whose own process did
/// not run for a while counts none of that time as anyone's silence ([`forgive_deafness`]).
async fn detect_failures(meta: std::sync::Weak<MetaNode>) {
    let mut leading = false;
    loop {
        let asleep = Instant::now();
        tokio::time::sleep(DETECTION_TICK).await;
        let slept = asleep.elapsed();
        let Some(meta) = meta.upgrade() else { return };
        let leader = meta.is_leader();
        if leader && !leading {
            let now = Instant::now();
            let mut heard = meta.last_heard.lock();
            for node in meta.cluster.borrow().nodes.keys() {
                heard.insert(*node, now);
            }
        } else if leader {
            let mut heard = meta.last_heard.lock();
            let deaf = forgive_deafness(&mut heard, DETECTION_TICK, slept, Instant::now());
            if deaf > meta.config.node_timeout / 2 {
                tracing::warn!(
                    ?deaf,
                    "this meta leader did not run for a while; that time counts as nobody's silence"
                );
            }
        }
        leading = leader;
        if !leader {
            continue;
        }
        let silent = {
            let mut heard = meta.last_heard.lock();
            let now = Instant::now();
            // A node this leader has not timed yet (it joined through a log entry applied
            // after the leader took over) gets a full timeout from now.
            let cluster = meta.cluster.borrow();
            for node in cluster.nodes.keys() {
                heard.entry(*node).or_insert(now);
            }
            heard.retain(|node, _| cluster.nodes.contains_key(node));
            drop(cluster);
            silent_nodes(
                &meta.cluster.borrow(),
                |node| heard.get(&node).map(|at| now.duration_since(*at)),
                meta.config.node_timeout,
                meta.config.forget_after,
            )
        };
        for command in silent {
            tracing::warn!(?command, "data node silent");
            if let Err(error) = meta.write(command).await {
                tracing::warn!(%error, "marking a node down or forgetting it failed");
            }
        }
    }
}

/// What data nodes and operators call.
pub struct MetaService {
    meta: Arc<MetaNode>,
}

fn record_of(info: &wire::NodeInfo) -> NodeRecord {
    NodeRecord {
        edge: info.edge,
        owner: info.owner,
        grpc_address: info.grpc_address.clone(),
        http_address: info.http_address.clone(),
        incarnation: info.incarnation,
        status: NodeStatus::Up,
    }
}

#[tonic::async_trait]
impl meta_server::Meta for MetaService {
    async fn heartbeat(
        &self,
        request: Request<wire::HeartbeatRequest>,
    ) -> Result<Response<wire::HeartbeatReply>, Status> {
        let request = request.into_inner();
        let info = request
            .node
            .ok_or_else(|| Status::invalid_argument("heartbeat without a node"))?;
        let meta = &self.meta;
        if !meta.is_leader() {
            let cluster = meta.cluster();
            return Ok(Response::new(wire::HeartbeatReply {
                topology: (cluster.epoch > request.known_epoch).then(|| meta.topology(&cluster)),
                leader_address: meta.leader_address().unwrap_or_default(),
            }));
        }
        meta.last_heard.lock().insert(info.node, Instant::now());
        let command =
            meta.cluster
                .borrow()
                .on_heartbeat(info.node, &record_of(&info), request.known_epoch);
        if let Some(command) = command {
            meta.write(command).await?;
        }
        // Hold the answer until there is news or the hold is up: a change reaches every node
        // at once, and the node's next heartbeat follows right after.
        let mut cluster = meta.cluster.clone();
        let _ = tokio::time::timeout(
            meta.config.heartbeat_hold,
            cluster.wait_for(|state| state.epoch > request.known_epoch),
        )
        .await;
        let cluster = meta.cluster();
        Ok(Response::new(wire::HeartbeatReply {
            topology: (cluster.epoch > request.known_epoch).then(|| meta.topology(&cluster)),
            leader_address: String::new(),
        }))
    }

    async fn topology(
        &self,
        _request: Request<wire::TopologyRequest>,
    ) -> Result<Response<wire::ClusterTopology>, Status> {
        // A follower may lag behind the leader: send the caller there when there is one.
        if !self.meta.is_leader() && self.meta.leader_address().is_some() {
            return Err(self.meta.not_leader());
        }
        let cluster = self.meta.cluster();
        Ok(Response::new(self.meta.topology(&cluster)))
    }

    async fn drain(
        &self,
        request: Request<wire::NodeCommand>,
    ) -> Result<Response<wire::CommandReply>, Status> {
        let node = request.into_inner().node;
        if !self.meta.is_leader() {
            return Err(self.meta.not_leader());
        }
        if !self.meta.cluster().nodes.contains_key(&node) {
            return Err(Status::not_found(format!("no data node {node}")));
        }
        let epoch = self.meta.write(Command::Drain { node }).await?;
        Ok(Response::new(wire::CommandReply { epoch }))
    }

    async fn remove_node(
        &self,
        request: Request<wire::NodeCommand>,
    ) -> Result<Response<wire::CommandReply>, Status> {
        let node = request.into_inner().node;
        let meta = &self.meta;
        if !meta.is_leader() {
            return Err(meta.not_leader());
        }
        let is_meta = meta
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node)
            .is_some();
        if is_meta {
            meta.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node])), false)
                .await
                .map_err(|error| Status::failed_precondition(error.to_string()))?;
            meta.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false)
                .await
                .map_err(|error| Status::failed_precondition(error.to_string()))?;
        }
        let known = meta.cluster().nodes.contains_key(&node);
        if !known && !is_meta {
            return Err(Status::not_found(format!("no node {node}")));
        }
        let epoch = if known {
            meta.write(Command::Remove { node }).await?
        } else {
            meta.cluster().epoch
        };
        Ok(Response::new(wire::CommandReply { epoch }))
    }

    async fn put_app(
        &self,
        request: Request<wire::AppInfo>,
    ) -> Result<Response<wire::CommandReply>, Status> {
        let app = request.into_inner();
        parley_core::ids::AppId::parse(&app.app_id)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        for key in &app.customer_keys {
            parley_core::app::CustomerKey::parse(key)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        let webhook =
            (!app.webhook_url.is_empty()).then_some((app.webhook_url, app.webhook_secret));
        if let Some((url, secret)) = &webhook {
            parley_core::app::Webhook::new(url, secret)
                .map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        let epoch = self
            .meta
            .write(Command::PutApp {
                app_id: app.app_id,
                app: AppRecord {
                    certificate: (!app.certificate.is_empty()).then_some(app.certificate),
                    allow_multi_login: app.allow_multi_login,
                    customer_keys: app.customer_keys,
                    webhook,
                },
            })
            .await?;
        Ok(Response::new(wire::CommandReply { epoch }))
    }

    async fn remove_app(
        &self,
        request: Request<wire::AppRequest>,
    ) -> Result<Response<wire::CommandReply>, Status> {
        let app_id = request.into_inner().app_id;
        if !self.meta.is_leader() {
            return Err(self.meta.not_leader());
        }
        if !self.meta.cluster().apps.contains_key(&app_id) {
            return Err(Status::not_found(format!("no app {app_id}")));
        }
        let epoch = self.meta.write(Command::RemoveApp { app_id }).await?;
        Ok(Response::new(wire::CommandReply { epoch }))
    }

    async fn add_meta(
        &self,
        request: Request<wire::AddMetaRequest>,
    ) -> Result<Response<wire::CommandReply>, Status> {
        let request = request.into_inner();
        let meta = &self.meta;
        if !meta.is_leader() {
            return Err(meta.not_leader());
        }
        meta.raft
            .add_learner(request.node, BasicNode::new(&request.address), true)
            .await
            .map_err(|error| Status::failed_precondition(error.to_string()))?;
        meta.raft
            .change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([request.node])),
                false,
            )
            .await
            .map_err(|error| Status::failed_precondition(error.to_string()))?;
        Ok(Response::new(wire::CommandReply {
            epoch: meta.cluster().epoch,
        }))
    }
}

/// Raft's term and leader as gauges, read from openraft's metrics at each collection.
fn observe_raft(meta: &Arc<MetaNode>) {
    let meter = parley_telemetry::meter();
    let weak = Arc::downgrade(meta);
    meter
        .u64_observable_gauge("parley.meta.raft.term")
        .with_description("The Raft term this meta node is in")
        .with_callback(move |observer| {
            if let Some(meta) = weak.upgrade() {
                observer.observe(meta.raft.metrics().borrow().current_term, &[]);
            }
        })
        .build();
    let weak = Arc::downgrade(meta);
    meter
        .u64_observable_gauge("parley.meta.raft.leader")
        .with_description("The meta node this one takes for the Raft leader (0: none known)")
        .with_callback(move |observer| {
            if let Some(meta) = weak.upgrade() {
                let leader = meta.raft.metrics().borrow().current_leader.unwrap_or(0);
                observer.observe(leader, &[]);
            }
        })
        .build();
}
