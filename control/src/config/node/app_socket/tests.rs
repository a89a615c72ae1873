use super::*;
use crate::config::tests::{Scratch, assert_at, assert_invalid, parse};
use crate::config::{Config, DEFAULT_CONTROL_SOCKET};
use core::time::Duration;
use std::collections::HashMap;

#[test]
fn the_app_socket_is_derived_beside_the_control_socket_folder() {
    let derive = |p: &str| derive_app_socket(Path::new(p));
    assert_eq!(
        derive(DEFAULT_CONTROL_SOCKET),
        Path::new(DEFAULT_APP_SOCKET)
    );
    assert_eq!(
        derive("/tmp/lab/a/ctl.sock"),
        Path::new("/tmp/lab/a-apps/ctl.sock")
    );
    assert_eq!(derive("rel/x.sock"), Path::new("rel-apps/x.sock"));
    assert_eq!(derive("/node.sock"), Path::new("/skywire-apps/node.sock"));
    assert_eq!(derive("node.sock"), Path::new("skywire-apps/node.sock"));
}

#[test]
fn left_out_it_is_all_defaults() {
    for text in ["", "node:\n", "node:\n  apps:\n", "node:\n  apps: {}\n"] {
        let config = parse(text).unwrap();
        assert_eq!(config.node.apps(), &NodeApps::default(), "{text:?}");
        assert_eq!(config.node.app_socket(), Path::new(DEFAULT_APP_SOCKET));
    }
    let config = parse("node:\n  control_socket: run/a.sock\n").unwrap();
    assert_eq!(config.node.app_socket(), Path::new("conf/run-apps/a.sock"));
}

#[test]
fn every_key_is_read() {
    let text = "\
node:
  control_socket: /run/sky/a.sock
  apps:
    socket: apps/a.sock
    group: skywire
    users: [alice, 1001]
    streams: 100
    streams_per_peer: 10
    streams_per_app: 20
    half_open: 5
    listeners: 3
    idle_timeout: 90s
    take_timeout: 2500ms
    buffer: 65536
    memory: 1048576
";
    let config = parse(text).unwrap();
    let apps = config.node.apps();
    assert_eq!(apps.socket.as_deref(), Some(Path::new("conf/apps/a.sock")));
    assert_eq!(config.node.app_socket(), Path::new("conf/apps/a.sock"));
    assert_eq!(apps.group, Some(Account::Name("skywire".into())));
    assert_eq!(
        apps.users,
        vec![Account::Name("alice".into()), Account::Id(1001)]
    );
    assert_eq!(
        apps.stack,
        StackSetup {
            max_streams: 100,
            max_streams_per_peer: 10,
            max_streams_per_app: 20,
            max_half_open: 5,
            max_listeners: 3,
            idle_timeout: Duration::from_secs(90),
            take_timeout: Duration::from_millis(2500),
            buffer: 65536,
            memory: 1 << 20,
        }
    );
}

#[test]
fn the_engine_gets_the_stack_limits() {
    let dir = Scratch::new();
    let key = dir.0.join("node.key");
    crate::keyfile::write_new_key(&key).unwrap();
    let text = format!(
        "node:\n  key: {}\n  apps:\n    streams: 77\n    buffer: 131072\n",
        key.display()
    );
    let setup = parse(&text).unwrap().node_setup().unwrap();
    assert_eq!(setup.stack.max_streams, 77);
    assert_eq!(setup.stack.buffer, 131_072);
    assert_eq!(setup.stack.memory, StackSetup::default().memory);
}

#[test]
fn bad_values_are_located_problems() {
    let base = "node:\n  apps:\n";
    let cases: &[(&str, u64, &str, Problem)] = &[
        (
            "    streams: 0\n",
            3,
            "node.apps.streams",
            Problem::CountOutOfRange,
        ),
        (
            "    listeners: -1\n",
            3,
            "node.apps.listeners",
            Problem::CountOutOfRange,
        ),
        (
            "    half_open: 2000000\n",
            3,
            "node.apps.half_open",
            Problem::CountOutOfRange,
        ),
        (
            "    buffer: 64KiB\n",
            3,
            "node.apps.buffer",
            Problem::ByteCountOutOfRange,
        ),
        (
            "    buffer: 65534\n",
            3,
            "node.apps.buffer",
            Problem::BufferTooSmall,
        ),
        (
            "    buffer: 65536\n    memory: 131071\n",
            4,
            "node.apps.memory",
            Problem::MemoryBelowTwoBuffers,
        ),
        (
            "    memory: 524287\n",
            3,
            "node.apps.memory",
            Problem::MemoryBelowTwoBuffers,
        ),
        (
            "    take_timeout: 0s\n",
            3,
            "node.apps.take_timeout",
            Problem::DurationOutOfRange,
        ),
        (
            "    idle_timeout: soon\n",
            3,
            "node.apps.idle_timeout",
            Problem::NotADuration,
        ),
        (
            "    group: \"a b\"\n",
            3,
            "node.apps.group",
            Problem::NotAnAccount,
        ),
        (
            "    users: [alice, \"x:y\"]\n",
            3,
            "node.apps.users[1]",
            Problem::NotAnAccount,
        ),
        (
            "    socket: \"\"\n",
            3,
            "node.apps.socket",
            Problem::EmptyPath,
        ),
        (
            "    socket: /run/skywire/node.sock\n",
            3,
            "node.apps.socket",
            Problem::AppSocketIsControlSocket,
        ),
        (
            "    socket: /run/skywire/apps.sock\n",
            3,
            "node.apps.socket",
            Problem::AppSocketBesideControlSocket,
        ),
    ];
    for (lines, line, key, problem) in cases {
        assert_invalid(&format!("{base}{lines}"), *line, key, *problem);
    }
    let long = format!("{base}    socket: /{}\n", "s".repeat(107));
    assert_invalid(&long, 3, "node.apps.socket", Problem::SocketPathTooLong);
    // Unknown keys are refused like everywhere else.
    let err = parse(&format!("{base}    port: 1\n")).unwrap_err();
    assert_at(&err, 3, "node.apps.port");
}

/// A fixed table of names.
struct Book(HashMap<&'static str, u32>, HashMap<&'static str, u32>);

impl AccountBook for Book {
    fn user(&self, name: &str) -> Option<u32> {
        self.0.get(name).copied()
    }

    fn group(&self, name: &str) -> Option<u32> {
        self.1.get(name).copied()
    }
}

#[test]
fn names_are_looked_up_and_unknown_ones_located() {
    let book = Book(
        HashMap::from([("alice", 1000), ("bob", 1002)]),
        HashMap::from([("skywire", 998)]),
    );
    let resolve = |text: &str| {
        let config = parse(text).unwrap();
        config.node.apps_config(&book, &config.locator())
    };
    let apps = resolve("node:\n  apps:\n    group: skywire\n    users: [bob, 7, alice]\n").unwrap();
    assert_eq!(
        apps,
        AppsConfig {
            socket: PathBuf::from(DEFAULT_APP_SOCKET),
            users: vec![1002, 7, 1000],
            group: Some(998),
            stack: StackSetup::default(),
        }
    );
    let apps = resolve("node:\n  apps:\n    group: 50\n").unwrap();
    assert_eq!((apps.group, apps.users), (Some(50), vec![]));

    let err = resolve("node:\n  apps:\n    users:\n      - alice\n      - carol\n").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::UnknownUser,
                ..
            }
        ),
        "{err:?}"
    );
    assert_at(&err, 5, "node.apps.users[1]");
    let err = resolve("node:\n  apps:\n    users: [alice]\n    group: staff\n").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::UnknownGroup,
                ..
            }
        ),
        "{err:?}"
    );
    assert_at(&err, 4, "node.apps.group");
}

#[test]
fn the_system_files_know_root() {
    let config = parse("node:\n  apps:\n    group: root\n    users: [root, 1234]\n").unwrap();
    let apps = config.apps_config().unwrap();
    assert_eq!((apps.group, apps.users), (Some(0), vec![0, 1234]));
    let config = Config::parse(
        "node:\n  apps:\n    users: [no-such-user-here]\n",
        "conf/test.yaml",
    )
    .unwrap();
    let err = config.apps_config().unwrap_err();
    assert_at(&err, 3, "node.apps.users[0]");
}
