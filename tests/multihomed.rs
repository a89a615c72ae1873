//! A relay with an address on each link (issue 18's first trial): B listens on
//! `0.0.0.0:6000` with 198.18.1.2 towards A and 198.18.2.2 towards C, and registers
//! `198.18.1.2:6000`, which C cannot reach. C learns B's address on their link from B's
//! authenticated probes, probes it there, and reports it; the manager then gives C rules
//! with that address, and B answers each neighbour from the address it reaches (root only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::fs;
use std::time::Duration;

use netns::managed::{MANAGER_ADDR, management_network};
use netns::{Node, Topology, addr, skip_unless_root, tun, wait_until};
use skywire_control::config::{AcceptRule, ConfigFile, ManagerLink, ManagerSection};

#[test]
fn a_relay_with_an_address_on_each_link_carries_a_route() {
    if !skip_unless_root("a_relay_with_an_address_on_each_link_carries_a_route") {
        return;
    }
    let mut topo = Topology::new();
    for host in ["a", "b", "c"] {
        topo.host(host);
    }
    topo.link(
        ("a", "eth-b", "198.18.1.1/24"),
        ("b", "eth-a", "198.18.1.2/24"),
    );
    topo.link(
        ("b", "eth-c", "198.18.2.2/24"),
        ("c", "eth-b", "198.18.2.3/24"),
    );
    management_network(&mut topo, &["a", "b", "c"]);
    // A and C have no route to each other's link: only B joins them.
    assert_eq!(topo.ping("c", "198.18.2.3", "198.18.1.2", 1), 0);

    let dir = topo.dir().join("manager");
    fs::create_dir(&dir).unwrap();
    let manager_key: skywire_dataplane::crypto::PublicKey =
        common::keygen(&dir.join("manager.key"))
            .0
            .trim()
            .parse()
            .unwrap();
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|h| Node::new(&topo, h, &format!("node-{h}")))
        .collect();
    let mut manager = ManagerSection::new("manager.key");
    manager.listen = addr(MANAGER_ADDR);
    manager.heartbeat = Duration::from_millis(500);
    manager.links = vec![
        [nodes[0].key(), nodes[1].key()],
        [nodes[1].key(), nodes[2].key()],
    ];
    ConfigFile::manager(manager)
        .write(dir.join("manager.yaml"))
        .unwrap();
    let a_key = nodes[0].key();
    for (i, (listen, endpoint)) in [
        ("198.18.1.1:6000", "198.18.1.1:6000"),
        // B: every address, registered as the one A reaches (as in the trial).
        ("0.0.0.0:6000", "198.18.1.2:6000"),
        ("198.18.2.3:6000", "198.18.2.3:6000"),
    ]
    .into_iter()
    .enumerate()
    {
        nodes[i].configure(|s| {
            s.listen = addr(listen);
            if i != 1 {
                s.tun = Some(tun("sky0", &[&format!("10.77.0.{}/32", i + 1)]));
            }
            s.manager = Some(ManagerLink {
                address: addr(MANAGER_ADDR),
                key: manager_key,
                endpoint: addr(endpoint),
                accept: if i == 2 {
                    vec![AcceptRule {
                        peer: Some(a_key),
                        prefixes: vec!["10.77.0.1/32".parse().unwrap()],
                    }]
                } else {
                    Vec::new()
                },
            });
        });
    }
    let manager = topo.spawn(
        "m",
        "manager",
        &common::skywire_binary(),
        &[
            "manager",
            "--config",
            dir.join("manager.yaml").to_str().unwrap(),
        ],
    );
    for node in &mut nodes {
        node.start();
    }
    let sky = |node: &Node, args: &[&str]| {
        let out = std::process::Command::new(common::skywire_binary())
            .args(args)
            .arg("--socket")
            .arg(node.socket())
            .output()
            .unwrap();
        netns::outcome(&out)
    };
    // Both links come up: C reaches B at 198.18.2.2, learned from B's probes.
    let up = wait_until(Duration::from_secs(15), || {
        let (code, out, _) = sky(&nodes[0], &["nodes", "--json"]);
        code == 0
            && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| {
                v["links"]
                    .as_array()
                    .is_some_and(|l| l.len() == 2 && l.iter().all(|l| l["up"] == true))
            })
    });
    assert!(
        up.is_some(),
        "links: {}\nmanager:\n{}",
        sky(&nodes[0], &["nodes"]).1,
        manager.stderr()
    );
    let (code, out, err) = sky(&nodes[0], &["route", "add", &nodes[2].public_key]);
    assert_eq!(code, 0, "route add: {out}{err}\n{}", manager.stderr());
    let (code, out, err) = sky(
        &nodes[0],
        &["ping", &nodes[2].public_key, "-c", "3", "-i", "0.2"],
    );
    assert_eq!(code, 0, "ping: {out}{err}");
    assert!(!out.contains("lost"), "{out}");
    // TUN traffic too, through B.
    assert_eq!(topo.ping("a", "10.77.0.1", "10.77.0.3", 3), 3);
    // C never saw B's packets from an address it did not expect.
    let c = nodes[2].status_json();
    let wrong = c
        .drops
        .0
        .iter()
        .find(|(name, _)| name == "wrong previous hop")
        .map_or(0, |(_, n)| *n);
    assert_eq!(wrong, 0, "{}", nodes[2].status_text());
    let unreachable = nodes[1]
        .status_json()
        .drops
        .0
        .iter()
        .find(|(name, _)| name == "unreachable")
        .map_or(0, |(_, n)| *n);
    eprintln!("B's unreachable drops: {unreachable}");
}
