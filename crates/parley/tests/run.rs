//! `parley run` as an operator uses it: four processes (two owners, two edges) and a Redis make a
//! cluster that users on different edges talk through.

use std::process::Stdio;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_testkit::PROMPTLY;
use parley_testkit::RedisServer;
use tokio::io::AsyncBufReadExt;
use tokio::io::BufReader;
use tokio::process::Child;
use tokio::process::Command;

const APP_ID: &str = "0123456789abcdef0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts one node; for an edge, returns its client URL from the line it prints.
async fn start(node: u64, roles: &str, members: &str, store: &str) -> (Child, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["run", "--node-id", &node.to_string(), "--roles", roles])
        .args(["--members", members, "--store", store, "--app-id", APP_ID])
        .args(["--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn parley run");
    let stdout = child.stdout.take().unwrap();
    if !roles.contains("edge") {
        return (child, None);
    }
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("the edge says where it listens")
        .unwrap()
        .expect("a line");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .expect("a url")
        .to_owned();
    (child, Some(url))
}

#[tokio::test]
async fn four_processes_make_a_cluster() {
    let redis = RedisServer::start();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let members = format!(
        "1=owner@127.0.0.1:{},2=owner@127.0.0.1:{},3=edge@127.0.0.1:{},4=edge@127.0.0.1:{}",
        ports[0], ports[1], ports[2], ports[3]
    );
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for (node, roles) in [(1, "owner"), (2, "owner"), (3, "edge"), (4, "edge")] {
        let (child, url) = start(node, roles, &members, &redis.url()).await;
        nodes.push(child);
        urls.extend(url);
    }
    assert_eq!(urls.len(), 2);

    let (alice, _alice_events) = Client::login(ClientConfig::new(&urls[0], APP_ID, "alice"))
        .await
        .unwrap();
    let (bob, mut bob_events) = Client::login(ClientConfig::new(&urls[1], APP_ID, "bob"))
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
    let message = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::ChannelMessage(message)) = bob_events.recv().await {
                return message;
            }
        }
    })
    .await
    .expect("bob gets the channel message");
    assert_eq!(message.member_id, "alice");

    // An operator asks the first edge what it knows.
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "cluster",
            "status",
            "--node",
            &format!("127.0.0.1:{}", ports[2]),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["node"], 3);
    assert_eq!(status["ringEpoch"], 1);
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 4);
    assert_eq!(members[0]["roles"], serde_json::json!(["owner"]));
    assert_eq!(members[2]["roles"], serde_json::json!(["edge"]));
    assert_eq!(members[2]["sessions"], 1, "alice is on this edge");
}

#[tokio::test]
async fn a_node_refuses_inconsistent_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["run", "--node-id", "1", "--roles", "edge"])
        .args([
            "--members",
            "1=owner@127.0.0.1:1",
            "--store",
            "embedded",
            "--app-id",
            APP_ID,
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--roles does not match"), "{stderr}");
}
