//! One direction of a route's keypair: the sending half never reuses a counter and refuses
//! to go past the hard message limit; the receiving half checks the replay window before
//! decrypting and moves it only after the packet authenticated.
//!
//! Both work in place in the caller's buffer: the payload sits at
//! `buf[TRANSPORT_HEADER_LEN..]` with [`TAG_LEN`] bytes of room after it, and the header and
//! tag are written around it. Nothing is allocated.

use core::ops::Range;
use core::time::Duration;

use super::aead::AeadKey;
use super::replay::{ReplayError, ReplayWindow};
use crate::wire::{self, PacketType, RouteId, TAG_LEN, TRANSPORT_HEADER_LEN, TransportRepr};

/// Key usage limits. [`Limits::WIREGUARD`] are WireGuard's constants, the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start a new handshake once a key sealed this many messages (either end).
    pub rekey_after_messages: u64,
    /// Refuse to seal or open with a key past this many messages.
    pub reject_after_messages: u64,
    /// Start a new handshake when the initiator's key is this old (initiator only).
    pub rekey_after_time: Duration,
    /// Refuse to use a key older than this.
    pub reject_after_time: Duration,
    /// Retransmit an unanswered handshake initiation after this long.
    pub rekey_timeout: Duration,
    /// Give up a handshake attempt after this long.
    pub rekey_attempt_time: Duration,
    /// Send a keepalive when data was received but nothing sent for this long.
    pub keepalive_timeout: Duration,
}

impl Limits {
    /// WireGuard's values (whitepaper section 6.1; wireguard-go's `constants.go`).
    pub const WIREGUARD: Limits = Limits {
        rekey_after_messages: 1 << 60,
        reject_after_messages: u64::MAX - (1 << 13),
        rekey_after_time: Duration::from_secs(120),
        reject_after_time: Duration::from_secs(180),
        rekey_timeout: Duration::from_secs(5),
        rekey_attempt_time: Duration::from_secs(90),
        keepalive_timeout: Duration::from_secs(10),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::WIREGUARD
    }
}

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key reached its hard message limit; a new handshake is needed.
    #[error("sending key exhausted its message limit")]
    Exhausted,
    /// The buffer has no room for the header, payload and tag.
    #[error("buffer too small for header, payload and tag")]
    BufferTooSmall,
    /// Data packets need a payload; keepalive and close must not have one; ping and pong
    /// carry exactly their 8-byte nonce.
    #[error("payload length does not fit the packet type")]
    BadPayload,
}

/// Why a received packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The counter is past the hard message limit.
    #[error("counter past the message limit")]
    Exhausted,
    /// The replay window refused the counter.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The tag did not verify.
    #[error("bad authentication tag")]
    BadTag,
}

/// The sending half of a keypair.
#[derive(Debug)]
pub struct SendKey {
    key: AeadKey,
    /// The receiver's key id, written into every packet.
    remote_index: u32,
    next_counter: u64,
}

impl SendKey {
    /// A sending key; packets carry `remote_index` so the receiver finds its half.
    pub fn new(key: &[u8; 32], remote_index: u32) -> Self {
        Self {
            key: AeadKey::new(key),
            remote_index,
            next_counter: 0,
        }
    }

    /// Messages sealed so far (the next counter).
    pub fn messages(&self) -> u64 {
        self.next_counter
    }

    /// Seal the packet in `buf`: the payload is `buf[20..20 + payload_len]`; the header goes
    /// in front and the tag after. Returns the packet's total length.
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        packet_type: PacketType,
        route_id: RouteId,
        payload_len: usize,
        limits: &Limits,
    ) -> Result<usize, SealError> {
        let counter = self.next_counter;
        if counter >= limits.reject_after_messages {
            return Err(SealError::Exhausted);
        }
        if !wire::payload_len_is_valid(packet_type, payload_len) {
            return Err(SealError::BadPayload);
        }
        let repr = TransportRepr {
            packet_type,
            route_id,
            key_id: self.remote_index,
            counter,
            payload_len,
        };
        let total = repr.buffer_len();
        let packet = buf.get_mut(..total).ok_or(SealError::BufferTooSmall)?;
        repr.emit(packet).map_err(|_| SealError::BufferTooSmall)?;
        let aad = wire::transport_aad(packet);
        let tag_at = total - TAG_LEN;
        let (body, tag) = packet.split_at_mut(tag_at);
        let payload = body
            .get_mut(TRANSPORT_HEADER_LEN..)
            .ok_or(SealError::BufferTooSmall)?;
        tag.copy_from_slice(&self.key.seal_in_place(counter, &aad, payload));
        self.next_counter = counter + 1;
        Ok(total)
    }
}

/// The receiving half of a keypair, with its replay window.
#[derive(Debug)]
pub struct RecvKey {
    key: AeadKey,
    replay: ReplayWindow,
}

impl RecvKey {
    /// A receiving key with an empty replay window.
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: AeadKey::new(key),
            replay: ReplayWindow::new(),
        }
    }

    /// Messages accepted so far is not tracked; this is the highest counter seen plus one.
    pub fn next_expected(&self) -> u64 {
        self.replay.next_expected()
    }

    /// Authenticate and decrypt the packet `buf` (already checked as `repr`) in place.
    /// Returns the range of `buf` that holds the plaintext payload.
    pub fn open(
        &mut self,
        repr: &TransportRepr,
        buf: &mut [u8],
        limits: &Limits,
    ) -> Result<Range<usize>, OpenError> {
        if repr.counter >= limits.reject_after_messages {
            return Err(OpenError::Exhausted);
        }
        self.replay.check(repr.counter)?;
        let aad = wire::transport_aad(buf);
        let sealed = buf
            .get_mut(TRANSPORT_HEADER_LEN..repr.buffer_len())
            .ok_or(OpenError::BadTag)?;
        let len = self
            .key
            .open_in_place(repr.counter, &aad, sealed)
            .map_err(|_| OpenError::BadTag)?;
        self.replay.accept(repr.counter)?;
        Ok(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TRANSPORT_OVERHEAD, TransportPacket};

    fn pair() -> (SendKey, RecvKey) {
        (SendKey::new(&[1; 32], 77), RecvKey::new(&[1; 32]))
    }

    fn seal(tx: &mut SendKey, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; payload.len() + TRANSPORT_OVERHEAD];
        buf[TRANSPORT_HEADER_LEN..][..payload.len()].copy_from_slice(payload);
        let route = RouteId::new(5).unwrap();
        let n = tx.seal(
            &mut buf,
            PacketType::Data,
            route,
            payload.len(),
            &Limits::WIREGUARD,
        );
        assert_eq!(n, Ok(buf.len()));
        buf
    }

    fn open(rx: &mut RecvKey, mut buf: Vec<u8>) -> Result<Vec<u8>, OpenError> {
        let repr = TransportRepr::parse(&TransportPacket::new_checked(&buf[..]).unwrap());
        let range = rx.open(&repr, &mut buf, &Limits::WIREGUARD)?;
        Ok(buf[range].to_vec())
    }

    #[test]
    fn roundtrip_counters_and_key_id() {
        let (mut tx, mut rx) = pair();
        let a = seal(&mut tx, b"first");
        let b = seal(&mut tx, b"second");
        let pa = TransportPacket::new_checked(&a[..]).unwrap();
        let pb = TransportPacket::new_checked(&b[..]).unwrap();
        assert_eq!((pa.counter(), pb.counter()), (0, 1));
        assert_eq!(pa.key_id(), 77);
        assert!(
            !a.windows(5).any(|w| w == b"first"),
            "payload must be encrypted"
        );
        assert_eq!(open(&mut rx, b.clone()).unwrap(), b"second");
        assert_eq!(open(&mut rx, a).unwrap(), b"first");
        assert_eq!(
            open(&mut rx, b),
            Err(OpenError::Replay(ReplayError::Duplicate))
        );
    }

    #[test]
    fn route_id_is_not_authenticated_but_everything_else_is() {
        let (mut tx, mut rx) = pair();
        let mut a = seal(&mut tx, b"payload");
        a[7] ^= 0xff; // a relay rewrote the route id
        assert!(open(&mut rx, a.clone()).is_ok());
        for i in (0..a.len()).filter(|i| !(4..8).contains(i)) {
            let mut bad = a.clone();
            bad[i] ^= 0x01;
            // Flips the parser refuses (version, type, reserved) are still checked against
            // the tag: open them with the genuine packet's header fields.
            let repr = match TransportPacket::new_checked(&bad[..]) {
                Ok(packet) => TransportRepr::parse(&packet),
                Err(_) => TransportRepr::parse(&TransportPacket::new_checked(&a[..]).unwrap()),
            };
            let mut rx = RecvKey::new(&[1; 32]);
            assert!(
                rx.open(&repr, &mut bad, &Limits::WIREGUARD).is_err(),
                "byte {i}"
            );
            // A forged packet does not move the window: the genuine one is still accepted.
            assert!(open(&mut rx, a.clone()).is_ok(), "byte {i}");
        }
    }

    #[test]
    fn hard_limits() {
        let limits = Limits {
            reject_after_messages: 2,
            ..Limits::WIREGUARD
        };
        let (mut tx, _) = pair();
        let mut buf = [0u8; 64];
        let route = RouteId::MIN;
        assert!(
            tx.seal(&mut buf, PacketType::Keepalive, route, 0, &limits)
                .is_ok()
        );
        assert!(
            tx.seal(&mut buf, PacketType::Keepalive, route, 0, &limits)
                .is_ok()
        );
        assert_eq!(
            tx.seal(&mut buf, PacketType::Keepalive, route, 0, &limits),
            Err(SealError::Exhausted)
        );
        assert_eq!(tx.messages(), 2);
        let mut small = [0u8; 35];
        let (mut tx, _) = pair();
        assert_eq!(
            tx.seal(&mut small, PacketType::Keepalive, route, 0, &limits),
            Err(SealError::BufferTooSmall)
        );
        assert_eq!(
            tx.seal(&mut buf, PacketType::Data, route, 0, &limits),
            Err(SealError::BadPayload)
        );
        // A failed seal does not consume a counter.
        assert_eq!(tx.messages(), 0);
    }
}
