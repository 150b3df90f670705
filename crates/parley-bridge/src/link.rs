//! The producing side: owners publish on their region's topic.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley_owner::RegionLink;
use parley_owner::RegionRecord;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::producer::BaseRecord;
use rdkafka::producer::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::producer::ThreadedProducer;

use crate::RegionConfig;
use crate::record;

/// How long librdkafka keeps trying to deliver one record: a broker away for less loses
/// nothing (records wait in the producer's memory meanwhile).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Records librdkafka may hold; beyond it they are dropped and counted.
const QUEUE_MESSAGES: &str = "200000";

struct Delivery {
    dropped: Arc<AtomicU64>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    /// When the record was handed to the producer.
    type DeliveryOpaque = Box<std::time::Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, started: Box<std::time::Instant>) {
        parley_telemetry::kafka_produced("bridge", *started, result.is_ok());
        if let Err((error, _)) = result {
            count_drop(
                &self.dropped,
                &format!("Kafka refused a region record ({error})"),
            );
        }
    }
}

fn count_drop(dropped: &AtomicU64, why: &str) {
    let total = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    // Logged at 1, 2, 4, 8…: a broker that stays away does not flood the log.
    if total.is_power_of_two() {
        tracing::warn!(total, "a record for other regions was dropped: {why}");
    }
}

/// Publishes an owner's [`RegionRecord`]s on this region's topic.
pub struct KafkaRegionLink {
    producer: ThreadedProducer<Delivery>,
    region: String,
    topic: String,
    dropped: Arc<AtomicU64>,
}

impl KafkaRegionLink {
    /// Connects (lazily: librdkafka connects and reconnects by itself).
    pub fn start(config: &RegionConfig) -> Result<Arc<KafkaRegionLink>, String> {
        let dropped = Arc::new(AtomicU64::new(0));
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set("queue.buffering.max.messages", QUEUE_MESSAGES)
            .set("acks", "all")
            // Retries must not reorder a channel's records.
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "1")
            .create_with_context(Delivery {
                dropped: dropped.clone(),
            })
            .map_err(|error| format!("Kafka producer: {error}"))?;
        Ok(Arc::new(KafkaRegionLink {
            producer,
            region: config.region.clone(),
            topic: record::topic(&config.region),
            dropped,
        }))
    }
}

impl RegionLink for KafkaRegionLink {
    fn publish(&self, record: RegionRecord) {
        let (key, payload) = record::encode(&self.region, &record);
        let kafka_record =
            BaseRecord::with_opaque_to(&self.topic, Box::new(std::time::Instant::now()))
                .key(&key)
                .payload(&payload);
        if let Err((error, _)) = self.producer.send(kafka_record) {
            parley_telemetry::kafka_error("bridge");
            count_drop(&self.dropped, &format!("Kafka's queue is full ({error})"));
        }
    }
}
