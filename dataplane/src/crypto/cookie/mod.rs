//! Cookies against handshake floods (`docs/PROTOCOL.md` §5.10), after WireGuard's cookie
//! MACs: pure functions, no state, no clock.
//!
//! A responder under load does not read an initiation that lacks a valid `mac2`; it answers
//! with a **cookie**, a MAC of where the initiation came from under a secret only the
//! responder knows (and replaces every two minutes):
//!
//! ```text
//! cookie      = BLAKE3-keyed(secret, source IPv6 (IPv4 mapped) ‖ BE16(port) ‖ BE32(in_id))
//! reply key   = derive_key(CTX_COOKIE_REPLY, S_r ‖ nonce)          nonce: 24 random bytes
//! sealed      = ChaCha20-Poly1305(reply key, counter 0, cookie, ad = mac1 of the initiation)
//! mac2        = first 16 bytes of BLAKE3-keyed(cookie, init[0..4] ‖ init[8..132])
//! ```
//!
//! The reply travels back along the route, so only the route's real initiator sees it: an
//! off-path sender that spoofs the previous hop's address never learns the cookie for that
//! address and route. The reply key needs the responder's public key (which the initiator
//! knows) and the associated data is the mac1 of the initiation answered, so an initiator
//! accepts a reply only for an initiation it sent. A fresh random nonce per reply makes
//! every reply key single-use, so `ring`'s 96-bit-nonce AEAD runs with counter 0, as the
//! handshake's keys do (XChaCha20's role in WireGuard, with BLAKE3 in place of HChaCha20).
//!
//! What the responder keeps (the secret, its age, whether it is under load, the rate of
//! each source) is the engine's: `engine::core::cookie`.

use std::net::SocketAddr;

use super::aead::AeadKey;
use super::kdf::{self, derive};
use super::keys::PublicKey;
use super::noise::constant_time_eq;
use crate::wire::{
    COOKIE_LEN, COOKIE_NONCE_LEN, COOKIE_REPLY_LEN, CookieReplyPacket, CookieReplyRepr, MAC_LEN,
    RouteId, SEALED_COOKIE_LEN, mac2_input,
};

/// A cookie reply could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not a cookie reply of the right type and length, or a buffer too short to write one.
    #[error("malformed cookie reply")]
    Malformed,
    /// The reply answers another initiation than the pending one (its receiver index).
    #[error("cookie reply for another initiation")]
    WrongIndex,
    /// The sealed cookie did not open: forged, corrupted, or for another initiation.
    #[error("cookie reply authentication failed")]
    Decrypt,
}

/// The responder's secret cookies are made under.
pub type CookieSecret = [u8; 32];

/// The cookie for initiations that arrive from `source` on the route the responder
/// receives as `in_id`.
pub fn cookie(secret: &CookieSecret, source: SocketAddr, in_id: RouteId) -> [u8; COOKIE_LEN] {
    let ip = match source {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
        SocketAddr::V6(a) => *a.ip(),
    };
    let mut hasher = blake3::Hasher::new_keyed(secret);
    hasher.update(&ip.octets());
    hasher.update(&source.port().to_be_bytes());
    hasher.update(&in_id.get().to_be_bytes());
    *hasher.finalize().as_bytes()
}

/// The mac2 of the 132-byte initiation `init` under `cookie`.
pub fn mac2(cookie: &[u8; COOKIE_LEN], init: &[u8]) -> [u8; MAC_LEN] {
    let (head, rest) = mac2_input(init);
    let mut hasher = blake3::Hasher::new_keyed(cookie);
    hasher.update(head);
    hasher.update(rest);
    let mut out = [0u8; MAC_LEN];
    hasher.finalize_xof().fill(&mut out);
    out
}

/// Is `mac` the mac2 of `init` under `cookie`? Compared in constant time.
pub fn mac2_is_valid(cookie: &[u8; COOKIE_LEN], init: &[u8], mac: &[u8; MAC_LEN]) -> bool {
    constant_time_eq(&mac2(cookie, init), mac)
}

fn reply_key(responder: &PublicKey, nonce: &[u8; COOKIE_NONCE_LEN]) -> AeadKey {
    AeadKey::new(&zeroize::Zeroizing::new(derive(
        kdf::CTX_COOKIE_REPLY,
        &[responder.as_bytes(), nonce],
    )))
}

/// Write a cookie reply into `out[..84]`: `cookie` for the initiation whose sender index
/// and mac1 are given, sealed under the key from `responder` (our own public key) and
/// `nonce` (fresh random bytes for every reply), with `route_id` in its header. Returns
/// its length.
pub fn write_reply(
    responder: &PublicKey,
    nonce: [u8; COOKIE_NONCE_LEN],
    route_id: RouteId,
    receiver_index: u32,
    init_mac1: &[u8; MAC_LEN],
    cookie: &[u8; COOKIE_LEN],
    out: &mut [u8],
) -> Result<usize, CookieError> {
    let mut sealed_cookie = [0u8; SEALED_COOKIE_LEN];
    let (body, tag) = sealed_cookie.split_at_mut(COOKIE_LEN);
    body.copy_from_slice(cookie);
    tag.copy_from_slice(&reply_key(responder, &nonce).seal_in_place(0, init_mac1, body));
    CookieReplyRepr {
        route_id,
        receiver_index,
        nonce,
        sealed_cookie,
    }
    .emit(out)
    .map_err(|_| CookieError::Malformed)?;
    Ok(COOKIE_REPLY_LEN)
}

/// Read a cookie reply from `responder` (the peer's public key) that must answer the
/// pending initiation with sender index `index` and mac1 `init_mac1`; the cookie it
/// carries.
pub fn read_reply(
    responder: &PublicKey,
    index: u32,
    init_mac1: &[u8; MAC_LEN],
    packet: &[u8],
) -> Result<[u8; COOKIE_LEN], CookieError> {
    let view = CookieReplyPacket::new_checked(packet).map_err(|_| CookieError::Malformed)?;
    let repr = CookieReplyRepr::parse(&view);
    if repr.receiver_index != index {
        return Err(CookieError::WrongIndex);
    }
    let mut buf = zeroize::Zeroizing::new(repr.sealed_cookie);
    reply_key(responder, &repr.nonce)
        .open_in_place(0, init_mac1, &mut buf[..])
        .map_err(|_| CookieError::Decrypt)?;
    let mut out = [0u8; COOKIE_LEN];
    out.copy_from_slice(buf.get(..COOKIE_LEN).ok_or(CookieError::Decrypt)?);
    Ok(out)
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::crypto::PrivateKey;

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap()
    }

    #[test]
    fn a_cookie_names_address_port_and_route() {
        let secret = [7; 32];
        let a: SocketAddr = "198.18.0.2:6000".parse().unwrap();
        let base = cookie(&secret, a, id(101));
        assert_eq!(base, cookie(&secret, a, id(101)));
        let mapped: SocketAddr = "[::ffff:198.18.0.2]:6000".parse().unwrap();
        assert_eq!(
            base,
            cookie(&secret, mapped, id(101)),
            "one address, two spellings"
        );
        for (source, route) in [
            ("198.18.0.3:6000", 101),
            ("198.18.0.2:6001", 101),
            ("198.18.0.2:6000", 102),
        ] {
            assert_ne!(base, cookie(&secret, source.parse().unwrap(), id(route)));
        }
        assert_ne!(base, cookie(&[8; 32], a, id(101)), "another secret");
    }

    #[test]
    fn a_reply_opens_only_for_its_initiation() {
        let responder = PrivateKey::generate().unwrap().public_key();
        let other = PrivateKey::generate().unwrap().public_key();
        let (mac1, cookie) = ([3; MAC_LEN], [4; COOKIE_LEN]);
        let mut buf = [0u8; 132];
        let n = write_reply(&responder, [5; 24], id(9), 77, &mac1, &cookie, &mut buf).unwrap();
        assert_eq!(n, COOKIE_REPLY_LEN);
        let reply = &buf[..n];
        assert_eq!(read_reply(&responder, 77, &mac1, reply), Ok(cookie));
        assert_eq!(
            read_reply(&responder, 78, &mac1, reply),
            Err(CookieError::WrongIndex)
        );
        assert_eq!(
            read_reply(&responder, 77, &[9; MAC_LEN], reply),
            Err(CookieError::Decrypt)
        );
        assert_eq!(
            read_reply(&other, 77, &mac1, reply),
            Err(CookieError::Decrypt)
        );
        // Everything but the route id (bytes 4..8, which relays rewrite) is checked.
        for i in (0..4).chain(8..n) {
            let mut bad = reply.to_vec();
            bad[i] ^= 1;
            assert!(
                read_reply(&responder, 77, &mac1, &bad).is_err(),
                "bit at {i}"
            );
        }
        assert_eq!(
            read_reply(&responder, 77, &mac1, &buf[..n + 1]),
            Err(CookieError::Malformed)
        );
        assert_eq!(
            write_reply(
                &responder,
                [5; 24],
                id(9),
                77,
                &mac1,
                &cookie,
                &mut buf[..83]
            ),
            Err(CookieError::Malformed)
        );
    }

    #[test]
    fn mac2_covers_everything_but_the_route_id() {
        let cookie = [1; COOKIE_LEN];
        let init: Vec<u8> = (0..132u8).collect();
        let mac = mac2(&cookie, &init);
        assert!(mac2_is_valid(&cookie, &init, &mac));
        assert!(!mac2_is_valid(&[2; COOKIE_LEN], &init, &mac));
        for i in 0..init.len() {
            let mut changed = init.clone();
            changed[i] ^= 0x80;
            assert_eq!(
                mac2_is_valid(&cookie, &changed, &mac),
                (4..8).contains(&i),
                "{i}"
            );
        }
    }
}
