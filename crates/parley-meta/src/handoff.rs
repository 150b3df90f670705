//! What a data node does when meta sends it a newer topology, decided without I/O: [`plan`]
//! compares what the node had with what it got; the node's runtime (`crates/parley/src/
//! cluster.rs`) carries the plan out, one topology at a time and in this order:
//!
//! 1. the owner stops delivering to edges that left or restarted and starts delivering to new
//!    ones;
//! 2. the node routes by the new ring, and from then on tells meta it has that epoch;
//! 3. the sessions the departed edges held count as lost connections; when the set of owners
//!    changed, every shard of the owner is told to drop the users and channels it no longer owns
//!    (queued before the next topology is taken), and the edge re-registers its sessions with
//!    the owners the new ring names;
//! 4. a node that meta now has draining, down or removed sends its clients away; one that is up
//!    again takes them back.
//!
//! See docs/ARCHITECTURE.md, "When the ring changes".

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use parley_proto::cluster::v1 as wire;
use parley_proto::cluster::v1::NodeStatus;

/// Where an edge on another node listens, and which run of its process that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeRun {
    pub address: String,
    pub incarnation: u64,
}

/// The edges on other nodes an owner delivers to, by node id.
pub type Edges = BTreeMap<u64, EdgeRun>;

/// What node `me` had from meta before a new topology: the topology it applied last (none at
/// start) and the edges its owner delivers to.
#[derive(Debug, Default)]
pub struct Applied {
    pub topology: Option<wire::ClusterTopology>,
    pub edges: Edges,
}

/// What to do about a newer topology, in the order the module documentation gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Edges the owner stops delivering to: gone, down, or a new run of their process.
    pub edges_gone: Vec<u64>,
    /// Edges the owner starts delivering to.
    pub edges_new: Vec<(u64, EdgeRun)>,
    /// The epoch is newer than the one applied: route by the new ring.
    pub newer: bool,
    /// The set of owners in the ring changed.
    pub owners_changed: bool,
    /// `Some(true)`: this node just turned draining, down or removed, and sends its clients
    /// away; `Some(false)`: it is up again and takes logins.
    pub leaving: Option<bool>,
}

/// What node `me` does about `next`, having applied `applied`. A topology no newer than the
/// one applied changes nothing.
pub fn plan(applied: &Applied, next: &wire::ClusterTopology, me: u64) -> Plan {
    let before = applied.topology.as_ref();
    if before.is_some_and(|before| next.epoch <= before.epoch) {
        return Plan::default();
    }
    let wanted = edges_of(next, me);
    let edges_gone = applied
        .edges
        .iter()
        .filter(|(node, run)| wanted.get(node) != Some(run))
        .map(|(node, _)| *node)
        .collect();
    let edges_new = wanted
        .into_iter()
        .filter(|(node, run)| applied.edges.get(node) != Some(run))
        .collect();
    let was_leaving = before.is_some_and(|before| leaving(before, me));
    let is_leaving = leaving(next, me);
    Plan {
        edges_gone,
        edges_new,
        newer: true,
        owners_changed: before.map(ring_owners).unwrap_or_default() != ring_owners(next),
        leaving: (was_leaving != is_leaving).then_some(is_leaving),
    }
}

/// The owners in `topology`'s ring: those that are up.
pub fn ring_owners(topology: &wire::ClusterTopology) -> BTreeSet<u64> {
    topology
        .nodes
        .iter()
        .filter(|info| info.owner && info.status() == NodeStatus::Up)
        .map(|info| info.node)
        .collect()
}

/// The edges other than `me` that are not down (a draining edge still has clients until they
/// are gone).
fn edges_of(topology: &wire::ClusterTopology, me: u64) -> Edges {
    topology
        .nodes
        .iter()
        .filter(|info| info.edge && info.node != me && info.status() != NodeStatus::Down)
        .map(|info| {
            let run = EdgeRun {
                address: info.grpc_address.clone(),
                incarnation: info.incarnation,
            };
            (info.node, run)
        })
        .collect()
}

/// Whether `topology` has node `me` draining, down or removed.
fn leaving(topology: &wire::ClusterTopology, me: u64) -> bool {
    let status = topology
        .nodes
        .iter()
        .find(|info| info.node == me)
        .map(wire::NodeInfo::status);
    status != Some(NodeStatus::Up)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 51;

    fn node(node: u64, owner: bool, status: NodeStatus, incarnation: u64) -> wire::NodeInfo {
        wire::NodeInfo {
            node,
            edge: !owner,
            owner,
            grpc_address: format!("127.0.0.1:{}", 7000 + node),
            http_address: String::new(),
            status: status as i32,
            incarnation,
        }
    }

    fn topology(epoch: u64, nodes: Vec<wire::NodeInfo>) -> wire::ClusterTopology {
        wire::ClusterTopology {
            epoch,
            nodes,
            ..Default::default()
        }
    }

    /// Owners 1 and 2, this edge (51) and edge 52, all up, at `epoch`.
    fn settled(epoch: u64) -> wire::ClusterTopology {
        topology(
            epoch,
            vec![
                node(1, true, NodeStatus::Up, 1),
                node(2, true, NodeStatus::Up, 1),
                node(ME, false, NodeStatus::Up, 1),
                node(52, false, NodeStatus::Up, 1),
            ],
        )
    }

    /// What the node holds once it has carried out `plan` for `topology`.
    fn after(applied: Applied, topology: &wire::ClusterTopology) -> Applied {
        let plan = plan(&applied, topology, ME);
        let mut edges = applied.edges;
        for node in plan.edges_gone {
            edges.remove(&node);
        }
        edges.extend(plan.edges_new);
        Applied {
            topology: Some(topology.clone()),
            edges,
        }
    }

    fn run(node: u64, incarnation: u64) -> EdgeRun {
        EdgeRun {
            address: format!("127.0.0.1:{}", 7000 + node),
            incarnation,
        }
    }

    #[test]
    fn the_first_topology_installs_the_ring_and_connects_the_other_edges() {
        let plan = plan(&Applied::default(), &settled(3), ME);
        assert_eq!(
            plan,
            Plan {
                edges_gone: vec![],
                edges_new: vec![(52, run(52, 1))],
                newer: true,
                owners_changed: true,
                leaving: None,
            }
        );
    }

    #[test]
    fn a_topology_no_newer_than_the_applied_one_changes_nothing() {
        let applied = after(Applied::default(), &settled(3));
        let mut older = settled(2);
        older.nodes.pop();
        assert_eq!(plan(&applied, &older, ME), Plan::default());
        assert_eq!(plan(&applied, &settled(3), ME), Plan::default());
    }

    #[test]
    fn a_new_epoch_with_the_same_owners_moves_no_keys() {
        let applied = after(Applied::default(), &settled(3));
        let mut next = settled(4);
        next.nodes.push(node(53, false, NodeStatus::Up, 1));
        let plan = plan(&applied, &next, ME);
        assert!(plan.newer);
        assert!(!plan.owners_changed);
        assert_eq!(plan.edges_new, vec![(53, run(53, 1))]);
        assert!(plan.edges_gone.is_empty());
    }

    #[test]
    fn an_owner_marked_down_or_back_changes_the_owners() {
        let applied = after(Applied::default(), &settled(3));
        let mut down = settled(4);
        down.nodes[1].status = NodeStatus::Down as i32;
        assert!(plan(&applied, &down, ME).owners_changed);
        let applied = after(applied, &down);
        assert!(plan(&applied, &settled(5), ME).owners_changed);
        // Draining takes an owner out of the ring too.
        let mut draining = settled(6);
        draining.nodes[0].status = NodeStatus::Draining as i32;
        assert!(plan(&after(applied, &settled(5)), &draining, ME).owners_changed);
    }

    #[test]
    fn an_edge_down_or_restarted_loses_its_sessions_and_a_new_run_is_connected() {
        let applied = after(Applied::default(), &settled(3));
        let mut restarted = settled(4);
        restarted.nodes[3].incarnation = 2;
        let plan_restart = plan(&applied, &restarted, ME);
        assert_eq!(plan_restart.edges_gone, vec![52]);
        assert_eq!(plan_restart.edges_new, vec![(52, run(52, 2))]);
        assert!(!plan_restart.owners_changed);

        let mut down = settled(4);
        down.nodes[3].status = NodeStatus::Down as i32;
        let plan_down = plan(&applied, &down, ME);
        assert_eq!(plan_down.edges_gone, vec![52]);
        assert!(plan_down.edges_new.is_empty());

        // A draining edge still has clients: deliveries to it go on.
        let mut draining = settled(4);
        draining.nodes[3].status = NodeStatus::Draining as i32;
        let plan_draining = plan(&applied, &draining, ME);
        assert!(plan_draining.edges_gone.is_empty());
    }

    #[test]
    fn this_node_sends_its_clients_away_when_it_leaves_and_takes_them_back_when_up() {
        let applied = after(Applied::default(), &settled(3));
        for status in [NodeStatus::Draining, NodeStatus::Down] {
            let mut leaving = settled(4);
            leaving.nodes[2].status = status as i32;
            assert_eq!(
                plan(&applied, &leaving, ME).leaving,
                Some(true),
                "{status:?}"
            );
        }
        // Removed: no longer in the topology at all.
        let mut removed = settled(4);
        removed.nodes.remove(2);
        assert_eq!(plan(&applied, &removed, ME).leaving, Some(true));

        // Said once: still down in the next epoch is no new news.
        let mut down = settled(4);
        down.nodes[2].status = NodeStatus::Down as i32;
        let applied = after(applied, &down);
        let mut still_down = settled(5);
        still_down.nodes[2].status = NodeStatus::Down as i32;
        assert_eq!(plan(&applied, &still_down, ME).leaving, None);
        assert_eq!(plan(&applied, &settled(5), ME).leaving, Some(false));
    }

    #[test]
    fn a_first_topology_without_this_node_keeps_it_out_of_service() {
        // Not in the topology yet (its first heartbeat is not through): it takes no clients.
        let mut not_yet = settled(3);
        not_yet.nodes.remove(2);
        assert_eq!(plan(&Applied::default(), &not_yet, ME).leaving, Some(true));
        assert_eq!(plan(&Applied::default(), &settled(3), ME).leaving, None);
    }
}
