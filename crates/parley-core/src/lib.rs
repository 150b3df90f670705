//! Parley's pure logic: typed and validated IDs, the closed error type, limits, the rate limiter,
//! Agora-format token verification and channel membership decisions.
//!
//! Architecture invariant: this crate does no I/O, spawns no tasks and reads no clock. Callers pass
//! the current time in, which keeps every decision here testable with plain unit tests.

pub mod app;
pub mod attributes;
pub mod channel;
pub mod error;
pub mod ids;
pub mod invitation;
pub mod limits;
pub mod rate;
pub mod ring;
pub mod time;
pub mod token;

pub use error::Error;
pub use error::ErrorCode;
