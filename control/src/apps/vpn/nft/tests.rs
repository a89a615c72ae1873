//! The rulesets' text line by line, and (as root, with `nft` installed) each loaded twice
//! into a scratch network namespace, listed, counted and removed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn exit_rules() -> ExitRules {
    let mut deny = default_deny();
    deny.extend([p("198.18.1.2/24"), p("fd77::/16"), p("10.77.0.0/16")]);
    ExitRules {
        tun: IfName::new("sw0").unwrap(),
        pool4: p("198.19.128.0/24"),
        pool6: Some(p("fd00:5b::/64")),
        allow: vec![p("192.168.7.9/24"), p("fd00:9::/64")],
        deny,
        allow_clients: false,
    }
}

fn client_rules(lockdown: bool) -> ClientRules {
    ClientRules {
        tun: IfName::new("sw0").unwrap(),
        mark: 0x736b_0000,
        mask: 0xffff_0000,
        node_port: 6000,
        lease4: Some("198.19.128.2".parse().unwrap()),
        lease6: Some("fd00:5b::2".parse().unwrap()),
        lockdown,
        lan: vec![p("192.168.1.0/24"), p("fe80::/10")],
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

/// The body of `set NAME { ... }` in `text`.
fn set_body<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    lines(text)
        .into_iter()
        .skip_while(|l| *l != format!("set {name} {{"))
        .skip(1)
        .take_while(|l| *l != "}")
        .collect()
}

#[test]
fn interface_names_are_checked() {
    for ok in ["sw0", "eth0.100", "wg-x_1", "a", "abcdefghijklmno"] {
        assert_eq!(IfName::new(ok).unwrap().as_str(), ok);
    }
    for bad in [
        "",
        "abcdefghijklmnop",
        "sw0\" accept",
        "a b",
        ".",
        "..",
        "sw0;",
        "é",
        "a/b",
    ] {
        let err = IfName::new(bad).unwrap_err();
        assert!(err.to_string().contains("not an interface name"), "{err}");
    }
    assert!("sw1".parse::<IfName>().is_ok());
}

#[test]
fn the_default_deny_list() {
    let deny = default_deny();
    let want = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ];
    let got: Vec<String> = deny.iter().map(ToString::to_string).collect();
    assert_eq!(got, want);
}

#[test]
fn the_exit_table_text() {
    let text = exit_table(&exit_rules());
    let l = lines(&text);
    assert_eq!(
        l[..4],
        [
            "table inet skywire-exit {}",
            "delete table inet skywire-exit",
            "table inet skywire-exit {",
            "set pool4 {",
        ]
    );
    assert!(text.ends_with("}\n"));
    assert_eq!(
        set_body(&text, "pool4"),
        [
            "type ipv4_addr",
            "flags interval",
            "auto-merge",
            "elements = { 198.19.128.0/24 }"
        ]
    );
    assert_eq!(
        set_body(&text, "pool6").last(),
        Some(&"elements = { fd00:5b::/64 }")
    );
    // Host bits are cleared.
    assert_eq!(
        set_body(&text, "allow4").last(),
        Some(&"elements = { 192.168.7.0/24 }")
    );
    let deny4 = set_body(&text, "deny4").last().unwrap().to_string();
    assert!(
        deny4.starts_with("elements = { 0.0.0.0/8, 10.0.0.0/8,"),
        "{deny4}"
    );
    assert!(deny4.contains("198.18.1.0/24") && deny4.contains("10.77.0.0/16"));
    let deny6 = set_body(&text, "deny6").last().unwrap().to_string();
    assert!(deny6.contains("fc00::/7, fe80::/10") && deny6.contains("fd77::/16"));
    for want in [
        "counter local_denied {}",
        "counter client_to_client {}",
        "counter exit_services {}",
        "counter unsolicited {}",
        "type filter hook forward priority filter; policy accept;",
        "iifname \"sw0\" ip saddr @pool4 jump from_client",
        "iifname \"sw0\" ip6 saddr @pool6 jump from_client",
        "oifname \"sw0\" ip daddr @pool4 jump to_client",
        "oifname \"sw0\" ip6 daddr @pool6 jump to_client",
        "tcp flags syn tcp option maxseg size set rt mtu",
        "oifname \"sw0\" counter name client_to_client drop",
        "ip daddr @allow4 accept",
        "ip6 daddr @deny6 counter name local_denied drop",
        "ct state established,related accept",
        "counter name unsolicited drop",
        "iifname \"sw0\" ip saddr @pool4 jump client_input",
        "counter name exit_services drop",
        "type nat hook postrouting priority srcnat; policy accept;",
        "oifname != \"sw0\" ip saddr @pool4 masquerade",
        "oifname != \"sw0\" ip6 saddr @pool6 masquerade",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{text}");
    }
    // The clamp in both directions.
    let clamps = l
        .iter()
        .filter(|x| **x == "tcp flags syn tcp option maxseg size set rt mtu")
        .count();
    assert_eq!(clamps, 2);
    // The allow list comes before the deny list in from_client.
    let at = |s: &str| l.iter().position(|x| *x == s).unwrap();
    assert!(at("ip daddr @allow4 accept") < at("ip daddr @deny4 counter name local_denied drop"));
}

#[test]
fn empty_sets_have_no_elements_line() {
    let rules = ExitRules {
        pool6: None,
        allow: vec![],
        deny: vec![],
        allow_clients: true,
        ..exit_rules()
    };
    let text = exit_table(&rules);
    for name in ["pool6", "allow4", "allow6", "deny4", "deny6"] {
        assert_eq!(
            set_body(&text, name),
            [
                if name.ends_with('4') {
                    "type ipv4_addr"
                } else {
                    "type ipv6_addr"
                },
                "flags interval",
                "auto-merge"
            ],
            "{name}"
        );
    }
    assert!(!text.contains("client_to_client drop"));
    let l = lines(&text);
    let at = |s: &str| l.iter().position(|x| *x == s).unwrap();
    assert!(at("oifname \"sw0\" ip daddr @pool4 accept") < at("ip daddr @allow4 accept"));
    assert!(l.contains(&"oifname \"sw0\" ip6 daddr @pool6 accept"));
    assert!(text.contains("counter client_to_client {}"));
}

#[test]
fn the_client_table_text() {
    let open = client_table(&client_rules(false));
    let l = lines(&open);
    assert_eq!(
        l[..5],
        [
            "table inet skywire-client {}",
            "delete table inet skywire-client",
            "table arp skywire-client {}",
            "delete table arp skywire-client",
            "table inet skywire-client {",
        ]
    );
    // ARP is marked, so rp_filter's check of the gateway's requests takes the main table.
    let arp = &open[open.find("table arp skywire-client {\n").unwrap()..];
    assert_eq!(
        lines(arp),
        [
            "table arp skywire-client {",
            "chain input {",
            "type filter hook input priority filter; policy accept;",
            "meta mark set 0x736b0000",
            "}",
            "}",
        ]
    );
    for want in [
        "type filter hook prerouting priority raw; policy accept;",
        "iifname != \"sw0\" ip daddr 198.19.128.2 fib saddr type != local drop",
        "iifname != \"sw0\" ip6 daddr fd00:5b::2 fib saddr type != local drop",
        "type filter hook prerouting priority mangle; policy accept;",
        "udp dport 6000 meta mark set 0x736b0000",
        "ct mark & 0xffff0000 == 0x736b0000 meta mark set ct mark",
        "type filter hook postrouting priority mangle; policy accept;",
        "meta mark & 0xffff0000 == 0x736b0000 ct mark set meta mark",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{open}");
    }
    assert!(!open.contains("policy drop"));
    assert!(!open.contains("counter blocked_out"));
    assert_eq!(
        set_body(&open, "lan4").last(),
        Some(&"elements = { 192.168.1.0/24 }")
    );

    let locked = client_table(&client_rules(true));
    let l = lines(&locked);
    for want in [
        "counter blocked_out {}",
        "counter blocked_in {}",
        "counter blocked_fwd {}",
        "type filter hook output priority filter; policy drop;",
        "oifname \"lo\" accept",
        "oifname \"sw0\" accept",
        "meta mark & 0xffff0000 == 0x736b0000 accept",
        "udp sport 68 udp dport 67 accept",
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "ip daddr @lan4 accept",
        "ip6 daddr @lan6 accept",
        "counter name blocked_out drop",
        "type filter hook input priority filter; policy drop;",
        "udp dport 6000 accept",
        "ip saddr @lan4 accept",
        "counter name blocked_in drop",
        "type filter hook forward priority filter; policy drop;",
        "counter name blocked_fwd drop",
    ] {
        assert!(l.contains(&want), "missing {want:?} in\n{locked}");
    }

    let v4_only = client_table(&ClientRules {
        lease6: None,
        lan: vec![],
        mark: 0x1234_5678,
        mask: 0xff00_0000,
        ..client_rules(true)
    });
    assert!(!v4_only.contains("ip6 daddr fd00"));
    assert!(v4_only.contains("ct mark & 0xff000000 == 0x12000000 meta mark set ct mark"));
    assert_eq!(
        set_body(&v4_only, "lan6"),
        ["type ipv6_addr", "flags interval", "auto-merge"]
    );
}

#[test]
fn removal_text() {
    assert_eq!(
        remove_table(Table::Exit),
        "table inet skywire-exit {}\ndelete table inet skywire-exit\n"
    );
    assert!(client_table(&client_rules(false)).starts_with(&remove_table(Table::Client)));
}

/// A named network namespace for `nft`, deleted on drop; `None` (with the reason printed)
/// unless root with `ip` and `nft` installed.
struct Scratch(String);

impl Scratch {
    fn new(test: &str) -> Option<Self> {
        if !rustix::process::geteuid().is_root() {
            println!("{test}: skipped: needs root (CI runs as root)");
            return None;
        }
        if Command::new("nft").arg("--version").output().is_err() {
            println!("{test}: skipped: nft not installed (apt-get install nftables)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "swnft-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(status.unwrap().success(), "ip netns add {name}");
        Some(Self(name))
    }

    fn nft(&self) -> Nft {
        Nft::in_netns(self.0.clone())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn load_twice_count_and_remove(nft: &Nft, table: Table, text: &str, counters: &[&str]) {
    nft.run(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Again, over the existing table: still one.
    nft.run(text).unwrap();
    let mut tables = nft.tables().unwrap();
    tables.sort();
    let mut want: Vec<(String, String)> = table
        .families()
        .iter()
        .map(|f| ((*f).to_owned(), table.name().to_owned()))
        .collect();
    want.sort();
    assert_eq!(tables, want);
    let got = nft.counters(table).unwrap();
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    let mut want = counters.to_vec();
    want.sort_unstable();
    assert_eq!(names, want);
    assert!(
        got.values()
            .all(|&(packets, bytes)| packets == 0 && bytes == 0)
    );
    nft.run(&remove_table(table)).unwrap();
    assert_eq!(nft.tables().unwrap(), []);
    // Removing what is not there is fine too.
    nft.run(&remove_table(table)).unwrap();
}

#[test]
fn the_exit_table_loads_in_a_namespace() {
    let Some(ns) = Scratch::new("the_exit_table_loads_in_a_namespace") else {
        return;
    };
    let nft = ns.nft();
    let counters = [
        "local_denied",
        "client_to_client",
        "exit_services",
        "unsolicited",
    ];
    load_twice_count_and_remove(&nft, Table::Exit, &exit_table(&exit_rules()), &counters);
    let bare = ExitRules {
        pool6: None,
        allow: vec![],
        deny: vec![],
        allow_clients: true,
        ..exit_rules()
    };
    load_twice_count_and_remove(&nft, Table::Exit, &exit_table(&bare), &counters);
}

#[test]
fn the_client_table_loads_in_a_namespace() {
    let Some(ns) = Scratch::new("the_client_table_loads_in_a_namespace") else {
        return;
    };
    let nft = ns.nft();
    load_twice_count_and_remove(
        &nft,
        Table::Client,
        &client_table(&client_rules(false)),
        &[],
    );
    let locked = client_table(&client_rules(true));
    let counters = ["blocked_out", "blocked_in", "blocked_fwd"];
    load_twice_count_and_remove(&nft, Table::Client, &locked, &counters);
    let v4_only = ClientRules {
        lease6: None,
        lan: vec![],
        ..client_rules(true)
    };
    load_twice_count_and_remove(&nft, Table::Client, &client_table(&v4_only), &counters);
    // Both tables at once: the client's replace leaves the exit's alone.
    nft.run(&exit_table(&exit_rules())).unwrap();
    nft.run(&locked).unwrap();
    nft.run(&locked).unwrap();
    let mut tables = nft.tables().unwrap();
    tables.sort();
    assert_eq!(
        tables,
        [
            ("arp".to_owned(), "skywire-client".to_owned()),
            ("inet".to_owned(), "skywire-client".to_owned()),
            ("inet".to_owned(), "skywire-exit".to_owned())
        ]
    );
}

#[test]
fn nft_errors_carry_its_message() {
    let Some(ns) = Scratch::new("nft_errors_carry_its_message") else {
        return;
    };
    let err = ns
        .nft()
        .run("table inet x { chain c { nonsense } }\n")
        .unwrap_err();
    let NftError::Refused { args, stderr } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(args, "-f -");
    assert!(
        stderr.contains("nonsense") || stderr.contains("syntax"),
        "{stderr}"
    );
    // Counters of a table that is not there: nft says so.
    assert!(matches!(
        ns.nft().counters(Table::Exit),
        Err(NftError::Refused { .. })
    ));
}
