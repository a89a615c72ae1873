//! What the CLI says during an outage, with the real binary, three `skywire node`s and a
//! manager in network namespaces (root only):
//!
//! ```text
//!   A(tun) --- B --- C(tun)      mesh links 198.18.1.0/24 (A-B), 198.18.2.0/24 (B-C)
//!   M: skywire manager           management bridge 198.18.100.0/24 (netns::managed)
//! ```
//!
//! A's route to C crosses B, the only relay. With B killed there is no path:
//! - `route ls` says `repairing` with the manager's reason and when it tries again (text
//!   and `--json`);
//! - `skywire ping` says once that the route is repairing, and why, instead of "no reply"
//!   at every ping.
//!
//! And with A's only way to B's address removed, A logs that it cannot send to B, naming
//! the address and the OS error, once however many packets it drops; with the manager
//! stopped too, a lost ping says that the node cannot ask its manager.
//!
//! Skipped (with a message) when not root; CI runs it as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::time::Duration;

use netns::managed::ManagedMesh;
use netns::{ip, tun, wait_until};
use skywire_control::config::AcceptRule;

const NAMES: [&str; 3] = ["a", "b", "c"];
const LINKS: [(usize, usize, u8); 2] = [(0, 1, 1), (1, 2, 2)];

/// A - B - C, with C accepting A's routes.
fn line() -> ManagedMesh {
    ManagedMesh::start(&NAMES, &LINKS, |i, node, nodes| {
        if i == 2
            && let Some(manager) = &mut node.manager
        {
            manager.accept = vec![AcceptRule {
                peer: Some(nodes[0].key()),
                prefixes: vec!["10.78.0.1/32".parse().unwrap()],
            }];
        }
        if i != 1 {
            node.tun = Some(tun("sky0", &[&format!("10.78.0.{}/32", i + 1)]));
        }
    })
}

/// A - B - C with every link up.
fn line_up() -> ManagedMesh {
    let mesh = line();
    let up = wait_until(Duration::from_secs(8), || {
        mesh.nodes_json().is_some_and(|v| {
            v["links"]
                .as_array()
                .is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["state"] == "up"))
        })
    });
    assert!(up.is_some(), "links not up: {:?}", mesh.nodes_json());
    mesh
}

#[test]
fn an_unreachable_next_hop_is_logged_once() {
    if !netns::skip_unless_root("an_unreachable_next_hop_is_logged_once") {
        return;
    }
    let mut mesh = line_up();
    let (code, _, err) = mesh.sky(0, &["route", "add", mesh.key(2)]);
    assert_eq!(code, 0, "route add: {err}\n{}", mesh.manager_log());
    // A's only way to B's endpoint goes (the namespace has no default route).
    ip(&["-n", &mesh.topo.ns("a"), "route", "del", "198.19.0.2/32"]);
    let _ = mesh.sky(0, &["ping", mesh.key(2), "-c", "1"]);
    let line = "sending to 198.19.0.2:6000: Network is unreachable (os error 101)";
    let logged = wait_until(Duration::from_secs(5), || {
        mesh.nodes[0].log_text().contains(line)
    });
    let log = mesh.nodes[0].log_text();
    assert!(logged.is_some(), "{log}");
    // Pings, probes and keepalives keep failing: still one line.
    std::thread::sleep(Duration::from_secs(2));
    let log = mesh.nodes[0].log_text();
    assert_eq!(log.matches(line).count(), 1, "{log}");
    let status = mesh.nodes[0].status_text();
    assert!(status.contains("unreachable"), "{status}");
    println!("A's log:\n{log}");

    // With no manager to ask either, a lost ping says that (the route end is still there:
    // rules outlive the manager).
    mesh.stop_manager();
    let (code, text, err) = mesh.sky(0, &["ping", mesh.key(2), "-c", "1"]);
    println!("skywire ping without a manager:\n{text}{err}");
    assert_eq!(code, 1, "{text}{err}");
    assert_eq!(
        text.matches("ping: no reply, and the node cannot ask its manager: ")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn route_ls_and_ping_say_why_a_route_is_down() {
    if !netns::skip_unless_root("route_ls_and_ping_say_why_a_route_is_down") {
        return;
    }
    let mut mesh = line_up();
    let (code, out, err) = mesh.sky(0, &["route", "add", mesh.key(2), "--json"]);
    assert_eq!(code, 0, "route add: {err}\n{}", mesh.manager_log());
    let route: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(mesh.path(&route), vec![0, 1, 2], "{route}");
    let id = route["id"].as_str().unwrap().to_owned();
    // Active: no reason, no retry, and the text says only `active`.
    assert!(route.get("reason").is_none(), "{route}");
    let (_, text, _) = mesh.sky(0, &["route", "ls"]);
    assert!(text.contains("  state: active\n"), "{text}");

    // B dies: no path from A to C.
    mesh.nodes[1].kill9();
    let down = wait_until(Duration::from_secs(5), || {
        let (code, out, _) = mesh.sky(0, &["route", "ls", "--json"]);
        code == 0 && out.contains("no_path")
    });
    assert!(down.is_some(), "{}", mesh.manager_log());
    let (code, out, _) = mesh.sky(0, &["route", "ls", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let route = &listed["routes"][0];
    assert_eq!(route["state"], "repairing", "{listed}");
    assert_eq!(route["reason"]["kind"], "no_path", "{listed}");
    assert!(
        route["reason"]["message"]
            .as_str()
            .unwrap()
            .starts_with("no path over links that are up from"),
        "{listed}"
    );
    assert!(route["retry_in_ms"].is_u64(), "{listed}");
    let (code, text, err) = mesh.sky(0, &["route", "ls"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("  state: repairing: no path over links that are up from")
            && text.contains("; next try in "),
        "{text}"
    );
    println!("route ls during the outage:\n{text}");

    // `skywire ping`: the route's state and reason, once, not "no reply" twice.
    let (code, text, err) = mesh.sky(0, &["ping", mesh.key(2), "-c", "2", "-i", "0.1"]);
    println!("skywire ping during the outage:\n{text}{err}");
    assert_eq!(code, 1, "{text}{err}");
    let said = format!("ping: route {id} is repairing: no path over links that are up from");
    assert_eq!(text.matches(&said).count(), 1, "{text}");
    assert!(!text.contains("no reply within"), "{text}");
}
