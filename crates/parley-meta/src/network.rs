//! Raft between meta nodes over gRPC: openraft's messages travel as JSON in one bytes field.

use std::time::Duration;

use openraft::BasicNode;
use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::error::InstallSnapshotError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use parley_proto::cluster::v1::RaftMessage;
use parley_proto::cluster::v1::raft_client::RaftClient;
use parley_proto::cluster::v1::raft_server;
use parley_proto::cluster_auth::ClusterChannel;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::store::TypeConfig;

/// How long a connection to another meta node may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

type MetaRaft = openraft::Raft<TypeConfig>;

/// Opens a client per peer; openraft asks for one per target.
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        let client = parley_proto::cluster_auth::channel(&node.addr, |endpoint| {
            endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true)
        })
        .map(RaftClient::new)
        .map_err(|error| error.to_string());
        Peer { target, client }
    }
}

/// One other meta node.
pub struct Peer {
    target: u64,
    client: Result<RaftClient<ClusterChannel>, String>,
}

#[derive(Clone, Copy)]
enum Call {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// A transport failure, as the `std::error::Error` openraft's error constructors want.
#[derive(Debug)]
struct Transport(String);

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transport {}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        call: Call,
        request: &Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable =
            |message: String| RPCError::Unreachable(Unreachable::new(&Transport(message)));
        let client = self
            .client
            .as_mut()
            .map_err(|error| unreachable(error.clone()))?;
        let message = RaftMessage {
            json: serde_json::to_vec(request)
                .map_err(|error| unreachable(error.to_string()))?
                .into(),
        };
        let sent = async {
            match call {
                Call::AppendEntries => client.append_entries(message).await,
                Call::Vote => client.vote(message).await,
                Call::InstallSnapshot => client.install_snapshot(message).await,
            }
        };
        let reply = tokio::time::timeout(option.hard_ttl(), sent)
            .await
            .map_err(|_| unreachable("timed out".to_owned()))?
            .map_err(|status| unreachable(status.message().to_owned()))?;
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply.into_inner().json)
                .map_err(|error| unreachable(error.to_string()))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Call::AppendEntries, &rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(Call::InstallSnapshot, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Call::Vote, &rpc, option).await
    }
}

/// Serves this meta node's Raft to the other meta nodes.
pub struct RaftService {
    raft: MetaRaft,
}

impl RaftService {
    pub fn new(raft: MetaRaft) -> raft_server::RaftServer<RaftService> {
        raft_server::RaftServer::new(RaftService { raft })
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|error| Status::invalid_argument(format!("bad raft message: {error}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Response<RaftMessage>, Status> {
    let json = serde_json::to_vec(reply).map_err(|error| Status::internal(error.to_string()))?;
    Ok(Response::new(RaftMessage { json: json.into() }))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.append_entries(decode(request)?).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.install_snapshot(decode(request)?).await)
    }
}
