//! Reloading a running node's config (issue 15; root only): SIGHUP and `skywire reload`
//! apply what changed in the routes, in one batch, while a ping every 10 ms runs on a
//! route that did not change (it loses nothing); a broken file changes nothing, and
//! `skywire reload` says where it is broken (exit 78).
//!
//! A and B on one link. B has two routes to A from the start: `to-a` (10.77.0.1) and
//! `extra` (for A's 10.77.0.11, B's 10.77.0.22). A starts with `to-b` only; a reload gives
//! it `extra`, and another takes it away.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::fs;
use std::process::Command;
use std::time::Duration;

use netns::{Node, Topology, addr, outcome, route, skip_unless_root, tun};
use skywire_dataplane::engine::RouteSetup;

fn to_b(b: &Node) -> RouteSetup {
    route(
        "to-b",
        b.key(),
        &["10.77.0.2/32"],
        "198.18.1.2:6000",
        (100, 200, 100),
        "198.18.1.2:6000",
    )
}

fn extra(b: &Node) -> RouteSetup {
    route(
        "extra",
        b.key(),
        &["10.77.0.22/32"],
        "198.18.1.2:6000",
        (300, 400, 300),
        "198.18.1.2:6000",
    )
}

/// A's config with these routes.
fn configure_a(a: &Node, routes: Vec<RouteSetup>) {
    a.configure(|node| {
        node.listen = addr("198.18.1.1:6000");
        node.tun = Some(tun("sky0", &["10.77.0.1/24", "10.77.0.11/32"]));
        node.routes = routes;
    });
}

/// `skywire reload` for `node`: exit code, stdout, stderr.
fn reload(node: &Node) -> (i32, String, String) {
    outcome(
        &Command::new(common::skywire_binary())
            .args(["reload", "--socket"])
            .arg(node.socket())
            .output()
            .unwrap(),
    )
}

fn route_names(node: &Node) -> Vec<String> {
    node.status_json()
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn a_reload_applies_only_what_changed_and_a_broken_config_changes_nothing() {
    if !skip_unless_root("a_reload_applies_only_what_changed_and_a_broken_config_changes_nothing") {
        return;
    }
    let mut topo = Topology::new();
    topo.host("a");
    topo.host("b");
    topo.link(
        ("a", "eth-b", "198.18.1.1/24"),
        ("b", "eth-a", "198.18.1.2/24"),
    );
    let mut a = Node::new(&topo, "a", "a");
    let mut b = Node::new(&topo, "b", "b");
    configure_a(&a, vec![to_b(&b)]);
    b.configure(|node| {
        node.listen = addr("198.18.1.2:6000");
        node.tun = Some(tun("sky0", &["10.77.0.2/24", "10.77.0.22/32"]));
        node.routes = vec![
            route(
                "to-a",
                a.key(),
                &["10.77.0.1/32"],
                "198.18.1.1:6000",
                (200, 100, 200),
                "198.18.1.1:6000",
            ),
            route(
                "extra",
                a.key(),
                &["10.77.0.11/32"],
                "198.18.1.1:6000",
                (400, 300, 400),
                "198.18.1.1:6000",
            ),
        ];
    });
    b.start();
    a.start();
    assert_eq!(topo.ping("a", "10.77.0.1", "10.77.0.2", 2), 2);
    let before = a.status_json().routes[0].clone();

    // A ping every 10 ms on to-b for the whole test.
    let mut pinger = topo.spawn(
        "a",
        "pinger",
        std::path::Path::new("ping"),
        &["-n", "-q", "-i", "0.01", "-I", "10.77.0.1", "10.77.0.2"],
    );

    // Add `extra` with SIGHUP.
    configure_a(&a, vec![to_b(&b), extra(&b)]);
    let (code, _, err) = {
        let out = topo.output("a", "kill", &["-HUP", &a.pid().unwrap().to_string()]);
        outcome(&out)
    };
    assert_eq!(code, 0, "{err}");
    let added = netns::wait_until(Duration::from_secs(5), || {
        route_names(&a) == ["to-b", "extra"]
    });
    assert!(added.is_some(), "{}", a.status_text());
    assert_eq!(topo.ping("a", "10.77.0.11", "10.77.0.22", 3), 3);
    assert!(
        a.log_text()
            .contains("SIGHUP: config reloaded: routes: 1 added, 0 removed, 1 kept")
    );

    // A broken file: `skywire reload` names file, line and key, exits 78; SIGHUP logs it;
    // nothing changes.
    let good = fs::read_to_string(a.config_path()).unwrap();
    let broken = good.replacen("mtu: ", "mtu: lots", 1);
    assert_ne!(broken, good);
    fs::write(a.config_path(), &broken).unwrap();
    let (code, out, err) = reload(&a);
    assert_eq!(code, 78, "{out}{err}");
    let path = a.config_path().display().to_string();
    assert!(err.contains(&path) && err.contains("node.tun.mtu"), "{err}");
    topo.output("a", "kill", &["-HUP", &a.pid().unwrap().to_string()]);
    let logged = netns::wait_until(Duration::from_secs(5), || {
        a.log_text().contains("SIGHUP: the config was not reloaded")
    });
    assert!(logged.is_some(), "{}", a.log_text());
    assert_eq!(route_names(&a), ["to-b", "extra"]);

    // Take `extra` away with `skywire reload`.
    configure_a(&a, vec![to_b(&b)]);
    let (code, out, err) = reload(&a);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "reloaded: routes: 0 added, 1 removed, 1 kept; relay rules: 0 added, 0 removed, 0 kept"
    );
    assert_eq!(route_names(&a), ["to-b"]);
    assert_eq!(topo.ping("a", "10.77.0.11", "10.77.0.22", 1), 0);

    // A key that applies only at a start is named, and changes nothing.
    let moved = fs::read_to_string(a.config_path()).unwrap().replacen(
        "198.18.1.1:6000\n",
        "198.18.1.1:6001\n",
        1,
    );
    fs::write(a.config_path(), moved).unwrap();
    let (code, out, _) = reload(&a);
    assert_eq!(code, 0);
    assert!(
        out.contains("applied only at the next start: node.listen"),
        "{out}"
    );

    // to-b was never touched: the same session (handshakes) and not a ping lost.
    let after = a.status_json().routes[0].clone();
    assert_eq!(after.name, "to-b");
    assert_eq!(after.handshakes, before.handshakes);
    Command::new("kill")
        .args(["-INT", &pinger.pid().to_string()])
        .status()
        .unwrap();
    let summary = pinger.finish_any(Duration::from_secs(5)).1.join("\n");
    println!("pinger: {summary}");
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {summary}"));
    assert!(line.contains(" 0% packet loss"), "{line}");
}
