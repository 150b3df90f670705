//! The owner's engine: the decisions about channels and users (membership, sequence numbers,
//! presence, invitations, moderation, what crosses to other regions) as a state machine that
//! does no I/O. One [`Shard`] is fed one input at a time, each with the time it happens at
//! ([`Now`]), and what it decides comes out as [`Effect`]s: deliveries, app events, region
//! records, store work. `parley-owner` is the runtime around it: mailboxes, the store, the edges,
//! the cluster.
//!
//! Architecture invariant: nothing here awaits, spawns, reads a clock or touches a socket or a
//! store, and nothing underneath does either (`cargo tree -p parley-engine -e normal` has no
//! tokio, tonic or store). The tests drive a shard by hand and answer its store work themselves.

pub mod api;
mod config;
pub mod ops;
mod shard;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::limits::Limits;
use parley_core::storage::StoreError;

pub use config::OwnerConfig;
pub use shard::Command;
pub use shard::Key;
pub use shard::PeerRouted;
pub use shard::REGION_PEER_MARGIN;
pub use shard::Respond;
pub use shard::Resumed;
pub use shard::Shard;
pub use shard::channels::Joining;
pub use shard::channels::Loaded;
pub use shard::channels::Numbered;
pub use shard::effects::DirectoryWrite;
pub use shard::effects::Effect;
pub use shard::effects::Now;
pub use shard::effects::OnReceipt;
pub use shard::effects::StoreWork;
pub use shard::muted;
pub use shard::peers::PeerSending;

/// When history older than `limits` keep starts: `now_ms` less the retention.
pub fn history_cutoff(limits: &Limits, now_ms: i64) -> i64 {
    now_ms - limits.history_retention.as_millis() as i64
}

/// What a caller is told when the store failed it (the cause goes to the log).
pub fn storage_error(error: StoreError) -> Error {
    tracing::warn!(%error, "storage operation failed");
    Error::new(
        ErrorCode::Unavailable,
        "storage is unavailable, retry later",
    )
}
