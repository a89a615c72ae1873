//! The signal protocol: the management channel between viscript (the server) and every
//! component it runs (the clients). Clients register with an id (viscript's sequence id);
//! the server pings them, asks for their resource figures (`Top`) and asks them to shut
//! down. Any program can be a client by speaking the frames in `docs/SIGNAL.md`.
//!
//! - [`frame`]: the byte format, encoder and incremental decoder (sans-IO).
//! - [`server`]: viscript's side: registrations, requests with ids and timeouts, many
//!   outstanding at once.
//! - [`client`]: the client library: configuration from the environment or the original
//!   flags, reconnection with backoff, answers from `/proc/self`.
//!
//! Invariants: bytes from the peer never panic and never allocate more than one bounded
//! frame; a bad frame closes that connection only; the server listens on loopback unless
//! told otherwise (`127.0.0.1:7999`).

pub mod client;
pub mod frame;
pub mod server;

pub use client::{ClientConfig, ClientConfigError, ClientHandle, DEFAULT_SERVER};
pub use frame::{Frame, FrameError};
pub use server::{SignalError, SignalHandle, SignalServer};
