//! The skywire control plane: everything that decides what the data plane does.
//!
//! Modules, bottom to top (each uses only the ones above it in this list, apart from the
//! tools at the end):
//!
//! - [`keyfile`]: private key files, created 0600 and refused when readable by others or
//!   owned by another user.
//! - [`output_file`]: files written where the user said (`bench --out`), never through a
//!   symlink or a hard link.
//! - [`atomic_file`]: state files replaced atomically and durably (temp file, fsync,
//!   rename, fsync of the folder), and corrupt ones set aside.
//! - [`procfs`]: a process's resource figures (and groups) from `/proc`.
//! - [`accounts`]: user and group names to ids, from `/etc/passwd` and `/etc/group`.
//! - [`terminal`]: text from other programs with its control characters escaped, safe to
//!   show on a terminal.
//! - [`logging`]: the daemons' log (`log` + env_logger): levels, `--log-level` and
//!   `SKYWIRE_LOG`, lines with a UTC timestamp and a level, or journald's priority prefix.
//! - [`notify`]: the systemd notification protocol without libsystemd: readiness,
//!   stopping, and watchdog pings that the daemons' main loops send themselves.
//! - [`local`]: private Unix sockets (0600 in a 0700 folder, `SO_PEERCRED`), bounded line
//!   reads and connection slots, shared by every server in the crate.
//! - [`metrics`]: Prometheus metrics: the exposition text (on `prometheus-client`) and a
//!   small HTTP/1.1 server for `GET /metrics`, which the node and the manager serve their
//!   own figures with.
//! - [`frame`]: the frame codec (length, version, kind, request id, payload) that signal and
//!   the manager protocol share; it stops at bytes.
//! - [`signal`]: the signal protocol between viscript and every component: frames, server,
//!   and the client library.
//! - [`manager`]: the node manager daemon (registration with a key proof, topology and
//!   route computation, route setup with rollback, expiry and repair) and its protocol,
//!   which nodes speak too.
//! - [`config`]: the YAML configuration file, parsed into typed values at the edge (the
//!   engine's setup, the manager's parameters, the apps); every error names the file, the
//!   line and the key.
//! - [`node`]: the node as a library: [`node::Node::start`] runs the engine, the uplink to
//!   the manager and the control socket ([`node::ctl`], what `skywire status`, `route` and
//!   `ping` talk to), and a [`node::NodeHandle`] talks to it.
//! - [`apps`]: apps that run on the mesh: [`apps::socks`], the SOCKS5 proxy's protocol and
//!   the exit's destination policy; [`apps::vpn`], the VPN exit's address pool, lease
//!   protocol and nftables rulesets.
//! - [`launcher`]: viscript, the app launcher: apps from `config.yaml`, sequence ids,
//!   daemons restarted with backoff, the console commands, headless socket and GUI.
//! - Tools: [`lab`] (the namespace lab the demo, the bench and the root-only tests build
//!   their topologies in: namespaces, veth links, processes, a scratch folder, sysctls, and
//!   clean-up on every path), [`demo`] (`skywire demo`: three `skywire node` processes in
//!   network namespaces, a route through a relay, and proof of what crosses each link) and
//!   [`mod@bench`] (`skywire bench`, the end-to-end harness against boringtun).
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

pub mod accounts;
pub mod atomic_file;
pub mod civil;
pub mod keyfile;
pub mod logging;
pub mod notify;
pub mod output_file;
pub mod procfs;
pub mod terminal;

pub mod frame;
pub mod local;
pub mod metrics;

pub mod manager;
pub mod signal;

pub mod config;
pub mod launcher;
pub mod node;

pub mod apps;

pub mod bench;
pub mod demo;
pub mod lab;
