//! `parley-loadtest`'s scenarios, each a function from a target and its options to a JSON report
//! (and a line on standard output): `connections`, `fanout`, `p2p`, and `failover` (which starts
//! its own cluster). The binary (`main.rs`) parses the command line and writes the reports.
//!
//! The target app must take logins without a token (`parley dev --app-id …` without a
//! certificate).

pub mod common;
pub mod connections;
pub mod failover;
pub mod fanout;
pub mod p2p;
