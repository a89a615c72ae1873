//! The route handshake: Noise's IK pattern over X25519 and ChaCha20-Poly1305, with BLAKE3
//! as the hash and BLAKE3 `derive_key` in place of Noise's HKDF. It is not a standard Noise
//! suite and says so in its name ([`kdf::PROTOCOL_NAME`]); `docs/PROTOCOL.md` §5 gives every
//! step and published test vectors, which the `vectors` tests recompute.
//!
//! The two ends of a route know each other's static public key (the route was set up to
//! that key) and the route ids with which each of them receives the route's packets (the
//! [`RouteBinding`]). The initiator sends one message, the responder answers with one, and
//! both derive a pair of transport keys that no relay and no manager can know:
//!
//! ```text
//! ck = derive_key(CTX_CK_INIT, PROTOCOL_NAME)
//! h  = derive_key(CTX_HASH_INIT, PROTOCOL_NAME)
//! h  = H(h || PROLOGUE)
//! h  = H(h || be32(initiator_in_id) || be32(responder_in_id))      the route binding
//! h  = H(h || S_r)                                                 the IK pre-message
//!
//! initiator -> responder:  e, es, s, ss  (+ sealed timestamp)
//!   h = H(h || be32(sender_index))
//!   h = H(h || E_i)
//!   ck, k = derive_key(CTX_CK_ES, ck || DH(e_i, S_r)), derive_key(CTX_KEY_ES, ...)
//!   static    = AEAD(k, 0, S_i, h);        h = H(h || static)
//!   ck, k = derive_key(CTX_CK_SS, ck || DH(s_i, S_r)), derive_key(CTX_KEY_SS, ...)
//!   timestamp = AEAD(k, 0, ts, h);         h = H(h || timestamp)
//!
//! responder -> initiator:  e, ee, se
//!   h = H(h || be32(sender_index) || be32(receiver_index))
//!   h = H(h || E_r)
//!   ck = derive_key(CTX_CK_EE, ck || DH(e_r, E_i))
//!   ck, k = derive_key(CTX_CK_SE, ck || DH(e_r, S_i)), derive_key(CTX_KEY_SE, ...)
//!   empty = AEAD(k, 0, "", h)
//!
//! transport: initiator sends with derive_key(CTX_TRANSPORT_I2R, ck),
//!            responder sends with derive_key(CTX_TRANSPORT_R2I, ck)
//! ```
//!
//! The route binding ties both messages to one route: an initiation or a response made for
//! one route fails its first AEAD on any other route between the same two keys, because the
//! receiver's own incoming id differs (it is the key of its route table). The key ids
//! (sender and receiver indices) are mixed into the transcript, so a relay that rewrites
//! them makes the handshake fail instead of leaving the two ends with keypairs they cannot
//! match. `H` is BLAKE3; `mac1` on each message is a keyed BLAKE3 keyed by the receiver's
//! static public key, so a node drops messages from anyone who does not know its key before
//! it spends a Diffie-Hellman on them. Forged messages fail the AEADs; a replayed initiation
//! carries an old timestamp and the session refuses it (WireGuard's TAI64N rule, kept per
//! peer key node-wide: [`crate::session::PeerMemory`]); a replayed response matches no
//! pending initiation. None of these functions keeps state: the caller commits the result
//! only when every check passed.
//!
//! The ephemeral keys come from the system's random source inside [`write_init`] and
//! [`write_response`]. The crate-private `*_with_ephemeral` variants take them as an
//! argument; only the test vectors call them directly.

use super::aead::AeadKey;
use super::kdf::{self, derive, mix_hash};
use super::keys::{PrivateKey, PublicKey, RngError};
use crate::wire::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, HandshakeInitPacket, HandshakeInitRepr,
    HandshakeResponsePacket, HandshakeResponseRepr, RouteId, TAG_LEN,
};
use zeroize::{Zeroize, Zeroizing};

/// Why a handshake message was refused or could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes are not a handshake message of the expected type and length.
    #[error("malformed handshake message")]
    Malformed,
    /// The mac1 does not match: the sender does not know our public key, or bytes changed.
    #[error("handshake mac1 mismatch")]
    BadMac,
    /// A sealed field did not authenticate: forged, corrupted, or not meant for us.
    #[error("handshake authentication failed")]
    Decrypt,
    /// The initiator's static key is not the peer this route leads to.
    #[error("handshake from an unexpected peer")]
    UnexpectedPeer,
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    #[error("handshake used a low-order public key")]
    LowOrderPoint,
    /// The response answers no initiation we have pending.
    #[error("handshake response matches no pending initiation")]
    UnexpectedResponse,
    /// The system random source failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// The static keys of one end of a route and its peer, with what can be computed once.
#[derive(Clone)]
pub struct StaticKeys {
    local: PrivateKey,
    remote: PublicKey,
    /// Key for mac1 of messages we receive (from our own public key).
    local_mac1: [u8; 32],
    /// Key for mac1 of messages we send (from the peer's public key).
    remote_mac1: [u8; 32],
    /// DH(s_local, S_remote), the same at both ends.
    static_static: [u8; 32],
}

impl core::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("local", &self.local.public_key())
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl StaticKeys {
    /// Keys for a route from `local` to `remote`. Fails if `remote` is a low-order point.
    pub fn new(local: PrivateKey, remote: PublicKey) -> Result<Self, HandshakeError> {
        let static_static = local
            .diffie_hellman(&remote)
            .ok_or(HandshakeError::LowOrderPoint)?;
        Ok(Self {
            local_mac1: derive(kdf::CTX_MAC1, &[local.public_key().as_bytes()]),
            remote_mac1: derive(kdf::CTX_MAC1, &[remote.as_bytes()]),
            local,
            remote,
            static_static,
        })
    }

    /// Our public key.
    pub fn local_public(&self) -> PublicKey {
        self.local.public_key()
    }

    /// The peer's public key.
    pub fn remote_public(&self) -> PublicKey {
        self.remote
    }
}

impl Drop for StaticKeys {
    fn drop(&mut self) {
        self.static_static.zeroize();
    }
}

/// The route a handshake runs on, as both of its ends know it: the route id with which
/// each end receives the route's packets (its `in_id`). The 8 bytes of
/// [`to_bytes`](Self::to_bytes) are mixed into the transcript before the first message,
/// so both messages are bound to the route: on any other route between the same two keys
/// the receiver's own incoming id differs, and the message fails its first AEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteBinding {
    /// The id the route's packets carry when they reach the initiator.
    pub initiator_in: RouteId,
    /// The id the route's packets carry when they reach the responder.
    pub responder_in: RouteId,
}

impl RouteBinding {
    /// What is mixed into the transcript: `BE32(initiator_in) || BE32(responder_in)`.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        let (first, second) = out.split_at_mut(4);
        first.copy_from_slice(&self.initiator_in.get().to_be_bytes());
        second.copy_from_slice(&self.responder_in.get().to_be_bytes());
        out
    }
}

/// Chaining key and transcript hash.
#[derive(Clone)]
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
}

impl Drop for Symmetric {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl Symmetric {
    /// The state both ends start from, bound to the route and the responder's static key.
    fn initial(binding: RouteBinding, responder: &PublicKey) -> Self {
        let ck = derive(kdf::CTX_CK_INIT, &[kdf::PROTOCOL_NAME]);
        let h = derive(kdf::CTX_HASH_INIT, &[kdf::PROTOCOL_NAME]);
        let h = mix_hash(&h, kdf::PROLOGUE);
        let h = mix_hash(&h, &binding.to_bytes());
        let h = mix_hash(&h, responder.as_bytes());
        Self { ck, h }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = mix_hash(&self.h, data);
    }

    /// Mix a DH result into the chaining key; return the step's cipher key if it has one.
    fn mix_key(
        &mut self,
        ck_context: &str,
        key_context: Option<&str>,
        dh: &[u8; 32],
    ) -> Zeroizing<[u8; 32]> {
        let key = key_context.map_or([0; 32], |ctx| derive(ctx, &[&self.ck, dh]));
        self.ck = derive(ck_context, &[&self.ck, dh]);
        Zeroizing::new(key)
    }

    fn seal<const N: usize>(&mut self, key: &[u8; 32], plain: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        let (body, tag) = out.split_at_mut(N - TAG_LEN);
        body.copy_from_slice(plain);
        tag.copy_from_slice(&AeadKey::new(key).seal_in_place(0, &self.h, body));
        self.mix_hash(&out);
        out
    }

    fn open<const N: usize>(
        &mut self,
        key: &[u8; 32],
        sealed: &[u8; N],
    ) -> Result<Vec32, HandshakeError> {
        let mut buf = *sealed;
        let len = AeadKey::new(key)
            .open_in_place(0, &self.h, &mut buf)
            .map_err(|_| HandshakeError::Decrypt)?;
        self.mix_hash(sealed);
        let mut out = Vec32 {
            bytes: [0; 32],
            len,
        };
        out.bytes
            .get_mut(..len)
            .ok_or(HandshakeError::Decrypt)?
            .copy_from_slice(buf.get(..len).ok_or(HandshakeError::Decrypt)?);
        Ok(out)
    }

    /// The two transport keys: (initiator to responder, responder to initiator).
    fn split(&self) -> ([u8; 32], [u8; 32]) {
        (
            derive(kdf::CTX_TRANSPORT_I2R, &[&self.ck]),
            derive(kdf::CTX_TRANSPORT_R2I, &[&self.ck]),
        )
    }
}

/// Up to 32 decrypted bytes, on the stack.
struct Vec32 {
    bytes: [u8; 32],
    len: usize,
}

impl Vec32 {
    fn exact<const N: usize>(&self) -> Result<[u8; N], HandshakeError> {
        self.bytes
            .get(..self.len)
            .and_then(|b| b.try_into().ok())
            .ok_or(HandshakeError::Decrypt)
    }
}

#[cfg(test)]
thread_local! {
    /// Diffie-Hellman computations of the handshake on this thread, for the tests that
    /// prove a flood costs none (`engine::core`'s cookie tests).
    pub(crate) static DH_COUNT: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

fn dh(local: &PrivateKey, remote: &PublicKey) -> Result<[u8; 32], HandshakeError> {
    #[cfg(test)]
    DH_COUNT.with(|c| c.set(c.get() + 1));
    local
        .diffie_hellman(remote)
        .ok_or(HandshakeError::LowOrderPoint)
}

/// The transport keys a handshake produced, for one end.
pub struct TransportKeys {
    /// Key for packets this end sends.
    pub send: [u8; 32],
    /// Key for packets this end receives.
    pub recv: [u8; 32],
}

impl Drop for TransportKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

/// What the initiator keeps between sending its initiation and receiving the response.
pub struct InitiatorState {
    /// Our key id for the keypair this handshake will create.
    pub local_index: u32,
    ephemeral: PrivateKey,
    sym: Symmetric,
}

impl core::fmt::Debug for InitiatorState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiatorState")
            .field("local_index", &self.local_index)
            .finish()
    }
}

/// Write an initiation for the route `binding` names into `out[..132]`, with `route_id` in
/// its header, and return the state to finish the handshake with.
pub fn write_init(
    keys: &StaticKeys,
    binding: RouteBinding,
    route_id: RouteId,
    local_index: u32,
    timestamp: u64,
    out: &mut [u8],
) -> Result<InitiatorState, HandshakeError> {
    if out.len() < HANDSHAKE_INIT_LEN {
        return Err(HandshakeError::Malformed);
    }
    let ephemeral = PrivateKey::generate()?;
    write_init_with_ephemeral(
        keys,
        binding,
        route_id,
        local_index,
        timestamp,
        ephemeral,
        out,
    )
}

/// [`write_init`] with the ephemeral key given instead of drawn from the random source.
/// Crate-private on purpose: an ephemeral key must never be used twice, so only
/// `write_init` and the test vectors call it.
pub(crate) fn write_init_with_ephemeral(
    keys: &StaticKeys,
    binding: RouteBinding,
    route_id: RouteId,
    local_index: u32,
    timestamp: u64,
    ephemeral: PrivateKey,
    out: &mut [u8],
) -> Result<InitiatorState, HandshakeError> {
    if out.len() < HANDSHAKE_INIT_LEN {
        return Err(HandshakeError::Malformed);
    }
    let mut sym = Symmetric::initial(binding, &keys.remote);
    sym.mix_hash(&local_index.to_be_bytes());
    let e_pub = ephemeral.public_key();
    sym.mix_hash(e_pub.as_bytes());
    let k = sym.mix_key(
        kdf::CTX_CK_ES,
        Some(kdf::CTX_KEY_ES),
        &dh(&ephemeral, &keys.remote)?,
    );
    let sealed_static = sym.seal::<48>(&k, keys.local.public_key().as_bytes());
    let k = sym.mix_key(kdf::CTX_CK_SS, Some(kdf::CTX_KEY_SS), &keys.static_static);
    let sealed_timestamp = sym.seal::<24>(&k, &timestamp.to_be_bytes());
    let mut repr = HandshakeInitRepr {
        route_id,
        sender_index: local_index,
        ephemeral: *e_pub.as_bytes(),
        sealed_static,
        sealed_timestamp,
        mac1: [0; 16],
    };
    repr.emit(out).map_err(|_| HandshakeError::Malformed)?;
    let packet = out
        .get(..HANDSHAKE_INIT_LEN)
        .ok_or(HandshakeError::Malformed)?;
    repr.mac1 = kdf::mac1(&keys.remote_mac1, crate::wire::mac_input(packet));
    repr.emit(out).map_err(|_| HandshakeError::Malformed)?;
    Ok(InitiatorState {
        local_index,
        ephemeral,
        sym,
    })
}

/// A verified initiation, not yet answered.
pub struct ReceivedInit {
    /// The initiator's key id for the new keypair.
    pub sender_index: u32,
    /// The initiator's timestamp (nanoseconds since the Unix epoch, by its clock).
    pub timestamp: u64,
    remote_ephemeral: PublicKey,
    sym: Symmetric,
}

impl core::fmt::Debug for ReceivedInit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReceivedInit")
            .field("sender_index", &self.sender_index)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Does the initiation in `packet` carry a valid mac1 for us? A cheap check (one keyed
/// hash, no Diffie-Hellman) that [`read_init`] repeats.
pub fn init_mac_is_valid(keys: &StaticKeys, packet: &[u8]) -> bool {
    let Ok(view) = HandshakeInitPacket::new_checked(packet) else {
        return false;
    };
    let repr = HandshakeInitRepr::parse(&view);
    constant_time_eq(
        &kdf::mac1(&keys.local_mac1, crate::wire::mac_input(packet)),
        &repr.mac1,
    )
}

/// Check an initiation in `packet` sent to us by our peer over the route `binding` names.
/// Creates no state.
pub fn read_init(
    keys: &StaticKeys,
    binding: RouteBinding,
    packet: &[u8],
) -> Result<ReceivedInit, HandshakeError> {
    let view = HandshakeInitPacket::new_checked(packet).map_err(|_| HandshakeError::Malformed)?;
    let repr = HandshakeInitRepr::parse(&view);
    let mac = kdf::mac1(&keys.local_mac1, crate::wire::mac_input(packet));
    if !constant_time_eq(&mac, &repr.mac1) {
        return Err(HandshakeError::BadMac);
    }
    let mut sym = Symmetric::initial(binding, &keys.local.public_key());
    sym.mix_hash(&repr.sender_index.to_be_bytes());
    let e_remote = PublicKey::from_bytes(repr.ephemeral);
    sym.mix_hash(e_remote.as_bytes());
    let k = sym.mix_key(
        kdf::CTX_CK_ES,
        Some(kdf::CTX_KEY_ES),
        &dh(&keys.local, &e_remote)?,
    );
    let initiator = PublicKey::from_bytes(sym.open(&k, &repr.sealed_static)?.exact()?);
    if !constant_time_eq(initiator.as_bytes(), keys.remote.as_bytes()) {
        return Err(HandshakeError::UnexpectedPeer);
    }
    let k = sym.mix_key(kdf::CTX_CK_SS, Some(kdf::CTX_KEY_SS), &keys.static_static);
    let timestamp = u64::from_be_bytes(sym.open(&k, &repr.sealed_timestamp)?.exact()?);
    Ok(ReceivedInit {
        sender_index: repr.sender_index,
        timestamp,
        remote_ephemeral: e_remote,
        sym,
    })
}

/// Answer a verified initiation: write the response into `out[..80]`, with `route_id` in
/// its header, and return the responder's transport keys. The response is bound to the
/// route the initiation was read for.
pub fn write_response(
    keys: &StaticKeys,
    init: ReceivedInit,
    route_id: RouteId,
    local_index: u32,
    out: &mut [u8],
) -> Result<TransportKeys, HandshakeError> {
    if out.len() < HANDSHAKE_RESPONSE_LEN {
        return Err(HandshakeError::Malformed);
    }
    let ephemeral = PrivateKey::generate()?;
    write_response_with_ephemeral(keys, init, route_id, local_index, ephemeral, out)
}

/// [`write_response`] with the ephemeral key given instead of drawn from the random
/// source. Crate-private for the same reason as [`write_init_with_ephemeral`]: only
/// `write_response` and the test vectors call it.
pub(crate) fn write_response_with_ephemeral(
    keys: &StaticKeys,
    init: ReceivedInit,
    route_id: RouteId,
    local_index: u32,
    ephemeral: PrivateKey,
    out: &mut [u8],
) -> Result<TransportKeys, HandshakeError> {
    if out.len() < HANDSHAKE_RESPONSE_LEN {
        return Err(HandshakeError::Malformed);
    }
    let ReceivedInit {
        sender_index,
        remote_ephemeral,
        mut sym,
        ..
    } = init;
    sym.mix_hash(&indices(local_index, sender_index));
    let e_pub = ephemeral.public_key();
    sym.mix_hash(e_pub.as_bytes());
    sym.mix_key(kdf::CTX_CK_EE, None, &dh(&ephemeral, &remote_ephemeral)?);
    let k = sym.mix_key(
        kdf::CTX_CK_SE,
        Some(kdf::CTX_KEY_SE),
        &dh(&ephemeral, &keys.remote)?,
    );
    let sealed_empty = sym.seal::<16>(&k, &[]);
    let mut repr = HandshakeResponseRepr {
        route_id,
        sender_index: local_index,
        receiver_index: sender_index,
        ephemeral: *e_pub.as_bytes(),
        sealed_empty,
        mac1: [0; 16],
    };
    repr.emit(out).map_err(|_| HandshakeError::Malformed)?;
    let packet = out
        .get(..HANDSHAKE_RESPONSE_LEN)
        .ok_or(HandshakeError::Malformed)?;
    repr.mac1 = kdf::mac1(&keys.remote_mac1, crate::wire::mac_input(packet));
    repr.emit(out).map_err(|_| HandshakeError::Malformed)?;
    let (i2r, r2i) = sym.split();
    Ok(TransportKeys {
        send: r2i,
        recv: i2r,
    })
}

/// The receiver index of a response, to find the pending initiation it answers.
pub fn response_receiver_index(packet: &[u8]) -> Result<u32, HandshakeError> {
    let view =
        HandshakeResponsePacket::new_checked(packet).map_err(|_| HandshakeError::Malformed)?;
    Ok(HandshakeResponseRepr::parse(&view).receiver_index)
}

/// Finish the handshake as initiator with the response in `packet`. Returns our transport
/// keys and the responder's key id. Creates no state; `state` is only read, so a forged
/// response leaves the pending initiation usable for the genuine one.
pub fn read_response(
    keys: &StaticKeys,
    state: &InitiatorState,
    packet: &[u8],
) -> Result<(TransportKeys, u32), HandshakeError> {
    let view =
        HandshakeResponsePacket::new_checked(packet).map_err(|_| HandshakeError::Malformed)?;
    let repr = HandshakeResponseRepr::parse(&view);
    let mac = kdf::mac1(&keys.local_mac1, crate::wire::mac_input(packet));
    if !constant_time_eq(&mac, &repr.mac1) {
        return Err(HandshakeError::BadMac);
    }
    if repr.receiver_index != state.local_index {
        return Err(HandshakeError::UnexpectedResponse);
    }
    let mut sym = state.sym.clone();
    sym.mix_hash(&indices(repr.sender_index, repr.receiver_index));
    let e_remote = PublicKey::from_bytes(repr.ephemeral);
    sym.mix_hash(e_remote.as_bytes());
    sym.mix_key(kdf::CTX_CK_EE, None, &dh(&state.ephemeral, &e_remote)?);
    let k = sym.mix_key(
        kdf::CTX_CK_SE,
        Some(kdf::CTX_KEY_SE),
        &dh(&keys.local, &e_remote)?,
    );
    sym.open(&k, &repr.sealed_empty)?.exact::<0>()?;
    let (i2r, r2i) = sym.split();
    Ok((
        TransportKeys {
            send: i2r,
            recv: r2i,
        },
        repr.sender_index,
    ))
}

/// The response's sender and receiver indices, as mixed into the transcript.
fn indices(sender: u32, receiver: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&sender.to_be_bytes());
    out[4..].copy_from_slice(&receiver.to_be_bytes());
    out
}

/// Compare without an early exit, so timing does not reveal where a MAC differs.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (StaticKeys, StaticKeys) {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        let (pa, pb) = (a.public_key(), b.public_key());
        (
            StaticKeys::new(a, pb).unwrap(),
            StaticKeys::new(b, pa).unwrap(),
        )
    }

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap()
    }

    const fn const_id(n: u32) -> RouteId {
        match RouteId::new(n) {
            Some(id) => id,
            None => RouteId::MIN,
        }
    }

    /// The route the tests' handshakes run on: the initiator receives it with id 31, the
    /// responder with id 32.
    const ROUTE: RouteBinding = RouteBinding {
        initiator_in: const_id(31),
        responder_in: const_id(32),
    };

    fn handshake(
        init: &StaticKeys,
        resp: &StaticKeys,
    ) -> (TransportKeys, TransportKeys, [u8; HANDSHAKE_INIT_LEN]) {
        let route = id(42);
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        let state = write_init(init, ROUTE, route, 11, 1_000, &mut m1).unwrap();
        let received = read_init(resp, ROUTE, &m1).unwrap();
        assert_eq!((received.sender_index, received.timestamp), (11, 1_000));
        let mut m2 = [0u8; HANDSHAKE_RESPONSE_LEN];
        let responder = write_response(resp, received, route, 22, &mut m2).unwrap();
        assert_eq!(response_receiver_index(&m2), Ok(11));
        let (initiator, remote_index) = read_response(init, &state, &m2).unwrap();
        assert_eq!(remote_index, 22);
        (initiator, responder, m1)
    }

    #[test]
    fn both_ends_derive_matching_keys() {
        let (a, b) = keys();
        let (ka, kb, _) = handshake(&a, &b);
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_ne!(ka.send, ka.recv);
        // Fresh ephemerals: a second handshake gives new keys.
        let (ka2, _, _) = handshake(&a, &b);
        assert_ne!(ka.send, ka2.send);
    }

    #[test]
    fn binding_bytes_are_both_ids_big_endian() {
        let binding = RouteBinding {
            initiator_in: id(0x0102_0304),
            responder_in: id(0x0a0b_0c0d),
        };
        assert_eq!(binding.to_bytes(), [1, 2, 3, 4, 10, 11, 12, 13]);
    }

    #[test]
    fn an_initiation_for_another_route_is_refused() {
        let (a, b) = keys();
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        write_init(&a, ROUTE, id(42), 11, 1_000, &mut m1).unwrap();
        // The same two keys, another route: either end's incoming id differs. The message
        // passes mac1 (it does not cover the binding) and fails its first AEAD.
        for other in [
            RouteBinding {
                responder_in: id(33),
                ..ROUTE
            },
            RouteBinding {
                initiator_in: id(30),
                ..ROUTE
            },
            RouteBinding {
                initiator_in: ROUTE.responder_in,
                responder_in: ROUTE.initiator_in,
            },
        ] {
            assert!(init_mac_is_valid(&b, &m1));
            assert_eq!(
                read_init(&b, other, &m1).err(),
                Some(HandshakeError::Decrypt),
                "{other:?}"
            );
        }
        assert!(read_init(&b, ROUTE, &m1).is_ok());
    }

    #[test]
    fn a_response_for_another_route_is_refused() {
        let (a, b) = keys();
        // Two handshakes between the same keys on two routes, with the same key ids, so
        // nothing but the binding tells the responses apart.
        let other = RouteBinding {
            responder_in: id(33),
            ..ROUTE
        };
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        let state = write_init(&a, ROUTE, id(42), 11, 1_000, &mut m1).unwrap();
        let mut m1_other = [0u8; HANDSHAKE_INIT_LEN];
        let state_other = write_init(&a, other, id(43), 11, 1_001, &mut m1_other).unwrap();
        let mut m2_other = [0u8; HANDSHAKE_RESPONSE_LEN];
        let received = read_init(&b, other, &m1_other).unwrap();
        write_response(&b, received, id(44), 22, &mut m2_other).unwrap();
        // The response made on the other route, injected into the first route's pending
        // handshake: the receiver index matches, the AEAD does not.
        assert_eq!(
            read_response(&a, &state, &m2_other).err(),
            Some(HandshakeError::Decrypt)
        );
        assert!(read_response(&a, &state_other, &m2_other).is_ok());
    }

    #[test]
    fn third_party_is_refused() {
        let (a, b) = keys();
        // Mallory knows b's public key but not a's private key.
        let mallory = StaticKeys::new(PrivateKey::generate().unwrap(), b.local_public()).unwrap();
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        write_init(&mallory, ROUTE, RouteId::MIN, 1, 5, &mut m1).unwrap();
        assert_eq!(
            read_init(&b, ROUTE, &m1).err(),
            Some(HandshakeError::UnexpectedPeer)
        );
        // Someone who does not know b's key cannot even pass mac1.
        let stranger = StaticKeys::new(PrivateKey::generate().unwrap(), a.local_public()).unwrap();
        write_init(&stranger, ROUTE, RouteId::MIN, 1, 5, &mut m1).unwrap();
        assert_eq!(
            read_init(&b, ROUTE, &m1).err(),
            Some(HandshakeError::BadMac)
        );
    }

    #[test]
    fn every_bit_flip_of_an_initiation_is_refused() {
        let (a, b) = keys();
        let (_, _, m1) = handshake(&a, &b);
        for i in (0..m1.len() * 8).filter(|i| !(32..64).contains(i)) {
            let mut bad = m1;
            bad[i / 8] ^= 1 << (i % 8);
            assert!(read_init(&b, ROUTE, &bad).is_err(), "bit {i}");
        }
        // The route id (bytes 4..8) is rewritten by relays and is not covered.
        let mut relayed = m1;
        relayed[4..8].copy_from_slice(&7u32.to_be_bytes());
        assert!(read_init(&b, ROUTE, &relayed).is_ok());
    }

    #[test]
    fn forged_response_leaves_initiation_usable() {
        let (a, b) = keys();
        let route = RouteId::MIN;
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        let state = write_init(&a, ROUTE, route, 3, 9, &mut m1).unwrap();
        let mut m2 = [0u8; HANDSHAKE_RESPONSE_LEN];
        write_response(&b, read_init(&b, ROUTE, &m1).unwrap(), route, 4, &mut m2).unwrap();
        let mut forged = m2;
        forged[40] ^= 1;
        assert!(read_response(&a, &state, &forged).is_err());
        let mut wrong_index = m2;
        wrong_index[15] ^= 1;
        assert!(read_response(&a, &state, &wrong_index).is_err());
        assert!(read_response(&a, &state, &m2).is_ok());
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (a, b) = keys();
        let mut m1 = [0u8; HANDSHAKE_INIT_LEN];
        write_init(&a, ROUTE, RouteId::MIN, 1, 1, &mut m1).unwrap();
        m1[12..44].fill(0);
        let mac = kdf::mac1(&b.local_mac1, crate::wire::mac_input(&m1));
        m1[116..].copy_from_slice(&mac);
        assert_eq!(
            read_init(&b, ROUTE, &m1).err(),
            Some(HandshakeError::LowOrderPoint)
        );
        assert_eq!(
            StaticKeys::new(
                PrivateKey::generate().unwrap(),
                PublicKey::from_bytes([0; 32])
            )
            .err(),
            Some(HandshakeError::LowOrderPoint)
        );
    }
}
