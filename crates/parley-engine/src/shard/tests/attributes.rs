//! User and channel attributes: who may write them, what members are told, what reads back.

use super::*;

#[test]
fn user_attributes_need_a_session_and_read_back_as_written() {
    let mut h = Harness::new();
    let update = || ops::UpdateUserAttributes {
        user: user_key("bob"),
        op: parley_core::attributes::AttributeOp::Set(
            [("mood".to_owned(), "calm".to_owned())].into(),
        ),
    };
    let refused = h.ask(update()).now();
    assert_eq!(refused.unwrap_err().code, ErrorCode::NotLoggedIn);
    h.login("bob", session(2));
    let mut updated = h.ask(update());
    h.settle();
    updated.now().unwrap();
    let mut read = h.ask(ops::UserAttributes {
        user: user_key("bob"),
        keys: Vec::new(),
    });
    h.settle();
    assert_eq!(
        read.now(),
        Ok([("mood".to_owned(), "calm".to_owned())].into())
    );
}

#[test]
fn channel_attribute_changes_reach_the_members_when_asked() {
    let mut h = Harness::new();
    let (alice, bob) = (session(1), session(2));
    h.join("room", "alice", alice);
    h.join("room", "bob", bob);
    h.settle();
    let mut updated = h.ask(ops::UpdateChannelAttributes {
        channel: channel_key("room"),
        by: UserId::parse("alice").unwrap(),
        op: parley_core::attributes::AttributeOp::AddOrUpdate(
            [("topic".to_owned(), "rust".to_owned())].into(),
        ),
        notify_members: true,
    });
    h.settle();
    updated.now().unwrap();
    assert!(h.edge.saw(bob, |event| matches!(
        event,
        EventKind::AttributesUpdated(updated)
            if updated.attributes.iter().any(|attribute| attribute.value == "rust")
    )));
    let mut read = h.ask(ops::ChannelAttributes {
        channel: channel_key("room"),
        keys: vec!["topic".into()],
    });
    h.settle();
    let attributes = read.now().unwrap();
    assert_eq!(attributes.len(), 1);
    assert_eq!(attributes[0].last_update_user_id, "alice");
}
