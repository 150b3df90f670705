//! Flags of every sub-command. Each flag can also be set by its `PARLEY_…` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::Parser;
use clap::Subcommand;

#[derive(Debug, Parser)]
#[command(
    name = "parley",
    version,
    about = "Self-hosted real-time messaging",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process on embedded storage.
    Dev(Box<DevOptions>),
    /// Run one node of a cluster with the roles given (edge, owner, meta).
    Run(Box<RunOptions>),
    /// Inspect and change the cluster through meta.
    Cluster(ClusterOptions),
    /// Print a "007" RTM token for development.
    Token(TokenOptions),
    /// A scriptable JSON-lines client (see docs/cli.md).
    Client(ClientOptions),
    /// Operate on an app through the server API: send, kick, ban, mute, history, events.
    Admin(AdminOptions),
}

#[derive(Clone, Debug, Args)]
pub struct AdminOptions {
    /// An edge's HTTP address (the server API's gRPC is served there).
    #[arg(long, env = "PARLEY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    #[arg(long, env = "PARLEY_APP_ID")]
    pub app_id: String,
    /// The app's customer key, `KEY:SECRET`.
    #[arg(long, env = "PARLEY_CUSTOMER_KEY")]
    pub customer_key: String,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum AdminCommand {
    /// Send a peer message as any uid.
    SendPeer {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        text: String,
        /// Keep it for the receiver if it is offline.
        #[arg(long)]
        offline: bool,
        /// Keep it in history.
        #[arg(long)]
        history: bool,
        /// Wait for the receiver's acknowledgement.
        #[arg(long)]
        wait: bool,
    },
    /// Send a channel message as any uid, without joining.
    SendChannel {
        #[arg(long)]
        from: String,
        #[arg(long)]
        channel: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        history: bool,
    },
    /// A user's online status.
    Status {
        #[arg(long)]
        uid: String,
    },
    /// A channel's member count and members.
    Members {
        #[arg(long)]
        channel: String,
    },
    /// Take a user out of a channel.
    Kick {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        uid: String,
        /// Told to the kicked user.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Keep a uid from logging in for a while (its sessions end).
    Ban {
        #[arg(long)]
        uid: String,
        /// How long: `90s`, `10m`, `2h`, `7d`.
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Unban {
        #[arg(long)]
        uid: String,
    },
    /// The bans in force.
    Bans,
    /// Keep a uid's messages out of a channel for a while.
    Mute {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        uid: String,
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Unmute {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        uid: String,
    },
    /// The mutes in force in a channel.
    Mutes {
        #[arg(long)]
        channel: String,
    },
    /// A page of a channel's history, or of the conversation between two users.
    History {
        #[arg(long, conflicts_with = "peers", required_unless_present = "peers")]
        channel: Option<String>,
        /// `UID:PEER_ID`.
        #[arg(long)]
        peers: Option<String>,
        /// ms since the Unix epoch, inclusive (0: open).
        #[arg(long, default_value_t = 0)]
        start: i64,
        /// ms since the Unix epoch, exclusive (0: open).
        #[arg(long, default_value_t = 0)]
        end: i64,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long)]
        desc: bool,
        /// The `next` of the previous page.
        #[arg(long, default_value = "")]
        cursor: String,
        /// Print only how many messages the range holds.
        #[arg(long)]
        count: bool,
    },
    /// A page of the user (login, logout) or channel (join, leave) event log.
    Events {
        /// `users` or `channels`.
        stream: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Clone, Debug, Args)]
pub struct DevOptions {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, env = "PARLEY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Where state is kept between runs: the development app, and with the embedded store the
    /// offline inboxes, history and channel attributes.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = ".parley")]
    pub data_dir: PathBuf,
    /// Where durable state lives: `embedded` (in the data dir), `redis://HOST:PORT`, or
    /// `redis-cluster://HOST:PORT,HOST:PORT,…`.
    #[arg(long, env = "PARLEY_STORE", default_value = "embedded")]
    pub store: String,
    /// App ID to serve; without it a development app is created (and kept in the data dir).
    #[arg(long, env = "PARLEY_APP_ID")]
    pub app_id: Option<String>,
    /// Certificate of `--app-id`; without it that app takes logins without a token.
    #[arg(long, env = "PARLEY_APP_CERTIFICATE", requires = "app_id")]
    pub app_certificate: Option<String>,
    /// Let one uid be logged in from several devices at once instead of REMOTE_LOGIN.
    #[arg(long, env = "PARLEY_ALLOW_MULTI_LOGIN")]
    pub allow_multi_login: bool,
    /// A customer key of the app for the server API, `KEY:SECRET` (repeat, or separate with
    /// commas).
    #[arg(long, env = "PARLEY_CUSTOMER_KEYS", value_delimiter = ',')]
    pub customer_key: Vec<String>,
    #[command(flatten)]
    pub webhook: WebhookOptions,
    #[command(flatten)]
    pub kafka: KafkaOptions,
    /// How long a member whose connection was lost stays in its channels.
    #[arg(long, env = "PARLEY_MEMBER_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub member_grace: Duration,
    /// Interval at which clients must ping; three silent intervals end a connection.
    #[arg(long, env = "PARLEY_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a call invitation waits for an offline callee to log in (for tests and demos;
    /// Agora's is 30 s).
    #[arg(long, env = "PARLEY_INVITATION_OFFLINE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub invitation_offline_timeout: Duration,
    /// How long a call invitation waits for an answer (Agora's is 60 s).
    #[arg(long, env = "PARLEY_INVITATION_ANSWER_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub invitation_answer_timeout: Duration,
    /// Log format: text or json.
    #[arg(long, env = "PARLEY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub telemetry: TelemetryOptions,
    #[command(flatten)]
    pub client_port: ClientPortOptions,
}

/// How an edge's client port speaks, and what it takes before any request is read.
#[derive(Clone, Debug, Args)]
pub struct ClientPortOptions {
    /// The client port's certificate chain (PEM); with `--tls-key` the port speaks only TLS
    /// (wss://, https://). Read again when the file changes: renewals need no restart.
    #[arg(long, env = "PARLEY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "PARLEY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Client connections one IP address may hold on an edge; more are closed when accepted.
    /// Clients behind one NAT share an address: raise it for them.
    #[arg(
        long,
        env = "PARLEY_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 10_000
    )]
    pub max_connections_per_address: usize,
    /// Logged-in sessions one app may hold on an edge; more logins are refused with
    /// EXCEED_LIMIT, so one app cannot take an edge that serves others too.
    #[arg(long, env = "PARLEY_MAX_SESSIONS_PER_APP", default_value_t = 100_000)]
    pub max_sessions_per_app: usize,
    /// Time a new client connection has to send its first request (the WebSocket upgrade);
    /// a connection that sends nothing, or its headers a byte at a time, is closed then.
    #[arg(long, env = "PARLEY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
}

impl ClientPortOptions {
    pub fn apply(&self, config: &mut parley_edge::EdgeConfig) -> anyhow::Result<()> {
        config.max_connections_per_address = self.max_connections_per_address.max(1);
        config.max_sessions_per_app = self.max_sessions_per_app.max(1);
        config.handshake_timeout = self.handshake_timeout;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let files = parley_tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let cert = parley_tls::ReloadingCert::load(files).context("--tls-cert, --tls-key")?;
            config.tls = Some(parley_tls::server_config(cert, None)?);
        }
        Ok(())
    }

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// Mutual TLS between the nodes of a cluster.
#[derive(Clone, Debug, Args)]
pub struct ClusterTlsOptions {
    /// The certificate authority (PEM) that signed every node's certificate: with
    /// `--cluster-cert` and `--cluster-key`, nodes speak only mutual TLS to each other and take
    /// no caller without a certificate it signed.
    #[arg(
        long,
        env = "PARLEY_CLUSTER_CA",
        global = true,
        requires_all = ["cluster_cert", "cluster_key"]
    )]
    pub cluster_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM), carrying the DNS name `parley-node` (what nodes
    /// check of each other, whatever address they use); read again when the file changes.
    #[arg(
        long,
        env = "PARLEY_CLUSTER_CERT",
        global = true,
        requires = "cluster_ca"
    )]
    pub cluster_cert: Option<PathBuf>,
    /// The private key of `--cluster-cert` (PEM).
    #[arg(
        long,
        env = "PARLEY_CLUSTER_KEY",
        global = true,
        requires = "cluster_ca"
    )]
    pub cluster_key: Option<PathBuf>,
}

impl ClusterTlsOptions {
    /// Sets the process's cluster TLS when asked for; says whether it was.
    pub fn install(&self) -> anyhow::Result<bool> {
        let (Some(ca), Some(cert), Some(key)) =
            (&self.cluster_ca, &self.cluster_cert, &self.cluster_key)
        else {
            return Ok(false);
        };
        let files = parley_tls::CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let identity =
            parley_tls::ReloadingCert::load(files).context("--cluster-cert, --cluster-key")?;
        let roots = || parley_tls::roots_from_file(ca).context("--cluster-ca");
        let tls = parley_proto::cluster_auth::ClusterTls {
            server: parley_tls::server_config(identity.clone(), Some(roots()?))?,
            client: parley_tls::client_config(roots()?, Some(identity), &[b"h2"])?,
        };
        parley_proto::cluster_auth::set_cluster_tls(tls)
            .map_err(|_| anyhow::anyhow!("cluster TLS is already set in this process"))?;
        Ok(true)
    }
}

/// Where traces and metrics go besides `/metrics`.
#[derive(Clone, Debug, Args)]
pub struct TelemetryOptions {
    /// An OTLP gRPC endpoint (`http://collector:4317`) for traces and metrics; the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variables work too. Without either nothing is exported.
    #[arg(long, env = "PARLEY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of messages traced, 0 to 1 (a message keeps its sender's decision on every
    /// node). `OTEL_TRACES_SAMPLER` wins when set.
    #[arg(long, env = "PARLEY_TRACE_SAMPLE_RATIO", default_value_t = 0.01)]
    pub trace_sample_ratio: f64,
}

#[derive(Clone, Debug, Args)]
pub struct ClusterOptions {
    /// The cluster secret the nodes were started with (`parley run --cluster-secret`).
    #[arg(
        long,
        env = "PARLEY_CLUSTER_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
    #[command(flatten)]
    pub tls: ClusterTlsOptions,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Clone, Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the cluster as JSON: meta's view with `--meta`, or one node's with `--node`.
    Status {
        /// Meta nodes' gRPC addresses, comma-separated.
        #[arg(
            long,
            env = "PARLEY_META",
            value_delimiter = ',',
            conflicts_with = "node"
        )]
        meta: Vec<String>,
        /// A node's cluster (gRPC) address.
        #[arg(long, env = "PARLEY_NODE")]
        node: Option<String>,
    },
    /// Add a meta node (started with `--roles meta` and its own id) to the Raft voters.
    AddNode {
        #[arg(long, env = "PARLEY_META", value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long)]
        node_id: u64,
        /// The new meta node's gRPC address.
        #[arg(long)]
        address: String,
    },
    /// Forget a node: a data node that will not come back, or a meta node to leave the voters.
    RemoveNode {
        #[arg(long, env = "PARLEY_META", value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long)]
        node_id: u64,
    },
    /// Take a data node out of service: owners hand their channels and users over, edges send
    /// their clients to other edges. The node stays out until it restarts.
    Drain {
        #[arg(long, env = "PARLEY_META", value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long)]
        node_id: u64,
    },
    /// Serve an app on every edge and owner (or change its certificate or settings).
    PutApp {
        #[arg(long, env = "PARLEY_META", value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long)]
        app_id: String,
        /// Without it the app takes logins without a token (development only).
        #[arg(long)]
        app_certificate: Option<String>,
        #[arg(long)]
        allow_multi_login: bool,
        /// A customer key for the server API, `KEY:SECRET` (repeat for several; the keys given
        /// replace the app's keys, so leaving one out revokes it).
        #[arg(long, value_delimiter = ',')]
        customer_key: Vec<String>,
        #[command(flatten)]
        webhook: WebhookOptions,
    },
    /// Stop serving an app: new logins are refused with INVALID_APP_ID.
    RemoveApp {
        #[arg(long, env = "PARLEY_META", value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long)]
        app_id: String,
    },
}

#[derive(Clone, Debug, Args)]
pub struct RunOptions {
    /// A TOML file of settings, named as the flags are (`node-id = 4`, `roles = "edge,owner"`);
    /// flags and `PARLEY_…` variables win over it.
    #[arg(long, env = "PARLEY_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster (meta and data nodes alike); `auto` derives one
    /// from the host name (for pods of a Deployment).
    #[arg(long, env = "PARLEY_NODE_ID", value_parser = parse_node_id)]
    pub node_id: u64,
    /// This node's roles, comma-separated: edge, owner, meta.
    #[arg(long, env = "PARLEY_ROLES", value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// The meta nodes: `ID=HOST:PORT`, comma-separated (their gRPC addresses). Data nodes
    /// heartbeat to them; meta nodes listed here form the cluster when it is new.
    #[arg(long, env = "PARLEY_META", required = true)]
    pub meta: String,
    /// Where this node listens for the cluster (gRPC) API.
    #[arg(long, env = "PARLEY_GRPC_ADDR", default_value = "127.0.0.1:7100")]
    pub grpc_addr: SocketAddr,
    /// The gRPC address other nodes use (default: `--grpc-addr`).
    #[arg(long, env = "PARLEY_ADVERTISE_GRPC")]
    pub advertise_grpc: Option<String>,
    /// Where an edge listens for clients.
    #[arg(long, env = "PARLEY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// The client address clients use (default: `--http-addr`).
    #[arg(long, env = "PARLEY_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    /// Durable state of owners: `redis://…` or `redis-cluster://…` (shared by every owner), or
    /// `embedded` for a cluster with a single owner.
    #[arg(long, env = "PARLEY_STORE", default_value = "embedded")]
    pub store: String,
    /// Where the embedded store and a meta node's Raft log are kept.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = ".parley")]
    pub data_dir: PathBuf,
    /// Silence after which meta takes a data node out of service.
    #[arg(long, env = "PARLEY_NODE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// Silence after which meta forgets a data node it took out of service (an edge pod that
    /// was replaced); the node joins again if it restarts.
    #[arg(long, env = "PARLEY_FORGET_DOWN_AFTER", default_value = "1h", value_parser = parse_duration)]
    pub forget_down_after: Duration,
    #[arg(long, env = "PARLEY_APP_ID")]
    pub app_id: Option<String>,
    /// Without it the app takes logins without a token (development only).
    #[arg(long, env = "PARLEY_APP_CERTIFICATE")]
    pub app_certificate: Option<String>,
    #[arg(long, env = "PARLEY_ALLOW_MULTI_LOGIN")]
    pub allow_multi_login: bool,
    /// A customer key of `--app-id` for the server API, `KEY:SECRET` (repeat, or separate with
    /// commas).
    #[arg(long, env = "PARLEY_CUSTOMER_KEYS", value_delimiter = ',')]
    pub customer_key: Vec<String>,
    #[command(flatten)]
    pub webhook: WebhookOptions,
    #[command(flatten)]
    pub kafka: KafkaOptions,
    #[arg(long, env = "PARLEY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// A secret shared by every node of the cluster (16 to 256 visible ASCII characters): each
    /// call between nodes carries it, and calls without it are refused. Without it the cluster
    /// API takes calls from anyone who can reach `--grpc-addr`.
    #[arg(long, env = "PARLEY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    #[command(flatten)]
    pub cluster_tls: ClusterTlsOptions,
    /// Production mode: the node refuses to start unless its cluster port speaks mutual TLS
    /// (`--cluster-ca`, `--cluster-cert`, `--cluster-key`) and, on an edge, its client port
    /// speaks TLS (`--tls-cert`, `--tls-key`); so no connection without TLS is taken.
    #[arg(long, env = "PARLEY_PRODUCTION")]
    pub production: bool,
    /// Where this node serves `/healthz`, `/readyz` and `/metrics` (every role).
    #[arg(long, env = "PARLEY_OPS_ADDR", default_value = "127.0.0.1:9100")]
    pub ops_addr: SocketAddr,
    #[command(flatten)]
    pub telemetry: TelemetryOptions,
    #[command(flatten)]
    pub client_port: ClientPortOptions,
}

/// A node id, or `auto`: one derived from the host name, stable while the name is. Derived ids
/// are at least 2^32 (clear of ids an operator numbers by hand) and below 2^53 (exact in JSON).
fn parse_node_id(raw: &str) -> Result<u64, String> {
    if raw != "auto" {
        return raw
            .parse()
            .map_err(|_| format!("{raw:?} is neither a number nor `auto`"));
    }
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or("`auto` needs a host name (HOSTNAME or /proc/sys/kernel/hostname)")?;
    Ok(node_id_of_host(&hostname))
}

/// FNV-1a of the host name, folded into [2^32, 2^53).
fn node_id_of_host(hostname: &str) -> u64 {
    let hash = hostname
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (1 << 32) + hash % ((1 << 53) - (1 << 32))
}

/// Where owners publish every app's events on Kafka.
#[derive(Clone, Debug, Default, Args)]
pub struct KafkaOptions {
    /// Kafka brokers, `HOST:PORT,…`; without them no events go to Kafka.
    #[arg(long, env = "PARLEY_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The topic app events are published on.
    #[arg(long, env = "PARLEY_EVENTS_TOPIC", default_value = "parley-events")]
    pub events_topic: String,
    /// Partitions of the events topic, when Parley creates it.
    #[arg(long, env = "PARLEY_EVENTS_PARTITIONS", default_value_t = 3)]
    pub events_partitions: i32,
    /// This region's name, when Parley runs in several regions: channel messages then cross
    /// to the `--remote-regions` over Kafka (`--kafka-brokers`, shared by every region).
    #[arg(long, env = "PARLEY_REGION", requires_all = ["kafka_brokers", "remote_regions"])]
    pub region: Option<String>,
    /// The other regions (comma-separated).
    #[arg(
        long,
        env = "PARLEY_REMOTE_REGIONS",
        value_delimiter = ',',
        requires = "region"
    )]
    pub remote_regions: Vec<String>,
    /// Partitions of a region's topic (`parley-region-NAME`), when Parley creates it.
    #[arg(long, env = "PARLEY_REGION_PARTITIONS", default_value_t = 6)]
    pub region_partitions: i32,
}

impl KafkaOptions {
    /// The event pipeline these options ask for.
    pub fn pipeline(&self) -> parley_events::PipelineConfig {
        parley_events::PipelineConfig {
            kafka: self
                .kafka_brokers
                .as_ref()
                .map(|brokers| parley_events::KafkaConfig {
                    brokers: brokers.clone(),
                    topic: self.events_topic.clone(),
                    partitions: self.events_partitions,
                }),
            ..parley_events::PipelineConfig::default()
        }
    }

    /// The regions these options name, if any.
    pub fn regions(&self) -> anyhow::Result<Option<parley_bridge::RegionConfig>> {
        let (Some(region), Some(brokers)) = (&self.region, &self.kafka_brokers) else {
            return Ok(None);
        };
        let config = parley_bridge::RegionConfig {
            brokers: brokers.clone(),
            region: region.clone(),
            remote_regions: self.remote_regions.clone(),
            partitions: self.region_partitions,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

/// An app's webhook.
#[derive(Clone, Debug, Default, Args)]
pub struct WebhookOptions {
    /// Where the app's events (logins, logouts, joins, leaves, messages cached for offline
    /// users, invitations to offline users) are POSTed, an `http://` URL.
    #[arg(long, env = "PARLEY_WEBHOOK_URL", requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The secret that signs webhook requests (`x-parley-signature`: HMAC-SHA256 of the body).
    #[arg(long, env = "PARLEY_WEBHOOK_SECRET", requires = "webhook_url")]
    pub webhook_secret: Option<String>,
}

impl WebhookOptions {
    pub fn webhook(&self) -> anyhow::Result<Option<parley_core::app::Webhook>> {
        match (&self.webhook_url, &self.webhook_secret) {
            (Some(url), Some(secret)) => parley_core::app::Webhook::new(url, secret)
                .map(Some)
                .map_err(|error| anyhow::anyhow!("--webhook-url: {error}")),
            _ => Ok(None),
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct TokenOptions {
    #[arg(long, env = "PARLEY_APP_ID")]
    pub app_id: String,
    #[arg(long, env = "PARLEY_APP_CERTIFICATE")]
    pub app_certificate: String,
    #[arg(long)]
    pub uid: String,
    /// Seconds the token is valid for.
    #[arg(long, default_value_t = 3600)]
    pub expire: u32,
}

impl TokenOptions {
    pub fn build(&self) -> String {
        let now = parley_core::time::unix_secs() as u32;
        parley_core::token::build_007(
            &self.app_id,
            &self.app_certificate,
            &self.uid,
            self.expire,
            now,
            rand::random_range(1..99_999_999),
        )
    }
}

#[derive(Clone, Debug, Args)]
pub struct ClientOptions {
    #[arg(long, env = "PARLEY_URL", default_value = "ws://127.0.0.1:8080/v1/ws")]
    pub url: String,
    #[arg(long, env = "PARLEY_APP_ID")]
    pub app_id: String,
    #[arg(long)]
    pub uid: String,
    #[arg(long, env = "PARLEY_TOKEN", default_value = "")]
    pub token: String,
    /// Stay online after the end of input, printing events, until killed.
    #[arg(long)]
    pub stay: bool,
    /// Wire encoding: proto (binary frames) or json (text frames).
    #[arg(long, default_value = "proto")]
    pub codec: String,
}

/// Parses a duration as humantime reads it (`250ms`, `20s`, `5m`, `1h 30m`, `7d`), or a bare
/// number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(raw).map_err(|error| format!("invalid duration {raw:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn node_ids_are_numbers_or_derived_from_the_host_name() {
        assert_eq!(parse_node_id("7"), Ok(7));
        assert!(parse_node_id("seven").is_err());
        let edge = node_id_of_host("parley-edge-5d9c7b8f4-x2k9q");
        assert_eq!(
            edge,
            node_id_of_host("parley-edge-5d9c7b8f4-x2k9q"),
            "stable"
        );
        assert_ne!(edge, node_id_of_host("parley-edge-5d9c7b8f4-x2k9r"));
        for host in [
            "a",
            "parley-edge-0",
            "a-very-long-host-name.example.internal",
        ] {
            let id = node_id_of_host(host);
            assert!((1 << 32..1 << 53).contains(&id), "{host}: {id}");
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command_for_tests().debug_assert();
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
