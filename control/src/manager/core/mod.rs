//! The node manager's state machine, sans-IO: registered nodes, links, routes and the
//! setup transactions that install them. The server feeds it what happened on connections
//! (an authenticated node, a frame, a closed connection) and the time; it answers with
//! [`Output`]s: frames to send, connections to close, lines to log.
//!
//! Route setup, per route:
//!
//! 1. compute a path over nodes that are online and links that are proven up by an
//!    answered probe ([`Topology::route`]; `links` says when a link is), honouring the
//!    route's hop limits and avoid list; equal-cost paths are told apart per pair of ends,
//!    so routes spread over them;
//! 2. pick a fresh random incoming id per hop and direction, never one the hop uses;
//! 3. phase 1: `INSTALL` the relays' and the destination's rules; phase 2, once all of them
//!    acknowledged: the source's, whose route end takes the prefixes (so traffic moves to a
//!    route that is complete, make-before-break);
//! 4. all acknowledged: the route is active, the rules of its previous path are removed;
//!    a refusal or a missing acknowledgement by `setup_timeout`: every hop of this attempt
//!    gets `REMOVE` (rollback; harmless where nothing was installed) and nothing is left.
//!
//! Repair: a node that disconnects or stops sending heartbeats is down, a link a node
//! reports unanswered is down; every active route crossing one is set up again around it,
//! at once, while its old rules keep carrying what they can. A route whose attempt fails
//! is retried every [`RETRY`]. A route whose source or destination is down waits for it.
//!
//! Restart: the manager keeps no state on disk. Nodes re-register with the routes they own,
//! the links they declared and the rules they hold; each owned route is set up again, and
//! the rules it held before are removed once the new ones are active. Installed rules keep
//! forwarding meanwhile, so traffic does not stop.
//!
//! The state is split by what it is about, each piece in its own module with its own
//! bookkeeping:
//!
//! - `registry`: connections, registered nodes (endpoint, TUN addresses, ids in use),
//!   and the handling of `REGISTER` and of a node going down;
//! - `links`: the book of links (who declared each, the latest measurement, whether it is
//!   proven, fences on stale reports), and `LINK_ADD`, `LINK_REMOVE`, `LINK_REPORT`,
//!   `NEIGHBOURS`;
//! - `routes`: the book of routes, their plans and setup transactions (with a
//!   phase per setup), outstanding `INSTALL`s and orphaned rules;
//! - `setup`: the transaction itself (plan, install in two phases, commit or roll back),
//!   `ROUTE_ADD`, `ROUTE_REMOVE`, `ROUTE_LIST`, expiry and repair;
//! - `stats`: the counters of the manager's metrics (setups by outcome, repairs, route
//!   computation time) and the snapshot [`ManagerCore::stats`];
//! - `views`: each node's budget of `NODES` and `ROUTE_LIST` answers (bytes a second),
//!   past which those two are refused with `rate_limited`.
//!
//! This module holds [`ManagerCore`] and routes each input to them: [`ManagerCore::frame`]
//! turns a frame into a typed [`NodeRequest`] and answers it; [`ManagerCore::tick`] runs
//! the timers.

mod links;
mod registry;
mod routes;
mod setup;
mod stats;
mod views;

use std::collections::HashSet;
use std::net::IpAddr;

use std::time::{Duration, Instant};

use log::Level;

use serde::Serialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

pub use registry::ConnId;
pub use stats::{LINK_STATES, ManagerStats, ROUTE_STATES};
pub use views::{VIEW_BURST, VIEW_BYTES_PER_SEC, VIEW_LOG_EVERY, VIEW_MIN_COST};

use super::proto::{
    ErrorKind, Frame, HEADER_AFTER_LEN, LinkAdded, MAX_FRAME, ManagerRequest, Mesh, MeshRouteId,
    NodeRequest, ProtoError, Registered, RouteInfo, RouteList, TAG_LEN, kind,
};
use super::topology::{RouteWeight, Router, Topology};
use links::{LinkBook, Source};
use registry::Registry;
use routes::RouteBook;
use views::ViewBudgets;

/// How long a failed route waits before its next timed attempt; it doubles with each
/// failure in a row, up to [`MAX_RETRY`]. (A change of the mesh, a node or a link coming
/// up, lets waiting routes try again at once.)
pub const RETRY: Duration = Duration::from_millis(500);

/// The longest wait between timed attempts of a failing route.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// Most TUN addresses, declared links and owned routes one node may register.
pub const MAX_TUN_PREFIXES: usize = 16;
/// See [`MAX_TUN_PREFIXES`].
pub const MAX_LINKS_PER_NODE: usize = 256;
/// See [`MAX_TUN_PREFIXES`].
pub const MAX_ROUTES_PER_NODE: usize = 256;
/// Most manager rules one node may report holding in `REGISTER`: every rule of its owned
/// routes (a few each) and of the routes it relays, with room to spare; the reports are
/// sorted in sets, so the core's work stays proportional to what is reported.
pub const MAX_RULES_PER_NODE: usize = 16_384;

/// How long rules of a route nobody claims are kept before the manager removes them (after
/// a manager restart, the route's source may register after its relays).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(15);

/// How long an authenticated connection may wait before it registers.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Missed heartbeats before a node is declared dead.
pub const MISSED_HEARTBEATS: u32 = 3;

/// What the manager is configured with.
#[derive(Debug, Clone)]
pub struct Params {
    /// Only these keys may register (`None`: any key that proves itself).
    pub allow: Option<HashSet<PublicKey>>,
    /// Links declared in the manager's config.
    pub links: Vec<(PublicKey, PublicKey)>,
    /// TUN addresses pinned to nodes: only that node may register them, and a node with
    /// pins may register only those.
    pub pinned: Vec<(PublicKey, Vec<Prefix>)>,
    /// Where TUN addresses must lie (`None`: anywhere but special-purpose addresses).
    pub address_ranges: Option<Vec<Prefix>>,
    /// The manager's own address, which no node may take as a TUN address.
    pub listen_ip: Option<IpAddr>,
    /// Rules live this long without traffic.
    pub rule_expiry: Duration,
    /// A hop has this long to acknowledge.
    pub setup_timeout: Duration,
    /// Nodes send a heartbeat this often.
    pub heartbeat: Duration,
    /// Default route metric.
    pub weight: RouteWeight,
    /// Default minimum number of links.
    pub min_hops: usize,
    /// Default maximum number of links.
    pub max_hops: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            allow: None,
            links: Vec::new(),
            pinned: Vec::new(),
            address_ranges: None,
            listen_ip: None,
            rule_expiry: Duration::from_secs(30),
            setup_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            weight: RouteWeight::Hops,
            min_hops: 1,
            max_hops: 16,
        }
    }
}

/// What the server must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this frame on this connection.
    Send(ConnId, Frame),
    /// Close this connection (after sending what is queued), for this reason.
    Close(ConnId, CloseReason),
    /// A line for the log, at this level.
    Log(Level, String),
}

/// Why the manager closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// A frame on a connection that never proved a key.
    #[error("not authenticated")]
    NotAuthenticated,
    /// No `REGISTER` within [`REGISTER_TIMEOUT`].
    #[error("no REGISTER within {} s", REGISTER_TIMEOUT.as_secs())]
    NoRegister,
    /// [`MISSED_HEARTBEATS`] heartbeats missed.
    #[error("heartbeats missed")]
    HeartbeatsMissed,
    /// The node registered again on a newer connection.
    #[error("replaced by a new connection")]
    Replaced,
}

/// The `ok` body of a reply the core sends at once.
#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Registered(Registered),
    LinkAdded(LinkAdded),
    Routes(RouteList),
    Mesh(Mesh),
    Nothing,
}

/// The manager.
#[derive(Debug)]
pub struct ManagerCore {
    params: Params,
    topology: Topology,
    /// Route search buffers, reused across computations.
    router: Router,
    registry: Registry,
    links: LinkBook,
    routes: RouteBook,
    /// How much of `NODES` and `ROUTE_LIST` each node may still be served.
    views: ViewBudgets,
    next_request: u64,
    out: Vec<Output>,
    /// Random source for route ids and incoming ids (a seeded xorshift in tests).
    rng: Rng,
    /// What the metrics count (`stats`).
    counters: stats::Counters,
    /// The clock that times route computations, and nothing else (`stats`).
    stopwatch: fn() -> Instant,
}

/// Random numbers: the system's, or a seeded sequence for deterministic tests.
#[derive(Debug, Clone)]
pub struct Rng(Option<u64>);

impl Rng {
    /// From the system's random source.
    pub fn system() -> Self {
        Self(None)
    }

    /// A deterministic sequence.
    pub fn seeded(seed: u64) -> Self {
        Self(Some(seed | 1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        match &mut self.0 {
            Some(x) => {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *x
            }
            None => {
                let mut b = [0u8; 8];
                // The system source does not fail on Linux; a zero falls through to the
                // caller's retry loop for ids.
                let _ = skywire_dataplane::crypto::keys::fill_random(&mut b);
                u64::from_le_bytes(b)
            }
        }
    }
}

/// The first 8 hex digits of a key, for log lines.
fn short(key: &PublicKey) -> String {
    key.to_string().chars().take(8).collect()
}

impl ManagerCore {
    /// A manager with no nodes yet.
    pub fn new(params: Params, rng: Rng) -> Self {
        let mut core = Self {
            topology: Topology::new(),
            router: Router::new(),
            registry: Registry::default(),
            links: LinkBook::default(),
            routes: RouteBook::default(),
            views: ViewBudgets::default(),
            next_request: 1,
            out: Vec::new(),
            rng,
            params,
            counters: stats::Counters::default(),
            stopwatch: Instant::now,
        };
        for (a, b) in core.params.links.clone() {
            core.declare_link(a, b, Source::Config);
        }
        core
    }

    /// The configuration.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// What to do, in order; empties the queue.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn log(&mut self, level: Level, line: String) {
        self.out.push(Output::Log(level, line));
    }

    fn send(&mut self, conn: ConnId, frame: Frame) {
        self.out.push(Output::Send(conn, frame));
    }

    /// Send `request` to `node` if it is connected; its request id either way.
    fn send_request(&mut self, node: &PublicKey, request: &ManagerRequest) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        if let Some(conn) = self.registry.conn_of(node) {
            self.send(conn, request.frame(id));
        }
        id
    }

    /// Whether `key` may register.
    pub fn allowed(&self, key: &PublicKey) -> bool {
        self.params.allow.as_ref().is_none_or(|a| a.contains(key))
    }

    /// A connection proved it holds `key`'s private key. Its `REGISTER` comes next. A key
    /// outside `manager.allow` is told so in the answer to its `REGISTER` (the node then
    /// asks again only slowly) rather than closed without a word; until then, and after,
    /// it can do nothing else, and it is closed if it lingers ([`REGISTER_TIMEOUT`]).
    pub fn authenticated(&mut self, conn: ConnId, key: PublicKey, now: Instant) {
        self.registry.authenticate(conn, key, now);
    }

    /// A connection closed (by the peer, an error, or us).
    pub fn disconnected(&mut self, conn: ConnId, now: Instant) {
        let Some(key) = self.registry.forget(conn) else {
            return;
        };
        if self.registry.is_current(&key, conn) {
            self.log(Level::Info, format!("node {} disconnected", short(&key)));
            self.node_down(key, now);
        }
    }

    /// A frame arrived on an authenticated connection.
    pub fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(key) = self.registry.key_of(conn) else {
            self.out
                .push(Output::Close(conn, CloseReason::NotAuthenticated));
            return;
        };
        let registered = self.registry.is_current(&key, conn);
        if registered {
            self.registry.seen(&key, now);
        }
        if frame.is_reply() {
            if registered && frame.base_kind() == kind::INSTALL {
                self.install_reply(key, &frame, now);
            }
            if registered && frame.base_kind() == kind::NEIGHBOURS {
                // Applied, whether it says ok or not: its reports are from the new list.
                self.neighbours_answered(&key, frame.id);
            }
            // Replies to REMOVE carry nothing to act on.
            return;
        }
        let result = if !registered && frame.kind != kind::REGISTER {
            Err(ProtoError::new(
                ErrorKind::Unauthenticated,
                "REGISTER first",
            ))
        } else {
            match NodeRequest::parse(&frame) {
                Ok(request) => match self.request(conn, frame.id, key, request, now) {
                    Some(result) => result,
                    // Answered later (a route setup).
                    None => return,
                },
                Err(e) => Err(e),
            }
        };
        // A view of a very large mesh may not fit one frame: say so rather than send a
        // frame the encoder refuses (which would close the connection). A view served is
        // paid for from the node's budget, whether it fit or not: it was built.
        let view = matches!(frame.kind, kind::NODES | kind::ROUTE_LIST);
        let views = &mut self.views;
        let reply = result.and_then(|answer| {
            let reply = Frame::ok(frame.kind, frame.id, &answer);
            let len = reply.body.len();
            if view {
                views.spend(&key, len, now);
            }
            if len > MAX_FRAME - HEADER_AFTER_LEN - TAG_LEN {
                Err(ProtoError::new(
                    ErrorKind::BadRequest,
                    format!("the answer would be {len} bytes, more than a frame holds"),
                ))
            } else {
                Ok(reply)
            }
        });
        let reply = reply.unwrap_or_else(|e| {
            // A node hammering views gets a line now and then, not one per request.
            let quiet = e.kind == ErrorKind::RateLimited && !self.views.log_due(&key, now);
            if !quiet {
                self.log(
                    Level::Warn,
                    format!(
                        "request {:#04x} from {} refused: {e}",
                        frame.kind,
                        short(&key)
                    ),
                );
            }
            Frame::error(frame.kind, frame.id, &e)
        });
        self.send(conn, reply);
    }

    /// Serve one typed request from `key`: its answer, or `None` when the answer comes
    /// later.
    fn request(
        &mut self,
        conn: ConnId,
        id: u64,
        key: PublicKey,
        request: NodeRequest,
        now: Instant,
    ) -> Option<Result<Answer, ProtoError>> {
        Some(match request {
            NodeRequest::Register(r) => self.register(conn, key, r, now).map(Answer::Registered),
            NodeRequest::Heartbeat => Ok(Answer::Nothing),
            NodeRequest::LinkReport(r) => {
                self.link_report(key, &r, now);
                Ok(Answer::Nothing)
            }
            NodeRequest::LinkAdd(c) => self.link_add(key, c.peer.0, now).map(Answer::LinkAdded),
            NodeRequest::LinkRemove(c) => self
                .link_remove(key, c.peer.0, now)
                .map(|()| Answer::Nothing),
            NodeRequest::RouteAdd(r) => match self.route_add(conn, id, key, r, now) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            NodeRequest::RouteRemove(r) => self
                .route_remove(key, r.route, now)
                .map(|()| Answer::Nothing),
            NodeRequest::RouteList => self
                .views
                .admit(&key, now)
                .map(|()| Answer::Routes(self.route_list(&key, now))),
            NodeRequest::Nodes => self
                .views
                .admit(&key, now)
                .map(|()| Answer::Mesh(self.mesh(now))),
        })
    }

    /// The `nodes` view: every node and link.
    fn mesh(&self, now: Instant) -> Mesh {
        Mesh {
            nodes: self.registry.infos(now),
            links: self.links.infos(|k| self.registry.online(k)),
        }
    }

    /// Time passes: registrations and heartbeats due, setup deadlines, garbage, retries.
    pub fn tick(&mut self, now: Instant) {
        for conn in self.registry.take_late(now) {
            self.out.push(Output::Close(conn, CloseReason::NoRegister));
        }
        let silent_for = self.params.heartbeat * MISSED_HEARTBEATS;
        for (key, conn) in self.registry.silent(now, silent_for) {
            self.log(
                Level::Warn,
                format!(
                    "node {} missed {MISSED_HEARTBEATS} heartbeats: closing",
                    short(&key)
                ),
            );
            self.out
                .push(Output::Close(conn, CloseReason::HeartbeatsMissed));
            self.registry.forget(conn);
            self.node_down(key, now);
        }
        self.expire_setups(now);
        self.collect_garbage(now);
        self.views.prune(now);
        let due = self
            .routes
            .ids_where(|r| r.setup.is_none() && r.retry_at.is_some_and(|t| t <= now));
        for id in due {
            self.start_setup(id, now);
        }
    }

    /// When [`tick`](Self::tick) next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let heartbeats = self
            .registry
            .nodes
            .values()
            .filter(|n| n.conn.is_some())
            .map(|n| n.last_seen + self.params.heartbeat * MISSED_HEARTBEATS);
        let setups = self
            .routes
            .iter()
            .filter_map(|r| r.setup.as_ref().map(|s| s.deadline));
        let retries = self.routes.iter().filter_map(|r| r.retry_at);
        let gone = self.routes.iter().filter_map(|r| {
            let n = self.registry.nodes.get(&r.src)?;
            n.conn
                .is_none()
                .then_some(n.last_seen + self.params.rule_expiry)
        });
        heartbeats
            .chain(setups)
            .chain(retries)
            .chain(self.registry.next_registration_deadline())
            .chain(self.routes.next_orphan_deadline())
            .chain(gone)
            .min()
    }

    // ---- views for tests and the server ----

    /// Routes as the manager sees them at `now`.
    pub fn routes(&self, now: Instant) -> Vec<RouteInfo> {
        self.routes.iter().map(|r| self.info(r, now)).collect()
    }

    /// The key of an authenticated connection.
    pub fn conn_key(&self, conn: ConnId) -> Option<PublicKey> {
        self.registry.key_of(conn)
    }
}

#[cfg(test)]
mod tests;
