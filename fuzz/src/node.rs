//! Target for the engine core's datagram intake (`engine::NodeCore::handle_datagram`): one
//! UDP datagram, as the node's socket hands it over, from any sender on the network.
//!
//! `node_datagram`: a fresh [`NodeCore`] per input, set up as a config file would set it
//! up ([`node_setup`]): the node has the responder's fixed key ([`RESPONDER_SECRET`]), one
//! route end to the initiator (the fixtures' [`ROUTE`] in, [`INITIATOR_IN`] out, first and
//! previous hop [`FROM`]), a relay rule from [`FROM`] to [`NEXT`], a relay rule from
//! another previous hop, and the initiator as its one neighbour at [`FROM`] (so link probes
//! tagged with the fixed link key are answered). The input is one datagram from [`FROM`].
//!
//! Checks: nothing panics; the datagram has exactly one fate, either one datagram sent
//! (forwarded to [`NEXT`] with only its route id changed, or a probe answer or a handshake
//! reply to [`FROM`]) or exactly one drop counted in the node's status (its node-wide and
//! forwarding drops, and its route end's); nothing is written to the TUN device (no
//! session has keys before the datagram, so nothing can open).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::engine::{NodeCore, NodeIo, NodeSetup, RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::stack::StackSetup;
use skywire_dataplane::wire::RouteId;

use crate::fixtures::{INITIATOR_IN, INITIATOR_SECRET, RESPONDER_SECRET, ROUTE, TIMESTAMP};

/// `198.18.0.n:6000`.
const fn addr(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 6000)
}

/// Where every datagram comes from: the initiator, the route end's first and previous hop.
pub const FROM: SocketAddr = addr(1);
/// The node's own transport address.
pub const LISTEN: SocketAddr = addr(2);
/// Where the relay rule from [`FROM`] forwards to.
pub const NEXT: SocketAddr = addr(3);
/// A previous hop other than [`FROM`], of the second relay rule.
pub const OTHER: SocketAddr = addr(4);
/// The relay rule's incoming id (packets from [`FROM`] with it go to [`NEXT`]).
pub const RELAY_IN: RouteId = match RouteId::new(0x0000_0100) {
    Some(id) => id,
    None => unreachable!(),
};
/// The relay rule's outgoing id.
pub const RELAY_OUT: RouteId = match RouteId::new(0x0000_0200) {
    Some(id) => id,
    None => unreachable!(),
};
/// The incoming id of the relay rule whose previous hop is [`OTHER`].
pub const OTHER_IN: RouteId = match RouteId::new(0x0000_0300) {
    Some(id) => id,
    None => unreachable!(),
};

/// The node's setup, as its config file would give it.
pub fn node_setup() -> NodeSetup {
    let initiator = PrivateKey::from_bytes(INITIATOR_SECRET).public_key();
    NodeSetup {
        private_key: PrivateKey::from_bytes(RESPONDER_SECRET),
        listen: LISTEN,
        tun: Some(TunSetup {
            name: "sky0".into(),
            addresses: vec!["10.77.0.2/24".parse().expect("a prefix")],
            mtu: 1420,
        }),
        routes: vec![RouteSetup {
            name: "to-initiator".into(),
            peer: initiator,
            prefixes: vec!["10.77.0.1/32".parse().expect("a prefix")],
            first_hop: FROM,
            out_id: INITIATOR_IN,
            in_id: ROUTE,
            peer_in_id: INITIATOR_IN,
            prev_hop: FROM,
            persistent_keepalive: None,
        }],
        relays: vec![
            RelaySetup {
                in_id: RELAY_IN,
                prev_hop: FROM,
                out_id: RELAY_OUT,
                next_hop: NEXT,
            },
            RelaySetup {
                in_id: OTHER_IN,
                prev_hop: OTHER,
                out_id: RELAY_OUT,
                next_hop: NEXT,
            },
        ],
        offload: false,
        stack: StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    }
}

/// What the core did with the datagram.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Datagrams sent, with their destinations.
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Packets written to the TUN device.
    pub tun: Vec<Vec<u8>>,
    /// Senders the core found authentic.
    pub authentic: Vec<SocketAddr>,
}

impl NodeIo for Recorder {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        self.sent.push((to, packet.to_vec()));
    }

    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }

    fn authentic(&mut self, from: SocketAddr) {
        self.authentic.push(from);
    }
}

/// Every drop the node's status counts: node-wide, forwarding, and at its route ends.
fn drops(core: &NodeCore, now: Instant) -> u64 {
    let status = core.status(now);
    let node: u64 = status.drops.iter().map(|(_, n)| n).sum();
    let ends: u64 = status
        .routes
        .iter()
        .flat_map(|r| r.drops.iter().map(|(_, n)| n))
        .sum();
    node + ends
}

/// What one datagram did to a fresh node: what it sent, and how many drops it counted.
pub fn run(data: &[u8]) -> (Recorder, u64) {
    let now = Instant::now();
    // The handshake's clock: a little after the seeds' initiations were made.
    let unix_time = Duration::from_nanos(TIMESTAMP) + Duration::from_secs(60);
    let setup = node_setup();
    let mut core = NodeCore::new(&setup, LISTEN, now, unix_time).expect("the setup is valid");
    let initiator = PrivateKey::from_bytes(INITIATOR_SECRET).public_key();
    assert_eq!(core.set_neighbours(&[(FROM, initiator)]), 1);
    let before = drops(&core, now);
    let mut io = Recorder::default();
    let mut buf = data.to_vec();
    core.handle_datagram(now, FROM, &mut buf, &mut io);
    let after = drops(&core, now);
    (io, after - before)
}

/// Every check on the input: see the module doc.
pub fn node_datagram(data: &[u8]) {
    let (io, dropped) = run(data);
    assert!(io.tun.is_empty(), "a packet reached the TUN device");
    match (io.sent.as_slice(), dropped) {
        ([], 1) => {}
        ([(to, packet)], 0) if *to == NEXT => {
            // Forwarded by the relay rule: only the route id changed.
            assert_eq!(packet.len(), data.len());
            assert_eq!(packet.get(..4), data.get(..4));
            assert_eq!(packet.get(4..8), Some(&RELAY_OUT.get().to_be_bytes()[..]));
            assert_eq!(packet.get(8..), data.get(8..));
        }
        ([(to, _)], 0) if *to == FROM => {
            // A probe answered, or an initiation answered: only after proof.
            assert_eq!(io.authentic, [FROM], "answered without authenticating");
        }
        (sent, dropped) => panic!(
            "a datagram of {} bytes: {} sent (to {:?}), {dropped} drops counted",
            data.len(),
            sent.len(),
            sent.iter().map(|(to, _)| to).collect::<Vec<_>>()
        ),
    }
}
