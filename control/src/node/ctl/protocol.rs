//! The control socket's protocol: JSON requests and responses, one per line.
//!
//! # Framing
//!
//! A connection carries UTF-8 JSON values separated by `\n` (newline-delimited JSON). JSON
//! strings escape newlines, so a value never spans lines. The client sends a request line,
//! the node answers with one response line, and the client may send the next request on the
//! same connection. A request line is at most [`MAX_REQUEST`] bytes (64 KiB, without the
//! newline); blank lines are skipped.
//!
//! # Requests
//!
//! ```json
//! {"id": 1, "op": "status"}
//! ```
//!
//! - `id`: an unsigned 64-bit integer chosen by the client, echoed in the response.
//! - `op`: what to do: `"status"`, and for the node manager and pings `"route_add"`,
//!   `"route_ls"`, `"route_rm"`, `"nodes"`, `"link_add"`, `"link_rm"`, `"ping"`, whose
//!   arguments are further fields of the same object, for example
//!   `{"id": 2, "op": "route_add", "dst": "<64 hex digits>", "min_hops": 3}`; see [`Op`].
//!
//! | op | arguments | `ok` body |
//! |---|---|---|
//! | `status` | | the status below ([`StatusReply`]) |
//! | `route_add` | `dst`, optional `min_hops`, `max_hops`, `avoid` (keys), `weight` (`hops`, `latency`) | the route ([`RouteInfo`]) |
//! | `route_ls` | | `{"routes": [...]}` ([`RouteList`]) |
//! | `route_rm` | `route` (16 hex digits) | `null` |
//! | `nodes` | | `{"nodes": [...], "links": [...]}` ([`Mesh`]) |
//! | `link_add` | `peer` | `{"usable": bool}` ([`LinkAdded`]) |
//! | `link_rm` | `peer` | `null` |
//! | `ping` | `peer` | `{"route", "in_id", "rtt_us", "manager_route"}` ([`PongReply`]) |
//! | `grant` | `peer`, `prefixes` | `null`: `peer` may send from `prefixes` and this node's traffic to them goes to it, beyond its route ends' own (replacing its grant; `[]` takes it back); the VPN apps' op |
//! | `usage` | optional `since`, `until` (`YYYY-MM-DD`, UTC; default today) | the node's usage ledger over those days, brought up to date first ([`UsageReply`]); `unavailable` when the node keeps no state |
//! | `reload` | | what changed ([`ReloadSummary`]): the config file read again, its routes and relay rules applied in one batch (as SIGHUP); `bad_config` with file, line and key when the file is bad, and then nothing changed |
//!
//! A manager route's id ([`MeshRouteId`]) has one form in every request and reply: a string
//! of 16 lower-case hex digits (`"route": "00000000000004d2"`), as `skywire route ls`,
//! `status` and `ping` print it. As input (`route_rm`) up to 16 hex digits in either case,
//! with or without `0x`, are read, and so is a JSON number (the form older nodes wrote).
//!
//! # Responses
//!
//! ```json
//! {"id": 1, "ok": { ...op-specific body... }}
//! {"id": 1, "error": {"kind": "bad_request", "message": "unknown op `frobnicate`"}}
//! ```
//!
//! `id` is the request's id, or `null` when the server answers before it has read a usable
//! request (a malformed line, or a peer that is not allowed in). Error kinds
//! ([`ErrorKind`]):
//!
//! - `permission`: the connecting user is neither root nor the user that owns the socket.
//!   The server sends this first, without reading any request, then closes the connection.
//! - `bad_request`: the line was too long, not UTF-8, not a JSON object with a
//!   64-bit unsigned `id` (these three close the connection after the response), or a
//!   well-formed request with an unknown `op` or bad arguments (the connection stays open,
//!   so a newer client can fall back to an older op).
//! - `unavailable`: the node cannot answer now: its engine has stopped or did not answer in
//!   time, it has no manager connection (manager ops), or the server is already serving its
//!   maximum number of connections (then the connection is closed).
//! - `failed`: the node or its manager refused the request; the message starts with the
//!   manager's error kind (`no_path: ...`, `unknown_route: ...`).
//! - `no_reply`: the request went out over the mesh and nothing came back in time (a
//!   `ping` without a pong); asking again may work.
//! - `bad_config`: a `reload` found the config file bad; the message has its file, line and
//!   key, and the node runs on with the config it had (`skywire reload` exits 78).
//!
//! A connection idle for 5 seconds is closed without a response.
//!
//! # The `status` body
//!
//! ```json
//! {
//!   "public_key": "<64 hex digits>",
//!   "listen": "0.0.0.0:6000",
//!   "tun": "sky0",
//!   "routes": [{
//!     "name": "to-c",
//!     "peer": "<64 hex digits>",
//!     "first_hop": "198.18.0.2:6000",
//!     "out_id": 100,
//!     "in_id": 201,
//!     "prefixes": ["10.77.0.3/32"],
//!     "last_handshake_secs": 3.25,
//!     "handshakes": 1, "replay_window": {"key_id": 3405691582, "next_counter": 812},
//!     "tx_packets": 2330, "tx_bytes": 3565158,
//!     "rx_packets": 812, "rx_bytes": 1268776,
//!     "drops": {"replay": 1, "bad tag": 2, "too short": 0},
//!     "origin": {"kind": "config"},
//!     "idle_secs": null
//!   }],
//!   "relays": [{
//!     "in_id": 100, "prev_hop": "198.18.0.1:6000",
//!     "out_id": 101, "next_hop": "198.18.0.3:6000",
//!     "packets": 2330, "bytes": 3649044,
//!     "origin": {"kind": "manager", "route": "0000000000000009", "expire_after_secs": 30.0},
//!     "idle_secs": 2.0
//!   }],
//!   "drops": {"no route": 0, "not ip": 0},
//!   "expired": 0,
//!   "events_dropped": 0,
//!   "streams": {
//!     "open": 2, "half_open": 0, "listeners": 1, "peers": 1, "memory_bytes": 1048572,
//!     "dialed": 1, "arrived": 1, "reset": 0, "refused": 0, "limited": 0,
//!     "bad_packets": 0, "unknown": 0, "egress_dropped": 0
//!   }
//! }
//! ```
//!
//! `tun` is `null` for a node without a TUN device; `last_handshake_secs` (seconds since the
//! last completed handshake, fractional) is `null` before the first one. `origin` says where
//! a route end or relay rule came from: `{"kind": "config"}` (the config file; never
//! expires) or `{"kind": "manager", "route": ID, "expire_after_secs": S}` (the node
//! manager's route `ID`; removed after `S` seconds without a packet); `idle_secs` is how long
//! no packet matched a manager rule (sampled about once a second), `null` for config rules.
//! `expired` counts manager rules the node removed as idle; `events_dropped` counts engine
//! events (expiries, probe replies, pongs) lost because nobody read them in time. `streams`
//! are apps' streams over the node's stack: those open now, and counters since the node
//! started (`docs/APPS.md`). `retired` holds what removed route ends and relay rules had
//! counted (`tx_packets`, `tx_bytes`, `rx_packets`, `rx_bytes`, `handshakes`, `drops`,
//! `relayed_packets`, `relayed_bytes`), so a node-wide total (the sum over `routes` or
//! `relays` plus `retired`) never goes down when the manager repairs a route or a rule
//! expires; the Prometheus metrics are built that way (`control/src/node/metrics.rs`). A reply
//! without these fields (from an older node) reads as config rules and zero counts. `drops` objects map
//! every drop reason the node knows, zeros included, to its count, in the node's order.
//! Byte counts are payload bytes. Clients ignore fields they do not know, so fields can be
//! added without a version bump.
//!
//! This module is sans-IO; lines are read with [`crate::local::read_line`].

use core::fmt;
use core::str::FromStr;
use std::net::SocketAddr;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{Fwmark, NodeStatus, Origin, RelayStatus, Retired, RouteStatus};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::stack::StackStatus;

use crate::civil::Day;
use crate::manager::proto::{LinkAdded, Mesh, MeshRouteId, RouteInfo, RouteList};
use crate::manager::topology::RouteWeight;
use crate::node::reconnect::ManagerLink;
use crate::node::reload::ReloadSummary;
use crate::node::usage::DayRecord;

/// The longest request line the server reads, in bytes, without its newline.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The longest response line a client reads, in bytes, without its newline: room for
/// thousands of routes and relays.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A request: an id chosen by the client and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the response.
    pub id: u64,
    /// The operation and its arguments.
    #[serde(flatten)]
    pub op: Op,
}

/// What a request asks for: the `op` field, and the op's arguments as sibling fields.
///
/// Arguments are typed here, at the JSON edge: a key that is not 64 hex digits, a weight
/// other than `hops` or `latency`, or a route id that is not hex is a `bad_request` and
/// never reaches the node.
///
/// Adding an op: a variant here (its doc says what it answers), a [`Reply`] variant if it
/// answers something new, its arm in `server::answer`, and a line in the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// A snapshot of the node: answered with a [`StatusReply`].
    Status,
    /// Ask the node manager for a route from this node to `dst`, set up on every hop
    /// before the answer, a [`RouteInfo`] (`docs/PROTOCOL.md` 11.5).
    RouteAdd {
        /// The destination node's public key.
        #[serde(with = "as_text")]
        dst: PublicKey,
        /// At least this many links.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_hops: Option<usize>,
        /// At most this many links.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_hops: Option<usize>,
        /// Nodes the route must not cross.
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "vec_as_text")]
        avoid: Vec<PublicKey>,
        /// What "shortest" means (the manager's default when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<RouteWeight>,
    },
    /// The manager's routes this node is an end of: a [`RouteList`].
    RouteLs,
    /// Remove a route this node owns, on every hop; `route` is its id (16 hex digits).
    /// Answered with `null`.
    RouteRm {
        /// The route's id.
        route: MeshRouteId,
    },
    /// The manager's view of the mesh: a [`Mesh`].
    Nodes,
    /// Declare a link from this node to `peer` to the manager: a [`LinkAdded`].
    LinkAdd {
        /// The other end.
        #[serde(with = "as_text")]
        peer: PublicKey,
    },
    /// Withdraw a link this node declared. Answered with `null`.
    LinkRm {
        /// The other end.
        #[serde(with = "as_text")]
        peer: PublicKey,
    },
    /// One round trip over the route to `peer`, through the route's session: a
    /// [`PongReply`].
    Ping {
        /// The far end's public key.
        #[serde(with = "as_text")]
        peer: PublicKey,
    },
    /// Give `peer` `prefixes` beyond its route ends' own, replacing what it had (an empty
    /// list takes the grant back). Answered with `null`; `failed` when another peer owns
    /// one of the prefixes.
    Grant {
        /// The peer's public key.
        #[serde(with = "as_text")]
        peer: PublicKey,
        /// The granted prefixes.
        #[serde(with = "vec_as_text")]
        prefixes: Vec<Prefix>,
    },
    /// Read the node's config file again and apply what changed in its routes and relay
    /// rules, in one batch (SIGHUP does the same): a [`ReloadSummary`]; `bad_config` (with
    /// file, line and key) when the file is bad, and then nothing changed.
    Reload,
    /// The node's usage ledger from `since` to `until` (both included; each defaults to
    /// today, UTC), brought up to date first: a [`UsageReply`].
    Usage {
        /// The first day.
        #[serde(default)]
        since: Option<Day>,
        /// The last day.
        #[serde(default)]
        until: Option<Day>,
    },
}

/// The answer to [`Op::Usage`]: the node's day records in the period that have figures,
/// oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReply {
    /// The node.
    #[serde(with = "as_text")]
    pub node: PublicKey,
    /// The first day.
    pub since: Day,
    /// The last day.
    pub until: Day,
    /// The days with figures ([`crate::node::usage`]).
    pub days: Vec<DayRecord>,
}

/// A response: the request's id (`None` when there was no usable request) and the outcome.
///
/// `T` is the `ok` body of the op that was asked for: the client knows which op it sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<T> {
    /// The request's id.
    pub id: Option<u64>,
    /// `"ok": body` or `"error": {...}`.
    #[serde(flatten)]
    pub outcome: Outcome<T>,
}

/// The outcome of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// The op's body.
    Ok(T),
    /// Why the op failed.
    Error(ErrorBody),
}

/// The `ok` body of every op, as the server sends it (no tag: the client knows its op,
/// and reads the body as that op's type).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Reply {
    /// The answer to [`Op::Status`].
    Status(Box<StatusReply>),
    /// The answer to [`Op::RouteAdd`]: the route, active on every hop.
    Route(RouteInfo),
    /// The answer to [`Op::RouteLs`].
    Routes(RouteList),
    /// The answer to [`Op::Nodes`].
    Mesh(Mesh),
    /// The answer to [`Op::LinkAdd`].
    LinkAdded(LinkAdded),
    /// The answer to [`Op::Ping`].
    Pong(PongReply),
    /// The answer to ops that return nothing ([`Op::RouteRm`], [`Op::LinkRm`]): `null`.
    Done,
    /// The answer to [`Op::Reload`].
    Reloaded(ReloadSummary),
    /// The answer to [`Op::Usage`].
    Usage(UsageReply),
}

/// A round trip over a route, as [`Op::Ping`] answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PongReply {
    /// The route end's name.
    pub route: String,
    /// The route end's incoming id.
    pub in_id: u32,
    /// The round trip, in microseconds.
    pub rtt_us: u64,
    /// The manager's id of the route (16 hex digits), `null` for a configured route.
    #[serde(default)]
    pub manager_route: Option<MeshRouteId>,
}

/// An error response's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of failure, for programs.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

/// The kinds of error a server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The connecting user may not use this socket.
    Permission,
    /// The request could not be understood.
    BadRequest,
    /// The node cannot answer now: its engine stopped, or it has no manager connection.
    Unavailable,
    /// The node or its manager refused the request (no path, unknown route, a hop that
    /// refused its rules, ...); the message starts with the manager's error kind.
    Failed,
    /// The request went out over the mesh and no answer came back in time (a ping without
    /// a pong): asking again may work.
    NoReply,
    /// A reload found the config file bad (the message has its file, line and key): the
    /// node runs on with the config it had.
    BadConfig,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Permission => "permission",
            Self::BadRequest => "bad_request",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
            Self::NoReply => "no_reply",
            Self::BadConfig => "bad_config",
        })
    }
}

impl<T> Response<T> {
    /// An error response.
    pub fn error(id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            id,
            outcome: Outcome::Error(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

impl<T: Serialize> Response<T> {
    /// The response as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serialising plain data with string keys into a Vec cannot fail; should it ever,
        // answer with a fixed error line rather than panic or send nothing.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"id":null,"error":{"kind":"unavailable","message":"cannot encode the response"}}"#
                .to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// The node's state, as the `status` op returns it: [`NodeStatus`] in typed JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The node's identity.
    #[serde(with = "as_text")]
    pub public_key: PublicKey,
    /// The bound transport address.
    pub listen: SocketAddr,
    /// The TUN device's name, if the node has one.
    pub tun: Option<String>,
    /// Routes this node is an end of.
    pub routes: Vec<RouteReply>,
    /// Relay rules and their counters.
    pub relays: Vec<RelayReply>,
    /// Node-wide drops before any route was found.
    pub drops: Drops,
    /// Manager rules removed because they were idle too long.
    #[serde(default)]
    pub expired: u64,
    /// Engine events lost because the queue was full.
    #[serde(default)]
    pub events_dropped: u64,
    /// Apps' streams.
    #[serde(default)]
    pub streams: StreamsReply,
    /// The firewall mark on the node's transport packets (`MARK/MASK` in hex in the
    /// JSON), if any.
    #[serde(default, with = "opt_as_text")]
    pub fwmark: Option<Fwmark>,
    /// Prefixes granted to peers beyond their route ends' own.
    #[serde(default)]
    pub grants: Vec<GrantReply>,
    /// Handshake initiations are answered with cookie replies, not read (a flood).
    #[serde(default)]
    pub under_load: bool,
    /// The connection to the node manager, if the node has one (`node.manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerLink>,
    /// The counters of route ends and relay rules removed since the node started.
    #[serde(default)]
    pub retired: RetiredReply,
}

/// What removed route ends and relay rules had counted, in a [`StatusReply`]: node-wide
/// totals are the sums over `routes` and `relays` plus these, so they never go down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetiredReply {
    /// Data packets sent on removed route ends.
    pub tx_packets: u64,
    /// Payload bytes sent on them.
    pub tx_bytes: u64,
    /// Data packets received on them.
    pub rx_packets: u64,
    /// Payload bytes received on them.
    pub rx_bytes: u64,
    /// Handshakes they completed.
    pub handshakes: u64,
    /// Their drops, by reason (the reasons of a route end's `drops`).
    pub drops: Drops,
    /// Packets forwarded by removed relay rules.
    pub relayed_packets: u64,
    /// Bytes forwarded by them.
    pub relayed_bytes: u64,
}

impl From<&Retired> for RetiredReply {
    fn from(retired: &Retired) -> Self {
        Self {
            tx_packets: retired.tx_packets,
            tx_bytes: retired.tx_bytes,
            rx_packets: retired.rx_packets,
            rx_bytes: retired.rx_bytes,
            handshakes: retired.handshakes,
            drops: Drops::from(retired.drops().as_slice()),
            relayed_packets: retired.relayed_packets,
            relayed_bytes: retired.relayed_bytes,
        }
    }
}

/// A peer's grant, in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantReply {
    /// The peer.
    #[serde(with = "as_text")]
    pub peer: PublicKey,
    /// What it was granted.
    #[serde(with = "vec_as_text")]
    pub prefixes: Vec<Prefix>,
}

/// Apps' streams on the node, in a [`StatusReply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamsReply {
    /// Streams open (half-open and closing ones included).
    pub open: usize,
    /// Of which still completing their handshake.
    pub half_open: usize,
    /// Listening ports.
    pub listeners: usize,
    /// Peer keys with streams.
    pub peers: usize,
    /// Bytes of stream buffers allocated.
    pub memory_bytes: usize,
    /// Streams dialed from this node, since it started.
    pub dialed: u64,
    /// Streams that arrived at a listener, since it started.
    pub arrived: u64,
    /// Streams that ended with an error.
    pub reset: u64,
    /// Streams refused: nothing listening, or a listener that does not take the key.
    pub refused: u64,
    /// Streams refused over a limit.
    pub limited: u64,
    /// Packets to the stack that were not TCP between a route's link addresses.
    pub bad_packets: u64,
    /// Segments of no stream (answered with a reset).
    pub unknown: u64,
    /// Packets the stack could not queue (replies, dropped; TCP sends them again).
    pub egress_dropped: u64,
    /// Per peer key: its streams now and the stream bytes apps here sent to it and
    /// received from it since the node started (handed-over connections included).
    pub per_peer: Vec<PeerStreamsReply>,
}

/// One peer key's streams, in a [`StreamsReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStreamsReply {
    /// The key.
    #[serde(with = "as_text")]
    pub peer: PublicKey,
    /// Streams with it now.
    pub open: usize,
    /// Stream bytes apps here sent to it.
    pub sent: u64,
    /// Stream bytes apps here received from it.
    pub received: u64,
}

impl StreamsReply {
    /// Whether anything happened: no streams, no listeners, all counters zero.
    pub fn is_idle(&self) -> bool {
        *self == Self::default()
    }
}

impl From<&StackStatus> for StreamsReply {
    fn from(stack: &StackStatus) -> Self {
        let c = &stack.counters;
        Self {
            open: stack.streams,
            half_open: stack.half_open,
            listeners: stack.listeners,
            peers: stack.peers,
            memory_bytes: stack.memory,
            dialed: c.dialed,
            arrived: c.arrived,
            reset: c.reset,
            refused: c.refused,
            limited: c.limited,
            bad_packets: c.bad_packets,
            unknown: c.unknown,
            egress_dropped: c.egress_dropped,
            per_peer: stack
                .traffic
                .iter()
                .map(|(peer, t)| PeerStreamsReply {
                    peer: *peer,
                    open: t.open,
                    sent: t.sent,
                    received: t.received,
                })
                .collect(),
        }
    }
}

/// Where a route end or relay rule came from, in a [`StatusReply`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OriginReply {
    /// The node's config file; never expires.
    #[default]
    Config,
    /// The node manager.
    Manager {
        /// The manager's id of the route (16 hex digits, as `route ls` shows it).
        route: MeshRouteId,
        /// Idle seconds after which the node removes the rule.
        expire_after_secs: f64,
    },
}

impl From<Origin> for OriginReply {
    fn from(origin: Origin) -> Self {
        match origin {
            Origin::Config => Self::Config,
            Origin::Manager {
                route,
                expire_after,
            } => Self::Manager {
                route: MeshRouteId(route),
                expire_after_secs: expire_after.as_secs_f64(),
            },
        }
    }
}

/// One route end, in a [`StatusReply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteReply {
    /// The route's name.
    pub name: String,
    /// The peer's public key.
    #[serde(with = "as_text")]
    pub peer: PublicKey,
    /// Where packets go first.
    pub first_hop: SocketAddr,
    /// The route id at the first hop.
    pub out_id: u32,
    /// The route id packets arrive with here.
    pub in_id: u32,
    /// Destinations routed over it.
    #[serde(with = "vec_as_text")]
    pub prefixes: Vec<Prefix>,
    /// Seconds since the last completed handshake; `None` before the first.
    pub last_handshake_secs: Option<f64>,
    /// Handshakes completed, as either side.
    #[serde(default)]
    pub handshakes: u64,
    /// The current keys' replay window; `None` without keys.
    #[serde(default)]
    pub replay_window: Option<ReplayWindowReply>,
    /// Data packets sent.
    pub tx_packets: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// Data packets received.
    pub rx_packets: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Drops at this route end.
    pub drops: Drops,
    /// Where the route end came from.
    #[serde(default)]
    pub origin: OriginReply,
    /// Seconds since a packet last arrived, for manager routes; `None` for config ones.
    #[serde(default)]
    pub idle_secs: Option<f64>,
}

/// One relay rule, in a [`StatusReply`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RelayReply {
    /// Incoming route id.
    pub in_id: u32,
    /// Where packets come from.
    pub prev_hop: SocketAddr,
    /// Outgoing route id.
    pub out_id: u32,
    /// Where they go.
    pub next_hop: SocketAddr,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Where the rule came from.
    #[serde(default)]
    pub origin: OriginReply,
    /// Seconds since a packet last matched, for manager rules; `None` for config ones.
    #[serde(default)]
    pub idle_secs: Option<f64>,
}

/// Drop counters by reason, in the node's order; a JSON object on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops(pub Vec<(String, u64)>);

impl Drops {
    /// The reasons with a count above zero.
    pub fn nonzero(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| (reason.as_str(), *count))
    }
}

impl From<&[(&'static str, u64)]> for Drops {
    fn from(drops: &[(&'static str, u64)]) -> Self {
        Self(
            drops
                .iter()
                .map(|&(reason, count)| (reason.to_owned(), count))
                .collect(),
        )
    }
}

impl Serialize for Drops {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (reason, count) in &self.0 {
            map.serialize_entry(reason, count)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Drops {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DropsVisitor;
        impl<'de> Visitor<'de> for DropsVisitor {
            type Value = Drops;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of drop reasons to counts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Drops, A::Error> {
                // The size hint comes from the peer: cap it rather than trust it.
                let mut drops = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<String, u64>()? {
                    drops.push(entry);
                }
                Ok(Drops(drops))
            }
        }
        deserializer.deserialize_map(DropsVisitor)
    }
}

impl From<&NodeStatus> for StatusReply {
    fn from(status: &NodeStatus) -> Self {
        Self {
            public_key: status.public_key,
            listen: status.listen,
            tun: status.tun.clone(),
            routes: status.routes.iter().map(RouteReply::from).collect(),
            relays: status.relays.iter().map(RelayReply::from).collect(),
            drops: Drops::from(status.drops.as_slice()),
            expired: status.expired,
            events_dropped: status.events_dropped,
            streams: StreamsReply::from(&status.stack),
            fwmark: status.fwmark,
            grants: status
                .grants
                .iter()
                .map(|(peer, prefixes)| GrantReply {
                    peer: *peer,
                    prefixes: prefixes.clone(),
                })
                .collect(),
            manager: None,
            under_load: status.under_load,
            retired: RetiredReply::from(&status.retired),
        }
    }
}

/// A route end's receiving state, in a [`RouteReply`]: what a replayed packet must leave
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindowReply {
    /// Our key id of the current keys (the peer puts it in every packet it seals).
    pub key_id: u32,
    /// The lowest counter the window has not accepted yet.
    pub next_counter: u64,
}

impl From<&RouteStatus> for RouteReply {
    fn from(route: &RouteStatus) -> Self {
        Self {
            name: route.name.clone(),
            peer: route.peer,
            first_hop: route.first_hop,
            out_id: route.out_id.get(),
            in_id: route.in_id.get(),
            prefixes: route.prefixes.clone(),
            last_handshake_secs: route.last_handshake.map(|age| age.as_secs_f64()),
            handshakes: route.handshakes,
            replay_window: route
                .receiving
                .map(|(key_id, next_counter)| ReplayWindowReply {
                    key_id,
                    next_counter,
                }),
            tx_packets: route.tx_packets,
            tx_bytes: route.tx_bytes,
            rx_packets: route.rx_packets,
            rx_bytes: route.rx_bytes,
            drops: Drops::from(route.drops.as_slice()),
            origin: route.origin.into(),
            idle_secs: route.idle.map(|idle| idle.as_secs_f64()),
        }
    }
}

impl From<&RelayStatus> for RelayReply {
    fn from(relay: &RelayStatus) -> Self {
        Self {
            in_id: relay.in_id.get(),
            prev_hop: relay.prev_hop,
            out_id: relay.out_id.get(),
            next_hop: relay.next_hop,
            packets: relay.packets,
            bytes: relay.bytes,
            origin: relay.origin.into(),
            idle_secs: relay.idle.map(|idle| idle.as_secs_f64()),
        }
    }
}

impl StatusReply {
    /// The reply as indented JSON (what `skywire status --json` prints), without a final
    /// newline.
    pub fn to_json_pretty(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parse a reply from JSON text, as [`Self::to_json_pretty`] or the server writes it.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// A request line, parsed as far as it could be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedRequest {
    /// A request to serve.
    Request(Request),
    /// A JSON object with an id but an unknown op or bad arguments: answer `bad_request`
    /// with the id and keep the connection.
    Unsupported {
        /// The request's id.
        id: u64,
        /// Why it was not understood.
        reason: String,
    },
    /// Not UTF-8, not JSON, or no usable id: answer `bad_request` and close.
    Malformed {
        /// Why it was not understood.
        reason: String,
    },
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> ParsedRequest {
    #[derive(Deserialize)]
    struct Envelope {
        id: u64,
    }
    let text = match core::str::from_utf8(line) {
        Ok(text) => text,
        Err(_) => {
            return ParsedRequest::Malformed {
                reason: "the request is not UTF-8".to_owned(),
            };
        }
    };
    const SHAPE: &str = "a request is a JSON object with an unsigned 64-bit `id` and an `op`";
    // Serde would also read a struct from a JSON array.
    if !text.trim_start().starts_with('{') {
        return ParsedRequest::Malformed {
            reason: SHAPE.to_owned(),
        };
    }
    // First the envelope, which checks the whole line is JSON and finds the id; then the
    // op, whose failure still lets the answer carry the id.
    let id = match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => envelope.id,
        Err(err) => {
            return ParsedRequest::Malformed {
                reason: format!("{SHAPE}: {err}"),
            };
        }
    };
    match serde_json::from_str::<Request>(text) {
        Ok(request) => ParsedRequest::Request(request),
        Err(err) => ParsedRequest::Unsupported {
            id,
            reason: format!("unsupported request: {err}"),
        },
    }
}

/// Serde helpers for values written as their `Display` text and read with `FromStr`.
mod as_text {
    use super::{Deserialize, Deserializer, FromStr, Serializer, de, fmt};

    pub(super) fn serialize<T: fmt::Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// [`as_text`] for an optional value (`null` for none).
mod opt_as_text {
    use super::{Deserialize, Deserializer, FromStr, Serializer, de, fmt};

    pub(super) fn serialize<T: fmt::Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let text = Option::<std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.map(|t| t.parse().map_err(de::Error::custom))
            .transpose()
    }
}

/// [`as_text`] for a list.
mod vec_as_text {
    use super::{Deserialize, Deserializer, FromStr, Serializer, de, fmt};
    use serde::ser::SerializeSeq;

    pub(super) fn serialize<T: fmt::Display, S: Serializer>(
        values: &[T],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for value in values {
            seq.serialize_element(&format_args!("{value}"))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: Deserializer<'de>,
    {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| text.parse().map_err(de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::time::Duration;
    use skywire_dataplane::wire::RouteId;

    /// A fixed status with one route and one relay, as the examples in the docs show.
    pub(crate) fn sample_status() -> NodeStatus {
        let id = |n| RouteId::new(n).unwrap();
        NodeStatus {
            public_key: PublicKey::from_bytes([0x11; 32]),
            listen: "0.0.0.0:6000".parse().unwrap(),
            tun: Some("sky0".to_owned()),
            routes: vec![RouteStatus {
                name: "to-c".to_owned(),
                peer: PublicKey::from_bytes([0xcc; 32]),
                first_hop: "198.18.0.2:6000".parse().unwrap(),
                out_id: id(100),
                in_id: id(201),
                prefixes: vec!["10.77.0.3/32".parse().unwrap()],
                last_handshake: Some(Duration::from_millis(3250)),
                handshakes: 1,
                receiving: Some((0xcafe_babe, 812)),
                tx_packets: 2330,
                tx_bytes: 3_565_158,
                rx_packets: 812,
                rx_bytes: 1_268_776,
                drops: vec![("replay", 1), ("bad tag", 2), ("too short", 0)],
                origin: Origin::Config,
                idle: None,
            }],
            relays: vec![RelayStatus {
                in_id: id(100),
                prev_hop: "198.18.0.1:6000".parse().unwrap(),
                out_id: id(101),
                next_hop: "198.18.0.3:6000".parse().unwrap(),
                packets: 2330,
                bytes: 3_649_044,
                origin: Origin::Config,
                idle: None,
            }],
            drops: vec![("no route", 0), ("not ip", 0)],
            expired: 0,
            events_dropped: 0,
            stack: Default::default(),
            fwmark: None,
            grants: Vec::new(),
            under_load: false,
            retired: Default::default(),
        }
    }

    /// [`sample_status`] with a manager route end and relay, and expired rules.
    pub(crate) fn sample_managed_status() -> NodeStatus {
        let mut status = sample_status();
        let manager = Origin::Manager {
            route: 9,
            expire_after: Duration::from_secs(30),
        };
        status.routes[0].origin = manager;
        status.routes[0].idle = Some(Duration::from_millis(1500));
        status.relays[0].origin = manager;
        status.relays[0].idle = Some(Duration::from_secs(62));
        status.expired = 3;
        status.events_dropped = 4;
        status
    }

    #[test]
    fn request_round_trip() {
        let request = Request {
            id: 7,
            op: Op::Status,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"id":7,"op":"status"}"#);
        assert_eq!(
            parse_request(text.as_bytes()),
            ParsedRequest::Request(request)
        );
        assert_eq!(
            parse_request(br#" { "op" : "status", "id" : 18446744073709551615 } "#),
            ParsedRequest::Request(Request {
                id: u64::MAX,
                op: Op::Status
            })
        );
    }

    #[test]
    fn bad_requests_are_classified() {
        for line in [
            &b"not json"[..],
            b"{\"id\":1,\"op\":\"status\"",
            b"{\"op\":\"status\"}",
            b"{\"id\":-1,\"op\":\"status\"}",
            b"{\"id\":\"1\",\"op\":\"status\"}",
            b"[1]",
            b"{\"id\":1,\"op\":\"status\"} trailing",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_request(line), ParsedRequest::Malformed { .. }),
                "{line:?}"
            );
        }
        for line in [
            &b"{\"id\":3,\"op\":\"frobnicate\"}"[..],
            b"{\"id\":3}",
            b"{\"id\":3,\"op\":7}",
        ] {
            assert!(
                matches!(
                    parse_request(line),
                    ParsedRequest::Unsupported { id: 3, .. }
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn status_response_round_trip() {
        let reply = StatusReply::from(&sample_status());
        let line = Response {
            id: Some(9),
            outcome: Outcome::Ok(Reply::Status(Box::new(reply.clone()))),
        }
        .to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);

        let parsed: Response<StatusReply> = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed.id, Some(9));
        assert_eq!(parsed.outcome, Outcome::Ok(reply.clone()));

        // The JSON shape is the documented one.
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let ok = &value["ok"];
        assert_eq!(ok["public_key"], "11".repeat(32));
        assert_eq!(ok["listen"], "0.0.0.0:6000");
        assert_eq!(ok["tun"], "sky0");
        let route = &ok["routes"][0];
        assert_eq!(route["peer"], "cc".repeat(32));
        assert_eq!(route["first_hop"], "198.18.0.2:6000");
        assert_eq!(route["out_id"], 100);
        assert_eq!(route["in_id"], 201);
        assert_eq!(route["prefixes"], serde_json::json!(["10.77.0.3/32"]));
        assert_eq!(route["last_handshake_secs"], 3.25);
        assert_eq!(route["handshakes"], 1);
        assert_eq!(
            route["replay_window"],
            serde_json::json!({"key_id": 0xcafe_babe_u32, "next_counter": 812})
        );
        assert_eq!(route["rx_bytes"], 1_268_776);
        assert_eq!(
            route["drops"],
            serde_json::json!({"replay": 1, "bad tag": 2, "too short": 0})
        );
        assert_eq!(ok["relays"][0]["next_hop"], "198.18.0.3:6000");
        assert_eq!(ok["relays"][0]["bytes"], 3_649_044);
        assert_eq!(ok["drops"], serde_json::json!({"no route": 0, "not ip": 0}));

        // The pretty form parses back, with the drop order kept.
        let back = StatusReply::from_json(&reply.to_json_pretty()).unwrap();
        assert_eq!(back, reply);
        assert_eq!(back.routes[0].drops.0[1], ("bad tag".to_owned(), 2));
    }

    #[test]
    fn origins_idle_times_and_expiry_in_json() {
        let reply = StatusReply::from(&sample_status());
        let value = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            value["routes"][0]["origin"],
            serde_json::json!({"kind": "config"})
        );
        assert!(value["routes"][0]["idle_secs"].is_null());
        assert_eq!(
            value["relays"][0]["origin"],
            serde_json::json!({"kind": "config"})
        );
        assert_eq!(value["expired"], 0);

        let reply = StatusReply::from(&sample_managed_status());
        let value = serde_json::to_value(&reply).unwrap();
        let manager = serde_json::json!(
            {"kind": "manager", "route": "0000000000000009", "expire_after_secs": 30.0}
        );
        assert_eq!(value["routes"][0]["origin"], manager);
        assert_eq!(value["routes"][0]["idle_secs"], 1.5);
        assert_eq!(value["relays"][0]["origin"], manager);
        assert_eq!(value["relays"][0]["idle_secs"], 62.0);
        assert_eq!(
            (value["expired"].clone(), value["events_dropped"].clone()),
            (3.into(), 4.into())
        );
        assert_eq!(
            StatusReply::from_json(&reply.to_json_pretty()).unwrap(),
            reply
        );

        // An older node's reply, without the new fields: config rules, zero counts.
        let mut old = serde_json::to_value(StatusReply::from(&sample_status())).unwrap();
        for list in ["routes", "relays"] {
            let object = old[list][0].as_object_mut().unwrap();
            object.remove("origin");
            object.remove("idle_secs");
        }
        let object = old.as_object_mut().unwrap();
        object.remove("expired");
        object.remove("events_dropped");
        // (serde_json's Value sorts keys, so compare the fields, not the drop order.)
        let back = StatusReply::from_json(&old.to_string()).unwrap();
        assert_eq!(back.routes[0].origin, OriginReply::Config);
        assert_eq!(back.routes[0].idle_secs, None);
        assert_eq!(back.relays[0].origin, OriginReply::Config);
        assert_eq!(back.relays[0].idle_secs, None);
        assert_eq!((back.expired, back.events_dropped), (0, 0));

        // An older node wrote the route as a number: it still reads, as the same id.
        let mut old = serde_json::to_value(&reply).unwrap();
        old["routes"][0]["origin"]["route"] = 9.into();
        let back = StatusReply::from_json(&old.to_string()).unwrap();
        assert_eq!(back.routes[0].origin, reply.routes[0].origin);
    }

    #[test]
    fn a_pong_names_its_manager_route_in_16_hex_digits() {
        let pong = PongReply {
            route: "mgr-00000000000004d2".to_owned(),
            in_id: 7,
            rtt_us: 250,
            manager_route: Some(MeshRouteId(0x4d2)),
        };
        let value = serde_json::to_value(&pong).unwrap();
        assert_eq!(value["manager_route"], "00000000000004d2");
        assert_eq!(serde_json::from_value::<PongReply>(value).unwrap(), pong);
        let configured = PongReply {
            manager_route: None,
            ..pong
        };
        let value = serde_json::to_value(&configured).unwrap();
        assert!(value["manager_route"].is_null());
        assert_eq!(
            serde_json::from_value::<PongReply>(value).unwrap(),
            configured
        );
    }

    #[test]
    fn no_handshake_and_no_tun_are_null() {
        let mut status = sample_status();
        status.tun = None;
        status.routes[0].last_handshake = None;
        let reply = StatusReply::from(&status);
        let value: serde_json::Value = serde_json::from_str(&reply.to_json_pretty()).unwrap();
        assert!(value["tun"].is_null());
        assert!(value["routes"][0]["last_handshake_secs"].is_null());
        assert_eq!(
            StatusReply::from_json(&reply.to_json_pretty()).unwrap(),
            reply
        );
    }

    #[test]
    fn error_response_shape() {
        let line = Response::<StatusReply>::error(None, ErrorKind::BadRequest, "nope").to_line();
        assert_eq!(
            line,
            b"{\"id\":null,\"error\":{\"kind\":\"bad_request\",\"message\":\"nope\"}}\n"
        );
        let parsed: Response<StatusReply> =
            serde_json::from_slice(br#"{"id":4,"error":{"kind":"permission","message":"m"}}"#)
                .unwrap();
        assert_eq!(parsed, Response::error(Some(4), ErrorKind::Permission, "m"));
    }

    #[test]
    fn bad_fields_in_a_reply_are_rejected() {
        let reply = StatusReply::from(&sample_status());
        let good = serde_json::to_value(&reply).unwrap();
        for (field, bad) in [
            ("public_key", serde_json::json!("xyz")),
            ("listen", serde_json::json!("nowhere")),
            ("drops", serde_json::json!({"replay": -1})),
        ] {
            let mut value = good.clone();
            value[field] = bad;
            assert!(
                StatusReply::from_json(&value.to_string()).is_err(),
                "{field}"
            );
        }
        let mut value = good;
        value["routes"][0]["prefixes"] = serde_json::json!(["10.0.0.0/33"]);
        assert!(StatusReply::from_json(&value.to_string()).is_err());
    }
}
