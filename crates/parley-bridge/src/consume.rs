//! The consuming side: this region takes the other regions' records to its own owners.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_owner::Owner;
use parley_owner::Owners;
use parley_owner::RegionLink;
use parley_owner::RegionRecord;
use parley_owner::UserKey;
use parley_owner::ops;
use parley_store::Store;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::admin::AdminClient;
use rdkafka::admin::AdminOptions;
use rdkafka::admin::NewTopic;
use rdkafka::admin::TopicReplication;
use rdkafka::client::DefaultClientContext;
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

/// What a region's bridge works with on one owner node.
pub struct Bridge {
    pub config: RegionConfig,
    /// Routes each record to the owner of its channel or user (in process or over gRPC).
    pub owners: Arc<dyn Owners>,
    /// This node's owner: it announces its channels and users once the consumer runs.
    pub local: Arc<Owner>,
    /// Where the region directory is kept.
    pub store: Arc<dyn Store>,
    /// Where outcomes of peer messages go back to the sender's region.
    pub link: Arc<dyn RegionLink>,
}

impl Bridge {
    /// Takes the other regions' records to this region's owners, for ever. Several nodes of a
    /// region share the work (one consumer group per region); a record's offset is stored for
    /// the next commit only once it has been taken.
    pub async fn run(self) {
        let topics: Vec<String> = self
            .config
            .remote_regions
            .iter()
            .map(|region| record::topic(region))
            .collect();
        let mut wait = FIRST_RETRY;
        let (consumer, history) = loop {
            match prepare(&self.config, &topics).await {
                Ok(prepared) => break prepared,
                Err(error) => {
                    tracing::warn!(%error, "the region bridge cannot start yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(region = %self.config.region, ?topics, "region bridge consuming");
        // Whatever the other regions said before this consumer read anything, they say again in
        // answer to this.
        self.local.announce_regions().await;
        loop {
            let message = match consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    // The broker is away or the group is rebalancing: librdkafka reconnects.
                    tracing::debug!(%error, "region bridge: nothing read");
                    parley_telemetry::kafka_error("bridge");
                    tokio::time::sleep(FIRST_RETRY).await;
                    continue;
                }
            };
            let before_us = history
                .get(&(message.topic().to_owned(), message.partition()))
                .is_some_and(|end| message.offset() < *end);
            if let Some(payload) = message.payload() {
                match record::decode(payload) {
                    // Said before this region read the topic: where users are and which
                    // channels are wanted still holds; old traffic is not delivered now.
                    Ok(action) if before_us && !action.is_state() => {}
                    Ok(action) => self.apply(action).await,
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

    /// Carries out one record, trying again while it cannot be taken yet (an owner is moving,
    /// storage is down): a record is never skipped for a passing failure.
    async fn apply(&self, action: Action) {
        let mut wait = FIRST_RETRY;
        loop {
            match self.try_apply(&action).await {
                Ok(()) => return,
                Err(error) if record::retryable(&error) => {
                    tracing::debug!(%error, "a region record could not be taken yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LAST_RETRY);
                }
                Err(error) => {
                    tracing::warn!(%error, "a region record was refused; skipped");
                    parley_telemetry::kafka_error("bridge");
                    return;
                }
            }
        }
    }

    async fn try_apply(&self, action: &Action) -> Result<(), Error> {
        match action {
            Action::Deliver(send) => self.owners.ask(send.clone()).await.map(drop),
            Action::Interest {
                channel,
                region,
                interest,
            } => {
                self.owners
                    .ask(ops::RegionInterest {
                        channel: channel.clone(),
                        region: region.clone(),
                        interest: *interest,
                    })
                    .await
            }
            Action::User {
                user,
                region,
                online,
            } => self
                .store
                .set_user_region(&user.app, &user.uid, region, *online)
                .await
                .map_err(|error| Error::new(ErrorCode::Unavailable, error.to_string())),
            Action::Peer(send) => {
                let dispatch = self.owners.send_peer(send.clone()).await?;
                // The receipt may take seconds: wait aside, so the partition goes on.
                let to = UserKey {
                    app: send.from.app.clone(),
                    uid: send.to.clone(),
                };
                let message_id = send
                    .origin
                    .as_ref()
                    .map_or(dispatch.message_id, |origin| origin.message_id);
                let link = self.link.clone();
                tokio::spawn(async move {
                    let outcome = dispatch.outcome.await;
                    link.publish(RegionRecord::PeerOutcome {
                        to,
                        message_id,
                        outcome,
                    });
                });
                Ok(())
            }
            Action::Attributes {
                channel,
                attributes,
                notify_members,
            } => {
                self.owners
                    .ask(ops::RegionAttributes {
                        channel: channel.clone(),
                        attributes: attributes.clone(),
                        notify_members: *notify_members,
                    })
                    .await
            }
            Action::CalleeEvent {
                callee,
                region,
                event,
                receipt,
            } => {
                self.owners
                    .ask(ops::RegionCalleeEvent {
                        callee: callee.clone(),
                        region: region.clone(),
                        event: event.clone(),
                        receipt: *receipt,
                    })
                    .await
            }
            Action::InvitationReceipt {
                callee,
                invitation_id,
            } => {
                self.owners
                    .ask(ops::RegionInvitationReceipt {
                        callee: callee.clone(),
                        invitation_id: *invitation_id,
                    })
                    .await
            }
            Action::InvitationAnswer {
                callee,
                invitation_id,
                accept,
                response,
            } => {
                self.owners
                    .ask(ops::AnswerInvitation {
                        callee: callee.clone(),
                        invitation_id: *invitation_id,
                        accept: *accept,
                        response: response.clone(),
                    })
                    .await
            }
            Action::PeerOutcome {
                to,
                message_id,
                outcome,
            } => {
                self.owners
                    .ask(ops::RegionPeerOutcome {
                        user: to.clone(),
                        message_id: *message_id,
                        outcome: *outcome,
                    })
                    .await
            }
        }
    }
}

/// Where a region's first reading of a partition started to count: records below these
/// offsets were there before, by (topic, partition).
type History = HashMap<(String, i32), i64>;

/// Creates the region topics if missing, notes where the partitions this region has never read
/// end (it reads them from their start, but only for state: see [`Action::is_state`]), and
/// subscribes.
async fn prepare(
    config: &RegionConfig,
    topics: &[String],
) -> Result<(Arc<StreamConsumer>, History), String> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    create_topics(&client, config).await?;
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", format!("parley-bridge-{}", config.region))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        // Partitions without a committed offset are read from their start (`history` says how
        // far that is old news), so nothing published is skipped.
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
    let history = tokio::task::spawn_blocking(move || {
        let history = unread_ends(&blocking, &topics)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        blocking
            .subscribe(&names)
            .map_err(|error| format!("subscribe: {error}"))?;
        Ok::<_, String>(history)
    })
    .await
    .map_err(|error| error.to_string())??;
    Ok((consumer, history))
}

/// The end offset of every partition the group has no offset for yet.
fn unread_ends(consumer: &StreamConsumer, topics: &[String]) -> Result<History, String> {
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
    let mut history = History::new();
    for element in committed.elements() {
        if element.offset() == Offset::Invalid {
            let (_, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), KAFKA_TIMEOUT)
                .map_err(|error| format!("watermarks: {error}"))?;
            history.insert((element.topic().to_owned(), element.partition()), high);
        }
    }
    Ok(history)
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
