//! The skywire control plane: everything that decides what the data plane does.
//!
//! Modules:
//!
//! - [`keyfile`]: private key files, created 0600 and refused when readable by others.
//! - [`config`]: the YAML configuration file, parsed into typed values at the edge; every
//!   error names the file, the line and the key.
//! - [`ctl`]: the node's local control socket (newline-delimited JSON over a Unix socket)
//!   that `skywire status` talks to: server, client and protocol.
//! - [`demo`]: `skywire demo`: three `skywire node` processes in network namespaces, a route
//!   through a relay, and proof of what crosses each link.
//! - [`mod@bench`]: `skywire bench`, the end-to-end harness against boringtun.
//! - [`lab`]: the namespace lab the demo, the bench and the root-only tests build their
//!   topologies in: namespaces, veth links, processes, a scratch folder, sysctls, and
//!   clean-up on every path.
//! - [`manager`]: the node manager (registration with a key proof, topology and route
//!   computation, route setup with rollback, expiry and repair) and the node's agent for it.
//! - [`signal`]: the signal protocol between viscript and every component: frames, server,
//!   and the client library.
//! - [`launcher`]: viscript, the app launcher: apps from `config.yaml`, sequence ids,
//!   daemons restarted with backoff, the console commands, headless socket and GUI.
//! - [`procfs`]: a process's resource figures from `/proc`.
//!
//! This crate may do file and socket I/O; the data plane never does.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod bench;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod keyfile;
pub mod lab;
pub mod launcher;
pub mod manager;
pub mod procfs;
pub mod signal;
