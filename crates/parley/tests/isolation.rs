//! Two apps on one server, with the same uids and channel names in both: nothing one app's
//! clients or backend do reaches the other app's users, channels, attributes, presence,
//! invitations, history or offline inboxes.

use std::collections::HashMap;
use std::time::Duration;

use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_testkit::OTHER_APP_ID;
use parley_testkit::OTHER_CUSTOMER_KEY;
use parley_testkit::OTHER_CUSTOMER_SECRET;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::http::basic;
use parley_testkit::http::http;
use parley_testkit::ops::join;
use parley_testkit::ops::ok;
use parley_testkit::ops::to_channel;
use parley_testkit::ops::to_peer;

/// Long enough for a stray delivery to have arrived.
const QUIET: Duration = Duration::from_millis(300);

async fn in_other_app(server: &TestServer, uid: &str) -> RawClient {
    let mut client = RawClient::connect(&server.ws_url(), Codec::Json).await;
    let reply = client
        .call(Op::Login(v1::LoginRequest {
            app_id: OTHER_APP_ID.into(),
            uid: uid.into(),
            token: String::new(),
        }))
        .await;
    assert!(reply.error.is_none(), "{reply:?}");
    client
}

/// What the other app's clients must never hear of: the test app's messages, invitations,
/// channel attributes and members (bob and dave exist only there).
fn any_message(kind: &EventKind) -> bool {
    match kind {
        EventKind::MemberJoined(joined) => ["bob", "dave"].contains(&joined.member_id.as_str()),
        other => matches!(
            other,
            EventKind::MessageFromPeer(_)
                | EventKind::ChannelMessage(_)
                | EventKind::RemoteInvitationReceived(_)
                | EventKind::AttributesUpdated(_)
        ),
    }
}

async fn members(client: &mut RawClient, channel: &str) -> Vec<String> {
    let reply = client
        .call(Op::GetMembers(v1::GetMembersRequest {
            channel_id: channel.into(),
        }))
        .await;
    match ok(reply) {
        ReplyResult::GetMembers(result) => {
            let mut members = result.members;
            members.sort();
            members
        }
        other => panic!("{other:?}"),
    }
}

async fn user_attributes(client: &mut RawClient, uid: &str) -> HashMap<String, String> {
    let reply = client
        .call(Op::GetUserAttributes(v1::GetUserAttributesRequest {
            user_id: uid.into(),
            keys: Vec::new(),
        }))
        .await;
    match ok(reply) {
        ReplyResult::UserAttributes(result) => result.attributes.into_iter().collect(),
        other => panic!("{other:?}"),
    }
}

async fn channel_attribute_keys(client: &mut RawClient, channel: &str) -> Vec<String> {
    let reply = client
        .call(Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: channel.into(),
            keys: Vec::new(),
        }))
        .await;
    match ok(reply) {
        ReplyResult::ChannelAttributes(result) => {
            result.attributes.into_iter().map(|a| a.key).collect()
        }
        other => panic!("{other:?}"),
    }
}

async fn online(client: &mut RawClient, uid: &str) -> bool {
    let reply = client
        .call(Op::QueryPeersOnlineStatus(
            v1::QueryPeersOnlineStatusRequest {
                peer_ids: vec![uid.into()],
            },
        ))
        .await;
    match ok(reply) {
        ReplyResult::QueryPeersOnlineStatus(result) => result.status[uid],
        other => panic!("{other:?}"),
    }
}

async fn channel_history(client: &mut RawClient, channel: &str) -> usize {
    let reply = client
        .call(Op::QueryHistory(v1::QueryHistoryRequest {
            conversation: Some(v1::query_history_request::Conversation::ChannelId(
                channel.into(),
            )),
            ..Default::default()
        }))
        .await;
    match ok(reply) {
        ReplyResult::QueryHistory(result) => result.messages.len(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_apps_with_the_same_names_never_meet() {
    let server = TestServer::builder().second_app().start().await;
    // alice and bob in the test app, alice and carol in the other; all in "room".
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    let mut other_alice = in_other_app(&server, "alice").await;
    let mut carol = in_other_app(&server, "carol").await;
    // One login per uid and app: the other app's alice did not end this one.
    ok(alice.call(Op::Ping(v1::PingRequest {})).await);
    for client in [&mut alice, &mut bob, &mut other_alice, &mut carol] {
        ok(client.call(join("room")).await);
    }
    assert_eq!(members(&mut alice, "room").await, ["alice", "bob"]);
    assert_eq!(members(&mut carol, "room").await, ["alice", "carol"]);

    // Messages: a peer message to "alice", a channel message, an invitation.
    let sent = bob.send(to_peer("alice", "for alice")).await;
    let EventKind::MessageFromPeer(message) = alice
        .event(|kind| matches!(kind, EventKind::MessageFromPeer(_)))
        .await
    else {
        unreachable!()
    };
    alice.receipt(message.message_id).await;
    ok(bob.reply(sent).await);
    ok(bob.call(to_channel("room", "to the room")).await);
    alice
        .event(|kind| matches!(kind, EventKind::ChannelMessage(_)))
        .await;
    let invited = bob
        .send(Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
            callee_id: "alice".into(),
            ..Default::default()
        }))
        .await;
    let EventKind::RemoteInvitationReceived(invitation) = alice
        .event(|kind| matches!(kind, EventKind::RemoteInvitationReceived(_)))
        .await
    else {
        unreachable!()
    };
    alice.receipt(invitation.invitation_id).await;
    ok(bob.reply(invited).await);

    // Attributes of a user and of a channel with the same names.
    ok(alice
        .call(Op::AddOrUpdateLocalUserAttributes(
            v1::AddOrUpdateLocalUserAttributesRequest {
                attributes: [("mood".to_owned(), "fine".to_owned())].into(),
            },
        ))
        .await);
    ok(bob
        .call(Op::AddOrUpdateChannelAttributes(
            v1::AddOrUpdateChannelAttributesRequest {
                channel_id: "room".into(),
                attributes: [("topic".to_owned(), "ours".to_owned())].into(),
                enable_notification_to_channel_members: true,
            },
        ))
        .await);
    assert_eq!(user_attributes(&mut bob, "alice").await["mood"], "fine");
    assert!(user_attributes(&mut carol, "alice").await.is_empty());
    assert_eq!(channel_attribute_keys(&mut alice, "room").await, ["topic"]);
    assert!(channel_attribute_keys(&mut carol, "room").await.is_empty());

    // Presence: bob is online in his app only.
    assert!(online(&mut alice, "bob").await);
    assert!(!online(&mut carol, "bob").await);

    // None of it reached the other app's alice or carol.
    other_alice.no_event(QUIET, any_message).await;
    carol.no_event(QUIET, any_message).await;

    // History: the channel message is kept in this app's "room" only.
    let kept = bob.call(to_channel_kept("room", "kept")).await;
    assert!(kept.error.is_none(), "{kept:?}");
    assert_eq!(channel_history(&mut alice, "room").await, 1);
    assert_eq!(channel_history(&mut carol, "room").await, 0);

    // Offline messages wait in the inbox of their app's "dave" only.
    ok(bob
        .call(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: "dave".into(),
            message: parley_testkit::ops::text("while you were away"),
            enable_offline_messaging: true,
            ..Default::default()
        }))
        .await);
    let mut other_dave = in_other_app(&server, "dave").await;
    other_dave.no_event(QUIET, any_message).await;
    let mut dave = RawClient::login(&server, "dave", Codec::Json).await;
    dave.event(|kind| matches!(kind, EventKind::MessageFromPeer(_)))
        .await;

    // The server API: one app's key opens nothing of the other, and a send in one app reaches
    // only its own users.
    let address = server.http_addresses()[0];
    let other_key = [basic(OTHER_CUSTOMER_KEY, OTHER_CUSTOMER_SECRET)];
    let their_path = format!("/v1/apps/{}/users/alice/status", server.app_id());
    let crossed = http(address, "GET", &their_path, &other_key, None).await;
    assert_eq!(crossed.status, 403, "{crossed:?}");
    let send = serde_json::json!({ "from": "system", "to": "carol", "message": { "text": "hi" } });
    let path = format!("/v1/apps/{}/peer-messages", server.app_id());
    let sent = http(
        address,
        "POST",
        &path,
        &[basic(
            parley_testkit::CUSTOMER_KEY,
            parley_testkit::CUSTOMER_SECRET,
        )],
        Some(&send),
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    carol.no_event(QUIET, any_message).await;
    let path = format!("/v1/apps/{OTHER_APP_ID}/peer-messages");
    let sent = http(address, "POST", &path, &other_key, Some(&send)).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    carol
        .event(|kind| matches!(kind, EventKind::MessageFromPeer(_)))
        .await;
}

fn to_channel_kept(channel: &str, text: &str) -> Op {
    Op::SendMessage(v1::SendMessageRequest {
        channel_id: channel.into(),
        message: parley_testkit::ops::text(text),
        enable_historical_messaging: true,
    })
}
