//! Apps' streams between engine cores in the in-memory mesh: over relays, end to end
//! encrypted, and what happens to them when routes change.

use super::*;
use crate::stack::{ListenerId, StackEvent, StreamError, StreamId};

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

/// A - B - C with a route A -> C through B; C listens on port 7. Nodes have no TUN.
fn line() -> (Mesh, [NodeId; 3], Route) {
    let mut mesh = Mesh::new(Instant::now());
    let a = mesh.add_relay(addr(1)).unwrap();
    let b = mesh.add_relay(addr(2)).unwrap();
    let c = mesh.add_relay(addr(3)).unwrap();
    let route = mesh.add_route(&[a, b, c]).unwrap();
    mesh.listen(c, ListenerId(1), 7).unwrap().unwrap();
    (mesh, [a, b, c], route)
}

/// Dial C:7 from A and take both ends; (A's id, C's id).
fn open(mesh: &mut Mesh, a: NodeId, c: NodeId) -> (StreamId, StreamId) {
    let kc = mesh.public_key(c).unwrap();
    let ka = mesh.public_key(a).unwrap();
    let id = mesh
        .dial(a, kc, 7, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    mesh.settle();
    let at_a = mesh.stack_events(a).unwrap();
    assert!(
        matches!(at_a.as_slice(), [StackEvent::Connected(i)] if i.id == id && i.peer == kc),
        "{at_a:?}"
    );
    let at_c = mesh.stack_events(c).unwrap();
    let [StackEvent::Arrived { info, .. }] = at_c.as_slice() else {
        panic!("{at_c:?}");
    };
    // The stream's key is the route's authenticated peer.
    assert_eq!(info.peer, ka);
    let cid = info.id;
    mesh.attach(a, id).unwrap().unwrap();
    mesh.attach(c, cid).unwrap().unwrap();
    (id, cid)
}

/// Send `data` from `from`'s stream to `to`'s, moving the wire, until all arrived.
fn transfer(
    mesh: &mut Mesh,
    from: (NodeId, StreamId),
    to: (NodeId, StreamId),
    data: &[u8],
) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..200_000 {
        if sent < data.len() {
            sent += mesh.app_send(from.0, from.1, &data[sent..]).unwrap();
        }
        mesh.deliver_all();
        got.extend(mesh.app_recv(to.0, to.1).unwrap());
        if got.len() >= data.len() {
            break;
        }
        mesh.advance(Duration::from_micros(200));
    }
    got
}

#[test]
fn a_stream_crosses_a_relay_that_cannot_read_it() {
    let (mut mesh, [a, b, c], _) = line();
    let (sa, sc) = open(&mut mesh, a, c);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    mesh.set_capture(true);
    let got = transfer(&mut mesh, (a, sa), (c, sc), &data);
    assert!(
        got == data,
        "{} of {} bytes arrived intact",
        got.len(),
        data.len()
    );
    // Nothing in clear on the wire, and the relay holds no stream or session.
    let needle = &data[1000..1032];
    assert!(
        !mesh
            .take_captured()
            .iter()
            .any(|d| d.bytes.windows(needle.len()).any(|w| w == needle))
    );
    let relay = mesh.status(b).unwrap();
    assert!(relay.routes.is_empty());
    assert_eq!(relay.stack.streams, 0);
    // Back the other way, then a clean close from both sides.
    let back = transfer(&mut mesh, (c, sc), (a, sa), b"pong");
    assert_eq!(back, b"pong");
    mesh.app_fin(a, sa).unwrap();
    mesh.settle();
    mesh.app_fin(c, sc).unwrap();
    mesh.settle();
    mesh.advance(Duration::from_millis(50));
    assert_eq!(
        mesh.stack_events(a).unwrap(),
        vec![StackEvent::Ended {
            id: sa,
            error: None
        }]
    );
    assert_eq!(
        mesh.stack_events(c).unwrap(),
        vec![StackEvent::Ended {
            id: sc,
            error: None
        }]
    );
}

#[test]
fn without_a_route_a_dial_says_so_and_a_removed_route_ends_its_streams_at_once() {
    let (mut mesh, [a, _, c], route) = line();
    let kb = mesh.public_key(NodeId(1)).unwrap();
    assert_eq!(
        mesh.dial(a, kb, 7, Duration::from_secs(1)).unwrap(),
        Err(StreamError::NoRoute)
    );
    let (sa, _) = open(&mut mesh, a, c);
    mesh.apply(
        a,
        vec![RuleChange::Remove {
            in_id: route.source_in(),
        }],
    )
    .unwrap();
    assert_eq!(
        mesh.stack_events(a).unwrap(),
        vec![StackEvent::Ended {
            id: sa,
            error: Some(StreamError::RouteGone)
        }]
    );
    assert_eq!(mesh.status(a).unwrap().stack.streams, 0);
}

#[test]
fn a_stream_carries_on_over_a_repaired_route() {
    let mut mesh = Mesh::new(Instant::now());
    let a = mesh.add_relay(addr(1)).unwrap();
    let b = mesh.add_relay(addr(2)).unwrap();
    let d = mesh.add_relay(addr(4)).unwrap();
    let c = mesh.add_relay(addr(3)).unwrap();
    let first = mesh.add_route(&[a, b, c]).unwrap();
    mesh.listen(c, ListenerId(1), 7).unwrap().unwrap();
    let (sa, sc) = open(&mut mesh, a, c);
    assert_eq!(transfer(&mut mesh, (a, sa), (c, sc), b"before"), b"before");
    // B dies; a second route through D is made before the first is removed (as the
    // manager repairs), and the stream goes on over it.
    mesh.kill(b).unwrap();
    let second = mesh.add_route(&[a, d, c]).unwrap();
    for (node, in_id) in [(a, first.source_in()), (c, first.destination_in())] {
        mesh.apply(node, vec![RuleChange::Remove { in_id }])
            .unwrap();
    }
    let data = vec![7u8; 300_000];
    let got = transfer(&mut mesh, (a, sa), (c, sc), &data);
    assert_eq!(got.len(), data.len());
    assert!(mesh.stack_events(a).unwrap().is_empty());
    assert!(mesh.stack_events(c).unwrap().is_empty());
    assert_eq!(second.path, vec![a, d, c]);
}

#[test]
fn an_app_that_goes_away_resets_the_far_end() {
    let (mut mesh, [a, _, c], _) = line();
    let (sa, sc) = open(&mut mesh, a, c);
    mesh.app_abort(a, sa).unwrap();
    mesh.settle();
    assert_eq!(
        mesh.stack_events(c).unwrap(),
        vec![StackEvent::Ended {
            id: sc,
            error: Some(StreamError::PeerReset)
        }]
    );
}

#[test]
fn lost_segments_are_sent_again_on_the_streams_timers() {
    let (mut mesh, [a, _, c], _) = line();
    let (sa, sc) = open(&mut mesh, a, c);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut lost = 0;
    let mut n = 0u64;
    for _ in 0..100_000 {
        if sent < data.len() {
            sent += mesh.app_send(a, sa, &data[sent..]).unwrap();
        }
        // Every 13th datagram on the wire is lost, in both directions.
        while mesh.deliver_next().is_some() || !mesh.in_flight().is_empty() {
            n += 1;
            if n.is_multiple_of(13) && mesh.take_next().is_some() {
                lost += 1;
            }
        }
        got.extend(mesh.app_recv(c, sc).unwrap());
        if got.len() >= data.len() {
            break;
        }
        // Only the timers bring back what was lost once nothing else moves.
        mesh.advance_clock(Duration::from_millis(5));
        mesh.poll_all_timers();
    }
    assert!(lost > 10, "only {lost} datagrams lost");
    assert!(
        got == data,
        "{} of {} bytes arrived intact ({lost} datagrams lost)",
        got.len(),
        data.len()
    );
}

#[test]
fn random_packets_into_a_stack_are_counted_and_its_streams_go_on() {
    // A has a TUN device; C's TUN address is its own link address towards A, so that A's
    // route to C takes any packet A's kernel writes to it: a peer that seals whatever it
    // likes into the stack's ingress.
    let mut mesh = Mesh::new(Instant::now());
    let a = mesh
        .add_host(addr(1), "10.0.0.1/32".parse().unwrap())
        .unwrap();
    let b = mesh.add_relay(addr(2)).unwrap();
    let ka = mesh.public_key(a).unwrap();
    let mut setup = bare_setup(addr(3)).unwrap();
    let kc = setup.public_key();
    let (c_link, a_link) = crate::stack::link_addresses(&kc, &ka);
    setup.tun = Some(TunSetup {
        name: "sim0".into(),
        addresses: vec![Prefix::new(c_link.into(), 32).unwrap()],
        mtu: TUN_MTU,
    });
    let c = mesh.add_node(setup).unwrap();
    mesh.add_route(&[a, b, c]).unwrap();
    mesh.listen(c, ListenerId(1), 7).unwrap().unwrap();
    let (sa, sc) = open(&mut mesh, a, c);
    let before = mesh.status(c).unwrap().stack.counters;

    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000u32 {
        let len = 20 + (next() % 200) as usize;
        let mut packet: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        packet[0] = 0x45;
        packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        // Mostly TCP from A's own link address; some from elsewhere, some not TCP.
        packet[9] = if i % 5 == 0 { next() as u8 } else { 6 };
        if i % 7 != 0 {
            packet[12..16].copy_from_slice(&a_link.octets());
        }
        packet[16..20].copy_from_slice(&c_link.octets());
        mesh.tun_input(a, &packet).unwrap();
        if i % 100 == 0 {
            mesh.settle();
        }
    }
    mesh.settle();
    let after = mesh.status(c).unwrap().stack.counters;
    let counted = (after.bad_packets - before.bad_packets)
        + (after.unknown - before.unknown)
        + (after.refused - before.refused);
    assert!(counted > 1000, "{before:?} -> {after:?}");
    // Nothing reached C's TUN device, and the stream carries on, both ways.
    assert!(mesh.take_tun(c).unwrap().is_empty());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
    assert_eq!(transfer(&mut mesh, (a, sa), (c, sc), &data), data);
    assert_eq!(
        transfer(&mut mesh, (c, sc), (a, sa), b"still here"),
        b"still here"
    );
}
