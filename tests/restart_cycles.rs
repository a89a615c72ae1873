//! kill -9 and restart under traffic (issue 16, row 9), with a manager and real nodes in
//! namespaces (root only): A - B - D and A - C - D, a route A -> D over one relay, a ping
//! through the TUN devices every 50 ms. In each cycle the relay on the route, the
//! destination, the source and the manager are each killed with SIGKILL and started again;
//! each time traffic must flow again (the figure is the longest wait), with no process
//! left over and no "address in use".
//!
//! A restarted source finds the routes it owned in its state file (`node.state_dir`,
//! issue 15) and lists them in its `REGISTER`; the manager, which kept them, rebuilds the
//! rules the source lost. So every role's traffic comes back by itself: the route is added
//! once, at the start. At the end, a source whose state file was damaged starts without
//! it, says so, and keeps the damaged file aside.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::time::{Duration, Instant};

use netns::managed::ManagedMesh;
use netns::{skip_unless_root, tun, wait_until};
use skywire_control::config::AcceptRule;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const LINKS: [(usize, usize, u8); 4] = [(0, 1, 1), (1, 3, 2), (0, 2, 3), (2, 3, 4)];
const A_TUN: &str = "10.77.0.1";
const D_TUN: &str = "10.77.0.4";
/// Cycles of the four kills.
const CYCLES: usize = 20;

/// How long until a ping from A's TUN to D's is answered again (panics after 15 s).
fn traffic_back(mesh: &ManagedMesh, what: &str) -> Duration {
    let started = Instant::now();
    let back = wait_until(Duration::from_secs(15), || {
        mesh.topo
            .ping_args("a", A_TUN, D_TUN, 1, &["-W", "1"])
            .eq(&1)
    });
    back.unwrap_or_else(|| {
        panic!(
            "no traffic 15 s after {what}; A's routes: {:?}\nmanager:\n{}",
            mesh.sky(0, &["route", "ls"]),
            mesh.manager_log()
        )
    });
    started.elapsed()
}

fn route_add(mesh: &ManagedMesh) {
    let ok = wait_until(Duration::from_secs(10), || {
        mesh.sky(0, &["route", "add", &mesh.nodes[3].key().to_string()])
            .0
            == 0
    });
    assert!(ok.is_some(), "route add failed:\n{}", mesh.manager_log());
}

#[test]
fn kill_9_and_restart_of_every_role_under_traffic() {
    if !skip_unless_root("kill_9_and_restart_of_every_role_under_traffic") {
        return;
    }
    let mut mesh = ManagedMesh::start(&NAMES, &LINKS, |i, node, nodes| {
        if i == 3
            && let Some(manager) = &mut node.manager
        {
            manager.accept = vec![AcceptRule {
                peer: Some(nodes[0].key()),
                prefixes: vec!["10.77.0.1/32".parse().unwrap()],
            }];
        }
        if i == 0 || i == 3 {
            node.tun = Some(tun("sky0", &[&format!("10.77.0.{}/32", i + 1)]));
        }
    });
    route_add(&mesh);
    traffic_back(&mesh, "route add");
    // Background traffic all along.
    let _pinger = mesh.topo.spawn(
        "a",
        "pinger",
        std::path::Path::new("ping"),
        &["-n", "-q", "-i", "0.05", "-I", A_TUN, D_TUN],
    );
    let mut worst = [Duration::ZERO; 4];
    let roles = ["relay", "destination", "source", "manager"];
    let started = Instant::now();
    for cycle in 0..CYCLES {
        // The relay the route crosses now.
        let listed = wait_until(Duration::from_secs(10), || {
            mesh.sky(0, &["route", "ls", "--json"])
                .1
                .contains("\"active\"")
        });
        assert!(
            listed.is_some(),
            "cycle {cycle}: A's route is not active: {:?}\nmanager:\n{}\nA:\n{}",
            mesh.sky(0, &["route", "ls"]),
            mesh.manager_log(),
            mesh.nodes[0].log_text()
        );
        let relay = mesh.only_route_path(0)[1];
        mesh.nodes[relay].kill9();
        worst[0] = worst[0].max(traffic_back(&mesh, &format!("cycle {cycle}: relay killed")));
        mesh.nodes[relay].restart();

        mesh.nodes[3].kill9();
        mesh.nodes[3].restart();
        worst[1] = worst[1].max(traffic_back(&mesh, &format!("cycle {cycle}: destination")));

        mesh.nodes[0].kill9();
        mesh.nodes[0].restart();
        worst[2] = worst[2].max(traffic_back(&mesh, "source"));
        // One route: the restored one, not a second.
        let (_, listed, _) = mesh.sky(0, &["route", "ls", "--json"]);
        let routes: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(
            routes["routes"].as_array().map(Vec::len),
            Some(1),
            "cycle {cycle}: A's routes: {listed}"
        );

        mesh.kill9_manager();
        // Installed routes keep forwarding while the manager is away.
        assert_eq!(
            mesh.topo.ping_args("a", A_TUN, D_TUN, 1, &["-W", "1"]),
            1,
            "cycle {cycle}: traffic stopped with the manager"
        );
        mesh.start_manager();
        let t = Instant::now();
        let registered = wait_until(Duration::from_secs(10), || {
            mesh.nodes_json().is_some_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 4 && n.iter().all(|n| n["online"] == true))
            })
        });
        assert!(
            registered.is_some(),
            "cycle {cycle}: nodes did not come back"
        );
        worst[3] = worst[3].max(t.elapsed());
        assert_eq!(
            mesh.topo.ping_args("a", A_TUN, D_TUN, 1, &["-W", "1"]),
            1,
            "cycle {cycle}: no traffic after the manager's restart"
        );
    }
    for (role, worst) in roles.iter().zip(worst) {
        println!(
            "{role}: killed {CYCLES} times; traffic (or registration) back within {worst:?} at worst"
        );
    }
    println!("{CYCLES} cycles in {:?}", started.elapsed());
    // Issue 15: a node that owns manager routes has them back by itself within 5 s.
    assert!(
        worst[2] < Duration::from_secs(5),
        "the source's route came back after {:?}",
        worst[2]
    );
    // No process left over: one node per host, one manager; no "address in use".
    let running = |pattern: &str| {
        let out = std::process::Command::new("pgrep")
            .args(["-c", "-f", pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    for (i, name) in NAMES.iter().enumerate() {
        let config = mesh.nodes[i].config_path().display().to_string();
        let count = running(&config);
        assert_eq!(count, 1, "{name}: {count} processes of {config}");
        let log = mesh.nodes[i].log_text();
        assert!(!log.contains("in use"), "{name}:\n{log}");
    }
    assert!(!mesh.manager_log().contains("in use"));

    // A damaged state file: the source starts without it, says so and keeps it aside.
    let state = mesh.nodes[0].dir().join("state");
    mesh.nodes[0].kill9();
    let file = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("A's state file");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    mesh.nodes[0].restart();
    let log = mesh.nodes[0].log_text();
    assert!(log.contains("kept as"), "{log}");
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    // It owns nothing now; a new route add works.
    route_add(&mesh);
    traffic_back(&mesh, "route add after a damaged state file");
}
