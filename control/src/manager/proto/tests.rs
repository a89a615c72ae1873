use super::*;
use serde_json::{Value, json};
use skywire_dataplane::crypto::PrivateKey;

fn key() -> PrivateKey {
    PrivateKey::generate().unwrap()
}

fn pair() -> (SessionKeys, SessionKeys) {
    let (m, n) = (key(), key());
    let (nm, nn) = (Bytes32::random().unwrap(), Bytes32::random().unwrap());
    let at_manager = session_keys(
        &m,
        &n.public_key(),
        &m.public_key(),
        &n.public_key(),
        &nm,
        &nn,
    )
    .unwrap();
    let at_node = session_keys(
        &n,
        &m.public_key(),
        &m.public_key(),
        &n.public_key(),
        &nm,
        &nn,
    )
    .unwrap();
    (at_manager, at_node)
}

#[test]
fn both_sides_derive_the_same_proofs_and_macs() {
    let (m, n) = pair();
    assert!(proof_matches(&m.node_proof, &n.node_proof));
    assert!(proof_matches(&m.manager_proof, &n.manager_proof));
    assert!(!proof_matches(&m.node_proof, &m.manager_proof));
    let mut send = n.node_to_manager.clone();
    let mut recv = m.node_to_manager.clone();
    let frame = Frame::request(kind::HEARTBEAT, 7, &json!({"x": 1}));
    let bytes = encode(&frame, Some(&mut send)).unwrap();
    let mut d = Decoder::new();
    d.push(&bytes);
    assert_eq!(d.next_frame(Some(&mut recv)).unwrap(), Some(frame));
}

#[test]
fn a_node_claiming_another_key_cannot_prove_it() {
    // The impostor knows the victim's public key, not its private key.
    let (manager, victim, impostor) = (key(), key(), key());
    let (nm, nn) = (Bytes32::random().unwrap(), Bytes32::random().unwrap());
    let claimed = session_keys(
        &impostor,
        &manager.public_key(),
        &manager.public_key(),
        &victim.public_key(),
        &nm,
        &nn,
    )
    .unwrap();
    let expected = session_keys(
        &manager,
        &victim.public_key(),
        &manager.public_key(),
        &victim.public_key(),
        &nm,
        &nn,
    )
    .unwrap();
    assert!(!proof_matches(&claimed.node_proof, &expected.node_proof));
}

#[test]
fn tampered_replayed_and_reordered_frames_fail_the_tag() {
    let (m, n) = pair();
    let mut send = n.node_to_manager.clone();
    let a = encode(
        &Frame::request(kind::HEARTBEAT, 1, &Value::Null),
        Some(&mut send),
    )
    .unwrap();
    let b = encode(
        &Frame::request(kind::HEARTBEAT, 2, &Value::Null),
        Some(&mut send),
    )
    .unwrap();
    // Tampered.
    let mut t = a.clone();
    t[6] ^= 1;
    let mut d = Decoder::new();
    d.push(&t);
    assert_eq!(
        d.next_frame(Some(&mut m.node_to_manager.clone())),
        Err(FrameError::Tag)
    );
    // Reordered.
    let mut d = Decoder::new();
    d.push(&b);
    assert_eq!(
        d.next_frame(Some(&mut m.node_to_manager.clone())),
        Err(FrameError::Tag)
    );
    // Replayed.
    let mut recv = m.node_to_manager.clone();
    let mut d = Decoder::new();
    d.push(&a);
    d.push(&a);
    assert!(d.next_frame(Some(&mut recv)).unwrap().is_some());
    assert_eq!(d.next_frame(Some(&mut recv)), Err(FrameError::Tag));
}

#[test]
fn oversized_garbage_truncated_and_wrong_version_are_refused() {
    let mut d = Decoder::new();
    d.push(&u32::MAX.to_be_bytes());
    assert_eq!(d.next_frame(None), Err(FrameError::Length));
    let mut d = Decoder::new();
    d.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
    assert_eq!(d.next_frame(None), Err(FrameError::Length));
    let mut d = Decoder::new();
    d.push(&3u32.to_be_bytes());
    assert_eq!(d.next_frame(None), Err(FrameError::Length));
    let mut d = Decoder::new();
    d.push(&[0, 0, 0, 12, 2, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, b'{', b'}']);
    assert_eq!(d.next_frame(None), Err(FrameError::Version));
    let mut d = Decoder::new();
    d.push(&[0, 0, 0, 12, 1, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, b'{', b'x']);
    assert_eq!(d.next_frame(None), Err(FrameError::Body));
    // Truncated: waits for more, never a frame.
    let bytes = encode(
        &Frame::request(kind::NODES, 9, &json!({"a": [1, 2, 3]})),
        None,
    )
    .unwrap();
    let mut d = Decoder::new();
    d.push(&bytes[..bytes.len() - 1]);
    assert_eq!(d.next_frame(None), Ok(None));
    assert_eq!(d.buffered(), bytes.len() - 1);
    // An encoder refuses to build an oversized frame.
    let big = Value::String("x".repeat(MAX_FRAME));
    assert_eq!(
        encode(&Frame::request(kind::NODES, 1, &big), None),
        Err(FrameError::Length)
    );
}

#[test]
fn frames_split_anywhere_decode_the_same() {
    let frames: Vec<Frame> = (0..5)
        .map(|i| Frame::request(kind::LINK_REPORT, i, &json!({"links": [], "i": i})))
        .collect();
    let (m, n) = pair();
    let mut send = n.node_to_manager.clone();
    let bytes: Vec<u8> = frames
        .iter()
        .flat_map(|f| encode(f, Some(&mut send)).unwrap())
        .collect();
    for step in [1, 3, 7, 64] {
        let mut recv = m.node_to_manager.clone();
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(step) {
            d.push(chunk);
            while let Some(f) = d.next_frame(Some(&mut recv)).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }
}

#[test]
fn replies_carry_typed_errors() {
    let e = ProtoError::new(ErrorKind::UnknownRoute, "no route 1");
    let f = Frame::error(kind::ROUTE_REMOVE, 3, &e);
    assert!(f.is_reply());
    assert_eq!(f.base_kind(), kind::ROUTE_REMOVE);
    assert_eq!(f.reply::<Value>(), Err(e));
    let ok = Frame::ok(kind::HEARTBEAT, 4, &json!({"a": 1}));
    assert_eq!(ok.reply::<Value>().unwrap(), json!({"a": 1}));
}

#[test]
fn bodies_are_checked_strictly() {
    let f = Frame::request(kind::ROUTE_ADD, 1, &json!({"dst": "zz"}));
    assert_eq!(
        f.parse::<RouteRequest>().unwrap_err().kind,
        ErrorKind::BadRequest
    );
    let f = Frame::request(
        kind::ROUTE_ADD,
        1,
        &json!({"dst": key().public_key().to_string(), "bogus": 1}),
    );
    assert!(f.parse::<RouteRequest>().is_err());
    let k = key().public_key();
    let f = Frame::request(
        kind::ROUTE_ADD,
        1,
        &json!({"dst": k.to_string(), "min_hops": 3}),
    );
    let r: RouteRequest = f.parse().unwrap();
    assert_eq!(r.dst, Key(k));
    assert_eq!(r.min_hops, Some(3));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let (m, _) = pair();
        let mut d = Decoder::new();
        d.push(&bytes);
        let _ = d.next_frame(None);
        let mut d = Decoder::new();
        d.push(&bytes);
        let _ = d.next_frame(Some(&mut m.node_to_manager.clone()));
    }
}

#[test]
fn a_route_id_is_16_hex_digits_in_json_and_text_and_reads_its_older_forms() {
    let id = MeshRouteId(0x04d2);
    assert_eq!(id.to_string(), "00000000000004d2");
    assert_eq!(serde_json::to_value(id).unwrap(), json!("00000000000004d2"));
    for form in [
        json!("00000000000004d2"),
        json!("4d2"),
        json!("0x4D2"),
        json!("0X4d2"),
        json!(1234),
    ] {
        assert_eq!(
            serde_json::from_value::<MeshRouteId>(form.clone()).unwrap(),
            id,
            "{form}"
        );
    }
    for bad in [
        json!(""),
        json!("0x"),
        json!("+4d2"),
        json!("00000000000004d2a"),
        json!("xyz"),
        json!(-1),
        json!(1.5),
        json!(null),
    ] {
        assert!(
            serde_json::from_value::<MeshRouteId>(bad.clone()).is_err(),
            "{bad}"
        );
    }
    // The largest id round-trips, in a message as alone.
    let max = MeshRouteId(u64::MAX);
    let remove = Remove {
        route: max,
        in_ids: vec![7],
    };
    let text = serde_json::to_string(&remove).unwrap();
    assert_eq!(text, r#"{"route":"ffffffffffffffff","in_ids":[7]}"#);
    assert_eq!(serde_json::from_str::<Remove>(&text).unwrap(), remove);
}
