//! The scenario behind `skywire demo`: three nodes A - B - C in the in-memory mesh, a route
//! from A to C through the relay B, and a walk through what the data plane does.
//!
//! Every figure it prints is measured or checked as it runs; [`DemoSummary`] returns the
//! checked facts so the demo's own test can assert them.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Datagram, Mesh, NodeId, RouteEnds, SimError};
use crate::route::{ForwardDrop, Rule};
use crate::session::DropReason;
use crate::wire::{PacketType, TRANSPORT_OVERHEAD};

/// A string hidden in every payload, looked for in every datagram on the wire.
pub const MARKER: &[u8] = b"SKYWIRE-DEMO-PLAINTEXT-MARKER";

/// What the demo checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// Payloads sent A -> C in the throughput phase.
    pub sent: u64,
    /// Payloads C received intact.
    pub delivered: u64,
    /// Datagrams on the wire that contained the marker in clear (must be 0).
    pub marker_in_clear: u64,
    /// Datagrams the relay forwarded.
    pub relayed: u64,
    /// Packets the relay decrypted (must be 0).
    pub relay_decrypted: u64,
    /// Attacks injected and the drops they caused (each must be counted once).
    pub attacks_dropped: u64,
}

/// A failure of the demo: the mesh could not be built, output failed, or a check did not
/// hold.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Building the mesh failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Writing the report failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A property the demo checks did not hold.
    #[error("demo check failed: {0}")]
    Check(&'static str),
}

fn check(ok: bool, what: &'static str) -> Result<(), DemoError> {
    if ok {
        Ok(())
    } else {
        Err(DemoError::Check(what))
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, n], 6000))
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&i.to_be_bytes());
    p.extend_from_slice(MARKER);
    p.resize(len, (i % 251) as u8);
    p
}

/// Run the demo, writing the report to `out`. `packets` is the size of the throughput phase.
pub fn run(out: &mut dyn Write, packets: u64) -> Result<DemoSummary, DemoError> {
    let mut mesh = Mesh::new(Instant::now());
    let (a, b, c) = (
        mesh.add_node(addr(1))?,
        mesh.add_node(addr(2))?,
        mesh.add_node(addr(3))?,
    );
    writeln!(
        out,
        "skywire demo: three nodes in memory, a route A -> B -> C (B only relays)\n"
    )?;
    for (name, id) in [("A", a), ("B", b), ("C", c)] {
        let node = mesh.node(id)?;
        writeln!(
            out,
            "node {name}  {}  public key {}",
            node.addr,
            node.public_key()
        )?;
    }

    let ends = mesh.add_route(&[a, b, c])?;
    writeln!(
        out,
        "\nroute A -> C installed, rules per hop (incoming id: action):"
    )?;
    for (name, id) in [("A", a), ("B", b), ("C", c)] {
        let snapshot = mesh.node(id)?.table.snapshot();
        let mut rules: Vec<_> = snapshot.iter().collect();
        rules.sort_by_key(|(id, _)| *id);
        for (route_id, entry) in rules {
            let action = match entry.rule {
                Rule::Forward {
                    next_hop,
                    out_id,
                    prev_hop,
                } => {
                    format!("from {prev_hop} forward to {next_hop} as id {out_id}")
                }
                Rule::Deliver { prev_hop, endpoint } => {
                    format!("from {prev_hop} deliver to local endpoint {}", endpoint.0)
                }
            };
            writeln!(out, "  {name}  id {route_id:>10}: {action}")?;
        }
    }

    handshake(out, &mut mesh, ends)?;
    round_trips(out, &mut mesh, ends)?;
    let (sent, delivered, marker_in_clear) = throughput(out, &mut mesh, ends, packets)?;
    let attacks_dropped = attacks(out, &mut mesh, ends, b)?;

    writeln!(out, "\ncounters:")?;
    let relay = mesh.node(b)?;
    let relay_decrypted = relay.decrypted();
    let relay_forwarded: u64 = relay
        .table
        .snapshot()
        .iter()
        .map(|(_, e)| e.stats.packets())
        .sum();
    for (name, id) in [("A", a), ("C", c)] {
        let node = mesh.node(id)?;
        for ep in &node.endpoints {
            let s = ep.session.stats();
            writeln!(
                out,
                "  {name}  sent {} packets ({} B), received {} packets ({} B), handshakes {}",
                s.tx_packets, s.tx_bytes, s.rx_packets, s.rx_bytes, s.handshakes_completed
            )?;
            let drops: Vec<String> = DropReason::ALL
                .iter()
                .filter(|r| s.drops.get(**r) > 0)
                .map(|r| format!("{} {}", r.as_str(), s.drops.get(*r)))
                .collect();
            if !drops.is_empty() {
                writeln!(out, "     drops: {}", drops.join(", "))?;
            }
        }
    }
    let forward_drops: Vec<String> = ForwardDrop::ALL
        .iter()
        .map(|r| format!("{} {}", r.as_str(), relay.forward_stats.get(*r)))
        .collect();
    writeln!(
        out,
        "  B  relayed {} datagrams, decrypted {}; drops: {}",
        relay_forwarded,
        relay_decrypted,
        forward_drops.join(", ")
    )?;
    check(relay_decrypted == 0, "the relay decrypted a packet")?;
    writeln!(out, "\nall checks passed")?;
    Ok(DemoSummary {
        sent,
        delivered,
        marker_in_clear,
        relayed: relay.relayed,
        relay_decrypted,
        attacks_dropped,
    })
}

fn handshake(out: &mut dyn Write, mesh: &mut Mesh, ends: RouteEnds) -> Result<(), DemoError> {
    mesh.capture = true;
    let started = Instant::now();
    mesh.send(ends.source, b"hello")?;
    mesh.run();
    let took = started.elapsed();
    let kinds: Vec<String> = mesh
        .captured
        .iter()
        .map(|d| {
            let kind = match d.bytes.get(1).copied().and_then(PacketType::from_u8) {
                Some(PacketType::HandshakeInit) => "initiation",
                Some(PacketType::HandshakeResponse) => "response",
                Some(PacketType::Keepalive) => "keepalive",
                Some(PacketType::Data) => "data",
                Some(PacketType::Close) => "close",
                Some(PacketType::Ping) => "ping",
                Some(PacketType::Pong) => "pong",
                Some(PacketType::LinkProbe) => "link probe",
                Some(PacketType::LinkProbeReply) => "link probe reply",
                None => "?",
            };
            format!(
                "{} -> {} {kind} ({} B)",
                d.from.ip(),
                d.to.ip(),
                d.bytes.len()
            )
        })
        .collect();
    mesh.captured.clear();
    let inbox = &mesh.endpoint(ends.destination)?.inbox;
    check(
        inbox.first().map(Vec::as_slice) == Some(&b"hello"[..]),
        "first packet lost",
    )?;
    writeln!(
        out,
        "\nhandshake (Noise IK over the route, relays see only ciphertext):"
    )?;
    for line in kinds {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "  completed and first packet delivered in {}",
        micros(took)
    )?;
    Ok(())
}

fn round_trips(out: &mut dyn Write, mesh: &mut Mesh, ends: RouteEnds) -> Result<(), DemoError> {
    let mut times = Vec::new();
    for i in 0..5u64 {
        let started = Instant::now();
        mesh.send(ends.source, &payload(i, 64))?;
        mesh.run();
        let ping = mesh
            .endpoint(ends.destination)?
            .inbox
            .last()
            .cloned()
            .unwrap_or_default();
        mesh.send(ends.destination, &ping)?;
        mesh.run();
        let echoed = mesh.endpoint(ends.source)?.inbox.last() == Some(&ping);
        check(echoed && !ping.is_empty(), "echo did not come back")?;
        times.push(started.elapsed());
    }
    let shown: Vec<String> = times.iter().map(|t| micros(*t)).collect();
    writeln!(
        out,
        "\nround trips A -> C -> A (64 B, seal + 2 relay hops + open, each way):"
    )?;
    writeln!(out, "  {}", shown.join("  "))?;
    Ok(())
}

fn throughput(
    out: &mut dyn Write,
    mesh: &mut Mesh,
    ends: RouteEnds,
    packets: u64,
) -> Result<(u64, u64, u64), DemoError> {
    const LEN: usize = 1420;
    // Payloads are made before the clock starts: 64 distinct ones, each numbered.
    const DISTINCT: usize = 64;
    let payloads: Vec<Vec<u8>> = (0..DISTINCT as u64).map(|i| payload(i, LEN)).collect();
    let before = mesh.endpoint(ends.destination)?.inbox.len();
    mesh.capture = true;
    mesh.captured.clear();
    let started = Instant::now();
    for (i, p) in payloads.iter().cycle().take(packets as usize).enumerate() {
        mesh.send(ends.source, p)?;
        if i % 64 == 63 {
            mesh.run();
        }
    }
    mesh.run();
    let took = started.elapsed();
    let inbox = mesh
        .endpoint(ends.destination)?
        .inbox
        .get(before..)
        .unwrap_or_default();
    let delivered = inbox
        .iter()
        .enumerate()
        .filter(|(i, p)| payloads.get(i % DISTINCT) == Some(*p))
        .count() as u64;
    let marker_in_clear = mesh
        .captured
        .iter()
        .filter(|d: &&Datagram| d.bytes.windows(MARKER.len()).any(|w| w == MARKER))
        .count() as u64;
    let on_wire = mesh.captured.len();
    mesh.capture = false;
    mesh.captured.clear();
    let secs = took.as_secs_f64().max(1e-9);
    writeln!(
        out,
        "\nthroughput, {packets} payloads of {LEN} B A -> C (in memory, no kernel I/O):"
    )?;
    writeln!(
        out,
        "  {:.0} packets/s, {:.2} Gbit/s of payload, {} B overhead per packet",
        packets as f64 / secs,
        packets as f64 * LEN as f64 * 8.0 / secs / 1e9,
        TRANSPORT_OVERHEAD
    )?;
    writeln!(
        out,
        "  delivered intact and in order: {delivered} of {packets}"
    )?;
    writeln!(
        out,
        "  marker {:?} found in clear in {marker_in_clear} of {on_wire} datagrams on the wire",
        String::from_utf8_lossy(MARKER)
    )?;
    check(delivered == packets, "payloads lost or corrupted")?;
    check(marker_in_clear == 0, "plaintext seen on the wire")?;
    Ok((packets, delivered, marker_in_clear))
}

fn attacks(
    out: &mut dyn Write,
    mesh: &mut Mesh,
    ends: RouteEnds,
    relay: NodeId,
) -> Result<u64, DemoError> {
    mesh.capture = true;
    mesh.send(ends.source, b"capture me")?;
    mesh.run();
    let (a, b, c) = (addr(1), addr(2), addr(3));
    let genuine = mesh
        .captured
        .iter()
        .find(|d| d.from == a && d.to == b)
        .cloned()
        .ok_or(DemoError::Check("no datagram captured"))?;
    mesh.capture = false;
    let before_session = mesh.endpoint(ends.destination)?.session.stats().drops;
    let stats = &mesh.node(relay)?.forward_stats;
    let before_forward = ForwardDrop::ALL.map(|r| stats.get(r));

    let mut forged = genuine.clone();
    if let Some(counter) = forged.bytes.get_mut(12..20) {
        counter.copy_from_slice(&(1u64 << 40).to_be_bytes());
    }
    let mut unknown = genuine.clone();
    if let Some(id) = unknown.bytes.get_mut(4..8) {
        id.copy_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    }
    let injected = [
        ("replayed data packet", genuine.clone()),
        ("forged data packet (new counter, bad tag)", forged),
        ("packet on an unknown route id", unknown),
        (
            "packet from the wrong previous hop",
            Datagram {
                from: c,
                ..genuine.clone()
            },
        ),
        (
            "random garbage",
            Datagram {
                from: a,
                to: b,
                bytes: b"\x01\x03\x00\x00garbage".to_vec(),
            },
        ),
    ];
    writeln!(out, "\nattacks injected at the relay's transport address:")?;
    for (what, datagram) in injected {
        mesh.inject(datagram);
        mesh.run();
        writeln!(out, "  {what}: dropped")?;
    }
    mesh.send(ends.source, b"still working")?;
    mesh.run();
    let ok = mesh
        .endpoint(ends.destination)?
        .inbox
        .last()
        .map(Vec::as_slice)
        == Some(&b"still working"[..]);
    check(ok, "traffic did not continue after the attacks")?;
    writeln!(out, "  traffic continues: the next packet was delivered")?;

    let after_session = mesh.endpoint(ends.destination)?.session.stats().drops;
    let stats = &mesh.node(relay)?.forward_stats;
    let forward_drops: u64 = ForwardDrop::ALL
        .iter()
        .zip(before_forward)
        .map(|(r, b)| stats.get(*r) - b)
        .sum();
    let session_drops = after_session.total() - before_session.total();
    let replay = after_session.get(DropReason::Replay) - before_session.get(DropReason::Replay);
    let bad_tag = after_session.get(DropReason::BadTag) - before_session.get(DropReason::BadTag);
    check(
        replay == 1 && bad_tag == 1,
        "replay or forgery not counted at C",
    )?;
    check(forward_drops == 3, "relay drops not counted")?;
    Ok(forward_drops + session_drops)
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_runs_and_its_checks_hold() {
        let mut out = Vec::new();
        let summary = run(&mut out, 2000).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(summary.sent, 2000);
        assert_eq!(summary.delivered, 2000);
        assert_eq!(summary.marker_in_clear, 0);
        assert_eq!(summary.relay_decrypted, 0);
        assert!(summary.relayed > 2000);
        assert_eq!(summary.attacks_dropped, 5);
        assert!(text.contains("all checks passed"), "{text}");
        assert!(
            text.contains("initiation (132 B)") && text.contains("response (80 B)"),
            "{text}"
        );
    }
}
