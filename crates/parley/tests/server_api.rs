//! The server API over real HTTP: every endpoint's success and errors, each auth failure, and
//! isolation between apps.

use parley_client::Client;
use parley_client::Event;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::PROMPTLY;
use parley_testkit::TestServer;
use parley_testkit::http::HttpReply;
use parley_testkit::http::basic;
use parley_testkit::http::http;
use serde_json::json;

fn backend() -> Vec<(&'static str, String)> {
    vec![basic(CUSTOMER_KEY, CUSTOMER_SECRET)]
}

async fn post(
    server: &TestServer,
    path: &str,
    auth: &[(&str, String)],
    body: serde_json::Value,
) -> HttpReply {
    let path = format!("/v1/apps/{}{path}", server.app_id());
    http(server.http_addresses()[0], "POST", &path, auth, Some(&body)).await
}

async fn get(server: &TestServer, path: &str, auth: &[(&str, String)]) -> HttpReply {
    let path = format!("/v1/apps/{}{path}", server.app_id());
    http(server.http_addresses()[0], "GET", &path, auth, None).await
}

fn assert_error(reply: &HttpReply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.body["code"], code, "{reply:?}");
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn a_backend_sends_peer_messages_as_any_uid() {
    let server = TestServer::start().await;
    let (_bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    let body = json!({
        "from": "system",
        "to": "bob",
        "message": { "text": "your order shipped" },
        "waitForAck": true,
    });
    let reply = post(&server, "/peer-messages", &backend(), body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["result"], "RECEIVED_BY_PEER");
    let message = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::MessageFromPeer(message)) = bob_events.recv().await {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(message.peer_id, "system");
    assert_eq!(reply.body["messageId"], message.message_id.to_string());

    // Offline receiver: cached when asked, unreachable otherwise; without waiting: SENT.
    let offline = |cache: bool| {
        json!({
            "from": "system",
            "to": "carol",
            "message": { "text": "hello" },
            "enableOfflineMessaging": cache,
            "waitForAck": true,
        })
    };
    let cached = post(&server, "/peer-messages", &backend(), offline(true)).await;
    assert_eq!(cached.body["result"], "CACHED_BY_SERVER", "{cached:?}");
    let unreachable = post(&server, "/peer-messages", &backend(), offline(false)).await;
    assert_eq!(unreachable.body["result"], "PEER_UNREACHABLE");
    let sent = post(
        &server,
        "/peer-messages",
        &backend(),
        json!({ "from": "system", "to": "bob", "message": { "text": "fire and forget" } }),
    )
    .await;
    assert_eq!(sent.body["result"], "SENT");
}

#[tokio::test]
async fn a_backend_sends_channel_messages_without_joining() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("lobby").await.unwrap();
    let body = json!({
        "from": "announcer",
        "channelId": "lobby",
        "message": { "text": "doors open" },
        "enableHistoricalMessaging": true,
    });
    let reply = post(&server, "/channel-messages", &backend(), body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seq = reply.body["seq"].as_u64().unwrap();
    assert!(seq > 0);
    let message = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::ChannelMessage(message)) = alice_events.recv().await {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (message.member_id.as_str(), message.seq),
        ("announcer", seq)
    );

    // A channel with no members: accepted, numbered 0.
    let empty = post(
        &server,
        "/channel-messages",
        &backend(),
        json!({ "from": "announcer", "channelId": "nobody-here", "message": { "text": "hi" } }),
    )
    .await;
    assert_eq!((empty.status, empty.body["seq"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn status_member_counts_and_member_lists() {
    let server = TestServer::start().await;
    let (alice, _events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("lobby").await.unwrap();
    let online = get(&server, "/users/alice/status", &backend()).await;
    assert_eq!(online.body, json!({ "uid": "alice", "state": "ONLINE" }));
    let offline = get(&server, "/users/nobody/status", &backend()).await;
    assert_eq!(offline.body["state"], "OFFLINE");
    let count = get(&server, "/channels/lobby/member-count", &backend()).await;
    assert_eq!(count.body, json!({ "channelId": "lobby", "count": 1 }));
    let members = get(&server, "/channels/lobby/members", &backend()).await;
    assert_eq!(
        members.body,
        json!({ "channelId": "lobby", "members": ["alice"] })
    );
    let empty = get(&server, "/channels/empty/members", &backend()).await;
    assert_eq!(empty.body["members"], json!([]));
    let bad = get(&server, "/channels/null/member-count", &backend()).await;
    assert_error(&bad, 400, "INVALID_CHANNEL_ID");
}

#[tokio::test]
async fn bad_requests_are_named() {
    let server = TestServer::start().await;
    let cases = [
        (json!({ "from": "a", "to": "b" }), "INVALID_ARGUMENT"),
        (
            json!({ "from": "a", "to": "b", "message": { "text": "x" }, "surprise": 1 }),
            "INVALID_ARGUMENT",
        ),
        (
            json!({ "from": "null", "to": "b", "message": { "text": "x" } }),
            "INVALID_USERID",
        ),
        (
            json!({ "from": "a", "to": "b", "message": { "text": "" } }),
            "INVALID_MESSAGE",
        ),
        (
            json!({ "from": "a", "to": "b", "message": { "text": "x".repeat(32 * 1024 + 1) } }),
            "INVALID_MESSAGE",
        ),
    ];
    for (body, code) in cases {
        let reply = post(&server, "/peer-messages", &backend(), body).await;
        assert_error(&reply, 400, code);
    }
    let not_json = http(
        server.http_addresses()[0],
        "POST",
        &format!("/v1/apps/{}/peer-messages", server.app_id()),
        &backend(),
        None,
    )
    .await;
    assert_error(&not_json, 400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn every_auth_failure_is_refused_and_apps_stay_apart() {
    let server = TestServer::start().await;
    let body = json!({ "from": "alice", "to": "bob", "message": { "text": "x" } });
    let none = post(&server, "/peer-messages", &[], body.clone()).await;
    assert_error(&none, 401, "UNAUTHORIZED");
    let wrong_secret = post(
        &server,
        "/peer-messages",
        &[basic(CUSTOMER_KEY, "guess")],
        body.clone(),
    )
    .await;
    assert_error(&wrong_secret, 401, "UNAUTHORIZED");
    let garbage = post(
        &server,
        "/peer-messages",
        &[("authorization", "Basic !!!".into())],
        body.clone(),
    )
    .await;
    assert_error(&garbage, 401, "UNAUTHORIZED");
    // Another app's path with this app's key: no such app here, and nothing about it leaks.
    let other = http(
        server.http_addresses()[0],
        "GET",
        "/v1/apps/00000000000000000000000000000000/users/alice/status",
        &backend(),
        None,
    )
    .await;
    assert_error(&other, 404, "INVALID_APP_ID");

    // A user's token acts as that user only.
    let token = vec![
        ("x-parley-token", server.token("alice")),
        ("x-parley-uid", "alice".to_owned()),
    ];
    let as_alice = post(&server, "/peer-messages", &token, body.clone()).await;
    assert_eq!(as_alice.status, 200, "{as_alice:?}");
    let as_bob = post(
        &server,
        "/peer-messages",
        &token,
        json!({ "from": "bob", "to": "alice", "message": { "text": "x" } }),
    )
    .await;
    assert_error(&as_bob, 403, "FORBIDDEN");
    let stolen = vec![
        ("x-parley-token", server.token("alice")),
        ("x-parley-uid", "mallory".to_owned()),
    ];
    let forged = post(&server, "/peer-messages", &stolen, body).await;
    assert_error(&forged, 401, "INVALID_TOKEN");
}

#[tokio::test]
async fn the_server_api_is_rate_limited_per_app() {
    let server = TestServer::builder()
        .limits(|limits| limits.server_api_rate = parley_core::rate::Rate::new(3, 0.5))
        .start()
        .await;
    for _ in 0..3 {
        let reply = get(&server, "/users/alice/status", &backend()).await;
        assert_eq!(reply.status, 200);
    }
    let limited = get(&server, "/users/alice/status", &backend()).await;
    assert_error(&limited, 429, "TOO_OFTEN");
    assert_eq!(limited.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let server = TestServer::start().await;
    let reply = http(
        server.http_addresses()[0],
        "GET",
        "/v1/openapi.json",
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["info"]["title"], "Parley server API");
    assert!(reply.body["paths"]["/v1/apps/{appId}/peer-messages"].is_object());
}

#[tokio::test]
async fn backends_read_channel_and_peer_history() {
    let server = TestServer::start().await;
    for n in 0..3 {
        let sent = post(
            &server,
            "/channel-messages",
            &backend(),
            json!({
                "from": "announcer",
                "channelId": "news",
                "message": { "text": format!("item {n}") },
                "enableHistoricalMessaging": true,
            }),
        )
        .await;
        assert_eq!(sent.status, 200, "{sent:?}");
    }
    let page = get(
        &server,
        "/channels/news/history?limit=2&order=asc",
        &backend(),
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    let messages = page.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["message"]["text"], "item 0");
    let next = page.body["next"].as_str().unwrap().to_owned();
    assert!(!next.is_empty());
    let rest = get(
        &server,
        &format!("/channels/news/history?limit=2&order=asc&cursor={next}"),
        &backend(),
    )
    .await;
    assert_eq!(rest.body["messages"][0]["message"]["text"], "item 2");
    assert_eq!(rest.body["next"], "");
    let count = get(&server, "/channels/news/history?count=true", &backend()).await;
    assert_eq!(count.body, json!({ "count": 3 }));
    let empty = get(&server, "/channels/news/history?start=10&end=5", &backend()).await;
    assert_eq!(empty.body["messages"], json!([]));
    let bad = get(&server, "/channels/news/history?order=sideways", &backend()).await;
    assert_error(&bad, 400, "INVALID_ARGUMENT");
    let bad_cursor = get(&server, "/channels/news/history?cursor=x", &backend()).await;
    assert_error(&bad_cursor, 400, "INVALID_ARGUMENT");

    // Peer history: the conversation of two users, readable by either user's token.
    post(
        &server,
        "/peer-messages",
        &backend(),
        json!({
            "from": "alice",
            "to": "bob",
            "message": { "text": "hi bob" },
            "enableOfflineMessaging": true,
            "enableHistoricalMessaging": true,
            "waitForAck": true,
        }),
    )
    .await;
    let as_bob = vec![
        ("x-parley-token", server.token("bob")),
        ("x-parley-uid", "bob".to_owned()),
    ];
    let peer = get(&server, "/users/bob/peers/alice/history", &as_bob).await;
    assert_eq!(
        peer.body["messages"][0]["message"]["text"], "hi bob",
        "{peer:?}"
    );
    let snooping = get(&server, "/users/alice/peers/carol/history", &as_bob).await;
    assert_error(&snooping, 403, "FORBIDDEN");
    let channel_as_user = get(&server, "/channels/news/history", &as_bob).await;
    assert_error(&channel_as_user, 403, "FORBIDDEN");
}
