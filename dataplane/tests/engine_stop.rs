//! An engine that stops answers at once every command queued behind its shutdown: a
//! caller waiting for an answer (the node's uplink applying a manager's rules during a
//! repair) gets `Stopped` instead of waiting out its timeout, which held a node's SIGTERM
//! for 2 s.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::engine::{self, EngineGone, NodeSetup};
use skywire_dataplane::stack::StackSetup;

fn start() -> engine::RunningEngine {
    let setup = NodeSetup {
        private_key: PrivateKey::generate().unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        tun: None,
        routes: vec![],
        relays: vec![],
        offload: true,
        stack: StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    };
    engine::start(&setup).unwrap()
}

#[test]
fn commands_queued_behind_a_shutdown_end_at_once() {
    // Sent right behind the shutdown, the command is usually still queued when the loop
    // stops; whichever way the race goes, the answer must come at once.
    for _ in 0..20 {
        let engine = start();
        let handle = engine.handle.clone();
        handle.shutdown().unwrap();
        let asked = Instant::now();
        let applied = handle.apply(Vec::new(), Duration::from_secs(5));
        let status = handle.status(Duration::from_secs(5));
        let took = asked.elapsed();
        assert!(
            matches!(applied, Ok(Ok(())) | Err(EngineGone::Stopped)),
            "{applied:?}"
        );
        assert!(status.is_err());
        assert!(
            took < Duration::from_secs(1),
            "the answers took {took:?} after the shutdown"
        );
        engine.wait().unwrap();
        // And once it has stopped, every command fails at once.
        let asked = Instant::now();
        assert!(matches!(
            handle.status(Duration::from_secs(5)),
            Err(EngineGone::Stopped)
        ));
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
}
