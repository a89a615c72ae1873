//! The book of links: who declared each link (the manager's config, or a node for
//! itself), the latest measurement either end reported, and whether routes may use it.
//! Also the manager's side of `LINK_ADD`, `LINK_REMOVE`, `LINK_REPORT` and `NEIGHBOURS`.
//!
//! A link is routed over once the manager's config has it or both its ends declared it
//! (one node alone cannot pull other nodes' routes through itself), and once it is
//! *proven*: each end reported it up, which an end does only after one of its own link
//! probes was answered. So each direction is proven by the end that sends on it: an end
//! that can reach the other but not be reached back (a firewall, a wrong address for it)
//! does not make the link up alone. The probes are authenticated with the key the two
//! nodes share, so an answered probe shows that the other node's endpoint is its own. Until
//! both ends have reported it up the link is `unproven` (no route), whatever was measured
//! before; an end that reports it down makes it down, whatever the other says.
//!
//! Measurements never outlive the node they were taken with. When a node goes down or
//! registers again (a restart, or a new connection), the reports of its links are dropped
//! and the links are unproven again. A neighbour may still hold probes answered by the
//! node's previous life, or have a report of them in flight, so after a registration
//! each online neighbour's reports about the link are *fenced*: ignored until the
//! neighbour answers the `NEIGHBOURS` the manager sent it after the registration (frames
//! on a connection arrive in order, so a report after that answer was made from the new
//! list). When the registration replaced a live connection, the neighbours are first sent
//! a list without the node, so they drop what they measured of its previous life. Reports
//! about a link whose other end is offline are ignored too.
//!
//! A link's state, as `nodes` shows it ([`LinkState`]): `one_end` (declared by one end
//! only), `offline` (an end is not connected), `unproven`, `up` or `down` (probes no
//! longer answered).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::Level;

use skywire_dataplane::crypto::PublicKey;

use super::{MAX_LINKS_PER_NODE, ManagerCore, short};
use crate::manager::proto::{
    ErrorKind, Key, LinkAdded, LinkInfo, LinkReport, LinkState, ManagerRequest, Neighbour,
    Neighbours, ProtoError,
};
use crate::manager::topology::LinkMetrics;

/// What a link measures before any report: down, so no route uses it yet.
const UNPROVEN: LinkMetrics = LinkMetrics {
    rtt: None,
    loss: 0.0,
    up: false,
};

/// Who declared a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    /// The manager's config.
    Config,
    /// This node, for itself.
    Node(PublicKey),
}

#[derive(Debug, Default)]
pub(super) struct LinkEntry {
    sources: BTreeSet<Source>,
    /// Each end's latest report.
    reports: BTreeMap<PublicKey, LinkMetrics>,
    /// Ends whose reports are ignored until they answer the `NEIGHBOURS` request of this
    /// id (or a later one): sent after the other end registered.
    fences: BTreeMap<PublicKey, u64>,
    /// Where each end reaches the other, by the reporting end: the address its answered
    /// probes went to (a multi-homed node's address on this link).
    seen: BTreeMap<PublicKey, SocketAddr>,
}

impl LinkEntry {
    /// In the manager's config, or declared by both ends.
    fn usable(&self, a: PublicKey, b: PublicKey) -> bool {
        self.sources.contains(&Source::Config)
            || (self.sources.contains(&Source::Node(a)) && self.sources.contains(&Source::Node(b)))
    }

    /// What routes go by: down when an end reported it down (the worse of two downs),
    /// up once both ends reported it up (the longer round trip, the higher loss), and
    /// `None` (unproven) before.
    fn metrics(&self) -> Option<LinkMetrics> {
        let worse = |a: LinkMetrics, b: LinkMetrics| LinkMetrics {
            rtt: a.rtt.max(b.rtt),
            loss: a.loss.max(b.loss),
            up: a.up && b.up,
        };
        let downs = self.reports.values().filter(|m| !m.up).copied();
        if let Some(down) = downs.reduce(worse) {
            return Some(down);
        }
        match self
            .reports
            .values()
            .copied()
            .collect::<Vec<_>>()
            .as_slice()
        {
            [a, b] => Some(worse(*a, *b)),
            _ => None,
        }
    }
}

/// The links, by their ends (smaller key first).
#[derive(Debug, Default)]
pub(super) struct LinkBook {
    links: BTreeMap<(PublicKey, PublicKey), LinkEntry>,
}

/// The book's key of the link a - b.
fn link_key(a: PublicKey, b: PublicKey) -> (PublicKey, PublicKey) {
    if a <= b { (a, b) } else { (b, a) }
}

impl LinkBook {
    /// Record that `source` declares a - b; whether routes may use the link now.
    fn declare(&mut self, a: PublicKey, b: PublicKey, source: Source) -> bool {
        let entry = self.links.entry(link_key(a, b)).or_default();
        entry.sources.insert(source);
        entry.usable(a, b)
    }

    /// Where `from` reaches `to` over their link, as `from` last reported it (with the
    /// link up); `None` before such a report.
    pub(super) fn seen_at(&self, from: PublicKey, to: PublicKey) -> Option<SocketAddr> {
        self.links
            .get(&link_key(from, to))
            .and_then(|l| l.seen.get(&from).copied())
    }

    /// The latest measurement of a - b.
    fn metrics(&self, a: PublicKey, b: PublicKey) -> Option<LinkMetrics> {
        self.links.get(&link_key(a, b)).and_then(LinkEntry::metrics)
    }

    /// How many nodes (not the config) declared a - b.
    fn declared_by_nodes(&self, a: PublicKey, b: PublicKey) -> usize {
        self.links.get(&link_key(a, b)).map_or(0, |l| {
            l.sources
                .iter()
                .filter(|s| matches!(s, Source::Node(_)))
                .count()
        })
    }

    /// How many links `key` declared.
    fn declared_by(&self, key: &PublicKey) -> usize {
        self.links
            .values()
            .filter(|l| l.sources.contains(&Source::Node(*key)))
            .count()
    }

    /// `key` withdraws its declaration of `key` - `peer`: whether the link is still usable,
    /// or an error when there is no such link or `key` did not declare it.
    fn withdraw(&mut self, key: PublicKey, peer: PublicKey) -> Result<bool, ProtoError> {
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
        } else if !usable {
            // Proven again once both ends declare it and probe it anew.
            entry.reports.clear();
            entry.seen.clear();
        }
        Ok(usable)
    }

    /// A measurement of `key` - `peer` reported by `key`: whether the link was up before,
    /// and what routes go by now ([`LinkEntry::metrics`]); `None` when the report is
    /// ignored (a link nobody declared, declared by one end only, or `key`'s reports about
    /// it are fenced).
    fn report(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        metrics: LinkMetrics,
        seen: Option<SocketAddr>,
    ) -> Option<(bool, Option<LinkMetrics>)> {
        let entry = self.links.get_mut(&link_key(key, peer))?;
        if !entry.usable(key, peer) || entry.fences.contains_key(&key) {
            return None;
        }
        let was_up = entry.metrics().is_some_and(|m| m.up);
        entry.reports.insert(key, metrics);
        if let (true, Some(seen)) = (metrics.up, seen) {
            entry.seen.insert(key, seen);
        }
        Some((was_up, entry.metrics()))
    }

    /// Drop the reports of every link of `key` and the fences on its own reports (it
    /// starts afresh: a new connection, or none); the links of `key`.
    fn forget_reports(&mut self, key: &PublicKey) -> Vec<(PublicKey, PublicKey)> {
        self.links
            .iter_mut()
            .filter(|((a, b), _)| a == key || b == key)
            .map(|((a, b), l)| {
                l.reports.clear();
                l.fences.remove(key);
                l.seen.clear();
                (*a, *b)
            })
            .collect()
    }

    /// Ignore `reporter`'s reports about `reporter` - `peer` until it answers the
    /// `NEIGHBOURS` request `id`.
    fn fence(&mut self, reporter: PublicKey, peer: PublicKey, id: u64) {
        if let Some(entry) = self.links.get_mut(&link_key(reporter, peer)) {
            entry.fences.insert(reporter, id);
        }
    }

    /// `reporter` answered the `NEIGHBOURS` request `id`: it applied every list sent
    /// before, so the fences up to `id` on its reports are lifted.
    fn lift_fences(&mut self, reporter: &PublicKey, id: u64) {
        for ((a, b), entry) in &mut self.links {
            if (a == reporter || b == reporter)
                && entry.fences.get(reporter).is_some_and(|&f| f <= id)
            {
                entry.fences.remove(reporter);
            }
        }
    }

    /// Every link, as `nodes` shows it; `online` tells whether a node is connected.
    pub(super) fn infos(&self, online: impl Fn(&PublicKey) -> bool) -> Vec<LinkInfo> {
        self.links
            .iter()
            .map(|((a, b), l)| {
                let metrics = l.metrics();
                let usable = l.usable(*a, *b);
                let state = if !usable {
                    LinkState::OneEnd
                } else if !online(a) || !online(b) {
                    LinkState::Offline
                } else {
                    match metrics {
                        None => LinkState::Unproven,
                        Some(m) if m.up => LinkState::Up,
                        Some(_) => LinkState::Down,
                    }
                };
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
                        + if usable { "" } else { " (one end only)" },
                    up: state == LinkState::Up,
                    state,
                    rtt_us: metrics
                        .and_then(|m| m.rtt)
                        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    loss: metrics.map_or(0.0, |m| m.loss),
                }
            })
            .collect()
    }
}

impl ManagerCore {
    /// Record that `source` declares the link a - b, and put it in the topology once it is
    /// usable. Returns whether it is.
    pub(super) fn declare_link(&mut self, a: PublicKey, b: PublicKey, source: Source) -> bool {
        if !self.links.declare(a, b, source) {
            return false;
        }
        for k in [a, b] {
            let _ = self.topology.add_node(k);
            let online = self.registry.online(&k);
            let _ = self.topology.set_node_up(k, online);
        }
        let _ = self.topology.add_link(a, b);
        // Unproven until an end reports it up: an answered, authenticated link probe says
        // the neighbour's registered endpoint is really its own.
        let metrics = self.links.metrics(a, b).unwrap_or(UNPROVEN);
        let _ = self.topology.set_link_metrics(a, b, metrics);
        true
    }

    /// `key` went down or registered again: what its links measured is stale; they are
    /// unproven until it (or a neighbour) reports them again.
    pub(super) fn forget_link_reports(&mut self, key: &PublicKey) {
        for (a, b) in self.links.forget_reports(key) {
            let _ = self.topology.set_link_metrics(a, b, UNPROVEN);
        }
    }

    /// `key` answered the `NEIGHBOURS` request `id`.
    pub(super) fn neighbours_answered(&mut self, key: &PublicKey, id: u64) {
        self.links.lift_fences(key, id);
    }

    /// `LINK_ADD` from `key`.
    pub(super) fn link_add(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        now: Instant,
    ) -> Result<LinkAdded, ProtoError> {
        if peer == key {
            return Err(ProtoError::new(
                ErrorKind::BadRequest,
                "a link joins two different nodes",
            ));
        }
        if self.links.declared_by_nodes(key, peer) == 0
            && self.links.declared_by(&key) >= MAX_LINKS_PER_NODE
        {
            return Err(ProtoError::new(
                ErrorKind::NotAllowed,
                format!("at most {MAX_LINKS_PER_NODE} declared links per node"),
            ));
        }
        let usable = self.declare_link(key, peer, Source::Node(key));
        self.log(
            Level::Info,
            format!(
                "link {} - {} declared by {}{}",
                short(&key),
                short(&peer),
                short(&key),
                if usable {
                    ""
                } else {
                    " (waiting for the other end)"
                }
            ),
        );
        self.push_neighbours_around(&key);
        // Routes waiting for a path may have one now.
        self.routes.retry_waiting(now);
        Ok(LinkAdded { usable })
    }

    /// `LINK_REMOVE` from `key`: routes over the link are rebuilt once it is unusable.
    pub(super) fn link_remove(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        now: Instant,
    ) -> Result<(), ProtoError> {
        let usable = self.links.withdraw(key, peer)?;
        if !usable && self.topology.remove_link(key, peer) {
            self.repair_link(key, peer, now);
        }
        self.push_neighbours_around(&key);
        self.push_neighbours_around(&peer);
        Ok(())
    }

    /// `LINK_REPORT` from `key`: new metrics; a link going down is repaired around at
    /// once, one coming up lets waiting routes try again.
    pub(super) fn link_report(&mut self, key: PublicKey, report: &LinkReport, now: Instant) {
        for m in &report.links {
            let peer = m.peer.0;
            // What a neighbour measured of an offline node is from its previous life.
            if !self.registry.online(&peer) {
                continue;
            }
            let metrics = LinkMetrics {
                rtt: m.rtt_us.map(Duration::from_micros),
                loss: m.loss.clamp(0.0, 1.0),
                up: m.up,
            };
            let Some((was_up, now_metrics)) = self.links.report(key, peer, metrics, m.endpoint)
            else {
                continue;
            };
            let is_up = now_metrics.is_some_and(|m| m.up);
            let _ = self
                .topology
                .set_link_metrics(key, peer, now_metrics.unwrap_or(UNPROVEN));
            if was_up && !is_up {
                self.log(
                    Level::Warn,
                    format!(
                        "link {} - {} is down (reported by {})",
                        short(&key),
                        short(&peer),
                        short(&key)
                    ),
                );
                self.repair_link(key, peer, now);
            } else if !was_up && is_up {
                self.log(
                    Level::Info,
                    format!("link {} - {} is up", short(&key), short(&peer)),
                );
                self.routes.retry_waiting(now);
            }
        }
    }

    /// Tell `key` and its neighbours whom to probe (online ends of usable links); the
    /// neighbours sent a list, with the id of the request each was sent.
    pub(super) fn push_neighbours_around(&mut self, key: &PublicKey) -> Vec<(PublicKey, u64)> {
        let neighbours: Vec<PublicKey> = self.topology.neighbours(*key).map(|(k, _)| k).collect();
        self.push_neighbours(key, None);
        neighbours
            .into_iter()
            .filter_map(|n| Some((n, self.push_neighbours(&n, None)?)))
            .collect()
    }

    /// `key` registered again: its links are unproven until proven anew, and nothing a
    /// neighbour measured before counts. When `replaced` (its previous connection was
    /// live, so its neighbours still probe it), they are first told to forget it.
    pub(super) fn reset_links_on_register(&mut self, key: &PublicKey, replaced: bool) {
        self.forget_link_reports(key);
        if replaced {
            let neighbours: Vec<PublicKey> =
                self.topology.neighbours(*key).map(|(k, _)| k).collect();
            for n in neighbours {
                self.push_neighbours(&n, Some(key));
            }
        }
    }

    /// Fence the reports of each `(neighbour, id)` about its link to `key` until it
    /// answers `NEIGHBOURS` request `id`.
    pub(super) fn fence_reports(&mut self, key: &PublicKey, sent: &[(PublicKey, u64)]) {
        for &(neighbour, id) in sent {
            self.links.fence(neighbour, *key, id);
        }
    }

    /// Send `node` its neighbours (online ends of its usable links, but `except`); the
    /// request's id, or `None` when `node` is not connected.
    fn push_neighbours(&mut self, node: &PublicKey, except: Option<&PublicKey>) -> Option<u64> {
        self.registry.conn_of(node)?;
        let neighbours: Vec<Neighbour> = self
            .topology
            .neighbours(*node)
            .filter(|(peer, _)| Some(peer) != except)
            .filter_map(|(peer, _)| {
                self.registry.conn_of(&peer)?;
                // Where `node` already reaches the peer, else where the peer registered.
                let endpoint = self
                    .links
                    .seen_at(*node, peer)
                    .or_else(|| self.registry.endpoint(&peer))?;
                Some(Neighbour {
                    peer: Key(peer),
                    endpoint,
                })
            })
            .collect();
        Some(self.send_request(node, &ManagerRequest::Neighbours(Neighbours { neighbours })))
    }
}
