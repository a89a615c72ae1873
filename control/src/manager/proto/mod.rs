//! The node-manager protocol: frames, the key proof that opens a connection, the per-frame
//! MAC that follows it, and the typed messages. Sans-IO: bytes in, frames out.
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
//!
//! Modules: [`frame`] (the shared codec with a JSON body and a MAC tag, and reading frames
//! from a connection), [`auth`] (`HELLO`, `AUTH`, the proofs and the MAC keys), and
//! [`messages`] (every request and reply, typed).

pub mod auth;
pub mod frame;
pub mod messages;

pub use auth::{Auth, AuthOk, Bytes32, Hello, SessionKeys, proof_matches, session_keys};
pub use frame::{
    ConnectionEnd, Decoder, Frame, FrameError, MAX_AUTH_FRAME, Mac, encode, read_frame,
};
pub use messages::{
    BadRouteId, ErrorKind, HeldRule, Install, Key, LinkAdded, LinkChange, LinkInfo, LinkMeasure,
    LinkReport, LinkState, ManagerRequest, Mesh, MeshRouteId, Neighbour, Neighbours, NodeInfo,
    NodeRequest, ProtoError, Register, Registered, Remove, RouteInfo, RouteList, RouteRef,
    RouteRequest, RouteState, RuleSpec, WirePrefix,
};

/// The protocol version this code speaks.
pub const VERSION: u8 = 1;

/// The largest frame after the length field, in bytes (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// Bytes after the length field before the body: version, kind, request id.
pub const HEADER_AFTER_LEN: usize = crate::frame::HEADER_AFTER_LEN;

/// Bytes of the MAC tag on every frame after the key proof.
pub const TAG_LEN: usize = 16;

/// Bit set in the kind of a reply.
pub const REPLY: u8 = crate::frame::REPLY;

/// Key derivation contexts of this protocol (BLAKE3 `derive_key`).
pub const CTX_AUTH: &str = "skywire v1 2026-11-21 manager connection key";
/// MAC key for frames from the node to the manager.
pub const CTX_NODE_TO_MANAGER: &str = "skywire v1 2026-11-21 manager mac node to manager";
/// MAC key for frames from the manager to the node.
pub const CTX_MANAGER_TO_NODE: &str = "skywire v1 2026-11-21 manager mac manager to node";
/// A route's id from its owner's key and nonce ([`MeshRouteId::derive`]).
pub const CTX_ROUTE_ID: &str = "skywire v1 2026-12-06 manager route id";

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

#[cfg(test)]
mod tests;
