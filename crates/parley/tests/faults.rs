//! Faults in a cluster of `parley run` processes (three meta nodes, three owners, two edges,
//! Redis), with clients on both edges sending peer and channel messages throughout. After each
//! fault the invariants hold:
//!
//! - every node that ran with a ring epoch ran with the same owners for it (so each channel and
//!   user had one owner per epoch);
//! - every acknowledged peer message reached its receiver (live, or from the offline inbox);
//! - every acknowledged channel message reached every other member (live, or replayed when its
//!   client resumed the channel).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::cluster::v1::NodeStatus;
use parley_proto::v1;
use parley_testkit::ProcessCluster;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::Role;
use parley_testkit::processes::status;
use tokio::task::JoinHandle;

const USERS: usize = 6;
const CHANNELS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Pause between one user's sends.
const SEND_EVERY: Duration = Duration::from_millis(60);
/// How long after the load stops everything acknowledged must have arrived.
const SETTLE: Duration = Duration::from_secs(6);

#[derive(Default)]
struct Record {
    /// (receiver, text) of every acknowledged peer message.
    acked_peer: Vec<(usize, String)>,
    /// (sender, text) of every acknowledged channel message (sent to every other user).
    acked_channel: Vec<(usize, String)>,
    received_peer: Vec<HashSet<String>>,
    received_channel: Vec<HashSet<String>>,
    /// What each data node said its ring was, by epoch.
    rings: BTreeMap<u64, BTreeSet<Vec<u64>>>,
}

struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    tasks: Vec<JoinHandle<()>>,
    clients: Vec<Client>,
}

fn uid(user: usize) -> String {
    format!("user{user}")
}

impl Load {
    /// Logs the users in (spread over the edges, each knowing the others), joins every channel
    /// and starts sending.
    async fn start(cluster: &ProcessCluster) -> Load {
        let urls = cluster.edge_urls();
        let record = Arc::new(Mutex::new(Record {
            received_peer: vec![HashSet::new(); USERS],
            received_channel: vec![HashSet::new(); USERS],
            ..Record::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        let mut tasks = Vec::new();
        for user in 0..USERS {
            let first = user % urls.len();
            let others = urls
                .iter()
                .cycle()
                .skip(first + 1)
                .take(urls.len() - 1)
                .cloned();
            let config =
                ClientConfig::new(&urls[first], CLUSTER_APP_ID, uid(user)).fallback_urls(others);
            let (client, mut events) = Client::login(config).await.expect("login");
            for channel in CHANNELS {
                client.join(channel).await.expect("join");
            }
            let events_record = record.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let mut record = events_record.lock().unwrap();
                    match event {
                        Event::MessageFromPeer(message) => {
                            record.received_peer[user].insert(text_of(message.message));
                        }
                        Event::ChannelMessage(message) => {
                            record.received_channel[user].insert(text_of(message.message));
                        }
                        _ => {}
                    }
                }
            }));
            clients.push(client);
        }
        for (user, client) in clients.iter().enumerate() {
            tasks.push(tokio::spawn(send_loop(
                user,
                client.clone(),
                stop.clone(),
                record.clone(),
            )));
        }
        Load {
            stop,
            record,
            tasks,
            clients,
        }
    }

    /// Samples every data node's ring, by epoch, until the load stops.
    fn watch_rings(&mut self, addresses: Vec<String>) {
        let stop = self.stop.clone();
        let record = self.record.clone();
        self.tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for address in &addresses {
                    if let Some(status) = node_status(address).await {
                        let owners: Vec<u64> = status
                            .members
                            .iter()
                            .filter(|member| member.owner)
                            .map(|member| member.node)
                            .collect();
                        record
                            .lock()
                            .unwrap()
                            .rings
                            .entry(status.ring_epoch)
                            .or_default()
                            .insert(owners);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// Stops sending, waits for what is in flight, and checks the invariants.
    async fn finish_and_check(self) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(SETTLE).await;
        let record = self.record.lock().unwrap();
        for (epoch, rings) in &record.rings {
            assert_eq!(
                rings.len(),
                1,
                "nodes disagreed on the owners of epoch {epoch}: {rings:?}"
            );
        }
        assert!(
            record.acked_peer.len() > 20 && record.acked_channel.len() > 20,
            "too little got through: {} peer, {} channel messages",
            record.acked_peer.len(),
            record.acked_channel.len()
        );
        let lost_peer: Vec<_> = record
            .acked_peer
            .iter()
            .filter(|(to, text)| !record.received_peer[*to].contains(text))
            .collect();
        assert!(
            lost_peer.is_empty(),
            "{} of {} acknowledged peer messages never arrived: {:?}",
            lost_peer.len(),
            record.acked_peer.len(),
            &lost_peer[..lost_peer.len().min(5)]
        );
        let mut lost_channel = Vec::new();
        for (from, text) in &record.acked_channel {
            for user in (0..USERS).filter(|user| user != from) {
                if !record.received_channel[user].contains(text) {
                    lost_channel.push((user, text.clone()));
                }
            }
        }
        assert!(
            lost_channel.is_empty(),
            "{} deliveries of {} acknowledged channel messages missing: {:?}",
            lost_channel.len(),
            record.acked_channel.len(),
            &lost_channel[..lost_channel.len().min(5)]
        );
        drop(record);
        for task in self.tasks {
            task.abort();
        }
        drop(self.clients);
    }
}

fn text_of(body: Option<v1::MessageBody>) -> String {
    match body.and_then(|body| body.content) {
        Some(v1::message_body::Content::Text(text)) => text,
        _ => String::new(),
    }
}

async fn send_loop(user: usize, client: Client, stop: Arc<AtomicBool>, record: Arc<Mutex<Record>>) {
    let peer = (user + 1) % USERS;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let text = format!("p:{user}:{n}");
        let options = PeerMessageOptions {
            enable_offline_messaging: true,
            ..PeerMessageOptions::default()
        };
        if let Ok(sent) = client
            .send_message_to_peer(&uid(peer), Message::text(&text), options)
            .await
            && matches!(
                sent.result(),
                PeerMessageResult::ReceivedByPeer | PeerMessageResult::CachedByServer
            )
        {
            record.lock().unwrap().acked_peer.push((peer, text));
        }
        let text = format!("c:{user}:{n}");
        let channel = CHANNELS[n as usize % CHANNELS.len()];
        let op = v1::request::Op::SendMessage(v1::SendMessageRequest {
            channel_id: channel.into(),
            message: Some(Message::text(&text).0),
            enable_historical_messaging: true,
        });
        if let Ok(pending) = client.request(op).await
            && pending.wait().await.is_ok()
        {
            record.lock().unwrap().acked_channel.push((user, text));
        }
        tokio::time::sleep(SEND_EVERY).await;
    }
}

async fn node_status(address: &str) -> Option<parley_proto::cluster::v1::StatusReply> {
    tokio::time::timeout(Duration::from_millis(300), async {
        let mut client = parley_proto::cluster::v1::cluster_client::ClusterClient::connect(
            format!("http://{address}"),
        )
        .await
        .ok()?;
        client
            .status(parley_proto::cluster::v1::Done {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    })
    .await
    .ok()
    .flatten()
}

async fn cluster_under_load() -> (ProcessCluster, Load) {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 3, 3, 2).await;
    let mut load = Load::start(&cluster).await;
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

/// Waits until meta has taken node `id` out of service.
async fn wait_until_down(cluster: &ProcessCluster, id: u64) {
    cluster
        .wait_for(
            &format!("node {id} marked down"),
            Duration::from_secs(10),
            |topology| status(topology, id) == Some(NodeStatus::Down),
        )
        .await;
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
    wait_until_down(&cluster, victim).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.finish_and_check().await;
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
    wait_until_down(&cluster, victim).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.finish_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed() {
    let (mut cluster, load) = cluster_under_load().await;
    let victim = cluster.ids(Role::Edge)[0];
    cluster.kill(victim);
    wait_until_down(&cluster, victim).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    load.finish_and_check().await;
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
    load.finish_and_check().await;
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
    load.finish_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_the_timeout_and_resumed() {
    let (cluster, load) = cluster_under_load().await;
    let victim = cluster.ids(Role::Owner)[2];
    cluster.pause(victim);
    wait_until_down(&cluster, victim).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Back: it must first learn it was taken out (and drop what it held), then rejoin.
    cluster.resume(victim);
    run_on(&cluster).await;
    load.finish_and_check().await;
}
