#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use skywire_dataplane::wire::RouteId;

use super::*;
use crate::config::Config;

const PEER: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

fn node(text: &str) -> NodeConfig {
    Config::parse(text, "node.yaml").unwrap().node
}

fn config(routes: &[(&str, u32, &str)], relays: &[(u32, &str)], listen: &str) -> String {
    let mut text = format!(
        "node:\n  key: node.key\n  listen: {listen}\n  tun:\n    name: sky0\n    addresses: [10.77.0.1/24]\n"
    );
    if !routes.is_empty() {
        text.push_str("  routes:\n");
        for (name, in_id, prefix) in routes {
            text.push_str(&format!(
                "  - {{ name: {name}, peer: {PEER}, prefixes: [{prefix}], first_hop: 198.18.1.2:6000, out_id: {in_id}, in_id: {in_id}, prev_hop: 198.18.1.2:6000 }}\n"
            ));
        }
    }
    if !relays.is_empty() {
        text.push_str("  relays:\n");
        for (in_id, next) in relays {
            text.push_str(&format!(
                "  - {{ in_id: {in_id}, prev_hop: 198.18.1.2:6000, out_id: 9, next_hop: {next} }}\n"
            ));
        }
    }
    text
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

#[test]
fn only_what_changed_is_in_the_batch() {
    let old = node(&config(
        &[
            ("a", 1, "10.77.0.2/32"),
            ("b", 2, "10.77.0.3/32"),
            ("c", 3, "10.77.0.4/32"),
        ],
        &[(10, "198.18.2.3:6000"), (11, "198.18.2.4:6000")],
        "0.0.0.0:6000",
    ));
    // a kept, b's prefix changed, c gone, d new; relay 10 kept, 11's next hop changed, 12 new.
    let new = node(&config(
        &[
            ("a", 1, "10.77.0.2/32"),
            ("b", 2, "10.77.0.9/32"),
            ("d", 4, "10.77.0.5/32"),
        ],
        &[
            (10, "198.18.2.3:6000"),
            (11, "198.18.2.5:6000"),
            (12, "198.18.2.6:6000"),
        ],
        "0.0.0.0:6000",
    ));
    let plan = plan(&old, &new);
    assert_eq!(
        plan.summary,
        ReloadSummary {
            routes_added: 2,
            routes_removed: 2,
            routes_kept: 1,
            relays_added: 2,
            relays_removed: 1,
            relays_kept: 1,
            restart_needed: Vec::new(),
        }
    );
    let removed: Vec<RouteId> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            RuleChange::Remove { in_id } => Some(*in_id),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [id(2), id(3), id(11)]);
    let added: Vec<RouteId> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            RuleChange::AddEnd { route, origin } => {
                assert_eq!(*origin, Origin::Config);
                Some(route.in_id)
            }
            RuleChange::AddRelay { relay, .. } => Some(relay.in_id),
            RuleChange::Remove { .. } => None,
        })
        .collect();
    assert_eq!(added, [id(2), id(4), id(11), id(12)]);
    // Removals come first, so a changed id is free again when it is added.
    let first_add = plan
        .changes
        .iter()
        .position(|c| !matches!(c, RuleChange::Remove { .. }))
        .unwrap();
    assert!(
        plan.changes[first_add..]
            .iter()
            .all(|c| !matches!(c, RuleChange::Remove { .. }))
    );
}

#[test]
fn the_same_config_changes_nothing_and_fixed_keys_wait_for_a_restart() {
    let text = config(
        &[("a", 1, "10.77.0.2/32")],
        &[(10, "198.18.2.3:6000")],
        "0.0.0.0:6000",
    );
    let same = plan(&node(&text), &node(&text));
    assert!(same.changes.is_empty());
    assert!(same.summary.is_noop());
    assert_eq!((same.summary.routes_kept, same.summary.relays_kept), (1, 1));

    let moved = config(
        &[("a", 1, "10.77.0.2/32")],
        &[(10, "198.18.2.3:6000")],
        "0.0.0.0:7000",
    )
    .replace("sky0", "sky1");
    let plan = plan(&node(&text), &node(&moved));
    assert!(plan.changes.is_empty());
    assert_eq!(plan.summary.restart_needed, ["node.listen", "node.tun"]);
    assert!(
        plan.summary
            .to_string()
            .ends_with("changed but applied only at the next start: node.listen, node.tun"),
        "{}",
        plan.summary
    );
}
