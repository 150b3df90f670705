//! The behaviour every [`Store`](crate::Store) implementation must show, written once and run
//! against each backend (see the tests at the bottom, and the Redis backend's).

use futures_util::future::join_all;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::NodeId;
use parley_core::ids::SessionId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_proto::v1;

use crate::ChannelAttribute;
use crate::Conversation;
use crate::EventStream;
use crate::HistoryMessage;
use crate::HistoryQuery;
use crate::InboxLimits;
use crate::Order;
use crate::Restriction;
use crate::Scope;
use crate::Store;
use crate::StoredChannelAttributes;
use crate::StoredEvent;
use crate::StoredUserAttributes;

fn app() -> AppId {
    AppId::parse("0123456789abcdef0123456789abcdef").unwrap()
}

fn uid(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).unwrap()
}

fn message(id: u64, ts: i64, text: &str) -> HistoryMessage {
    HistoryMessage {
        message_id: id,
        from: "alice".into(),
        message: Some(v1::MessageBody {
            content: Some(v1::message_body::Content::Text(text.into())),
            description: String::new(),
        }),
        server_received_ts: ts,
        seq: 0,
    }
}

fn texts(messages: &[HistoryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|message| match &message.message.as_ref().unwrap().content {
            Some(v1::message_body::Content::Text(text)) => text.clone(),
            _ => String::new(),
        })
        .collect()
}

/// History retention long enough not to matter.
const KEEP: i64 = 1_000_000_000;

/// Runs every behaviour check against `store`, which must be empty.
pub async fn all(store: &dyn Store) {
    inbox_keeps_order_and_limits(store).await;
    history_pages_in_both_orders_and_counts(store).await;
    history_appends_drop_what_retention_excludes(store).await;
    look_alike_conversations_are_apart(store).await;
    channel_attributes_round_trip_and_expire(store).await;
    sequence_high_water_marks_persist(store).await;
    user_attributes_round_trip(store).await;
    session_directory_tracks_sessions(store).await;
    region_directory_tracks_regions(store).await;
    concurrent_writes_keep_their_invariants(store).await;
    restrictions_expire_and_lift(store).await;
    event_logs_page_and_trim(store).await;
}

pub async fn restrictions_expire_and_lift(store: &dyn Store) {
    let (now, room) = (1_000_000, Scope::Channel(channel("room")));
    let restriction = |name: &str, until_ms: i64| Restriction {
        uid: name.to_owned(),
        since_ms: now - 10,
        until_ms,
        reason: format!("{name} misbehaved"),
    };
    for (name, until) in [
        ("mallory", now + 60_000),
        ("oscar", now + 1),
        ("trent", now),
    ] {
        store
            .restrict(&app(), &Scope::Login, restriction(name, until))
            .await
            .unwrap();
    }
    store
        .restrict(&app(), &room, restriction("mallory", now + 5))
        .await
        .unwrap();
    // A ban is not a mute, and a restriction ends at its time.
    let banned = store
        .restrictions(&app(), &Scope::Login, now)
        .await
        .unwrap();
    let names: Vec<&str> = banned.iter().map(|r| r.uid.as_str()).collect();
    assert_eq!(names, ["mallory", "oscar"]);
    assert_eq!(banned[0], restriction("mallory", now + 60_000));
    let muted = store.restrictions(&app(), &room, now).await.unwrap();
    assert_eq!(muted, [restriction("mallory", now + 5)]);
    assert!(
        store
            .restrictions(&app(), &Scope::Channel(channel("hall")), now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .restriction(&app(), &Scope::Login, &uid("oscar"), now)
            .await
            .unwrap(),
        Some(restriction("oscar", now + 1))
    );
    assert_eq!(
        store
            .restriction(&app(), &Scope::Login, &uid("oscar"), now + 1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .restriction(&app(), &Scope::Login, &uid("trent"), now)
            .await
            .unwrap(),
        None
    );
    // A later restriction replaces the earlier one.
    store
        .restrict(&app(), &Scope::Login, restriction("oscar", now + 90))
        .await
        .unwrap();
    assert_eq!(
        store
            .restriction(&app(), &Scope::Login, &uid("oscar"), now + 50)
            .await
            .unwrap()
            .map(|r| r.until_ms),
        Some(now + 90)
    );
    assert!(
        store
            .lift(&app(), &Scope::Login, &uid("oscar"), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lift(&app(), &Scope::Login, &uid("oscar"), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lift(&app(), &Scope::Login, &uid("trent"), now)
            .await
            .unwrap()
    );
    let banned = store
        .restrictions(&app(), &Scope::Login, now)
        .await
        .unwrap();
    assert_eq!(banned, [restriction("mallory", now + 60_000)]);
}

pub async fn event_logs_page_and_trim(store: &dyn Store) {
    let now = 1_700_000_000_000;
    let limits = InboxLimits {
        max_count: 5,
        max_age_ms: 60_000,
    };
    let event = |n: usize| StoredEvent {
        id: 0,
        ts_ms: now,
        kind: if n.is_multiple_of(2) {
            "login"
        } else {
            "logout"
        }
        .to_owned(),
        uid: format!("user{n}"),
        channel_id: String::new(),
        reason: String::new(),
    };
    store
        .append_events(
            &app(),
            EventStream::Users,
            (0..3).map(event).collect(),
            limits,
            now,
        )
        .await
        .unwrap();
    let first = store
        .events(&app(), EventStream::Users, 0, 10)
        .await
        .unwrap();
    let names: Vec<&str> = first.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(names, ["user0", "user1", "user2"]);
    assert!(first.windows(2).all(|pair| pair[0].id < pair[1].id));
    assert!(
        first[0].id >= now as u64 * 1000,
        "ids start at the append time"
    );
    assert!(
        store
            .events(&app(), EventStream::Channels, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Paging: after the last id seen.
    let page = store
        .events(&app(), EventStream::Users, first[0].id, 1)
        .await
        .unwrap();
    assert_eq!(page, [first[1].clone()]);
    // Over the count: the oldest go.
    store
        .append_events(
            &app(),
            EventStream::Users,
            (3..7).map(event).collect(),
            limits,
            now,
        )
        .await
        .unwrap();
    let kept = store
        .events(&app(), EventStream::Users, 0, 10)
        .await
        .unwrap();
    let names: Vec<&str> = kept.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(names, ["user2", "user3", "user4", "user5", "user6"]);
    // Too old: everything appended a minute before goes; ids keep growing.
    let later = now + 61_000;
    store
        .append_events(&app(), EventStream::Users, vec![event(7)], limits, later)
        .await
        .unwrap();
    let kept = store
        .events(&app(), EventStream::Users, 0, 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].uid, "user7");
    assert!(kept[0].id > first[2].id);
}

pub async fn user_attributes_round_trip(store: &dyn Store) {
    let dana = uid("dana");
    assert!(
        store
            .user_attributes(&app(), &dana)
            .await
            .unwrap()
            .attributes
            .is_empty()
    );
    let set = StoredUserAttributes {
        attributes: [("mood".to_owned(), "calm".to_owned())]
            .into_iter()
            .collect(),
    };
    store
        .set_user_attributes(&app(), &dana, set.clone())
        .await
        .unwrap();
    assert_eq!(store.user_attributes(&app(), &dana).await.unwrap(), set);
    assert!(
        store
            .user_attributes(&app(), &uid("erin"))
            .await
            .unwrap()
            .attributes
            .is_empty()
    );
    store
        .set_user_attributes(&app(), &dana, StoredUserAttributes::default())
        .await
        .unwrap();
    assert!(
        store
            .user_attributes(&app(), &dana)
            .await
            .unwrap()
            .attributes
            .is_empty()
    );
}

pub async fn region_directory_tracks_regions(store: &dyn Store) {
    store
        .ping()
        .await
        .expect("a store that is up answers a ping");
    let grace = uid("grace");
    assert!(store.user_regions(&app(), &grace).await.unwrap().is_empty());
    for (region, online) in [("us", true), ("ap", true), ("us", true), ("eu", false)] {
        store
            .set_user_region(&app(), &grace, region, online)
            .await
            .unwrap();
    }
    assert_eq!(
        store.user_regions(&app(), &grace).await.unwrap(),
        ["ap", "us"]
    );
    store
        .set_user_region(&app(), &grace, "ap", false)
        .await
        .unwrap();
    assert_eq!(store.user_regions(&app(), &grace).await.unwrap(), ["us"]);
    // Another user's regions are their own.
    assert!(
        store
            .user_regions(&app(), &uid("heidi"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn session_directory_tracks_sessions(store: &dyn Store) {
    let frank = uid("frank");
    let session = |edge, session| SessionRef {
        edge: NodeId(edge),
        session: SessionId(session),
    };
    assert!(store.sessions(&app(), &frank).await.unwrap().is_empty());
    store
        .register_session(&app(), &frank, session(1, 10))
        .await
        .unwrap();
    store
        .register_session(&app(), &frank, session(2, 20))
        .await
        .unwrap();
    store
        .register_session(&app(), &frank, session(1, 10))
        .await
        .unwrap();
    assert_eq!(
        store.sessions(&app(), &frank).await.unwrap(),
        [session(1, 10), session(2, 20)]
    );
    store
        .unregister_session(&app(), &frank, session(1, 10))
        .await
        .unwrap();
    assert_eq!(
        store.sessions(&app(), &frank).await.unwrap(),
        [session(2, 20)]
    );
    store
        .unregister_session(&app(), &frank, session(2, 20))
        .await
        .unwrap();
    assert!(store.sessions(&app(), &frank).await.unwrap().is_empty());
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub async fn inbox_keeps_order_and_limits(store: &dyn Store) {
    let limits = InboxLimits {
        max_count: 3,
        max_age_ms: 10_000,
    };
    let bob = uid("bob");
    for (id, ts) in [(1, 1_000), (2, 2_000), (3, 3_000), (4, 4_000)] {
        store
            .push(&app(), &bob, message(id, ts, &format!("m{id}")), limits, ts)
            .await
            .unwrap();
    }
    let listed = store
        .list(&app(), &bob, limits.max_age_ms, 4_000)
        .await
        .unwrap();
    assert_eq!(texts(&listed), ["m2", "m3", "m4"], "oldest dropped first");
    // Age: at t=13_500 only m4 (t=4_000) is younger than 10 s.
    let listed = store
        .list(&app(), &bob, limits.max_age_ms, 13_500)
        .await
        .unwrap();
    assert_eq!(texts(&listed), ["m4"]);
    // Removal of a delivered message; other users' inboxes are separate.
    store.remove(&app(), &bob, &listed[0]).await.unwrap();
    let listed = store
        .list(&app(), &bob, limits.max_age_ms, 4_000)
        .await
        .unwrap();
    assert_eq!(texts(&listed), ["m2", "m3"]);
    assert!(
        store
            .list(&app(), &uid("carol"), 10_000, 4_000)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn history_pages_in_both_orders_and_counts(store: &dyn Store) {
    let room = Conversation::Channel(channel("room"));
    let pair = Conversation::peers(uid("bob"), uid("alice"));
    assert_eq!(pair, Conversation::peers(uid("alice"), uid("bob")));
    for n in 1..=7u64 {
        store
            .append(
                &app(),
                &room,
                message(n, n as i64 * 100, &format!("c{n}")),
                KEEP,
            )
            .await
            .unwrap();
    }
    store
        .append(&app(), &pair, message(100, 150, "p1"), KEEP)
        .await
        .unwrap();

    let page = |order, after| HistoryQuery {
        start_ms: 200,
        end_ms: 700,
        limit: 2,
        order,
        after,
    };
    let first = store
        .query(&app(), &room, page(Order::Ascending, None))
        .await
        .unwrap();
    assert_eq!(texts(&first), ["c2", "c3"], "start inclusive");
    let last = first.last().unwrap();
    let second = store
        .query(
            &app(),
            &room,
            page(
                Order::Ascending,
                Some((last.server_received_ts, last.message_id)),
            ),
        )
        .await
        .unwrap();
    assert_eq!(texts(&second), ["c4", "c5"]);
    let newest = store
        .query(&app(), &room, page(Order::Descending, None))
        .await
        .unwrap();
    assert_eq!(texts(&newest), ["c6", "c5"], "end exclusive");
    let last = newest.last().unwrap();
    let older = store
        .query(
            &app(),
            &room,
            page(
                Order::Descending,
                Some((last.server_received_ts, last.message_id)),
            ),
        )
        .await
        .unwrap();
    assert_eq!(texts(&older), ["c4", "c3"]);

    assert_eq!(store.count(&app(), &room, 200, 700).await.unwrap(), 5);
    assert_eq!(store.count(&app(), &room, 0, 0).await.unwrap(), 7);
    assert_eq!(store.count(&app(), &pair, 0, 0).await.unwrap(), 1);
}

/// Uids may hold `:`; the pairs (`x:y`, `z`) and (`x`, `y:z`) are two conversations all the same.
pub async fn look_alike_conversations_are_apart(store: &dyn Store) {
    let one = Conversation::peers(uid("x:y"), uid("z"));
    let other = Conversation::peers(uid("x"), uid("y:z"));
    store
        .append(&app(), &one, message(1, 100, "x:y to z"), KEEP)
        .await
        .unwrap();
    let everything = HistoryQuery {
        start_ms: 0,
        end_ms: 1_000,
        limit: 10,
        order: Order::Ascending,
        after: None,
    };
    let app = app();
    let read = |conversation| store.query(&app, conversation, everything);
    assert_eq!(texts(&read(&one).await.unwrap()), ["x:y to z"]);
    assert!(read(&other).await.unwrap().is_empty(), "x and y:z see it");
}

pub async fn history_appends_drop_what_retention_excludes(store: &dyn Store) {
    let talk = Conversation::Channel(channel("retained"));
    for n in 1..=3u64 {
        store
            .append(
                &app(),
                &talk,
                message(n, n as i64 * 100, &format!("r{n}")),
                KEEP,
            )
            .await
            .unwrap();
    }
    // A message at t=1_000 with a retention of 750 ms: what came before t=250 goes.
    store
        .append(&app(), &talk, message(4, 1_000, "r4"), 750)
        .await
        .unwrap();
    let query = HistoryQuery {
        start_ms: 0,
        end_ms: 0,
        limit: 10,
        order: Order::Ascending,
        after: None,
    };
    let kept = store.query(&app(), &talk, query).await.unwrap();
    assert_eq!(texts(&kept), ["r3", "r4"]);
}

/// For stores whose retention needs a sweep (the embedded one): old history goes on `purge`.
pub async fn purge_drops_old_history(store: &dyn Store) {
    let old = Conversation::Channel(channel("purged"));
    for n in 1..=3u64 {
        store
            .append(
                &app(),
                &old,
                message(n, n as i64 * 100, &format!("o{n}")),
                KEEP,
            )
            .await
            .unwrap();
    }
    // The purge covers the whole app, so earlier checks' old entries may go too.
    assert!(store.purge(&app(), 250).await.unwrap() >= 2);
    assert_eq!(store.count(&app(), &old, 0, 0).await.unwrap(), 1);
}

pub async fn channel_attributes_round_trip_and_expire(store: &dyn Store) {
    let record = |value: &str, expires_at_ms| StoredChannelAttributes {
        attributes: vec![ChannelAttribute {
            key: "topic".into(),
            value: value.into(),
            last_update_user_id: "alice".into(),
            last_update_ts: 42,
        }],
        expires_at_ms,
    };
    assert_eq!(store.get(&app(), &channel("a")).await.unwrap(), None);
    store
        .put(&app(), &channel("a"), record("one", 0))
        .await
        .unwrap();
    // Expiry is wall-clock time: a backend may enforce it by itself (Redis TTLs) or on `expire`.
    let expires_at = wall_clock_ms() + 300;
    store
        .put(&app(), &channel("b"), record("two", expires_at))
        .await
        .unwrap();
    assert_eq!(
        store.get(&app(), &channel("a")).await.unwrap(),
        Some(record("one", 0))
    );
    assert_eq!(
        store.get(&app(), &channel("b")).await.unwrap(),
        Some(record("two", expires_at))
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    store.expire(wall_clock_ms(), None).await.unwrap();
    assert_eq!(store.get(&app(), &channel("b")).await.unwrap(), None);
    assert_eq!(
        store.get(&app(), &channel("a")).await.unwrap(),
        Some(record("one", 0)),
        "a record without expiry stays"
    );
    // An empty set deletes the record.
    store
        .put(&app(), &channel("a"), StoredChannelAttributes::default())
        .await
        .unwrap();
    assert_eq!(store.get(&app(), &channel("a")).await.unwrap(), None);
}

pub async fn sequence_high_water_marks_persist(store: &dyn Store) {
    assert_eq!(store.high_water(&app(), &channel("seq")).await.unwrap(), 0);
    store
        .set_high_water(&app(), &channel("seq"), 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.high_water(&app(), &channel("seq")).await.unwrap(),
        1_000
    );
    assert_eq!(
        store.high_water(&app(), &channel("other")).await.unwrap(),
        0
    );
}

/// Many writers at once: limits and orders hold, and compare-and-set lets exactly one through.
pub async fn concurrent_writes_keep_their_invariants(store: &dyn Store) {
    let limits = InboxLimits {
        max_count: 50,
        max_age_ms: 1_000_000,
    };
    let crowd = uid("crowd");
    let pushes = (1..=200u64).map(|n| {
        let crowd = crowd.clone();
        async move {
            store
                .push(
                    &app(),
                    &crowd,
                    message(n, n as i64, &format!("x{n}")),
                    limits,
                    200,
                )
                .await
        }
    });
    for pushed in join_all(pushes).await {
        pushed.unwrap();
    }
    let kept = store
        .list(&app(), &crowd, limits.max_age_ms, 200)
        .await
        .unwrap();
    let expected: Vec<String> = (151..=200).map(|n| format!("x{n}")).collect();
    assert_eq!(texts(&kept), expected, "exactly the newest 50, in order");

    let (the_app, race) = (app(), channel("race"));
    let marks = (1..=100u64).map(|n| store.set_high_water(&the_app, &race, n * 7 % 1000));
    for marked in join_all(marks).await {
        marked.unwrap();
    }
    let highest = (1..=100u64).map(|n| n * 7 % 1000).max().unwrap();
    assert_eq!(
        store.high_water(&app(), &channel("race")).await.unwrap(),
        highest
    );

    let record = |value: &str| StoredChannelAttributes {
        attributes: vec![ChannelAttribute {
            key: "k".into(),
            value: value.into(),
            last_update_user_id: "u".into(),
            last_update_ts: 1,
        }],
        expires_at_ms: 0,
    };
    let cas = channel("cas");
    let attempts =
        (0..20).map(|n| store.replace(&the_app, &cas, None, record(&format!("writer {n}"))));
    let winners = join_all(attempts)
        .await
        .into_iter()
        .filter(|swapped| *swapped.as_ref().unwrap())
        .count();
    assert_eq!(
        winners, 1,
        "only one writer replaces the same starting state"
    );
    let current = store.get(&app(), &channel("cas")).await.unwrap();
    assert!(
        !store
            .replace(&app(), &channel("cas"), None, record("late"))
            .await
            .unwrap(),
        "a stale expectation is refused"
    );
    assert!(
        store
            .replace(&app(), &channel("cas"), current, record("next"))
            .await
            .unwrap()
    );
}

#[cfg(test)]
mod tests {
    use crate::ChannelAttribute;
    use crate::ChannelAttributeStore;
    use crate::EmbeddedStore;
    use crate::StoredChannelAttributes;

    /// At start-up the embedded store gives records left without expiry by a crash one.
    #[tokio::test]
    async fn embedded_store_adopts_orphaned_attributes() {
        let dir = temp_dir("orphans");
        let store = EmbeddedStore::open(&dir).unwrap();
        let record = StoredChannelAttributes {
            attributes: vec![ChannelAttribute {
                key: "k".into(),
                value: "v".into(),
                last_update_user_id: "u".into(),
                last_update_ts: 1,
            }],
            expires_at_ms: 0,
        };
        let app = super::app();
        store.put(&app, &super::channel("o"), record).await.unwrap();
        assert_eq!(store.expire(1_000, Some(5_000)).await.unwrap(), 0);
        let adopted = store
            .get(&app, &super::channel("o"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(adopted.expires_at_ms, 5_000);
        assert_eq!(store.expire(5_000, None).await.unwrap(), 1);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("parley-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn embedded_store_behaves() {
        let dir = temp_dir("behaviour");
        let store = EmbeddedStore::open(&dir).unwrap();
        super::all(&store).await;
        super::purge_drops_old_history(&store).await;
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn embedded_store_keeps_writes_across_reopen() {
        let dir = temp_dir("reopen");
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            super::sequence_high_water_marks_persist(&store).await;
        }
        // The writer thread lets go of the file once every handle is gone.
        let mut reopened = None;
        for _ in 0..50 {
            match EmbeddedStore::open(&dir) {
                Ok(store) => {
                    reopened = Some(store);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let store = reopened.expect("reopen the store");
        let app = super::app();
        assert_eq!(
            crate::SequenceStore::high_water(&store, &app, &super::channel("seq"))
                .await
                .unwrap(),
            1_000
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
