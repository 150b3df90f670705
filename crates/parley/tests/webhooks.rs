//! Webhooks to a real HTTP receiver: signed, retried after a failed delivery, in order per user,
//! and every kind of event.

use std::time::SystemTime;

use hmac::Hmac;
use hmac::Mac;
use parley_client::Client;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::request::Op;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::PROMPTLY;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::http::basic;
use parley_testkit::http::http;
use parley_testkit::webhook::Delivery;
use parley_testkit::webhook::WebhookReceiver;
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "webhook-secret";

/// Checks a delivery the way a receiver should: the signature over the body, and a timestamp
/// header that the body repeats and that is recent.
fn assert_signed(delivery: &Delivery) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&delivery.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        delivery.headers.get("x-parley-signature"),
        Some(&format!("sha256={expected}")),
        "{delivery:?}"
    );
    let timestamp: i64 = delivery.headers["x-parley-timestamp"].parse().unwrap();
    assert_eq!(delivery.json()["timestamp"], timestamp);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - timestamp).abs() < 60_000, "a stale timestamp");
    assert_eq!(delivery.headers["content-type"], "application/json");
}

async fn send_offline(server: &TestServer, to: &str, text: &str) {
    let path = format!("/v1/apps/{}/peer-messages", server.app_id());
    let body = json!({
        "from": "shop",
        "to": to,
        "message": { "text": text },
        "enableOfflineMessaging": true,
        "waitForAck": true,
    });
    let auth = [basic(CUSTOMER_KEY, CUSTOMER_SECRET)];
    let reply = http(
        server.http_addresses()[0],
        "POST",
        &path,
        &auth,
        Some(&body),
    )
    .await;
    assert_eq!(reply.body["result"], "CACHED_BY_SERVER", "{reply:?}");
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_in_order_per_user() {
    // The receiver fails the first delivery: it must come again, before anything after it.
    let mut receiver = WebhookReceiver::start(1).await;
    let server = TestServer::builder()
        .webhook(&receiver.url(), SECRET)
        .start()
        .await;
    for _ in 0..2 {
        let (alice, _events) = Client::login(server.client_config("alice")).await.unwrap();
        alice.logout().await.unwrap();
    }
    for text in ["one", "two", "three"] {
        send_offline(&server, "alice", text).await;
    }

    let refused = receiver.next().await;
    assert!(!refused.accepted);
    assert_signed(&refused);
    let mut accepted = Vec::new();
    while accepted.len() < 7 {
        let delivery = receiver.next().await;
        assert_signed(&delivery);
        assert!(delivery.accepted);
        accepted.push(delivery.json());
    }
    // The retry is the same event (same id), first in line.
    assert_eq!(accepted[0]["id"], refused.json()["id"]);
    let seen: Vec<(&str, &str)> = accepted
        .iter()
        .map(|event| {
            let detail = event["reason"]
                .as_str()
                .or(event["message"]["text"].as_str())
                .unwrap_or("");
            (event["type"].as_str().unwrap(), detail)
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("user.login", ""),
            ("user.logout", "logout"),
            ("user.login", ""),
            ("user.logout", "logout"),
            ("peer.message_cached", "one"),
            ("peer.message_cached", "two"),
            ("peer.message_cached", "three"),
        ]
    );
    for event in &accepted {
        assert_eq!(event["uid"], "alice");
        assert_eq!(event["appId"], server.app_id());
    }
    assert_eq!(accepted[4]["from"], "shop");
    let mut ids: Vec<&str> = accepted.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 7, "every event has its own id");
}

#[tokio::test]
async fn joins_leaves_and_invitations_to_offline_users_reach_the_webhook() {
    let mut receiver = WebhookReceiver::start(0).await;
    let server = TestServer::builder()
        .webhook(&receiver.url(), SECRET)
        .start()
        .await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let joined = bob
        .call(Op::Join(v1::JoinRequest {
            channel_id: "room".into(),
            resume_after_seq: None,
        }))
        .await;
    assert!(joined.error.is_none(), "{joined:?}");
    let join = receiver.next_of("channel.join").await;
    assert_signed(&join);
    assert_eq!(
        (&join.json()["uid"], &join.json()["channelId"]),
        (&json!("bob"), &json!("room"))
    );

    let invited = bob
        .call(Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
            callee_id: "carol".into(),
            content: "call me".into(),
            channel_id: "call-room".into(),
        }))
        .await;
    let Some(v1::reply::Result::SendLocalInvitation(sent)) = invited.result else {
        panic!("{invited:?}");
    };
    let invitation = receiver.next_of("invitation.offline").await.json();
    assert_eq!(invitation["uid"], "carol");
    assert_eq!(invitation["caller"], "bob");
    assert_eq!(invitation["content"], "call me");
    assert_eq!(invitation["channelId"], "call-room");
    assert_eq!(invitation["invitationId"], sent.invitation_id.to_string());

    let path = format!("/v1/apps/{}/channels/room/members/bob", server.app_id());
    let auth = [basic(CUSTOMER_KEY, CUSTOMER_SECRET)];
    http(server.http_addresses()[0], "DELETE", &path, &auth, None).await;
    let leave = receiver.next_of("channel.leave").await.json();
    assert_eq!(
        (&leave["uid"], &leave["reason"]),
        (&json!("bob"), &json!("kicked"))
    );
}

#[tokio::test]
async fn a_webhook_that_never_answers_holds_up_nothing() {
    // This listener takes connections (the kernel's backlog) but never answers a request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let server = TestServer::builder().webhook(&url, SECRET).start().await;
    tokio::time::timeout(PROMPTLY, async {
        for uid in ["a", "b", "c", "d"] {
            let (client, _events) = Client::login(server.client_config(uid)).await.unwrap();
            client.join("room").await.unwrap();
            client.logout().await.unwrap();
        }
    })
    .await
    .expect("logins and joins waited for the webhook");
    drop(silent);
}
