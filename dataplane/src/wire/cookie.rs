//! The handshake-flood extension: the cookie reply (type 10) and the `mac2` field an
//! initiation may carry after it (`docs/PROTOCOL.md` §5.10).
//!
//! Cookie reply, 84 bytes, responder to initiator along the route:
//!
//! ```text
//!   0..8    route header (type 10)
//!   8..12   receiver index    the sender index of the initiation it answers
//!  12..36   nonce             24 random bytes: the reply key derives from them
//!  36..84   cookie            the 32-byte cookie, sealed (32 + 16 tag), mac1 of the
//!                             initiation as associated data
//! ```
//!
//! Initiation with mac2, 148 bytes: the 132 bytes of an initiation ([`super::handshake`])
//! followed by `mac2` at 132..148, a keyed BLAKE3 of bytes 0..4 and 8..132 (mac1
//! included, the route id not) keyed by the cookie. An initiation without mac2 is the
//! plain 132-byte one, so a node that never sent a cookie reply never sees the longer
//! form. This module only names the byte ranges; the keys are [`crate::crypto::cookie`]'s.

use super::{
    Error, HANDSHAKE_INIT_LEN, MAC_LEN, PacketType, ROUTE_HEADER_LEN, Result, RouteId, TAG_LEN,
    read_array, read_u32,
};

/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 84;
/// Length of an initiation that carries mac2.
pub const HANDSHAKE_INIT_MAC2_LEN: usize = HANDSHAKE_INIT_LEN + MAC_LEN;
/// Length of a cookie (a BLAKE3 key).
pub const COOKIE_LEN: usize = 32;
/// Length of the random nonce of a cookie reply.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of the sealed cookie: the cookie and the AEAD tag.
pub const SEALED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;

mod field {
    use core::ops::Range;
    pub(super) const RECEIVER: Range<usize> = 8..12;
    pub(super) const NONCE: Range<usize> = 12..36;
    pub(super) const COOKIE: Range<usize> = 36..84;
    pub(super) const MAC1: Range<usize> = 116..132;
    pub(super) const MAC2: Range<usize> = 132..148;
}

/// A view of a cookie reply.
#[derive(Debug, Clone, Copy)]
pub struct CookieReplyPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CookieReplyPacket<T> {
    /// Validate untrusted bytes: route header, type 10 and exactly 84 bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let header = super::RouteHeader::new_checked(buffer.as_ref())?;
        if header.packet_type() != PacketType::CookieReply
            || buffer.as_ref().len() != COOKIE_REPLY_LEN
        {
            return Err(Error);
        }
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A cookie reply, parsed. The cookie stays sealed: opening it is the initiator's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReplyRepr {
    /// Route id at the receiving hop.
    pub route_id: RouteId,
    /// The sender index of the initiation this answers.
    pub receiver_index: u32,
    /// The random nonce the reply key derives from.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// The cookie, sealed.
    pub sealed_cookie: [u8; SEALED_COOKIE_LEN],
}

impl CookieReplyRepr {
    /// Parse a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &CookieReplyPacket<T>) -> Self {
        let b = packet.buffer.as_ref();
        Self {
            route_id: super::RouteHeader { buffer: b }.route_id(),
            receiver_index: read_u32(b, field::RECEIVER),
            nonce: read_array(b, field::NONCE),
            sealed_cookie: read_array(b, field::COOKIE),
        }
    }

    /// Write the packet into `buffer[..84]`; an error if the buffer is shorter.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<()> {
        let b: &mut [u8; COOKIE_REPLY_LEN] = buffer.first_chunk_mut().ok_or(Error)?;
        super::emit_route_header(b, PacketType::CookieReply, self.route_id);
        super::write_u32(b.as_mut_slice(), field::RECEIVER, self.receiver_index);
        b[field::NONCE].copy_from_slice(&self.nonce);
        b[field::COOKIE].copy_from_slice(&self.sealed_cookie);
        Ok(())
    }
}

/// An initiation of either length, as the flood check reads it before any other check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitParts<'a> {
    /// The 132 bytes of the handshake message (mac1 last).
    pub init: &'a [u8],
    /// Its mac1.
    pub mac1: [u8; MAC_LEN],
    /// Its mac2, if it is the 148-byte form.
    pub mac2: Option<[u8; MAC_LEN]>,
}

/// Split an initiation into its parts. `None` unless `bytes` is 132 or 148 bytes long (the
/// route header is the caller's to check; the handshake checks the rest).
pub fn split_init(bytes: &[u8]) -> Option<InitParts<'_>> {
    let mac2 = match bytes.len() {
        HANDSHAKE_INIT_LEN => None,
        HANDSHAKE_INIT_MAC2_LEN => Some(read_array(bytes, field::MAC2)),
        _ => return None,
    };
    let init = bytes.get(..HANDSHAKE_INIT_LEN)?;
    Some(InitParts {
        init,
        mac1: read_array(init, field::MAC1),
        mac2,
    })
}

/// The bytes mac2 covers in a 132-byte initiation: 0..4 and 8..132 (mac1 included, the
/// rewritable route id not).
pub(crate) fn mac2_input(init: &[u8]) -> (&[u8], &[u8]) {
    (
        init.get(..4).unwrap_or_default(),
        init.get(ROUTE_HEADER_LEN..HANDSHAKE_INIT_LEN)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CookieReplyRepr {
        CookieReplyRepr {
            route_id: RouteId::new(0x0a0b_0c0d).unwrap(),
            receiver_index: 0x0102_0304,
            nonce: [0x55; COOKIE_NONCE_LEN],
            sealed_cookie: [0x66; SEALED_COOKIE_LEN],
        }
    }

    #[test]
    fn reply_vector() {
        let mut buf = [0u8; COOKIE_REPLY_LEN];
        sample().emit(&mut buf).unwrap();
        assert_eq!(buf[..12], [1, 10, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4]);
        assert!(buf[12..36].iter().all(|&b| b == 0x55));
        assert!(buf[36..].iter().all(|&b| b == 0x66));
        let packet = CookieReplyPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(CookieReplyRepr::parse(&packet), sample());
        assert!(sample().emit(&mut buf[..COOKIE_REPLY_LEN - 1]).is_err());
    }

    #[test]
    fn reply_refuses_other_lengths_and_types() {
        let mut buf = [0u8; COOKIE_REPLY_LEN + 1];
        sample().emit(&mut buf).unwrap();
        for len in 0..buf.len() {
            let checked = CookieReplyPacket::new_checked(&buf[..len]);
            assert_eq!(checked.is_ok(), len == COOKIE_REPLY_LEN, "{len}");
        }
        buf[1] = 2;
        assert!(CookieReplyPacket::new_checked(&buf[..COOKIE_REPLY_LEN]).is_err());
    }

    #[test]
    fn split_init_reads_mac1_and_mac2() {
        let mut buf: Vec<u8> = (0..HANDSHAKE_INIT_MAC2_LEN as u8).collect();
        let parts = split_init(&buf).unwrap();
        assert_eq!(parts.init, &buf[..132]);
        assert_eq!(parts.mac1[..], buf[116..132]);
        assert_eq!(parts.mac2.unwrap()[..], buf[132..148]);
        let parts = split_init(&buf[..132]).unwrap();
        assert_eq!(parts.init.len(), 132);
        assert_eq!(parts.mac2, None);
        for len in [0, 8, 131, 133, 147] {
            assert!(split_init(&buf[..len]).is_none(), "{len}");
        }
        buf.push(0);
        assert!(split_init(&buf).is_none());
        let (a, b) = mac2_input(&buf[..132]);
        assert_eq!((a, b), (&buf[..4], &buf[8..132]));
    }
}
