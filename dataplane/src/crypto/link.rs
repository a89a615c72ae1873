//! The key two neighbouring nodes authenticate their link probes with.
//!
//! Both ends derive it alone from their static keys:
//! `derive(CTX_LINK_PROBE, [X25519(own private, peer public), lower public key, higher
//! public key])`, the keys ordered bytewise so both ends feed the same bytes. A probe's
//! tag is the first [`LINK_TAG_LEN`] bytes of BLAKE3 keyed with it over the probe's header
//! (`wire::link`): an answer with a good tag can only come from the holder of the
//! neighbour's private key, so a node whose registered endpoint answers with it has shown
//! that the endpoint is its own.

use super::kdf;
use super::keys::{PrivateKey, PublicKey};

/// Bytes of a link probe's tag.
pub const LINK_TAG_LEN: usize = 16;

/// The key of one link, shared by its two nodes. Never printed.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl core::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

impl Drop for LinkKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl LinkKey {
    /// The key of the link between `local` and `peer`; `None` for a peer key whose X25519
    /// result is all zeros (a low-order point).
    pub fn new(local: &PrivateKey, peer: &PublicKey) -> Option<Self> {
        let dh = local.diffie_hellman(peer)?;
        let own = local.public_key();
        let (low, high) = if own.as_bytes() <= peer.as_bytes() {
            (own, *peer)
        } else {
            (*peer, own)
        };
        Some(Self(kdf::derive(
            kdf::CTX_LINK_PROBE,
            &[&dh, low.as_bytes(), high.as_bytes()],
        )))
    }

    /// The tag of `bytes` (a probe's header).
    pub fn tag(&self, bytes: &[u8]) -> [u8; LINK_TAG_LEN] {
        let mut tag = [0u8; LINK_TAG_LEN];
        tag.copy_from_slice(
            blake3::keyed_hash(&self.0, bytes)
                .as_bytes()
                .get(..LINK_TAG_LEN)
                .unwrap_or(&[0u8; LINK_TAG_LEN]),
        );
        tag
    }

    /// Whether `tag` is the tag of `bytes`, compared in constant time.
    pub fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let expected = self.tag(bytes);
        tag.len() == LINK_TAG_LEN
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_derive_the_same_key_and_nobody_else_does() {
        let (a, b, c) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
            PrivateKey::from_bytes([3; 32]),
        );
        let at_a = LinkKey::new(&a, &b.public_key()).unwrap();
        let at_b = LinkKey::new(&b, &a.public_key()).unwrap();
        let header = b"probe header bytes";
        let tag = at_a.tag(header);
        assert!(at_b.verify(header, &tag));
        assert!(!at_b.verify(b"another header....", &tag));
        assert!(!at_b.verify(header, &tag[..15]));
        // A third node that knows both public keys cannot make the tag.
        let at_c = LinkKey::new(&c, &b.public_key()).unwrap();
        assert!(!at_b.verify(header, &at_c.tag(header)));
        assert_eq!(format!("{at_a:?}"), "LinkKey(<redacted>)");
    }
}
