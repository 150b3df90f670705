//! App events out of the cluster. Owners hand every [`AppEvent`] to an [`EventPipeline`] (never
//! waiting); the pipeline appends logins, logouts, joins and leaves to the app's event logs (the
//! server API pages through them), POSTs every event to the app's webhook, signed, and publishes
//! it on a Kafka topic when one is configured.
//!
//! [`AppEvent`]: parley_owner::AppEvent
//!
//! Architecture invariant: nothing here holds up an owner. Queues are bounded; what does not fit
//! is dropped and counted, never waited for.

mod kafka;
mod pipeline;
mod webhook;

pub use kafka::KafkaConfig;
pub use pipeline::EventPipeline;
pub use pipeline::PipelineConfig;
pub use webhook::SIGNATURE_HEADER;
pub use webhook::TIMESTAMP_HEADER;
pub use webhook::sign;
pub use webhook::to_json;
