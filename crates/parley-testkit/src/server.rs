//! In-process `parley dev` nodes for tests.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use parley::cluster::ClusterHandle;
use parley::cluster::Member;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::ids::NodeId;
use parley_core::limits::Limits;
use parley_edge::EdgeConfig;
use parley_owner::OwnerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::RedisServer;

pub const APP_ID: &str = "0123456789abcdef0123456789ABCDEF";
pub const CERTIFICATE: &str = "fedcba9876543210fedcba9876543210";

pub struct TestServerBuilder {
    /// Run as a cluster whatever the environment says.
    cluster: bool,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    certificate: Option<String>,
    multi_login: MultiLogin,
    limits: Limits,
    owner: OwnerConfig,
    edge: EdgeConfig,
}

impl TestServerBuilder {
    /// Logins need no token.
    pub fn without_certificate(mut self) -> Self {
        self.certificate = None;
        self
    }

    /// Two owners and two edges sharing a Redis, instead of one `parley dev` node.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Keeps state in `dir` (left in place) instead of a temporary directory.
    pub fn data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// Keeps state in this store (`redis://…`, `redis-cluster://…`) whatever the environment says.
    pub fn store(mut self, url: String) -> Self {
        self.store = Some(url);
        self
    }

    pub fn multi_login(mut self) -> Self {
        self.multi_login = MultiLogin::AllowMany;
        self
    }

    pub fn limits(mut self, edit: impl FnOnce(&mut Limits)) -> Self {
        edit(&mut self.limits);
        self
    }

    pub fn owner(mut self, edit: impl FnOnce(&mut OwnerConfig)) -> Self {
        edit(&mut self.owner);
        self
    }

    pub fn edge(mut self, edit: impl FnOnce(&mut EdgeConfig)) -> Self {
        edit(&mut self.edge);
        self
    }

    pub async fn start(self) -> TestServer {
        let mut app = AppConfig::new(
            AppId::parse(APP_ID).expect("valid app id"),
            self.certificate,
        );
        app.multi_login = self.multi_login;
        app.limits = self.limits;
        let certificate = app.certificate.clone();
        let data_dir = match self.data_dir {
            Some(dir) => DataDir::Kept(dir),
            None => DataDir::Temporary(fresh_temp_dir()),
        };
        let cluster = self.cluster || std::env::var("PARLEY_TEST_CLUSTER").as_deref() == Ok("1");
        // A cluster shares its state through Redis.
        let redis = (self.store.is_none()
            && (cluster || std::env::var("PARLEY_TEST_STORE").as_deref() == Ok("redis")))
        .then(RedisServer::start);
        let store_url = match (&self.store, &redis) {
            (Some(url), _) => url.clone(),
            (None, Some(redis)) => redis.url(),
            (None, None) => "embedded".to_owned(),
        };
        let mut shutdowns = Vec::new();
        let mut stopped = || {
            let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
            shutdowns.push(shutdown_tx);
            async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            }
        };
        let mut edges = Vec::new();
        let mut serving = Vec::new();
        let mut cluster_state = None;
        if cluster {
            // Two owners (nodes 1 and 2) and two edges (nodes 3 and 4), each on its own sockets.
            let mut grpc = Vec::new();
            for _ in 0..4 {
                grpc.push(TcpListener::bind("127.0.0.1:0").await.expect("bind grpc"));
            }
            let members: Vec<Member> = grpc
                .iter()
                .enumerate()
                .map(|(index, listener)| Member {
                    node: NodeId(index as u64 + 1),
                    grpc_address: listener.local_addr().expect("grpc addr").to_string(),
                    owner: index < 2,
                    edge: index >= 2,
                })
                .collect();
            let mut handles = Vec::new();
            for (member, grpc) in members.iter().zip(grpc) {
                let store = parley::dev::open_store(&store_url, data_dir.path())
                    .await
                    .expect("open the store");
                let node = parley::cluster::node(
                    member.node,
                    &members,
                    AppDirectory::new([app.clone()]),
                    self.owner.clone(),
                    self.edge.clone(),
                    store,
                )
                .await
                .expect("start a cluster node");
                handles.push((member.node, node.handle()));
                let http = if member.edge {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
                    edges.push(listener.local_addr().expect("http addr"));
                    Some(listener)
                } else {
                    None
                };
                serving.push(Some(tokio::spawn(parley::cluster::serve(
                    node,
                    grpc,
                    http,
                    stopped(),
                ))));
            }
            cluster_state = Some(ClusterState { members, handles });
        } else {
            let store = parley::dev::open_store(&store_url, data_dir.path())
                .await
                .expect("open the store");
            let node = parley::dev::node(AppDirectory::new([app]), self.owner, self.edge, store)
                .await
                .expect("start a node");
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            edges.push(listener.local_addr().expect("local addr"));
            let stop = stopped();
            serving.push(Some(tokio::spawn(async move {
                parley::dev::serve(node, listener, stop)
                    .await
                    .map_err(anyhow::Error::from)
            })));
        }
        TestServer {
            addr: edges[0],
            edges,
            next_edge: AtomicUsize::new(0),
            _data_dir: data_dir,
            _redis: redis,
            certificate,
            shutdowns,
            serving,
            cluster: cluster_state,
        }
    }
}

/// A running node (or cluster); stops when dropped.
pub struct TestServer {
    /// The first edge's address.
    pub addr: SocketAddr,
    /// Every edge's address; `ws_url` hands them out in turn.
    edges: Vec<SocketAddr>,
    next_edge: AtomicUsize,
    _data_dir: DataDir,
    /// The Redis server holding this node's state, with `PARLEY_TEST_STORE=redis` or a cluster.
    _redis: Option<RedisServer>,
    certificate: Option<String>,
    /// One per node, in node order.
    shutdowns: Vec<watch::Sender<bool>>,
    serving: Vec<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    cluster: Option<ClusterState>,
}

/// The nodes of a test cluster.
struct ClusterState {
    members: Vec<Member>,
    handles: Vec<(NodeId, ClusterHandle)>,
}

impl TestServer {
    /// Default settings, with timers short enough for tests. With `PARLEY_TEST_CLUSTER=1` the
    /// server is a cluster of two owners and two edges sharing a Redis, and clients are spread
    /// over both edges.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            cluster: false,
            data_dir: None,
            store: None,
            certificate: Some(CERTIFICATE.to_owned()),
            multi_login: MultiLogin::Replace,
            limits: Limits::default(),
            owner: OwnerConfig {
                member_grace: Duration::from_millis(500),
                member_count_interval: Duration::from_millis(50),
                peer_receipt_timeout: Duration::from_secs(2),
                ..OwnerConfig::default()
            },
            edge: EdgeConfig::default(),
        }
    }

    pub async fn start() -> TestServer {
        TestServer::builder().start().await
    }

    /// Stops the node the way SIGTERM stops `parley dev`, and waits until it has.
    pub async fn stop(self) {
        for shutdown in &self.shutdowns {
            let _ = shutdown.send(true);
        }
        for serving in self.serving.into_iter().flatten() {
            serving
                .await
                .expect("server task")
                .expect("server ran without error");
        }
    }

    /// In a cluster: stops owner `node` and gives the remaining nodes a ring without it (what
    /// the meta role will do when an owner stops heartbeating).
    pub async fn fail_owner(&mut self, node: NodeId) {
        let cluster = self.cluster.as_mut().expect("fail_owner needs a cluster");
        assert!(
            cluster
                .members
                .iter()
                .any(|member| member.node == node && member.owner),
            "an owner of this cluster"
        );
        // Nodes are numbered from 1 in the order they were started.
        let index = node.0 as usize - 1;
        let _ = self.shutdowns[index].send(true);
        if let Some(serving) = self.serving[index].take() {
            let _ = serving.await;
        }
        cluster.members.retain(|member| member.node != node);
        let topology = parley::cluster::topology(&cluster.members, 2);
        cluster.handles.retain(|(known, _)| *known != node);
        for (_, handle) in &cluster.handles {
            handle.set_topology(topology.clone());
        }
    }

    pub fn app_id(&self) -> &'static str {
        APP_ID
    }

    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// The WebSocket URL of every edge.
    pub fn edge_urls(&self) -> Vec<String> {
        self.edges
            .iter()
            .map(|edge| format!("ws://{edge}/v1/ws"))
            .collect()
    }

    /// The WebSocket URL of an edge: each call names the next edge, so clients spread out.
    pub fn ws_url(&self) -> String {
        let next = self.next_edge.fetch_add(1, Ordering::Relaxed) % self.edges.len();
        format!("ws://{}/v1/ws", self.edges[next])
    }

    /// A valid "007" token for `uid`, expiring in `expire_secs` (empty without certificate).
    pub fn token_expiring(&self, uid: &str, expire_secs: u32) -> String {
        let Some(certificate) = &self.certificate else {
            return String::new();
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as u32;
        parley_core::token::build_007(APP_ID, certificate, uid, expire_secs, now, 7)
    }

    pub fn token(&self, uid: &str) -> String {
        self.token_expiring(uid, 3600)
    }

    /// An SDK client config for `uid` with a valid token.
    pub fn client_config(&self, uid: &str) -> parley_client::ClientConfig {
        parley_client::ClientConfig::new(self.ws_url(), APP_ID, uid).token(self.token(uid))
    }
}

/// Where a test node keeps its state.
enum DataDir {
    Kept(PathBuf),
    /// Deleted when the server is dropped.
    Temporary(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Kept(dir) | DataDir::Temporary(dir) => dir,
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let DataDir::Temporary(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A directory no other test uses.
pub fn fresh_temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "parley-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
