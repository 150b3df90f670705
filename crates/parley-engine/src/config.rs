//! What an owner is configured with.

use std::time::Duration;

use parley_core::ids::NodeId;
use parley_core::invitation::InvitationTimers;

#[derive(Clone, Debug)]
pub struct OwnerConfig {
    /// This node; also the generator number in message IDs.
    pub node: NodeId,
    /// Tasks that split the owned channels and users between them.
    pub shards: usize,
    /// How long a member whose connection was lost stays in its channels.
    pub member_grace: Duration,
    /// Least time between two MemberCountUpdated events of one channel.
    pub member_count_interval: Duration,
    /// How long a peer message waits for the receiving client's receipt.
    pub peer_receipt_timeout: Duration,
    /// Recent messages kept per channel for recovery after a reconnect.
    pub recovery_window: usize,
    pub invitation_timers: InvitationTimers,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        OwnerConfig {
            node: NodeId(0),
            shards: 8,
            member_grace: Duration::from_secs(20),
            member_count_interval: Duration::from_secs(1),
            peer_receipt_timeout: Duration::from_secs(10),
            recovery_window: 1000,
            invitation_timers: InvitationTimers::default(),
        }
    }
}
