//! Targets for the parsers of `skywire-control` that read bytes from a peer: the frame
//! codec shared by signal and the manager protocol (`control::frame`), the manager
//! protocol's frames (with and without their MAC), typed messages and typed replies (a
//! `LINK_REPORT`'s measures, a `ROUTE_LIST`'s `RouteInfo`s with their reasons and retry
//! times, the mesh a `NODES` reply shows, the opening's `HELLO`, `AUTH` and its reply), signal's frames and its opening (the key
//! proofs), and the node's control-socket request lines.
//!
//! Each target feeds the input in chunks (the first byte picks the chunk size, so frames
//! split at every point are tried) and checks that what decodes encodes back to the same
//! bytes and parses again to the same value.

use std::sync::OnceLock;

use std::fmt::Debug;

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use skywire_control::frame::{self as codec, Decoder as CodecDecoder};
use skywire_control::manager::proto::{
    self, Auth, AuthOk, Bytes32, Decoder as ManagerDecoder, Frame as ManagerFrame, Hello,
    ManagerRequest, Mesh, NodeRequest, Registered, RouteInfo, RouteList,
};
use skywire_control::node::ctl::protocol::{ParsedRequest, Request, parse_request};
use skywire_control::signal::auth::{self, ClientAuth, Nonce, Proof, Secret, Step};
use skywire_control::signal::frame::{Decoder as SignalDecoder, Frame as SignalFrame, MAX_BODY};
use skywire_dataplane::crypto::PrivateKey;

/// The chunk size from the first byte, and the rest.
fn split(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (usize::from(*first % 64) + 1, rest),
        None => (1, &[]),
    }
}

/// `control::frame`: bounds and version checked before buffering, frames re-encode to the
/// bytes they came from.
pub fn frame_codec(data: &[u8]) {
    let (chunk, bytes) = split(data);
    let (min_len, max_len) = (10, 512);
    let mut decoder = CodecDecoder::new(1, min_len, max_len);
    let mut consumed = 0;
    'feed: for piece in bytes.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let len = 10 + frame.payload.len();
                    assert!((min_len..=max_len).contains(&len));
                    let again = codec::encode(1, frame.kind, frame.id, &[&frame.payload], max_len)
                        .expect("a decoded frame encodes");
                    let original = bytes.get(consumed..consumed + again.len());
                    assert_eq!(original, Some(&again[..]), "re-encoded differently");
                    consumed += again.len();
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
        assert!(decoder.buffered() <= bytes.len());
    }
}

/// The MAC states of a fixed manager and node (`[9; 32]` and `[1; 32]`) with fixed nonces,
/// derived once per process (an X25519 per input would slow the target a hundredfold).
fn macs() -> (proto::Mac, proto::Mac) {
    static MACS: OnceLock<(proto::Mac, proto::Mac)> = OnceLock::new();
    MACS.get_or_init(|| {
        let manager = PrivateKey::from_bytes([9; 32]);
        let node = PrivateKey::from_bytes([1; 32]);
        let keys = proto::session_keys(
            &manager,
            &node.public_key(),
            &manager.public_key(),
            &node.public_key(),
            &Bytes32([3; 32]),
            &Bytes32([4; 32]),
        )
        .expect("fixed keys are usable");
        (keys.node_to_manager, keys.manager_to_node)
    })
    .clone()
}

/// Every typed reading of a frame: as a request either way, and as a reply.
fn read_typed(frame: &ManagerFrame) {
    if let Ok(request) = NodeRequest::parse(frame) {
        // What parsed, written again, parses to the same request.
        let again = request.frame(frame.id);
        assert_eq!(NodeRequest::parse(&again).as_ref(), Ok(&request));
    }
    if let Ok(request) = ManagerRequest::parse(frame) {
        let again = request.frame(frame.id);
        assert_eq!(ManagerRequest::parse(&again).as_ref(), Ok(&request));
    }
    let _ = frame.reply::<IgnoredAny>();
    // The replies a node reads, typed (the manager's answers to REGISTER, ROUTE_ADD,
    // ROUTE_LIST and NODES): what reads, written again, reads the same.
    reply_round_trip::<Registered>(frame);
    reply_round_trip::<RouteInfo>(frame);
    reply_round_trip::<RouteList>(frame);
    reply_round_trip::<Mesh>(frame);
    // The opening (`HELLO`, `AUTH` and its `AuthOk` reply), which have no `PartialEq`:
    // compared as the JSON they write.
    opening_round_trip(frame.parse::<Hello>(), ManagerFrame::request);
    opening_round_trip(frame.parse::<Auth>(), ManagerFrame::request);
    opening_round_trip(frame.reply::<AuthOk>(), ManagerFrame::ok);
}

/// A message of the opening that read from a frame, written into a frame of the same
/// kind and id by `write`, reads back to a message that writes the same JSON.
fn opening_round_trip<T: DeserializeOwned + Serialize>(
    read: Result<T, proto::ProtoError>,
    write: fn(u8, u64, &T) -> ManagerFrame,
) {
    let Ok(message) = read else {
        return;
    };
    let frame = write(0x01, 7, &message);
    let again: T = if frame.kind & proto::REPLY == 0 {
        frame.parse().expect("a written request reads")
    } else {
        frame.reply().expect("a written reply reads")
    };
    assert_eq!(
        serde_json::to_value(&again).expect("writes"),
        serde_json::to_value(&message).expect("writes")
    );
}

/// `frame` read as a reply of type `T`; if it reads, the reply written again reads the
/// same.
fn reply_round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(frame: &ManagerFrame) {
    if let Ok(reply) = frame.reply::<T>() {
        let again = ManagerFrame::ok(frame.kind, frame.id, &reply);
        assert_eq!(again.reply::<T>().as_ref(), Ok(&reply));
    }
}

/// The manager protocol: frames before the key proof (no tag), then the same bytes as
/// frames after it (tagged with the fixed keys), each read as every typed message.
pub fn manager_frame(data: &[u8]) {
    let (chunk, bytes) = split(data);
    let (mut send, _) = macs();
    let (mut check, _) = macs();
    for tagged in [false, true] {
        let (mut recv, _) = macs();
        let mut decoder = ManagerDecoder::new();
        'feed: for piece in bytes.chunks(chunk) {
            decoder.push(piece);
            loop {
                let mac = if tagged { Some(&mut recv) } else { None };
                match decoder.next_frame(mac) {
                    Ok(Some(frame)) => {
                        read_typed(&frame);
                        // Encoded and decoded again, the frame is unchanged; with a tag,
                        // the sender's and the receiver's MACs stay in step.
                        let bytes = proto::encode(&frame, None).expect("encodes");
                        let mut again = ManagerDecoder::new();
                        again.push(&bytes);
                        assert_eq!(again.next_frame(None), Ok(Some(frame.clone())));
                        // (A frame read without a tag may be too long for one.)
                        if let Ok(bytes) = proto::encode(&frame, Some(&mut send)) {
                            let mut again = ManagerDecoder::new();
                            again.push(&bytes);
                            assert_eq!(again.next_frame(Some(&mut check)), Ok(Some(frame)));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

/// Signal frames: JSON bodies at most [`MAX_BODY`], re-encoded and decoded to the same
/// frame.
pub fn signal_frame(data: &[u8]) {
    let (chunk, bytes) = split(data);
    let mut decoder = SignalDecoder::new();
    'feed: for piece in bytes.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let encoded = frame.encode().expect("a decoded frame encodes");
                    assert!(encoded.len() <= 14 + MAX_BODY);
                    let mut again = SignalDecoder::new();
                    again.push(&encoded);
                    let again = again.next_frame().expect("re-encoded bytes decode");
                    let again = again.expect("a whole frame");
                    assert_eq!((again.op, again.request), (frame.op, frame.request));
                    // serde_json (without its `float_roundtrip` feature) may read a printed
                    // float back as its neighbour: bodies with floats match in shape only.
                    if has_float(&frame.body) {
                        assert_eq!(shape(&again.body), shape(&frame.body));
                    } else {
                        assert_eq!(again.body, frame.body);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
}

/// The signal secret of the `signal_auth` target (id [`SIGNAL_ID`]), as in the example of
/// `docs/SIGNAL.md`.
pub const SIGNAL_SECRET: [u8; 32] = [0x11; 32];
/// The app id the target's server expects and its client registers as.
pub const SIGNAL_ID: u64 = 3;
/// The target server's nonce.
pub const SIGNAL_SERVER_NONCE: Nonce = Nonce([0x22; 32]);
/// The target client's nonce.
pub const SIGNAL_CLIENT_NONCE: Nonce = Nonce([0x33; 32]);

/// What the opening made of an input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    /// The server accepted a registration.
    pub registered: bool,
    /// The client authenticated the server.
    pub authenticated: bool,
}

/// Signal's opening (`control::signal::auth`): every decoded frame goes to the server's
/// check (it expects id 3 with [`SIGNAL_SECRET`] and sent [`SIGNAL_SERVER_NONCE`]) and to a
/// client's state machine (id 3, the same secret, [`SIGNAL_CLIENT_NONCE`]) until that
/// fails or authenticates. A registration is accepted only with the proof the secret
/// makes over its nonces, and its echo then authenticates a client with those nonces (and
/// the request id a client registers with); the
/// client registers only after a `Hello`, with a registration the server accepts, and
/// authenticates only on the proof the secret makes.
pub fn signal_auth(data: &[u8]) {
    let _ = signal_opening(data);
}

/// The body of [`signal_auth`], saying what happened (the seed checks use it).
pub fn signal_opening(data: &[u8]) -> Opening {
    let (chunk, bytes) = split(data);
    let secret = Secret::from_bytes(SIGNAL_SECRET);
    let expected = |id: u64| (id == SIGNAL_ID).then(|| secret.clone());
    let mut client = Some(ClientAuth::new(
        SIGNAL_ID,
        42,
        secret.clone(),
        SIGNAL_CLIENT_NONCE,
    ));
    let mut server_nonce = None;
    let mut opening = Opening::default();
    let mut decoder = SignalDecoder::new();
    'frames: for piece in bytes.chunks(chunk) {
        decoder.push(piece);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => break 'frames,
            };
            server_side(&frame, &secret, expected, &mut opening);
            let Some(auth) = client.as_mut() else {
                continue;
            };
            match auth.handle(&frame) {
                Ok(Step::Send(registration)) => {
                    let nonce = auth::hello_nonce(&frame).expect("registers only after a Hello");
                    server_nonce = Some(nonce);
                    let accepted = auth::check_registration(&nonce, &registration, expected)
                        .expect("the client's registration is accepted");
                    assert_eq!(accepted.id, SIGNAL_ID);
                }
                Ok(Step::Authenticated) => {
                    let nonce = server_nonce.expect("authenticated after a Hello");
                    let proof = frame.body.get("Proof").and_then(Value::as_str);
                    let right = auth::proof(
                        &secret,
                        auth::SERVER_LABEL,
                        SIGNAL_ID,
                        &nonce,
                        &SIGNAL_CLIENT_NONCE,
                    );
                    assert_eq!(proof.and_then(Proof::from_hex), Some(right));
                    opening.authenticated = true;
                    client = None;
                }
                Err(_) => client = None,
            }
        }
    }
    opening
}

/// The server's check of one frame: accepted only with the right proof, and then its
/// echo authenticates a client with the registration's nonces.
fn server_side(
    frame: &SignalFrame,
    secret: &Secret,
    expected: impl FnOnce(u64) -> Option<Secret>,
    opening: &mut Opening,
) {
    let Ok(accepted) = auth::check_registration(&SIGNAL_SERVER_NONCE, frame, expected) else {
        return;
    };
    assert_eq!(accepted.id, SIGNAL_ID);
    let field = |key: &str| frame.body.get(key).and_then(Value::as_str);
    let nonce = field("Nonce").and_then(Nonce::from_hex).expect("a nonce");
    let right = auth::proof(
        secret,
        auth::CLIENT_LABEL,
        SIGNAL_ID,
        &SIGNAL_SERVER_NONCE,
        &nonce,
    );
    assert_eq!(field("Proof").and_then(Proof::from_hex), Some(right));
    let mut client = ClientAuth::new(SIGNAL_ID, 42, secret.clone(), nonce);
    assert!(matches!(
        client.handle(&auth::hello(&SIGNAL_SERVER_NONCE)),
        Ok(Step::Send(_))
    ));
    // The echo carries the registration's request id; a client registers with 1.
    if frame.request == auth::REG_REQUEST {
        assert_eq!(client.handle(&accepted.echo), Ok(Step::Authenticated));
    }
    opening.registered = true;
}

/// Whether a JSON value holds a float anywhere.
fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

/// A JSON value with every number replaced by 0: its shape.
fn shape(value: &Value) -> Value {
    match value {
        Value::Number(_) => Value::from(0),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        other => other.clone(),
    }
}

/// A control-socket request line: malformed, unsupported with its id, or a request that
/// serialises back to a line that parses to the same request.
pub fn ctl_request(data: &[u8]) {
    match parse_request(data) {
        ParsedRequest::Request(request) => {
            let line = serde_json::to_vec(&request).expect("a request serialises");
            assert_eq!(
                parse_request(&line),
                ParsedRequest::Request(request.clone())
            );
            let _: Request = request;
        }
        ParsedRequest::Unsupported { .. } | ParsedRequest::Malformed { .. } => {}
    }
}

/// The metrics server's request parser (`control::metrics::http::parse_request`), on the
/// bytes received so far: a whole head is within the bytes and at most `MAX_HEAD`, and the
/// same head is found with any bytes after it (the next request's); an incomplete head is
/// shorter than `MAX_HEAD`; an error stays an error with more bytes after it.
pub fn metrics_http(data: &[u8]) {
    use skywire_control::metrics::http::{MAX_HEAD, Parsed, parse_request};
    let parsed = parse_request(data);
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"GET /metrics HTTP/1.1\r\n\r\n");
    match parsed {
        Parsed::Request { request, len } => {
            assert!(len <= data.len() && len <= MAX_HEAD);
            let head = data.get(..len).expect("len within data");
            assert_eq!(parse_request(head), Parsed::Request { request, len });
            assert_eq!(parse_request(&longer), Parsed::Request { request, len });
        }
        Parsed::Incomplete => assert!(data.len() < MAX_HEAD),
        Parsed::Error(e) => assert_eq!(parse_request(&longer), Parsed::Error(e)),
    }
}
