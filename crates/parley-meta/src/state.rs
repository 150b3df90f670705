//! What meta replicates: the data nodes, their roles, addresses and status, and the epoch that
//! numbers every version of them. Pure: commands in, new state out; Raft and I/O live elsewhere.

use std::collections::BTreeMap;

use parley_core::ids::NodeId;
use serde::Deserialize;
use serde::Serialize;

/// Whether a node takes part in serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// In the ring (owners), taking clients (edges).
    Up,
    /// Leaving on an operator's word: out of the ring, its clients sent elsewhere.
    Draining,
    /// Stopped heartbeating: out of the ring until it heartbeats again.
    Down,
}

/// One data node as meta knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub edge: bool,
    pub owner: bool,
    pub grpc_address: String,
    pub http_address: String,
    /// Chosen by the node's process at start: a new one means the node restarted.
    pub incarnation: u64,
    pub status: NodeStatus,
}

/// A change to the cluster, as written to the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node heartbeats for the first time, after a restart, or after being marked down.
    Join { node: u64, record: NodeRecord },
    /// The leader stopped hearing from a node.
    MarkDown { node: u64, incarnation: u64 },
    /// An operator asks a node to leave gracefully.
    Drain { node: u64 },
    /// An operator forgets a node.
    Remove { node: u64 },
    /// An operator adds an app or changes its certificate or settings.
    PutApp { app_id: String, app: AppRecord },
    /// An operator stops serving an app.
    RemoveApp { app_id: String },
}

/// An app every edge and owner serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// `None`: logins need no token.
    pub certificate: Option<String>,
    pub allow_multi_login: bool,
    /// Customer keys for the server API, each `KEY:SECRET`.
    #[serde(default)]
    pub customer_keys: Vec<String>,
    /// Where the app's events are POSTed, and the secret that signs them.
    #[serde(default)]
    pub webhook: Option<(String, String)>,
}

/// The answer to a command once applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub epoch: u64,
    /// False when the command found nothing to do (a node already down, an unknown node).
    pub changed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Grows by one with every change of `nodes`.
    pub epoch: u64,
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Removed nodes by the incarnation they had: that run may not join again (a restart may).
    #[serde(default)]
    pub removed: BTreeMap<u64, u64>,
    /// The apps, by app id.
    #[serde(default)]
    pub apps: BTreeMap<String, AppRecord>,
}

impl ClusterState {
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let changed = match command {
            Command::Join { node, record } => {
                let record = NodeRecord {
                    status: NodeStatus::Up,
                    ..record.clone()
                };
                self.removed.remove(node);
                self.nodes.insert(*node, record.clone()) != Some(record)
            }
            Command::MarkDown { node, incarnation } => match self.nodes.get_mut(node) {
                // A mark for an earlier run of the node must not take its new run down.
                Some(record)
                    if record.incarnation == *incarnation && record.status != NodeStatus::Down =>
                {
                    record.status = NodeStatus::Down;
                    true
                }
                _ => false,
            },
            Command::Drain { node } => match self.nodes.get_mut(node) {
                Some(record) if record.status == NodeStatus::Up => {
                    record.status = NodeStatus::Draining;
                    true
                }
                _ => false,
            },
            Command::Remove { node } => match self.nodes.remove(node) {
                Some(record) => {
                    self.removed.insert(*node, record.incarnation);
                    true
                }
                None => false,
            },
            Command::PutApp { app_id, app } => {
                self.apps.insert(app_id.clone(), app.clone()) != Some(app.clone())
            }
            Command::RemoveApp { app_id } => self.apps.remove(app_id).is_some(),
        };
        if changed {
            self.epoch += 1;
        }
        Outcome {
            epoch: self.epoch,
            changed,
        }
    }

    /// The owners in the ring: those up.
    pub fn ring_owners(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, record)| record.owner && record.status == NodeStatus::Up)
            .map(|(node, _)| NodeId(*node))
            .collect()
    }

    /// What the leader should write when `node` heartbeats as `record` (status ignored), having
    /// seen epoch `known_epoch`; `None` when meta already has it right.
    ///
    /// A node marked down rejoins only once it has seen the epoch that took it out, so an owner
    /// that was paused drops what it owned before it is handed keys again.
    pub fn on_heartbeat(
        &self,
        node: u64,
        record: &NodeRecord,
        known_epoch: u64,
    ) -> Option<Command> {
        let join = Command::Join {
            node,
            record: record.clone(),
        };
        let Some(known) = self.nodes.get(&node) else {
            let removed = self.removed.get(&node) == Some(&record.incarnation);
            return (!removed).then_some(join);
        };
        if known.incarnation != record.incarnation {
            return Some(join);
        }
        match known.status {
            NodeStatus::Down if known_epoch >= self.epoch => Some(join),
            NodeStatus::Up
                if (
                    known.edge,
                    known.owner,
                    &known.grpc_address,
                    &known.http_address,
                ) != (
                    record.edge,
                    record.owner,
                    &record.grpc_address,
                    &record.http_address,
                ) =>
            {
                Some(join)
            }
            _ => None,
        }
    }
}

/// What the leader does about silent nodes: marks down those not heard from for longer than
/// `timeout`, and forgets those down and silent for longer than `forget_after` (edges of a
/// Kubernetes Deployment come and go with new ids; their old entries must not pile up). By
/// the leader's clock: `last_heard` maps each node to how long ago it was last heard; a node
/// the leader has no time for yet is not judged (its clock starts when the leader first sees
/// it).
pub fn silent_nodes(
    state: &ClusterState,
    last_heard: impl Fn(u64) -> Option<std::time::Duration>,
    timeout: std::time::Duration,
    forget_after: std::time::Duration,
) -> Vec<Command> {
    state
        .nodes
        .iter()
        .filter_map(|(node, record)| {
            let ago = last_heard(*node)?;
            match record.status {
                NodeStatus::Down => (ago > forget_after).then_some(Command::Remove { node: *node }),
                _ => (ago > timeout).then_some(Command::MarkDown {
                    node: *node,
                    incarnation: record.incarnation,
                }),
            }
        })
        .collect()
}

/// Forgives the nodes the time the leader could not hear them. Its failure-detection loop asked
/// to sleep `tick` and slept `slept`: the difference is time the leader's process did not run
/// (paused, or starved of CPU), when it heard nobody whether they spoke or not. Each node's
/// last-heard time moves forward by that much (never past `now`), so a region whose meta node
/// froze and thawed with it keeps its ring, while a node that really fell silent is still
/// marked down once the leader has listened for a whole timeout. Cassandra's failure detector
/// skips a local pause the same way. Returns the time forgiven.
pub fn forgive_deafness(
    last_heard: &mut std::collections::HashMap<u64, std::time::Instant>,
    tick: std::time::Duration,
    slept: std::time::Duration,
    now: std::time::Instant,
) -> std::time::Duration {
    let deaf = slept.saturating_sub(tick);
    for at in last_heard.values_mut() {
        *at = (*at + deaf).min(now);
    }
    deaf
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(owner: bool, incarnation: u64) -> NodeRecord {
        NodeRecord {
            edge: !owner,
            owner,
            grpc_address: "127.0.0.1:1".into(),
            http_address: String::new(),
            incarnation,
            status: NodeStatus::Up,
        }
    }

    fn join(node: u64, record: NodeRecord) -> Command {
        Command::Join { node, record }
    }

    #[test]
    fn every_change_moves_the_epoch_and_no_op_does_not() {
        let mut state = ClusterState::default();
        assert_eq!(state.apply(&join(1, record(true, 7))).epoch, 1);
        assert_eq!(
            state.apply(&join(1, record(true, 7))),
            Outcome {
                epoch: 1,
                changed: false
            }
        );
        assert!(state.apply(&join(2, record(true, 8))).changed);
        assert_eq!(state.ring_owners(), vec![NodeId(1), NodeId(2)]);
        assert!(
            state
                .apply(&Command::MarkDown {
                    node: 2,
                    incarnation: 8
                })
                .changed
        );
        assert_eq!(state.ring_owners(), vec![NodeId(1)]);
        assert_eq!(state.epoch, 3);
        // Already down; an unknown node; a mark for an old run.
        assert!(
            !state
                .apply(&Command::MarkDown {
                    node: 2,
                    incarnation: 8
                })
                .changed
        );
        assert!(!state.apply(&Command::Drain { node: 9 }).changed);
        assert!(
            !state
                .apply(&Command::MarkDown {
                    node: 1,
                    incarnation: 6
                })
                .changed
        );
        assert_eq!(state.epoch, 3);
        assert!(state.apply(&Command::Drain { node: 1 }).changed);
        assert!(state.ring_owners().is_empty());
        assert!(state.apply(&Command::Remove { node: 1 }).changed);
        assert_eq!(state.nodes.len(), 1);
        // The removed run stays out; a restart of it comes back.
        assert_eq!(state.on_heartbeat(1, &record(true, 7), 6), None);
        assert!(state.on_heartbeat(1, &record(true, 8), 6).is_some());
    }

    #[test]
    fn apps_are_put_changed_and_removed() {
        let mut state = ClusterState::default();
        let app = AppRecord {
            certificate: Some("secret".into()),
            allow_multi_login: false,
            customer_keys: vec!["backend:secret".into()],
            webhook: Some(("http://127.0.0.1:9000/hook".into(), "hush".into())),
        };
        let put = Command::PutApp {
            app_id: "a".into(),
            app: app.clone(),
        };
        assert!(state.apply(&put).changed);
        assert!(!state.apply(&put).changed);
        assert_eq!(state.apps["a"], app);
        assert!(
            state
                .apply(&Command::RemoveApp { app_id: "a".into() })
                .changed
        );
        assert!(state.apps.is_empty());
        assert_eq!(state.epoch, 2);
    }

    #[test]
    fn heartbeats_join_new_restarted_and_recovered_nodes_only() {
        let mut state = ClusterState::default();
        assert!(state.on_heartbeat(1, &record(true, 7), 0).is_some());
        state.apply(&join(1, record(true, 7)));
        assert_eq!(state.on_heartbeat(1, &record(true, 7), 1), None);
        // A restart (new incarnation) or a moved address rejoins.
        assert!(state.on_heartbeat(1, &record(true, 8), 1).is_some());
        let mut moved = record(true, 7);
        moved.grpc_address = "127.0.0.1:2".into();
        assert!(state.on_heartbeat(1, &moved, 1).is_some());

        state.apply(&Command::MarkDown {
            node: 1,
            incarnation: 7,
        });
        // Back from a pause: first it must see the epoch that took it out.
        assert_eq!(state.on_heartbeat(1, &record(true, 7), 1), None);
        assert!(state.on_heartbeat(1, &record(true, 7), 2).is_some());

        state.apply(&join(1, record(true, 7)));
        state.apply(&Command::Drain { node: 1 });
        // Draining stays draining while the same run heartbeats; a restart comes back up.
        assert_eq!(state.on_heartbeat(1, &record(true, 7), 4), None);
        assert!(state.on_heartbeat(1, &record(true, 9), 4).is_some());
    }

    #[test]
    fn silence_longer_than_the_timeout_marks_down() {
        let mut state = ClusterState::default();
        state.apply(&join(1, record(true, 1)));
        state.apply(&join(2, record(false, 2)));
        state.apply(&join(3, record(true, 3)));
        state.apply(&Command::MarkDown {
            node: 3,
            incarnation: 3,
        });
        state.apply(&join(4, record(true, 4)));
        let heard = |node: u64| match node {
            1 => Some(Duration::from_millis(100)),
            2 => Some(Duration::from_millis(1500)),
            3 => Some(Duration::from_millis(9000)),
            // Not yet seen by this leader: not judged.
            _ => None,
        };
        assert_eq!(
            silent_nodes(
                &state,
                heard,
                Duration::from_secs(1),
                Duration::from_secs(60)
            ),
            vec![Command::MarkDown {
                node: 2,
                incarnation: 2
            }]
        );
        // Down and silent for longer than `forget_after`: forgotten.
        assert_eq!(
            silent_nodes(
                &state,
                heard,
                Duration::from_secs(1),
                Duration::from_secs(5)
            ),
            vec![
                Command::MarkDown {
                    node: 2,
                    incarnation: 2
                },
                Command::Remove { node: 3 },
            ]
        );
    }

    #[test]
    fn a_leader_that_did_not_run_blames_no_one_for_that_time() {
        use std::time::Instant;
        let tick = Duration::from_millis(100);
        let timeout = Duration::from_secs(1);
        let start = Instant::now();
        let state = {
            let mut state = ClusterState::default();
            state.apply(&join(1, record(true, 1)));
            state.apply(&join(2, record(true, 2)));
            state
        };
        // Node 1 was heard just before the leader froze for 5 s; node 2 went quiet 800 ms
        // before that.
        let frozen_at = start + Duration::from_millis(900);
        let now = frozen_at + Duration::from_secs(5) + tick;
        let mut heard = std::collections::HashMap::from([
            (1, frozen_at),
            (2, start + Duration::from_millis(100)),
        ]);
        let forgiven = forgive_deafness(&mut heard, tick, now - frozen_at, now);
        assert_eq!(forgiven, Duration::from_secs(5));
        let silent = |heard: &std::collections::HashMap<u64, Instant>, now: Instant| {
            silent_nodes(
                &state,
                |node| heard.get(&node).map(|at| now.duration_since(*at)),
                timeout,
                Duration::from_secs(3600),
            )
        };
        // Only the time the leader listened counts: 100 ms for node 1, 900 ms for node 2.
        assert_eq!(silent(&heard, now), vec![]);
        // Node 2 stays silent while the leader listens on: marked down once it has been
        // heard nothing for a whole timeout of the leader's running time.
        let later = now + Duration::from_millis(101);
        assert_eq!(
            silent(&heard, later),
            vec![Command::MarkDown {
                node: 2,
                incarnation: 2
            }]
        );
        // A tick on time forgives nothing, and nothing moves past now.
        let mut on_time = std::collections::HashMap::from([(1, now)]);
        assert_eq!(
            forgive_deafness(&mut on_time, tick, tick, now),
            Duration::ZERO
        );
        assert_eq!(on_time[&1], now);
    }
}
