//! `parley-loadtest`'s scenarios, each a function from a target and its options to a JSON report
//! (and a line on standard output): `connections`, `fanout`, `churn`, `p2p`, and `failover` (which
//! starts its own cluster). `wire.rs` holds the lean clients that let `connections`, `fanout` and
//! `churn` measure NATS, MQTT and Socket.IO servers as well as Parley; `report.rs` turns JSON
//! reports into an HTML page. The binary (`main.rs`) parses the command line and writes the
//! reports.
//!
//! The target app must take logins without a token (`parley dev --app-id …` without a
//! certificate).

pub mod churn;
pub mod common;
pub mod connections;
pub mod failover;
pub mod fanout;
pub mod flood;
pub mod p2p;
pub mod regions;
pub mod report;
pub mod soak;
pub mod wire;
