//! Attacks on the route handshake, on real engine cores in the mesh: replays into a route
//! end installed again, messages moved from one route to another between the same two
//! keys, and a peer that floods valid initiations. Each is refused and counted, and honest
//! traffic goes on.

use super::*;
use crate::crypto::noise::{self, RouteBinding, StaticKeys};
use crate::engine::Origin;
use crate::engine::core::LOAD_BURST;
use crate::session::peer::{INITIATION_BURST, INITIATION_INTERVAL};
use crate::wire::{HANDSHAKE_INIT_LEN, PacketType};
use std::net::Ipv4Addr;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

fn tun_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, n)
}

/// Nodes 1..=n at `addr(i)`, each with TUN address `tun_ip(i)`.
fn hosts(mesh: &mut Mesh, n: u8) -> Vec<NodeId> {
    (1..=n)
        .map(|i| {
            let tun = Prefix::new(tun_ip(i).into(), 24).unwrap();
            mesh.add_host(addr(i), tun).unwrap()
        })
        .collect()
}

/// An IP packet from node `from` to node `to` (numbered as in [`hosts`]).
fn packet(from: u8, to: u8, payload: &[u8]) -> Vec<u8> {
    ipv4(tun_ip(from), tun_ip(to), payload)
}

fn is_init(d: &Datagram) -> bool {
    d.bytes.get(1) == Some(&(PacketType::HandshakeInit as u8))
}

/// A route end's drop counter, found by the end's incoming id.
fn end_drops(mesh: &Mesh, node: NodeId, in_id: RouteId, name: &str) -> u64 {
    let status = mesh.status(node).unwrap();
    let end = status.routes.iter().find(|r| r.in_id == in_id).unwrap();
    end.drops.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Handshakes the end with this incoming id answered or completed since it was installed,
/// told by its last handshake time.
fn has_handshaken(mesh: &Mesh, node: NodeId, in_id: RouteId) -> bool {
    let status = mesh.status(node).unwrap();
    let end = status.routes.iter().find(|r| r.in_id == in_id).unwrap();
    end.last_handshake.is_some()
}

#[test]
fn initiations_replayed_into_a_reinstalled_route_end_are_refused() {
    let mut mesh = Mesh::new(Instant::now());
    let n = hosts(&mut mesh, 3);
    let (a, c) = (n[0], n[2]);
    let route = mesh.add_route(&n).unwrap();
    mesh.set_capture(true);
    mesh.tun_input(a, &packet(1, 3, b"first")).unwrap();
    mesh.settle();
    // Past rekey_after_time, A's next packet starts a second handshake.
    mesh.advance(Duration::from_secs(121));
    mesh.tun_input(a, &packet(1, 3, b"rekey")).unwrap();
    mesh.settle();
    let inits: Vec<Datagram> = mesh
        .take_captured()
        .into_iter()
        .filter(|d| d.to == addr(3) && is_init(d))
        .collect();
    assert_eq!(inits.len(), 2, "{inits:?}");
    assert_eq!(mesh.take_tun(c).unwrap().len(), 2);

    // C's route end is installed again, as a reload or a repair does: a fresh session.
    let end = mesh.setup(c).unwrap().routes[0].clone();
    mesh.apply(
        c,
        vec![
            RuleChange::Remove { in_id: end.in_id },
            RuleChange::AddEnd {
                route: end,
                origin: Origin::Config,
            },
        ],
    )
    .unwrap();
    // The captured initiations come back: the newest (an exact copy of the last one C
    // accepted) and the older one. A fresh session alone would answer both.
    for init in &inits {
        mesh.inject(init.clone());
    }
    mesh.deliver_all();
    assert!(
        !mesh.captured().iter().any(|d| d.from == addr(3)),
        "C answered a replay: {:?}",
        mesh.captured()
    );
    let c_in = route.destination_in();
    assert_eq!(end_drops(&mesh, c, c_in, "replayed handshake"), 2);
    assert!(!has_handshaken(&mesh, c, c_in));

    // Honest traffic: A's next packet finds no key at C, which then starts a handshake of
    // its own; the packet after that arrives.
    mesh.tun_input(a, &packet(1, 3, b"lost")).unwrap();
    mesh.settle();
    let after = packet(1, 3, b"after");
    mesh.tun_input(a, &after).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(c).unwrap(), [after]);
}

#[test]
fn an_initiation_moved_to_another_route_between_the_same_keys_is_refused() {
    let mut mesh = Mesh::new(Instant::now());
    let n = hosts(&mut mesh, 3);
    let (a, c) = (n[0], n[2]);
    // Two routes A - B - C: the newer one carries A's traffic to C.
    let other = mesh.add_route(&n).unwrap();
    let used = mesh.add_route(&n).unwrap();
    mesh.tun_input(a, &packet(1, 3, b"hello")).unwrap();
    // A's initiation goes to B, and B forwards it towards C: take it off the wire there.
    mesh.deliver_next();
    let genuine = mesh.take_next().unwrap();
    assert!(is_init(&genuine) && genuine.to == addr(3), "{genuine:?}");
    assert_eq!(
        genuine.bytes[4..8],
        used.destination_in().get().to_be_bytes()
    );
    // The attacker, who can send as B, delivers it on the other route first.
    let mut moved = genuine.clone();
    moved.bytes[4..8].copy_from_slice(&other.destination_in().get().to_be_bytes());
    mesh.inject(moved);
    mesh.deliver_all();
    assert_eq!(
        end_drops(&mesh, c, other.destination_in(), "bad handshake"),
        1
    );
    assert!(!has_handshaken(&mesh, c, other.destination_in()));
    assert!(mesh.in_flight().is_empty(), "C answered on the other route");
    // The genuine initiation, delivered late, is still accepted on its own route: the moved
    // copy left nothing in C's memory of A's key.
    mesh.inject(genuine);
    mesh.settle();
    assert_eq!(mesh.tun(c).unwrap(), [packet(1, 3, b"hello")]);
    assert_eq!(
        end_drops(&mesh, c, used.destination_in(), "replayed handshake"),
        0
    );
    // And the other route still works when it is used: its handshake is its own.
    let reply = packet(3, 1, b"back");
    mesh.apply(
        a,
        vec![RuleChange::Remove {
            in_id: used.source_in(),
        }],
    )
    .unwrap();
    mesh.apply(
        c,
        vec![RuleChange::Remove {
            in_id: used.destination_in(),
        }],
    )
    .unwrap();
    mesh.tun_input(c, &reply).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(a).unwrap(), [reply]);
    assert!(has_handshaken(&mesh, c, other.destination_in()));
}

#[test]
fn a_peer_flooding_valid_initiations_is_rate_limited_and_others_are_not() {
    let mut mesh = Mesh::new(Instant::now());
    let n = hosts(&mut mesh, 4);
    let (a, c, d) = (n[0], n[2], n[3]);
    let from_a = mesh.add_route(&[a, n[1], c]).unwrap();
    let from_d = mesh.add_route(&[d, n[1], c]).unwrap();
    // A's key is used to make valid initiations on A's route, each with a new timestamp
    // (from A's wall clock, so A's own later ones are newer still), delivered to C from
    // the relay: as many as the attacker likes, at one instant.
    let keys = StaticKeys::new(
        mesh.setup(a).unwrap().private_key.clone(),
        mesh.public_key(c).unwrap(),
    )
    .unwrap();
    let binding = RouteBinding {
        initiator_in: from_a.source_in(),
        responder_in: from_a.destination_in(),
    };
    let base = u64::try_from(mesh.unix_time().as_nanos()).unwrap();
    // Fewer than the node's load burst, so that the node stays out of load (and D's
    // initiation below still finds a token): this is the per-peer budget of 5.8, not the
    // flood protection of 5.10 (`cookie_tests`).
    let flood = u64::from(LOAD_BURST) - 1;
    mesh.set_capture(true);
    for i in 0..flood {
        let mut bytes = vec![0u8; HANDSHAKE_INIT_LEN];
        let index = u32::try_from(i).unwrap() + 1;
        noise::write_init(
            &keys,
            binding,
            from_a.destination_in(),
            index,
            base + i,
            &mut bytes,
        )
        .unwrap();
        mesh.inject(Datagram {
            from: addr(2),
            to: addr(3),
            bytes,
        });
    }
    mesh.deliver_all();
    let burst = u64::from(INITIATION_BURST);
    let answered = mesh
        .take_captured()
        .iter()
        .filter(|d| d.from == addr(3))
        .count() as u64;
    assert_eq!(answered, burst);
    let limited = end_drops(&mesh, c, from_a.destination_in(), "handshake rate limited");
    assert_eq!(limited, flood - burst);

    // Another peer of C's, at the same instant: its own budget, untouched.
    let hello = packet(4, 3, b"from d");
    mesh.tun_input(d, &hello).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(c).unwrap(), [hello]);
    assert_eq!(
        end_drops(&mesh, c, from_d.destination_in(), "handshake rate limited"),
        0
    );

    // A itself is held to the same budget. Once it refilled (one per INITIATION_INTERVAL),
    // A's genuine handshake goes through; its timestamp is newer than the flood's.
    mesh.advance(INITIATION_INTERVAL);
    let from_a_now = packet(1, 3, b"from a");
    mesh.tun_input(a, &from_a_now).unwrap();
    mesh.settle();
    assert_eq!(mesh.tun(c).unwrap().last(), Some(&from_a_now));
    assert_eq!(
        end_drops(&mesh, c, from_a.destination_in(), "handshake rate limited"),
        limited
    );
}

#[test]
fn two_routes_between_the_same_keys_handshake_at_the_same_instant() {
    // Both route ends at A initiate in the same instant: A's node gives the second a later
    // timestamp than the first, so C, which remembers the newest per key, answers both.
    let mut mesh = Mesh::new(Instant::now());
    let n = hosts(&mut mesh, 3);
    let (a, c) = (n[0], n[2]);
    let first = mesh.add_route(&n).unwrap();
    let second = mesh.add_route(&n).unwrap();
    mesh.ping(a, first.source_in(), 1).unwrap();
    mesh.ping(a, second.source_in(), 2).unwrap();
    mesh.settle();
    let events = mesh.drain_events(a).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for route in [&first, &second] {
        assert!(has_handshaken(&mesh, c, route.destination_in()));
        assert_eq!(
            end_drops(&mesh, c, route.destination_in(), "replayed handshake"),
            0
        );
    }
    let memory = mesh
        .core(c)
        .unwrap()
        .peer_memory(&mesh.public_key(a).unwrap())
        .unwrap();
    assert!(memory.newest_accepted().is_some());
    assert_eq!(mesh.core(c).unwrap().peers_remembered(), 1);
}
