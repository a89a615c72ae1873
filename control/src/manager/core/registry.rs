//! The registry: which connections are authenticated as which node, which nodes have
//! registered (their endpoint, TUN addresses and the incoming ids in use at them), and
//! when each was last heard. Also the manager's side of `REGISTER` and of a node going
//! down, which reach into links and routes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::Level;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::routes::Route;
use super::{
    CloseReason, MAX_LINKS_PER_NODE, MAX_ROUTES_PER_NODE, MAX_RULES_PER_NODE, MAX_TUN_PREFIXES,
    ManagerCore, MeshRouteId, Output, Params, REGISTER_TIMEOUT, Rng, short,
};
use crate::manager::proto::{
    ErrorKind, Key, NodeInfo, ProtoError, Register, Registered, RuleSpec, WirePrefix,
};

/// Identifies one connection of the server (the server numbers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node that registered at least once.
#[derive(Debug)]
pub(super) struct NodeEntry {
    /// Its current connection; `None` while it is down.
    pub(super) conn: Option<ConnId>,
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) tun: Vec<Prefix>,
    pub(super) last_seen: Instant,
    /// Incoming ids in use at the node: its config's and the manager's rules.
    pub(super) used: HashSet<u32>,
}

/// Nodes and connections.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) nodes: HashMap<PublicKey, NodeEntry>,
    /// Authenticated connections and their keys.
    conns: HashMap<ConnId, PublicKey>,
    /// Authenticated connections that have not registered yet, since when.
    unregistered: HashMap<ConnId, Instant>,
}

impl Registry {
    /// A connection proved it holds `key`.
    pub(super) fn authenticate(&mut self, conn: ConnId, key: PublicKey, now: Instant) {
        self.conns.insert(conn, key);
        self.unregistered.insert(conn, now);
    }

    /// The key of an authenticated connection.
    pub(super) fn key_of(&self, conn: ConnId) -> Option<PublicKey> {
        self.conns.get(&conn).copied()
    }

    /// Whether `conn` is an authenticated connection at all.
    pub(super) fn knows(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Forget a connection; its key, if it was authenticated.
    pub(super) fn forget(&mut self, conn: ConnId) -> Option<PublicKey> {
        self.unregistered.remove(&conn);
        self.conns.remove(&conn)
    }

    /// Whether `conn` is the connection `key` registered on.
    pub(super) fn is_current(&self, key: &PublicKey, conn: ConnId) -> bool {
        self.nodes.get(key).is_some_and(|n| n.conn == Some(conn))
    }

    /// Whether `key` is registered and connected now.
    pub(super) fn online(&self, key: &PublicKey) -> bool {
        self.nodes.get(key).is_some_and(|n| n.conn.is_some())
    }

    /// The current connection of `key`.
    pub(super) fn conn_of(&self, key: &PublicKey) -> Option<ConnId> {
        self.nodes.get(key).and_then(|n| n.conn)
    }

    /// The transport endpoint `key` registered.
    pub(super) fn endpoint(&self, key: &PublicKey) -> Option<SocketAddr> {
        self.nodes.get(key).and_then(|n| n.endpoint)
    }

    /// The TUN addresses `key` registered.
    pub(super) fn tun(&self, key: &PublicKey) -> Vec<WirePrefix> {
        self.nodes
            .get(key)
            .map(|n| n.tun.iter().map(|p| WirePrefix(*p)).collect())
            .unwrap_or_default()
    }

    /// A frame arrived from `key` at `now`.
    pub(super) fn seen(&mut self, key: &PublicKey, now: Instant) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.last_seen = now;
        }
    }

    /// Connections that did not register within [`REGISTER_TIMEOUT`]: forgotten here.
    pub(super) fn take_late(&mut self, now: Instant) -> Vec<ConnId> {
        let late: Vec<ConnId> = self
            .unregistered
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) > REGISTER_TIMEOUT)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in &late {
            self.forget(*conn);
        }
        late
    }

    /// Connected nodes not heard from for longer than `silent_for`.
    pub(super) fn silent(
        &self,
        now: Instant,
        silent_for: std::time::Duration,
    ) -> Vec<(PublicKey, ConnId)> {
        self.nodes
            .iter()
            .filter_map(|(k, n)| {
                let conn = n.conn?;
                (now.saturating_duration_since(n.last_seen) > silent_for).then_some((*k, conn))
            })
            .collect()
    }

    /// When the next unregistered connection times out.
    pub(super) fn next_registration_deadline(&self) -> Option<Instant> {
        self.unregistered
            .values()
            .map(|t| *t + REGISTER_TIMEOUT)
            .min()
    }

    /// Incoming ids no longer used at `node`.
    pub(super) fn release_ids(&mut self, node: &PublicKey, ids: &[u32]) {
        if let Some(n) = self.nodes.get_mut(node) {
            for id in ids {
                n.used.remove(id);
            }
        }
    }

    /// A random incoming id unused at `node`, now marked used.
    pub(super) fn fresh_id(&mut self, node: &PublicKey, rng: &mut Rng) -> u32 {
        let mut fallback = 0u32;
        loop {
            // If the random source ever kept failing (all zeros), count instead.
            fallback = fallback.wrapping_add(1);
            let id = match (rng.next_u64() >> 32) as u32 {
                0 => fallback,
                id => id,
            };
            if id == 0 {
                continue;
            }
            match self.nodes.get_mut(node) {
                Some(n) => {
                    if n.used.insert(id) {
                        return id;
                    }
                }
                None => return id,
            }
        }
    }

    /// Check a registration of `key` before anything of it is applied: sizes, and the
    /// TUN addresses it claims ([`Self::check_address`]).
    pub(super) fn check(
        &self,
        key: &PublicKey,
        register: &Register,
        params: &Params,
    ) -> Result<(), ProtoError> {
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
        if register.rules.len() > MAX_RULES_PER_NODE {
            return bad(format!("at most {MAX_RULES_PER_NODE} held rules"));
        }
        if let Some(endpoint) = register.endpoint {
            self.check_endpoint(key, endpoint, params)?;
        }
        for p in &register.tun {
            self.check_address(key, p.0, params)?;
        }
        Ok(())
    }

    /// Whether `key` may register transport `endpoint`, which other nodes will send route
    /// traffic and probes to: a specific address and port, not multicast or broadcast,
    /// loopback only when the manager itself listens on loopback (a mesh on one machine),
    /// and no other node's endpoint. (That the endpoint is really the node's own is shown
    /// by its neighbours' authenticated probes before any route uses it.)
    fn check_endpoint(
        &self,
        key: &PublicKey,
        endpoint: SocketAddr,
        params: &Params,
    ) -> Result<(), ProtoError> {
        let refuse = |m: String| Err(ProtoError::new(ErrorKind::NotAllowed, m));
        let ip = endpoint.ip();
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast || endpoint.port() == 0 {
            return refuse(format!("endpoint {endpoint} is no address to send to"));
        }
        let local_mesh = params.listen_ip.is_some_and(|l| l.is_loopback());
        if ip.is_loopback() && !local_mesh {
            return refuse(format!(
                "endpoint {endpoint} is loopback, and the manager is not (other machines \
                 cannot send to it)"
            ));
        }
        let taken = self
            .nodes
            .iter()
            .find(|(k, n)| *k != key && n.endpoint == Some(endpoint));
        if let Some((other, _)) = taken {
            return refuse(format!("endpoint {endpoint} is node {other}'s"));
        }
        Ok(())
    }

    /// Whether `key` may have TUN address `p`. Addresses belong to keys: a host address
    /// (`/32`, `/128`), not special-purpose (loopback, link-local, multicast, ...), not an
    /// underlay address (the manager's, or any node's endpoint), inside
    /// `manager.address_ranges` when written, not pinned to another node (and one of
    /// `key`'s own pins if it has any), and not registered by another node before, even
    /// one that is offline now: first come keeps it while the manager runs.
    fn check_address(&self, key: &PublicKey, p: Prefix, params: &Params) -> Result<(), ProtoError> {
        let refuse = |m: String| Err(ProtoError::new(ErrorKind::NotAllowed, m));
        let host = if p.addr().is_ipv4() { 32 } else { 128 };
        if p.len() != host {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                format!("TUN address {p} is not a host address (/32 or /128)"),
            ));
        }
        let ip = p.addr();
        if special_purpose(ip) {
            return refuse(format!(
                "address {p} is special-purpose (loopback, link-local, multicast, ...)"
            ));
        }
        let underlay = params.listen_ip == Some(ip)
            || self
                .nodes
                .values()
                .any(|n| n.endpoint.is_some_and(|e| e.ip() == ip));
        if underlay {
            return refuse(format!(
                "address {p} is an underlay address (the manager's or a node's endpoint)"
            ));
        }
        if let Some(ranges) = &params.address_ranges
            && !ranges.iter().any(|r| r.contains(ip))
        {
            return refuse(format!("address {p} is outside manager.address_ranges"));
        }
        if let Some((owner, _)) = params
            .pinned
            .iter()
            .find(|(k, pins)| k != key && pins.contains(&p))
        {
            return refuse(format!("address {p} is pinned to node {owner}"));
        }
        if let Some((_, pins)) = params.pinned.iter().find(|(k, _)| k == key)
            && !pins.contains(&p)
        {
            return refuse(format!(
                "this node's addresses are pinned in manager.addresses, and {p} is not one"
            ));
        }
        let holder = self
            .nodes
            .iter()
            .find(|(k, n)| *k != key && n.tun.contains(&p));
        if let Some((other, n)) = holder {
            return refuse(format!(
                "address {p} belongs to node {other}{}",
                if n.conn.is_some() { "" } else { " (offline)" }
            ));
        }
        Ok(())
    }

    /// Record `key`'s registration on `conn`; `used` are the incoming ids in use at it.
    pub(super) fn register(
        &mut self,
        conn: ConnId,
        key: PublicKey,
        register: &Register,
        used: HashSet<u32>,
        now: Instant,
    ) {
        self.unregistered.remove(&conn);
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
    }

    /// `key` is down: registered, but without a connection.
    pub(super) fn set_down(&mut self, key: &PublicKey) {
        if let Some(node) = self.nodes.get_mut(key) {
            node.conn = None;
        }
    }

    /// Every node, as `nodes` shows it, sorted by key.
    pub(super) fn infos(&self, now: Instant) -> Vec<NodeInfo> {
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
        nodes
    }
}

impl ManagerCore {
    /// `REGISTER` from `key` on `conn`: checked whole, then applied: the node's entry, its
    /// declared links, the routes it owns that the manager does not know (adopted only
    /// from a node holding their end), the rules it holds (current, stale or orphaned),
    /// and repairs of routes that need rules it no longer holds.
    pub(super) fn register(
        &mut self,
        conn: ConnId,
        key: PublicKey,
        register: Register,
        now: Instant,
    ) -> Result<Registered, ProtoError> {
        if !self.allowed(&key) {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                format!(
                    "key {key} is not in this manager's manager.allow: ask its operator to \
                     add it"
                ),
            ));
        }
        // One REGISTER per connection: a second would re-run adoption and repairs at will.
        if self.registry.is_current(&key, conn) {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                "this connection has registered already",
            ));
        }
        self.registry.check(&key, &register, &self.params)?;
        let previous = self.registry.conn_of(&key);
        // A live connection of the same key from another endpoint is another node with the
        // same key (a copied key file), not a restart: refuse the newcomer, or the two
        // would take turns replacing each other and the routes would follow them. A node
        // that really moved registers once the manager has given up on its old connection.
        let other_endpoint = self
            .registry
            .endpoint(&key)
            .filter(|e| Some(*e) != register.endpoint);
        if let (Some(_), Some(at)) = (previous.filter(|&c| c != conn), other_endpoint) {
            let message = format!(
                "key in use: node {} is online from {at}; is this a second node with a copy \
                 of its key? (a node that moved registers once its old connection is \
                 given up, within 3 heartbeats)",
                short(&key)
            );
            self.log(
                Level::Warn,
                format!(
                    "refused a second registration of node {} from {}: it is online from {at}",
                    short(&key),
                    register
                        .endpoint
                        .map_or_else(|| "no endpoint".to_owned(), |e| e.to_string()),
                ),
            );
            return Err(ProtoError::new(ErrorKind::NotAllowed, message));
        }
        if let Some(old) = previous.filter(|&c| c != conn) {
            self.out.push(Output::Close(old, CloseReason::Replaced));
            self.registry.forget(old);
            // INSTALLs in flight went to the old connection: try those setups again.
            let stuck = self
                .routes
                .ids_where(|r| r.setup.as_ref().is_some_and(|s| s.plan.path.contains(&key)));
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
        for plan in self.routes.plans() {
            if let Some(rules) = plan.rules_of(&key) {
                used.extend(rules.iter().map(RuleSpec::in_id));
            }
        }
        self.registry.register(conn, key, &register, used, now);
        let _ = self.topology.add_node(key);
        let _ = self.topology.set_node_up(key, true);
        // Nothing measured before this registration counts (the node may have restarted).
        let replaced = previous.is_some_and(|c| c != conn);
        self.reset_links_on_register(&key, replaced);
        self.log(
            Level::Info,
            format!(
                "node {} registered: endpoint {}, {} owned routes, {} rules held",
                short(&key),
                register
                    .endpoint
                    .map_or_else(|| "none".to_owned(), |e| e.to_string()),
                register.routes.len(),
                register.rules.len()
            ),
        );
        for peer in &register.links {
            if peer.0 != key {
                self.declare_link(key, peer.0, super::links::Source::Node(key));
            }
        }
        self.adopt_routes(key, &register, now);
        self.drop_forgotten_routes(key, &register, now);
        self.sort_held_rules(key, &register, now);
        // Active routes that need this node's rules, which it no longer holds (it
        // restarted): rebuild them.
        let held: HashSet<(MeshRouteId, u32)> =
            register.rules.iter().map(|r| (r.route, r.in_id)).collect();
        let lost = self.routes.ids_where(|r| {
            r.active
                .as_ref()
                .and_then(|p| p.rules_of(&key))
                .is_some_and(|rules| rules.iter().any(|s| !held.contains(&(r.id, s.in_id()))))
        });
        for id in lost {
            if let Some(route) = self.routes.get_mut(id) {
                route.break_path(ProtoError::new(
                    ErrorKind::PathDown,
                    format!("node {} restarted without its rules", short(&key)),
                ));
                route.retry_at = Some(now);
            }
        }
        // Waiting routes may be possible now.
        self.routes.retry_waiting(now);
        let sent = self.push_neighbours_around(&key);
        self.fence_reports(&key, &sent);
        self.tick(now);
        Ok(Registered {
            heartbeat_ms: u64::try_from(self.params.heartbeat.as_millis()).unwrap_or(u64::MAX),
            expire_ms: u64::try_from(self.params.rule_expiry.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Routes `key` owns that the manager does not know (it restarted). Only the node
    /// whose key the route's id was derived from may claim it ([`MeshRouteId::derive`]:
    /// a relay or the destination knows the id but cannot make it from its own key), and
    /// only while it holds the route's end, with valid constraints, within
    /// [`MAX_ROUTES_PER_NODE`].
    fn adopt_routes(&mut self, key: PublicKey, register: &Register, now: Instant) {
        let ends: HashSet<MeshRouteId> = register
            .rules
            .iter()
            .filter(|r| r.end)
            .map(|r| r.route)
            .collect();
        for request in &register.routes {
            let Some(id) = request.id.filter(|id| id.0 != 0) else {
                continue;
            };
            if self.routes.contains(id) {
                continue;
            }
            let derived = request.nonce.and_then(|n| MeshRouteId::derive(&key, &n));
            if derived != Some(id) {
                self.log(
                    Level::Warn,
                    format!(
                        "route {id} of {} not adopted: its id is not derived from that node's key",
                        short(&key)
                    ),
                );
                continue;
            }
            if self.routes.count_from(&key) >= MAX_ROUTES_PER_NODE {
                self.log(
                    Level::Warn,
                    format!(
                        "route {id} of {} not adopted: the node owns {MAX_ROUTES_PER_NODE} routes",
                        short(&key)
                    ),
                );
                continue;
            }
            if !ends.contains(&id) {
                self.log(
                    Level::Warn,
                    format!(
                        "route {id} of {} not adopted: the node holds no end of it",
                        short(&key)
                    ),
                );
                continue;
            }
            let c = self.constraints(request);
            if request.dst.0 == key || c.min_hops == 0 || c.min_hops > c.max_hops {
                continue;
            }
            let mut route = Route::new(id, key, request.clone(), None);
            route.retry_at = Some(now);
            route.stale.extend(self.routes.take_orphan(id));
            self.routes.insert(route);
            self.log(
                Level::Info,
                format!("route {id} of {} adopted: setting it up", short(&key)),
            );
        }
    }

    /// Routes the manager has from `key` that its `REGISTER` does not list: the node no
    /// longer owns them (it restarted, and its routes lived in its memory), so nobody will
    /// ever use or remove them; their rules are taken down. Without this, the node's next
    /// `route add` to the same destination would be answered with the old route, whose id
    /// the node cannot derive, and a later manager restart would refuse to adopt it.
    fn drop_forgotten_routes(&mut self, key: PublicKey, register: &Register, now: Instant) {
        let listed: HashSet<MeshRouteId> = register.routes.iter().filter_map(|r| r.id).collect();
        for id in self
            .routes
            .ids_where(|r| r.src == key && !listed.contains(&r.id))
        {
            if self.route_remove(key, id, now).is_ok() {
                self.log(
                    Level::Info,
                    format!(
                        "route {id} of {} dropped: the node registered without it (it restarted)",
                        short(&key)
                    ),
                );
            }
        }
    }

    /// Rules `key` holds: current if a plan (active or being set up) has them, stale for
    /// a known route, orphaned for an unknown one (removed if no source claims the route
    /// within [`super::ORPHAN_GRACE`]).
    fn sort_held_rules(&mut self, key: PublicKey, register: &Register, now: Instant) {
        for rule in &register.rules {
            let Some(route) = self.routes.get_mut(rule.route) else {
                self.routes.add_orphan(rule.route, key, rule.in_id, now);
                continue;
            };
            let current = route
                .plans()
                .filter_map(|p| p.rules_of(&key))
                .any(|rules| rules.iter().any(|s| s.in_id() == rule.in_id));
            if !current {
                route.stale.insert((key, rule.in_id));
            }
        }
    }

    /// `key` went down (its connection closed, or it missed its heartbeats): setups through
    /// it fail, active routes crossing it are rebuilt around it, and a route whose
    /// requester left before it learned the id goes too.
    pub(super) fn node_down(&mut self, key: PublicKey, now: Instant) {
        self.registry.set_down(&key);
        let _ = self.topology.set_node_up(key, false);
        self.forget_link_reports(&key);
        for id in self.routes.ids() {
            let Some(route) = self.routes.get(id) else {
                continue;
            };
            let in_setup = route
                .setup
                .as_ref()
                .is_some_and(|s| s.plan.path.contains(&key));
            let crosses = route.active.as_ref().is_some_and(|p| p.path.contains(&key));
            let end = route.src == key || route.dst == key;
            let orphaned_waiter = route
                .waiter
                .is_some_and(|(conn, _)| !self.registry.knows(conn));
            if orphaned_waiter && let Some(route) = self.routes.get_mut(id) {
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
                self.log(
                    Level::Info,
                    format!(
                        "route {id} crosses {}, which is down: repairing",
                        short(&key)
                    ),
                );
                if let Some(route) = self.routes.get_mut(id) {
                    route.break_path(ProtoError::new(
                        ErrorKind::PathDown,
                        format!("node {} went down", short(&key)),
                    ));
                }
                self.start_setup(id, now);
            }
        }
        self.push_neighbours_around(&key);
    }
}

/// Addresses no node may take as its TUN address: unspecified, loopback, link-local,
/// multicast and broadcast, IPv4's "this network" (0.0.0.0/8), and IPv4-mapped IPv6.
fn special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some()
        }
    }
}
