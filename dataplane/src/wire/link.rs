//! Link probes: a round trip between two neighbouring nodes on the transport itself, to
//! measure a link (round-trip time and loss) before or while routes use it, and to prove
//! that the neighbour at that address holds its key.
//!
//! ```text
//!  0       1       2       4               8               16              24         40
//! +-------+-------+-------+---------------+---------------+---------------+----------+
//! |version| type  |  rsv  | route id = 0  |     nonce     |    sender     |   tag    |
//! +-------+-------+-------+---------------+---------------+---------------+----------+
//! ```
//!
//! Type 8 is a probe, type 9 its reply; both are exactly [`LINK_PROBE_LEN`] bytes, so a
//! reply is never larger than the probe that caused it (no amplification). The route id
//! field is zero: a probe belongs to no route and no hop forwards it. `sender` is the first
//! 8 bytes of the sender's public key, so the receiver can find which neighbour's link key
//! to check; `tag` is that key's keyed BLAKE3 over bytes 0..24
//! ([`crate::crypto::link::LinkKey`]), which only the two ends of the link can make.

use super::{Error, PacketType, Result, VERSION, field, read_u64, write_u64};

/// Length of a link probe and of its reply.
pub const LINK_PROBE_LEN: usize = 40;

/// The bytes a link probe's tag covers: everything before the tag.
pub const LINK_PROBE_AUTHENTICATED: usize = 24;

/// Bytes of the sender's key a probe carries.
pub const LINK_SENDER_LEN: usize = 8;

mod probe {
    use core::ops::Range;
    pub(super) const NONCE: Range<usize> = 8..16;
    pub(super) const SENDER: Range<usize> = 16..24;
    pub(super) const TAG: Range<usize> = 24..40;
}

/// Does `bytes` claim to be a link probe or reply (type byte 8 or 9)? Such a datagram is
/// handled as a probe, well-formed or not, and never reaches the route table.
pub fn is_link_probe(bytes: &[u8]) -> bool {
    matches!(
        bytes
            .get(field::TYPE)
            .copied()
            .and_then(PacketType::from_u8),
        Some(PacketType::LinkProbe | PacketType::LinkProbeReply)
    )
}

/// A view of a link probe or reply.
#[derive(Debug, Clone, Copy)]
pub struct LinkProbePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> LinkProbePacket<T> {
    /// Validate untrusted bytes: exactly [`LINK_PROBE_LEN`] bytes, version 1, type 8 or 9,
    /// reserved bytes zero and route id zero. (The tag is checked by whoever holds the
    /// link's key.)
    pub fn new_checked(buffer: T) -> Result<Self> {
        let bytes = buffer.as_ref();
        if bytes.len() != LINK_PROBE_LEN
            || bytes.get(field::VERSION) != Some(&VERSION)
            || !is_link_probe(bytes)
            || bytes.get(field::RESERVED) != Some(&[0, 0][..])
            || bytes.get(field::ROUTE_ID) != Some(&[0, 0, 0, 0][..])
        {
            return Err(Error);
        }
        Ok(Self { buffer })
    }

    /// True for a reply (type 9), false for a probe (type 8).
    pub fn is_reply(&self) -> bool {
        self.buffer.as_ref().get(field::TYPE) == Some(&(PacketType::LinkProbeReply as u8))
    }

    /// The nonce that pairs a reply with its probe.
    pub fn nonce(&self) -> u64 {
        read_u64(self.buffer.as_ref(), probe::NONCE)
    }

    /// The first bytes of the sender's public key.
    pub fn sender(&self) -> [u8; LINK_SENDER_LEN] {
        let mut sender = [0u8; LINK_SENDER_LEN];
        if let Some(bytes) = self.buffer.as_ref().get(probe::SENDER) {
            sender.copy_from_slice(bytes);
        }
        sender
    }

    /// The bytes the tag covers.
    pub fn authenticated(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(..LINK_PROBE_AUTHENTICATED)
            .unwrap_or_default()
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        self.buffer.as_ref().get(probe::TAG).unwrap_or_default()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A link probe or reply, parsed (its tag is not part of it: see [`LinkProbeRepr::emit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProbeRepr {
    /// A reply (type 9) rather than a probe (type 8).
    pub reply: bool,
    /// Chosen by the prober, echoed by the reply.
    pub nonce: u64,
    /// The first bytes of the sender's public key.
    pub sender: [u8; LINK_SENDER_LEN],
}

impl LinkProbeRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &LinkProbePacket<T>) -> Self {
        Self {
            reply: packet.is_reply(),
            nonce: packet.nonce(),
            sender: packet.sender(),
        }
    }

    /// Write the packet into `buffer[..LINK_PROBE_LEN]`, its tag zero (the caller writes
    /// the tag over `buffer[..LINK_PROBE_AUTHENTICATED]` into
    /// `buffer[LINK_PROBE_AUTHENTICATED..LINK_PROBE_LEN]`); an error if `buffer` is
    /// shorter.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        let packet = buffer.get_mut(..LINK_PROBE_LEN).ok_or(Error)?;
        let ty = if self.reply {
            PacketType::LinkProbeReply
        } else {
            PacketType::LinkProbe
        };
        packet.fill(0);
        if let Some(b) = packet.get_mut(field::VERSION) {
            *b = VERSION;
        }
        if let Some(b) = packet.get_mut(field::TYPE) {
            *b = ty as u8;
        }
        write_u64(packet, probe::NONCE, self.nonce);
        if let Some(sender) = packet.get_mut(probe::SENDER) {
            sender.copy_from_slice(&self.sender);
        }
        Ok(())
    }
}

/// Write `tag` into the tag field of the probe in `buffer`; an error if `buffer` is
/// shorter than [`LINK_PROBE_LEN`] or `tag` is not the tag's length.
pub fn write_link_tag(buffer: &mut [u8], tag: &[u8]) -> Result<()> {
    let field = buffer.get_mut(probe::TAG).ok_or(Error)?;
    if field.len() != tag.len() {
        return Err(Error);
    }
    field.copy_from_slice(tag);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe with nonce 0x0102030405060708 from a key starting a1 a2 .. a8, tag 0x77s.
    const PROBE: [u8; 40] = [
        1, 8, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        0xa8, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77,
        0x77, 0x77,
    ];

    #[test]
    fn parse_and_emit_vector() {
        let packet = LinkProbePacket::new_checked(&PROBE[..]).unwrap();
        let repr = LinkProbeRepr::parse(&packet);
        assert_eq!(
            repr,
            LinkProbeRepr {
                reply: false,
                nonce: 0x0102_0304_0506_0708,
                sender: [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8],
            }
        );
        assert_eq!(packet.authenticated(), &PROBE[..24]);
        assert_eq!(packet.tag(), &[0x77; 16]);
        let mut out = [0xaau8; 40];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[..24], PROBE[..24]);
        assert_eq!(out[24..], [0; 16]);
        write_link_tag(&mut out, &[0x77; 16]).unwrap();
        assert_eq!(out, PROBE);
        assert_eq!(write_link_tag(&mut out, &[0x77; 15]), Err(Error));
        LinkProbeRepr {
            reply: true,
            ..repr
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out[1], 9);
        assert!(LinkProbePacket::new_checked(&out[..]).unwrap().is_reply());
        assert_eq!(repr.emit(&mut [0u8; 39]), Err(Error));
    }

    #[test]
    fn refuses_bad_input() {
        let with = |at: usize, value: u8| {
            let mut p = PROBE;
            p[at] = value;
            p
        };
        for bad in [
            with(0, 2),  // version
            with(1, 3),  // not a probe type
            with(2, 1),  // reserved
            with(3, 1),  // reserved
            with(7, 1),  // route id not zero
            with(4, 1),  // route id not zero
            with(1, 10), // unknown type
        ] {
            assert_eq!(LinkProbePacket::new_checked(&bad[..]).err(), Some(Error));
        }
        assert!(LinkProbePacket::new_checked(&PROBE[..39]).is_err());
        assert!(LinkProbePacket::new_checked(&PROBE[..16]).is_err());
        let mut long = PROBE.to_vec();
        long.push(0);
        assert!(LinkProbePacket::new_checked(&long[..]).is_err());
        assert!(LinkProbePacket::new_checked(&[][..]).is_err());
        assert!(is_link_probe(&PROBE[..2]));
        assert!(!is_link_probe(&[1, 3]));
        assert!(!is_link_probe(&[1]));
    }
}
