//! Attributes, online status, offline messages, history and channel recovery over real
//! WebSockets.

use std::collections::HashMap;
use std::time::Duration;

use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_proto::v1::PeerOnlineState;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::ops::error_code;
use parley_testkit::ops::join;
use parley_testkit::ops::ok;
use parley_testkit::ops::text;
use parley_testkit::ops::text_of;

fn pairs(items: &[(&str, &str)]) -> HashMap<String, String> {
    items
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

// ---- user attributes -------------------------------------------------------------------------

async fn user_attributes(
    client: &mut RawClient,
    uid: &str,
    keys: &[&str],
) -> HashMap<String, String> {
    let reply = client
        .call(Op::GetUserAttributes(v1::GetUserAttributesRequest {
            user_id: uid.into(),
            keys: keys.iter().map(|key| key.to_string()).collect(),
        }))
        .await;
    match ok(reply) {
        ReplyResult::UserAttributes(result) => result.attributes,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn user_attributes_every_operation_and_cleared_at_logout() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    ok(alice
        .call(Op::SetLocalUserAttributes(
            v1::SetLocalUserAttributesRequest {
                attributes: pairs(&[("mood", "happy"), ("level", "3")]),
            },
        ))
        .await);
    ok(alice
        .call(Op::AddOrUpdateLocalUserAttributes(
            v1::AddOrUpdateLocalUserAttributesRequest {
                attributes: pairs(&[("level", "4"), ("team", "red")]),
            },
        ))
        .await);
    assert_eq!(
        user_attributes(&mut bob, "alice", &[]).await,
        pairs(&[("mood", "happy"), ("level", "4"), ("team", "red")])
    );
    assert_eq!(
        user_attributes(&mut bob, "alice", &["team", "nope"]).await,
        pairs(&[("team", "red")])
    );
    ok(alice
        .call(Op::DeleteLocalUserAttributesByKeys(
            v1::DeleteLocalUserAttributesByKeysRequest {
                keys: vec!["mood".into()],
            },
        ))
        .await);
    assert_eq!(
        user_attributes(&mut bob, "alice", &[]).await,
        pairs(&[("level", "4"), ("team", "red")])
    );
    ok(alice
        .call(Op::ClearLocalUserAttributes(
            v1::ClearLocalUserAttributesRequest {},
        ))
        .await);
    assert!(user_attributes(&mut bob, "alice", &[]).await.is_empty());

    // Limits, each with its code, and nothing changes on failure.
    ok(alice
        .call(Op::SetLocalUserAttributes(
            v1::SetLocalUserAttributesRequest {
                attributes: pairs(&[("keep", "me")]),
            },
        ))
        .await);
    let too_long_key = &"k".repeat(33);
    let too_big_value = &"v".repeat(8 * 1024 + 1);
    for (attributes, code) in [
        (
            pairs(&[(too_long_key.as_str(), "v")]),
            ErrorCode::InvalidArgument,
        ),
        (
            pairs(&[("big", too_big_value.as_str())]),
            ErrorCode::SizeOverflow,
        ),
    ] {
        let reply = alice
            .call(Op::AddOrUpdateLocalUserAttributes(
                v1::AddOrUpdateLocalUserAttributesRequest { attributes },
            ))
            .await;
        assert_eq!(error_code(&reply), Some(code));
    }
    let many: HashMap<String, String> = (0..33).map(|n| (format!("k{n}"), "v".into())).collect();
    let reply = alice
        .call(Op::SetLocalUserAttributes(
            v1::SetLocalUserAttributesRequest { attributes: many },
        ))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::ExceedLimit));
    assert_eq!(
        user_attributes(&mut bob, "alice", &[]).await,
        pairs(&[("keep", "me")])
    );

    // Logout clears them.
    ok(alice.call(Op::Logout(v1::LogoutRequest {})).await);
    alice.closed().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(user_attributes(&mut bob, "alice", &[]).await.is_empty());
}

// ---- channel attributes ----------------------------------------------------------------------

async fn channel_attributes(client: &mut RawClient, channel: &str) -> Vec<v1::ChannelAttribute> {
    let reply = client
        .call(Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: channel.into(),
            keys: Vec::new(),
        }))
        .await;
    match ok(reply) {
        ReplyResult::ChannelAttributes(result) => result.attributes,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn channel_attributes_with_updaters_and_notifications() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    ok(bob.call(join("room")).await);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Alice has not joined: setting and reading work anyway.
    ok(alice
        .call(Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
            channel_id: "room".into(),
            attributes: pairs(&[("topic", "rust"), ("mode", "quiet")]),
            enable_notification_to_channel_members: true,
        }))
        .await);
    let EventKind::AttributesUpdated(updated) = bob
        .event(|event| matches!(event, EventKind::AttributesUpdated(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(updated.channel_id, "room");
    let keys: Vec<_> = updated.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["mode", "topic"]);
    for attribute in &updated.attributes {
        assert_eq!(attribute.last_update_user_id, "alice");
        assert!(attribute.last_update_ts >= before);
    }
    // Bob updates one key without notifying: only that key changes owner.
    ok(bob
        .call(Op::AddOrUpdateChannelAttributes(
            v1::AddOrUpdateChannelAttributesRequest {
                channel_id: "room".into(),
                attributes: pairs(&[("mode", "loud")]),
                enable_notification_to_channel_members: false,
            },
        ))
        .await);
    let attributes = channel_attributes(&mut alice, "room").await;
    let by_key: HashMap<_, _> = attributes
        .iter()
        .map(|a| {
            (
                a.key.as_str(),
                (a.value.as_str(), a.last_update_user_id.as_str()),
            )
        })
        .collect();
    assert_eq!(by_key["mode"], ("loud", "bob"));
    assert_eq!(by_key["topic"], ("rust", "alice"));
    let by_keys = alice
        .call(Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: "room".into(),
            keys: vec!["topic".into()],
        }))
        .await;
    let ReplyResult::ChannelAttributes(by_keys) = ok(by_keys) else {
        panic!()
    };
    assert_eq!(by_keys.attributes.len(), 1);
    bob.no_event(Duration::from_millis(150), |event| {
        matches!(event, EventKind::AttributesUpdated(_))
    })
    .await;

    ok(alice
        .call(Op::DeleteChannelAttributesByKeys(
            v1::DeleteChannelAttributesByKeysRequest {
                channel_id: "room".into(),
                keys: vec!["mode".into()],
                enable_notification_to_channel_members: true,
            },
        ))
        .await);
    let EventKind::AttributesUpdated(updated) = bob
        .event(|event| matches!(event, EventKind::AttributesUpdated(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(updated.attributes.len(), 1, "the full set after the change");

    // 32 KB in all for a channel; over it, SIZE_OVERFLOW and nothing changes.
    let value = "v".repeat(8 * 1024);
    let too_much = pairs(&[("a", &value), ("b", &value), ("c", &value), ("d", &value)]);
    let reply = alice
        .call(Op::AddOrUpdateChannelAttributes(
            v1::AddOrUpdateChannelAttributesRequest {
                channel_id: "room".into(),
                attributes: too_much,
                enable_notification_to_channel_members: false,
            },
        ))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::SizeOverflow));
    assert_eq!(channel_attributes(&mut alice, "room").await.len(), 1);
    let reply = alice
        .call(Op::ClearChannelAttributes(
            v1::ClearChannelAttributesRequest {
                channel_id: "null".into(),
                enable_notification_to_channel_members: false,
            },
        ))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidChannelId));
    ok(alice
        .call(Op::ClearChannelAttributes(
            v1::ClearChannelAttributesRequest {
                channel_id: "room".into(),
                enable_notification_to_channel_members: false,
            },
        ))
        .await);
    assert!(channel_attributes(&mut alice, "room").await.is_empty());
}

// ---- online status ---------------------------------------------------------------------------

async fn status_change(client: &mut RawClient) -> HashMap<String, PeerOnlineState> {
    match client
        .event(|event| matches!(event, EventKind::PeersOnlineStatusChanged(_)))
        .await
    {
        EventKind::PeersOnlineStatusChanged(changed) => changed
            .status
            .into_iter()
            .map(|(uid, state)| (uid, PeerOnlineState::try_from(state).unwrap()))
            .collect(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn online_status_queries_and_subscriptions() {
    let server = TestServer::builder()
        .limits(|limits| {
            limits.unreachable_after = Duration::from_millis(300);
            limits.offline_after = Duration::from_millis(400);
        })
        .start()
        .await;
    let mut watcher = RawClient::login(&server, "watcher", Codec::Json).await;
    let subscribe = Op::SubscribePeersOnlineStatus(v1::SubscribePeersOnlineStatusRequest {
        peer_ids: vec!["bob".into(), "carol".into()],
    });
    ok(watcher.call(subscribe).await);
    let initial = status_change(&mut watcher).await;
    assert_eq!(initial["bob"], PeerOnlineState::Offline);
    assert_eq!(initial["carol"], PeerOnlineState::Offline);

    // Bob logs in: ONLINE. He stays silent: UNREACHABLE. He speaks: ONLINE again.
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    assert_eq!(
        status_change(&mut watcher).await["bob"],
        PeerOnlineState::Online
    );
    let query = Op::QueryPeersOnlineStatus(v1::QueryPeersOnlineStatusRequest {
        peer_ids: vec!["bob".into(), "carol".into()],
    });
    let ReplyResult::QueryPeersOnlineStatus(status) = ok(watcher.call(query).await) else {
        panic!()
    };
    assert!(status.status["bob"]);
    assert!(!status.status["carol"]);
    assert_eq!(
        status_change(&mut watcher).await["bob"],
        PeerOnlineState::Unreachable
    );
    ok(bob.call(Op::Ping(v1::PingRequest {})).await);
    assert_eq!(
        status_change(&mut watcher).await["bob"],
        PeerOnlineState::Online
    );

    // Bob's connection drops: UNREACHABLE, then OFFLINE when it does not come back.
    drop(bob);
    assert_eq!(
        status_change(&mut watcher).await["bob"],
        PeerOnlineState::Unreachable
    );
    assert_eq!(
        status_change(&mut watcher).await["bob"],
        PeerOnlineState::Offline
    );

    // Carol logs out cleanly: straight to OFFLINE.
    let mut carol = RawClient::login(&server, "carol", Codec::Json).await;
    assert_eq!(
        status_change(&mut watcher).await["carol"],
        PeerOnlineState::Online
    );
    ok(carol.call(Op::Logout(v1::LogoutRequest {})).await);
    assert_eq!(
        status_change(&mut watcher).await["carol"],
        PeerOnlineState::Offline
    );

    // After unsubscribing, nothing more arrives.
    let unsubscribe = Op::UnsubscribePeersOnlineStatus(v1::UnsubscribePeersOnlineStatusRequest {
        peer_ids: vec!["carol".into()],
    });
    ok(watcher.call(unsubscribe).await);
    let _carol = RawClient::login(&server, "carol", Codec::Json).await;
    watcher
        .no_event(Duration::from_millis(200), |event| {
            matches!(event, EventKind::PeersOnlineStatusChanged(changed) if changed.status.contains_key("carol"))
        })
        .await;
}

#[tokio::test]
async fn online_status_limits() {
    let server = TestServer::start().await;
    let mut watcher = RawClient::login(&server, "watcher", Codec::Json).await;
    let ids = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let query =
        |n| Op::QueryPeersOnlineStatus(v1::QueryPeersOnlineStatusRequest { peer_ids: ids(n) });
    assert!(watcher.call(query(256)).await.error.is_none());
    assert_eq!(
        error_code(&watcher.call(query(257)).await),
        Some(ErrorCode::InvalidArgument)
    );
    let subscribe = |peer_ids| {
        Op::SubscribePeersOnlineStatus(v1::SubscribePeersOnlineStatusRequest { peer_ids })
    };
    assert!(watcher.call(subscribe(ids(512))).await.error.is_none());
    assert_eq!(
        error_code(&watcher.call(subscribe(vec!["one-more".into()])).await),
        Some(ErrorCode::ExceedLimit)
    );
    assert_eq!(
        error_code(&watcher.call(subscribe(vec!["null".into()])).await),
        Some(ErrorCode::InvalidUserid)
    );
}

// ---- offline messages ------------------------------------------------------------------------

fn offline_to(peer: &str, body: &str) -> Op {
    Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
        peer_id: peer.into(),
        message: text(body),
        enable_offline_messaging: true,
        enable_historical_messaging: false,
    })
}

#[tokio::test]
async fn offline_messages_wait_in_order_within_their_limits() {
    let server = TestServer::builder()
        .limits(|limits| limits.offline_max_count = 3)
        .start()
        .await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    for n in 1..=5 {
        let ReplyResult::SendMessageToPeer(sent) =
            ok(alice.call(offline_to("bob", &format!("m{n}"))).await)
        else {
            panic!()
        };
        assert_eq!(sent.result(), v1::PeerMessageResult::CachedByServer);
    }
    // Without the flag, an offline peer is just unreachable.
    let plain = Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
        peer_id: "bob".into(),
        message: text("lost"),
        ..Default::default()
    });
    let ReplyResult::SendMessageToPeer(sent) = ok(alice.call(plain).await) else {
        panic!()
    };
    assert_eq!(sent.result(), v1::PeerMessageResult::PeerUnreachable);

    // Bob logs in: the newest three, oldest first, flagged, after his login reply.
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let EventKind::MessageFromPeer(message) = bob
            .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
            .await
        else {
            unreachable!()
        };
        assert!(message.is_offline_message);
        assert_eq!(message.peer_id, "alice");
        got.push(text_of(&message.message));
        bob.receipt(message.message_id).await;
    }
    assert_eq!(got, ["m3", "m4", "m5"]);
    bob.no_event(Duration::from_millis(200), |event| {
        matches!(event, EventKind::MessageFromPeer(_))
    })
    .await;

    // Acknowledged messages are gone: the next login gets none.
    ok(bob.call(Op::Logout(v1::LogoutRequest {})).await);
    bob.closed().await;
    let mut bob_again = RawClient::login(&server, "bob", Codec::Proto).await;
    bob_again
        .no_event(Duration::from_millis(300), |event| {
            matches!(event, EventKind::MessageFromPeer(_))
        })
        .await;
}

// ---- history ---------------------------------------------------------------------------------

async fn history(client: &mut RawClient, query: v1::QueryHistoryRequest) -> v1::QueryHistoryResult {
    match ok(client.call(Op::QueryHistory(query)).await) {
        ReplyResult::QueryHistory(result) => result,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn history_pages_counts_and_refuses_bad_queries() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    ok(alice.call(join("room")).await);
    for n in 1..=5 {
        ok(alice
            .call(Op::SendMessage(v1::SendMessageRequest {
                channel_id: "room".into(),
                message: text(&format!("c{n}")),
                enable_historical_messaging: n != 3,
            }))
            .await);
    }
    let peer = Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
        peer_id: "bob".into(),
        message: text("p1"),
        enable_offline_messaging: false,
        enable_historical_messaging: true,
    });
    let id = alice.send(peer).await;
    let EventKind::MessageFromPeer(message) = bob
        .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
        .await
    else {
        unreachable!()
    };
    bob.receipt(message.message_id).await;
    ok(alice.reply(id).await);

    let room = |limit, order: v1::HistoryOrder, cursor: &str| v1::QueryHistoryRequest {
        conversation: Some(v1::query_history_request::Conversation::ChannelId(
            "room".into(),
        )),
        limit,
        order: order as i32,
        cursor: cursor.into(),
        ..Default::default()
    };
    let first = history(&mut alice, room(2, v1::HistoryOrder::Asc, "")).await;
    let texts = |page: &v1::QueryHistoryResult| {
        page.messages
            .iter()
            .map(|message| text_of(&message.message))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&first), ["c1", "c2"]);
    assert!(
        first
            .messages
            .iter()
            .all(|message| message.from == "alice" && message.seq > 0)
    );
    let second = history(&mut alice, room(2, v1::HistoryOrder::Asc, &first.next)).await;
    assert_eq!(texts(&second), ["c4", "c5"], "c3 was sent without history");
    let third = history(&mut alice, room(2, v1::HistoryOrder::Asc, &second.next)).await;
    assert!(third.messages.is_empty());
    assert!(third.next.is_empty());
    let newest = history(&mut alice, room(3, v1::HistoryOrder::Desc, "")).await;
    assert_eq!(texts(&newest), ["c5", "c4", "c2"]);

    // The peer conversation, from either side.
    let with = |peer: &str| v1::QueryHistoryRequest {
        conversation: Some(v1::query_history_request::Conversation::PeerId(peer.into())),
        ..Default::default()
    };
    assert_eq!(texts(&history(&mut bob, with("alice")).await), ["p1"]);
    assert_eq!(texts(&history(&mut alice, with("bob")).await), ["p1"]);

    let count = alice
        .call(Op::CountHistory(v1::CountHistoryRequest {
            conversation: Some(v1::count_history_request::Conversation::ChannelId(
                "room".into(),
            )),
            ..Default::default()
        }))
        .await;
    let ReplyResult::CountHistory(count) = ok(count) else {
        panic!()
    };
    assert_eq!(count.count, 4);

    // Bad queries, each with its code.
    let mut too_many = room(101, v1::HistoryOrder::Asc, "");
    assert_eq!(
        error_code(&alice.call(Op::QueryHistory(too_many.clone())).await),
        Some(ErrorCode::InvalidArgument)
    );
    too_many.limit = 10;
    too_many.cursor = "garbage".into();
    assert_eq!(
        error_code(&alice.call(Op::QueryHistory(too_many)).await),
        Some(ErrorCode::InvalidArgument)
    );
    let backwards = v1::QueryHistoryRequest {
        start_time: 2_000,
        end_time: 1_000,
        ..with("bob")
    };
    assert_eq!(
        error_code(&alice.call(Op::QueryHistory(backwards)).await),
        Some(ErrorCode::InvalidArgument)
    );
    // Channel history needs membership.
    let reply = bob
        .call(Op::QueryHistory(room(10, v1::HistoryOrder::Asc, "")))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotJoined));
    let nowhere = v1::QueryHistoryRequest::default();
    assert_eq!(
        error_code(&bob.call(Op::QueryHistory(nowhere)).await),
        Some(ErrorCode::InvalidArgument)
    );
}

// ---- channel recovery ------------------------------------------------------------------------

#[tokio::test]
async fn a_rejoin_replays_what_was_missed_then_says_so() {
    let server = TestServer::builder()
        .owner(|owner| owner.recovery_window = 3)
        // Alice logs in three times in quick succession here.
        .limits(|limits| limits.login_rate = parley_core::rate::Rate::new(10, 10.0))
        .start()
        .await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    let ReplyResult::Join(joined) = ok(alice.call(join("room")).await) else {
        panic!()
    };
    ok(bob.call(join("room")).await);
    let send = |body: &str| {
        Op::SendMessage(v1::SendMessageRequest {
            channel_id: "room".into(),
            message: text(body),
            ..Default::default()
        })
    };
    ok(bob.call(send("seen")).await);
    let EventKind::ChannelMessage(seen) = alice
        .event(|event| matches!(event, EventKind::ChannelMessage(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(seen.seq, joined.last_seq + 1);

    // Alice's connection drops; two messages go by; she comes back within the window.
    drop(alice);
    ok(bob.call(send("missed 1")).await);
    ok(bob.call(send("missed 2")).await);
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let rejoin = Op::Join(v1::JoinRequest {
        channel_id: "room".into(),
        resume_after_seq: Some(seen.seq),
    });
    ok(alice.call(rejoin).await);
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let EventKind::ChannelMessage(message) = alice
            .event(|event| matches!(event, EventKind::ChannelMessage(_)))
            .await
        else {
            unreachable!()
        };
        replayed.push((message.seq, text_of(&message.message)));
    }
    assert_eq!(
        replayed,
        [
            (seen.seq + 1, "missed 1".to_owned()),
            (seen.seq + 2, "missed 2".to_owned())
        ]
    );
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::ChannelRecovered(_)))
            .await,
        EventKind::ChannelRecovered(v1::ChannelRecovered {
            channel_id: "room".into(),
            from_seq: seen.seq + 1,
            to_seq: seen.seq + 2,
            complete: true,
        })
    );

    // Gone longer than the window holds (3 messages): what is left, and `complete: false`.
    let last_seen = seen.seq + 2;
    drop(alice);
    for n in 0..5 {
        ok(bob.call(send(&format!("late {n}"))).await);
    }
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let rejoin = Op::Join(v1::JoinRequest {
        channel_id: "room".into(),
        resume_after_seq: Some(last_seen),
    });
    ok(alice.call(rejoin).await);
    let EventKind::ChannelRecovered(recovered) = alice
        .event(|event| matches!(event, EventKind::ChannelRecovered(_)))
        .await
    else {
        unreachable!()
    };
    assert!(!recovered.complete);
    assert_eq!(
        (recovered.from_seq, recovered.to_seq),
        (last_seen + 1, last_seen + 5)
    );
    let replayed = alice
        .queued_events()
        .iter()
        .filter(|event| matches!(event, EventKind::ChannelMessage(_)))
        .count();
    assert_eq!(replayed, 3);
}
