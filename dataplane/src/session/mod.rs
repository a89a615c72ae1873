//! One end of a route: the end-to-end state machine between two nodes.
//!
//! A [`Session`] owns the handshake, the keypairs and the timers of a route endpoint. It is
//! sans-IO: the caller passes `now` and its own buffers, and gets back what to do.
//!
//! Call order (the driver's loop):
//!
//! 1. For a payload to send, put it at `buf[TRANSPORT_HEADER_LEN..]` and call
//!    [`Session::encapsulate`]; on `Ok(n)` send `buf[..n]` to the route's first hop. On
//!    [`SendError::NoSession`] the session now wants a handshake: go to step 3.
//! 2. For every packet that arrives on this route, call [`Session::decapsulate`] with the
//!    buffer and act on the [`Outcome`]: deliver plaintext, send a reply back along the
//!    route, or count a drop.
//! 3. Call [`Session::poll`] until it returns `None`, sending each packet it writes
//!    (handshake initiations, keepalives), and arm a timer for [`Session::poll_timeout`].
//!
//! `decapsulate` and `poll` also take the [`PeerMemory`] of the route's peer key: the
//! handshake state that must outlive the session (the newest initiation accepted from the
//! key, the newest timestamp sent to it, the rate of its initiations). A node keeps one per
//! peer key for all its route ends with that peer, so a re-installed or repaired route end
//! does not forget which initiations it accepted ([`peer`] says why each piece is there).
//!
//! Handshakes are bound to the route ([`RouteIds`]): the session's incoming id and the
//! peer's are mixed into the transcript, so a handshake message made for another route
//! between the same two keys fails here (`BadHandshake`).
//!
//! Pings: [`Session::ping`] seals a ping carrying a nonce (like `encapsulate`, it fails with
//! [`SendError::NoSession`] and requests a handshake while there are no keys). The far
//! end's `decapsulate` answers a ping with [`Outcome::Reply`] (a pong with the same nonce,
//! sealed in place), and the pong comes back as [`Outcome::Pong`]. The session keeps no
//! record of pings: pairing a pong with its ping (and timing it) is the caller's job. A ping
//! counts as data for the unanswered-data rule (no authenticated answer for 15 s requests
//! a handshake); neither arms the passive keepalive, since a ping is answered at once and
//! a pong needs no answer.
//!
//! Keypairs rotate as in WireGuard: `current` seals outgoing packets; `previous` still
//! opens packets in flight during a rekey; `next` is the responder's new keypair, used for
//! sending only once the initiator proved it has it (its first packet under it arrives).
//! The initiator of the current keypair rekeys after [`Limits::rekey_after_time`] (and
//! when a packet arrives 15 s before the peer would refuse the keypair); either end rekeys
//! after [`Limits::rekey_after_messages`]; no keypair is used past the reject limits. When
//! two initiations cross, each end keeps the keypair it answered with as `previous`, so
//! both ends can open what the other sends.
//!
//! Cookies (`docs/PROTOCOL.md` §5.10): a responder under load answers an initiation with
//! a cookie reply instead of reading it. The session keeps the cookie of a reply that
//! answers its pending initiation (the first such reply only; a copy is a replay, dropped
//! as [`DropReason::BadCookieReply`]) for [`COOKIE_LIFETIME`], and while it holds one every
//! initiation it sends carries a mac2 under it (148 bytes instead of 132). The responder's
//! side of the mechanism is node-wide and runs before the session
//! (`engine::core::cookie`); `decapsulate` reads initiations of either length.
//!
//! Recovery after the other end restarts: the restarted end holds no keypair, so the first
//! packet it cannot decrypt makes it start a handshake at once (rate-limited by
//! [`Limits::rekey_timeout`]); and an end that sends without hearing back for
//! `keepalive_timeout + rekey_timeout` starts one too.

pub mod peer;

use core::time::Duration;
use std::time::Instant;

use crate::crypto::cipher::{Limits, OpenError, RecvKey, SealError, SendKey};
use crate::crypto::cookie::{self, CookieError};
use crate::crypto::keys::random_u32;
use crate::crypto::noise::{self, HandshakeError, InitiatorState, RouteBinding, StaticKeys};
use crate::crypto::replay::ReplayError;
use crate::wire::{
    COOKIE_LEN, CookieReplyPacket, HANDSHAKE_INIT_LEN, HANDSHAKE_INIT_MAC2_LEN,
    HANDSHAKE_RESPONSE_LEN, HandshakeResponsePacket, InitParts, MAC_LEN, PING_LEN,
    PING_PAYLOAD_LEN, PacketType, RouteHeader, RouteId, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD,
    TransportPacket, TransportRepr, split_init,
};

pub use peer::PeerMemory;

/// Why a packet given to [`Session::decapsulate`] was dropped. Each reason has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a well-formed packet.
    Malformed,
    /// A transport packet for a key id this session does not hold.
    UnknownKey,
    /// The key that would open it is past its reject limit (time or messages).
    KeyExpired,
    /// The counter was seen before, or is older than the replay window.
    Replay,
    /// The authentication tag did not verify.
    BadTag,
    /// A handshake message that failed its MAC, decryption or peer check.
    BadHandshake,
    /// A handshake initiation not newer than the newest one accepted from the peer's key
    /// on this node (a replay).
    ReplayedHandshake,
    /// A handshake response that answers no pending initiation.
    UnexpectedResponse,
    /// A handshake initiation refused before any Diffie-Hellman because the peer's key
    /// spent its budget of accepted initiations ([`peer::INITIATION_BURST`],
    /// [`peer::INITIATION_INTERVAL`]).
    HandshakeRateLimited,
    /// A cookie reply that answers no pending initiation, answers one that already had its
    /// cookie (a replay), or does not open (`docs/PROTOCOL.md` §5.10).
    BadCookieReply,
}

impl DropReason {
    /// Every reason, in the order of [`DropCounts`].
    pub const ALL: [DropReason; 10] = [
        DropReason::Malformed,
        DropReason::UnknownKey,
        DropReason::KeyExpired,
        DropReason::Replay,
        DropReason::BadTag,
        DropReason::BadHandshake,
        DropReason::ReplayedHandshake,
        DropReason::UnexpectedResponse,
        DropReason::HandshakeRateLimited,
        DropReason::BadCookieReply,
    ];

    /// A short name for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownKey => "unknown key",
            DropReason::KeyExpired => "key expired",
            DropReason::Replay => "replay",
            DropReason::BadTag => "bad tag",
            DropReason::BadHandshake => "bad handshake",
            DropReason::ReplayedHandshake => "replayed handshake",
            DropReason::UnexpectedResponse => "unexpected response",
            DropReason::HandshakeRateLimited => "handshake rate limited",
            DropReason::BadCookieReply => "bad cookie reply",
        }
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Add `other`'s counts to these (a removed route end's, kept node-wide).
    pub fn merge(&mut self, other: &DropCounts) {
        for (count, more) in self.0.iter_mut().zip(other.0) {
            *count = count.saturating_add(more);
        }
    }

    fn add(&mut self, reason: DropReason) {
        if let Some(count) = self.0.get_mut(reason as usize) {
            *count += 1;
        }
    }
}

/// Counters of one session. Owned by the session's thread; read by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Data packets sealed.
    pub tx_packets: u64,
    /// Payload bytes sealed.
    pub tx_bytes: u64,
    /// Data packets opened.
    pub rx_packets: u64,
    /// Payload bytes opened.
    pub rx_bytes: u64,
    /// Handshake initiations sent (first tries and retransmissions).
    pub handshake_inits_sent: u64,
    /// Handshakes completed, as either side.
    pub handshakes_completed: u64,
    /// Handshake attempts abandoned after [`Limits::rekey_attempt_time`].
    pub handshakes_abandoned: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Dropped packets, by reason.
    pub drops: DropCounts,
}

/// Why [`Session::encapsulate`] could not seal a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No keypair yet (or any more): a handshake was requested; call [`Session::poll`].
    #[error("no session key yet; handshake requested")]
    NoSession,
    /// The buffer or payload does not fit.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// What to do with a packet given to [`Session::decapsulate`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The packet was data: deliver this plaintext (a slice of the caller's buffer).
    Deliver(&'a [u8]),
    /// Send these bytes back along the route (a handshake response, a keepalive, or the
    /// pong that answers a ping).
    Reply(&'a [u8]),
    /// The packet was an authenticated pong carrying this nonce.
    Pong(u64),
    /// The packet was valid and needs nothing more (a keepalive, a confirmation).
    Consumed,
    /// The peer closed the route: every key was dropped.
    Closed,
    /// The packet was dropped and counted.
    Dropped(DropReason),
}

/// A keypair created by one handshake.
#[derive(Debug)]
struct Keypair {
    send: SendKey,
    recv: RecvKey,
    /// Our key id: peers put it in every packet they seal with this keypair.
    local_index: u32,
    created: Instant,
    /// Did we initiate the handshake that made it? Only the initiator rekeys by time.
    initiator: bool,
}

/// An initiation that is waiting for its response.
#[derive(Debug)]
struct Pending {
    state: InitiatorState,
    sent_at: Instant,
    /// The initiation's mac1: a cookie reply to it is sealed with it as associated data.
    mac1: [u8; MAC_LEN],
    /// A cookie reply to this initiation was accepted: another copy is a replay.
    cookie_taken: bool,
}

/// How long an initiator uses a cookie after it arrived: the responder's secret changes
/// every [`COOKIE_SECRET_LIFETIME`](crate::engine::COOKIE_SECRET_LIFETIME), so an older
/// cookie cannot be valid any more.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

/// The route ids of a route end: the one its packets leave with, and the ones each end
/// receives the route's packets with, which bind its handshakes to the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteIds {
    /// The id the first hop knows the route by, written into every packet this end sends.
    pub out_id: RouteId,
    /// The id the route's packets carry when they reach this end.
    pub in_id: RouteId,
    /// The id the route's packets carry when they reach the peer (the peer's `in_id`).
    pub peer_in_id: RouteId,
}

impl RouteIds {
    /// The route as a handshake this end initiates names it.
    fn as_initiator(self) -> RouteBinding {
        RouteBinding {
            initiator_in: self.in_id,
            responder_in: self.peer_in_id,
        }
    }

    /// The route as a handshake the peer initiates names it.
    fn as_responder(self) -> RouteBinding {
        RouteBinding {
            initiator_in: self.peer_in_id,
            responder_in: self.in_id,
        }
    }
}

/// The end-to-end state of one end of a route.
#[derive(Debug)]
pub struct Session {
    keys: StaticKeys,
    limits: Limits,
    ids: RouteIds,
    persistent_keepalive: Option<Duration>,
    /// Maps `now` to wall-clock time for handshake timestamps.
    clock_base: (Instant, u64),
    pending: Option<Pending>,
    attempt_started: Option<Instant>,
    want_handshake: bool,
    /// When we last sent a handshake message (initiation or response): no new initiation
    /// goes out within `rekey_timeout` of it, which rate-limits handshakes that packets
    /// from the network can prompt.
    last_handshake_sent: Option<Instant>,
    current: Option<Keypair>,
    previous: Option<Keypair>,
    next: Option<Keypair>,
    last_sent: Option<Instant>,
    last_handshake: Option<Instant>,
    /// Data arrived and nothing was sent since: a keepalive is due at this time.
    keepalive_due: Option<Instant>,
    /// Data was sent and nothing received since this time.
    unanswered_since: Option<Instant>,
    /// The newest cookie from the peer's node and when it came (`docs/PROTOCOL.md` §5.10):
    /// initiations carry a mac2 under it for [`COOKIE_LIFETIME`].
    cookie: Option<(Instant, [u8; COOKIE_LEN])>,
    stats: SessionStats,
}

impl Session {
    /// A session for a route whose far end has the static key in `keys`. Packets leave with
    /// `ids.out_id` (the first hop's incoming id); handshakes are bound to `ids.in_id` and
    /// `ids.peer_in_id`. `unix_time` is the wall-clock time at `now`, used for handshake
    /// timestamps: it must be later than the previous run's.
    pub fn new(
        keys: StaticKeys,
        ids: RouteIds,
        limits: Limits,
        now: Instant,
        unix_time: Duration,
    ) -> Self {
        let base_nanos = u64::try_from(unix_time.as_nanos()).unwrap_or(u64::MAX);
        Self {
            keys,
            limits,
            ids,
            persistent_keepalive: None,
            clock_base: (now, base_nanos),
            pending: None,
            attempt_started: None,
            want_handshake: false,
            last_handshake_sent: None,
            current: None,
            previous: None,
            next: None,
            last_sent: None,
            last_handshake: None,
            keepalive_due: None,
            unanswered_since: None,
            cookie: None,
            stats: SessionStats::default(),
        }
    }

    /// Send a keepalive whenever nothing was sent for `interval` (for routes that must stay
    /// warm, like WireGuard's `PersistentKeepalive`).
    pub fn set_persistent_keepalive(&mut self, interval: Option<Duration>) {
        self.persistent_keepalive = interval;
    }

    /// Change the route id outgoing packets carry (after the first hop's rule changed). The
    /// ids the handshake binds to do not change: a route with new incoming ids is a new
    /// route end.
    pub fn set_route_id(&mut self, route_id: RouteId) {
        self.ids.out_id = route_id;
    }

    /// The route id outgoing packets carry.
    pub fn route_id(&self) -> RouteId {
        self.ids.out_id
    }

    /// The route ids of this end.
    pub fn ids(&self) -> RouteIds {
        self.ids
    }

    /// The static keys of this route's two ends.
    pub fn keys(&self) -> &StaticKeys {
        &self.keys
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// When the last handshake completed.
    pub fn last_handshake(&self) -> Option<Instant> {
        self.last_handshake
    }

    /// The current keypair's key id (ours, which the peer puts in its packets) and the
    /// lowest counter its replay window has not yet accepted: the receiving state a
    /// replayed packet must leave as it was. `None` without keys.
    pub fn receiving(&self) -> Option<(u32, u64)> {
        self.current
            .as_ref()
            .map(|k| (k.local_index, k.recv.next_expected()))
    }

    /// Is there a keypair to send with?
    pub fn is_established(&self) -> bool {
        self.current.is_some()
    }

    /// Ask for a handshake now (for example when the route is first set up).
    pub fn request_handshake(&mut self) {
        self.want_handshake = true;
    }

    /// Seal the payload at `buf[TRANSPORT_HEADER_LEN..][..payload_len]` as a data packet, in
    /// place. `buf` needs [`TAG_LEN`](crate::wire::TAG_LEN) bytes of room after the payload.
    /// Returns the length of the packet at `buf[..n]`.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SendError> {
        let n = self.seal(now, buf, PacketType::Data, payload_len)?;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += payload_len as u64;
        self.unanswered_since.get_or_insert(now);
        Ok(n)
    }

    /// Seal a ping carrying `nonce` into `buf[..PING_LEN]` (`buf` needs at least
    /// [`PING_LEN`] bytes) and return its length. Without keys this fails with
    /// [`SendError::NoSession`] and requests a handshake, as [`encapsulate`](Self::encapsulate)
    /// does.
    pub fn ping(&mut self, now: Instant, buf: &mut [u8], nonce: u64) -> Result<usize, SendError> {
        let buf = buf
            .get_mut(..PING_LEN)
            .ok_or(SendError::Seal(SealError::BufferTooSmall))?;
        if let Some(payload) =
            buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + PING_PAYLOAD_LEN)
        {
            payload.copy_from_slice(&nonce.to_be_bytes());
        }
        let n = self.seal(now, buf, PacketType::Ping, PING_PAYLOAD_LEN)?;
        self.unanswered_since.get_or_insert(now);
        Ok(n)
    }

    /// Seal with the current keypair, requesting a rekey when the limits say so.
    fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        packet_type: PacketType,
        payload_len: usize,
    ) -> Result<usize, SendError> {
        let limits = self.limits;
        let Some(keypair) = self
            .current
            .as_mut()
            .filter(|k| age(now, k) < limits.reject_after_time)
        else {
            self.want_handshake = true;
            return Err(SendError::NoSession);
        };
        let n = match keypair
            .send
            .seal(buf, packet_type, self.ids.out_id, payload_len, &limits)
        {
            Ok(n) => n,
            Err(SealError::Exhausted) => {
                self.want_handshake = true;
                return Err(SendError::NoSession);
            }
            Err(e) => return Err(e.into()),
        };
        if keypair.send.messages() >= limits.rekey_after_messages
            || (keypair.initiator && age(now, keypair) >= limits.rekey_after_time)
        {
            self.want_handshake = true;
        }
        self.last_sent = Some(now);
        self.keepalive_due = None;
        Ok(n)
    }

    /// Handle a packet that arrived on this route. The returned slices borrow `buf`. `peer`
    /// is the node's memory of the route's peer key, shared with its other route ends to
    /// that key; only a handshake initiation reads or changes it.
    pub fn decapsulate<'a>(
        &mut self,
        now: Instant,
        buf: &'a mut [u8],
        peer: &mut PeerMemory,
    ) -> Outcome<'a> {
        let outcome = match RouteHeader::new_checked(&buf[..]).map(|h| h.packet_type()) {
            Err(_) => Outcome::Dropped(DropReason::Malformed),
            Ok(PacketType::HandshakeInit) => self.handle_init(now, buf, peer),
            Ok(PacketType::HandshakeResponse) => self.handle_response(now, buf),
            Ok(PacketType::CookieReply) => self.handle_cookie_reply(now, buf),
            Ok(_) => self.handle_transport(now, buf),
        };
        if let Outcome::Dropped(reason) = outcome {
            self.stats.drops.add(reason);
        }
        outcome
    }

    fn handle_init<'a>(
        &mut self,
        now: Instant,
        buf: &'a mut [u8],
        peer: &mut PeerMemory,
    ) -> Outcome<'a> {
        // With or without mac2: whether it had to carry a valid one (its node under load)
        // was decided before the packet reached the session (`engine::core::cookie`).
        let Some(InitParts {
            init: packet,
            mac1: mac,
            ..
        }) = split_init(buf)
        else {
            return Outcome::Dropped(DropReason::Malformed);
        };
        if !noise::init_mac_is_valid(&self.keys, packet) {
            return Outcome::Dropped(DropReason::BadHandshake);
        }
        // An exact copy of the newest initiation accepted from this key, on this route end
        // or another: refuse it before spending any Diffie-Hellman on it.
        if peer.is_last_accepted(&mac) {
            return Outcome::Dropped(DropReason::ReplayedHandshake);
        }
        // The peer accepted too many initiations lately: refuse before any Diffie-Hellman.
        if !peer.rate_allows(now) {
            return Outcome::Dropped(DropReason::HandshakeRateLimited);
        }
        let received = match noise::read_init(&self.keys, self.ids.as_responder(), packet) {
            Ok(received) => received,
            Err(HandshakeError::Malformed) => return Outcome::Dropped(DropReason::Malformed),
            Err(_) => return Outcome::Dropped(DropReason::BadHandshake),
        };
        if !peer.is_newer(received.timestamp) {
            return Outcome::Dropped(DropReason::ReplayedHandshake);
        }
        let timestamp = received.timestamp;
        let Ok(local_index) = self.fresh_index() else {
            return Outcome::Dropped(DropReason::BadHandshake);
        };
        let sender_index = received.sender_index;
        let keys =
            match noise::write_response(&self.keys, received, self.ids.out_id, local_index, buf) {
                Ok(keys) => keys,
                Err(_) => return Outcome::Dropped(DropReason::BadHandshake),
            };
        peer.accept(now, timestamp, mac);
        self.next = Some(Keypair {
            send: SendKey::new(&keys.send, sender_index),
            recv: RecvKey::new(&keys.recv),
            local_index,
            created: now,
            initiator: false,
        });
        self.last_handshake = Some(now);
        self.stats.handshakes_completed += 1;
        self.last_sent = Some(now);
        self.last_handshake_sent = Some(now);
        match buf.get(..HANDSHAKE_RESPONSE_LEN) {
            Some(reply) => Outcome::Reply(reply),
            None => Outcome::Dropped(DropReason::Malformed),
        }
    }

    /// A cookie reply: keep its cookie if it answers the pending initiation and is the
    /// first to do so; the next initiation (on the usual retransmission timer) carries a
    /// mac2 under it.
    fn handle_cookie_reply<'a>(&mut self, now: Instant, buf: &'a mut [u8]) -> Outcome<'a> {
        let Some(pending) = self.pending.as_mut().filter(|p| !p.cookie_taken) else {
            return Outcome::Dropped(if CookieReplyPacket::new_checked(&buf[..]).is_ok() {
                DropReason::BadCookieReply
            } else {
                DropReason::Malformed
            });
        };
        let remote = self.keys.remote_public();
        match cookie::read_reply(&remote, pending.state.local_index, &pending.mac1, buf) {
            Ok(cookie) => {
                pending.cookie_taken = true;
                self.cookie = Some((now, cookie));
                Outcome::Consumed
            }
            Err(CookieError::Malformed) => Outcome::Dropped(DropReason::Malformed),
            Err(_) => Outcome::Dropped(DropReason::BadCookieReply),
        }
    }

    fn handle_response<'a>(&mut self, now: Instant, buf: &'a mut [u8]) -> Outcome<'a> {
        if HandshakeResponsePacket::new_checked(&buf[..]).is_err() {
            return Outcome::Dropped(DropReason::Malformed);
        }
        let Some(pending) = &self.pending else {
            return Outcome::Dropped(DropReason::UnexpectedResponse);
        };
        let (keys, remote_index) = match noise::read_response(&self.keys, &pending.state, buf) {
            Ok(done) => done,
            Err(HandshakeError::Malformed) => return Outcome::Dropped(DropReason::Malformed),
            Err(HandshakeError::UnexpectedResponse) => {
                return Outcome::Dropped(DropReason::UnexpectedResponse);
            }
            Err(_) => return Outcome::Dropped(DropReason::BadHandshake),
        };
        let local_index = pending.state.local_index;
        self.pending = None;
        self.attempt_started = None;
        self.want_handshake = false;
        // If we also answered an initiation of the peer's (the two crossed), the peer may
        // use that keypair: keep it as `previous` so its packets still open (WireGuard's
        // rule). Otherwise the old current keypair becomes `previous`.
        self.previous = match self.next.take() {
            Some(answered) => Some(answered),
            None => self.current.take(),
        };
        self.current = Some(Keypair {
            send: SendKey::new(&keys.send, remote_index),
            recv: RecvKey::new(&keys.recv),
            local_index,
            created: now,
            initiator: true,
        });
        self.last_handshake = Some(now);
        self.stats.handshakes_completed += 1;
        // Confirm the keypair to the responder at once: it may not send until it hears us.
        match self.seal(now, buf, PacketType::Keepalive, 0) {
            Ok(n) => {
                self.stats.keepalives_sent += 1;
                buf.get(..n).map_or(Outcome::Consumed, Outcome::Reply)
            }
            Err(_) => Outcome::Consumed,
        }
    }

    fn handle_transport<'a>(&mut self, now: Instant, buf: &'a mut [u8]) -> Outcome<'a> {
        let Ok(packet) = TransportPacket::new_checked(&buf[..]) else {
            return Outcome::Dropped(DropReason::Malformed);
        };
        let repr = TransportRepr::parse(&packet);
        let limits = self.limits;
        let slot = [&mut self.current, &mut self.previous, &mut self.next]
            .into_iter()
            .position(|k| k.as_ref().is_some_and(|k| k.local_index == repr.key_id));
        let keypair = match slot {
            Some(0) => self.current.as_mut(),
            Some(1) => self.previous.as_mut(),
            Some(_) => self.next.as_mut(),
            None => None,
        };
        let Some(keypair) = keypair else {
            if self.current.is_none() && self.next.is_none() {
                // We probably restarted and the peer still uses keys we lost. Unauthenticated,
                // so only a request: `poll` sends at most one initiation per rekey_timeout.
                self.want_handshake = true;
            }
            return Outcome::Dropped(DropReason::UnknownKey);
        };
        if age(now, keypair) >= limits.reject_after_time {
            return Outcome::Dropped(DropReason::KeyExpired);
        }
        let range = match keypair.recv.open(&repr, buf, &limits) {
            Ok(range) => range,
            Err(OpenError::BadTag) => return Outcome::Dropped(DropReason::BadTag),
            Err(OpenError::Replay(ReplayError::OutOfRange) | OpenError::Exhausted) => {
                return Outcome::Dropped(DropReason::KeyExpired);
            }
            Err(OpenError::Replay(_)) => return Outcome::Dropped(DropReason::Replay),
        };
        if slot == Some(2) {
            // The initiator used the keypair we answered with: it is confirmed.
            self.previous = self.current.take();
            self.current = self.next.take();
            // A fresh keypair: whatever asked for a handshake is answered.
            self.want_handshake = false;
        }
        // The initiator renews its keypair before the peer would have to refuse it.
        let renew_at = limits
            .reject_after_time
            .saturating_sub(limits.keepalive_timeout)
            .saturating_sub(limits.rekey_timeout);
        if self
            .current
            .as_ref()
            .is_some_and(|k| k.initiator && age(now, k) >= renew_at)
        {
            self.want_handshake = true;
        }
        self.unanswered_since = None;
        match repr.packet_type {
            PacketType::Data => {
                self.stats.rx_packets += 1;
                self.stats.rx_bytes += range.len() as u64;
                if self.keepalive_due.is_none() {
                    self.keepalive_due = now.checked_add(limits.keepalive_timeout);
                }
                buf.get(range)
                    .map_or(Outcome::Dropped(DropReason::Malformed), Outcome::Deliver)
            }
            PacketType::Ping => {
                // The nonce is the plaintext, already in place: seal it back as a pong of
                // the same size. Without a usable keypair the ping goes unanswered.
                let Some(packet) = buf.get_mut(..PING_LEN) else {
                    return Outcome::Dropped(DropReason::Malformed);
                };
                match self.seal(now, packet, PacketType::Pong, PING_PAYLOAD_LEN) {
                    Ok(n) => buf.get(..n).map_or(Outcome::Consumed, Outcome::Reply),
                    Err(_) => Outcome::Consumed,
                }
            }
            PacketType::Pong => {
                let nonce = buf
                    .get(range)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes);
                nonce.map_or(Outcome::Dropped(DropReason::Malformed), Outcome::Pong)
            }
            PacketType::Close => {
                self.forget_keys();
                // The close authenticated, so it is no replay: the peer is restarting or
                // leaving, and the next packet should start a handshake at once.
                self.last_handshake_sent = None;
                Outcome::Closed
            }
            _ => Outcome::Consumed,
        }
    }

    /// Write the next packet the session wants to send on its own (a handshake initiation
    /// or a keepalive) into `buf` and return its length; `None` when there is nothing.
    /// `buf` must hold at least [`HANDSHAKE_INIT_LEN`] bytes, and [`HANDSHAKE_INIT_MAC2_LEN`]
    /// for an initiation to carry a mac2 after a cookie reply. `peer` is the node's memory of
    /// the route's peer key (an initiation's timestamp is newer than any sent to the key).
    pub fn poll(&mut self, now: Instant, buf: &mut [u8], peer: &mut PeerMemory) -> Option<usize> {
        if let Some(since) = self.unanswered_since
            && now.saturating_duration_since(since)
                >= self
                    .limits
                    .keepalive_timeout
                    .saturating_add(self.limits.rekey_timeout)
        {
            self.unanswered_since = None;
            self.want_handshake = true;
        }
        if let Some(newest) = self.newest_key_created()
            && now.saturating_duration_since(newest)
                >= self.limits.reject_after_time.saturating_mul(3)
        {
            self.forget_keypairs();
        }
        if let Some(pending) = &self.pending {
            if now.saturating_duration_since(pending.sent_at) < self.limits.rekey_timeout {
                return self.poll_keepalive(now, buf);
            }
            let started = self.attempt_started.unwrap_or(pending.sent_at);
            if now.saturating_duration_since(started) >= self.limits.rekey_attempt_time {
                self.pending = None;
                self.attempt_started = None;
                self.want_handshake = false;
                self.stats.handshakes_abandoned += 1;
                return self.poll_keepalive(now, buf);
            }
            return self.send_init(now, buf, peer);
        }
        if self.want_handshake && self.handshake_allowed_at().is_none_or(|at| now >= at) {
            return self.send_init(now, buf, peer);
        }
        self.poll_keepalive(now, buf)
    }

    /// The earliest time a new initiation may be sent (`None`: at once).
    fn handshake_allowed_at(&self) -> Option<Instant> {
        self.last_handshake_sent
            .and_then(|t| t.checked_add(self.limits.rekey_timeout))
    }

    /// The keypair to seal with, if it is still usable at `now`.
    fn usable_current(&self, now: Instant) -> bool {
        self.current
            .as_ref()
            .is_some_and(|k| age(now, k) < self.limits.reject_after_time)
    }

    fn poll_keepalive(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let passive = self.keepalive_due.is_some_and(|due| now >= due);
        let persistent = self.persistent_keepalive.is_some_and(|every| {
            self.last_sent
                .is_none_or(|sent| now.saturating_duration_since(sent) >= every)
        });
        if !(passive || persistent) {
            return None;
        }
        // A due keepalive is consumed whether or not it can be sent, so it never stays due.
        self.keepalive_due = None;
        if !self.usable_current(now) {
            if persistent {
                // Keep the route warm: without keys, that means a handshake.
                self.want_handshake = true;
            }
            return None;
        }
        let buf = buf.get_mut(..TRANSPORT_OVERHEAD)?;
        let n = self.seal(now, buf, PacketType::Keepalive, 0).ok()?;
        self.stats.keepalives_sent += 1;
        Some(n)
    }

    fn send_init(&mut self, now: Instant, buf: &mut [u8], peer: &mut PeerMemory) -> Option<usize> {
        let timestamp = peer.next_timestamp(self.wall_clock(now));
        let binding = self.ids.as_initiator();
        let made = self.fresh_index().ok().and_then(|local_index| {
            noise::write_init(
                &self.keys,
                binding,
                self.ids.out_id,
                local_index,
                timestamp,
                buf,
            )
            .ok()
        });
        let Some(state) = made else {
            // The random source or the buffer failed: back off as if it had been sent.
            self.last_handshake_sent = Some(now);
            if let Some(pending) = &mut self.pending {
                pending.sent_at = now;
            }
            return None;
        };
        let (len, mac1) = self.add_mac2(now, buf);
        self.pending = Some(Pending {
            state,
            sent_at: now,
            mac1,
            cookie_taken: false,
        });
        self.attempt_started.get_or_insert(now);
        self.want_handshake = false;
        self.last_sent = Some(now);
        self.last_handshake_sent = Some(now);
        self.stats.handshake_inits_sent += 1;
        Some(len)
    }

    /// The initiation just written to `buf[..132]` gets a mac2 if a cookie younger than
    /// [`COOKIE_LIFETIME`] is held and `buf` has room: its length and its mac1.
    fn add_mac2(&mut self, now: Instant, buf: &mut [u8]) -> (usize, [u8; MAC_LEN]) {
        let mac1 = buf
            .get(..HANDSHAKE_INIT_LEN)
            .and_then(split_init)
            .map_or([0; MAC_LEN], |parts| parts.mac1);
        if self
            .cookie
            .is_some_and(|(at, _)| now.saturating_duration_since(at) >= COOKIE_LIFETIME)
        {
            self.cookie = None;
        }
        let Some((_, cookie)) = &self.cookie else {
            return (HANDSHAKE_INIT_LEN, mac1);
        };
        let Some(full) = buf.get_mut(..HANDSHAKE_INIT_MAC2_LEN) else {
            return (HANDSHAKE_INIT_LEN, mac1);
        };
        let (init, mac2) = full.split_at_mut(HANDSHAKE_INIT_LEN);
        mac2.copy_from_slice(&cookie::mac2(cookie, init));
        (HANDSHAKE_INIT_MAC2_LEN, mac1)
    }

    /// When [`poll`](Self::poll) next has something to do (`None`: only after new input).
    ///
    /// Invariant (tested): if this is at or before `now`, `poll(now)` either returns a
    /// packet or changes the state so that this moves past `now`; a driver never spins.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let limits = &self.limits;
        // A past instant means "now".
        let past = self.clock_base.0;
        let wanted = (self.want_handshake && self.pending.is_none())
            .then(|| self.handshake_allowed_at().unwrap_or(past));
        let persistent = self.persistent_keepalive.and_then(|every| {
            let at = self
                .last_sent
                .map_or(Some(past), |t| t.checked_add(every))?;
            // Without a keypair usable then, the keepalive becomes a handshake request, and
            // once that is requested `wanted` is the deadline that counts.
            let usable_then = self.current.as_ref().is_some_and(|k| {
                k.created
                    .checked_add(limits.reject_after_time)
                    .is_none_or(|end| at < end)
            });
            (usable_then || !self.want_handshake).then_some(at)
        });
        let deadlines = [
            wanted,
            self.pending
                .as_ref()
                .and_then(|p| p.sent_at.checked_add(limits.rekey_timeout)),
            self.keepalive_due,
            self.unanswered_since.and_then(|t| {
                t.checked_add(
                    limits
                        .keepalive_timeout
                        .saturating_add(limits.rekey_timeout),
                )
            }),
            self.newest_key_created()
                .and_then(|t| t.checked_add(limits.reject_after_time.saturating_mul(3))),
            persistent,
        ];
        deadlines.into_iter().flatten().min()
    }

    /// Close the route: write an authenticated close packet into `buf` (if there is a
    /// keypair to seal it with) and forget every key. Returns the packet's length.
    pub fn close(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let n = buf
            .get_mut(..TRANSPORT_OVERHEAD)
            .and_then(|b| self.seal(now, b, PacketType::Close, 0).ok());
        self.forget_keys();
        self.want_handshake = false;
        n
    }

    /// Drop every keypair (not a handshake in progress: it may still bring new ones).
    fn forget_keypairs(&mut self) {
        self.current = None;
        self.previous = None;
        self.next = None;
        self.keepalive_due = None;
        self.unanswered_since = None;
    }

    /// Drop every keypair and any handshake in progress.
    fn forget_keys(&mut self) {
        self.forget_keypairs();
        self.pending = None;
        self.attempt_started = None;
        self.keepalive_due = None;
        self.unanswered_since = None;
    }

    fn newest_key_created(&self) -> Option<Instant> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|k| k.created)
            .max()
    }

    /// A random non-zero key id not used by any keypair or pending handshake.
    fn fresh_index(&self) -> Result<u32, crate::crypto::keys::RngError> {
        loop {
            let index = random_u32()?;
            let taken = [&self.current, &self.previous, &self.next]
                .into_iter()
                .flatten()
                .any(|k| k.local_index == index)
                || self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.state.local_index == index);
            if index != 0 && !taken {
                return Ok(index);
            }
        }
    }

    /// Wall-clock time at `now`, in nanoseconds since the Unix epoch: the base given at
    /// creation plus the monotonic time elapsed since.
    fn wall_clock(&self, now: Instant) -> u64 {
        let (base_instant, base_nanos) = self.clock_base;
        let elapsed = u64::try_from(now.saturating_duration_since(base_instant).as_nanos())
            .unwrap_or(u64::MAX);
        base_nanos.saturating_add(elapsed)
    }
}

fn age(now: Instant, keypair: &Keypair) -> Duration {
    now.saturating_duration_since(keypair.created)
}

/// Bytes of header room to reserve in front of a payload for [`Session::encapsulate`].
pub const HEADROOM: usize = TRANSPORT_HEADER_LEN;

#[cfg(test)]
mod tests;
