//! A leak watch: a capture on a VPN client's physical link that sorts every frame into
//! allowed (the mesh's UDP to its first hop, ARP, IPv6 neighbour discovery and MLD) and
//! leaked (anything else), and looks for a marker that must never cross the link in clear.
//! `skywire demo vpn` and the VPN namespace tests run it around every scenario.
//!
//! Frames are decoded with `etherparse`, laxly: a capture holds what the kernel saw, GSO
//! super-frames and cut copies included, and a frame that does not decode is a leak (it is
//! not one of the allowed kinds).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use skywire_dataplane::sys::capture::PacketCapture;
use skywire_dataplane::sys::netns::in_namespace;

/// The capture's receive buffer: a 100 MB download through the tunnel arrives as GRO
/// frames of up to 64 KiB faster than one thread on a busy machine reads them.
const CAPTURE_BUFFER: usize = 128 << 20;
/// Leaked frames described in a report (all are counted).
const DESCRIBED: usize = 20;

/// What may cross the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakRules {
    /// UDP flows allowed, either direction: (this end, that end).
    pub udp: Vec<(SocketAddr, SocketAddr)>,
    /// Bytes that must never appear in a frame.
    pub marker: Vec<u8>,
}

impl LeakRules {
    /// Whether the UDP flow `from` -> `to` is allowed, either direction.
    fn allows_udp(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.udp
            .iter()
            .any(|&(a, b)| (from, to) == (a, b) || (from, to) == (b, a))
    }

    /// Whether an ICMP error's quoted packet (its IP header and the first bytes of its
    /// UDP header) is of an allowed UDP flow.
    fn quotes_mesh_udp(&self, quoted: &[u8]) -> bool {
        let Ok(packet) = LaxSlicedPacket::from_ip(quoted) else {
            return false;
        };
        let (src, dst) = match &packet.net {
            Some(LaxNetSlice::Ipv4(ip)) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            ),
            Some(LaxNetSlice::Ipv6(ip)) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            _ => return false,
        };
        // The quote holds at least the UDP ports (RFC 792: 8 bytes of the datagram).
        let Some(ports) = packet
            .ip_payload()
            .filter(|p| p.ip_number == etherparse::IpNumber::UDP)
            .map(|p| p.payload)
            .filter(|p| p.len() >= 4)
        else {
            return false;
        };
        let port = |at: usize| {
            u16::from_be_bytes([
                ports.get(at).copied().unwrap_or(0),
                ports.get(at + 1).copied().unwrap_or(0),
            ])
        };
        self.allows_udp(SocketAddr::new(src, port(0)), SocketAddr::new(dst, port(2)))
    }
}

/// Where a frame belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An allowed kind, named.
    Allowed(&'static str),
    /// Anything else, described.
    Leak(String),
}

/// What a watch saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// Frames seen.
    pub frames: u64,
    /// Of which allowed.
    pub allowed: u64,
    /// Of which leaked.
    pub leaked: u64,
    /// The first leaked frames, described.
    pub leaks: Vec<String>,
    /// Frames holding the marker (allowed or not).
    pub marker_hits: u64,
    /// Frames the kernel dropped before the watch read them.
    pub kernel_drops: u64,
}

impl LeakReport {
    /// Nothing leaked, no marker, nothing missed.
    pub fn clean(&self) -> bool {
        self.leaked == 0 && self.marker_hits == 0 && self.kernel_drops == 0
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames: {} allowed, {} leaked, marker found {} times",
            self.frames, self.allowed, self.leaked, self.marker_hits
        )?;
        if self.kernel_drops > 0 {
            write!(f, ", {} missed by the capture", self.kernel_drops)?;
        }
        for leak in &self.leaks {
            write!(f, "\n  leaked: {leak}")?;
        }
        Ok(())
    }
}

/// Sort one Ethernet frame.
pub fn classify(frame: &[u8], rules: &LeakRules) -> Verdict {
    let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) else {
        return Verdict::Leak(format!(
            "{} bytes that are not an Ethernet frame",
            frame.len()
        ));
    };
    let (src, dst) = match &packet.net {
        Some(LaxNetSlice::Arp(_)) => return Verdict::Allowed("arp"),
        Some(LaxNetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        Some(LaxNetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        None => {
            let kind = packet
                .link
                .as_ref()
                .and_then(|l| l.ether_payload())
                .map(|p| format!("{:#06x}", p.ether_type.0))
                .unwrap_or_else(|| "?".into());
            return Verdict::Leak(format!("a frame of ether type {kind}"));
        }
    };
    match &packet.transport {
        Some(TransportSlice::Udp(udp)) => {
            let from = SocketAddr::new(src, udp.source_port());
            let to = SocketAddr::new(dst, udp.destination_port());
            if rules.allows_udp(from, to) {
                Verdict::Allowed("mesh udp")
            } else {
                Verdict::Leak(format!("UDP {from} -> {to}"))
            }
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            let kind = icmp.type_u8();
            if matches!(kind, 133..=136 | 143) {
                Verdict::Allowed("neighbour discovery")
            } else if matches!(kind, 1..=4) && rules.quotes_mesh_udp(icmp.payload()) {
                Verdict::Allowed("an error about mesh udp")
            } else {
                Verdict::Leak(format!("ICMPv6 type {kind} {src} -> {dst}"))
            }
        }
        Some(TransportSlice::Tcp(tcp)) => Verdict::Leak(format!(
            "TCP {} -> {}",
            SocketAddr::new(src, tcp.source_port()),
            SocketAddr::new(dst, tcp.destination_port())
        )),
        Some(TransportSlice::Icmpv4(icmp)) => {
            let kind = icmp.type_u8();
            // Destination unreachable, time exceeded, parameter problem: the network's
            // answer to a packet that crossed the link, allowed when that packet was.
            if matches!(kind, 3 | 11 | 12) && rules.quotes_mesh_udp(icmp.payload()) {
                Verdict::Allowed("an error about mesh udp")
            } else {
                Verdict::Leak(format!("ICMP type {kind} {src} -> {dst}"))
            }
        }
        _ => Verdict::Leak(format!("IP {src} -> {dst}")),
    }
}

/// Whether `marker` occurs in `bytes` (an empty marker never does).
fn holds(bytes: &[u8], marker: &[u8]) -> bool {
    !marker.is_empty() && bytes.windows(marker.len()).any(|w| w == marker)
}

/// A capture running on a thread until [`LeakWatch::finish`].
#[derive(Debug)]
pub struct LeakWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<LeakReport>>>,
}

impl LeakWatch {
    /// Start watching `interface` in the network namespace `namespace` (a name under
    /// `/run/netns`); it sees every frame sent after this returns. Needs `CAP_NET_RAW`.
    pub fn start(namespace: &str, interface: &str, rules: LeakRules) -> io::Result<Self> {
        let capture = in_namespace(namespace, || PacketCapture::open(interface, CAPTURE_BUFFER))??;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("leak-{interface}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 1 << 17];
                    let mut report = LeakReport::default();
                    loop {
                        let wait = if stop.load(Ordering::Relaxed) {
                            Duration::ZERO
                        } else {
                            Duration::from_millis(50)
                        };
                        match capture.recv(&mut buf, wait)? {
                            Some(frame) => {
                                let bytes = buf.get(..frame.captured).unwrap_or_default();
                                report.frames += 1;
                                if holds(bytes, &rules.marker) {
                                    report.marker_hits += 1;
                                }
                                match classify(bytes, &rules) {
                                    Verdict::Allowed(_) => report.allowed += 1,
                                    Verdict::Leak(what) => {
                                        report.leaked += 1;
                                        if report.leaks.len() < DESCRIBED {
                                            report.leaks.push(what);
                                        }
                                    }
                                }
                            }
                            None if wait.is_zero() => break,
                            None => {}
                        }
                    }
                    report.kernel_drops = capture.take_statistics()?.drops;
                    Ok(report)
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop, read what is queued, and report.
    pub fn finish(mut self) -> io::Result<LeakReport> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            _ => Err(io::Error::other("the capture thread failed")),
        }
    }
}

impl Drop for LeakWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(from: &str, to: &str, payload: &[u8]) -> Vec<u8> {
        let (f, t): (SocketAddr, SocketAddr) = (from.parse().unwrap(), to.parse().unwrap());
        let (IpAddr::V4(fi), IpAddr::V4(ti)) = (f.ip(), t.ip()) else {
            panic!()
        };
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(fi.octets(), ti.octets(), 64)
            .udp(f.port(), t.port());
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn only_the_mesh_flow_and_neighbour_discovery_pass() {
        let rules = LeakRules {
            udp: vec![(
                "198.18.1.2:6000".parse().unwrap(),
                "198.18.4.2:6000".parse().unwrap(),
            )],
            marker: b"SKYWIRE-LEAK-x".to_vec(),
        };
        let mesh_out = udp("198.18.1.2:6000", "198.18.4.2:6000", b"sealed");
        let mesh_in = udp("198.18.4.2:6000", "198.18.1.2:6000", b"sealed");
        assert_eq!(classify(&mesh_out, &rules), Verdict::Allowed("mesh udp"));
        assert_eq!(classify(&mesh_in, &rules), Verdict::Allowed("mesh udp"));
        let dns = udp("198.18.1.2:40000", "198.18.9.53:53", b"query");
        assert_eq!(
            classify(&dns, &rules),
            Verdict::Leak("UDP 198.18.1.2:40000 -> 198.18.9.53:53".into())
        );
        assert!(holds(
            &udp("198.18.1.2:1", "198.18.9.10:7", b"..SKYWIRE-LEAK-x.."),
            &rules.marker
        ));
        assert!(!holds(&mesh_out, &rules.marker));
        assert!(matches!(classify(&[0u8; 5], &rules), Verdict::Leak(_)));
        // Port unreachable about the mesh's own datagram (the exit's node was down):
        // allowed; about another datagram: a leak.
        let unreachable = |quoted: &[u8]| {
            let ip_only = &quoted[14..14 + 28];
            let builder = PacketBuilder::ethernet2([2; 6], [1; 6])
                .ipv4([198, 18, 4, 2], [198, 18, 1, 2], 64)
                .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::Port,
                ));
            let mut out = Vec::new();
            builder.write(&mut out, ip_only).unwrap();
            out
        };
        assert_eq!(
            classify(&unreachable(&mesh_out), &rules),
            Verdict::Allowed("an error about mesh udp")
        );
        assert!(matches!(
            classify(&unreachable(&dns), &rules),
            Verdict::Leak(_)
        ));
    }
}
