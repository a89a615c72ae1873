//! The node-manager protocol: frames, the key proof that opens a connection, the per-frame
//! MAC that follows it, and the typed message bodies. Sans-IO: bytes in, frames out.
//!
//! ```text
//! offset  size  field
//! 0       4     length: u32 big-endian, the bytes after this field
//! 4       1     version: 1
//! 5       1     kind: a request kind (see [`kind`]), | 0x80 in its reply
//! 6       8     request id: u64 big-endian, chosen by the requester, echoed in the reply
//! 14      n     body: UTF-8 JSON, or nothing
//! 14+n    16    tag (only after the key proof): BLAKE3 keyed hash of
//!               (sequence number u64 BE || bytes 4..14+n), first 16 bytes
//! ```
//!
//! A frame is at most [`MAX_FRAME`] bytes after the length field. The decoder refuses a
//! length out of range, an unknown version, a bad tag and a body that is not JSON before it
//! buffers more than one frame; the connection is then closed, and only that connection.
//!
//! Opening a connection (`docs/PROTOCOL.md` §11):
//!
//! 1. manager → node `HELLO` (no tag): `{"version": 1, "manager": KEY, "nonce": HEX32}`.
//! 2. node → manager `AUTH` (no tag): `{"node": KEY, "nonce": HEX32, "proof": HEX32}`.
//! 3. manager → node `AUTH` reply (no tag): `{"ok": {"proof": HEX32}}` or an error.
//!
//! Both sides compute `k = derive(CTX_AUTH, [dh(node, manager), manager, node, nonce_m,
//! nonce_n])`, where `dh` is X25519 of the node's and the manager's static keys. The node's
//! proof is `keyed_hash(k, "node proof")`, the manager's `keyed_hash(k, "manager proof")`: each
//! side shows it holds its private key, so a node's identity comes only from that proof,
//! and a node knows it talks to the manager it was configured with. From then on every
//! frame carries a tag under `derive(CTX_NODE_TO_MANAGER, [k])` or
//! `derive(CTX_MANAGER_TO_NODE, [k])`, over an implicit sequence number per direction: a
//! frame cannot be forged, replayed, reordered or dropped without the connection closing.
//! The bodies are not encrypted (they carry addresses and route ids, no secrets).

use core::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use skywire_dataplane::crypto::kdf;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::route::Prefix;

use super::topology::RouteWeight;

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;

/// The largest frame after the length field, in bytes (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Bytes after the length field before the body: version, kind, request id.
pub const HEADER_AFTER_LEN: usize = 10;

/// Bytes of the MAC tag on every frame after the key proof.
pub const TAG_LEN: usize = 16;

/// Bit set in the kind of a reply.
pub const REPLY: u8 = 0x80;

/// Key derivation contexts of this protocol (BLAKE3 `derive_key`).
pub const CTX_AUTH: &str = "skywire v1 2026-11-21 manager connection key";
/// MAC key for frames from the node to the manager.
pub const CTX_NODE_TO_MANAGER: &str = "skywire v1 2026-11-21 manager mac node to manager";
/// MAC key for frames from the manager to the node.
pub const CTX_MANAGER_TO_NODE: &str = "skywire v1 2026-11-21 manager mac manager to node";

/// Frame kinds. A reply has the request's kind | [`REPLY`].
pub mod kind {
    /// Manager → node, first frame: version, the manager's key and a nonce.
    pub const HELLO: u8 = 0x01;
    /// Node → manager: the node's key, nonce and proof.
    pub const AUTH: u8 = 0x02;
    /// Node → manager: transport endpoint, TUN prefixes, declared links, owned routes,
    /// held rules and reserved ids.
    pub const REGISTER: u8 = 0x10;
    /// Node → manager: measured links.
    pub const LINK_REPORT: u8 = 0x11;
    /// Node → manager: set up a route from this node.
    pub const ROUTE_ADD: u8 = 0x12;
    /// Node → manager: remove one of this node's routes.
    pub const ROUTE_REMOVE: u8 = 0x13;
    /// Node → manager: the routes this node is an end of.
    pub const ROUTE_LIST: u8 = 0x14;
    /// Node → manager: the manager's view of the mesh.
    pub const NODES: u8 = 0x15;
    /// Node → manager: declare a link from this node.
    pub const LINK_ADD: u8 = 0x16;
    /// Node → manager: withdraw a link this node declared.
    pub const LINK_REMOVE: u8 = 0x17;
    /// Node → manager: still alive (empty body, empty reply).
    pub const HEARTBEAT: u8 = 0x18;
    /// Manager → node: install the rules of one route at this hop, all or nothing.
    pub const INSTALL: u8 = 0x20;
    /// Manager → node: remove rules of one route at this hop (idempotent).
    pub const REMOVE: u8 = 0x21;
    /// Manager → node: the node's neighbours and where to probe them.
    pub const NEIGHBOURS: u8 = 0x22;
}

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The kind, with [`REPLY`] set in replies.
    pub kind: u8,
    /// The request id.
    pub id: u64,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Frame {
    /// A request of `kind` with a typed body.
    pub fn request<T: Serialize>(kind: u8, id: u64, body: &T) -> Self {
        Self {
            kind,
            id,
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    /// The successful reply to this request.
    pub fn ok<T: Serialize>(kind: u8, id: u64, body: &T) -> Self {
        let ok = serde_json::to_value(body).unwrap_or(Value::Null);
        Self {
            kind: kind | REPLY,
            id,
            body: serde_json::json!({ "ok": ok }),
        }
    }

    /// An error reply to a request of `kind`.
    pub fn error(kind: u8, id: u64, error: &ProtoError) -> Self {
        Self {
            kind: kind | REPLY,
            id,
            body: serde_json::json!({ "error": { "kind": error.kind.as_str(), "message": error.message } }),
        }
    }

    /// True for replies.
    pub fn is_reply(&self) -> bool {
        self.kind & REPLY != 0
    }

    /// The kind without the reply bit.
    pub fn base_kind(&self) -> u8 {
        self.kind & !REPLY
    }

    /// The body of a request, typed.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        T::deserialize(&self.body)
            .map_err(|e| ProtoError::new(ErrorKind::BadRequest, format!("bad body: {e}")))
    }

    /// The `ok` of a reply, typed, or its error.
    pub fn reply<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        if let Some(error) = self.body.get("error") {
            let kind = error
                .get("kind")
                .and_then(Value::as_str)
                .map_or(ErrorKind::BadRequest, ErrorKind::from_name);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(ProtoError { kind, message });
        }
        let ok = self.body.get("ok").cloned().unwrap_or(Value::Null);
        T::deserialize(ok)
            .map_err(|e| ProtoError::new(ErrorKind::BadRequest, format!("bad reply: {e}")))
    }
}

/// Typed error kinds carried in error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body does not fit the request.
    BadRequest,
    /// The key proof failed, or a request came before it.
    Unauthenticated,
    /// The key is not allowed to register, or the request is about another node.
    NotAllowed,
    /// No route with this id (belonging to the requester).
    UnknownRoute,
    /// No node with this key is known.
    UnknownNode,
    /// No path satisfies the constraints.
    NoPath,
    /// A hop refused or did not acknowledge its rules; nothing was left installed.
    SetupFailed,
    /// A route id is already in use at this hop.
    IdInUse,
    /// The request was not answered in time.
    Timeout,
    /// The service is not reachable (the node has no manager connection).
    Unavailable,
}

impl ErrorKind {
    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::NotAllowed => "not_allowed",
            Self::UnknownRoute => "unknown_route",
            Self::UnknownNode => "unknown_node",
            Self::NoPath => "no_path",
            Self::SetupFailed => "setup_failed",
            Self::IdInUse => "id_in_use",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
        }
    }

    fn from_name(name: &str) -> Self {
        match name {
            "unauthenticated" => Self::Unauthenticated,
            "not_allowed" => Self::NotAllowed,
            "unknown_route" => Self::UnknownRoute,
            "unknown_node" => Self::UnknownNode,
            "no_path" => Self::NoPath,
            "setup_failed" => Self::SetupFailed,
            "id_in_use" => Self::IdInUse,
            "timeout" => Self::Timeout,
            "unavailable" => Self::Unavailable,
            _ => Self::BadRequest,
        }
    }
}

/// An error reply, or a request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct ProtoError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl ProtoError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Why bytes are not a frame. Any of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is below the header's size or above [`MAX_FRAME`].
    #[error("frame length out of range")]
    Length,
    /// The version byte is not [`VERSION`].
    #[error("unsupported manager protocol version")]
    Version,
    /// The MAC tag does not verify.
    #[error("frame authentication failed")]
    Tag,
    /// The body is not JSON.
    #[error("frame body is not JSON")]
    Body,
}

/// One direction's MAC state: the key and the next sequence number.
#[derive(Clone)]
pub struct Mac {
    key: [u8; 32],
    seq: u64,
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac(<key>, seq {})", self.seq)
    }
}

impl Mac {
    fn tag(&mut self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&self.seq.to_be_bytes());
        hasher.update(bytes);
        self.seq = self.seq.wrapping_add(1);
        let mut tag = [0u8; TAG_LEN];
        hasher.finalize_xof().fill(&mut tag);
        tag
    }
}

/// Encode `frame`, with a tag when `mac` is given.
pub fn encode(frame: &Frame, mac: Option<&mut Mac>) -> Result<Vec<u8>, FrameError> {
    let body = if frame.body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&frame.body).map_err(|_| FrameError::Body)?
    };
    let tag_len = if mac.is_some() { TAG_LEN } else { 0 };
    let len = HEADER_AFTER_LEN + body.len() + tag_len;
    if len > MAX_FRAME {
        return Err(FrameError::Length);
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(
        &u32::try_from(len)
            .map_err(|_| FrameError::Length)?
            .to_be_bytes(),
    );
    out.push(VERSION);
    out.push(frame.kind);
    out.extend_from_slice(&frame.id.to_be_bytes());
    out.extend_from_slice(&body);
    if let Some(mac) = mac {
        let tag = mac.tag(out.get(4..).unwrap_or_default());
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// The largest frame before the key proof (`HELLO`, `AUTH` and its reply are far
/// smaller): a peer that has proved nothing cannot make a connection hold 1 MiB.
pub const MAX_AUTH_FRAME: usize = 4096;

/// Accumulates bytes from a connection and yields whole frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder taking frames up to [`MAX_FRAME`].
    pub fn new() -> Self {
        Self::with_limit(MAX_FRAME)
    }

    /// An empty decoder taking frames up to `limit` bytes after the length field.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit: limit.min(MAX_FRAME),
        }
    }

    /// Change the largest frame accepted (after the key proof: [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame (`Ok(None)`: more bytes needed), checking its tag when `mac` is
    /// given. After an error the stream is unusable: close the connection.
    pub fn next_frame(&mut self, mac: Option<&mut Mac>) -> Result<Option<Frame>, FrameError> {
        let Some(len_bytes) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len =
            usize::try_from(u32::from_be_bytes(*len_bytes)).map_err(|_| FrameError::Length)?;
        let tag_len = if mac.is_some() { TAG_LEN } else { 0 };
        if !(HEADER_AFTER_LEN + tag_len..=self.limit).contains(&len) {
            return Err(FrameError::Length);
        }
        if let Some(&version) = self.buf.get(4)
            && version != VERSION
        {
            return Err(FrameError::Version);
        }
        let Some(whole) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        let (content, tag) = whole.split_at(len - tag_len);
        if let Some(mac) = mac {
            let expected = mac.tag(content);
            if !constant_time_eq(&expected, tag) {
                return Err(FrameError::Tag);
            }
        }
        let (header, body) = content.split_at(HEADER_AFTER_LEN);
        let kind = header.get(1).copied().ok_or(FrameError::Length)?;
        let id = header
            .get(2..10)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or(FrameError::Length)?;
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|_| FrameError::Body)?
        };
        self.buf.drain(..4 + len);
        Ok(Some(Frame { kind, id, body }))
    }
}

/// Read from `stream` until `decoder` yields a frame, giving up at `deadline` if one is
/// given (an absolute limit: a peer trickling bytes cannot stretch it). An error, or the
/// stream ending, is the connection's end, with the reason.
pub fn read_frame(
    stream: &mut std::net::TcpStream,
    decoder: &mut Decoder,
    mut mac: Option<&mut Mac>,
    deadline: Option<std::time::Instant>,
) -> Result<Frame, String> {
    use std::io::Read as _;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match decoder.next_frame(mac.as_deref_mut()) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("timed out".to_owned());
            }
            stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
        }
        match stream.read(&mut buf) {
            Ok(0) if decoder.buffered() > 0 => {
                return Err("connection closed in the middle of a frame".to_owned());
            }
            Ok(0) => return Err("closed".to_owned()),
            Ok(n) => decoder.push(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes, as hex on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes32(pub [u8; 32]);

impl Bytes32 {
    /// Fresh random bytes.
    pub fn random() -> Result<Self, skywire_dataplane::crypto::keys::RngError> {
        let mut b = [0u8; 32];
        skywire_dataplane::crypto::keys::fill_random(&mut b)?;
        Ok(Self(b))
    }
}

impl Serialize for Bytes32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for Bytes32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // The same 64-hex-digit form as a public key.
        PublicKey::from_str(&text)
            .map(|k| Self(*k.as_bytes()))
            .map_err(|_| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// A public key on the wire: 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub PublicKey);

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_str(&text)
            .map(Key)
            .map_err(|_| serde::de::Error::custom("expected a public key: 64 hex digits"))
    }
}

/// An IP prefix on the wire: `10.77.0.1/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WirePrefix(pub Prefix);

impl Serialize for WirePrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for WirePrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Prefix::from_str(&text)
            .map(WirePrefix)
            .map_err(|_| serde::de::Error::custom("expected an IP prefix"))
    }
}

/// The first frame on a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol version.
    pub version: u8,
    /// The manager's static public key.
    pub manager: Key,
    /// The manager's nonce.
    pub nonce: Bytes32,
}

/// The node's key proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The node's static public key.
    pub node: Key,
    /// The node's nonce.
    pub nonce: Bytes32,
    /// `keyed_hash(k, "node proof")`.
    pub proof: Bytes32,
}

/// The manager's proof, in the reply to [`Auth`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthOk {
    /// `keyed_hash(k, "manager proof")`.
    pub proof: Bytes32,
}

/// The keys an authenticated connection runs on.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// The node's proof.
    pub node_proof: Bytes32,
    /// The manager's proof.
    pub manager_proof: Bytes32,
    /// MAC of frames from the node.
    pub node_to_manager: Mac,
    /// MAC of frames from the manager.
    pub manager_to_node: Mac,
}

/// The key proof and the MAC keys of one connection, from either side: `local` is the
/// node's private key on the node, the manager's on the manager; `peer` the other's public.
/// `None` when the X25519 result is all zeros (a low-order key: refuse it).
pub fn session_keys(
    local: &PrivateKey,
    peer: &PublicKey,
    manager: &PublicKey,
    node: &PublicKey,
    manager_nonce: &Bytes32,
    node_nonce: &Bytes32,
) -> Option<SessionKeys> {
    let dh = local.diffie_hellman(peer)?;
    let k = kdf::derive(
        CTX_AUTH,
        &[
            &dh,
            manager.as_bytes(),
            node.as_bytes(),
            &manager_nonce.0,
            &node_nonce.0,
        ],
    );
    Some(SessionKeys {
        node_proof: Bytes32(*blake3::keyed_hash(&k, b"node proof").as_bytes()),
        manager_proof: Bytes32(*blake3::keyed_hash(&k, b"manager proof").as_bytes()),
        node_to_manager: Mac {
            key: kdf::derive(CTX_NODE_TO_MANAGER, &[&k]),
            seq: 0,
        },
        manager_to_node: Mac {
            key: kdf::derive(CTX_MANAGER_TO_NODE, &[&k]),
            seq: 0,
        },
    })
}

/// Compare two proofs in constant time.
pub fn proof_matches(a: &Bytes32, b: &Bytes32) -> bool {
    constant_time_eq(&a.0, &b.0)
}

/// What a node asks for when it adds a route; also how it reports its routes on
/// registration (with `id` set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The route's id, when re-registering a route the node owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The other end.
    pub dst: Key,
    /// At least this many links (default: the manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_hops: Option<usize>,
    /// At most this many links (default: the manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<usize>,
    /// Nodes the route must not cross.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<Key>,
    /// The metric (default: the manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<RouteWeight>,
}

/// A rule held by a node, tagged with its route: reported on registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldRule {
    /// The manager's route id.
    pub route: u64,
    /// The rule's incoming id at this node.
    pub in_id: u32,
    /// Whether it is a route end (not a relay rule).
    #[serde(default)]
    pub end: bool,
}

/// `REGISTER`: who the node is on the mesh. The key is the connection's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The transport address other nodes send to.
    pub endpoint: Option<SocketAddr>,
    /// The node's TUN addresses, as host prefixes: what other route ends send to it.
    #[serde(default)]
    pub tun: Vec<WirePrefix>,
    /// Links this node declared (`skywire link add`).
    #[serde(default)]
    pub links: Vec<Key>,
    /// Routes this node owns (it is their source), with their ids.
    #[serde(default)]
    pub routes: Vec<RouteRequest>,
    /// Rules the manager installed earlier that the node still holds.
    #[serde(default)]
    pub rules: Vec<HeldRule>,
    /// Incoming ids in use at the node outside the manager's rules (its config).
    #[serde(default)]
    pub reserved: Vec<u32>,
}

/// The reply to [`Register`]: timing the node must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    /// Send a heartbeat at least this often (milliseconds).
    pub heartbeat_ms: u64,
    /// How long installed rules live without traffic (milliseconds).
    pub expire_ms: u64,
}

/// One link as a node measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkMeasure {
    /// The neighbour.
    pub peer: Key,
    /// Median round trip of the recent probes, microseconds (`None`: no reply yet).
    pub rtt_us: Option<u64>,
    /// Fraction of recent probes lost, 0 to 1.
    pub loss: f32,
    /// Whether any of the last few probes was answered.
    pub up: bool,
}

/// `LINK_REPORT`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkReport {
    /// The node's links.
    pub links: Vec<LinkMeasure>,
}

/// A node's neighbour, from `NEIGHBOURS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    /// Its key.
    pub peer: Key,
    /// Its transport address, to probe.
    pub endpoint: SocketAddr,
}

/// `NEIGHBOURS`: the whole current list (replaces the previous one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbours {
    /// The node's neighbours that are online.
    pub neighbours: Vec<Neighbour>,
}

/// `LINK_ADD` / `LINK_REMOVE`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    /// The other end of the link.
    pub peer: Key,
}

/// `ROUTE_REMOVE`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteId {
    /// The route.
    pub route: u64,
}

/// One rule in an `INSTALL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RuleSpec {
    /// Relay: packets from `prev_hop` with `in_id` leave for `next_hop` with `out_id`.
    Relay {
        /// Incoming id.
        in_id: u32,
        /// Where they must come from.
        prev_hop: SocketAddr,
        /// Outgoing id.
        out_id: u32,
        /// Where they go.
        next_hop: SocketAddr,
    },
    /// Route end: a session with `peer`.
    End {
        /// The other end's key.
        peer: Key,
        /// Destinations routed over it.
        prefixes: Vec<WirePrefix>,
        /// Where packets go first.
        first_hop: SocketAddr,
        /// The id the first hop expects.
        out_id: u32,
        /// The id packets carry when they reach us.
        in_id: u32,
        /// Where they must come from.
        prev_hop: SocketAddr,
    },
}

impl RuleSpec {
    /// The rule's incoming id.
    pub fn in_id(&self) -> u32 {
        match self {
            Self::Relay { in_id, .. } | Self::End { in_id, .. } => *in_id,
        }
    }
}

/// `INSTALL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The route these rules belong to.
    pub route: u64,
    /// The rules of this hop.
    pub rules: Vec<RuleSpec>,
    /// How long they live without traffic (milliseconds).
    pub expire_ms: u64,
}

/// `REMOVE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// The route.
    pub route: u64,
    /// Incoming ids of its rules at this hop.
    pub in_ids: Vec<u32>,
}

/// A route as the manager reports it (`ROUTE_ADD` reply, `ROUTE_LIST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The route's id.
    pub id: u64,
    /// Its source.
    pub src: Key,
    /// Its destination.
    pub dst: Key,
    /// The current path, source first; empty while it has none.
    pub path: Vec<Key>,
    /// `active`, `repairing` or `waiting`.
    pub state: String,
    /// What was asked.
    pub min_hops: usize,
    /// What was asked.
    pub max_hops: usize,
    /// What was asked.
    pub avoid: Vec<Key>,
    /// What was asked.
    pub weight: RouteWeight,
    /// How many times its path was rebuilt.
    pub repairs: u64,
}

/// `ROUTE_LIST` reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteList {
    /// Routes the node is an end of.
    pub routes: Vec<RouteInfo>,
}

/// A node in the manager's view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its key.
    pub key: Key,
    /// Its transport address.
    pub endpoint: Option<SocketAddr>,
    /// Its TUN addresses.
    pub tun: Vec<WirePrefix>,
    /// Connected now.
    pub online: bool,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
}

/// A link in the manager's view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkInfo {
    /// One end.
    pub a: Key,
    /// The other end.
    pub b: Key,
    /// `config` or the node that declared it.
    pub source: String,
    /// Usable for routes.
    pub up: bool,
    /// Measured round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// Measured loss, 0 to 1.
    pub loss: f32,
}

/// `NODES` reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mesh {
    /// Every node the manager knows.
    pub nodes: Vec<NodeInfo>,
    /// Every link.
    pub links: Vec<LinkInfo>,
}

#[cfg(test)]
mod tests;
