//! Peer messages to users here: online (a receipt per session), offline and kept, offline and
//! not kept.

use super::*;

fn to_offline_bob(h: &mut Harness, enable_offline: bool) -> PeerAnswer {
    let (reply, answer) = oneshot::channel();
    h.accept(Command::SendPeer {
        send: PeerSend {
            from: user_key("alice"),
            to: UserId::parse("bob").unwrap(),
            message: text_body("later"),
            enable_offline,
            enable_history: false,
            origin: None,
            trace: None,
        },
        limits: InboxLimits {
            max_count: 10,
            max_age_ms: 60_000,
        },
        reply,
    });
    PeerAnswer(answer)
}

#[test]
fn a_message_to_an_offline_user_is_kept_when_asked_and_the_backend_hears_of_it() {
    let mut h = Harness::new();
    let mut kept = to_offline_bob(&mut h, true);
    assert!(kept.is_pending(), "it waits for the inbox");
    h.settle();
    assert!(matches!(kept.now(), Ok(PeerRouted::Cached { .. })));
    assert_eq!(h.stored.inboxes[&user_key("bob")].len(), 1);
    assert!(h.events.iter().any(|event| matches!(
        event,
        AppEventKind::PeerMessageCached { to, .. } if to.as_str() == "bob"
    )));

    // Bob logs in: the inbox is delivered, each message waiting for its receipt to leave it.
    let bob = session(2);
    h.login("bob", bob);
    h.ask(ops::SessionReady {
        user: user_key("bob"),
        session: bob,
    });
    h.settle();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::MessageFromPeer(message) if message.is_offline_message
    )));
    assert!(matches!(
        h.edge.receipts.as_slice(),
        [OnReceipt::LeaveInbox { user, .. }] if user.uid.as_str() == "bob"
    ));
}

#[test]
fn a_message_to_an_offline_user_not_kept_reaches_nobody() {
    let mut h = Harness::new();
    let mut sent = to_offline_bob(&mut h, false);
    assert!(h.hold().is_empty(), "nothing to store");
    assert!(matches!(
        sent.now(),
        Ok(PeerRouted::Delivered { receipts, .. }) if receipts.is_empty()
    ));
    assert!(!h.stored.inboxes.contains_key(&user_key("bob")));
}
