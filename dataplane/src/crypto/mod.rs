//! Cryptography of a route: identities, key derivation, the transport cipher, the anti-replay
//! window and the route handshake (Noise's IK pattern with BLAKE3 `derive_key` as its KDF;
//! not a standard Noise suite).
//!
//! - [`keys`]: X25519 static identities ([`PrivateKey`], [`PublicKey`]) and randomness.
//! - [`kdf`]: every derived key comes from BLAKE3 `derive_key` with its own context string,
//!   all listed in that module.
//! - [`aead`]: ChaCha20-Poly1305 (via `ring`) sealed and opened in place in caller buffers.
//! - [`replay`]: the sliding anti-replay window (8128 packets).
//! - [`cipher`]: a direction of a route's keypair: counters never reused, hard limits, replay.
//! - [`noise`]: the handshake between the two ends of a route (the IK pattern with BLAKE3,
//!   bound to the route), with published test vectors.
//! - [`link`]: the key two neighbours tag their link probes with.
//! - [`cookie`]: the cookies and cookie replies that keep a handshake flood from costing a
//!   responder under load any Diffie-Hellman, with published test vectors.
//!
//! Key material is never printed: `Debug` of secret types is redacted, and secret bytes are
//! zeroed on drop where the underlying crates allow it.

pub mod aead;
pub mod cipher;
pub mod cookie;
pub mod kdf;
pub mod keys;
pub mod link;
pub mod noise;
pub mod replay;

pub use keys::{PrivateKey, PublicKey};
