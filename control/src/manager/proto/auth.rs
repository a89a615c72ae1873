//! Opening a connection: the manager's `HELLO`, the node's key proof (`AUTH`) and the
//! manager's proof in reply, and the MAC keys both sides derive from them
//! (`docs/PROTOCOL.md` §11; the steps are in the parent module's doc).

use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skywire_dataplane::crypto::kdf;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};

use super::frame::{Mac, constant_time_eq};
use super::{CTX_AUTH, CTX_MANAGER_TO_NODE, CTX_NODE_TO_MANAGER, Key};

/// 32 random bytes, as hex on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes32(pub [u8; 32]);

impl Bytes32 {
    /// Fresh random bytes.
    pub fn random() -> Result<Self, skywire_dataplane::crypto::keys::RngError> {
        let mut b = [0u8; 32];
        skywire_dataplane::crypto::keys::fill_random(&mut b)?;
        Ok(Self(b))
    }
}

impl Serialize for Bytes32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for Bytes32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // The same 64-hex-digit form as a public key.
        PublicKey::from_str(&text)
            .map(|k| Self(*k.as_bytes()))
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// The first frame on a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version.
    pub version: u8,
    /// The manager's static public key.
    pub manager: Key,
    /// The manager's nonce.
    pub nonce: Bytes32,
}

/// The node's key proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The node's static public key.
    pub node: Key,
    /// The node's nonce.
    pub nonce: Bytes32,
    /// `keyed_hash(k, "node proof")`.
    pub proof: Bytes32,
}

/// The manager's proof, in the reply to [`Auth`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOk {
    /// `keyed_hash(k, "manager proof")`.
    pub proof: Bytes32,
}

/// The keys an authenticated connection runs on.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// The node's proof.
    pub node_proof: Bytes32,
    /// The manager's proof.
    pub manager_proof: Bytes32,
    /// MAC of frames from the node.
    pub node_to_manager: Mac,
    /// MAC of frames from the manager.
    pub manager_to_node: Mac,
}

/// The key proof and the MAC keys of one connection, from either side: `local` is the
/// node's private key on the node, the manager's on the manager; `peer` the other's public.
/// `None` when the X25519 result is all zeros (a low-order key: refuse it).
pub fn session_keys(
    local: &PrivateKey,
    peer: &PublicKey,
    manager: &PublicKey,
    node: &PublicKey,
    manager_nonce: &Bytes32,
    node_nonce: &Bytes32,
) -> Option<SessionKeys> {
    let dh = local.diffie_hellman(peer)?;
    let k = kdf::derive(
        CTX_AUTH,
        &[
            &dh,
            manager.as_bytes(),
            node.as_bytes(),
            &manager_nonce.0,
            &node_nonce.0,
        ],
    );
    Some(SessionKeys {
        node_proof: Bytes32(*blake3::keyed_hash(&k, b"node proof").as_bytes()),
        manager_proof: Bytes32(*blake3::keyed_hash(&k, b"manager proof").as_bytes()),
        node_to_manager: Mac::new(kdf::derive(CTX_NODE_TO_MANAGER, &[&k])),
        manager_to_node: Mac::new(kdf::derive(CTX_MANAGER_TO_NODE, &[&k])),
    })
}

/// Compare two proofs in constant time.
pub fn proof_matches(a: &Bytes32, b: &Bytes32) -> bool {
    constant_time_eq(&a.0, &b.0)
}
