//! A cluster of three meta nodes, three owners and two edges (in-process nodes on real sockets, gRPC between them,
//! state in Redis): users on different edges, whose channels and users live on different owners,
//! see what they would see on one node.

use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ring::Ring;
use parley_testkit::PROMPTLY;
use parley_testkit::TestServer;
use tokio::sync::mpsc;

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
    .expect("expected event did not arrive")
}

fn on_edge(server: &TestServer, edge: usize, uid: &str) -> ClientConfig {
    ClientConfig::new(server.edge_urls()[edge].clone(), server.app_id(), uid)
        .token(server.token(uid))
}

/// Names that the ring places on the given owner (the testkit's owners are nodes 1, 2 and 3).
fn placed(ring: &Ring, prefix: &str, on: NodeId, channel: bool) -> String {
    let app = AppId::parse(parley_testkit::server_app_id()).unwrap();
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|name| {
            let owner = if channel {
                ring.channel_owner(&app, &ChannelId::parse(name).unwrap())
            } else {
                ring.user_owner(&app, &parley_core::ids::UserId::parse(name).unwrap())
            };
            owner == Some(on)
        })
        .unwrap()
}

#[tokio::test]
async fn users_on_different_edges_and_owners_talk() {
    let server = TestServer::builder().cluster().start().await;
    assert_eq!(server.edge_urls().len(), 2);
    // Alice's user lives on owner 1 and she connects to edge 0; Bob's on owner 2, edge 1.
    let alice_uid = placed(&server.ring(), "alice", NodeId(1), false);
    let bob_uid = placed(&server.ring(), "bob", NodeId(2), false);
    let (alice, mut alice_events) = Client::login(on_edge(&server, 0, &alice_uid))
        .await
        .unwrap();
    let (bob, mut bob_events) = Client::login(on_edge(&server, 1, &bob_uid)).await.unwrap();

    // A peer message crosses edge 0 → owner 2 → edge 1 and the receipt comes back.
    let sent = alice
        .send_message_to_peer(
            &bob_uid,
            Message::text("across"),
            PeerMessageOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    let Event::MessageFromPeer(received) = next_matching(&mut bob_events, |event| {
        matches!(event, Event::MessageFromPeer(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(received.peer_id, alice_uid);

    // Channels on either owner fan out to both edges.
    for owner in [NodeId(1), NodeId(2)] {
        let room = placed(&server.ring(), "room", owner, true);
        alice.join(&room).await.unwrap();
        bob.join(&room).await.unwrap();
        let sent = bob
            .send_message(&room, Message::text("hello"))
            .await
            .unwrap();
        let Event::ChannelMessage(message) = next_matching(
            &mut alice_events,
            |event| matches!(event, Event::ChannelMessage(message) if message.channel_id == room),
        )
        .await
        else {
            unreachable!()
        };
        assert_eq!(message.seq, sent.seq);
        let mut members = alice.get_members(&room).await.unwrap();
        members.sort();
        let mut expected = vec![alice_uid.clone(), bob_uid.clone()];
        expected.sort();
        assert_eq!(members, expected);
    }

    // Offline messages cached by one owner reach a user who logs in on the other edge.
    let carol_uid = placed(&server.ring(), "carol", NodeId(1), false);
    let options = PeerMessageOptions {
        enable_offline_messaging: true,
        enable_historical_messaging: false,
    };
    let sent = bob
        .send_message_to_peer(&carol_uid, Message::text("later"), options)
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::CachedByServer);
    let (_carol, mut carol_events) = Client::login(on_edge(&server, 1, &carol_uid))
        .await
        .unwrap();
    let Event::MessageFromPeer(offline) = next_matching(&mut carol_events, |event| {
        matches!(event, Event::MessageFromPeer(_))
    })
    .await
    else {
        unreachable!()
    };
    assert!(offline.is_offline_message);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// When an owner goes and the ring moves its channels and users to the survivor, edges register
/// their sessions, channels and subscriptions again: channels keep working for their members.
#[tokio::test]
async fn when_an_owner_goes_its_channels_move_with_their_members() {
    let mut server = TestServer::builder().cluster().start().await;
    let room = placed(&server.ring(), "room", NodeId(2), true);
    let alice_uid = placed(&server.ring(), "alice", NodeId(2), false);
    let bob_uid = placed(&server.ring(), "bob", NodeId(1), false);
    let (alice, mut alice_events) = Client::login(on_edge(&server, 0, &alice_uid))
        .await
        .unwrap();
    let (bob, mut bob_events) = Client::login(on_edge(&server, 1, &bob_uid)).await.unwrap();
    alice.join(&room).await.unwrap();
    bob.join(&room).await.unwrap();
    let before = bob
        .send_message(&room, Message::text("before"))
        .await
        .unwrap();
    next_matching(&mut alice_events, |event| {
        matches!(event, Event::ChannelMessage(_))
    })
    .await;

    server.stop_owner(NodeId(2)).await;

    // Another owner now holds the room: once the edges have re-registered, messages flow again, with
    // sequence numbers that keep growing.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let after = loop {
        match bob.send_message(&room, Message::text("after")).await {
            Ok(sent) => break sent,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "room never came back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(after.seq > before.seq, "sequence numbers never go back");
    let Event::ChannelMessage(message) = next_matching(
        &mut alice_events,
        |event| matches!(event, Event::ChannelMessage(message) if message.seq == after.seq),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(message.member_id, bob_uid);
    let mut members = alice.get_members(&room).await.unwrap();
    members.sort();
    let mut expected = vec![alice_uid.clone(), bob_uid.clone()];
    expected.sort();
    assert_eq!(members, expected);

    // Alice's user moved too: peer messages reach her through owner 1.
    let sent = bob
        .send_message_to_peer(
            &alice_uid,
            Message::text("still there?"),
            PeerMessageOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    let _ = bob_events.try_recv();
}

/// An invitation lives with its callee's owner; when that owner goes, the caller's edge rebuilds
/// it with the new one, so the callee can still answer and the caller hears the answer.
#[tokio::test]
async fn an_invitation_survives_its_owner() {
    use parley_proto::Codec;
    use parley_proto::v1;
    use parley_proto::v1::event::Kind as EventKind;
    use parley_proto::v1::request::Op;
    use parley_testkit::RawClient;

    let mut server = TestServer::builder().cluster().start().await;
    let callee_owner = NodeId(2);
    let bob_uid = placed(&server.ring(), "bob", callee_owner, false);
    let alice_uid = placed(&server.ring(), "alice", NodeId(1), false);
    let mut alice = RawClient::login(&server, &alice_uid, Codec::Json).await;
    let mut bob = RawClient::login(&server, &bob_uid, Codec::Json).await;
    let sent = alice
        .call(Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
            callee_id: bob_uid.clone(),
            content: "call me".into(),
            channel_id: String::new(),
        }))
        .await;
    let Some(v1::reply::Result::SendLocalInvitation(sent)) = sent.result else {
        panic!("invitation not sent: {:?}", sent.error);
    };
    let id = sent.invitation_id;
    bob.event(|event| matches!(event, EventKind::RemoteInvitationReceived(_)))
        .await;
    bob.receipt(id).await;
    alice
        .event(|event| matches!(event, EventKind::LocalInvitationReceivedByPeer(_)))
        .await;

    server.stop_owner(callee_owner).await;

    // Bob's answer reaches the new owner once the edges have caught up.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let reply = bob
            .call(Op::AcceptRemoteInvitation(
                v1::AcceptRemoteInvitationRequest {
                    invitation_id: id,
                    response: "on my way".into(),
                },
            ))
            .await;
        match reply.error {
            None => break,
            Some(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the invitation was not rebuilt: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let accepted = alice
        .event(|event| matches!(event, EventKind::LocalInvitationAccepted(_)))
        .await;
    assert_eq!(
        accepted,
        EventKind::LocalInvitationAccepted(v1::LocalInvitationAccepted {
            invitation_id: id,
            callee_id: bob_uid.clone(),
            response: "on my way".into(),
        })
    );
}

#[tokio::test]
async fn bans_and_mutes_hold_after_their_owner_goes() {
    let mut server = TestServer::builder().cluster().start().await;
    let mallory = placed(&server.ring(), "mallory", NodeId(2), false);
    let room = placed(&server.ring(), "room", NodeId(2), true);
    let alice = placed(&server.ring(), "alice", NodeId(1), false);
    let auth = [parley_testkit::http::basic(
        parley_testkit::CUSTOMER_KEY,
        parley_testkit::CUSTOMER_SECRET,
    )];
    let api = |path: &str| format!("/v1/apps/{}{path}", server.app_id());
    // Through the edge that holds neither the user nor the channel's owner.
    let edge = server.http_addresses()[1];
    let ban = serde_json::json!({ "uid": mallory, "durationSeconds": 600 });
    let reply = parley_testkit::http::http(edge, "POST", &api("/bans"), &auth, Some(&ban)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mute = serde_json::json!({ "uid": alice, "durationSeconds": 600 });
    let path = api(&format!("/channels/{room}/mutes"));
    let reply = parley_testkit::http::http(edge, "POST", &path, &auth, Some(&mute)).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    server.stop_owner(NodeId(2)).await;
    let refused = Client::login(on_edge(&server, 0, &mallory)).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(parley_client::ErrorCode::Banned)
    );
    let (alice, _events) = Client::login(on_edge(&server, 0, &alice)).await.unwrap();
    alice.join(&room).await.unwrap();
    let muted = alice.send_message(&room, Message::text("hi")).await;
    assert_eq!(
        muted.err().map(|error| error.code),
        Some(parley_client::ErrorCode::Muted)
    );
}
