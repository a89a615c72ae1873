//! Transport packets: data, keepalive, close, ping and pong.
//!
//! ```text
//!  0       1       2       4               8              12                      20
//! +-------+-------+-------+---------------+---------------+-----------------------+
//! |version| type  |  rsv  |   route id    |    key id     |       counter         |
//! +-------+-------+-------+---------------+---------------+-----------------------+
//! | ciphertext (payload; empty for keepalive and close, 8 for ping and pong) ...   |
//! +--------------------------------------------------------------------------------+
//! | tag (16 bytes)                                                                 |
//! +--------------------------------------------------------------------------------+
//! ```
//!
//! The key id is the receiver's index of the keypair that sealed the packet. The counter is
//! the nonce. A ping's payload is an 8-byte nonce of the sender's choosing, and a pong's
//! payload is the nonce of the ping it answers. Bytes 0..4 and 8..20 are authenticated as associated data; the route id is not,
//! because every relay rewrites it.

use super::{Error, PacketType, ROUTE_HEADER_LEN, Result, RouteId, read_u32, read_u64};

/// Length of the transport header (route header, key id, counter).
pub const TRANSPORT_HEADER_LEN: usize = 20;
/// Length of the Poly1305 tag that ends every transport packet.
pub const TAG_LEN: usize = 16;
/// Bytes a transport packet adds to its payload.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Payload length of a ping and of a pong: the nonce.
pub const PING_PAYLOAD_LEN: usize = 8;
/// Length of a ping and of a pong on the wire.
pub const PING_LEN: usize = TRANSPORT_OVERHEAD + PING_PAYLOAD_LEN;

/// Is `payload_len` allowed for a transport packet of type `ty`?
pub(crate) const fn payload_len_is_valid(ty: PacketType, payload_len: usize) -> bool {
    match ty {
        PacketType::Data => payload_len >= 1,
        PacketType::Keepalive | PacketType::Close => payload_len == 0,
        PacketType::Ping | PacketType::Pong => payload_len == PING_PAYLOAD_LEN,
        _ => false,
    }
}

pub(crate) mod field {
    use core::ops::Range;
    pub(crate) const KEY_ID: Range<usize> = 8..12;
    pub(crate) const COUNTER: Range<usize> = 12..20;
}

/// A view of a data, keepalive, close, ping or pong packet.
#[derive(Debug, Clone, Copy)]
pub struct TransportPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TransportPacket<T> {
    /// Validate untrusted bytes: a transport type, room for header and tag, a non-empty
    /// payload for data, an empty one for keepalive and close, and exactly 8 bytes for
    /// ping and pong.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = super::RouteHeader::new_checked(buffer.as_ref())?;
        let ty = header.packet_type();
        let len = buffer.as_ref().len();
        let payload = len.checked_sub(TRANSPORT_OVERHEAD).ok_or(Error)?;
        if !payload_len_is_valid(ty, payload) {
            return Err(Error);
        }
        Ok(Self { buffer })
    }

    /// The packet type (data, keepalive, close, ping or pong).
    pub fn packet_type(&self) -> PacketType {
        super::RouteHeader {
            buffer: self.buffer.as_ref(),
        }
        .packet_type()
    }

    /// The route id of the hop that receives this packet.
    pub fn route_id(&self) -> RouteId {
        super::RouteHeader {
            buffer: self.buffer.as_ref(),
        }
        .route_id()
    }

    /// The receiver's key id.
    pub fn key_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::KEY_ID)
    }

    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::COUNTER)
    }

    /// Length of the encrypted payload (without the tag).
    pub fn payload_len(&self) -> usize {
        self.buffer
            .as_ref()
            .len()
            .saturating_sub(TRANSPORT_OVERHEAD)
    }

    /// The associated data of this packet: bytes 0..4 and 8..20.
    pub fn aad(&self) -> [u8; 16] {
        aad(self.buffer.as_ref())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The associated data of a transport packet whose header is in `bytes[..20]`.
pub(crate) fn aad(bytes: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let (Some(a), Some(b)) = (
        bytes.get(..4),
        bytes.get(ROUTE_HEADER_LEN..TRANSPORT_HEADER_LEN),
    ) {
        out[..4].copy_from_slice(a);
        out[4..].copy_from_slice(b);
    }
    out
}

/// The header of a transport packet, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportRepr {
    /// Data, keepalive, close, ping or pong.
    pub packet_type: PacketType,
    /// Route id at the receiving hop.
    pub route_id: RouteId,
    /// Receiver's key id.
    pub key_id: u32,
    /// Nonce counter.
    pub counter: u64,
    /// Length of the ciphertext before the tag.
    pub payload_len: usize,
}

impl TransportRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &TransportPacket<T>) -> Self {
        Self {
            packet_type: packet.packet_type(),
            route_id: packet.route_id(),
            key_id: packet.key_id(),
            counter: packet.counter(),
            payload_len: packet.payload_len(),
        }
    }

    /// Total length of the packet on the wire.
    pub fn buffer_len(&self) -> usize {
        // Saturating: an absurd payload length gives a length no buffer has.
        TRANSPORT_OVERHEAD.saturating_add(self.payload_len)
    }

    /// Write the header into `buffer[..20]`. The payload and tag are the cipher's job.
    ///
    /// Returns an error if `buffer` is shorter than [`buffer_len`](Self::buffer_len) or the
    /// type is not a transport type.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        if !self.packet_type.is_transport() || buffer.len() < self.buffer_len() {
            return Err(Error);
        }
        super::emit_route_header(buffer, self.packet_type, self.route_id);
        super::write_u32(buffer, field::KEY_ID, self.key_id);
        super::write_u64(buffer, field::COUNTER, self.counter);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keepalive with route id 7, key id 0x11223344, counter 5 and an all-0xaa tag.
    const KEEPALIVE: [u8; 36] = [
        1, 4, 0, 0, 0, 0, 0, 7, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0, 0, 0, 5, 0xaa, 0xaa, 0xaa,
        0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
    ];

    #[test]
    fn parse_vector() {
        let packet = TransportPacket::new_checked(&KEEPALIVE[..]).unwrap();
        let repr = TransportRepr::parse(&packet);
        assert_eq!(
            repr,
            TransportRepr {
                packet_type: PacketType::Keepalive,
                route_id: RouteId::new(7).unwrap(),
                key_id: 0x1122_3344,
                counter: 5,
                payload_len: 0,
            }
        );
        assert_eq!(
            packet.aad(),
            [1, 4, 0, 0, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0, 0, 0, 5]
        );
        let mut out = [0xaau8; 36];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, KEEPALIVE);
    }

    #[test]
    fn payload_rules() {
        let mut data = [0u8; 37];
        TransportRepr {
            packet_type: PacketType::Data,
            route_id: RouteId::MIN,
            key_id: 1,
            counter: 0,
            payload_len: 1,
        }
        .emit(&mut data)
        .unwrap();
        assert!(TransportPacket::new_checked(&data[..]).is_ok());
        // Data without payload, keepalive with payload: refused.
        assert!(TransportPacket::new_checked(&data[..36]).is_err());
        data[1] = PacketType::Keepalive as u8;
        assert!(TransportPacket::new_checked(&data[..]).is_err());
        assert!(TransportPacket::new_checked(&data[..36]).is_ok());
        // Handshake types are not transport packets.
        data[1] = PacketType::HandshakeInit as u8;
        assert!(TransportPacket::new_checked(&data[..36]).is_err());
        // Ping and pong carry exactly the 8-byte nonce.
        let mut ping = [0u8; PING_LEN + 1];
        for ty in [PacketType::Ping, PacketType::Pong] {
            TransportRepr {
                packet_type: ty,
                route_id: RouteId::MIN,
                key_id: 1,
                counter: 0,
                payload_len: PING_PAYLOAD_LEN,
            }
            .emit(&mut ping)
            .unwrap();
            assert!(TransportPacket::new_checked(&ping[..PING_LEN]).is_ok());
            assert!(TransportPacket::new_checked(&ping[..PING_LEN - 1]).is_err());
            assert!(TransportPacket::new_checked(&ping[..]).is_err());
            assert!(TransportPacket::new_checked(&ping[..36]).is_err());
        }
    }

    #[test]
    fn emit_refuses_short_buffer() {
        let repr = TransportRepr {
            packet_type: PacketType::Data,
            route_id: RouteId::MIN,
            key_id: 1,
            counter: 0,
            payload_len: 10,
        };
        assert_eq!(repr.emit(&mut [0u8; 45]), Err(Error));
        assert_eq!(repr.emit(&mut [0u8; 46]), Ok(()));
    }
}
