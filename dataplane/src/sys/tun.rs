//! The TUN device: IP packets between the kernel's stack and the engine.
//!
//! [`TunDevice::create`] opens a layer-3 TUN device with tun-rs (`TUNSETIFF`: no packet
//! information header, single queue), makes its descriptor non-blocking, and then
//! configures it over rtnetlink ([`netlink`]): MTU and link up in one request, then each
//! address, each acknowledged by the kernel. tun-rs's own configuration is not used: on
//! Linux it sets MTU, link state and addresses with ioctls, and the netlink path it has for
//! extra IPv4 addresses (netconfig-rs) sends its request without asking for an
//! acknowledgement, so a refusal would go unnoticed.
//!
//! # Offloads
//!
//! Asked for with `offload`, the device speaks the virtio-net header (`IFF_VNET_HDR`) and
//! accepts TSO for IPv4 and IPv6 (`TUNSETOFFLOAD`, plus UDP segmentation where the kernel
//! has it, 6.2 and later). The kernel then hands over **super-packets**: one TCP (or UDP)
//! packet of up to 64 KiB with a header saying how to cut it. [`split`] cuts it into
//! packets of at most the MTU, with their own IP and TCP/UDP headers, sequence numbers,
//! lengths and checksums, into the caller's buffers; one `read` thus brings up to ~45
//! packets. The other way, [`TunDevice::send_batch`] coalesces consecutive segments of one
//! TCP or UDP flow into super-packets (tun-rs's `GROTable`, a port of wireguard-go's GRO) so
//! one `write` carries many. When the kernel refuses `TUNSETOFFLOAD`, the device is opened
//! again without the header and everything goes one packet per call: slower, same packets.
//!
//! The device lives as long as the [`TunDevice`]: the kernel removes a non-persistent TUN
//! device when its last descriptor is closed (tun-rs never sets `TUNSETPERSIST` unless
//! asked, and opens with `O_CLOEXEC`, so no child process keeps it), and the routes through
//! it go with it.

use core::fmt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN, VirtioNetHdr, gso_split};

/// `VIRTIO_NET_HDR_GSO_NONE`: a plain packet.
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum is partial (pseudo-header only).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: a UDP super-packet (USO).
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: a flag on the GSO type.
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

use super::netlink;
use crate::route::Prefix;

/// The TUN device of a node: what [`TunDevice::create`] makes. It is part of the engine's
/// `NodeSetup`, and defined here, below the engine, because the device is made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSetup {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// Addresses with prefix lengths, assigned to the interface (`10.77.0.1/24`).
    pub addresses: Vec<Prefix>,
    /// MTU of the interface: the largest IP packet carried, before the 36-byte route
    /// overhead and the UDP/IP headers of the transport.
    pub mtu: u16,
}

/// A TUN device created and configured by this process, removed when dropped.
pub struct TunDevice {
    device: SyncDevice,
    /// The name the kernel gave it.
    name: String,
    /// Stable for the device's life; read once so a rename cannot break later calls.
    if_index: u32,
    /// The device speaks the virtio-net header (offloads on).
    offload: bool,
}

// The engine moves the device into its own thread.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<TunDevice>();
};

impl TunDevice {
    /// Create the device `setup.name` with MTU `setup.mtu` and every address of
    /// `setup.addresses` (IPv4 and IPv6), and bring it up. Needs `CAP_NET_ADMIN`
    /// ([`io::ErrorKind::PermissionDenied`] otherwise). An existing interface of that name
    /// is refused with [`io::ErrorKind::AlreadyExists`] rather than taken over. If a step
    /// fails, the device is removed again. With `offload`, TSO and GRO are asked for (see
    /// the module docs); [`Self::offload`] tells whether the kernel agreed.
    pub fn create(setup: &TunSetup, offload: bool) -> io::Result<Self> {
        if interface_exists(&setup.name)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a network interface named {} exists already", setup.name),
            ));
        }
        let (device, offload) = match open(&setup.name, offload) {
            Ok(device) => (device, offload),
            // The kernel refused IFF_VNET_HDR or TUNSETOFFLOAD: the same device without.
            Err(_) if offload => (open(&setup.name, false)?, false),
            Err(e) => return Err(e),
        };
        device.set_nonblocking(true)?;
        let name = device.name()?;
        let if_index = device.if_index()?;
        // From here on, returning early drops `tun`, which removes the device.
        let tun = Self {
            device,
            name,
            if_index,
            offload,
        };
        // No IPv6 link-local address (as WireGuard does): the kernel would otherwise send
        // router solicitations into the tunnel, which no route carries. Best effort: the
        // file is absent when IPv6 is disabled.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/addr_gen_mode", tun.name),
            b"1",
        );
        netlink::set_link(if_index, Some(u32::from(setup.mtu)), Some(true))
            .map_err(|e| context(e, format_args!("setting MTU {} and link up", setup.mtu)))?;
        for address in &setup.addresses {
            netlink::add_address(if_index, address)
                .map_err(|e| context(e, format_args!("adding address {address}")))?;
        }
        Ok(tun)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index (for routes through the device).
    pub fn if_index(&self) -> io::Result<u32> {
        Ok(self.if_index)
    }

    /// Whether the device runs with offloads (virtio-net header, super-packets).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Read what the kernel has for us: one packet, or with offloads one super-packet cut
    /// into packets. Packet `i` is written to `bufs[i][offset..][..sizes[i]]`; returns how
    /// many, or [`io::ErrorKind::WouldBlock`] when none is waiting. `scratch` takes the raw
    /// read and must hold [`SCRATCH_LEN`] bytes; `bufs` must have room for `offset` plus
    /// the MTU each, and be enough for the smallest segments (see [`batch_slots`]). A packet
    /// that cannot be cut (or, without offloads, is longer than the buffer) is lost and
    /// reported as [`io::ErrorKind::InvalidData`].
    pub fn recv_batch(
        &self,
        scratch: &mut [u8],
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        if !self.offload {
            let (Some(buf), Some(size)) = (bufs.first_mut(), sizes.first_mut()) else {
                return Ok(0);
            };
            let room = buf.get_mut(offset..).unwrap_or_default();
            *size = self.recv(room)?;
            return Ok(1);
        }
        let n = self.device.recv(scratch)?;
        let raw = scratch.get_mut(..n).unwrap_or_default();
        split(raw, bufs, sizes, offset)
    }

    /// Write packets `bufs[i][offset..]` (each `Vec`'s length marks the packet's end) to the
    /// kernel's stack; with offloads, consecutive segments of a flow are first coalesced
    /// into super-packets in place (the first buffer of a flow grows up to its capacity, so
    /// give the buffers [`COALESCE_CAPACITY`]). `offset` must be at least
    /// [`VIRTIO_NET_HDR_LEN`]: the header is written in front of each packet. Returns the
    /// bytes written; a refused write is reported after the others were tried.
    pub fn send_batch(
        &self,
        gro: &mut GROTable,
        bufs: &mut [Vec<u8>],
        offset: usize,
    ) -> io::Result<usize> {
        self.device.send_multiple(gro, bufs, offset)
    }

    /// Read one IP packet into `buf`; [`io::ErrorKind::WouldBlock`] when none is waiting.
    /// Only for a device without offloads. `buf` should hold the MTU: a longer packet is
    /// cut by the kernel, which is reported as [`io::ErrorKind::InvalidData`] (the packet is
    /// lost).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.device.recv(buf)?;
        // The kernel copies what fits and returns that length without a word, so a full
        // buffer may hold a cut packet: its IP header then claims more than arrived.
        if n == buf.len() && buf.get(..n).is_some_and(cut_short) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TUN packet longer than the buffer",
            ));
        }
        Ok(n)
    }

    /// Write one IP packet (IPv4 or IPv6, no header in front) to the kernel's stack. Only
    /// for a device without offloads.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.device.send(buf)
    }
}

/// Bytes [`TunDevice::recv_batch`] needs for its raw read: the virtio-net header and the
/// largest super-packet.
pub const SCRATCH_LEN: usize = VIRTIO_NET_HDR_LEN + 65_535;

/// Capacity to give [`TunDevice::send_batch`]'s buffers so a flow's first buffer can grow
/// into a 64 KiB super-packet (tun-rs coalesces only within the capacity it finds).
pub const COALESCE_CAPACITY: usize = 2 * VIRTIO_NET_HDR_LEN + 65_535 + 64;

/// Packet buffers [`TunDevice::recv_batch`] needs for a device of `mtu` bytes: enough for
/// a 64 KiB super-packet cut into the smallest segments that MTU allows.
pub fn batch_slots(mtu: usize) -> usize {
    // The smallest segment payload: MTU minus the largest IPv6 + TCP headers (40 + 60).
    let payload = mtu.saturating_sub(100).max(8);
    (65_535 / payload + 1).max(64)
}

/// Cut one raw read of an offloading device (`raw`: the virtio-net header, then the
/// packet) into packets at `bufs[i][offset..]`, lengths in `sizes`; returns how many.
///
/// A plain packet is copied, its checksum completed if the kernel left that to us
/// (`NEEDS_CSUM`). A super-packet (TCPv4, TCPv6, UDP) becomes `ceil(payload / gso_size)`
/// packets, each with its own IP header (length, IPv4 id and checksum), TCP sequence number
/// or UDP length, and transport checksum; TCP's FIN and PSH stay on the last one only. The
/// header's `hdr_len` is not trusted (the kernel may set it to the whole packet); it is
/// recomputed from the TCP data offset. Anything inconsistent is
/// [`io::ErrorKind::InvalidData`], with nothing written that the caller would use.
pub fn split(
    raw: &mut [u8],
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
    offset: usize,
) -> io::Result<usize> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut hdr = VirtioNetHdr::decode(raw).map_err(|_| invalid("no virtio-net header"))?;
    let packet = raw
        .get_mut(VIRTIO_NET_HDR_LEN..)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("empty packet"))?;
    if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE {
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            complete_checksum(packet, hdr.csum_start, hdr.csum_offset)
                .ok_or_else(|| invalid("checksum position outside the packet"))?;
        }
        let (Some(buf), Some(size)) = (bufs.first_mut(), sizes.first_mut()) else {
            return Ok(0);
        };
        let dst = buf
            .get_mut(offset..offset + packet.len())
            .ok_or_else(|| invalid("packet longer than the buffer"))?;
        dst.copy_from_slice(packet);
        *size = packet.len();
        return Ok(1);
    }
    let is_v6 = match packet.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return Err(invalid("super-packet is not IP")),
    };
    let csum_start = usize::from(hdr.csum_start);
    let transport_len = if hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_UDP_L4 {
        8
    } else {
        let data_offset = packet
            .get(csum_start + 12)
            .ok_or_else(|| invalid("TCP header cut"))?;
        let len = usize::from(data_offset >> 4) * 4;
        if !(20..=60).contains(&len) {
            return Err(invalid("TCP header length"));
        }
        len
    };
    hdr.hdr_len =
        u16::try_from(csum_start + transport_len).map_err(|_| invalid("header length"))?;
    if usize::from(hdr.hdr_len) > packet.len() {
        return Err(invalid("super-packet shorter than its headers"));
    }
    gso_split(packet, hdr, bufs, sizes, offset, is_v6)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Finish a partial checksum: the ones' complement sum of `packet[start..]` (which holds
/// the pseudo-header sum in its checksum field) written at `start + offset`.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> Option<()> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    let sum = ones_complement_sum(packet.get(start..)?, 0);
    packet
        .get_mut(at..at + 2)?
        .copy_from_slice(&(!sum).to_be_bytes());
    Some(())
}

/// The folded 16-bit ones' complement sum of `data` (an odd last byte padded with zero),
/// added to `initial`.
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        if let [a, b] = w {
            sum += u64::from(u16::from_be_bytes([*a, *b]));
        }
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap_or(0xffff)
}

/// The one place the device is opened, with every tun-rs option this module relies on;
/// this is the builder call to edit, and the only one.
fn open(name: &str, offload: bool) -> io::Result<SyncDevice> {
    DeviceBuilder::new()
        .name(name)
        // Link state (like MTU and addresses, which we simply do not pass) is set over
        // rtnetlink by `create`, not by tun-rs's ioctls.
        .inherit_enable_state()
        .with(|linux| {
            linux
                .packet_information(false)
                .offload(offload)
                .multi_queue(false);
        })
        .build_sync()
}

/// Does the IP header of `packet` declare more bytes than it has?
fn cut_short(packet: &[u8]) -> bool {
    let field = |at: usize| {
        packet
            .get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(|b| usize::from(u16::from_be_bytes(b)))
    };
    let declared = match packet.first().map(|b| b >> 4) {
        Some(4) => field(2),                     // total length
        Some(6) => field(4).map(|len| len + 40), // payload length + fixed header
        _ => None,
    };
    declared.is_some_and(|len| len > packet.len())
}

/// Is there an interface called `name`? Asked before `TUNSETIFF`, which would otherwise
/// attach to an existing persistent TUN device of that name (and leave it behind on drop)
/// instead of creating one. A creator racing us in between is not guarded against.
fn interface_exists(name: &str) -> io::Result<bool> {
    let name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name contains a NUL byte",
        )
    })?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call; the function only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    Ok(index != 0)
}

/// `e` with what was being done in front, keeping its kind.
fn context(e: io::Error, doing: fmt::Arguments<'_>) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

impl AsRawFd for TunDevice {
    /// The device's descriptor, for registering with mio (`mio::unix::SourceFd`). It stays
    /// owned by the `TunDevice`.
    fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("if_index", &self.if_index)
            .field("offload", &self.offload)
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

#[cfg(test)]
mod tests;
