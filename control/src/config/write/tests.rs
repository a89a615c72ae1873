use super::*;
use crate::config::tests::Scratch;
use crate::config::{
    AcceptRule, Account, DEFAULT_MANAGER_KEY, DEFAULT_NODE_KEY, Ipv6Pool, Problem,
    SocksClientConfig, SocksConfig, SocksExitConfig, VpnClientConfig, VpnConfig, VpnExitConfig,
};
use proptest::prelude::*;
use skywire_dataplane::route::Prefix;
use skywire_dataplane::stack::StackSetup;
use skywire_dataplane::wire::RouteId;

fn key(byte: u8) -> PublicKey {
    PublicKey::from_bytes([byte; 32])
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

fn prefix(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A node with every field away from its default: both address families, a route with a
/// keepalive and one without, two relay rules, a manager.
fn full_node() -> NodeSection {
    NodeSection {
        key: PathBuf::from("/etc/sky/keys/node.key"),
        listen: addr("198.18.0.1:7000"),
        control_socket: PathBuf::from("/run/sky/a.sock"),
        state_dir: PathBuf::from("/var/lib/sky-a"),
        offload: false,
        fwmark: Some(Some(Fwmark {
            mark: 0x5000,
            mask: 0xff00,
        })),
        tun: Some(TunSetup {
            name: "sky0".to_owned(),
            addresses: vec![prefix("10.77.0.1/24"), prefix("fd77::1/64")],
            mtu: 1400,
        }),
        routes: vec![
            RouteSetup {
                name: "to-b".to_owned(),
                peer: key(0xb0),
                prefixes: vec![prefix("10.77.0.2/32"), prefix("fd77::2/128")],
                first_hop: addr("[fd00::2]:6000"),
                out_id: id(12),
                in_id: id(21),
                peer_in_id: id(12),
                prev_hop: addr("198.18.0.2:6000"),
                persistent_keepalive: Some(Duration::from_secs(25)),
            },
            RouteSetup {
                name: "to-c".to_owned(),
                peer: key(0xc0),
                prefixes: vec![prefix("10.1.0.0/16")],
                first_hop: addr("198.18.0.2:6000"),
                out_id: id(u32::MAX),
                in_id: id(1),
                peer_in_id: id(2),
                prev_hop: addr("198.18.0.2:6000"),
                persistent_keepalive: None,
            },
        ],
        relays: vec![
            RelaySetup {
                in_id: id(100),
                prev_hop: addr("198.18.0.1:6000"),
                out_id: id(101),
                next_hop: addr("198.18.0.3:6000"),
            },
            RelaySetup {
                in_id: id(200),
                prev_hop: addr("[fd00::3]:6000"),
                out_id: id(201),
                next_hop: addr("198.18.0.1:6000"),
            },
        ],
        manager: Some(ManagerLink {
            address: addr("198.18.0.9:5999"),
            key: key(0x3e),
            endpoint: addr("198.18.0.1:7000"),
            accept: vec![
                AcceptRule {
                    peer: None,
                    prefixes: vec![prefix("10.77.0.0/24"), prefix("fd77::/64")],
                },
                AcceptRule {
                    peer: Some(key(0x5a)),
                    prefixes: vec![prefix("10.78.0.9/32")],
                },
            ],
        }),
        apps: NodeApps {
            socket: Some(PathBuf::from("/run/sky-apps/a.sock")),
            group: Some(Account::Name("skywire".to_owned())),
            users: vec![Account::Name("alice".to_owned()), Account::Id(1001)],
            stack: StackSetup {
                max_streams: 100,
                max_streams_per_peer: 10,
                max_streams_per_app: 20,
                max_half_open: 5,
                max_listeners: 3,
                idle_timeout: Duration::from_secs(90),
                take_timeout: Duration::from_millis(2500),
                buffer: 65536,
                memory: 1 << 20,
            },
        },
        metrics: Some(MetricsConfig {
            listen: addr("127.0.0.1:9586"),
            per_route: true,
        }),
    }
}

/// A manager with every field away from its default.
fn full_manager() -> ManagerSection {
    ManagerSection {
        key: PathBuf::from("/etc/sky/manager.key"),
        listen: addr("[::1]:7000"),
        allow: Some(vec![key(0xa0), key(0xb0)]),
        links: vec![[key(0xa0), key(0xb0)], [key(0xc0), key(0xb0)]],
        addresses: vec![
            (
                key(0xa0),
                vec![prefix("10.77.0.1/32"), prefix("fd77::1/128")],
            ),
            (key(0xb0), vec![prefix("10.77.0.2/32")]),
        ],
        address_ranges: Some(vec![prefix("10.77.0.0/16"), prefix("fd77::/64")]),
        rule_expiry: Duration::from_secs(60),
        setup_timeout: Duration::from_millis(500),
        heartbeat: Duration::from_secs(2),
        weight: RouteWeight::Latency,
        min_hops: 2,
        max_hops: 5,
        metrics: Some(addr("[::1]:9587")),
    }
}

/// Write `file`, load it back as `/written/config.yaml`.
fn round_trip(file: &ConfigFile) -> Config {
    let text = file.to_yaml().unwrap();
    Config::parse(&text, "/written/config.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn every_node_field_comes_back() {
    let node = full_node();
    let config = round_trip(&ConfigFile::node(node.clone()));
    assert_eq!(NodeSection::from(&config.node), node);
    assert!(config.has_node_section() && !config.has_manager_section());
    // Field by field through the loaded config's own accessors, too.
    let loaded = &config.node;
    assert_eq!(loaded.key, node.key);
    assert_eq!(loaded.listen(), node.listen);
    assert_eq!(loaded.control_socket(), node.control_socket);
    assert_eq!(loaded.state_dir(), node.state_dir);
    assert_eq!(loaded.offload(), node.offload);
    let default_mark = node.tun.as_ref().map(|_| Fwmark::DEFAULT);
    assert_eq!(loaded.fwmark(), node.fwmark.unwrap_or(default_mark));
    assert_eq!(loaded.tun(), node.tun.as_ref());
    assert_eq!(loaded.routes(), node.routes);
    assert_eq!(loaded.relays(), node.relays);
    assert_eq!(loaded.manager(), node.manager.as_ref());
    assert_eq!(loaded.apps(), &node.apps);
    assert_eq!(loaded.app_socket(), Path::new("/run/sky-apps/a.sock"));
}

#[test]
fn every_manager_field_comes_back() {
    let manager = full_manager();
    let config = round_trip(&ConfigFile::manager(manager.clone()));
    assert_eq!(ManagerSection::from(&config.manager), manager);
    assert!(config.has_manager_section() && !config.has_node_section());
    let loaded = &config.manager;
    assert_eq!(loaded.key, manager.key);
    assert_eq!(loaded.listen(), manager.listen);
    assert_eq!(loaded.allow(), manager.allow.as_deref());
    assert_eq!(loaded.links(), manager.links);
    assert_eq!(loaded.rule_expiry(), manager.rule_expiry);
    assert_eq!(loaded.setup_timeout(), manager.setup_timeout);
    assert_eq!(loaded.heartbeat(), manager.heartbeat);
    assert_eq!(loaded.weight(), manager.weight);
    assert_eq!(loaded.min_hops(), manager.min_hops);
    assert_eq!(loaded.max_hops(), manager.max_hops);
}

/// Both SOCKS apps with every field away from its default.
fn full_socks() -> SocksConfig {
    SocksConfig {
        client: SocksClientConfig {
            exit: Some(key(0xe1)),
            exit_port: 1081,
            listen: addr("198.18.0.1:1090"),
            auth: Some((
                "user 1".to_owned(),
                PathBuf::from("/etc/sky/socks password"),
            )),
            connections: 100,
            half_open: 10,
            negotiation_timeout: Duration::from_millis(2500),
            dial_timeout: Duration::from_secs(3),
            app_socket: Some(PathBuf::from("/run/sky-apps/a.sock")),
        },
        exit: SocksExitConfig {
            port: 1082,
            public: false,
            clients: vec![key(0xc1), key(0xc2)],
            allow: vec![
                "198.18.200.2/32:8080".parse().unwrap(),
                "[fd00::/8]:*".parse().unwrap(),
            ],
            deny_ports: vec![25, 465],
            mesh_ranges: Some(vec![prefix("10.77.0.0/24"), prefix("fd77::/64")]),
            streams: 20_000,
            streams_per_client: 10_000,
            rate_per_client: 5_000,
            half_open: 64,
            dial_timeout: Duration::from_secs(7),
            app_socket: Some(PathBuf::from("/run/sky-apps/c.sock")),
        },
    }
}

#[test]
fn every_socks_field_comes_back() {
    let socks = full_socks();
    let config = round_trip(&ConfigFile::socks(socks.clone()));
    assert_eq!(config.socks, socks);
    assert!(!config.has_node_section() && !config.has_manager_section());
    // The defaults, and an exit serving every node with no port denied.
    let defaults = SocksConfig::default();
    assert_eq!(
        round_trip(&ConfigFile::socks(defaults.clone())).socks,
        defaults
    );
    let mut open = SocksConfig::default();
    open.exit.public = true;
    open.exit.deny_ports = Vec::new();
    assert_eq!(round_trip(&ConfigFile::socks(open.clone())).socks, open);
}

/// Both VPN apps with every field away from its default.
fn full_vpn() -> VpnConfig {
    VpnConfig {
        exit: VpnExitConfig {
            port: 4444,
            public: false,
            clients: vec![key(0xc1), key(0x22)],
            pool_ipv4: prefix("198.19.128.0/24"),
            pool_ipv6: Ipv6Pool::Prefix(prefix("fd00:5b::/64")),
            allow_lan: vec![prefix("198.19.50.0/24"), prefix("fd00:9::/64")],
            allow_clients: true,
            dns: vec![
                "198.18.9.53".parse().unwrap(),
                "fd00:9::53".parse().unwrap(),
            ],
            uplinks: vec!["x-wan".to_owned(), "eth0.100".to_owned()],
            lease_grace: Duration::from_millis(1500),
            state: PathBuf::from("/var/lib/sky/exit state.json"),
            app_socket: Some(PathBuf::from("/run/sky-apps/x.sock")),
        },
        client: VpnClientConfig {
            exit: Some(key(0xe1)),
            exit_port: 4445,
            lockdown: true,
            allow_lan: true,
            lan_ranges: vec![prefix("198.18.60.0/24"), prefix("fe80::/10")],
            dns: false,
            table: 256,
            priority: 32765,
            state: PathBuf::from("/run/sky/client.json"),
            app_socket: Some(PathBuf::from("/run/sky-apps/c.sock")),
        },
    }
}

#[test]
fn every_vpn_field_comes_back() {
    let vpn = full_vpn();
    let config = round_trip(&ConfigFile::vpn(vpn.clone()));
    assert_eq!(config.vpn, vpn);
    assert!(!config.has_node_section() && !config.has_manager_section());
    let defaults = VpnConfig::default();
    assert_eq!(round_trip(&ConfigFile::vpn(defaults.clone())).vpn, defaults);
    // The other pool forms, a public exit, empty lists and no app socket.
    for pool_ipv6 in [
        Ipv6Pool::Auto,
        Ipv6Pool::None,
        Ipv6Pool::Prefix(prefix("fd00::/126")),
    ] {
        let mut vpn = full_vpn();
        vpn.exit.pool_ipv6 = pool_ipv6;
        vpn.exit.public = true;
        vpn.exit.clients = Vec::new();
        vpn.exit.dns = Vec::new();
        vpn.exit.uplinks = Vec::new();
        vpn.exit.allow_lan = Vec::new();
        vpn.exit.app_socket = None;
        vpn.client.exit = None;
        vpn.client.lan_ranges = Vec::new();
        vpn.client.table = u32::MAX;
        assert_eq!(round_trip(&ConfigFile::vpn(vpn.clone())).vpn, vpn);
    }
    // With the other sections in one file.
    let file = ConfigFile {
        comment: "all of it".to_owned(),
        node: Some(full_node()),
        manager: Some(full_manager()),
        socks: Some(full_socks()),
        vpn: Some(full_vpn()),
    };
    let config = round_trip(&file);
    assert_eq!(config.vpn, full_vpn());
    assert_eq!(config.socks, full_socks());
    assert_eq!(NodeSection::from(&config.node), full_node());
}

#[test]
fn the_vpn_text_reads_like_a_config_written_by_hand() {
    let mut vpn = VpnConfig::default();
    vpn.exit.clients = vec![key(0xcc)];
    vpn.client.exit = Some(key(0xee));
    let text = ConfigFile::vpn(vpn).to_yaml().unwrap();
    let (cc, ee) = ("cc".repeat(32), "ee".repeat(32));
    assert_eq!(
        text,
        format!(
            "vpn:
  exit:
    port: 44
    public: false
    clients:
    - {cc}
    pool:
      ipv4: 10.213.0.0/16
      ipv6: auto
    allow_lan: []
    allow_clients: false
    dns: []
    uplinks: []
    lease_grace: 2m
    state: /var/lib/skywire/vpn-exit.json
  client:
    exit: {ee}
    exit_port: 44
    lockdown: false
    allow_lan: false
    lan_ranges: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, fe80::/10]
    dns: true
    table: 29547
    priority: 5190
    state: /run/skywire/vpn-client.json
"
        )
    );
}

#[test]
fn vpn_values_that_break_a_rule_are_refused_with_the_parsers_error() {
    let problem = |vpn: VpnConfig| match ConfigFile::vpn(vpn).to_yaml() {
        Err(WriteError::Rejected(err)) => match &*err {
            ConfigError::Invalid { problem, .. } => (*problem, err.key().map(str::to_owned)),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let mut vpn = full_vpn();
    vpn.exit.public = true;
    assert_eq!(
        problem(vpn),
        (
            Problem::PublicWithClients,
            Some("vpn.exit.clients".to_owned())
        )
    );
    let mut vpn = full_vpn();
    vpn.exit.allow_lan.push(prefix("198.19.0.0/16"));
    assert_eq!(
        problem(vpn),
        (
            Problem::AllowLanOverlapsPool,
            Some("vpn.exit.allow_lan[2]".to_owned())
        )
    );
    let mut vpn = full_vpn();
    vpn.exit.pool_ipv4 = prefix("198.19.128.0/31");
    assert_eq!(
        problem(vpn),
        (Problem::BadIpv4Pool, Some("vpn.exit.pool.ipv4".to_owned()))
    );
    let mut vpn = full_vpn();
    vpn.exit.pool_ipv6 = Ipv6Pool::Prefix(prefix("10.0.0.0/8"));
    assert_eq!(problem(vpn).0, Problem::BadIpv6Pool);
    let mut vpn = full_vpn();
    vpn.exit.uplinks.push("sixteen-letters!".to_owned());
    assert_eq!(problem(vpn).0, Problem::InterfaceNameLength);
    let mut vpn = full_vpn();
    vpn.client.table = 254;
    assert_eq!(
        problem(vpn),
        (
            Problem::NotARoutingTable,
            Some("vpn.client.table".to_owned())
        )
    );
    let mut vpn = full_vpn();
    vpn.client.priority = 0;
    assert_eq!(problem(vpn).0, Problem::NotARulePriority);
}

#[test]
fn defaults_and_both_sections_come_back() {
    let file = ConfigFile {
        comment: String::new(),
        node: Some(NodeSection::new("/k/node.key")),
        manager: Some(ManagerSection::new("/k/manager.key")),
        socks: None,
        vpn: None,
    };
    let config = round_trip(&file);
    assert_eq!(Some(NodeSection::from(&config.node)), file.node);
    assert_eq!(Some(ManagerSection::from(&config.manager)), file.manager);
    // `new` is the loaded defaults with another key.
    let mut node = NodeSection::new(DEFAULT_NODE_KEY);
    assert_eq!(node, NodeSection::from(&NodeConfig::default()));
    node.key = PathBuf::from("/k/node.key");
    assert_eq!(Some(node), file.node);
    assert_eq!(
        ManagerSection::new(DEFAULT_MANAGER_KEY),
        ManagerSection::from(&ManagerConfig::default())
    );
    // A manager that admits any node writes no `allow`; a file with no section is the
    // default config.
    assert!(!file.to_yaml().unwrap().contains("allow"));
    let empty = ConfigFile::default().with_comment("nothing here");
    assert_eq!(empty.to_yaml().unwrap(), "# nothing here\n");
    let config = round_trip(&empty);
    assert!(!config.has_node_section() && !config.has_manager_section());
}

#[test]
fn a_loaded_config_is_written_again_unchanged() {
    // The repository's example: a TUN device with both families, a route with a keepalive.
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml");
    let original = Config::load(repo).unwrap();
    let file = ConfigFile::node(NodeSection::from(&original.node));
    let again = Config::parse(&file.to_yaml().unwrap(), repo).unwrap();
    assert_eq!(again.node, original.node);
}

#[test]
fn the_text_reads_like_a_config_written_by_hand() {
    let mut node = NodeSection::new("a.key");
    node.listen = addr("0.0.0.0:6000");
    node.control_socket = PathBuf::from("a.sock");
    node.tun = Some(TunSetup {
        name: "sky-a".to_owned(),
        addresses: vec![prefix("10.77.0.1/24")],
        mtu: 1420,
    });
    node.routes = vec![RouteSetup {
        name: "to-c".to_owned(),
        peer: key(0xcc),
        prefixes: vec![prefix("10.77.0.3/32")],
        first_hop: addr("198.18.1.2:6000"),
        out_id: id(100),
        in_id: id(201),
        peer_in_id: id(101),
        prev_hop: addr("198.18.1.2:6000"),
        persistent_keepalive: Some(Duration::from_millis(1500)),
    }];
    let text = ConfigFile::node(node)
        .with_comment("Written by a test.\nSecond line.")
        .to_yaml()
        .unwrap();
    let cc = "cc".repeat(32);
    assert_eq!(
        text,
        format!(
            "# Written by a test.
# Second line.
node:
  key: a.key
  listen: 0.0.0.0:6000
  control_socket: a.sock
  state_dir: /var/lib/skywire
  offload: true
  tun:
    name: sky-a
    addresses: [10.77.0.1/24]
    mtu: 1420
  routes:
  - name: to-c
    peer: {cc}
    prefixes: [10.77.0.3/32]
    first_hop: 198.18.1.2:6000
    out_id: 100
    in_id: 201
    peer_in_id: 101
    prev_hop: 198.18.1.2:6000
    persistent_keepalive: 1500ms
  apps:
    streams: 8192
    streams_per_peer: 2048
    streams_per_app: 4096
    half_open: 512
    listeners: 256
    idle_timeout: 1h
    take_timeout: 10s
    buffer: 262144
    memory: 536870912
"
        )
    );
}

#[test]
fn relative_paths_resolve_against_the_file_written() {
    let dir = Scratch::new();
    let mut node = NodeSection::new("keys/a.key");
    node.control_socket = PathBuf::from("a.sock");
    node.state_dir = PathBuf::from("state");
    let path = dir.0.join("a.yaml");
    ConfigFile::node(node).write(&path).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.node.key, dir.0.join("keys/a.key"));
    assert_eq!(config.node.control_socket(), dir.0.join("a.sock"));
    assert_eq!(config.node.state_dir(), dir.0.join("state"));
    // Writing again replaces the file.
    ConfigFile::manager(ManagerSection::new("m.key"))
        .write(&path)
        .unwrap();
    let config = Config::load(&path).unwrap();
    assert!(config.has_manager_section() && !config.has_node_section());
    assert_eq!(config.manager.key, dir.0.join("m.key"));
    // A folder that does not exist: an I/O error naming the file.
    let missing = dir.0.join("no/such/folder/x.yaml");
    let err = ConfigFile::manager(ManagerSection::new("m.key"))
        .write(&missing)
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Io { file, .. } if *file == missing),
        "{err:?}"
    );
}

/// Strings a careless emitter would break: YAML keywords, numbers, indicators, comment
/// starts, quotes, escapes, line breaks, non-ASCII.
const AWKWARD: [&str; 30] = [
    "yes", "no", "on", "off", "null", "~", "true", "False", "123", "0x1f", "1e5", ".inf", "-",
    "-x", "? q", "#hash", "a#b", "a:b", "a: b", "[x]", "{x}", "'q'", "\"dq\"", "*alias", "&anchor",
    "!tag", "%dir", "@at", "`tick", "---",
];

#[test]
fn awkward_route_names_and_paths_come_back_as_written() {
    for (i, awkward) in AWKWARD.iter().enumerate() {
        let mut node = full_node();
        if !awkward.contains(' ') {
            node.routes[0].name = (*awkward).to_owned();
        }
        node.key = PathBuf::from(format!("/keys/{awkward}"));
        node.control_socket = PathBuf::from(format!("/{awkward}"));
        let config = round_trip(&ConfigFile::node(node.clone()));
        assert_eq!(
            NodeSection::from(&config.node),
            node,
            "case {i}: {awkward:?}"
        );
    }
    // Relative paths that start with an indicator, and names with quotes and backslashes.
    for path in [
        "- x",
        "#k",
        "k #not a comment",
        "a: b",
        "\"q\"",
        "'",
        "\\",
        "é ü ß 鍵",
        "tab\there",
        "line\nbreak",
        "cr\rlf",
        "nul-free\u{7f}del",
        " leading",
        "trailing ",
        "..",
        "---",
        "... x",
    ] {
        let mut node = full_node();
        node.key = PathBuf::from(path);
        node.control_socket = PathBuf::from(format!("/run/{path}"));
        node.routes[1].name = "q\"'\\é#:".to_owned();
        let config = round_trip(&ConfigFile::node(node.clone()));
        let loaded = NodeSection::from(&config.node);
        assert_eq!(loaded.key, Path::new("/written").join(path), "{path:?}");
        assert_eq!(loaded.control_socket, node.control_socket, "{path:?}");
        assert_eq!(loaded.routes, node.routes, "{path:?}");
    }
}

#[test]
fn keys_that_look_like_numbers_stay_keys() {
    // All-digit hex reads as a (huge) integer unless quoted.
    for byte in [0x00, 0x11, 0x99, 0x1e, 0xe1] {
        let mut node = full_node();
        node.routes[0].peer = key(byte);
        if let Some(link) = &mut node.manager {
            link.key = key(byte);
        }
        let mut manager = full_manager();
        manager.allow = Some(vec![key(byte)]);
        manager.links = vec![[key(byte), key(0xaa)]];
        let file = ConfigFile {
            comment: String::new(),
            node: Some(node.clone()),
            manager: Some(manager.clone()),
            socks: None,
            vpn: None,
        };
        let config = round_trip(&file);
        assert_eq!(NodeSection::from(&config.node), node, "{byte:02x}");
        assert_eq!(ManagerSection::from(&config.manager), manager, "{byte:02x}");
    }
}

#[test]
fn a_comment_cannot_break_the_file() {
    let comment = "line one\nnode: {}\r\n\u{0}bell\u{7} # and\u{2028}separator\n\n";
    let file = ConfigFile::manager(full_manager()).with_comment(comment);
    let text = file.to_yaml().unwrap();
    assert!(
        text.starts_with("# line one\n# node: {}\n#  bell  # and separator\n#\nmanager:\n"),
        "{text}"
    );
    let config = round_trip(&file);
    assert!(!config.has_node_section());
    assert_eq!(ManagerSection::from(&config.manager), full_manager());
}

#[test]
fn values_that_break_a_rule_are_refused_with_the_parsers_error() {
    let problem = |file: ConfigFile| match file.to_yaml() {
        Err(WriteError::Rejected(err)) => match &*err {
            ConfigError::Invalid { problem, .. } | ConfigError::Conflict { problem, .. } => {
                (*problem, err.key().map(str::to_owned))
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let mut node = full_node();
    node.tun = None;
    assert_eq!(
        problem(ConfigFile::node(node)),
        (
            Problem::RoutesWithoutTun,
            Some("node.routes[0].prefixes".to_owned())
        )
    );
    let mut node = full_node();
    node.routes[1].name = "to-b".to_owned();
    assert_eq!(
        problem(ConfigFile::node(node)),
        (
            Problem::DuplicateRouteName,
            Some("node.routes[1].name".to_owned())
        )
    );
    let mut node = full_node();
    node.routes[0].name = "two words".to_owned();
    assert_eq!(
        problem(ConfigFile::node(node)).0,
        Problem::RouteNameNotOneWord
    );
    let mut node = full_node();
    if let Some(tun) = &mut node.tun {
        tun.name = "sky 0".to_owned();
    }
    assert_eq!(
        problem(ConfigFile::node(node)).0,
        Problem::InterfaceNameCharacters
    );
    let mut node = full_node();
    if let Some(tun) = &mut node.tun {
        tun.mtu = 1000;
    }
    assert_eq!(
        problem(ConfigFile::node(node)).0,
        Problem::MtuTooSmallForIpv6
    );
    let mut node = full_node();
    node.relays[0].next_hop = addr("0.0.0.0:6000");
    assert_eq!(
        problem(ConfigFile::node(node)).0,
        Problem::UnspecifiedHopAddress
    );
    let mut node = full_node();
    node.key = PathBuf::new();
    assert_eq!(problem(ConfigFile::node(node)).0, Problem::EmptyPath);
    let mut node = full_node();
    node.control_socket = PathBuf::from(format!("/{}", "s".repeat(107)));
    assert_eq!(
        problem(ConfigFile::node(node)).0,
        Problem::SocketPathTooLong
    );

    let mut manager = full_manager();
    manager.allow = Some(Vec::new());
    assert_eq!(
        problem(ConfigFile::manager(manager)),
        (Problem::EmptyAllowList, Some("manager.allow".to_owned()))
    );
    let mut manager = full_manager();
    manager.heartbeat = Duration::ZERO;
    assert_eq!(
        problem(ConfigFile::manager(manager)).0,
        Problem::HeartbeatOutOfRange
    );
    let mut manager = full_manager();
    manager.min_hops = 9;
    assert_eq!(
        problem(ConfigFile::manager(manager)).0,
        Problem::MaxHopsBelowMinHops
    );

    // The error names the file it would have been, when writing one.
    let dir = Scratch::new();
    let path = dir.0.join("bad.yaml");
    let mut node = full_node();
    node.tun = None;
    let err = ConfigFile::node(node).write(&path).unwrap_err();
    let WriteError::Rejected(inner) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(inner.file(), path);
    assert!(!path.exists(), "a rejected file is not written");
}

#[test]
fn paths_that_are_not_text_and_sub_millisecond_durations_are_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let mut node = full_node();
    node.control_socket = PathBuf::from(OsStr::from_bytes(b"/run/caf\xe9.sock"));
    let err = ConfigFile::node(node).to_yaml().unwrap_err();
    assert!(
        matches!(&err, WriteError::NotUtf8Path { key, .. } if key == "node.control_socket"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("node.control_socket: "),
        "{err}"
    );

    let mut node = full_node();
    node.routes[0].persistent_keepalive = Some(Duration::from_micros(1500));
    let err = ConfigFile::node(node).to_yaml().unwrap_err();
    assert!(
        matches!(&err, WriteError::SubMillisecond { key, .. }
            if key == "node.routes[0].persistent_keepalive"),
        "{err:?}"
    );
    let mut manager = full_manager();
    manager.setup_timeout = Duration::from_nanos(100_000_001);
    let err = ConfigFile::manager(manager).to_yaml().unwrap_err();
    assert!(
        matches!(&err, WriteError::SubMillisecond { key, .. } if key == "manager.setup_timeout"),
        "{err:?}"
    );
}

#[test]
fn durations_are_written_in_the_largest_exact_unit() {
    let text = |d| duration_text("k", d).unwrap();
    assert_eq!(text(Duration::from_secs(7200)), "2h");
    assert_eq!(text(Duration::from_secs(90 * 60)), "90m");
    assert_eq!(text(Duration::from_secs(60)), "1m");
    assert_eq!(text(Duration::from_secs(61)), "61s");
    assert_eq!(text(Duration::from_millis(1500)), "1500ms");
    assert_eq!(text(Duration::from_millis(1)), "1ms");
    assert_eq!(text(Duration::ZERO), "0s");
}

/// A route name the config accepts: one word of any characters but whitespace and
/// control characters.
fn route_name() -> impl Strategy<Value = String> {
    "[^\\s\\p{Cc}]{1,24}"
}

/// An absolute path of text without NUL.
fn path() -> impl Strategy<Value = PathBuf> {
    "[^\u{0}]{1,60}".prop_map(|p| PathBuf::from(format!("/{p}")))
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| {
            let ip = if ip == [0; 4] { [198, 18, 0, 1] } else { ip };
            SocketAddr::from((ip, port))
        }),
        (any::<u128>(), 1..=u16::MAX).prop_map(|(ip, port)| {
            let ip = if ip == 0 { 1 } else { ip };
            SocketAddr::from((std::net::Ipv6Addr::from(ip), port))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any valid node section comes back field for field.
    #[test]
    fn any_node_section_comes_back(
        key in path(),
        socket in "[^\u{0}]{1,25}",
        names in proptest::collection::btree_set(route_name(), 1..4),
        hops in proptest::collection::vec(socket_addr(), 3),
        keepalive_ms in proptest::option::of(1u64..86_400_000),
        peer in any::<[u8; 32]>(),
        offload in any::<bool>(),
        mtu in 1280u16..=9000,
        fwmark in proptest::option::of(proptest::option::of((1u32..=0xffff, 0u32..16))),
    ) {
        let mut node = NodeSection::new(key);
        node.control_socket = PathBuf::from(format!("/{socket}"));
        // A long control socket derives an app socket longer than a socket path may be.
        node.apps.socket = Some(PathBuf::from("/run/skywire-proptest-apps/a.sock"));
        node.offload = offload;
        node.fwmark = fwmark.map(|m| m.map(|(mark, shift)| Fwmark {
            mark: mark << shift,
            mask: 0xffff << shift,
        }));
        node.listen = hops[0];
        node.tun = Some(TunSetup {
            name: "sky0".to_owned(),
            addresses: vec![prefix("10.77.0.1/24"), prefix("fd77::1/64")],
            mtu,
        });
        for (i, name) in names.into_iter().enumerate() {
            let n = u32::try_from(i).unwrap();
            node.routes.push(RouteSetup {
                name,
                peer: PublicKey::from_bytes(peer),
                // 10.1.0.0/16, /17, /18: one prefix per route, each its own.
                prefixes: vec![prefix(&format!("10.1.0.0/{}", 16 + i))],
                first_hop: hops[1],
                out_id: id(n + 1),
                in_id: id(1000 + n),
                // Every other route writes its own; the rest take the default.
                peer_in_id: id(if n % 2 == 0 { n + 1 } else { 2000 + n }),
                prev_hop: hops[2],
                persistent_keepalive: keepalive_ms.map(Duration::from_millis),
            });
        }
        node.relays.push(RelaySetup {
            in_id: id(7),
            prev_hop: hops[2],
            out_id: id(8),
            next_hop: hops[1],
        });
        let config = round_trip(&ConfigFile::node(node.clone()));
        prop_assert_eq!(NodeSection::from(&config.node), node);
    }
}
