//! What waits behind a key's store work, and what does not: per-key order, sequence order,
//! the queue's bound, and an edge gone or a ring change reaching a busy key in its turn.

use super::*;

#[test]
fn a_channel_waiting_on_the_store_holds_up_only_its_own_commands() {
    let mut h = Harness::new();
    let (alice, carol, bob, dave) = (session(1), session(2), session(3), session(4));
    let mut joins = [
        h.join("live", "alice", alice),
        h.join("live", "carol", carol),
    ];
    h.settle();
    for join in &mut joins {
        assert_eq!(join.now(), Ok(0));
    }

    // "slow" is taken up from the store, which is held: its commands wait, in order.
    let mut bob_joins = h.join("slow", "bob", bob);
    let held = h.hold();
    assert_eq!(held.len(), 1);
    let mut dave_joins = h.join("slow", "dave", dave);
    let mut bob_sends = h.send("slow", "bob", bob, "after my join", false);
    assert!(bob_joins.is_pending() && dave_joins.is_pending() && bob_sends.is_pending());

    // "live" needs no store and goes on.
    let sent = h
        .send("live", "alice", alice, "hello", false)
        .now()
        .unwrap();
    assert_eq!(sent.seq, 1);
    assert_eq!(
        channel_messages(&h.edge.to(carol)),
        [(1, "hello".to_owned())]
    );
    assert!(
        h.hold().is_empty(),
        "a live channel's message waits on nothing"
    );

    h.finish(held);
    h.settle();
    assert_eq!(bob_joins.now(), Ok(0));
    assert_eq!(dave_joins.now(), Ok(0));
    assert_eq!(bob_sends.now().unwrap().seq, 1);
    assert_eq!(
        channel_messages(&h.edge.to(dave)),
        [(1, "after my join".to_owned())]
    );
}

#[test]
fn messages_reach_members_in_sequence_order_when_some_wait_for_history() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();

    let mut first = h.send("room", "alice", alice, "kept", true);
    let held = h.hold();
    let mut second = h.send("room", "alice", alice, "not kept", false);
    assert!(first.is_pending() && second.is_pending());
    assert!(channel_messages(&h.edge.to(bob)).is_empty());

    h.finish(held);
    assert_eq!(first.now().unwrap().seq, 1);
    assert_eq!(second.now().unwrap().seq, 2);
    assert_eq!(
        channel_messages(&h.edge.to(bob)),
        [(1, "kept".to_owned()), (2, "not kept".to_owned())]
    );
}

#[test]
fn a_slow_key_refuses_what_would_queue_past_its_bound() {
    let mut h = Harness::new();
    let _first = h.join("slow", "alice", session(1));
    let _held = h.hold();
    let mut queued: Vec<_> = (0..MAX_QUEUED_PER_KEY)
        .map(|n| h.join("slow", "bob", session(100 + n as u64)))
        .collect();
    let mut refused = h.join("slow", "carol", session(99));
    assert_eq!(refused.now().unwrap_err().code, ErrorCode::Unavailable);
    assert!(queued.iter_mut().all(Answer::is_pending));
}

#[test]
fn a_peer_message_waiting_for_history_holds_up_only_its_receivers() {
    let mut h = Harness::new();
    let (bob, carol) = (session(2), session(3));
    h.login("bob", bob);
    h.login("carol", carol);

    let mut kept = h.send_peer("alice", "bob", true);
    let held = h.hold();
    assert_eq!(held.len(), 1);
    // Another receiver's message goes at once; bob's next one waits its turn.
    let mut to_carol = h.send_peer("dave", "carol", false);
    assert!(matches!(to_carol.now(), Ok(PeerRouted::Delivered { .. })));
    let mut to_bob = h.send_peer("dave", "bob", false);
    assert!(kept.is_pending() && to_bob.is_pending());

    h.finish(held);
    assert!(matches!(kept.now(), Ok(PeerRouted::Delivered { .. })));
    assert!(matches!(to_bob.now(), Ok(PeerRouted::Delivered { .. })));
    assert_eq!(h.edge.to(bob).len(), 2);
}

#[test]
fn a_message_cached_while_its_receiver_logs_in_is_in_the_inbox_the_login_reads() {
    let mut h = Harness::new();
    let bob = session(2);
    let (reply, mut cached) = oneshot::channel();
    h.accept(Command::SendPeer {
        send: PeerSend {
            from: user_key("alice"),
            to: UserId::parse("bob").unwrap(),
            message: text_body("while you were away"),
            enable_offline: true,
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
    let pushing = h.hold();
    // Bob logs in while the message is being stored: the login and its inbox read come after.
    let mut login = h.ask(OpenSession {
        user: user_key("bob"),
        session: bob,
        multi_login: MultiLogin::Replace,
    });
    let mut ready = h.ask(ops::SessionReady {
        user: user_key("bob"),
        session: bob,
    });
    // Whatever can go on does, and the login is still waiting for the message to be stored.
    h.settle();
    assert!(login.is_pending() && ready.is_pending());
    h.finish(pushing);
    h.settle();
    assert!(matches!(
        cached.try_recv(),
        Ok(Some(Ok(PeerRouted::Cached { .. })))
    ));
    login.now().unwrap();
    ready.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::MessageFromPeer(message) if message.is_offline_message
    )));
}

#[test]
fn a_ring_change_takes_a_loading_channel_after_the_commands_before_it() {
    let mut h = Harness::new();
    let mut join = h.join("room", "alice", session(1));
    let held = h.hold();
    let mut count = h.ask(ops::MemberCount {
        channel: channel_key("room"),
    });
    assert_eq!(count.now(), Ok(0), "reads are not held up");
    // A ring without this node: every key moved away. The join came first and is answered;
    // then the channel's state goes.
    let ring = Arc::new(Ring::new(2, &[NodeId(9)], 8));
    h.accept(Command::Forget {
        ring,
        me: NodeId(1),
    });
    let mut after = h.join("room", "bob", session(2));
    h.finish(held);
    assert_eq!(join.now(), Ok(0));
    // What came after the ring change finds the channel as a new owner would: empty, its
    // numbering past the block the first join reserved.
    h.settle();
    assert_eq!(after.now(), Ok(1000));
    let members = h
        .ask(ops::Members {
            channel: channel_key("room"),
            asker: None,
        })
        .now();
    assert_eq!(members, Ok(vec![UserId::parse("bob").unwrap()]));
}

#[test]
fn an_edge_gone_takes_a_login_still_checking_for_a_ban_too() {
    let mut h = Harness::new();
    let bob = session(2);
    let mut login = h.ask(OpenSession {
        user: user_key("bob"),
        session: bob,
        multi_login: MultiLogin::Replace,
    });
    let checking = h.hold();
    let (reply, _gone) = oneshot::channel();
    h.accept(Command::EdgeGone { node: EDGE, reply });
    h.finish(checking);
    login.now().unwrap();
    let state = h
        .ask(ops::Presence {
            user: user_key("bob"),
        })
        .now();
    assert_eq!(
        state,
        Ok(PeerOnlineState::Unreachable),
        "its session was lost with its edge"
    );
}
