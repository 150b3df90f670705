//! Mutes, kicks and bans.

use super::*;

#[test]
fn a_muted_member_cannot_send_until_unmuted() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    let far = parley_core::time::unix_ms() + 60_000;
    let mut muted = h.ask(ops::Moderate {
        action: crate::api::Moderation::Mute {
            channel: channel_key("room"),
            uid: UserId::parse("bob").unwrap(),
            until_ms: far,
            reason: "spam".into(),
        },
    });
    h.settle();
    assert_eq!(muted.now(), Ok(true));
    assert!(h.edge.saw(alice,
        |event| matches!(event, EventKind::MemberMuted(mute) if mute.member_id == "bob" && mute.muted)
    ));
    let refused = h.send("room", "bob", bob, "hi", false).now().unwrap_err();
    assert_eq!(refused.code, ErrorCode::Muted);

    let mut unmuted = h.ask(ops::Moderate {
        action: crate::api::Moderation::Unmute {
            channel: channel_key("room"),
            uid: UserId::parse("bob").unwrap(),
        },
    });
    h.settle();
    assert_eq!(unmuted.now(), Ok(true));
    assert_eq!(
        h.send("room", "bob", bob, "back", false).now().unwrap().seq,
        1
    );
}

#[test]
fn a_kicked_member_is_told_and_the_others_see_it_leave() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    let kicked = h
        .ask(ops::Moderate {
            action: crate::api::Moderation::Kick {
                channel: channel_key("room"),
                uid: UserId::parse("bob").unwrap(),
                reason: "bye".into(),
            },
        })
        .now();
    assert_eq!(kicked, Ok(true));
    assert!(h.edge.saw(
        bob,
        |event| matches!(event, EventKind::KickedFromChannel(kick) if kick.reason == "bye")
    ));
    assert!(h.edge.saw(
        alice,
        |event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob")
    ));
    let refused = h.send("room", "bob", bob, "still here?", false).now();
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotJoined);
}

#[test]
fn a_banned_user_is_logged_out_and_cannot_log_in_again() {
    let mut h = Harness::new();
    let bob = session(2);
    h.login("bob", bob);
    let mut banned = h.ask(ops::Moderate {
        action: crate::api::Moderation::Ban {
            user: user_key("bob"),
            until_ms: parley_core::time::unix_ms() + 60_000,
            reason: "abuse".into(),
        },
    });
    h.settle();
    assert_eq!(banned.now(), Ok(true));
    assert_eq!(h.edge.ended, [(bob.session, Reason::BannedByServer)]);
    let mut again = h.ask(OpenSession {
        user: user_key("bob"),
        session: session(3),
        multi_login: MultiLogin::Replace,
    });
    h.settle();
    assert_eq!(again.now().unwrap_err().code, ErrorCode::Banned);
}
