//! Multi-hop behaviour of engine cores in the in-memory mesh, and the mesh itself.

use super::*;
use crate::engine::{Origin, RelaySetup};
use crate::wire::PacketType;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

/// The TUN address of the `i`th node of a line.
fn tun_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, i as u8 + 1)
}

/// A line of `hops` nodes, each with a TUN device, with a route from the first to the last.
fn line(hops: usize) -> (Mesh, Vec<NodeId>, Route) {
    let mut mesh = Mesh::new(Instant::now());
    let nodes: Vec<NodeId> = (0..hops)
        .map(|i| {
            let tun = Prefix::new(tun_ip(i).into(), 24).unwrap();
            mesh.add_host(addr(i as u8 + 1), tun).unwrap()
        })
        .collect();
    let route = mesh.add_route(&nodes).unwrap();
    (mesh, nodes, route)
}

/// An IP packet from the first node of a line of `hops` to the last, or back.
fn forth(hops: usize, payload: &[u8]) -> Vec<u8> {
    ipv4(tun_ip(0), tun_ip(hops - 1), payload)
}

fn back(hops: usize, payload: &[u8]) -> Vec<u8> {
    ipv4(tun_ip(hops - 1), tun_ip(0), payload)
}

const MARKER: &[u8] = b"MARKER-7f3a-in-clear?";

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("{i:08} ").into_bytes();
    p.extend_from_slice(MARKER);
    p.resize(200 + i % 1000, b'.');
    p
}

/// What a node decrypted: packets its route ends opened, and what reached its TUN.
fn decrypted(mesh: &Mesh, node: NodeId) -> u64 {
    let opened: u64 = mesh
        .status(node)
        .unwrap()
        .routes
        .iter()
        .map(|r| r.rx_packets)
        .sum();
    opened + mesh.tun(node).unwrap().len() as u64
}

/// Datagrams a node forwarded, by its relay rules' counters.
fn relayed(mesh: &Mesh, node: NodeId) -> u64 {
    let status = mesh.status(node).unwrap();
    status.relays.iter().map(|r| r.packets).sum()
}

fn drop_count(drops: &[(&str, u64)], name: &str) -> u64 {
    drops.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn three_hops_carry_traffic_that_relays_cannot_read() {
    let (mut mesh, nodes, route) = line(3);
    let (src, dst) = (route.source(), route.destination());
    mesh.set_capture(true);
    for i in 0..500 {
        mesh.tun_input(src, &forth(3, &payload(i))).unwrap();
        if i % 50 == 0 {
            mesh.settle();
        }
    }
    mesh.settle();
    let inbox = mesh.tun(dst).unwrap();
    assert_eq!(inbox.len(), 500);
    for (i, got) in inbox.iter().enumerate() {
        assert_eq!(got, &forth(3, &payload(i)));
    }
    // The marker never crossed the wire in clear, on any link.
    assert!(!mesh.captured().is_empty());
    for d in mesh.captured() {
        assert!(!d.bytes.windows(MARKER.len()).any(|w| w == MARKER), "{d:?}");
    }
    let relay = nodes[1];
    assert_eq!(decrypted(&mesh, relay), 0);
    assert!(
        mesh.status(relay).unwrap().routes.is_empty(),
        "the relay holds no session"
    );
    assert!(relayed(&mesh, relay) >= 500);
    // The reverse direction works too.
    let reply = back(3, b"reply");
    mesh.tun_input(dst, &reply).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(src).unwrap(), [reply]);
}

#[test]
fn five_hops_and_per_hop_counters() {
    let (mut mesh, nodes, route) = line(5);
    let src = route.source();
    mesh.set_capture(true);
    // A route end keeps 16 packets while its handshake runs (STAGED_PER_ROUTE): the first
    // packet brings the keys, the other 99 follow back to back.
    mesh.tun_input(src, &forth(5, &payload(0))).unwrap();
    mesh.settle();
    for i in 1..100 {
        mesh.tun_input(src, &forth(5, &payload(i))).unwrap();
    }
    mesh.settle();
    assert_eq!(mesh.tun(route.destination()).unwrap().len(), 100);
    for &relay in &nodes[1..4] {
        let from = mesh.addr(relay).unwrap();
        let sent = mesh.captured().iter().filter(|d| d.from == from).count() as u64;
        assert_eq!(relayed(&mesh, relay), sent);
        assert_eq!(decrypted(&mesh, relay), 0);
    }
}

#[test]
fn bad_packets_are_dropped_counted_and_traffic_continues() {
    let (mut mesh, nodes, route) = line(3);
    let (src, dst) = (route.source(), route.destination());
    mesh.set_capture(true);
    let first = forth(3, b"first");
    mesh.tun_input(src, &first).unwrap();
    mesh.settle();
    let (a, b, c) = (addr(1), addr(2), addr(3));
    let data_to_b = mesh
        .captured()
        .iter()
        .rev()
        .find(|d| d.from == a && d.to == b && d.bytes.get(1) == Some(&3))
        .cloned()
        .unwrap();
    // Replayed, forged, unknown route, wrong previous hop, garbage.
    mesh.inject(data_to_b.clone());
    // A forgery needs an unseen counter, or the replay check refuses it first.
    let mut forged = data_to_b.clone();
    forged.bytes[12..20].copy_from_slice(&1000u64.to_be_bytes());
    mesh.inject(forged);
    let mut unknown = data_to_b.clone();
    unknown.bytes[4..8].copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    mesh.inject(unknown);
    mesh.inject(Datagram {
        from: c,
        ..data_to_b.clone()
    });
    mesh.inject(Datagram {
        from: a,
        to: b,
        bytes: b"\x01\x03garbage".to_vec(),
    });
    mesh.settle();
    let relay = mesh.status(nodes[1]).unwrap();
    assert_eq!(drop_count(&relay.drops, "unknown route"), 1);
    assert_eq!(drop_count(&relay.drops, "wrong previous hop"), 1);
    assert_eq!(drop_count(&relay.drops, "malformed"), 1);
    let end = mesh.status(dst).unwrap().routes.remove(0);
    assert_eq!(drop_count(&end.drops, "replay"), 1);
    assert_eq!(drop_count(&end.drops, "bad tag"), 1);
    assert_eq!(end.drops.iter().map(|(_, n)| n).sum::<u64>(), 2);
    let second = forth(3, b"second");
    mesh.tun_input(src, &second).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(dst).unwrap(), [first, second]);
}

#[test]
fn traffic_resumes_after_the_far_end_restarts() {
    let (mut mesh, _, route) = line(3);
    let (src, dst) = (route.source(), route.destination());
    mesh.tun_input(src, &forth(3, b"before")).unwrap();
    mesh.settle();
    mesh.advance(Duration::from_secs(2));
    // The node restarts from its configuration: same identity and route, no keys.
    mesh.restart(dst).unwrap();
    mesh.advance(Duration::from_millis(100));
    // The first packet after the restart is lost (its key is gone) but prompts a handshake.
    mesh.tun_input(src, &forth(3, b"lost")).unwrap();
    mesh.settle();
    let after = forth(3, b"after");
    mesh.tun_input(src, &after).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(dst).unwrap().last(), Some(&after));
}

#[test]
fn idle_route_stays_quiet_and_keys_expire() {
    let (mut mesh, _, route) = line(3);
    let (src, dst) = (route.source(), route.destination());
    mesh.tun_input(src, &forth(3, b"x")).unwrap();
    mesh.settle();
    mesh.set_capture(true);
    // Passive keepalive from C ten seconds after it received data, then silence.
    for _ in 0..60 {
        mesh.advance(Duration::from_secs(1));
    }
    assert_eq!(
        mesh.captured().len(),
        2,
        "one keepalive, relayed once: {:?}",
        mesh.captured()
    );
    for _ in 0..600 {
        mesh.advance(Duration::from_secs(1));
    }
    // Neither end has keys any more: given a packet, each sends a handshake initiation
    // (and keeps the packet), not data.
    for (end, packet) in [(dst, back(3, b"y")), (src, forth(3, b"z"))] {
        mesh.tun_input(end, &packet).unwrap();
        let sent: Vec<Datagram> = mesh.in_flight().iter().cloned().collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].from, mesh.addr(end).unwrap());
        assert_eq!(sent[0].bytes[1], PacketType::HandshakeInit as u8);
        mesh.clear_in_flight();
    }
}

// ----- the mesh itself -----

#[test]
fn a_cut_link_loses_datagrams_both_ways_until_mended() {
    let (mut mesh, nodes, route) = line(3);
    let (src, dst) = (route.source(), route.destination());
    mesh.cut(nodes[2], nodes[1]);
    assert!(mesh.is_cut(nodes[1], nodes[2]));
    mesh.tun_input(src, &forth(3, b"lost")).unwrap();
    mesh.settle();
    assert!(mesh.tun(dst).unwrap().is_empty());
    // The initiation crossed A - B and was lost on B - C.
    assert_eq!(mesh.wire_stats().cut, 1);
    mesh.mend(nodes[1], nodes[2]);
    // The handshake is retried after its timeout; the staged packet follows.
    mesh.run_for(Duration::from_secs(6), Duration::from_millis(500));
    assert_eq!(mesh.tun(dst).unwrap(), [forth(3, b"lost")]);
    assert_eq!(mesh.wire_stats().cut, 1);
}

#[test]
fn datagrams_to_nobody_and_to_down_nodes_are_counted() {
    let (mut mesh, nodes, route) = line(3);
    mesh.inject(Datagram {
        from: addr(1),
        to: addr(99),
        bytes: vec![1, 2, 3],
    });
    assert_eq!(mesh.deliver_next(), Some(Delivery::NoOne));
    assert_eq!(mesh.deliver_next(), None);
    mesh.kill(nodes[1]).unwrap();
    assert!(!mesh.is_up(nodes[1]).unwrap());
    assert_eq!(
        mesh.ping(nodes[1], route.source_in(), 1),
        Err(SimError::NodeDown(nodes[1]))
    );
    mesh.tun_input(route.source(), &forth(3, b"x")).unwrap();
    assert_eq!(mesh.deliver_next(), Some(Delivery::Down(nodes[1])));
    let stats = mesh.wire_stats();
    assert_eq!((stats.to_nobody, stats.to_down, stats.delivered), (1, 1, 0));
    // Back up, with its configured relay rules; the handshake is retried and gets through.
    mesh.restart(nodes[1]).unwrap();
    assert_eq!(mesh.status(nodes[1]).unwrap().relays.len(), 2);
    mesh.run_for(Duration::from_secs(6), Duration::from_millis(500));
    assert_eq!(mesh.tun(route.destination()).unwrap(), [forth(3, b"x")]);
}

#[test]
fn pings_and_probes_through_the_mesh() {
    let (mut mesh, nodes, route) = line(3);
    mesh.ping(route.source(), route.source_in(), 7).unwrap();
    mesh.advance(Duration::from_millis(5));
    let events = mesh.drain_events(route.source()).unwrap();
    assert!(
        matches!(events[..], [EngineEvent::Pong { nonce: 7, .. }]),
        "{events:?}"
    );
    let b = mesh.addr(nodes[1]).unwrap();
    mesh.all_neighbours();
    mesh.probe(nodes[0], b, 9).unwrap();
    mesh.settle();
    let events = mesh.drain_events(nodes[0]).unwrap();
    assert!(
        matches!(events[..], [EngineEvent::ProbeReply { nonce: 9, from, .. }] if from == b),
        "{events:?}"
    );
    assert_eq!(
        mesh.ping(nodes[1], route.source_in(), 1),
        Err(SimError::Ping(PingError::UnknownRoute(route.source_in())))
    );
}

#[test]
fn output_through_parts_goes_on_the_wire_at_the_next_step() {
    let (mut mesh, nodes, _) = line(2);
    let b = mesh.addr(nodes[1]).unwrap();
    mesh.all_neighbours();
    let parts = mesh.parts(nodes[0]).unwrap();
    parts.core.probe(parts.now, b, 3, parts.io);
    assert!(mesh.in_flight().is_empty());
    assert_eq!(mesh.deliver_next(), Some(Delivery::Handled(nodes[1])));
    assert_eq!(mesh.deliver_next(), Some(Delivery::Handled(nodes[0])));
    assert_eq!(mesh.drain_events(nodes[0]).unwrap().len(), 1);
}

#[test]
fn routes_get_fresh_ids_and_bad_paths_are_refused() {
    let (mut mesh, nodes, first) = line(3);
    let (a, b, c) = (nodes[0], nodes[1], nodes[2]);
    for bad in [&[a][..], &[a, b, a], &[a, a, c], &[]] {
        assert_eq!(mesh.add_route(bad), Err(SimError::BadPath), "{bad:?}");
    }
    assert_eq!(
        mesh.add_route(&[a, NodeId(7)]),
        Err(SimError::NoSuchNode(NodeId(7)))
    );
    let manager = Origin::Manager {
        route: 1,
        expire_after: Duration::from_secs(60),
    };
    let second = mesh.add_route_with(&[c, b, a], manager).unwrap();
    let mut ids: Vec<RouteId> = [&first, &second]
        .iter()
        .flat_map(|r| r.forward.iter().chain(&r.backward))
        .copied()
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    assert_eq!(mesh.status(b).unwrap().relays.len(), 4);
    // Configured routes are written into the setup; the manager's are not.
    assert_eq!(mesh.setup(b).unwrap().relays.len(), 2);
    assert_eq!(mesh.setup(c).unwrap().routes.len(), 1);
    // A refusal at one node takes back what the others accepted: the destination (applied
    // after the relays) is down.
    let before: Vec<NodeStatus> = [b, c].iter().map(|&n| mesh.status(n).unwrap()).collect();
    mesh.kill(a).unwrap();
    assert_eq!(mesh.add_route(&[c, b, a]), Err(SimError::NodeDown(a)));
    let after: Vec<NodeStatus> = [b, c].iter().map(|&n| mesh.status(n).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(mesh.setup(b).unwrap().relays.len(), 2);
}

#[test]
fn a_forwarding_loop_stops_at_the_settle_limit() {
    let mut mesh = Mesh::new(Instant::now());
    let id = |n| RouteId::new(n).unwrap();
    let relay = |in_id, prev, out_id, next| RelaySetup {
        in_id: id(in_id),
        prev_hop: addr(prev),
        out_id: id(out_id),
        next_hop: addr(next),
    };
    // A loop of three relays (a node refuses a loop of two: a relay rule back to its
    // previous hop).
    for (n, rule) in [
        (1, relay(1, 3, 2, 2)),
        (2, relay(2, 1, 3, 3)),
        (3, relay(3, 2, 1, 1)),
    ] {
        let mut setup = bare_setup(addr(n)).unwrap();
        setup.relays.push(rule);
        mesh.add_node(setup).unwrap();
    }
    let mut data = vec![0u8; 40];
    data[0] = 1;
    data[1] = PacketType::Data as u8;
    data[7] = 1;
    mesh.inject(Datagram {
        from: addr(3),
        to: addr(1),
        bytes: data,
    });
    mesh.set_settle_limit(1000);
    assert_eq!(mesh.settle(), 1000);
    assert_eq!(
        mesh.in_flight().len(),
        1,
        "the looping datagram is still there"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Bytes from anywhere to anyone: no panic, and the route still works afterwards.
    #[test]
    fn garbage_never_panics_and_traffic_continues(
        junk in prop::collection::vec(
            (0u8..5, 1u8..5, prop::collection::vec(any::<u8>(), 0..200)),
            0..40,
        )
    ) {
        let (mut mesh, _, route) = line(3);
        mesh.tun_input(route.source(), &forth(3, b"before")).unwrap();
        mesh.settle();
        for (from, to, mut bytes) in junk {
            // Often a plausible header, to reach past the first checks.
            if bytes.len() > 8 && from % 2 == 0 {
                bytes[0] = 1;
            }
            mesh.inject(Datagram { from: addr(from), to: addr(to), bytes });
        }
        mesh.settle();
        mesh.tun_input(route.source(), &forth(3, b"after")).unwrap();
        mesh.settle();
        prop_assert_eq!(mesh.tun(route.destination()).unwrap().last(), Some(&forth(3, b"after")));
    }
}
