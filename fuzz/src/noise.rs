//! Targets for the Noise IK handshake readers, `crypto::noise::{read_init, read_response}`.
//!
//! Neither may panic on any input, and each error must be the right one: `Malformed`
//! exactly when the wire check fails, `BadMac` exactly when mac1 is wrong. Every input is
//! read twice: as given (the fuzzer cannot forge mac1, so mutations stop there) and with
//! mac1 recomputed (see [`with_mac1`]), which sends the mutated ephemeral key and sealed
//! fields through the Diffie-Hellman and AEAD code.

use std::sync::OnceLock;

use skywire_dataplane::crypto::noise::{self, HandshakeError, InitiatorState};
use skywire_dataplane::wire::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, HandshakeInitPacket, HandshakeInitRepr,
    HandshakeResponsePacket, HandshakeResponseRepr,
};

use crate::fixtures::{
    BINDING, INITIATOR_IN, INITIATOR_INDEX, RESPONDER_INDEX, ROUTE, TIMESTAMP, initiator_keys,
    responder_keys, with_mac1,
};

/// The responder reads an initiation from the initiator (fixed static keys).
pub fn read_init(data: &[u8]) {
    let keys = responder_keys();
    let well_formed = HandshakeInitPacket::new_checked(data).is_ok();
    let result = noise::read_init(keys, BINDING, data);
    assert_eq!(
        matches!(result, Err(HandshakeError::Malformed)),
        !well_formed,
        "{result:?}"
    );
    if !well_formed {
        assert!(!noise::init_mac_is_valid(keys, data));
        return;
    }
    let mac_ok = noise::init_mac_is_valid(keys, data);
    assert_eq!(
        with_mac1(data, &keys.local_public()).as_deref() == Some(data),
        mac_ok
    );
    assert_eq!(
        matches!(result, Err(HandshakeError::BadMac)),
        !mac_ok,
        "{result:?}"
    );

    if let Ok(received) = result {
        // Only a genuine initiation gets here (the seeds): check what it carried and that
        // it can be answered.
        let repr = HandshakeInitRepr::parse(
            &HandshakeInitPacket::new_checked(data).expect("checked above"),
        );
        assert_eq!(received.sender_index, repr.sender_index);
        let mut out = [0u8; HANDSHAKE_RESPONSE_LEN];
        noise::write_response(keys, received, INITIATOR_IN, RESPONDER_INDEX, &mut out)
            .expect("a verified initiation can be answered");
        let response = HandshakeResponsePacket::new_checked(&out[..]).expect("a valid response");
        assert_eq!(
            HandshakeResponseRepr::parse(&response).receiver_index,
            repr.sender_index
        );
    }

    if !mac_ok {
        let fixed = with_mac1(data, &keys.local_public()).expect("132 bytes have a mac1");
        let result = noise::read_init(keys, BINDING, &fixed);
        assert!(
            !matches!(
                result,
                Err(HandshakeError::Malformed | HandshakeError::BadMac)
            ),
            "{result:?}"
        );
    }
}

/// The initiator's state for the one initiation `read_response` answers, made once per
/// process. Its ephemeral key is random, so no stored seed decrypts against it.
fn initiator_state() -> &'static InitiatorState {
    static STATE: OnceLock<InitiatorState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut out = [0u8; HANDSHAKE_INIT_LEN];
        noise::write_init(
            initiator_keys(),
            BINDING,
            ROUTE,
            INITIATOR_INDEX,
            TIMESTAMP,
            &mut out,
        )
        .expect("write_init into 132 bytes")
    })
}

/// The initiator reads a response to its pending initiation.
pub fn read_response(data: &[u8]) {
    let keys = initiator_keys();
    let state = initiator_state();
    let checked = HandshakeResponsePacket::new_checked(data);
    // `TransportKeys` has no `Debug` (secrets): keep the remote index to show and compare.
    let result = noise::read_response(keys, state, data).map(|(_, remote_index)| remote_index);
    assert_eq!(
        matches!(result, Err(HandshakeError::Malformed)),
        checked.is_err(),
        "{result:?}"
    );
    assert_eq!(
        noise::response_receiver_index(data).ok(),
        checked
            .as_ref()
            .ok()
            .map(|p| HandshakeResponseRepr::parse(p).receiver_index)
    );
    let Ok(packet) = checked else { return };
    let repr = HandshakeResponseRepr::parse(&packet);
    let fixed = with_mac1(data, &keys.local_public()).expect("80 bytes have a mac1");
    let mac_ok = fixed == data;
    assert_eq!(
        matches!(result, Err(HandshakeError::BadMac)),
        !mac_ok,
        "{result:?}"
    );
    if mac_ok && repr.receiver_index != INITIATOR_INDEX {
        assert_eq!(result, Err(HandshakeError::UnexpectedResponse));
    }
    if let Ok(remote_index) = result {
        assert_eq!(remote_index, repr.sender_index);
    }

    if !mac_ok {
        let result = noise::read_response(keys, state, &fixed).map(|(_, index)| index);
        assert!(
            !matches!(
                result,
                Err(HandshakeError::Malformed | HandshakeError::BadMac)
            ),
            "{result:?}"
        );
        if repr.receiver_index != INITIATOR_INDEX {
            assert_eq!(result, Err(HandshakeError::UnexpectedResponse));
        }
    }
}
