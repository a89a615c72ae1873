//! Static identities: X25519 key pairs, their hex form, and the system random source.
//!
//! A node's identity is its X25519 public key, shown as 64 lowercase hex digits. The private
//! key is never formatted: its `Debug` is redacted and it has no `Display`.

use core::fmt;
use core::str::FromStr;
use zeroize::Zeroize;

use ring::rand::{SecureRandom, SystemRandom};

/// The operating system's random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RngError;

/// Fill `out` from the operating system's CSPRNG.
pub fn fill_random(out: &mut [u8]) -> Result<(), RngError> {
    SystemRandom::new().fill(out).map_err(|_| RngError)
}

/// A random u32 from the operating system's CSPRNG.
pub fn random_u32() -> Result<u32, RngError> {
    let mut b = [0u8; 4];
    fill_random(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// A key in hex could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The text is not exactly 64 characters long.
    #[error("a key is 64 hex digits, this has {0} characters")]
    Length(usize),
    /// The text contains a character that is not a hex digit.
    #[error("a key is 64 hex digits, this has a non-hex character")]
    NotHex,
}

/// An X25519 public key: a node's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A public key from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the key.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_dalek(self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Self)
    }
}

/// An X25519 private key. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct PrivateKey {
    secret: x25519_dalek::StaticSecret,
    public: PublicKey,
}

impl PrivateKey {
    /// A new random private key.
    pub fn generate() -> Result<Self, RngError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// A private key from its 32 bytes (clamped by X25519 when used).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// Parse a private key from 64 hex digits (surrounding whitespace allowed), as stored
    /// in a key file.
    pub fn from_hex(text: &str) -> Result<Self, KeyParseError> {
        let mut bytes = parse_hex32(text.trim())?;
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// The key as 64 lowercase hex digits and a newline: the content of a key file. This is
    /// the only way to get the secret out; use it to write key files and nothing else.
    pub fn to_key_file_text(&self) -> String {
        let mut out = String::with_capacity(65);
        for b in self.secret.as_bytes() {
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0xf));
        }
        out.push('\n');
        out
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// X25519 with `peer`. `None` if the result is all zeros (a low-order point), which the
    /// handshake refuses.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let shared = self.secret.diffie_hellman(&peer.to_dalek());
        shared.was_contributory().then(|| shared.to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(<redacted>, public {})", self.public)
    }
}

fn hex_digit(nibble: u8) -> char {
    let digits = b"0123456789abcdef";
    char::from(
        digits
            .get(usize::from(nibble & 0xf))
            .copied()
            .unwrap_or(b'0'),
    )
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex32(s: &str) -> Result<[u8; 32], KeyParseError> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return Err(KeyParseError::Length(s.len()));
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = nibble(pair.first().copied())?;
        let lo = nibble(pair.get(1).copied())?;
        *byte = hi << 4 | lo;
    }
    Ok(out)
}

fn nibble(c: Option<u8>) -> Result<u8, KeyParseError> {
    match c {
        Some(c @ b'0'..=b'9') => Ok(c - b'0'),
        Some(c @ b'a'..=b'f') => Ok(c - b'a' + 10),
        Some(c @ b'A'..=b'F') => Ok(c - b'A' + 10),
        _ => Err(KeyParseError::NotHex),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret.
    const ALICE_PRIVATE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    const BOB_PRIVATE: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    const BOB_PUBLIC: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    #[test]
    fn rfc7748_vectors() {
        let alice = PrivateKey::from_hex(ALICE_PRIVATE).unwrap();
        let bob = PrivateKey::from_hex(BOB_PRIVATE).unwrap();
        assert_eq!(alice.public_key().to_string(), ALICE_PUBLIC);
        assert_eq!(bob.public_key().to_string(), BOB_PUBLIC);
        let shared: PublicKey = SHARED.parse().unwrap();
        assert_eq!(
            alice.diffie_hellman(&bob.public_key()),
            Some(*shared.as_bytes())
        );
        assert_eq!(
            bob.diffie_hellman(&alice.public_key()),
            Some(*shared.as_bytes())
        );
    }

    #[test]
    fn low_order_point_is_refused() {
        let alice = PrivateKey::from_hex(ALICE_PRIVATE).unwrap();
        assert_eq!(alice.diffie_hellman(&PublicKey::from_bytes([0; 32])), None);
    }

    #[test]
    fn hex_roundtrip_and_errors() {
        let key = PrivateKey::generate().unwrap();
        let text = key.to_key_file_text();
        assert_eq!(text.len(), 65);
        let again = PrivateKey::from_hex(&text).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(PublicKey::from_str("abc"), Err(KeyParseError::Length(3)));
        assert_eq!(
            PublicKey::from_str(&"g".repeat(64)),
            Err(KeyParseError::NotHex)
        );
        let upper = ALICE_PUBLIC.to_uppercase().parse::<PublicKey>().unwrap();
        assert_eq!(upper.to_string(), ALICE_PUBLIC);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = PrivateKey::from_hex(ALICE_PRIVATE).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(ALICE_PRIVATE), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
