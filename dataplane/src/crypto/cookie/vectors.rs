//! The cookie's published test vectors (`docs/PROTOCOL.md` §5.10), recomputed.
//!
//! [`spec`] follows §5.10 with the primitives alone (the `blake3` crate, ChaCha20-Poly1305
//! through the independent `chacha20poly1305` crate, the reply's layout written out byte
//! by byte), for the initiation of the handshake vectors (§5.9) arriving at the responder
//! from the relay of the three-node example. The tests check that the crate's functions
//! produce the same bytes, and that the text is exactly the block between the
//! `cookie-vectors` markers of `docs/PROTOCOL.md` (when the format changes on purpose, the
//! failing test prints the block to paste).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::SocketAddr;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use super::*;
use crate::crypto::PrivateKey;
use crate::crypto::noise::{RouteBinding, StaticKeys, write_init_with_ephemeral};
use crate::wire::{HANDSHAKE_INIT_LEN, HANDSHAKE_INIT_MAC2_LEN};

const PROTOCOL_MD: &str = include_str!("../../../../docs/PROTOCOL.md");
const BEGIN: &str = "<!-- cookie-vectors:begin -->";
const END: &str = "<!-- cookie-vectors:end -->";

fn pattern<const N: usize>(start: u8) -> [u8; N] {
    core::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

/// The fixed inputs: §5.9's keys and initiation, and byte patterns for the rest.
struct Inputs {
    s_r: [u8; 32],
    secret: [u8; 32],
    source: SocketAddr,
    in_id: u32,
    nonce: [u8; 24],
    reply_route_id: u32,
    init: [u8; HANDSHAKE_INIT_LEN],
}

fn inputs() -> Inputs {
    let s_r = pattern(0x20);
    let initiator = StaticKeys::new(
        PrivateKey::from_bytes(pattern(0x00)),
        PrivateKey::from_bytes(s_r).public_key(),
    )
    .unwrap();
    let mut init = [0u8; HANDSHAKE_INIT_LEN];
    write_init_with_ephemeral(
        &initiator,
        RouteBinding {
            initiator_in: id(201),
            responder_in: id(101),
        },
        id(100),
        0x1234_5678,
        1_800_000_000_123_456_789,
        PrivateKey::from_bytes(pattern(0x40)),
        &mut init,
    )
    .unwrap();
    Inputs {
        s_r,
        secret: pattern(0x80),
        source: "198.18.0.2:6000".parse().unwrap(),
        in_id: 101,
        nonce: pattern(0xa0),
        reply_route_id: 200,
        init,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

fn line(out: &mut String, label: &str, value: &[u8]) {
    out.push_str(&format!("{label:<22}{}\n", hex(value)));
}

struct Spec {
    text: String,
    cookie: [u8; 32],
    reply: Vec<u8>,
    init_mac2: Vec<u8>,
}

/// §5.10 from the primitives.
fn spec(inp: &Inputs) -> Spec {
    let mut out = String::new();
    let s_r_public = *PrivateKey::from_bytes(inp.s_r).public_key().as_bytes();
    line(&mut out, "S_r", &s_r_public);
    line(&mut out, "secret", &inp.secret);
    let mut source = vec![0u8; 10];
    source.extend_from_slice(&[0xff, 0xff, 198, 18, 0, 2]);
    source.extend_from_slice(&inp.source.port().to_be_bytes());
    source.extend_from_slice(&inp.in_id.to_be_bytes());
    line(&mut out, "source ‖ port ‖ in_id", &source);
    let cookie = *blake3::keyed_hash(&inp.secret, &source).as_bytes();
    line(&mut out, "cookie", &cookie);
    let mac1 = &inp.init[116..132];
    line(&mut out, "mac1 (5.9 initiation)", mac1);
    line(&mut out, "nonce", &inp.nonce);
    let mut key_input = s_r_public.to_vec();
    key_input.extend_from_slice(&inp.nonce);
    let key = blake3::derive_key(kdf::CTX_COOKIE_REPLY, &key_input);
    line(&mut out, "reply key", &key);
    let sealed = ChaCha20Poly1305::new(&key.into())
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &cookie,
                aad: mac1,
            },
        )
        .unwrap();
    line(&mut out, "sealed cookie", &sealed);
    let mut reply = vec![1, 10, 0, 0];
    reply.extend_from_slice(&inp.reply_route_id.to_be_bytes());
    reply.extend_from_slice(&inp.init[8..12]);
    reply.extend_from_slice(&inp.nonce);
    reply.extend_from_slice(&sealed);
    out.push_str(&format!("cookie reply ({} bytes)\n", reply.len()));
    out.push_str(&dump(&reply));
    out.push('\n');
    let mut covered = inp.init[..4].to_vec();
    covered.extend_from_slice(&inp.init[8..]);
    let mut mac2 = [0u8; 16];
    blake3::Hasher::new_keyed(&cookie)
        .update(&covered)
        .finalize_xof()
        .fill(&mut mac2);
    line(&mut out, "mac2", &mac2);
    let mut init_mac2 = inp.init.to_vec();
    init_mac2.extend_from_slice(&mac2);
    out.push_str(&format!(
        "initiation with mac2 ({} bytes)\n",
        init_mac2.len()
    ));
    out.push_str(&dump(&init_mac2));
    Spec {
        text: out,
        cookie,
        reply,
        init_mac2,
    }
}

fn published() -> Option<&'static str> {
    let start = PROTOCOL_MD.find(BEGIN)? + BEGIN.len();
    let end = start + PROTOCOL_MD.get(start..)?.find(END)?;
    PROTOCOL_MD
        .get(start..end)?
        .trim_start_matches('\n')
        .strip_prefix("```text\n")?
        .strip_suffix("```\n")
}

#[test]
fn the_crate_reproduces_the_spec() {
    let inp = inputs();
    let want = spec(&inp);
    let made = cookie(&inp.secret, inp.source, id(inp.in_id));
    assert_eq!(made, want.cookie);
    let s_r = PrivateKey::from_bytes(inp.s_r).public_key();
    let mac1: [u8; 16] = inp.init[116..132].try_into().unwrap();
    let mut reply = [0u8; COOKIE_REPLY_LEN];
    write_reply(
        &s_r,
        inp.nonce,
        id(inp.reply_route_id),
        0x1234_5678,
        &mac1,
        &made,
        &mut reply,
    )
    .unwrap();
    assert_eq!(hex(&reply), hex(&want.reply));
    assert_eq!(read_reply(&s_r, 0x1234_5678, &mac1, &reply), Ok(made));
    assert_eq!(want.init_mac2.len(), HANDSHAKE_INIT_MAC2_LEN);
    let mac = mac2(&made, &inp.init);
    assert_eq!(mac[..], want.init_mac2[132..]);
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
        "docs/PROTOCOL.md's cookie vectors differ from what the code computes; \
         if the format changed on purpose, the block should be:\n\n```text\n{want}```\n"
    );
}
