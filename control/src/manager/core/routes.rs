//! The book of routes: each route's request, its active path and rules, the setup
//! transaction under way (with its phase and outstanding `INSTALL`s), and the rules nodes
//! reported for routes nobody claims yet. Plain data with its own bookkeeping; the setup
//! itself, which sends frames, is in `setup`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;

use super::{ConnId, MAX_RETRY, ORPHAN_GRACE, RETRY};
use crate::manager::proto::{MeshRouteId, ProtoError, RouteRequest, RuleSpec};

/// The rules of one path: for each node of it, the rules it must hold.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Source first, destination last.
    pub(super) path: Vec<PublicKey>,
    pub(super) hops: Vec<(PublicKey, Vec<RuleSpec>)>,
}

impl Plan {
    /// The rules of `node` on this path.
    pub(super) fn rules_of(&self, node: &PublicKey) -> Option<&Vec<RuleSpec>> {
        self.hops.iter().find(|(k, _)| k == node).map(|(_, r)| r)
    }

    /// Whether the path crosses the link a - b.
    pub(super) fn uses_link(&self, a: &PublicKey, b: &PublicKey) -> bool {
        self.path
            .windows(2)
            .any(|w| matches!(w, [x, y] if (x == a && y == b) || (x == b && y == a)))
    }
}

/// Where a setup transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetupPhase {
    /// Phase 1: the relays' and the destination's rules are being installed.
    Inner,
    /// Phase 2: all of them acknowledged; the source's route end is being installed, which
    /// moves traffic onto the complete route.
    Source,
}

/// A setup transaction: one attempt at installing a plan, all or nothing.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) plan: Plan,
    pub(super) phase: SetupPhase,
    /// Outstanding INSTALLs: request id -> hop.
    pub(super) waiting: HashMap<u64, PublicKey>,
    /// When the current phase fails if not every hop acknowledged.
    pub(super) deadline: Instant,
}

/// One route the manager keeps.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) id: MeshRouteId,
    pub(super) src: PublicKey,
    pub(super) dst: PublicKey,
    pub(super) request: RouteRequest,
    pub(super) active: Option<Plan>,
    pub(super) setup: Option<Setup>,
    /// The `ROUTE_ADD` waiting for the first setup: connection and request id.
    pub(super) waiter: Option<(ConnId, u64)>,
    pub(super) repairs: u64,
    /// When to try again (a failed attempt, or a repair that could not start).
    pub(super) retry_at: Option<Instant>,
    /// Rules of this route that nodes reported holding from before (a manager restart):
    /// removed once a new setup is active.
    pub(super) stale: BTreeSet<(PublicKey, u32)>,
    /// The active path crosses something that died: being rebuilt.
    pub(super) broken: bool,
    /// Attempts that failed in a row since the last success: the next timed retry waits
    /// [`RETRY`] doubled this many times, at most [`MAX_RETRY`].
    pub(super) failures: u32,
    /// Why it is not active: the last failed attempt, or what broke its path. Cleared
    /// when a setup commits.
    pub(super) last_error: Option<ProtoError>,
}

impl Route {
    /// A route of `src` with no path yet.
    pub(super) fn new(
        id: MeshRouteId,
        src: PublicKey,
        request: RouteRequest,
        waiter: Option<(ConnId, u64)>,
    ) -> Self {
        Self {
            id,
            src,
            dst: request.dst.0,
            request,
            active: None,
            setup: None,
            waiter,
            repairs: 0,
            retry_at: None,
            stale: BTreeSet::new(),
            broken: false,
            failures: 0,
            last_error: None,
        }
    }

    /// How long to wait before the next timed attempt, counting this failure.
    pub(super) fn backoff(&mut self) -> Duration {
        let delay = RETRY
            .saturating_mul(1 << self.failures.min(8))
            .min(MAX_RETRY);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Its active path crosses something that died (`why`): it is being rebuilt.
    pub(super) fn break_path(&mut self, why: ProtoError) {
        self.broken = true;
        self.last_error = Some(why);
    }

    /// The active plan and the one being set up, if any.
    pub(super) fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.active
            .iter()
            .chain(self.setup.as_ref().map(|s| &s.plan))
    }

    /// No setup under way, and no working path: it should be tried again.
    fn needs_path(&self) -> bool {
        self.setup.is_none() && (self.active.is_none() || self.broken)
    }
}

/// Rules nodes hold for a route nobody claims: since when, and where.
type Orphan = (Instant, Vec<(PublicKey, u32)>);

/// The routes, the outstanding `INSTALL`s and the orphaned rules.
#[derive(Debug, Default)]
pub(super) struct RouteBook {
    routes: BTreeMap<MeshRouteId, Route>,
    /// Outstanding INSTALL requests: request id -> route.
    installs: HashMap<u64, MeshRouteId>,
    orphans: HashMap<MeshRouteId, Orphan>,
}

impl RouteBook {
    /// The route `id`.
    pub(super) fn get(&self, id: MeshRouteId) -> Option<&Route> {
        self.routes.get(&id)
    }

    /// The route `id`, to change.
    pub(super) fn get_mut(&mut self, id: MeshRouteId) -> Option<&mut Route> {
        self.routes.get_mut(&id)
    }

    /// Whether route `id` exists.
    pub(super) fn contains(&self, id: MeshRouteId) -> bool {
        self.routes.contains_key(&id)
    }

    /// Add a route (replacing one with its id).
    pub(super) fn insert(&mut self, route: Route) {
        self.routes.insert(route.id, route);
    }

    /// Take route `id` out.
    pub(super) fn remove(&mut self, id: MeshRouteId) -> Option<Route> {
        self.routes.remove(&id)
    }

    /// Every route.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Every route's id, in order.
    pub(super) fn ids(&self) -> Vec<MeshRouteId> {
        self.routes.keys().copied().collect()
    }

    /// The ids of the routes for which `pred` holds, in order.
    pub(super) fn ids_where(&self, pred: impl Fn(&Route) -> bool) -> Vec<MeshRouteId> {
        self.routes
            .values()
            .filter(|r| pred(r))
            .map(|r| r.id)
            .collect()
    }

    /// Every plan, active or being set up, of every route.
    pub(super) fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.routes.values().flat_map(Route::plans)
    }

    /// How many routes `src` owns.
    pub(super) fn count_from(&self, src: &PublicKey) -> usize {
        self.routes.values().filter(|r| r.src == *src).count()
    }

    /// Routes without a working path and no setup under way try again at `now`.
    pub(super) fn retry_waiting(&mut self, now: Instant) {
        for route in self.routes.values_mut() {
            if route.needs_path() {
                route.retry_at = Some(now);
            }
        }
    }

    /// The INSTALL with request id `request` belongs to route `id`.
    pub(super) fn track_install(&mut self, request: u64, id: MeshRouteId) {
        self.installs.insert(request, id);
    }

    /// The route of the outstanding INSTALL `request`.
    pub(super) fn install_route(&self, request: u64) -> Option<MeshRouteId> {
        self.installs.get(&request).copied()
    }

    /// INSTALL `request` is answered (or abandoned).
    pub(super) fn untrack_install(&mut self, request: u64) {
        self.installs.remove(&request);
    }

    /// `node` holds rule `in_id` of route `id`, which nobody claims (yet).
    pub(super) fn add_orphan(
        &mut self,
        id: MeshRouteId,
        node: PublicKey,
        in_id: u32,
        now: Instant,
    ) {
        self.orphans
            .entry(id)
            .or_insert_with(|| (now, Vec::new()))
            .1
            .push((node, in_id));
    }

    /// Route `id` was claimed: the rules held for it so far.
    pub(super) fn take_orphan(&mut self, id: MeshRouteId) -> Vec<(PublicKey, u32)> {
        self.orphans
            .remove(&id)
            .map(|(_, held)| held)
            .unwrap_or_default()
    }

    /// Orphaned rules past [`ORPHAN_GRACE`], taken out of the book.
    pub(super) fn take_expired_orphans(
        &mut self,
        now: Instant,
    ) -> Vec<(MeshRouteId, Vec<(PublicKey, u32)>)> {
        let expired: Vec<MeshRouteId> = self
            .orphans
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) > ORPHAN_GRACE)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.orphans.remove(&id).map(|(_, held)| (id, held)))
            .collect()
    }

    /// When the next orphan's grace ends.
    pub(super) fn next_orphan_deadline(&self) -> Option<Instant> {
        self.orphans.values().map(|(t, _)| *t + ORPHAN_GRACE).min()
    }
}
