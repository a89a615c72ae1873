//! Text for people: `skywire route`, `skywire nodes` and `skywire ping` output, in the
//! style of `wg show` (the JSON is the manager's body as it is, with `--json`).

use std::fmt::Write as _;

use skywire_dataplane::crypto::PublicKey;

use super::proto::{Key, LinkState, Mesh, RouteInfo, RouteList, RouteState};

/// The first 8 hex digits of a key, as paths show it.
pub fn short(key: &PublicKey) -> String {
    key.to_string().chars().take(8).collect()
}

fn path(keys: &[Key]) -> String {
    if keys.is_empty() {
        return "(none)".to_owned();
    }
    keys.iter()
        .map(|k| short(&k.0))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Milliseconds as seconds with one decimal: `3.2 s`.
fn seconds(ms: u64) -> String {
    format!("{}.{} s", ms / 1000, ms % 1000 / 100)
}

/// A route's state, and while it is not active why and when the manager tries again:
/// `repairing: no path over links that are up from ...; next try in 3.2 s`.
pub fn state(info: &RouteInfo) -> String {
    let mut out = info.state.to_string();
    if let Some(reason) = &info.reason {
        let _ = write!(out, ": {}", reason.message);
    }
    if let Some(ms) = info.retry_in_ms {
        let sep = if info.reason.is_some() { ";" } else { ":" };
        let _ = write!(out, "{sep} next try in {}", seconds(ms));
    }
    out
}

/// One route, as `route add` prints it.
pub fn route(info: &RouteInfo) -> String {
    let hops = info.path.len().saturating_sub(1);
    let mut out = format!(
        "route {}: {} ({} {}), {}",
        info.id,
        path(&info.path),
        hops,
        if hops == 1 { "hop" } else { "hops" },
        state(info)
    );
    if info.repairs > 0 {
        let _ = write!(out, ", repaired {} times", info.repairs);
    }
    out
}

/// The manager route between this node and `peer` that explains a lost ping, from the
/// node's `route ls`: one that is not active (repairing or waiting), when none is. `None`
/// when a route to `peer` is active (the ping was genuinely lost) or the manager has none
/// (a configured route).
pub fn inactive_route<'a>(peer: &PublicKey, list: &'a RouteList) -> Option<&'a RouteInfo> {
    let mut to_peer = list
        .routes
        .iter()
        .filter(|r| r.src.0 == *peer || r.dst.0 == *peer);
    let mut inactive = None;
    for route in to_peer.by_ref() {
        if route.state == RouteState::Active {
            return None;
        }
        inactive = inactive.or(Some(route));
    }
    inactive
}

/// What `skywire ping` says instead of "no reply" when the route is not active:
/// `route 5ee6e504683e1249 is repairing: no path over ...; next try in 3.2 s`.
pub fn route_outage(info: &RouteInfo) -> String {
    format!("route {} is {}", info.id, state(info))
}

/// The routes of `route ls`, from `me`'s point of view.
pub fn routes(list: &RouteList, me: Option<&PublicKey>) -> String {
    if list.routes.is_empty() {
        return "no routes from the manager\n".to_owned();
    }
    let mut out = String::new();
    for r in &list.routes {
        let (dir, other) = if me == Some(&r.dst.0) {
            ("from", r.src)
        } else {
            ("to", r.dst)
        };
        let _ = writeln!(out, "route {}", r.id);
        let _ = writeln!(out, "  {dir}: {}", other.0);
        let _ = writeln!(out, "  state: {}", state(r));
        let _ = writeln!(out, "  path: {}", path(&r.path));
        let mut limits = format!("{}..{} hops, by {:?}", r.min_hops, r.max_hops, r.weight);
        if !r.avoid.is_empty() {
            let avoid: Vec<String> = r.avoid.iter().map(|k| short(&k.0)).collect();
            let _ = write!(limits, ", avoiding {}", avoid.join(", "));
        }
        let _ = writeln!(out, "  asked: {}", limits.to_lowercase());
        if r.repairs > 0 {
            let _ = writeln!(out, "  repairs: {}", r.repairs);
        }
        out.push('\n');
    }
    out
}

fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms ago")
    } else if ms < 120_000 {
        format!("{} s ago", ms / 1000)
    } else {
        format!("{} min ago", ms / 60_000)
    }
}

/// The manager's view, for `skywire nodes`.
pub fn mesh(mesh: &Mesh) -> String {
    let mut out = String::new();
    for n in &mesh.nodes {
        let _ = writeln!(out, "node: {}", n.key.0);
        let _ = writeln!(
            out,
            "  endpoint: {}",
            n.endpoint
                .map_or_else(|| "(none)".to_owned(), |e| e.to_string())
        );
        if !n.tun.is_empty() {
            let tun: Vec<String> = n.tun.iter().map(|p| p.0.to_string()).collect();
            let _ = writeln!(out, "  addresses: {}", tun.join(", "));
        }
        let _ = writeln!(
            out,
            "  {}, last seen {}",
            if n.online { "online" } else { "offline" },
            ago(n.last_seen_ms)
        );
        let mut links: Vec<String> = Vec::new();
        for l in &mesh.links {
            let other = if l.a == n.key {
                l.b
            } else if l.b == n.key {
                l.a
            } else {
                continue;
            };
            // Nothing measured (unproven, offline): no round trip and no loss to show.
            let measured = match l.rtt_us {
                Some(us) => format!(
                    "rtt {:.2} ms, loss {:.0}%",
                    us as f64 / 1000.0,
                    l.loss * 100.0
                ),
                None if l.state == LinkState::Down => {
                    format!("rtt none, loss {:.0}%", l.loss * 100.0)
                }
                None => "rtt none".to_owned(),
            };
            links.push(format!(
                "{} ({}, {measured}, from {})",
                short(&other.0),
                l.state.as_str(),
                l.source
            ));
        }
        if !links.is_empty() {
            let _ = writeln!(out, "  links: {}", links.join("\n         "));
        }
        out.push('\n');
    }
    if mesh.nodes.is_empty() {
        out.push_str("no nodes have registered\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::proto::{
        ErrorKind, LinkInfo, MeshRouteId, NodeInfo, ProtoError, RouteState,
    };
    use crate::manager::topology::RouteWeight;
    use skywire_dataplane::crypto::PrivateKey;

    fn k(b: u8) -> Key {
        Key(PrivateKey::from_bytes([b; 32]).public_key())
    }

    #[test]
    fn a_route_that_is_not_active_says_why_and_when_it_is_tried_again() {
        let mut info = RouteInfo {
            id: MeshRouteId(0x5ee6),
            src: k(1),
            dst: k(2),
            path: vec![k(1), k(3), k(2)],
            state: RouteState::Repairing,
            min_hops: 1,
            max_hops: 16,
            avoid: vec![],
            weight: RouteWeight::Hops,
            repairs: 0,
            reason: Some(ProtoError::new(
                ErrorKind::NoPath,
                "no path over links that are up from a to b",
            )),
            retry_in_ms: Some(3250),
        };
        let want = "repairing: no path over links that are up from a to b; next try in 3.2 s";
        assert_eq!(state(&info), want);
        assert!(route(&info).ends_with(want), "{}", route(&info));
        let text = routes(
            &RouteList {
                routes: vec![info.clone()],
            },
            Some(&k(1).0),
        );
        assert!(text.contains(&format!("  state: {want}\n")), "{text}");
        // A setup under way: the reason, no timed try.
        info.retry_in_ms = None;
        assert_eq!(
            state(&info),
            "repairing: no path over links that are up from a to b"
        );
        info.reason = None;
        info.retry_in_ms = Some(40);
        info.state = RouteState::Waiting;
        assert_eq!(state(&info), "waiting: next try in 0.0 s");
        // JSON: the reason is typed, and a body from an older manager still parses.
        info.reason = Some(ProtoError::new(ErrorKind::PathDown, "link a - b went down"));
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["reason"]["kind"], "path_down");
        assert_eq!(json["retry_in_ms"], 40);
        let mut old = json.clone();
        let fields = old.as_object_mut().unwrap();
        fields.remove("reason");
        fields.remove("retry_in_ms");
        let parsed: RouteInfo = serde_json::from_value(old).unwrap();
        assert_eq!((parsed.reason, parsed.retry_in_ms), (None, None));
        let back: RouteInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn a_lost_ping_is_explained_only_by_a_route_that_is_not_active() {
        let route = |id, src, dst, state| RouteInfo {
            id: MeshRouteId(id),
            src: k(src),
            dst: k(dst),
            path: vec![],
            state,
            min_hops: 1,
            max_hops: 16,
            avoid: vec![],
            weight: RouteWeight::Hops,
            repairs: 0,
            reason: Some(ProtoError::new(
                ErrorKind::PathDown,
                "node 0badc0de went down",
            )),
            retry_in_ms: None,
        };
        let peer = k(2).0;
        let mut list = RouteList {
            routes: vec![
                route(0x10, 1, 3, RouteState::Repairing),
                route(0x5ee6_e504_683e_1249, 1, 2, RouteState::Repairing),
            ],
        };
        let inactive = inactive_route(&peer, &list).unwrap();
        assert_eq!(
            route_outage(inactive),
            "route 5ee6e504683e1249 is repairing: node 0badc0de went down"
        );
        // The peer's own route to this node counts too.
        list.routes.push(route(0x20, 2, 1, RouteState::Waiting));
        assert_eq!(
            inactive_route(&peer, &list).unwrap().id,
            MeshRouteId(0x5ee6_e504_683e_1249)
        );
        // One active route to the peer: the ping was lost on it.
        list.routes.push(route(0x30, 1, 2, RouteState::Active));
        assert!(inactive_route(&peer, &list).is_none());
        // No manager route to the peer at all: nothing to say.
        assert!(inactive_route(&k(4).0, &list).is_none());
    }

    #[test]
    fn routes_and_nodes_read_like_wg_show() {
        let info = RouteInfo {
            id: MeshRouteId(0xabc),
            src: k(1),
            dst: k(2),
            path: vec![k(1), k(3), k(2)],
            state: RouteState::Active,
            min_hops: 2,
            max_hops: 16,
            avoid: vec![k(4)],
            weight: RouteWeight::Hops,
            repairs: 1,
            reason: None,
            retry_in_ms: None,
        };
        let line = route(&info);
        assert!(line.starts_with("route 0000000000000abc: "), "{line}");
        assert!(
            line.contains("(2 hops), active, repaired 1 times"),
            "{line}"
        );
        let text = routes(&RouteList { routes: vec![info] }, Some(&k(2).0));
        assert!(text.contains(&format!("  from: {}", k(1).0)), "{text}");
        assert!(text.contains("2..16 hops, by hops, avoiding"), "{text}");
        let m = Mesh {
            nodes: vec![NodeInfo {
                key: k(1),
                endpoint: Some("198.18.0.1:6000".parse().unwrap()),
                tun: vec![],
                online: true,
                last_seen_ms: 300,
            }],
            links: vec![
                LinkInfo {
                    a: k(1),
                    b: k(3),
                    source: "config".into(),
                    up: true,
                    state: LinkState::Up,
                    rtt_us: Some(420),
                    loss: 0.0,
                },
                LinkInfo {
                    a: k(1),
                    b: k(4),
                    source: "config".into(),
                    up: false,
                    state: LinkState::Unproven,
                    rtt_us: None,
                    loss: 0.0,
                },
            ],
        };
        let text = mesh(&m);
        assert!(text.contains("online, last seen 300 ms ago"), "{text}");
        assert!(
            text.contains("(up, rtt 0.42 ms, loss 0%, from config)"),
            "{text}"
        );
        assert!(text.contains("(unproven, rtt none, from config)"), "{text}");
        let json = serde_json::to_value(&m.links[1]).unwrap();
        assert_eq!(json["state"], "unproven");
        assert!(json["rtt_us"].is_null());
    }
}
