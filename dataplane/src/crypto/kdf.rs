//! Key derivation: BLAKE3 `derive_key`, one context string per derived key.
//!
//! Every context string is a constant here, so the list of what is derived from what is in
//! one place. A context names the protocol, its version and the purpose, as BLAKE3 asks
//! ("hardcoded, globally unique, application-specific"). Changing any of them is a protocol
//! version change. The `v1` in the contexts is the route protocol's version (the header's
//! byte 0); the handshake's own version is in [`PROTOCOL_NAME`], which every handshake key
//! derives from, so a new handshake version needs no new contexts.

/// Name of the handshake, hashed into the initial chaining key and transcript hash. It
/// names what the handshake is, so that it cannot be taken for a standard Noise suite: the
/// IK message pattern of Noise, with BLAKE3 as the hash and BLAKE3 `derive_key` instead of
/// Noise's HKDF (section 5 of `docs/PROTOCOL.md`). Version 2 binds the handshake to its
/// route; version 1 was named `Noise_IK_25519_ChaChaPoly_BLAKE3` and did not.
pub const PROTOCOL_NAME: &[u8] =
    b"skywire handshake v2: Noise IK pattern, X25519, ChaChaPoly, BLAKE3, derive_key KDF";
/// Prologue mixed into the transcript: both ends must agree on it.
pub const PROLOGUE: &[u8] = b"skywire route v1";

/// Initial chaining key, from [`PROTOCOL_NAME`].
pub const CTX_CK_INIT: &str = "skywire v1 2026-11-21 handshake initial chaining key";
/// Initial transcript hash, from [`PROTOCOL_NAME`].
pub const CTX_HASH_INIT: &str = "skywire v1 2026-11-21 handshake initial hash";
/// Chaining key after mixing DH(e_i, S_r).
pub const CTX_CK_ES: &str = "skywire v1 2026-11-21 handshake chaining key es";
/// Key that seals the initiator's static key.
pub const CTX_KEY_ES: &str = "skywire v1 2026-11-21 handshake key es";
/// Chaining key after mixing DH(s_i, S_r).
pub const CTX_CK_SS: &str = "skywire v1 2026-11-21 handshake chaining key ss";
/// Key that seals the initiator's timestamp.
pub const CTX_KEY_SS: &str = "skywire v1 2026-11-21 handshake key ss";
/// Chaining key after mixing DH(e_r, E_i).
pub const CTX_CK_EE: &str = "skywire v1 2026-11-21 handshake chaining key ee";
/// Chaining key after mixing DH(e_r, S_i).
pub const CTX_CK_SE: &str = "skywire v1 2026-11-21 handshake chaining key se";
/// Key that seals the responder's empty payload.
pub const CTX_KEY_SE: &str = "skywire v1 2026-11-21 handshake key se";
/// Transport key for packets from initiator to responder.
pub const CTX_TRANSPORT_I2R: &str = "skywire v1 2026-11-21 transport initiator to responder";
/// Transport key for packets from responder to initiator.
pub const CTX_TRANSPORT_R2I: &str = "skywire v1 2026-11-21 transport responder to initiator";
/// Key of the mac1 field of handshake messages, from the receiver's static public key.
pub const CTX_MAC1: &str = "skywire v1 2026-11-21 handshake mac1";
/// Key of a link between two neighbours, which tags their link probes
/// ([`super::link::LinkKey`]).
pub const CTX_LINK_PROBE: &str = "skywire v1 2026-12-06 link probe key";
/// Key that seals a cookie in a cookie reply, from the responder's static public key and
/// the reply's random nonce ([`super::cookie`]).
pub const CTX_COOKIE_REPLY: &str = "skywire v1 2026-12-06 cookie reply key";

/// Every context, for the test that they are distinct.
pub const ALL_CONTEXTS: [&str; 14] = [
    CTX_CK_INIT,
    CTX_HASH_INIT,
    CTX_CK_ES,
    CTX_KEY_ES,
    CTX_CK_SS,
    CTX_KEY_SS,
    CTX_CK_EE,
    CTX_CK_SE,
    CTX_KEY_SE,
    CTX_TRANSPORT_I2R,
    CTX_TRANSPORT_R2I,
    CTX_MAC1,
    CTX_LINK_PROBE,
    CTX_COOKIE_REPLY,
];

/// `derive_key(context, parts[0] || parts[1] || ...)`.
pub fn derive(context: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// The transcript hash step: `BLAKE3(h || data)`.
pub fn mix_hash(h: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(h);
    hasher.update(data);
    *hasher.finalize().as_bytes()
}

/// The mac1 of a handshake message: the first 16 bytes of keyed BLAKE3 over `parts`, keyed
/// by `derive_key(CTX_MAC1, receiver's static public key)`.
pub fn mac1(mac_key: &[u8; 32], parts: (&[u8], &[u8])) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new_keyed(mac_key);
    hasher.update(parts.0);
    hasher.update(parts.1);
    let mut out = [0u8; 16];
    hasher.finalize_xof().fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input of the official BLAKE3 test vectors: bytes 0, 1, ..., 250, 0, 1, ...
    fn vector_input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Known answers from BLAKE3's `test_vectors.json` for `derive_key`, with its context
    /// "BLAKE3 2019-12-27 16:29:52 test vectors context" (first 32 bytes of each output).
    #[test]
    fn blake3_derive_key_vectors() {
        const CONTEXT: &str = "BLAKE3 2019-12-27 16:29:52 test vectors context";
        let cases: [(usize, &str); 3] = [
            (
                0,
                "2cc39783c223154fea8dfb7c1b1660f2ac2dcbd1c1de8277b0b0dd39b7e50d7d",
            ),
            (
                1,
                "b3e2e340a117a499c6cf2398a19ee0d29cca2bb7404c73063382693bf66cb06c",
            ),
            (
                1024,
                "7356cd7720d5b66b6d0697eb3177d9f8d73a4a5c5e968896eb6a689684302706",
            ),
        ];
        for (len, want) in cases {
            let got = derive(CONTEXT, &[&vector_input(len)]);
            let got: String = got.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, want, "input length {len}");
        }
    }

    #[test]
    fn contexts_are_distinct_and_give_distinct_keys() {
        let mut keys: Vec<[u8; 32]> = ALL_CONTEXTS.iter().map(|c| derive(c, &[b"x"])).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ALL_CONTEXTS.len());
    }

    #[test]
    fn derive_concatenates_parts() {
        assert_eq!(
            derive(CTX_CK_ES, &[b"ab", b"cd"]),
            derive(CTX_CK_ES, &[b"abcd"])
        );
    }
}
