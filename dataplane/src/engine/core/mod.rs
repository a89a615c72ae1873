//! The sans-IO core of a node: every per-packet decision of the engine, with no socket, no
//! TUN device and no clock. The driver feeds it datagrams, TUN packets and the time, and it
//! answers through a [`NodeIo`] sink that the driver implements over the real sockets (and
//! the in-memory mesh, [`crate::sim`], over queues).
//!
//! Call order: [`NodeCore::handle_datagram`] for every datagram, [`NodeCore::handle_tun_packet`]
//! for every TUN packet, [`NodeCore::poll_timers`] after each batch and when
//! [`NodeCore::next_deadline`] passes, and [`NodeCore::drain_events`] after that. Control
//! requests ([`NodeCore::apply`], [`NodeCore::probe`], [`NodeCore::ping`],
//! [`NodeCore::status`]) come between batches.
//!
//! # How the pieces fit
//!
//! [`NodeCore`] owns one value of each state machine below and, in this file, the per-packet
//! path that reads them: a datagram is a link probe (handed to `probe`) or goes through
//! [`forward()`](crate::route::forward()) and, at one of our route ends, through its
//! [`Session`]; a TUN packet is matched by destination prefix to a route end and sealed, or
//! staged while the end has no keys. The other modules change that state between packets:
//!
//! - `rules`: [`NodeCore::apply`], all-or-nothing batches of [`RuleChange`]s checked whole
//!   and published in one [`RouteTable::update`](crate::route::RouteTable::update), so the
//!   forwarding path sees the whole batch or none of it; and the route-end slots indexed by
//!   [`EndpointId`] (a slot is reused only after its Deliver rule is gone) with the prefix
//!   table rebuilt from the live ends after each batch (a prefix several ends claim goes to
//!   the one added last, and falls back to the most recent remaining claimant).
//! - `expiry`: manager rules expire when their packet counter stands still for their
//!   `expire_after`, sampled at most once per [`EXPIRY_SAMPLE`].
//! - `probe`: link probes (type 8 and 9, route id zero) are handled before the route table:
//!   only probes from known neighbours with their link key's tag count; a probe is answered
//!   in place to its source; a reply counts only from the address and the key its probe
//!   went to, with a nonce still outstanding (at most [`PROBES_OUTSTANDING`], oldest
//!   forgotten first). Pings go through a route end's session; each end keeps at most
//!   [`PINGS_PER_ROUTE`] of them (waiting for keys or for their pong, oldest forgotten
//!   first).
//! - `staging`: the fixed ring of [`STAGED_PER_ROUTE`] preallocated buffers in which a route
//!   end keeps TUN packets while its handshake runs.
//! - `peers`: one [`PeerMemory`] per peer key the node has or
//!   had a route end with (the newest initiation accepted from the key, the newest
//!   timestamp sent to it, the rate of its initiations), shared by all route ends with that
//!   key and kept when they go, so a re-installed or repaired route end cannot be fed a
//!   replayed initiation. At most [`PEERS_REMEMBERED`] entries beyond the live peers;
//!   route ends hold their entry's index, so the packet path neither hashes nor allocates.
//! - `cookie`: handshake-flood protection (`docs/PROTOCOL.md` §5.10). Every initiation
//!   that reaches one of our route ends passes the node-wide gate before its session: not
//!   under load (fewer than [`LOAD_BURST`] at once, then [`LOAD_INTERVAL`] apart) it goes
//!   on; under load it goes on only with a valid mac2 and within its source address's
//!   budget, and one without a valid mac2 is answered with a cookie reply instead, at no
//!   Diffie-Hellman. Counted node-wide as `cookie reply sent` and `initiation under load
//!   dropped`. Other packet types never reach it.
//! - `status`: [`NodeCore::status`], a snapshot of all of the above.
//!
//! Cryptokey routing: a route end's prefixes are both where TUN packets to them go and the
//! only inner sources its peer may send from. A packet that opens under the route's keys
//! but carries another source address is dropped and counted per route end
//! ([`SOURCE_NOT_ALLOWED`]), so no peer can speak for an address it was not given.
//!
//! What the core learns on its own is queued as [`EngineEvent`]s, at most [`EVENT_QUEUE`]
//! until drained; more are counted and dropped. Nothing on the per-packet path allocates or
//! locks: staging rings, the probe table and the event queue are allocated when a route end
//! or the core is created.

mod cookie;
mod expiry;
mod peers;
mod probe;
mod rules;
mod staging;
mod status;
mod unreachable;
mod usage;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::event::{EVENT_QUEUE, EngineEvent};
use super::setup::{ApplyError, Fwmark, NodeSetup, Origin, RouteSetup, RuleChange};
use super::usage::{Count, EndCounts};
use crate::crypto::{PrivateKey, PublicKey};
use crate::route::{
    Decision, EndpointId, ForwardDrop, ForwardStats, PrefixTable, RouteReader, RouteTable, forward,
    prefix,
};
use crate::session::{HEADROOM, Outcome, PeerMemory, SendError, Session};
use crate::stack::{self, Owner, Stack, StreamError, StreamId};
use crate::wire::{HANDSHAKE_INIT_MAC2_LEN, PacketType, RouteId, TAG_LEN, is_link_probe};

pub use cookie::{
    COOKIE_SECRET_LIFETIME, LOAD_BURST, LOAD_INTERVAL, SOURCE_BURST, SOURCE_INTERVAL,
    SOURCES_TRACKED, UNDER_LOAD_HOLD,
};
pub use expiry::EXPIRY_SAMPLE;
pub use peers::PEERS_REMEMBERED;
pub use probe::{MAX_NEIGHBOURS, PINGS_PER_ROUTE, PROBES_OUTSTANDING};
pub use staging::STAGED_PER_ROUTE;
pub use unreachable::UNREACHABLE_REPORT_EVERY;

use cookie::{CookieGate, Gate};
use expiry::Expiry;
use peers::{PeerIdx, Peers};
use probe::{Neighbours, Pings, Probes};
use rules::Ends;
use staging::Staged;
use unreachable::Unreachables;

/// The newest handshake initiation a node accepted from a peer key: kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedInitiation {
    /// The peer's key.
    pub peer: PublicKey,
    /// The initiation's timestamp (nanoseconds since the Unix epoch, as sent).
    pub timestamp: u64,
    /// Its mac1 (an exact replay is refused before any Diffie-Hellman).
    pub mac1: [u8; 16],
}

/// Where the core's output goes. Sends are best effort: an implementation that cannot send
/// (a full socket buffer) drops the packet and counts it with [`NodeDrop::QueueFull`].
pub trait NodeIo {
    /// Send `packet` on the transport to `to`.
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]);
    /// Write an IP packet to the TUN device.
    fn write_tun(&mut self, packet: &[u8]);
    /// Whether the transport refuses more for now (its socket buffer is full): the stack
    /// then holds its packets back instead of having them dropped.
    fn congested(&self) -> bool {
        false
    }

    /// The datagram being handled, from `from`, proved authentic (an authenticated link
    /// probe, a route packet its session opened): the transport may send to `from` from
    /// the local address that datagram reached.
    fn authentic(&mut self, from: SocketAddr) {
        let _ = from;
    }
}

/// Node-wide drops that happen before a packet reaches a route's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeDrop {
    /// A TUN packet that is not IPv4 or IPv6.
    NotIp,
    /// A TUN packet whose destination matches no route's prefixes.
    NoRoute,
    /// A TUN packet dropped while its route had no keys (the staging queue was full).
    NoSession,
    /// A packet the driver could not send or write (socket buffer or TUN queue full).
    QueueFull,
    /// A datagram the kernel would not send for want of a way to its destination: the next
    /// hop's address is unreachable from this host (no route, an unreachable network or
    /// host, a firewall refusing it).
    Unreachable,
    /// A TUN packet larger than the buffers (above the configured MTU).
    TooBig,
    /// A malformed link probe or probe reply (type 8 or 9).
    BadProbe,
    /// A probe reply whose nonce is not outstanding, or that came from another address
    /// than the probe went to.
    UnexpectedProbeReply,
    /// An authenticated pong that answers no ping of its route end.
    UnexpectedPong,
    /// A well-formed link probe or reply from no known neighbour, or whose tag does not
    /// verify.
    UnauthenticatedProbe,
    /// A handshake initiation without a valid mac2 that arrived while the node was under
    /// load: answered with a cookie reply instead of being read (`docs/PROTOCOL.md` §5.10).
    CookieReplySent,
    /// A handshake initiation with a valid mac2 that arrived while the node was under load
    /// and its source address had spent its budget: dropped unread.
    UnderLoad,
    /// A TUN packet that is one of the node's own transport datagrams (UDP from its port
    /// to an address it sends to): the host routes that address into the TUN device, so
    /// sealing it would send it around again and again (kernel WireGuard's `ELOOP`).
    RoutingLoop,
}

impl NodeDrop {
    /// Every reason, in counter order.
    pub const ALL: [NodeDrop; 13] = [
        NodeDrop::NotIp,
        NodeDrop::NoRoute,
        NodeDrop::NoSession,
        NodeDrop::QueueFull,
        NodeDrop::Unreachable,
        NodeDrop::TooBig,
        NodeDrop::BadProbe,
        NodeDrop::UnexpectedProbeReply,
        NodeDrop::UnexpectedPong,
        NodeDrop::UnauthenticatedProbe,
        NodeDrop::CookieReplySent,
        NodeDrop::UnderLoad,
        NodeDrop::RoutingLoop,
    ];

    /// A short name for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeDrop::NotIp => "not ip",
            NodeDrop::NoRoute => "no route",
            NodeDrop::NoSession => "no session",
            NodeDrop::QueueFull => "queue full",
            NodeDrop::Unreachable => "unreachable",
            NodeDrop::TooBig => "too big",
            NodeDrop::BadProbe => "bad probe",
            NodeDrop::UnexpectedProbeReply => "unexpected probe reply",
            NodeDrop::UnexpectedPong => "unexpected pong",
            NodeDrop::UnauthenticatedProbe => "unauthenticated probe",
            NodeDrop::CookieReplySent => "cookie reply sent",
            NodeDrop::UnderLoad => "initiation under load dropped",
            NodeDrop::RoutingLoop => "routing loop",
        }
    }
}

/// Counters of [`NodeDrop`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeDrops([u64; NodeDrop::ALL.len()]);

impl NodeDrops {
    /// Count one.
    pub fn add(&mut self, reason: NodeDrop) {
        self.add_n(reason, 1);
    }

    /// Count `n`.
    pub fn add_n(&mut self, reason: NodeDrop, n: u64) {
        if let Some(c) = self.0.get_mut(reason as usize) {
            *c += n;
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: NodeDrop) -> u64 {
        self.0.get(reason as usize).copied().unwrap_or(0)
    }
}

/// The core could not be built from its setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The configured rules were refused (two use the same incoming id, or a peer key is
    /// unusable).
    #[error(transparent)]
    Rules(#[from] ApplyError),
}

/// A ping could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// No route end has this incoming id.
    #[error("no route end with route id {0}")]
    UnknownRoute(RouteId),
}

/// One route this node is an end of: the state the per-packet path works on.
#[derive(Debug)]
struct RouteEnd {
    setup: RouteSetup,
    session: Session,
    staged: Staged,
    origin: Origin,
    /// Install order: the most recently added end wins a prefix several ends claim.
    seq: u64,
    pings: Pings,
    /// Authenticated packets dropped because their inner source is not in the peer's
    /// prefixes (cryptokey routing, as WireGuard's allowed IPs).
    spoofed: u64,
    /// The entry of the route's peer key in [`NodeCore`]'s `peers`.
    peer: PeerIdx,
    /// The wire and TUN counts (`sealed` and `opened` are the session's, filled in by
    /// [`RouteEnd::counts`]).
    counted: EndCounts,
    /// Its counts at the last [`NodeCore::take_usage`] (`usage`).
    metered: EndCounts,
}

impl RouteEnd {
    /// Everything this end counted since it was installed.
    fn counts(&self) -> EndCounts {
        let s = self.session.stats();
        EndCounts {
            sealed: Count {
                packets: s.tx_packets,
                bytes: s.tx_bytes,
            },
            opened: Count {
                packets: s.rx_packets,
                bytes: s.rx_bytes,
            },
            ..self.counted
        }
    }

    /// Send a datagram of this route to its first hop, and count it.
    #[inline]
    fn send(counted: &mut EndCounts, first_hop: SocketAddr, packet: &[u8], io: &mut impl NodeIo) {
        counted.wire_sent.add(packet.len());
        io.send_udp(first_hop, packet);
    }
}

/// Whether an IP packet a peer sealed comes from an address that peer owns: the longest
/// prefix holding its source (route ends' own and granted, as in the TUN direction) leads to
/// that peer. So a peer granted `0.0.0.0/0` (a VPN exit) still cannot speak for another
/// mesh node's address, which a longer prefix gives to that node (WireGuard's allowed IPs).
fn source_allowed(
    owners: &PrefixTable<(EndpointId, PeerIdx)>,
    peer: PeerIdx,
    packet: &[u8],
) -> bool {
    prefix::source(packet)
        .and_then(|src| owners.lookup(src))
        .is_some_and(|&(_, owner)| owner == peer)
}

/// The name of the per-route drop counted when an authenticated packet's inner source is
/// not one of the peer's prefixes.
pub const SOURCE_NOT_ALLOWED: &str = "source not allowed";

/// The bounded event queue; allocated once, so pushing never allocates.
#[derive(Debug)]
struct Events {
    queue: Vec<EngineEvent>,
    dropped: u64,
}

impl Events {
    fn push(&mut self, event: EngineEvent) {
        if self.queue.len() < EVENT_QUEUE {
            self.queue.push(event);
        } else {
            self.dropped += 1;
        }
    }
}

/// The per-packet logic of a node.
#[derive(Debug)]
pub struct NodeCore {
    private_key: PrivateKey,
    public_key: PublicKey,
    listen: SocketAddr,
    tun_name: Option<String>,
    fwmark: Option<Fwmark>,
    /// Wall-clock time at an instant, for the handshake timestamps of new sessions.
    clock: (Instant, Duration),
    table: RouteTable,
    reader: RouteReader,
    forward_stats: ForwardStats,
    /// Route ends in their slots, and the prefixes they claim (`rules`).
    ends: Ends,
    /// What the node remembers of each peer key across its route ends (`peers`).
    peers: Peers,
    /// Manager rules and their idle time (`expiry`).
    expiry: Expiry,
    /// Link probes awaiting their replies (`probe`).
    probes: Probes,
    /// The neighbours probes go to and are answered for, with their link keys (`probe`).
    neighbours: Neighbours,
    events: Events,
    drops: NodeDrops,
    /// Handshake-flood protection: load, cookie secret, per-source budgets (`cookie`).
    cookies: CookieGate,
    /// When each unreachable next hop was last reported (`unreachable`).
    unreachables: Unreachables,
    /// When each transport address found looping through the TUN device was last
    /// reported (the same once-a-minute memory).
    loops: Unreachables,
    /// Largest IP packet accepted from the TUN device.
    mtu: usize,
    scratch: Vec<u8>,
    /// Apps' streams over the route ends (`crate::stack`).
    stack: Stack,
    /// The counters of removed route ends and relay rules (`rules`), for `status`.
    retired: crate::engine::status::Retired,
    /// The counts at the last ask for usage, and what went since (`usage`).
    metering: usage::Metering,
}

/// A seed for the stack's sequence numbers and ports: different for every node and start.
fn stack_seed(setup: &NodeSetup, unix_time: Duration) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(setup.public_key().as_bytes());
    hasher.update(&unix_time.as_nanos().to_le_bytes());
    let hash = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(hash.as_bytes().get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(bytes)
}

/// Bytes a buffer needs for an IP packet of `mtu` bytes sealed in place.
pub fn buffer_len(mtu: usize) -> usize {
    (HEADROOM + mtu + TAG_LEN).max(HANDSHAKE_INIT_MAC2_LEN)
}

impl NodeCore {
    /// Build the core. `listen` is the bound transport address (for status); `unix_time` is
    /// the wall-clock time at `now`, for handshake timestamps. The setup's routes and relays
    /// become rules of [`Origin::Config`].
    pub fn new(
        setup: &NodeSetup,
        listen: SocketAddr,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, SetupError> {
        let mtu = setup.tun.as_ref().map_or(1420, |t| usize::from(t.mtu));
        let table = RouteTable::new();
        let mut core = Self {
            private_key: setup.private_key.clone(),
            public_key: setup.public_key(),
            listen,
            tun_name: setup.tun.as_ref().map(|t| t.name.clone()),
            fwmark: setup.fwmark,
            clock: (now, unix_time),
            reader: table.reader(),
            table,
            forward_stats: ForwardStats::default(),
            ends: Ends::default(),
            peers: Peers::default(),
            expiry: Expiry::default(),
            probes: Probes::new(),
            neighbours: Neighbours::default(),
            events: Events {
                queue: Vec::with_capacity(EVENT_QUEUE),
                dropped: 0,
            },
            drops: NodeDrops::default(),
            cookies: CookieGate::new(setup.public_key()),
            unreachables: Unreachables::default(),
            loops: Unreachables::default(),
            mtu,
            scratch: vec![0u8; buffer_len(mtu)],
            stack: Stack::new(
                setup.stack,
                setup.public_key(),
                mtu,
                buffer_len(mtu),
                now,
                stack_seed(setup, unix_time),
            ),
            retired: crate::engine::status::Retired::default(),
            metering: usage::Metering::default(),
        };
        let relays = setup.relays.iter().map(|relay| RuleChange::AddRelay {
            relay: *relay,
            origin: Origin::Config,
        });
        let routes = setup.routes.iter().map(|route| RuleChange::AddEnd {
            route: route.clone(),
            origin: Origin::Config,
        });
        core.restore_peers(now, &setup.peers);
        core.apply(now, relays.chain(routes).collect())?;
        Ok(core)
    }

    /// The route table (relays' counters live in it).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The node's identity.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Every prefix a live route end claims: what the TUN device must route into the
    /// engine (a prefix may appear more than once).
    pub fn claimed_prefixes(&self) -> impl Iterator<Item = &crate::route::Prefix> {
        self.ends.prefixes()
    }

    /// What the node remembers of `peer`'s key across its route ends (`None`: the node
    /// never had a route end with it, or forgot it at [`PEERS_REMEMBERED`]).
    pub fn peer_memory(&self, peer: &PublicKey) -> Option<&PeerMemory> {
        self.peers.memory(peer)
    }

    /// Is the node under load at `now` (handshake-flood protection, `docs/PROTOCOL.md`
    /// §5.10)?
    pub fn is_under_load(&self, now: Instant) -> bool {
        self.cookies.is_under_load(now)
    }

    /// The newest initiation accepted from each peer key: what the node keeps across a
    /// restart ([`Self::restore_peers`]).
    pub fn accepted_initiations(&self) -> Vec<AcceptedInitiation> {
        self.peers
            .accepted()
            .map(|(peer, timestamp, mac1)| AcceptedInitiation {
                peer,
                timestamp,
                mac1,
            })
            .collect()
    }

    /// Remember initiations accepted before the node restarted (each unless a newer one was
    /// accepted from that key since), so initiations captured before the restart stay
    /// refused (`docs/PROTOCOL.md` §5.6).
    pub fn restore_peers(&mut self, now: Instant, accepted: &[AcceptedInitiation]) {
        for a in accepted {
            self.peers.restore(a.peer, a.timestamp, a.mac1, now);
        }
    }

    /// How many peer keys the node remembers.
    pub fn peers_remembered(&self) -> usize {
        self.peers.len()
    }

    /// Count a drop the driver saw (a full socket buffer, a TUN write refused).
    pub fn count_drop(&mut self, reason: NodeDrop) {
        self.drops.add(reason);
    }

    /// Count `n` drops the driver saw.
    pub fn count_drops(&mut self, reason: NodeDrop, n: u64) {
        self.drops.add_n(reason, n);
    }

    /// Count `n` datagrams the driver dropped before forwarding (cut by the kernel).
    pub fn count_forward_drops(&mut self, reason: ForwardDrop, n: u64) {
        self.forward_stats.record_n(reason, n);
    }

    /// A datagram arrived from `from`: answer or match it if it is a link probe; otherwise
    /// forward it, or open it at one of our route ends.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        if is_link_probe(buf) {
            self.handle_probe(now, from, buf, io);
            return;
        }
        let decision = forward(self.reader.load(), from, buf);
        match decision {
            Decision::Forward { next_hop } => io.send_udp(next_hop, buf),
            Decision::Drop(reason) => self.forward_stats.record(reason),
            Decision::Deliver { endpoint } => {
                // The slot and the prefix table are borrowed apart: the source check of a
                // delivered packet reads the table while the end is in use.
                let owners = &self.ends.prefixes;
                let Some(Some(end)) = self.ends.slots.get_mut(endpoint.0 as usize) else {
                    self.forward_stats.record(ForwardDrop::UnknownRoute);
                    return;
                };
                // Every live route end's peer has an entry (made when the end was installed).
                let Some(peer) = self.peers.memory_mut(end.peer) else {
                    self.forward_stats.record(ForwardDrop::UnknownRoute);
                    return;
                };
                let first_hop = end.setup.first_hop;
                // Initiations only (one byte compared per packet): under load, one without
                // a valid mac2 costs a keyed hash and is answered with a cookie.
                if buf.get(1) == Some(&(PacketType::HandshakeInit as u8)) {
                    let (in_id, out_id) = (end.setup.in_id, end.session.route_id());
                    match self.cookies.check(now, from, in_id, out_id, buf) {
                        Gate::Pass => {}
                        Gate::Reply(n) => {
                            self.drops.add(NodeDrop::CookieReplySent);
                            let reply = buf.get(..n).unwrap_or_default();
                            RouteEnd::send(&mut end.counted, first_hop, reply, io);
                            return;
                        }
                        Gate::Drop => {
                            self.drops.add(NodeDrop::UnderLoad);
                            return;
                        }
                    }
                }
                let mut stacked = false;
                let datagram_len = buf.len();
                let outcome = end.session.decapsulate(now, buf, peer);
                if !matches!(outcome, Outcome::Dropped(_)) {
                    io.authentic(from);
                    end.counted.wire_received.add(datagram_len);
                }
                match outcome {
                    // Packets between the two ends' stacks (their link addresses belong to
                    // the route; the key they came under is the stream's key).
                    Outcome::Deliver(plain) if stack::is_stack_packet(plain) => {
                        self.stack.ingress(now, end.setup.peer, plain);
                        stacked = true;
                    }
                    // The peer may only speak for its own prefixes: a packet it sealed
                    // with another inner source is dropped (and counted), not delivered.
                    Outcome::Deliver(plain) if source_allowed(owners, end.peer, plain) => {
                        end.counted.tun_written.add(plain.len());
                        io.write_tun(plain);
                    }
                    Outcome::Deliver(_) => end.spoofed += 1,
                    Outcome::Reply(reply) => {
                        RouteEnd::send(&mut end.counted, first_hop, reply, io);
                    }
                    Outcome::Pong(nonce) => match end.pings.answer(nonce) {
                        Some(sent) => self.events.push(EngineEvent::Pong {
                            in_id: end.setup.in_id,
                            peer: end.setup.peer,
                            nonce,
                            rtt: now.saturating_duration_since(sent),
                        }),
                        None => self.drops.add(NodeDrop::UnexpectedPong),
                    },
                    Outcome::Consumed | Outcome::Closed | Outcome::Dropped(_) => {}
                }
                Self::flush_staged(end, now, io);
                if stacked {
                    self.flush_stack(now, io);
                }
            }
        }
    }

    /// An IP packet was read from the TUN device into `buf[HEADROOM..][..len]`; `buf` has
    /// [`TAG_LEN`] bytes of room after it. Seal it onto its route.
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        io: &mut impl NodeIo,
    ) {
        if len > self.mtu {
            self.drops.add(NodeDrop::TooBig);
            return;
        }
        let Some(packet) = buf.get(HEADROOM..HEADROOM + len) else {
            self.drops.add(NodeDrop::TooBig);
            return;
        };
        let Some(dst) = prefix::destination(packet) else {
            self.drops.add(NodeDrop::NotIp);
            return;
        };
        if let Some(to) = prefix::udp_from_port(packet, self.listen.port())
            && self.sends_to(to)
        {
            self.drops.add(NodeDrop::RoutingLoop);
            if self.loops.due(to, now) {
                self.events.push(EngineEvent::RoutingLoop { to });
            }
            return;
        }
        let Some(end) = self.ends.route_to(dst) else {
            self.drops.add(NodeDrop::NoRoute);
            return;
        };
        end.counted.tun_read.add(len);
        Self::seal_onto(
            end,
            &mut self.drops,
            &mut self.peers,
            &mut self.scratch,
            now,
            buf,
            len,
            io,
        );
    }

    /// Whether the node sends transport datagrams to `to`: a route end's first hop, a
    /// relay's next hop or a neighbour. Only asked of TUN packets from the node's own port.
    fn sends_to(&self, to: SocketAddr) -> bool {
        self.ends.iter().any(|end| end.setup.first_hop == to)
            || self.neighbours.has(to)
            || self.table.snapshot().iter().any(|(_, entry)| {
                matches!(entry.rule, crate::route::Rule::Forward { next_hop, .. } if next_hop == to)
            })
    }

    /// Seal the payload at `buf[HEADROOM..HEADROOM + len]` onto `end` and send it, or stage
    /// it while the end has no keys (starting its handshake). Order is kept: while packets
    /// wait for a handshake, later ones queue behind them.
    #[allow(clippy::too_many_arguments)]
    fn seal_onto(
        end: &mut RouteEnd,
        drops: &mut NodeDrops,
        peers: &mut Peers,
        scratch: &mut [u8],
        now: Instant,
        buf: &mut [u8],
        len: usize,
        io: &mut impl NodeIo,
    ) {
        if !end.staged.is_empty() {
            Self::stage(end, drops, buf, len);
            return;
        }
        match end.session.encapsulate(now, buf, len) {
            Ok(n) => RouteEnd::send(
                &mut end.counted,
                end.setup.first_hop,
                buf.get(..n).unwrap_or_default(),
                io,
            ),
            Err(SendError::NoSession) => {
                Self::stage(end, drops, buf, len);
                Self::poll_end(end, peers, now, scratch, io);
            }
            Err(SendError::Seal(_)) => drops.add(NodeDrop::TooBig),
        }
    }

    fn stage(end: &mut RouteEnd, drops: &mut NodeDrops, buf: &[u8], len: usize) {
        let payload = buf.get(HEADROOM..HEADROOM + len).unwrap_or_default();
        if !end.staged.push(payload) {
            drops.add(NodeDrop::NoSession);
        }
    }

    /// Send what waited for the handshake (packets, then pings), once the route has keys.
    fn flush_staged(end: &mut RouteEnd, now: Instant, io: &mut impl NodeIo) {
        let first_hop = end.setup.first_hop;
        while end.session.is_established() {
            let Some((slot, len)) = end.staged.pop() else {
                break;
            };
            if let Ok(n) = end.session.encapsulate(now, slot, len) {
                let packet = slot.get(..n).unwrap_or_default();
                RouteEnd::send(&mut end.counted, first_hop, packet, io);
            }
        }
        end.pings
            .send_waiting(&mut end.session, &mut end.counted, now, first_hop, io);
    }

    fn poll_end(
        end: &mut RouteEnd,
        peers: &mut Peers,
        now: Instant,
        scratch: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        Self::flush_staged(end, now, io);
        let Some(peer) = peers.memory_mut(end.peer) else {
            return;
        };
        while let Some(n) = end.session.poll(now, scratch, peer) {
            let packet = scratch.get(..n).unwrap_or_default();
            RouteEnd::send(&mut end.counted, end.setup.first_hop, packet, io);
        }
    }

    /// Let every route act on its timers (handshakes, keepalives, key expiry), and remove
    /// manager rules that were idle too long.
    pub fn poll_timers(&mut self, now: Instant, io: &mut impl NodeIo) {
        for end in self.ends.iter_mut() {
            Self::poll_end(end, &mut self.peers, now, &mut self.scratch, io);
        }
        self.expire(now);
        // The streams' timers: retransmissions, delayed ACKs, window probes, timeouts.
        self.stack.poll(now);
        self.flush_stack(now, io);
    }

    /// The node's stack, for the app side of streams (listen, attach, the bytes of
    /// attached streams, events). Call [`flush_stack`](Self::flush_stack) after changing
    /// it, so what it queued is sent.
    pub fn stack(&mut self) -> &mut Stack {
        &mut self.stack
    }

    /// Open a stream to `port` on `peer` ([`Stack::dial`]) if a route end to `peer` is
    /// live, and send its SYN.
    pub fn dial(
        &mut self,
        now: Instant,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
        io: &mut impl NodeIo,
    ) -> Result<StreamId, StreamError> {
        if !self.ends.has_peer(&peer) {
            return Err(StreamError::NoRoute);
        }
        let id = self.stack.dial(now, peer, port, owner, timeout)?;
        self.flush_stack(now, io);
        Ok(id)
    }

    /// Whether a route end to `peer` is live.
    pub fn has_route_to(&self, peer: &PublicKey) -> bool {
        self.ends.has_peer(peer)
    }

    /// Seal what the stack queued onto the newest route end to each packet's peer (staged
    /// while that end has no keys yet), and let streams that found the queue full go on,
    /// until the stack has nothing more to send now or the transport is congested.
    pub fn flush_stack(&mut self, now: Instant, io: &mut impl NodeIo) {
        for _ in 0..64 {
            while let Some((peer, buf, len)) = self.stack.pop_egress() {
                let Some(end) = self.ends.newest_to(&peer) else {
                    self.drops.add(NodeDrop::NoRoute);
                    continue;
                };
                Self::seal_onto(
                    end,
                    &mut self.drops,
                    &mut self.peers,
                    &mut self.scratch,
                    now,
                    buf,
                    len,
                    io,
                );
            }
            if io.congested() || !self.stack.has_work(now) {
                return;
            }
            self.stack.poll(now);
            if !self.stack.has_egress() {
                return;
            }
        }
    }

    /// When [`poll_timers`](Self::poll_timers) next has work (`None`: only after input).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ends
            .iter()
            .filter_map(|e| e.session.poll_timeout())
            .chain(self.expiry.next_sample())
            .chain(self.stack.next_deadline())
            .min()
    }

    /// The events since the last call, oldest first: expired rules, probe replies, pongs.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, EngineEvent> {
        self.events.queue.drain(..)
    }

    /// The kernel refused a datagram to `to` at `now` for want of a way there, with the
    /// OS error `os_error` (`ENETUNREACH` and the like; the packet is already counted as
    /// [`NodeDrop::Unreachable`]): an [`EngineEvent::Unreachable`] if this next hop was not
    /// reported in the last [`UNREACHABLE_REPORT_EVERY`]. Called by the driver after a
    /// flush in which a send failed so, never per packet.
    pub fn unreachable(&mut self, now: Instant, to: SocketAddr, os_error: i32) {
        if self.unreachables.due(to, now) {
            self.events.push(EngineEvent::Unreachable { to, os_error });
        }
    }

    /// Count `n` events the driver could not deliver (its channel was full).
    pub fn count_events_dropped(&mut self, n: u64) {
        self.events.dropped += n;
    }

    /// Reset every stream, then close every route: an authenticated close packet to each
    /// peer that has keys.
    pub fn close_all(&mut self, now: Instant, io: &mut impl NodeIo) {
        self.stack.abort_all(now, StreamError::Shutdown);
        self.flush_stack(now, io);
        for end in self.ends.iter_mut() {
            if let Some(n) = end.session.close(now, &mut self.scratch) {
                let packet = self.scratch.get(..n).unwrap_or_default();
                RouteEnd::send(&mut end.counted, end.setup.first_hop, packet, io);
            }
        }
    }
}

#[cfg(test)]
mod tests;
