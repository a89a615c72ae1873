//! Target for `session::Session::decapsulate`: two real sessions talking through a network
//! that the fuzzer controls.
//!
//! Peer A holds the initiator's fixed static keys and peer B the responder's (see
//! [`crate::fixtures`]); either may start a handshake. The fuzzer's input is a script: it
//! moves the clock, makes either end seal data or poll its timers, and decides what the
//! network does with each packet in flight (deliver, lose, reorder, corrupt, replay) or
//! injects bytes of its own. Every packet an end receives goes through `decapsulate`.
//!
//! Beyond "never panic", the target checks what a session promises its caller:
//!
//! - plaintext is delivered only if the other end sealed it and the packet arrives as
//!   sealed, except perhaps for its route id (relays rewrite it, so it is not
//!   authenticated), and the plaintext equals what was sealed;
//! - no sealed packet is delivered twice, however often the network replays it;
//! - the drop counters count exactly the `Dropped` outcomes;
//! - an initiation is answered only if its timestamp is newer than every initiation the
//!   end's node accepted from the other end's key before, across re-installs of the route
//!   end (each end has a [`PeerMemory`], which a restart clears and a re-install keeps);
//! - `poll` sends nothing before the instant `poll_timeout` announced, and at a fixed
//!   instant it runs dry after a few calls (a driver loops on it until `None`).
//!
//! Input format: the first byte picks the limits (bit 0 set: tight limits that reach the
//! rekey and reject thresholds within a short script; clear: WireGuard's). Then operations,
//! each a tag byte (bit 0: which end, 0 = A, 1 = B; the rest, modulo the number of
//! operations: which [`Op`]) and its arguments; see [`encode`]. A truncated last operation
//! is ignored.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::cipher::Limits;
use skywire_dataplane::crypto::noise::StaticKeys;
use skywire_dataplane::session::{Outcome, PeerMemory, RouteIds, Session};
use skywire_dataplane::wire::{
    HANDSHAKE_INIT_LEN, PacketType, RouteId, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD,
};

use crate::fixtures::{INITIATOR_IN, ROUTE, initiator_keys, responder_keys};

/// One end of the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end with the initiator's static keys.
    A,
    /// The end with the responder's static keys.
    B,
}

impl Side {
    fn index(self) -> usize {
        self as usize
    }

    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// One step of a script. `side` is the end that acts (or whose inbox the network touches).
#[derive(Debug, Clone)]
pub enum Op {
    /// Advance the clock by this many seconds.
    Tick(u8),
    /// Seal this payload (at most 255 bytes; empty is sent as one zero byte) as data and
    /// put the packet in the other end's inbox.
    Send(Side, Vec<u8>),
    /// Hand the first packet of this end's inbox to it.
    Deliver(Side),
    /// XOR the byte at `index` (modulo the length) of the first packet in the inbox.
    Corrupt(Side, u8, u8),
    /// Lose the first packet of the inbox.
    Lose(Side),
    /// Move the first packet of the inbox to its end.
    Reorder(Side),
    /// Hand this end again the last packet it received.
    Replay(Side),
    /// Hand this end these bytes (at most 255).
    Raw(Side, Vec<u8>),
    /// Call `poll` until it returns `None`, sending what it writes to the other end.
    Poll(Side),
    /// `request_handshake`.
    RequestHandshake(Side),
    /// `close`, sending the close packet if one was written.
    Close(Side),
    /// Replace this end's session by a fresh one, as after a restart: its node's memory of
    /// the peer key is gone too.
    Restart(Side),
    /// `set_persistent_keepalive` with this many seconds (0: off).
    PersistentKeepalive(Side, u8),
    /// Replace this end's session by a fresh one, as when the route end is installed again
    /// (a repair): its node still remembers the peer key.
    Reinstall(Side),
}

/// Number of operation kinds (the tag's upper bits are taken modulo this).
const OPS: u8 = 14;

/// Encode a script (with its limits byte) in the target's input format.
pub fn encode(tight_limits: bool, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![u8::from(tight_limits)];
    let tag = |kind: u8, side: Side| kind << 1 | side as u8;
    for op in ops {
        match op {
            Op::Tick(n) => out.extend([tag(0, Side::A), *n]),
            Op::Send(s, payload) => {
                let len = u8::try_from(payload.len()).expect("at most 255 bytes");
                out.extend([tag(1, *s), len]);
                out.extend(payload);
            }
            Op::Deliver(s) => out.push(tag(2, *s)),
            Op::Corrupt(s, index, xor) => out.extend([tag(3, *s), *index, *xor]),
            Op::Lose(s) => out.push(tag(4, *s)),
            Op::Reorder(s) => out.push(tag(5, *s)),
            Op::Replay(s) => out.push(tag(6, *s)),
            Op::Raw(s, bytes) => {
                let len = u8::try_from(bytes.len()).expect("at most 255 bytes");
                out.extend([tag(7, *s), len]);
                out.extend(bytes);
            }
            Op::Poll(s) => out.push(tag(8, *s)),
            Op::RequestHandshake(s) => out.push(tag(9, *s)),
            Op::Close(s) => out.push(tag(10, *s)),
            Op::Restart(s) => out.push(tag(11, *s)),
            Op::PersistentKeepalive(s, n) => out.extend([tag(12, *s), *n]),
            Op::Reinstall(s) => out.push(tag(13, *s)),
        }
    }
    out
}

/// Parse the next operation; `None` at the end or on a truncated operation.
fn next_op(input: &mut &[u8]) -> Option<Op> {
    fn byte(input: &mut &[u8]) -> Option<u8> {
        let (&b, rest) = input.split_first()?;
        *input = rest;
        Some(b)
    }
    fn bytes(input: &mut &[u8]) -> Option<Vec<u8>> {
        let len = usize::from(byte(input)?);
        let (taken, rest) = input.split_at_checked(len)?;
        *input = rest;
        Some(taken.to_vec())
    }
    let tag = byte(input)?;
    let side = if tag & 1 == 0 { Side::A } else { Side::B };
    Some(match (tag >> 1) % OPS {
        0 => Op::Tick(byte(input)?),
        1 => Op::Send(side, bytes(input)?),
        2 => Op::Deliver(side),
        3 => Op::Corrupt(side, byte(input)?, byte(input)?),
        4 => Op::Lose(side),
        5 => Op::Reorder(side),
        6 => Op::Replay(side),
        7 => Op::Raw(side, bytes(input)?),
        8 => Op::Poll(side),
        9 => Op::RequestHandshake(side),
        10 => Op::Close(side),
        11 => Op::Restart(side),
        12 => Op::PersistentKeepalive(side, byte(input)?),
        _ => Op::Reinstall(side),
    })
}

/// Limits small enough that a short script crosses every threshold.
const TIGHT: Limits = Limits {
    rekey_after_messages: 4,
    reject_after_messages: 8,
    rekey_after_time: Duration::from_secs(12),
    reject_after_time: Duration::from_secs(18),
    rekey_timeout: Duration::from_secs(1),
    rekey_attempt_time: Duration::from_secs(9),
    keepalive_timeout: Duration::from_secs(2),
};

/// The wall-clock time of the script's start, for handshake timestamps.
const UNIX_START: Duration = Duration::from_secs(1_790_000_000);

/// A data packet as the other end sealed it.
#[derive(Debug, Clone)]
struct Sealed {
    serial: u64,
    payload: Vec<u8>,
    packet: Vec<u8>,
}

impl Sealed {
    /// Are `bytes` this packet, up to the route id (bytes 4..8), which is not authenticated
    /// because relays rewrite it? Compared at delivery rather than tracked per corruption:
    /// XOR-ing the same byte twice restores the packet, and then it must be accepted.
    fn authenticates(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.packet.len()
            && bytes
                .iter()
                .zip(&self.packet)
                .enumerate()
                .all(|(i, (a, b))| a == b || (4..8).contains(&i))
    }
}

/// A packet on the network.
#[derive(Debug, Clone)]
struct Flight {
    bytes: Vec<u8>,
    /// Set for data packets sealed by the other end, whatever happened to them since.
    sealed: Option<Sealed>,
}

struct Peer {
    keys: &'static StaticKeys,
    ids: RouteIds,
    session: Session,
    /// The node's memory of the other end's key: kept across re-installs.
    memory: PeerMemory,
    inbox: VecDeque<Flight>,
    last_received: Option<Flight>,
    /// `Dropped` outcomes since the session was created.
    drops: u64,
}

struct World {
    start: Instant,
    now: Instant,
    limits: Limits,
    peers: [Peer; 2],
    next_serial: u64,
    /// Serial numbers of the data packets delivered so far, by either end.
    delivered: HashSet<u64>,
}

impl World {
    fn new(limits: Limits) -> Self {
        let start = Instant::now();
        let peer = |keys: &'static StaticKeys, ids: RouteIds| Peer {
            keys,
            ids,
            session: Session::new(keys.clone(), ids, limits, start, UNIX_START),
            memory: PeerMemory::new(),
            inbox: VecDeque::new(),
            last_received: None,
            drops: 0,
        };
        // A sends with ROUTE, which B receives with, and the other way round.
        let ids = |out_id: RouteId, in_id: RouteId| RouteIds {
            out_id,
            in_id,
            peer_in_id: out_id,
        };
        Self {
            start,
            now: start,
            limits,
            peers: [
                peer(initiator_keys(), ids(ROUTE, INITIATOR_IN)),
                peer(responder_keys(), ids(INITIATOR_IN, ROUTE)),
            ],
            next_serial: 0,
            delivered: HashSet::new(),
        }
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.index()]
    }

    fn send_to(&mut self, side: Side, flight: Flight) {
        self.peer(side).inbox.push_back(flight);
    }

    /// Hand `flight` to `side` and check the outcome.
    fn receive(&mut self, side: Side, flight: Flight) {
        let now = self.now;
        let peer = &mut self.peers[side.index()];
        let mut buf = flight.bytes.clone();
        let mut reply = None;
        let is_init = flight.bytes.get(1) == Some(&(PacketType::HandshakeInit as u8));
        let newest_before = peer.memory.newest_accepted();
        match peer.session.decapsulate(now, &mut buf, &mut peer.memory) {
            Outcome::Deliver(plain) => {
                let sealed = flight
                    .sealed
                    .as_ref()
                    .filter(|sealed| sealed.authenticates(&flight.bytes))
                    .unwrap_or_else(|| {
                        panic!(
                            "delivered {plain:02x?}: the peer never sealed it, or it was altered"
                        )
                    });
                assert_eq!(
                    plain,
                    &sealed.payload[..],
                    "delivered plaintext differs from sealed"
                );
                assert!(
                    self.delivered.insert(sealed.serial),
                    "data packet {} delivered twice",
                    sealed.serial
                );
            }
            Outcome::Reply(bytes) => {
                if is_init {
                    assert!(
                        peer.memory.newest_accepted() > newest_before,
                        "an initiation was answered that is not newer than {newest_before:?}"
                    );
                }
                reply = Some(bytes.to_vec());
            }
            Outcome::Dropped(_) => peer.drops += 1,
            Outcome::Consumed | Outcome::Closed | Outcome::Pong(_) => {}
        }
        assert_eq!(peer.session.stats().drops.total(), peer.drops);
        peer.last_received = Some(flight);
        if let Some(bytes) = reply {
            self.send_to(
                side.other(),
                Flight {
                    bytes,
                    sealed: None,
                },
            );
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Tick(n) => self.now += Duration::from_secs(u64::from(n)),
            Op::Send(side, mut payload) => {
                if payload.is_empty() {
                    payload.push(0);
                }
                let mut buf = vec![0u8; TRANSPORT_OVERHEAD + payload.len()];
                buf[TRANSPORT_HEADER_LEN..][..payload.len()].copy_from_slice(&payload);
                if let Ok(n) = self
                    .peer(side)
                    .session
                    .encapsulate(now, &mut buf, payload.len())
                {
                    assert_eq!(n, buf.len());
                    let serial = self.next_serial;
                    self.next_serial += 1;
                    let sealed = Sealed {
                        serial,
                        payload,
                        packet: buf.clone(),
                    };
                    self.send_to(
                        side.other(),
                        Flight {
                            bytes: buf,
                            sealed: Some(sealed),
                        },
                    );
                }
            }
            Op::Deliver(side) => {
                if let Some(flight) = self.peer(side).inbox.pop_front() {
                    self.receive(side, flight);
                }
            }
            Op::Corrupt(side, index, xor) => {
                if let Some(flight) = self.peer(side).inbox.front_mut() {
                    let at = usize::from(index) % flight.bytes.len().max(1);
                    if let Some(byte) = flight.bytes.get_mut(at) {
                        *byte ^= xor;
                    }
                }
            }
            Op::Lose(side) => {
                self.peer(side).inbox.pop_front();
            }
            Op::Reorder(side) => {
                let inbox = &mut self.peer(side).inbox;
                if let Some(flight) = inbox.pop_front() {
                    inbox.push_back(flight);
                }
            }
            Op::Replay(side) => {
                if let Some(flight) = self.peer(side).last_received.clone() {
                    self.receive(side, flight);
                }
            }
            Op::Raw(side, bytes) => self.receive(
                side,
                Flight {
                    bytes,
                    sealed: None,
                },
            ),
            Op::Poll(side) => self.poll(side),
            Op::RequestHandshake(side) => self.peer(side).session.request_handshake(),
            Op::Close(side) => {
                let mut buf = vec![0u8; TRANSPORT_OVERHEAD];
                if let Some(n) = self.peer(side).session.close(now, &mut buf) {
                    buf.truncate(n);
                    self.send_to(
                        side.other(),
                        Flight {
                            bytes: buf,
                            sealed: None,
                        },
                    );
                }
            }
            Op::Restart(side) | Op::Reinstall(side) => {
                let unix_time = UNIX_START + now.duration_since(self.start);
                let limits = self.limits;
                let peer = self.peer(side);
                peer.session = Session::new(peer.keys.clone(), peer.ids, limits, now, unix_time);
                peer.drops = 0;
                if matches!(op, Op::Restart(_)) {
                    peer.memory = PeerMemory::new();
                }
            }
            Op::PersistentKeepalive(side, n) => {
                let interval = (n != 0).then(|| Duration::from_secs(u64::from(n)));
                self.peer(side).session.set_persistent_keepalive(interval);
            }
        }
    }

    fn poll(&mut self, side: Side) {
        let now = self.now;
        for _ in 0..8 {
            let peer = self.peer(side);
            let timeout = peer.session.poll_timeout();
            let mut buf = vec![0u8; HANDSHAKE_INIT_LEN];
            let Some(n) = peer.session.poll(now, &mut buf, &mut peer.memory) else {
                return;
            };
            assert!(
                timeout.is_some_and(|t| t <= now),
                "poll sent a packet at {:?} but poll_timeout said {:?}",
                now - self.start,
                timeout.map(|t| t.saturating_duration_since(self.start)),
            );
            buf.truncate(n);
            self.send_to(
                side.other(),
                Flight {
                    bytes: buf,
                    sealed: None,
                },
            );
        }
        panic!("poll still had packets to send after 8 calls at the same instant");
    }
}

/// What a script achieved, for tests that check the seeds reach deep states.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Data packets delivered, by either end.
    pub delivered: usize,
    /// Handshakes completed, by either end's current session.
    pub handshakes: u64,
}

/// Run one script.
pub fn decapsulate(data: &[u8]) {
    run(data);
}

/// Run one script and say what it achieved.
pub fn run(data: &[u8]) -> Summary {
    let Some((&config, mut script)) = data.split_first() else {
        return Summary::default();
    };
    let limits = if config & 1 == 1 {
        TIGHT
    } else {
        Limits::WIREGUARD
    };
    let mut world = World::new(limits);
    while let Some(op) = next_op(&mut script) {
        world.apply(op);
        for peer in &world.peers {
            let _ = peer.session.poll_timeout();
            let _ = peer.session.is_established();
        }
    }
    Summary {
        delivered: world.delivered.len(),
        handshakes: world
            .peers
            .iter()
            .map(|p| p.session.stats().handshakes_completed)
            .sum(),
    }
}
