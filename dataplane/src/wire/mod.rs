//! Wire formats of the packets that travel along a route, version 1.
//!
//! Every packet starts with the same 8-byte route header; relays read and rewrite only that.
//! What follows depends on the packet type:
//!
//! | type | name                | view                                   | size            |
//! |------|---------------------|----------------------------------------|-----------------|
//! | 1    | handshake initiation | [`HandshakeInitPacket`]                | 132             |
//! | 2    | handshake response  | [`HandshakeResponsePacket`]             | 80              |
//! | 3    | data                | [`TransportPacket`]                     | 36 + payload    |
//! | 4    | keepalive           | [`TransportPacket`] (empty payload)     | 36              |
//! | 5    | close               | [`TransportPacket`] (empty payload)     | 36              |
//! | 6    | ping                | [`TransportPacket`] (8-byte nonce)      | 44              |
//! | 7    | pong                | [`TransportPacket`] (8-byte nonce)      | 44              |
//! | 8    | link probe          | [`LinkProbePacket`] (route id zero)     | 40              |
//! | 9    | link probe reply    | [`LinkProbePacket`] (route id zero)     | 40              |
//! | 10   | cookie reply        | [`CookieReplyPacket`]                   | 84              |
//!
//! An initiation may also be 148 bytes: the 132 followed by `mac2`, after a cookie reply
//! (the handshake-flood extension, `docs/PROTOCOL.md` §5.10; see [`CookieReplyPacket`]).
//!
//! Types 1 to 7 and 10 travel along a route and start with a valid route header; types 8 and 9
//! travel one link only (between neighbouring nodes), carry route id zero and are never
//! forwarded: [`RouteHeader::new_checked`] refuses them.
//!
//! `docs/PROTOCOL.md` documents every byte. The views here follow smoltcp's `wire` module:
//! a `*Packet<T: AsRef<[u8]>>` names its byte ranges in one `field` module, `new_checked`
//! validates untrusted input so that no accessor can panic afterwards, and a `*Repr` is the
//! parsed, validated value with `parse` and `emit`.
//!
//! All multi-byte integers on the wire are big-endian.

mod cookie;
mod handshake;
mod link;
mod transport;

pub(crate) use cookie::mac2_input;
pub use cookie::{
    COOKIE_LEN, COOKIE_NONCE_LEN, COOKIE_REPLY_LEN, CookieReplyPacket, CookieReplyRepr,
    HANDSHAKE_INIT_MAC2_LEN, InitParts, SEALED_COOKIE_LEN, split_init,
};

pub(crate) use handshake::mac_input;
pub use handshake::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, HandshakeInitPacket, HandshakeInitRepr,
    HandshakeResponsePacket, HandshakeResponseRepr, MAC_LEN,
};
pub use link::{
    LINK_PROBE_AUTHENTICATED, LINK_PROBE_LEN, LINK_SENDER_LEN, LinkProbePacket, LinkProbeRepr,
    is_link_probe, write_link_tag,
};
pub(crate) use transport::aad as transport_aad;
pub(crate) use transport::payload_len_is_valid;
pub use transport::{
    PING_LEN, PING_PAYLOAD_LEN, TAG_LEN, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD, TransportPacket,
    TransportRepr,
};

use core::fmt;

/// The only protocol version this build speaks.
pub const VERSION: u8 = 1;

/// Length of the route header shared by every packet type.
pub const ROUTE_HEADER_LEN: usize = 8;

/// A malformed packet. Deliberately carries no detail: the caller counts it and drops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet")]
pub struct Error;

/// Result of wire parsing.
pub type Result<T> = core::result::Result<T, Error>;

/// A hop-local route id. Zero means "no route" and is never valid on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(core::num::NonZeroU32);

impl RouteId {
    /// A route id from its numeric value; `None` for zero.
    pub const fn new(id: u32) -> Option<Self> {
        match core::num::NonZeroU32::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The numeric value, as carried on the wire.
    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The packet type, byte 1 of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// First handshake message, initiator to responder.
    HandshakeInit = 1,
    /// Second handshake message, responder to initiator.
    HandshakeResponse = 2,
    /// An encrypted IP packet or stream segment.
    Data = 3,
    /// An authenticated empty packet that keeps the route's session alive.
    Keepalive = 4,
    /// An authenticated notice that the sender is closing its end of the route.
    Close = 5,
    /// An authenticated request for a [`Pong`](Self::Pong) carrying the same 8-byte nonce.
    Ping = 6,
    /// The authenticated answer to a [`Ping`](Self::Ping).
    Pong = 7,
    /// A probe of one link (not a route), answered by the neighbour at once.
    LinkProbe = 8,
    /// The answer to a [`LinkProbe`](Self::LinkProbe), echoing its nonce.
    LinkProbeReply = 9,
    /// A responder under load answers an initiation without a valid mac2 with a cookie,
    /// sealed so that only the initiator can read it (`docs/PROTOCOL.md` §5.10).
    CookieReply = 10,
}

impl PacketType {
    /// Decode a packet type byte.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::HandshakeInit,
            2 => Self::HandshakeResponse,
            3 => Self::Data,
            4 => Self::Keepalive,
            5 => Self::Close,
            6 => Self::Ping,
            7 => Self::Pong,
            8 => Self::LinkProbe,
            9 => Self::LinkProbeReply,
            10 => Self::CookieReply,
            _ => return None,
        })
    }

    /// True for the types carried by [`TransportPacket`].
    pub const fn is_transport(self) -> bool {
        matches!(
            self,
            Self::Data | Self::Keepalive | Self::Close | Self::Ping | Self::Pong
        )
    }

    /// True for the types that travel along a route (1 to 7 and 10): everything but link
    /// probes.
    pub const fn is_route(self) -> bool {
        !matches!(self, Self::LinkProbe | Self::LinkProbeReply)
    }
}

/// Byte ranges of the route header.
mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const TYPE: usize = 1;
    pub(super) const RESERVED: Range<usize> = 2..4;
    pub(super) const ROUTE_ID: Range<usize> = 4..8;
}

/// A read/write view of the route header at the start of any packet.
///
/// This is what a relay uses: it never looks past these 8 bytes.
#[derive(Debug, Clone, Copy)]
pub struct RouteHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RouteHeader<T> {
    /// Check that `buffer` starts with a well-formed version-1 route header with a known
    /// route type (1 to 7 or 10; link probes are not route packets), zero reserved bytes and a
    /// non-zero route id.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = Self { buffer };
        let bytes = header.buffer.as_ref();
        let head = bytes.get(..ROUTE_HEADER_LEN).ok_or(Error)?;
        if head.first() != Some(&VERSION) {
            return Err(Error);
        }
        if head.get(field::RESERVED) != Some(&[0, 0][..]) {
            return Err(Error);
        }
        let ty = PacketType::from_u8(head.get(field::TYPE).copied().ok_or(Error)?).ok_or(Error)?;
        if !ty.is_route() {
            return Err(Error);
        }
        RouteId::new(read_u32(head, field::ROUTE_ID)).ok_or(Error)?;
        Ok(header)
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        // Checked in `new_checked`; the fallback is unreachable but keeps this panic-free.
        PacketType::from_u8(self.bytes()[field::TYPE]).unwrap_or(PacketType::Data)
    }

    /// The route id: the key of the receiving hop's forwarding rule for this route.
    pub fn route_id(&self) -> RouteId {
        RouteId::new(read_u32(self.bytes(), field::ROUTE_ID)).unwrap_or(RouteId::MIN)
    }

    /// The version byte (always [`VERSION`] after the check).
    pub fn version(&self) -> u8 {
        self.bytes()[field::VERSION]
    }

    fn bytes(&self) -> &[u8; ROUTE_HEADER_LEN] {
        // `new_checked` guaranteed at least ROUTE_HEADER_LEN bytes.
        first_chunk(self.buffer.as_ref())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RouteHeader<T> {
    /// Rewrite the route id in place (what a relay does to every packet it forwards).
    pub fn set_route_id(&mut self, id: RouteId) {
        write_u32(self.buffer.as_mut(), field::ROUTE_ID, id.get());
    }
}

impl RouteId {
    /// The smallest route id, 1.
    pub const MIN: RouteId = match RouteId::new(1) {
        Some(id) => id,
        None => unreachable!(),
    };
}

/// Write the route header for `packet_type` and `route_id` into `buffer[..8]`.
///
/// Panics if `buffer` is shorter than [`ROUTE_HEADER_LEN`]; emitters are only called on
/// buffers whose size the caller chose.
pub(crate) fn emit_route_header(buffer: &mut [u8], packet_type: PacketType, route_id: RouteId) {
    let head = first_chunk_mut::<ROUTE_HEADER_LEN>(buffer);
    head[field::VERSION] = VERSION;
    head[field::TYPE] = packet_type as u8;
    head[field::RESERVED].fill(0);
    head[field::ROUTE_ID].copy_from_slice(&route_id.get().to_be_bytes());
}

/// Read a big-endian u32 at `range` (which must be 4 bytes inside `bytes`; returns 0 if not).
pub(crate) fn read_u32(bytes: &[u8], range: core::ops::Range<usize>) -> u32 {
    bytes
        .get(range)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
}

/// Read a big-endian u64 at `range` (which must be 8 bytes inside `bytes`; returns 0 if not).
pub(crate) fn read_u64(bytes: &[u8], range: core::ops::Range<usize>) -> u64 {
    bytes
        .get(range)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Write a big-endian u32 at `range`; a no-op if out of bounds (callers check lengths first).
pub(crate) fn write_u32(bytes: &mut [u8], range: core::ops::Range<usize>, value: u32) {
    if let Some(b) = bytes.get_mut(range) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

/// Write a big-endian u64 at `range`; a no-op if out of bounds (callers check lengths first).
pub(crate) fn write_u64(bytes: &mut [u8], range: core::ops::Range<usize>, value: u64) {
    if let Some(b) = bytes.get_mut(range) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

/// Copy the `N` bytes at `range` out of `bytes` (zeros if out of bounds; callers check first).
pub(crate) fn read_array<const N: usize>(bytes: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    bytes
        .get(range)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .unwrap_or([0; N])
}

/// The first `N` bytes of `bytes` as an array reference.
///
/// Panics if `bytes` is shorter than `N`; only used where a checked constructor or the
/// caller's own sizing has established the length.
#[allow(clippy::expect_used)]
fn first_chunk<const N: usize>(bytes: &[u8]) -> &[u8; N] {
    bytes
        .first_chunk::<N>()
        .expect("length checked by constructor")
}

#[allow(clippy::expect_used)]
fn first_chunk_mut<const N: usize>(bytes: &mut [u8]) -> &mut [u8; N] {
    bytes
        .first_chunk_mut::<N>()
        .expect("buffer sized by caller")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_header_roundtrip_and_rewrite() {
        let mut buf = [0u8; 8];
        emit_route_header(
            &mut buf,
            PacketType::Data,
            RouteId::new(0x0102_0304).unwrap(),
        );
        assert_eq!(buf, [1, 3, 0, 0, 1, 2, 3, 4]);
        let mut header = RouteHeader::new_checked(&mut buf[..]).unwrap();
        assert_eq!(header.packet_type(), PacketType::Data);
        assert_eq!(header.route_id().get(), 0x0102_0304);
        header.set_route_id(RouteId::new(0xa0b0_c0d0).unwrap());
        assert_eq!(buf, [1, 3, 0, 0, 0xa0, 0xb0, 0xc0, 0xd0]);
    }

    #[test]
    fn route_header_refuses_bad_input() {
        for bad in [
            &[][..],
            &[1, 3, 0, 0, 0, 0, 0][..],     // short
            &[2, 3, 0, 0, 0, 0, 0, 1][..],  // version
            &[1, 0, 0, 0, 0, 0, 0, 1][..],  // type 0
            &[1, 11, 0, 0, 0, 0, 0, 1][..], // unknown type
            &[1, 8, 0, 0, 0, 0, 0, 1][..],  // a link probe is no route packet
            &[1, 9, 0, 0, 0, 0, 0, 1][..],  // nor its reply
            &[1, 3, 0, 1, 0, 0, 0, 1][..],  // reserved
            &[1, 3, 0, 0, 0, 0, 0, 0][..],  // route id 0
        ] {
            assert_eq!(RouteHeader::new_checked(bad).err(), Some(Error), "{bad:?}");
        }
    }
}
