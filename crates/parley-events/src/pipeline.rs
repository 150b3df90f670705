//! The pipeline task: batches events into the event logs and sorts them into webhook lanes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parley_core::app::AppDirectory;
use parley_core::ids::AppId;
use parley_owner::AppEvent;
use parley_owner::AppEventKind;
use parley_owner::EventSink;
use parley_store::EventStream;
use parley_store::InboxLimits;
use parley_store::Store;
use parley_store::StoredEvent;
use tokio::sync::mpsc;

use crate::kafka::KafkaConfig;
use crate::kafka::KafkaSink;
use crate::webhook::Lane;

/// Events waiting for the pipeline task. Overflow policy: dropped and counted.
const PIPELINE_QUEUE: usize = 16_384;
/// Most events appended to the logs in one store call.
const BATCH: usize = 256;

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// What each event log keeps: the newest `max_count` events, none older than `max_age_ms`.
    pub log_limits: InboxLimits,
    /// Webhook lanes; one user's events always take the same lane, so they arrive in order.
    pub lanes: usize,
    /// Events waiting in one lane. Overflow policy: dropped and counted.
    pub lane_queue: usize,
    /// Deliveries of one event before it is given up (the first included).
    pub attempts: u32,
    /// The wait before the first retry; it doubles with each retry, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one POST may take.
    pub request_timeout: Duration,
    /// Every app's events also go to this Kafka topic.
    pub kafka: Option<KafkaConfig>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            log_limits: InboxLimits {
                max_count: 10_000,
                max_age_ms: 24 * 3600 * 1000,
            },
            lanes: 16,
            lane_queue: 1024,
            attempts: 8,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            kafka: None,
        }
    }
}

/// Where owners send their events. Ends its tasks when dropped.
pub struct EventPipeline {
    event_tx: mpsc::Sender<AppEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSink for EventPipeline {
    fn emit(&self, event: AppEvent) {
        if self.event_tx.try_send(event).is_err() {
            count_drop(&self.dropped, "the event pipeline is full");
        }
    }
}

impl EventPipeline {
    pub fn start(
        config: PipelineConfig,
        apps: Arc<AppDirectory>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<EventPipeline>, String> {
        let (event_tx, event_rx) = mpsc::channel(PIPELINE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let kafka = config
            .kafka
            .as_ref()
            .map(|kafka| KafkaSink::start(kafka, dropped.clone()))
            .transpose()?;
        let lanes = (0..config.lanes.max(1))
            .map(|_| Lane::start(&config, apps.clone(), dropped.clone()))
            .collect();
        let task = PipelineTask {
            config,
            apps,
            store,
            lanes,
            hasher: RandomState::new(),
            dropped: dropped.clone(),
            kafka,
        };
        tokio::spawn(task.run(event_rx));
        Ok(Arc::new(EventPipeline { event_tx, dropped }))
    }

    /// Events dropped so far: a full queue, or a webhook that never took them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct PipelineTask {
    config: PipelineConfig,
    apps: Arc<AppDirectory>,
    store: Arc<dyn Store>,
    lanes: Vec<mpsc::Sender<AppEvent>>,
    hasher: RandomState,
    dropped: Arc<AtomicU64>,
    kafka: Option<KafkaSink>,
}

impl PipelineTask {
    async fn run(self, mut event_rx: mpsc::Receiver<AppEvent>) {
        let mut batch = Vec::with_capacity(BATCH);
        while event_rx.recv_many(&mut batch, BATCH).await > 0 {
            self.log(&batch).await;
            for event in batch.drain(..) {
                if let Some(kafka) = &self.kafka {
                    kafka.publish(&event);
                }
                self.to_webhook(event);
            }
        }
    }

    /// Appends the batch's user and channel events to their logs, one store call per log.
    async fn log(&self, batch: &[AppEvent]) {
        let mut logs: HashMap<(&AppId, EventStream), Vec<StoredEvent>> = HashMap::new();
        for event in batch {
            if let Some((stream, stored)) = log_entry(event) {
                logs.entry((&event.app, stream)).or_default().push(stored);
            }
        }
        let now_ms = batch.last().map_or(0, |event| event.ts_ms);
        for ((app, stream), events) in logs {
            let appended = self
                .store
                .append_events(app, stream, events, self.config.log_limits, now_ms)
                .await;
            if let Err(error) = appended {
                tracing::warn!(%error, %app, stream = stream.as_str(), "appending to an event log failed");
            }
        }
    }

    fn to_webhook(&self, event: AppEvent) {
        let has_webhook = self
            .apps
            .get(event.app.as_str())
            .is_ok_and(|app| app.webhook.is_some());
        if !has_webhook {
            return;
        }
        let lane = self.hasher.hash_one((&event.app, event.kind.uid())) as usize % self.lanes.len();
        if self.lanes[lane].try_send(event).is_err() {
            count_drop(&self.dropped, "a webhook lane is full");
        }
    }
}

/// Counts a dropped event, and says so at the 1st, 2nd, 4th, 8th… drop (not at every one).
pub(crate) fn count_drop(dropped: &AtomicU64, why: &str) {
    let count = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if count.is_power_of_two() {
        tracing::warn!(dropped = count, "{why}; events dropped");
    }
}

/// The log entry of an event that goes in a log.
fn log_entry(event: &AppEvent) -> Option<(EventStream, StoredEvent)> {
    let stored = |kind: &str, uid: &str, channel_id: &str, reason: &str| StoredEvent {
        id: 0,
        ts_ms: event.ts_ms,
        kind: kind.to_owned(),
        uid: uid.to_owned(),
        channel_id: channel_id.to_owned(),
        reason: reason.to_owned(),
    };
    match &event.kind {
        AppEventKind::Login { uid } => {
            Some((EventStream::Users, stored("login", uid.as_str(), "", "")))
        }
        AppEventKind::Logout { uid, reason } => Some((
            EventStream::Users,
            stored("logout", uid.as_str(), "", reason),
        )),
        AppEventKind::Join { channel, uid } => Some((
            EventStream::Channels,
            stored("join", uid.as_str(), channel.as_str(), ""),
        )),
        AppEventKind::Leave {
            channel,
            uid,
            reason,
        } => Some((
            EventStream::Channels,
            stored("leave", uid.as_str(), channel.as_str(), reason),
        )),
        AppEventKind::PeerMessageCached { .. } | AppEventKind::InvitationToOffline { .. } => None,
    }
}
