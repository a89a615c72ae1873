//! The handshake's published test vectors (`docs/PROTOCOL.md` §5.9), recomputed.
//!
//! [`spec`] follows the steps of `docs/PROTOCOL.md` §5.2 with the primitives alone
//! (BLAKE3 through the `blake3` crate, X25519, ChaCha20-Poly1305 through the independent
//! `chacha20poly1305` crate, the message layouts written out byte by byte) and renders
//! every input, intermediate value and output as text. The tests check that:
//!
//! - the crate's handshake (`write_init`, `read_init`, `write_response`, `read_response`,
//!   with the ephemeral keys injected) produces exactly the messages and transport keys of
//!   the spec;
//! - the text is exactly the block between the `handshake-vectors` markers of
//!   `docs/PROTOCOL.md`. A change to the code or to the document fails it; when the
//!   handshake changes on purpose, the test prints the new block to paste.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use super::*;
use crate::crypto::kdf;

/// The document the vectors are published in, relative to this file.
const PROTOCOL_MD: &str = include_str!("../../../../docs/PROTOCOL.md");
const BEGIN: &str = "<!-- handshake-vectors:begin -->";
const END: &str = "<!-- handshake-vectors:end -->";

/// The fixed inputs: byte patterns anyone can type, not keys anyone should use.
struct Inputs {
    s_i: [u8; 32],
    s_r: [u8; 32],
    e_i: [u8; 32],
    e_r: [u8; 32],
    timestamp: u64,
    /// The route ids each end receives the route with (the binding).
    initiator_in: u32,
    responder_in: u32,
    /// The route ids in the two messages' headers (the id the first hop knows the route by
    /// in each direction).
    init_route_id: u32,
    response_route_id: u32,
    initiator_index: u32,
    responder_index: u32,
}

fn pattern(start: u8) -> [u8; 32] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn inputs() -> Inputs {
    Inputs {
        s_i: pattern(0x00),
        s_r: pattern(0x20),
        e_i: pattern(0x40),
        e_r: pattern(0x60),
        // 2027-01-15 08:00:00.123456789 UTC, in nanoseconds since the Unix epoch.
        timestamp: 1_800_000_000_123_456_789,
        initiator_in: 201,
        responder_in: 101,
        init_route_id: 100,
        response_route_id: 200,
        initiator_index: 0x1234_5678,
        responder_index: 0x9abc_def0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message as lines of 16 bytes, each with its offset.
fn dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            format!("  {:3}  {}\n", i * 16, cells.join(" "))
        })
        .collect()
}

/// One value: its label, padded, and its hex.
fn line(out: &mut String, label: &str, value: &[u8]) {
    out.push_str(&format!("{label:<22}{}\n", hex(value)));
}

/// The text of the vectors and what the crate must reproduce.
struct Spec {
    text: String,
    init: Vec<u8>,
    response: Vec<u8>,
    i2r: [u8; 32],
    r2i: [u8; 32],
}

/// The handshake of §5.2, step by step, from the primitives.
fn spec(inp: &Inputs) -> Spec {
    let mut out = String::new();
    let public = |secret: &[u8; 32]| *PrivateKey::from_bytes(*secret).public_key().as_bytes();
    let dh = |secret: &[u8; 32], public: &[u8; 32]| {
        PrivateKey::from_bytes(*secret)
            .diffie_hellman(&PublicKey::from_bytes(*public))
            .unwrap()
    };
    let dk = |context: &str, material: &[&[u8]]| blake3::derive_key(context, &material.concat());
    let mix = |h: &[u8; 32], data: &[u8]| *blake3::hash(&[&h[..], data].concat()).as_bytes();
    let seal = |k: &[u8; 32], plain: &[u8], h: &[u8; 32]| {
        ChaCha20Poly1305::new(k.into())
            .encrypt(&Nonce::from([0; 12]), Payload { msg: plain, aad: h })
            .unwrap()
    };
    let mac1 = |receiver: &[u8; 32], msg: &[u8]| {
        let key = blake3::derive_key(kdf::CTX_MAC1, receiver);
        let covered = [&msg[..4], &msg[8..]].concat();
        (
            key,
            blake3::keyed_hash(&key, &covered).as_bytes()[..16].to_vec(),
        )
    };
    let (big_s_i, big_s_r, big_e_i, big_e_r) = (
        public(&inp.s_i),
        public(&inp.s_r),
        public(&inp.e_i),
        public(&inp.e_r),
    );
    let binding = [
        inp.initiator_in.to_be_bytes(),
        inp.responder_in.to_be_bytes(),
    ]
    .concat();

    line(&mut out, "s_i", &inp.s_i);
    line(&mut out, "S_i", &big_s_i);
    line(&mut out, "s_r", &inp.s_r);
    line(&mut out, "S_r", &big_s_r);
    line(&mut out, "e_i", &inp.e_i);
    line(&mut out, "E_i", &big_e_i);
    line(&mut out, "e_r", &inp.e_r);
    line(&mut out, "E_r", &big_e_r);
    line(&mut out, "timestamp (BE64)", &inp.timestamp.to_be_bytes());
    line(&mut out, "route binding", &binding);
    line(
        &mut out,
        "sender index (init)",
        &inp.initiator_index.to_be_bytes(),
    );
    line(
        &mut out,
        "sender index (resp)",
        &inp.responder_index.to_be_bytes(),
    );
    out.push('\n');

    let mut ck = dk(kdf::CTX_CK_INIT, &[kdf::PROTOCOL_NAME]);
    let mut h = dk(kdf::CTX_HASH_INIT, &[kdf::PROTOCOL_NAME]);
    line(&mut out, "ck", &ck);
    line(&mut out, "h", &h);
    h = mix(&h, kdf::PROLOGUE);
    line(&mut out, "h +PROLOGUE", &h);
    h = mix(&h, &binding);
    line(&mut out, "h +binding", &h);
    h = mix(&h, &big_s_r);
    line(&mut out, "h +S_r", &h);
    out.push('\n');

    h = mix(&h, &inp.initiator_index.to_be_bytes());
    line(&mut out, "h +sender index", &h);
    h = mix(&h, &big_e_i);
    line(&mut out, "h +E_i", &h);
    let es = dh(&inp.e_i, &big_s_r);
    line(&mut out, "DH(e_i, S_r)", &es);
    let k = dk(kdf::CTX_KEY_ES, &[&ck, &es]);
    ck = dk(kdf::CTX_CK_ES, &[&ck, &es]);
    line(&mut out, "k es", &k);
    line(&mut out, "ck es", &ck);
    let sealed_static = seal(&k, &big_s_i, &h);
    line(&mut out, "sealed static", &sealed_static);
    h = mix(&h, &sealed_static);
    line(&mut out, "h +sealed static", &h);
    let ss = dh(&inp.s_i, &big_s_r);
    line(&mut out, "DH(s_i, S_r)", &ss);
    let k = dk(kdf::CTX_KEY_SS, &[&ck, &ss]);
    ck = dk(kdf::CTX_CK_SS, &[&ck, &ss]);
    line(&mut out, "k ss", &k);
    line(&mut out, "ck ss", &ck);
    let sealed_timestamp = seal(&k, &inp.timestamp.to_be_bytes(), &h);
    line(&mut out, "sealed timestamp", &sealed_timestamp);
    h = mix(&h, &sealed_timestamp);
    line(&mut out, "h +sealed timestamp", &h);
    let mut init = [
        &[1u8, 1, 0, 0][..],
        &inp.init_route_id.to_be_bytes(),
        &inp.initiator_index.to_be_bytes(),
        &big_e_i,
        &sealed_static,
        &sealed_timestamp,
    ]
    .concat();
    let (mac_key, mac) = mac1(&big_s_r, &init);
    line(&mut out, "mac1 key (S_r)", &mac_key);
    line(&mut out, "mac1", &mac);
    init.extend(&mac);
    out.push_str(&format!("initiation ({} bytes)\n", init.len()));
    out.push_str(&dump(&init));
    out.push('\n');

    let indices = [
        inp.responder_index.to_be_bytes(),
        inp.initiator_index.to_be_bytes(),
    ]
    .concat();
    h = mix(&h, &indices);
    line(&mut out, "h +indices", &h);
    h = mix(&h, &big_e_r);
    line(&mut out, "h +E_r", &h);
    let ee = dh(&inp.e_r, &big_e_i);
    line(&mut out, "DH(e_r, E_i)", &ee);
    ck = dk(kdf::CTX_CK_EE, &[&ck, &ee]);
    line(&mut out, "ck ee", &ck);
    let se = dh(&inp.e_r, &big_s_i);
    line(&mut out, "DH(e_r, S_i)", &se);
    let k = dk(kdf::CTX_KEY_SE, &[&ck, &se]);
    ck = dk(kdf::CTX_CK_SE, &[&ck, &se]);
    line(&mut out, "k se", &k);
    line(&mut out, "ck se (final)", &ck);
    let sealed_empty = seal(&k, &[], &h);
    line(&mut out, "sealed empty", &sealed_empty);
    h = mix(&h, &sealed_empty);
    line(&mut out, "h (final, unused)", &h);
    let mut response = [
        &[1u8, 2, 0, 0][..],
        &inp.response_route_id.to_be_bytes(),
        &indices,
        &big_e_r,
        &sealed_empty,
    ]
    .concat();
    let (mac_key, mac) = mac1(&big_s_i, &response);
    line(&mut out, "mac1 key (S_i)", &mac_key);
    line(&mut out, "mac1", &mac);
    response.extend(&mac);
    out.push_str(&format!("response ({} bytes)\n", response.len()));
    out.push_str(&dump(&response));
    out.push('\n');

    let i2r = dk(kdf::CTX_TRANSPORT_I2R, &[&ck]);
    let r2i = dk(kdf::CTX_TRANSPORT_R2I, &[&ck]);
    line(&mut out, "T_i2r", &i2r);
    line(&mut out, "T_r2i", &r2i);
    Spec {
        text: out,
        init,
        response,
        i2r,
        r2i,
    }
}

/// The text between the markers in `docs/PROTOCOL.md`, without the code fence around it.
fn published() -> Option<&'static str> {
    let start = PROTOCOL_MD.find(BEGIN)? + BEGIN.len();
    let end = start + PROTOCOL_MD.get(start..)?.find(END)?;
    let block = PROTOCOL_MD.get(start..end)?;
    block
        .trim_start_matches('\n')
        .strip_prefix("```text\n")?
        .strip_suffix("```\n")
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

#[test]
fn the_crate_reproduces_the_spec() {
    let inp = inputs();
    let want = spec(&inp);
    let initiator = StaticKeys::new(
        PrivateKey::from_bytes(inp.s_i),
        PrivateKey::from_bytes(inp.s_r).public_key(),
    )
    .unwrap();
    let responder = StaticKeys::new(
        PrivateKey::from_bytes(inp.s_r),
        PrivateKey::from_bytes(inp.s_i).public_key(),
    )
    .unwrap();
    let binding = RouteBinding {
        initiator_in: id(inp.initiator_in),
        responder_in: id(inp.responder_in),
    };
    let mut init = [0u8; HANDSHAKE_INIT_LEN];
    let state = write_init_with_ephemeral(
        &initiator,
        binding,
        id(inp.init_route_id),
        inp.initiator_index,
        inp.timestamp,
        PrivateKey::from_bytes(inp.e_i),
        &mut init,
    )
    .unwrap();
    assert_eq!(hex(&init), hex(&want.init), "initiation");
    let received = read_init(&responder, binding, &init).unwrap();
    assert_eq!(received.timestamp, inp.timestamp);
    assert_eq!(received.sender_index, inp.initiator_index);
    let mut response = [0u8; HANDSHAKE_RESPONSE_LEN];
    let responder_keys = write_response_with_ephemeral(
        &responder,
        received,
        id(inp.response_route_id),
        inp.responder_index,
        PrivateKey::from_bytes(inp.e_r),
        &mut response,
    )
    .unwrap();
    assert_eq!(hex(&response), hex(&want.response), "response");
    let (initiator_keys, remote_index) = read_response(&initiator, &state, &response).unwrap();
    assert_eq!(remote_index, inp.responder_index);
    assert_eq!(initiator_keys.send, want.i2r);
    assert_eq!(initiator_keys.recv, want.r2i);
    assert_eq!(responder_keys.send, want.r2i);
    assert_eq!(responder_keys.recv, want.i2r);
}

#[test]
fn the_document_publishes_the_spec() {
    let want = spec(&inputs()).text;
    let Some(got) = published() else {
        panic!(
            "docs/PROTOCOL.md has no block between {BEGIN} and {END}; it should be:\n\n{BEGIN}\n```text\n{want}```\n{END}\n"
        );
    };
    assert!(
        got == want,
        "docs/PROTOCOL.md's handshake vectors differ from what the handshake computes; \
         if the handshake changed on purpose, the block should be:\n\n```text\n{want}```\n"
    );
}

#[test]
fn the_inputs_are_the_documented_ones() {
    // The prose around the block in docs/PROTOCOL.md names these; keep them in step.
    let inp = inputs();
    assert_eq!(inp.s_i[..4], [0, 1, 2, 3]);
    assert_eq!(inp.e_r[..4], [0x60, 0x61, 0x62, 0x63]);
    assert_eq!(
        (
            inp.initiator_in,
            inp.responder_in,
            inp.init_route_id,
            inp.response_route_id
        ),
        (201, 101, 100, 200)
    );
    assert!(PROTOCOL_MD.contains("1800000000123456789"));
}
