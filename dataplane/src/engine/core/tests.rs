//! Three node cores A - B - C joined by an in-memory transport, with in-memory TUNs.

use super::*;
use crate::crypto::PrivateKey;
use crate::engine::setup::{RelaySetup, TunSetup};
use crate::route::Prefix;
use crate::wire::RouteId;
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
        let nodes = [a, b, c]
            .iter()
            .map(|s| (s.listen, NodeCore::new(s, s.listen, now, unix).unwrap()))
            .collect();
        Self {
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
    assert_eq!(err, SetupError::Table(TableError::Exists(id(1))));
}
