//! Liveness checks: link probes to neighbours, and pings to the far end of a route.
//!
//! A link probe (type 8, route id zero, 16 bytes) is handled before the route table: the
//! core answers it in place, same size, to the address it came from (type 9). A reply
//! counts only from the address its probe went to and with a nonce still outstanding; at
//! most [`PROBES_OUTSTANDING`] wait, in a table allocated once, and a new probe beyond that
//! makes the oldest be forgotten. Probes say that a neighbour's node answers; they carry no
//! key and prove nothing else.
//!
//! A ping goes through a route end's session, sealed like data, across every relay of the
//! route; the far end answers with a pong. Each route end keeps at most
//! [`PINGS_PER_ROUTE`] pings in a fixed ring (the oldest forgotten first): waiting for keys
//! (a ping starts the handshake and leaves once it completes) or for their pong. Answers
//! become [`EngineEvent::ProbeReply`] and [`EngineEvent::Pong`]; a reply or an
//! authenticated pong that answers nothing is counted as a drop.

use std::net::SocketAddr;
use std::time::Instant;

use super::{NodeCore, NodeDrop, NodeIo, PingError};
use crate::engine::event::EngineEvent;
use crate::route::Rule;
use crate::session::{SendError, Session};
use crate::wire::{LINK_PROBE_LEN, LinkProbePacket, LinkProbeRepr, PING_LEN, RouteId};

/// Link probes awaiting their reply; when full, the oldest is forgotten.
pub const PROBES_OUTSTANDING: usize = 1024;
/// Pings kept per route end (waiting for keys, or for their pong); the oldest is forgotten.
pub const PINGS_PER_ROUTE: usize = 8;

/// A link probe awaiting its reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    nonce: u64,
    to: SocketAddr,
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

    /// A probe with `nonce` went to `to` at `now`; forgets the oldest if the ring is full.
    fn sent(&mut self, nonce: u64, to: SocketAddr, now: Instant) {
        if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = Some(Probe {
                nonce,
                to,
                sent: now,
            });
        }
        self.next = (self.next + 1) % PROBES_OUTSTANDING;
    }

    /// The sending time of the outstanding probe to `from` with `nonce`, which is answered.
    fn answer(&mut self, nonce: u64, from: SocketAddr) -> Option<Instant> {
        let slot = self
            .slots
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.nonce == nonce && p.to == from));
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
                    io.send_udp(first_hop, packet.get(..n).unwrap_or_default());
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
    /// A link probe or reply: answer a probe in place (same size); match a reply against
    /// the outstanding probes.
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
        if !probe.reply {
            let reply = LinkProbeRepr {
                reply: true,
                nonce: probe.nonce,
            };
            if reply.emit(buf).is_ok() {
                io.send_udp(from, buf.get(..LINK_PROBE_LEN).unwrap_or_default());
            }
            return;
        }
        match self.probes.answer(probe.nonce, from) {
            Some(sent) => self.events.push(EngineEvent::ProbeReply {
                from,
                nonce: probe.nonce,
                rtt: now.saturating_duration_since(sent),
            }),
            None => self.drops.add(NodeDrop::UnexpectedProbeReply),
        }
    }

    /// Send a link probe with `nonce` to the neighbour at `to`. Its reply, if one comes,
    /// becomes an [`EngineEvent::ProbeReply`]; no reply means the probe or reply was lost
    /// (or the neighbour runs no node). At most [`PROBES_OUTSTANDING`] probes wait for
    /// replies; a new one beyond that makes the oldest be forgotten.
    pub fn probe(&mut self, now: Instant, to: SocketAddr, nonce: u64, io: &mut impl NodeIo) {
        self.probes.sent(nonce, to, now);
        let mut packet = [0u8; LINK_PROBE_LEN];
        if (LinkProbeRepr {
            reply: false,
            nonce,
        })
        .emit(&mut packet)
        .is_ok()
        {
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
