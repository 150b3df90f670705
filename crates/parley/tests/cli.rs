//! `parley client` spawned as a process, held to the contract of docs/cli.md.

use std::process::Stdio;

use parley_testkit::PROMPTLY;
use parley_testkit::TestServer;
use serde_json::Value;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::io::Lines;
use tokio::process::Child;
use tokio::process::ChildStdout;
use tokio::process::Command;

struct CliClient {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl CliClient {
    fn spawn(server: &TestServer, uid: &str, token: &str, extra: &[&str]) -> CliClient {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args([
                "client",
                "--url",
                &server.ws_url(),
                "--app-id",
                server.app_id(),
            ])
            .args(["--uid", uid, "--token", token])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn parley client");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        CliClient { child, stdout }
    }

    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(PROMPTLY, self.stdout.next_line())
            .await
            .expect("a line in time")
            .expect("read stdout")
            .expect("stdout still open");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not json: {line}"))
    }

    /// Reads lines until one matches.
    async fn line_where(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.line().await;
            if matches(&line) {
                return line;
            }
        }
    }

    async fn write(&mut self, lines: &[&str]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        for line in lines {
            stdin.write_all(line.as_bytes()).await.unwrap();
            stdin.write_all(b"\n").await.unwrap();
        }
        stdin.flush().await.unwrap();
    }

    async fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Every remaining line, then the exit code.
    async fn finish(mut self) -> (Vec<Value>, Option<i32>) {
        let mut lines = Vec::new();
        while let Some(line) = tokio::time::timeout(PROMPTLY, self.stdout.next_line())
            .await
            .expect("output ends in time")
            .expect("read stdout")
        {
            lines.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not json: {line}")));
        }
        let status = tokio::time::timeout(PROMPTLY, self.child.wait())
            .await
            .expect("exit in time")
            .expect("wait");
        (lines, status.code())
    }
}

fn reply(lines: &[Value], id: i64) -> &Value {
    lines
        .iter()
        .find(|line| line["id"] == json!(id))
        .unwrap_or_else(|| panic!("no reply with id {id} in {lines:#?}"))
}

#[tokio::test]
async fn two_terminals_talk_through_parley_client() {
    let server = TestServer::start().await;
    let mut bob = CliClient::spawn(&server, "bob", &server.token("bob"), &["--stay"]);
    assert_eq!(
        bob.line().await,
        json!({"event": "ConnectionStateChanged", "state": "CONNECTED", "reason": "LOGIN_SUCCESS"})
    );
    bob.write(&[r#"{"id":"b1","op":"join","channelId":"lobby"}"#])
        .await;
    assert_eq!(
        bob.line().await,
        json!({"id": "b1", "op": "join", "ok": true})
    );

    let mut alice = CliClient::spawn(&server, "alice", &server.token("alice"), &[]);
    assert_eq!(alice.line().await["state"], "CONNECTED");
    alice
        .write(&[
            r#"{"id":1,"op":"sendMessageToPeer","peerId":"bob","text":"hi"}"#,
            r#"{"id":2,"op":"join","channelId":"lobby"}"#,
            r#"{"id":3,"op":"sendMessage","channelId":"lobby","text":"hello lobby"}"#,
            r#"{"id":4,"op":"getMembers","channelId":"lobby"}"#,
            r#"{"id":5,"op":"getChannelMemberCount","channelIds":["lobby","nowhere"]}"#,
            r#"{"id":6,"op":"sendMessageToPeer","peerId":"bob","rawBase64":"AAEC","description":"d"}"#,
            r#"{"id":7,"op":"sendMessageToPeer","peerId":"nobody","text":"anyone?"}"#,
            r#"{"id":8,"op":"sleep","ms":50}"#,
            r#"{"id":9,"op":"join","channelId":"null"}"#,
            r#"{"id":10,"op":"sendMessage","channelId":"lobby","text":""}"#,
        ])
        .await;
    alice.close_stdin().await;
    let (lines, code) = alice.finish().await;
    assert_eq!(
        code,
        Some(0),
        "end of input logs out and exits 0: {lines:#?}"
    );

    let sent = reply(&lines, 1);
    assert_eq!(sent["ok"], true);
    assert_eq!(sent["hasPeerReceived"], true);
    assert_eq!(sent["result"], "RECEIVED_BY_PEER");
    let message_id = sent["messageId"]
        .as_str()
        .expect("messageId is a string")
        .to_owned();
    assert_eq!(reply(&lines, 2)["ok"], true);
    assert_eq!(reply(&lines, 3)["seq"], 1);
    assert_eq!(reply(&lines, 4)["members"], json!(["alice", "bob"]));
    assert_eq!(
        reply(&lines, 5)["counts"],
        json!({"lobby": 2, "nowhere": 0})
    );
    assert_eq!(reply(&lines, 6)["result"], "RECEIVED_BY_PEER");
    assert_eq!(reply(&lines, 7)["result"], "PEER_UNREACHABLE", "{lines:#?}");
    assert_eq!(reply(&lines, 7)["hasPeerReceived"], false);
    assert_eq!(
        reply(&lines, 8),
        &json!({"id": 8, "op": "sleep", "ok": true})
    );
    assert_eq!(reply(&lines, 9)["error"]["code"], "INVALID_CHANNEL_ID");
    assert_eq!(reply(&lines, 10)["error"]["code"], "INVALID_MESSAGE");

    // Bob's terminal shows what alice did.
    let from_peer = bob
        .line_where(|line| line["event"] == "MessageFromPeer")
        .await;
    assert_eq!(from_peer["peerId"], "alice");
    assert_eq!(from_peer["text"], "hi");
    assert_eq!(from_peer["messageId"], message_id.as_str());
    assert_eq!(from_peer["isOfflineMessage"], false);
    assert!(from_peer["serverReceivedTs"].as_i64().unwrap() > 1_700_000_000_000);
    let joined = bob.line_where(|line| line["event"] == "MemberJoined").await;
    assert_eq!(
        joined,
        json!({"event": "MemberJoined", "channelId": "lobby", "memberId": "alice"})
    );
    let in_channel = bob
        .line_where(|line| line["event"] == "ChannelMessage")
        .await;
    assert_eq!(in_channel["memberId"], "alice");
    assert_eq!(in_channel["text"], "hello lobby");
    assert_eq!(in_channel["seq"], 1);
    let raw = bob
        .line_where(|line| line["event"] == "MessageFromPeer")
        .await;
    assert_eq!(raw["rawBase64"], "AAEC");
    assert_eq!(raw["description"], "d");
    let left = bob.line_where(|line| line["event"] == "MemberLeft").await;
    assert_eq!(left["memberId"], "alice");

    // SIGTERM logs a --stay client out cleanly.
    let pid = bob.child.id().expect("bob is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let (_, code) = bob.finish().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn bad_lines_get_invalid_argument_and_the_client_stays_up() {
    let server = TestServer::start().await;
    let mut client = CliClient::spawn(&server, "alice", &server.token("alice"), &[]);
    assert_eq!(client.line().await["state"], "CONNECTED");
    client
        .write(&[
            "this is not json",
            r#"["an","array"]"#,
            r#"{"id":1,"op":"fly"}"#,
            r#"{"id":2}"#,
            r#"{"id":3,"op":"join"}"#,
            r#"{"id":4,"op":"sendMessageToPeer","peerId":"bob","rawBase64":"!!"}"#,
            r#"{"id":{"nested":true},"op":"join","channelId":"still-works"}"#,
        ])
        .await;
    client.close_stdin().await;
    let (lines, code) = client.finish().await;
    assert_eq!(code, Some(0));
    let failures: Vec<_> = lines
        .iter()
        .filter(|line| line["ok"] == false)
        .map(|line| line["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(failures, ["INVALID_ARGUMENT"; 6], "{lines:#?}");
    assert_eq!(lines[0]["id"], Value::Null);
    assert_eq!(reply(&lines, 1)["op"], "fly");
    let nested = lines
        .iter()
        .find(|line| line["id"] == json!({"nested": true}))
        .expect("reply echoes any JSON id");
    assert_eq!(nested["ok"], true);
}

#[tokio::test]
async fn a_failed_login_prints_the_error_and_exits_non_zero() {
    let server = TestServer::start().await;
    let client = CliClient::spawn(&server, "alice", &server.token("bob"), &[]);
    let (lines, code) = client.finish().await;
    assert_eq!(
        lines,
        [json!({
            "event": "ConnectionStateChanged",
            "state": "ABORTED",
            "reason": "LOGIN_FAILURE",
            "error": {"code": "INVALID_TOKEN", "message": "token does not verify for this app and user"},
        })]
    );
    assert_ne!(code, Some(0));
}

#[tokio::test]
async fn the_logout_op_ends_the_client_after_earlier_replies() {
    let server = TestServer::start().await;
    let mut client = CliClient::spawn(&server, "alice", &server.token("alice"), &["--stay"]);
    assert_eq!(client.line().await["state"], "CONNECTED");
    client
        .write(&[
            r#"{"id":1,"op":"join","channelId":"a"}"#,
            r#"{"id":2,"op":"logout"}"#,
        ])
        .await;
    let (lines, code) = client.finish().await;
    assert_eq!(code, Some(0));
    let ids: Vec<_> = lines
        .iter()
        .filter(|line| line.get("op").is_some())
        .map(|line| line["id"].clone())
        .collect();
    assert_eq!(ids, [json!(1), json!(2)]);
}

/// `parley dev` and `parley token` as a newcomer uses them: start the server, read the app it
/// printed, make tokens, and talk.
#[tokio::test]
async fn parley_dev_and_parley_token_end_to_end() {
    let data_dir = std::env::temp_dir().join(format!("parley-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut dev = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn parley dev");
    let mut banner = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(PROMPTLY, banner.next_line())
            .await
            .expect("banner in time")
            .unwrap()
            .expect("banner line")
    };
    let listening = next().await;
    let url = listening
        .split_whitespace()
        .find(|word| word.starts_with("ws://"))
        .expect("the banner names the url")
        .to_owned();
    let app_id = next().await.rsplit(' ').next().unwrap().to_owned();
    let certificate = next().await.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(app_id.len(), 32);
    assert_eq!(certificate.len(), 32);

    // Health check over plain HTTP.
    let health_url = url.replace("ws://", "").replace("/v1/ws", "");
    let mut stream = tokio::net::TcpStream::connect(&health_url).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // The demo page, its app and a token for the page (dev only), over plain HTTP.
    let address = health_url.parse().unwrap();
    let page = parley_testkit::http::http(address, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200);
    let script = parley_testkit::http::http(address, "GET", "/demo/app.js", &[], None).await;
    assert_eq!(script.status, 200, "{script:?}");
    let config = parley_testkit::http::http(address, "GET", "/demo/config.json", &[], None).await;
    assert_eq!(config.body["appId"], app_id.as_str());
    let made = parley_testkit::http::http(address, "GET", "/demo/token?uid=dora", &[], None).await;
    let page_token = made.body["token"].as_str().unwrap().to_owned();
    let config = parley_client::ClientConfig::new(&url, &app_id, "dora").token(&page_token);
    parley_client::Client::login(config)
        .await
        .expect("the page's token logs in");

    let token = |uid: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args([
                "token",
                "--app-id",
                &app_id,
                "--app-certificate",
                &certificate,
            ])
            .args(["--uid", uid, "--expire", "600"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(token.starts_with("007"));
        token
    };
    let spawn = |uid: &str, extra: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["client", "--url", &url, "--app-id", &app_id, "--uid", uid])
            .args(["--token", &token(uid)])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        CliClient { child, stdout }
    };
    let mut bob = spawn("bob", &["--stay"]);
    assert_eq!(bob.line().await["state"], "CONNECTED");
    let mut alice = spawn("alice", &[]);
    assert_eq!(alice.line().await["state"], "CONNECTED");
    alice
        .write(&[r#"{"id":1,"op":"sendMessageToPeer","peerId":"bob","text":"hi"}"#])
        .await;
    alice.close_stdin().await;
    let (lines, code) = alice.finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(reply(&lines, 1)["result"], "RECEIVED_BY_PEER");
    assert_eq!(
        bob.line_where(|line| line["event"] == "MessageFromPeer")
            .await["text"],
        "hi"
    );

    // A token for another uid is refused by the real server.
    let mut impostor = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args([
            "client", "--url", &url, "--app-id", &app_id, "--uid", "mallory",
        ])
        .args(["--token", &token("bob")])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(PROMPTLY, impostor.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());

    // Restarting keeps the development app, so tokens made earlier stay valid.
    dev.kill().await.unwrap();
    let mut again = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(again.stdout.take().unwrap()).lines();
    banner.next_line().await.unwrap();
    let same_app = banner.next_line().await.unwrap().unwrap();
    assert!(same_app.ends_with(&app_id));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The operations and events added for invitations, attributes, status and history, through two
/// `parley client` processes.
#[tokio::test]
async fn invitations_attributes_status_and_history_through_the_cli() {
    let server = TestServer::start().await;
    let mut bob = CliClient::spawn(&server, "bob", &server.token("bob"), &["--stay"]);
    assert_eq!(bob.line().await["state"], "CONNECTED");
    bob.write(&[
        r#"{"id":"b1","op":"join","channelId":"room"}"#,
        r#"{"id":"b2","op":"subscribePeersOnlineStatus","peerIds":["alice"]}"#,
    ])
    .await;
    bob.line_where(|line| line["id"] == "b2").await;
    let initial = bob
        .line_where(|line| line["event"] == "PeersOnlineStatusChanged")
        .await;
    assert_eq!(initial["status"]["alice"], "OFFLINE");

    let mut alice = CliClient::spawn(&server, "alice", &server.token("alice"), &["--stay"]);
    assert_eq!(alice.line().await["state"], "CONNECTED");
    let online = bob
        .line_where(|line| line["event"] == "PeersOnlineStatusChanged")
        .await;
    assert_eq!(online["status"]["alice"], "ONLINE");

    alice
        .write(&[
            r#"{"id":1,"op":"sendLocalInvitation","calleeId":"bob","content":"call?","channelId":"call"}"#,
        ])
        .await;
    let sent = alice.line_where(|line| line["id"] == 1).await;
    let invitation_id = sent["invitationId"]
        .as_str()
        .expect("invitationId")
        .to_owned();
    let received = bob
        .line_where(|line| line["event"] == "RemoteInvitationReceived")
        .await;
    assert_eq!(
        received,
        json!({"event": "RemoteInvitationReceived", "invitationId": invitation_id,
               "callerId": "alice", "content": "call?", "channelId": "call"})
    );
    alice
        .line_where(|line| line["event"] == "LocalInvitationReceivedByPeer")
        .await;
    bob.write(&[&format!(
        r#"{{"id":"b3","op":"acceptRemoteInvitation","invitationId":"{invitation_id}","response":"yes"}}"#
    )])
    .await;
    let accepted = alice
        .line_where(|line| line["event"] == "LocalInvitationAccepted")
        .await;
    assert_eq!(accepted["response"], "yes");
    assert_eq!(accepted["calleeId"], "bob");
    bob.line_where(|line| line["event"] == "RemoteInvitationAccepted")
        .await;

    alice
        .write(&[
            r#"{"id":2,"op":"setLocalUserAttributes","attributes":{"mood":"calm"}}"#,
            r#"{"id":3,"op":"join","channelId":"room"}"#,
            r#"{"id":4,"op":"setChannelAttributes","channelId":"room","attributes":{"topic":"cli"},"enableNotificationToChannelMembers":true}"#,
            r#"{"id":5,"op":"sendMessage","channelId":"room","text":"kept","enableHistoricalMessaging":true}"#,
            r#"{"id":6,"op":"getChannelAttributesByKeys","channelId":"room","keys":["topic"]}"#,
            r#"{"id":7,"op":"queryHistory","channelId":"room","limit":10,"order":"desc"}"#,
            r#"{"id":8,"op":"queryPeersOnlineStatus","peerIds":["bob","nobody"]}"#,
            r#"{"id":9,"op":"countHistory","channelId":"room"}"#,
        ])
        .await;
    let six = alice.line_where(|line| line["id"] == 6).await;
    assert_eq!(six["attributes"]["topic"]["value"], "cli");
    assert_eq!(six["attributes"]["topic"]["lastUpdateUserId"], "alice");
    assert!(six["attributes"]["topic"]["lastUpdateTs"].as_i64().unwrap() > 0);
    let seven = alice.line_where(|line| line["id"] == 7).await;
    assert_eq!(seven["messages"][0]["text"], "kept");
    assert_eq!(seven["messages"][0]["from"], "alice");
    assert_eq!(seven["next"], Value::Null);
    let eight = alice.line_where(|line| line["id"] == 8).await;
    assert_eq!(eight["status"], json!({"bob": true, "nobody": false}));
    assert_eq!(alice.line_where(|line| line["id"] == 9).await["count"], 1);

    let updated = bob
        .line_where(|line| line["event"] == "AttributesUpdated")
        .await;
    assert_eq!(updated["attributes"]["topic"]["value"], "cli");
    bob.write(&[r#"{"id":"b4","op":"getUserAttributes","userId":"alice"}"#])
        .await;
    let attributes = bob.line_where(|line| line["id"] == "b4").await;
    assert_eq!(attributes["attributes"], json!({"mood": "calm"}));
}

#[tokio::test]
async fn mutes_kicks_and_bans_print_as_the_cli_contract_names_them() {
    let server = TestServer::start().await;
    let mut bob = CliClient::spawn(&server, "bob", &server.token("bob"), &["--stay"]);
    assert_eq!(bob.line().await["state"], "CONNECTED");
    bob.write(&[r#"{"id":1,"op":"join","channelId":"room"}"#])
        .await;
    bob.line_where(|line| line["id"] == 1).await;
    let auth = [parley_testkit::http::basic(
        parley_testkit::CUSTOMER_KEY,
        parley_testkit::CUSTOMER_SECRET,
    )];
    let api = |path: &str| format!("/v1/apps/{}{path}", server.app_id());
    let http = async |method: &str, path: String, body: Option<Value>| {
        let reply = parley_testkit::http::http(
            server.http_addresses()[0],
            method,
            &path,
            &auth,
            body.as_ref(),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    };

    let mute = json!({ "uid": "bob", "durationSeconds": 60, "reason": "too loud" });
    http("POST", api("/channels/room/mutes"), Some(mute)).await;
    let muted = bob.line_where(|line| line["event"] == "Muted").await;
    assert_eq!(muted["channelId"], "room");
    assert_eq!(muted["memberId"], "bob");
    assert_eq!(muted["reason"], "too loud");
    assert!(muted["untilTs"].as_i64().unwrap() > 0);
    http("DELETE", api("/channels/room/mutes/bob"), None).await;
    let unmuted = bob.line_where(|line| line["event"] == "Unmuted").await;
    assert_eq!(unmuted["channelId"], "room");

    http(
        "DELETE",
        api("/channels/room/members/bob?reason=off%20topic"),
        None,
    )
    .await;
    let kicked = bob.line_where(|line| line["event"] == "Kicked").await;
    assert_eq!(
        kicked,
        json!({ "event": "Kicked", "channelId": "room", "reason": "off topic" })
    );

    let ban = json!({ "uid": "bob", "durationSeconds": 60 });
    http("POST", api("/bans"), Some(ban)).await;
    let aborted = bob
        .line_where(|line| line["event"] == "ConnectionStateChanged")
        .await;
    assert_eq!(aborted["state"], "ABORTED");
    assert_eq!(aborted["reason"], "BANNED_BY_SERVER");
    assert_eq!(bob.line().await, json!({ "event": "BannedByServer" }));
}
