//! The VPN apps (issue 14, `docs/design/vpn-plan.md`): `skywire vpn exit` leases tunnel
//! addresses to client nodes and forwards their traffic to the internet with the kernel's
//! NAT; `skywire vpn client` routes its host's traffic through an exit over the mesh.
//!
//! The packets themselves never pass through these apps: they go TUN → engine → route →
//! the exit's engine → TUN → the kernel's forwarding and `masquerade`. The apps set up the
//! kernel around the node (addresses, routes, rules, nftables, sysctls), hold a lease
//! stream open to the exit, and tell the node which prefixes each peer may send from
//! (grants).
//!
//! Layers, bottom to top (pure pieces first; only the runners in [`nft`] touch the system):
//!
//! - [`pool`]: the exit's address pool, sans-IO: leases per client key, grace periods,
//!   least-recently-used reuse, and the state saved across restarts.
//! - [`proto`]: the lease protocol spoken on the exit's port 44, JSON lines of at most
//!   1 KiB, and a bounded line reader.
//! - [`nft`]: the exit's and the client's nftables rulesets as text (pure), and a thin
//!   runner that pipes them to `nft -f -` and reads tables and counters back.
//! - [`sysctl`]: the kernel settings each end changes, recorded with their originals.
//! - [`routing`]: the client's table and rules (wg-quick and Tailscale style, no
//!   per-destination exemptions) and the netlink calls that add and remove them.
//! - [`dns`]: the exit's resolvers through the tunnel (systemd-resolved, or
//!   `/etc/resolv.conf` rewritten in place with a backup).
//! - [`state`]: the client's state file.
//! - [`exit`] and [`client`]: the two apps.

pub mod client;
pub mod dns;
pub mod exit;
pub mod nft;
pub mod pool;
pub mod proto;
pub mod routing;
pub mod state;
pub mod sysctl;
