//! The behaviour every [`Store`](crate::Store) implementation must show, written once and run
//! against each backend (see the tests at the bottom, and the Redis backend's).

use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::UserId;
use parley_proto::v1;

use crate::ChannelAttribute;
use crate::Conversation;
use crate::HistoryMessage;
use crate::HistoryQuery;
use crate::InboxLimits;
use crate::Order;
use crate::Store;
use crate::StoredChannelAttributes;

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

/// Runs every behaviour check against `store`, which must be empty.
pub async fn all(store: &dyn Store) {
    inbox_keeps_order_and_limits(store).await;
    history_pages_in_both_orders_and_counts(store).await;
    channel_attributes_round_trip_and_expire(store).await;
    sequence_high_water_marks_persist(store).await;
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
            .append(&app(), &room, message(n, n as i64 * 100, &format!("c{n}")))
            .await
            .unwrap();
    }
    store
        .append(&app(), &pair, message(100, 150, "p1"))
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

    assert_eq!(
        store.purge(&app(), 350).await.unwrap(),
        4,
        "c1, c2, c3 and p1"
    );
    assert_eq!(store.count(&app(), &room, 0, 0).await.unwrap(), 4);
    assert_eq!(store.count(&app(), &pair, 0, 0).await.unwrap(), 0);
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
    store
        .put(&app(), &channel("b"), record("two", 1_000))
        .await
        .unwrap();
    assert_eq!(
        store.get(&app(), &channel("a")).await.unwrap(),
        Some(record("one", 0))
    );
    assert_eq!(store.expire(999, None).await.unwrap(), 0);
    assert_eq!(store.expire(1_000, None).await.unwrap(), 1);
    assert_eq!(store.get(&app(), &channel("b")).await.unwrap(), None);
    // At start-up, records without expiry get one.
    assert_eq!(store.expire(1_000, Some(5_000)).await.unwrap(), 0);
    assert_eq!(
        store.get(&app(), &channel("a")).await.unwrap(),
        Some(record("one", 5_000))
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

#[cfg(test)]
mod tests {
    use crate::EmbeddedStore;

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
