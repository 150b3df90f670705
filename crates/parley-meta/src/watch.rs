//! The other nodes' side of meta: a data node heartbeats to the leader, follows it when it
//! moves, and takes every newer topology; an operator's command finds the leader.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::meta_client::MetaClient;
use parley_proto::cluster_auth::ClusterChannel;

/// How long a heartbeat may take, the leader's hold included, before the next meta node is tried.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The pause after a failed heartbeat.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The pause before the next heartbeat while the node applies a topology it was handed.
const APPLY_PAUSE: Duration = Duration::from_millis(20);

/// Heartbeats as `me` to the meta nodes at `metas` (`HOST:PORT`) until the task is dropped,
/// calling `on_topology` with every topology newer than the last.
///
/// Meta is told the epoch the node has applied (`applied_epoch`), not the one it was handed:
/// meta lets a node that was marked down rejoin only once it knows the epoch that took it out,
/// and that must mean it has dropped what it owned, not merely that the news is on its way.
pub async fn follow(
    me: wire::NodeInfo,
    metas: Vec<String>,
    mut on_topology: impl FnMut(wire::ClusterTopology) + Send,
    applied_epoch: impl Fn() -> u64 + Send,
) {
    assert!(!metas.is_empty(), "no meta node to follow");
    let mut clients: HashMap<String, MetaClient<ClusterChannel>> = HashMap::new();
    // The newest epoch handed to `on_topology`.
    let mut handed_over = 0;
    let mut targets = Targets::new(&metas);
    let mut leader: Option<String> = None;
    loop {
        let address = targets.next(leader.take());
        let client = match clients.get(&address) {
            Some(client) => client.clone(),
            None => match meta_client(&address) {
                Ok(client) => {
                    clients.insert(address.clone(), client.clone());
                    client
                }
                Err(error) => {
                    tracing::warn!(%address, %error, "bad meta address");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let request = wire::HeartbeatRequest {
            node: Some(me.clone()),
            known_epoch: applied_epoch(),
        };
        let mut client = client;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.heartbeat(request)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if let Some(topology) = reply.topology
                    && topology.epoch > handed_over
                {
                    handed_over = topology.epoch;
                    on_topology(topology);
                } else if applied_epoch() < handed_over {
                    // Meta answers at once while the node is behind: let it apply what it has.
                    tokio::time::sleep(APPLY_PAUSE).await;
                }
                if reply.leader_address.is_empty() {
                    // The leader answered: keep heartbeating there.
                    leader = Some(address);
                } else {
                    leader = Some(reply.leader_address);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Ok(Err(status)) => {
                tracing::debug!(%address, %status, "heartbeat refused");
                leader = status
                    .metadata()
                    .get(crate::meta::LEADER_KEY)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                tracing::debug!(%address, "heartbeat timed out");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Sends an operator command to the meta leader: tries the addresses of `metas` in turn,
/// following a follower's pointer to the leader, for up to five seconds (an election may be
/// under way). Errors other than "not the leader" are returned at once.
pub async fn command<T, F, Fut>(metas: &[String], call: F) -> anyhow::Result<T>
where
    F: Fn(MetaClient<ClusterChannel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    anyhow::ensure!(!metas.is_empty(), "no meta address given");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut targets = Targets::new(metas);
    let mut leader: Option<String> = None;
    loop {
        let address = targets.next(leader.take());
        let outcome = match meta_client(&address) {
            Ok(client) => call(client).await,
            Err(error) => anyhow::bail!("meta address {address}: {error}"),
        };
        let status = match outcome {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => status,
        };
        if status.code() != tonic::Code::Unavailable {
            anyhow::bail!("meta {address}: {}", status.message());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no meta leader answered: {}", status.message());
        }
        leader = status
            .metadata()
            .get(crate::meta::LEADER_KEY)
            .and_then(|value| value.to_str().ok())
            .filter(|hint| *hint != address)
            .map(str::to_owned);
        if leader.is_none() {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// A client of the meta node at `address` that connects on first use.
fn meta_client(address: &str) -> Result<MetaClient<ClusterChannel>, tonic::transport::Error> {
    parley_proto::cluster_auth::channel(address, |endpoint| {
        endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
    })
    .map(MetaClient::new)
}

/// Which meta node to try next: the leader when one was named, else the next in turn.
struct Targets<'a> {
    metas: &'a [String],
    turn: usize,
}

impl<'a> Targets<'a> {
    fn new(metas: &'a [String]) -> Self {
        Targets { metas, turn: 0 }
    }

    fn next(&mut self, leader: Option<String>) -> String {
        leader.unwrap_or_else(|| {
            self.turn += 1;
            self.metas[self.turn % self.metas.len()].clone()
        })
    }
}
