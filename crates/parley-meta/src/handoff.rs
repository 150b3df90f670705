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
//! Whatever the epoch, the node serves the apps [`apps`] makes of its own and meta's.
//!
//! See docs/ARCHITECTURE.md, "When the ring changes".

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use parley_core::app::AppConfig;
use parley_core::app::CustomerKey;
use parley_core::app::MultiLogin;
use parley_core::app::Webhook;
use parley_core::ids::AppId;
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

/// The apps a node serves: its own (`local`, from its flags or config file) and meta's. Where
/// both have an app, meta's certificate, login policy and webhook win and its customer keys come
/// on top of the node's own. What meta sends that does not parse is left out, with a warning.
pub fn apps(local: &[AppConfig], cluster: &wire::ClusterTopology) -> Vec<AppConfig> {
    let mut apps: BTreeMap<String, AppConfig> = local
        .iter()
        .map(|app| (app.app_id.to_string(), app.clone()))
        .collect();
    for info in &cluster.apps {
        let Ok(app_id) = AppId::parse(&info.app_id) else {
            tracing::warn!(app_id = %info.app_id, "meta sent an invalid app id");
            continue;
        };
        let mut app = apps
            .remove(&info.app_id)
            .unwrap_or_else(|| AppConfig::new(app_id, None));
        app.certificate = (!info.certificate.is_empty()).then(|| info.certificate.clone());
        app.multi_login = if info.allow_multi_login {
            MultiLogin::AllowMany
        } else {
            MultiLogin::Replace
        };
        for raw in &info.customer_keys {
            match CustomerKey::parse(raw) {
                Ok(key) => app.customer_keys.push(key),
                Err(error) => tracing::warn!(%error, app_id = %info.app_id, "meta sent a bad key"),
            }
        }
        if !info.webhook_url.is_empty() {
            match Webhook::new(&info.webhook_url, &info.webhook_secret) {
                Ok(webhook) => app.webhook = Some(webhook),
                Err(error) => {
                    tracing::warn!(%error, app_id = %info.app_id, "meta sent a bad webhook");
                }
            }
        }
        apps.insert(info.app_id.clone(), app);
    }
    apps.into_values().collect()
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

    const LOCAL: &str = "0123456789abcdef0123456789abcdef";
    const FROM_META: &str = "fedcba9876543210fedcba9876543210";

    fn app_info(app_id: &str) -> wire::AppInfo {
        wire::AppInfo {
            app_id: app_id.to_owned(),
            certificate: "c".repeat(32),
            allow_multi_login: true,
            customer_keys: vec!["meta-key:meta-secret".to_owned(), "no-secret".to_owned()],
            webhook_url: "http://127.0.0.1:9/parley".to_owned(),
            webhook_secret: "s".repeat(16),
        }
    }

    fn with_apps(apps: Vec<wire::AppInfo>) -> wire::ClusterTopology {
        wire::ClusterTopology { apps, ..settled(3) }
    }

    fn local() -> AppConfig {
        let mut app = AppConfig::new(AppId::parse(LOCAL).unwrap(), None);
        app.customer_keys = vec![CustomerKey::parse("own-key:own-secret").unwrap()];
        app
    }

    #[test]
    fn a_node_serves_its_own_apps_and_meta_s_with_meta_s_settings_winning() {
        let served = apps(
            &[local()],
            &with_apps(vec![app_info(LOCAL), app_info(FROM_META)]),
        );
        let ids: Vec<String> = served.iter().map(|app| app.app_id.to_string()).collect();
        assert_eq!(ids, [LOCAL, FROM_META]);
        let both = &served[0];
        assert_eq!(both.certificate.as_deref(), Some("c".repeat(32).as_str()));
        assert_eq!(both.multi_login, MultiLogin::AllowMany);
        let keys: Vec<&str> = both
            .customer_keys
            .iter()
            .map(|key| key.key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["own-key", "meta-key"],
            "meta's keys come on top; a bad one is left out"
        );
        assert_eq!(
            both.webhook.as_ref().map(|webhook| webhook.url.as_str()),
            Some("http://127.0.0.1:9/parley")
        );
    }

    #[test]
    fn what_meta_sends_that_does_not_parse_is_left_out() {
        let mut bad_webhook = app_info(FROM_META);
        bad_webhook.webhook_url = "not a url".to_owned();
        let served = apps(
            &[local()],
            &with_apps(vec![app_info("not-an-app-id"), bad_webhook]),
        );
        let ids: Vec<String> = served.iter().map(|app| app.app_id.to_string()).collect();
        assert_eq!(ids, [LOCAL, FROM_META]);
        assert!(served[1].webhook.is_none());
        // Without meta's word, a node's own app stays as configured.
        assert_eq!(served[0].certificate, None);
        assert_eq!(served[0].multi_login, MultiLogin::Replace);
    }
}
