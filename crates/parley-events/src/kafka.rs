//! App events on a Kafka topic: every event of every app, as the JSON of its webhook, keyed
//! by app and user so one user's events stay in one partition, in order.
//!
//! librdkafka queues and retries by itself (up to `message.timeout.ms`); a full queue drops the
//! event and counts it, so a slow or absent broker never holds up an owner.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parley_owner::AppEvent;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::AdminClient;
use rdkafka::admin::AdminOptions;
use rdkafka::admin::NewTopic;
use rdkafka::admin::TopicReplication;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseRecord;
use rdkafka::producer::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::producer::ThreadedProducer;

use crate::webhook::to_json;

/// Where the events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `HOST:PORT,…`
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when Parley creates it.
    pub partitions: i32,
}

/// How long librdkafka keeps trying to deliver one event (a broker that is away for less loses
/// nothing).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// Events librdkafka may hold; beyond it events are dropped and counted.
const QUEUE_MESSAGES: &str = "100000";

/// Counts events librdkafka gave up on.
struct Delivery {
    dropped: Arc<AtomicU64>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    /// When the record was handed to the producer.
    type DeliveryOpaque = Box<std::time::Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, started: Box<std::time::Instant>) {
        parley_telemetry::kafka_produced("events", *started, result.is_ok());
        if let Err((error, _)) = result {
            crate::pipeline::count_drop(
                &self.dropped,
                &format!("Kafka refused an event ({error})"),
            );
        }
    }
}

pub(crate) struct KafkaSink {
    producer: ThreadedProducer<Delivery>,
    topic: String,
    dropped: Arc<AtomicU64>,
}

impl KafkaSink {
    /// Connects (lazily: librdkafka connects and reconnects by itself) and, in the background,
    /// creates the topic if it is missing.
    pub(crate) fn start(
        config: &KafkaConfig,
        dropped: Arc<AtomicU64>,
    ) -> Result<KafkaSink, String> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set("queue.buffering.max.messages", QUEUE_MESSAGES)
            // Retries must not reorder one partition's events.
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "5");
        let producer = client
            .create_with_context(Delivery {
                dropped: dropped.clone(),
            })
            .map_err(|error| format!("Kafka producer: {error}"))?;
        tokio::spawn(create_topic(client, config.clone()));
        Ok(KafkaSink {
            producer,
            topic: config.topic.clone(),
            dropped,
        })
    }

    pub(crate) fn publish(&self, event: &AppEvent) {
        let body = to_json(event, event.ts_ms).to_string();
        let key = format!("{}/{}", event.app, event.kind.uid());
        let record = BaseRecord::with_opaque_to(&self.topic, Box::new(std::time::Instant::now()))
            .key(&key)
            .payload(&body);
        if let Err((error, _)) = self.producer.send(record) {
            parley_telemetry::kafka_error("events");
            crate::pipeline::count_drop(&self.dropped, &format!("Kafka's queue is full ({error})"));
        }
    }
}

/// Creates the topic unless it exists; a broker that cannot (or need not) is only logged.
async fn create_topic(client: ClientConfig, config: KafkaConfig) {
    let admin: AdminClient<DefaultClientContext> = match client.create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(%error, "Kafka admin client");
            return;
        }
    };
    let topic = NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    match admin.create_topics([&topic], &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        tracing::warn!(%topic, ?code, "could not create the events topic");
                    }
                }
            }
        }
        Err(error) => tracing::warn!(%error, "could not create the events topic"),
    }
}
