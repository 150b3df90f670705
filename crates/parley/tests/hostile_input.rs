//! Bad input is answered with its documented error code, not fatal: the connection stays up and
//! other users see nothing odd.

use std::time::Duration;

use parley_core::limits::MAX_MESSAGE_BYTES;
use parley_core::rate::Rate;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::request::Op;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::ops::error_code;
use parley_testkit::ops::join;
use parley_testkit::ops::text;
use tokio_tungstenite::tungstenite::Message;

fn to_channel(channel: &str, body: Option<v1::MessageBody>) -> Op {
    Op::SendMessage(v1::SendMessageRequest {
        channel_id: channel.into(),
        message: body,
        ..Default::default()
    })
}

async fn still_alive(client: &mut RawClient) {
    let reply = client.call(Op::Ping(v1::PingRequest {})).await;
    assert!(
        reply.error.is_none(),
        "ping after bad input failed: {reply:?}"
    );
}

#[tokio::test]
async fn malformed_frames_and_unknown_operations() {
    let server = TestServer::start().await;
    for codec in [Codec::Json, Codec::Proto] {
        let mut client = RawClient::login(&server, &format!("alice-{codec:?}"), codec).await;

        client.send_raw(Message::Text("{not json".into())).await;
        let reply = client.reply(0).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::InvalidArgument));
        still_alive(&mut client).await;

        client
            .send_raw(Message::Binary(vec![0xff, 0xff, 0xff, 0xff].into()))
            .await;
        let reply = client.reply(0).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::InvalidArgument));
        still_alive(&mut client).await;

        // A frame with neither request nor receipt.
        client.send_raw(Message::Text("{}".into())).await;
        assert_eq!(
            error_code(&client.reply(0).await),
            Some(ErrorCode::InvalidArgument)
        );

        // Unknown operations keep their request id.
        client
            .send_raw(Message::Text(
                r#"{"request":{"id":"900","teleport":{"to":"mars"}}}"#.into(),
            ))
            .await;
        assert_eq!(
            error_code(&client.reply(900).await),
            Some(ErrorCode::InvalidArgument)
        );
        // ClientFrame{request{id: 901, field 99: empty}} in protobuf.
        client
            .send_raw(Message::Binary(
                vec![0x0a, 0x06, 0x08, 0x85, 0x07, 0x9a, 0x06, 0x00].into(),
            ))
            .await;
        assert_eq!(
            error_code(&client.reply(901).await),
            Some(ErrorCode::InvalidArgument)
        );
        still_alive(&mut client).await;
    }
}

#[tokio::test]
async fn messages_over_32_kb_and_empty_ones_are_invalid() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(bob.call(join("room")).await.error.is_none());

    let at_limit = "x".repeat(MAX_MESSAGE_BYTES);
    let reply = alice.call(to_channel("room", text(&at_limit))).await;
    assert!(reply.error.is_none(), "exactly 32 KB is allowed: {reply:?}");
    let EventKind::ChannelMessage(message) = bob
        .event(|event| matches!(event, EventKind::ChannelMessage(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(message.message, text(&at_limit));

    let over = "x".repeat(MAX_MESSAGE_BYTES + 1);
    for body in [text(&over), text(""), None] {
        let reply = alice.call(to_channel("room", body)).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::InvalidMessage));
    }
    let reply = alice
        .call(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: "bob".into(),
            message: text(&over),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidMessage));
    // Bob saw none of the refused messages.
    bob.no_event(Duration::from_millis(200), |event| {
        matches!(
            event,
            EventKind::ChannelMessage(_) | EventKind::MessageFromPeer(_)
        )
    })
    .await;
    still_alive(&mut alice).await;
}

#[tokio::test]
async fn invalid_and_null_ids() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    for bad in ["", "null", "a/b", "tab\there", "é", &"c".repeat(65)] {
        assert_eq!(
            error_code(&alice.call(join(bad)).await),
            Some(ErrorCode::InvalidChannelId),
            "join {bad:?}"
        );
        let reply = alice
            .call(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
                peer_id: bad.into(),
                message: text("hi"),
                ..Default::default()
            }))
            .await;
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::InvalidUserid),
            "peer {bad:?}"
        );
    }
    let longest = "c".repeat(64);
    assert!(alice.call(join(&longest)).await.error.is_none());
    let reply = alice
        .call(Op::GetChannelMemberCount(
            v1::GetChannelMemberCountRequest {
                channel_ids: vec!["fine".into(), "null".into()],
            },
        ))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidChannelId));
    still_alive(&mut alice).await;
}

#[tokio::test]
async fn the_61st_message_within_a_second_is_too_often() {
    // Burst 60 as in production; the refill is slowed so the edge does not depend on how fast
    // this machine runs the test (the refill rate itself is unit-tested in parley-core).
    let server = TestServer::builder()
        .limits(|limits| limits.message_rate = Rate::new(60, 1.0))
        .start()
        .await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(bob.call(join("room")).await.error.is_none());
    let mut ids = Vec::new();
    for n in 0..61 {
        ids.push(alice.send(to_channel("room", text(&n.to_string()))).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let reply = alice.reply(*id).await;
        if n < 60 {
            assert!(reply.error.is_none(), "message {n} refused: {reply:?}");
        } else {
            assert_eq!(error_code(&reply), Some(ErrorCode::TooOften));
        }
    }
    // Peer messages share the budget.
    let reply = alice
        .call(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: "bob".into(),
            message: text("one more"),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::TooOften));
    still_alive(&mut alice).await;
    // Bob got exactly the 60 accepted messages, in order.
    for n in 0..60 {
        let EventKind::ChannelMessage(message) = bob
            .event(|event| matches!(event, EventKind::ChannelMessage(_)))
            .await
        else {
            unreachable!()
        };
        assert_eq!(message.message, text(&n.to_string()));
    }
    bob.no_event(Duration::from_millis(200), |event| {
        matches!(event, EventKind::ChannelMessage(_))
    })
    .await;
    // After a refill, sending works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        alice
            .call(to_channel("room", text("later")))
            .await
            .error
            .is_none()
    );
}

#[tokio::test]
async fn joining_a_21st_channel_exceeds_the_limit() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    for n in 0..20 {
        let reply = alice.call(join(&format!("room-{n}"))).await;
        assert!(reply.error.is_none(), "join {n}: {reply:?}");
    }
    assert_eq!(
        error_code(&alice.call(join("room-20")).await),
        Some(ErrorCode::ExceedLimit)
    );
    assert_eq!(
        error_code(&alice.call(join("room-3")).await),
        Some(ErrorCode::AlreadyJoined)
    );
    let reply = alice
        .call(Op::Leave(v1::LeaveRequest {
            channel_id: "room-0".into(),
        }))
        .await;
    assert!(reply.error.is_none());
    assert!(alice.call(join("room-20")).await.error.is_none());
}

#[tokio::test]
async fn member_count_takes_1_to_32_channels() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let count = |n: usize| {
        Op::GetChannelMemberCount(v1::GetChannelMemberCountRequest {
            channel_ids: (0..n).map(|i| format!("c{i}")).collect(),
        })
    };
    assert!(alice.call(count(32)).await.error.is_none());
    assert_eq!(
        error_code(&alice.call(count(33)).await),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        error_code(&alice.call(count(0)).await),
        Some(ErrorCode::InvalidArgument)
    );
}

#[tokio::test]
async fn an_oversized_frame_closes_with_protocol_error() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    alice
        .send_raw(Message::Binary(vec![0u8; 200 * 1024].into()))
        .await;
    let close = alice.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4000 + Reason::ProtocolError as u16);
    // Everyone else carries on.
    still_alive(&mut bob).await;
}

#[tokio::test]
async fn joins_and_queries_are_rate_limited_too() {
    // Bursts as in production; refills slowed so the edge does not depend on how fast the joins
    // run (each join of a new channel reads and writes the store).
    let server = TestServer::builder()
        .limits(|limits| {
            limits.join_rate = Rate::new(50, 0.01);
            limits.query_rate = Rate::new(10, 0.01);
        })
        .start()
        .await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    // Joins and leaves share a budget of 50 per 3 s.
    let mut codes = Vec::new();
    for n in 0..51 {
        let op = if n % 2 == 0 {
            join("busy")
        } else {
            Op::Leave(v1::LeaveRequest {
                channel_id: "busy".into(),
            })
        };
        codes.push(error_code(&alice.call(op).await));
    }
    assert!(codes[..50].iter().all(Option::is_none), "{codes:?}");
    assert_eq!(codes[50], Some(ErrorCode::TooOften));
    // Member queries: 10 per 5 s.
    let mut codes = Vec::new();
    for _ in 0..11 {
        let op = Op::GetChannelMemberCount(v1::GetChannelMemberCountRequest {
            channel_ids: vec!["busy".into()],
        });
        codes.push(error_code(&alice.call(op).await));
    }
    assert!(codes[..10].iter().all(Option::is_none), "{codes:?}");
    assert_eq!(codes[10], Some(ErrorCode::TooOften));
    still_alive(&mut alice).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_as_a_slow_consumer() {
    let server = TestServer::builder()
        .edge(|edge| edge.outbound_queue = 8)
        .limits(|limits| limits.message_rate = Rate::new(100_000, 100_000.0))
        .start()
        .await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut sloth = RawClient::login(&server, "sloth", Codec::Proto).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(sloth.call(join("room")).await.error.is_none());

    // Sloth reads nothing from here on, while the room fills its socket and its queue.
    let big = "x".repeat(MAX_MESSAGE_BYTES);
    for _ in 0..40 {
        let mut ids = Vec::new();
        for _ in 0..50 {
            ids.push(alice.send(to_channel("room", text(&big))).await);
        }
        for id in ids {
            assert!(alice.reply(id).await.error.is_none());
        }
    }
    // The server gave up on sloth: its session is gone, so a peer message finds nobody.
    let reply = alice
        .call(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: "sloth".into(),
            message: text("still there?"),
            ..Default::default()
        }))
        .await;
    let Some(v1::reply::Result::SendMessageToPeer(sent)) = reply.result else {
        panic!("{reply:?}")
    };
    assert_eq!(sent.result(), v1::PeerMessageResult::PeerUnreachable);
    // Sloth's connection is gone too. Whether its close frame (4010, SLOW_CONSUMER) still gets
    // through depends on how soon it reads again, so only a close frame that did arrive is checked.
    if let Some(close) = sloth.closed().await {
        assert_eq!(u16::from(close.code), 4000 + Reason::SlowConsumer as u16);
    }
}
