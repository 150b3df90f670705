//! The edge: terminates client WebSocket connections, decodes frames, authenticates logins,
//! enforces per-session limits and rate limits, and forwards every operation to the owner of its
//! channel or user through [`parley_owner::Owners`].
//!
//! Architecture invariant: the edge owns no channel or user state. What it keeps per session
//! (joined channels, rate buckets) exists to police and clean up that session, and can be rebuilt
//! by the client re-joining.

pub mod cluster;
mod connection;
mod edge;
mod grpc;
mod http;
mod listener;
mod requests;
pub mod rest;
mod server_api;
mod session;
mod tally;
mod telemetry;
mod validate;

pub use axum::Router;
pub use edge::Edge;
pub use edge::EdgeConfig;
pub use http::router;
pub use http::serve;
