//! App events on a Kafka topic, read back from a real Kafka-protocol broker (tansu).

use std::time::Duration;

use parley_client::Client;
use parley_events::KafkaConfig;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::KafkaBroker;
use parley_testkit::TestServer;
use parley_testkit::http::basic;
use parley_testkit::http::http;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::StreamConsumer;
use serde_json::Value;
use serde_json::json;

const TOPIC: &str = "parley-events";

/// Reads the topic from the start until `done` holds for what was read (or 30 s pass).
async fn read_until(
    broker: &KafkaBroker,
    done: impl Fn(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", format!("test-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "200")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&read) {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("the events did not all come: {read:?}"))
            .expect("read the topic");
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let body = serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON");
        read.push((key, body));
    }
    read
}

fn types_of<'a>(read: &'a [(String, Value)], uid: &str, prefix: &str) -> Vec<&'a str> {
    read.iter()
        .filter(|(_, event)| event["uid"] == uid)
        .filter_map(|(_, event)| event["type"].as_str())
        .filter(|kind| kind.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn every_event_goes_to_the_kafka_topic_keyed_by_user() {
    let broker = KafkaBroker::start();
    let server = TestServer::builder()
        .kafka(KafkaConfig {
            brokers: broker.brokers(),
            topic: TOPIC.into(),
            partitions: 3,
        })
        .start()
        .await;
    for _ in 0..2 {
        let (alice, _events) = Client::login(server.client_config("alice")).await.unwrap();
        alice.join("room").await.unwrap();
        alice.leave("room").await.unwrap();
        alice.logout().await.unwrap();
    }
    let path = format!("/v1/apps/{}/peer-messages", server.app_id());
    let body = json!({
        "from": "shop",
        "to": "carol",
        "message": { "text": "your order shipped" },
        "enableOfflineMessaging": true,
    });
    let auth = [basic(CUSTOMER_KEY, CUSTOMER_SECRET)];
    http(
        server.http_addresses()[0],
        "POST",
        &path,
        &auth,
        Some(&body),
    )
    .await;

    let read = read_until(&broker, |read| {
        types_of(read, "alice", "").len() >= 8 && !types_of(read, "carol", "").is_empty()
    })
    .await;
    // A user's events keep their order (user events come from the user's owner, channel
    // events from the channel's: each in order).
    assert_eq!(
        types_of(&read, "alice", "user."),
        ["user.login", "user.logout", "user.login", "user.logout"]
    );
    assert_eq!(
        types_of(&read, "alice", "channel."),
        [
            "channel.join",
            "channel.leave",
            "channel.join",
            "channel.leave"
        ]
    );
    for (key, event) in &read {
        assert_eq!(
            key,
            &format!("{}/{}", server.app_id(), event["uid"].as_str().unwrap())
        );
        assert_eq!(event["appId"], server.app_id());
    }
    let cached = read
        .iter()
        .map(|(_, event)| event)
        .find(|event| event["uid"] == "carol")
        .unwrap();
    assert_eq!(cached["type"], "peer.message_cached");
    assert_eq!(cached["message"]["text"], "your order shipped");
    assert_eq!(cached["from"], "shop");
}
