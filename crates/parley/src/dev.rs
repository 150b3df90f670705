//! `parley dev`: every role in one process, owner and edge joined by in-process calls.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parley_bridge::RegionConfig;
use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::app::MultiLogin;
use parley_core::ids::AppId;
use parley_edge::Edge;
use parley_edge::EdgeConfig;
use parley_edge::Router;
use parley_events::PipelineConfig;
use parley_owner::OwnerConfig;
use parley_proto::v1::connection_state_changed::Reason;
use parley_store::Store;
use tokio::net::TcpListener;

use crate::cli::DevOptions;

/// One node with every role, ready to serve.
pub struct Node {
    pub edge: Arc<Edge>,
    pub router: Router,
}

/// Builds a node with every role the way `parley run` builds a cluster node
/// ([`crate::cluster::node`]), as the only node of a cluster without meta: its ring is itself.
pub async fn node(
    apps: AppDirectory,
    owner_config: OwnerConfig,
    edge_config: EdgeConfig,
    events: PipelineConfig,
    regions: Option<RegionConfig>,
    store: Arc<dyn Store>,
) -> anyhow::Result<Node> {
    let spec = crate::cluster::NodeSpec {
        node: edge_config.node,
        edge: true,
        owner: true,
        grpc_address: String::new(),
        http_address: String::new(),
        metas: Vec::new(),
        meta: None,
    };
    let node = crate::cluster::node(
        spec,
        apps,
        owner_config,
        edge_config,
        events,
        regions,
        Some(store),
    )
    .await?;
    let handle = node.handle();
    handle.stand_alone();
    Ok(Node {
        edge: handle
            .edge()
            .ok_or_else(|| anyhow::anyhow!("the node has no edge"))?,
        router: node
            .router
            .ok_or_else(|| anyhow::anyhow!("the node has no router"))?,
    })
}

/// How long sessions get to say goodbye when the node stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `node` on `listener` until `shutdown` completes; then ends every session with
/// SERVER_SHUTDOWN (so clients reconnect elsewhere) before returning.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let edge = node.edge.clone();
    let shutdown = async move {
        shutdown.await;
        edge.end_all_sessions(Reason::ServerShutdown, SHUTDOWN_GRACE)
            .await;
    };
    let config = node.edge.config().clone();
    parley_edge::serve(listener, node.router, &config, shutdown).await
}

pub async fn run(
    options: DevOptions,
    telemetry: Arc<parley_telemetry::Telemetry>,
) -> anyhow::Result<ExitCode> {
    let mut app = resolve_app(&options)?;
    app.customer_keys = crate::node::customer_keys(&options.customer_key)?;
    app.webhook = options.webhook.webhook()?;
    if options.allow_multi_login {
        app.multi_login = MultiLogin::AllowMany;
    }
    let owner_config = OwnerConfig {
        member_grace: options.member_grace,
        invitation_timers: parley_core::invitation::InvitationTimers {
            callee_offline: options.invitation_offline_timeout,
            receipt: options.invitation_offline_timeout,
            answer: options.invitation_answer_timeout,
        },
        ..OwnerConfig::default()
    };
    let mut edge_config = EdgeConfig {
        heartbeat_interval: options.heartbeat_interval,
        ..EdgeConfig::default()
    };
    options.client_port.apply(&mut edge_config)?;
    let listener = TcpListener::bind(options.http_addr)
        .await
        .with_context(|| format!("bind {}", options.http_addr))?;
    let addr = listener.local_addr()?;

    // The banner is written once, ignoring errors: a closed stdout must not stop the server.
    let mut banner = format!(
        "parley dev is listening on ws://{addr}/v1/ws (health: http://{addr}/healthz, metrics: http://{addr}/metrics)\n  app id:          {}\n",
        app.app_id
    );
    match &app.certificate {
        Some(certificate) => banner.push_str(&format!(
            "  app certificate: {certificate}\n  a token for alice: parley token --app-id {} --app-certificate {certificate} --uid alice\n",
            app.app_id
        )),
        None => banner.push_str("  app certificate: none (logins need no token)\n"),
    }
    banner.push_str(&match app.customer_keys.first() {
        Some(key) => format!(
            "  server API:      http://{addr}/v1/apps/{}/… with customer key {} (REST and gRPC)\n",
            app.app_id, key.key
        ),
        None => "  server API:      give --customer-key KEY:SECRET to use it\n".to_owned(),
    });
    banner.push_str(&format!(
        "  demo:            http://{addr}/ (open it in two browser windows)\n"
    ));
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());

    let store = crate::node::open_store(&options.store, &options.data_dir).await?;
    let mut node = node(
        AppDirectory::new([app.clone()]),
        owner_config,
        edge_config,
        options.kafka.pipeline(),
        options.kafka.regions()?,
        store.clone(),
    )
    .await?;
    let readiness = crate::ops::node_readiness(None, Some(store), None);
    node.router = node
        .router
        .merge(crate::web::routes(app))
        .merge(crate::ops::routes(telemetry, readiness));
    serve(node, listener, crate::node::shutdown_signal()).await?;
    tracing::info!("parley dev stopped");
    Ok(ExitCode::SUCCESS)
}

/// The app `parley dev` serves: from flags, or the development app kept in the data dir (created
/// on first start).
fn resolve_app(options: &DevOptions) -> anyhow::Result<AppConfig> {
    if let Some(app_id) = &options.app_id {
        let app_id = AppId::parse(app_id).map_err(|error| anyhow::anyhow!("--app-id: {error}"))?;
        return Ok(AppConfig::new(app_id, options.app_certificate.clone()));
    }
    let path = options.data_dir.join("dev-app.json");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        let saved: serde_json::Value =
            serde_json::from_str(&saved).with_context(|| format!("read {}", path.display()))?;
        let app_id = saved["appId"].as_str().unwrap_or_default();
        let app_id =
            AppId::parse(app_id).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        let certificate = saved["appCertificate"].as_str().map(str::to_owned);
        return Ok(AppConfig::new(app_id, certificate));
    }
    let app_id = random_hex32();
    let certificate = random_hex32();
    save_app(&path, &app_id, &certificate)?;
    Ok(AppConfig::new(
        AppId::parse(&app_id).expect("32 hex digits are a valid app id"),
        Some(certificate),
    ))
}

fn save_app(path: &Path, app_id: &str, certificate: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let saved = serde_json::json!({ "appId": app_id, "appCertificate": certificate });
    std::fs::write(path, serde_json::to_string_pretty(&saved)?)
        .with_context(|| format!("write {}", path.display()))
}

fn random_hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}
