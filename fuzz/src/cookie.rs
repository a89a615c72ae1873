//! Target for the handshake-flood extension (`docs/PROTOCOL.md` §5.10): the cookie reply's
//! view and `Repr`, the initiator's `crypto::cookie::read_reply`, and `wire::split_init`,
//! which the node runs on every initiation before its session sees it.
//!
//! Checks: `CookieReplyPacket::new_checked` accepts exactly 84 bytes of type 10 with a valid
//! route header; parse then emit reproduces all 84 bytes and writes nothing past them;
//! `read_reply` never panics, is `Malformed` exactly when the view refuses the bytes, and
//! a cookie it returns seals back (same nonce, same key) to the input's sealed bytes;
//! `split_init` splits exactly the 132- and 148-byte forms, at the documented offsets.
//! Every accepted input is also tried with its bytes 36..84 sealed afresh for a fixed
//! cookie (same header, index and nonce), so mutations reach the AEAD's success path too.

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::crypto::cookie::{CookieError, read_reply, write_reply};
use skywire_dataplane::wire::{
    COOKIE_REPLY_LEN, CookieReplyPacket, CookieReplyRepr, HANDSHAKE_INIT_LEN,
    HANDSHAKE_INIT_MAC2_LEN, PacketType, RouteId, VERSION, split_init,
};

/// The responder's public key the replies are read for (any 32 bytes: no DH is done).
const RESPONDER: [u8; 32] = [0x35; 32];
/// The mac1 of the initiation the replies are read against.
const MAC1: [u8; 16] = [0x4d; 16];
/// The cookie sealed into the second form of each input.
const COOKIE: [u8; 32] = [0xc0; 32];

/// The route header rules with type 10 (cookie reply).
fn is_cookie_reply(data: &[u8]) -> bool {
    data.len() == COOKIE_REPLY_LEN
        && data[0] == VERSION
        && data[1] == PacketType::CookieReply as u8
        && data[2..4] == [0, 0]
        && data[4..8] != [0; 4]
}

pub fn cookie_reply(data: &[u8]) {
    split(data);
    let responder = PublicKey::from_bytes(RESPONDER);
    let model = is_cookie_reply(data);
    let checked = CookieReplyPacket::new_checked(data);
    assert_eq!(checked.is_ok(), model);
    let index = data
        .get(8..12)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match read_reply(&responder, index, &MAC1, data) {
        Err(CookieError::Malformed) => assert!(!model),
        Err(CookieError::WrongIndex) => panic!("the index was the reply's own"),
        Err(CookieError::Decrypt) => assert!(model),
        Ok(cookie) => {
            assert!(model);
            reseal_matches(&responder, data, &cookie);
        }
    }
    let Ok(packet) = checked else { return };
    let repr = CookieReplyRepr::parse(&packet);
    let mut out = [0u8; COOKIE_REPLY_LEN + 1];
    out.iter_mut().zip(data).for_each(|(o, d)| *o = !d);
    out[COOKIE_REPLY_LEN] = 0x5a;
    repr.emit(&mut out).expect("84 bytes of room");
    assert_eq!(out[..COOKIE_REPLY_LEN], *data);
    assert_eq!(out[COOKIE_REPLY_LEN], 0x5a, "emit wrote past 84 bytes");
    assert!(repr.emit(&mut out[..COOKIE_REPLY_LEN - 1]).is_err());
    assert_eq!(
        read_reply(&responder, index.wrapping_add(1), &MAC1, data),
        Err(CookieError::WrongIndex)
    );

    // The same header, index and nonce with the cookie sealed properly: it must open.
    let mut sealed = [0u8; COOKIE_REPLY_LEN];
    let nonce: [u8; 24] = data[12..36].try_into().expect("24 bytes");
    write_reply(
        &responder,
        nonce,
        repr.route_id,
        index,
        &MAC1,
        &COOKIE,
        &mut sealed,
    )
    .expect("84 bytes of room");
    assert_eq!(sealed[..36], data[..36]);
    assert_eq!(read_reply(&responder, index, &MAC1, &sealed), Ok(COOKIE));
}

/// A cookie that opened seals again, with the input's nonce, into the input's bytes.
fn reseal_matches(responder: &PublicKey, data: &[u8], cookie: &[u8; 32]) {
    let route_id = RouteId::new(u32::from_be_bytes([data[4], data[5], data[6], data[7]]))
        .expect("a checked reply has a route id");
    let index = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let nonce: [u8; 24] = data[12..36].try_into().expect("24 bytes");
    let mut again = [0u8; COOKIE_REPLY_LEN];
    write_reply(responder, nonce, route_id, index, &MAC1, cookie, &mut again)
        .expect("84 bytes of room");
    assert_eq!(again[..], *data);
}

/// `split_init` on the raw input: only the two lengths, the documented offsets.
fn split(data: &[u8]) {
    let parts = split_init(data);
    let want = matches!(data.len(), HANDSHAKE_INIT_LEN | HANDSHAKE_INIT_MAC2_LEN);
    assert_eq!(parts.is_some(), want);
    let Some(parts) = parts else { return };
    assert_eq!(parts.init, &data[..HANDSHAKE_INIT_LEN]);
    assert_eq!(parts.mac1[..], data[116..132]);
    match parts.mac2 {
        Some(mac2) => assert_eq!(mac2[..], data[132..148]),
        None => assert_eq!(data.len(), HANDSHAKE_INIT_LEN),
    }
}
