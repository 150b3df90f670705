//! In-process `parley dev` nodes for tests.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley::cluster::ClusterHandle;
use parley::cluster::NodeSpec;
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
/// The customer key (and secret) of the test app, for the server API.
pub const CUSTOMER_KEY: &str = "test-backend";
pub const CUSTOMER_SECRET: &str = "test-backend-secret";
/// A second app ([`TestServerBuilder::second_app`]): no certificate, its own customer key.
pub const OTHER_APP_ID: &str = "aaaabbbbccccddddeeeeffff00001111";
pub const OTHER_CUSTOMER_KEY: &str = "other-backend";
pub const OTHER_CUSTOMER_SECRET: &str = "other-backend-secret";

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
    webhook: Option<parley_core::app::Webhook>,
    events: parley_events::PipelineConfig,
    second_app: bool,
}

impl TestServerBuilder {
    /// Serves [`OTHER_APP_ID`] beside the test app.
    pub fn second_app(mut self) -> Self {
        self.second_app = true;
        self
    }

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

    /// POSTs the app's events to `url`, signed with `secret`.
    pub fn webhook(mut self, url: &str, secret: &str) -> Self {
        self.webhook = Some(parley_core::app::Webhook::new(url, secret).expect("a valid webhook"));
        self
    }

    /// Publishes every app event on this Kafka topic too.
    pub fn kafka(mut self, kafka: parley_events::KafkaConfig) -> Self {
        self.events.kafka = Some(kafka);
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
        // `RUST_LOG=…` shows the nodes' logs with a failing test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let mut app = AppConfig::new(
            AppId::parse(APP_ID).expect("valid app id"),
            self.certificate,
        );
        app.multi_login = self.multi_login;
        app.customer_keys = vec![parley_core::app::CustomerKey {
            key: CUSTOMER_KEY.into(),
            secret: CUSTOMER_SECRET.into(),
        }];
        app.limits = self.limits;
        app.webhook = self.webhook;
        let certificate = app.certificate.clone();
        let mut apps = vec![app];
        if self.second_app {
            let mut other = AppConfig::new(AppId::parse(OTHER_APP_ID).expect("valid app id"), None);
            other.customer_keys = vec![parley_core::app::CustomerKey {
                key: OTHER_CUSTOMER_KEY.into(),
                secret: OTHER_CUSTOMER_SECRET.into(),
            }];
            apps.push(other);
        }
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
            let mut nodes = Vec::new();
            for spec in cluster_specs().await {
                let (spec, grpc, http) = spec;
                let store = if spec.owner {
                    Some(
                        parley::node::open_store(&store_url, data_dir.path())
                            .await
                            .expect("open the store"),
                    )
                } else {
                    None
                };
                let mut spec = spec;
                if let Some(meta) = &mut spec.meta {
                    meta.data_dir = data_dir.path().join(format!("meta-{}", spec.node.0));
                    meta.node_timeout = TEST_NODE_TIMEOUT;
                }
                let node = parley::cluster::node(
                    spec.clone(),
                    AppDirectory::new(apps.clone()),
                    self.owner.clone(),
                    self.edge.clone(),
                    self.events.clone(),
                    None,
                    store,
                )
                .await
                .expect("start a cluster node");
                nodes.push((spec.clone(), node.handle()));
                if let Some(http) = &http {
                    edges.push(http.local_addr().expect("http addr"));
                }
                serving.push(Some(tokio::spawn(parley::cluster::serve(
                    node,
                    grpc,
                    http,
                    stopped(),
                ))));
            }
            let state = ClusterState { nodes };
            state.wait_until_settled().await;
            cluster_state = Some(state);
        } else {
            let store = parley::node::open_store(&store_url, data_dir.path())
                .await
                .expect("open the store");
            let node = parley::dev::node(
                AppDirectory::new(apps),
                self.owner,
                self.edge,
                self.events,
                None,
                store,
            )
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

/// The nodes of a test cluster, in the order they were started.
struct ClusterState {
    nodes: Vec<(NodeSpec, ClusterHandle)>,
}

/// Owners (nodes 1–3), edges (4–5) and meta nodes (6–8) of a test cluster.
const OWNERS: [u64; 3] = [1, 2, 3];
const EDGES: [u64; 2] = [4, 5];
const METAS: [u64; 3] = [6, 7, 8];

/// Meta's patience with a silent node in tests: loose, since tests share two cores.
const TEST_NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes of a test cluster with their sockets bound on 127.0.0.1:0.
async fn cluster_specs() -> Vec<(NodeSpec, TcpListener, Option<TcpListener>)> {
    let mut bound = Vec::new();
    for node in OWNERS.iter().chain(&EDGES).chain(&METAS) {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = if EDGES.contains(node) {
            Some(TcpListener::bind("127.0.0.1:0").await.expect("bind http"))
        } else {
            None
        };
        bound.push((*node, grpc, http));
    }
    let address = |listener: &TcpListener| listener.local_addr().expect("local addr").to_string();
    let metas: std::collections::BTreeMap<u64, String> = bound
        .iter()
        .filter(|(node, _, _)| METAS.contains(node))
        .map(|(node, grpc, _)| (*node, address(grpc)))
        .collect();
    bound
        .into_iter()
        .map(|(node, grpc, http)| {
            let meta = METAS.contains(&node).then(|| {
                let mut config =
                    parley_meta::MetaConfig::new(node, address(&grpc), std::path::PathBuf::new());
                config.initial_members = metas.clone();
                config
            });
            let spec = NodeSpec {
                node: NodeId(node),
                edge: EDGES.contains(&node),
                owner: OWNERS.contains(&node),
                grpc_address: address(&grpc),
                http_address: http.as_ref().map(address).unwrap_or_default(),
                metas: metas.values().cloned().collect(),
                meta,
            };
            (spec, grpc, http)
        })
        .collect()
}

impl ClusterState {
    /// Waits until every data node runs with the ring of the owners given.
    async fn wait_for_ring(&self, owners: &[NodeId]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let settled = self
                .nodes
                .iter()
                .filter(|(spec, _)| spec.edge || spec.owner)
                .all(|(_, handle)| {
                    let topology = handle.topology();
                    topology.ring.nodes() == owners && topology.edges.len() == EDGES.len()
                });
            if settled {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test cluster did not settle on owners {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_until_settled(&self) {
        let owners: Vec<NodeId> = OWNERS.iter().map(|node| NodeId(*node)).collect();
        self.wait_for_ring(&owners).await;
    }
}

impl TestServer {
    /// Default settings, with timers short enough for tests. With `PARLEY_TEST_CLUSTER=1` the
    /// server is a cluster of three meta nodes, three owners and two edges sharing a Redis, and clients are spread
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
            webhook: None,
            events: parley_events::PipelineConfig::default(),
            second_app: false,
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

    /// In a cluster: stops owner `node` the way SIGTERM stops it (meta drains it, the others
    /// take its keys over) and waits until every remaining node runs without it.
    pub async fn stop_owner(&mut self, node: NodeId) {
        let cluster = self.cluster.as_mut().expect("stop_owner needs a cluster");
        let index = cluster
            .nodes
            .iter()
            .position(|(spec, _)| spec.node == node && spec.owner)
            .expect("an owner of this cluster");
        let _ = self.shutdowns[index].send(true);
        if let Some(serving) = self.serving[index].take() {
            let _ = serving.await;
        }
        cluster.nodes.remove(index);
        self.shutdowns.remove(index);
        self.serving.remove(index);
        let owners: Vec<NodeId> = cluster
            .nodes
            .iter()
            .filter(|(spec, _)| spec.owner)
            .map(|(spec, _)| spec.node)
            .collect();
        cluster.wait_for_ring(&owners).await;
    }

    /// In a cluster: the ring the nodes route by now.
    pub fn ring(&self) -> parley_core::ring::Ring {
        let cluster = self.cluster.as_ref().expect("ring needs a cluster");
        let (_, handle) = cluster
            .nodes
            .iter()
            .find(|(spec, _)| spec.edge)
            .expect("an edge");
        handle.topology().ring.clone()
    }

    pub fn app_id(&self) -> &'static str {
        APP_ID
    }

    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    /// The HTTP address of every edge (the server API is served there too).
    pub fn http_addresses(&self) -> Vec<SocketAddr> {
        self.edges.clone()
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
        let now = parley_core::time::unix_secs() as u32;
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
