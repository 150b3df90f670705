//! Other regions: what a channel's owner tells them of its members, which messages cross and
//! which do not come back, and peer messages to users who are in another region.

use super::*;
use crate::api::Interest;
use crate::api::PeerOutcome;
use crate::api::RegionOrigin;
use parley_core::ids::MessageId;

fn interest(h: &Harness) -> Vec<(String, u32, bool)> {
    h.regions
        .iter()
        .filter_map(|record| match record {
            RegionRecord::Interest { channel, interest } => Some((
                channel.channel.to_string(),
                interest.members,
                interest.fresh,
            )),
            _ => None,
        })
        .collect()
}

fn crossed_out(h: &Harness) -> Vec<String> {
    h.regions
        .iter()
        .filter_map(|record| match record {
            RegionRecord::Message {
                message:
                    v1::MessageBody {
                        content: Some(v1::message_body::Content::Text(text)),
                        ..
                    },
                ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn region_says(h: &mut Harness, members: u32, fresh: bool) {
    h.ask(ops::RegionInterest {
        channel: channel_key("room"),
        region: "us".into(),
        interest: Interest { members, fresh },
    })
    .now()
    .unwrap();
}

#[test]
fn a_channel_announces_its_members_and_answers_a_region_that_has_just_taken_it_up() {
    let mut h = Harness::new();
    let alice = session(1);
    let mut joined = h.join("room", "alice", alice);
    h.settle();
    joined.now().unwrap();
    assert_eq!(interest(&h), [("room".to_owned(), 1, true)]);

    // The region's attributes go to the newcomer too, in order with their writes.
    h.ask(ops::UpdateChannelAttributes {
        channel: channel_key("room"),
        by: UserId::parse("alice").unwrap(),
        op: parley_core::attributes::AttributeOp::Set(
            [("topic".to_owned(), "rust".to_owned())].into(),
        ),
        notify_members: false,
    });
    h.settle();
    h.regions.clear();
    region_says(&mut h, 2, true);
    h.settle();
    assert_eq!(interest(&h), [("room".to_owned(), 1, false)]);
    assert!(h.regions.iter().any(|record| matches!(
        record,
        RegionRecord::Attributes { attributes, notify_members: false, .. }
            if attributes.iter().any(|attribute| attribute.value == "rust")
    )));

    // Members everywhere are counted, and members here hear the total.
    let count = h
        .ask(ops::MemberCount {
            channel: channel_key("room"),
        })
        .now();
    assert_eq!(count, Ok(3));
    tick_after(&mut h, Duration::from_secs(2));
    assert!(h.edge.saw(alice, |event| matches!(
        event,
        EventKind::MemberCountUpdated(updated) if updated.member_count == 3
    )));

    // A channel that empties here tells the others it wants no more messages.
    h.regions.clear();
    h.ask(ops::Leave {
        channel: channel_key("room"),
        uid: UserId::parse("alice").unwrap(),
        session: alice,
        reason: LeaveReason::Left,
    })
    .now()
    .unwrap();
    assert_eq!(interest(&h), [("room".to_owned(), 0, false)]);
}

#[test]
fn messages_cross_to_regions_with_members_and_what_crossed_in_never_goes_back() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    h.send("room", "alice", alice, "alone", false)
        .now()
        .unwrap();
    assert!(crossed_out(&h).is_empty(), "no other region has members");

    region_says(&mut h, 1, false);
    h.send("room", "alice", alice, "shared", false)
        .now()
        .unwrap();
    assert_eq!(crossed_out(&h), ["shared"]);

    // One from the other region reaches the members here once, and is not sent back.
    let from_us = || ChannelSend {
        channel: channel_key("room"),
        from: UserId::parse("carol").unwrap(),
        session: None,
        message: text_body("from us"),
        enable_history: false,
        origin: Some(RegionOrigin {
            region: "us".into(),
            message_id: MessageId(77),
            server_received_ts: 1,
        }),
        trace: None,
    };
    h.ask(from_us()).now().unwrap();
    h.ask(from_us()).now().unwrap();
    let heard: Vec<String> = channel_messages(&h.edge.to(bob))
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(heard, ["alone", "shared", "from us"]);
    assert_eq!(crossed_out(&h), ["shared"]);

    region_says(&mut h, 0, false);
    h.send("room", "alice", alice, "alone again", false)
        .now()
        .unwrap();
    assert_eq!(
        crossed_out(&h),
        ["shared"],
        "the region has no members left"
    );
}

#[test]
fn a_peer_message_to_a_user_in_another_region_crosses_and_hears_how_it_ended() {
    let mut h = Harness::spanning(true);
    h.stored
        .user_regions
        .insert(user_key("bob"), "us".to_owned());
    let mut sent = h.send_peer("alice", "bob", false);
    h.settle();
    let Ok(PeerRouted::Remote {
        message_id,
        mut outcome,
        ..
    }) = sent.now()
    else {
        panic!("routed to bob's region");
    };
    assert!(matches!(
        h.regions.as_slice(),
        [RegionRecord::Peer { to, .. }] if to.as_str() == "bob"
    ));
    assert_eq!(outcome.try_recv(), Ok(None), "still out there");
    h.ask(ops::RegionPeerOutcome {
        user: user_key("bob"),
        message_id,
        outcome: PeerOutcome::Received,
    })
    .now()
    .unwrap();
    assert_eq!(outcome.try_recv(), Ok(Some(PeerOutcome::Received)));
}

#[test]
fn a_peer_message_to_a_user_in_no_region_is_delivered_here_or_not_at_all() {
    let mut h = Harness::spanning(true);
    let mut sent = h.send_peer("alice", "bob", false);
    h.settle();
    assert!(matches!(
        sent.now(),
        Ok(PeerRouted::Delivered { receipts, .. }) if receipts.is_empty()
    ));
    assert!(h.regions.is_empty());
}
