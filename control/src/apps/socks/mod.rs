//! The SOCKS app (issue 13): `skywire socks client` is a SOCKS5 server on the user's
//! machine (127.0.0.1:1080) that carries each connection over the mesh to `skywire socks
//! exit`, which resolves the name, checks the destination against its policy and dials it.
//!
//! Layers, bottom to top:
//!
//! - [`wire`]: the SOCKS5 messages (RFC 1928, RFC 1929), sans-IO parsers and encoders.
//!   The client app parses the greeting, the credentials and the request, and forwards the
//!   request's bytes unchanged to the exit, which parses them again.
//! - [`policy`]: the exit's destination policy, pure: numeric host names, `localhost`, and
//!   the check of every address before it is dialled.
//!
//! - [`tally`]: what the apps count per node key (connections, bytes, refusals), the
//!   per-key token bucket, and the watcher that hears when a handed-over connection ends.
//! - [`client`]: `skywire socks client`, the SOCKS5 server on this machine; [`exit`]:
//!   `skywire socks exit`, which resolves, checks and dials; [`udp`]: UDP ASSOCIATE on
//!   both sides.
//!
//! Neither app copies a connection's bytes: once the SOCKS exchange is done, each hands
//! its TCP connection over to its node (`AppStream::hand_over`, `docs/APPS.md`), which
//! moves the bytes between that connection and the mesh stream itself.
//!
//! The exit learns its host's own addresses for the policy from
//! `skywire_dataplane::sys::netlink::list_addresses`.

pub mod client;
pub mod exit;
pub mod policy;
pub mod tally;
pub mod udp;
pub mod wire;
