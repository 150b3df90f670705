//! Session lifecycle: REMOTE_LOGIN and multi-device, heartbeats, login timeout, token warning,
//! expiry and renewal, and the member grace period after a lost connection.

use std::time::Duration;

use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::connection_state_changed::Reason;
use parley_proto::v1::connection_state_changed::State;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::request::Op;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::ops::join;
use parley_testkit::ops::to_peer;

fn aborted(reason: Reason) -> EventKind {
    state_changed(State::Aborted, reason)
}

fn state_changed(state: State, reason: Reason) -> EventKind {
    EventKind::ConnectionStateChanged(v1::ConnectionStateChanged {
        state: state as i32,
        reason: reason as i32,
    })
}

fn close_code(reason: Reason) -> u16 {
    4000 + reason as u16
}

async fn login_with(server: &TestServer, uid: &str, token: String) -> RawClient {
    let mut client = RawClient::connect(&server.ws_url(), Codec::Json).await;
    let reply = client
        .call(Op::Login(v1::LoginRequest {
            app_id: server.app_id().into(),
            uid: uid.into(),
            token,
        }))
        .await;
    assert!(reply.error.is_none(), "login failed: {reply:?}");
    client
}

#[tokio::test]
async fn a_second_login_aborts_the_first_with_remote_login() {
    let server = TestServer::start().await;
    let mut first = RawClient::login(&server, "alice", Codec::Json).await;
    let mut second = RawClient::login(&server, "alice", Codec::Proto).await;
    assert_eq!(
        first
            .event(|event| matches!(event, EventKind::ConnectionStateChanged(_)))
            .await,
        aborted(Reason::RemoteLogin)
    );
    let close = first.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), close_code(Reason::RemoteLogin));

    // Messages now reach the new session.
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let send = bob.send(to_peer("alice", "hello")).await;
    let EventKind::MessageFromPeer(message) = second
        .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
        .await
    else {
        unreachable!()
    };
    second.receipt(message.message_id).await;
    assert!(bob.reply(send).await.error.is_none());
}

#[tokio::test]
async fn with_multi_login_both_devices_stay_and_receive() {
    let server = TestServer::builder().multi_login().start().await;
    let mut phone = RawClient::login(&server, "alice", Codec::Json).await;
    let mut laptop = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let send = bob.send(to_peer("alice", "to every device")).await;
    for device in [&mut phone, &mut laptop] {
        let EventKind::MessageFromPeer(message) = device
            .event(|event| matches!(event, EventKind::MessageFromPeer(_)))
            .await
        else {
            unreachable!()
        };
        device.receipt(message.message_id).await;
    }
    let reply = bob.reply(send).await;
    let Some(v1::reply::Result::SendMessageToPeer(result)) = reply.result else {
        panic!("{reply:?}")
    };
    assert_eq!(result.result(), v1::PeerMessageResult::ReceivedByPeer);
    phone
        .no_event(Duration::from_millis(200), |event| {
            matches!(event, EventKind::ConnectionStateChanged(_))
        })
        .await;
}

#[tokio::test]
async fn silence_past_three_heartbeats_ends_the_session() {
    let server = TestServer::builder()
        .edge(|edge| edge.heartbeat_interval = Duration::from_millis(100))
        .start()
        .await;
    let mut pinging = RawClient::login(&server, "pinging", Codec::Json).await;
    let mut silent = RawClient::login(&server, "silent", Codec::Json).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            pinging
                .call(Op::Ping(v1::PingRequest {}))
                .await
                .error
                .is_none()
        );
    }
    assert_eq!(
        silent
            .event(|event| matches!(event, EventKind::ConnectionStateChanged(_)))
            .await,
        state_changed(State::Disconnected, Reason::HeartbeatTimeout)
    );
    let close = silent.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), close_code(Reason::HeartbeatTimeout));
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed() {
    let server = TestServer::builder()
        .edge(|edge| edge.login_timeout = Duration::from_millis(200))
        .start()
        .await;
    let mut idle = RawClient::connect(&server.ws_url(), Codec::Json).await;
    let close = idle.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), close_code(Reason::LoginTimeout));
}

#[tokio::test]
async fn token_warning_then_expiry_unless_renewed() {
    let server = TestServer::builder()
        .edge(|edge| edge.token_warning = Duration::from_secs(2))
        .start()
        .await;
    let mut expiring = login_with(&server, "expiring", server.token_expiring("expiring", 3)).await;
    let mut renewing = login_with(&server, "renewing", server.token_expiring("renewing", 3)).await;

    for client in [&mut expiring, &mut renewing] {
        client
            .event(|event| matches!(event, EventKind::TokenPrivilegeWillExpire(_)))
            .await;
    }
    // Renewal with a token of another uid is refused; with a good one it extends the session.
    let reply = renewing
        .call(Op::RenewToken(v1::RenewTokenRequest {
            token: server.token("expiring"),
        }))
        .await;
    assert_eq!(
        reply.error.map(|error| error.code()),
        Some(v1::ErrorCode::InvalidToken)
    );
    let reply = renewing
        .call(Op::RenewToken(v1::RenewTokenRequest {
            token: server.token("renewing"),
        }))
        .await;
    assert!(reply.error.is_none(), "{reply:?}");

    assert_eq!(
        expiring
            .event(|event| matches!(event, EventKind::ConnectionStateChanged(_)))
            .await,
        aborted(Reason::TokenExpired)
    );
    let close = expiring.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), close_code(Reason::TokenExpired));

    // Well past the first token's expiry, the renewed session is alive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        renewing
            .call(Op::Ping(v1::PingRequest {}))
            .await
            .error
            .is_none()
    );
}

#[tokio::test]
async fn a_lost_member_leaves_after_the_grace_period() {
    // Grace is 500 ms in the test server.
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(bob.call(join("room")).await.error.is_none());
    alice
        .event(|event| matches!(event, EventKind::MemberJoined(_)))
        .await;

    drop(bob);
    alice
        .no_event(Duration::from_millis(300), |event| {
            matches!(event, EventKind::MemberLeft(_))
        })
        .await;
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::MemberLeft(_)))
            .await,
        EventKind::MemberLeft(v1::MemberLeft {
            channel_id: "room".into(),
            member_id: "bob".into(),
        })
    );
}

#[tokio::test]
async fn rejoining_within_the_grace_period_is_silent() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(bob.call(join("room")).await.error.is_none());
    alice
        .event(|event| matches!(event, EventKind::MemberJoined(_)))
        .await;

    drop(bob);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut bob_again = RawClient::login(&server, "bob", Codec::Json).await;
    assert!(bob_again.call(join("room")).await.error.is_none());
    alice
        .no_event(Duration::from_millis(1000), |event| {
            matches!(event, EventKind::MemberLeft(_) | EventKind::MemberJoined(_))
        })
        .await;
    let reply = alice
        .call(Op::GetMembers(v1::GetMembersRequest {
            channel_id: "room".into(),
        }))
        .await;
    let Some(v1::reply::Result::GetMembers(members)) = reply.result else {
        panic!("{reply:?}")
    };
    assert_eq!(members.members, ["alice", "bob"]);
}

#[tokio::test]
async fn logout_leaves_channels_at_once() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    assert!(alice.call(join("room")).await.error.is_none());
    assert!(bob.call(join("room")).await.error.is_none());
    assert!(
        bob.call(Op::Logout(v1::LogoutRequest {}))
            .await
            .error
            .is_none()
    );
    let close = bob.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1000);
    let left = tokio::time::timeout(
        Duration::from_millis(300),
        alice.event(|event| matches!(event, EventKind::MemberLeft(_))),
    )
    .await;
    assert!(
        left.is_ok(),
        "MemberLeft comes without waiting for the grace period"
    );
}

#[tokio::test]
async fn stopping_the_node_tells_sessions_to_reconnect_elsewhere() {
    let server = TestServer::start().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Proto).await;
    server.stop().await;
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::ConnectionStateChanged(_)))
            .await,
        state_changed(State::Disconnected, Reason::ServerShutdown)
    );
    let close = alice.closed().await.expect("close frame");
    assert_eq!(u16::from(close.code), close_code(Reason::ServerShutdown));
}
