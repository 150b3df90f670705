//! Faults in a cluster of `parley run` processes (three meta nodes, three owners, two edges,
//! Redis), with clients on both edges sending peer and channel messages throughout. After each
//! fault the invariants hold:
//!
//! - every node that ran with a ring epoch ran with the same owners for it (so each channel and
//!   user had one owner per epoch);
//! - every acknowledged peer message reached its receiver (live, or from the offline inbox);
//! - every acknowledged channel message reached every other member (live, or replayed when its
//!   client resumed the channel), or the member was told its recovery was incomplete;
//! - nothing reached an application twice, and no channel lists a member after every logout.
//!
//! (`parley_testkit::chaos` holds the load and the oracle; `parley-loadtest soak` runs them
//! through a longer series of faults.)

use std::time::Duration;

use parley_proto::cluster::v1::NodeStatus;
use parley_testkit::ProcessCluster;
use parley_testkit::chaos::Load;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::Role;
use parley_testkit::processes::status;

const USERS: usize = 6;
const CHANNELS: usize = 3;
/// Pause between one user's sends.
const SEND_EVERY: Duration = Duration::from_millis(60);

async fn cluster_under_load() -> (ProcessCluster, Load) {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 3, 3, 2).await;
    let mut load = Load::start(
        &cluster.edge_urls(),
        CLUSTER_APP_ID,
        USERS,
        CHANNELS,
        SEND_EVERY,
    )
    .await;
    let data_nodes: Vec<String> = cluster
        .ids(Role::Owner)
        .into_iter()
        .chain(cluster.ids(Role::Edge))
        .map(|id| cluster.grpc_address(id))
        .collect();
    load.watch_rings(data_nodes);
    tokio::time::sleep(Duration::from_millis(800)).await;
    (cluster, load)
}

/// Lets the load run on a settled cluster for a while before the checks.
async fn run_on(cluster: &ProcessCluster) {
    cluster.wait_until_all_up().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_with_sigkill() {
    let (mut cluster, load) = cluster_under_load().await;
    let victim = cluster.ids(Role::Owner)[1];
    cluster.kill(victim);
    cluster.wait_until_down(victim).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.finish().await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_leader_killed() {
    let (mut cluster, load) = cluster_under_load().await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    cluster
        .wait_for("another meta leader", Duration::from_secs(10), |topology| {
            topology
                .metas
                .iter()
                .any(|meta| meta.leader && meta.node != leader)
        })
        .await;
    // Data keeps flowing meanwhile, and the new leader watches the nodes: one that dies now is
    // still taken out.
    let victim = cluster.ids(Role::Owner)[0];
    cluster.kill(victim);
    cluster.wait_until_down(victim).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.finish().await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed() {
    let (mut cluster, load) = cluster_under_load().await;
    let victim = cluster.ids(Role::Edge)[0];
    cluster.kill(victim);
    cluster.wait_until_down(victim).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    load.finish().await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node() {
    let (mut cluster, load) = cluster_under_load().await;
    let order: Vec<u64> = cluster
        .ids(Role::Meta)
        .into_iter()
        .chain(cluster.ids(Role::Owner))
        .chain(cluster.ids(Role::Edge))
        .collect();
    for id in order {
        // SIGTERM drains a data node before it exits; it comes back as a new run.
        cluster.stop(id);
        cluster.restart(id);
        run_on(&cluster).await;
        cluster.leader().await;
    }
    load.finish().await.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_added_under_load() {
    let (mut cluster, load) = cluster_under_load().await;
    let added = cluster.add(Role::Owner);
    let topology = cluster
        .wait_for(
            "the new owner in the ring",
            Duration::from_secs(10),
            |topology| status(topology, added) == Some(NodeStatus::Up),
        )
        .await;
    assert_eq!(topology.nodes.iter().filter(|info| info.owner).count(), 4);
    run_on(&cluster).await;
    load.finish().await.assert_clean();
}

/// A meta leader that did not run (paused, or starved of CPU on a busy machine) heard no
/// heartbeat meanwhile, and must not take that for the nodes' silence: when it runs again it
/// gives every node a full timeout, so a region that froze and thawed as a whole keeps its ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meta_leader_paused_past_the_timeout_marks_no_one_down() {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 1, 2, 1).await;
    let before = cluster.topology().await.expect("meta answers");
    let meta = cluster.ids(Role::Meta)[0];
    cluster.pause(meta);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.resume(meta);
    // Several of its timeouts after it runs again, nothing has changed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cluster.topology().await.expect("meta answers");
    assert_eq!(
        after.epoch, before.epoch,
        "meta changed the ring: {after:?}"
    );
    for id in cluster
        .ids(Role::Owner)
        .into_iter()
        .chain(cluster.ids(Role::Edge))
    {
        assert_eq!(status(&after, id), Some(NodeStatus::Up), "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_the_timeout_and_resumed() {
    let (cluster, load) = cluster_under_load().await;
    let victim = cluster.ids(Role::Owner)[2];
    cluster.pause(victim);
    cluster.wait_until_down(victim).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Back: it must first learn it was taken out (and drop what it held), then rejoin.
    cluster.resume(victim);
    run_on(&cluster).await;
    load.finish().await.assert_clean();
}
