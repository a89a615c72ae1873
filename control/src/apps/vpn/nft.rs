//! The VPN's nftables rulesets, as text (`docs/design/vpn-plan.md`, D2, 2.2 and 2.3), and a
//! thin runner for the `nft` binary.
//!
//! Pure part: [`exit_table`] and [`client_table`] return a whole `nft -f` file that
//! replaces the role's table in one transaction whether or not it exists:
//!
//! ```text
//! table inet skywire-exit {}        # create it empty if absent (no-op otherwise)
//! delete table inet skywire-exit    # so this never fails
//! table inet skywire-exit { ... }   # and the new contents
//! ```
//!
//! (nft 1.0.8's `destroy table` would do the first two lines in one; Debian 12 has 1.0.6.)
//! [`remove_table`] is the same file without the last block. Every value in the text is a
//! typed prefix, address or integer, or an [`IfName`] checked to be a plain interface
//! name, so nothing from outside can add a rule.
//!
//! Runner part: [`run`] pipes a file to `nft -f -`, [`tables`] and [`counters`] read
//! `nft -j` listings into small serde structs. [`Nft`] does the same inside a named network
//! namespace (`ip netns exec`), for tests and the lab.
//!
//! The client's ruleset is two tables of the same name: `inet` (the chains below) and
//! `arp` (one chain that marks incoming ARP, so that `rp_filter=1` does not silence the
//! machine towards its own gateway; see [`client_table`]). [`Table::families`] lists them.
//!
//! The exit's table governs the pool's traffic only: what clients send (allowed prefixes,
//! then the deny list of special ranges, the exit's own subnets and the mesh), what reaches
//! them (replies only), the exit's own services (refused), client to client (refused
//! unless allowed), `masquerade` for pool sources, and the MSS clamp. The client's table
//! always has the anti-spoofing and mark-keeping chains; its kill switch (three chains
//! with policy drop) only with `lockdown`.

use core::fmt;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use serde::Deserialize;
use skywire_dataplane::route::Prefix;

use crate::apps::socks::policy::{Refusal, special_ranges};

/// The exit's table (family `inet`).
pub const EXIT_TABLE: &str = "skywire-exit";
/// The client's table (family `inet`).
pub const CLIENT_TABLE: &str = "skywire-client";

/// One of the two tables this module writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `inet skywire-exit`.
    Exit,
    /// `inet skywire-client`.
    Client,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exit => EXIT_TABLE,
            Self::Client => CLIENT_TABLE,
        }
    }

    /// The nftables families it has a table in, all under [`Self::name`]: the client's
    /// also marks ARP (`arp`), see [`client_table`].
    pub fn families(self) -> &'static [&'static str] {
        match self {
            Self::Exit => &["inet"],
            Self::Client => &["inet", "arp"],
        }
    }
}

/// A network interface name as the kernel takes it: 1 to 15 bytes of letters, digits,
/// `_`, `.` and `-`, and not `.` or `..`. Safe inside a quoted nft string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// An interface name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?}: not an interface name (1 to 15 of the characters A-Z a-z 0-9 _ . -, \
     not \".\" or \"..\")"
)]
pub struct IfNameError(pub String);

impl IfName {
    /// Check `name`.
    pub fn new(name: &str) -> Result<Self, IfNameError> {
        let ok = (1..=15).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(IfNameError(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for IfName {
    type Err = IfNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// What the exit's table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRules {
    /// The node's TUN.
    pub tun: IfName,
    /// The IPv4 pool.
    pub pool4: Prefix,
    /// The IPv6 pool, if any.
    pub pool6: Option<Prefix>,
    /// Destinations allowed even inside `deny` (the exit's `allow_lan`), either family.
    pub allow: Vec<Prefix>,
    /// Destinations refused, either family: [`default_deny`], the subnets of the exit's
    /// own addresses, and the mesh's ranges.
    pub deny: Vec<Prefix>,
    /// Whether clients may reach each other through the exit (their addresses are let
    /// through ahead of `deny`); otherwise such packets are counted and dropped.
    pub allow_clients: bool,
}

/// What the client's table needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRules {
    /// The node's TUN.
    pub tun: IfName,
    /// The node's socket mark (`node.fwmark`), and the bits of it that count.
    pub mark: u32,
    /// The mask of `mark`.
    pub mask: u32,
    /// The node's UDP port (mesh traffic in and out).
    pub node_port: u16,
    /// The leased IPv4 address; `None` before the lease (the kill switch alone).
    pub lease4: Option<Ipv4Addr>,
    /// The leased IPv6 address, if any.
    pub lease6: Option<Ipv6Addr>,
    /// Add the kill switch: output, input and forward drop what does not go through the
    /// tunnel, the node's marked sockets, DHCP, neighbour discovery or `lan`.
    pub lockdown: bool,
    /// LAN prefixes the kill switch lets through (on-link ∩ `lan_ranges` with
    /// `--allow-lan`; empty otherwise), either family.
    pub lan: Vec<Prefix>,
}

/// The ranges every exit refuses to forward to: the special ranges of the SOCKS exit's
/// policy (RFC 1918, CGNAT, `0/8`, `127/8`, `169.254/16`, `192.0.0.0/24`, `224/4`,
/// `240/4`; `::`, `::1`, `fc00::/7`, `fe80::/10`, `fec0::/10`, `ff00::/8`). Not Teredo
/// `2001::/32`: the SOCKS exit refuses it because it cannot see the IPv4 address inside,
/// but the VPN forwards packets, and the kernel routes a Teredo destination like any other
/// global address.
pub fn default_deny() -> Vec<Prefix> {
    special_ranges()
        .filter(|(_, why)| *why != Refusal::Teredo)
        .map(|(prefix, _)| prefix)
        .collect()
}

/// The whole `nft -f` file for the exit (see the module doc).
pub fn exit_table(rules: &ExitRules) -> String {
    let tun = &rules.tun;
    let (allow4, allow6) = split(&rules.allow);
    let (deny4, deny6) = split(&rules.deny);
    let mut t = String::new();
    header(&mut t, Table::Exit);
    set(&mut t, "pool4", V4, &[rules.pool4]);
    set(&mut t, "pool6", V6, rules.pool6.as_slice());
    set(&mut t, "allow4", V4, &allow4);
    set(&mut t, "allow6", V6, &allow6);
    set(&mut t, "deny4", V4, &deny4);
    set(&mut t, "deny6", V6, &deny6);
    for name in [
        "local_denied",
        "client_to_client",
        "exit_services",
        "unsolicited",
    ] {
        line(&mut t, 1, &format!("counter {name} {{}}"));
    }
    chain(
        &mut t,
        "forward",
        Some("type filter hook forward priority filter; policy accept;"),
        &[
            format!("iifname \"{tun}\" ip saddr @pool4 jump from_client"),
            format!("iifname \"{tun}\" ip6 saddr @pool6 jump from_client"),
            format!("oifname \"{tun}\" ip daddr @pool4 jump to_client"),
            format!("oifname \"{tun}\" ip6 daddr @pool6 jump to_client"),
        ],
    );
    let mut from_client = vec![MSS_CLAMP.to_owned()];
    if rules.allow_clients {
        // Before the deny list, which holds the pool whenever it is private (10.213/16).
        from_client.extend([
            format!("oifname \"{tun}\" ip daddr @pool4 accept"),
            format!("oifname \"{tun}\" ip6 daddr @pool6 accept"),
        ]);
    } else {
        from_client.push(format!(
            "oifname \"{tun}\" counter name client_to_client drop"
        ));
    }
    from_client.extend([
        "ip daddr @allow4 accept".to_owned(),
        "ip6 daddr @allow6 accept".to_owned(),
        "ip daddr @deny4 counter name local_denied drop".to_owned(),
        "ip6 daddr @deny6 counter name local_denied drop".to_owned(),
        "accept".to_owned(),
    ]);
    chain(&mut t, "from_client", None, &from_client);
    // The clamp that matters: the server's SYN-ACK towards the client (R3).
    chain(
        &mut t,
        "to_client",
        None,
        &[
            MSS_CLAMP.to_owned(),
            "ct state established,related accept".to_owned(),
            "counter name unsolicited drop".to_owned(),
        ],
    );
    chain(
        &mut t,
        "input",
        Some("type filter hook input priority filter; policy accept;"),
        &[
            format!("iifname \"{tun}\" ip saddr @pool4 jump client_input"),
            format!("iifname \"{tun}\" ip6 saddr @pool6 jump client_input"),
        ],
    );
    chain(
        &mut t,
        "client_input",
        None,
        &[
            "ct state established,related accept".to_owned(),
            "counter name exit_services drop".to_owned(),
        ],
    );
    chain(
        &mut t,
        "postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &[
            format!("oifname != \"{tun}\" ip saddr @pool4 masquerade"),
            format!("oifname != \"{tun}\" ip6 saddr @pool6 masquerade"),
        ],
    );
    t.push_str("}\n");
    t
}

/// The whole `nft -f` file for the client (see the module doc).
pub fn client_table(rules: &ClientRules) -> String {
    let tun = &rules.tun;
    let mark = format!("0x{:08x}", rules.mark & rules.mask);
    let mask = format!("0x{:08x}", rules.mask);
    let port = rules.node_port;
    let (lan4, lan6) = split(&rules.lan);
    let mut t = String::new();
    header(&mut t, Table::Client);
    set(&mut t, "lan4", V4, &lan4);
    set(&mut t, "lan6", V6, &lan6);
    if rules.lockdown {
        for name in ["blocked_out", "blocked_in", "blocked_fwd"] {
            line(&mut t, 1, &format!("counter {name} {{}}"));
        }
    }
    // Packets to the leased address arriving on another interface: someone on the LAN
    // probing for the tunnel's connections (CVE-2019-14899), as wg-quick drops them.
    let mut preraw = Vec::new();
    if let Some(lease4) = rules.lease4 {
        preraw.push(format!(
            "iifname != \"{tun}\" ip daddr {lease4} fib saddr type != local drop"
        ));
    }
    if let Some(lease6) = rules.lease6 {
        preraw.push(format!(
            "iifname != \"{tun}\" ip6 daddr {lease6} fib saddr type != local drop"
        ));
    }
    chain(
        &mut t,
        "preraw",
        Some("type filter hook prerouting priority raw; policy accept;"),
        &preraw,
    );
    // Mesh UDP arriving unsolicited, and replies of the node's marked flows, carry the mark
    // so rp_filter's lookup takes the main table instead of the tunnel's (R1).
    chain(
        &mut t,
        "premangle",
        Some("type filter hook prerouting priority mangle; policy accept;"),
        &[
            format!("udp dport {port} meta mark set {mark}"),
            format!("ct mark & {mask} == {mark} meta mark set ct mark"),
        ],
    );
    chain(
        &mut t,
        "postmangle",
        Some("type filter hook postrouting priority mangle; policy accept;"),
        &[format!(
            "meta mark & {mask} == {mark} ct mark set meta mark"
        )],
    );
    if rules.lockdown {
        chain(
            &mut t,
            "output",
            Some("type filter hook output priority filter; policy drop;"),
            &[
                "oifname \"lo\" accept".to_owned(),
                format!("oifname \"{tun}\" accept"),
                format!("meta mark & {mask} == {mark} accept"),
                "udp sport 68 udp dport 67 accept".to_owned(),
                "udp sport 546 udp dport 547 accept".to_owned(),
                "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } \
                 accept"
                    .to_owned(),
                "ip daddr @lan4 accept".to_owned(),
                "ip6 daddr @lan6 accept".to_owned(),
                "counter name blocked_out drop".to_owned(),
            ],
        );
        chain(
            &mut t,
            "input",
            Some("type filter hook input priority filter; policy drop;"),
            &[
                "iifname \"lo\" accept".to_owned(),
                format!("iifname \"{tun}\" accept"),
                "ct state established,related accept".to_owned(),
                format!("udp dport {port} accept"),
                "udp sport 67 udp dport 68 accept".to_owned(),
                "udp sport 547 udp dport 546 accept".to_owned(),
                "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } \
                 accept"
                    .to_owned(),
                "ip saddr @lan4 accept".to_owned(),
                "ip6 saddr @lan6 accept".to_owned(),
                "counter name blocked_in drop".to_owned(),
            ],
        );
        chain(
            &mut t,
            "forward",
            Some("type filter hook forward priority filter; policy drop;"),
            &[
                format!("oifname \"{tun}\" accept"),
                "counter name blocked_fwd drop".to_owned(),
            ],
        );
    }
    t.push_str("}\n");
    // ARP requests carry the mark too. The kernel answers one only if the route back to
    // its sender passes rp_filter; unmarked, that route is the tunnel's default, so under
    // `rp_filter=1` the gateway's ARP requests go unanswered. Its neighbour entry for this
    // machine then fails once it ages out (15 to 45 s), and the mesh's UDP from outside
    // stops reaching the node until this machine happens to ARP for the gateway itself.
    // The mark makes the check take the main table, where the link's own prefix is.
    let _ = writeln!(t, "table arp {} {{", Table::Client.name());
    chain(
        &mut t,
        "input",
        Some("type filter hook input priority filter; policy accept;"),
        &[format!("meta mark set {mark}")],
    );
    t.push_str("}\n");
    t
}

/// The `nft -f` file that removes `table` if it is there, and does nothing otherwise.
pub fn remove_table(table: Table) -> String {
    let mut t = String::new();
    let name = table.name();
    for family in table.families() {
        let _ = writeln!(t, "table {family} {name} {{}}");
        let _ = writeln!(t, "delete table {family} {name}");
    }
    t
}

const MSS_CLAMP: &str = "tcp flags syn tcp option maxseg size set rt mtu";

const V4: &str = "ipv4_addr";
const V6: &str = "ipv6_addr";

fn header(t: &mut String, table: Table) {
    t.push_str(&remove_table(table));
    let _ = writeln!(t, "table inet {} {{", table.name());
}

fn line(t: &mut String, depth: usize, text: &str) {
    for _ in 0..depth {
        t.push('\t');
    }
    t.push_str(text);
    t.push('\n');
}

/// An interval set; `elements` is left out when empty (an empty `{ }` is a syntax error).
fn set(t: &mut String, name: &str, kind: &str, prefixes: &[Prefix]) {
    line(t, 1, &format!("set {name} {{"));
    line(t, 2, &format!("type {kind}"));
    // auto-merge: overlapping prefixes (a mesh range inside 10/8) are an error without it.
    line(t, 2, "flags interval");
    line(t, 2, "auto-merge");
    if !prefixes.is_empty() {
        let list: Vec<String> = prefixes
            .iter()
            .map(|p| format!("{}/{}", p.network(), p.len()))
            .collect();
        line(t, 2, &format!("elements = {{ {} }}", list.join(", ")));
    }
    line(t, 1, "}");
}

fn chain(t: &mut String, name: &str, base: Option<&str>, rules: &[String]) {
    line(t, 1, &format!("chain {name} {{"));
    if let Some(base) = base {
        line(t, 2, base);
    }
    for rule in rules {
        line(t, 2, rule);
    }
    line(t, 1, "}");
}

/// The IPv4 and the IPv6 prefixes of `prefixes`.
fn split(prefixes: &[Prefix]) -> (Vec<Prefix>, Vec<Prefix>) {
    prefixes.iter().partition(|p| p.addr().is_ipv4())
}

/// `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The binary is not installed.
    #[error("nft not found: install nftables (apt-get install nftables)")]
    Missing,
    /// Starting it or talking to it failed.
    #[error("running nft: {0}")]
    Io(#[from] io::Error),
    /// It exited with an error.
    #[error("nft {args} failed: {stderr}")]
    Refused {
        /// The arguments it was given.
        args: String,
        /// What it wrote on stderr.
        stderr: String,
    },
    /// Its JSON output was not what this module reads.
    #[error("nft {args}: unexpected JSON: {source}")]
    Json {
        /// The arguments it was given.
        args: String,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
}

/// Where `nft` runs: this network namespace, or a named one through `ip netns exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nft {
    netns: Option<String>,
}

impl Nft {
    /// `nft` in this process's network namespace.
    pub fn here() -> Self {
        Self::default()
    }

    /// `nft` in the named namespace (`ip netns exec NAME nft ...`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self {
            netns: Some(name.into()),
        }
    }

    /// `nft -f -` with `text` on its stdin.
    pub fn run(&self, text: &str) -> Result<(), NftError> {
        self.output(&["-f", "-"], Some(text)).map(drop)
    }

    /// Every table: (family, name).
    pub fn tables(&self) -> Result<Vec<(String, String)>, NftError> {
        let args = ["-j", "list", "tables"];
        let listing: Listing = self.json(&args)?;
        Ok(listing
            .nftables
            .into_iter()
            .filter_map(|item| item.table)
            .map(|t| (t.family, t.name))
            .collect())
    }

    /// The named counters of `table`: name -> (packets, bytes).
    pub fn counters(&self, table: Table) -> Result<BTreeMap<String, (u64, u64)>, NftError> {
        let args = ["-j", "list", "counters", "table", "inet", table.name()];
        let listing: Listing = self.json(&args)?;
        Ok(listing
            .nftables
            .into_iter()
            .filter_map(|item| item.counter)
            .map(|c| (c.name, (c.packets, c.bytes)))
            .collect())
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, args: &[&str]) -> Result<T, NftError> {
        let out = self.output(args, None)?;
        serde_json::from_slice(&out).map_err(|source| NftError::Json {
            args: args.join(" "),
            source,
        })
    }

    /// Run `nft args`, feeding `stdin`; its stdout on success.
    fn output(&self, args: &[&str], stdin: Option<&str>) -> Result<Vec<u8>, NftError> {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        };
        command
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NftError::Missing,
            _ => NftError::Io(e),
        })?;
        // Write on another thread: nft may write to stderr before it has read everything,
        // and a full pipe on each side would block both of us.
        let input = child.stdin.take();
        let output = std::thread::scope(|s| {
            let writer = s.spawn(move || match (input, stdin) {
                (Some(mut pipe), Some(text)) => pipe.write_all(text.as_bytes()),
                _ => Ok(()),
            });
            let output = child.wait_with_output();
            let written = writer.join().unwrap_or(Ok(()));
            output.map(|o| (o, written))
        });
        let (output, written) = output?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            // `ip netns exec` reports a missing program itself.
            if self.netns.is_some() && stderr.contains("exec of \"nft\" failed") {
                return Err(NftError::Missing);
            }
            return Err(NftError::Refused {
                args: args.join(" "),
                stderr,
            });
        }
        written?;
        Ok(output.stdout)
    }
}

/// `nft -f -` with `text` on its stdin, in this network namespace.
pub fn run(text: &str) -> Result<(), NftError> {
    Nft::here().run(text)
}

/// Every table in this network namespace: (family, name).
pub fn tables() -> Result<Vec<(String, String)>, NftError> {
    Nft::here().tables()
}

/// The named counters of `table` in this network namespace: name -> (packets, bytes).
pub fn counters(table: Table) -> Result<BTreeMap<String, (u64, u64)>, NftError> {
    Nft::here().counters(table)
}

/// `nft -j` output: `{"nftables": [{"metainfo": ...}, {"table": ...}, ...]}`.
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Item>,
}

/// One element of a listing; the kinds this module does not read are ignored.
#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    table: Option<TableJson>,
    #[serde(default)]
    counter: Option<CounterJson>,
}

#[derive(Deserialize)]
struct TableJson {
    family: String,
    name: String,
}

#[derive(Deserialize)]
struct CounterJson {
    name: String,
    packets: u64,
    bytes: u64,
}

#[cfg(test)]
mod tests;
