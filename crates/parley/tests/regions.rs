//! Two regions, each a cluster of `parley run` processes with its own Redis, joined by one
//! Kafka-protocol broker (tansu): channel messages cross to the members of the other region,
//! once, in order, keeping their message IDs; a channel with members in one region puts none
//! of its messages on Kafka (only that the region has members); peer messages follow their
//! receiver to its region and say how they ended there, and so do call invitations and their
//! answers; a channel's attributes and member count
//! are the same in every region; a broker outage, or a region cut off
//! (every node frozen), delays crossing traffic but loses and repeats none of it, and leaves
//! each region's own traffic alone.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::Event;
use parley_client::Message;
use parley_client::PeerMessageOptions;
use parley_client::PeerMessageResult;
use parley_proto::cluster::v1::RegionRecord;
use parley_proto::cluster::v1::region_record;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use parley_testkit::KafkaBroker;
use parley_testkit::ProcessCluster;
use parley_testkit::otlp::OtlpReceiver;
use parley_testkit::processes::CLUSTER_APP_ID;
use parley_testkit::processes::Role;
use prost::Message as _;
use rdkafka::ClientConfig as KafkaClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::StreamConsumer;

/// A region: one meta node, two owners, one edge, its own Redis.
async fn region(broker: &KafkaBroker, name: &str, remote: &str) -> ProcessCluster {
    ProcessCluster::region(env!("CARGO_BIN_EXE_parley").as_ref(), broker, name, remote).await
}

/// How a member lists what it receives, as (where, text, message ID): channel messages under
/// their channel, peer messages under "peer:FROM", invitation events under "invitation" as
/// KIND:ID[:MORE], member counts under "count:CHANNEL", attribute updates under
/// "attributes:CHANNEL" as KEY=VALUE,… .
fn listed(event: Event) -> Option<(String, String, u64)> {
    let text_of = |body: Option<v1::MessageBody>| match body?.content? {
        v1::message_body::Content::Text(text) => Some(text),
        _ => None,
    };
    let invitation = |text: String| Some(("invitation".to_owned(), text, 0));
    match event {
        Event::ChannelMessage(message) => Some((
            message.channel_id,
            text_of(message.message)?,
            message.message_id,
        )),
        Event::MessageFromPeer(message) => Some((
            format!("peer:{}", message.peer_id),
            text_of(message.message)?,
            message.message_id,
        )),
        Event::RemoteInvitationReceived(received) => invitation(format!(
            "received:{}:{}",
            received.invitation_id, received.caller_id
        )),
        Event::LocalInvitationReceivedByPeer(received) => {
            invitation(format!("by-peer:{}", received.invitation_id))
        }
        Event::LocalInvitationAccepted(accepted) => invitation(format!(
            "accepted:{}:{}",
            accepted.invitation_id, accepted.response
        )),
        Event::RemoteInvitationAccepted(accepted) => {
            invitation(format!("remote-accepted:{}", accepted.invitation_id))
        }
        Event::MemberCountUpdated(update) => Some((
            format!("count:{}", update.channel_id),
            update.member_count.to_string(),
            0,
        )),
        Event::AttributesUpdated(update) => {
            let text = update
                .attributes
                .iter()
                .map(|attribute| format!("{}={}", attribute.key, attribute.value))
                .collect::<Vec<_>>()
                .join(",");
            Some((format!("attributes:{}", update.channel_id), text, 0))
        }
        _ => None,
    }
}

/// A logged-in member of `channels`, and what it receives (see [`listed`]).
struct Member {
    client: Client,
    received: Arc<Mutex<Vec<(String, String, u64)>>>,
}

impl Member {
    async fn join(region: &ProcessCluster, uid: &str, channels: &[&str]) -> Member {
        let config = ClientConfig::new(&region.edge_urls()[0], CLUSTER_APP_ID, uid);
        let (client, mut events) = Client::login(config).await.expect("login");
        for channel in channels {
            client.join(channel).await.expect("join");
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Some(entry) = listed(event) {
                    sink.lock().unwrap().push(entry);
                }
            }
        });
        Member { client, received }
    }

    /// Sends `text` to `channel`; its message ID.
    async fn send(&self, channel: &str, text: &str) -> u64 {
        self.client
            .send_message(channel, Message::text(text))
            .await
            .expect("send")
            .message_id
    }

    /// Sends `text` to `peer`, kept offline if need be: how it ended, and its message ID.
    async fn send_peer(&self, peer: &str, text: &str) -> (PeerMessageResult, u64) {
        let options = PeerMessageOptions {
            enable_offline_messaging: true,
            enable_historical_messaging: false,
        };
        let sent = self
            .client
            .send_message_to_peer(peer, Message::text(text), options)
            .await
            .expect("send to peer");
        (sent.result(), sent.message_id)
    }

    /// Invites `callee`; the invitation's ID.
    async fn invite(&self, callee: &str) -> u64 {
        let op = Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
            callee_id: callee.into(),
            content: "call me".into(),
            channel_id: "call-room".into(),
        });
        match self.client.request(op).await.expect("request").wait().await {
            Ok(ReplyResult::SendLocalInvitation(sent)) => sent.invitation_id,
            other => panic!("sendLocalInvitation: {other:?}"),
        }
    }

    /// Runs a request that answers with no result, or with a channel's attributes.
    async fn call(&self, op: Op) -> Vec<v1::ChannelAttribute> {
        match self.client.request(op).await.expect("request").wait().await {
            Ok(ReplyResult::ChannelAttributes(found)) => found.attributes,
            Ok(_) => Vec::new(),
            Err(error) => panic!("request failed: {error:?}"),
        }
    }

    /// The texts received in `channel` that start with `prefix`, in order.
    fn texts(&self, channel: &str, prefix: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, text, _)| from == channel && text.starts_with(prefix))
            .map(|(_, text, _)| text.clone())
            .collect()
    }

    fn message_id_of(&self, text: &str) -> Option<u64> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .find(|(_, received, _)| received == text)
            .map(|(_, _, id)| *id)
    }
}

/// Waits until `done` holds (or `limit` passes, and says what was seen).
async fn eventually(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends probes both ways until each side has one: both bridges run and each region knows the
/// other has members in `channel`.
async fn until_crossing(a: &Member, b: &Member, channel: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while b.texts(channel, "probe-a").is_empty() || a.texts(channel, "probe-b").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message crossed between the regions within 60 s"
        );
        a.send(channel, &format!("probe-a{n}")).await;
        b.send(channel, &format!("probe-b{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (1..=count).map(|n| format!("{prefix}{n:03}")).collect()
}

/// Every record on `topic` as (key, kind): read from the start until nothing more comes for 2 s.
async fn records_on(broker: &KafkaBroker, topic: &str) -> Vec<(String, &'static str)> {
    let consumer: StreamConsumer = KafkaClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", format!("test-keys-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    // The first read waits for the group to form.
    let mut quiet = Duration::from_secs(20);
    while let Ok(message) = tokio::time::timeout(quiet, consumer.recv()).await {
        let message = message.expect("read the topic");
        let record = RegionRecord::decode(message.payload().unwrap_or_default()).expect("a record");
        let kind = match record.record {
            Some(region_record::Record::Message(_)) => "message",
            Some(region_record::Record::Interest(_)) => "interest",
            Some(region_record::Record::User(_)) => "user",
            Some(region_record::Record::Peer(_)) => "peer",
            Some(region_record::Record::PeerOutcome(_)) => "peer outcome",
            Some(region_record::Record::Attributes(_)) => "attributes",
            Some(
                region_record::Record::CalleeEvent(_)
                | region_record::Record::InvitationReceipt(_)
                | region_record::Record::InvitationAnswer(_),
            ) => "invitation",
            None => "empty",
        };
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        records.push((key, kind));
        quiet = Duration::from_secs(2);
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_message_is_one_trace_in_both_regions() {
    let broker = KafkaBroker::start();
    let receiver = OtlpReceiver::start().await;
    let traced = [
        "--otlp-endpoint",
        &receiver.endpoint,
        "--trace-sample-ratio",
        "1",
    ];
    let quickly = [("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let binary: &std::path::Path = env!("CARGO_BIN_EXE_parley").as_ref();
    let eu = ProcessCluster::region_with(binary, &broker, "eu", "us", &traced, &quickly).await;
    let us = ProcessCluster::region_with(binary, &broker, "us", "eu", &traced, &quickly).await;
    let alice = Member::join(&eu, "alice", &["room"]).await;
    let bob = Member::join(&us, "bob", &["room"]).await;
    until_crossing(&alice, &bob, "room").await;
    alice.send("room", "traced").await;
    eventually(Duration::from_secs(20), "bob hears alice", || {
        bob.texts("room", "traced").len() == 1
    })
    .await;

    // The send in eu, its owner there, the owner in us that took it from Kafka and bob's edge
    // (each process exports its own spans, so they arrive in any order).
    let (send, process_eu, process_us, deliver_us) =
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let spans = receiver.spans();
                let in_trace = |trace_id: &[u8], name: &str, region: &str| {
                    spans
                        .iter()
                        .find(|span| {
                            span.trace_id == trace_id && span.name == name && span.region == region
                        })
                        .cloned()
                };
                // The last send from eu is alice's "traced" (the probes came before it).
                if let Some(send) = spans
                    .iter()
                    .rev()
                    .find(|span| span.name == "send" && span.region == "eu")
                    && let (Some(process_eu), Some(process_us), Some(deliver_us)) = (
                        in_trace(&send.trace_id, "process", "eu"),
                        in_trace(&send.trace_id, "process", "us"),
                        in_trace(&send.trace_id, "deliver", "us"),
                    )
                {
                    return (send.clone(), process_eu, process_us, deliver_us);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no trace crossed: {:#?}", receiver.spans()));
    assert_eq!(process_eu.parent_span_id, send.span_id);
    assert_eq!(
        process_us.parent_span_id, process_eu.span_id,
        "the region record carried the eu owner's span"
    );
    assert_eq!(deliver_us.parent_span_id, process_us.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_messages_cross_regions_once_in_order_where_members_are() {
    let broker = KafkaBroker::start();
    let eu = region(&broker, "eu", "us").await;
    let us = region(&broker, "us", "eu").await;
    let alice = Member::join(&eu, "alice", &["room", "local"]).await;
    let carol = Member::join(&eu, "carol", &["room", "local"]).await;
    let bob = Member::join(&us, "bob", &["room"]).await;
    until_crossing(&alice, &bob, "room").await;

    // A channel's member count is its members in every region.
    eventually(
        Duration::from_secs(10),
        "bob hears of three members",
        || bob.texts("count:room", "").last().map(String::as_str) == Some("3"),
    )
    .await;
    let counts = alice
        .client
        .get_channel_member_count(&["room", "local"])
        .await
        .expect("member counts");
    assert_eq!(counts, [("room".into(), 3), ("local".into(), 2)]);

    let mut alice_ids = Vec::new();
    for (a, b) in numbered("a", 20).iter().zip(numbered("b", 20)) {
        alice_ids.push(alice.send("room", a).await);
        bob.send("room", &b).await;
    }
    let expect_a = numbered("a", 20);
    let expect_b = numbered("b", 20);
    eventually(Duration::from_secs(20), "every message crossed", || {
        bob.texts("room", "a").len() >= 20
            && alice.texts("room", "b").len() >= 20
            && carol.texts("room", "b").len() >= 20
    })
    .await;
    // Let any repeat arrive before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bob.texts("room", "a"), expect_a, "alice → bob, across");
    assert_eq!(alice.texts("room", "b"), expect_b, "bob → alice, across");
    assert_eq!(carol.texts("room", "b"), expect_b, "bob → carol, across");
    assert_eq!(carol.texts("room", "a"), expect_a, "alice → carol, at home");
    // A message keeps its ID in every region.
    for (text, id) in expect_a.iter().zip(&alice_ids) {
        assert_eq!(bob.message_id_of(text), Some(*id), "{text}");
    }

    // Only eu has members in "local": its messages stay off Kafka.
    for text in numbered("l", 5) {
        alice.send("local", &text).await;
    }
    alice.send("room", "marker").await;
    eventually(Duration::from_secs(10), "the marker crossed", || {
        carol.texts("local", "l").len() == 5 && !bob.texts("room", "marker").is_empty()
    })
    .await;
    // What crossed for "local" is that eu has members in it (and will say when it has none).
    let records = records_on(&broker, "parley-region-eu").await;
    let room = format!("{CLUSTER_APP_ID}/room");
    let local = format!("{CLUSTER_APP_ID}/local");
    let count = |key: &str, kind: &str| {
        records
            .iter()
            .filter(|record| record.0 == key && record.1 == kind)
            .count()
    };
    assert!(count(&room, "message") >= 21, "{records:?}");
    assert_eq!(count(&local, "message"), 0, "{records:?}");
    assert_eq!(count(&local, "interest"), 1, "{records:?}");

    // Channel attributes set in one region become the channel's in the other, whose members
    // hear of them.
    alice
        .call(Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
            channel_id: "room".into(),
            attributes: [("topic".to_owned(), "rust".to_owned())].into(),
            enable_notification_to_channel_members: true,
        }))
        .await;
    eventually(
        Duration::from_secs(10),
        "bob heard of the attributes",
        || bob.texts("attributes:room", "") == ["topic=rust"],
    )
    .await;
    let attributes = bob
        .call(Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: "room".into(),
            keys: Vec::new(),
        }))
        .await;
    assert_eq!(attributes.len(), 1, "{attributes:?}");
    assert_eq!(
        (
            attributes[0].value.as_str(),
            attributes[0].last_update_user_id.as_str()
        ),
        ("rust", "alice")
    );

    // A region that takes a channel up is given its attributes by the regions that had it.
    alice
        .call(Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
            channel_id: "local".into(),
            attributes: [("mode".to_owned(), "quiet".to_owned())].into(),
            enable_notification_to_channel_members: false,
        }))
        .await;
    let erin = Member::join(&us, "erin", &["local"]).await;
    let get_local = || {
        erin.call(Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: "local".into(),
            keys: Vec::new(),
        }))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get_local().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "us never got local's attributes"
        );
        // Attribute reads are rate limited.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(get_local().await[0].value, "quiet");

    // Peer messages go to the region the receiver is in, and say how they ended there.
    let (result, id) = alice.send_peer("bob", "hello bob").await;
    assert_eq!(result, PeerMessageResult::ReceivedByPeer);
    eventually(
        Duration::from_secs(5),
        "bob has alice's peer message",
        || bob.message_id_of("hello bob").is_some(),
    )
    .await;
    assert_eq!(bob.message_id_of("hello bob"), Some(id));
    let (result, _) = bob.send_peer("carol", "hello carol").await;
    assert_eq!(result, PeerMessageResult::ReceivedByPeer);
    assert_eq!(carol.texts("peer:bob", "hello"), ["hello carol"]);
    // A call invitation reaches a callee in another region, and the answer comes back.
    let id = alice.invite("bob").await;
    eventually(Duration::from_secs(10), "alice heard bob has it", || {
        alice.texts("invitation", "by-peer:") == [format!("by-peer:{id}")]
    })
    .await;
    assert_eq!(
        bob.texts("invitation", "received:"),
        [format!("received:{id}:alice")]
    );
    bob.call(Op::AcceptRemoteInvitation(
        v1::AcceptRemoteInvitationRequest {
            invitation_id: id,
            response: "on my way".into(),
        },
    ))
    .await;
    eventually(Duration::from_secs(10), "the answer came back", || {
        alice.texts("invitation", "accepted:") == [format!("accepted:{id}:on my way")]
            && bob.texts("invitation", "remote-accepted:") == [format!("remote-accepted:{id}")]
    })
    .await;

    // Nobody anywhere: kept where it was sent.
    let (result, _) = alice.send_peer("dave", "hello dave").await;
    assert_eq!(result, PeerMessageResult::CachedByServer);
    drop((eu, us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_crossing_traffic_and_loses_none() {
    let mut broker = KafkaBroker::start();
    let eu = region(&broker, "eu", "us").await;
    let us = region(&broker, "us", "eu").await;
    let alice = Member::join(&eu, "alice", &["room"]).await;
    let carol = Member::join(&eu, "carol", &["room"]).await;
    let bob = Member::join(&us, "bob", &["room"]).await;
    until_crossing(&alice, &bob, "room").await;

    broker.stop();
    for (x, y) in numbered("x", 10).iter().zip(numbered("y", 10)) {
        alice.send("room", x).await;
        bob.send("room", &y).await;
    }
    // Each region's own traffic goes on without Kafka.
    eventually(Duration::from_secs(5), "carol has alice's messages", || {
        carol.texts("room", "x").len() == 10
    })
    .await;
    assert!(bob.texts("room", "x").is_empty());

    broker.start_again();
    eventually(Duration::from_secs(60), "the held messages crossed", || {
        bob.texts("room", "x").len() >= 10 && alice.texts("room", "y").len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bob.texts("room", "x"), numbered("x", 10));
    assert_eq!(alice.texts("room", "y"), numbered("y", 10));
    assert_eq!(carol.texts("room", "y"), numbered("y", 10));
    drop((eu, us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_cut_off_catches_up_from_kafka_when_it_returns() {
    let broker = KafkaBroker::start();
    let eu = region(&broker, "eu", "us").await;
    let us = region(&broker, "us", "eu").await;
    let alice = Member::join(&eu, "alice", &["room"]).await;
    let carol = Member::join(&eu, "carol", &["room"]).await;
    let bob = Member::join(&us, "bob", &["room"]).await;
    until_crossing(&alice, &bob, "room").await;

    // Every node of us freezes, as if the region's network were cut (and thaws meta last, as
    // the others' heartbeats reach it).
    let frozen: Vec<u64> = [Role::Owner, Role::Edge, Role::Meta]
        .into_iter()
        .flat_map(|role| us.ids(role))
        .collect();
    for id in &frozen {
        us.pause(*id);
    }
    for text in numbered("z", 10) {
        alice.send("room", &text).await;
    }
    // eu goes on by itself.
    eventually(Duration::from_secs(5), "carol has alice's messages", || {
        carol.texts("room", "z").len() == 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bob.texts("room", "z").is_empty());
    for id in &frozen {
        us.resume(*id);
    }
    eventually(Duration::from_secs(60), "us caught up", || {
        bob.texts("room", "z").len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bob.texts("room", "z"), numbered("z", 10));
    drop((eu, us));
}
