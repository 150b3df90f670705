//! App events out of the cluster. Owners hand every [`AppEvent`] to an [`EventPipeline`] (never
//! waiting); the pipeline appends logins, logouts, joins and leaves to the app's event logs (the
//! server API pages through them) and POSTs every event to the app's webhook, signed.
//!
//! Architecture invariant: nothing here holds up an owner. Queues are bounded; what does not fit
//! is dropped and counted, never waited for.

mod pipeline;
mod webhook;

pub use pipeline::EventPipeline;
pub use pipeline::PipelineConfig;
pub use webhook::SIGNATURE_HEADER;
pub use webhook::TIMESTAMP_HEADER;
pub use webhook::sign;
pub use webhook::to_json;
