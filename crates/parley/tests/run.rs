//! `parley run` and `parley cluster` as an operator uses them: processes of the real binary
//! (three meta nodes, owners, edges) and a Redis make a cluster that users on different edges
//! talk through, and that operators inspect and drain.

use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::cluster::v1::NodeStatus;
use parley_testkit::PROMPTLY;
use parley_testkit::ProcessCluster;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::CLUSTER_SECRET;
use parley_testkit::processes::Role;
use parley_testkit::processes::status;
use tokio::process::Command;

async fn parley(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "parley {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn next_channel_message(events: &mut tokio::sync::mpsc::Receiver<Event>) -> String {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::ChannelMessage(message)) = events.recv().await {
                return message.member_id;
            }
        }
    })
    .await
    .expect("a channel message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_make_a_cluster_that_operators_inspect_and_drain() {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 3, 2, 2).await;
    let urls = cluster.edge_urls();
    let (alice, mut alice_events) = Client::login(
        ClientConfig::new(&urls[0], CLUSTER_APP_ID, "alice").fallback_urls([urls[1].clone()]),
    )
    .await
    .unwrap();
    let (bob, mut bob_events) = Client::login(ClientConfig::new(&urls[1], CLUSTER_APP_ID, "bob"))
        .await
        .unwrap();
    let sent = alice
        .send_message_to_peer("bob", Message::text("hi"), PeerMessageOptions::default())
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    alice
        .send_message("lobby", Message::text("all"))
        .await
        .unwrap();
    assert_eq!(next_channel_message(&mut bob_events).await, "alice");

    // Meta's view: five data nodes up, the owners in the ring, one leader among three metas.
    let metas = cluster.meta_addresses().join(",");
    let view = parley(&["cluster", "status", "--meta", &metas]).await;
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert!(nodes.iter().all(|node| node["status"] == "up"));
    let in_ring: Vec<_> = nodes
        .iter()
        .filter(|node| node["inRing"] == true)
        .map(|node| node["node"].as_u64().unwrap())
        .collect();
    assert_eq!(in_ring, cluster.ids(Role::Owner));
    let metas_view = view["metas"].as_array().unwrap();
    assert_eq!(metas_view.len(), 3);
    assert_eq!(
        metas_view
            .iter()
            .filter(|meta| meta["leader"] == true)
            .count(),
        1
    );

    // One node's own view agrees on the epoch.
    let first_edge = cluster.ids(Role::Edge)[0];
    let node_view = parley(&[
        "cluster",
        "status",
        "--node",
        &cluster.grpc_address(first_edge),
    ])
    .await;
    assert_eq!(node_view["ringEpoch"], view["ringEpoch"]);
    let me = node_view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|member| member["node"] == first_edge)
        .unwrap()
        .clone();
    assert_eq!(me["sessions"], 1, "alice is on this edge");

    // Draining alice's edge sends her to the other one; the lobby goes on.
    let drained = parley(&[
        "cluster",
        "drain",
        "--meta",
        &metas,
        "--node-id",
        &first_edge.to_string(),
    ])
    .await;
    assert_eq!(drained["draining"], first_edge);
    tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::ConnectionStateChanged(change)) = alice_events.recv().await
                && change.state() == parley_client::ConnectionState::Connected
            {
                return;
            }
        }
    })
    .await
    .expect("alice reconnects through the other edge");
    bob.send_message("lobby", Message::text("still here"))
        .await
        .unwrap();
    assert_eq!(next_channel_message(&mut alice_events).await, "bob");

    // The drained edge can then be forgotten; this run of it does not come back.
    let removed = parley(&[
        "cluster",
        "remove-node",
        "--meta",
        &metas,
        "--node-id",
        &first_edge.to_string(),
    ])
    .await;
    assert!(removed["epoch"].as_u64().unwrap() > drained["epoch"].as_u64().unwrap());
    let after = cluster
        .wait_for("the edge forgotten", Duration::from_secs(5), |topology| {
            status(topology, first_edge).is_none()
        })
        .await;
    assert_eq!(
        status(&after, cluster.ids(Role::Edge)[1]),
        Some(NodeStatus::Up)
    );
}

#[tokio::test]
async fn a_config_file_sets_what_flags_would() {
    let dir = parley_testkit::fresh_temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("meta.toml");
    std::fs::write(
        &config,
        format!(
            "# a one-node meta cluster\nnode_id = 7\nroles = [\"meta\"]\nmeta = \"7=127.0.0.1:{port}\"\ngrpc-addr = \"127.0.0.1:{port}\"\nops-addr = \"127.0.0.1:0\"\ndata-dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["run", "--config", &config.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let view = loop {
        let output = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["cluster", "status", "--meta", &address])
            .output()
            .await
            .unwrap();
        if output.status.success() {
            let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            if view["metas"][0]["leader"] == true {
                break view;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no meta leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["metas"][0]["node"], 7);
    assert_eq!(view["nodes"], serde_json::json!([]));
    node.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An edge's flags, free ports, brokers somewhere, and a region.
fn region_flags<'a>(region: &'a str, remote: &'a str) -> Vec<&'a str> {
    vec![
        "--roles",
        "edge",
        "--meta",
        "1=127.0.0.1:1",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--kafka-brokers",
        "127.0.0.1:1",
        "--region",
        region,
        "--remote-regions",
        remote,
    ]
}

#[tokio::test]
async fn a_node_refuses_bad_flags() {
    for (args, expected) in [
        (
            vec!["--roles", "cook", "--meta", "1=127.0.0.1:1"],
            "unknown role",
        ),
        (
            vec!["--roles", "edge", "--meta", "1=nowhere"],
            "ID=HOST:PORT",
        ),
        (
            vec![
                "--roles",
                "owner",
                "--meta",
                "1=127.0.0.1:1",
                "--store",
                "nope",
            ],
            "--store must be",
        ),
        (
            vec![
                "--roles",
                "edge",
                "--meta",
                "1=127.0.0.1:1",
                "--region",
                "eu",
            ],
            "--kafka-brokers",
        ),
        (region_flags("eu west", "us"), "region name \"eu west\""),
        (
            region_flags("eu", "us,eu"),
            "named among the remote regions",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["run", "--node-id", "1"])
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_nodes_are_added_and_removed_by_operators() {
    let mut cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 3, 1, 0).await;
    let metas = cluster.meta_addresses().join(",");
    // A fourth meta node starts knowing the others but is no voter until an operator says so.
    let added = cluster.add(Role::Meta);
    let address = cluster.grpc_address(added);
    let reply = parley(&[
        "cluster",
        "add-node",
        "--meta",
        &metas,
        "--node-id",
        &added.to_string(),
        "--address",
        &address,
    ])
    .await;
    assert_eq!(reply["added"], added);
    let view = parley(&["cluster", "status", "--meta", &metas]).await;
    let voters: Vec<u64> = view["metas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|meta| meta["voter"] == true)
        .map(|meta| meta["node"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, [101, 102, 103, added]);

    // The first meta node leaves the voters; the owner keeps its place all along.
    parley(&[
        "cluster",
        "remove-node",
        "--meta",
        &metas,
        "--node-id",
        "101",
    ])
    .await;
    // The new member hears of the change within a Raft heartbeat or so.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let view = loop {
        let view = parley(&["cluster", "status", "--meta", &address]).await;
        let members: Vec<u64> = view["metas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|meta| meta["node"].as_u64().unwrap())
            .collect();
        if members == [102, 103, added] {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "meta members stayed {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["nodes"][0]["status"], "up");
    let unknown = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["cluster", "drain", "--meta", &metas, "--node-id", "999"])
        .env("PARLEY_CLUSTER_SECRET", CLUSTER_SECRET)
        .output()
        .await
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no data node 999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_served_as_meta_says() {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 3, 1, 2).await;
    let metas = cluster.meta_addresses().join(",");
    let app_id = "fedcba9876543210fedcba9876543210";
    let certificate = "00112233445566778899aabbccddeeff";
    let mut receiver = parley_testkit::webhook::WebhookReceiver::start(0).await;
    let put = parley(&[
        "cluster",
        "put-app",
        "--meta",
        &metas,
        "--app-id",
        app_id,
        "--app-certificate",
        certificate,
        "--customer-key",
        "backend:s3cret",
        "--webhook-url",
        &receiver.url(),
        "--webhook-secret",
        "hush",
    ])
    .await;
    assert_eq!(put["app"], app_id);
    let view = parley(&["cluster", "status", "--meta", &metas]).await;
    assert_eq!(view["apps"], serde_json::json!([app_id]));
    assert!(
        !view.to_string().contains(certificate),
        "certificates stay out"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let token = parley_core::token::build_007(app_id, certificate, "carol", 3600, now, 1);
    for url in cluster.edge_urls() {
        // Every edge serves it once the topology has reached it.
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            match Client::login(ClientConfig::new(&url, app_id, "carol").token(&token)).await {
                Ok((client, _events)) => {
                    client.logout().await.unwrap();
                    break;
                }
                Err(error) => {
                    assert!(tokio::time::Instant::now() < deadline, "{url}: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let forged = Client::login(ClientConfig::new(&url, app_id, "carol").token("007bogus"))
            .await
            .err()
            .expect("a bad token is refused");
        assert_eq!(forged.code, parley_client::ErrorCode::InvalidToken);
        // Its backend reaches the server API on every edge with the key meta holds.
        let address = url
            .trim_start_matches("ws://")
            .trim_end_matches("/v1/ws")
            .parse()
            .unwrap();
        let path = format!("/v1/apps/{app_id}/users/carol/status");
        let status = parley_testkit::http::http(
            address,
            "GET",
            &path,
            &[parley_testkit::http::basic("backend", "s3cret")],
            None,
        )
        .await;
        assert_eq!(status.status, 200, "{status:?}");
        let wrong = parley_testkit::http::http(
            address,
            "GET",
            &path,
            &[parley_testkit::http::basic("backend", "guess")],
            None,
        )
        .await;
        assert_eq!(wrong.status, 401);
    }
    // The app's events reach the webhook meta holds.
    let login = receiver.next_of("user.login").await;
    assert_eq!(login.json()["appId"], app_id);
    assert_eq!(login.json()["uid"], "carol");

    // Apps stay apart: a ban in this app leaves the same uid in another app alone, its key
    // opens nothing of the other app, and its event log holds only its own users.
    let url = &cluster.edge_urls()[0];
    let address = url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws")
        .parse()
        .unwrap();
    let key = [parley_testkit::http::basic("backend", "s3cret")];
    let ban = serde_json::json!({ "uid": "carol", "durationSeconds": 600 });
    let path = format!("/v1/apps/{app_id}/bans");
    let banned = parley_testkit::http::http(address, "POST", &path, &key, Some(&ban)).await;
    assert_eq!(banned.status, 200, "{banned:?}");
    // (Waiting out the login rate limit of two a second per uid, which carol used up above.)
    let refused = loop {
        let login = Client::login(ClientConfig::new(url, app_id, "carol").token(&token)).await;
        match login.err().map(|error| error.code) {
            Some(parley_client::ErrorCode::TooOften) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            refused => break refused,
        }
    };
    assert_eq!(refused, Some(parley_client::ErrorCode::Banned));
    Client::login(ClientConfig::new(url, CLUSTER_APP_ID, "carol"))
        .await
        .expect("a ban is for one app");
    Client::login(ClientConfig::new(url, CLUSTER_APP_ID, "erin"))
        .await
        .unwrap();
    let other_app = format!("/v1/apps/{CLUSTER_APP_ID}/bans");
    let crossed = parley_testkit::http::http(address, "GET", &other_app, &key, None).await;
    assert_eq!(crossed.status, 403, "{crossed:?}");
    let path = format!("/v1/apps/{app_id}/events/users");
    let events = parley_testkit::http::http(address, "GET", &path, &key, None).await;
    let uids: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["uid"].as_str().unwrap())
        .collect();
    assert!(uids.contains(&"carol"), "{events:?}");
    assert!(
        !uids.contains(&"erin"),
        "another app's user in this app's log: {events:?}"
    );

    parley(&[
        "cluster",
        "remove-app",
        "--meta",
        &metas,
        "--app-id",
        app_id,
    ])
    .await;
    let url = &cluster.edge_urls()[0];
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let refused = Client::login(ClientConfig::new(url, app_id, "dave").token(&token)).await;
        match refused {
            Err(error) if error.code == parley_client::ErrorCode::InvalidAppId => break,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the removed app still serves"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_api_takes_only_calls_with_the_cluster_secret() {
    let cluster = ProcessCluster::start(env!("CARGO_BIN_EXE_parley").as_ref(), 1, 1, 0).await;
    let metas = cluster.meta_addresses().join(",");
    let status = |secret: Option<&'static str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_parley"));
        command
            .args(["cluster", "status", "--meta", &metas])
            .env_remove("PARLEY_CLUSTER_SECRET");
        if let Some(secret) = secret {
            command.args(["--cluster-secret", secret]);
        }
        command.output()
    };
    for secret in [None, Some("not-the-cluster-secret")] {
        let refused = status(secret).await.unwrap();
        assert!(!refused.status.success(), "{secret:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("needs the cluster secret"), "{stderr}");
    }
    let view = status(Some(CLUSTER_SECRET)).await.unwrap();
    assert!(view.status.success(), "{view:?}");

    // A node with another secret is not let in: its heartbeats are refused.
    let stranger_dir = std::env::temp_dir().join(format!("parley-stranger-{}", std::process::id()));
    let mut stranger = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "run",
            "--node-id",
            "77",
            "--roles",
            "owner",
            "--meta",
            cluster.meta_flag(),
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0"])
        .args(["--data-dir", &stranger_dir.to_string_lossy()])
        .args(["--cluster-secret", "not-the-cluster-secret"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the stranger runs (and keeps trying)"
    );
    let topology = cluster.topology().await.expect("meta answers");
    assert!(
        topology.nodes.iter().all(|node| node.node != 77),
        "{topology:?}"
    );
    let _ = std::fs::remove_dir_all(stranger_dir);
}
