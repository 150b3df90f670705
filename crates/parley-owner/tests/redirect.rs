//! A caller with a stale ring reaches the right owner in one extra hop: the owner it asked
//! answers "not the owner" naming the right one.

use std::collections::BTreeMap;
use std::sync::Arc;

use parley_core::app::AppConfig;
use parley_core::app::AppDirectory;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::ring::DEFAULT_VIRTUAL_NODES;
use parley_core::ring::Ring;
use parley_owner::ChannelKey;
use parley_owner::Owner;
use parley_owner::OwnerConfig;
use parley_owner::Owners;
use parley_owner::cluster::OwnerService;
use parley_owner::cluster::RemoteOwners;
use parley_owner::cluster::SharedTopology;
use parley_owner::cluster::Topology;
use parley_owner::ops;
use parley_store::EmbeddedStore;

const APP: &str = "0123456789abcdef0123456789abcdef";

/// A topology nobody will change.
fn fixed(topology: Topology) -> SharedTopology {
    tokio::sync::watch::channel(Arc::new(topology)).1
}

async fn owner(node: u64, apps: &Arc<AppDirectory>) -> Arc<Owner> {
    let dir = std::env::temp_dir().join(format!("parley-redirect-{}-{node}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(EmbeddedStore::open(&dir).unwrap());
    let config = OwnerConfig {
        node: NodeId(node),
        ..OwnerConfig::default()
    };
    Owner::start(
        config,
        apps.clone(),
        store,
        Arc::new(parley_owner::NoEvents),
        Arc::new(parley_owner::NoRegions),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stale_ring_costs_one_redirect() {
    let apps = Arc::new(AppDirectory::new([AppConfig::new(
        AppId::parse(APP).unwrap(),
        None,
    )]));
    let owners = [owner(1, &apps).await, owner(2, &apps).await];
    let mut addresses = BTreeMap::new();
    let current = Ring::new(2, &[NodeId(1), NodeId(2)], DEFAULT_VIRTUAL_NODES);
    for (index, owner) in owners.iter().enumerate() {
        let node = NodeId(index as u64 + 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.insert(node, listener.local_addr().unwrap().to_string());
        let topology = fixed(Topology {
            ring: current.clone(),
            addresses: BTreeMap::new(),
            edges: Default::default(),
        });
        let service = OwnerService::new(
            node,
            owner.clone() as Arc<dyn Owners>,
            topology,
            Arc::default(),
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
    // The caller still believes node 1 owns everything.
    let stale = fixed(Topology {
        ring: Ring::new(1, &[NodeId(1)], DEFAULT_VIRTUAL_NODES),
        addresses,
        edges: Default::default(),
    });
    let remote = RemoteOwners::new(stale, None);

    let app = AppId::parse(APP).unwrap();
    let channel = (0..)
        .map(|n| ChannelId::parse(&format!("room{n}")).unwrap())
        .find(|channel| current.channel_owner(&app, channel) == Some(NodeId(2)))
        .unwrap();
    let key = ChannelKey {
        app: app.clone(),
        channel,
    };
    let session = SessionRef {
        edge: NodeId(9),
        session: SessionId(1),
    };
    let remote: &dyn Owners = &remote;
    remote
        .ask(ops::Join {
            channel: key.clone(),
            uid: UserId::parse("alice").unwrap(),
            session,
            resume: parley_owner::Resume::Fresh,
        })
        .await
        .unwrap();
    // The join landed on node 2, the real owner, and nowhere else.
    let count = || ops::MemberCount {
        channel: key.clone(),
    };
    let (first, second): (&dyn Owners, &dyn Owners) = (&*owners[0], &*owners[1]);
    assert_eq!(second.ask(count()).await.unwrap(), 1);
    assert_eq!(first.ask(count()).await.unwrap(), 0);
    assert_eq!(remote.ask(count()).await.unwrap(), 1);
}
