//! Call invitations: accepted, refused, canceled, a callee who never comes or comes later.

use super::*;

#[test]
fn an_accepted_invitation_is_told_to_both_sides() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice);
    h.login("bob", bob);
    let invitation_id = h
        .ask(crate::ops::InvitationSend {
            caller: user_key("alice"),
            caller_session: alice,
            callee: UserId::parse("bob").unwrap(),
            content: "call me".into(),
            channel_id: "room".into(),
            restore: None,
        })
        .now()
        .unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationReceived(received)
            if received.invitation_id == invitation_id && received.content == "call me"
    )));
    let again = h
        .ask(crate::ops::InvitationSend {
            caller: user_key("alice"),
            caller_session: alice,
            callee: UserId::parse("bob").unwrap(),
            content: "again".into(),
            channel_id: "room".into(),
            restore: None,
        })
        .now();
    assert_eq!(again.unwrap_err().code, ErrorCode::InvitationAlreadySent);

    h.ask(ops::AnswerInvitation {
        callee: user_key("bob"),
        invitation_id,
        accept: true,
        response: "coming".into(),
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationAccepted(accepted) if accepted.response == "coming"
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationAccepted(_)
    )));
    let late = h
        .ask(ops::CancelInvitation {
            callee: user_key("bob"),
            caller: UserId::parse("alice").unwrap(),
            invitation_id,
        })
        .now();
    assert_eq!(late.unwrap_err().code, ErrorCode::InvitationAlreadyAccepted);
}

#[test]
fn an_invitation_to_a_callee_who_never_comes_fails_with_peer_offline() {
    let mut h = Harness::new();
    let alice = session(1);
    h.login("alice", alice);
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    tick_after(&mut h, Duration::from_secs(120));
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationFailure(failure)
            if failure.invitation_id == invitation_id
                && failure.reason == v1::InvitationFailureReason::PeerOffline as i32
    )));
}

#[test]
fn an_offline_callee_gets_the_invitation_when_it_logs_in() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice);
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    h.login("bob", bob);
    let mut ready = h.ask(ops::SessionReady {
        user: user_key("bob"),
        session: bob,
    });
    h.settle();
    ready.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationReceived(received) if received.invitation_id == invitation_id
    )));
}

#[test]
fn a_refused_invitation_is_told_to_both_sides() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice);
    h.login("bob", bob);
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    h.ask(ops::AnswerInvitation {
        callee: user_key("bob"),
        invitation_id,
        accept: false,
        response: "busy".into(),
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationRefused(refused) if refused.response == "busy"
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationRefused(_)
    )));
}

#[test]
fn a_canceled_invitation_is_told_to_both_sides_and_only_its_caller_may_cancel() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.login("alice", alice);
    h.login("bob", bob);
    let invitation_id = invite(&mut h, "alice", alice, "bob");
    let cancel = |caller: &str| ops::CancelInvitation {
        callee: user_key("bob"),
        caller: UserId::parse(caller).unwrap(),
        invitation_id,
    };
    let stranger = h.ask(cancel("mallory")).now();
    assert_eq!(stranger.unwrap_err().code, ErrorCode::InvitationNotStarted);
    h.ask(cancel("alice")).now().unwrap();
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationCanceled(_)
    )));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationCanceled(_)
    )));
}

#[test]
fn an_unanswered_invitation_expires_and_an_unacknowledged_one_fails_with_no_response() {
    let mut h = Harness::new();
    let (alice, bob, carol) = (session(1), session(2), session(3));
    h.login("alice", alice);
    h.login("bob", bob);
    h.login("carol", carol);
    let acknowledged = invite(&mut h, "alice", alice, "bob");
    let _unacknowledged = invite(&mut h, "carol", carol, "bob");
    // Bob's client acknowledges alice's: the runtime hands the receipt back as a command.
    assert!(matches!(
        h.edge.receipts.as_slice(),
        [OnReceipt::Invitation { invitation_id, .. }, OnReceipt::Invitation { .. }]
            if *invitation_id == acknowledged
    ));
    h.accept(Command::InvitationReceipt {
        callee: user_key("bob"),
        invitation_id: acknowledged,
    });
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::LocalInvitationReceivedByPeer(received) if received.invitation_id == acknowledged
    )));
    tick_after(&mut h, Duration::from_secs(120));
    let failed = |h: &Harness, caller: SessionRef, reason: v1::InvitationFailureReason| {
        h.edge.saw(caller, |event| {
            matches!(
                event,
                EventKind::LocalInvitationFailure(failure) if failure.reason == reason as i32
            )
        })
    };
    assert!(failed(
        &h,
        alice,
        v1::InvitationFailureReason::InvitationExpire
    ));
    assert!(failed(
        &h,
        carol,
        v1::InvitationFailureReason::PeerNoResponse
    ));
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::RemoteInvitationFailure(failure)
            if failure.invitation_id == acknowledged
                && failure.reason == v1::InvitationFailureReason::InvitationExpire as i32
    )));
}
