//! Three node cores A - B - C in the in-memory mesh ([`crate::sim`]), configured as their
//! config files would: a route A -> C through the relay B (ids 100 -> 101 towards C,
//! 200 -> 201 back to A).

use super::*;
use crate::crypto::PrivateKey;
use crate::engine::setup::{GrantError, RelaySetup, TunSetup};
use crate::engine::status::NodeStatus;
use crate::route::{EndpointId, Prefix};
use crate::sim::{Datagram, Mesh, NodeId, SimError};
use crate::wire::{PING_LEN, PacketType, RouteId, TRANSPORT_HEADER_LEN};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const C: NodeId = NodeId(2);

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// An IPv4 packet to `dst` with `payload` (only the fields the core reads are real), from
/// the other end's address: A (10.77.0.1) sends to C (10.77.0.3) and C to A, each from the
/// address its peer's route allows.
fn ipv4(dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let src = if dst == [10, 77, 0, 3] {
        [10, 77, 0, 1]
    } else {
        [10, 77, 0, 3]
    };
    ipv4_from(src, dst, payload)
}

/// An IPv4 packet from `src` to `dst` with `payload`.
fn ipv4_from(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A, B and C at 198.18.0.1-3, as configured.
fn three() -> Mesh {
    let (ka, kb, kc) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let tun = |a: &str| {
        Some(TunSetup {
            name: "sky0".into(),
            addresses: vec![prefix(a)],
            mtu: 1420,
        })
    };
    let a = NodeSetup {
        private_key: ka.clone(),
        listen: addr(1),
        tun: tun("10.77.0.1/24"),
        routes: vec![RouteSetup {
            name: "to-c".into(),
            peer: kc.public_key(),
            prefixes: vec![prefix("10.77.0.3/32")],
            first_hop: addr(2),
            out_id: id(100),
            in_id: id(201),
            peer_in_id: id(101),
            prev_hop: addr(2),
            persistent_keepalive: None,
        }],
        relays: vec![],
        offload: false,
        stack: crate::stack::StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    };
    let b = NodeSetup {
        private_key: kb,
        listen: addr(2),
        tun: None,
        routes: vec![],
        relays: vec![
            RelaySetup {
                in_id: id(100),
                prev_hop: addr(1),
                out_id: id(101),
                next_hop: addr(3),
            },
            RelaySetup {
                in_id: id(200),
                prev_hop: addr(3),
                out_id: id(201),
                next_hop: addr(1),
            },
        ],
        offload: false,
        stack: crate::stack::StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    };
    let c = NodeSetup {
        private_key: kc,
        listen: addr(3),
        tun: tun("10.77.0.3/24"),
        routes: vec![RouteSetup {
            name: "to-a".into(),
            peer: ka.public_key(),
            prefixes: vec![prefix("10.77.0.1/32")],
            first_hop: addr(2),
            out_id: id(200),
            in_id: id(101),
            peer_in_id: id(201),
            prev_hop: addr(2),
            persistent_keepalive: None,
        }],
        relays: vec![],
        offload: false,
        stack: crate::stack::StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    };
    let mut mesh = Mesh::new(Instant::now());
    for setup in [a, b, c] {
        mesh.add_node(setup).unwrap();
    }
    mesh
}

fn key(mesh: &Mesh, node: NodeId) -> PublicKey {
    mesh.public_key(node).unwrap()
}

fn node_status(mesh: &Mesh, node: NodeId) -> NodeStatus {
    mesh.status(node).unwrap()
}

fn tun_in(mesh: &mut Mesh, node: NodeId, packet: &[u8]) {
    mesh.tun_input(node, packet).unwrap();
}

fn tun_out(mesh: &Mesh, node: NodeId) -> &[Vec<u8>] {
    mesh.tun(node).unwrap()
}

/// Put a datagram on the wire as if `from` had sent it.
fn inject(mesh: &mut Mesh, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
    mesh.inject(Datagram { from, to, bytes });
}

fn node_events(mesh: &mut Mesh, node: NodeId) -> Vec<EngineEvent> {
    mesh.drain_events(node).unwrap()
}

fn drop_count(mesh: &Mesh, node: NodeId, name: &str) -> u64 {
    let status = node_status(mesh, node);
    status.drops.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn packets_wait_for_the_handshake_then_arrive_in_order() {
    let mut mesh = three();
    let sent: Vec<Vec<u8>> = (0..5u8).map(|i| ipv4([10, 77, 0, 3], &[i; 100])).collect();
    for p in &sent {
        tun_in(&mut mesh, A, p);
    }
    mesh.settle();
    assert_eq!(tun_out(&mesh, C), sent);
    // And back.
    let reply = ipv4([10, 77, 0, 1], b"pong");
    tun_in(&mut mesh, C, &reply);
    mesh.settle();
    assert_eq!(tun_out(&mesh, A), vec![reply]);

    let a = node_status(&mesh, A);
    assert_eq!((a.routes[0].tx_packets, a.routes[0].rx_packets), (5, 1));
    assert!(a.routes[0].last_handshake.is_some());
    let b = node_status(&mesh, B);
    assert_eq!(b.relays.len(), 2);
    // 5 data + initiation + keepalive forward, response + pong back.
    assert_eq!(
        b.relays
            .iter()
            .find(|r| r.in_id == id(100))
            .unwrap()
            .packets,
        7
    );
    assert_eq!(
        b.relays
            .iter()
            .find(|r| r.in_id == id(200))
            .unwrap()
            .packets,
        2
    );
}

#[test]
fn unroutable_and_oversized_packets_are_counted() {
    let mut mesh = three();
    tun_in(&mut mesh, A, &ipv4([10, 77, 0, 9], b"nobody"));
    tun_in(&mut mesh, A, &[0x00; 40]);
    tun_in(&mut mesh, A, &ipv4([10, 77, 0, 3], &[0u8; 1500]));
    mesh.settle();
    assert!(tun_out(&mesh, C).is_empty());
    let status = node_status(&mesh, A);
    let drop = |name| status.drops.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(
        (drop("no route"), drop("not ip"), drop("too big")),
        (1, 1, 1)
    );
}

#[test]
fn staging_is_bounded_and_keeps_the_newest() {
    let mut mesh = three();
    let sent: Vec<Vec<u8>> = (0..40u8).map(|i| ipv4([10, 77, 0, 3], &[i; 10])).collect();
    for p in &sent {
        tun_in(&mut mesh, A, p);
    }
    mesh.settle();
    assert_eq!(
        tun_out(&mesh, C),
        sent[sent.len() - STAGED_PER_ROUTE..].to_vec()
    );
    let status = node_status(&mesh, A);
    let dropped = status
        .drops
        .iter()
        .find(|(n, _)| *n == "no session")
        .unwrap()
        .1;
    assert_eq!(dropped, (40 - STAGED_PER_ROUTE) as u64);
}

#[test]
fn duplicate_incoming_ids_are_refused() {
    let k = PrivateKey::generate().unwrap();
    let setup = NodeSetup {
        private_key: k,
        listen: addr(2),
        tun: None,
        routes: vec![],
        relays: vec![
            RelaySetup {
                in_id: id(1),
                prev_hop: addr(1),
                out_id: id(2),
                next_hop: addr(3),
            },
            RelaySetup {
                in_id: id(1),
                prev_hop: addr(3),
                out_id: id(4),
                next_hop: addr(1),
            },
        ],
        offload: false,
        stack: crate::stack::StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    };
    let err = NodeCore::new(&setup, addr(2), Instant::now(), Duration::ZERO).unwrap_err();
    assert_eq!(err, SetupError::Rules(ApplyError::InUse(id(1))));
}

const MANAGER: Origin = Origin::Manager {
    route: 9,
    expire_after: Duration::from_secs(5),
};

fn relay(in_id: u32, prev: u8, out_id: u32, next: u8) -> RelaySetup {
    RelaySetup {
        in_id: id(in_id),
        prev_hop: addr(prev),
        out_id: id(out_id),
        next_hop: addr(next),
    }
}

/// A route end through B; `ids` are its `out_id`, `in_id` and `peer_in_id`.
fn end(name: &str, peer: PublicKey, prefix_: &str, ids: (u32, u32, u32)) -> RouteSetup {
    let (out_id, in_id, peer_in_id) = ids;
    RouteSetup {
        name: name.into(),
        peer,
        prefixes: vec![prefix(prefix_)],
        first_hop: addr(2),
        out_id: id(out_id),
        in_id: id(in_id),
        peer_in_id: id(peer_in_id),
        prev_hop: addr(2),
        persistent_keepalive: None,
    }
}

/// A second route A - B - C set up by the manager: ids 110 -> 111 towards C, 210 -> 202
/// back to A, claiming the same prefixes as the configured route.
fn add_manager_route(mesh: &mut Mesh) {
    let (ka, kc) = (key(mesh, A), key(mesh, C));
    mesh.apply(
        B,
        vec![
            RuleChange::AddRelay {
                relay: relay(110, 1, 111, 3),
                origin: MANAGER,
            },
            RuleChange::AddRelay {
                relay: relay(210, 3, 202, 1),
                origin: MANAGER,
            },
        ],
    )
    .unwrap();
    mesh.apply(
        C,
        vec![RuleChange::AddEnd {
            route: end("to-a-2", ka, "10.77.0.1/32", (210, 111, 202)),
            origin: MANAGER,
        }],
    )
    .unwrap();
    mesh.apply(
        A,
        vec![RuleChange::AddEnd {
            route: end("to-c-2", kc, "10.77.0.3/32", (110, 202, 111)),
            origin: MANAGER,
        }],
    )
    .unwrap();
}

fn relay_packets(mesh: &Mesh, node: NodeId, in_id: u32) -> Option<u64> {
    node_status(mesh, node)
        .relays
        .iter()
        .find(|r| r.in_id == id(in_id))
        .map(|r| r.packets)
}

#[test]
fn a_refused_batch_changes_nothing() {
    let mut mesh = three();
    let before = node_status(&mesh, B);
    let version = mesh.core(B).unwrap().table().snapshot().version();
    let refused = [
        (
            vec![
                RuleChange::AddRelay {
                    relay: relay(300, 1, 301, 3),
                    origin: MANAGER,
                },
                RuleChange::AddRelay {
                    relay: relay(100, 1, 301, 3),
                    origin: MANAGER,
                },
            ],
            ApplyError::InUse(id(100)),
        ),
        (
            vec![
                RuleChange::AddRelay {
                    relay: relay(300, 1, 301, 3),
                    origin: MANAGER,
                },
                RuleChange::AddRelay {
                    relay: relay(300, 3, 302, 1),
                    origin: Origin::Config,
                },
            ],
            ApplyError::InUse(id(300)),
        ),
        (
            vec![
                RuleChange::Remove { in_id: id(100) },
                RuleChange::Remove { in_id: id(999) },
            ],
            ApplyError::NotFound(id(999)),
        ),
        (
            // A relay that sends packets back where they came from: a loop of two hops.
            vec![
                RuleChange::AddRelay {
                    relay: relay(300, 1, 301, 3),
                    origin: MANAGER,
                },
                RuleChange::AddRelay {
                    relay: relay(302, 3, 303, 3),
                    origin: MANAGER,
                },
            ],
            ApplyError::Loop(id(302)),
        ),
        (
            vec![
                RuleChange::Remove { in_id: id(100) },
                RuleChange::Remove { in_id: id(100) },
            ],
            ApplyError::NotFound(id(100)),
        ),
        (
            vec![
                RuleChange::Remove { in_id: id(200) },
                RuleChange::AddEnd {
                    // The all-zero key is a low-order point.
                    route: end(
                        "bad",
                        PublicKey::from_bytes([0; 32]),
                        "10.9.0.0/16",
                        (5, 6, 7),
                    ),
                    origin: MANAGER,
                },
            ],
            ApplyError::PeerKey {
                in_id: id(6),
                source: crate::crypto::noise::HandshakeError::LowOrderPoint,
            },
        ),
    ];
    for (changes, want) in refused {
        assert_eq!(mesh.apply(B, changes), Err(SimError::Apply(want)));
        assert_eq!(node_status(&mesh, B), before);
        assert_eq!(mesh.core(B).unwrap().table().snapshot().version(), version);
    }
    // Removing and re-adding an id in one batch is fine, and so is a route end on a node
    // without TUN (it only carries pings).
    let kc = key(&mesh, C);
    mesh.apply(
        B,
        vec![
            RuleChange::Remove { in_id: id(100) },
            RuleChange::AddRelay {
                relay: relay(100, 1, 101, 3),
                origin: MANAGER,
            },
            RuleChange::AddEnd {
                route: end("b-to-c", kc, "10.9.0.0/16", (5, 6, 7)),
                origin: MANAGER,
            },
        ],
    )
    .unwrap();
    let status = node_status(&mesh, B);
    assert_eq!(status.relays.len(), 2);
    assert_eq!(status.relays[0].origin, MANAGER);
    assert_eq!(status.relays[1].origin, Origin::Config);
    assert_eq!(status.routes.len(), 1);
    assert_eq!(
        mesh.core(B).unwrap().table().snapshot().version(),
        version + 1
    );
}

#[test]
fn dynamic_route_takes_over_a_prefix_and_gives_it_back() {
    let mut mesh = three();
    add_manager_route(&mut mesh);
    // The newest end claiming 10.77.0.3/32 wins: traffic takes the manager's ids.
    let first = ipv4([10, 77, 0, 3], b"over the new route");
    tun_in(&mut mesh, A, &first);
    mesh.settle();
    assert_eq!(tun_out(&mesh, C), vec![first.clone()]);
    let reply = ipv4([10, 77, 0, 1], b"back over it");
    tun_in(&mut mesh, C, &reply);
    mesh.settle();
    assert_eq!(tun_out(&mesh, A), vec![reply]);
    assert!(relay_packets(&mesh, B, 110).unwrap() > 0);
    assert!(relay_packets(&mesh, B, 210).unwrap() > 0);
    assert_eq!(relay_packets(&mesh, B, 100), Some(0));
    let status = node_status(&mesh, A);
    assert_eq!(status.routes.len(), 2);
    assert_eq!(status.routes[1].name, "to-c-2");
    assert_eq!(status.routes[1].origin, MANAGER);
    assert_eq!(status.routes[1].idle, Some(Duration::ZERO));
    assert_eq!(status.routes[0].origin, Origin::Config);
    assert_eq!(status.routes[0].idle, None);

    // Remove the manager's end at A: the prefix goes back to the configured route, and its
    // endpoint slot is reused by the next end without confusing the two. What the end
    // counted stays in `retired`, so node-wide totals do not go down.
    let gone = status.routes[1].clone();
    let totals =
        |s: &NodeStatus| s.routes.iter().map(|r| r.tx_bytes).sum::<u64>() + s.retired.tx_bytes;
    let before = totals(&status);
    mesh.apply(A, vec![RuleChange::Remove { in_id: id(202) }])
        .unwrap();
    let after = node_status(&mesh, A);
    assert_eq!(
        (
            after.retired.tx_packets,
            after.retired.rx_bytes,
            after.retired.handshakes
        ),
        (gone.tx_packets, gone.rx_bytes, gone.handshakes)
    );
    assert_eq!(totals(&after), before);
    // The same for a relay rule at B.
    let relayed = relay_packets(&mesh, B, 110).unwrap();
    mesh.apply(B, vec![RuleChange::Remove { in_id: id(110) }])
        .unwrap();
    assert_eq!(node_status(&mesh, B).retired.relayed_packets, relayed);
    assert!(mesh.in_flight().is_empty(), "removal is silent");
    let again = ipv4([10, 77, 0, 3], b"over the configured route");
    tun_in(&mut mesh, A, &again);
    mesh.settle();
    assert_eq!(tun_out(&mesh, C), vec![first, again]);
    assert!(relay_packets(&mesh, B, 100).unwrap() > 0);
    assert_eq!(node_status(&mesh, A).routes.len(), 1);
    let kc = key(&mesh, C);
    mesh.apply(
        A,
        vec![RuleChange::AddEnd {
            route: end("to-c-3", kc, "10.77.0.3/32", (110, 203, 111)),
            origin: MANAGER,
        }],
    )
    .unwrap();
    assert_eq!(
        mesh.core(A).unwrap().ends.free,
        Vec::<u32>::new(),
        "slot reused"
    );
    assert_eq!(
        mesh.core(A)
            .unwrap()
            .ends
            .prefixes
            .lookup("10.77.0.3".parse().unwrap())
            .map(|(endpoint, _)| *endpoint),
        Some(EndpointId(1))
    );
}

#[test]
fn idle_manager_rules_expire_busy_and_configured_ones_do_not() {
    let mut mesh = three();
    add_manager_route(&mut mesh);
    mesh.apply(
        B,
        vec![RuleChange::AddRelay {
            relay: relay(300, 1, 301, 3),
            origin: Origin::Manager {
                route: 12,
                expire_after: Duration::from_secs(5),
            },
        }],
    )
    .unwrap();
    let start = mesh.now();
    assert!(mesh.core(B).unwrap().next_deadline().unwrap() <= start + EXPIRY_SAMPLE);
    // Traffic A -> C on the manager's route every second; nothing on relay 300, and after
    // the handshake nothing on the way back (210 at B, 202 at A) or on configured rules.
    let tick = |mesh: &mut Mesh, i: u8| {
        tun_in(mesh, A, &ipv4([10, 77, 0, 3], &[i; 10]));
        mesh.advance(Duration::from_secs(1));
    };
    for i in 1..5u8 {
        tick(&mut mesh, i);
        assert!(
            node_events(&mut mesh, B).is_empty(),
            "nothing expires before 5 s"
        );
    }
    // Relay 300 saw nothing since it was added 5 s ago.
    tick(&mut mesh, 5);
    assert_eq!(
        node_events(&mut mesh, B),
        vec![EngineEvent::Expired {
            in_id: id(300),
            route: 12
        }]
    );
    // The handshake response crossed 210 and 202 at the start; the first sample (1 s)
    // saw it, so they go 5 s after that sample: late by up to a sample, never early.
    tick(&mut mesh, 6);
    assert_eq!(
        node_events(&mut mesh, B),
        vec![EngineEvent::Expired {
            in_id: id(210),
            route: 9
        }]
    );
    let b = node_status(&mesh, B);
    assert_eq!(b.expired, 2);
    let ids: Vec<u32> = b.relays.iter().map(|r| r.in_id.get()).collect();
    assert_eq!(ids, vec![100, 110, 200], "busy and configured rules stay");
    // A's end of the manager route only sends (its Deliver rule, 202, sees nothing after
    // the handshake) and goes too; C's end (111) receives every second and stays.
    assert_eq!(
        node_events(&mut mesh, A),
        vec![EngineEvent::Expired {
            in_id: id(202),
            route: 9
        }]
    );
    assert!(node_events(&mut mesh, C).is_empty());
    assert_eq!(node_status(&mesh, C).routes.len(), 2);
    // Long after, the configured rules are still there.
    mesh.advance(Duration::from_secs(3600));
    assert_eq!(node_status(&mesh, B).relays.len(), 2);
    assert_eq!(node_status(&mesh, A).routes.len(), 1);
    assert_eq!(
        mesh.core(B).unwrap().next_deadline(),
        None,
        "no sampling without manager rules"
    );
}

/// A link packet's 40 bytes with a zero sender and tag (for the format checks).
fn probe_bytes(ty: u8, nonce: u64) -> Vec<u8> {
    let mut p = vec![1, ty, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&nonce.to_be_bytes());
    p.resize(40, 0);
    p
}

/// A link packet of type `ty` with `nonce` from the holder of `from` to `to`, tagged with
/// their link key.
fn tagged_probe(from: &PrivateKey, to: &PublicKey, ty: u8, nonce: u64) -> Vec<u8> {
    let mut p = probe_bytes(ty, nonce);
    p[16..24].copy_from_slice(&from.public_key().as_bytes()[..8]);
    let link = crate::crypto::link::LinkKey::new(from, to).unwrap();
    let tag = link.tag(&p[..24]);
    p[24..40].copy_from_slice(&tag);
    p
}

fn private(mesh: &Mesh, node: NodeId) -> PrivateKey {
    mesh.setup(node).unwrap().private_key.clone()
}

#[test]
fn link_probes_are_answered_and_timed() {
    let mut mesh = three();
    mesh.all_neighbours();
    let (ka, kb) = (private(&mesh, A), private(&mesh, B));
    mesh.probe(A, addr(2), 42).unwrap();
    let Datagram {
        to, bytes: sent, ..
    } = mesh.in_flight()[0].clone();
    assert_eq!(
        (to, sent),
        (addr(2), tagged_probe(&ka, &kb.public_key(), 8, 42))
    );
    mesh.advance(Duration::from_millis(3));
    assert_eq!(
        node_events(&mut mesh, A),
        vec![EngineEvent::ProbeReply {
            from: addr(2),
            nonce: 42,
            rtt: Duration::from_millis(3)
        }]
    );
    // A reply from another address than the probe went to, and an unknown nonce.
    mesh.probe(A, addr(2), 43).unwrap();
    mesh.clear_in_flight();
    let reply = |nonce| tagged_probe(&kb, &ka.public_key(), 9, nonce);
    // Answered once: the same reply again is unexpected.
    inject(&mut mesh, addr(2), addr(1), reply(42));
    inject(&mut mesh, addr(3), addr(1), reply(43));
    inject(&mut mesh, addr(2), addr(1), reply(44));
    mesh.settle();
    assert!(node_events(&mut mesh, A).is_empty());
    assert_eq!(drop_count(&mesh, A, "unexpected probe reply"), 3);
    // The genuine one still counts.
    inject(&mut mesh, addr(2), addr(1), reply(43));
    mesh.settle();
    assert_eq!(node_events(&mut mesh, A).len(), 1);
}

#[test]
fn link_probes_prove_the_key_at_the_address() {
    let mut mesh = three();
    mesh.all_neighbours();
    let (ka, kb, kc) = (private(&mesh, A), private(&mesh, B), private(&mesh, C));
    // Whoever answers at B's address without B's key (here C's, or a forged tag) proves
    // nothing: the reply is dropped and no event says the link is up.
    mesh.probe(A, addr(2), 50).unwrap();
    mesh.clear_in_flight();
    inject(
        &mut mesh,
        addr(2),
        addr(1),
        tagged_probe(&kc, &ka.public_key(), 9, 50),
    );
    let mut forged = tagged_probe(&kb, &ka.public_key(), 9, 50);
    forged[39] ^= 1;
    inject(&mut mesh, addr(2), addr(1), forged);
    mesh.settle();
    assert!(node_events(&mut mesh, A).is_empty());
    assert_eq!(drop_count(&mesh, A, "unauthenticated probe"), 1);
    assert_eq!(drop_count(&mesh, A, "unexpected probe reply"), 1);
    // A probe from a stranger, or from nobody's key, is not answered.
    let stranger = PrivateKey::from_bytes([7; 32]);
    inject(
        &mut mesh,
        addr(9),
        addr(2),
        tagged_probe(&stranger, &kb.public_key(), 8, 1),
    );
    inject(&mut mesh, addr(1), addr(2), probe_bytes(8, 2));
    mesh.settle();
    assert_eq!(drop_count(&mesh, B, "unauthenticated probe"), 2);
    assert_eq!(
        mesh.wire_stats().to_nobody,
        0,
        "a stranger's probe was answered"
    );
    // A node probes only its neighbours.
    mesh.set_neighbours(A, &[]).unwrap();
    mesh.probe(A, addr(2), 51).unwrap();
    assert!(mesh.in_flight().is_empty());
}

#[test]
fn malformed_probes_are_dropped_and_counted() {
    let mut mesh = three();
    let mut with_id = probe_bytes(8, 1);
    with_id[7] = 1;
    let mut reserved = probe_bytes(9, 1);
    reserved[2] = 1;
    let mut version = probe_bytes(8, 1);
    version[0] = 2;
    let mut long = probe_bytes(8, 1);
    long.push(0);
    for bad in [
        probe_bytes(8, 1)[..39].to_vec(),
        long,
        with_id,
        reserved,
        version,
        vec![0, 8],
    ] {
        inject(&mut mesh, addr(1), addr(2), bad);
    }
    mesh.settle();
    assert_eq!(drop_count(&mesh, B, "bad probe"), 6);
    assert_eq!(drop_count(&mesh, B, "malformed"), 0);
    assert!(node_events(&mut mesh, A).is_empty() && node_events(&mut mesh, B).is_empty());
}

#[test]
fn outstanding_probes_are_bounded_oldest_first() {
    let mut mesh = three();
    let nowhere = addr(9);
    let far = PrivateKey::from_bytes([9; 32]);
    mesh.set_neighbours(A, &[(nowhere, far.public_key())])
        .unwrap();
    let ka = private(&mesh, A);
    for nonce in 0..=PROBES_OUTSTANDING as u64 {
        mesh.probe(A, nowhere, nonce).unwrap();
    }
    mesh.settle();
    assert_eq!(mesh.core(A).unwrap().probes.slots.len(), PROBES_OUTSTANDING);
    for nonce in [0, 1, PROBES_OUTSTANDING as u64] {
        inject(
            &mut mesh,
            nowhere,
            addr(1),
            tagged_probe(&far, &ka.public_key(), 9, nonce),
        );
    }
    mesh.settle();
    let nonces: Vec<u64> = node_events(&mut mesh, A)
        .into_iter()
        .map(|e| match e {
            EngineEvent::ProbeReply { nonce, .. } => nonce,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(nonces, vec![1, PROBES_OUTSTANDING as u64]);
    assert_eq!(drop_count(&mesh, A, "unexpected probe reply"), 1);
}

#[test]
fn events_beyond_the_queue_are_counted() {
    let mut mesh = three();
    mesh.all_neighbours();
    for nonce in 0..EVENT_QUEUE as u64 + 5 {
        mesh.probe(A, addr(2), nonce).unwrap();
        mesh.settle();
    }
    assert_eq!(node_status(&mesh, A).events_dropped, 5);
    assert_eq!(node_events(&mut mesh, A).len(), EVENT_QUEUE);
    mesh.probe(A, addr(2), 7).unwrap();
    mesh.settle();
    assert_eq!(node_events(&mut mesh, A).len(), 1);
}

#[test]
fn ping_before_keys_waits_for_the_handshake_then_pongs_over_the_relay() {
    let mut mesh = three();
    assert_eq!(
        mesh.ping(A, id(100), 1),
        Err(SimError::Ping(PingError::UnknownRoute(id(100))))
    );
    assert_eq!(
        mesh.ping(B, id(100), 1),
        Err(SimError::Ping(PingError::UnknownRoute(id(100))))
    );
    mesh.ping(A, id(201), 5).unwrap();
    mesh.ping(A, id(201), 6).unwrap();
    // Only the initiation left: the pings wait for keys.
    assert_eq!(mesh.in_flight().len(), 1);
    mesh.advance(Duration::from_millis(1));
    let kc = key(&mesh, C);
    let mut events = node_events(&mut mesh, A);
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        events,
        [5, 6]
            .map(|nonce| EngineEvent::Pong {
                in_id: id(201),
                peer: kc,
                nonce,
                rtt: Duration::ZERO,
            })
            .to_vec()
    );
    // With keys a ping leaves at once; relays counted it like any packet.
    let relayed = relay_packets(&mesh, B, 100).unwrap();
    mesh.ping(A, id(201), 7).unwrap();
    assert_eq!(mesh.in_flight().len(), 1);
    assert_eq!(mesh.in_flight()[0].bytes.len(), PING_LEN);
    mesh.advance(Duration::from_millis(2));
    assert_eq!(
        node_events(&mut mesh, A),
        vec![EngineEvent::Pong {
            in_id: id(201),
            peer: kc,
            nonce: 7,
            rtt: Duration::from_millis(2),
        }]
    );
    assert_eq!(relay_packets(&mesh, B, 100), Some(relayed + 1));
    assert!(tun_out(&mesh, A).is_empty() && tun_out(&mesh, C).is_empty());
}

#[test]
fn unsolicited_and_forged_pongs_are_dropped() {
    let mut mesh = three();
    mesh.ping(A, id(201), 1).unwrap();
    mesh.settle();
    assert_eq!(node_events(&mut mesh, A).len(), 1);
    // A genuine, authenticated pong that answers no ping of the core: A's session pings
    // behind the core's back, so C's pong matches nothing.
    let mut buf = [0u8; PING_LEN];
    let now = mesh.now();
    let n = mesh.core_mut(A).unwrap().ends.slots[0]
        .as_mut()
        .unwrap()
        .session
        .ping(now, &mut buf, 77)
        .unwrap();
    inject(&mut mesh, addr(1), addr(2), buf[..n].to_vec());
    mesh.settle();
    assert!(node_events(&mut mesh, A).is_empty());
    assert_eq!(drop_count(&mesh, A, "unexpected pong"), 1);
    // A forged pong (a flipped nonce bit) fails its tag at the session.
    mesh.ping(A, id(201), 2).unwrap();
    for _ in 0..3 {
        mesh.deliver_next(); // A -> B -> C, the pong C -> B -> (wire) A
    }
    let Datagram {
        from,
        to,
        bytes: pong,
    } = mesh.take_next().unwrap();
    assert_eq!((from, to, pong.len()), (addr(2), addr(1), PING_LEN));
    assert_eq!(pong[1], PacketType::Pong as u8);
    let mut forged = pong.clone();
    forged[TRANSPORT_HEADER_LEN] ^= 1;
    inject(&mut mesh, from, to, forged);
    mesh.settle();
    assert!(node_events(&mut mesh, A).is_empty());
    assert_eq!(
        node_status(&mesh, A).routes[0]
            .drops
            .iter()
            .find(|(n, _)| *n == "bad tag")
            .unwrap()
            .1,
        1
    );
    inject(&mut mesh, from, to, pong);
    mesh.settle();
    assert_eq!(node_events(&mut mesh, A).len(), 1, "the genuine pong");
}

#[test]
fn a_peer_cannot_speak_for_an_address_it_was_not_given() {
    let mut mesh = three();
    // C is allowed 10.77.0.3 (A's route to it says so). First an honest packet, so the
    // route has keys.
    let honest = ipv4([10, 77, 0, 1], b"from C's own address");
    tun_in(&mut mesh, C, &honest);
    mesh.settle();
    assert_eq!(tun_out(&mesh, A), vec![honest.clone()]);
    // C seals packets claiming other sources: A's own address, a neighbour of C's, and an
    // address outside every prefix. They open under the route's keys (they are C's), and
    // A drops every one of them.
    let spoofed = [
        ipv4_from([10, 77, 0, 1], [10, 77, 0, 1], b"as A itself"),
        ipv4_from([10, 77, 0, 4], [10, 77, 0, 1], b"as C's neighbour"),
        ipv4_from([192, 0, 2, 9], [10, 77, 0, 1], b"as a stranger"),
    ];
    for p in &spoofed {
        // Sealed by C's core as any TUN packet to A would be.
        tun_in(&mut mesh, C, p);
    }
    mesh.settle();
    assert_eq!(
        tun_out(&mesh, A),
        vec![honest.clone()],
        "a spoofed packet arrived"
    );
    let a = node_status(&mesh, A);
    let end = &a.routes[0];
    assert_eq!(
        end.drops.iter().find(|(n, _)| *n == SOURCE_NOT_ALLOWED),
        Some(&(SOURCE_NOT_ALLOWED, 3))
    );
    // They were authentic (counted as received), just not allowed.
    assert_eq!(end.rx_packets, 4);
    // Honest traffic goes on.
    let again = ipv4([10, 77, 0, 1], b"still fine");
    tun_in(&mut mesh, C, &again);
    mesh.settle();
    assert_eq!(tun_out(&mesh, A), vec![honest, again]);
}

#[test]
fn a_manager_end_cannot_take_another_peers_prefix() {
    let mut mesh = three();
    let kb = key(&mesh, B);
    let kc = key(&mesh, C);
    // A routes 10.77.0.3/32 to C (its config). An end from the manager for B claiming the
    // same address, or a network around it, is refused whole.
    for claimed in ["10.77.0.3/32", "10.77.0.0/24", "0.0.0.0/0"] {
        let err = mesh
            .apply(
                A,
                vec![RuleChange::AddEnd {
                    route: end("hijack", kb, claimed, (7, 8, 8)),
                    origin: MANAGER,
                }],
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                SimError::Apply(ApplyError::PrefixClaimed { in_id, prefix: p })
                    if in_id == id(8) && p == prefix(claimed)
            ),
            "{claimed}: {err:?}"
        );
    }
    assert_eq!(node_status(&mesh, A).routes.len(), 1);
    // The same address for the same peer (a repair, make-before-break) is fine, and so is
    // another address for B.
    mesh.apply(
        A,
        vec![
            RuleChange::AddEnd {
                route: end("to-c-again", kc, "10.77.0.3/32", (9, 10, 10)),
                origin: MANAGER,
            },
            RuleChange::AddEnd {
                route: end("to-b", kb, "10.77.0.2/32", (11, 12, 12)),
                origin: MANAGER,
            },
        ],
    )
    .unwrap();
    // Once A's own end to C goes (in the same batch), B may have the address.
    mesh.apply(
        A,
        vec![
            RuleChange::Remove { in_id: id(201) },
            RuleChange::Remove { in_id: id(10) },
            RuleChange::AddEnd {
                route: end("to-b-too", kb, "10.77.0.3/32", (13, 14, 14)),
                origin: MANAGER,
            },
        ],
    )
    .unwrap();
}

#[test]
fn a_grant_lets_an_exit_carry_any_address_but_not_another_nodes() {
    let mut mesh = three();
    let kb = key(&mesh, B);
    let kc = key(&mesh, C);
    // A is a VPN client of C: everything without a longer match goes to C, and C may send
    // from anywhere. B's address stays B's (a manager end inside the grant is fine).
    mesh.core_mut(A)
        .unwrap()
        .grant(kc, vec![prefix("0.0.0.0/0")])
        .unwrap();
    mesh.apply(
        A,
        vec![RuleChange::AddEnd {
            route: end("to-b", kb, "10.77.0.2/32", (11, 12, 12)),
            origin: MANAGER,
        }],
    )
    .unwrap();
    let out = ipv4_from([10, 77, 0, 1], [192, 0, 2, 9], b"to the internet");
    tun_in(&mut mesh, A, &out);
    mesh.settle();
    assert_eq!(tun_out(&mesh, C), vec![out], "A's default route leads to C");
    let back = ipv4_from([192, 0, 2, 9], [10, 77, 0, 1], b"from the internet");
    let as_b = ipv4_from([10, 77, 0, 2], [10, 77, 0, 1], b"as B");
    tun_in(&mut mesh, C, &back);
    tun_in(&mut mesh, C, &as_b);
    mesh.settle();
    assert_eq!(
        tun_out(&mesh, A),
        vec![back.clone()],
        "B's address is not C's"
    );
    let status = node_status(&mesh, A);
    let to_c = status.routes.iter().find(|r| r.peer == kc).unwrap();
    assert_eq!(
        to_c.drops.iter().find(|(n, _)| *n == SOURCE_NOT_ALLOWED),
        Some(&(SOURCE_NOT_ALLOWED, 1))
    );
    assert_eq!(status.grants, vec![(kc, vec![prefix("0.0.0.0/0")])]);

    // A prefix another peer owns cannot be granted, nor can a manager end take the grant.
    let core = mesh.core_mut(A).unwrap();
    assert_eq!(
        core.grant(kb, vec![prefix("10.77.0.3/32")]),
        Err(GrantError::Claimed(prefix("10.77.0.3/32")))
    );
    assert_eq!(
        core.grant(kb, vec![prefix("0.0.0.0/0")]),
        Err(GrantError::Claimed(prefix("0.0.0.0/0")))
    );
    let err = mesh
        .apply(
            A,
            vec![RuleChange::AddEnd {
                route: end("take-it", kb, "0.0.0.0/0", (13, 14, 14)),
                origin: MANAGER,
            }],
        )
        .unwrap_err();
    assert!(
        matches!(err, SimError::Apply(ApplyError::PrefixClaimed { .. })),
        "{err:?}"
    );

    // The grant outlives C's route end and applies again to the next one.
    mesh.apply(A, vec![RuleChange::Remove { in_id: id(201) }])
        .unwrap();
    let lookup = |mesh: &Mesh| {
        let ends = &mesh.core(A).unwrap().ends;
        ends.prefixes
            .lookup("192.0.2.10".parse().unwrap())
            .and_then(|(endpoint, _)| ends.slots.get(endpoint.0 as usize)?.as_ref())
            .map(|end| end.setup.name.clone())
    };
    assert_eq!(lookup(&mesh), None);
    assert_eq!(node_status(&mesh, A).grants.len(), 1);
    mesh.apply(
        A,
        vec![RuleChange::AddEnd {
            route: end("to-c-again", kc, "10.77.0.3/32", (15, 16, 16)),
            origin: MANAGER,
        }],
    )
    .unwrap();
    assert_eq!(lookup(&mesh).as_deref(), Some("to-c-again"));

    // Taken back: the internet is nobody's again.
    mesh.core_mut(A).unwrap().grant(kc, Vec::new()).unwrap();
    assert!(node_status(&mesh, A).grants.is_empty());
    assert_eq!(lookup(&mesh), None);
}

#[test]
fn an_unreachable_next_hop_is_reported_at_most_once_a_minute() {
    let mut mesh = three();
    let a = NodeId(0);
    let _ = node_events(&mut mesh, a);
    let now = mesh.now();
    let hop = addr(2);
    let core = mesh.core_mut(a).unwrap();
    core.unreachable(now, hop, 101);
    core.unreachable(now + Duration::from_secs(30), hop, 101);
    core.unreachable(now + Duration::from_secs(31), addr(3), 113);
    assert_eq!(
        node_events(&mut mesh, a),
        vec![
            EngineEvent::Unreachable {
                to: hop,
                os_error: 101
            },
            EngineEvent::Unreachable {
                to: addr(3),
                os_error: 113
            },
        ]
    );
    let core = mesh.core_mut(a).unwrap();
    core.unreachable(now + UNREACHABLE_REPORT_EVERY, hop, 101);
    assert_eq!(node_events(&mut mesh, a).len(), 1);
}

/// A UDP packet from `src`:`sport` to `dst`:`dport`, as the TUN device gives it.
fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&sport.to_be_bytes());
    payload.extend_from_slice(&dport.to_be_bytes());
    payload.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    let mut p = ipv4_from(src, dst, &payload);
    p[9] = 17;
    p
}

#[test]
fn the_nodes_own_transport_coming_back_through_the_tun_is_a_counted_routing_loop() {
    let mut mesh = three();
    let _ = node_events(&mut mesh, A);
    // A's datagram to its first hop B (198.18.0.2:6000), from A's port, read from A's TUN:
    // the host routes B's address into the tunnel.
    let looped = udp4([10, 77, 0, 1], 6000, [198, 18, 0, 2], 6000);
    for _ in 0..3 {
        tun_in(&mut mesh, A, &looped);
    }
    // Traffic that only looks alike goes on: an app on the overlay using the same port (a
    // node nested in the mesh), and another port to B's address.
    tun_in(
        &mut mesh,
        A,
        &udp4([10, 77, 0, 1], 6000, [10, 77, 0, 3], 6000),
    );
    tun_in(
        &mut mesh,
        A,
        &udp4([10, 77, 0, 1], 6001, [198, 18, 0, 2], 6000),
    );
    mesh.settle();
    let status = node_status(&mesh, A);
    let drop = |name| status.drops.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!((drop("routing loop"), drop("no route")), (3, 1));
    assert_eq!(tun_out(&mesh, C).len(), 1);
    // Reported once a minute per address, for the log.
    assert_eq!(
        node_events(&mut mesh, A)
            .into_iter()
            .filter(|e| matches!(e, EngineEvent::RoutingLoop { .. }))
            .collect::<Vec<_>>(),
        vec![EngineEvent::RoutingLoop { to: addr(2) }]
    );
}

fn take(mesh: &mut Mesh, node: NodeId) -> crate::engine::usage::Usage {
    mesh.core_mut(node).unwrap().take_usage()
}

fn relay_usage(usage: &crate::engine::usage::Usage, in_id: u32) -> crate::engine::usage::Count {
    usage
        .relays
        .iter()
        .find(|r| r.in_id == id(in_id))
        .map(|r| r.forwarded)
        .unwrap_or_default()
}

#[test]
fn usage_is_counted_once_where_it_was_seen_and_given_out_once() {
    let mut mesh = three();
    for node in [A, B, C] {
        assert_eq!(take(&mut mesh, node), Default::default(), "nothing yet");
    }
    let sent: Vec<Vec<u8>> = (0..5u8).map(|i| ipv4([10, 77, 0, 3], &[i; 100])).collect();
    for p in &sent {
        tun_in(&mut mesh, A, p);
    }
    mesh.settle();
    tun_in(&mut mesh, C, &ipv4([10, 77, 0, 1], b"pong"));
    mesh.settle();
    let (a, b, c) = (take(&mut mesh, A), take(&mut mesh, B), take(&mut mesh, C));
    let (a_end, c_end) = (&a.ends[0].counts, &c.ends[0].counts);
    assert_eq!(a.ends[0].name, "to-c");
    // Five IP packets of 120 bytes, read from A's TUN device, sealed, opened at C and
    // written to its TUN device; each datagram is its packet plus the overhead.
    assert_eq!((a_end.tun_read.packets, a_end.tun_read.bytes), (5, 600));
    assert_eq!(a_end.sealed, a_end.tun_read);
    assert_eq!(c_end.opened, a_end.sealed);
    assert_eq!(c_end.tun_written, a_end.sealed);
    // On the wire, the initiation and the keepalive go with the data one way, the
    // response and the pong's packet the other: B's ledger and the ends' agree exactly.
    assert_eq!(a_end.wire_sent, relay_usage(&b, 100));
    assert_eq!(relay_usage(&b, 100), c_end.wire_received);
    assert_eq!(c_end.wire_sent, relay_usage(&b, 200));
    assert_eq!(relay_usage(&b, 200), a_end.wire_received);
    assert_eq!(a_end.wire_sent.packets, 7);
    let data_bytes = 600 + 5 * crate::wire::TRANSPORT_OVERHEAD as u64;
    assert!(a_end.wire_sent.bytes > data_bytes);
    // Given out once: asked again, nothing new.
    for node in [A, B, C] {
        assert_eq!(
            take(&mut mesh, node),
            Default::default(),
            "given out already"
        );
    }

    // A manager route takes the prefix, carries two packets, and goes (at all three
    // nodes) before the next ask: its counts still come, once.
    add_manager_route(&mut mesh);
    tun_in(&mut mesh, A, &ipv4([10, 77, 0, 3], &[7; 50]));
    tun_in(&mut mesh, A, &ipv4([10, 77, 0, 3], &[8; 50]));
    mesh.settle();
    let before_removal = node_status(&mesh, B);
    let forwarded = before_removal
        .relays
        .iter()
        .find(|r| r.in_id == id(110))
        .unwrap()
        .packets;
    assert!(forwarded >= 2);
    for (node, ids) in [(A, vec![202]), (B, vec![110, 210]), (C, vec![111])] {
        let changes = ids
            .into_iter()
            .map(|n| RuleChange::Remove { in_id: id(n) })
            .collect();
        mesh.apply(node, changes).unwrap();
    }
    let (a, b, c) = (take(&mut mesh, A), take(&mut mesh, B), take(&mut mesh, C));
    assert_eq!(a.ends.len(), 1, "{a:?}");
    assert_eq!(a.ends[0].name, "to-c-2");
    assert_eq!(a.ends[0].counts.tun_read.packets, 2);
    assert_eq!(a.ends[0].counts.wire_sent, relay_usage(&b, 110));
    assert_eq!(relay_usage(&b, 110).packets, forwarded);
    assert_eq!(c.ends[0].name, "to-a-2");
    assert_eq!(c.ends[0].counts.tun_written.packets, 2);
    assert_eq!(c.ends[0].counts.wire_received, relay_usage(&b, 110));
    for node in [A, B, C] {
        assert_eq!(
            take(&mut mesh, node),
            Default::default(),
            "given out already"
        );
    }
}
