//! Prometheus metrics of a node and of the manager, fetched with `curl` (root only):
//!
//! ```text
//!   A(tun) --- B --- C(tun)      mesh links; the manager M on the management bridge
//! ```
//!
//! Every node serves `node.metrics` on 127.0.0.1:9586 of its own namespace (with
//! `per_route`), the manager `manager.metrics` on 127.0.0.1:9587 of its. After pings
//! A -> C through the TUN devices over a manager route A-B-C, the test checks:
//! - each node's `/metrics` against its `skywire status --json`: node-wide transfer and
//!   handshakes (sums over route ends plus `retired`), relayed traffic at B, drop reasons,
//!   routes and relays, and the per-route series of the route end;
//! - the manager's: 3 nodes online, 2 links up, 1 active route, a setup that committed and
//!   a route computation;
//! - `promtool check metrics` (Debian's `prometheus`) passes on both texts;
//! - a bad request (another path, another method, a body, garbage) is answered with its
//!   status and closes only its own connection: `/metrics` keeps answering.
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

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::managed::ManagedMesh;
use netns::{skip_unless_root, tun, wait_until};
use skywire_control::config::{AcceptRule, MetricsConfig};
use skywire_control::node::ctl::StatusReply;

const NAMES: [&str; 3] = ["a", "b", "c"];
const LINKS: [(usize, usize, u8); 2] = [(0, 1, 1), (1, 2, 2)];
const A_TUN: &str = "10.77.0.1";
const C_TUN: &str = "10.77.0.3";
const NODE_METRICS: &str = "http://127.0.0.1:9586/metrics";
const MANAGER_METRICS: &str = "http://127.0.0.1:9587/metrics";

/// `curl ARGS` in host `host`'s namespace: (HTTP status, body).
fn curl(mesh: &ManagedMesh, host: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-sS", "--max-time", "10", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = mesh.topo.output(host, "curl", &all);
    assert!(
        out.status.success(),
        "curl {args:?} in {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on `text`: passes, or the test fails with its complaints.
fn promtool_check(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus`; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Node `i`'s metrics and its status, read until two status reads around the scrape agree
/// (nothing moved meanwhile: a stray packet between the reads would make the comparison
/// flaky, not wrong).
fn stable_scrape(mesh: &ManagedMesh, i: usize) -> (String, StatusReply) {
    for _ in 0..20 {
        let before = mesh.nodes[i].status_json();
        let (code, text) = curl(mesh, NAMES[i], &[NODE_METRICS]);
        assert_eq!(code, 200, "{text}");
        let after = mesh.nodes[i].status_json();
        let counters = |s: &StatusReply| {
            (
                s.routes
                    .iter()
                    .map(|r| {
                        (
                            r.rx_packets,
                            r.tx_packets,
                            r.rx_bytes,
                            r.tx_bytes,
                            r.drops.clone(),
                        )
                    })
                    .collect::<Vec<_>>(),
                s.relays
                    .iter()
                    .map(|r| (r.packets, r.bytes))
                    .collect::<Vec<_>>(),
                s.drops.clone(),
                s.retired.clone(),
            )
        };
        if counters(&before) == counters(&after) {
            return (text, after);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("node {i}'s counters never stood still for a scrape");
}

fn assert_node_matches_status(text: &str, s: &StatusReply) {
    let sum = |f: fn(&skywire_control::node::ctl::protocol::RouteReply) -> u64| -> f64 {
        s.routes.iter().map(f).sum::<u64>() as f64
    };
    let r = &s.retired;
    for (series, expected) in [
        (
            "skywire_node_rx_packets_total",
            sum(|x| x.rx_packets) + r.rx_packets as f64,
        ),
        (
            "skywire_node_tx_packets_total",
            sum(|x| x.tx_packets) + r.tx_packets as f64,
        ),
        (
            "skywire_node_rx_bytes_total",
            sum(|x| x.rx_bytes) + r.rx_bytes as f64,
        ),
        (
            "skywire_node_tx_bytes_total",
            sum(|x| x.tx_bytes) + r.tx_bytes as f64,
        ),
        (
            "skywire_node_handshakes_total",
            sum(|x| x.handshakes) + r.handshakes as f64,
        ),
        (
            "skywire_node_relayed_packets_total",
            (s.relays.iter().map(|x| x.packets).sum::<u64>() + r.relayed_packets) as f64,
        ),
        (
            "skywire_node_relayed_bytes_total",
            (s.relays.iter().map(|x| x.bytes).sum::<u64>() + r.relayed_bytes) as f64,
        ),
        ("skywire_node_routes", s.routes.len() as f64),
        ("skywire_node_relays", s.relays.len() as f64),
        ("skywire_node_under_load", f64::from(u8::from(s.under_load))),
        ("skywire_node_manager_registered", 1.0),
    ] {
        assert_eq!(value(text, series), Some(expected), "{series}\n{text}");
    }
    for (reason, count) in &s.drops.0 {
        let series = format!("skywire_node_dropped_packets_total{{reason=\"{reason}\"}}");
        assert_eq!(
            value(text, &series),
            Some(*count as f64),
            "{series}\n{text}"
        );
    }
    for route in &s.routes {
        let peer: String = route.peer.to_string().chars().take(16).collect();
        let labels = format!("route=\"{}\",peer=\"{peer}\"", route.name);
        for (name, expected) in [
            ("skywire_route_rx_packets_total", route.rx_packets),
            ("skywire_route_tx_bytes_total", route.tx_bytes),
            ("skywire_route_handshakes_total", route.handshakes),
        ] {
            let series = format!("{name}{{{labels}}}");
            assert_eq!(
                value(text, &series),
                Some(expected as f64),
                "{series}\n{text}"
            );
        }
    }
}

#[test]
fn node_and_manager_metrics_match_status_and_pass_promtool() {
    if !skip_unless_root("node_and_manager_metrics_match_status_and_pass_promtool") {
        return;
    }
    let mut mesh = ManagedMesh::start(&NAMES, &LINKS, |i, node, nodes| {
        node.metrics = Some(MetricsConfig {
            listen: "127.0.0.1:9586".parse().unwrap(),
            per_route: true,
        });
        if i == 2
            && let Some(manager) = &mut node.manager
        {
            manager.accept = vec![AcceptRule {
                peer: Some(nodes[0].key()),
                prefixes: vec![format!("{A_TUN}/32").parse().unwrap()],
            }];
        }
        if i != 1 {
            node.tun = Some(tun("sky0", &[&format!("10.77.0.{}/32", i + 1)]));
        }
    });
    // The manager again, with its metrics on.
    mesh.stop_manager();
    mesh.configure_manager(|m| m.metrics = Some("127.0.0.1:9587".parse().unwrap()));
    mesh.start_manager();
    let online = wait_until(Duration::from_secs(15), || {
        mesh.nodes_json().is_some_and(|v| {
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["online"] == true))
                && v["links"]
                    .as_array()
                    .is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["state"] == "up"))
        })
    });
    assert!(online.is_some(), "mesh not back:\n{}", mesh.manager_log());

    let key_c = mesh.key(2).to_owned();
    let (code, out, err) = mesh.sky(0, &["route", "add", &key_c, "--json"]);
    assert_eq!(code, 0, "route add: {err}{out}\n{}", mesh.manager_log());
    assert_eq!(mesh.topo.ping("a", A_TUN, C_TUN, 20), 20);

    // Each node: its metrics are its status, and promtool takes them.
    for (i, name) in NAMES.iter().enumerate() {
        let (text, status) = stable_scrape(&mesh, i);
        assert_node_matches_status(&text, &status);
        promtool_check(&text, name);
    }
    let (a_text, _) = stable_scrape(&mesh, 0);
    assert!(value(&a_text, "skywire_node_tx_packets_total").unwrap() >= 20.0);
    let (b_text, _) = stable_scrape(&mesh, 1);
    // Requests and replies both cross B.
    assert!(
        value(&b_text, "skywire_node_relayed_packets_total").unwrap() >= 40.0,
        "{b_text}"
    );

    // The manager.
    let (code, m_text) = curl(&mesh, "m", &[MANAGER_METRICS]);
    assert_eq!(code, 200, "{m_text}");
    for (series, expected) in [
        ("skywire_manager_nodes{state=\"online\"}", 3.0),
        ("skywire_manager_links{state=\"up\"}", 2.0),
        ("skywire_manager_routes{state=\"active\"}", 1.0),
    ] {
        assert_eq!(value(&m_text, series), Some(expected), "{series}\n{m_text}");
    }
    assert!(value(&m_text, "skywire_manager_route_setups_total{result=\"ok\"}").unwrap() >= 1.0);
    assert!(value(&m_text, "skywire_manager_route_computation_seconds_count").unwrap() >= 1.0);
    promtool_check(&m_text, "the manager");

    // Bad requests: each answered, each closing only its own connection.
    assert_eq!(curl(&mesh, "a", &["http://127.0.0.1:9586/other"]).0, 404);
    assert_eq!(curl(&mesh, "a", &["-X", "POST", NODE_METRICS]).0, 405);
    assert_eq!(
        curl(&mesh, "a", &["-d", "x=1", "-X", "GET", NODE_METRICS]).0,
        400
    );
    let garbage = mesh.topo.output(
        "a",
        "sh",
        &[
            "-c",
            "timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9586; head -c 20000 /dev/urandom \
             >&3; cat <&3 >/dev/null'; true",
        ],
    );
    assert!(garbage.status.success());
    let (code, text) = curl(&mesh, "a", &["-I", NODE_METRICS]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(curl(&mesh, "a", &[NODE_METRICS]).0, 200);
}
