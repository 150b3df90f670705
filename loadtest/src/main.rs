//! `parley-loadtest`: drives a running Parley over real WebSockets and prints what it measured,
//! including the server's memory and CPU (read from /proc for `--server-pid`); `--json FILE`
//! also writes the report as JSON.
//!
//! ```text
//! parley-loadtest --url ws://127.0.0.1:8080/v1/ws --app-id APP --server-pid PID connections --connections 2000
//! parley-loadtest --url … --app-id APP --server-pid PID fanout --channels 1 --members 500 --rate 1000 --seconds 10
//! parley-loadtest --url … --app-id APP --server-pid PID p2p --users 200 --rate 5 --seconds 10
//! parley-loadtest --url … --app-id APP --server-pid PID churn --rate 100 --seconds 10
//! parley-loadtest --url … --app-id APP --server-pid PID flood --rate 20000 --sustainable 2000
//! parley-loadtest --protocol nats --url ws://127.0.0.1:4223 --server-pid PID fanout …
//! parley-loadtest --cluster target/release/parley fanout …   # starts a 3/3/2 cluster, clients on both edges
//! parley-loadtest failover --rounds 5     # starts its own cluster (cargo build --release -p parley)
//! parley-loadtest soak --seconds 120      # its own cluster, with a fault every 5 s, and an oracle
//! parley-loadtest report --out report.html results/*.json
//! ```

use std::path::PathBuf;

use clap::Parser;
use clap::Subcommand;
use parley_loadtest::churn;
use parley_loadtest::common::Target;
use parley_loadtest::connections;
use parley_loadtest::failover;
use parley_loadtest::fanout;
use parley_loadtest::flood;
use parley_loadtest::p2p;
use parley_loadtest::regions::Regions;
use parley_loadtest::report;
use parley_loadtest::soak;
use parley_loadtest::wire::Protocol;
use parley_testkit::ProcessCluster;
use parley_testkit::processes::CLUSTER_APP_ID;

#[derive(Parser)]
struct Cli {
    /// Where clients connect; several (comma-separated, a cluster's edges) take turns.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/v1/ws"
    )]
    url: Vec<String>,
    #[arg(long, default_value = "")]
    app_id: String,
    /// The server processes (comma-separated), for their memory and CPU figures, summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Start a cluster of this `parley` binary (3 meta, 3 owners, 2 edges, one Redis; needs
    /// redis-server) and run the scenario against it: clients on both edges, every node's
    /// memory and CPU counted. Replaces --url, --app-id and --server-pid.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Start two regions of this `parley` binary ("eu" and "us", each 1 meta, 2 owners, 1
    /// edge and a Redis; needs redis-server and tansu) joined by a Kafka-protocol broker, and
    /// run the scenario across them: clients alternate between eu's edge and us's. In
    /// `fanout`, the first member (the sender, at up to 50 msg/s per channel) is in eu, so
    /// `latency_by_url` holds eu's local figures and the crossing's.
    #[arg(long, conflicts_with = "cluster")]
    regions: Option<PathBuf>,
    /// What the server speaks: Parley, or a system it is compared with (fanout, connections and
    /// churn only).
    #[arg(long, value_enum, default_value_t = Protocol::Parley)]
    protocol: Protocol,
    /// Also write the report to this file, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    test: Test,
}

#[derive(Subcommand)]
enum Test {
    /// Logged-in idle connections opened at a rate: server memory per connection, idle CPU.
    Connections(connections::Options),
    /// C channels × M members at a constant message rate: deliveries, latency, server CPU, loss.
    Fanout(fanout::Options),
    /// Connections coming and going at a rate (run it beside another scenario to load both).
    Churn(churn::Options),
    /// Users sending acknowledged peer messages to random peers: latency and loss.
    P2p(p2p::Options),
    /// A channel flooded past what the server can deliver, beside well-behaved users: their
    /// latency before and during, the server's memory, what was refused and who was shed.
    Flood(flood::Options),
    /// Starts its own cluster of `parley run` processes (3 meta, 3 owners, 2 edges, Redis),
    /// kills an owner with SIGKILL and times how long until each of its channels serves again.
    Failover(failover::Options),
    /// Starts its own cluster (3 meta, 3 owners, 2 edges, Redis, a broker) and runs load through
    /// a fault every few seconds (kills, restarts, a partition), then checks nothing
    /// acknowledged was lost, duplicated or left behind; fails when anything was.
    Soak(soak::Options),
    /// An HTML report (tables and plots, no server needed) from the JSON reports of earlier runs.
    Report(report::Options),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut target = Target {
        urls: cli.url,
        app_id: cli.app_id,
        server_pids: cli.server_pid,
        protocol: cli.protocol,
    };
    // Kept until the scenario ends: dropping it stops the cluster.
    let mut _cluster = None;
    if let Some(binary) = &cli.cluster {
        anyhow::ensure!(cli.protocol == Protocol::Parley, "--cluster starts Parley");
        let cluster = ProcessCluster::start(binary, 3, 3, 2).await;
        target.urls = cluster.edge_urls();
        target.app_id = CLUSTER_APP_ID.into();
        target.server_pids = cluster.pids();
        _cluster = Some(cluster);
    }
    let mut _regions = None;
    if let Some(binary) = &cli.regions {
        anyhow::ensure!(cli.protocol == Protocol::Parley, "--regions starts Parley");
        let regions = Regions::start(binary).await?;
        target.urls = regions.urls();
        target.app_id = CLUSTER_APP_ID.into();
        target.server_pids = regions.pids();
        _regions = Some(regions);
    }
    if cli.protocol != Protocol::Parley
        && !matches!(
            cli.test,
            Test::Connections(_) | Test::Fanout(_) | Test::Churn(_)
        )
    {
        anyhow::bail!("only fanout, connections and churn measure other systems");
    }
    let report = match cli.test {
        Test::Connections(options) => connections::run(&target, &options).await?,
        Test::Fanout(options) => fanout::run(&target, &options).await?,
        Test::Churn(options) => churn::run(&target, &options).await?,
        Test::P2p(options) => p2p::run(&target, &options).await?,
        Test::Flood(options) => flood::run(&target, &options).await?,
        Test::Soak(options) => soak::run(options).await?,
        Test::Failover(options) => {
            failover::run(options).await?;
            return Ok(());
        }
        Test::Report(options) => {
            report::write(&options)?;
            return Ok(());
        }
    };
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
