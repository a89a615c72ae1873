use super::*;
use skywire_dataplane::crypto::PublicKey;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};

/// The block from the original Viscript documentation (REFERENCE.md), byte for byte.
const REFERENCE_BLOCK: &str = "\
apps:
  meshnet-socks-server:
    daemon: true
    desc: DESCRIPTION GOES HERE
    path: bin/meshnet/meshnet-run-socks-server
    default_args: []
    help: |
        [1] Text name of app, must be unique
        [2] Node address which app will be talked with. ex 101.202.34.56:9000
        [3] Port which socks server will use for connecting with target host. ex 8000

        Full Example Command:
            start meshnet-socks-server sockssrv0 101.202.34.56:9000 8001
";

const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml");

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("skywire-config-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    pub(super) fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn parse_err(text: &str) -> ConfigError {
    Config::parse(text, "conf/test.yaml").unwrap_err()
}

/// The error is a parse error at `line` about `key`, and its message says so up front.
fn assert_located(err: &ConfigError, line: u64, key: &str) {
    assert_eq!(err.file(), Path::new("conf/test.yaml"), "{err}");
    assert_eq!(err.position().map(|p| p.line), Some(line), "{err}");
    assert_eq!(err.key(), Some(key), "{err}");
    let shown = err.to_string();
    let column = err.position().unwrap().column;
    assert!(
        shown.starts_with(&format!("conf/test.yaml:{line}:{column}: {key}: ")),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "{shown}");
    assert!(err.is_bad_config());
}

/// `text` as the file `conf/test.yaml`.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "conf/test.yaml")
}

/// The error names the file, the line and the key, in that order and in that format.
pub(super) fn assert_at(err: &ConfigError, line: u64, key: &str) {
    assert_eq!(err.position().map(|p| p.line), Some(line), "{err}");
    assert_eq!(err.key(), Some(key), "{err}");
    let column = err.position().unwrap().column;
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("conf/test.yaml:{line}:{column}: {key}: ")),
        "{shown}"
    );
    assert!(err.is_bad_config(), "{err}");
}

/// `text` fails to parse with `problem` about the value at `key`, on `line`.
pub(super) fn assert_invalid(text: &str, line: u64, key: &str, problem: Problem) {
    let err = parse(text).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { problem: p, .. } if *p == problem),
        "{err:?}"
    );
    assert_at(&err, line, key);
    assert!(err.to_string().ends_with(&problem.to_string()), "{err}");
}

/// `text` fails to parse with `problem` about the value at `key`, on `line`, naming the
/// earlier value it clashes with, `first` (line, key).
pub(super) fn assert_conflict(
    text: &str,
    line: u64,
    key: &str,
    first: (u64, &str),
    problem: Problem,
) {
    let err = parse(text).unwrap_err();
    match &err {
        ConfigError::Conflict {
            problem: p,
            other_key,
            other_position,
            ..
        } => {
            assert_eq!(*p, problem, "{err}");
            assert_eq!(other_key, first.1, "{err}");
            assert_eq!(other_position.map(|p| p.line), Some(first.0), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert_at(&err, line, key);
    assert!(
        err.to_string()
            .ends_with(&format!("; the same as {} at line {}", first.1, first.0)),
        "{err}"
    );
}

#[test]
fn the_reference_block_loads_unchanged() {
    let config = Config::parse(REFERENCE_BLOCK, "/etc/skywire/config.yaml").unwrap();
    assert_eq!(config.node, NodeConfig::default());
    assert_eq!(config.apps.len(), 1);
    let app = config.apps.get("meshnet-socks-server").unwrap();
    assert_eq!(app.name.as_str(), "meshnet-socks-server");
    assert!(app.daemon);
    assert_eq!(app.desc, "DESCRIPTION GOES HERE");
    assert_eq!(
        app.path.as_written(),
        "bin/meshnet/meshnet-run-socks-server"
    );
    assert_eq!(
        app.path.resolved(),
        Path::new("/etc/skywire/bin/meshnet/meshnet-run-socks-server")
    );
    assert!(app.default_args.is_empty());
    assert_eq!(
        app.help,
        "[1] Text name of app, must be unique\n\
             [2] Node address which app will be talked with. ex 101.202.34.56:9000\n\
             [3] Port which socks server will use for connecting with target host. ex 8000\n\
             \n\
             Full Example Command:\n    \
             start meshnet-socks-server sockssrv0 101.202.34.56:9000 8001\n"
    );
}

#[test]
fn the_repo_config_loads_and_contains_the_reference_block() {
    let config = Config::load(REPO_CONFIG).unwrap();
    let base = Path::new(REPO_CONFIG).parent().unwrap();
    assert_eq!(config.node.key, base.join("node.key"));
    let reference = Config::parse(REFERENCE_BLOCK, REPO_CONFIG).unwrap();
    let expected = reference.apps.get("meshnet-socks-server").unwrap();
    assert_eq!(config.apps.get("meshnet-socks-server"), Some(expected));
    let ours = config.apps.get("skywire-demo").unwrap();
    assert_eq!(ours.path.resolved(), base.join("target/release/skywire"));
    assert_eq!(ours.default_args, ["demo", "--packets", "10000"]);
    let node_app = config.apps.get("skywire-node").unwrap();
    assert!(node_app.daemon);
    assert_eq!(node_app.default_args, ["node", "--config", "config.yaml"]);
    let text = fs::read_to_string(REPO_CONFIG).unwrap();
    assert!(text.contains(REFERENCE_BLOCK.trim_start_matches("apps:\n")));
    // The original's VPN apps, through their scripts; the example's VPN section names B.
    for (app, script) in [
        ("meshnet-vpn-server", "meshnet-run-vpn-server"),
        ("meshnet-vpn-client", "meshnet-run-vpn-client"),
    ] {
        let app = config.apps.get(app).unwrap();
        assert!(app.daemon);
        assert_eq!(app.path.resolved(), base.join("bin/meshnet").join(script));
        assert!(app.path.resolved().is_file(), "{script}");
    }
    assert_eq!(config.vpn.exit.clients.len(), 1);
    assert_eq!(
        config.vpn.client.exit,
        config.vpn.exit.clients.first().copied()
    );
    assert_eq!(config.vpn.exit.pool_ipv4, default_pool_ipv4());

    // The node section is a complete node: a TUN device and one direct route.
    let node = &config.node;
    assert_eq!(node.listen(), DEFAULT_LISTEN);
    assert_eq!(node.control_socket(), Path::new(DEFAULT_CONTROL_SOCKET));
    let tun = node.tun().unwrap();
    assert_eq!((tun.name.as_str(), tun.mtu), ("sky0", DEFAULT_MTU));
    assert_eq!(tun.addresses.len(), 2);
    let [route] = node.routes() else {
        panic!("{:?}", node.routes())
    };
    assert_eq!(route.name, "to-b");
    assert_eq!(route.first_hop, route.prev_hop);
    assert!(route.persistent_keepalive.is_some());
    assert!(node.relays().is_empty());
    assert_eq!(node.manager(), None);

    // A node file: the manager section is absent, so all defaults.
    assert!(config.has_node_section() && !config.has_manager_section());
    assert_eq!(config.manager, ManagerConfig::default());
}

/// The commented-out block of `text` that starts with the line `# manager:` at `indent`
/// spaces, uncommented, with the placeholders for keys replaced by keys.
fn uncommented_manager_example(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let start = format!("{pad}# manager:");
    let inside = format!("{pad}#   ");
    let mut lines = text.lines().skip_while(|line| *line != start);
    let first = lines.next().unwrap();
    let mut block = format!("{}\n", first.replacen("# ", "", 1));
    for line in lines.take_while(|line| line.starts_with(&inside)) {
        block.push_str(&line.replacen("# ", "", 1));
        block.push('\n');
    }
    block
        .replace("<the manager's public key>", &"3e".repeat(32))
        .replace("<A's public key>", &"a0".repeat(32))
}

#[test]
fn the_repo_configs_manager_examples_load_uncommented() {
    let text = fs::read_to_string(REPO_CONFIG).unwrap();

    let link = uncommented_manager_example(&text, 2);
    assert!(link.lines().count() > 5, "{link}");
    let config = Config::parse(&format!("node:\n{link}"), REPO_CONFIG).unwrap();
    let link = config.node.manager().unwrap();
    assert_eq!(link.address, "198.18.0.9:5999".parse().unwrap());
    assert_eq!(link.endpoint, "198.18.0.1:6000".parse().unwrap());

    let manager = uncommented_manager_example(&text, 0);
    assert!(manager.lines().count() > 20, "{manager}");
    let config = Config::parse(&manager, REPO_CONFIG).unwrap();
    assert!(config.has_manager_section() && !config.has_node_section());
    let manager = &config.manager;
    let base = Path::new(REPO_CONFIG).parent().unwrap();
    assert_eq!(manager.key, base.join("manager.key"));
    assert_eq!(manager.listen(), "198.18.0.9:5999".parse().unwrap());
    assert_eq!(manager.allow().map(<[_]>::len), Some(2));
    assert_eq!(manager.links().len(), 1);
    // The example spells out the defaults of everything else.
    let defaults = ManagerConfig::default();
    assert_eq!(manager.rule_expiry(), defaults.rule_expiry());
    assert_eq!(manager.setup_timeout(), defaults.setup_timeout());
    assert_eq!(manager.heartbeat(), defaults.heartbeat());
    assert_eq!(manager.weight(), defaults.weight());
    assert_eq!(
        (manager.min_hops(), manager.max_hops()),
        (defaults.min_hops(), defaults.max_hops())
    );
}

#[test]
fn a_section_counts_as_written_even_without_a_value() {
    for (text, node, manager) in [
        ("", false, false),
        ("apps: {}\n", false, false),
        ("# manager:\n", false, false),
        ("node:\n", true, false),
        ("node: {}\n", true, false),
        ("manager:\n", false, true),
        ("manager: {}\n", false, true),
        ("node: {}\nmanager:\n  weight: latency\n", true, true),
    ] {
        let config = Config::parse(text, "c.yaml").unwrap();
        assert_eq!(config.has_node_section(), node, "{text:?}");
        assert_eq!(config.has_manager_section(), manager, "{text:?}");
    }
}

/// What `skywire pubkey --config` prints: the manager's key for a file with a manager
/// section and no node section, the node's otherwise (as `src/main.rs` loads it).
fn pubkey(config: &Config) -> PublicKey {
    let key = if config.has_manager_section() && !config.has_node_section() {
        config.manager_key().unwrap()
    } else {
        crate::keyfile::load_private_key(&config.node.key).unwrap()
    };
    key.public_key()
}

#[test]
fn a_manager_only_file_is_the_managers_identity() {
    let dir = Scratch::new();
    let node = crate::keyfile::write_new_key(dir.0.join("node.key")).unwrap();
    let manager = crate::keyfile::write_new_key(dir.0.join("manager.key")).unwrap();
    let load = |name: &str, text: &str| Config::load(dir.file(name, text.as_bytes())).unwrap();

    let config = load("m.yaml", "manager:\n  key: manager.key\n");
    assert_eq!(pubkey(&config), manager);
    let config = load("n.yaml", "node:\n  key: node.key\n");
    assert_eq!(pubkey(&config), node);
    let both = "node:\n  key: node.key\nmanager:\n  key: manager.key\n";
    let config = load("both.yaml", both);
    assert_eq!(pubkey(&config), node);
    assert_eq!(config.manager_key().unwrap().public_key(), manager);
}

#[test]
fn the_repo_config_becomes_a_node_setup_with_a_key_next_to_it() {
    let dir = Scratch::new();
    let text = fs::read(REPO_CONFIG).unwrap();
    let path = dir.file("config.yaml", &text);
    let public = crate::keyfile::write_new_key(dir.0.join("node.key")).unwrap();
    let config = Config::load(&path).unwrap();
    let setup = config.node_setup().unwrap();
    assert_eq!(setup.public_key(), public);
    assert_eq!(setup.listen, config.node.listen());
    assert_eq!(setup.tun.as_ref(), config.node.tun());
    assert_eq!(setup.routes, config.node.routes());
    assert!(setup.relays.is_empty());
}

#[test]
fn empty_and_comment_only_files_are_the_default_config() {
    for text in [
        "",
        "# nothing yet\n",
        "node:\napps:\n",
        "node: {}\napps: {}\n",
    ] {
        let config = Config::parse(text, "c.yaml").unwrap();
        assert_eq!(config.node.key, Path::new(DEFAULT_NODE_KEY), "{text:?}");
        assert_eq!(config.node, NodeConfig::default(), "{text:?}");
        assert!(config.apps.is_empty(), "{text:?}");
    }
}

#[test]
fn optional_app_fields_default_and_order_is_kept() {
    let text =
        "apps:\n  zed:\n    path: z\n  alpha:\n    path: /bin/a\n    default_args: [8000, -v]\n";
    let config = Config::parse(text, "c.yaml").unwrap();
    let names: Vec<_> = config.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["zed", "alpha"]);
    let zed = config.apps.get("zed").unwrap();
    assert!(!zed.daemon);
    assert_eq!((zed.desc.as_str(), zed.help.as_str()), ("", ""));
    assert!(zed.default_args.is_empty());
    let alpha = config.apps.get("alpha").unwrap();
    assert_eq!(alpha.default_args, ["8000", "-v"]);
    assert_eq!(alpha.path.resolved(), Path::new("/bin/a"));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text =
        "node:\n  key: keys/node.key\napps:\n  a:\n    path: ../bin/a\n  b:\n    path: /opt/b\n";
    let config = Config::parse(text, "/etc/skywire/config.yaml").unwrap();
    assert_eq!(config.node.key, Path::new("/etc/skywire/keys/node.key"));
    let a = config.apps.get("a").unwrap();
    assert_eq!(a.path.as_written(), "../bin/a");
    assert_eq!(a.path.resolved(), Path::new("/etc/skywire/../bin/a"));
    assert_eq!(
        config.apps.get("b").unwrap().path.resolved(),
        Path::new("/opt/b")
    );
    // A bare file name has an empty parent: paths stay relative to where it was found.
    let config = Config::parse(text, "config.yaml").unwrap();
    assert_eq!(config.node.key, Path::new("keys/node.key"));
    let config = Config::parse("node:\n  key: /k\n", "config.yaml").unwrap();
    assert_eq!(config.node.key, Path::new("/k"));
}

#[test]
fn load_resolves_against_the_files_folder() {
    let dir = Scratch::new();
    let path = dir.file("c.yaml", b"node:\n  key: n.key\n");
    assert_eq!(Config::load(&path).unwrap().node.key, dir.0.join("n.key"));
}

#[test]
fn an_unknown_key_names_file_key_and_line() {
    let err = parse_err("node:\n  key: a.key\napps:\n  foo:\n    path: p\n    deamon: true\n");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_located(&err, 6, "apps.foo.deamon");
    assert_eq!(err.position().unwrap().column, 5);
    assert!(err.to_string().contains("deamon"), "{err}");

    let err = parse_err("# top\nnode:\n  kee: a.key\n");
    assert_located(&err, 3, "node.kee");
    let err = parse_err("nodes:\n  key: a\n");
    assert_located(&err, 1, "nodes");
}

#[test]
fn a_wrong_type_names_file_key_and_line() {
    let err = parse_err("apps:\n  foo:\n    path: p\n\n    daemon: sometimes\n");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_located(&err, 5, "apps.foo.daemon");

    let err = parse_err("apps:\n  foo:\n    path: p\n    default_args: [a, [b]]\n");
    assert_located(&err, 4, "apps.foo.default_args[1]");
    let err = parse_err("apps:\n  foo:\n    path: [p]\n");
    assert_located(&err, 3, "apps.foo.path");
    let err = parse_err("apps:\n  - foo\n");
    assert_located(&err, 2, "apps");
    let err = parse_err("apps:\n  foo:\n    desc:\n    path: p\n");
    assert_located(&err, 3, "apps.foo.desc");
}

#[test]
fn a_missing_path_names_the_app() {
    let err = parse_err("apps:\n  foo:\n    daemon: true\n");
    assert_eq!(err.key(), Some("apps.foo"), "{err}");
    assert!(err.to_string().contains("path"), "{err}");
}

#[test]
fn a_duplicate_app_is_refused_at_the_second_one() {
    let err = parse_err("apps:\n  foo:\n    path: a\n  foo:\n    path: b\n");
    assert_eq!(err.position().map(|p| p.line), Some(4), "{err}");
    assert!(err.to_string().contains("foo"), "{err}");
}

#[test]
fn invalid_values_are_located_problems() {
    let err = parse_err("apps:\n  \"\":\n    path: p\n");
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::EmptyAppName,
                ..
            }
        ),
        "{err:?}"
    );
    assert_located(&err, 2, "apps.\"\"");

    let err = parse_err("apps:\n  ok:\n    path: p\n  \"two words\":\n    path: p\n");
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::AppNameNotOneWord,
                ..
            }
        ),
        "{err:?}"
    );
    assert_located(&err, 4, "apps.\"two words\"");

    let err = parse_err("node:\n  key: ''\n");
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::EmptyPath,
                ..
            }
        ),
        "{err:?}"
    );
    assert_located(&err, 2, "node.key");

    let err = parse_err("apps:\n  foo:\n    path: \"a\\0b\"\n");
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::NulInPath,
                ..
            }
        ),
        "{err:?}"
    );
    assert_located(&err, 3, "apps.foo.path");
}

#[test]
fn a_yaml_syntax_error_names_the_line() {
    let err = parse_err("node:\n  key: a\napps:\n  foo: [unclosed\n  bar: 1\n");
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let line = err.position().unwrap().line;
    assert!((4..=6).contains(&line), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("conf/test.yaml:{line}:"))
    );

    let err = parse_err("apps:\n  foo:\n    path: p\n   bad: x\n");
    assert_eq!(err.position().map(|p| p.line), Some(4), "{err}");
    assert_eq!(err.key(), Some("apps"), "{err}");
    let err = parse_err("node: {}\n---\nnode: {}\n");
    assert_eq!(err.position().map(|p| p.line), Some(3), "{err}");
}

#[test]
fn an_oversized_config_is_refused_before_parsing() {
    let big = format!("# {}\n", "x".repeat(MAX_CONFIG_LEN));
    let err = Config::parse(&big, "big.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::TooLarge { .. }), "{err:?}");
    assert!(err.is_bad_config());

    let dir = Scratch::new();
    let path = dir.file("big.yaml", big.as_bytes());
    let err = Config::load(&path).unwrap_err();
    assert!(
        matches!(err, ConfigError::TooLarge { len, .. } if len == big.len() as u64),
        "{err:?}"
    );
    assert!(err.to_string().starts_with(&path.display().to_string()));

    let just_fits = format!("#{}", "x".repeat(MAX_CONFIG_LEN - 1));
    let path = dir.file("fits.yaml", just_fits.as_bytes());
    Config::load(&path).unwrap();
}

#[test]
fn a_config_linked_to_another_file_does_not_print_its_lines() {
    // A symlink to /etc/shadow given to a root daemon: the error names the file and where,
    // not the line (issue 16: its first line used to appear on the terminal).
    let dir = Scratch::new();
    let hash = "$y$j9T$abcdefghijklmnopqrstuv$HASHHASHHASHHASHHASHHASHHASHHASHHASHHASH";
    let shadow = dir.file(
        "shadow",
        format!("root:{hash}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n").as_bytes(),
    );
    let link = dir.0.join("node.yaml");
    std::os::unix::fs::symlink(&shadow, &link).unwrap();
    let err = Config::load(&link).unwrap_err();
    let text = format!("{err}");
    assert!(!text.contains("HASH") && !text.contains("root:"), "{text}");
    assert!(
        text.starts_with(&format!("{}:1:", link.display())),
        "{text}"
    );
    assert!(text.contains("characters not shown"), "{text}");
    // A short locked account's line is not a key either.
    let err = parse_err("root:*:20228:0:99999:7:::\n");
    assert!(!err.to_string().contains("20228"), "{err}");
    // An unknown plain key still is shown, and so is an app with a name in quotes.
    let err = parse_err("nodes:\n  key: k\n");
    assert!(err.to_string().contains("unknown field `nodes`"), "{err}");
    let err = parse_err("apps:\n  ok:\n    path: p\n  \"two words\":\n    path: p\n");
    assert_located(&err, 4, "apps.\"two words\"");
}

#[test]
fn load_refuses_what_is_not_a_utf8_regular_file() {
    let dir = Scratch::new();
    let err = Config::load(&dir.0).unwrap_err();
    assert!(matches!(err, ConfigError::NotRegularFile { .. }), "{err:?}");
    assert!(err.is_bad_config());

    let path = dir.file("latin1.yaml", b"node:\n  key: caf\xe9\n");
    let err = Config::load(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::NotUtf8 {
                position: Position {
                    line: 2,
                    column: 11
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:11: ", path.display()))
    );
}

#[test]
fn a_missing_file_is_io_not_found_and_still_a_bad_config() {
    let dir = Scratch::new();
    let path = dir.0.join("missing.yaml");
    let err = Config::load(&path).unwrap_err();
    match &err {
        ConfigError::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert!(err.is_bad_config());
    assert_eq!(err.file(), path);
}

#[test]
fn an_unreadable_file_is_io_and_not_a_bad_config() {
    let dir = Scratch::new();
    let path = dir.file("secret.yaml", b"node: {}\n");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads it anyway; the check only means something for other users.
    if let Err(err) = Config::load(&path) {
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        assert!(!err.is_bad_config());
    }
}

#[test]
fn the_socks_section_parses_with_defaults_and_located_errors() {
    let config = Config::parse(
        "socks:\n  client:\n    exit: ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382\n  exit:\n    clients: [ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382]\n    allow: [\"198.18.0.0/15:8080\", \"[2001:db8::/32]:*\"]\n    deny_ports: [25, 465]\n",
        "conf/test.yaml",
    )
    .unwrap();
    assert_eq!(
        config.socks.client.listen,
        crate::config::DEFAULT_SOCKS_LISTEN
    );
    assert_eq!(config.socks.client.exit_port, 1080);
    assert!(config.socks.client.exit.is_some());
    assert_eq!(config.socks.exit.clients.len(), 1);
    assert_eq!(config.socks.exit.allow.len(), 2);
    assert_eq!(config.socks.exit.deny_ports, [25, 465]);
    assert_eq!(config.socks.exit.rate_per_client, 50);

    let cases: [(&str, u64, &str, Problem); 6] = [
        (
            "socks:\n  client:\n    listen: 0.0.0.0:1080\n",
            3,
            "socks.client.listen",
            Problem::SocksListenNeedsAuth,
        ),
        (
            "socks:\n  client:\n    username: alice\n",
            3,
            "socks.client.username",
            Problem::UsernameWithoutPassword,
        ),
        (
            "socks:\n  exit:\n    public: true\n    clients: [ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382]\n",
            4,
            "socks.exit.clients",
            Problem::PublicWithClients,
        ),
        (
            "socks:\n  exit:\n    allow: [\"10.0.0.0/8\"]\n",
            3,
            "socks.exit.allow[0]",
            Problem::NotAnException,
        ),
        (
            "socks:\n  exit:\n    port: 0\n",
            3,
            "socks.exit.port",
            Problem::NotAPort,
        ),
        (
            "socks:\n  client:\n    username: \"\"\n    password_file: p\n",
            3,
            "socks.client.username",
            Problem::NotAUsername,
        ),
    ];
    for (text, line, key, problem) in cases {
        assert_invalid(text, line, key, problem);
    }
}

#[test]
fn fwmark_defaults_with_a_tun_and_is_checked() {
    let tun = "node:\n  tun:\n    name: sky0\n    addresses: [10.77.0.1/24]\n";
    let with_tun = parse(tun).unwrap();
    assert_eq!(
        with_tun.node.fwmark(),
        Some(skywire_dataplane::engine::Fwmark::DEFAULT)
    );
    assert_eq!(
        parse("node:\n  listen: 0.0.0.0:6000\n")
            .unwrap()
            .node
            .fwmark(),
        None
    );
    let off = parse(&format!("{tun}  fwmark: off\n")).unwrap();
    assert_eq!(off.node.fwmark(), None);
    let hex = parse(&format!("{tun}  fwmark: 0x5000/0xf000\n")).unwrap();
    assert_eq!(
        hex.node.fwmark(),
        Some(skywire_dataplane::engine::Fwmark {
            mark: 0x5000,
            mask: 0xf000
        })
    );
    let whole = parse(&format!("{tun}  fwmark: 42\n")).unwrap();
    assert_eq!(
        whole.node.fwmark().map(|f| (f.mark, f.mask)),
        Some((42, u32::MAX))
    );
    for bad in ["0", "0x5000/0x0f00", "on", "0x", "12/", "-1", "0x1ffffffff"] {
        assert_invalid(
            &format!("{tun}  fwmark: \"{bad}\"\n"),
            5,
            "node.fwmark",
            Problem::NotAFwmark,
        );
    }
}

#[test]
fn the_vpn_section_parses_with_defaults_and_located_errors() {
    let key = "ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382";
    let config = parse(&format!(
        "vpn:\n  exit:\n    clients: [{key}]\n    pool:\n      ipv4: 198.19.128.0/24\n      ipv6: none\n    allow_lan: [fd00:9::/64]\n    dns: [198.18.9.53, \"fd00:9::53\"]\n    uplinks: [x-wan]\n    state: exit.json\n  client:\n    exit: {key}\n    lockdown: true\n    table: 100\n"
    ))
    .unwrap();
    let exit = &config.vpn.exit;
    assert_eq!(exit.port, 44);
    assert_eq!(exit.clients.len(), 1);
    assert_eq!(exit.pool_ipv4.to_string(), "198.19.128.0/24");
    assert_eq!(exit.pool_ipv6, Ipv6Pool::None);
    assert_eq!(exit.dns.len(), 2);
    assert_eq!(exit.uplinks, ["x-wan"]);
    assert_eq!(exit.state, Path::new("conf/exit.json"));
    assert_eq!(exit.lease_grace, DEFAULT_LEASE_GRACE);
    let client = &config.vpn.client;
    assert!(client.lockdown && client.dns);
    assert_eq!((client.table, client.priority), (100, DEFAULT_VPN_PRIORITY));
    assert_eq!(client.lan_ranges, default_lan_ranges());
    assert_eq!(client.state, Path::new(DEFAULT_VPN_CLIENT_STATE));
    // No section: every default.
    assert_eq!(parse("node: {}\n").unwrap().vpn, VpnConfig::default());

    let cases: [(String, u64, &str, Problem); 9] = [
        (
            "vpn:\n  exit:\n    pool:\n      ipv4: 10.0.0.0/31\n".to_owned(),
            4,
            "vpn.exit.pool.ipv4",
            Problem::BadIpv4Pool,
        ),
        (
            "vpn:\n  exit:\n    pool:\n      ipv4: \"fd00::/64\"\n".to_owned(),
            4,
            "vpn.exit.pool.ipv4",
            Problem::BadIpv4Pool,
        ),
        (
            "vpn:\n  exit:\n    pool:\n      ipv6: fd00::/127\n".to_owned(),
            4,
            "vpn.exit.pool.ipv6",
            Problem::BadIpv6Pool,
        ),
        (
            format!("vpn:\n  exit:\n    public: true\n    clients: [{key}]\n"),
            4,
            "vpn.exit.clients",
            Problem::PublicWithClients,
        ),
        (
            "vpn:\n  exit:\n    allow_lan:\n      - 198.19.50.0/24\n      - 10.0.0.0/8\n"
                .to_owned(),
            5,
            "vpn.exit.allow_lan[1]",
            Problem::AllowLanOverlapsPool,
        ),
        (
            "vpn:\n  exit:\n    pool:\n      ipv6: fd00:5b::/64\n    allow_lan: [\"fd00::/8\"]\n"
                .to_owned(),
            5,
            "vpn.exit.allow_lan[0]",
            Problem::AllowLanOverlapsPool,
        ),
        (
            "vpn:\n  exit:\n    uplinks: [eth0, \"eth 1\"]\n".to_owned(),
            3,
            "vpn.exit.uplinks[1]",
            Problem::InterfaceNameCharacters,
        ),
        (
            "vpn:\n  client:\n    table: 255\n".to_owned(),
            3,
            "vpn.client.table",
            Problem::NotARoutingTable,
        ),
        (
            "vpn:\n  exit:\n    dns: [198.18.9.53:53]\n".to_owned(),
            3,
            "vpn.exit.dns[0]",
            Problem::NotAnIpAddress,
        ),
    ];
    for (text, line, key, problem) in cases {
        assert_invalid(&text, line, key, problem);
    }
    // An unknown key in the section is a located parse error, too.
    let err = parse("vpn:\n  client:\n    kill_switch: true\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_eq!(err.position().map(|p| p.line), Some(3), "{err}");
}

#[test]
fn metrics_are_off_unless_written_and_located_when_wrong() {
    let config = parse("node:\n  key: k\nmanager:\n  key: m\n").unwrap();
    assert_eq!(config.node.metrics(), None);
    assert_eq!(config.manager.metrics_listen(), None);
    let config = parse(
        "node:\n  metrics:\n    listen: 127.0.0.1:9586\nmanager:\n  metrics:\n    listen: \
         \"[::1]:9587\"\n",
    )
    .unwrap();
    assert_eq!(
        config.node.metrics(),
        Some(MetricsConfig {
            listen: "127.0.0.1:9586".parse().unwrap(),
            per_route: false
        })
    );
    assert_eq!(
        config.manager.metrics_listen(),
        Some("[::1]:9587".parse().unwrap())
    );
    let config = parse("node:\n  metrics:\n    listen: 0.0.0.0:0\n    per_route: true\n").unwrap();
    assert!(config.node.metrics().unwrap().per_route);

    assert_invalid(
        "node:\n  metrics:\n    listen: localhost:9586\n",
        3,
        "node.metrics.listen",
        Problem::NotASocketAddress,
    );
    assert_invalid(
        "manager:\n  key: m\n  metrics:\n    listen: 9587\n",
        4,
        "manager.metrics.listen",
        Problem::NotASocketAddress,
    );
    // A typo, a per-route switch the manager does not have, a missing address: located.
    let err =
        parse("node:\n  metrics:\n    listen: 127.0.0.1:9586\n    per_rout: true\n").unwrap_err();
    assert_eq!(err.position().map(|p| p.line), Some(4), "{err}");
    assert!(err.to_string().contains("per_rout"), "{err}");
    let err =
        parse("manager:\n  metrics:\n    listen: 127.0.0.1:1\n    per_route: true\n").unwrap_err();
    assert_eq!(err.position().map(|p| p.line), Some(4), "{err}");
    let err = parse("node:\n  metrics:\n    per_route: true\n").unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
    assert!(err.to_string().starts_with("conf/test.yaml:"), "{err}");
    let err =
        parse("node:\n  metrics:\n    listen: 127.0.0.1:1\n    per_route: maybe\n").unwrap_err();
    assert_eq!(err.position().map(|p| p.line), Some(4), "{err}");
}
