//! The node manager's state machine, sans-IO: registered nodes, links, routes and the
//! setup transactions that install them. The server feeds it what happened on connections
//! (an authenticated node, a frame, a closed connection) and the time; it answers with
//! [`Output`]s: frames to send, connections to close, lines to log.
//!
//! Route setup, per route:
//!
//! 1. compute a path over nodes that are online and links that are up
//!    ([`Topology::route`]), honouring the route's hop limits and avoid list;
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::proto::{
    ErrorKind, Frame, HEADER_AFTER_LEN, Install, Key, LinkChange, LinkInfo, LinkReport, MAX_FRAME,
    Mesh, Neighbour, Neighbours, NodeInfo, ProtoError, Register, Registered, Remove, RouteId,
    RouteInfo, RouteList, RouteRequest, RuleSpec, TAG_LEN, WirePrefix, kind,
};
use super::topology::{Constraints, LinkMetrics, RouteWeight, Router, Topology};

/// How long a failed route waits before the next attempt.
pub const RETRY: Duration = Duration::from_millis(500);

/// Most TUN addresses, declared links and owned routes one node may register.
pub const MAX_TUN_PREFIXES: usize = 16;
/// See [`MAX_TUN_PREFIXES`].
pub const MAX_LINKS_PER_NODE: usize = 256;
/// See [`MAX_TUN_PREFIXES`].
pub const MAX_ROUTES_PER_NODE: usize = 256;

/// How long rules of a route nobody claims are kept before the manager removes them (after
/// a manager restart, the route's source may register after its relays).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(15);

/// How long an authenticated connection may wait before it registers.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Missed heartbeats before a node is declared dead.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Identifies one connection of the server.
pub type ConnId = u64;

/// What the manager is configured with.
#[derive(Debug, Clone)]
pub struct Params {
    /// Only these keys may register (`None`: any key that proves itself).
    pub allow: Option<HashSet<PublicKey>>,
    /// Links declared in the manager's config.
    pub links: Vec<(PublicKey, PublicKey)>,
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
    Close(ConnId, String),
    /// A line for the log.
    Log(String),
}

/// Who declared a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Config,
    Node(PublicKey),
}

#[derive(Debug, Default)]
struct LinkEntry {
    sources: BTreeSet<Source>,
    /// The latest report from either end.
    report: Option<(Instant, LinkMetrics)>,
}

impl LinkEntry {
    /// In the manager's config, or declared by both ends.
    fn usable(&self, a: PublicKey, b: PublicKey) -> bool {
        self.sources.contains(&Source::Config)
            || (self.sources.contains(&Source::Node(a)) && self.sources.contains(&Source::Node(b)))
    }
}

#[derive(Debug)]
struct NodeEntry {
    conn: Option<ConnId>,
    endpoint: Option<SocketAddr>,
    tun: Vec<Prefix>,
    last_seen: Instant,
    /// Incoming ids in use at the node: its config's and the manager's rules.
    used: HashSet<u32>,
}

/// The rules of one path.
#[derive(Debug, Clone)]
struct Plan {
    path: Vec<PublicKey>,
    hops: Vec<(PublicKey, Vec<RuleSpec>)>,
}

impl Plan {
    fn rules_of(&self, node: &PublicKey) -> Option<&Vec<RuleSpec>> {
        self.hops.iter().find(|(k, _)| k == node).map(|(_, r)| r)
    }

    fn uses_link(&self, a: &PublicKey, b: &PublicKey) -> bool {
        self.path
            .windows(2)
            .any(|w| matches!(w, [x, y] if (x == a && y == b) || (x == b && y == a)))
    }
}

#[derive(Debug)]
struct Setup {
    plan: Plan,
    /// 1: relays and destination; 2: the source.
    phase: u8,
    /// Outstanding INSTALLs: request id -> hop.
    waiting: HashMap<u64, PublicKey>,
    deadline: Instant,
}

#[derive(Debug)]
struct Route {
    id: u64,
    src: PublicKey,
    dst: PublicKey,
    request: RouteRequest,
    active: Option<Plan>,
    setup: Option<Setup>,
    /// The `ROUTE_ADD` waiting for the first setup: connection and request id.
    waiter: Option<(ConnId, u64)>,
    repairs: u64,
    /// When to try again (a failed attempt, or a repair that could not start).
    retry_at: Option<Instant>,
    /// Rules of this route that nodes reported holding from before (a manager restart):
    /// removed once a new setup is active.
    stale: Vec<(PublicKey, u32)>,
    /// The active path crosses something that died: being rebuilt.
    broken: bool,
}

/// The manager.
#[derive(Debug)]
pub struct ManagerCore {
    params: Params,
    topology: Topology,
    /// Route search buffers, reused across computations.
    router: Router,
    nodes: HashMap<PublicKey, NodeEntry>,
    conns: HashMap<ConnId, PublicKey>,
    /// Authenticated connections that have not registered yet, since when.
    unregistered: HashMap<ConnId, Instant>,
    /// Rules nodes reported for routes nobody has claimed (yet): since when, and where.
    orphans: HashMap<u64, (Instant, Vec<(PublicKey, u32)>)>,
    links: BTreeMap<(PublicKey, PublicKey), LinkEntry>,
    routes: BTreeMap<u64, Route>,
    /// Outstanding INSTALL requests: request id -> route.
    installs: HashMap<u64, u64>,
    next_request: u64,
    out: Vec<Output>,
    /// Random source for route ids and incoming ids (a seeded xorshift in tests).
    rng: Rng,
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

fn link_key(a: PublicKey, b: PublicKey) -> (PublicKey, PublicKey) {
    if a <= b { (a, b) } else { (b, a) }
}

fn short(key: &PublicKey) -> String {
    key.to_string().chars().take(8).collect()
}

impl ManagerCore {
    /// A manager with no nodes yet.
    pub fn new(params: Params, rng: Rng) -> Self {
        let mut core = Self {
            topology: Topology::new(),
            router: Router::new(),
            nodes: HashMap::new(),
            conns: HashMap::new(),
            unregistered: HashMap::new(),
            orphans: HashMap::new(),
            links: BTreeMap::new(),
            routes: BTreeMap::new(),
            installs: HashMap::new(),
            next_request: 1,
            out: Vec::new(),
            rng,
            params,
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

    fn log(&mut self, line: String) {
        self.out.push(Output::Log(line));
    }

    fn send(&mut self, conn: ConnId, frame: Frame) {
        self.out.push(Output::Send(conn, frame));
    }

    fn send_to(&mut self, node: &PublicKey, frame: Frame) -> bool {
        match self.nodes.get(node).and_then(|n| n.conn) {
            Some(conn) => {
                self.send(conn, frame);
                true
            }
            None => false,
        }
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Whether `key` may register.
    pub fn allowed(&self, key: &PublicKey) -> bool {
        self.params.allow.as_ref().is_none_or(|a| a.contains(key))
    }

    /// A connection proved it holds `key`'s private key. Its `REGISTER` comes next.
    pub fn authenticated(&mut self, conn: ConnId, key: PublicKey, now: Instant) {
        if !self.allowed(&key) {
            self.log(format!("node {key} is not in manager.allow: closing"));
            self.out
                .push(Output::Close(conn, "key not allowed".to_owned()));
            return;
        }
        self.conns.insert(conn, key);
        self.unregistered.insert(conn, now);
    }

    /// A connection closed (by the peer, an error, or us).
    pub fn disconnected(&mut self, conn: ConnId, now: Instant) {
        self.unregistered.remove(&conn);
        let Some(key) = self.conns.remove(&conn) else {
            return;
        };
        let is_current = self.nodes.get(&key).is_some_and(|n| n.conn == Some(conn));
        if is_current {
            self.log(format!("node {} disconnected", short(&key)));
            self.node_down(key, now);
        }
    }

    /// A frame arrived on an authenticated connection.
    pub fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(&key) = self.conns.get(&conn) else {
            self.out
                .push(Output::Close(conn, "not authenticated".to_owned()));
            return;
        };
        let registered = self.nodes.get(&key).is_some_and(|n| n.conn == Some(conn));
        if let Some(node) = self.nodes.get_mut(&key)
            && registered
        {
            node.last_seen = now;
        }
        if frame.is_reply() {
            if registered && frame.base_kind() == kind::INSTALL {
                self.install_reply(key, &frame, now);
            }
            // Replies to REMOVE and NEIGHBOURS carry nothing to act on.
            return;
        }
        let result = match frame.kind {
            kind::REGISTER => frame
                .parse::<Register>()
                .and_then(|r| self.register(conn, key, r, now)),
            _ if !registered => Err(ProtoError::new(
                ErrorKind::Unauthenticated,
                "REGISTER first",
            )),
            kind::HEARTBEAT => Ok(serde_json::Value::Null),
            kind::LINK_REPORT => frame
                .parse::<LinkReport>()
                .map(|r| self.link_report(key, &r, now)),
            kind::LINK_ADD => frame
                .parse::<LinkChange>()
                .and_then(|c| self.link_add(key, c.peer.0, now)),
            kind::LINK_REMOVE => frame
                .parse::<LinkChange>()
                .and_then(|c| self.link_remove(key, c.peer.0, now)),
            kind::ROUTE_ADD => match frame.parse::<RouteRequest>() {
                Ok(request) => match self.route_add(conn, frame.id, key, request, now) {
                    // The reply comes when the setup ends.
                    Ok(()) => return,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            kind::ROUTE_REMOVE => frame
                .parse::<RouteId>()
                .and_then(|r| self.route_remove(key, r.route, now)),
            kind::ROUTE_LIST => Ok(self.route_list(&key)),
            kind::NODES => Ok(self.mesh(now)),
            other => Err(ProtoError::new(
                ErrorKind::BadRequest,
                format!("unknown request kind {other:#04x}"),
            )),
        };
        // A view of a very large mesh may not fit one frame: say so rather than send a
        // frame the encoder refuses (which would close the connection).
        let result = result.and_then(|body| {
            let len = serde_json::to_vec(&body).map_or(usize::MAX, |b| b.len());
            if len > MAX_FRAME - HEADER_AFTER_LEN - TAG_LEN - 16 {
                Err(ProtoError::new(
                    ErrorKind::BadRequest,
                    format!("the answer would be {len} bytes, more than a frame holds"),
                ))
            } else {
                Ok(body)
            }
        });
        let reply = match result {
            Ok(body) => Frame::ok(frame.kind, frame.id, &body),
            Err(e) => {
                self.log(format!(
                    "request {:#04x} from {} refused: {e}",
                    frame.kind,
                    short(&key)
                ));
                Frame::error(frame.kind, frame.id, &e)
            }
        };
        self.send(conn, reply);
    }

    /// Time passes: setup deadlines, heartbeats, retries.
    pub fn tick(&mut self, now: Instant) {
        let late: Vec<ConnId> = self
            .unregistered
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) > REGISTER_TIMEOUT)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in late {
            self.unregistered.remove(&conn);
            self.conns.remove(&conn);
            self.out.push(Output::Close(
                conn,
                format!("no REGISTER within {} s", REGISTER_TIMEOUT.as_secs()),
            ));
        }
        let silent_for = self.params.heartbeat * MISSED_HEARTBEATS;
        let dead: Vec<(PublicKey, ConnId)> = self
            .nodes
            .iter()
            .filter_map(|(k, n)| {
                let conn = n.conn?;
                (now.saturating_duration_since(n.last_seen) > silent_for).then_some((*k, conn))
            })
            .collect();
        for (key, conn) in dead {
            self.log(format!(
                "node {} missed {MISSED_HEARTBEATS} heartbeats: closing",
                short(&key)
            ));
            self.out
                .push(Output::Close(conn, "heartbeats missed".to_owned()));
            self.conns.remove(&conn);
            self.node_down(key, now);
        }
        let expired: Vec<u64> = self
            .routes
            .values()
            .filter(|r| r.setup.as_ref().is_some_and(|s| s.deadline <= now))
            .map(|r| r.id)
            .collect();
        for id in expired {
            let late: Vec<String> = self
                .routes
                .get(&id)
                .and_then(|r| r.setup.as_ref())
                .map(|s| s.waiting.values().map(short).collect())
                .unwrap_or_default();
            self.fail_setup(
                id,
                ProtoError::new(
                    ErrorKind::SetupFailed,
                    format!("no acknowledgement in time from {}", late.join(", ")),
                ),
                now,
            );
        }
        self.collect_garbage(now);
        let due: Vec<u64> = self
            .routes
            .values()
            .filter(|r| r.setup.is_none() && r.retry_at.is_some_and(|t| t <= now))
            .map(|r| r.id)
            .collect();
        for id in due {
            self.start_setup(id, now);
        }
    }

    /// Forget route `id`: roll back its setup, remove its rules on every hop.
    fn drop_route(&mut self, id: u64, why: &str, now: Instant) {
        if self.routes.get(&id).is_some_and(|r| r.setup.is_some()) {
            if let Some(route) = self.routes.get_mut(&id) {
                route.waiter = None;
            }
            self.fail_setup(id, ProtoError::new(ErrorKind::SetupFailed, why), now);
        }
        if let Some(route) = self.routes.remove(&id) {
            if let Some(plan) = &route.active {
                self.remove_plan(id, plan);
            }
            self.remove_stale(id, &route.stale);
            self.log(format!("route {id:016x} dropped: {why}"));
        }
    }

    /// Orphaned rules past their grace, and routes whose source has been gone longer than
    /// rules live: removed.
    fn collect_garbage(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .orphans
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) > ORPHAN_GRACE)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, held)) = self.orphans.remove(&id) {
                self.log(format!(
                    "rules of route {id:016x}, which no source claimed, removed"
                ));
                self.remove_stale(id, &held);
            }
        }
        let gone: Vec<u64> = self
            .routes
            .values()
            .filter(|r| {
                self.nodes.get(&r.src).is_none_or(|n| {
                    n.conn.is_none()
                        && now.saturating_duration_since(n.last_seen) > self.params.rule_expiry
                })
            })
            .map(|r| r.id)
            .collect();
        for id in gone {
            self.drop_route(id, "its source has been away longer than rules live", now);
        }
    }

    /// When [`tick`](Self::tick) next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let heartbeats = self
            .nodes
            .values()
            .filter(|n| n.conn.is_some())
            .map(|n| n.last_seen + self.params.heartbeat * MISSED_HEARTBEATS);
        let setups = self
            .routes
            .values()
            .filter_map(|r| r.setup.as_ref().map(|s| s.deadline));
        let retries = self.routes.values().filter_map(|r| r.retry_at);
        let registrations = self.unregistered.values().map(|t| *t + REGISTER_TIMEOUT);
        let orphans = self.orphans.values().map(|(t, _)| *t + ORPHAN_GRACE);
        let gone = self.routes.values().filter_map(|r| {
            let n = self.nodes.get(&r.src)?;
            n.conn
                .is_none()
                .then_some(n.last_seen + self.params.rule_expiry)
        });
        heartbeats
            .chain(setups)
            .chain(retries)
            .chain(registrations)
            .chain(orphans)
            .chain(gone)
            .min()
    }

    // ---- registration and nodes ----

    /// Check a registration before anything of it is applied.
    fn check_register(&self, key: &PublicKey, register: &Register) -> Result<(), ProtoError> {
        let bad = |m: String| Err(ProtoError::new(ErrorKind::BadRequest, m));
        if register.tun.len() > MAX_TUN_PREFIXES {
            return bad(format!("at most {MAX_TUN_PREFIXES} TUN addresses"));
        }
        if register.links.len() > MAX_LINKS_PER_NODE {
            return bad(format!("at most {MAX_LINKS_PER_NODE} declared links"));
        }
        if register.routes.len() > MAX_ROUTES_PER_NODE {
            return bad(format!("at most {MAX_ROUTES_PER_NODE} owned routes"));
        }
        for p in &register.tun {
            let host = if p.0.addr().is_ipv4() { 32 } else { 128 };
            if p.0.len() != host {
                return bad(format!(
                    "TUN address {} is not a host address (/32 or /128)",
                    p.0
                ));
            }
            let holder = self
                .nodes
                .iter()
                .find(|(k, n)| *k != key && n.conn.is_some() && n.tun.contains(&p.0));
            if let Some((other, _)) = holder {
                return Err(ProtoError::new(
                    ErrorKind::NotAllowed,
                    format!("address {} belongs to node {other}", p.0),
                ));
            }
        }
        Ok(())
    }

    fn register(
        &mut self,
        conn: ConnId,
        key: PublicKey,
        register: Register,
        now: Instant,
    ) -> Result<serde_json::Value, ProtoError> {
        self.check_register(&key, &register)?;
        self.unregistered.remove(&conn);
        let previous = self.nodes.get(&key).and_then(|n| n.conn);
        if let Some(old) = previous.filter(|&c| c != conn) {
            self.out.push(Output::Close(
                old,
                "replaced by a new connection".to_owned(),
            ));
            self.conns.remove(&old);
            // INSTALLs in flight went to the old connection: try those setups again.
            let stuck: Vec<u64> = self
                .routes
                .values()
                .filter(|r| r.setup.as_ref().is_some_and(|s| s.plan.path.contains(&key)))
                .map(|r| r.id)
                .collect();
            for id in stuck {
                self.fail_setup(
                    id,
                    ProtoError::new(
                        ErrorKind::SetupFailed,
                        format!("node {} reconnected during the setup", short(&key)),
                    ),
                    now,
                );
            }
        }
        // In use at the node: its config's ids, the rules it holds, and what the manager's
        // plans give it (a restarted node lost the rest).
        let mut used: HashSet<u32> = register.reserved.iter().copied().collect();
        used.extend(register.rules.iter().map(|r| r.in_id));
        for route in self.routes.values() {
            for plan in route
                .active
                .iter()
                .chain(route.setup.as_ref().map(|s| &s.plan))
            {
                if let Some(rules) = plan.rules_of(&key) {
                    used.extend(rules.iter().map(RuleSpec::in_id));
                }
            }
        }
        let entry = self.nodes.entry(key).or_insert_with(|| NodeEntry {
            conn: None,
            endpoint: None,
            tun: Vec::new(),
            last_seen: now,
            used: HashSet::new(),
        });
        entry.conn = Some(conn);
        entry.endpoint = register.endpoint;
        entry.tun = register.tun.iter().map(|p| p.0).collect();
        entry.last_seen = now;
        entry.used = used;
        let _ = self.topology.add_node(key);
        let _ = self.topology.set_node_up(key, true);
        self.log(format!(
            "node {} registered: endpoint {}, {} owned routes, {} rules held",
            short(&key),
            register
                .endpoint
                .map_or_else(|| "none".to_owned(), |e| e.to_string()),
            register.routes.len(),
            register.rules.len()
        ));
        for peer in &register.links {
            if peer.0 != key {
                self.declare_link(key, peer.0, Source::Node(key));
            }
        }
        // Routes this node owns that the manager does not know (it restarted). Only a
        // node holding the route's source end may claim it, with valid constraints.
        let ends: HashSet<u64> = register
            .rules
            .iter()
            .filter(|r| r.end)
            .map(|r| r.route)
            .collect();
        for request in register.routes {
            let Some(id) = request.id.filter(|id| *id != 0) else {
                continue;
            };
            if self.routes.contains_key(&id) {
                continue;
            }
            if !ends.contains(&id) {
                self.log(format!(
                    "route {id:016x} of {} not adopted: the node holds no end of it",
                    short(&key)
                ));
                continue;
            }
            let c = self.constraints(&request);
            if request.dst.0 == key || c.min_hops == 0 || c.min_hops > c.max_hops {
                continue;
            }
            self.routes.insert(
                id,
                Route {
                    id,
                    src: key,
                    dst: request.dst.0,
                    request,
                    active: None,
                    setup: None,
                    waiter: None,
                    repairs: 0,
                    retry_at: Some(now),
                    stale: Vec::new(),
                    broken: false,
                },
            );
            self.log(format!(
                "route {id:016x} of {} adopted: setting it up",
                short(&key)
            ));
            if let Some((_, held)) = self.orphans.remove(&id)
                && let Some(route) = self.routes.get_mut(&id)
            {
                route.stale.extend(held);
            }
        }
        // Rules the node holds: current if a plan (active or being set up) has them,
        // stale for a known route, orphaned for an unknown one (removed if no source
        // claims the route within ORPHAN_GRACE).
        let held: HashSet<(u64, u32)> = register.rules.iter().map(|r| (r.route, r.in_id)).collect();
        for rule in &register.rules {
            let Some(route) = self.routes.get_mut(&rule.route) else {
                self.orphans
                    .entry(rule.route)
                    .or_insert_with(|| (now, Vec::new()))
                    .1
                    .push((key, rule.in_id));
                continue;
            };
            let current = route
                .active
                .iter()
                .chain(route.setup.as_ref().map(|s| &s.plan))
                .filter_map(|p| p.rules_of(&key))
                .any(|rules| rules.iter().any(|s| s.in_id() == rule.in_id));
            if !current && !route.stale.contains(&(key, rule.in_id)) {
                route.stale.push((key, rule.in_id));
            }
        }
        // Active routes that need this node's rules, which it no longer holds (it
        // restarted): rebuild them.
        let lost: Vec<u64> = self
            .routes
            .values()
            .filter(|r| {
                r.active
                    .as_ref()
                    .and_then(|p| p.rules_of(&key))
                    .is_some_and(|rules| rules.iter().any(|s| !held.contains(&(r.id, s.in_id()))))
            })
            .map(|r| r.id)
            .collect();
        for id in lost {
            if let Some(route) = self.routes.get_mut(&id) {
                route.broken = true;
                route.retry_at = Some(now);
            }
        }
        // Waiting routes may be possible now.
        for route in self.routes.values_mut() {
            if route.setup.is_none() && (route.active.is_none() || route.broken) {
                route.retry_at = Some(now);
            }
        }
        self.push_neighbours_around(&key);
        self.tick(now);
        Ok(serde_json::to_value(Registered {
            heartbeat_ms: u64::try_from(self.params.heartbeat.as_millis()).unwrap_or(u64::MAX),
            expire_ms: u64::try_from(self.params.rule_expiry.as_millis()).unwrap_or(u64::MAX),
        })
        .unwrap_or_default())
    }

    fn node_down(&mut self, key: PublicKey, now: Instant) {
        if let Some(node) = self.nodes.get_mut(&key) {
            node.conn = None;
        }
        let _ = self.topology.set_node_up(key, false);
        let ids: Vec<u64> = self.routes.keys().copied().collect();
        for id in ids {
            let Some(route) = self.routes.get(&id) else {
                continue;
            };
            let in_setup = route
                .setup
                .as_ref()
                .is_some_and(|s| s.plan.path.contains(&key));
            let crosses = route.active.as_ref().is_some_and(|p| p.path.contains(&key));
            let end = route.src == key || route.dst == key;
            if let Some(route) = self.routes.get_mut(&id)
                && let Some((conn, _)) = route.waiter
                && !self.conns.contains_key(&conn)
            {
                // Its requester is gone and never learned the id: the route goes too.
                route.waiter = None;
                if route.active.is_none() {
                    self.drop_route(id, "its requester disconnected during the setup", now);
                    continue;
                }
            }
            if in_setup {
                self.fail_setup(
                    id,
                    ProtoError::new(
                        ErrorKind::SetupFailed,
                        format!("node {} went down", short(&key)),
                    ),
                    now,
                );
            } else if crosses && !end {
                self.log(format!(
                    "route {id:016x} crosses {}, which is down: repairing",
                    short(&key)
                ));
                if let Some(route) = self.routes.get_mut(&id) {
                    route.broken = true;
                }
                self.start_setup(id, now);
            }
        }
        self.push_neighbours_around(&key);
    }

    // ---- links ----

    /// Record that `source` declares the link a - b. The link is routed over once the
    /// manager's config has it or both its ends declared it: one node alone cannot pull
    /// other nodes' routes through itself.
    fn declare_link(&mut self, a: PublicKey, b: PublicKey, source: Source) -> bool {
        let entry = self.links.entry(link_key(a, b)).or_default();
        entry.sources.insert(source);
        if !entry.usable(a, b) {
            return false;
        }
        for k in [a, b] {
            let _ = self.topology.add_node(k);
            let online = self.nodes.get(&k).is_some_and(|n| n.conn.is_some());
            let _ = self.topology.set_node_up(k, online);
        }
        let _ = self.topology.add_link(a, b);
        self.apply_link_metrics(a, b);
        true
    }

    fn apply_link_metrics(&mut self, a: PublicKey, b: PublicKey) {
        let metrics = self
            .links
            .get(&link_key(a, b))
            .and_then(|l| l.report.map(|(_, m)| m))
            .unwrap_or(LinkMetrics {
                rtt: None,
                loss: 0.0,
                up: true,
            });
        let _ = self.topology.set_link_metrics(a, b, metrics);
    }

    fn link_add(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        now: Instant,
    ) -> Result<serde_json::Value, ProtoError> {
        if peer == key {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                "a link joins two different nodes",
            ));
        }
        let declared = self.links.get(&link_key(key, peer)).map_or(0, |l| {
            l.sources
                .iter()
                .filter(|s| matches!(s, Source::Node(_)))
                .count()
        });
        if declared == 0 && self.links_declared_by(&key) >= MAX_LINKS_PER_NODE {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                format!("at most {MAX_LINKS_PER_NODE} declared links per node"),
            ));
        }
        let usable = self.declare_link(key, peer, Source::Node(key));
        self.log(format!(
            "link {} - {} declared by {}{}",
            short(&key),
            short(&peer),
            short(&key),
            if usable {
                ""
            } else {
                " (waiting for the other end)"
            }
        ));
        self.push_neighbours_around(&key);
        // Routes waiting for a path may have one now.
        for route in self.routes.values_mut() {
            if route.setup.is_none() && (route.active.is_none() || route.broken) {
                route.retry_at = Some(now);
            }
        }
        Ok(serde_json::json!({ "usable": usable }))
    }

    fn links_declared_by(&self, key: &PublicKey) -> usize {
        self.links
            .values()
            .filter(|l| l.sources.contains(&Source::Node(*key)))
            .count()
    }

    fn link_remove(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        now: Instant,
    ) -> Result<serde_json::Value, ProtoError> {
        let lk = link_key(key, peer);
        let Some(entry) = self.links.get_mut(&lk) else {
            return Err(ProtoError::new(ErrorKind::BadRequest, "no such link"));
        };
        if !entry.sources.remove(&Source::Node(key)) {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                "this node did not declare that link",
            ));
        }
        let usable = entry.usable(key, peer);
        if entry.sources.is_empty() {
            self.links.remove(&lk);
        }
        if !usable && self.topology.remove_link(key, peer) {
            self.repair_link(key, peer, now);
        }
        self.push_neighbours_around(&key);
        self.push_neighbours_around(&peer);
        Ok(serde_json::Value::Null)
    }

    fn link_report(
        &mut self,
        key: PublicKey,
        report: &LinkReport,
        now: Instant,
    ) -> serde_json::Value {
        for m in &report.links {
            let peer = m.peer.0;
            let Some(entry) = self.links.get_mut(&link_key(key, peer)) else {
                continue;
            };
            let was_up = entry.report.is_none_or(|(_, r)| r.up);
            let metrics = LinkMetrics {
                rtt: m.rtt_us.map(Duration::from_micros),
                loss: m.loss.clamp(0.0, 1.0),
                up: m.up,
            };
            entry.report = Some((now, metrics));
            let _ = self.topology.set_link_metrics(key, peer, metrics);
            if was_up && !m.up {
                self.log(format!(
                    "link {} - {} is down (reported by {})",
                    short(&key),
                    short(&peer),
                    short(&key)
                ));
                self.repair_link(key, peer, now);
            } else if !was_up && m.up {
                self.log(format!("link {} - {} is up", short(&key), short(&peer)));
                for route in self.routes.values_mut() {
                    if route.setup.is_none() && (route.active.is_none() || route.broken) {
                        route.retry_at = Some(now);
                    }
                }
            }
        }
        serde_json::Value::Null
    }

    fn repair_link(&mut self, a: PublicKey, b: PublicKey, now: Instant) {
        let in_setup: Vec<u64> = self
            .routes
            .values()
            .filter(|r| r.setup.as_ref().is_some_and(|s| s.plan.uses_link(&a, &b)))
            .map(|r| r.id)
            .collect();
        for id in in_setup {
            self.fail_setup(
                id,
                ProtoError::new(
                    ErrorKind::SetupFailed,
                    format!("link {} - {} went down", short(&a), short(&b)),
                ),
                now,
            );
        }
        let ids: Vec<u64> = self
            .routes
            .values()
            .filter(|r| r.active.as_ref().is_some_and(|p| p.uses_link(&a, &b)))
            .map(|r| r.id)
            .collect();
        for id in ids {
            if let Some(route) = self.routes.get_mut(&id) {
                route.broken = true;
                if route.setup.is_some() {
                    continue;
                }
            }
            self.log(format!("route {id:016x} crosses a dead link: repairing"));
            self.start_setup(id, now);
        }
    }

    /// Tell `key` and its neighbours whom to probe (online ends of usable links).
    fn push_neighbours_around(&mut self, key: &PublicKey) {
        let mut targets = vec![*key];
        targets.extend(self.topology.neighbours(*key).map(|(k, _)| k));
        for node in targets {
            let neighbours: Vec<Neighbour> = self
                .topology
                .neighbours(node)
                .filter_map(|(peer, _)| {
                    let n = self.nodes.get(&peer)?;
                    n.conn?;
                    Some(Neighbour {
                        peer: Key(peer),
                        endpoint: n.endpoint?,
                    })
                })
                .collect();
            let id = self.request_id();
            self.send_to(
                &node,
                Frame::request(kind::NEIGHBOURS, id, &Neighbours { neighbours }),
            );
        }
    }

    // ---- routes ----

    fn constraints(&self, request: &RouteRequest) -> Constraints {
        Constraints {
            min_hops: request.min_hops.unwrap_or(self.params.min_hops),
            max_hops: request.max_hops.unwrap_or(self.params.max_hops),
            avoid: request.avoid.iter().map(|k| k.0).collect(),
            weight: request.weight.unwrap_or(self.params.weight),
        }
    }

    fn route_add(
        &mut self,
        conn: ConnId,
        request_id: u64,
        src: PublicKey,
        mut request: RouteRequest,
        now: Instant,
    ) -> Result<(), ProtoError> {
        if request.dst.0 == src {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                "a route goes to another node",
            ));
        }
        if !self.nodes.contains_key(&request.dst.0) {
            return Err(ProtoError::new(
                ErrorKind::UnknownNode,
                format!("no node {} has registered", request.dst.0),
            ));
        }
        if self.routes.values().filter(|r| r.src == src).count() >= MAX_ROUTES_PER_NODE {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                format!("at most {MAX_ROUTES_PER_NODE} routes per node"),
            ));
        }
        let c = self.constraints(&request);
        if c.min_hops == 0 || c.min_hops > c.max_hops {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                format!("hop limits {}..{} are empty", c.min_hops, c.max_hops),
            ));
        }
        let id = loop {
            let id = self.rng.next_u64();
            if id != 0 && !self.routes.contains_key(&id) {
                break id;
            }
        };
        request.id = Some(id);
        self.routes.insert(
            id,
            Route {
                id,
                src,
                dst: request.dst.0,
                request,
                active: None,
                setup: None,
                waiter: Some((conn, request_id)),
                repairs: 0,
                retry_at: None,
                stale: Vec::new(),
                broken: false,
            },
        );
        self.start_setup(id, now);
        Ok(())
    }

    fn route_remove(
        &mut self,
        key: PublicKey,
        id: u64,
        now: Instant,
    ) -> Result<serde_json::Value, ProtoError> {
        let Some(route) = self.routes.get(&id) else {
            return Err(ProtoError::new(
                ErrorKind::UnknownRoute,
                format!("no route {id:016x}"),
            ));
        };
        if route.src != key {
            return Err(ProtoError::new(
                ErrorKind::UnknownRoute,
                format!("no route {id:016x} from this node"),
            ));
        }
        if route.setup.is_some() {
            self.fail_setup(
                id,
                ProtoError::new(ErrorKind::SetupFailed, "the route was removed"),
                now,
            );
        }
        if let Some(route) = self.routes.remove(&id) {
            if let Some(plan) = &route.active {
                self.remove_plan(id, plan);
            }
            self.remove_stale(id, &route.stale);
            self.log(format!("route {id:016x} removed by {}", short(&key)));
        }
        Ok(serde_json::Value::Null)
    }

    fn info(&self, route: &Route) -> RouteInfo {
        let c = self.constraints(&route.request);
        let state = if route.active.is_some() && !route.broken {
            "active"
        } else if route.setup.is_some() || route.broken {
            "repairing"
        } else {
            "waiting"
        };
        RouteInfo {
            id: route.id,
            src: Key(route.src),
            dst: Key(route.dst),
            path: route
                .active
                .as_ref()
                .map(|p| p.path.iter().map(|k| Key(*k)).collect())
                .unwrap_or_default(),
            state: state.to_owned(),
            min_hops: c.min_hops,
            max_hops: c.max_hops,
            avoid: route.request.avoid.clone(),
            weight: route.request.weight.unwrap_or(self.params.weight),
            repairs: route.repairs,
        }
    }

    fn route_list(&self, key: &PublicKey) -> serde_json::Value {
        let routes = self
            .routes
            .values()
            .filter(|r| r.src == *key || r.dst == *key)
            .map(|r| self.info(r))
            .collect();
        serde_json::to_value(RouteList { routes }).unwrap_or_default()
    }

    fn mesh(&self, now: Instant) -> serde_json::Value {
        let mut nodes: Vec<NodeInfo> = self
            .nodes
            .iter()
            .map(|(k, n)| NodeInfo {
                key: Key(*k),
                endpoint: n.endpoint,
                tun: n.tun.iter().map(|p| WirePrefix(*p)).collect(),
                online: n.conn.is_some(),
                last_seen_ms: u64::try_from(now.saturating_duration_since(n.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        nodes.sort_by_key(|n| n.key);
        let links = self
            .links
            .iter()
            .map(|((a, b), l)| {
                let metrics = l.report.map(|(_, m)| m);
                let online = |k: &PublicKey| self.nodes.get(k).is_some_and(|n| n.conn.is_some());
                LinkInfo {
                    a: Key(*a),
                    b: Key(*b),
                    source: l
                        .sources
                        .iter()
                        .map(|s| match s {
                            Source::Config => "config".to_owned(),
                            Source::Node(k) => short(k),
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                        + if l.usable(*a, *b) {
                            ""
                        } else {
                            " (one end only)"
                        },
                    up: l.usable(*a, *b) && metrics.is_none_or(|m| m.up) && online(a) && online(b),
                    rtt_us: metrics
                        .and_then(|m| m.rtt)
                        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    loss: metrics.map_or(0.0, |m| m.loss),
                }
            })
            .collect();
        serde_json::to_value(Mesh { nodes, links }).unwrap_or_default()
    }

    fn fresh_id(&mut self, node: &PublicKey) -> u32 {
        let mut fallback = 0u32;
        loop {
            // If the random source ever kept failing (all zeros), count instead.
            fallback = fallback.wrapping_add(1);
            let id = match (self.rng.next_u64() >> 32) as u32 {
                0 => fallback,
                id => id,
            };
            if id == 0 {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(node)
                && n.used.insert(id)
            {
                return id;
            }
            if !self.nodes.contains_key(node) {
                return id;
            }
        }
    }

    /// Compute a path and the rules of every hop.
    fn plan(&mut self, route_id: u64) -> Result<Plan, ProtoError> {
        let route = self
            .routes
            .get(&route_id)
            .ok_or_else(|| ProtoError::new(ErrorKind::UnknownRoute, "gone"))?;
        let (src, dst) = (route.src, route.dst);
        let constraints = self.constraints(&route.request);
        let path = self
            .router
            .route(&self.topology, src, dst, &constraints)
            .map_err(|e| ProtoError::new(ErrorKind::NoPath, e.to_string()))?
            .nodes;
        let mut endpoints = Vec::with_capacity(path.len());
        for k in &path {
            let endpoint = self.nodes.get(k).and_then(|n| n.endpoint).ok_or_else(|| {
                ProtoError::new(
                    ErrorKind::NoPath,
                    format!("node {} has no transport endpoint", short(k)),
                )
            })?;
            endpoints.push(endpoint);
        }
        let tun_of = |k: &PublicKey| -> Vec<WirePrefix> {
            self.nodes
                .get(k)
                .map(|n| n.tun.iter().map(|p| WirePrefix(*p)).collect())
                .unwrap_or_default()
        };
        let (src_tun, dst_tun) = (tun_of(&src), tun_of(&dst));
        let last = path.len().saturating_sub(1);
        // fwd[i]: the id packets from src carry when they reach path[i] (i >= 1);
        // rev[i]: the id packets from dst carry when they reach path[i] (i < last).
        let mut fwd = Vec::with_capacity(path.len());
        let mut rev = Vec::with_capacity(path.len());
        for (i, k) in path.iter().enumerate() {
            fwd.push(if i > 0 { self.fresh_id(k) } else { 0 });
            rev.push(if i < last { self.fresh_id(k) } else { 0 });
        }
        let id = |v: &[u32], i: Option<usize>| i.and_then(|i| v.get(i)).copied().unwrap_or(0);
        let unreachable = || ProtoError::new(ErrorKind::NoPath, "path shorter than two nodes");
        let mut hops = Vec::with_capacity(path.len());
        for (i, k) in path.iter().enumerate() {
            let (before, after) = (i.checked_sub(1), Some(i + 1));
            let prev_ep = before.and_then(|b| endpoints.get(b)).copied();
            let next_ep = endpoints.get(i + 1).copied();
            let rules = match (prev_ep, next_ep) {
                (None, Some(next)) => vec![RuleSpec::End {
                    peer: Key(dst),
                    prefixes: dst_tun.clone(),
                    first_hop: next,
                    out_id: id(&fwd, after),
                    in_id: id(&rev, Some(i)),
                    prev_hop: next,
                }],
                (Some(prev), None) => vec![RuleSpec::End {
                    peer: Key(src),
                    prefixes: src_tun.clone(),
                    first_hop: prev,
                    out_id: id(&rev, before),
                    in_id: id(&fwd, Some(i)),
                    prev_hop: prev,
                }],
                (Some(prev), Some(next)) => vec![
                    RuleSpec::Relay {
                        in_id: id(&fwd, Some(i)),
                        prev_hop: prev,
                        out_id: id(&fwd, after),
                        next_hop: next,
                    },
                    RuleSpec::Relay {
                        in_id: id(&rev, Some(i)),
                        prev_hop: next,
                        out_id: id(&rev, before),
                        next_hop: prev,
                    },
                ],
                (None, None) => return Err(unreachable()),
            };
            hops.push((*k, rules));
        }
        Ok(Plan { path, hops })
    }

    fn start_setup(&mut self, id: u64, now: Instant) {
        let Some(route) = self.routes.get_mut(&id) else {
            return;
        };
        route.retry_at = None;
        if route.setup.is_some() {
            return;
        }
        let plan = match self.plan(id) {
            Ok(plan) => plan,
            Err(e) => {
                self.setup_impossible(id, e, now);
                return;
            }
        };
        let path: Vec<String> = plan.path.iter().map(short).collect();
        self.log(format!("route {id:016x}: setting up {}", path.join(" -> ")));
        let mut waiting = HashMap::new();
        let hops: Vec<(PublicKey, Vec<RuleSpec>)> = plan.hops.iter().skip(1).cloned().collect();
        for (node, rules) in hops {
            let request = self.request_id();
            waiting.insert(request, node);
            self.installs.insert(request, id);
            let install = Install {
                route: id,
                rules,
                expire_ms: self.expire_ms(),
            };
            self.send_to(&node, Frame::request(kind::INSTALL, request, &install));
        }
        let deadline = now + self.params.setup_timeout;
        if let Some(route) = self.routes.get_mut(&id) {
            route.setup = Some(Setup {
                plan,
                phase: 1,
                waiting,
                deadline,
            });
        }
    }

    fn expire_ms(&self) -> u64 {
        u64::try_from(self.params.rule_expiry.as_millis()).unwrap_or(u64::MAX)
    }

    /// No path (or no endpoint): tell the waiting requester, or try again later.
    fn setup_impossible(&mut self, id: u64, error: ProtoError, now: Instant) {
        let Some(route) = self.routes.get_mut(&id) else {
            return;
        };
        if let Some((conn, request)) = route.waiter.take() {
            let first = route.active.is_none();
            self.send(conn, Frame::error(kind::ROUTE_ADD, request, &error));
            if first {
                self.routes.remove(&id);
                self.log(format!("route {id:016x} refused: {error}"));
                return;
            }
        } else {
            route.retry_at = Some(now + RETRY);
        }
        self.log(format!("route {id:016x}: {error}; retrying"));
    }

    fn install_reply(&mut self, node: PublicKey, frame: &Frame, now: Instant) {
        let Some(&id) = self.installs.get(&frame.id) else {
            return;
        };
        let Some(setup) = self.routes.get_mut(&id).and_then(|r| r.setup.as_mut()) else {
            return;
        };
        // Only the hop the INSTALL went to can answer it: a reply from anyone else is
        // ignored without touching the outstanding request.
        if setup.waiting.get(&frame.id) != Some(&node) {
            return;
        }
        self.installs.remove(&frame.id);
        setup.waiting.remove(&frame.id);
        if let Err(e) = frame.reply::<serde_json::Value>() {
            self.fail_setup(
                id,
                ProtoError::new(
                    ErrorKind::SetupFailed,
                    format!("node {} refused its rules: {e}", short(&node)),
                ),
                now,
            );
            return;
        }
        if !setup.waiting.is_empty() {
            return;
        }
        if setup.phase == 1 {
            setup.phase = 2;
            // The source gets the whole timeout for its own rules.
            setup.deadline = now + self.params.setup_timeout;
            let src = setup.plan.path.first().copied();
            let rules = setup.plan.hops.first().map(|(_, r)| r.clone());
            if let (Some(src), Some(rules)) = (src, rules) {
                let request = self.request_id();
                let expire_ms = self.expire_ms();
                if let Some(setup) = self.routes.get_mut(&id).and_then(|r| r.setup.as_mut()) {
                    setup.waiting.insert(request, src);
                }
                self.installs.insert(request, id);
                let install = Install {
                    route: id,
                    rules,
                    expire_ms,
                };
                self.send_to(&src, Frame::request(kind::INSTALL, request, &install));
            }
            return;
        }
        self.commit(id);
    }

    fn commit(&mut self, id: u64) {
        let Some(route) = self.routes.get_mut(&id) else {
            return;
        };
        let Some(setup) = route.setup.take() else {
            return;
        };
        let old = route.active.replace(setup.plan);
        if old.is_some() {
            route.repairs += 1;
        }
        route.broken = false;
        let stale = std::mem::take(&mut route.stale);
        let waiter = route.waiter.take();
        let info = self.routes.get(&id).map(|r| self.info(r));
        if let Some(old) = old {
            self.remove_plan(id, &old);
        }
        self.remove_stale(id, &stale);
        if let Some(info) = info {
            let path: Vec<String> = info.path.iter().map(|k| short(&k.0)).collect();
            self.log(format!("route {id:016x} active: {}", path.join(" -> ")));
            if let Some((conn, request)) = waiter {
                self.send(conn, Frame::ok(kind::ROUTE_ADD, request, &info));
            }
        }
    }

    /// Remove every rule of `plan` (fire and forget; rules also expire by themselves).
    fn remove_plan(&mut self, id: u64, plan: &Plan) {
        for (node, rules) in &plan.hops {
            let in_ids: Vec<u32> = rules.iter().map(RuleSpec::in_id).collect();
            if let Some(n) = self.nodes.get_mut(node) {
                for i in &in_ids {
                    n.used.remove(i);
                }
            }
            let request = self.request_id();
            self.send_to(
                node,
                Frame::request(kind::REMOVE, request, &Remove { route: id, in_ids }),
            );
        }
    }

    fn remove_stale(&mut self, id: u64, stale: &[(PublicKey, u32)]) {
        let mut by_node: BTreeMap<PublicKey, Vec<u32>> = BTreeMap::new();
        for (node, in_id) in stale {
            by_node.entry(*node).or_default().push(*in_id);
        }
        for (node, in_ids) in by_node {
            if let Some(n) = self.nodes.get_mut(&node) {
                for i in &in_ids {
                    n.used.remove(i);
                }
            }
            let request = self.request_id();
            self.send_to(
                &node,
                Frame::request(kind::REMOVE, request, &Remove { route: id, in_ids }),
            );
        }
    }

    fn fail_setup(&mut self, id: u64, error: ProtoError, now: Instant) {
        let Some(route) = self.routes.get_mut(&id) else {
            return;
        };
        let Some(setup) = route.setup.take() else {
            return;
        };
        for request in setup.waiting.keys() {
            self.installs.remove(request);
        }
        self.log(format!(
            "route {id:016x}: setup failed, rolled back: {error}"
        ));
        self.remove_plan(id, &setup.plan);
        self.setup_impossible(id, error, now);
    }

    // ---- views for tests and the server ----

    /// Routes as the manager sees them.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.routes.values().map(|r| self.info(r)).collect()
    }

    /// The key of an authenticated connection.
    pub fn conn_key(&self, conn: ConnId) -> Option<PublicKey> {
        self.conns.get(&conn).copied()
    }
}

#[cfg(test)]
mod tests;
