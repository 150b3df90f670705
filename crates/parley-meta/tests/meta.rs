//! Three meta nodes on 127.0.0.1 with real gRPC: forming the cluster, data nodes joining by
//! heartbeat, failure detection, leader loss, restarts from disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use parley_meta::MetaConfig;
use parley_meta::MetaNode;
use parley_proto::cluster::v1 as wire;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct RunningMeta {
    node: Arc<MetaNode>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl RunningMeta {
    async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.node.shutdown().await;
        let _ = self.server.await;
    }
}

async fn start_meta(config: MetaConfig, listener: TcpListener) -> RunningMeta {
    let node = MetaNode::start(config).await.expect("meta starts");
    let (raft, meta) = node.services();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(raft)
            .add_service(meta)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await;
    });
    RunningMeta {
        node,
        stop: Some(stop_tx),
        server,
    }
}

struct Metas {
    dirs: Vec<std::path::PathBuf>,
    addresses: BTreeMap<u64, String>,
    running: BTreeMap<u64, RunningMeta>,
}

fn config(id: u64, addresses: &BTreeMap<u64, String>, dir: &std::path::Path) -> MetaConfig {
    let mut config = MetaConfig::new(id, addresses[&id].clone(), dir.to_path_buf());
    config.initial_members = addresses.clone();
    config
}

impl Metas {
    async fn start(count: u64) -> Metas {
        Metas::start_with(count, |_| {}).await
    }

    async fn start_with(count: u64, edit: impl Fn(&mut MetaConfig)) -> Metas {
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for id in 1..=count {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(id, listener.local_addr().unwrap().to_string());
            listeners.insert(id, listener);
        }
        let dirs: Vec<_> = (0..count).map(|_| temp_dir()).collect();
        let mut running = BTreeMap::new();
        for (id, listener) in listeners {
            let dir = &dirs[id as usize - 1];
            let mut config = config(id, &addresses, dir);
            edit(&mut config);
            running.insert(id, start_meta(config, listener).await);
        }
        Metas {
            dirs,
            addresses,
            running,
        }
    }

    async fn restart(&mut self, id: u64) {
        let listener = TcpListener::bind(&self.addresses[&id]).await.unwrap();
        let dir = self.dirs[id as usize - 1].clone();
        self.running.insert(
            id,
            start_meta(config(id, &self.addresses, &dir), listener).await,
        );
    }

    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((id, _)) = self.running.iter().find(|(_, meta)| meta.node.is_leader()) {
                return *id;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn addresses(&self) -> Vec<String> {
        self.addresses.values().cloned().collect()
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "parley-meta-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

fn data_node(node: u64, owner: bool) -> wire::NodeInfo {
    wire::NodeInfo {
        node,
        edge: !owner,
        owner,
        grpc_address: format!("127.0.0.1:{}", 9000 + node),
        http_address: String::new(),
        status: 0,
        incarnation: 42,
    }
}

/// Heartbeats as `info` until aborted; the topologies it receives come out of the watch.
fn follow(
    info: wire::NodeInfo,
    metas: Vec<String>,
) -> (
    tokio::task::JoinHandle<()>,
    watch::Receiver<Option<wire::ClusterTopology>>,
) {
    let (tx, rx) = watch::channel(None);
    // What the test has received counts as applied.
    let applied = rx.clone();
    let task = tokio::spawn(parley_meta::watch::follow(
        info,
        metas,
        move |topology| {
            tx.send_replace(Some(topology));
        },
        move || {
            applied
                .borrow()
                .as_ref()
                .map_or(0, |topology| topology.epoch)
        },
    ));
    (task, rx)
}

async fn wait_for(
    rx: &mut watch::Receiver<Option<wire::ClusterTopology>>,
    what: &str,
    check: impl Fn(&wire::ClusterTopology) -> bool,
) -> wire::ClusterTopology {
    let seen = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|topology| topology.as_ref().is_some_and(&check)),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .unwrap();
    seen.clone().unwrap()
}

fn status_of(topology: &wire::ClusterTopology, node: u64) -> Option<wire::NodeStatus> {
    topology
        .nodes
        .iter()
        .find(|info| info.node == node)
        .map(|info| info.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_by_heartbeat_and_silent_ones_are_marked_down() {
    let metas = Metas::start(3).await;
    metas.leader().await;
    let (owner_a, mut view_a) = follow(data_node(11, true), metas.addresses());
    let (owner_b, _view_b) = follow(data_node(12, true), metas.addresses());
    let both_up = wait_for(&mut view_a, "both owners up", |topology| {
        status_of(topology, 11) == Some(wire::NodeStatus::Up)
            && status_of(topology, 12) == Some(wire::NodeStatus::Up)
    })
    .await;
    assert_eq!(both_up.metas.len(), 3);
    assert_eq!(both_up.metas.iter().filter(|meta| meta.leader).count(), 1);

    // Owner 12 goes silent: the leader takes it out within the timeout and the others hear.
    owner_b.abort();
    let silent_at = Instant::now();
    let down = wait_for(&mut view_a, "owner 12 down", |topology| {
        status_of(topology, 12) == Some(wire::NodeStatus::Down)
    })
    .await;
    let took = silent_at.elapsed();
    assert!(down.epoch > both_up.epoch);
    assert!(
        took >= Duration::from_millis(700),
        "marked down too early: {took:?}"
    );
    owner_a.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_long_is_forgotten_and_joins_again_when_it_restarts() {
    let metas = Metas::start_with(3, |config| {
        config.forget_after = Duration::from_millis(1500)
    })
    .await;
    metas.leader().await;
    let (owner, mut view) = follow(data_node(31, true), metas.addresses());
    let (edge, _edge_view) = follow(data_node(32, false), metas.addresses());
    wait_for(&mut view, "both up", |topology| {
        status_of(topology, 31) == Some(wire::NodeStatus::Up)
            && status_of(topology, 32) == Some(wire::NodeStatus::Up)
    })
    .await;
    edge.abort();
    let silent_at = Instant::now();
    wait_for(&mut view, "edge 32 down", |topology| {
        status_of(topology, 32) == Some(wire::NodeStatus::Down)
    })
    .await;
    wait_for(&mut view, "edge 32 forgotten", |topology| {
        status_of(topology, 32).is_none()
    })
    .await;
    // Forgotten once silent for `forget_after` (it was marked down after `node_timeout`).
    assert!(
        silent_at.elapsed() >= Duration::from_millis(1400),
        "forgotten too early: {:?}",
        silent_at.elapsed()
    );
    // A new run of it (a new incarnation) joins again.
    let restarted = wire::NodeInfo {
        incarnation: 43,
        ..data_node(32, false)
    };
    let (again, _again_view) = follow(restarted, metas.addresses());
    wait_for(&mut view, "edge 32 back", |topology| {
        status_of(topology, 32) == Some(wire::NodeStatus::Up)
    })
    .await;
    owner.abort();
    again.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_nodes_follow_it() {
    let mut metas = Metas::start(3).await;
    let first = metas.leader().await;
    let (owner, mut view) = follow(data_node(21, true), metas.addresses());
    let joined = wait_for(&mut view, "owner 21 up", |topology| {
        status_of(topology, 21) == Some(wire::NodeStatus::Up)
    })
    .await;

    metas.running.remove(&first).unwrap().kill().await;
    let second = metas.leader().await;
    assert_ne!(first, second);

    // The node heartbeats to the new leader, which then notices a newcomer too.
    let (edge, _edge_view) = follow(data_node(22, false), metas.addresses());
    let later = wait_for(&mut view, "edge 22 up under the new leader", |topology| {
        status_of(topology, 22) == Some(wire::NodeStatus::Up)
    })
    .await;
    assert!(later.epoch > joined.epoch);
    assert_eq!(status_of(&later, 21), Some(wire::NodeStatus::Up));

    // The old leader comes back from its disk and catches up as a follower.
    metas.restart(first).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metas.running[&first].node.cluster().epoch < later.epoch {
        assert!(Instant::now() < deadline, "restarted meta did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    owner.abort();
    edge.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_stays_out_until_it_restarts() {
    let metas = Metas::start(3).await;
    metas.leader().await;
    let (owner, mut view) = follow(data_node(31, true), metas.addresses());
    wait_for(&mut view, "owner 31 up", |topology| {
        status_of(topology, 31) == Some(wire::NodeStatus::Up)
    })
    .await;
    let addresses = metas.addresses();
    parley_meta::watch::command(&addresses, |mut client| async move {
        client.drain(wire::NodeCommand { node: 31 }).await
    })
    .await
    .unwrap();
    wait_for(&mut view, "owner 31 draining", |topology| {
        status_of(topology, 31) == Some(wire::NodeStatus::Draining)
    })
    .await;
    let unknown = parley_meta::watch::command(&addresses, |mut client| async move {
        client.drain(wire::NodeCommand { node: 99 }).await
    })
    .await
    .unwrap_err();
    assert!(unknown.to_string().contains("no data node 99"), "{unknown}");

    // The same run keeps heartbeating: still draining. A new run (incarnation) comes back up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status_of(view.borrow().as_ref().unwrap(), 31),
        Some(wire::NodeStatus::Draining)
    );
    owner.abort();
    let mut restarted = data_node(31, true);
    restarted.incarnation = 43;
    let (owner, mut view) = follow(restarted, metas.addresses());
    wait_for(&mut view, "owner 31 up again", |topology| {
        status_of(topology, 31) == Some(wire::NodeStatus::Up)
    })
    .await;
    owner.abort();
}
