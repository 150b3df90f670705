//! Logins and presence: online, unreachable, offline, logout, a second login.

use super::*;

#[test]
fn presence_goes_online_then_unreachable_then_offline() {
    let mut h = Harness::new();
    let (watcher, bob) = (session(1), session(2));
    let subscribed = h
        .ask(ops::SubscribePresence {
            user: user_key("bob"),
            subscriber: watcher,
        })
        .now();
    assert_eq!(subscribed, Ok(PeerOnlineState::Offline));

    h.login("bob", bob);
    h.ask(ops::CloseSession {
        user: user_key("bob"),
        session: bob,
        reason: LeaveReason::ConnectionLost,
    })
    .now()
    .unwrap();
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(state, Ok(PeerOnlineState::Unreachable));
    // The lost connection did not come back in time.
    tick_after(&mut h, Duration::from_secs(60));
    h.settle();
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Offline
        ]
    );
    // The app's backend hears of the login, and of the logout only once the user is offline.
    let bob_id = UserId::parse("bob").unwrap();
    assert_eq!(
        h.events,
        [
            AppEventKind::Login {
                uid: bob_id.clone()
            },
            AppEventKind::Logout {
                uid: bob_id,
                reason: "connection_lost"
            },
        ]
    );
}

#[test]
fn a_second_login_ends_the_first_with_remote_login() {
    let mut h = Harness::new();
    let (first, second) = (session(1), session(2));
    h.login("bob", first);
    h.login("bob", second);
    assert_eq!(h.edge.ended, [(first.session, Reason::RemoteLogin)]);
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(state, Ok(PeerOnlineState::Online));
}

#[test]
fn a_logout_is_offline_at_once_and_a_silent_connection_unreachable() {
    let mut h = Harness::new();
    let (watcher, bob) = (session(1), session(2));
    h.ask(ops::SubscribePresence {
        user: user_key("bob"),
        subscriber: watcher,
    })
    .now()
    .unwrap();
    h.login("bob", bob);
    let reachable = |h: &mut Harness, reachable| {
        h.ask(ops::SetReachable {
            user: user_key("bob"),
            session: bob,
            reachable,
        })
        .now()
        .unwrap();
    };
    reachable(&mut h, false);
    reachable(&mut h, true);
    h.ask(ops::CloseSession {
        user: user_key("bob"),
        session: bob,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    h.settle();
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Online,
            PeerOnlineState::Offline
        ]
    );
}

/// Presence `watcher` is told of bob after bob logs in on `bob` (watched from before).
fn watch_bob(h: &mut Harness, watcher: SessionRef) {
    h.ask(ops::SubscribePresence {
        user: user_key("bob"),
        subscriber: watcher,
    })
    .now()
    .unwrap();
}

#[test]
fn a_silent_connection_is_unreachable_until_it_speaks_again() {
    let mut h = Harness::new();
    let (watcher, bob) = (session(1), session(2));
    watch_bob(&mut h, watcher);
    h.login("bob", bob);
    for reachable in [false, true] {
        h.ask(ops::SetReachable {
            user: user_key("bob"),
            session: bob,
            reachable,
        })
        .now()
        .unwrap();
    }
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Online
        ]
    );
}

#[test]
fn a_user_back_within_the_grace_period_never_goes_offline() {
    let mut h = Harness::new();
    let (watcher, bob, bob_again) = (session(1), session(2), session(3));
    watch_bob(&mut h, watcher);
    h.login("bob", bob);
    h.ask(ops::CloseSession {
        user: user_key("bob"),
        session: bob,
        reason: LeaveReason::ConnectionLost,
    })
    .now()
    .unwrap();
    h.login("bob", bob_again);
    tick_after(&mut h, Duration::from_secs(60));
    assert_eq!(
        presence_told(&h, watcher, "bob"),
        [
            PeerOnlineState::Online,
            PeerOnlineState::Unreachable,
            PeerOnlineState::Online
        ]
    );
    assert!(
        !h.events
            .iter()
            .any(|event| matches!(event, AppEventKind::Logout { .. })),
        "the backend hears of no logout"
    );
}

#[test]
fn with_multi_login_allowed_every_session_stays_and_gets_peer_messages() {
    let mut h = Harness::new();
    let (phone, laptop) = (session(1), session(2));
    for device in [phone, laptop] {
        let mut opened = h.ask(OpenSession {
            user: user_key("bob"),
            session: device,
            multi_login: MultiLogin::AllowMany,
        });
        h.settle();
        opened.now().unwrap();
    }
    assert!(h.edge.ended.is_empty());
    let routed = h.send_peer("alice", "bob", false).now();
    assert!(matches!(
        routed,
        Ok(PeerRouted::Delivered { receipts, .. }) if receipts.len() == 2
    ));
    for device in [phone, laptop] {
        assert!(h.edge.saw(device, |event| matches!(
            event,
            EventKind::MessageFromPeer(_)
        )));
    }
}
