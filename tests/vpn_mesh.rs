//! The VPN over the mesh in namespaces (root only; docs/design/vpn-plan.md §3): for now the
//! topology of `tests/netns/vpn.rs` itself, checked without any node, so that it is known
//! to work before a VPN test relies on it.
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
use netns::{ip, python3, skip_unless_root};
use sha2::{Digest, Sha256};

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
