//! The meta role: which data nodes exist, their roles, addresses and status, and the epoch that
//! versions them, replicated between meta nodes with openraft.
//!
//! - `state`: the replicated state and its commands (pure);
//! - `store`: Raft's log, vote and snapshots on disk (redb);
//! - `network`: Raft between meta nodes over gRPC;
//! - `meta`: a meta node: the failure detector and the API nodes and operators call;
//! - `watch`: the data nodes' heartbeat loop;
//! - `handoff`: what a data node does about a newer topology (pure).

pub mod handoff;
pub mod meta;
pub mod network;
pub mod state;
pub mod store;
pub mod watch;

pub use meta::MetaConfig;
pub use meta::MetaNode;
