//! Fixed keys and ids shared by the targets and the seed generator.
//!
//! Keys are fixed so that a seed made by `make_seeds` once stays meaningful in every fuzzing
//! process: a handshake initiation sealed for [`responder_keys`] opens with them forever.
//! Only the initiator's ephemeral key is random (the crate generates it inside
//! `write_init`), which is why [`crate::noise::read_response`] cannot get past decryption
//! even on its seeds.

use std::sync::OnceLock;

use skywire_dataplane::crypto::kdf;
use skywire_dataplane::crypto::noise::{RouteBinding, StaticKeys};
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::wire::{MAC_LEN, ROUTE_HEADER_LEN, RouteId};

/// The initiator's static private key.
pub const INITIATOR_SECRET: [u8; 32] = [1; 32];
/// The responder's static private key.
pub const RESPONDER_SECRET: [u8; 32] = [2; 32];
/// The key both halves of the `cipher_open` target's keypair use.
pub const CIPHER_KEY: [u8; 32] = [7; 32];
/// The initiator's key id in the handshake whose response `noise_read_response` reads.
pub const INITIATOR_INDEX: u32 = 0x1111_2222;
/// The responder's key id in seed responses.
pub const RESPONDER_INDEX: u32 = 0x3333_4444;
/// The handshake timestamp of seed initiations (nanoseconds since the epoch).
pub const TIMESTAMP: u64 = 1_790_000_000_000_000_000;
/// The route id seeds carry: the id with which the responder receives the route, so also
/// the id initiations carry in their header.
pub const ROUTE: RouteId = match RouteId::new(0x0a0b_0c0d) {
    Some(id) => id,
    None => unreachable!(),
};
/// The id with which the initiator receives the route (responses carry it).
pub const INITIATOR_IN: RouteId = match RouteId::new(0x0a0b_0c0e) {
    Some(id) => id,
    None => unreachable!(),
};
/// The route the fixed handshakes run on: initiations seeds carry are bound to it.
pub const BINDING: RouteBinding = RouteBinding {
    initiator_in: INITIATOR_IN,
    responder_in: ROUTE,
};

fn pair(local: [u8; 32], remote: [u8; 32]) -> StaticKeys {
    let remote = PrivateKey::from_bytes(remote).public_key();
    StaticKeys::new(PrivateKey::from_bytes(local), remote)
        .expect("fixed keys are not low-order points")
}

/// The initiator's end: its own key and the responder's public key. Computed once.
pub fn initiator_keys() -> &'static StaticKeys {
    static KEYS: OnceLock<StaticKeys> = OnceLock::new();
    KEYS.get_or_init(|| pair(INITIATOR_SECRET, RESPONDER_SECRET))
}

/// The responder's end. Computed once.
pub fn responder_keys() -> &'static StaticKeys {
    static KEYS: OnceLock<StaticKeys> = OnceLock::new();
    KEYS.get_or_init(|| pair(RESPONDER_SECRET, INITIATOR_SECRET))
}

/// `packet` with its trailing mac1 recomputed for a receiver whose static public key is
/// `receiver`, so the fuzzer's mutations reach the Diffie-Hellman and AEAD steps behind the
/// mac1 check. `None` if the packet is too short to have a mac1.
///
/// This repeats the crate's (crate-private) `wire::mac_input`: mac1 covers bytes 0..4 and
/// 8..len-16. If that definition changes, the `seeds_pass_their_checks` test notices.
pub fn with_mac1(packet: &[u8], receiver: &PublicKey) -> Option<Vec<u8>> {
    let end = packet.len().checked_sub(MAC_LEN)?;
    if end < ROUTE_HEADER_LEN {
        return None;
    }
    let key = kdf::derive(kdf::CTX_MAC1, &[receiver.as_bytes()]);
    let mac = kdf::mac1(&key, (&packet[..4], &packet[ROUTE_HEADER_LEN..end]));
    let mut out = packet.to_vec();
    out[end..].copy_from_slice(&mac);
    Some(out)
}
