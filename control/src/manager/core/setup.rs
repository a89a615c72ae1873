//! Route setup, the manager's transaction: compute a path, give every hop its rules with
//! fresh incoming ids, install them in two phases with acknowledgements, commit (remove
//! the old path's rules) or roll back; and the requests that start, end and list routes.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use log::Level;

use skywire_dataplane::crypto::PublicKey;

use super::routes::{Plan, Route, Setup, SetupPhase};
use super::{ConnId, ManagerCore, short};
use crate::manager::proto::{
    ErrorKind, Frame, Install, Key, ManagerRequest, MeshRouteId, ProtoError, Remove, RouteInfo,
    RouteList, RouteRequest, RouteState, RuleSpec, kind,
};
use crate::manager::topology::{Constraints, RouteError};

impl ManagerCore {
    /// What `request` asks of a path, with the manager's defaults filled in.
    pub(super) fn constraints(&self, request: &RouteRequest) -> Constraints {
        Constraints {
            min_hops: request.min_hops.unwrap_or(self.params.min_hops),
            max_hops: request.max_hops.unwrap_or(self.params.max_hops),
            avoid: request.avoid.iter().map(|k| k.0).collect(),
            weight: request.weight.unwrap_or(self.params.weight),
        }
    }

    /// Why no path was found, in the request's terms: "the constraints" only when the
    /// request had some.
    fn no_path_text(error: &RouteError, src: &PublicKey, request: &RouteRequest) -> String {
        let constrained =
            request.min_hops.is_some() || request.max_hops.is_some() || !request.avoid.is_empty();
        match error {
            RouteError::NoPath if !constrained => format!(
                "no path over links that are up from {} to {} (`skywire nodes` shows which \
                 links are down or unproven)",
                short(src),
                short(&request.dst.0)
            ),
            other => other.to_string(),
        }
    }

    /// `ROUTE_ADD` from `src` on `conn` (request `request_id`): the reply goes out when the
    /// first setup ends, so only errors found before it starts are returned here.
    pub(super) fn route_add(
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
        if !self.registry.nodes.contains_key(&request.dst.0) {
            return Err(ProtoError::new(
                ErrorKind::UnknownNode,
                format!("no node {} has registered", request.dst.0),
            ));
        }
        // The same request again (a script run twice, `route add` repeated): the route
        // this node has already, not a second one with the same ends.
        let same = self.routes.iter().find(|r| {
            r.src == src
                && r.request.dst == request.dst
                && r.request.min_hops == request.min_hops
                && r.request.max_hops == request.max_hops
                && r.request.avoid == request.avoid
                && r.request.weight == request.weight
        });
        if let Some(existing) = same {
            let info = self.info(existing, now);
            self.send(conn, Frame::ok(kind::ROUTE_ADD, request_id, &info));
            return Ok(());
        }
        if self.routes.count_from(&src) >= super::MAX_ROUTES_PER_NODE {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                format!("at most {} routes per node", super::MAX_ROUTES_PER_NODE),
            ));
        }
        let c = self.constraints(&request);
        if c.min_hops == 0 || c.min_hops > c.max_hops {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                format!("hop limits {}..{} are empty", c.min_hops, c.max_hops),
            ));
        }
        // The id names its owner: derived from the source's key and the nonce it picked,
        // so only the source can claim the route again after a manager restart.
        let Some(nonce) = request.nonce else {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                "a route needs its source's nonce (its id is derived from it)",
            ));
        };
        let Some(id) = MeshRouteId::derive(&src, &nonce) else {
            return Err(ProtoError::new(ErrorKind::BadRequest, "an unusable nonce"));
        };
        if request.id.is_some_and(|given| given != id) {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                format!("route id {id} is not derived from this node's key and nonce"),
            ));
        }
        if self.routes.contains(id) {
            return Err(ProtoError::new(
                ErrorKind::IdInUse,
                format!("route {id} exists already"),
            ));
        }
        request.id = Some(id);
        self.routes
            .insert(Route::new(id, src, request, Some((conn, request_id))));
        self.start_setup(id, now);
        Ok(())
    }

    /// `ROUTE_REMOVE` of route `id` from `key`, which must be its source.
    pub(super) fn route_remove(
        &mut self,
        key: PublicKey,
        id: MeshRouteId,
        now: Instant,
    ) -> Result<(), ProtoError> {
        let Some(route) = self.routes.get(id) else {
            return Err(ProtoError::new(
                ErrorKind::UnknownRoute,
                format!("no route {id}"),
            ));
        };
        if route.src != key {
            return Err(ProtoError::new(
                ErrorKind::UnknownRoute,
                format!("no route {id} from this node"),
            ));
        }
        if route.setup.is_some() {
            self.fail_setup(
                id,
                ProtoError::new(ErrorKind::SetupFailed, "the route was removed"),
                now,
            );
        }
        if let Some(route) = self.routes.remove(id) {
            if let Some(plan) = &route.active {
                self.remove_plan(id, plan);
            }
            self.remove_stale(id, &route.stale);
            self.log(
                Level::Info,
                format!("route {id} removed by {}", short(&key)),
            );
        }
        Ok(())
    }

    /// Compute a path for route `id` and the rules of every hop.
    fn plan(&mut self, id: MeshRouteId) -> Result<Plan, ProtoError> {
        let route = self
            .routes
            .get(id)
            .ok_or_else(|| ProtoError::new(ErrorKind::UnknownRoute, "gone"))?;
        let (src, dst) = (route.src, route.dst);
        let constraints = self.constraints(&route.request);
        let started = self.stopwatch_start();
        let found = self
            .router
            .route(&self.topology, src, dst, &constraints)
            .map_err(|e| {
                ProtoError::new(
                    ErrorKind::NoPath,
                    Self::no_path_text(&e, &src, &route.request),
                )
            });
        self.computed(started);
        let path = found?.nodes;
        let mut endpoints = Vec::with_capacity(path.len());
        for k in &path {
            let endpoint = self.registry.endpoint(k).ok_or_else(|| {
                ProtoError::new(
                    ErrorKind::NoPath,
                    format!("node {} has no transport endpoint", short(k)),
                )
            })?;
            endpoints.push(endpoint);
        }
        let (src_tun, dst_tun) = (self.registry.tun(&src), self.registry.tun(&dst));
        let last = path.len().saturating_sub(1);
        // fwd[i]: the id packets from src carry when they reach path[i] (i >= 1);
        // rev[i]: the id packets from dst carry when they reach path[i] (i < last).
        let mut fwd = Vec::with_capacity(path.len());
        let mut rev = Vec::with_capacity(path.len());
        for (i, k) in path.iter().enumerate() {
            fwd.push(if i > 0 {
                self.registry.fresh_id(k, &mut self.rng)
            } else {
                0
            });
            rev.push(if i < last {
                self.registry.fresh_id(k, &mut self.rng)
            } else {
                0
            });
        }
        let id = |v: &[u32], i: Option<usize>| i.and_then(|i| v.get(i)).copied().unwrap_or(0);
        let unreachable = || ProtoError::new(ErrorKind::NoPath, "path shorter than two nodes");
        let mut hops = Vec::with_capacity(path.len());
        for (i, k) in path.iter().enumerate() {
            let (before, after) = (i.checked_sub(1), Some(i + 1));
            // A neighbour's address as this hop reaches it over their link (a multi-homed
            // node's address on that link), else the one it registered.
            let at = |j: usize| {
                let peer = path.get(j)?;
                self.links
                    .seen_at(*k, *peer)
                    .or_else(|| endpoints.get(j).copied())
            };
            let prev_ep = before.and_then(at);
            let next_ep = at(i + 1);
            let rules = match (prev_ep, next_ep) {
                (None, Some(next)) => vec![RuleSpec::End {
                    peer: Key(dst),
                    prefixes: dst_tun.clone(),
                    first_hop: next,
                    out_id: id(&fwd, after),
                    in_id: id(&rev, Some(i)),
                    peer_in_id: id(&fwd, Some(last)),
                    prev_hop: next,
                }],
                (Some(prev), None) => vec![RuleSpec::End {
                    peer: Key(src),
                    prefixes: src_tun.clone(),
                    first_hop: prev,
                    out_id: id(&rev, before),
                    in_id: id(&fwd, Some(i)),
                    peer_in_id: id(&rev, Some(0)),
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

    /// Milliseconds rules live without traffic, as `INSTALL` carries it.
    fn expire_ms(&self) -> u64 {
        u64::try_from(self.params.rule_expiry.as_millis()).unwrap_or(u64::MAX)
    }

    /// Send `node` its rules of route `id` as an `INSTALL`; the request id to wait for.
    fn send_install(&mut self, node: PublicKey, id: MeshRouteId, rules: Vec<RuleSpec>) -> u64 {
        let install = Install {
            route: id,
            rules,
            expire_ms: self.expire_ms(),
        };
        let request = self.send_request(&node, &ManagerRequest::Install(install));
        self.routes.track_install(request, id);
        request
    }

    /// Start a setup of route `id` (unless one is under way): phase 1, the relays' and the
    /// destination's rules.
    pub(super) fn start_setup(&mut self, id: MeshRouteId, now: Instant) {
        let Some(route) = self.routes.get_mut(id) else {
            return;
        };
        route.retry_at = None;
        if route.setup.is_some() {
            return;
        }
        let plan = match self.plan(id) {
            Ok(plan) => plan,
            Err(e) => {
                self.counters.no_path += 1;
                self.setup_impossible(id, e, now);
                return;
            }
        };
        let path: Vec<String> = plan.path.iter().map(short).collect();
        self.log(
            Level::Info,
            format!("route {id}: setting up {}", path.join(" -> ")),
        );
        let mut waiting = HashMap::new();
        let hops: Vec<(PublicKey, Vec<RuleSpec>)> = plan.hops.iter().skip(1).cloned().collect();
        for (node, rules) in hops {
            let request = self.send_install(node, id, rules);
            waiting.insert(request, node);
        }
        let deadline = now + self.params.setup_timeout;
        if let Some(route) = self.routes.get_mut(id) {
            route.setup = Some(Setup {
                plan,
                phase: SetupPhase::Inner,
                waiting,
                deadline,
            });
        }
    }

    /// No path (or no endpoint): tell the waiting requester, or try again later. The
    /// error is kept as the route's reason (`route ls`).
    fn setup_impossible(&mut self, id: MeshRouteId, error: ProtoError, now: Instant) {
        let Some(route) = self.routes.get_mut(id) else {
            return;
        };
        route.last_error = Some(error.clone());
        if let Some((conn, request)) = route.waiter.take() {
            let first = route.active.is_none();
            self.send(conn, Frame::error(kind::ROUTE_ADD, request, &error));
            if first {
                self.routes.remove(id);
                self.log(Level::Warn, format!("route {id} refused: {error}"));
                return;
            }
        } else {
            let delay = route.backoff();
            route.retry_at = Some(now + delay);
            self.log(
                Level::Warn,
                format!("route {id}: {error}; retrying in {} ms", delay.as_millis()),
            );
            return;
        }
        self.log(Level::Warn, format!("route {id}: {error}; retrying"));
    }

    /// `node` answered an `INSTALL`: a refusal rolls the setup back; the last
    /// acknowledgement of phase 1 starts phase 2, the last of phase 2 commits.
    pub(super) fn install_reply(&mut self, node: PublicKey, frame: &Frame, now: Instant) {
        let Some(id) = self.routes.install_route(frame.id) else {
            return;
        };
        let Some(setup) = self.routes.get_mut(id).and_then(|r| r.setup.as_mut()) else {
            return;
        };
        // Only the hop the INSTALL went to can answer it: a reply from anyone else is
        // ignored without touching the outstanding request.
        if setup.waiting.get(&frame.id) != Some(&node) {
            return;
        }
        setup.waiting.remove(&frame.id);
        let done = setup.waiting.is_empty();
        let phase = setup.phase;
        self.routes.untrack_install(frame.id);
        if let Err(e) = frame.reply::<serde::de::IgnoredAny>() {
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
        if !done {
            return;
        }
        match phase {
            SetupPhase::Inner => self.start_source_phase(id, now),
            SetupPhase::Source => self.commit(id, now),
        }
    }

    /// Phase 2: every inner hop acknowledged; the source gets its rules, with the whole
    /// timeout for them.
    fn start_source_phase(&mut self, id: MeshRouteId, now: Instant) {
        let deadline = now + self.params.setup_timeout;
        let Some(setup) = self.routes.get_mut(id).and_then(|r| r.setup.as_mut()) else {
            return;
        };
        setup.phase = SetupPhase::Source;
        setup.deadline = deadline;
        let src = setup.plan.path.first().copied();
        let rules = setup.plan.hops.first().map(|(_, r)| r.clone());
        if let (Some(src), Some(rules)) = (src, rules) {
            let request = self.send_install(src, id, rules);
            if let Some(setup) = self.routes.get_mut(id).and_then(|r| r.setup.as_mut()) {
                setup.waiting.insert(request, src);
            }
        }
    }

    /// Every hop acknowledged: the new plan is active, the old one's rules and stale rules
    /// go, and the requester (if any) gets the route.
    fn commit(&mut self, id: MeshRouteId, now: Instant) {
        let Some(route) = self.routes.get_mut(id) else {
            return;
        };
        let Some(setup) = route.setup.take() else {
            return;
        };
        let old = route.active.replace(setup.plan);
        if old.is_some() {
            route.repairs += 1;
            self.counters.repairs += 1;
        }
        self.counters.setups_ok += 1;
        route.broken = false;
        route.failures = 0;
        route.last_error = None;
        let stale = std::mem::take(&mut route.stale);
        let waiter = route.waiter.take();
        let info = self.routes.get(id).map(|r| self.info(r, now));
        if let Some(old) = old {
            self.remove_plan(id, &old);
        }
        self.remove_stale(id, &stale);
        if let Some(info) = info {
            let path: Vec<String> = info.path.iter().map(|k| short(&k.0)).collect();
            self.log(
                Level::Info,
                format!("route {id} active: {}", path.join(" -> ")),
            );
            if let Some((conn, request)) = waiter {
                self.send(conn, Frame::ok(kind::ROUTE_ADD, request, &info));
            }
        }
    }

    /// Remove every rule of `plan` (fire and forget; rules also expire by themselves).
    pub(super) fn remove_plan(&mut self, id: MeshRouteId, plan: &Plan) {
        for (node, rules) in &plan.hops {
            let in_ids: Vec<u32> = rules.iter().map(RuleSpec::in_id).collect();
            self.registry.release_ids(node, &in_ids);
            self.send_request(node, &ManagerRequest::Remove(Remove { route: id, in_ids }));
        }
    }

    /// Remove rules of route `id` that nodes hold from before.
    pub(super) fn remove_stale<'a>(
        &mut self,
        id: MeshRouteId,
        stale: impl IntoIterator<Item = &'a (PublicKey, u32)>,
    ) {
        let mut by_node: BTreeMap<PublicKey, Vec<u32>> = BTreeMap::new();
        for (node, in_id) in stale {
            by_node.entry(*node).or_default().push(*in_id);
        }
        for (node, in_ids) in by_node {
            self.registry.release_ids(&node, &in_ids);
            self.send_request(&node, &ManagerRequest::Remove(Remove { route: id, in_ids }));
        }
    }

    /// Roll back the setup of route `id`: every hop of the attempt gets `REMOVE` (harmless
    /// where nothing was installed), and the route waits or is refused.
    pub(super) fn fail_setup(&mut self, id: MeshRouteId, error: ProtoError, now: Instant) {
        let Some(route) = self.routes.get_mut(id) else {
            return;
        };
        let Some(setup) = route.setup.take() else {
            return;
        };
        for request in setup.waiting.keys() {
            self.routes.untrack_install(*request);
        }
        self.counters.setups_failed += 1;
        self.log(
            Level::Warn,
            format!("route {id}: setup failed, rolled back: {error}"),
        );
        self.remove_plan(id, &setup.plan);
        self.setup_impossible(id, error, now);
    }

    /// Setups past their deadline fail.
    pub(super) fn expire_setups(&mut self, now: Instant) {
        let expired = self
            .routes
            .ids_where(|r| r.setup.as_ref().is_some_and(|s| s.deadline <= now));
        for id in expired {
            let late: Vec<String> = self
                .routes
                .get(id)
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
    }

    /// Forget route `id`: roll back its setup, remove its rules on every hop.
    pub(super) fn drop_route(&mut self, id: MeshRouteId, why: &str, now: Instant) {
        if self.routes.get(id).is_some_and(|r| r.setup.is_some()) {
            if let Some(route) = self.routes.get_mut(id) {
                route.waiter = None;
            }
            self.fail_setup(id, ProtoError::new(ErrorKind::SetupFailed, why), now);
        }
        if let Some(route) = self.routes.remove(id) {
            if let Some(plan) = &route.active {
                self.remove_plan(id, plan);
            }
            self.remove_stale(id, &route.stale);
            self.log(Level::Warn, format!("route {id} dropped: {why}"));
        }
    }

    /// Orphaned rules past their grace, and routes whose source has been gone longer than
    /// rules live: removed.
    pub(super) fn collect_garbage(&mut self, now: Instant) {
        for (id, held) in self.routes.take_expired_orphans(now) {
            self.log(
                Level::Info,
                format!("rules of route {id}, which no source claimed, removed"),
            );
            self.remove_stale(id, &held);
        }
        let expiry = self.params.rule_expiry;
        let gone = self.routes.ids_where(|r| {
            self.registry.nodes.get(&r.src).is_none_or(|n| {
                n.conn.is_none() && now.saturating_duration_since(n.last_seen) > expiry
            })
        });
        for id in gone {
            self.drop_route(id, "its source has been away longer than rules live", now);
        }
    }

    /// The link a - b died: setups over it fail, active routes over it are rebuilt.
    pub(super) fn repair_link(&mut self, a: PublicKey, b: PublicKey, now: Instant) {
        let in_setup = self
            .routes
            .ids_where(|r| r.setup.as_ref().is_some_and(|s| s.plan.uses_link(&a, &b)));
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
        let ids = self
            .routes
            .ids_where(|r| r.active.as_ref().is_some_and(|p| p.uses_link(&a, &b)));
        for id in ids {
            if let Some(route) = self.routes.get_mut(id) {
                route.break_path(ProtoError::new(
                    ErrorKind::PathDown,
                    format!("link {} - {} went down", short(&a), short(&b)),
                ));
                if route.setup.is_some() {
                    continue;
                }
            }
            self.log(
                Level::Info,
                format!("route {id} crosses a dead link: repairing"),
            );
            self.start_setup(id, now);
        }
    }

    /// A route as `route ls` and `route add` show it at `now`: while it is not active,
    /// with why and when the next attempt is due.
    pub(super) fn info(&self, route: &Route, now: Instant) -> RouteInfo {
        let c = self.constraints(&route.request);
        let state = self.state_of(route);
        let inactive = state != RouteState::Active;
        let retry_in = route
            .retry_at
            .filter(|_| inactive && route.setup.is_none())
            .map(|at| at.saturating_duration_since(now).as_millis());
        RouteInfo {
            id: route.id,
            src: Key(route.src),
            dst: Key(route.dst),
            path: route
                .active
                .as_ref()
                .map(|p| p.path.iter().map(|k| Key(*k)).collect())
                .unwrap_or_default(),
            state,
            min_hops: c.min_hops,
            max_hops: c.max_hops,
            avoid: route.request.avoid.clone(),
            weight: route.request.weight.unwrap_or(self.params.weight),
            repairs: route.repairs,
            reason: route.last_error.clone().filter(|_| inactive),
            retry_in_ms: retry_in.map(|ms| u64::try_from(ms).unwrap_or(u64::MAX)),
        }
    }

    /// Where a route stands, as `route ls` and the metrics show it.
    pub(super) fn state_of(&self, route: &Route) -> RouteState {
        if route.active.is_some() && !route.broken {
            RouteState::Active
        } else if route.setup.is_some() || route.broken {
            RouteState::Repairing
        } else {
            RouteState::Waiting
        }
    }

    /// The routes `key` is an end of.
    pub(super) fn route_list(&self, key: &PublicKey, now: Instant) -> RouteList {
        let routes = self
            .routes
            .iter()
            .filter(|r| r.src == *key || r.dst == *key)
            .map(|r| self.info(r, now))
            .collect();
        RouteList { routes }
    }
}
