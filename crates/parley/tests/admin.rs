//! `parley admin` spawned as a process against a live server: the operators' commands.

use parley_client::Client;
use parley_client::ErrorCode;
use parley_client::Message;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::TestServer;
use serde_json::Value;
use serde_json::json;

/// Runs `parley admin ARGS…` against `server`; its JSON answer and whether it succeeded.
async fn admin(server: &TestServer, args: &[&str]) -> (Value, bool) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("admin")
        .args([
            "--server",
            &format!("http://{}", server.http_addresses()[0]),
        ])
        .args(["--app-id", server.app_id()])
        .args([
            "--customer-key",
            &format!("{CUSTOMER_KEY}:{CUSTOMER_SECRET}"),
        ])
        .args(args)
        .output()
        .await
        .expect("run parley admin");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "not one JSON object: {stdout:?} (stderr: {:?})",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (answer, output.status.success())
}

#[tokio::test]
async fn operators_send_moderate_and_read_history() {
    let server = TestServer::start().await;
    let (bob, _bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    bob.join("room").await.unwrap();

    let (sent, ok) = admin(
        &server,
        &[
            "send-peer",
            "--from",
            "ops",
            "--to",
            "bob",
            "--text",
            "hi",
            "--history",
            "--wait",
        ],
    )
    .await;
    assert!(ok, "{sent}");
    assert_eq!(sent["result"], "RECEIVED_BY_PEER");
    let (sent, _) = admin(
        &server,
        &[
            "send-channel",
            "--from",
            "ops",
            "--channel",
            "room",
            "--text",
            "all",
            "--history",
        ],
    )
    .await;
    assert!(sent["seq"].as_u64().unwrap() > 0, "{sent}");
    let (status, _) = admin(&server, &["status", "--uid", "bob"]).await;
    assert_eq!(status, json!({ "uid": "bob", "state": "ONLINE" }));
    let (members, _) = admin(&server, &["members", "--channel", "room"]).await;
    assert_eq!(members["count"], 1);
    assert_eq!(members["members"], json!(["bob"]));

    let (history, _) = admin(&server, &["history", "--peers", "bob:ops"]).await;
    assert_eq!(history["messages"][0]["from"], "ops", "{history}");
    let (count, _) = admin(&server, &["history", "--channel", "room", "--count"]).await;
    assert_eq!(count, json!({ "count": 1 }));

    let (muted, ok) = admin(
        &server,
        &[
            "mute",
            "--channel",
            "room",
            "--uid",
            "bob",
            "--duration",
            "10m",
            "--reason",
            "calm",
        ],
    )
    .await;
    assert!(ok, "{muted}");
    let refused = bob.send_message("room", Message::text("!")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Muted)
    );
    let (mutes, _) = admin(&server, &["mutes", "--channel", "room"]).await;
    assert_eq!(mutes["mutes"][0]["untilTs"], muted["untilTs"]);
    let (lifted, _) = admin(&server, &["unmute", "--channel", "room", "--uid", "bob"]).await;
    assert_eq!(lifted["lifted"], true);
    let (kicked, _) = admin(&server, &["kick", "--channel", "room", "--uid", "bob"]).await;
    assert_eq!(kicked["kicked"], true);
    let (banned, _) = admin(&server, &["ban", "--uid", "bob", "--duration", "2h"]).await;
    let until = banned["untilTs"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((until - now - 7_200_000).abs() < 60_000, "{banned}");
    let (bans, _) = admin(&server, &["bans"]).await;
    assert_eq!(bans["bans"][0]["uid"], "bob");
    let (lifted, _) = admin(&server, &["unban", "--uid", "bob"]).await;
    assert_eq!(lifted["lifted"], true);
    let (events, _) = admin(&server, &["events", "channels"]).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["join", "leave"], "{events}");
}

#[tokio::test]
async fn refused_commands_print_the_error_and_fail() {
    let server = TestServer::start().await;
    let (error, ok) = admin(&server, &["ban", "--uid", "bob", "--duration", "400d"]).await;
    assert!(!ok);
    assert_eq!(error["code"], "INVALID_ARGUMENT", "{error}");
    let (error, ok) = admin(&server, &["status", "--uid", &"u".repeat(65)]).await;
    assert!(!ok);
    assert_eq!(error["code"], "INVALID_USERID", "{error}");
}
