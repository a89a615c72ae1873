//! Replays every seed and every saved crash through its target, without libFuzzer, so that
//! `cargo test --manifest-path fuzz/Cargo.toml` on a stable toolchain keeps them passing.
//! Also checks that the seeds are still what their names say (valid packets), so that a
//! wire format change that leaves them stale does not go unnoticed.

use std::fs;
use std::path::{Path, PathBuf};

use skywire_dataplane::crypto::cipher::{Limits, RecvKey};
use skywire_dataplane::crypto::noise;
use skywire_dataplane::wire::{
    HandshakeInitPacket, HandshakeResponsePacket, TransportPacket, TransportRepr,
};
use skywire_fuzz::TARGETS;
use skywire_fuzz::fixtures::{BINDING, CIPHER_KEY, initiator_keys, responder_keys, with_mac1};

fn files(dir: &Path, seeds_only: bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !seeds_only
                || p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    out.sort();
    out
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    files(&dir, true)
        .iter()
        .map(|p| fs::read(p).expect("read seed"))
        .collect()
}

#[test]
fn every_target_has_seeds_and_passes_them() {
    for (name, run) in TARGETS {
        let seeds = seeds(name);
        assert!(
            !seeds.is_empty(),
            "{name} has no seed-* files in corpus/{name}"
        );
        for seed in seeds {
            run(&seed);
        }
    }
}

#[test]
fn saved_crashes_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for (name, run) in TARGETS {
        for path in files(&root.join(name), false) {
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            println!("{}", path.display());
            run(&fs::read(&path).expect("read regression input"));
        }
    }
}

#[test]
fn seeds_pass_their_checks() {
    for seed in seeds("transport").iter().chain(&seeds("cipher_open")) {
        let packet = TransportPacket::new_checked(&seed[..]).expect("transport seed parses");
        let repr = TransportRepr::parse(&packet);
        let mut buf = seed.clone();
        RecvKey::new(&CIPHER_KEY)
            .open(&repr, &mut buf, &Limits::WIREGUARD)
            .expect("transport seed opens with CIPHER_KEY");
    }
    for seed in seeds("handshake_init")
        .iter()
        .chain(&seeds("noise_read_init"))
    {
        HandshakeInitPacket::new_checked(&seed[..]).expect("initiation seed parses");
        noise::read_init(responder_keys(), BINDING, seed).expect("initiation seed verifies");
        assert_eq!(
            with_mac1(seed, &responder_keys().local_public()).as_ref(),
            Some(seed)
        );
    }
    for seed in seeds("handshake_response")
        .iter()
        .chain(&seeds("noise_read_response"))
    {
        HandshakeResponsePacket::new_checked(&seed[..]).expect("response seed parses");
        assert_eq!(
            with_mac1(seed, &initiator_keys().local_public()).as_ref(),
            Some(seed)
        );
    }
}

#[test]
fn signal_auth_seeds_open_connections() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/signal_auth");
    let run = |name: &str| {
        skywire_fuzz::control::signal_opening(&fs::read(dir.join(name)).expect("read seed"))
    };
    assert!(run("seed-register").registered);
    assert!(run("seed-hello-echo").authenticated);
    let original = run("seed-original-register");
    assert!(!original.registered && !original.authenticated);
}

#[test]
fn session_seeds_reach_established_sessions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/session_decapsulate");
    let run = |name: &str| {
        let script = fs::read(dir.join(name)).expect("read session seed");
        let summary = skywire_fuzz::session::run(&script);
        println!("{name}: {summary:?}");
        summary
    };
    let basic = run("seed-handshake-then-data");
    assert_eq!((basic.delivered, basic.handshakes), (2, 2));
    assert!(run("seed-tight-limits-rekey").handshakes > 2);
    assert!(run("seed-restart").delivered >= 2);
    assert!(run("seed-hostile-network").delivered >= 1);
    assert!(run("seed-injected-init").handshakes >= 1);
    assert_eq!(run("seed-corrupted-back").delivered, 1);
    let reinstall = run("seed-reinstall");
    assert_eq!((reinstall.delivered, reinstall.handshakes), (1, 2));
}

#[test]
fn app_seeds_are_requests_and_frames() {
    use skywire_control::node::apps::protocol::parse_request;
    use skywire_dataplane::stack::appframe::FrameError;
    let read = |target: &str, name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
            .join(name);
        fs::read(path).expect("read seed")
    };
    for name in [
        "seed-dial-then-frames",
        "seed-listen-allow",
        "seed-listen-60-keys",
        "seed-listen-minimal",
        "seed-accept",
        "seed-hand-over",
        "seed-watch",
    ] {
        let seed = read("app_request", name);
        let line = seed[1..].split(|&b| b == b'\n').next().expect("a line");
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 4096, "{name}: {} bytes", line.len());
        parse_request(line).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["seed-data-fin-reset", "seed-one-chunk", "seed-reset-utf8"] {
        let decoded = skywire_fuzz::apps::frames_decoded(&read("app_frames", name));
        assert_eq!(decoded.error, None, "{name}");
        assert!(decoded.at_boundary, "{name}");
    }
    let cut = skywire_fuzz::apps::frames_decoded(&read("app_frames", "seed-cut-in-data"));
    assert_eq!(cut.partial.map(|p| p.len()), Some(100));
    let after_fin = skywire_fuzz::apps::frames_decoded(&read("app_frames", "seed-data-after-fin"));
    assert_eq!(after_fin.error, Some(FrameError::AfterFin));
}

#[test]
fn socks_seeds_are_what_their_names_say() {
    use skywire_control::apps::socks::wire::{self, WireError};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/socks_wire");
    let read = |name: &str| {
        let seed = fs::read(dir.join(format!("seed-{name}"))).expect("read seed");
        seed[1..].to_vec()
    };
    for name in ["greeting", "greeting-then-connect"] {
        let (_, len) = wire::parse_greeting(&read(name)).unwrap().unwrap();
        if name == "greeting-then-connect" {
            wire::parse_request(&read(name)[len..]).unwrap().unwrap();
        }
    }
    wire::parse_auth(&read("auth")).unwrap().unwrap();
    for name in [
        "connect-ipv4",
        "connect-ipv6",
        "connect-mapped-loopback",
        "connect-nat64",
        "connect-name",
        "connect-name-255",
        "connect-numeric-name",
        "connect-localhost",
        "udp-associate",
    ] {
        let bytes = read(name);
        let (_, len) = wire::parse_request(&bytes).unwrap().unwrap();
        assert_eq!(len, bytes.len(), "{name}");
    }
    for name in ["reply-refused", "reply-named"] {
        wire::parse_reply(&read(name)).unwrap().unwrap();
    }
    wire::parse_udp(&read("udp-datagram")).unwrap();
    assert_eq!(
        wire::parse_udp(&read("udp-fragment")),
        Err(WireError::Fragment(1))
    );
    for name in ["http-get", "socks4"] {
        assert!(matches!(
            wire::parse_request(&read(name)),
            Err(WireError::NotSocks5(_))
        ));
    }
}

#[test]
fn node_seeds_meet_their_fates() {
    use skywire_fuzz::node::{FROM, NEXT, run};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/node_datagram");
    let run = |name: &str| {
        let (io, dropped) = run(&fs::read(dir.join(name)).expect("read seed"));
        let to: Vec<_> = io.sent.iter().map(|(to, _)| *to).collect();
        (to, dropped)
    };
    // Answered: a genuine initiation and a link probe; forwarded: the relay's packet.
    assert_eq!(run("seed-init"), (vec![FROM], 0));
    assert_eq!(run("seed-probe"), (vec![FROM], 0));
    assert_eq!(run("seed-relay"), (vec![NEXT], 0));
    for name in [
        "seed-response",
        "seed-data-no-session",
        "seed-relay-wrong-previous-hop",
        "seed-reply",
        "seed-short",
    ] {
        assert_eq!(run(name), (vec![], 1), "{name}");
    }
}

#[test]
fn config_seeds_load() {
    use skywire_control::config::Config;
    use skywire_fuzz::config::CONFIG_FILE;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/config_parse");
    for path in files(&dir, true) {
        let text = fs::read_to_string(&path).expect("a config seed is text");
        if let Err(e) = Config::parse(&text, CONFIG_FILE) {
            panic!("{}: {e}", path.display());
        }
    }
}
