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
