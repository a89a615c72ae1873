//! The signal protocol: the management channel between viscript (the server) and every
//! component it runs (the clients). Clients register with an id (viscript's sequence id);
//! the server pings them, asks for their resource figures (`Top`) and asks them to shut
//! down. Any program can be a client by speaking the frames in `docs/SIGNAL.md`.
//!
//! - [`frame`]: the byte format, encoder and incremental decoder (sans-IO).
//! - [`auth`]: the opening of a connection, in which both ends prove they know the app's
//!   secret (sans-IO).
//! - [`server`]: viscript's side: secrets, registrations, requests with ids and timeouts,
//!   many outstanding at once, refusals for the launcher to log.
//! - [`client`]: the client library: configuration from the environment or the original
//!   flags, reconnection with backoff, answers from `/proc/self`.
//!
//! **Authentication.** Viscript gives every app it starts a fresh random 32-byte secret in
//! its environment (`SIGNAL_CLIENT_SECRET`). A connection opens with the server's nonce
//! (`Hello`); the client's `Reg` carries its own nonce and an HMAC-SHA256 proof of the
//! secret over both; the server answers with its own proof. So a local process that does
//! not know an app's secret can neither register as the app (nor as anything, since every
//! id has a secret or is refused) nor, listening where viscript listened, give the app an
//! order it obeys. Why a secret in the environment rather than a Unix socket with peer
//! credentials: the apps keep their TCP address and configuration of the original
//! protocol (`SIGNAL_SERVER_ADDRESS`), any language can prove an HMAC with its standard
//! library, and the environment of a process is readable only by its user and root
//! (`/proc/PID/environ` is 0400), unlike its command line.
//!
//! Invariants: bytes from the peer never panic and never allocate more than one bounded
//! frame; a bad frame closes that connection only; no request is sent to a client that
//! has not proved its secret, and a client obeys none from a server that has not proved
//! it; secrets never appear in a `Debug`, a log or a command line; the server listens on
//! loopback unless told otherwise (`127.0.0.1:7999`).

pub mod auth;
pub mod client;
pub mod frame;
pub mod server;

pub use auth::{AuthError, Refusal, Secret, SecretError};
pub use client::{ClientConfig, ClientConfigError, ClientHandle, DEFAULT_SERVER, SpawnError};
pub use frame::{Frame, FrameError};
pub use server::{Refused, SignalError, SignalHandle, SignalServer};

#[cfg(test)]
mod tests;
