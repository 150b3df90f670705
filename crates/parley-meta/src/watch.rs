//! The other nodes' side of meta: a data node heartbeats to the leader, follows it when it
//! moves, and takes every newer topology; an operator's command finds the leader.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::meta_client::MetaClient;
use tonic::transport::Channel;

/// How long a heartbeat may take, the leader's hold included, before the next meta node is tried.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The pause after a failed heartbeat.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Heartbeats as `me` to the meta nodes at `metas` (`HOST:PORT`) until the task is dropped,
/// calling `on_topology` with every topology newer than the last.
pub async fn follow(
    me: wire::NodeInfo,
    metas: Vec<String>,
    mut on_topology: impl FnMut(wire::ClusterTopology) + Send,
) {
    assert!(!metas.is_empty(), "no meta node to follow");
    let mut clients: HashMap<String, MetaClient<Channel>> = HashMap::new();
    let mut known_epoch = 0;
    let mut next = 0;
    let mut leader: Option<String> = None;
    loop {
        let address = leader.take().unwrap_or_else(|| {
            next += 1;
            metas[next % metas.len()].clone()
        });
        let client = match clients.get(&address) {
            Some(client) => client.clone(),
            None => match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
                Ok(endpoint) => {
                    let client = MetaClient::new(
                        endpoint
                            .connect_timeout(Duration::from_millis(500))
                            .tcp_nodelay(true)
                            .connect_lazy(),
                    );
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
            known_epoch,
        };
        let mut client = client;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.heartbeat(request)).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                if let Some(topology) = reply.topology
                    && topology.epoch > known_epoch
                {
                    known_epoch = topology.epoch;
                    on_topology(topology);
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

/// Sends an operator command to the meta leader: tries each address of `metas`, following a
/// follower's pointer to the leader.
pub async fn command<T, F, Fut>(metas: &[String], call: F) -> anyhow::Result<T>
where
    F: Fn(MetaClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut last_error = anyhow::anyhow!("no meta address given");
    let mut addresses: Vec<String> = metas.to_vec();
    let mut tried = 0;
    while tried < addresses.len() && tried < 8 {
        let address = addresses[tried].clone();
        tried += 1;
        let client = match tonic::transport::Endpoint::from_shared(format!("http://{address}")) {
            Ok(endpoint) => match endpoint
                .connect_timeout(Duration::from_millis(500))
                .connect()
                .await
            {
                Ok(channel) => MetaClient::new(channel),
                Err(error) => {
                    last_error = anyhow::anyhow!("meta {address}: {error}");
                    continue;
                }
            },
            Err(error) => {
                last_error = anyhow::anyhow!("meta {address}: {error}");
                continue;
            }
        };
        match call(client).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => {
                if let Some(leader) = status
                    .metadata()
                    .get(crate::meta::LEADER_KEY)
                    .and_then(|value| value.to_str().ok())
                {
                    addresses.insert(tried, leader.to_owned());
                }
                last_error = anyhow::anyhow!("meta {address}: {}", status.message());
                if status.code() != tonic::Code::Unavailable {
                    return Err(last_error);
                }
            }
        }
    }
    Err(last_error)
}
