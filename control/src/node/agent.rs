//! The node's side of the manager protocol, sans-IO: what a node tells the manager, and
//! what it does with what the manager asks.
//!
//! The agent owns what the node asked for, so it survives a manager restart: the routes it
//! added (with their ids) and the links it declared are sent again in every `REGISTER`,
//! with the rules the manager installed that the node still holds. It turns `INSTALL` and
//! `REMOVE` into one all-or-nothing batch of [`RuleChange`]s on the data plane, probes its
//! neighbours once a second and reports the links' round trip and loss.
//!
//! The driver ([`super::uplink`]) connects, proves the node's key, and feeds the agent
//! frames, engine events and the time; the tests drive it with in-memory data planes.
//!
//! Requests from the node's user ([`UserRequest`]: `route add`, `nodes`, ...) go through
//! [`Agent::user_request`] and come back typed ([`UserReply`]) through
//! [`Agent::completions`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{
    ApplyError, EngineGone, Origin, RelaySetup, RouteSetup, RuleChange,
};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId as WireRouteId;

use super::state::Owned;
use crate::config::AcceptRule;
use crate::manager::core::Rng;
use crate::manager::proto::{
    Bytes32, ErrorKind, Frame, HeldRule, Install, Key, LinkAdded, LinkChange, LinkMeasure,
    LinkReport, ManagerRequest, Mesh, MeshRouteId, Neighbour, NodeRequest, ProtoError, Register,
    Registered, Remove, RouteInfo, RouteList, RouteRef, RouteRequest, RuleSpec, WirePrefix,
};

/// How often each neighbour is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How often links are reported (and at once when one goes up or down).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// A probe unanswered after this long counts as lost.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// Probes remembered per neighbour (the window for loss and round trip).
const PROBE_WINDOW: usize = 10;

/// A link is down when this many probes in a row were lost.
const DOWN_AFTER: usize = 3;

/// Why the data plane did not apply a batch of rule changes (nothing of it was applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyFailure {
    /// The engine refused the batch.
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// The engine is gone or did not answer.
    #[error(transparent)]
    Engine(#[from] EngineGone),
}

/// What the agent needs of the data plane.
pub trait Dataplane {
    /// Apply a batch of rule changes, all or nothing.
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), ApplyFailure>;
    /// Send a link probe to `to`.
    fn probe(&mut self, to: SocketAddr, nonce: u64);
    /// The node's neighbours (registered address and key), the only ones the engine
    /// probes and answers probes for.
    fn set_neighbours(&mut self, neighbours: &[(SocketAddr, PublicKey)]);
}

/// Who the node is on the mesh.
#[derive(Debug, Clone)]
pub struct AgentParams {
    /// The node's key.
    pub key: PublicKey,
    /// Its transport address as other nodes reach it.
    pub endpoint: SocketAddr,
    /// Its TUN addresses as host prefixes.
    pub tun: Vec<Prefix>,
    /// Incoming ids its config uses.
    pub reserved: Vec<u32>,
    /// Who may set up a route to this node (`node.manager.accept`); a route end it did
    /// not ask for is refused unless a rule allows its peer and prefixes.
    pub accept: Vec<AcceptRule>,
}

/// What the node's user may ask the manager, through the node (its control socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRequest {
    /// Set up a route from this node (`skywire route add`).
    RouteAdd(RouteRequest),
    /// Remove a route this node added (`skywire route rm`).
    RouteRemove(MeshRouteId),
    /// The routes this node is an end of (`skywire route ls`).
    RouteList,
    /// The manager's view of the mesh (`skywire nodes`).
    Nodes,
    /// Declare a link to this node (`skywire link add`).
    LinkAdd(PublicKey),
    /// Withdraw a link this node declared (`skywire link rm`).
    LinkRemove(PublicKey),
}

impl UserRequest {
    /// The request to the manager.
    fn to_manager(&self) -> NodeRequest {
        match self {
            Self::RouteAdd(request) => NodeRequest::RouteAdd(request.clone()),
            Self::RouteRemove(route) => NodeRequest::RouteRemove(RouteRef { route: *route }),
            Self::RouteList => NodeRequest::RouteList,
            Self::Nodes => NodeRequest::Nodes,
            Self::LinkAdd(peer) => NodeRequest::LinkAdd(LinkChange { peer: Key(*peer) }),
            Self::LinkRemove(peer) => NodeRequest::LinkRemove(LinkChange { peer: Key(*peer) }),
        }
    }

    /// The manager's reply to this request, typed.
    fn reply(&self, frame: &Frame) -> Result<UserReply, ProtoError> {
        match self {
            Self::RouteAdd(_) => frame.reply().map(UserReply::Route),
            Self::RouteList => frame.reply().map(UserReply::Routes),
            Self::Nodes => frame.reply().map(UserReply::Mesh),
            Self::LinkAdd(_) => frame.reply().map(UserReply::LinkAdded),
            Self::RouteRemove(_) | Self::LinkRemove(_) => frame
                .reply::<serde::de::IgnoredAny>()
                .map(|_| UserReply::Done),
        }
    }
}

/// The manager's answer to a [`UserRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum UserReply {
    /// The route, set up on every hop (to [`UserRequest::RouteAdd`]).
    Route(RouteInfo),
    /// The routes (to [`UserRequest::RouteList`]).
    Routes(RouteList),
    /// Nodes and links (to [`UserRequest::Nodes`]).
    Mesh(Mesh),
    /// Whether routes may use the link yet (to [`UserRequest::LinkAdd`]).
    LinkAdded(LinkAdded),
    /// Done (to [`UserRequest::RouteRemove`] and [`UserRequest::LinkRemove`]).
    Done,
}

/// An answer to a request made through [`Agent::user_request`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The caller's token.
    pub token: u64,
    /// The manager's answer.
    pub result: Result<UserReply, ProtoError>,
}

/// Why the connection to the manager should be given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// `REGISTER` was not answered in time.
    #[error("no answer to REGISTER in {} s", .0.as_secs())]
    NotRegistered(Duration),
    /// The manager refused `REGISTER` (an address another node holds, a key not allowed):
    /// this connection is of no use, and trying again at once would be refused the same way.
    #[error("the manager refused to register this node: {0}")]
    Refused(ProtoError),
    /// Nothing was heard from the manager for this long.
    #[error("the manager has been silent for {} ms", .0.as_millis())]
    Silent(Duration),
}

#[derive(Debug)]
enum Pending {
    Register,
    Quiet,
    User { token: u64, request: UserRequest },
}

#[derive(Debug, Default)]
struct ProbeLog {
    endpoint: Option<SocketAddr>,
    /// (nonce, sent at, round trip if answered), oldest first.
    sent: VecDeque<(u64, Instant, Option<Duration>)>,
    reported_up: Option<bool>,
}

impl ProbeLog {
    /// Round trip, loss and whether the link is up, over probes old enough to judge.
    fn measure(&self, now: Instant) -> Option<(Option<Duration>, f32, bool)> {
        let judged: Vec<Option<Duration>> = self
            .sent
            .iter()
            .filter(|(_, at, rtt)| {
                rtt.is_some() || now.saturating_duration_since(*at) >= PROBE_TIMEOUT
            })
            .map(|(_, _, rtt)| *rtt)
            .collect();
        if judged.is_empty() {
            return None;
        }
        let lost = judged.iter().filter(|r| r.is_none()).count();
        let loss = lost as f32 / judged.len() as f32;
        let up = judged.iter().rev().take(DOWN_AFTER).any(Option::is_some)
            || judged.len() < DOWN_AFTER && lost < judged.len();
        let mut rtts: Vec<Duration> = judged.iter().flatten().copied().collect();
        rtts.sort();
        let rtt = rtts.get(rtts.len() / 2).copied();
        Some((rtt, loss, up))
    }
}

/// The node's manager agent.
#[derive(Debug)]
pub struct Agent {
    params: AgentParams,
    /// Routes this node owns, by id.
    intents: BTreeMap<MeshRouteId, RouteRequest>,
    /// Routes this node asked for that the manager has not confirmed yet: their id (the
    /// node derived it from its nonce) and destination. Their ends may be installed.
    asked: BTreeMap<MeshRouteId, PublicKey>,
    /// Links this node declared.
    links: BTreeSet<PublicKey>,
    /// Manager rules held: in_id -> (route, is a route end).
    held: BTreeMap<u32, (MeshRouteId, bool)>,
    probes: HashMap<PublicKey, ProbeLog>,
    /// Neighbours whose authenticated probes came from another address than the one
    /// the manager gave: where they are on this link.
    probed_from: HashMap<PublicKey, SocketAddr>,
    registered: bool,
    /// The manager's answer to this connection's `REGISTER`, if it was a refusal.
    refused: Option<ProtoError>,
    connected: bool,
    heartbeat: Duration,
    expire: Duration,
    next_heartbeat: Option<Instant>,
    next_probe: Option<Instant>,
    next_report: Option<Instant>,
    next_request: u64,
    pending: HashMap<u64, Pending>,
    out: Vec<Frame>,
    completions: Vec<Completion>,
    /// Probe nonces: unpredictable in a node (the system's random source).
    rng: Rng,
    /// When the current connection was made, and when the manager was last heard on it.
    connected_at: Option<Instant>,
    last_heard: Option<Instant>,
}

/// How long the manager has to answer `REGISTER`.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

impl Agent {
    /// An agent with no manager connection yet.
    pub fn new(params: AgentParams, rng: Rng) -> Self {
        Self {
            params,
            intents: BTreeMap::new(),
            asked: BTreeMap::new(),
            links: BTreeSet::new(),
            held: BTreeMap::new(),
            probes: HashMap::new(),
            probed_from: HashMap::new(),
            registered: false,
            refused: None,
            connected: false,
            heartbeat: Duration::from_secs(1),
            expire: Duration::from_secs(30),
            next_heartbeat: None,
            next_probe: None,
            next_report: None,
            next_request: 1,
            pending: HashMap::new(),
            out: Vec::new(),
            completions: Vec::new(),
            rng,
            connected_at: None,
            last_heard: None,
        }
    }

    /// The node's key.
    pub fn key(&self) -> PublicKey {
        self.params.key
    }

    /// Registered with a manager now.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Frames to send, in order.
    pub fn drain(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.out)
    }

    /// Answers to user requests.
    pub fn completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// Manager rules held: (route, in_id).
    pub fn held(&self) -> Vec<HeldRule> {
        self.held
            .iter()
            .map(|(in_id, (route, end))| HeldRule {
                route: *route,
                in_id: *in_id,
                end: *end,
            })
            .collect()
    }

    /// Routes this node owns.
    pub fn owned_routes(&self) -> Vec<RouteRequest> {
        self.intents.values().cloned().collect()
    }

    /// What this node owns: the routes it added and the links it declared, for its state
    /// file ([`super::state`]).
    pub fn owned(&self) -> Owned {
        Owned {
            routes: self.owned_routes(),
            links: self.links.iter().map(|k| Key(*k)).collect(),
            peers: Vec::new(),
        }
    }

    /// Own again what the node owned before it restarted (its state file), before its
    /// first `REGISTER`, which lists them: a manager that kept the routes rebuilds their
    /// rules here instead of dropping them. Routes without an id are skipped.
    pub fn restore(&mut self, owned: Owned) {
        for route in owned.routes {
            if let Some(id) = route.id {
                self.intents.insert(id, route);
            }
        }
        self.links.extend(owned.links.into_iter().map(|k| k.0));
    }

    fn request(&mut self, request: &NodeRequest, pending: Pending) {
        let id = self.next_request;
        self.next_request += 1;
        self.pending.insert(id, pending);
        self.out.push(request.frame(id));
    }

    /// A connection to the manager was authenticated: register.
    pub fn connected(&mut self, now: Instant) {
        self.connected = true;
        self.connected_at = Some(now);
        self.last_heard = Some(now);
        self.registered = false;
        self.refused = None;
        // A new manager (or a restarted one) knows no link yet: report them all again.
        for log in self.probes.values_mut() {
            log.reported_up = None;
        }
        let register = Register {
            endpoint: Some(self.params.endpoint),
            tun: self.params.tun.iter().map(|p| WirePrefix(*p)).collect(),
            links: self.links.iter().map(|k| Key(*k)).collect(),
            routes: self.intents.values().cloned().collect(),
            rules: self.held(),
            reserved: self.params.reserved.clone(),
        };
        self.request(&NodeRequest::Register(register), Pending::Register);
    }

    /// The connection is gone: what was waiting for the manager fails.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.connected_at = None;
        self.last_heard = None;
        self.registered = false;
        self.refused = None;
        self.next_heartbeat = None;
        self.asked.clear();
        for (_, pending) in self.pending.drain() {
            if let Pending::User { token, .. } = pending {
                self.completions.push(Completion {
                    token,
                    result: Err(ProtoError::new(
                        ErrorKind::Unavailable,
                        "the connection to the manager was lost",
                    )),
                });
            }
        }
    }

    /// A request from the node's user (`route add`, `nodes`, ...), answered through
    /// [`completions`](Self::completions) with `token`.
    pub fn user_request(&mut self, token: u64, request: UserRequest) {
        if !self.registered {
            self.completions.push(Completion {
                token,
                result: Err(ProtoError::new(
                    ErrorKind::Unavailable,
                    "not connected to a manager (is node.manager configured and the manager running?)",
                )),
            });
            return;
        }
        let request = match request {
            UserRequest::RouteAdd(mut route) => {
                // The route's id is derived from this node's key and a fresh nonce, so
                // the node knows it before the manager answers (its ends arrive first)
                // and only this node can claim the route after a manager restart.
                let (nonce, id) = self.fresh_route_id();
                route.nonce = Some(nonce);
                route.id = None;
                self.asked.insert(id, route.dst.0);
                UserRequest::RouteAdd(route)
            }
            other => other,
        };
        self.request(&request.to_manager(), Pending::User { token, request });
    }

    /// A fresh nonce and the route id it gives with this node's key.
    fn fresh_route_id(&mut self) -> (Bytes32, MeshRouteId) {
        loop {
            let mut nonce = [0u8; 32];
            for chunk in nonce.chunks_exact_mut(8) {
                chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
            }
            let nonce = Bytes32(nonce);
            if let Some(id) = MeshRouteId::derive(&self.params.key, &nonce)
                && !self.intents.contains_key(&id)
                && !self.asked.contains_key(&id)
            {
                return (nonce, id);
            }
        }
    }

    /// A frame from the manager.
    pub fn frame(&mut self, frame: Frame, now: Instant, dataplane: &mut impl Dataplane) {
        self.last_heard = Some(now);
        if frame.is_reply() {
            self.reply(frame, now);
            return;
        }
        let result = ManagerRequest::parse(&frame).and_then(|request| match request {
            ManagerRequest::Install(install) => self.install(&install, dataplane),
            ManagerRequest::Remove(remove) => self.remove(&remove, dataplane),
            ManagerRequest::Neighbours(n) => {
                self.neighbours(&n.neighbours, dataplane);
                Ok(())
            }
        });
        self.out.push(match result {
            Ok(()) => Frame::ok(frame.kind, frame.id, &()),
            Err(e) => Frame::error(frame.kind, frame.id, &e),
        });
    }

    fn reply(&mut self, frame: Frame, now: Instant) {
        let Some(pending) = self.pending.remove(&frame.id) else {
            return;
        };
        match pending {
            Pending::Register => match frame.reply::<Registered>() {
                Ok(r) => {
                    self.registered = true;
                    // Within the bounds the manager's config allows, whatever it says.
                    self.heartbeat = Duration::from_millis(r.heartbeat_ms.clamp(50, 60_000));
                    self.expire = Duration::from_millis(r.expire_ms.clamp(1000, 3_600_000));
                    self.next_heartbeat = Some(now + self.heartbeat);
                    self.next_probe.get_or_insert(now);
                    self.next_report.get_or_insert(now + REPORT_INTERVAL);
                }
                Err(e) => {
                    self.registered = false;
                    self.refused = Some(e);
                }
            },
            Pending::Quiet => {}
            Pending::User { token, request } => {
                let result = request.reply(&frame);
                match &result {
                    Ok(reply) => self.remember(&request, reply),
                    Err(_) => self.forget_asked(&request),
                }
                self.completions.push(Completion { token, result });
            }
        }
    }

    /// Keep what the node owns after the manager accepted it.
    fn remember(&mut self, request: &UserRequest, reply: &UserReply) {
        match (request, reply) {
            (UserRequest::RouteAdd(request), UserReply::Route(info)) => {
                self.asked.remove(&info.id);
                // The same request again is answered with the route this node has: keep
                // the intent it has, whose nonce derives the id (the new nonce does not).
                if let Some(nonce) = request.nonce {
                    self.asked
                        .remove(&MeshRouteId::derive(&self.params.key, &nonce).unwrap_or(info.id));
                }
                self.intents.entry(info.id).or_insert_with(|| {
                    let mut request = request.clone();
                    request.id = Some(info.id);
                    request
                });
            }
            (UserRequest::RouteRemove(id), _) => {
                self.intents.remove(id);
            }
            (UserRequest::LinkAdd(peer), _) => {
                self.links.insert(*peer);
            }
            (UserRequest::LinkRemove(peer), _) => {
                self.links.remove(peer);
            }
            _ => {}
        }
    }

    /// A route add that failed: its id is no longer expected.
    fn forget_asked(&mut self, request: &UserRequest) {
        if let UserRequest::RouteAdd(route) = request
            && let Some(id) = route
                .nonce
                .and_then(|n| MeshRouteId::derive(&self.params.key, &n))
        {
            self.asked.remove(&id);
        }
    }

    /// Whether this node lets the manager install `install` here. Relay rules are
    /// accepted (relaying is what a mesh node does; it never decrypts). A route end must
    /// hold host addresses only (a node's TUN addresses), and:
    ///
    /// - for a route this node owns or asked for, name the destination it asked for;
    /// - for any other route (this node is its destination), be allowed by a
    ///   `node.manager.accept` rule for its peer and prefixes.
    ///
    /// So a manager, or whoever poses as one, can neither open an unsolicited route to
    /// this node nor put itself in the middle of one this node asked for.
    fn check_install(&self, install: &Install) -> Result<(), ProtoError> {
        let refuse = |message: String| Err(ProtoError::new(ErrorKind::NotAllowed, message));
        for rule in &install.rules {
            let RuleSpec::End { peer, prefixes, .. } = rule else {
                continue;
            };
            let prefixes: Vec<Prefix> = prefixes.iter().map(|p| p.0).collect();
            if let Some(p) = prefixes.iter().find(|p| !is_host(p)) {
                return refuse(format!(
                    "route {}: the end's prefix {p} is not a host address",
                    install.route
                ));
            }
            let asked = self
                .intents
                .get(&install.route)
                .map(|r| r.dst.0)
                .or_else(|| self.asked.get(&install.route).copied());
            match asked {
                Some(dst) if dst == peer.0 => {}
                Some(dst) => {
                    return refuse(format!(
                        "route {} goes to {dst}, not to {}",
                        install.route, peer.0
                    ));
                }
                None if self
                    .params
                    .accept
                    .iter()
                    .any(|a| a.allows(&peer.0, &prefixes)) => {}
                None => {
                    return refuse(format!(
                        "this node did not ask for route {}, and no node.manager.accept rule \
                         lets {} set up a route here with {}",
                        install.route,
                        peer.0,
                        prefixes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    fn install(
        &mut self,
        install: &Install,
        dataplane: &mut impl Dataplane,
    ) -> Result<(), ProtoError> {
        self.check_install(install)?;
        let expire_after = Duration::from_millis(install.expire_ms.clamp(1000, 3_600_000));
        let origin = Origin::Manager {
            route: install.route.0,
            expire_after,
        };
        let id = |n: u32| {
            WireRouteId::new(n).ok_or_else(|| ProtoError::new(ErrorKind::BadRequest, "route id 0"))
        };
        let mut changes = Vec::with_capacity(install.rules.len());
        for rule in &install.rules {
            changes.push(match rule {
                RuleSpec::Relay {
                    in_id,
                    prev_hop,
                    out_id,
                    next_hop,
                } => RuleChange::AddRelay {
                    relay: RelaySetup {
                        in_id: id(*in_id)?,
                        prev_hop: *prev_hop,
                        out_id: id(*out_id)?,
                        next_hop: *next_hop,
                    },
                    origin,
                },
                RuleSpec::End {
                    peer,
                    prefixes,
                    first_hop,
                    out_id,
                    in_id,
                    peer_in_id,
                    prev_hop,
                } => RuleChange::AddEnd {
                    route: RouteSetup {
                        // The whole id, as `route ls` shows it: one form everywhere.
                        name: format!("mgr-{}", install.route),
                        peer: peer.0,
                        prefixes: prefixes.iter().map(|p| p.0).collect(),
                        first_hop: *first_hop,
                        out_id: id(*out_id)?,
                        in_id: id(*in_id)?,
                        peer_in_id: id(*peer_in_id)?,
                        prev_hop: *prev_hop,
                        // Traffic keeps rules alive: an idle route sends keepalives well
                        // within the expiry, which also starts its handshake at once.
                        persistent_keepalive: Some((expire_after / 3).max(Duration::from_secs(1))),
                    },
                    origin,
                },
            });
        }
        dataplane.apply(changes).map_err(|e| {
            let kind = match e {
                ApplyFailure::Refused(ApplyError::InUse(_)) => ErrorKind::IdInUse,
                ApplyFailure::Refused(ApplyError::PrefixClaimed { .. }) => ErrorKind::NotAllowed,
                ApplyFailure::Refused(_) => ErrorKind::BadRequest,
                ApplyFailure::Engine(_) => ErrorKind::Unavailable,
            };
            ProtoError::new(kind, e.to_string())
        })?;
        for rule in &install.rules {
            let end = matches!(rule, RuleSpec::End { .. });
            self.held.insert(rule.in_id(), (install.route, end));
        }
        Ok(())
    }

    fn remove(
        &mut self,
        remove: &Remove,
        dataplane: &mut impl Dataplane,
    ) -> Result<(), ProtoError> {
        // Only rules of this route that are still here: removal is idempotent, and a
        // manager can never remove a rule of another route or of the node's config.
        let ids: Vec<u32> = remove
            .in_ids
            .iter()
            .copied()
            .filter(|i| self.held.get(i).map(|h| h.0) == Some(remove.route))
            .collect();
        let changes = ids
            .iter()
            .filter_map(|i| WireRouteId::new(*i))
            .map(|in_id| RuleChange::Remove { in_id })
            .collect::<Vec<_>>();
        if changes.is_empty() {
            return Ok(());
        }
        dataplane.apply(changes).map_err(|e| {
            let kind = match e {
                ApplyFailure::Refused(_) => ErrorKind::BadRequest,
                ApplyFailure::Engine(_) => ErrorKind::Unavailable,
            };
            ProtoError::new(kind, e.to_string())
        })?;
        for i in ids {
            self.held.remove(&i);
        }
        Ok(())
    }

    fn neighbours(&mut self, neighbours: &[Neighbour], dataplane: &mut impl Dataplane) {
        let keep: BTreeSet<PublicKey> = neighbours.iter().map(|n| n.peer.0).collect();
        self.probes.retain(|k, _| keep.contains(k));
        self.probed_from.retain(|k, _| keep.contains(k));
        for n in neighbours {
            // Where the neighbour's own probes came from beats where it registered: on a
            // multi-homed neighbour that is its address on this link.
            let endpoint = self
                .probed_from
                .get(&n.peer.0)
                .copied()
                .unwrap_or(n.endpoint);
            let log = self.probes.entry(n.peer.0).or_default();
            if log.endpoint != Some(endpoint) {
                log.sent.clear();
                log.reported_up = None;
            }
            log.endpoint = Some(endpoint);
        }
        self.push_neighbours(dataplane);
    }

    /// The engine's list of neighbours, from the probe logs.
    fn push_neighbours(&self, dataplane: &mut impl Dataplane) {
        let list: Vec<(SocketAddr, PublicKey)> = self
            .probes
            .iter()
            .filter_map(|(k, l)| Some((l.endpoint?, *k)))
            .collect();
        dataplane.set_neighbours(&list);
    }

    /// A neighbour's authenticated probe came from `from`, not from the address this node
    /// probes it at: probe it there from now on (a multi-homed neighbour reached over
    /// another of its addresses), and report the link with that address once a probe
    /// there is answered.
    pub fn probed_from(
        &mut self,
        peer: PublicKey,
        from: SocketAddr,
        dataplane: &mut impl Dataplane,
    ) {
        let Some(log) = self.probes.get_mut(&peer) else {
            return;
        };
        if log.endpoint == Some(from) {
            return;
        }
        log.endpoint = Some(from);
        log.sent.clear();
        log.reported_up = None;
        self.probed_from.insert(peer, from);
        self.push_neighbours(dataplane);
    }

    /// The engine removed a rule that saw no traffic for its expiry.
    pub fn expired(&mut self, in_id: u32) {
        self.held.remove(&in_id);
    }

    /// A probe was answered.
    pub fn probe_reply(&mut self, from: SocketAddr, nonce: u64, rtt: Duration) {
        for log in self.probes.values_mut() {
            if log.endpoint != Some(from) {
                continue;
            }
            if let Some(entry) = log.sent.iter_mut().find(|(n, _, _)| *n == nonce) {
                entry.2 = Some(rtt);
            }
        }
    }

    /// Heartbeats, probes and link reports that are due.
    pub fn tick(&mut self, now: Instant, dataplane: &mut impl Dataplane) {
        if !self.registered {
            return;
        }
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.request(&NodeRequest::Heartbeat, Pending::Quiet);
            self.next_heartbeat = Some(now + self.heartbeat);
        }
        if self.next_probe.is_some_and(|t| t <= now) {
            self.next_probe = Some(now + PROBE_INTERVAL);
            let targets: Vec<(PublicKey, SocketAddr)> = self
                .probes
                .iter()
                .filter_map(|(k, l)| Some((*k, l.endpoint?)))
                .collect();
            for (peer, endpoint) in targets {
                let nonce = self.rng.next_u64();
                dataplane.probe(endpoint, nonce);
                if let Some(log) = self.probes.get_mut(&peer) {
                    log.sent.push_back((nonce, now, None));
                    while log.sent.len() > PROBE_WINDOW {
                        log.sent.pop_front();
                    }
                }
            }
        }
        // A link's first measurement, and every change of up or down, is reported at
        // once: the manager routes over a link only once a report says it is up.
        let changed = self.probes.values().any(|l| {
            l.measure(now)
                .is_some_and(|(_, _, up)| l.reported_up != Some(up))
        });
        if changed || self.next_report.is_some_and(|t| t <= now) {
            self.next_report = Some(now + REPORT_INTERVAL);
            let mut links = Vec::new();
            for (peer, log) in &mut self.probes {
                if let Some((rtt, loss, up)) = log.measure(now) {
                    log.reported_up = Some(up);
                    links.push(LinkMeasure {
                        peer: Key(*peer),
                        rtt_us: rtt.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                        loss,
                        up,
                        endpoint: log.endpoint,
                    });
                }
            }
            if !links.is_empty() {
                links.sort_by_key(|l| l.peer);
                self.request(
                    &NodeRequest::LinkReport(LinkReport { links }),
                    Pending::Quiet,
                );
            }
        }
    }

    /// Why the connection should be given up, if it should: the manager did not answer
    /// `REGISTER` within [`REGISTER_TIMEOUT`], or has been silent for as long as it takes
    /// itself to declare a node dead (3 heartbeats, each of which it answers).
    pub fn stale(&self, now: Instant) -> Option<Stale> {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        if let Some(e) = &self.refused {
            return Some(Stale::Refused(e.clone()));
        }
        if !self.registered {
            return since(self.connected_at)
                .filter(|d| *d > REGISTER_TIMEOUT)
                .map(Stale::NotRegistered);
        }
        since(self.last_heard)
            .filter(|d| *d > self.heartbeat * 3 + Duration::from_millis(500))
            .map(Stale::Silent)
    }

    /// When [`tick`](Self::tick) next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.registered {
            return None;
        }
        [self.next_heartbeat, self.next_probe, self.next_report]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests;

/// A host prefix: /32 for IPv4, /128 for IPv6.
fn is_host(prefix: &Prefix) -> bool {
    prefix.len() == if prefix.addr().is_ipv4() { 32 } else { 128 }
}
