//! The consistent-hash ring that says which owner node holds a channel or a user.
//!
//! Each node stands at many points on a 64-bit circle (virtual nodes); a key belongs to the
//! first point at or after its hash. Hashes are SHA-256 based, so every process and version agrees
//! on them. Removing a node moves only the keys it held; adding one takes keys only for itself.

use sha2::Digest;
use sha2::Sha256;

use crate::ids::AppId;
use crate::ids::ChannelId;
use crate::ids::NodeId;
use crate::ids::UserId;

/// Points per node unless configured otherwise: enough for an even spread on a few nodes.
pub const DEFAULT_VIRTUAL_NODES: u32 = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    epoch: u64,
    /// Sorted by position.
    points: Vec<(u64, NodeId)>,
}

fn position(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("a digest has 32 bytes"))
}

impl Ring {
    /// A ring of `nodes`, each at `virtual_nodes` points, as of `epoch`.
    pub fn new(epoch: u64, nodes: &[NodeId], virtual_nodes: u32) -> Ring {
        let mut points: Vec<(u64, NodeId)> = nodes
            .iter()
            .flat_map(|node| {
                (0..virtual_nodes).map(move |index| {
                    (
                        position(format!("node/{}/{index}", node.0).as_bytes()),
                        *node,
                    )
                })
            })
            .collect();
        points.sort_unstable();
        points.dedup_by_key(|(at, _)| *at);
        Ring { epoch, points }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The nodes on the ring, in id order.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.points.iter().map(|(_, node)| *node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The owner of a raw key; `None` only on an empty ring.
    pub fn owner_of(&self, key: &[u8]) -> Option<NodeId> {
        let at = position(key);
        let index = self.points.partition_point(|(point, _)| *point < at);
        self.points
            .get(index)
            .or_else(|| self.points.first())
            .map(|(_, node)| *node)
    }

    pub fn channel_owner(&self, app: &AppId, channel: &ChannelId) -> Option<NodeId> {
        self.owner_of(format!("c/{app}/{channel}").as_bytes())
    }

    pub fn user_owner(&self, app: &AppId, uid: &UserId) -> Option<NodeId> {
        self.owner_of(format!("u/{app}/{uid}").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|id| NodeId(*id)).collect()
    }

    #[test]
    fn an_empty_ring_owns_nothing() {
        assert_eq!(
            Ring::new(1, &[], DEFAULT_VIRTUAL_NODES).owner_of(b"key"),
            None
        );
    }

    #[test]
    fn keys_spread_evenly_enough() {
        let ring = Ring::new(1, &nodes(&[1, 2, 3]), DEFAULT_VIRTUAL_NODES);
        let mut counts: HashMap<NodeId, usize> = HashMap::new();
        for n in 0..30_000 {
            *counts
                .entry(ring.owner_of(format!("c/app/room-{n}").as_bytes()).unwrap())
                .or_default() += 1;
        }
        for (node, count) in counts {
            assert!(
                (7_000..13_000).contains(&count),
                "{node:?} got {count} of 30000"
            );
        }
    }

    #[test]
    fn every_process_agrees_on_placement() {
        // Stable across runs and builds: a fixed key lands on a fixed node.
        let ring = Ring::new(7, &nodes(&[10, 20, 30]), DEFAULT_VIRTUAL_NODES);
        let again = Ring::new(7, &nodes(&[30, 10, 20]), DEFAULT_VIRTUAL_NODES);
        for n in 0..100 {
            let key = format!("u/app/user-{n}");
            assert_eq!(
                ring.owner_of(key.as_bytes()),
                again.owner_of(key.as_bytes())
            );
        }
        assert_eq!(ring.nodes(), nodes(&[10, 20, 30]));
        assert_eq!(ring.epoch(), 7);
    }

    proptest! {
        /// Taking a node away moves only the keys it owned; adding one takes keys only for itself.
        #[test]
        fn membership_changes_move_the_fewest_keys(
            members in proptest::collection::btree_set(1u64..50, 2..6),
            keys in proptest::collection::vec("[a-z0-9]{1,20}", 1..200),
        ) {
            let members: Vec<NodeId> = members.into_iter().map(NodeId).collect();
            let full = Ring::new(1, &members, 32);
            let gone = members[0];
            let without = Ring::new(2, &members[1..], 32);
            for key in &keys {
                let before = full.owner_of(key.as_bytes()).unwrap();
                let after = without.owner_of(key.as_bytes()).unwrap();
                prop_assert!(members.contains(&after));
                if before != gone {
                    prop_assert_eq!(before, after, "a key moved off a node that stayed");
                }
                // Adding the node back: keys move only onto it.
                let back = full.owner_of(key.as_bytes()).unwrap();
                prop_assert!(back == after || back == gone);
            }
        }
    }
}
