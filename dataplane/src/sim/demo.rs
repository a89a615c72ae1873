//! The scenario behind `skywire demo --in-memory`: three engine cores A - B - C in the
//! in-memory mesh, a route from A to C through the relay B, and a walk through what the data
//! plane does with IP packets written to A's and C's TUN devices.
//!
//! The nodes are real [`NodeCore`](crate::engine::NodeCore)s, the same code a running node
//! uses between its system calls. Every figure printed is measured or checked as it runs;
//! drops are read from the engine's own counters. [`DemoSummary`] returns the checked facts
//! so the demo's own test can assert them.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Datagram, IPV4_HEADER_LEN, Mesh, NodeId, SimError, ipv4};
use crate::crypto::PublicKey;
use crate::engine::{NodeStatus, RouteStatus, SOURCE_NOT_ALLOWED};
use crate::route::{ForwardDrop, Prefix, Rule};
use crate::session::DropReason;
use crate::wire::{PacketType, TRANSPORT_OVERHEAD};

/// A string hidden in every payload, looked for in every datagram on the wire.
pub const MARKER: &[u8] = b"SKYWIRE-DEMO-PLAINTEXT-MARKER";

/// What the demo checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSummary {
    /// IP packets sent A -> C in the throughput phase.
    pub sent: u64,
    /// IP packets C's TUN device received intact and in order.
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
    /// Building or driving the mesh failed.
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

/// The TUN addresses of A and C.
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const C_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// An address no node was given, which A tries to speak for.
const SPOOFED_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

/// Size of the IP packets of the throughput phase: the TUN MTU.
const PACKET_LEN: usize = 1420;

/// A numbered payload with the marker, `len` bytes.
fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&i.to_be_bytes());
    p.extend_from_slice(MARKER);
    p.resize(len, (i % 251) as u8);
    p
}

/// The three nodes and the route between A and C.
struct Demo {
    mesh: Mesh,
    a: NodeId,
    b: NodeId,
    c: NodeId,
}

impl Demo {
    fn name(&self, id: NodeId) -> &'static str {
        match id {
            i if i == self.a => "A",
            i if i == self.b => "B",
            _ => "C",
        }
    }

    fn name_of_key(&self, key: PublicKey) -> &'static str {
        [self.a, self.b, self.c]
            .into_iter()
            .find(|&n| self.mesh.public_key(n).ok() == Some(key))
            .map_or("?", |n| self.name(n))
    }

    /// The one route end a node holds.
    fn route_end(&self, id: NodeId) -> Result<RouteStatus, DemoError> {
        self.mesh
            .status(id)?
            .routes
            .into_iter()
            .next()
            .ok_or(DemoError::Check("a route end is missing"))
    }
}

/// Run the demo, writing the report to `out`. `packets` is the size of the throughput phase.
pub fn run(out: &mut dyn Write, packets: u64) -> Result<DemoSummary, DemoError> {
    let mut mesh = Mesh::new(Instant::now());
    let host = |ip: Ipv4Addr| Prefix::new(ip.into(), 24).ok_or(DemoError::Check("prefix"));
    let (a, b, c) = (
        mesh.add_host(addr(1), host(A_IP)?)?,
        mesh.add_relay(addr(2))?,
        mesh.add_host(addr(3), host(C_IP)?)?,
    );
    writeln!(
        out,
        "skywire demo: three engine cores in memory, a route A -> B -> C (B only relays)\n"
    )?;
    for (name, id) in [("A", a), ("B", b), ("C", c)] {
        let tun = match mesh
            .setup(id)?
            .tun
            .as_ref()
            .and_then(|t| t.addresses.first())
        {
            Some(p) => format!("TUN {p}"),
            None => "relay, no TUN".into(),
        };
        writeln!(
            out,
            "node {name}  {}  {tun:<17}  public key {}",
            mesh.addr(id)?,
            mesh.public_key(id)?
        )?;
    }

    mesh.add_route(&[a, b, c])?;
    let mut demo = Demo { mesh, a, b, c };
    rules(out, &demo)?;
    handshake(out, &mut demo)?;
    round_trips(out, &mut demo)?;
    let (sent, delivered, marker_in_clear) = throughput(out, &mut demo, packets)?;
    let attacks_dropped = attacks(out, &mut demo)?;

    writeln!(out, "\ncounters (from the engines' status):")?;
    for id in [a, c] {
        let end = demo.route_end(id)?;
        writeln!(
            out,
            "  {}  route to {}: sent {} packets ({} B), received {} packets ({} B)",
            demo.name(id),
            demo.name_of_key(end.peer),
            end.tx_packets,
            end.tx_bytes,
            end.rx_packets,
            end.rx_bytes
        )?;
        if let Some(drops) = nonzero(&end.drops) {
            writeln!(out, "     drops: {drops}")?;
        }
    }
    let relay = demo.mesh.status(b)?;
    let relayed: u64 = relay.relays.iter().map(|r| r.packets).sum();
    // The relay holds no session: nothing it could decrypt with, and nothing reached a TUN.
    let relay_decrypted =
        relay.routes.iter().map(|r| r.rx_packets).sum::<u64>() + demo.mesh.tun(b)?.len() as u64;
    writeln!(
        out,
        "  B  relayed {relayed} datagrams; route ends {} (no session), decrypted {relay_decrypted}",
        relay.routes.len()
    )?;
    writeln!(
        out,
        "     drops: {}",
        nonzero(&relay.drops).unwrap_or_else(|| "none".into())
    )?;
    check(relay.routes.is_empty(), "the relay holds a session")?;
    check(relay_decrypted == 0, "the relay decrypted a packet")?;
    check(
        demo.mesh.wire_stats().to_nobody == 0,
        "a datagram went to an address no node has",
    )?;
    writeln!(out, "\nall checks passed")?;
    Ok(DemoSummary {
        sent,
        delivered,
        marker_in_clear,
        relayed,
        relay_decrypted,
        attacks_dropped,
    })
}

/// The rules each hop holds, from its route table.
fn rules(out: &mut dyn Write, demo: &Demo) -> Result<(), DemoError> {
    writeln!(
        out,
        "\nroute A -> C installed, rules per hop (incoming id: action):"
    )?;
    for id in [demo.a, demo.b, demo.c] {
        let name = demo.name(id);
        let status = demo.mesh.status(id)?;
        let snapshot = demo.mesh.core(id)?.table().snapshot();
        let mut rules: Vec<_> = snapshot.iter().collect();
        rules.sort_by_key(|(id, _)| *id);
        for (route_id, entry) in rules {
            let action = match entry.rule {
                Rule::Forward {
                    next_hop,
                    out_id,
                    prev_hop,
                } => format!("from {prev_hop} forward to {next_hop} as id {out_id}"),
                Rule::Deliver { prev_hop, .. } => {
                    let end = status.routes.iter().find(|r| r.in_id == route_id);
                    let peer = end.map_or("?", |e| demo.name_of_key(e.peer));
                    let prefixes: Vec<String> = end
                        .map(|e| e.prefixes.iter().map(ToString::to_string).collect())
                        .unwrap_or_default();
                    format!(
                        "from {prev_hop} open in the session with {peer} \
                         (route end for {})",
                        prefixes.join(", ")
                    )
                }
            };
            writeln!(out, "  {name}  id {route_id:>5}: {action}")?;
        }
    }
    Ok(())
}

fn kind(d: &Datagram) -> &'static str {
    match d.bytes.get(1).copied().and_then(PacketType::from_u8) {
        Some(PacketType::HandshakeInit) => "initiation",
        Some(PacketType::HandshakeResponse) => "response",
        Some(PacketType::Keepalive) => "keepalive",
        Some(PacketType::Data) => "data",
        Some(PacketType::Close) => "close",
        Some(PacketType::Ping) => "ping",
        Some(PacketType::Pong) => "pong",
        Some(PacketType::LinkProbe) => "link probe",
        Some(PacketType::LinkProbeReply) => "link probe reply",
        Some(PacketType::CookieReply) => "cookie reply",
        None => "?",
    }
}

fn handshake(out: &mut dyn Write, demo: &mut Demo) -> Result<(), DemoError> {
    let (a, c) = (demo.a, demo.c);
    let hello = ipv4(A_IP, C_IP, b"hello");
    let mesh = &mut demo.mesh;
    mesh.set_capture(true);
    let started = Instant::now();
    mesh.tun_input(a, &hello)?;
    mesh.settle();
    let took = started.elapsed();
    mesh.set_capture(false);
    let seen: Vec<String> = mesh
        .take_captured()
        .iter()
        .map(|d| {
            format!(
                "{} -> {} {} ({} B)",
                d.from.ip(),
                d.to.ip(),
                kind(d),
                d.bytes.len()
            )
        })
        .collect();
    let arrived = mesh.take_tun(c)?;
    check(arrived == [hello], "first packet lost")?;
    writeln!(
        out,
        "\nhandshake (Noise IK over the route, relays see only ciphertext); the first IP packet"
    )?;
    writeln!(out, "from A's TUN starts it and waits at A for the keys:")?;
    for line in seen {
        writeln!(out, "  {line}")?;
    }
    writeln!(
        out,
        "  completed and first packet on C's TUN in {}",
        micros(took)
    )?;
    Ok(())
}

fn round_trips(out: &mut dyn Write, demo: &mut Demo) -> Result<(), DemoError> {
    const LEN: usize = 64;
    let (a, c) = (demo.a, demo.c);
    let mesh = &mut demo.mesh;
    let mut times = Vec::new();
    for i in 0..5u64 {
        let request = ipv4(A_IP, C_IP, &payload(i, LEN - IPV4_HEADER_LEN));
        let started = Instant::now();
        mesh.tun_input(a, &request)?;
        mesh.settle();
        let got = mesh.take_tun(c)?;
        check(got == [request.clone()], "request did not arrive")?;
        // C echoes the payload back, from its address to A's.
        let echo = ipv4(
            C_IP,
            A_IP,
            request.get(IPV4_HEADER_LEN..).unwrap_or_default(),
        );
        mesh.tun_input(c, &echo)?;
        mesh.settle();
        let back = mesh.take_tun(a)?;
        times.push(started.elapsed());
        check(back == [echo], "echo did not come back")?;
    }
    let shown: Vec<String> = times.iter().map(|t| micros(*t)).collect();
    writeln!(
        out,
        "\nround trips A -> C -> A ({LEN} B IP packets: seal + 2 relay hops + open, each way):"
    )?;
    writeln!(out, "  {}", shown.join("  "))?;
    Ok(())
}

fn throughput(
    out: &mut dyn Write,
    demo: &mut Demo,
    packets: u64,
) -> Result<(u64, u64, u64), DemoError> {
    // Packets are made before the clock starts: 64 distinct ones, each numbered. They are
    // sent in bursts of 64; after each the wire and C's TUN are checked and emptied (outside
    // the timing), so memory stays small whatever `packets` is.
    const DISTINCT: u64 = 64;
    let (a, c) = (demo.a, demo.c);
    let mesh = &mut demo.mesh;
    let sent_packets: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|i| ipv4(A_IP, C_IP, &payload(i, PACKET_LEN - IPV4_HEADER_LEN)))
        .collect();
    mesh.set_capture(true);
    let (mut took, mut delivered, mut marker_in_clear, mut on_wire) =
        (Duration::ZERO, 0u64, 0u64, 0u64);
    let mut next = 0u64;
    let mut sent = 0u64;
    while sent < packets {
        let burst = (packets - sent).min(DISTINCT);
        let started = Instant::now();
        for i in sent..sent + burst {
            let packet = sent_packets
                .get((i % DISTINCT) as usize)
                .ok_or(DemoError::Check("packet"))?;
            mesh.tun_input(a, packet)?;
        }
        mesh.settle();
        took += started.elapsed();
        sent += burst;
        for got in mesh.take_tun(c)? {
            if sent_packets.get((next % DISTINCT) as usize) == Some(&got) {
                delivered += 1;
            }
            next += 1;
        }
        for d in mesh.take_captured() {
            on_wire += 1;
            if d.bytes.windows(MARKER.len()).any(|w| w == MARKER) {
                marker_in_clear += 1;
            }
        }
    }
    mesh.set_capture(false);
    let secs = took.as_secs_f64().max(1e-9);
    writeln!(
        out,
        "\nthroughput, {packets} IP packets of {PACKET_LEN} B A -> C (in memory, no kernel I/O):"
    )?;
    writeln!(
        out,
        "  {:.0} packets/s, {:.2} Gbit/s of IP packets, {} B overhead per packet",
        packets as f64 / secs,
        packets as f64 * PACKET_LEN as f64 * 8.0 / secs / 1e9,
        TRANSPORT_OVERHEAD
    )?;
    writeln!(
        out,
        "  on C's TUN intact and in order: {delivered} of {packets}"
    )?;
    writeln!(
        out,
        "  marker {:?} found in clear in {marker_in_clear} of {on_wire} datagrams on the wire",
        String::from_utf8_lossy(MARKER)
    )?;
    check(delivered == packets, "packets lost or corrupted")?;
    check(marker_in_clear == 0, "plaintext seen on the wire")?;
    Ok((packets, delivered, marker_in_clear))
}

/// Sum of the named counters of `drops`.
fn count(drops: &[(&'static str, u64)], names: &[&str]) -> u64 {
    drops
        .iter()
        .filter(|(n, _)| names.contains(n))
        .map(|(_, c)| c)
        .sum()
}

fn attacks(out: &mut dyn Write, demo: &mut Demo) -> Result<u64, DemoError> {
    let (a, b, c) = (demo.a, demo.b, demo.c);
    let (addr_a, addr_b, addr_c) = (demo.mesh.addr(a)?, demo.mesh.addr(b)?, demo.mesh.addr(c)?);
    let mesh = &mut demo.mesh;
    mesh.set_capture(true);
    mesh.tun_input(a, &ipv4(A_IP, C_IP, b"capture me"))?;
    mesh.settle();
    mesh.set_capture(false);
    let genuine = mesh
        .take_captured()
        .into_iter()
        .find(|d| {
            d.from == addr_a && d.to == addr_b && d.bytes.get(1) == Some(&(PacketType::Data as u8))
        })
        .ok_or(DemoError::Check("no data packet captured"))?;
    mesh.take_tun(c)?;

    let forward_names: Vec<&str> = ForwardDrop::ALL.iter().map(|r| r.as_str()).collect();
    let session_names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    let counters = |mesh: &Mesh| -> Result<(NodeStatus, NodeStatus), DemoError> {
        Ok((mesh.status(b)?, mesh.status(c)?))
    };
    let (relay_before, end_before) = counters(mesh)?;

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
                from: addr_c,
                ..genuine.clone()
            },
        ),
        (
            "random garbage",
            Datagram {
                from: addr_a,
                to: addr_b,
                bytes: b"\x01\x03\x00\x00garbage".to_vec(),
            },
        ),
    ];
    writeln!(out, "\nattacks injected at the relay's transport address:")?;
    let mut dropped = 0;
    for (what, datagram) in injected {
        let (relay, end) = counters(mesh)?;
        mesh.inject(datagram);
        mesh.settle();
        let (relay_after, end_after) = counters(mesh)?;
        let at_relay = count(&relay_after.drops, &forward_names)
            .saturating_sub(count(&relay.drops, &forward_names));
        let at_end = route_drops(&end_after, &session_names)
            .saturating_sub(route_drops(&end, &session_names));
        let (by, reason) = if at_relay > 0 {
            ("B", changed(&relay.drops, &relay_after.drops))
        } else {
            (
                "C",
                changed(&route_drops_list(&end), &route_drops_list(&end_after)),
            )
        };
        check(
            at_relay + at_end == 1,
            "an attack was not dropped exactly once",
        )?;
        dropped += at_relay + at_end;
        writeln!(out, "  {what}: dropped by {by} ({reason})")?;
    }
    check(
        mesh.take_tun(c)?.is_empty(),
        "an injected packet reached C's TUN",
    )?;

    // A member with a valid key and a route speaks for an address it was not given: the
    // packet is sealed by A and opens at C, whose route end allows only A's address.
    writeln!(out, "\nattack from a member of the mesh:")?;
    let end = mesh.status(c)?;
    mesh.tun_input(a, &ipv4(SPOOFED_IP, C_IP, b"from someone else"))?;
    mesh.settle();
    let end_after = mesh.status(c)?;
    let spoofed = route_drops(&end_after, &[SOURCE_NOT_ALLOWED])
        .saturating_sub(route_drops(&end, &[SOURCE_NOT_ALLOWED]));
    check(spoofed == 1, "a spoofed inner source was not counted at C")?;
    check(
        mesh.take_tun(c)?.is_empty(),
        "a packet with a spoofed source reached C's TUN",
    )?;
    dropped += spoofed;
    writeln!(
        out,
        "  A seals a packet from {SPOOFED_IP} (not its address): C opens it and drops it ({})",
        changed(&route_drops_list(&end), &route_drops_list(&end_after))
    )?;
    let still = ipv4(A_IP, C_IP, b"still working");
    mesh.tun_input(a, &still)?;
    mesh.settle();
    check(
        mesh.take_tun(c)? == [still],
        "traffic did not continue after the attacks",
    )?;
    writeln!(out, "  traffic continues: the next packet reached C's TUN")?;

    let (relay_after, end_after) = counters(mesh)?;
    let forward_drops = count(&relay_after.drops, &forward_names)
        .saturating_sub(count(&relay_before.drops, &forward_names));
    let end_drops = |s: &NodeStatus, name: &str| route_drops(s, &[name]);
    let replay = end_drops(&end_after, "replay").saturating_sub(end_drops(&end_before, "replay"));
    let bad_tag =
        end_drops(&end_after, "bad tag").saturating_sub(end_drops(&end_before, "bad tag"));
    check(
        replay == 1 && bad_tag == 1,
        "replay or forgery not counted at C",
    )?;
    check(forward_drops == 3, "relay drops not counted")?;
    Ok(dropped)
}

/// Sum of the named drop counters of every route end of a node.
fn route_drops(status: &NodeStatus, names: &[&str]) -> u64 {
    status.routes.iter().map(|r| count(&r.drops, names)).sum()
}

/// The drop counters of every route end of a node, summed by name.
fn route_drops_list(status: &NodeStatus) -> Vec<(&'static str, u64)> {
    let mut all: Vec<(&'static str, u64)> = Vec::new();
    for (name, n) in status.routes.iter().flat_map(|r| r.drops.iter()) {
        match all.iter_mut().find(|(m, _)| m == name) {
            Some((_, sum)) => *sum += n,
            None => all.push((name, *n)),
        }
    }
    all
}

/// The names of the counters that went up between two readings.
fn changed(before: &[(&'static str, u64)], after: &[(&'static str, u64)]) -> String {
    let names: Vec<&str> = after
        .iter()
        .filter(|(name, n)| before.iter().find(|(m, _)| m == name).map_or(0, |b| b.1) < *n)
        .map(|(name, _)| *name)
        .collect();
    names.join(", ")
}

/// The counters above zero, as `name n, name n`; `None` if all are zero.
fn nonzero(drops: &[(&'static str, u64)]) -> Option<String> {
    let shown: Vec<String> = drops
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    (!shown.is_empty()).then(|| shown.join(", "))
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
        assert_eq!(summary.attacks_dropped, 6);
        assert!(text.contains("drops it (source not allowed)"), "{text}");
        assert!(text.contains("all checks passed"), "{text}");
        assert!(
            text.contains("initiation (132 B)") && text.contains("response (80 B)"),
            "{text}"
        );
    }
}
