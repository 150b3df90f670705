//! In-process `parley dev` nodes for tests.

use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::SystemTime;

use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_core::limits::Limits;
use parley_edge::EdgeConfig;
use parley_owner::OwnerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::RedisServer;

pub const APP_ID: &str = "0123456789abcdef0123456789ABCDEF";
pub const CERTIFICATE: &str = "fedcba9876543210fedcba9876543210";

pub struct TestServerBuilder {
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
        let redis = (self.store.is_none()
            && std::env::var("PARLEY_TEST_STORE").as_deref() == Ok("redis"))
        .then(RedisServer::start);
        let store_url = match (&self.store, &redis) {
            (Some(url), _) => url.clone(),
            (None, Some(redis)) => redis.url(),
            (None, None) => "embedded".to_owned(),
        };
        let store = parley::dev::open_store(&store_url, data_dir.path())
            .await
            .expect("open the store");
        let node = parley::dev::node(AppDirectory::new([app]), self.owner, self.edge, store)
            .await
            .expect("start a node");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let serving = tokio::spawn(parley::dev::serve(node, listener, async move {
            let _ = shutdown_rx.await;
        }));
        TestServer {
            addr,
            certificate,
            shutdown_tx,
            serving,
            _data_dir: data_dir,
            _redis: redis,
        }
    }
}

/// A running node; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    _data_dir: DataDir,
    /// The Redis server holding this node's state, with `PARLEY_TEST_STORE=redis`.
    _redis: Option<RedisServer>,
    certificate: Option<String>,
    shutdown_tx: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Default settings, with timers short enough for tests.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
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
        let _ = self.shutdown_tx.send(());
        self.serving
            .await
            .expect("server task")
            .expect("server ran without error");
    }

    pub fn app_id(&self) -> &'static str {
        APP_ID
    }

    pub fn certificate(&self) -> Option<&str> {
        self.certificate.as_deref()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
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
