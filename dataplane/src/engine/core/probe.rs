//! Liveness checks: link probes to neighbours, and pings to the far end of a route.
//!
//! A link probe (type 8, route id zero, 40 bytes) is handled before the route table. The
//! core knows its neighbours (their keys and registered addresses, [`NodeCore::set_neighbours`])
//! and the link key it shares with each ([`LinkKey`]); a probe names its sender (the first
//! bytes of its key) and carries that link key's tag. A probe from no neighbour, or whose
//! tag does not verify, is dropped and counted; a good one is answered in place, same size,
//! to the address it came from (type 9, tagged with the same key). A reply counts only from
//! the address its probe went to, from the neighbour it was meant for (its tag), and with a
//! nonce still outstanding; at most [`PROBES_OUTSTANDING`] wait, in a table allocated once,
//! and a new probe beyond that makes the oldest be forgotten. So an answered probe proves
//! that the node holding the neighbour's key answers at that address.
//!
//! A ping goes through a route end's session, sealed like data, across every relay of the
//! route; the far end answers with a pong. Each route end keeps at most
//! [`PINGS_PER_ROUTE`] pings in a fixed ring (the oldest forgotten first): waiting for keys
//! (a ping starts the handshake and leaves once it completes) or for their pong. Answers
//! become [`EngineEvent::ProbeReply`] and [`EngineEvent::Pong`]; a reply or an
//! authenticated pong that answers nothing is counted as a drop.

use std::net::SocketAddr;
use std::time::Instant;

use super::{NodeCore, NodeDrop, NodeIo, PingError, RouteEnd};
use crate::crypto::PublicKey;
use crate::crypto::link::LinkKey;
use crate::engine::event::EngineEvent;
use crate::engine::usage::EndCounts;
use crate::route::Rule;
use crate::session::{SendError, Session};
use crate::wire::{
    LINK_PROBE_AUTHENTICATED, LINK_PROBE_LEN, LINK_SENDER_LEN, LinkProbePacket, LinkProbeRepr,
    PING_LEN, RouteId, write_link_tag,
};

/// Link probes awaiting their reply; when full, the oldest is forgotten.
pub const PROBES_OUTSTANDING: usize = 1024;
/// Pings kept per route end (waiting for keys, or for their pong); the oldest is forgotten.
pub const PINGS_PER_ROUTE: usize = 8;
/// Neighbours the core keeps link keys for; a longer list is cut there.
pub const MAX_NEIGHBOURS: usize = 1024;

/// A neighbour: its key, the address it registered, and the key of the link to it.
#[derive(Debug, Clone)]
struct Neighbour {
    key: PublicKey,
    addr: SocketAddr,
    link: LinkKey,
}

/// The neighbours a node probes and answers.
#[derive(Debug, Default)]
pub(super) struct Neighbours {
    list: Vec<Neighbour>,
}

impl Neighbours {
    /// The neighbour whose key starts with `sender`.
    fn by_sender(&self, sender: &[u8; LINK_SENDER_LEN]) -> Option<&Neighbour> {
        self.list
            .iter()
            .find(|n| n.key.as_bytes().starts_with(sender))
    }

    /// Whether a neighbour is registered at `addr`.
    pub(super) fn has(&self, addr: SocketAddr) -> bool {
        self.by_addr(addr).is_some()
    }

    /// The neighbour registered at `addr`.
    fn by_addr(&self, addr: SocketAddr) -> Option<&Neighbour> {
        self.list.iter().find(|n| n.addr == addr)
    }
}

/// The first bytes of `key`, as a probe's sender field.
fn sender_of(key: &PublicKey) -> [u8; LINK_SENDER_LEN] {
    let mut sender = [0u8; LINK_SENDER_LEN];
    if let Some(bytes) = key.as_bytes().get(..LINK_SENDER_LEN) {
        sender.copy_from_slice(bytes);
    }
    sender
}

/// Write the probe `repr` into `buf` with `link`'s tag; false if `buf` is too short.
fn emit_tagged(repr: &LinkProbeRepr, link: &LinkKey, buf: &mut [u8]) -> bool {
    if repr.emit(buf).is_err() {
        return false;
    }
    let tag = link.tag(buf.get(..LINK_PROBE_AUTHENTICATED).unwrap_or_default());
    write_link_tag(buf, &tag).is_ok()
}

/// A link probe awaiting its reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    nonce: u64,
    to: SocketAddr,
    /// The neighbour it was meant for: only its key may answer.
    peer: PublicKey,
    sent: Instant,
}

/// The link probes awaiting replies, in a ring of [`PROBES_OUTSTANDING`] slots.
#[derive(Debug)]
pub(super) struct Probes {
    pub(super) slots: Vec<Option<Probe>>,
    next: usize,
}

impl Probes {
    /// An empty table, allocated once.
    pub(super) fn new() -> Self {
        Self {
            slots: vec![None; PROBES_OUTSTANDING],
            next: 0,
        }
    }

    /// A probe with `nonce` went to `peer` at `to` at `now`; forgets the oldest if the ring
    /// is full.
    fn sent(&mut self, nonce: u64, to: SocketAddr, peer: PublicKey, now: Instant) {
        if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = Some(Probe {
                nonce,
                to,
                peer,
                sent: now,
            });
        }
        self.next = (self.next + 1) % PROBES_OUTSTANDING;
    }

    /// The sending time of the outstanding probe to `peer` at `from` with `nonce`, which
    /// is answered.
    fn answer(&mut self, nonce: u64, from: SocketAddr, peer: &PublicKey) -> Option<Instant> {
        let slot = self
            .slots
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.nonce == nonce && p.to == from && p.peer == *peer));
        slot.and_then(Option::take).map(|p| p.sent)
    }
}

/// A ping of a route end: waiting for keys (`sent` is `None`) or for its pong.
#[derive(Debug, Clone, Copy)]
struct Ping {
    nonce: u64,
    sent: Option<Instant>,
}

/// The pings of one route end, in a fixed ring.
#[derive(Debug, Default)]
pub(super) struct Pings {
    slots: [Option<Ping>; PINGS_PER_ROUTE],
    next: usize,
    /// How many wait for keys (so the packet path can skip the ring when none do).
    unsent: usize,
}

impl Pings {
    /// Keep a new ping waiting to be sent, forgetting the oldest if the ring is full.
    fn push(&mut self, nonce: u64) {
        if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = Some(Ping { nonce, sent: None });
        }
        self.next = (self.next + 1) % PINGS_PER_ROUTE;
        self.count_unsent();
    }

    fn count_unsent(&mut self) {
        self.unsent = self
            .slots
            .iter()
            .flatten()
            .filter(|p| p.sent.is_none())
            .count();
    }

    /// The sending time of the sent ping with this nonce, which is forgotten.
    pub(super) fn answer(&mut self, nonce: u64) -> Option<Instant> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|p| p.nonce == nonce && p.sent.is_some()))?;
        slot.take().and_then(|p| p.sent)
    }

    /// Send the pings that wait for keys, if `session` has them now, to `first_hop`.
    pub(super) fn send_waiting(
        &mut self,
        session: &mut Session,
        counted: &mut EndCounts,
        now: Instant,
        first_hop: SocketAddr,
        io: &mut impl NodeIo,
    ) {
        if self.unsent == 0 {
            return;
        }
        let mut packet = [0u8; PING_LEN];
        for slot in &mut self.slots {
            let Some(ping) = slot.as_mut().filter(|p| p.sent.is_none()) else {
                continue;
            };
            match session.ping(now, &mut packet, ping.nonce) {
                Ok(n) => {
                    ping.sent = Some(now);
                    let packet = packet.get(..n).unwrap_or_default();
                    RouteEnd::send(counted, first_hop, packet, io);
                }
                // A handshake is requested; the rest wait for it too.
                Err(SendError::NoSession) => break,
                Err(SendError::Seal(_)) => *slot = None,
            }
        }
        self.count_unsent();
    }
}

impl NodeCore {
    /// The node's neighbours: their registered transport addresses and keys, the whole
    /// list (it replaces the previous one; at most [`MAX_NEIGHBOURS`]). Probes are sent
    /// only to them and answered only for them. Link keys of neighbours already known are
    /// kept; new ones cost one X25519 each, here, never on the packet path. A neighbour
    /// whose key is unusable (a low-order point) is left out. Returns how many were kept.
    pub fn set_neighbours(&mut self, neighbours: &[(SocketAddr, PublicKey)]) -> usize {
        let mut list = Vec::with_capacity(neighbours.len().min(MAX_NEIGHBOURS));
        for (addr, key) in neighbours.iter().take(MAX_NEIGHBOURS) {
            let known = self
                .neighbours
                .list
                .iter()
                .find(|n| n.key == *key)
                .map(|n| n.link.clone());
            let Some(link) = known.or_else(|| LinkKey::new(&self.private_key, key)) else {
                continue;
            };
            list.push(Neighbour {
                key: *key,
                addr: *addr,
                link,
            });
        }
        self.neighbours.list = list;
        self.neighbours.list.len()
    }

    /// A link probe or reply: check it names a neighbour and carries its link's tag, then
    /// answer a probe in place (same size) or match a reply against the outstanding probes.
    pub(super) fn handle_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        let Ok(packet) = LinkProbePacket::new_checked(&buf[..]) else {
            self.drops.add(NodeDrop::BadProbe);
            return;
        };
        let probe = LinkProbeRepr::parse(&packet);
        let neighbour = self
            .neighbours
            .by_sender(&probe.sender)
            .filter(|n| n.link.verify(packet.authenticated(), packet.tag()));
        let Some(neighbour) = neighbour else {
            self.drops.add(NodeDrop::UnauthenticatedProbe);
            return;
        };
        io.authentic(from);
        if !probe.reply && from != neighbour.addr {
            self.events.push(EngineEvent::ProbedFrom {
                peer: neighbour.key,
                from,
            });
        }
        if !probe.reply {
            let reply = LinkProbeRepr {
                reply: true,
                nonce: probe.nonce,
                sender: sender_of(&self.public_key),
            };
            if emit_tagged(&reply, &neighbour.link, buf) {
                io.send_udp(from, buf.get(..LINK_PROBE_LEN).unwrap_or_default());
            }
            return;
        }
        match self.probes.answer(probe.nonce, from, &neighbour.key) {
            Some(sent) => self.events.push(EngineEvent::ProbeReply {
                from,
                nonce: probe.nonce,
                rtt: now.saturating_duration_since(sent),
            }),
            None => self.drops.add(NodeDrop::UnexpectedProbeReply),
        }
    }

    /// Send a link probe with `nonce` to the neighbour at `to` (one given to
    /// [`Self::set_neighbours`]; to any other address nothing is sent). Its reply, if one
    /// comes from that neighbour's key, becomes an [`EngineEvent::ProbeReply`]; no reply
    /// means the probe or reply was lost, or nothing holding the neighbour's key answers
    /// there. At most [`PROBES_OUTSTANDING`] probes wait for replies; a new one beyond that
    /// makes the oldest be forgotten.
    pub fn probe(&mut self, now: Instant, to: SocketAddr, nonce: u64, io: &mut impl NodeIo) {
        let Some(neighbour) = self.neighbours.by_addr(to) else {
            return;
        };
        let mut packet = [0u8; LINK_PROBE_LEN];
        let repr = LinkProbeRepr {
            reply: false,
            nonce,
            sender: sender_of(&self.public_key),
        };
        if emit_tagged(&repr, &neighbour.link, &mut packet) {
            self.probes.sent(nonce, to, neighbour.key, now);
            io.send_udp(to, &packet);
        }
    }

    /// Ping the far end of the route end whose incoming id is `in_id`, through its session.
    /// Without keys the ping waits for a handshake, which it starts. The pong, if one comes,
    /// becomes an [`EngineEvent::Pong`] whose round-trip time counts from the moment the
    /// ping was sent; no pong means it was lost. Each route end keeps at most
    /// [`PINGS_PER_ROUTE`] pings; a new one beyond that makes the oldest be forgotten.
    pub fn ping(
        &mut self,
        now: Instant,
        in_id: RouteId,
        nonce: u64,
        io: &mut impl NodeIo,
    ) -> Result<(), PingError> {
        let endpoint = match self.reader.load().lookup(in_id).map(|e| e.rule) {
            Some(Rule::Deliver { endpoint, .. }) => endpoint,
            _ => return Err(PingError::UnknownRoute(in_id)),
        };
        let Some(end) = self.ends.get_mut(endpoint) else {
            return Err(PingError::UnknownRoute(in_id));
        };
        end.pings.push(nonce);
        Self::poll_end(end, &mut self.peers, now, &mut self.scratch, io);
        Ok(())
    }
}
