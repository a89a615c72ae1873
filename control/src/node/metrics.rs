//! The node's Prometheus metrics (`node.metrics`): its `status`, as families.
//!
//! A scrape asks the node for the very reply `skywire status --json` prints
//! ([`status_reply`], shared with the control socket) and writes it with
//! [`crate::metrics::Exposition`]; nothing counts for Prometheus on the packet path.
//! Node-wide counters are the sums over the live route ends (or relay rules) plus what
//! removed ones had counted (`retired`), so they never go down when the manager repairs a
//! route or an idle rule expires. Byte counts are payload bytes, as in `status`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `skywire_node_{rx,tx}_{bytes,packets}_total` | counter | |
//! | `skywire_node_relayed_{bytes,packets}_total` | counter | |
//! | `skywire_node_handshakes_total` | counter | |
//! | `skywire_node_dropped_packets_total` | counter | `reason` (before a route: forwarding and node drops) |
//! | `skywire_node_route_dropped_packets_total` | counter | `reason` (at route ends, summed) |
//! | `skywire_node_routes`, `skywire_node_relays` | gauge | |
//! | `skywire_node_expired_rules_total`, `skywire_node_events_dropped_total` | counter | |
//! | `skywire_node_under_load` | gauge 0/1 | |
//! | `skywire_node_manager_registered` | gauge 0/1 (only with `node.manager`) | |
//! | `skywire_node_streams`, `skywire_node_stream_listeners` | gauge | |
//! | `skywire_node_streams_{dialed,arrived,reset,refused,limited}_total` | counter | |
//! | `skywire_node_stream_{rx,tx}_bytes_total` | counter | |
//! | `skywire_build_info` | gauge 1 | `version` |
//!
//! With `node.metrics.per_route: true`, also, per route end (`route` = its name as
//! `status` shows it, `peer` = the first 16 hex digits of the peer's key) and per relay
//! rule (`in_id`): `skywire_route_{rx,tx}_{bytes,packets}_total`,
//! `skywire_route_handshakes_total`, `skywire_route_dropped_packets_total{reason}`,
//! `skywire_route_last_handshake_age_seconds`, `skywire_relay_forwarded_{bytes,packets}_total`.
//! Off by default: their number grows with the routes, and a series disappears with its
//! route end (a manager route's end is renamed when it is repaired).
//!
//! Drop `reason`s are the names `status` uses (`bad tag`, `no route`, ...): a closed set,
//! documented in `docs/PROTOCOL.md` and the engine.

use core::fmt;

use super::ctl::server::{ENGINE_TIMEOUT, NodeApi, status_reply};
use super::ctl::{StatusReply, protocol::Drops};
use super::reconnect::LinkState;
use crate::metrics::{Exposition, render};

/// How the node's metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsOptions {
    /// Per-route and per-relay series (`node.metrics.per_route`).
    pub per_route: bool,
}

/// The exposition text of `node` now: its status, asked for with the control socket's
/// timeout; an error says why there is none (the engine stopped or did not answer).
pub fn scrape(node: &dyn NodeApi, options: MetricsOptions) -> Result<String, String> {
    let status = status_reply(node, ENGINE_TIMEOUT).map_err(|gone| gone.to_string())?;
    exposition(status, options).map_err(|_| "the metrics could not be written".to_owned())
}

/// The exposition text of a status reply.
pub fn exposition(status: StatusReply, options: MetricsOptions) -> Result<String, fmt::Error> {
    render(move |e| write_node(e, &status, options))
}

/// Reason counts of several sources, added up by name, in the order first seen.
fn add_drops<'a>(sources: impl IntoIterator<Item = &'a Drops>) -> Vec<(&'a str, u64)> {
    let mut sum: Vec<(&str, u64)> = Vec::new();
    for drops in sources {
        for (reason, count) in &drops.0 {
            match sum.iter_mut().find(|(r, _)| r == reason) {
                Some((_, total)) => *total = total.saturating_add(*count),
                None => sum.push((reason.as_str(), *count)),
            }
        }
    }
    sum
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn write_node(e: &mut Exposition<'_>, s: &StatusReply, options: MetricsOptions) -> fmt::Result {
    let routes = &s.routes;
    let retired = &s.retired;
    let sum = |f: fn(&super::ctl::protocol::RouteReply) -> u64, gone: u64| {
        routes
            .iter()
            .map(f)
            .fold(gone, |total, n| total.saturating_add(n))
    };
    e.counter(
        "skywire_node_rx_bytes",
        "Payload bytes received on this node's route ends (decrypted).",
        sum(|r| r.rx_bytes, retired.rx_bytes),
    )?;
    e.counter(
        "skywire_node_tx_bytes",
        "Payload bytes sent on this node's route ends (before encryption).",
        sum(|r| r.tx_bytes, retired.tx_bytes),
    )?;
    e.counter(
        "skywire_node_rx_packets",
        "Data packets received on this node's route ends.",
        sum(|r| r.rx_packets, retired.rx_packets),
    )?;
    e.counter(
        "skywire_node_tx_packets",
        "Data packets sent on this node's route ends.",
        sum(|r| r.tx_packets, retired.tx_packets),
    )?;
    e.counter(
        "skywire_node_handshakes",
        "Handshakes completed on this node's route ends, as either side.",
        sum(|r| r.handshakes, retired.handshakes),
    )?;
    let relayed = |f: fn(&super::ctl::protocol::RelayReply) -> u64, gone: u64| {
        s.relays
            .iter()
            .map(f)
            .fold(gone, |total, n| total.saturating_add(n))
    };
    e.counter(
        "skywire_node_relayed_bytes",
        "Bytes of datagrams this node forwarded for routes passing through it.",
        relayed(|r| r.bytes, retired.relayed_bytes),
    )?;
    e.counter(
        "skywire_node_relayed_packets",
        "Datagrams this node forwarded for routes passing through it.",
        relayed(|r| r.packets, retired.relayed_packets),
    )?;
    e.counters(
        "skywire_node_dropped_packets",
        "Packets dropped before reaching a route end (forwarding and node checks), by reason.",
        s.drops
            .0
            .iter()
            .map(|(r, n)| (vec![("reason", r.as_str())], *n)),
    )?;
    let route_drops = add_drops(routes.iter().map(|r| &r.drops).chain([&retired.drops]));
    e.counters(
        "skywire_node_route_dropped_packets",
        "Packets dropped at this node's route ends, all routes together, by reason.",
        route_drops
            .into_iter()
            .map(|(r, n)| (vec![("reason", r)], n)),
    )?;
    e.gauge(
        "skywire_node_routes",
        "Route ends on this node.",
        count(routes.len()),
    )?;
    e.gauge(
        "skywire_node_relays",
        "Relay rules on this node.",
        count(s.relays.len()),
    )?;
    e.counter(
        "skywire_node_expired_rules",
        "Manager rules this node removed because no packet used them for their expiry time.",
        s.expired,
    )?;
    e.counter(
        "skywire_node_events_dropped",
        "Engine events lost because nobody read them in time.",
        s.events_dropped,
    )?;
    e.gauge(
        "skywire_node_under_load",
        "1 while handshake initiations are answered with cookie replies (a flood), else 0.",
        i64::from(s.under_load),
    )?;
    if let Some(link) = &s.manager {
        e.gauge(
            "skywire_node_manager_registered",
            "1 while this node is registered with its manager, else 0.",
            i64::from(link.state == LinkState::Registered),
        )?;
    }
    write_streams(e, s)?;
    e.build_info()?;
    if options.per_route {
        write_per_route(e, s)?;
    }
    Ok(())
}

fn write_streams(e: &mut Exposition<'_>, s: &StatusReply) -> fmt::Result {
    let st = &s.streams;
    e.gauge(
        "skywire_node_streams",
        "Apps' streams open on this node (half-open and closing ones included).",
        count(st.open),
    )?;
    e.gauge(
        "skywire_node_stream_listeners",
        "Ports apps on this node listen on.",
        count(st.listeners),
    )?;
    for (name, help, value) in [
        (
            "skywire_node_streams_dialed",
            "Streams dialed from this node.",
            st.dialed,
        ),
        (
            "skywire_node_streams_arrived",
            "Streams that arrived at a listener here.",
            st.arrived,
        ),
        (
            "skywire_node_streams_reset",
            "Streams that ended with an error.",
            st.reset,
        ),
        (
            "skywire_node_streams_refused",
            "Streams refused: nothing listening, or a listener that does not take the key.",
            st.refused,
        ),
        (
            "skywire_node_streams_limited",
            "Streams refused over a limit.",
            st.limited,
        ),
    ] {
        e.counter(name, help, value)?;
    }
    let (sent, received) = st.per_peer.iter().fold((0u64, 0u64), |(s, r), p| {
        (s.saturating_add(p.sent), r.saturating_add(p.received))
    });
    e.counter(
        "skywire_node_stream_rx_bytes",
        "Stream bytes apps on this node received.",
        received,
    )?;
    e.counter(
        "skywire_node_stream_tx_bytes",
        "Stream bytes apps on this node sent.",
        sent,
    )
}

/// The first 16 hex digits of a key: enough to tell peers apart on a dashboard.
fn short_key(key: &impl fmt::Display) -> String {
    key.to_string().chars().take(16).collect()
}

fn write_per_route(e: &mut Exposition<'_>, s: &StatusReply) -> fmt::Result {
    let labels: Vec<(String, String)> = s
        .routes
        .iter()
        .map(|r| (r.name.clone(), short_key(&r.peer)))
        .collect();
    let series = |f: fn(&super::ctl::protocol::RouteReply) -> u64| {
        s.routes.iter().zip(&labels).map(move |(r, (name, peer))| {
            (
                vec![("route", name.as_str()), ("peer", peer.as_str())],
                f(r),
            )
        })
    };
    e.counters(
        "skywire_route_rx_bytes",
        "Payload bytes received on a route end.",
        series(|r| r.rx_bytes),
    )?;
    e.counters(
        "skywire_route_tx_bytes",
        "Payload bytes sent on a route end.",
        series(|r| r.tx_bytes),
    )?;
    e.counters(
        "skywire_route_rx_packets",
        "Data packets received on a route end.",
        series(|r| r.rx_packets),
    )?;
    e.counters(
        "skywire_route_tx_packets",
        "Data packets sent on a route end.",
        series(|r| r.tx_packets),
    )?;
    e.counters(
        "skywire_route_handshakes",
        "Handshakes completed on a route end.",
        series(|r| r.handshakes),
    )?;
    e.counters(
        "skywire_route_dropped_packets",
        "Packets dropped at a route end, by reason.",
        s.routes.iter().zip(&labels).flat_map(|(r, (name, peer))| {
            r.drops.0.iter().map(move |(reason, n)| {
                (
                    vec![
                        ("route", name.as_str()),
                        ("peer", peer.as_str()),
                        ("reason", reason.as_str()),
                    ],
                    *n,
                )
            })
        }),
    )?;
    e.gauges_f64(
        "skywire_route_last_handshake_age_seconds",
        "Seconds since a route end's last completed handshake (absent before the first).",
        s.routes
            .iter()
            .zip(&labels)
            .filter_map(|(r, (name, peer))| {
                r.last_handshake_secs
                    .map(|age| (vec![("route", name.as_str()), ("peer", peer.as_str())], age))
            }),
    )?;
    let in_ids: Vec<String> = s.relays.iter().map(|r| r.in_id.to_string()).collect();
    e.counters(
        "skywire_relay_forwarded_bytes",
        "Bytes of datagrams a relay rule forwarded.",
        s.relays
            .iter()
            .zip(&in_ids)
            .map(|(r, id)| (vec![("in_id", id.as_str())], r.bytes)),
    )?;
    e.counters(
        "skywire_relay_forwarded_packets",
        "Datagrams a relay rule forwarded.",
        s.relays
            .iter()
            .zip(&in_ids)
            .map(|(r, id)| (vec![("in_id", id.as_str())], r.packets)),
    )
}

#[cfg(test)]
mod tests;
