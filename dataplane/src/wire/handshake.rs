//! Handshake packets (the IK-pattern handshake of [`crate::crypto::noise`]).
//!
//! Initiation, 132 bytes:
//!
//! ```text
//!   0..8    route header (type 1)
//!   8..12   sender index      initiator's key id for the new keypair
//!  12..44   ephemeral         initiator's ephemeral X25519 public key
//!  44..92   static            initiator's static public key, sealed (32 + 16 tag)
//!  92..116  timestamp         u64 nanoseconds since the Unix epoch, sealed (8 + 16 tag)
//! 116..132  mac1              keyed BLAKE3 of bytes 0..4 and 8..116, key from responder's static
//! ```
//!
//! Response, 80 bytes:
//!
//! ```text
//!   0..8    route header (type 2)
//!   8..12   sender index      responder's key id for the new keypair
//!  12..16   receiver index    the initiator's sender index being answered
//!  16..48   ephemeral         responder's ephemeral X25519 public key
//!  48..64   empty             an empty plaintext, sealed (16 tag)
//!  64..80   mac1              keyed BLAKE3 of bytes 0..4 and 8..64, key from initiator's static
//! ```

use super::{Error, PacketType, ROUTE_HEADER_LEN, Result, RouteId, read_array, read_u32};

/// Length of a handshake initiation.
pub const HANDSHAKE_INIT_LEN: usize = 132;
/// Length of a handshake response.
pub const HANDSHAKE_RESPONSE_LEN: usize = 80;
/// Length of the mac1 field that ends both handshake messages.
pub const MAC_LEN: usize = 16;

mod init {
    use core::ops::Range;
    pub(super) const SENDER: Range<usize> = 8..12;
    pub(super) const EPHEMERAL: Range<usize> = 12..44;
    pub(super) const STATIC: Range<usize> = 44..92;
    pub(super) const TIMESTAMP: Range<usize> = 92..116;
    pub(super) const MAC1: Range<usize> = 116..132;
}

mod response {
    use core::ops::Range;
    pub(super) const SENDER: Range<usize> = 8..12;
    pub(super) const RECEIVER: Range<usize> = 12..16;
    pub(super) const EPHEMERAL: Range<usize> = 16..48;
    pub(super) const EMPTY: Range<usize> = 48..64;
    pub(super) const MAC1: Range<usize> = 64..80;
}

/// Check the route header, the type and the exact length.
fn check(bytes: &[u8], ty: PacketType, len: usize) -> Result<()> {
    let header = super::RouteHeader::new_checked(bytes)?;
    if header.packet_type() != ty || bytes.len() != len {
        return Err(Error);
    }
    Ok(())
}

/// The bytes a handshake's mac1 covers: 0..4 and 8..end-16 (not the rewritable route id).
pub(crate) fn mac_input(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes.len().saturating_sub(MAC_LEN);
    (
        bytes.get(..4).unwrap_or_default(),
        bytes.get(ROUTE_HEADER_LEN..end).unwrap_or_default(),
    )
}

/// A view of a handshake initiation.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInitPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeInitPacket<T> {
    /// Validate untrusted bytes: header, type 1 and exactly 132 bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        check(
            buffer.as_ref(),
            PacketType::HandshakeInit,
            HANDSHAKE_INIT_LEN,
        )?;
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A handshake initiation, parsed. The sealed fields stay sealed: opening them is the
/// handshake's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInitRepr {
    /// Route id at the receiving hop.
    pub route_id: RouteId,
    /// The initiator's key id for the keypair this handshake creates.
    pub sender_index: u32,
    /// The initiator's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// The initiator's static public key, sealed.
    pub sealed_static: [u8; 48],
    /// The initiator's timestamp, sealed.
    pub sealed_timestamp: [u8; 24],
    /// The MAC over the message, keyed by the responder's static public key.
    pub mac1: [u8; MAC_LEN],
}

impl HandshakeInitRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &HandshakeInitPacket<T>) -> Self {
        let b = packet.buffer.as_ref();
        Self {
            route_id: super::RouteHeader { buffer: b }.route_id(),
            sender_index: read_u32(b, init::SENDER),
            ephemeral: read_array(b, init::EPHEMERAL),
            sealed_static: read_array(b, init::STATIC),
            sealed_timestamp: read_array(b, init::TIMESTAMP),
            mac1: read_array(b, init::MAC1),
        }
    }

    /// Write the packet into `buffer[..132]`; an error if the buffer is shorter.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        let b: &mut [u8; HANDSHAKE_INIT_LEN] = buffer.first_chunk_mut().ok_or(Error)?;
        super::emit_route_header(b, PacketType::HandshakeInit, self.route_id);
        super::write_u32(b.as_mut_slice(), init::SENDER, self.sender_index);
        b[init::EPHEMERAL].copy_from_slice(&self.ephemeral);
        b[init::STATIC].copy_from_slice(&self.sealed_static);
        b[init::TIMESTAMP].copy_from_slice(&self.sealed_timestamp);
        b[init::MAC1].copy_from_slice(&self.mac1);
        Ok(())
    }
}

/// A view of a handshake response.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeResponsePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeResponsePacket<T> {
    /// Validate untrusted bytes: header, type 2 and exactly 80 bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        check(
            buffer.as_ref(),
            PacketType::HandshakeResponse,
            HANDSHAKE_RESPONSE_LEN,
        )?;
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A handshake response, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponseRepr {
    /// Route id at the receiving hop.
    pub route_id: RouteId,
    /// The responder's key id for the new keypair.
    pub sender_index: u32,
    /// The initiator's sender index this answers.
    pub receiver_index: u32,
    /// The responder's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// An empty plaintext, sealed: proves the responder derived the same keys.
    pub sealed_empty: [u8; 16],
    /// The MAC over the message, keyed by the initiator's static public key.
    pub mac1: [u8; MAC_LEN],
}

impl HandshakeResponseRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &HandshakeResponsePacket<T>) -> Self {
        let b = packet.buffer.as_ref();
        Self {
            route_id: super::RouteHeader { buffer: b }.route_id(),
            sender_index: read_u32(b, response::SENDER),
            receiver_index: read_u32(b, response::RECEIVER),
            ephemeral: read_array(b, response::EPHEMERAL),
            sealed_empty: read_array(b, response::EMPTY),
            mac1: read_array(b, response::MAC1),
        }
    }

    /// Write the packet into `buffer[..80]`; an error if the buffer is shorter.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        let b: &mut [u8; HANDSHAKE_RESPONSE_LEN] = buffer.first_chunk_mut().ok_or(Error)?;
        super::emit_route_header(b, PacketType::HandshakeResponse, self.route_id);
        super::write_u32(b.as_mut_slice(), response::SENDER, self.sender_index);
        super::write_u32(b.as_mut_slice(), response::RECEIVER, self.receiver_index);
        b[response::EPHEMERAL].copy_from_slice(&self.ephemeral);
        b[response::EMPTY].copy_from_slice(&self.sealed_empty);
        b[response::MAC1].copy_from_slice(&self.mac1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_init() -> HandshakeInitRepr {
        HandshakeInitRepr {
            route_id: RouteId::new(0x0a0b_0c0d).unwrap(),
            sender_index: 0x0102_0304,
            ephemeral: [0x11; 32],
            sealed_static: [0x22; 48],
            sealed_timestamp: [0x33; 24],
            mac1: [0x44; 16],
        }
    }

    #[test]
    fn init_vector() {
        let mut buf = [0u8; HANDSHAKE_INIT_LEN];
        sample_init().emit(&mut buf).unwrap();
        assert_eq!(buf[..12], [1, 1, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4]);
        assert!(buf[12..44].iter().all(|&b| b == 0x11));
        assert!(buf[44..92].iter().all(|&b| b == 0x22));
        assert!(buf[92..116].iter().all(|&b| b == 0x33));
        assert!(buf[116..].iter().all(|&b| b == 0x44));
        let packet = HandshakeInitPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(HandshakeInitRepr::parse(&packet), sample_init());
        let (a, b) = mac_input(&buf);
        assert_eq!(a, &buf[..4]);
        assert_eq!(b, &buf[8..116]);
    }

    #[test]
    fn response_vector() {
        let repr = HandshakeResponseRepr {
            route_id: RouteId::new(9).unwrap(),
            sender_index: 5,
            receiver_index: 6,
            ephemeral: [7; 32],
            sealed_empty: [8; 16],
            mac1: [9; 16],
        };
        let mut buf = [0u8; HANDSHAKE_RESPONSE_LEN];
        repr.emit(&mut buf).unwrap();
        assert_eq!(buf[..16], [1, 2, 0, 0, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 6]);
        let packet = HandshakeResponsePacket::new_checked(&buf[..]).unwrap();
        assert_eq!(HandshakeResponseRepr::parse(&packet), repr);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let mut buf = [0u8; HANDSHAKE_INIT_LEN + 1];
        sample_init().emit(&mut buf).unwrap();
        for len in 0..buf.len() {
            if len != HANDSHAKE_INIT_LEN {
                assert!(
                    HandshakeInitPacket::new_checked(&buf[..len]).is_err(),
                    "{len}"
                );
            }
            assert!(
                HandshakeResponsePacket::new_checked(&buf[..len]).is_err(),
                "{len}"
            );
        }
    }
}
