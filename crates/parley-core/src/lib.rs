//! Parley's pure logic: typed and validated IDs, the closed error type, limits, the rate limiter,
//! Agora-format token verification, channel membership decisions, and the vocabulary of what is
//! stored ([`storage`]).
//!
//! Architecture invariant: this crate does no I/O and spawns no tasks, and nothing in it reads the
//! clock but [`time::unix_ms`], which its callers use to read it. Decisions take the current time
//! as an argument, which keeps every one testable with plain unit tests.

pub mod app;
pub mod attributes;
pub mod channel;
pub mod error;
pub mod ids;
pub mod invitation;
pub mod limits;
pub mod rate;
pub mod ring;
pub mod storage;
pub mod time;
pub mod token;

pub use error::Error;
pub use error::ErrorCode;
