//! What a node is told to do: its identity, transport, TUN device, routes and relay rules.
//! The control plane builds a [`NodeSetup`] from `config.yaml` when the engine starts
//! (rules of [`Origin::Config`]); the node manager later adds and removes rules while it
//! runs, in all-or-nothing batches of [`RuleChange`]s (rules of [`Origin::Manager`], which
//! expire when idle).

use core::time::Duration;
use std::net::SocketAddr;

use crate::crypto::noise::HandshakeError;
use crate::crypto::{PrivateKey, PublicKey};
use crate::route::Prefix;
use crate::stack::StackSetup;
pub use crate::sys::tun::TunSetup;
use crate::wire::RouteId;

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The node's configuration file; never expires.
    Config,
    /// The node manager, as part of the route it numbers `route`. The engine removes the
    /// rule once no packet has matched it for `expire_after` (checked about once a second,
    /// so it goes between `expire_after` and about a second later).
    Manager {
        /// The manager's number for the whole route (the same at every hop).
        route: u64,
        /// Idle time after which the rule is removed.
        expire_after: Duration,
    },
}

/// One change to a running node's rules; see
/// [`EngineHandle::apply`](super::EngineHandle::apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    /// Add a relay rule.
    AddRelay {
        /// The rule.
        relay: RelaySetup,
        /// Where it came from.
        origin: Origin,
    },
    /// Add a route end: a session with the peer, its Deliver rule and its prefixes.
    AddEnd {
        /// The route end.
        route: RouteSetup,
        /// Where it came from.
        origin: Origin,
    },
    /// Remove the rule with this incoming id, relay or route end (the end's session and
    /// prefixes go with it, silently: no close packet).
    Remove {
        /// The rule's incoming route id.
        in_id: RouteId,
    },
}

impl RuleChange {
    /// The incoming route id the change is about.
    pub fn in_id(&self) -> RouteId {
        match self {
            RuleChange::AddRelay { relay, .. } => relay.in_id,
            RuleChange::AddEnd { route, .. } => route.in_id,
            RuleChange::Remove { in_id } => *in_id,
        }
    }
}

/// A batch of [`RuleChange`]s was refused; nothing of it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A rule with this incoming id exists already (or the batch adds it twice).
    #[error("route id {0} is already in use")]
    InUse(RouteId),
    /// A relay rule whose next hop is its previous hop: its packets would go back and forth
    /// between the two nodes forever (the version 1 header has no hop limit).
    #[error("route id {0}: a relay may not send packets back to the hop they came from")]
    Loop(RouteId),
    /// No rule has this incoming id (or the batch removes it twice).
    #[error("no rule with route id {0} to remove")]
    NotFound(RouteId),
    /// A route end from the manager claims a prefix that an end with another peer claims
    /// (see [`NodeCore::apply`](super::NodeCore::apply)).
    #[error("route id {in_id}: {prefix} is routed to another peer already")]
    PrefixClaimed {
        /// The route end's incoming id.
        in_id: RouteId,
        /// The prefix it claims.
        prefix: Prefix,
    },
    /// The peer key of the route end with this incoming id is unusable (a low-order point).
    #[error("route id {in_id}: the peer key is unusable: {source}")]
    PeerKey {
        /// The route end's incoming id.
        in_id: RouteId,
        /// Why the key was refused.
        source: HandshakeError,
    },
}

/// A grant was refused; the peer's grant is as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Another peer's route end or grant has this very prefix.
    #[error("{0} belongs to another peer already")]
    Claimed(Prefix),
}

/// Everything the engine needs to run a node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The node's identity.
    pub private_key: PrivateKey,
    /// The UDP transport address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// The TUN device carrying IP traffic into routes; `None` for a relay-only node.
    pub tun: Option<TunSetup>,
    /// Routes this node is an end of.
    pub routes: Vec<RouteSetup>,
    /// Forwarding rules this node holds as a relay.
    pub relays: Vec<RelaySetup>,
    /// Use the kernel's batching offloads: TUN super-packets (virtio-net header, TSO and
    /// GRO), UDP GSO and GRO. Each falls back to one packet per call by itself when the
    /// kernel refuses it; `false` never asks.
    pub offload: bool,
    /// The userspace stack's limits and buffer sizes (apps' streams over routes).
    pub stack: StackSetup,
    /// The newest initiation accepted from each peer key before a restart (from the
    /// node's state file): remembered before the first packet, so one captured before the
    /// restart is refused after it ([`NodeCore::restore_peers`](super::NodeCore::restore_peers)).
    pub peers: Vec<super::AcceptedInitiation>,
    /// The firewall mark on the node's transport socket, so that policy routing (a VPN
    /// client's table) can let the node's own packets bypass the tunnel; `None` leaves the
    /// socket unmarked.
    pub fwmark: Option<Fwmark>,
}

/// A firewall mark (`SO_MARK`) and the bits of it that are ours: the node marks its own
/// transport packets with `mark`, and rules match `mark` under `mask`, leaving the other
/// bits to other software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fwmark {
    /// The mark the node's packets carry.
    pub mark: u32,
    /// The bits that rules compare.
    pub mask: u32,
}

impl Fwmark {
    /// `0x736b0000/0xffff0000` ("sk" in the upper half; the lower half is left to others).
    pub const DEFAULT: Fwmark = Fwmark {
        mark: 0x736b_0000,
        mask: 0xffff_0000,
    };
}

impl core::fmt::Display for Fwmark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#010x}/{:#010x}", self.mark, self.mask)
    }
}

/// Text that is not a mark as [`Fwmark`]'s `Display` writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: not a firewall mark (MARK/MASK, each 0x and up to 8 hex digits)")]
pub struct FwmarkParseError(String);

impl core::str::FromStr for Fwmark {
    type Err = FwmarkParseError;

    /// `0x736b0000/0xffff0000`, as `Display` writes it (the status's form; a config's
    /// `node.fwmark` has its own, more lenient grammar).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || FwmarkParseError(text.to_owned());
        let hex = |s: &str| {
            let digits = s.strip_prefix("0x").ok_or_else(bad)?;
            if digits.is_empty() || digits.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(digits, 16).map_err(|_| bad())
        };
        let (mark, mask) = text.split_once('/').ok_or_else(bad)?;
        Ok(Self {
            mark: hex(mark)?,
            mask: hex(mask)?,
        })
    }
}

/// A route this node is an end of, set up statically (like a WireGuard peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSetup {
    /// A name for status output.
    pub name: String,
    /// The static public key of the node at the other end.
    pub peer: PublicKey,
    /// Destinations sent over this route: IP packets from the TUN device whose destination
    /// falls in one of these prefixes (longest match over all routes).
    pub prefixes: Vec<Prefix>,
    /// The first hop's transport address.
    pub first_hop: SocketAddr,
    /// The route id the first hop knows this route by (written into every packet we send).
    pub out_id: RouteId,
    /// The route id packets of this route carry when they reach us.
    pub in_id: RouteId,
    /// The route id packets of this route carry when they reach the peer (the peer's
    /// `in_id`; the same as `out_id` when the first hop is the peer). With `in_id` it
    /// binds the route's handshakes to the route, so both ends must agree on it.
    pub peer_in_id: RouteId,
    /// The transport address those packets must come from (the last relay, or the peer).
    pub prev_hop: SocketAddr,
    /// Send a keepalive whenever nothing was sent for this long.
    pub persistent_keepalive: Option<Duration>,
}

/// A forwarding rule of a relay: packets arriving from `prev_hop` with `in_id` leave for
/// `next_hop` with `out_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySetup {
    /// Incoming route id.
    pub in_id: RouteId,
    /// The only address such packets may come from.
    pub prev_hop: SocketAddr,
    /// Outgoing route id.
    pub out_id: RouteId,
    /// Where they go.
    pub next_hop: SocketAddr,
}

impl NodeSetup {
    /// The node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.private_key.public_key()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Fwmark;

    #[test]
    fn a_mark_reads_back_what_it_writes_and_nothing_else() {
        let text = Fwmark::DEFAULT.to_string();
        assert_eq!(text, "0x736b0000/0xffff0000");
        assert_eq!(text.parse::<Fwmark>(), Ok(Fwmark::DEFAULT));
        let small: Fwmark = "0x5000/0xf000".parse().unwrap();
        assert_eq!((small.mark, small.mask), (0x5000, 0xf000));
        for bad in [
            "",
            "0x736b0000",
            "736b0000/ffff0000",
            "0x/0x1",
            "0x1/0x123456789",
            "0xzz/0x1",
            "0x1/0x1/0x1",
        ] {
            assert!(bad.parse::<Fwmark>().is_err(), "{bad:?}");
        }
    }
}
