//! The VPN over the mesh in namespaces (root only; docs/design/vpn-plan.md §3): the
//! topology of `tests/netns/vpn.rs` itself, checked without any node, and the VPN's
//! scenarios on it, each under a leak watch on the client's physical link.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::fmt::Write as _;
use std::process::Stdio;

use netns::vpn::*;
use netns::{ip, python3, skip_unless_root, wait_until};
use sha2::{Digest, Sha256};
use skywire_control::demo::leak::{LeakReport, LeakRules, LeakWatch};

/// Send `payload` to the UDP echo at `address` port 7 from host `host`: its answer.
fn udp_echo(lab: &VpnLab, host: &str, address: &str, payload: &str) -> String {
    let script = "import socket,sys\n\
        a=sys.argv[1]; f=socket.AF_INET6 if ':' in a else socket.AF_INET\n\
        s=socket.socket(f,socket.SOCK_DGRAM); s.settimeout(3)\n\
        s.sendto(sys.argv[2].encode(),(a,7)); print(s.recv(65535).decode())";
    let out = lab
        .topo
        .command(host, python3())
        .args(["-c", script, address, payload])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "UDP echo from {host} to {address}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

#[test]
fn vpn_topology_carries_plain_traffic() {
    if !skip_unless_root("vpn_topology_carries_plain_traffic") {
        return;
    }
    let mut lab = VpnLab::build();
    lab.start_services();
    let topo = &lab.topo;

    // No default route anywhere; c checks the source of what it receives.
    for host in [C, C2, ISP, INET, X, XLAN, CLAN, M] {
        let ns = topo.ns(host);
        for family in ["-4", "-6"] {
            let routes = ip(&["-n", &ns, family, "route", "show", "default"]);
            assert!(routes.trim().is_empty(), "{host} {family}: {routes}");
        }
    }
    let rp = topo.output(C, "sysctl", &["-n", "net.ipv4.conf.all.rp_filter"]);
    assert_eq!(String::from_utf8_lossy(&rp.stdout).trim(), "1");

    // Pings across the routers, both families; the clients reach x's transport address.
    for (host, from, to) in [
        (C, C_WAN4, WEB4),
        (C, C_WAN6, WEB6),
        (C, C_WAN4, DNS4),
        (C, C_WAN4, X_WAN4),
        (C, C_WAN6, X_WAN6),
        (C2, C2_WAN4, WEB4),
        (C2, C2_WAN4, X_WAN4),
        (X, X_WAN4, WEB4),
        (X, X_WAN6, DNS6),
        (X, X_LAN4, XLAN4),
        (X, X_LAN6, XLAN6),
        (C, C_LAN4, CLAN4),
    ] {
        assert_eq!(topo.ping(host, from, to, 2), 2, "{host}: {from} -> {to}");
    }
    // x's LAN is x's alone: the clients have no route to it.
    assert_eq!(topo.ping(C, C_WAN4, XLAN4, 1), 0);

    // The internet's services see each caller's own address.
    let web4 = VpnLab::url(WEB4, 80, "/ip");
    let web6 = VpnLab::url(WEB6, 80, "/ip");
    for (host, url, caller) in [
        (C, &web4, C_WAN4),
        (C, &web6, C_WAN6),
        (C2, &web4, C2_WAN4),
        (X, &web4, X_WAN4),
        (X, &web6, X_WAN6),
    ] {
        assert_eq!(
            lab.curl(host, &[url]),
            (0, caller.to_owned(), String::new())
        );
    }
    let body = "SKYWIRE-LEAK-marker ".repeat(200);
    let (code, digest, err) = lab.curl(
        C,
        &["--data-binary", &body, &VpnLab::url(WEB4, 80, "/sha256")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(digest, hex(&Sha256::digest(body.as_bytes())));
    let blob = lab
        .topo
        .command(C, "sh")
        .args([
            "-c",
            &format!(
                "curl -s --max-time 20 '{}' | sha256sum",
                VpnLab::url(WEB6, 80, "/blob?size=3M&seed=7")
            ),
        ])
        .output()
        .unwrap();
    let (_, expected, _) = lab.curl(C, &[&VpnLab::url(WEB4, 80, "/blob-sha256?size=3M&seed=7")]);
    assert_eq!(expected.len(), 64, "{expected}");
    assert!(
        String::from_utf8_lossy(&blob.stdout).starts_with(&expected),
        "{}",
        String::from_utf8_lossy(&blob.stdout)
    );
    assert_eq!(udp_echo(&lab, C, WEB4, "hello"), format!("{C_WAN4} hello"));
    assert_eq!(udp_echo(&lab, C, WEB6, "hello"), format!("{C_WAN6} hello"));
    assert_eq!(udp_echo(&lab, X, WEB4, "x"), format!("{X_WAN4} x"));

    // The exit's own services and its LAN host answer their names where reachable.
    for (host, url, name) in [
        (C, VpnLab::url(X_WAN4, EXIT_OWN_PORT, "/"), "exit-own"),
        (X, VpnLab::url(METADATA4, 80, "/"), "metadata"),
        (X, VpnLab::url(XLAN4, 80, "/"), "lan"),
        (X, VpnLab::url(XLAN6, 80, "/anything"), "lan"),
    ] {
        assert_eq!(lab.curl(host, &[&url]), (0, name.to_owned(), String::new()));
    }
    let (code, _, _) = lab.curl(C, &["--max-time", "2", &VpnLab::url(XLAN4, 80, "/")]);
    assert_ne!(code, 0, "c reached x's LAN without the VPN");

    // DNS: `*.test` resolves through the stub named in c's own resolv.conf, which logs
    // who asked.
    lab.topo.etc_file(
        C,
        "resolv.conf",
        &format!("nameserver {DNS4}\nnameserver {DNS6}\n"),
    );
    let out = lab.topo.output(C, "getent", &["ahosts", "echo.test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "getent: {text}");
    assert!(text.contains(WEB4) && text.contains(WEB6), "{text}");
    let queries = lab.dns_queries();
    assert!(!queries.is_empty());
    for (source, name, _) in &queries {
        assert_eq!((source.as_str(), name.as_str()), (C_WAN4, "echo.test"));
    }
    let out = lab.topo.output(C, "getent", &["hosts", "nowhere.example"]);
    assert!(!out.status.success());
}

/// The lab with its services, and resolv.conf files of their own for the clients (the
/// ISP's resolver, which does not exist: a query that leaked would show on the link), so
/// that the client apps rewrite those and never the host's.
fn lab() -> VpnLab {
    let mut lab = VpnLab::build();
    lab.start_services();
    for host in [C, C2] {
        lab.topo
            .etc_file(host, "resolv.conf", &format!("nameserver {ISP_C4}\n"));
    }
    lab
}

/// What the VPN may change in a host, as text: rules, routes of every table, nftables,
/// the sysctls it touches, and resolv.conf.
fn snapshot(lab: &VpnLab, host: &str) -> String {
    let ns = lab.topo.ns(host);
    let mut text = String::new();
    for family in ["-4", "-6"] {
        text.push_str(&ip(&["-n", &ns, family, "rule", "show"]));
        let routes = ip(&["-n", &ns, family, "route", "show", "table", "all"]);
        // The kernel's own entries for the TUN device's link-local and multicast come and
        // go with traffic; compare what a program adds.
        for line in routes
            .lines()
            .filter(|l| !l.contains("fe80::") && !l.starts_with("multicast"))
        {
            text.push_str(line);
            text.push('\n');
        }
    }
    let nft = lab.topo.output(host, "nft", &["list", "ruleset"]);
    text.push_str(&String::from_utf8_lossy(&nft.stdout));
    for key in [
        "net.ipv4.conf.all.src_valid_mark",
        "net.ipv4.conf.all.forwarding",
        "net.ipv4.conf.x-wan.forwarding",
        "net.ipv6.conf.all.forwarding",
    ] {
        let out = lab.topo.output(host, "sysctl", &["-n", key]);
        text.push_str(&format!("{key}={}", String::from_utf8_lossy(&out.stdout)));
    }
    let out = lab.topo.output(host, "cat", &["/etc/resolv.conf"]);
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text
}

/// The exit's nftables counters, by name (packets).
fn exit_counters(lab: &VpnLab, mesh: &VpnMesh) -> std::collections::BTreeMap<String, u64> {
    let (code, out, err) = VpnMesh::vpn(lab, &mesh.x, &["exit", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["counters"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v[0].as_u64().unwrap()))
        .collect()
}

/// The client's `vpn status --json`.
fn client_status(lab: &VpnLab, node: &netns::Node) -> serde_json::Value {
    let (_, out, _) = VpnMesh::vpn(lab, node, &["status", "--json"]);
    serde_json::from_str(&out).unwrap()
}

/// The client's log (beside its state file).
fn client_log(node: &netns::Node) -> String {
    std::fs::read_to_string(node.config_path().parent().unwrap().join("vpn-client.log"))
        .unwrap_or_default()
}

fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("SKYWIRE-LEAK-{nanos:08x}")
}

/// A leak watch on c's physical link: only the mesh's UDP between c and x may cross it.
fn watch(lab: &VpnLab, marker: &str) -> LeakWatch {
    LeakWatch::start(
        &lab.topo.ns(C),
        C_WAN_IF,
        LeakRules {
            udp: vec![(C_LISTEN.parse().unwrap(), X_LISTEN.parse().unwrap())],
            marker: marker.as_bytes().to_vec(),
        },
    )
    .unwrap()
}

/// tcpdump on c's physical link (a second opinion, with a real tool), writing to a file.
struct Tcpdump {
    proc: netns::Proc,
    file: std::path::PathBuf,
}

impl Tcpdump {
    fn start(lab: &VpnLab) -> Self {
        let file = lab.topo.dir().join("c-wan.pcap");
        let proc = lab.topo.spawn(
            C,
            "tcpdump",
            std::path::Path::new("tcpdump"),
            &["-i", C_WAN_IF, "-U", "-n", "-w", file.to_str().unwrap()],
        );
        let listening = wait_until(std::time::Duration::from_secs(5), || {
            proc.stderr().contains("listening on")
        });
        assert!(listening.is_some(), "tcpdump: {}", proc.stderr());
        Self { proc, file }
    }

    /// Stop it; the packets it saw that are not the mesh's UDP between c and x, ARP,
    /// neighbour discovery or MLD, one line each.
    fn others(mut self, lab: &VpnLab) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.proc.pid().to_string()])
            .status();
        self.proc.wait(std::time::Duration::from_secs(5));
        let filter = format!(
            "not arp and not (udp and host {X_WAN4} and port 6000) \
             and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 136) and not (ip6 and ip6[6] == 0) \
             and not (icmp and icmp[0] == 3 and icmp[28:2] == 6000)"
        );
        let all = lab
            .topo
            .output(C, "tcpdump", &["-r", self.file.to_str().unwrap(), "-n"]);
        let seen = String::from_utf8_lossy(&all.stdout).lines().count();
        assert!(seen > 0, "tcpdump saw nothing at all: {all:?}");
        let out = lab.topo.output(
            C,
            "tcpdump",
            &["-r", self.file.to_str().unwrap(), "-n", &filter],
        );
        assert!(out.status.success(), "tcpdump -r: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn assert_clean(report: &LeakReport, scenario: &str) {
    eprintln!("{scenario}: c-wan: {report}");
    assert!(report.clean(), "{scenario}: the physical link saw {report}");
    assert!(
        report.allowed > 0,
        "{scenario}: no mesh traffic at all: {report}"
    );
}

#[test]
fn vpn_egress_dns_protections_and_teardown() {
    if !skip_unless_root("vpn_egress_dns_protections_and_teardown") {
        return;
    }
    let lab = lab();
    let mut mesh = VpnMesh::start(&lab, (POOL4, POOL6), "", "");
    let before_x = snapshot(&lab, X);
    mesh.start_exit(&lab);
    let before_c = snapshot(&lab, C);
    let marker = marker();
    let leaks = watch(&lab, &marker);
    let tcpdump = Tcpdump::start(&lab);
    // The control: on the exit's uplink the marker is in clear (the watch can see it).
    let uplink = LeakWatch::start(
        &lab.topo.ns(X),
        X_WAN_IF,
        LeakRules {
            udp: Vec::new(),
            marker: marker.as_bytes().to_vec(),
        },
    )
    .unwrap();

    // Up.
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up"]);
    assert_eq!(code, 0, "vpn up: {out}{err}");
    assert!(out.contains("connected through"), "{out}");
    let status = client_status(&lab, &mesh.c);
    assert_eq!(status["running"], true, "{status}");
    assert_eq!(status["state"]["phase"], "connected", "{status}");
    let lease4 = status["state"]["lease"]["ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(lease4.starts_with("198.19.128."), "{status}");

    // 1. Egress: the internet sees the exit, in both families; the marker crosses only
    // inside the tunnel.
    let web4 = VpnLab::url(WEB4, 80, "/ip");
    let web6 = VpnLab::url(WEB6, 80, "/ip");
    assert_eq!(lab.curl(C, &[&web4]), (0, X_WAN4.to_owned(), String::new()));
    assert_eq!(lab.curl(C, &[&web6]), (0, X_WAN6.to_owned(), String::new()));
    let body = format!("{marker} ").repeat(100);
    let (code, digest, err) = lab.curl(
        C,
        &["--data-binary", &body, &VpnLab::url(WEB4, 80, "/sha256")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(digest, hex(&Sha256::digest(body.as_bytes())));
    assert_eq!(
        udp_echo(&lab, C, WEB4, &marker),
        format!("{X_WAN4} {marker}")
    );
    assert_eq!(
        udp_echo(&lab, C, WEB6, &marker),
        format!("{X_WAN6} {marker}")
    );

    // 2. DNS: the exit's resolvers, reached through the tunnel.
    let resolv = lab.topo.output(C, "cat", &["/etc/resolv.conf"]);
    let resolv = String::from_utf8_lossy(&resolv.stdout).into_owned();
    assert!(
        resolv.contains(&format!("nameserver {DNS4}"))
            && resolv.contains(&format!("nameserver {DNS6}")),
        "{resolv}"
    );
    let out = lab.topo.output(C, "getent", &["ahosts", "echo.test"]);
    assert!(out.status.success(), "getent: {out:?}");
    let queries = lab.dns_queries();
    assert!(!queries.is_empty());
    for (source, name, _) in &queries {
        assert!(
            source == X_WAN4 || source == X_WAN6,
            "{source} asked for {name}"
        );
    }

    // 10. MTU: a 100 MB download and a 4 KB upload, checksummed; `ping -M do` fits the
    // TUN device's MTU (1420) exactly.
    let blob = lab
        .topo
        .command(C, "sh")
        .args([
            "-c",
            &format!(
                "curl -s --max-time 60 '{}' | sha256sum",
                VpnLab::url(WEB4, 80, "/blob?size=100M&seed=14")
            ),
        ])
        .output()
        .unwrap();
    let (_, expected, _) = lab.curl(
        C,
        &[
            "--max-time",
            "30",
            &VpnLab::url(WEB4, 80, "/blob-sha256?size=100M&seed=14"),
        ],
    );
    assert_eq!(expected.len(), 64, "{expected}");
    assert!(
        String::from_utf8_lossy(&blob.stdout).starts_with(&expected),
        "100 MB through the exit: {blob:?}"
    );
    let upload = format!("{marker}.").repeat(4096 / (marker.len() + 1) + 1);
    let (code, digest, err) = lab.curl(
        C,
        &["--data-binary", &upload, &VpnLab::url(WEB6, 80, "/sha256")],
    );
    assert_eq!(
        (code, digest),
        (0, hex(&Sha256::digest(upload.as_bytes()))),
        "{err}"
    );
    let ping = |size: &str| {
        lab.topo
            .output(
                C,
                "ping",
                &["-M", "do", "-s", size, "-c", "1", "-W", "3", WEB4],
            )
            .status
            .success()
    };
    assert!(ping("1392"), "a 1420-byte packet with DF set");
    assert!(!ping("1393"), "a 1421-byte packet with DF set left");

    // 6. TunnelVision: a more specific route through the ISP (a DHCP option 121) does not
    // take the traffic out of the tunnel.
    let c_ns = lab.topo.ns(C);
    ip(&["-n", &c_ns, "route", "add", "198.18.9.0/25", "via", ISP_C4]);
    ip(&[
        "-n",
        &c_ns,
        "-6",
        "route",
        "add",
        "fd00:9::/80",
        "via",
        ISP_C6,
    ]);
    assert_eq!(lab.curl(C, &[&web4]), (0, X_WAN4.to_owned(), String::new()));
    assert_eq!(lab.curl(C, &[&web6]), (0, X_WAN6.to_owned(), String::new()));
    ip(&["-n", &c_ns, "route", "del", "198.18.9.0/25", "via", ISP_C4]);
    ip(&[
        "-n",
        &c_ns,
        "-6",
        "route",
        "del",
        "fd00:9::/80",
        "via",
        ISP_C6,
    ]);

    // 8. ServerIP: the first hop's own address goes through the tunnel, where the exit
    // refuses its own services to clients.
    let counters = exit_counters(&lab, &mesh);
    let own = VpnLab::url(X_WAN4, EXIT_OWN_PORT, "/");
    let (code, body, _) = lab.curl(C, &["--max-time", "2", &own]);
    assert_ne!(code, 0, "a client reached the exit's own service: {body}");
    // 9. The exit's LAN, its metadata address and its own addresses are not the clients'.
    for url in [
        VpnLab::url(XLAN4, 80, "/"),
        VpnLab::url(XLAN6, 80, "/"),
        VpnLab::url(METADATA4, 80, "/"),
    ] {
        let (code, body, _) = lab.curl(C, &["--max-time", "2", &url]);
        assert_ne!(code, 0, "a client reached {url}: {body}");
    }
    let after = exit_counters(&lab, &mesh);
    assert!(
        after["exit_services"] > counters["exit_services"],
        "{after:?}"
    );
    assert!(
        after["local_denied"] > counters["local_denied"],
        "{after:?}"
    );

    // Clients cannot reach each other.
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c2, &["up"]);
    assert_eq!(code, 0, "c2: vpn up: {out}{err}");
    let lease_c2 = client_status(&lab, &mesh.c2)["state"]["lease"]["ipv4"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(lease_c2, lease4, "two clients got one address");
    assert_eq!(lab.topo.ping(C, &lease4, &lease_c2, 2), 0);
    let after2 = exit_counters(&lab, &mesh);
    eprintln!("exit counters: {after2:?}");
    assert!(
        after2["client_to_client"] > after["client_to_client"],
        "{after2:?}"
    );
    let (code, _, err) = VpnMesh::vpn(&lab, &mesh.c2, &["down"]);
    assert_eq!(code, 0, "c2: vpn down: {err}");

    // 12. Down: c is as it was (routes, rules, nftables, sysctls, resolv.conf).
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
    assert_eq!(code, 0, "vpn down: {out}{err}");
    let status = client_status(&lab, &mesh.c);
    assert_eq!(status["running"], false, "{status}");
    assert_eq!(snapshot(&lab, C), before_c, "c after vpn down");
    let report = leaks.finish().unwrap();
    assert_clean(
        &report,
        "egress, DNS, MTU, TunnelVision, ServerIP, protections",
    );
    let others = tcpdump.others(&lab);
    assert!(
        others.is_empty(),
        "tcpdump saw on c-wan:\n{}",
        others.join("\n")
    );
    let control = uplink.finish().unwrap();
    eprintln!(
        "x-wan (the control): {} frames, marker found {} times",
        control.frames, control.marker_hits
    );
    assert!(
        control.marker_hits > 0,
        "the marker never crossed the exit's uplink: {control}"
    );

    // The exit's stop restores x.
    mesh.stop_exit();
    assert_eq!(snapshot(&lab, X), before_x, "x after the exit stopped");
    drop(mesh);
}

/// The lines of `ip [-6] rule` / `ip [-6] route show table 29547` in c that hold `needle`.
fn count_lines(lab: &VpnLab, args: &[&str], needle: &str) -> usize {
    let mut full = vec!["-n".to_owned(), lab.topo.ns(C)];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    ip(&full).lines().filter(|l| l.contains(needle)).count()
}

/// c's kernel holds exactly one VPN set-up: one table, one rule per family, one default
/// and one blackhole per family.
fn assert_one_setup(lab: &VpnLab) {
    let tables = lab.topo.output(C, "nft", &["list", "tables"]);
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    // One table per family: inet (routing marks, kill switch) and arp (marks ARP).
    assert_eq!(
        tables.matches("table inet skywire-client").count(),
        1,
        "{tables}"
    );
    assert_eq!(
        tables.matches("table arp skywire-client").count(),
        1,
        "{tables}"
    );
    assert_eq!(tables.matches("skywire-client").count(), 2, "{tables}");
    for family in ["-4", "-6"] {
        assert_eq!(
            count_lines(lab, &[family, "rule", "show"], "lookup 29547"),
            1,
            "{family} rules"
        );
        let table = ["route", "show", "table", "29547"];
        let args: Vec<&str> = std::iter::once(family).chain(table).collect();
        assert_eq!(
            count_lines(lab, &args, "blackhole default"),
            1,
            "{family} blackhole"
        );
        assert_eq!(
            count_lines(lab, &args, "default dev sw0"),
            1,
            "{family} default"
        );
    }
}

/// Wait until c's client says connected (its phase, from `vpn status --json`).
fn wait_connected(
    lab: &VpnLab,
    mesh: &VpnMesh,
    within: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    loop {
        let status = client_status(lab, &mesh.c);
        if status["running"] == true && status["state"]["phase"] == "connected" {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not connected after {within:?}: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn vpn_kill_switch_holds_when_the_exit_the_path_or_the_node_dies() {
    if !skip_unless_root("vpn_kill_switch_holds_when_the_exit_the_path_or_the_node_dies") {
        return;
    }
    use std::time::Duration;
    let lab = lab();
    let mut mesh = VpnMesh::start(&lab, (POOL4, POOL6), "", "");
    mesh.start_exit(&lab);
    let before_c = snapshot(&lab, C);
    let marker = marker();
    let web4 = VpnLab::url(WEB4, 80, "/ip");
    let echo = VpnLab::url(WEB4, 80, "/sha256");
    // A request that carries the marker; its outcome.
    let request = |lab: &VpnLab| {
        let (code, _, err) = lab.curl(C, &["--max-time", "2", "--data-binary", &marker, &echo]);
        if code != 0 {
            eprintln!("request: {code} {err}");
        }
        code
    };

    let leaks = watch(&lab, &marker);
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up", "--lockdown"]);
    assert_eq!(code, 0, "vpn up --lockdown: {out}{err}");
    assert_eq!(lab.curl(C, &[&web4]), (0, X_WAN4.to_owned(), String::new()));
    assert_one_setup(&lab);

    // (a) The exit's app and node die: requests fail, nothing leaks. Back, the client
    // reconnects (to the same address: the exit kept its leases).
    let lease = client_status(&lab, &mesh.c)["state"]["lease"]["ipv4"].clone();
    drop(mesh.exit_app.take());
    mesh.x.kill9();
    assert_ne!(request(&lab), 0, "a request went out with the exit dead");
    mesh.x.restart();
    mesh.start_exit(&lab);
    // The client hears of the restart when its stream's next segment reaches the new
    // exit and is reset: after its node's next handshake (at most 15 s of unanswered
    // data, as WireGuard) and its stack's next retransmission; 1 to 35 s were seen.
    let took = wait_until(Duration::from_secs(60), || request(&lab) == 0);
    assert!(
        took.is_some(),
        "no traffic after the exit came back: {}\nclient log:\n{}\nexit:\n{}\nx status:\n{}\nc status:\n{}",
        client_status(&lab, &mesh.c),
        client_log(&mesh.c),
        mesh.exit_app.as_ref().unwrap().stderr(),
        mesh.x.status_text(),
        mesh.c.status_text(),
    );
    wait_connected(&lab, &mesh, Duration::from_secs(10));
    assert_eq!(
        client_status(&lab, &mesh.c)["state"]["lease"]["ipv4"],
        lease
    );
    eprintln!("(a) back through the restarted exit after {took:?}");

    // (b) The ISP drops the mesh's UDP: requests fail, nothing leaks.
    for command in [
        "add table inet cut",
        "add chain inet cut f { type filter hook forward priority 0; }",
        "add rule inet cut f udp dport 6000 drop",
        "add rule inet cut f udp sport 6000 drop",
    ] {
        let out = lab.topo.output(ISP, "nft", &[command]);
        assert!(out.status.success(), "nft {command}: {out:?}");
    }
    assert_ne!(request(&lab), 0, "a request went out with the path cut");
    let out = lab.topo.output(ISP, "nft", &["delete table inet cut"]);
    assert!(out.status.success(), "{out:?}");
    let took = wait_until(Duration::from_secs(40), || request(&lab) == 0);
    assert!(took.is_some(), "no traffic after the path came back");

    // (c) kill -9 of c's own node: the TUN device goes, the kernel keeps the table, the
    // rules and the kill switch: requests fail. Restarted, the client reconnects by itself.
    mesh.c.kill9();
    assert_ne!(request(&lab), 0, "a request went out with the node dead");
    let (code, _, _) = lab.curl(C, &["--max-time", "2", &VpnLab::url(WEB6, 80, "/ip")]);
    assert_ne!(code, 0, "IPv6 went out with the node dead");
    mesh.c.restart();
    let took = wait_connected(&lab, &mesh, Duration::from_secs(10));
    eprintln!("(c) connected {took:?} after the node's restart");
    let took = wait_until(Duration::from_secs(10), || request(&lab) == 0);
    assert!(took.is_some(), "no traffic after the node came back");
    assert_eq!(lab.curl(C, &[&web4]), (0, X_WAN4.to_owned(), String::new()));
    assert_one_setup(&lab);

    let report = leaks.finish().unwrap();
    assert_clean(&report, "kill switch");

    // Down removes the kill switch (it was asked for with --lockdown, not configured).
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
    assert_eq!(code, 0, "vpn down: {out}{err}");
    assert_eq!(snapshot(&lab, C), before_c, "c after vpn down");
}

#[test]
fn vpn_ipv4_only_exit_blocks_ipv6_and_allow_lan_opens_only_the_lan() {
    if !skip_unless_root("vpn_ipv4_only_exit_blocks_ipv6_and_allow_lan_opens_only_the_lan") {
        return;
    }
    let lab = lab();
    let mut mesh = VpnMesh::start(
        &lab,
        (POOL4, "none"),
        "",
        &format!("    lan_ranges: [{C_LAN_NET}]\n"),
    );
    mesh.start_exit(&lab);
    // LocalNet: a "local" network that is really the internet's (a hostile network hands
    // out 198.18.9.77/24, the echo server's network).
    let c_ns = lab.topo.ns(C);
    ip(&[
        "-n",
        &c_ns,
        "addr",
        "add",
        "198.18.9.77/24",
        "dev",
        C_WAN_IF,
    ]);
    let marker = marker();
    let leaks = watch(&lab, &marker);
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up", "--allow-lan"]);
    assert_eq!(code, 0, "vpn up --allow-lan: {out}{err}");
    let status = client_status(&lab, &mesh.c);
    assert!(status["state"]["lease"]["ipv6"].is_null(), "{status}");
    assert_eq!(
        status["state"]["lan"],
        serde_json::json!([C_LAN_NET]),
        "{status}"
    );

    // 3. IPv6 through an IPv4-only exit: refused at once, nothing on the link.
    let started = std::time::Instant::now();
    let (code, _, err) = lab.curl(C, &["--max-time", "3", &VpnLab::url(WEB6, 80, "/ip")]);
    assert_eq!(code, 7, "IPv6 with an IPv4-only exit: {err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lab.topo.ping(C, C_WAN6, WEB6, 1), 0);

    // 7. The internet's "local" network still goes through the exit; the real LAN
    // (inside lan_ranges, on-link) does not.
    let (code, body, err) = lab.curl(C, &[&VpnLab::url(WEB4, 80, "/ip")]);
    assert_eq!((code, body.as_str()), (0, X_WAN4), "{err}");
    assert_eq!(
        lab.topo.ping(C, C_LAN4, CLAN4, 2),
        2,
        "the LAN with --allow-lan"
    );
    let (code, _, err) = lab.curl(
        C,
        &["--data-binary", &marker, &VpnLab::url(WEB4, 80, "/sha256")],
    );
    assert_eq!(code, 0, "{err}");

    // 9. A client that sends from an address it was not leased: dropped at the exit and
    // counted, never forwarded.
    let before = source_not_allowed(&mesh);
    let spoof = "import socket,struct,sys\n\
        src=socket.inet_aton('198.19.128.99'); dst=socket.inet_aton(sys.argv[1])\n\
        data=sys.argv[2].encode(); udp=struct.pack('!HHHH',40000,7,8+len(data),0)+data\n\
        ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(udp),1,0,64,17,0,src,dst)\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)\n\
        [s.sendto(ip+udp,(sys.argv[1],0)) for _ in range(5)]";
    let out = lab
        .topo
        .command(C, python3())
        .args(["-c", spoof, WEB4, &marker])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let counted = netns::wait_until(std::time::Duration::from_secs(3), || {
        source_not_allowed(&mesh) >= before + 5
    });
    assert!(
        counted.is_some(),
        "spoofed packets not counted: {}",
        source_not_allowed(&mesh)
    );

    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
    assert_eq!(code, 0, "vpn down: {out}{err}");
    let report = leaks.finish().unwrap();
    assert_clean(&report, "IPv4-only exit, allow-lan, spoofing");
}

/// `source not allowed` at x's route end to c.
fn source_not_allowed(mesh: &VpnMesh) -> u64 {
    let status = mesh.x.status_json();
    let end = status
        .routes
        .iter()
        .find(|r| r.peer == mesh.c.key())
        .expect("x has a route end to c");
    end.drops
        .0
        .iter()
        .find(|(name, _)| name == "source not allowed")
        .map_or(0, |(_, n)| *n)
}

#[test]
fn vpn_pool_is_never_exhausted_by_cycles() {
    if !skip_unless_root("vpn_pool_is_never_exhausted_by_cycles") {
        return;
    }
    use skywire_control::apps::vpn::proto::{self, Reply, Request};
    use skywire_control::node::apps::AppClient;
    use std::io::{BufRead, BufReader, Write};
    let lab = lab();
    // A /29: five addresses to lease (.2 to .6).
    let mut mesh = VpnMesh::start(&lab, ("198.19.128.0/29", "none"), "", "");
    mesh.start_exit(&lab);
    let x = mesh.x.key();
    let clients = [&mesh.c, &mesh.c2].map(|node| {
        let config = skywire_control::config::Config::load(node.config_path()).unwrap();
        (node.key(), AppClient::new(config.node.app_socket()))
    });
    let mut held: [Option<std::net::Ipv4Addr>; 2] = [None, None];
    for i in 0..1000 {
        let k = i % 2;
        let (_, app) = &clients[k];
        let mut stream = app.dial(x, 44, std::time::Duration::from_secs(5)).unwrap();
        stream
            .write_all(&proto::encode_request(Request::Lease))
            .unwrap();
        let mut line = Vec::new();
        let mut reader = BufReader::new(stream);
        reader.read_until(b'\n', &mut line).unwrap();
        let Reply::Granted(lease) = proto::decode_reply(&line).unwrap() else {
            panic!("cycle {i}: {}", String::from_utf8_lossy(&line));
        };
        let other = held[1 - k];
        assert_ne!(
            Some(lease.ipv4),
            other,
            "cycle {i}: one address for two keys"
        );
        let mut stream = reader.into_inner();
        // Every other cycle of each key releases; the rest just go (a crash), keeping the
        // address for the key in its grace.
        if (i / 2) % 2 == 0 {
            stream
                .write_all(&proto::encode_request(Request::Release))
                .unwrap();
            held[k] = None;
        } else {
            held[k] = Some(lease.ipv4);
        }
        drop(stream);
    }
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.x, &["exit", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(status["leases"].as_array().unwrap().len() <= 2, "{status}");
    // Full up/down cycles leave nothing behind.
    let before = snapshot(&lab, C);
    for cycle in 0..5 {
        let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up"]);
        assert_eq!(code, 0, "cycle {cycle}: vpn up: {out}{err}");
        let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
        assert_eq!(code, 0, "cycle {cycle}: vpn down: {out}{err}");
    }
    assert_eq!(snapshot(&lab, C), before);

    // 12. A configured kill switch stays after `down`, closed, until `down --unlock`.
    let mut config = std::fs::read_to_string(mesh.c.config_path()).unwrap();
    config.push_str("    lockdown: true\n");
    std::fs::write(mesh.c.config_path(), config).unwrap();
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up"]);
    assert_eq!(code, 0, "vpn up (lockdown configured): {out}{err}");
    assert!(out.contains("kill switch on"), "{out}");
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
    assert_eq!(code, 0, "vpn down: {out}{err}");
    assert!(out.contains("the kill switch stays"), "{out}");
    let ruleset = lab
        .topo
        .output(C, "nft", &["list", "table", "inet", "skywire-client"]);
    let ruleset = String::from_utf8_lossy(&ruleset.stdout).into_owned();
    assert!(ruleset.contains("policy drop"), "{ruleset}");
    assert_eq!(count_lines(&lab, &["rule", "show"], "lookup 29547"), 0);
    let (code, _, _) = lab.curl(C, &["--max-time", "2", &VpnLab::url(WEB4, 80, "/ip")]);
    assert_ne!(code, 0, "traffic left with the kill switch kept");
    let status = client_status(&lab, &mesh.c);
    assert_eq!(status["running"], false, "{status}");
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down", "--unlock"]);
    assert_eq!(code, 0, "vpn down --unlock: {out}{err}");
    assert_eq!(snapshot(&lab, C), before, "after down --unlock");
}

/// `skywire ARGS --socket <node's control socket>`: (code, stdout, stderr).
fn sky(node: &netns::Node, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skywire"))
        .args(args)
        .arg("--socket")
        .arg(node.socket())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    netns::outcome(&out)
}

#[test]
fn vpn_over_manager_routes_holds_under_load() {
    if !skip_unless_root("vpn_over_manager_routes_holds_under_load") {
        return;
    }
    use std::time::Duration;
    let lab = lab();
    let started = std::time::Instant::now();
    let mut mesh = VpnMesh::start_managed(&lab, "");
    let online = wait_until(Duration::from_secs(10), || {
        let (code, out, _) = sky(&mesh.c, &["nodes", "--json"]);
        code == 0
            && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["online"] == true))
            })
    });
    assert!(
        online.is_some(),
        "the nodes did not register with the manager"
    );
    eprintln!("[{:?}] registered", started.elapsed());
    mesh.start_exit(&lab);
    let marker = marker();
    let leaks = watch(&lab, &marker);

    // The client's stream asks the manager for its route on the way.
    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["up"]);
    assert_eq!(code, 0, "vpn up: {out}{err}\n{}", client_log(&mesh.c));
    let routes = |node: &netns::Node| {
        let (code, out, err) = sky(node, &["route", "ls", "--json"]);
        assert_eq!(code, 0, "route ls: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["routes"].clone()
    };
    eprintln!("[{:?}] up", started.elapsed());
    let before = routes(&mesh.c);
    assert_eq!(before.as_array().map(Vec::len), Some(1), "{before}");
    assert_eq!(lab.curl(C, &[&VpnLab::url(WEB4, 80, "/ip")]).1, X_WAN4);

    // c's gateway forgets c's MAC address, as it does 15 to 45 s after last learning it,
    // and asks again. c answers under rp_filter=1 with its default route in the tunnel
    // (the ARP request is marked, so the check takes the main table): the mesh's UDP from
    // x reaches c again, and so does the web server's answer.
    let flushed = lab
        .topo
        .output(ISP, "ip", &["neigh", "flush", "dev", "isp-c"]);
    assert!(flushed.status.success(), "{flushed:?}");
    assert_eq!(
        lab.curl(C, &[&VpnLab::url(WEB4, 80, "/ip")]).1,
        X_WAN4,
        "after the gateway's ARP"
    );
    let neigh = lab
        .topo
        .output(ISP, "ip", &["neigh", "show", "dev", "isp-c", C_WAN4]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    assert!(
        neigh.contains("lladdr"),
        "isp did not learn c's address: {neigh}"
    );

    // 5. 15 s of one TCP stream to the internet: the tunnel never carries its own
    // transport, the manager connection (marked, on the management network, under
    // rp_filter) stays up, and the route is the same one.
    let server = lab.topo.spawn(
        INET,
        "iperf3",
        std::path::Path::new("iperf3"),
        &["-s", "-1", "-B", WEB4],
    );
    std::thread::sleep(Duration::from_millis(500));
    // 15 s at 200 Mbit/s (the capture that checks for leaks keeps up with that in a debug
    // build). `timeout` bounds the run whatever happens.
    let out = lab.topo.output(
        C,
        "timeout",
        &[
            "60",
            "iperf3",
            "-c",
            WEB4,
            "-t",
            "15",
            "-b",
            "200M",
            "-J",
            "--connect-timeout",
            "5000",
        ],
    );
    assert!(out.status.success(), "iperf3: {out:?}");
    eprintln!("[{:?}] iperf3 done", started.elapsed());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!("15 s through the exit: {:.2} Gbit/s", bits / 1e9);
    assert!(bits > 1e6, "{report}");
    drop(server);
    // The same route, never repaired: the link to the exit stayed up all along.
    let after = routes(&mesh.c);
    assert_eq!(
        after[0]["id"], before[0]["id"],
        "another route under load: {after}"
    );
    assert_eq!(after[0]["state"], "active", "{after}");
    assert_eq!(
        after[0]["repairs"], 0,
        "the route was repaired under load: {after}"
    );
    let (code, _, err) = sky(&mesh.c, &["nodes", "--json"]);
    assert_eq!(code, 0, "the manager connection broke under the VPN: {err}");
    let status = client_status(&lab, &mesh.c);
    assert_eq!(status["state"]["phase"], "connected", "{status}");

    let (code, out, err) = VpnMesh::vpn(&lab, &mesh.c, &["down"]);
    assert_eq!(code, 0, "vpn down: {out}{err}");
    eprintln!("[{:?}] down", started.elapsed());
    let report = leaks.finish().unwrap();
    assert_clean(&report, "manager routes under load");
}
