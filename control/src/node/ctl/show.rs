//! `skywire status` as text, in the style of `wg show`: a section per node, route and
//! relay, an indented `key: value` line per fact, zero counters left out.

use core::fmt;

use super::protocol::{Drops, OriginReply, RelayReply, RouteReply, StatusReply, StreamsReply};
use crate::node::reconnect::{LinkState, ManagerLink};

impl fmt::Display for StatusReply {
    /// The `wg show`-style text, each section followed by a blank line except the last;
    /// ends with a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "node: {}", self.public_key)?;
        writeln!(f, "  listening: {}", self.listen)?;
        if let Some(tun) = &self.tun {
            writeln!(f, "  tun: {tun}")?;
        }
        if let Some(fwmark) = &self.fwmark {
            writeln!(f, "  fwmark: {fwmark}")?;
        }
        if let Some(manager) = &self.manager {
            write_manager(f, manager)?;
        }
        if self.under_load {
            writeln!(
                f,
                "  under load: handshakes are answered with cookie replies (a flood?)"
            )?;
        }
        for grant in &self.grants {
            writeln!(
                f,
                "  granted to {}: {}",
                grant.peer,
                Joined(&grant.prefixes)
            )?;
        }
        write_drops(f, &self.drops)?;
        if self.expired > 0 {
            writeln!(f, "  expired: {} idle manager rules", self.expired)?;
        }
        if self.events_dropped > 0 {
            writeln!(f, "  events dropped: {}", self.events_dropped)?;
        }
        if !self.streams.is_idle() {
            write_streams(f, &self.streams)?;
        }
        for route in &self.routes {
            writeln!(f)?;
            write_route(f, route)?;
        }
        for relay in &self.relays {
            writeln!(f)?;
            write_relay(f, relay)?;
        }
        Ok(())
    }
}

/// `manager: ADDRESS, STATE for N s[: PROBLEM][; next attempt in N s]`.
fn write_manager(f: &mut fmt::Formatter<'_>, link: &ManagerLink) -> fmt::Result {
    write!(
        f,
        "  manager: {}, {} for {}",
        link.address,
        link.state.as_str(),
        Secs(link.since_secs)
    )?;
    if let Some(problem) = &link.problem {
        write!(f, ": {problem}")?;
    }
    if let Some(next) = link.next_attempt_secs {
        write!(f, "; next attempt in {}", Secs(next))?;
    }
    if link.failures > 0 && link.state != LinkState::Registered {
        write!(f, " ({} failed attempts)", link.failures)?;
    }
    writeln!(f)
}

/// Seconds as `0.4 s`, `12 s`, `3 min 20 s`.
struct Secs(f64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.max(0.0);
        if s < 10.0 {
            write!(f, "{s:.1} s")
        } else if s < 120.0 {
            write!(f, "{s:.0} s")
        } else {
            let whole = s.round();
            write!(f, "{:.0} min {:.0} s", (whole / 60.0).floor(), whole % 60.0)
        }
    }
}

/// Prefixes separated by commas, `(none)` for none.
struct Joined<'a>(&'a [skywire_dataplane::route::Prefix]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, prefix) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{prefix}")?;
        }
        Ok(())
    }
}

fn write_streams(f: &mut fmt::Formatter<'_>, s: &StreamsReply) -> fmt::Result {
    write!(f, "  streams: {} open", s.open)?;
    if s.half_open > 0 {
        write!(f, " ({} half-open)", s.half_open)?;
    }
    writeln!(
        f,
        " with {} {}, {} {}, {} of buffers",
        s.peers,
        if s.peers == 1 { "node" } else { "nodes" },
        s.listeners,
        if s.listeners == 1 {
            "listener"
        } else {
            "listeners"
        },
        Bytes(s.memory_bytes as u64),
    )?;
    writeln!(
        f,
        "  streams since start: {} dialed, {} arrived, {} reset",
        s.dialed, s.arrived, s.reset
    )?;
    let refusals = [
        ("refused", s.refused),
        ("over a limit", s.limited),
        ("bad packets", s.bad_packets),
        ("segments of no stream", s.unknown),
        ("replies dropped", s.egress_dropped),
    ];
    if refusals.iter().any(|(_, n)| *n > 0) {
        f.write_str("  stream drops:")?;
        let mut first = true;
        for (name, n) in refusals.iter().filter(|(_, n)| *n > 0) {
            write!(f, "{} {n} {name}", if first { "" } else { "," })?;
            first = false;
        }
        writeln!(f)?;
    }
    for p in &s.per_peer {
        writeln!(
            f,
            "  streams with {}: {} open, {} sent, {} received",
            p.peer,
            p.open,
            Bytes(p.sent),
            Bytes(p.received)
        )?;
    }
    Ok(())
}

fn write_route(f: &mut fmt::Formatter<'_>, route: &RouteReply) -> fmt::Result {
    writeln!(f, "route: {}", route.name)?;
    writeln!(f, "  peer: {}", route.peer)?;
    writeln!(
        f,
        "  first hop: {} (out id {}, in id {})",
        route.first_hop, route.out_id, route.in_id
    )?;
    write_origin(f, route.origin, route.idle_secs)?;
    writeln!(f, "  prefixes: {}", Joined(&route.prefixes))?;
    match route.last_handshake_secs {
        Some(secs) => writeln!(f, "  latest handshake: {}", Ago(secs))?,
        None => writeln!(f, "  latest handshake: never")?,
    }
    writeln!(
        f,
        "  transfer: {} received, {} sent ({} / {} packets)",
        Bytes(route.rx_bytes),
        Bytes(route.tx_bytes),
        route.rx_packets,
        route.tx_packets
    )?;
    write_drops(f, &route.drops)
}

fn write_relay(f: &mut fmt::Formatter<'_>, relay: &RelayReply) -> fmt::Result {
    writeln!(
        f,
        "relay: {} from {} -> {} to {}",
        relay.in_id, relay.prev_hop, relay.out_id, relay.next_hop
    )?;
    write_origin(f, relay.origin, relay.idle_secs)?;
    writeln!(
        f,
        "  forwarded: {} packets, {}",
        relay.packets,
        Bytes(relay.bytes)
    )
}

/// `  origin: manager route 0000000000000009, idle 2 seconds (expires after 30 seconds)`, or nothing for
/// config rules (the usual case, as in `wg show`, left out).
fn write_origin(f: &mut fmt::Formatter<'_>, origin: OriginReply, idle: Option<f64>) -> fmt::Result {
    let OriginReply::Manager {
        route,
        expire_after_secs,
    } = origin
    else {
        return Ok(());
    };
    write!(f, "  origin: manager route {route}")?;
    if let Some(idle) = idle {
        write!(f, ", idle {}", Span(idle))?;
    }
    writeln!(f, " (expires after {} idle)", Span(expire_after_secs))
}

/// `  drops: replay 1, bad tag 2`, or nothing when every count is zero.
fn write_drops(f: &mut fmt::Formatter<'_>, drops: &Drops) -> fmt::Result {
    let mut nonzero = drops.nonzero().peekable();
    if nonzero.peek().is_none() {
        return Ok(());
    }
    f.write_str("  drops: ")?;
    for (i, (reason, count)) in nonzero.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{reason} {count}")?;
    }
    writeln!(f)
}

/// A byte count as `wg` prints it: `512 B`, `1.21 MiB`.
pub(crate) struct Bytes(pub(crate) u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        // Two decimals are all a person reads; f64's precision loss is far below that.
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = "KiB";
        for next in UNITS.iter().skip(1) {
            if value < 1024.0 {
                break;
            }
            value /= 1024.0;
            unit = next;
        }
        write!(f, "{value:.2} {unit}")
    }
}

/// A time in the past as `wg` prints it: `1 hour, 2 minutes, 3 seconds ago`.
struct Ago(f64);

impl fmt::Display for Ago {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds; NaN, negative and absurd values saturate instead of panicking.
        if self.0 as u64 == 0 {
            return f.write_str("just now");
        }
        write!(f, "{} ago", Span(self.0))
    }
}

/// A length of time in seconds as `wg` prints it: `1 hour, 2 minutes, 3 seconds`.
struct Span(f64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds; NaN, negative and absurd values saturate instead of panicking.
        let total = self.0 as u64;
        if total == 0 {
            return f.write_str("0 seconds");
        }
        let parts = [
            (total / 86_400, "day"),
            (total / 3600 % 24, "hour"),
            (total / 60 % 60, "minute"),
            (total % 60, "second"),
        ];
        let mut first = true;
        for (count, unit) in parts {
            if count == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            let plural = if count == 1 { "" } else { "s" };
            write!(f, "{count} {unit}{plural}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ctl::protocol::tests::{sample_managed_status, sample_status};

    #[test]
    fn the_manager_connection_is_one_line() {
        let mut reply = StatusReply::from(&sample_status());
        let link = |state, problem: Option<&str>, next, failures| ManagerLink {
            address: "198.18.100.100:5999".parse().unwrap(),
            state,
            since_secs: 200.4,
            problem: problem.map(str::to_owned),
            next_attempt_secs: next,
            failures,
        };
        reply.manager = Some(link(LinkState::Registered, None, None, 0));
        let text = reply.to_string();
        assert!(
            text.contains("\n  manager: 198.18.100.100:5999, registered for 3 min 20 s\n"),
            "{text}"
        );
        reply.manager = Some(link(
            LinkState::Refused,
            Some("the manager refused to register this node: not_allowed: key not allowed"),
            Some(35.2),
            3,
        ));
        let text = reply.to_string();
        assert!(
            text.contains(
                "\n  manager: 198.18.100.100:5999, refused for 3 min 20 s: the manager refused \
                 to register this node: not_allowed: key not allowed; next attempt in 35 s (3 \
                 failed attempts)\n"
            ),
            "{text}"
        );
        // In the JSON too, and read back.
        let json = reply.to_json_pretty();
        let back: StatusReply = serde_json::from_str(&json).unwrap();
        assert_eq!(back.manager, reply.manager);
        assert!(json.contains("\"state\": \"refused\""), "{json}");
    }

    #[test]
    fn status_text_matches_wg_show_style() {
        let mut status = sample_status();
        status.fwmark = Some(skywire_dataplane::engine::Fwmark::DEFAULT);
        status.grants = vec![(
            "cd".repeat(32).parse().unwrap(),
            vec!["0.0.0.0/0".parse().unwrap()],
        )];
        let reply = StatusReply::from(&status);
        let key_a = "11".repeat(32);
        let key_c = "cc".repeat(32);
        let key_g = "cd".repeat(32);
        assert_eq!(
            reply.to_string(),
            format!(
                "node: {key_a}\n  listening: 0.0.0.0:6000\n  tun: sky0\n\
                 \x20 fwmark: 0x736b0000/0xffff0000\n\
                 \x20 granted to {key_g}: 0.0.0.0/0\n\n\
                 route: to-c\n  peer: {key_c}\n\
                 \x20 first hop: 198.18.0.2:6000 (out id 100, in id 201)\n\
                 \x20 prefixes: 10.77.0.3/32\n\
                 \x20 latest handshake: 3 seconds ago\n\
                 \x20 transfer: 1.21 MiB received, 3.40 MiB sent (812 / 2330 packets)\n\
                 \x20 drops: replay 1, bad tag 2\n\n\
                 relay: 100 from 198.18.0.1:6000 -> 101 to 198.18.0.3:6000\n\
                 \x20 forwarded: 2330 packets, 3.48 MiB\n"
            )
        );
    }

    #[test]
    fn manager_rules_and_expiry_are_shown() {
        let text = StatusReply::from(&sample_managed_status()).to_string();
        assert!(
            text.contains(
                "  tun: sky0\n  expired: 3 idle manager rules\n  events dropped: 4\n\nroute: to-c\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "in id 201)\n  origin: manager route 0000000000000009, idle 1 second (expires after 30 seconds idle)\n  prefixes:"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "198.18.0.3:6000\n  origin: manager route 0000000000000009, idle 1 minute, 2 seconds (expires after 30 seconds idle)\n  forwarded:"
            ),
            "{text}"
        );
        // Config rules and zero counters print nothing of it.
        let plain = StatusReply::from(&sample_status()).to_string();
        assert!(
            !plain.contains("origin:") && !plain.contains("expired"),
            "{plain}"
        );
        assert_eq!(Span(0.5).to_string(), "0 seconds");
        assert_eq!(Span(3723.0).to_string(), "1 hour, 2 minutes, 3 seconds");
    }

    #[test]
    fn streams_are_shown_once_there_were_any() {
        let mut status = sample_status();
        status.stack.streams = 3;
        status.stack.half_open = 1;
        status.stack.listeners = 1;
        status.stack.peers = 2;
        status.stack.memory = 3 * 2 * 262_143;
        status.stack.counters.dialed = 2;
        status.stack.counters.arrived = 5;
        status.stack.counters.refused = 4;
        status.stack.counters.unknown = 1;
        let text = StatusReply::from(&status).to_string();
        assert!(
            text.contains(
                "  tun: sky0\n  streams: 3 open (1 half-open) with 2 nodes, 1 listener, 1.50 MiB of buffers\n\
                 \x20 streams since start: 2 dialed, 5 arrived, 0 reset\n\
                 \x20 stream drops: 4 refused, 1 segments of no stream\n\nroute:"
            ),
            "{text}"
        );
        let plain = StatusReply::from(&sample_status()).to_string();
        assert!(!plain.contains("streams"), "{plain}");
    }

    #[test]
    fn optional_parts_are_left_out_or_spelled_out() {
        let mut status = sample_status();
        status.tun = None;
        status.drops = vec![("no route", 4), ("not ip", 0)];
        status.routes[0].last_handshake = None;
        status.routes[0].prefixes.clear();
        status.routes[0].drops = vec![("replay", 0)];
        status.relays.clear();
        let text = StatusReply::from(&status).to_string();
        assert!(!text.contains("tun:"), "{text}");
        assert!(
            text.contains("\n  drops: no route 4\n\nroute: to-c\n"),
            "{text}"
        );
        assert!(text.contains("  latest handshake: never\n"), "{text}");
        assert!(text.contains("  prefixes: (none)\n"), "{text}");
        assert_eq!(text.matches("drops:").count(), 1, "{text}");
        assert!(!text.contains("relay:"));
        assert!(text.ends_with("packets)\n"), "{text}");
    }

    #[test]
    fn under_load_is_one_line_in_the_text_and_a_flag_in_the_json() {
        let mut status = sample_status();
        let calm = StatusReply::from(&status);
        assert!(!calm.to_string().contains("under load"), "{calm}");
        status.under_load = true;
        let loaded = StatusReply::from(&status);
        let text = loaded.to_string();
        assert_eq!(text.matches("under load").count(), 1, "{text}");
        assert!(
            text.contains(
                "\n  under load: handshakes are answered with cookie replies (a flood?)\n"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&loaded.to_json_pretty()).unwrap();
        assert_eq!(json["under_load"], serde_json::json!(true));
        assert!(
            StatusReply::from_json(&loaded.to_json_pretty())
                .unwrap()
                .under_load
        );
        let json: serde_json::Value = serde_json::from_str(&calm.to_json_pretty()).unwrap();
        assert_eq!(json["under_load"], serde_json::json!(false));
    }

    #[test]
    fn byte_counts_and_ages() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1024).to_string(), "1.00 KiB");
        assert_eq!(Bytes(1_268_776).to_string(), "1.21 MiB");
        assert_eq!(Bytes(5 << 30).to_string(), "5.00 GiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16.00 EiB");

        assert_eq!(Ago(0.4).to_string(), "just now");
        assert_eq!(Ago(1.0).to_string(), "1 second ago");
        assert_eq!(Ago(3.9).to_string(), "3 seconds ago");
        assert_eq!(Ago(3723.0).to_string(), "1 hour, 2 minutes, 3 seconds ago");
        assert_eq!(
            Ago(86_400.0 * 2.0 + 60.0).to_string(),
            "2 days, 1 minute ago"
        );
        assert_eq!(Ago(f64::NAN).to_string(), "just now");
        assert_eq!(Ago(-5.0).to_string(), "just now");
    }
}
