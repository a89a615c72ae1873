//! ChaCha20-Poly1305 (RFC 8439) via `ring`, sealed and opened in place.
//!
//! The 96-bit nonce is four zero bytes followed by the 64-bit counter in little-endian, as
//! in WireGuard. A key is used with each counter at most once; [`super::cipher`] enforces
//! that for transport keys, and handshake keys are used once with counter 0.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::wire::TAG_LEN;

/// Authentication failed: wrong key, forged or corrupted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

/// A ChaCha20-Poly1305 key.
pub struct AeadKey {
    key: LessSafeKey,
}

impl core::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

/// The nonce for `counter`.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

impl AeadKey {
    /// A key from 32 bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        // ring only refuses keys of the wrong length, and this one is 32 bytes by type.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypt `in_out` in place and return the tag.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        // ring fails only for inputs beyond ChaCha20's 256 GiB limit per nonce.
        #[allow(clippy::expect_used)]
        let tag: Tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out)
            .expect("input under 256 GiB");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypt `in_out` (ciphertext followed by the tag) in place; on success the plaintext
    /// is `in_out[..len - 16]` and its length is returned. On failure the buffer's content
    /// is unspecified.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, OpenError> {
        self.key
            .open_in_place(nonce(counter), Aad::from(aad), in_out)
            .map(|plain| plain.len())
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8439 section 2.8.2. Its nonce is 07000000 4041424344454647: our layout puts the
    /// counter after four bytes, so this vector is checked directly through ring with the
    /// RFC's nonce, and our nonce layout separately below.
    #[test]
    fn rfc8439_aead_vector() {
        let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";
        let want_ct = hex(
            "d31a8d34648e60db7b86afbc53ef7ec2 a4aded51296e08fea9e2b5a736ee62d6
             3dbea45e8ca9671282fafb69da92728b 1a71de0a9e060b2905d6a5b67ecd3b36
             92ddbd7f2d778b8c9803aee328091b58 fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b 6116",
        );
        let want_tag = hex("1ae10b594f09e26a7e902ecbd0600691");
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap();
        let key = LessSafeKey::new(unbound);
        let nonce = Nonce::try_assume_unique_for_key(&hex("070000004041424344454647")).unwrap();
        let mut buf = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut buf)
            .unwrap();
        assert_eq!(buf, want_ct);
        assert_eq!(tag.as_ref(), &want_tag[..]);
    }

    /// Our nonce for counter `c` is four zero bytes followed by `c` in little-endian:
    /// compare with ring sealing under that nonce built by hand.
    #[test]
    fn nonce_layout() {
        let key_bytes = [0x42u8; 32];
        let ours = AeadKey::new(&key_bytes);
        let counter = 0x0807_0605_0403_0201u64;
        let mut a = *b"some plaintext";
        let tag_a = ours.seal_in_place(counter, b"aad", &mut a);

        let theirs = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key_bytes).unwrap());
        let nonce = Nonce::assume_unique_for_key([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut b = *b"some plaintext";
        let tag_b = theirs
            .seal_in_place_separate_tag(nonce, Aad::from(b"aad"), &mut b)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(tag_a, tag_b.as_ref());
    }

    #[test]
    fn open_detects_every_bit_flip() {
        let key = AeadKey::new(&[7; 32]);
        let mut buf = b"hello route".to_vec();
        let tag = key.seal_in_place(3, b"hdr", &mut buf);
        buf.extend_from_slice(&tag);
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(key.open_in_place(3, b"hdr", &mut bad), Err(OpenError));
        }
        assert_eq!(
            key.open_in_place(4, b"hdr", &mut buf.clone()),
            Err(OpenError)
        );
        assert_eq!(
            key.open_in_place(3, b"hdX", &mut buf.clone()),
            Err(OpenError)
        );
        let n = key.open_in_place(3, b"hdr", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello route");
    }
}
