//! The messages of the manager protocol, typed: every request a node sends
//! ([`NodeRequest`]), every request the manager sends ([`ManagerRequest`]), their bodies and
//! their replies, and the errors a reply can carry. Frames turn into these at the edge
//! ([`NodeRequest::parse`], [`ManagerRequest::parse`], [`Frame::reply`]) and back
//! ([`NodeRequest::frame`], [`ManagerRequest::frame`], [`Frame::ok`]); JSON exists only
//! there.
//!
//! Which reply answers which request:
//!
//! | request | reply `ok` body |
//! |---|---|
//! | [`NodeRequest::Register`] | [`Registered`] |
//! | [`NodeRequest::RouteAdd`] | [`RouteInfo`] (once every hop acknowledged) |
//! | [`NodeRequest::RouteList`] | [`RouteList`] |
//! | [`NodeRequest::Nodes`] | [`Mesh`] |
//! | [`NodeRequest::LinkAdd`] | [`LinkAdded`] |
//! | every other request, both ways | nothing (`null`) |

use core::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::auth::Bytes32;
use super::frame::Frame;
use super::kind;
use crate::manager::topology::RouteWeight;
use skywire_dataplane::crypto::kdf;

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
    /// The node asked for views (`NODES`, `ROUTE_LIST`) faster than the manager serves
    /// them; the message says when to ask again.
    RateLimited,
    /// A route's path crosses a link or node that went down (only in
    /// [`RouteInfo::reason`]).
    PathDown,
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
            Self::RateLimited => "rate_limited",
            Self::PathDown => "path_down",
        }
    }

    pub(super) fn from_name(name: &str) -> Self {
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
            "rate_limited" => Self::RateLimited,
            "path_down" => Self::PathDown,
            _ => Self::BadRequest,
        }
    }
}

/// An error reply, or a request that cannot be served; as JSON (in [`RouteInfo::reason`])
/// `{"kind": "no_path", "message": "..."}`, an unknown kind read as `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{}: {message}", kind.as_str())]
pub struct ProtoError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
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

/// The manager's id of a whole route, the same at every hop: 64 bits, written as 16
/// lower-case hex digits everywhere, in text and in JSON (a string: `"00000000000004d2"`),
/// on the wire, in the control socket's replies and in every command's output. Read from
/// up to 16 hex digits in either case, with or without `0x`, and, in JSON, also from a
/// number, as ids were written before they became strings. Not to be
/// confused with the per-hop [`skywire_dataplane::wire::RouteId`] in every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeshRouteId(pub u64);

impl Serialize for MeshRouteId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MeshRouteId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MeshRouteId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a route id: a string of up to 16 hex digits")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MeshRouteId, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<MeshRouteId, E> {
                Ok(MeshRouteId(n))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl MeshRouteId {
    /// The id of a route owned by `owner`, from the nonce it picked: the first 8 bytes of
    /// `derive(CTX_ROUTE_ID, [owner, nonce])`, big-endian. `None` for the one nonce in 2^64
    /// that gives 0, which is no route's id.
    pub fn derive(owner: &PublicKey, nonce: &Bytes32) -> Option<Self> {
        let key = kdf::derive(super::CTX_ROUTE_ID, &[owner.as_bytes(), &nonce.0]);
        let (first, _) = key.split_first_chunk::<8>()?;
        Some(Self(u64::from_be_bytes(*first))).filter(|id| id.0 != 0)
    }
}

impl fmt::Display for MeshRouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Text that is not a route id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a route id is up to 16 hex digits (as `route ls` shows it), not `{0}`")]
pub struct BadRouteId(pub String);

impl FromStr for MeshRouteId {
    type Err = BadRouteId;

    /// Up to 16 hex digits in either case (as [`fmt::Display`] writes them), with or
    /// without `0x`.
    fn from_str(text: &str) -> Result<Self, BadRouteId> {
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(BadRouteId(text.to_owned()));
        }
        u64::from_str_radix(digits, 16)
            .map(Self)
            .map_err(|_| BadRouteId(text.to_owned()))
    }
}

/// Where a route stands, in [`RouteInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    /// Set up on every hop and carrying traffic.
    Active,
    /// Its path crosses something that died, or a new path is being set up.
    Repairing,
    /// No path now; tried again as the mesh changes.
    Waiting,
}

impl RouteState {
    /// The name as shown and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Repairing => "repairing",
            Self::Waiting => "waiting",
        }
    }
}

impl fmt::Display for RouteState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reply to `LINK_ADD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkAdded {
    /// Routes may use the link now: the manager's config has it, or both ends declared it.
    pub usable: bool,
}

/// What a node asks for when it adds a route; also how it reports its routes on
/// registration (with `id` set).
///
/// The route's id is not chosen by the manager: it is [`MeshRouteId::derive`] of the
/// source's key and the `nonce` the source picked, so it names its owner. After a manager
/// restart only the node whose key the id was derived from can claim the route again;
/// the relays and the destination, which learn the id from `INSTALL`, cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The route's id, when re-registering a route the node owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MeshRouteId>,
    /// The source's nonce the id is derived from (required by the manager; the node's
    /// agent fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<Bytes32>,
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
    pub route: MeshRouteId,
    /// The rule's incoming id at this node.
    pub in_id: u32,
    /// Whether it is a route end (not a relay rule).
    #[serde(default)]
    pub end: bool,
}

/// `REGISTER`: who the node is on the mesh. The key is the connection's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The neighbour's transport address as this node reaches it (where its answered
    /// probes went): on a multi-homed neighbour, the address on this link, which may not
    /// be the one it registered. The manager uses it for this node's rules towards and
    /// from that neighbour. Absent from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
}

/// `LINK_REPORT`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbours {
    /// The node's neighbours that are online.
    pub neighbours: Vec<Neighbour>,
}

/// `LINK_ADD` / `LINK_REMOVE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    /// The other end of the link.
    pub peer: Key,
}

/// `ROUTE_REMOVE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRef {
    /// The route.
    pub route: MeshRouteId,
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
        /// The id packets carry when they reach the peer (the peer's `in_id`). With
        /// `in_id` it binds the route's handshakes to the route.
        peer_in_id: u32,
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
    pub route: MeshRouteId,
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
    pub route: MeshRouteId,
    /// Incoming ids of its rules at this hop.
    pub in_ids: Vec<u32>,
}

/// A route as the manager reports it (`ROUTE_ADD` reply, `ROUTE_LIST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The route's id.
    pub id: MeshRouteId,
    /// Its source.
    pub src: Key,
    /// Its destination.
    pub dst: Key,
    /// The current path, source first; empty while it has none.
    pub path: Vec<Key>,
    /// Active, being repaired, or waiting for a path.
    pub state: RouteState,
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
    /// Why it is not active: the last failure (no path, a hop that refused or did not
    /// acknowledge, a link or node on its path that went down). Absent while active, and
    /// from managers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ProtoError>,
    /// Milliseconds until the manager tries again, when an attempt is timed (none while a
    /// setup is under way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// `ROUTE_LIST` reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteList {
    /// Routes the node is an end of.
    pub routes: Vec<RouteInfo>,
}

/// A node in the manager's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A link's state in the manager's view. Only an `up` link carries routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Declared by one end only: the other end has not declared it (nor the config).
    OneEnd,
    /// An end is not connected to the manager.
    Offline,
    /// Both ends are online, and no authenticated probe was answered since either
    /// registered: nothing is measured yet.
    #[default]
    Unproven,
    /// An end's probe was answered: routes may use it.
    Up,
    /// Its probes are no longer answered.
    Down,
}

impl LinkState {
    /// The name as `nodes` prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OneEnd => "one end only",
            Self::Offline => "offline",
            Self::Unproven => "unproven",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// A link in the manager's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// One end.
    pub a: Key,
    /// The other end.
    pub b: Key,
    /// `config` or the node that declared it.
    pub source: String,
    /// Usable for routes: `state` is [`LinkState::Up`].
    pub up: bool,
    /// What the manager knows of it.
    #[serde(default)]
    pub state: LinkState,
    /// Measured round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// Measured loss, 0 to 1.
    pub loss: f32,
}

/// `NODES` reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mesh {
    /// Every node the manager knows.
    pub nodes: Vec<NodeInfo>,
    /// Every link.
    pub links: Vec<LinkInfo>,
}

/// A request from a node to the manager.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRequest {
    /// Who the node is: endpoint, TUN addresses, links, owned routes, held rules.
    Register(Register),
    /// What its links measure.
    LinkReport(LinkReport),
    /// Set up a route from this node.
    RouteAdd(RouteRequest),
    /// Remove one of this node's routes.
    RouteRemove(RouteRef),
    /// The routes this node is an end of.
    RouteList,
    /// The manager's view of the mesh.
    Nodes,
    /// Declare a link from this node.
    LinkAdd(LinkChange),
    /// Withdraw a link this node declared.
    LinkRemove(LinkChange),
    /// Still alive.
    Heartbeat,
}

impl NodeRequest {
    /// The frame kind.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Register(_) => kind::REGISTER,
            Self::LinkReport(_) => kind::LINK_REPORT,
            Self::RouteAdd(_) => kind::ROUTE_ADD,
            Self::RouteRemove(_) => kind::ROUTE_REMOVE,
            Self::RouteList => kind::ROUTE_LIST,
            Self::Nodes => kind::NODES,
            Self::LinkAdd(_) => kind::LINK_ADD,
            Self::LinkRemove(_) => kind::LINK_REMOVE,
            Self::Heartbeat => kind::HEARTBEAT,
        }
    }

    /// The request as a frame with request id `id`.
    pub fn frame(&self, id: u64) -> Frame {
        let kind = self.kind();
        match self {
            Self::Register(body) => Frame::request(kind, id, body),
            Self::LinkReport(body) => Frame::request(kind, id, body),
            Self::RouteAdd(body) => Frame::request(kind, id, body),
            Self::RouteRemove(body) => Frame::request(kind, id, body),
            Self::LinkAdd(body) | Self::LinkRemove(body) => Frame::request(kind, id, body),
            Self::RouteList | Self::Nodes | Self::Heartbeat => Frame::request(kind, id, &()),
        }
    }

    /// A request frame (not a reply), typed: an unknown kind or a body of the wrong shape
    /// is a `bad_request`. Requests without a body ignore whatever body they carry.
    pub fn parse(frame: &Frame) -> Result<Self, ProtoError> {
        Ok(match frame.kind {
            kind::REGISTER => Self::Register(frame.parse()?),
            kind::LINK_REPORT => Self::LinkReport(frame.parse()?),
            kind::ROUTE_ADD => Self::RouteAdd(frame.parse()?),
            kind::ROUTE_REMOVE => Self::RouteRemove(frame.parse()?),
            kind::ROUTE_LIST => Self::RouteList,
            kind::NODES => Self::Nodes,
            kind::LINK_ADD => Self::LinkAdd(frame.parse()?),
            kind::LINK_REMOVE => Self::LinkRemove(frame.parse()?),
            kind::HEARTBEAT => Self::Heartbeat,
            other => {
                return Err(ProtoError::new(
                    ErrorKind::BadRequest,
                    format!("unknown request kind {other:#04x}"),
                ));
            }
        })
    }
}

/// A request from the manager to a node.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerRequest {
    /// Install the rules of one route at this hop, all or nothing.
    Install(Install),
    /// Remove rules of one route at this hop (idempotent).
    Remove(Remove),
    /// The node's neighbours and where to probe them (the whole list).
    Neighbours(Neighbours),
}

impl ManagerRequest {
    /// The frame kind.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Install(_) => kind::INSTALL,
            Self::Remove(_) => kind::REMOVE,
            Self::Neighbours(_) => kind::NEIGHBOURS,
        }
    }

    /// The request as a frame with request id `id`.
    pub fn frame(&self, id: u64) -> Frame {
        let kind = self.kind();
        match self {
            Self::Install(body) => Frame::request(kind, id, body),
            Self::Remove(body) => Frame::request(kind, id, body),
            Self::Neighbours(body) => Frame::request(kind, id, body),
        }
    }

    /// A request frame (not a reply), typed: an unknown kind or a body of the wrong shape
    /// is a `bad_request`.
    pub fn parse(frame: &Frame) -> Result<Self, ProtoError> {
        Ok(match frame.kind {
            kind::INSTALL => Self::Install(frame.parse()?),
            kind::REMOVE => Self::Remove(frame.parse()?),
            kind::NEIGHBOURS => Self::Neighbours(frame.parse()?),
            other => {
                return Err(ProtoError::new(
                    ErrorKind::BadRequest,
                    format!("unknown request kind {other:#04x}"),
                ));
            }
        })
    }
}
