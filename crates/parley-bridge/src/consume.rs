//! The consuming side: this region takes the other regions' records to its own owners.

use std::sync::Arc;
use std::time::Duration;

use parley_core::Error;
use parley_owner::Owner;
use parley_owner::OwnerApi;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::AdminClient;
use rdkafka::admin::AdminOptions;
use rdkafka::admin::NewTopic;
use rdkafka::admin::TopicReplication;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::CommitMode;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::RDKafkaErrorCode;

use crate::RegionConfig;
use crate::record;
use crate::record::Action;

/// How long one blocking Kafka call may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the broker may hold a fetch that found nothing (see `prepare`).
const FETCH_WAIT_MS: &str = "10";
/// Waits between tries of a record an owner could not take yet, doubling up to the second.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// Takes the other regions' records to this region's owners, for ever. Several nodes of a
/// region share the work (one consumer group per region); a record's offset is stored for the
/// next commit only once an owner has taken it.
///
/// `owners` routes each record to its channel's owner; `local` is this node's owner, which
/// re-announces its channels once the consumer runs.
pub async fn consume(config: RegionConfig, owners: Arc<dyn OwnerApi>, local: Arc<Owner>) {
    let topics: Vec<String> = config
        .remote_regions
        .iter()
        .map(|region| record::topic(region))
        .collect();
    let mut wait = FIRST_RETRY;
    let consumer = loop {
        match prepare(&config, &topics).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "the region bridge cannot start yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    tracing::info!(region = %config.region, ?topics, "region bridge consuming");
    // Whatever the other regions said before this consumer read anything, they say again in
    // answer to this.
    local.announce_regions().await;
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                // The broker is away or the group is rebalancing: librdkafka reconnects.
                tracing::debug!(%error, "region bridge: nothing read");
                tokio::time::sleep(FIRST_RETRY).await;
                continue;
            }
        };
        if let Some(payload) = message.payload() {
            match record::decode(payload) {
                Ok(action) => apply(owners.as_ref(), action).await,
                Err(error) => tracing::warn!(
                    %error,
                    topic = message.topic(),
                    offset = message.offset(),
                    "a malformed region record was skipped"
                ),
            }
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::warn!(%error, "region bridge: could not store an offset");
        }
    }
}

/// Hands one record to its channel's owner, trying again while the owner cannot take it yet
/// (it is moving, or storage is down): a record is never skipped for a passing failure.
async fn apply(owners: &dyn OwnerApi, action: Action) {
    let mut wait = FIRST_RETRY;
    loop {
        let result: Result<(), Error> = match &action {
            Action::Deliver(send) => owners.send_channel(send.clone()).await.map(drop),
            Action::Interest {
                channel,
                region,
                interested,
                fresh,
            } => {
                owners
                    .region_interest(channel.clone(), region.clone(), *interested, *fresh)
                    .await
            }
        };
        match result {
            Ok(()) => return,
            Err(error) if record::retryable(&error) => {
                tracing::debug!(%error, "an owner could not take a region record yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LAST_RETRY);
            }
            Err(error) => {
                tracing::warn!(%error, "an owner refused a region record; skipped");
                return;
            }
        }
    }
}

/// Creates the region topics if missing, makes a region's first start begin at the end of the
/// other regions' topics (rather than replaying their retention), and subscribes.
async fn prepare(config: &RegionConfig, topics: &[String]) -> Result<Arc<StreamConsumer>, String> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    create_topics(&client, config).await?;
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", format!("parley-bridge-{}", config.region))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        // Partitions without a committed offset were given one by `start_at_end` below; one
        // created later starts at its beginning, so nothing published to it is skipped.
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "5000")
        // A fetch returns as soon as a record is there; the broker holds an empty one this
        // long (librdkafka's 500 ms default is half a second of cross-region latency where the
        // broker does not answer early).
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .map_err(|error| format!("Kafka consumer: {error}"))?;
    let consumer = Arc::new(consumer);
    let blocking = consumer.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        start_at_end(&blocking, &topics)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        blocking
            .subscribe(&names)
            .map_err(|error| format!("subscribe: {error}"))
    })
    .await
    .map_err(|error| error.to_string())??;
    Ok(consumer)
}

/// Commits the end offset of every partition the group has no offset for yet.
fn start_at_end(consumer: &StreamConsumer, topics: &[String]) -> Result<(), String> {
    let mut partitions = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
            .map_err(|error| format!("metadata of {topic}: {error}"))?;
        for found in metadata.topics() {
            if found.partitions().is_empty() {
                return Err(format!("{topic} has no partitions yet"));
            }
            for partition in found.partitions() {
                partitions.add_partition(topic, partition.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(partitions, KAFKA_TIMEOUT)
        .map_err(|error| format!("committed offsets: {error}"))?;
    let mut fresh = TopicPartitionList::new();
    for element in committed.elements() {
        if element.offset() == Offset::Invalid {
            let (_, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), KAFKA_TIMEOUT)
                .map_err(|error| format!("watermarks: {error}"))?;
            fresh
                .add_partition_offset(element.topic(), element.partition(), Offset::Offset(high))
                .map_err(|error| error.to_string())?;
        }
    }
    if fresh.count() > 0 {
        consumer
            .commit(&fresh, CommitMode::Sync)
            .map_err(|error| format!("commit the starting offsets: {error}"))?;
    }
    Ok(())
}

/// Creates this region's topic and the other regions' (whoever starts first), unless they exist.
async fn create_topics(client: &ClientConfig, config: &RegionConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client
        .create()
        .map_err(|error| format!("Kafka admin client: {error}"))?;
    let names: Vec<String> = std::iter::once(&config.region)
        .chain(&config.remote_regions)
        .map(|region| record::topic(region))
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, config.partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|error| format!("create the region topics: {error}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("create {topic}: {code:?}")),
        }
    }
    Ok(())
}
