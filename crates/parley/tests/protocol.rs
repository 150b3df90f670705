//! The wire protocol over real WebSockets on 127.0.0.1, in both framings.

use std::time::Duration;

use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::ops::error_code;
use parley_testkit::ops::join;
use parley_testkit::ops::leave;
use parley_testkit::ops::ok;
use parley_testkit::ops::text;
use parley_testkit::ops::to_channel;
use parley_testkit::ops::to_peer;

const CODECS: [Codec; 2] = [Codec::Json, Codec::Proto];

#[tokio::test]
async fn peer_and_channel_messaging_in_both_framings() {
    let server = TestServer::start().await;
    for codec in CODECS {
        let mut alice = RawClient::login(&server, "alice", codec).await;
        let mut bob = RawClient::login(&server, "bob", codec).await;

        // Peer message: RECEIVED_BY_PEER only after bob's receipt.
        let send_id = alice.send(to_peer("bob", "hi bob")).await;
        let EventKind::MessageFromPeer(received) = bob
            .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
            .await
        else {
            unreachable!()
        };
        assert_eq!(received.peer_id, "alice");
        assert_eq!(received.message, text("hi bob"));
        assert!(!received.is_offline_message);
        assert!(received.server_received_ts > 1_700_000_000_000);
        bob.receipt(received.message_id).await;
        let ReplyResult::SendMessageToPeer(sent) = ok(alice.reply(send_id).await) else {
            panic!("wrong result kind")
        };
        assert_eq!(sent.result(), v1::PeerMessageResult::ReceivedByPeer);
        assert_eq!(sent.message_id, received.message_id);

        // Channel: join events, messages with sequence numbers, no echo to the sender.
        ok(alice.call(join("room")).await);
        ok(bob.call(join("room")).await);
        let joined = alice
            .event(|event| matches!(event, EventKind::MemberJoined(_)))
            .await;
        assert_eq!(
            joined,
            EventKind::MemberJoined(v1::MemberJoined {
                channel_id: "room".into(),
                member_id: "bob".into(),
            })
        );
        alice
            .event(|event| {
                matches!(event, EventKind::MemberCountUpdated(count) if count.member_count == 2)
            })
            .await;

        let ReplyResult::SendMessage(first) = ok(bob.call(to_channel("room", "one")).await) else {
            panic!("wrong result kind")
        };
        let ReplyResult::SendMessage(second) = ok(bob.call(to_channel("room", "two")).await) else {
            panic!("wrong result kind")
        };
        // Sequence numbers follow each other; they may start above 1 (a channel that emptied
        // keeps counting where its last reservation ended).
        assert_eq!(second.seq, first.seq + 1);
        for (expected, seq) in [("one", first.seq), ("two", second.seq)] {
            let EventKind::ChannelMessage(message) = alice
                .event(|event| matches!(event, EventKind::ChannelMessage(_)))
                .await
            else {
                unreachable!()
            };
            assert_eq!(message.member_id, "bob");
            assert_eq!(message.channel_id, "room");
            assert_eq!(message.message, text(expected));
            assert_eq!(message.seq, seq);
        }
        bob.no_event(Duration::from_millis(200), |event| {
            matches!(event, EventKind::ChannelMessage(_))
        })
        .await;

        // Members and counts; an unknown channel counts 0.
        let ReplyResult::GetMembers(members) = ok(alice
            .call(Op::GetMembers(v1::GetMembersRequest {
                channel_id: "room".into(),
            }))
            .await)
        else {
            panic!("wrong result kind")
        };
        assert_eq!(members.members, ["alice", "bob"]);
        let ReplyResult::GetChannelMemberCount(counts) = ok(alice
            .call(Op::GetChannelMemberCount(
                v1::GetChannelMemberCountRequest {
                    channel_ids: vec!["room".into(), "nobody-here".into()],
                },
            ))
            .await)
        else {
            panic!("wrong result kind")
        };
        let counts: Vec<_> = counts
            .counts
            .iter()
            .map(|count| (count.channel_id.as_str(), count.member_count))
            .collect();
        assert_eq!(counts, [("room", 2), ("nobody-here", 0)]);

        // Leave: MemberLeft at once, and the count follows.
        ok(bob.call(leave("room")).await);
        assert_eq!(
            alice
                .event(|event| matches!(event, EventKind::MemberLeft(_)))
                .await,
            EventKind::MemberLeft(v1::MemberLeft {
                channel_id: "room".into(),
                member_id: "bob".into(),
            })
        );
        alice
            .event(|event| {
                matches!(event, EventKind::MemberCountUpdated(count) if count.member_count == 1)
            })
            .await;
        assert_eq!(
            error_code(&bob.call(leave("room")).await),
            Some(ErrorCode::NotJoined)
        );
        ok(alice.call(leave("room")).await);
        ok(alice.call(Op::Logout(v1::LogoutRequest {})).await);
        ok(bob.call(Op::Logout(v1::LogoutRequest {})).await);
    }
}

#[tokio::test]
async fn raw_messages_keep_bytes_and_description() {
    let server = TestServer::start().await;
    for codec in CODECS {
        let mut alice = RawClient::login(&server, "alice", codec).await;
        let mut bob = RawClient::login(&server, "bob", codec).await;
        let body = v1::MessageBody {
            content: Some(v1::message_body::Content::Raw(
                vec![0, 159, 146, 150, 255].into(),
            )),
            description: "binary".into(),
        };
        alice
            .send(Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
                peer_id: "bob".into(),
                message: Some(body.clone()),
                ..Default::default()
            }))
            .await;
        let EventKind::MessageFromPeer(received) = bob
            .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
            .await
        else {
            unreachable!()
        };
        assert_eq!(received.message, Some(body));
    }
}

#[tokio::test]
async fn peer_results_for_offline_and_silent_peers() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let ReplyResult::SendMessageToPeer(sent) = ok(alice.call(to_peer("nobody", "hello?")).await)
    else {
        panic!("wrong result kind")
    };
    assert_eq!(sent.result(), v1::PeerMessageResult::PeerUnreachable);
    assert_ne!(sent.message_id, 0);

    // A peer whose client never acknowledges: TIMEOUT after the receipt timeout (2 s here).
    let _silent = RawClient::login(&server, "silent", Codec::Proto).await;
    let reply = alice.call(to_peer("silent", "are you there")).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::Timeout));

    // Messages sent while waiting are not held up by the pending receipt.
    let mut carol = RawClient::login(&server, "carol", Codec::Proto).await;
    let slow = alice.send(to_peer("silent", "again")).await;
    let fast = alice.send(to_peer("carol", "quick")).await;
    let EventKind::MessageFromPeer(message) = carol
        .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
        .await
    else {
        unreachable!()
    };
    carol.receipt(message.message_id).await;
    ok(alice.reply(fast).await);
    assert_eq!(
        error_code(&alice.reply(slow).await),
        Some(ErrorCode::Timeout)
    );
}

#[tokio::test]
async fn login_errors_have_their_codes_and_the_connection_stays() {
    let server = TestServer::start().await;
    for codec in CODECS {
        let mut client = RawClient::connect(&server.ws_url(), codec).await;
        let login = |app_id: &str, uid: &str, token: String| {
            Op::Login(v1::LoginRequest {
                app_id: app_id.into(),
                uid: uid.into(),
                token,
            })
        };
        let u = |name: &str| format!("{codec:?}-{name}");
        // Each case logs in a different uid, so none of them trips the login rate limit.
        let cases = [
            (
                login("short", &u("u1"), server.token(&u("u1"))),
                ErrorCode::InvalidAppId,
            ),
            (
                login(
                    "ffffffffffffffffffffffffffffffff",
                    &u("u2"),
                    server.token(&u("u2")),
                ),
                ErrorCode::InvalidAppId,
            ),
            (
                login(server.app_id(), "null", server.token("null")),
                ErrorCode::InvalidUserid,
            ),
            (
                login(server.app_id(), "", String::new()),
                ErrorCode::InvalidUserid,
            ),
            (
                login(server.app_id(), "a/b", String::new()),
                ErrorCode::InvalidUserid,
            ),
            (
                login(server.app_id(), &"x".repeat(65), String::new()),
                ErrorCode::InvalidUserid,
            ),
            (
                login(server.app_id(), &u("u3"), server.token("bob")),
                ErrorCode::InvalidToken,
            ),
            (
                login(server.app_id(), &u("u4"), "007garbage".into()),
                ErrorCode::InvalidToken,
            ),
            (
                login(server.app_id(), &u("u5"), String::new()),
                ErrorCode::InvalidToken,
            ),
            (
                login(server.app_id(), &u("u6"), expired_token(&server, &u("u6"))),
                ErrorCode::TokenExpired,
            ),
        ];
        for (op, expected) in cases {
            let reply = client.call(op.clone()).await;
            assert_eq!(error_code(&reply), Some(expected), "{op:?}");
        }
        // Logins of one uid are rate limited (2 at once, then 2 per second).
        let mut codes = Vec::new();
        for _ in 0..3 {
            let reply = client
                .call(login(server.app_id(), &u("u7"), String::new()))
                .await;
            codes.push(error_code(&reply));
        }
        assert_eq!(
            codes,
            [
                Some(ErrorCode::InvalidToken),
                Some(ErrorCode::InvalidToken),
                Some(ErrorCode::TooOften)
            ]
        );
        // Requests before login.
        let reply = client.call(join("room")).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::NotLoggedIn));
        // The connection is still usable: a good login works, a second one does not.
        let uid = format!("survivor-{codec:?}");
        ok(client
            .call(login(server.app_id(), &uid, server.token(&uid)))
            .await);
        let reply = client
            .call(login(server.app_id(), &uid, server.token(&uid)))
            .await;
        assert_eq!(error_code(&reply), Some(ErrorCode::AlreadyLoggedIn));
    }
}

fn expired_token(server: &TestServer, uid: &str) -> String {
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
        - 7200;
    parley_core::token::build_007(
        server.app_id(),
        server.certificate().unwrap(),
        uid,
        3600,
        issued,
        1,
    )
}

#[tokio::test]
async fn an_app_without_certificate_takes_logins_without_token() {
    let server = TestServer::builder().without_certificate().start().await;
    let mut client = RawClient::connect(&server.ws_url(), Codec::Json).await;
    let reply = client
        .call(Op::Login(v1::LoginRequest {
            app_id: server.app_id().into(),
            uid: "dev".into(),
            token: String::new(),
        }))
        .await;
    let ReplyResult::Login(login) = ok(reply) else {
        panic!("wrong result kind")
    };
    assert_eq!(login.token_expire_ms, 0);
    assert!(login.heartbeat_interval_ms > 0);
}
