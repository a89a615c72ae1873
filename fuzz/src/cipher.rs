//! Target for `crypto::cipher::RecvKey::open`, the receiving half of a transport keypair.
//!
//! Any bytes that pass `TransportPacket::new_checked` are opened with a fresh key
//! ([`CIPHER_KEY`], the key the seeds were sealed with). `open` must not panic, must return
//! a plaintext range of exactly the payload length inside the buffer, must refuse the same
//! packet a second time, and must leave the replay window alone when it refuses a packet.

use skywire_dataplane::crypto::cipher::{Limits, OpenError, RecvKey};
use skywire_dataplane::crypto::replay::ReplayError;
use skywire_dataplane::wire::{TRANSPORT_HEADER_LEN, TransportPacket, TransportRepr};

use crate::fixtures::CIPHER_KEY;

/// Open one transport packet.
pub fn open(data: &[u8]) {
    let Ok(packet) = TransportPacket::new_checked(data) else {
        return;
    };
    let repr = TransportRepr::parse(&packet);
    let limits = Limits::WIREGUARD;
    let mut rx = RecvKey::new(&CIPHER_KEY);
    let mut buf = data.to_vec();
    match rx.open(&repr, &mut buf, &limits) {
        Ok(range) => {
            assert_eq!(
                range,
                TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + repr.payload_len
            );
            assert_eq!(buf[..TRANSPORT_HEADER_LEN], data[..TRANSPORT_HEADER_LEN]);
            assert_eq!(rx.next_expected(), repr.counter + 1);
            let mut again = data.to_vec();
            assert_eq!(
                rx.open(&repr, &mut again, &limits),
                Err(OpenError::Replay(ReplayError::Duplicate))
            );
        }
        Err(error) => {
            assert_eq!(
                rx.next_expected(),
                0,
                "refused ({error:?}) but moved the window"
            );
            if repr.counter >= limits.reject_after_messages {
                assert_eq!(error, OpenError::Exhausted);
            }
        }
    }
}
