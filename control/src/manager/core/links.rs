//! The book of links: who declared each link (the manager's config, or a node for
//! itself), the latest measurement either end reported, and whether routes may use it.
//! Also the manager's side of `LINK_ADD`, `LINK_REMOVE`, `LINK_REPORT` and `NEIGHBOURS`.
//!
//! A link is routed over once the manager's config has it or both its ends declared it
//! (one node alone cannot pull other nodes' routes through itself), and once an end has
//! reported it up: its link probes are authenticated with the key the two nodes share, so
//! an answered probe shows that each node's registered endpoint is its own. A node that
//! goes down leaves its links unproven until they are reported again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;

use super::{MAX_LINKS_PER_NODE, ManagerCore, short};
use crate::manager::proto::{
    ErrorKind, Key, LinkAdded, LinkInfo, LinkReport, ManagerRequest, Neighbour, Neighbours,
    ProtoError,
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
    /// The latest report from either end.
    report: Option<(Instant, LinkMetrics)>,
}

impl LinkEntry {
    /// In the manager's config, or declared by both ends.
    fn usable(&self, a: PublicKey, b: PublicKey) -> bool {
        self.sources.contains(&Source::Config)
            || (self.sources.contains(&Source::Node(a)) && self.sources.contains(&Source::Node(b)))
    }

    /// The latest measurement, if any.
    fn metrics(&self) -> Option<LinkMetrics> {
        self.report.map(|(_, m)| m)
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
        }
        Ok(usable)
    }

    /// A measurement of `key` - `peer` reported by `key`: whether the link was up before,
    /// or `None` for a link nobody declared (the report is ignored).
    fn report(
        &mut self,
        key: PublicKey,
        peer: PublicKey,
        metrics: LinkMetrics,
        now: Instant,
    ) -> Option<bool> {
        let entry = self.links.get_mut(&link_key(key, peer))?;
        let was_up = entry.report.is_some_and(|(_, r)| r.up);
        entry.report = Some((now, metrics));
        Some(was_up)
    }

    /// Drop the reports of every link of `key`; the links whose reports went.
    fn forget_reports(&mut self, key: &PublicKey) -> Vec<(PublicKey, PublicKey)> {
        self.links
            .iter_mut()
            .filter(|((a, b), l)| (a == key || b == key) && l.report.is_some())
            .map(|((a, b), l)| {
                l.report = None;
                (*a, *b)
            })
            .collect()
    }

    /// Every link, as `nodes` shows it; `online` tells whether a node is connected.
    pub(super) fn infos(&self, online: impl Fn(&PublicKey) -> bool) -> Vec<LinkInfo> {
        self.links
            .iter()
            .map(|((a, b), l)| {
                let metrics = l.metrics();
                let usable = l.usable(*a, *b);
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
                    up: usable && metrics.is_some_and(|m| m.up) && online(a) && online(b),
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

    /// `key` went down: what its links measured is stale; they are unproven until it
    /// (or a neighbour) reports them again.
    pub(super) fn forget_link_reports(&mut self, key: &PublicKey) {
        for (a, b) in self.links.forget_reports(key) {
            let _ = self.topology.set_link_metrics(a, b, UNPROVEN);
        }
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
            let metrics = LinkMetrics {
                rtt: m.rtt_us.map(Duration::from_micros),
                loss: m.loss.clamp(0.0, 1.0),
                up: m.up,
            };
            let Some(was_up) = self.links.report(key, peer, metrics, now) else {
                continue;
            };
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
                self.routes.retry_waiting(now);
            }
        }
    }

    /// Tell `key` and its neighbours whom to probe (online ends of usable links).
    pub(super) fn push_neighbours_around(&mut self, key: &PublicKey) {
        let mut targets = vec![*key];
        targets.extend(self.topology.neighbours(*key).map(|(k, _)| k));
        for node in targets {
            let neighbours: Vec<Neighbour> = self
                .topology
                .neighbours(node)
                .filter_map(|(peer, _)| {
                    self.registry.conn_of(&peer)?;
                    Some(Neighbour {
                        peer: Key(peer),
                        endpoint: self.registry.endpoint(&peer)?,
                    })
                })
                .collect();
            self.send_request(
                &node,
                &ManagerRequest::Neighbours(Neighbours { neighbours }),
            );
        }
    }
}
