//! Channels: who may send, numbering, lingering members, leaves, member counts, large channels,
//! recovery after a reconnect, the backend's messages to empty channels.

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

#[test]
fn only_members_send_and_numbering_reserves_a_new_block_when_one_runs_out() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.settle();
    let refused = h.send("room", "bob", bob, "not in", false).now();
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotJoined);

    // Taking the channel up reserved numbers 1 to 1000: none of these waits on the store.
    for seq in 1..=1000 {
        assert_eq!(
            h.send("room", "alice", alice, "n", false)
                .now()
                .unwrap()
                .seq,
            seq
        );
    }
    assert!(h.hold().is_empty());
    let mut next = h.send("room", "alice", alice, "n", false);
    let held = h.hold();
    assert_eq!(held.len(), 1, "the next block is reserved first");
    assert!(next.is_pending());
    h.finish(held);
    assert_eq!(next.now().unwrap().seq, 1001);
    assert_eq!(h.stored.high_water.get(&channel_key("room")), Some(&2000));
}

#[test]
fn a_channel_past_the_member_events_threshold_announces_no_joins_or_leaves() {
    let mut h = Harness::new();
    let threshold = parley_core::limits::Limits::default().member_events_threshold;
    let first = session(1);
    h.join("big", "m0", first);
    h.settle();
    for n in 1..threshold {
        h.join("big", &format!("m{n}"), session(1 + n as u64));
    }
    let joined = |h: &Harness| {
        h.edge
            .to(first)
            .iter()
            .filter(|event| matches!(event, EventKind::MemberJoined(_)))
            .count()
    };
    assert_eq!(joined(&h), threshold - 1, "at the threshold joins are told");
    let late = session(10_000);
    h.join("big", "late", late).now().unwrap();
    assert_eq!(joined(&h), threshold - 1, "past it they are not");
    h.ask(ops::Leave {
        channel: channel_key("big"),
        uid: UserId::parse("late").unwrap(),
        session: late,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert!(
        !h.edge
            .saw(first, |event| matches!(event, EventKind::MemberLeft(_)))
    );
    let count = h
        .ask(ops::MemberCount {
            channel: channel_key("big"),
        })
        .now();
    assert_eq!(count, Ok(threshold as u32));
}

#[test]
fn a_backend_message_to_a_channel_nobody_is_in_is_kept_unless_its_sender_is_muted() {
    let mut h = Harness::new();
    let from_backend = |from: &str| ChannelSend {
        channel: channel_key("empty"),
        from: UserId::parse(from).unwrap(),
        session: None,
        message: text_body("notice"),
        enable_history: true,
        origin: None,
        trace: None,
    };
    let mut sent = h.ask(from_backend("bot"));
    h.settle();
    assert_eq!(
        sent.now().unwrap().seq,
        0,
        "numbers count what members were sent"
    );
    let conversation = Conversation::Channel(ChannelId::parse("empty").unwrap());
    assert_eq!(h.stored.history[&conversation].len(), 1);

    h.ask(ops::Moderate {
        action: crate::api::Moderation::Mute {
            channel: channel_key("empty"),
            uid: UserId::parse("spammer").unwrap(),
            until_ms: h.now.unix_ms + 60_000,
            reason: "spam".into(),
        },
    });
    h.settle();
    let mut refused = h.ask(from_backend("spammer"));
    h.settle();
    assert_eq!(refused.now().unwrap_err().code, ErrorCode::Muted);
    assert_eq!(h.stored.history[&conversation].len(), 1);
}

#[test]
fn a_caller_hears_of_its_message_only_once_its_deliveries_are_taken() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    let (reply, mut answer) = oneshot::channel();
    let send = ChannelSend {
        channel: channel_key("room"),
        from: UserId::parse("alice").unwrap(),
        session: Some(alice),
        message: text_body("in order"),
        enable_history: false,
        origin: None,
        trace: None,
    };
    h.shard.accept(
        h.now,
        Command::Call {
            request: send.into_request(),
            reply,
        },
    );
    assert_eq!(
        answer.try_recv(),
        Ok(None),
        "held until the runtime has the deliveries"
    );
    let deliveries = h
        .shard
        .take_effects()
        .filter(|effect| matches!(effect, Effect::Deliver { .. }))
        .count();
    assert_eq!(deliveries, 1);
    h.shard.release_answers();
    assert!(matches!(answer.try_recv(), Ok(Some(Ok(_)))));
}
