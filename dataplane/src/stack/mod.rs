//! The node's userspace TCP/IP stack: reliable byte streams to apps over routes, addressed
//! by `(public key, port)`, without root or a TUN device. A second kind of route end beside
//! the TUN device: the engine hands [`Stack::ingress`] the packets its route ends opened
//! for the stack, and seals what the stack queued ([`Stack::pop_egress`]) onto the route to
//! the packet's peer. Sans-IO: no socket, no clock; time comes in with every call.
//!
//! # Addressing
//!
//! A stream is known by the peer's key and the two ports. On the wire inside the route it
//! is plain TCP over IPv4 between two link-local addresses that belong to the route, not to
//! the nodes: [`LINK_LOW`] for the end with the lower key, [`LINK_HIGH`] for the other. Both
//! ends compute them from the keys, so nothing is configured or announced. The key a stream
//! belongs to is the key of the route end its packets opened under (the engine passes it
//! in), never anything in the packet. [`is_stack_packet`] is the engine's test for "this
//! decrypted packet is for the stack, not the TUN device".
//!
//! # Flat cost per packet
//!
//! smoltcp matches every segment against every socket of the set it is polled with. Here
//! each stream has a socket set of its own (one socket), and the stack finds it first, by
//! `(peer key, local port, remote port)` in a hash map; the peer's smoltcp `Interface` (one
//! per peer key, holding the pair of link addresses) is then polled with that one set. Timers
//! are a `BTreeSet` of `(deadline, stream)`. So a segment costs a hash lookup and one socket's
//! work however many streams are open, and a timer costs a logarithm.
//!
//! # Lifecycle of a stream
//!
//! ```text
//!  dial ──> Connecting ──established──> Waiting ──attach──> Attached ──both FINs / reset──> Ended
//!  SYN to a listener ──> Connecting ──established──> Waiting (Arrived event) ...
//! ```
//!
//! - **Connecting**: half-open, counted against `max_half_open`; a dial fails after its
//!   timeout ([`StreamError::TimedOut`]) or when the peer resets ([`StreamError::Refused`]).
//! - **Waiting**: established, its bytes buffered (within the window) until the app's
//!   connection is attached; reset after `take_timeout` ([`StreamError::NotTaken`]).
//! - **Attached**: the engine moves bytes between the app's connection and the socket
//!   ([`Stack::app_recv`], [`Stack::app_send`], [`Stack::app_fin`]); streams whose app side
//!   has something to do are listed by [`Stack::drain_ready`].
//! - **Ended**: told once ([`StackEvent::Ended`]); a cleanly closed socket may linger in
//!   TIME-WAIT (10 s) before its memory is freed.
//!
//! A route end that goes without another to the same key ends all streams with that key
//! at once ([`Stack::peer_gone`], [`StreamError::RouteGone`]); a repaired route (a new end
//! to the same key) keeps them, since TCP does not care which path its packets take.
//!
//! # Limits and memory
//!
//! Streams per node, per peer key, per app (owner), half-open streams, listeners and a
//! listener's backlog are bounded ([`StackSetup`]); a SYN over a limit is answered with a
//! reset and counted. Each stream's buffers are allocated when it starts: `buffer` bytes per
//! direction while the stack's buffers take less than half of `memory`, [`MIN_BUFFER`]
//! after that, and no new stream past `memory`. The egress ring is the only other
//! allocation, made once.
//!
//! # Pushback
//!
//! A full egress ring refuses smoltcp's transmissions; the socket keeps its data and the
//! stream is retried once the engine drained the ring ([`Stack::poll`]), so nothing the
//! stack sends is dropped for lack of room. The engine in turn stops draining while the
//! transport socket is full. The app side is paced by the windows: the engine reads from an
//! app only as much as the socket's send buffer takes, and a slow app reader leaves bytes in
//! the receive buffer, which closes the TCP window.

pub mod api;
pub mod appframe;
mod device;
mod egress;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket,
};

pub use api::{
    Limit, ListenOptions, ListenerId, MIN_BUFFER, Owner, StackSetup, StreamError, StreamId,
    StreamInfo, window_sized,
};
pub use egress::EGRESS_SLOTS;

use device::Device;
use egress::Egress;

/// The link address of the route end with the lower key.
pub const LINK_LOW: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 1);
/// The link address of the route end with the higher key.
pub const LINK_HIGH: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 2);

/// Ports a dial picks its own port from.
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;
/// TCP keep-alive on every stream, so a peer that vanished without its route going is
/// found out.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// A stream whose sent data or keep-alives go unanswered this long is reset.
const USER_TIMEOUT: Duration = Duration::from_secs(120);
/// Egress polls of one stream per call at most (each sends what the window allows; this only
/// bounds a pathological loop).
const EGRESS_ROUNDS: usize = 64;

/// Whether a decrypted packet is for the stack: IPv4 to one of the two link addresses.
pub fn is_stack_packet(packet: &[u8]) -> bool {
    packet.first().is_some_and(|v| v >> 4 == 4)
        && matches!(packet.get(16..20), Some([169, 254, 77, 1 | 2]))
}

/// The link addresses of a route between `local` and `peer`: (ours, theirs).
pub fn link_addresses(local: &PublicKey, peer: &PublicKey) -> (Ipv4Addr, Ipv4Addr) {
    if local.as_bytes() < peer.as_bytes() {
        (LINK_LOW, LINK_HIGH)
    } else {
        (LINK_HIGH, LINK_LOW)
    }
}

use crate::crypto::PublicKey;

/// What happened to streams, for the engine to pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackEvent {
    /// A dialed stream is established (it waits to be attached).
    Connected(StreamInfo),
    /// A dial failed.
    DialFailed(StreamId, StreamError),
    /// A stream to a listener is established (it waits to be accepted and attached).
    Arrived {
        /// The listener it came to.
        listener: ListenerId,
        /// The stream.
        info: StreamInfo,
    },
    /// A stream that was connected ended: `None` when both sides closed it, else why.
    Ended {
        /// The stream.
        id: StreamId,
        /// Why, if not a clean close.
        error: Option<StreamError>,
    },
}

/// Counters of what the stack refused or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// Streams dialed.
    pub dialed: u64,
    /// Streams that arrived at a listener.
    pub arrived: u64,
    /// Streams ended with an error.
    pub reset: u64,
    /// Packets that were not IPv4 TCP between the route's link addresses.
    pub bad_packets: u64,
    /// SYNs to a port nobody listens on, or whose listener does not take the key: reset.
    pub refused: u64,
    /// SYNs over a limit (node, peer, half-open, backlog, memory): reset.
    pub limited: u64,
    /// Segments of no stream: reset.
    pub unknown: u64,
    /// Packets smoltcp wrote while the egress ring was full (replies to incoming
    /// segments): dropped.
    pub egress_dropped: u64,
}

/// A snapshot of the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackStatus {
    /// Streams open (including half-open and those lingering in TIME-WAIT).
    pub streams: usize,
    /// Of which still half-open.
    pub half_open: usize,
    /// Listeners.
    pub listeners: usize,
    /// Peer keys with streams.
    pub peers: usize,
    /// Bytes of stream buffers allocated.
    pub memory: usize,
    /// What was refused or dropped.
    pub counters: StackCounters,
    /// Stream bytes each peer key's streams carried since the node started, by key.
    pub traffic: Vec<(PublicKey, PeerTraffic)>,
}

/// The stream bytes of one peer key's streams, since the node started: what apps here
/// sent to it and what they received from it (payload, counted where the app side takes
/// or gives it; a key seen once keeps its line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerTraffic {
    /// Streams with this key now.
    pub open: usize,
    /// Bytes apps here sent on them.
    pub sent: u64,
    /// Bytes apps here received on them.
    pub received: u64,
}

/// What the app side of an attached stream has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppView {
    /// Bytes waiting to go to the app.
    pub readable: usize,
    /// Bytes the socket takes from the app now.
    pub writable: usize,
    /// The peer sent FIN and every byte before it was read.
    pub peer_fin: bool,
    /// The app may still send (no FIN from it yet, the stream not reset).
    pub may_send: bool,
}

struct Link {
    iface: Interface,
    local: Ipv4Address,
    remote: Ipv4Address,
    streams: usize,
    /// Polled with segments no stream takes: smoltcp answers them with a reset.
    nobody: SocketSet<'static>,
}

impl core::fmt::Debug for Link {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting { deadline: Instant },
    Waiting { deadline: Instant },
    Attached,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Dialed,
    Arrived(ListenerId),
}

#[derive(Debug)]
struct Stream {
    info: StreamInfo,
    owner: Owner,
    origin: Origin,
    phase: Phase,
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// Bytes of buffers (both directions).
    memory: usize,
    last_active: Instant,
    /// This stream's entry in the timer set.
    timer: Option<Instant>,
    /// Waiting for room in the egress ring.
    blocked: bool,
    /// Listed in `ready`.
    ready: bool,
    /// A FIN from the peer was seen.
    peer_fin: bool,
    /// The app sent FIN.
    app_fin: bool,
    /// Why this side aborted it, once it did.
    aborted: Option<StreamError>,
}

impl Stream {
    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket<'static>>(self.handle)
    }
}

#[derive(Debug)]
struct Listener {
    id: ListenerId,
    backlog: usize,
    allow: Option<Vec<PublicKey>>,
    owner: Owner,
    /// Streams to it that are half-open or wait to be accepted.
    pending: usize,
}

/// At most this many (peer key, service port) pairs are metered apart between two asks
/// for usage; more go under port 0 of their peer.
pub const SERVICES_METERED: usize = 4096;

/// Bytes apps sent and received, by peer key and service port.
pub type ServiceBytes = HashMap<(PublicKey, u16), (u64, u64)>;

/// A node's stack.
#[derive(Debug)]
pub struct Stack {
    setup: StackSetup,
    local_key: PublicKey,
    mtu: usize,
    /// smoltcp's time zero.
    base: Instant,
    seed: u64,
    links: HashMap<PublicKey, Link>,
    streams: HashMap<StreamId, Stream>,
    demux: HashMap<(PublicKey, u16, u16), StreamId>,
    listeners: HashMap<u16, Listener>,
    listener_ports: HashMap<ListenerId, u16>,
    per_owner: HashMap<Owner, usize>,
    half_open: usize,
    memory: usize,
    next_id: u64,
    timers: BTreeSet<(Instant, StreamId)>,
    blocked: VecDeque<StreamId>,
    ready: Vec<StreamId>,
    events: Vec<StackEvent>,
    egress: Egress,
    counters: StackCounters,
    /// Bytes per peer key (see [`PeerTraffic`]); `open` is filled in by `status`.
    traffic: HashMap<PublicKey, PeerTraffic>,
    /// Bytes sent and received per peer key and service port since the last
    /// [`take_usage`](Self::take_usage), for at most [`SERVICES_METERED`] pairs.
    unmetered: ServiceBytes,
}

impl Stack {
    /// A stack for the node with key `local_key`, sending IP packets of at most `mtu` bytes
    /// in buffers of `buf_len` bytes (room for the route's header and tag around them).
    /// `seed` seeds smoltcp's initial sequence numbers and the stack's port choice.
    pub fn new(
        setup: StackSetup,
        local_key: PublicKey,
        mtu: usize,
        buf_len: usize,
        now: Instant,
        seed: u64,
    ) -> Self {
        Self {
            setup,
            local_key,
            mtu,
            base: now,
            seed: seed | 1,
            links: HashMap::new(),
            streams: HashMap::new(),
            demux: HashMap::new(),
            listeners: HashMap::new(),
            listener_ports: HashMap::new(),
            per_owner: HashMap::new(),
            half_open: 0,
            memory: 0,
            next_id: 1,
            timers: BTreeSet::new(),
            blocked: VecDeque::new(),
            ready: Vec::new(),
            events: Vec::new(),
            egress: Egress::new(buf_len),
            counters: StackCounters::default(),
            traffic: HashMap::new(),
            unmetered: HashMap::new(),
        }
    }

    /// The bytes apps sent and received, by peer key and service port (the port dialed, or
    /// the port listened on), since the last call (since the start, at the first).
    pub fn take_usage(&mut self) -> ServiceBytes {
        std::mem::take(&mut self.unmetered)
    }

    /// Count `sent` and `received` app bytes of the stream `s` for the ledger. Beyond
    /// [`SERVICES_METERED`] pairs between two asks, a new pair's bytes go under port 0 of
    /// its peer.
    fn meter(unmetered: &mut ServiceBytes, s: &Stream, sent: usize, received: usize) {
        let port = match s.origin {
            Origin::Dialed => s.info.remote_port,
            Origin::Arrived(_) => s.info.local_port,
        };
        let mut key = (s.info.peer, port);
        if unmetered.len() >= SERVICES_METERED && !unmetered.contains_key(&key) {
            key.1 = 0;
        }
        let entry = unmetered.entry(key).or_default();
        entry.0 = entry.0.wrapping_add(sent as u64);
        entry.1 = entry.1.wrapping_add(received as u64);
    }

    fn smol(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.base).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn std_time(&self, at: SmolInstant) -> Instant {
        let micros = u64::try_from(at.total_micros()).unwrap_or(0);
        self.base + Duration::from_micros(micros)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: port choice only; smoltcp seeds its sequence numbers from `seed`.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A snapshot for status output.
    pub fn status(&self) -> StackStatus {
        StackStatus {
            streams: self.streams.len(),
            half_open: self.half_open,
            listeners: self.listeners.len(),
            peers: self.links.len(),
            memory: self.memory,
            counters: StackCounters {
                egress_dropped: self.egress.spilled,
                ..self.counters
            },
            traffic: {
                let mut traffic: Vec<(PublicKey, PeerTraffic)> = self
                    .traffic
                    .iter()
                    .map(|(key, t)| {
                        let open = self.links.get(key).map_or(0, |l| l.streams);
                        (*key, PeerTraffic { open, ..*t })
                    })
                    .collect();
                traffic.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                traffic
            },
        }
    }

    /// The events since the last call, oldest first.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, StackEvent> {
        self.events.drain(..)
    }

    /// Attached streams whose app side may have something to do (bytes to deliver, room
    /// for the app's bytes, a FIN), since the last call. Each is listed once.
    pub fn drain_ready(&mut self, into: &mut Vec<StreamId>) {
        for id in self.ready.drain(..) {
            if let Some(s) = self.streams.get_mut(&id) {
                s.ready = false;
                into.push(id);
            }
        }
    }

    /// The oldest packet waiting to be sealed: its peer, the buffer it lies in (at
    /// `HEADROOM..HEADROOM + len`, room for the tag after it) and its length.
    pub fn pop_egress(&mut self) -> Option<(PublicKey, &mut [u8], usize)> {
        self.egress.pop()
    }

    /// Whether streams wait for room in the egress ring.
    pub fn has_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Whether [`poll`](Self::poll) has something to do at `now`: streams that found the
    /// egress ring full, or timers due.
    pub fn has_work(&self, now: Instant) -> bool {
        !self.blocked.is_empty() || self.timers.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Whether packets wait in the egress ring.
    pub fn has_egress(&self) -> bool {
        !self.egress.is_empty()
    }

    /// When [`poll`](Self::poll) next has work: the earliest timer, or now when streams wait
    /// for room in the egress ring.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.blocked.is_empty() {
            return Some(self.base);
        }
        self.timers.first().map(|(t, _)| *t)
    }

    /// Let streams act on their timers (retransmissions, delayed ACKs, keep-alives, the
    /// stack's own timeouts), and retry streams that found the egress ring full. Stops when
    /// the ring fills again; call again after draining it.
    pub fn poll(&mut self, now: Instant) {
        while !self.egress.is_full() {
            let Some(id) = self.blocked.pop_front() else {
                break;
            };
            if let Some(s) = self.streams.get_mut(&id) {
                s.blocked = false;
            }
            self.drive(now, id, None);
        }
        while !self.egress.is_full() {
            let Some(&(at, id)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.timer = None;
            let overdue = match s.phase {
                Phase::Connecting { deadline } if deadline <= now => Some(StreamError::TimedOut),
                Phase::Waiting { deadline } if deadline <= now => Some(StreamError::NotTaken),
                Phase::Connecting { .. } | Phase::Waiting { .. } | Phase::Attached
                    if s.last_active + self.setup.idle_timeout <= now =>
                {
                    Some(StreamError::IdleTimeout)
                }
                _ => None,
            };
            match overdue {
                Some(error) => self.abort(now, id, error),
                None => self.drive(now, id, None),
            }
        }
    }

    // ---- listeners ----

    /// Listen on `options.port`.
    pub fn listen(&mut self, id: ListenerId, options: ListenOptions) -> Result<(), StreamError> {
        if options.port == 0 {
            return Err(StreamError::PortInUse);
        }
        if self.listeners.contains_key(&options.port) {
            return Err(StreamError::PortInUse);
        }
        if self.listeners.len() >= self.setup.max_listeners {
            return Err(StreamError::Limit(Limit::Listeners));
        }
        self.listener_ports.insert(id, options.port);
        self.listeners.insert(
            options.port,
            Listener {
                id,
                backlog: options.backlog.max(1),
                allow: options.allow,
                owner: options.owner,
                pending: 0,
            },
        );
        Ok(())
    }

    /// Stop listening; streams that arrived and were not accepted are reset.
    pub fn unlisten(&mut self, now: Instant, id: ListenerId) {
        let Some(port) = self.listener_ports.remove(&id) else {
            return;
        };
        self.listeners.remove(&port);
        // Streams still in their handshake go; established ones were handed to the app
        // side already, which attaches or aborts each (or the take timeout resets it).
        let mut orphans: Vec<StreamId> = self
            .streams
            .values()
            .filter(|s| {
                s.origin == Origin::Arrived(id) && matches!(s.phase, Phase::Connecting { .. })
            })
            .map(|s| s.info.id)
            .collect();
        orphans.sort_unstable();
        for stream in orphans {
            self.abort(now, stream, StreamError::NotTaken);
        }
    }

    // ---- streams from this node ----

    /// Open a stream to `port` on `peer` for `owner`; the caller made sure a route end to
    /// `peer` exists. The outcome comes as [`StackEvent::Connected`] or
    /// [`StackEvent::DialFailed`] (after `timeout` at the latest).
    pub fn dial(
        &mut self,
        now: Instant,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
    ) -> Result<StreamId, StreamError> {
        if port == 0 {
            return Err(StreamError::Refused);
        }
        let buffer = self.admit(&peer, owner)?;
        let local_port = self.pick_port(&peer, port)?;
        let id = self.next_stream_id();
        let info = StreamInfo {
            id,
            peer,
            local_port,
            remote_port: port,
        };
        let link = self.link(now, peer);
        let (local, remote) = (link.local, link.remote);
        let mut socket = new_socket(buffer);
        let connected = socket.connect(
            link.iface.context(),
            (IpAddress::Ipv4(remote), port),
            (IpAddress::Ipv4(local), local_port),
        );
        if connected.is_err() {
            self.drop_idle_link(&peer);
            return Err(StreamError::Refused);
        }
        self.counters.dialed += 1;
        self.insert(
            now,
            info,
            owner,
            Origin::Dialed,
            Phase::Connecting {
                deadline: now + timeout,
            },
            socket,
            buffer,
        );
        self.drive(now, id, None);
        Ok(id)
    }

    /// The app took the stream: from now on its bytes move ([`app_send`](Self::app_send),
    /// [`app_recv`](Self::app_recv)). Only a stream that is established and not yet taken,
    /// by its owner (or root).
    pub fn attach(
        &mut self,
        now: Instant,
        id: StreamId,
        owner: Owner,
    ) -> Result<StreamInfo, StreamError> {
        let s = self
            .streams
            .get_mut(&id)
            .ok_or(StreamError::UnknownStream)?;
        if !matches!(s.phase, Phase::Waiting { .. }) || (s.owner != owner && owner != Owner(0)) {
            return Err(StreamError::UnknownStream);
        }
        s.phase = Phase::Attached;
        let info = s.info;
        if let Origin::Arrived(listener) = s.origin {
            self.release_pending(listener);
        }
        self.mark_ready(id);
        self.rearm(now, id);
        Ok(info)
    }

    /// Who a stream belongs to.
    pub fn owner(&self, id: StreamId) -> Option<Owner> {
        self.streams.get(&id).map(|s| s.owner)
    }

    /// Reset a stream (sends RST to the peer), for `reason`.
    pub fn abort(&mut self, now: Instant, id: StreamId, reason: StreamError) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.aborted.is_none() {
            s.aborted = Some(reason);
        }
        s.socket().abort();
        self.drive(now, id, None);
    }

    /// Every route end to `peer` is gone: its streams end at once, without a word to the
    /// peer (there is no route to say it on).
    pub fn peer_gone(&mut self, peer: &PublicKey) {
        let mut ids: Vec<StreamId> = self
            .streams
            .values()
            .filter(|s| s.info.peer == *peer)
            .map(|s| s.info.id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(s) = self.streams.get_mut(&id) {
                s.aborted.get_or_insert(StreamError::RouteGone);
                s.socket().abort();
                // No RST: drop what abort queued by never polling egress again.
                self.finish(id, true);
            }
        }
        self.links.remove(peer);
    }

    /// Reset every stream (the node stops).
    pub fn abort_all(&mut self, now: Instant, reason: StreamError) {
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.abort(now, id, reason);
        }
    }

    // ---- the app side of attached streams ----

    /// What the app side of a stream has to do (`None`: no such attached stream).
    pub fn app_view(&mut self, id: StreamId) -> Option<AppView> {
        let s = self.streams.get_mut(&id)?;
        if s.phase != Phase::Attached {
            return None;
        }
        let peer_fin = s.peer_fin;
        let app_fin = s.app_fin;
        let socket = s.socket();
        let readable = socket.recv_queue();
        Some(AppView {
            readable,
            writable: if socket.may_send() && !app_fin {
                socket.send_capacity() - socket.send_queue()
            } else {
                0
            },
            peer_fin: peer_fin && readable == 0,
            may_send: socket.may_send() && !app_fin,
        })
    }

    /// Bytes from the app: as many as the send buffer takes (returned).
    pub fn app_send(&mut self, now: Instant, id: StreamId, data: &[u8]) -> usize {
        let Some(s) = self.streams.get_mut(&id) else {
            return 0;
        };
        if s.phase != Phase::Attached || s.app_fin {
            return 0;
        }
        let n = s.socket().send_slice(data).unwrap_or(0);
        if n > 0 {
            self.traffic.entry(s.info.peer).or_default().sent += n as u64;
            Self::meter(&mut self.unmetered, s, n, 0);
            s.last_active = now;
            self.drive_for_app(now, id);
        }
        n
    }

    /// The app sent FIN: no more bytes from it.
    pub fn app_fin(&mut self, now: Instant, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.phase != Phase::Attached || s.app_fin {
            return;
        }
        s.app_fin = true;
        s.socket().close();
        self.drive_for_app(now, id);
    }

    /// Give bytes for the app to `deliver`, which returns how many it took (fewer means
    /// the app is full: stop). Returns the total taken.
    pub fn app_recv(
        &mut self,
        now: Instant,
        id: StreamId,
        mut deliver: impl FnMut(&[u8]) -> usize,
    ) -> usize {
        let Some(s) = self.streams.get_mut(&id) else {
            return 0;
        };
        if s.phase != Phase::Attached {
            return 0;
        }
        let mut total = 0;
        // The ring may wrap: at most two contiguous pieces.
        for _ in 0..2 {
            let got = s
                .socket()
                .recv(|buf| {
                    let n = deliver(buf).min(buf.len());
                    (n, (n, buf.len()))
                })
                .unwrap_or((0, 0));
            total += got.0;
            if got.0 == 0 || got.0 < got.1 {
                break;
            }
        }
        if total > 0 {
            self.traffic.entry(s.info.peer).or_default().received += total as u64;
            Self::meter(&mut self.unmetered, s, 0, total);
            s.last_active = now;
            // A wider window may be worth announcing.
            self.drive_for_app(now, id);
        }
        total
    }

    // ---- packets from the peer ----

    /// A packet the route end to `peer` opened, for the stack ([`is_stack_packet`]).
    pub fn ingress(&mut self, now: Instant, peer: PublicKey, packet: &[u8]) {
        let Some(seg) = Segment::parse(packet) else {
            self.counters.bad_packets += 1;
            return;
        };
        let (local, remote) = link_addresses(&self.local_key, &peer);
        if seg.dst != local || seg.src != remote {
            self.counters.bad_packets += 1;
            return;
        }
        if let Some(&id) = self.demux.get(&(peer, seg.dst_port, seg.src_port)) {
            let lingering = self.streams.get_mut(&id).is_some_and(|s| {
                s.phase == Phase::Ended
                    && matches!(
                        s.socket().state(),
                        tcp::State::TimeWait | tcp::State::Closed
                    )
            });
            if !(seg.syn && !seg.ack && lingering) {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.last_active = now;
                }
                self.drive(now, id, Some(packet));
                return;
            }
            // A new stream on the ports of one that ended here and lingers in TIME-WAIT
            // (the peer picked the same port again): the old one gives way, as Linux lets
            // a SYN reopen a TIME-WAIT connection.
            self.finish(id, true);
        }
        if seg.rst {
            self.counters.unknown += 1;
            return;
        }
        if !seg.syn || seg.ack {
            self.counters.unknown += 1;
            self.reject(now, peer, packet);
            return;
        }
        let Some(listener) = self.listeners.get(&seg.dst_port) else {
            self.counters.refused += 1;
            self.reject(now, peer, packet);
            return;
        };
        if listener
            .allow
            .as_ref()
            .is_some_and(|keys| !keys.contains(&peer))
        {
            self.counters.refused += 1;
            self.reject(now, peer, packet);
            return;
        }
        let (listener_id, owner) = (listener.id, listener.owner);
        if listener.pending >= listener.backlog {
            self.counters.limited += 1;
            self.reject(now, peer, packet);
            return;
        }
        let buffer = match self.admit(&peer, owner) {
            Ok(b) => b,
            Err(_) => {
                self.counters.limited += 1;
                self.reject(now, peer, packet);
                return;
            }
        };
        let id = self.next_stream_id();
        let info = StreamInfo {
            id,
            peer,
            local_port: seg.dst_port,
            remote_port: seg.src_port,
        };
        let mut socket = new_socket(buffer);
        if socket
            .listen((IpAddress::Ipv4(local), seg.dst_port))
            .is_err()
        {
            self.counters.refused += 1;
            return;
        }
        self.link(now, peer);
        if let Some(l) = self.listeners.get_mut(&seg.dst_port) {
            l.pending += 1;
        }
        self.counters.arrived += 1;
        self.insert(
            now,
            info,
            owner,
            Origin::Arrived(listener_id),
            Phase::Connecting {
                deadline: now + self.setup.take_timeout,
            },
            socket,
            buffer,
        );
        self.drive(now, id, Some(packet));
    }

    fn next_stream_id(&mut self) -> StreamId {
        let id = self.next_id;
        self.next_id += 1;
        StreamId(id)
    }

    // ---- internals ----

    /// Whether a new stream with `peer` for `owner` fits the limits; its buffer size.
    fn admit(&self, peer: &PublicKey, owner: Owner) -> Result<usize, StreamError> {
        let setup = &self.setup;
        if self.streams.len() >= setup.max_streams {
            return Err(StreamError::Limit(Limit::Node));
        }
        if self
            .links
            .get(peer)
            .is_some_and(|l| l.streams >= setup.max_streams_per_peer)
        {
            return Err(StreamError::Limit(Limit::Peer));
        }
        if self.per_owner.get(&owner).copied().unwrap_or(0) >= setup.max_streams_per_app {
            return Err(StreamError::Limit(Limit::App));
        }
        if self.half_open >= setup.max_half_open {
            return Err(StreamError::Limit(Limit::HalfOpen));
        }
        let full = window_sized(setup.buffer.max(MIN_BUFFER));
        let buffer = if self.memory + 2 * full <= setup.memory / 2 {
            full
        } else {
            MIN_BUFFER
        };
        if self.memory + 2 * buffer > setup.memory {
            return Err(StreamError::Limit(Limit::Memory));
        }
        Ok(buffer)
    }

    fn pick_port(&mut self, peer: &PublicKey, remote_port: u16) -> Result<u16, StreamError> {
        let span = u64::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..64 {
            let offset = u16::try_from(self.next_random() % span).unwrap_or(0);
            let port = EPHEMERAL.start() + offset;
            if !self.demux.contains_key(&(*peer, port, remote_port)) {
                return Ok(port);
            }
        }
        Err(StreamError::Limit(Limit::Peer))
    }

    fn link(&mut self, now: Instant, peer: PublicKey) -> &mut Link {
        let now_smol = self.smol(now);
        let seed = self.next_random();
        let (local, remote) = link_addresses(&self.local_key, &peer);
        let (mtu, egress) = (self.mtu, &mut self.egress);
        self.links.entry(peer).or_insert_with(|| {
            let mut config = IfaceConfig::new(HardwareAddress::Ip);
            config.random_seed = seed;
            let mut device = Device::new(None, egress, peer, mtu);
            let mut iface = Interface::new(config, &mut device, now_smol);
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(local), 30));
            });
            Link {
                iface,
                local,
                remote,
                streams: 0,
                nobody: SocketSet::new(Vec::new()),
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        now: Instant,
        info: StreamInfo,
        owner: Owner,
        origin: Origin,
        phase: Phase,
        socket: tcp::Socket<'static>,
        buffer: usize,
    ) {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        if let Some(link) = self.links.get_mut(&info.peer) {
            link.streams += 1;
        }
        *self.per_owner.entry(owner).or_insert(0) += 1;
        self.half_open += 1;
        self.memory += 2 * buffer;
        self.demux
            .insert((info.peer, info.local_port, info.remote_port), info.id);
        self.streams.insert(
            info.id,
            Stream {
                info,
                owner,
                origin,
                phase,
                set,
                handle,
                memory: 2 * buffer,
                last_active: now,
                timer: None,
                blocked: false,
                ready: false,
                peer_fin: false,
                app_fin: false,
                aborted: None,
            },
        );
    }

    /// Answer a segment no stream takes with a reset (smoltcp does, polled with no socket).
    fn reject(&mut self, now: Instant, peer: PublicKey, packet: &[u8]) {
        let now_smol = self.smol(now);
        self.link(now, peer);
        let Self {
            links, egress, mtu, ..
        } = self;
        if let Some(link) = links.get_mut(&peer) {
            let mut device = Device::new(Some(packet), egress, peer, *mtu);
            link.iface
                .poll_ingress_single(now_smol, &mut device, &mut link.nobody);
        }
        self.drop_idle_link(&peer);
    }

    fn drop_idle_link(&mut self, peer: &PublicKey) {
        if self.links.get(peer).is_some_and(|l| l.streams == 0) {
            self.links.remove(peer);
        }
    }

    /// Feed `packet` (if any) to the stream's socket and send what it has to send; then see
    /// what changed.
    fn drive(&mut self, now: Instant, id: StreamId, packet: Option<&[u8]>) {
        self.drive_as(now, id, packet, false);
    }

    /// [`drive`](Self::drive) after the app's own action: the stream is not listed as ready
    /// for it (the caller is serving its app side already).
    fn drive_for_app(&mut self, now: Instant, id: StreamId) {
        self.drive_as(now, id, None, true);
    }

    fn drive_as(&mut self, now: Instant, id: StreamId, packet: Option<&[u8]>, for_app: bool) {
        let now_smol = self.smol(now);
        let Self {
            streams,
            links,
            egress,
            mtu,
            blocked,
            ..
        } = self;
        let Some(s) = streams.get_mut(&id) else {
            return;
        };
        let Some(link) = links.get_mut(&s.info.peer) else {
            return;
        };
        let mut device = Device::new(packet, egress, s.info.peer, *mtu);
        if packet.is_some() {
            link.iface
                .poll_ingress_single(now_smol, &mut device, &mut s.set);
        }
        for _ in 0..EGRESS_ROUNDS {
            let sent = link.iface.poll_egress(now_smol, &mut device, &mut s.set);
            if device.refused || sent == PollResult::None {
                break;
            }
        }
        if device.refused && !s.blocked {
            s.blocked = true;
            blocked.push_back(id);
        }
        self.observe(now, id, !for_app);
    }

    /// Act on the socket's state: events, ends, readiness, the timer.
    fn observe(&mut self, now: Instant, id: StreamId, mark: bool) {
        let take_timeout = self.setup.take_timeout;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let state = s.socket().state();
        if matches!(
            state,
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        ) {
            s.peer_fin = true;
        }
        match s.phase {
            Phase::Connecting { .. } => {
                if state == tcp::State::Closed {
                    let error = s.aborted.unwrap_or(StreamError::Refused);
                    let origin = s.origin;
                    self.half_open = self.half_open.saturating_sub(1);
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.phase = Phase::Ended;
                    }
                    match origin {
                        Origin::Dialed => self.events.push(StackEvent::DialFailed(id, error)),
                        Origin::Arrived(listener) => self.release_pending(listener),
                    }
                    self.counters.reset += 1;
                    self.finish(id, false);
                    return;
                }
                if !matches!(
                    state,
                    tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Listen
                ) {
                    let info = s.info;
                    s.phase = Phase::Waiting {
                        deadline: now + take_timeout,
                    };
                    self.half_open = self.half_open.saturating_sub(1);
                    self.events.push(match s.origin {
                        Origin::Dialed => StackEvent::Connected(info),
                        Origin::Arrived(listener) => StackEvent::Arrived { listener, info },
                    });
                }
            }
            Phase::Waiting { .. } | Phase::Attached => {
                let attached = s.phase == Phase::Attached;
                let clean = s.app_fin && s.peer_fin && s.aborted.is_none();
                let readable = s.socket().recv_queue();
                let closed_clean =
                    state == tcp::State::TimeWait || (state == tcp::State::Closed && clean);
                if state == tcp::State::Closed && !clean {
                    let error = s.aborted.unwrap_or(StreamError::PeerReset);
                    self.end(id, Some(error));
                    self.finish(id, false);
                    return;
                }
                if closed_clean && readable == 0 {
                    // Both FINs, every byte read: the app is told; a socket in TIME-WAIT
                    // lingers until its timer.
                    self.end(id, None);
                    self.finish(id, false);
                    if !self.streams.contains_key(&id) {
                        return;
                    }
                } else if attached && mark {
                    self.mark_ready(id);
                }
            }
            Phase::Ended => {
                if state == tcp::State::Closed {
                    self.finish(id, false);
                    return;
                }
            }
        }
        self.rearm(now, id);
    }

    fn end(&mut self, id: StreamId, error: Option<StreamError>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.phase == Phase::Ended {
            return;
        }
        let (phase, origin) = (s.phase, s.origin);
        s.phase = Phase::Ended;
        if let (Phase::Waiting { .. }, Origin::Arrived(listener)) = (phase, origin) {
            self.release_pending(listener);
        }
        if error.is_some() {
            self.counters.reset += 1;
        }
        self.events.push(StackEvent::Ended { id, error });
    }

    /// Remove the stream if its socket is closed (or `now_anyway`), freeing what it held.
    fn finish(&mut self, id: StreamId, now_anyway: bool) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if !now_anyway && s.socket().state() != tcp::State::Closed {
            return;
        }
        if s.phase != Phase::Ended {
            let error = s.aborted;
            match (s.phase, s.origin) {
                (Phase::Connecting { .. }, Origin::Dialed) => {
                    self.half_open = self.half_open.saturating_sub(1);
                    self.events.push(StackEvent::DialFailed(
                        id,
                        error.unwrap_or(StreamError::RouteGone),
                    ));
                    self.counters.reset += 1;
                }
                (Phase::Connecting { .. }, Origin::Arrived(listener)) => {
                    self.half_open = self.half_open.saturating_sub(1);
                    self.release_pending(listener);
                }
                _ => self.end(id, Some(error.unwrap_or(StreamError::RouteGone))),
            }
        }
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if let Some(at) = s.timer {
            self.timers.remove(&(at, id));
        }
        self.demux
            .remove(&(s.info.peer, s.info.local_port, s.info.remote_port));
        self.memory = self.memory.saturating_sub(s.memory);
        if let Some(n) = self.per_owner.get_mut(&s.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_owner.remove(&s.owner);
            }
        }
        if let Some(link) = self.links.get_mut(&s.info.peer) {
            link.streams = link.streams.saturating_sub(1);
        }
        self.drop_idle_link(&s.info.peer);
    }

    fn release_pending(&mut self, listener: ListenerId) {
        if let Some(port) = self.listener_ports.get(&listener)
            && let Some(l) = self.listeners.get_mut(port)
        {
            l.pending = l.pending.saturating_sub(1);
        }
    }

    fn mark_ready(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.ready
        {
            s.ready = true;
            self.ready.push(id);
        }
    }

    /// Put the stream's next deadline into the timer set.
    fn rearm(&mut self, now: Instant, id: StreamId) {
        let idle = self.setup.idle_timeout;
        let now_smol = self.smol(now);
        let now_smol_of = |stack: &Self, at: SmolInstant| stack.std_time(at);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(link) = self.links.get_mut(&s.info.peer) else {
            return;
        };
        let smol_at = if s.blocked {
            None
        } else {
            link.iface.poll_at(now_smol, &s.set)
        };
        let phase_deadline = match s.phase {
            Phase::Connecting { deadline } | Phase::Waiting { deadline } => Some(deadline),
            _ => None,
        };
        let idle_deadline = (s.phase != Phase::Ended).then(|| s.last_active + idle);
        let old = s.timer;
        let smol_std = smol_at.map(|t| now_smol_of(self, t));
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let next = [smol_std, phase_deadline, idle_deadline]
            .into_iter()
            .flatten()
            .min();
        if next == old {
            return;
        }
        if let Some(at) = old {
            self.timers.remove(&(at, id));
        }
        s.timer = next;
        if let Some(at) = next {
            self.timers.insert((at, id));
        }
    }
}

/// A new stream's socket: `buffer` bytes each way, Nagle off (apps write what they mean
/// to send; the engine batches), CUBIC, keep-alive and a user timeout.
fn new_socket(buffer: usize) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; buffer]);
    let tx = tcp::SocketBuffer::new(vec![0u8; buffer]);
    let mut socket = tcp::Socket::new(rx, tx);
    socket.set_nagle_enabled(false);
    socket.set_congestion_control(tcp::CongestionControl::Cubic);
    socket.set_keep_alive(Some(SmolDuration::from_millis(
        u64::try_from(KEEP_ALIVE.as_millis()).unwrap_or(u64::MAX),
    )));
    socket.set_timeout(Some(SmolDuration::from_millis(
        u64::try_from(USER_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
    )));
    socket
}

/// The fields of a TCP segment the stack finds its stream by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    src: Ipv4Address,
    dst: Ipv4Address,
    src_port: u16,
    dst_port: u16,
    syn: bool,
    ack: bool,
    rst: bool,
}

impl Segment {
    fn parse(packet: &[u8]) -> Option<Self> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        Some(Self {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
        })
    }
}

#[cfg(test)]
mod tests;
