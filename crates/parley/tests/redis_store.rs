//! The Redis store: the storage behaviour suite against one Redis and a three-node cluster, no
//! acknowledged data lost across a Redis restart, and clear errors then recovery when Redis is down.

use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use parley_client::Client;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
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
