//! Handshake floods on real engine cores in the mesh (`docs/PROTOCOL.md` §5.10): an
//! off-path sender spoofing a route's previous hop makes initiations with a valid mac1;
//! once the node is under load they cost it no Diffie-Hellman (counted on this thread by
//! `noise::DH_COUNT`), are answered with cookie replies no larger than they are, and the
//! route's real initiator still completes its handshake with a cookie.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::crypto::noise::{self, DH_COUNT, RouteBinding, StaticKeys};
use crate::crypto::{PrivateKey, kdf};
use crate::engine::core::LOAD_BURST;
use crate::wire::{COOKIE_REPLY_LEN, HANDSHAKE_INIT_LEN, HANDSHAKE_INIT_MAC2_LEN, PacketType};
use std::net::Ipv4Addr;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

fn tun_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, n)
}

/// A (1) - B (2, relay) - C (3), with a route from A to C.
fn three() -> (Mesh, [NodeId; 3], Route) {
    let mut mesh = Mesh::new(Instant::now());
    let n: Vec<NodeId> = (1..=3)
        .map(|i| {
            let tun = Prefix::new(tun_ip(i).into(), 24).unwrap();
            mesh.add_host(addr(i), tun).unwrap()
        })
        .collect();
    let route = mesh.add_route(&n).unwrap();
    (mesh, [n[0], n[1], n[2]], route)
}

fn dh_count() -> u64 {
    DH_COUNT.with(|c| c.get())
}

fn node_drop(mesh: &Mesh, node: NodeId, name: &str) -> u64 {
    let status = mesh.status(node).unwrap();
    status.drops.iter().find(|(n, _)| *n == name).unwrap().1
}

fn end_drop(mesh: &Mesh, node: NodeId, in_id: RouteId, name: &str) -> u64 {
    let status = mesh.status(node).unwrap();
    let end = status.routes.iter().find(|r| r.in_id == in_id).unwrap();
    end.drops.iter().find(|(n, _)| *n == name).unwrap().1
}

/// The attacker's initiations to `victim` for its route id `in_id`: one made with a key of
/// the attacker's own, then copies with other sender indices and mac1 made again, so each
/// has a valid mac1 and costs the victim one Diffie-Hellman if read. Made before the DH
/// count is read (making the first one costs two on this thread).
fn spoofed_initiations(victim: PublicKey, in_id: RouteId, n: u32) -> Vec<Vec<u8>> {
    let keys = StaticKeys::new(PrivateKey::generate().unwrap(), victim).unwrap();
    let binding = RouteBinding {
        initiator_in: RouteId::MIN,
        responder_in: in_id,
    };
    let mut first = vec![0u8; HANDSHAKE_INIT_LEN];
    noise::write_init(&keys, binding, in_id, 1, 1, &mut first).unwrap();
    let mac_key = kdf::derive(kdf::CTX_MAC1, &[victim.as_bytes()]);
    (0..n)
        .map(|i| {
            let mut bytes = first.clone();
            bytes[8..12].copy_from_slice(&(i + 1).to_be_bytes());
            let mut covered = bytes[..4].to_vec();
            covered.extend_from_slice(&bytes[8..116]);
            let mac = kdf::mac1(&mac_key, (&covered, &[]));
            bytes[116..].copy_from_slice(&mac);
            bytes
        })
        .collect()
}

/// Inject `packets` as if from `from` to `to`; their total length.
fn inject(mesh: &mut Mesh, packets: Vec<Vec<u8>>, from: SocketAddr, to: SocketAddr) -> usize {
    packets
        .into_iter()
        .map(|bytes| {
            let len = bytes.len();
            mesh.inject(Datagram { from, to, bytes });
            len
        })
        .sum()
}

#[test]
fn a_spoofed_flood_costs_no_diffie_hellman_once_under_load() {
    let (mut mesh, [a, _, c], route) = three();
    let victim = mesh.public_key(c).unwrap();
    let to_c = route.destination_in();

    // Up to the load burst, initiations are read as ever: one Diffie-Hellman each.
    let burst = spoofed_initiations(victim, to_c, LOAD_BURST);
    let before = dh_count();
    inject(&mut mesh, burst, addr(2), addr(3));
    mesh.settle();
    assert_eq!(dh_count() - before, u64::from(LOAD_BURST));
    assert_eq!(node_drop(&mesh, c, "cookie reply sent"), 0);
    assert_eq!(
        end_drop(&mesh, c, to_c, "bad handshake"),
        u64::from(LOAD_BURST)
    );

    // Then the node is under load: the rest of the flood costs none, and each is answered
    // with a cookie reply along the route, smaller than what arrived.
    let flood = spoofed_initiations(victim, to_c, 1000);
    mesh.set_capture(true);
    let before = dh_count();
    let received = inject(&mut mesh, flood, addr(2), addr(3));
    mesh.settle();
    assert_eq!(dh_count() - before, 0, "no Diffie-Hellman under load");
    assert!(mesh.core(c).unwrap().is_under_load(mesh.now()));
    assert_eq!(node_drop(&mesh, c, "cookie reply sent"), 1000);
    assert_eq!(
        end_drop(&mesh, c, to_c, "bad handshake"),
        u64::from(LOAD_BURST)
    );
    let sent: Vec<Datagram> = mesh
        .take_captured()
        .into_iter()
        .filter(|d| d.from == addr(3))
        .collect();
    assert_eq!(sent.len(), 1000);
    assert!(sent.iter().all(|d| d.to == addr(2)
        && d.bytes.len() == COOKIE_REPLY_LEN
        && d.bytes[1] == PacketType::CookieReply as u8));
    let replied: usize = sent.iter().map(|d| d.bytes.len()).sum();
    assert!(
        replied <= received,
        "{replied} bytes sent for {received} received"
    );
    // The relay carried them to A, which had no initiation pending: refused, counted.
    assert_eq!(
        end_drop(&mesh, a, route.source_in(), "bad cookie reply"),
        1000
    );
}

#[test]
fn spoofed_sources_that_are_not_the_previous_hop_cost_nothing() {
    let (mut mesh, [_, _, c], route) = three();
    let flood = spoofed_initiations(mesh.public_key(c).unwrap(), route.destination_in(), 500);
    mesh.set_capture(true);
    let before = dh_count();
    for (i, bytes) in flood.into_iter().enumerate() {
        let from = SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 40_000));
        mesh.inject(Datagram {
            from,
            to: addr(3),
            bytes,
        });
    }
    mesh.settle();
    assert_eq!(dh_count() - before, 0);
    assert_eq!(node_drop(&mesh, c, "wrong previous hop"), 500);
    assert!(mesh.take_captured().iter().all(|d| d.from != addr(3)));
}

#[test]
fn the_real_initiator_completes_its_handshake_with_a_cookie_during_a_flood() {
    let (mut mesh, [a, _, c], route) = three();
    let victim = mesh.public_key(c).unwrap();
    let to_c = route.destination_in();
    inject(
        &mut mesh,
        spoofed_initiations(victim, to_c, LOAD_BURST + 100),
        addr(2),
        addr(3),
    );
    mesh.settle();
    assert!(mesh.core(c).unwrap().is_under_load(mesh.now()));
    let flood_replies = end_drop(&mesh, a, route.source_in(), "bad cookie reply");
    assert_eq!(flood_replies, 100);

    // A's first initiation is answered with a cookie, not read.
    mesh.set_capture(true);
    let hello = ipv4(tun_ip(1), tun_ip(3), b"hello through the flood");
    mesh.tun_input(a, &hello).unwrap();
    mesh.settle();
    assert!(mesh.tun(c).unwrap().is_empty());
    assert_eq!(node_drop(&mesh, c, "cookie reply sent"), 101);
    let captured = mesh.take_captured();
    let first = captured
        .iter()
        .find(|d| d.from == addr(1) && d.bytes[1] == PacketType::HandshakeInit as u8)
        .unwrap();
    assert_eq!(first.bytes.len(), HANDSHAKE_INIT_LEN);
    let reply = captured
        .iter()
        .find(|d| d.to == addr(1) && d.bytes[1] == PacketType::CookieReply as u8)
        .unwrap()
        .clone();
    assert_eq!(
        end_drop(&mesh, a, route.source_in(), "bad cookie reply"),
        flood_replies,
        "the reply to A's own initiation is accepted"
    );

    // The same reply again is a replay: ignored and counted.
    mesh.inject(reply);
    mesh.settle();
    assert_eq!(
        end_drop(&mesh, a, route.source_in(), "bad cookie reply"),
        flood_replies + 1
    );

    // The flood goes on, keeping C under load; A retries on its timer (5 s) with mac2 and
    // the handshake completes, and the packet that waited for it arrives.
    let mut retry = None;
    for _ in 0..6 {
        mesh.advance_clock(Duration::from_secs(1));
        inject(
            &mut mesh,
            spoofed_initiations(victim, to_c, 100),
            addr(2),
            addr(3),
        );
        mesh.settle();
        assert!(mesh.core(c).unwrap().is_under_load(mesh.now()));
        retry = retry.or_else(|| {
            mesh.take_captured()
                .into_iter()
                .find(|d| d.from == addr(1) && d.bytes[1] == PacketType::HandshakeInit as u8)
        });
        if !mesh.tun(c).unwrap().is_empty() {
            break;
        }
    }
    assert_eq!(retry.unwrap().bytes.len(), HANDSHAKE_INIT_MAC2_LEN);
    assert_eq!(mesh.tun(c).unwrap(), [hello]);
    assert_eq!(node_drop(&mesh, c, "initiation under load dropped"), 0);
}
