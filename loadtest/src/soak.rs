//! `soak`: a cluster of `parley run` processes (3 meta, 3 owners, 2 edges, Redis, a
//! Kafka-protocol broker taking the app events) under steady load for a bounded time, with a
//! fault every few seconds, in turn: an owner killed (SIGKILL) and restarted, an edge killed and
//! restarted, the meta leader killed and restarted, Redis restarted, the broker restarted, an
//! owner frozen (SIGSTOP) past the failure timeout and resumed, an owner no other node can reach
//! (an asymmetric partition: it still reaches meta) and healed. Then the oracle of
//! `parley_testkit::chaos` judges the run (nothing acknowledged lost, no gap untold, no
//! duplicates, one set of owners per ring epoch, no orphaned memberships); any failure makes the
//! command fail.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use parley_testkit::KafkaBroker;
use parley_testkit::ProcessCluster;
use parley_testkit::chaos::Load;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::Role;
use serde_json::json;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// The `parley` binary to run the cluster of.
    #[arg(long, default_value = "target/release/parley")]
    pub parley: PathBuf,
    /// How long the load runs (faults keep coming until then).
    #[arg(long, default_value_t = 120.0)]
    pub seconds: f64,
    /// Pause between the end of one fault and the next.
    #[arg(long, default_value_t = 5.0)]
    pub fault_every: f64,
    /// Users, each in every channel, each sending a peer and a channel message per --pause-ms.
    #[arg(long, default_value_t = 8)]
    pub users: usize,
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    #[arg(long, default_value_t = 50)]
    pub pause_ms: u64,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    OwnerKilled,
    EdgeKilled,
    MetaLeaderKilled,
    RedisRestarted,
    BrokerRestarted,
    OwnerFrozen,
    OwnerPartitioned,
}

const FAULTS: [Fault; 7] = [
    Fault::OwnerKilled,
    Fault::EdgeKilled,
    Fault::MetaLeaderKilled,
    Fault::RedisRestarted,
    Fault::BrokerRestarted,
    Fault::OwnerFrozen,
    Fault::OwnerPartitioned,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::OwnerKilled => "owner killed and restarted",
            Fault::EdgeKilled => "edge killed and restarted",
            Fault::MetaLeaderKilled => "meta leader killed and restarted",
            Fault::RedisRestarted => "Redis restarted",
            Fault::BrokerRestarted => "broker restarted",
            Fault::OwnerFrozen => "owner frozen past the timeout, then resumed",
            Fault::OwnerPartitioned => "owner unreachable from other nodes, then healed",
        }
    }
}

pub async fn run(options: Options) -> anyhow::Result<serde_json::Value> {
    let mut broker = KafkaBroker::start();
    let brokers = broker.brokers();
    let mut cluster =
        ProcessCluster::start_with(&options.parley, 3, 3, 2, &["--kafka-brokers", &brokers]).await;
    let owners = cluster.ids(Role::Owner);
    let edges = cluster.ids(Role::Edge);
    // The last owner can be cut off: others reach it, and it reaches meta, through proxies.
    let partitioned = *owners.last().expect("owners");
    cluster.make_partitionable(partitioned).await;
    cluster.wait_until_all_up().await;

    let mut load = Load::start(
        &cluster.edge_urls(),
        CLUSTER_APP_ID,
        options.users,
        options.channels,
        Duration::from_millis(options.pause_ms),
    )
    .await;
    let data_nodes = owners
        .iter()
        .chain(&edges)
        .map(|id| cluster.grpc_address(*id))
        .collect();
    load.watch_rings(data_nodes);

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(options.seconds);
    let mut injected: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut turn = 0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() < until {
        let fault = FAULTS[turn % FAULTS.len()];
        let victim_owner = owners[(turn / FAULTS.len()) % (owners.len() - 1)];
        let victim_edge = edges[(turn / FAULTS.len()) % edges.len()];
        eprintln!(
            "soak: {:>5.1} s: {}",
            started.elapsed().as_secs_f64(),
            fault.name()
        );
        match fault {
            Fault::OwnerKilled => {
                cluster.kill(victim_owner);
                cluster.wait_until_down(victim_owner).await;
                cluster.restart(victim_owner);
            }
            Fault::EdgeKilled => {
                cluster.kill(victim_edge);
                cluster.wait_until_down(victim_edge).await;
                cluster.restart(victim_edge);
            }
            Fault::MetaLeaderKilled => {
                let leader = cluster.leader().await;
                cluster.kill(leader);
                cluster
                    .wait_for("another meta leader", Duration::from_secs(15), |topology| {
                        topology
                            .metas
                            .iter()
                            .any(|meta| meta.leader && meta.node != leader)
                    })
                    .await;
                cluster.restart(leader);
            }
            Fault::RedisRestarted => cluster.redis().restart(),
            Fault::BrokerRestarted => {
                broker.stop();
                tokio::time::sleep(Duration::from_secs(1)).await;
                broker.start_again();
            }
            Fault::OwnerFrozen => {
                cluster.pause(victim_owner);
                cluster.wait_until_down(victim_owner).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Back, it must first learn it was taken out (and drop what it held).
                cluster.resume(victim_owner);
            }
            Fault::OwnerPartitioned => {
                // Edges and owners cannot call it; meta still hears it, so it stays in the ring
                // and its keys are unavailable (requests fail, nothing is acknowledged) until
                // the network heals.
                cluster.partition(partitioned);
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster.heal(partitioned);
            }
        }
        cluster.wait_until_all_up().await;
        *injected.entry(fault.name()).or_default() += 1;
        turn += 1;
        tokio::time::sleep(Duration::from_secs_f64(options.fault_every)).await;
    }
    let ran = started.elapsed().as_secs_f64();
    let verdict = load.finish().await;
    let failures = verdict.failures();
    let report = json!({
        "scenario": "soak",
        "seconds": ran,
        "users": options.users,
        "channels": options.channels,
        "faults": injected,
        "faults_total": turn,
        "peer_sends": verdict.peer_sends,
        "channel_sends": verdict.channel_sends,
        "acknowledged_peer": verdict.acked_peer,
        "acknowledged_channel": verdict.acked_channel,
        "deliveries_checked": verdict.deliveries_checked,
        "gaps_told": verdict.told_gaps,
        "ring_epochs": verdict.ring_epochs,
        "failures": failures,
    });
    println!(
        "soak: {ran:.0} s, {turn} faults ({}); {} peer and {} channel sends, {} and {} acknowledged; {} deliveries checked, {} gaps told, {} ring epochs; oracle: {}",
        injected
            .iter()
            .map(|(name, count)| format!("{name} ×{count}"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict.peer_sends,
        verdict.channel_sends,
        verdict.acked_peer,
        verdict.acked_channel,
        verdict.deliveries_checked,
        verdict.told_gaps,
        verdict.ring_epochs,
        if failures.is_empty() {
            "clean".to_owned()
        } else {
            failures.join("; ")
        },
    );
    anyhow::ensure!(failures.is_empty(), "the oracle refused the run");
    Ok(report)
}
