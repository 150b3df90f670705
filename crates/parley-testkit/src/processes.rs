//! A cluster of `parley run` processes on 127.0.0.1 sharing a Redis: meta nodes, owners and
//! edges that a test can kill (SIGKILL), pause (SIGSTOP), resume, stop (SIGTERM), restart on the
//! same ports, and add to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::meta_client::MetaClient;

use crate::RedisServer;
use crate::fresh_temp_dir;

/// The app the cluster's nodes serve (no certificate: logins need no token).
pub const CLUSTER_APP_ID: &str = "0123456789abcdef0123456789abcdef";
/// Every process cluster's `--cluster-secret`; the test process sends it too (to ask meta).
pub const CLUSTER_SECRET: &str = "parley-test-cluster-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Meta,
    Owner,
    Edge,
}

impl Role {
    fn flag(self) -> &'static str {
        match self {
            Role::Meta => "meta",
            Role::Owner => "owner",
            Role::Edge => "edge",
        }
    }
}

struct NodeProcess {
    role: Role,
    grpc_port: u16,
    http_port: u16,
    ops_port: u16,
    child: Option<Child>,
}

pub struct ProcessCluster {
    binary: PathBuf,
    dir: PathBuf,
    redis: RedisServer,
    nodes: BTreeMap<u64, NodeProcess>,
    /// `ID=HOST:PORT,…` of the first meta nodes, as every node is told.
    metas: String,
    node_timeout: Duration,
    /// More flags for every node (`--region …`).
    extra_args: Vec<String>,
    /// More environment variables for every node.
    extra_env: Vec<(String, String)>,
    /// Nodes that others call only through a proxy ([`ProcessCluster::partition`]).
    partitionable: BTreeMap<u64, crate::Proxy>,
}

/// What the node whose gRPC address is `address` says of itself and the cluster, within 500 ms
/// (with the cluster secret, and TLS, as this process has them).
pub async fn node_status_at(address: &str) -> Option<wire::StatusReply> {
    let asked = tokio::time::timeout(Duration::from_millis(500), async {
        let channel = parley_proto::cluster_auth::channel(address, |endpoint| {
            endpoint.connect_timeout(Duration::from_millis(500))
        })
        .ok()?;
        let mut client = parley_proto::cluster::v1::cluster_client::ClusterClient::new(channel);
        client.status(wire::Done {}).await.ok()
    })
    .await;
    asked.ok().flatten().map(tonic::Response::into_inner)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl ProcessCluster {
    /// Starts `metas` meta nodes (ids 101…), `owners` owners (1…) and `edges` edges (51…) of
    /// `binary`, and waits until meta has every data node up.
    pub async fn start(binary: &Path, metas: u64, owners: u64, edges: u64) -> ProcessCluster {
        Self::start_with(binary, metas, owners, edges, &[]).await
    }

    /// [`ProcessCluster::start`], with `extra_args` given to every node.
    pub async fn start_with(
        binary: &Path,
        metas: u64,
        owners: u64,
        edges: u64,
        extra_args: &[&str],
    ) -> ProcessCluster {
        Self::start_with_env(binary, metas, owners, edges, extra_args, &[]).await
    }

    /// [`ProcessCluster::start_with`], with `env` set for every node.
    pub async fn start_with_env(
        binary: &Path,
        metas: u64,
        owners: u64,
        edges: u64,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> ProcessCluster {
        parley_proto::cluster_auth::set_cluster_secret(CLUSTER_SECRET)
            .expect("every process cluster has the same secret");
        let dir = fresh_temp_dir();
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let mut cluster = ProcessCluster {
            binary: binary.to_path_buf(),
            dir,
            redis: RedisServer::start(),
            nodes: BTreeMap::new(),
            metas: String::new(),
            node_timeout: Duration::from_secs(1),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            partitionable: BTreeMap::new(),
        };
        // Ports are picked free but bound later by the node: another test may take one in
        // between. A node that cannot bind exits; the cluster then starts again on new ports.
        for attempt in 1..=3 {
            // From nothing: the meta nodes of a failed attempt may have kept a Raft membership
            // that names its ports.
            cluster.wipe_data();
            cluster.place(metas, owners, edges);
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            for id in ids {
                cluster.spawn(id);
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let failure = loop {
                let exited = cluster.exited();
                if !exited.is_empty() {
                    break format!("nodes {exited:?} exited at start");
                }
                if cluster.all_up().await {
                    return cluster;
                }
                if tokio::time::Instant::now() >= deadline {
                    cluster.print_log_tails();
                    break format!(
                        "the cluster did not come up: {:?}",
                        cluster.topology().await
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(attempt < 3, "{failure}");
            eprintln!("{failure}; starting it again on new ports");
            let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
            for id in ids {
                cluster.kill(id);
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Removes what nodes kept in their data directories.
    fn wipe_data(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("data-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The last lines of every node's log, on standard error (the test's output).
    fn print_log_tails(&self) {
        for id in self.nodes.keys() {
            let log = std::fs::read_to_string(self.log_path(*id)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            eprintln!(
                "--- node {id} ({} lines) ---\n{}",
                lines.len(),
                tail.join("\n")
            );
        }
    }

    /// Chooses ids and fresh ports for the nodes.
    fn place(&mut self, metas: u64, owners: u64, edges: u64) {
        self.nodes.clear();
        let meta_ids: Vec<u64> = (101..101 + metas).collect();
        for id in &meta_ids {
            self.nodes.insert(*id, node(Role::Meta));
        }
        self.metas = meta_ids
            .iter()
            .map(|id| format!("{id}=127.0.0.1:{}", self.nodes[id].grpc_port))
            .collect::<Vec<_>>()
            .join(",");
        for id in (1..=owners).chain(51..51 + edges) {
            let role = if id < 51 { Role::Owner } else { Role::Edge };
            self.nodes.insert(id, node(role));
        }
    }

    /// The nodes whose process has exited on its own.
    fn exited(&mut self) -> Vec<u64> {
        let mut exited = Vec::new();
        for (id, node) in &mut self.nodes {
            if let Some(child) = &mut node.child
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                exited.push(*id);
            }
        }
        exited
    }

    /// Whether meta has every running data node up, and each of them knows it.
    async fn all_up(&self) -> bool {
        let Some(topology) = self.topology().await else {
            return false;
        };
        for (id, node) in &self.nodes {
            if node.role == Role::Meta || node.child.is_none() {
                continue;
            }
            if status(&topology, *id) != Some(wire::NodeStatus::Up)
                || self
                    .node_epoch(*id)
                    .await
                    .is_none_or(|epoch| epoch < topology.epoch)
            {
                return false;
            }
        }
        true
    }

    /// A region of several (`parley run --region`): one meta node, two owners and an edge with
    /// their own Redis, exchanging with `remote` through `broker`.
    pub async fn region(
        binary: &Path,
        broker: &crate::KafkaBroker,
        name: &str,
        remote: &str,
    ) -> ProcessCluster {
        Self::region_with(binary, broker, name, remote, &[], &[]).await
    }

    /// [`ProcessCluster::region`], with `extra_args` and `env` for every node.
    pub async fn region_with(
        binary: &Path,
        broker: &crate::KafkaBroker,
        name: &str,
        remote: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> ProcessCluster {
        let brokers = broker.brokers();
        let mut args = vec![
            "--kafka-brokers",
            &brokers,
            "--region",
            name,
            "--remote-regions",
            remote,
        ];
        args.extend_from_slice(extra_args);
        Self::start_with_env(binary, 1, 2, 1, &args, env).await
    }

    /// The client URLs of the edges, in id order (wss:// when the nodes were given `--tls-cert`).
    pub fn edge_urls(&self) -> Vec<String> {
        let tls = self.extra_args.iter().any(|arg| arg == "--tls-cert");
        let scheme = if tls { "wss" } else { "ws" };
        self.nodes
            .values()
            .filter(|node| node.role == Role::Edge)
            .map(|node| format!("{scheme}://127.0.0.1:{}/v1/ws", node.http_port))
            .collect()
    }

    /// `http://HOST:PORT` of node `id`'s ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_url(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].ops_port)
    }

    /// The process ids of the nodes that run.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .values()
            .filter_map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    /// The ids of the nodes with `role`.
    pub fn ids(&self, role: Role) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.role == role)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The meta nodes' gRPC addresses.
    pub fn meta_addresses(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|node| node.role == Role::Meta)
            .map(|node| format!("127.0.0.1:{}", node.grpc_port))
            .collect()
    }

    /// The `--meta` value nodes are started with.
    pub fn meta_flag(&self) -> &str {
        &self.metas
    }

    /// A node's gRPC address.
    pub fn grpc_address(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.nodes[&id].grpc_port)
    }

    pub fn redis(&mut self) -> &mut RedisServer {
        &mut self.redis
    }

    /// Where node `id` writes its log.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    fn spawn(&mut self, id: u64) {
        let node = &self.nodes[&id];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open the node's log");
        let mut command = Command::new(&self.binary);
        command.args(["run", "--node-id", &id.to_string()]);
        if let Some(proxy) = self.partitionable.get(&id) {
            command.args(["--advertise-grpc", &proxy.addr.to_string()]);
        }
        command
            .args(["--roles", node.role.flag()])
            .args(["--meta", &self.metas])
            .args(["--grpc-addr", &format!("127.0.0.1:{}", node.grpc_port)])
            .args(["--http-addr", &format!("127.0.0.1:{}", node.http_port)])
            .args(["--ops-addr", &format!("127.0.0.1:{}", node.ops_port)])
            .args(["--store", &self.redis.url()])
            .args([
                "--data-dir",
                &self.dir.join(format!("data-{id}")).to_string_lossy(),
            ])
            .args(["--app-id", CLUSTER_APP_ID])
            .args(["--cluster-secret", CLUSTER_SECRET])
            .args([
                "--node-timeout",
                &format!("{}ms", self.node_timeout.as_millis()),
            ])
            .args(&self.extra_args)
            .envs(self.extra_env.iter().cloned())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().expect("spawn parley run");
        self.nodes.get_mut(&id).expect("known node").child = Some(child);
    }

    /// Adds a node with `role` (a new id) and starts it.
    pub fn add(&mut self, role: Role) -> u64 {
        let first = match role {
            Role::Owner => 1,
            Role::Edge => 51,
            Role::Meta => 101,
        };
        let id = (first..)
            .find(|id| !self.nodes.contains_key(id))
            .expect("a free id");
        self.nodes.insert(id, node(role));
        self.spawn(id);
        id
    }

    /// SIGKILL: the node dies without a word.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for the node to exit (it drains itself first).
    pub fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the node freezes with its sockets open.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONT: a paused node goes on.
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, signal: &str) {
        if let Some(child) = &self.nodes[&id].child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// Restarts data node `id` behind a proxy (others call it at the proxy's address), so
    /// that [`ProcessCluster::partition`] can cut it off.
    pub async fn make_partitionable(&mut self, id: u64) {
        let real = SocketAddr::from(([127, 0, 0, 1], self.nodes[&id].grpc_port));
        self.partitionable
            .insert(id, crate::Proxy::start(real).await);
        self.restart(id);
    }

    /// An asymmetric partition: no node reaches node `id` (made partitionable) any more, while
    /// it runs on and still reaches meta, Redis and the edges. (A node cut off from meta as well
    /// cannot be made with proxies: meta's answers name the leader's own address. A node no one
    /// hears at all is [`ProcessCluster::pause`].)
    pub fn partition(&self, id: u64) {
        self.partitionable[&id].set_blocked(true);
    }

    /// Undoes [`ProcessCluster::partition`].
    pub fn heal(&self, id: u64) {
        self.partitionable[&id].set_blocked(false);
    }

    /// Starts a stopped or killed node again on the same ports.
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    /// Meta's current view (from any meta node that answers).
    pub async fn topology(&self) -> Option<wire::ClusterTopology> {
        for address in self.meta_addresses() {
            // With cluster TLS set in this process (a test of it), over mutual TLS.
            let Ok(channel) = parley_proto::cluster_auth::channel(&address, |endpoint| {
                endpoint.connect_timeout(Duration::from_millis(500))
            }) else {
                continue;
            };
            let mut client = MetaClient::new(channel);
            let asked = tokio::time::timeout(
                Duration::from_millis(500),
                client.topology(wire::TopologyRequest {}),
            )
            .await;
            if let Ok(Ok(reply)) = asked {
                let topology = reply.into_inner();
                // A follower that lost its leader may be behind; prefer an answer with one.
                if topology.metas.iter().any(|meta| meta.leader) {
                    return Some(topology);
                }
            }
        }
        None
    }

    /// Waits up to `within` until meta's view satisfies `check`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&wire::ClusterTopology) -> bool,
    ) -> wire::ClusterTopology {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(topology) = self.topology().await
                && check(&topology)
            {
                return topology;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.topology().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running data node is up in meta's view and routes by its epoch.
    /// Waits (up to 15 s) until meta has taken node `id` out of service.
    pub async fn wait_until_down(&self, id: u64) {
        self.wait_for(
            &format!("node {id} marked down"),
            Duration::from_secs(15),
            |topology| status(topology, id) == Some(wire::NodeStatus::Down),
        )
        .await;
    }

    pub async fn wait_until_all_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self.all_up().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not settle: {:?}",
                self.topology().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ring epoch node `id` routes by now.
    pub async fn node_epoch(&self, id: u64) -> Option<u64> {
        self.node_status(id).await.map(|status| status.ring_epoch)
    }

    /// What node `id` says of itself and the cluster.
    pub async fn node_status(&self, id: u64) -> Option<wire::StatusReply> {
        node_status_at(&self.grpc_address(id)).await
    }

    /// The meta leader's id, once there is one.
    pub async fn leader(&self) -> u64 {
        let topology = self
            .wait_for("a meta leader", Duration::from_secs(10), |topology| {
                topology.metas.iter().any(|meta| meta.leader)
            })
            .await;
        topology
            .metas
            .iter()
            .find(|meta| meta.leader)
            .map(|meta| meta.node)
            .expect("a leader")
    }
}

/// A node's status in `topology`.
pub fn status(topology: &wire::ClusterTopology, id: u64) -> Option<wire::NodeStatus> {
    topology
        .nodes
        .iter()
        .find(|info| info.node == id)
        .map(wire::NodeInfo::status)
}

fn node(role: Role) -> NodeProcess {
    NodeProcess {
        role,
        grpc_port: free_port(),
        http_port: free_port(),
        ops_port: free_port(),
        child: None,
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster logs kept in {}", self.dir.display());
        }
    }
}
