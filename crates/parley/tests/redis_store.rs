//! The Redis store: the storage behaviour suite against one Redis and a three-node cluster, no
//! acknowledged data lost across a Redis restart, and clear errors then recovery when Redis is down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use parley_client::Client;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_core::rate::Rate;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_store::RedisStore;
use parley_testkit::RedisCluster;
use parley_testkit::RedisServer;
use parley_testkit::TestServer;
use parley_testkit::ops::text_of;

#[tokio::test]
async fn one_redis_behaves_like_every_store() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    parley_store::behaviour::all(&store).await;
}

#[tokio::test]
async fn a_redis_cluster_behaves_like_every_store() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(&cluster.url()).await.unwrap();
    parley_store::behaviour::all(&store).await;
}

fn offline() -> PeerMessageOptions {
    PeerMessageOptions {
        enable_offline_messaging: true,
        enable_historical_messaging: false,
    }
}

async fn call(client: &Client, op: Op) -> Result<ReplyResult, parley_client::ClientError> {
    client.request(op).await?.wait().await
}

fn history_send(body: &str) -> Op {
    Op::SendMessage(v1::SendMessageRequest {
        channel_id: "room".into(),
        message: Message::text(body).0.into(),
        enable_historical_messaging: true,
    })
}

fn set_attribute(value: &str) -> Op {
    Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
        channel_id: "room".into(),
        attributes: [("last".to_owned(), value.to_owned())]
            .into_iter()
            .collect(),
        enable_notification_to_channel_members: false,
    })
}

#[tokio::test]
async fn a_redis_restart_mid_traffic_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start();
    let server = TestServer::builder()
        .store(redis.url())
        .limits(|limits| limits.attribute_rate = parley_core::rate::Rate::new(1000, 1000.0))
        .start()
        .await;
    let (alice, _events) = Client::login(server.client_config("alice")).await.unwrap();
    alice.join("room").await.unwrap();
    let user_attributes = Op::SetLocalUserAttributes(v1::SetLocalUserAttributesRequest {
        attributes: [("status".to_owned(), "live".to_owned())]
            .into_iter()
            .collect(),
    });
    call(&alice, user_attributes).await.unwrap();

    let mut offline_acked = BTreeSet::new();
    let mut history_acked = BTreeSet::new();
    let mut attribute_acked = None;
    let mut refused = 0;
    for n in 0..60 {
        if n == 20 {
            redis.restart();
        }
        let body = format!("m{n}");
        match alice
            .send_message_to_peer("bob", Message::text(&body), offline())
            .await
        {
            Ok(sent) if sent.result() == PeerMessageResult::CachedByServer => {
                offline_acked.insert(body.clone());
            }
            Ok(sent) => panic!("unexpected result {:?}", sent.result()),
            Err(error) => {
                assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
                refused += 1;
            }
        }
        if call(&alice, history_send(&body)).await.is_ok() {
            history_acked.insert(body.clone());
        }
        if call(&alice, set_attribute(&body)).await.is_ok() {
            attribute_acked = Some(body.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        offline_acked.len() >= 40,
        "the store came back: {} acknowledged",
        offline_acked.len()
    );
    eprintln!("requests refused while redis restarted: {refused}");

    let (_bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    let mut received = BTreeSet::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), bob_events.recv()).await
    {
        if let Event::MessageFromPeer(message) = event {
            received.insert(text_of(&message.message));
        }
    }
    let missing: Vec<_> = offline_acked.difference(&received).collect();
    assert!(missing.is_empty(), "offline messages lost: {missing:?}");

    let ReplyResult::QueryHistory(page) = call(
        &alice,
        Op::QueryHistory(v1::QueryHistoryRequest {
            conversation: Some(v1::query_history_request::Conversation::ChannelId(
                "room".into(),
            )),
            limit: 100,
            ..Default::default()
        }),
    )
    .await
    .unwrap() else {
        panic!()
    };
    let stored: BTreeSet<String> = page.messages.iter().map(|m| text_of(&m.message)).collect();
    let missing: Vec<_> = history_acked.difference(&stored).collect();
    assert!(missing.is_empty(), "history lost: {missing:?}");

    let ReplyResult::ChannelAttributes(attributes) = call(
        &alice,
        Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: "room".into(),
            keys: Vec::new(),
        }),
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        Some(attributes.attributes[0].value.clone()),
        attribute_acked
    );

    let ReplyResult::UserAttributes(user) = call(
        &alice,
        Op::GetUserAttributes(v1::GetUserAttributesRequest {
            user_id: "alice".into(),
            keys: Vec::new(),
        }),
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(user.attributes["status"], "live");
}

#[tokio::test]
async fn with_redis_down_storage_fails_fast_the_rest_works_and_it_recovers() {
    let mut redis = RedisServer::start();
    let server = TestServer::builder().store(redis.url()).start().await;
    let (alice, _alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (bob, _bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    alice.join("room").await.unwrap();
    bob.join("room").await.unwrap();

    redis.stop();
    // What needs Redis fails with UNAVAILABLE, promptly.
    let started = Instant::now();
    let error = alice
        .send_message_to_peer("carol", Message::text("for later"), offline())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    let error = call(&alice, history_send("kept?")).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // What does not need it keeps working.
    let sent = alice
        .send_message_to_peer("bob", Message::text("live"), PeerMessageOptions::default())
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    alice
        .send_message("room", Message::text("live too"))
        .await
        .unwrap();
    assert_eq!(alice.get_members("room").await.unwrap(), ["alice", "bob"]);

    // Redis comes back: storage works again, without restarting Parley.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match alice
            .send_message_to_peer("carol", Message::text("for later"), offline())
            .await
        {
            Ok(sent) => {
                assert_eq!(sent.result(), PeerMessageResult::CachedByServer);
                break;
            }
            Err(error) if Instant::now() < deadline => {
                assert_eq!(error.code, ErrorCode::Unavailable);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the store did not come back: {error}"),
        }
    }
    call(&alice, history_send("kept")).await.unwrap();
}

#[tokio::test]
async fn a_hung_redis_costs_one_timeout_not_one_per_request() {
    let redis = RedisServer::start();
    let server = TestServer::builder().store(redis.url()).start().await;
    let (alice, _alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (_bob, _bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    alice.join("room").await.unwrap();

    redis.pause();
    let started = Instant::now();
    let error = alice
        .send_message_to_peer("carol", Message::text("for later"), offline())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    let first = started.elapsed();
    assert!(first < Duration::from_secs(3), "bounded: {first:?}");
    // The breaker is open: storage requests now fail at once, and the rest is not held up.
    let started = Instant::now();
    for n in 0..5 {
        let error = call(&alice, history_send(&format!("h{n}")))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
    }
    let sent = alice
        .send_message_to_peer("bob", Message::text("live"), PeerMessageOptions::default())
        .await
        .unwrap();
    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "requests waited on the hung store: {:?}",
        started.elapsed()
    );

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&alice, history_send("back")).await.is_err() {
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With Redis frozen, what needs no storage stays fast on the very shard where other users'
/// history and offline messages wait for it: joins of live channels, channel messages without
/// history, peer messages to online users, presence. (Before owners ran store operations beside
/// their shards, each hung call stalled its whole shard for the 1 s timeout.)
#[tokio::test]
async fn a_frozen_redis_holds_up_only_what_needs_it() {
    const WRITERS: usize = 4;
    const PROBES: usize = 300;
    let redis = RedisServer::start();
    // One shard: every key below shares it with the keys waiting on Redis.
    let server = TestServer::builder()
        .store(redis.url())
        .owner(|owner| owner.shards = 1)
        // Rate limits are not what this measures.
        .limits(|limits| {
            let plenty = Rate::new(10_000, 10_000.0);
            (limits.join_rate, limits.message_rate) = (plenty, plenty);
            (limits.query_rate, limits.status_rate) = (plenty, plenty);
        })
        .start()
        .await;
    let (alice, _alice_events) = Client::login(server.client_config("alice")).await.unwrap();
    let (bob, _bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    let mut carols = Vec::new();
    // One per join, so no join waits for the same user's leave.
    for n in 0..PROBES / 4 {
        let (carol, events) = Client::login(server.client_config(&format!("carol{n}")))
            .await
            .unwrap();
        carols.push((carol, events));
    }
    let carols: Vec<Client> = carols.iter().map(|(carol, _)| carol.clone()).collect();
    alice.join("live").await.unwrap();
    bob.join("live").await.unwrap();
    let mut writers = Vec::new();
    for n in 0..WRITERS {
        let uid = format!("writer{n}");
        let (writer, events) = Client::login(server.client_config(&uid)).await.unwrap();
        writer.join(&format!("archive{n}")).await.unwrap();
        writers.push((writer, events));
    }

    redis.pause();
    let stop = Arc::new(AtomicBool::new(false));
    let storage_load: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(n, (writer, events))| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let _events = events;
                // The longest a storage request waited: the store's timeout, when it hung.
                let mut longest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let history = Op::SendMessage(v1::SendMessageRequest {
                        channel_id: format!("archive{n}"),
                        message: Message::text("kept").0.into(),
                        enable_historical_messaging: true,
                    });
                    let started = Instant::now();
                    assert!(call(&writer, history).await.is_err());
                    longest = longest.max(started.elapsed());
                    let started = Instant::now();
                    let offline = writer
                        .send_message_to_peer(
                            &format!("absent{n}"),
                            Message::text("later"),
                            offline(),
                        )
                        .await;
                    assert!(offline.is_err());
                    longest = longest.max(started.elapsed());
                }
                longest
            })
        })
        .collect();

    // Open loop: a request every 10 ms whether or not the last ones were answered, so a stall
    // shows in every request it holds up.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut probes = Vec::new();
    for n in 0..PROBES {
        tick.tick().await;
        let (alice, carol) = (alice.clone(), carols[n / 4].clone());
        probes.push(tokio::spawn(async move {
            let started = Instant::now();
            match n % 4 {
                0 => {
                    alice
                        .send_message("live", Message::text("m"))
                        .await
                        .unwrap();
                }
                1 => {
                    let sent = alice
                        .send_message_to_peer(
                            "bob",
                            Message::text("hi"),
                            PeerMessageOptions::default(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(sent.result(), PeerMessageResult::ReceivedByPeer);
                }
                2 => {
                    let presence = Op::QueryPeersOnlineStatus(v1::QueryPeersOnlineStatusRequest {
                        peer_ids: vec!["bob".into()],
                    });
                    call(&alice, presence).await.unwrap();
                }
                _ => {
                    carol.join("live").await.unwrap();
                    let took = started.elapsed();
                    carol.leave("live").await.unwrap();
                    return took;
                }
            }
            started.elapsed()
        }));
    }
    let mut took = Vec::new();
    for probe in probes {
        took.push(probe.await.unwrap());
    }
    // The writers stop (their last requests fail too) before Redis comes back.
    stop.store(true, Ordering::Relaxed);
    let mut storage_waited = Duration::ZERO;
    for writer in storage_load {
        storage_waited = storage_waited.max(writer.await.unwrap());
    }
    redis.resume();
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    let max = took[took.len() - 1];
    println!(
        "frozen Redis: {} requests needing no storage, p99 {p99:?}, max {max:?}; storage requests waited up to {storage_waited:?}",
        took.len()
    );
    assert!(
        storage_waited >= Duration::from_millis(250),
        "keys waited on the frozen Redis meanwhile: {storage_waited:?}"
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}, max {max:?}");
}
