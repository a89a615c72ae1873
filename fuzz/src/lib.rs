//! Bodies of the libFuzzer targets for `skywire-dataplane` (its wire parsers and the node
//! core's datagram intake) and the parsers of `skywire-control` that read a peer's bytes or
//! a file, one function per target.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line `fuzz_target!` that calls the function of the
//! same name here. Keeping the bodies in a library lets `tests/corpus.rs` replay every seed
//! and every saved crash under plain `cargo test` on a stable toolchain, and lets
//! `examples/make_seeds.rs` build the seed corpus with the same fixed keys the targets use.
//!
//! A target fails by panicking: either the dataplane panicked on hostile bytes (it must
//! never), or one of the `assert!`s here caught a broken invariant (a parse/emit round trip
//! that lost bytes, a replay window that disagrees with its naive model, plaintext
//! delivered that the peer never sealed).

pub mod apps;
pub mod cipher;
pub mod config;
pub mod control;
pub mod cookie;
pub mod exposition;
pub mod fixtures;
pub mod impair;
pub mod node;
pub mod noise;
pub mod prefix;
pub mod replay;
pub mod route;
pub mod session;
pub mod socks;
pub mod stack;
pub mod state;
pub mod text;
pub mod vpn;
pub mod wire;

/// A target's body: any bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the `[[bin]]` and the corpus folder) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("route_header", wire::route_header),
    ("transport", wire::transport),
    ("handshake_init", wire::handshake_init),
    ("handshake_response", wire::handshake_response),
    ("noise_read_init", noise::read_init),
    ("noise_read_response", noise::read_response),
    ("cipher_open", cipher::open),
    ("replay_window", replay::window),
    ("route_forward", route::forward),
    ("session_decapsulate", session::decapsulate),
    ("ip_destination", prefix::destination),
    ("text_parsers", text::parsers),
    ("link_probe", wire::link_probe),
    ("frame_codec", control::frame_codec),
    ("manager_frame", control::manager_frame),
    ("signal_frame", control::signal_frame),
    ("signal_auth", control::signal_auth),
    ("ctl_request", control::ctl_request),
    ("metrics_http", control::metrics_http),
    ("stack_ingress", stack::ingress),
    ("app_request", apps::app_request),
    ("app_frames", apps::app_frames),
    ("socks_wire", socks::socks_wire),
    ("vpn_lease", vpn::vpn_lease),
    ("vpn_state", vpn::vpn_state),
    ("node_state", state::node_state),
    ("metrics_text", exposition::metrics_text),
    ("cookie_reply", cookie::cookie_reply),
    ("impair_settings", impair::impair_settings),
    ("config_parse", config::config_parse),
    ("node_datagram", node::node_datagram),
];
