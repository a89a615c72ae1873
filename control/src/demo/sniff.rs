//! Captures on the relay's links and on the receiver's TUN device, each on its own thread,
//! tallying what crossed: frames, skywire packet types, and frames that contain
//! [`MARKER`](super::MARKER) in clear.

use core::time::Duration;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use skywire_dataplane::sys::capture::{self, PacketCapture};
use skywire_dataplane::wire::{PacketType, RouteHeader};

use super::DemoError;
use super::traffic::{count_marker, in_ns, join, spawn};

/// Receive buffer of a capture socket: room for the whole marker phase even if the
/// reader thread gets no CPU for a while, so the kernel drops nothing.
const CAPTURE_BUFFER: usize = 64 << 20;

/// What one capture saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Frames read.
    pub(super) frames: u64,
    /// Their bytes on the link.
    pub(super) bytes: u64,
    /// Frames containing the marker.
    pub(super) marker_frames: u64,
    /// Skywire handshake initiations, responses, data, keepalive and close packets.
    pub(super) skywire: [u64; 5],
    /// Frames that are not skywire packets (ARP, IPv6 neighbour discovery, ...).
    pub(super) other: u64,
    /// Frames the kernel dropped because this capture fell behind.
    pub(super) kernel_drops: u64,
}

impl Tally {
    fn count(&mut self, frame: &capture::Frame, bytes: &[u8]) {
        self.frames += 1;
        self.bytes += frame.len as u64;
        if count_marker(bytes) > 0 {
            self.marker_frames += 1;
        }
        let kind = capture::udp_payload(frame, bytes)
            .and_then(|payload| RouteHeader::new_checked(payload).ok())
            .map(|header| header.packet_type());
        let slot = match kind {
            Some(PacketType::HandshakeInit) => self.skywire.get_mut(0),
            Some(PacketType::HandshakeResponse) => self.skywire.get_mut(1),
            Some(PacketType::Data) => self.skywire.get_mut(2),
            Some(PacketType::Keepalive) => self.skywire.get_mut(3),
            Some(PacketType::Close) => self.skywire.get_mut(4),
            // Pings, link probes and cookie replies: the demo sends none.
            Some(
                PacketType::Ping
                | PacketType::Pong
                | PacketType::LinkProbe
                | PacketType::LinkProbeReply
                | PacketType::CookieReply,
            )
            | None => Some(&mut self.other),
        };
        if let Some(slot) = slot {
            *slot += 1;
        }
    }

    /// `2 handshake, 812 data, 1 keepalive, 3 other`: the non-zero kinds.
    pub(super) fn kinds(&self) -> String {
        let [init, response, data, keepalive, close] = self.skywire;
        let parts: Vec<String> = [
            (init + response, "handshake"),
            (data, "data"),
            (keepalive, "keepalive"),
            (close, "close"),
            (self.other, "other"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// A capture running on its own thread. Dropping it without [`Sniffer::finish`] (the demo
/// failed half-way) stops the thread too, so its socket does not keep B's namespace alive.
#[derive(Debug)]
pub(super) struct Sniffer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<Tally>>>,
}

impl Sniffer {
    /// Start capturing on `interface` inside `namespace`. The capture is bound before this
    /// returns, so it sees every frame sent afterwards.
    pub(super) fn start(namespace: &str, interface: &str) -> Result<Self, DemoError> {
        let capture = in_ns(namespace, &format!("cannot capture on {interface}"), || {
            PacketCapture::open(interface, CAPTURE_BUFFER)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            spawn(&format!("demo-capture-{interface}"), move || {
                let mut buf = vec![0u8; 65_536];
                let mut tally = Tally::default();
                loop {
                    // After `stop`, read what is queued without waiting, then finish.
                    let wait = if stop.load(Ordering::Relaxed) {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(50)
                    };
                    match capture.recv(&mut buf, wait)? {
                        Some(frame) => {
                            tally.count(&frame, buf.get(..frame.captured).unwrap_or_default());
                        }
                        None if stop.load(Ordering::Relaxed) && wait.is_zero() => break,
                        None => {}
                    }
                }
                tally.kernel_drops = capture.take_statistics()?.drops;
                Ok(tally)
            })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop capturing and return the tally.
    pub(super) fn finish(mut self) -> Result<Tally, DemoError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(thread) => join(thread, "a packet capture failed"),
            None => Ok(Tally::default()),
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MARKER;
    use super::*;

    #[test]
    fn kinds_lists_what_was_seen() {
        let mut tally = Tally::default();
        assert_eq!(tally.kinds(), "nothing");
        tally.skywire = [1, 1, 40, 2, 0];
        tally.other = 3;
        assert_eq!(tally.kinds(), "2 handshake, 40 data, 2 keepalive, 3 other");
    }

    #[test]
    fn frames_are_classified() {
        // An Ethernet/IPv4/UDP frame carrying a skywire data packet header, then the marker.
        let mut frame = vec![0u8; 14];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17]);
        frame.resize(14 + 20 + 8, 0);
        frame.extend_from_slice(&[1, 3, 0, 0, 0, 0, 0, 100]);
        let info = |len| capture::Frame {
            len,
            captured: len,
            outgoing: false,
            ethernet: true,
        };
        let mut tally = Tally::default();
        tally.count(&info(frame.len()), &frame);
        frame.extend_from_slice(MARKER);
        tally.count(&info(frame.len()), &frame);
        tally.count(&info(3), &[1, 2, 3]);
        assert_eq!(tally.frames, 3);
        assert_eq!(tally.skywire, [0, 0, 2, 0, 0]);
        assert_eq!(tally.other, 1);
        assert_eq!(tally.marker_frames, 1);
    }
}
