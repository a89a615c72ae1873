//! Cross-check: what our route cipher (ring) seals, the independent `chacha20poly1305`
//! crate opens, and the other way round, with our nonce and associated-data layout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use proptest::prelude::*;
use skywire_dataplane::crypto::cipher::{Limits, RecvKey, SendKey};
use skywire_dataplane::wire::{
    PacketType, RouteId, TAG_LEN, TRANSPORT_HEADER_LEN, TransportPacket, TransportRepr,
};

/// Our nonce: four zero bytes, then the counter in little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// Associated data: bytes 0..4 and 8..20 of the header.
fn aad(packet: &[u8]) -> Vec<u8> {
    [&packet[..4], &packet[8..TRANSPORT_HEADER_LEN]].concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ring_seals_rustcrypto_opens(
        key in any::<[u8; 32]>(),
        payload in prop::collection::vec(any::<u8>(), 1..1500),
        skip in 0u64..1000,
        key_id in any::<u32>(),
    ) {
        let mut tx = SendKey::new(&key, key_id);
        let limits = Limits::WIREGUARD;
        let mut buf = vec![0u8; TRANSPORT_HEADER_LEN + payload.len() + TAG_LEN];
        // Advance the counter so the nonce is not always zero.
        for _ in 0..skip % 5 {
            tx.seal(&mut buf, PacketType::Keepalive, RouteId::MIN, 0, &limits).unwrap();
        }
        buf[TRANSPORT_HEADER_LEN..][..payload.len()].copy_from_slice(&payload);
        let n = tx.seal(&mut buf, PacketType::Data, RouteId::MIN, payload.len(), &limits).unwrap();
        let repr = TransportRepr::parse(&TransportPacket::new_checked(&buf[..n]).unwrap());

        let theirs = ChaCha20Poly1305::new_from_slice(&key).unwrap();
        let opened = theirs
            .decrypt(&nonce(repr.counter), Payload { msg: &buf[TRANSPORT_HEADER_LEN..n], aad: &aad(&buf) })
            .unwrap();
        prop_assert_eq!(opened, payload);
    }

    #[test]
    fn rustcrypto_seals_ring_opens(
        key in any::<[u8; 32]>(),
        payload in prop::collection::vec(any::<u8>(), 1..1500),
        counter in 0u64..1 << 40,
    ) {
        let mut packet = vec![0u8; TRANSPORT_HEADER_LEN + payload.len() + TAG_LEN];
        TransportRepr {
            packet_type: PacketType::Data,
            route_id: RouteId::new(99).unwrap(),
            key_id: 5,
            counter,
            payload_len: payload.len(),
        }
        .emit(&mut packet)
        .unwrap();
        packet.truncate(TRANSPORT_HEADER_LEN);
        let theirs = ChaCha20Poly1305::new_from_slice(&key).unwrap();
        let sealed = theirs
            .encrypt(&nonce(counter), Payload { msg: &payload, aad: &aad(&packet) })
            .unwrap();
        packet.extend_from_slice(&sealed);

        let repr = TransportRepr::parse(&TransportPacket::new_checked(&packet[..]).unwrap());
        let mut rx = RecvKey::new(&key);
        let range = rx.open(&repr, &mut packet, &Limits::WIREGUARD).unwrap();
        prop_assert_eq!(&packet[range], &payload[..]);
    }
}
