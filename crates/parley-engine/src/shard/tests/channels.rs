//! Channels: lingering members, leaves, member counts, recovery after a reconnect.

use super::*;

#[test]
fn a_member_whose_connection_was_lost_lingers_then_leaves() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob,
        reason: LeaveReason::ConnectionLost,
    })
    .now()
    .unwrap();
    let left = |h: &Harness| {
        h.edge
            .to(alice)
            .iter()
            .filter(|event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob"))
            .count()
    };
    tick_after(&mut h, Duration::from_secs(1));
    assert_eq!(left(&h), 0, "still within its grace period");
    tick_after(&mut h, Duration::from_secs(60));
    assert_eq!(left(&h), 1);
    let members = h
        .ask(ops::Members {
            channel: channel_key("room"),
            asker: None,
        })
        .now();
    assert_eq!(members, Ok(vec![UserId::parse("alice").unwrap()]));
}

#[test]
fn a_client_back_from_a_reconnect_gets_what_it_missed() {
    let mut h = Harness::new();
    let (alice, bob, bob_again) = (session(1), session(2), session(3));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    for text in ["one", "two", "three"] {
        h.send("room", "alice", alice, text, false).now().unwrap();
    }
    let mut joined = h.ask(ops::Join {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob_again,
        resume: Resume::Client { after: 1 },
    });
    h.settle();
    assert_eq!(joined.now(), Ok(3));
    let events = h.edge.to(bob_again);
    assert_eq!(
        channel_messages(&events),
        [(2, "two".to_owned()), (3, "three".to_owned())]
    );
    assert!(matches!(
        events.last(),
        Some(EventKind::ChannelRecovered(recovered))
            if recovered.from_seq == 2 && recovered.to_seq == 3 && recovered.complete
    ));
}

#[test]
fn a_leave_is_told_at_once_and_member_counts_go_out_on_the_tick() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    tick_after(&mut h, Duration::from_secs(5));
    let counts = |h: &Harness| -> Vec<u32> {
        h.edge
            .to(alice)
            .iter()
            .filter_map(|event| match event {
                EventKind::MemberCountUpdated(count) => Some(count.member_count),
                _ => None,
            })
            .collect()
    };
    assert_eq!(counts(&h), [2]);
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("bob").unwrap(),
        session: bob,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert!(h.edge.saw(
        alice,
        |event| matches!(event, EventKind::MemberLeft(left) if left.member_id == "bob")
    ));
    tick_after(&mut h, Duration::from_secs(10));
    assert_eq!(counts(&h), [2, 1]);
    // The last member leaves: the channel is forgotten (its attributes start to expire).
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("alice").unwrap(),
        session: alice,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert!(h.shard.channels.is_empty());
}
