//! The Rust SDK against a real node: messaging, events, receipts, reconnect with channel re-join.

use std::time::Duration;

use parley_client::Client;
use parley_client::ConnectionChangeReason;
use parley_client::ConnectionState;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_testkit::PROMPTLY;
use parley_testkit::Proxy;
use parley_testkit::TestServer;
use tokio::sync::mpsc;

/// Waits for the first event that `matches`, skipping others.
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

fn state_is(event: &Event, state: ConnectionState, reason: ConnectionChangeReason) -> bool {
    matches!(event, Event::ConnectionStateChanged(changed)
        if changed.state() == state && changed.reason() == reason)
}

#[tokio::test]
async fn two_users_message_each_other_and_a_channel() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    let first = alice_events.recv().await.unwrap();
    assert!(state_is(
        &first,
        ConnectionState::Connected,
        ConnectionChangeReason::LoginSuccess
    ));

    let sent = alice
        .send_message_to_peer(
            "bob",
            Message::text("hi bob"),
            PeerMessageOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        sent.result(),
        PeerMessageResult::ReceivedByPeer,
        "the SDK acknowledges"
    );
    let Event::MessageFromPeer(received) = next_matching(&mut bob_events, |event| {
        matches!(event, Event::MessageFromPeer(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(received.message_id, sent.message_id);

    alice.join("lobby").await.unwrap();
    bob.join("lobby").await.unwrap();
    next_matching(
        &mut alice_events,
        |event| matches!(event, Event::MemberJoined(joined) if joined.member_id == "bob"),
    )
    .await;
    let sent = bob
        .send_message("lobby", Message::raw(vec![1, 2, 3], "bytes"))
        .await
        .unwrap();
    let Event::ChannelMessage(message) = next_matching(&mut alice_events, |event| {
        matches!(event, Event::ChannelMessage(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(message.seq, sent.seq);
    assert_eq!(
        message.message,
        Some(Message::raw(vec![1, 2, 3], "bytes").0)
    );
    assert_eq!(alice.get_members("lobby").await.unwrap(), ["alice", "bob"]);
    assert_eq!(
        alice
            .get_channel_member_count(&["lobby", "empty"])
            .await
            .unwrap(),
        [("lobby".to_owned(), 2), ("empty".to_owned(), 0)]
    );

    let error = alice.join("null").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidChannelId);

    alice.logout().await.unwrap();
    next_matching(&mut alice_events, |event| {
        state_is(
            event,
            ConnectionState::Disconnected,
            ConnectionChangeReason::Logout,
        )
    })
    .await;
    let error = alice.join("lobby").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotLoggedIn);
}

#[tokio::test]
async fn a_refused_login_is_an_error_with_its_code() {
    let server = TestServer::start().await;
    let config = server.client_config("alice").token(server.token("mallory"));
    let Err(error) = Client::login(config).await else {
        panic!("login with another uid's token succeeded")
    };
    assert_eq!(error.code, ErrorCode::InvalidToken);
}

#[tokio::test]
async fn after_a_dropped_connection_the_client_reconnects_and_rejoins() {
    let server = TestServer::builder()
        .owner(|owner| owner.member_grace = Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(server.addr).await;
    let config = parley_client::ClientConfig::new(proxy.ws_url(), server.app_id(), "alice")
        .token(server.token("alice"));
    let (alice, mut alice_events) = Client::login(config).await.unwrap();
    let (bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    alice.join("room").await.unwrap();
    bob.join("room").await.unwrap();

    proxy.cut_all();
    next_matching(&mut alice_events, |event| {
        state_is(
            event,
            ConnectionState::Reconnecting,
            ConnectionChangeReason::Interrupted,
        )
    })
    .await;
    next_matching(&mut alice_events, |event| {
        state_is(
            event,
            ConnectionState::Connected,
            ConnectionChangeReason::LoginSuccess,
        )
    })
    .await;

    // Alice is back in the room: she gets bob's message and can send.
    bob.send_message("room", Message::text("welcome back"))
        .await
        .unwrap();
    let Event::ChannelMessage(message) = next_matching(&mut alice_events, |event| {
        matches!(event, Event::ChannelMessage(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(message.message, Some(Message::text("welcome back").0));
    alice
        .send_message("room", Message::text("thanks"))
        .await
        .unwrap();
    next_matching(&mut bob_events, |event| {
        matches!(event, Event::ChannelMessage(_))
    })
    .await;

    // Bob never saw alice leave.
    while let Ok(event) = bob_events.try_recv() {
        assert!(
            !matches!(event, Event::MemberLeft(_)),
            "a reconnect within the grace period must not announce a leave"
        );
    }
}

#[tokio::test]
async fn remote_login_aborts_the_sdk_without_reconnecting() {
    let server = TestServer::start().await;
    let (_first, mut first_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (_second, _second_events) = Client::login(server.client_config("alice")).await.unwrap();
    next_matching(&mut first_events, |event| {
        state_is(
            event,
            ConnectionState::Aborted,
            ConnectionChangeReason::RemoteLogin,
        )
    })
    .await;
    let after = tokio::time::timeout(Duration::from_millis(500), first_events.recv()).await;
    assert!(
        matches!(after, Ok(None)),
        "no reconnect after REMOTE_LOGIN: {after:?}"
    );
}

#[tokio::test]
async fn when_a_node_stops_the_client_moves_to_another() {
    let first = TestServer::start().await;
    let second = TestServer::start().await;
    let proxy = Proxy::start(first.addr).await;
    let config = parley_client::ClientConfig::new(proxy.ws_url(), first.app_id(), "alice")
        .token(first.token("alice"));
    let (alice, mut alice_events) = Client::login(config).await.unwrap();
    alice.join("room").await.unwrap();

    proxy.set_target(second.addr);
    first.stop().await;
    next_matching(&mut alice_events, |event| {
        state_is(
            event,
            ConnectionState::Reconnecting,
            ConnectionChangeReason::Interrupted,
        )
    })
    .await;
    next_matching(&mut alice_events, |event| {
        state_is(
            event,
            ConnectionState::Connected,
            ConnectionChangeReason::LoginSuccess,
        )
    })
    .await;
    // On the new node alice is in her room again.
    let (bob, _bob_events) = Client::login(second.client_config("bob")).await.unwrap();
    bob.join("room").await.unwrap();
    assert_eq!(bob.get_members("room").await.unwrap(), ["alice", "bob"]);
}

#[tokio::test]
async fn messages_sent_while_disconnected_are_recovered_once() {
    let server = TestServer::builder()
        .owner(|owner| owner.member_grace = Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(server.addr).await;
    let config = parley_client::ClientConfig::new(proxy.ws_url(), server.app_id(), "alice")
        .token(server.token("alice"));
    let (alice, mut alice_events) = Client::login(config).await.unwrap();
    let (bob, _bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    alice.join("room").await.unwrap();
    bob.join("room").await.unwrap();
    bob.send_message("room", Message::text("one"))
        .await
        .unwrap();
    next_matching(&mut alice_events, |event| {
        matches!(event, Event::ChannelMessage(_))
    })
    .await;

    proxy.cut_all();
    for body in ["two", "three"] {
        bob.send_message("room", Message::text(body)).await.unwrap();
    }
    // Everything up to ChannelRecovered: the missed messages, each once, in order.
    let mut missed = Vec::new();
    let recovered = loop {
        match tokio::time::timeout(PROMPTLY, alice_events.recv()).await {
            Ok(Some(Event::ChannelMessage(message))) => missed.push(message.message.unwrap()),
            Ok(Some(Event::ChannelRecovered(recovered))) => break recovered,
            Ok(Some(_)) => {}
            other => panic!("no ChannelRecovered: {other:?}"),
        }
    };
    assert!(recovered.complete);
    assert_eq!(missed, [Message::text("two").0, Message::text("three").0]);
    bob.send_message("room", Message::text("four"))
        .await
        .unwrap();
    let mut texts = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(300), alice_events.recv()).await
    {
        if let Event::ChannelMessage(message) = event {
            texts.push(message.message.unwrap());
        }
    }
    assert_eq!(
        texts,
        [Message::text("four").0],
        "after recovery, only new messages"
    );
}
