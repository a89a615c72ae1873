//! Three node cores A - B - C joined by an in-memory transport, with in-memory TUNs.

use super::*;
use crate::crypto::PrivateKey;
use crate::engine::setup::{RelaySetup, TunSetup};
use crate::engine::status::NodeStatus;
use crate::route::{EndpointId, Prefix};
use crate::wire::{PING_LEN, PacketType, RouteId, TRANSPORT_HEADER_LEN};
use std::collections::VecDeque;

#[derive(Default)]
struct Recorder {
    udp: Vec<(SocketAddr, Vec<u8>)>,
    tun: Vec<Vec<u8>>,
}

impl NodeIo for Recorder {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        self.udp.push((to, packet.to_vec()));
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// An IPv4 packet to `dst` with `payload` (only the fields the core reads are real).
fn ipv4(dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&[10, 77, 0, 1]);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

struct Net {
    keys: Vec<PublicKey>,
    nodes: Vec<(SocketAddr, NodeCore)>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    tun_out: Vec<Vec<Vec<u8>>>,
    now: Instant,
}

impl Net {
    fn three() -> Self {
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
                prev_hop: addr(2),
                persistent_keepalive: None,
            }],
            relays: vec![],
            offload: false,
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
                prev_hop: addr(2),
                persistent_keepalive: None,
            }],
            relays: vec![],
            offload: false,
        };
        let now = Instant::now();
        let unix = Duration::from_secs(1_800_000_000);
        let keys = [&a, &b, &c].iter().map(|s| s.public_key()).collect();
        let nodes = [a, b, c]
            .iter()
            .map(|s| (s.listen, NodeCore::new(s, s.listen, now, unix).unwrap()))
            .collect();
        Self {
            keys,
            nodes,
            wire: VecDeque::new(),
            tun_out: vec![vec![], vec![], vec![]],
            now,
        }
    }

    fn absorb(&mut self, from: SocketAddr, node: usize, rec: Recorder) {
        for (to, bytes) in rec.udp {
            self.wire.push_back((from, to, bytes));
        }
        self.tun_out[node].extend(rec.tun);
    }

    fn tun_in(&mut self, node: usize, packet: &[u8]) {
        let mut buf = vec![0u8; buffer_len(1420) + 100];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let mut rec = Recorder::default();
        let (from, core) = &mut self.nodes[node];
        let from = *from;
        core.handle_tun_packet(self.now, &mut buf, packet.len(), &mut rec);
        self.absorb(from, node, rec);
    }

    fn run(&mut self) {
        while let Some((from, to, mut bytes)) = self.wire.pop_front() {
            let Some(i) = self.nodes.iter().position(|(a, _)| *a == to) else {
                continue;
            };
            let mut rec = Recorder::default();
            self.nodes[i]
                .1
                .handle_datagram(self.now, from, &mut bytes, &mut rec);
            self.absorb(to, i, rec);
        }
        for i in 0..self.nodes.len() {
            let mut rec = Recorder::default();
            let (from, core) = &mut self.nodes[i];
            let from = *from;
            core.poll_timers(self.now, &mut rec);
            self.absorb(from, i, rec);
        }
        if !self.wire.is_empty() {
            self.run();
        }
    }
}

#[test]
fn packets_wait_for_the_handshake_then_arrive_in_order() {
    let mut net = Net::three();
    let sent: Vec<Vec<u8>> = (0..5u8).map(|i| ipv4([10, 77, 0, 3], &[i; 100])).collect();
    for p in &sent {
        net.tun_in(0, p);
    }
    net.run();
    assert_eq!(net.tun_out[2], sent);
    // And back.
    let reply = ipv4([10, 77, 0, 1], b"pong");
    net.tun_in(2, &reply);
    net.run();
    assert_eq!(net.tun_out[0], vec![reply]);

    let a = net.nodes[0].1.status(net.now);
    assert_eq!((a.routes[0].tx_packets, a.routes[0].rx_packets), (5, 1));
    assert!(a.routes[0].last_handshake.is_some());
    let b = net.nodes[1].1.status(net.now);
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
    let mut net = Net::three();
    net.tun_in(0, &ipv4([10, 77, 0, 9], b"nobody"));
    net.tun_in(0, &[0x00; 40]);
    net.tun_in(0, &ipv4([10, 77, 0, 3], &[0u8; 1500]));
    net.run();
    assert!(net.tun_out[2].is_empty());
    let status = net.nodes[0].1.status(net.now);
    let drop = |name| status.drops.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(
        (drop("no route"), drop("not ip"), drop("too big")),
        (1, 1, 1)
    );
}

#[test]
fn staging_is_bounded_and_keeps_the_newest() {
    let mut net = Net::three();
    let sent: Vec<Vec<u8>> = (0..40u8).map(|i| ipv4([10, 77, 0, 3], &[i; 10])).collect();
    for p in &sent {
        net.tun_in(0, p);
    }
    net.run();
    assert_eq!(
        net.tun_out[2],
        sent[sent.len() - STAGED_PER_ROUTE..].to_vec()
    );
    let status = net.nodes[0].1.status(net.now);
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
    };
    let err = NodeCore::new(&setup, addr(2), Instant::now(), Duration::ZERO).unwrap_err();
    assert_eq!(err, SetupError::Rules(ApplyError::InUse(id(1))));
}

impl Net {
    fn core(&mut self, node: usize) -> &mut NodeCore {
        &mut self.nodes[node].1
    }

    fn status(&self, node: usize) -> NodeStatus {
        self.nodes[node].1.status(self.now)
    }

    fn apply(&mut self, node: usize, changes: Vec<RuleChange>) -> Result<(), ApplyError> {
        let now = self.now;
        self.core(node).apply(now, changes)
    }

    /// Put a datagram on the wire as if `from` had sent it.
    fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.wire.push_back((from, to, bytes));
    }

    fn events(&mut self, node: usize) -> Vec<EngineEvent> {
        self.core(node).drain_events().collect()
    }

    fn drop_count(&mut self, node: usize, name: &str) -> u64 {
        let now = self.now;
        let status = self.core(node).status(now);
        status.drops.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn probe(&mut self, node: usize, to: SocketAddr, nonce: u64) {
        let mut rec = Recorder::default();
        let now = self.now;
        let from = self.nodes[node].0;
        self.core(node).probe(now, to, nonce, &mut rec);
        self.absorb(from, node, rec);
    }

    fn ping(&mut self, node: usize, in_id: RouteId, nonce: u64) -> Result<(), PingError> {
        let mut rec = Recorder::default();
        let now = self.now;
        let from = self.nodes[node].0;
        let result = self.core(node).ping(now, in_id, nonce, &mut rec);
        self.absorb(from, node, rec);
        result
    }

    /// Deliver the first datagram on the wire.
    fn step(&mut self) {
        let Some((from, to, mut bytes)) = self.wire.pop_front() else {
            return;
        };
        let i = self.nodes.iter().position(|(a, _)| *a == to).unwrap();
        let mut rec = Recorder::default();
        self.nodes[i]
            .1
            .handle_datagram(self.now, from, &mut bytes, &mut rec);
        self.absorb(to, i, rec);
    }

    /// Advance the clock by `step` and let timers run.
    fn tick(&mut self, step: Duration) {
        self.now += step;
        self.run();
    }
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

fn end(name: &str, peer: PublicKey, prefix_: &str, out_id: u32, in_id: u32) -> RouteSetup {
    RouteSetup {
        name: name.into(),
        peer,
        prefixes: vec![prefix(prefix_)],
        first_hop: addr(2),
        out_id: id(out_id),
        in_id: id(in_id),
        prev_hop: addr(2),
        persistent_keepalive: None,
    }
}

/// A second route A - B - C set up by the manager: ids 110 -> 111 towards C, 210 -> 202
/// back to A, claiming the same prefixes as the configured route.
fn add_manager_route(net: &mut Net) {
    let (ka, kc) = (net.keys[0], net.keys[2]);
    net.apply(
        1,
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
    net.apply(
        2,
        vec![RuleChange::AddEnd {
            route: end("to-a-2", ka, "10.77.0.1/32", 210, 111),
            origin: MANAGER,
        }],
    )
    .unwrap();
    net.apply(
        0,
        vec![RuleChange::AddEnd {
            route: end("to-c-2", kc, "10.77.0.3/32", 110, 202),
            origin: MANAGER,
        }],
    )
    .unwrap();
}

fn relay_packets(net: &mut Net, node: usize, in_id: u32) -> Option<u64> {
    let now = net.now;
    let status = net.core(node).status(now);
    status
        .relays
        .iter()
        .find(|r| r.in_id == id(in_id))
        .map(|r| r.packets)
}

#[test]
fn a_refused_batch_changes_nothing() {
    let mut net = Net::three();
    let before = net.status(1);
    let version = net.core(1).table().snapshot().version();
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
                    route: end("bad", PublicKey::from_bytes([0; 32]), "10.9.0.0/16", 5, 6),
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
        assert_eq!(net.apply(1, changes), Err(want));
        assert_eq!(net.status(1), before);
        assert_eq!(net.core(1).table().snapshot().version(), version);
    }
    // Removing and re-adding an id in one batch is fine, and so is a route end on a node
    // without TUN (it only carries pings).
    let kc = net.keys[2];
    net.apply(
        1,
        vec![
            RuleChange::Remove { in_id: id(100) },
            RuleChange::AddRelay {
                relay: relay(100, 1, 101, 3),
                origin: MANAGER,
            },
            RuleChange::AddEnd {
                route: end("b-to-c", kc, "10.9.0.0/16", 5, 6),
                origin: MANAGER,
            },
        ],
    )
    .unwrap();
    let status = net.status(1);
    assert_eq!(status.relays.len(), 2);
    assert_eq!(status.relays[0].origin, MANAGER);
    assert_eq!(status.relays[1].origin, Origin::Config);
    assert_eq!(status.routes.len(), 1);
    assert_eq!(net.core(1).table().snapshot().version(), version + 1);
}

#[test]
fn dynamic_route_takes_over_a_prefix_and_gives_it_back() {
    let mut net = Net::three();
    add_manager_route(&mut net);
    // The newest end claiming 10.77.0.3/32 wins: traffic takes the manager's ids.
    let first = ipv4([10, 77, 0, 3], b"over the new route");
    net.tun_in(0, &first);
    net.run();
    assert_eq!(net.tun_out[2], vec![first.clone()]);
    let reply = ipv4([10, 77, 0, 1], b"back over it");
    net.tun_in(2, &reply);
    net.run();
    assert_eq!(net.tun_out[0], vec![reply]);
    assert!(relay_packets(&mut net, 1, 110).unwrap() > 0);
    assert!(relay_packets(&mut net, 1, 210).unwrap() > 0);
    assert_eq!(relay_packets(&mut net, 1, 100), Some(0));
    let status = net.status(0);
    assert_eq!(status.routes.len(), 2);
    assert_eq!(status.routes[1].name, "to-c-2");
    assert_eq!(status.routes[1].origin, MANAGER);
    assert_eq!(status.routes[1].idle, Some(Duration::ZERO));
    assert_eq!(status.routes[0].origin, Origin::Config);
    assert_eq!(status.routes[0].idle, None);

    // Remove the manager's end at A: the prefix goes back to the configured route, and its
    // endpoint slot is reused by the next end without confusing the two.
    net.apply(0, vec![RuleChange::Remove { in_id: id(202) }])
        .unwrap();
    assert!(net.wire.is_empty(), "removal is silent");
    let again = ipv4([10, 77, 0, 3], b"over the configured route");
    net.tun_in(0, &again);
    net.run();
    assert_eq!(net.tun_out[2], vec![first, again]);
    assert!(relay_packets(&mut net, 1, 100).unwrap() > 0);
    assert_eq!(net.status(0).routes.len(), 1);
    let kc = net.keys[2];
    net.apply(
        0,
        vec![RuleChange::AddEnd {
            route: end("to-c-3", kc, "10.77.0.3/32", 110, 203),
            origin: MANAGER,
        }],
    )
    .unwrap();
    assert_eq!(net.core(0).ends.free, Vec::<u32>::new(), "slot reused");
    assert_eq!(
        net.core(0)
            .ends
            .prefixes
            .lookup("10.77.0.3".parse().unwrap()),
        Some(&EndpointId(1))
    );
}

#[test]
fn idle_manager_rules_expire_busy_and_configured_ones_do_not() {
    let mut net = Net::three();
    add_manager_route(&mut net);
    net.apply(
        1,
        vec![RuleChange::AddRelay {
            relay: relay(300, 1, 301, 3),
            origin: Origin::Manager {
                route: 12,
                expire_after: Duration::from_secs(5),
            },
        }],
    )
    .unwrap();
    let start = net.now;
    assert!(net.core(1).next_deadline().unwrap() <= start + EXPIRY_SAMPLE);
    // Traffic A -> C on the manager's route every second; nothing on relay 300, and after
    // the handshake nothing on the way back (210 at B, 202 at A) or on configured rules.
    let tick = |net: &mut Net, i: u8| {
        net.tun_in(0, &ipv4([10, 77, 0, 3], &[i; 10]));
        net.tick(Duration::from_secs(1));
    };
    for i in 1..5u8 {
        tick(&mut net, i);
        assert!(net.events(1).is_empty(), "nothing expires before 5 s");
    }
    // Relay 300 saw nothing since it was added 5 s ago.
    tick(&mut net, 5);
    assert_eq!(
        net.events(1),
        vec![EngineEvent::Expired {
            in_id: id(300),
            route: 12
        }]
    );
    // The handshake response crossed 210 and 202 at the start; the first sample (1 s)
    // saw it, so they go 5 s after that sample: late by up to a sample, never early.
    tick(&mut net, 6);
    assert_eq!(
        net.events(1),
        vec![EngineEvent::Expired {
            in_id: id(210),
            route: 9
        }]
    );
    let b = net.status(1);
    assert_eq!(b.expired, 2);
    let ids: Vec<u32> = b.relays.iter().map(|r| r.in_id.get()).collect();
    assert_eq!(ids, vec![100, 110, 200], "busy and configured rules stay");
    // A's end of the manager route only sends (its Deliver rule, 202, sees nothing after
    // the handshake) and goes too; C's end (111) receives every second and stays.
    assert_eq!(
        net.events(0),
        vec![EngineEvent::Expired {
            in_id: id(202),
            route: 9
        }]
    );
    assert!(net.events(2).is_empty());
    assert_eq!(net.status(2).routes.len(), 2);
    // Long after, the configured rules are still there.
    net.tick(Duration::from_secs(3600));
    assert_eq!(net.status(1).relays.len(), 2);
    assert_eq!(net.status(0).routes.len(), 1);
    assert_eq!(
        net.core(1).next_deadline(),
        None,
        "no sampling without manager rules"
    );
}

fn probe_bytes(ty: u8, nonce: u64) -> Vec<u8> {
    let mut p = vec![1, ty, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&nonce.to_be_bytes());
    p
}

#[test]
fn link_probes_are_answered_and_timed() {
    let mut net = Net::three();
    net.probe(0, addr(2), 42);
    let (_, to, sent) = net.wire[0].clone();
    assert_eq!((to, sent), (addr(2), probe_bytes(8, 42)));
    net.now += Duration::from_millis(3);
    net.run();
    assert_eq!(
        net.events(0),
        vec![EngineEvent::ProbeReply {
            from: addr(2),
            nonce: 42,
            rtt: Duration::from_millis(3)
        }]
    );
    // A reply from another address than the probe went to, and an unknown nonce.
    net.probe(0, addr(2), 43);
    net.wire.clear();
    // Answered once: the same reply again is unexpected.
    net.inject(addr(2), addr(1), probe_bytes(9, 42));
    net.inject(addr(3), addr(1), probe_bytes(9, 43));
    net.inject(addr(2), addr(1), probe_bytes(9, 44));
    net.run();
    assert!(net.events(0).is_empty());
    assert_eq!(net.drop_count(0, "unexpected probe reply"), 3);
    // The genuine one still counts.
    net.inject(addr(2), addr(1), probe_bytes(9, 43));
    net.run();
    assert_eq!(net.events(0).len(), 1);
}

#[test]
fn malformed_probes_are_dropped_and_counted() {
    let mut net = Net::three();
    let mut with_id = probe_bytes(8, 1);
    with_id[7] = 1;
    let mut reserved = probe_bytes(9, 1);
    reserved[2] = 1;
    let mut version = probe_bytes(8, 1);
    version[0] = 2;
    let mut long = probe_bytes(8, 1);
    long.push(0);
    for bad in [
        probe_bytes(8, 1)[..15].to_vec(),
        long,
        with_id,
        reserved,
        version,
        vec![0, 8],
    ] {
        net.inject(addr(1), addr(2), bad);
    }
    net.run();
    assert_eq!(net.drop_count(1, "bad probe"), 6);
    assert_eq!(net.drop_count(1, "malformed"), 0);
    assert!(net.events(0).is_empty() && net.events(1).is_empty());
}

#[test]
fn outstanding_probes_are_bounded_oldest_first() {
    let mut net = Net::three();
    let nowhere = addr(9);
    for nonce in 0..=PROBES_OUTSTANDING as u64 {
        net.probe(0, nowhere, nonce);
    }
    net.run();
    assert_eq!(net.core(0).probes.slots.len(), PROBES_OUTSTANDING);
    for nonce in [0, 1, PROBES_OUTSTANDING as u64] {
        net.inject(nowhere, addr(1), probe_bytes(9, nonce));
    }
    net.run();
    let nonces: Vec<u64> = net
        .events(0)
        .into_iter()
        .map(|e| match e {
            EngineEvent::ProbeReply { nonce, .. } => nonce,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(nonces, vec![1, PROBES_OUTSTANDING as u64]);
    assert_eq!(net.drop_count(0, "unexpected probe reply"), 1);
}

#[test]
fn events_beyond_the_queue_are_counted() {
    let mut net = Net::three();
    for nonce in 0..EVENT_QUEUE as u64 + 5 {
        net.probe(0, addr(2), nonce);
        net.run();
    }
    assert_eq!(net.status(0).events_dropped, 5);
    assert_eq!(net.events(0).len(), EVENT_QUEUE);
    net.probe(0, addr(2), 7);
    net.run();
    assert_eq!(net.events(0).len(), 1);
}

#[test]
fn ping_before_keys_waits_for_the_handshake_then_pongs_over_the_relay() {
    let mut net = Net::three();
    assert_eq!(
        net.ping(0, id(100), 1),
        Err(PingError::UnknownRoute(id(100)))
    );
    assert_eq!(
        net.ping(1, id(100), 1),
        Err(PingError::UnknownRoute(id(100)))
    );
    net.ping(0, id(201), 5).unwrap();
    net.ping(0, id(201), 6).unwrap();
    // Only the initiation left: the pings wait for keys.
    assert_eq!(net.wire.len(), 1);
    net.now += Duration::from_millis(1);
    net.run();
    let kc = net.keys[2];
    let mut events = net.events(0);
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
    let relayed = relay_packets(&mut net, 1, 100).unwrap();
    net.ping(0, id(201), 7).unwrap();
    assert_eq!(net.wire.len(), 1);
    assert_eq!(net.wire[0].2.len(), PING_LEN);
    net.now += Duration::from_millis(2);
    net.run();
    assert_eq!(
        net.events(0),
        vec![EngineEvent::Pong {
            in_id: id(201),
            peer: kc,
            nonce: 7,
            rtt: Duration::from_millis(2),
        }]
    );
    assert_eq!(relay_packets(&mut net, 1, 100), Some(relayed + 1));
    assert!(net.tun_out[0].is_empty() && net.tun_out[2].is_empty());
}

#[test]
fn unsolicited_and_forged_pongs_are_dropped() {
    let mut net = Net::three();
    net.ping(0, id(201), 1).unwrap();
    net.run();
    assert_eq!(net.events(0).len(), 1);
    // A genuine, authenticated pong that answers no ping of the core: A's session pings
    // behind the core's back, so C's pong matches nothing.
    let mut buf = [0u8; PING_LEN];
    let now = net.now;
    let n = net.core(0).ends.slots[0]
        .as_mut()
        .unwrap()
        .session
        .ping(now, &mut buf, 77)
        .unwrap();
    net.inject(addr(1), addr(2), buf[..n].to_vec());
    net.run();
    assert!(net.events(0).is_empty());
    assert_eq!(net.drop_count(0, "unexpected pong"), 1);
    // A forged pong (a flipped nonce bit) fails its tag at the session.
    net.ping(0, id(201), 2).unwrap();
    for _ in 0..3 {
        net.step(); // A -> B -> C, the pong C -> B -> (wire) A
    }
    let (from, to, pong) = net.wire.pop_front().unwrap();
    assert_eq!((from, to, pong.len()), (addr(2), addr(1), PING_LEN));
    assert_eq!(pong[1], PacketType::Pong as u8);
    let mut forged = pong.clone();
    forged[TRANSPORT_HEADER_LEN] ^= 1;
    net.inject(from, to, forged);
    net.run();
    assert!(net.events(0).is_empty());
    assert_eq!(
        net.status(0).routes[0]
            .drops
            .iter()
            .find(|(n, _)| *n == "bad tag")
            .unwrap()
            .1,
        1
    );
    net.inject(from, to, pong);
    net.run();
    assert_eq!(net.events(0).len(), 1, "the genuine pong");
}
