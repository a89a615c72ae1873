//! Packet capture on one interface: an `AF_PACKET` socket that receives a copy of every
//! frame the interface sends or receives, like `tcpdump -i IFACE` without libpcap.
//!
//! Used to show what crosses a link (the demo looks for plaintext on a relay's links) and
//! by tests. The socket sees the namespace of the thread that opens it (see
//! [`super::netns::in_namespace`]) and the one interface it is bound to; it does not
//! filter, decode or change traffic: the kernel hands it a copy and the traffic goes on.
//!
//! Invariants: the socket is created with protocol 0, so it receives nothing until `bind`
//! names both the interface and `ETH_P_ALL`; no frame of another interface can slip into
//! its queue in between. When the reader falls behind, the kernel drops frames for this
//! socket only and counts them ([`PacketCapture::take_statistics`]), so a caller can tell
//! a complete capture from a partial one.

use core::time::Duration;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::netns::interface_index;

/// `SOL_PACKET` option: the socket's counters, reset by reading them.
const PACKET_STATISTICS: libc::c_int = 6;
/// `sll_pkttype` of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

/// `struct tpacket_stats` from `<linux/if_packet.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: libc::c_uint,
    tp_drops: libc::c_uint,
}

/// A capture socket bound to one interface. Dropping it stops the capture.
#[derive(Debug)]
pub struct PacketCapture {
    fd: OwnedFd,
    if_index: u32,
}

/// One captured frame, its bytes in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The frame's full length on the link.
    pub len: usize,
    /// How many of its bytes were copied into the buffer (`len` cut to the buffer).
    pub captured: usize,
    /// Whether this host sent the frame (otherwise it was received).
    pub outgoing: bool,
    /// Whether the frame starts with an Ethernet header (a veth, loopback); otherwise it
    /// starts with the IP header (a TUN device).
    pub ethernet: bool,
}

/// The kernel's counters of a capture socket, since the last time they were taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames that reached the socket, including those dropped.
    pub frames: u64,
    /// Frames dropped because the socket's buffer was full.
    pub drops: u64,
}

impl PacketCapture {
    /// Start capturing every frame, both directions, on the interface `name` of the calling
    /// thread's network namespace, with a receive buffer of `buffer_bytes` (set with
    /// `SO_RCVBUFFORCE`, so beyond `net.core.rmem_max`). Needs `CAP_NET_RAW`.
    pub fn open(name: &str, buffer_bytes: usize) -> io::Result<Self> {
        let if_index = interface_index(name)?;
        let index = libc::c_int::try_from(if_index)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: socket() takes no pointers; its result is checked before use.
        let fd = super::check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bytes = libc::c_int::try_from(buffer_bytes).unwrap_or(libc::c_int::MAX);
        super::setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)?;

        // SAFETY: sockaddr_ll is plain integers; all zeroes is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as libc::c_ushort;
        sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sa.sll_ifindex = index;
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the pointer and length describe `sa`, a local sockaddr_ll.
        super::check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast::<libc::sockaddr>(),
                len,
            )
        })?;
        Ok(Self { fd, if_index })
    }

    /// The index of the interface captured.
    pub fn if_index(&self) -> u32 {
        self.if_index
    }

    /// Wait at most `timeout` for the next frame and copy it into `buf` (cut to its
    /// length); `None` when none came in time. A buffer of 65,536 bytes holds any frame of
    /// a link without offloads.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<Frame>> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the pointer refers to one local pollfd and the count says one.
        let ready = super::check(unsafe { libc::poll(&raw mut pollfd, 1, millis) });
        match ready {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        }
        // SAFETY: sockaddr_ll is plain integers; all zeroes is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { core::mem::zeroed() };
        let mut from_len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `buf` is writable for `buf.len()` bytes and the kernel writes no more
        // (MSG_TRUNC only changes the length returned); `from` and `from_len` are writable
        // locals, `from_len` holding the size of `from`.
        let ret = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&raw mut from).cast::<libc::sockaddr>(),
                &raw mut from_len,
            )
        };
        let len = match usize::try_from(ret) {
            Ok(len) => len,
            Err(_) => {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                };
            }
        };
        Ok(Some(Frame {
            len,
            captured: len.min(buf.len()),
            outgoing: from.sll_pkttype == PACKET_OUTGOING,
            // Loopback frames carry an Ethernet header too (zero addresses).
            ethernet: matches!(from.sll_hatype, libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK),
        }))
    }

    /// The kernel's counters since the last call (reading them resets them).
    pub fn take_statistics(&self) -> io::Result<CaptureStats> {
        let mut stats = TpacketStats::default();
        let mut len = libc::socklen_t::try_from(size_of::<TpacketStats>())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `stats` and `len` are writable locals and `len` is the size of `stats`,
        // the struct the kernel writes for PACKET_STATISTICS on a TPACKET_V1 socket.
        let ret = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&raw mut stats).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        super::check(ret)?;
        Ok(CaptureStats {
            frames: u64::from(stats.tp_packets),
            drops: u64::from(stats.tp_drops),
        })
    }
}

/// The payload of a UDP datagram inside a captured frame (IPv4 or IPv6 without extension
/// headers), or `None` for anything else or a frame cut short.
pub fn udp_payload<'a>(frame: &Frame, bytes: &'a [u8]) -> Option<&'a [u8]> {
    let bytes = bytes.get(..frame.captured)?;
    let ip = if frame.ethernet {
        let ether_type = u16::from_be_bytes([*bytes.get(12)?, *bytes.get(13)?]);
        if ether_type != 0x0800 && ether_type != 0x86dd {
            return None;
        }
        bytes.get(14..)?
    } else {
        bytes
    };
    let (protocol, header_len) = match ip.first()? >> 4 {
        4 => (*ip.get(9)?, usize::from(ip.first()? & 0x0f) * 4),
        6 => (*ip.get(6)?, 40),
        _ => return None,
    };
    if protocol != 17 {
        return None;
    }
    ip.get(header_len.checked_add(8)?..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn udp_payload_finds_the_datagram_in_ipv4_and_ipv6_frames() {
        let mut v4 = vec![0u8; 14];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        v4.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17]);
        v4.resize(14 + 20 + 8, 0);
        v4.extend_from_slice(b"hello");
        let frame = Frame {
            len: v4.len(),
            captured: v4.len(),
            outgoing: false,
            ethernet: true,
        };
        assert_eq!(udp_payload(&frame, &v4), Some(&b"hello"[..]));

        let mut v6 = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v6.resize(40 + 8, 0);
        v6.extend_from_slice(b"six");
        let frame = Frame {
            len: v6.len(),
            captured: v6.len(),
            outgoing: true,
            ethernet: false,
        };
        assert_eq!(udp_payload(&frame, &v6), Some(&b"six"[..]));

        // TCP, a cut frame and garbage are not UDP.
        let mut tcp = v4.clone();
        tcp[14 + 9] = 6;
        let whole = Frame {
            len: tcp.len(),
            captured: tcp.len(),
            outgoing: false,
            ethernet: true,
        };
        assert_eq!(udp_payload(&whole, &tcp), None);
        let cut = Frame {
            captured: 20,
            ..whole
        };
        assert_eq!(udp_payload(&cut, &v4), None);
        assert_eq!(udp_payload(&whole, &[0xff; 3]), None);
    }

    #[test]
    fn captures_a_datagram_on_loopback() {
        super::super::testns::run("captures_a_datagram_on_loopback", || {
            let lo = interface_index("lo").unwrap();
            super::super::netlink::set_link(lo, None, Some(true)).unwrap();
            let capture = PacketCapture::open("lo", 1 << 20).unwrap();
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .send_to(b"captured-marker", socket.local_addr().unwrap())
                .unwrap();
            let mut buf = vec![0u8; 65_536];
            let mut found = false;
            while let Some(frame) = capture.recv(&mut buf, Duration::from_secs(1)).unwrap() {
                if udp_payload(&frame, &buf) == Some(&b"captured-marker"[..]) {
                    found = true;
                    break;
                }
            }
            assert!(found);
            let stats = capture.take_statistics().unwrap();
            assert!(stats.frames >= 1);
            assert_eq!(stats.drops, 0);
        });
    }
}
