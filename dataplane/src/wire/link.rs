//! Link probes: a round trip between two neighbouring nodes on the transport itself, to
//! measure a link (round-trip time and loss) before or while routes use it.
//!
//! ```text
//!  0       1       2       4               8                              16
//! +-------+-------+-------+---------------+-------------------------------+
//! |version| type  |  rsv  | route id = 0  |            nonce              |
//! +-------+-------+-------+---------------+-------------------------------+
//! ```
//!
//! Type 8 is a probe, type 9 its reply; both are exactly [`LINK_PROBE_LEN`] bytes, so a
//! reply is never larger than the probe that caused it (no amplification). The route id
//! field is zero: a probe belongs to no route and no hop forwards it. Nothing is
//! authenticated; the nonce only pairs a reply with its probe.

use super::{Error, PacketType, Result, VERSION, field, read_u64, write_u64};

/// Length of a link probe and of its reply.
pub const LINK_PROBE_LEN: usize = 16;

mod probe {
    use core::ops::Range;
    pub(super) const NONCE: Range<usize> = 8..16;
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
    /// Validate untrusted bytes: exactly 16 bytes, version 1, type 8 or 9, reserved bytes
    /// zero and route id zero.
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

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A link probe or reply, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProbeRepr {
    /// A reply (type 9) rather than a probe (type 8).
    pub reply: bool,
    /// Chosen by the prober, echoed by the reply.
    pub nonce: u64,
}

impl LinkProbeRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &LinkProbePacket<T>) -> Self {
        Self {
            reply: packet.is_reply(),
            nonce: packet.nonce(),
        }
    }

    /// Write the packet into `buffer[..16]`; an error if `buffer` is shorter.
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe with nonce 0x0102030405060708.
    const PROBE: [u8; 16] = [1, 8, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    #[test]
    fn parse_and_emit_vector() {
        let packet = LinkProbePacket::new_checked(&PROBE[..]).unwrap();
        let repr = LinkProbeRepr::parse(&packet);
        assert_eq!(
            repr,
            LinkProbeRepr {
                reply: false,
                nonce: 0x0102_0304_0506_0708
            }
        );
        let mut out = [0xaau8; 16];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, PROBE);
        LinkProbeRepr {
            reply: true,
            ..repr
        }
        .emit(&mut out)
        .unwrap();
        assert_eq!(out[1], 9);
        assert!(LinkProbePacket::new_checked(&out[..]).unwrap().is_reply());
        assert_eq!(repr.emit(&mut [0u8; 15]), Err(Error));
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
        assert!(LinkProbePacket::new_checked(&PROBE[..15]).is_err());
        let mut long = PROBE.to_vec();
        long.push(0);
        assert!(LinkProbePacket::new_checked(&long[..]).is_err());
        assert!(LinkProbePacket::new_checked(&[][..]).is_err());
        assert!(is_link_probe(&PROBE[..2]));
        assert!(!is_link_probe(&[1, 3]));
        assert!(!is_link_probe(&[1]));
    }
}
