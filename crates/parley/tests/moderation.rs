//! The server API's moderation (bans, mutes, kicks), event logs and webhooks, over real HTTP and
//! real client connections.

use std::time::Duration;

use parley_client::Client;
use parley_client::ConnectionChangeReason;
use parley_client::ConnectionState;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Message;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::PROMPTLY;
use parley_testkit::RedisServer;
use parley_testkit::TestServer;
use parley_testkit::http::HttpReply;
use parley_testkit::http::basic;
use parley_testkit::http::http;
use serde_json::json;
use tokio::sync::mpsc;

fn backend() -> Vec<(&'static str, String)> {
    vec![basic(CUSTOMER_KEY, CUSTOMER_SECRET)]
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> HttpReply {
    let path = format!("/v1/apps/{}{path}", server.app_id());
    http(
        server.http_addresses()[0],
        method,
        &path,
        &backend(),
        body.as_ref(),
    )
    .await
}

async fn next_matching(
    events: &mut mpsc::Receiver<Event>,
    matches: impl Fn(&Event) -> bool,
) -> Event {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            let event = events.recv().await.expect("event stream ended");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event did not come in time")
}

/// Logs in, waiting out the login rate limit (two a second per uid) if a test used it up.
async fn login_again(server: &TestServer, uid: &str) -> Result<Client, ErrorCode> {
    loop {
        match Client::login(server.client_config(uid)).await {
            Ok((client, _events)) => return Ok(client),
            Err(error) if error.code == ErrorCode::TooOften => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.code),
        }
    }
}

fn assert_error(reply: &HttpReply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body["code"], code, "{reply:?}");
}

#[tokio::test]
async fn a_ban_ends_live_sessions_and_refuses_logins_until_lifted() {
    let server = TestServer::start().await;
    let (_mallory, mut mallory_events) = Client::login(server.client_config("mallory"))
        .await
        .unwrap();
    let ban = json!({ "uid": "mallory", "durationSeconds": 600, "reason": "spam" });
    let reply = call(&server, "POST", "/bans", Some(ban)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["uid"], "mallory");
    next_matching(&mut mallory_events, |event| {
        matches!(event, Event::ConnectionStateChanged(changed)
            if changed.state() == ConnectionState::Aborted
                && changed.reason() == ConnectionChangeReason::BannedByServer)
    })
    .await;
    let refused = Client::login(server.client_config("mallory")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Banned)
    );
    // Others are not touched.
    login_again(&server, "trent").await.unwrap();

    let listed = call(&server, "GET", "/bans", None).await;
    assert_eq!(listed.body["bans"][0]["uid"], "mallory", "{listed:?}");
    assert_eq!(listed.body["bans"][0]["reason"], "spam");
    assert_eq!(listed.body["bans"][0]["untilTs"], reply.body["untilTs"]);
    assert_eq!(listed.body["bans"].as_array().map(Vec::len), Some(1));

    let lifted = call(&server, "DELETE", "/bans/mallory", None).await;
    assert_eq!(lifted.body["lifted"], true, "{lifted:?}");
    let again = call(&server, "DELETE", "/bans/mallory", None).await;
    assert_eq!(again.body["lifted"], false, "{again:?}");
    login_again(&server, "mallory").await.unwrap();
    let listed = call(&server, "GET", "/bans", None).await;
    assert_eq!(listed.body["bans"], json!([]));
}

#[tokio::test]
async fn a_ban_ends_by_itself() {
    let server = TestServer::start().await;
    let ban = json!({ "uid": "oscar", "durationSeconds": 1 });
    assert_eq!(call(&server, "POST", "/bans", Some(ban)).await.status, 200);
    let refused = Client::login(server.client_config("oscar")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Banned)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login_again(&server, "oscar").await.unwrap();
}

#[tokio::test]
async fn bad_moderation_requests_are_named() {
    let server = TestServer::start().await;
    for (body, code) in [
        (
            json!({ "uid": "x", "durationSeconds": 0 }),
            "INVALID_ARGUMENT",
        ),
        (
            json!({ "uid": "x", "durationSeconds": 365 * 24 * 3600 + 1 }),
            "INVALID_ARGUMENT",
        ),
        (
            json!({ "uid": "u".repeat(65), "durationSeconds": 5 }),
            "INVALID_USERID",
        ),
        (
            json!({ "uid": "x", "durationSeconds": 5, "reason": "r".repeat(257) }),
            "SIZE_OVERFLOW",
        ),
        (json!({ "uid": "x" }), "INVALID_ARGUMENT"),
    ] {
        let reply = call(&server, "POST", "/bans", Some(body.clone())).await;
        assert_error(&reply, 400, code);
        let reply = call(&server, "POST", "/channels/room/mutes", Some(body)).await;
        assert_error(&reply, 400, code);
    }
    let edge = json!({ "uid": "x", "durationSeconds": 365 * 24 * 3600, "reason": "r".repeat(256) });
    assert_eq!(call(&server, "POST", "/bans", Some(edge)).await.status, 200);
    let long = "c".repeat(65);
    let reply = call(&server, "GET", &format!("/channels/{long}/mutes"), None).await;
    assert_error(&reply, 400, "INVALID_CHANNEL_ID");
    let reply = call(
        &server,
        "DELETE",
        &format!("/channels/{long}/members/bob"),
        None,
    )
    .await;
    assert_error(&reply, 400, "INVALID_CHANNEL_ID");
    let long_uid = "u".repeat(65);
    for path in [
        format!("/channels/room/members/{long_uid}"),
        format!("/bans/{long_uid}"),
        format!("/channels/room/mutes/{long_uid}"),
    ] {
        let reply = call(&server, "DELETE", &path, None).await;
        assert_error(&reply, 400, "INVALID_USERID");
    }
    let reply = call(&server, "GET", "/events/everything", None).await;
    assert_error(&reply, 400, "INVALID_ARGUMENT");
    let reply = call(&server, "GET", "/events/users?limit=1001", None).await;
    assert_error(&reply, 400, "INVALID_ARGUMENT");
    let reply = call(&server, "GET", "/events/users?after=soon", None).await;
    assert_error(&reply, 400, "INVALID_ARGUMENT");

    // A user's token may not moderate, nor read the event logs.
    let user = [
        ("x-parley-token", server.token("alice")),
        ("x-parley-uid", "alice".to_owned()),
    ];
    let app = server.app_id();
    for (method, path, body) in [
        (
            "POST",
            "/bans",
            Some(json!({ "uid": "bob", "durationSeconds": 5 })),
        ),
        ("GET", "/bans", None),
        ("DELETE", "/bans/bob", None),
        (
            "POST",
            "/channels/room/mutes",
            Some(json!({ "uid": "bob", "durationSeconds": 5 })),
        ),
        ("GET", "/channels/room/mutes", None),
        ("DELETE", "/channels/room/mutes/bob", None),
        ("DELETE", "/channels/room/members/bob", None),
        ("GET", "/events/users", None),
    ] {
        let path = format!("/v1/apps/{app}{path}");
        let reply = http(
            server.http_addresses()[0],
            method,
            &path,
            &user,
            body.as_ref(),
        )
        .await;
        assert_error(&reply, 403, "FORBIDDEN");
        let reply = http(
            server.http_addresses()[0],
            method,
            &path,
            &[],
            body.as_ref(),
        )
        .await;
        assert_error(&reply, 401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn a_mute_keeps_messages_out_and_members_are_told() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    alice.join("room").await.unwrap();
    bob.join("room").await.unwrap();

    let mute = json!({ "uid": "alice", "durationSeconds": 600, "reason": "shouting" });
    let reply = call(&server, "POST", "/channels/room/mutes", Some(mute)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    for events in [&mut alice_events, &mut bob_events] {
        let told = next_matching(events, |event| matches!(event, Event::MemberMuted(_))).await;
        let Event::MemberMuted(told) = told else {
            unreachable!()
        };
        assert_eq!(
            (told.channel_id.as_str(), told.member_id.as_str()),
            ("room", "alice")
        );
        assert!(told.muted);
        assert_eq!(
            serde_json::Value::from(told.until_ts),
            reply.body["untilTs"]
        );
    }
    let refused = alice.send_message("room", Message::text("LOUD")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Muted)
    );
    // Not through the server API either, nor in another channel.
    let as_alice = json!({ "from": "alice", "channelId": "room", "message": { "text": "LOUD" } });
    let reply = call(&server, "POST", "/channel-messages", Some(as_alice)).await;
    assert_error(&reply, 409, "MUTED");
    alice.join("hall").await.unwrap();
    alice
        .send_message("hall", Message::text("hi"))
        .await
        .unwrap();
    bob.send_message("room", Message::text("calm"))
        .await
        .unwrap();

    let listed = call(&server, "GET", "/channels/room/mutes", None).await;
    assert_eq!(listed.body["mutes"][0]["uid"], "alice", "{listed:?}");
    assert_eq!(listed.body["mutes"][0]["reason"], "shouting");
    let other = call(&server, "GET", "/channels/hall/mutes", None).await;
    assert_eq!(other.body["mutes"], json!([]));

    let lifted = call(&server, "DELETE", "/channels/room/mutes/alice", None).await;
    assert_eq!(lifted.body["lifted"], true, "{lifted:?}");
    let told = next_matching(
        &mut bob_events,
        |event| matches!(event, Event::MemberMuted(muted) if !muted.muted),
    )
    .await;
    let Event::MemberMuted(told) = told else {
        unreachable!()
    };
    assert_eq!(told.until_ts, 0);
    alice
        .send_message("room", Message::text("sorry"))
        .await
        .unwrap();
    let lifted = call(&server, "DELETE", "/channels/room/mutes/alice", None).await;
    assert_eq!(lifted.body["lifted"], false);
}

#[tokio::test]
async fn a_mute_holds_for_a_channel_that_comes_back() {
    let server = TestServer::start().await;
    // Muted while nobody is in the channel: it holds once the channel has members again.
    let mute = json!({ "uid": "alice", "durationSeconds": 600 });
    assert_eq!(
        call(&server, "POST", "/channels/quiet/mutes", Some(mute))
            .await
            .status,
        200
    );
    let (alice, _alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("quiet").await.unwrap();
    let refused = alice.send_message("quiet", Message::text("hm")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Muted)
    );
}

#[tokio::test]
async fn a_kick_takes_every_session_out_and_the_user_may_rejoin() {
    let server = TestServer::builder().multi_login().start().await;
    let (phone, mut phone_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (laptop, mut laptop_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    for client in [&phone, &laptop, &bob] {
        client.join("room").await.unwrap();
    }
    let reply = call(&server, "DELETE", "/channels/room/members/alice", None).await;
    assert_eq!(reply.body["kicked"], true, "{reply:?}");
    for events in [&mut phone_events, &mut laptop_events] {
        next_matching(events, |event| {
            matches!(event, Event::KickedFromChannel(kicked) if kicked.channel_id == "room")
        })
        .await;
    }
    next_matching(
        &mut bob_events,
        |event| matches!(event, Event::MemberLeft(left) if left.member_id == "alice"),
    )
    .await;
    let members = call(&server, "GET", "/channels/room/members", None).await;
    assert_eq!(members.body["members"], json!(["bob"]));
    let refused = phone.send_message("room", Message::text("hey")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::NotJoined)
    );
    // Kicked is not banned: the user may come back.
    phone.join("room").await.unwrap();
    phone
        .send_message("room", Message::text("back"))
        .await
        .unwrap();

    let nobody = call(&server, "DELETE", "/channels/room/members/carol", None).await;
    assert_eq!(nobody.body["kicked"], false, "{nobody:?}");
    let empty = call(&server, "DELETE", "/channels/nowhere/members/bob", None).await;
    assert_eq!(empty.body["kicked"], false, "{empty:?}");
}

/// Polls an event log until it holds `count` events after `after`.
async fn events(
    server: &TestServer,
    stream: &str,
    after: &str,
    count: usize,
) -> (Vec<serde_json::Value>, String) {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            let path = format!("/events/{stream}?after={after}");
            let reply = call(server, "GET", &path, None).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let events = reply.body["events"].as_array().cloned().unwrap_or_default();
            if events.len() >= count {
                return (events, reply.body["next"].as_str().unwrap().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the events did not come in time")
}

#[tokio::test]
async fn user_and_channel_events_are_logged_and_paged() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("room").await.unwrap();
    alice.leave("room").await.unwrap();
    alice.join("room").await.unwrap();
    call(&server, "DELETE", "/channels/room/members/alice", None).await;
    alice.logout().await.unwrap();

    let (users, next) = events(&server, "users", "", 2).await;
    let seen: Vec<(&str, &str, Option<&str>)> = users
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["uid"].as_str().unwrap(),
                e["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("login", "alice", None),
            ("logout", "alice", Some("logout"))
        ]
    );
    let (channels, _) = events(&server, "channels", "", 4).await;
    let seen: Vec<(&str, &str, Option<&str>)> = channels
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["channelId"].as_str().unwrap(),
                e["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("join", "room", None),
            ("leave", "room", Some("left")),
            ("join", "room", None),
            ("leave", "room", Some("kicked")),
        ]
    );
    // Paging: one at a time, then nothing new after the last.
    let path = "/events/channels?limit=1".to_owned();
    let first = call(&server, "GET", &path, None).await;
    assert_eq!(first.body["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(first.body["events"][0], channels[0]);
    let path = format!(
        "/events/channels?limit=2&after={}",
        first.body["next"].as_str().unwrap()
    );
    let second = call(&server, "GET", &path, None).await;
    assert_eq!(second.body["events"], json!(channels[1..3]));
    let later = call(&server, "GET", &format!("/events/users?after={next}"), None).await;
    assert_eq!(later.body["events"], json!([]));
    assert_eq!(later.body["next"], next.as_str());
}

#[tokio::test]
async fn bans_and_mutes_survive_a_restart() {
    let redis = RedisServer::start();
    let server = TestServer::builder().store(redis.url()).start().await;
    let ban = json!({ "uid": "mallory", "durationSeconds": 600 });
    assert_eq!(call(&server, "POST", "/bans", Some(ban)).await.status, 200);
    let mute = json!({ "uid": "alice", "durationSeconds": 600 });
    assert_eq!(
        call(&server, "POST", "/channels/room/mutes", Some(mute))
            .await
            .status,
        200
    );
    server.stop().await;

    let server = TestServer::builder().store(redis.url()).start().await;
    let refused = Client::login(server.client_config("mallory")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Banned)
    );
    let (alice, _events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("room").await.unwrap();
    let refused = alice.send_message("room", Message::text("hi")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Muted)
    );
    let listed = call(&server, "GET", "/bans", None).await;
    assert_eq!(listed.body["bans"][0]["uid"], "mallory", "{listed:?}");
}
