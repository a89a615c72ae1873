//! The systemd units in `dist/systemd/`: each passes `systemd-analyze verify` (with its
//! `ExecStart` pointed at the binary cargo built, which verify requires to exist, in a copy
//! in a scratch folder), has the settings the daemons rely on, and agrees with the code:
//! its command line parses, and its runtime and state directories hold the default paths
//! of the sockets and state files it serves. Any user; without `systemd-analyze` (Debian's
//! `systemd` package, which `scripts/test` installs) the verify step says it is skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Scratch, path_arg, skywire_binary};
use skywire_control::config::{
    DEFAULT_APP_SOCKET, DEFAULT_CONTROL_SOCKET, DEFAULT_MANAGER_LISTEN, DEFAULT_VPN_CLIENT_STATE,
    DEFAULT_VPN_EXIT_STATE,
};
use skywire_control::launcher::headless;

/// Where the units say the binary is installed.
const INSTALLED: &str = "/usr/local/bin/skywire";

const UNITS: [&str; 3] = [
    "skywire-node.service",
    "skywire-manager.service",
    "skywire-viscript.service",
];

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist/systemd")
        .join(name)
}

/// A unit's `KEY=VALUE` lines (comments and section headers left out), in order.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {l:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// The last value of `key` (systemd's rule for single-valued settings), or panic.
fn value<'a>(settings: &'a [(String, String)], key: &str, unit: &str) -> &'a str {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{unit}: no {key}="))
}

/// The words of every value of `key` (list settings may be given several times).
fn words(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// `/run/skywire/node.sock` -> `skywire`: the folder systemd's `RuntimeDirectory=` (or
/// `StateDirectory=`) must name for `path` to be writable under `ProtectSystem=strict`.
fn folder_under(path: &str, root: &str) -> String {
    Path::new(path)
        .parent()
        .unwrap()
        .strip_prefix(root)
        .unwrap_or_else(|_| panic!("{path} is not under {root}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_unit_has_what_the_daemons_rely_on() {
    for unit in UNITS {
        let text = fs::read_to_string(unit_path(unit)).unwrap();
        let s = settings(&text);
        for (key, want) in [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("Restart", "on-failure"),
            ("KillMode", "control-group"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("LockPersonality", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("SystemCallArchitectures", "native"),
            ("ConfigurationDirectory", "skywire"),
        ] {
            assert_eq!(value(&s, key, unit), want, "{unit}: {key}");
        }
        let watchdog = value(&s, "WatchdogSec", unit);
        assert!(
            watchdog.ends_with('s') && watchdog != "0s",
            "{unit}: WatchdogSec={watchdog}"
        );
        assert!(
            value(&s, "ExecStart", unit).starts_with(INSTALLED),
            "{unit}"
        );
    }
}

#[test]
fn capabilities_and_directories_match_what_each_daemon_does() {
    let read = |unit: &str| settings(&fs::read_to_string(unit_path(unit)).unwrap());
    // The node: CAP_NET_ADMIN only (TUN, netlink, SO_MARK, SO_RCVBUFFORCE), the TUN
    // device only, its two socket folders and the state folder.
    let node = read("skywire-node.service");
    let unit = "skywire-node.service";
    assert_eq!(words(&node, "CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
    assert_eq!(value(&node, "DevicePolicy", unit), "closed");
    assert_eq!(value(&node, "DeviceAllow", unit), "/dev/net/tun rw");
    let runtime = words(&node, "RuntimeDirectory");
    for path in [DEFAULT_CONTROL_SOCKET, DEFAULT_APP_SOCKET] {
        let folder = folder_under(path, "/run");
        assert!(runtime.contains(&folder), "{unit}: {folder} for {path}");
    }
    assert_eq!(value(&node, "RuntimeDirectoryPreserve", unit), "yes");
    assert_eq!(words(&node, "StateDirectory"), ["skywire"]);
    let families = words(&node, "RestrictAddressFamilies");
    assert_eq!(families, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]);

    // The manager: no capability (its default port needs none), no device, no folder to
    // write, no netlink.
    let manager = read("skywire-manager.service");
    let unit = "skywire-manager.service";
    assert!(words(&manager, "CapabilityBoundingSet").is_empty());
    assert!(DEFAULT_MANAGER_LISTEN.port() >= 1024);
    assert_eq!(value(&manager, "PrivateDevices", unit), "yes");
    assert!(words(&manager, "RuntimeDirectory").is_empty());
    assert!(words(&manager, "StateDirectory").is_empty());
    assert_eq!(
        words(&manager, "RestrictAddressFamilies"),
        ["AF_UNIX", "AF_INET", "AF_INET6"]
    );

    // Viscript: its socket, and what its apps write (the node's sockets, the VPN's state).
    let viscript = read("skywire-viscript.service");
    let unit = "skywire-viscript.service";
    assert_eq!(words(&viscript, "CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
    let runtime = words(&viscript, "RuntimeDirectory");
    for path in [
        headless::DEFAULT_SOCKET,
        DEFAULT_CONTROL_SOCKET,
        DEFAULT_APP_SOCKET,
        DEFAULT_VPN_CLIENT_STATE,
    ] {
        let folder = folder_under(path, "/run");
        assert!(runtime.contains(&folder), "{unit}: {folder} for {path}");
    }
    assert_eq!(value(&viscript, "RuntimeDirectoryPreserve", unit), "yes");
    assert_eq!(
        words(&viscript, "StateDirectory"),
        [folder_under(DEFAULT_VPN_EXIT_STATE, "/var/lib")]
    );
    assert!(words(&viscript, "ReadWritePaths").contains(&"-/etc/resolv.conf".to_owned()));
}

#[test]
fn every_units_command_line_parses() {
    for unit in UNITS {
        let s = settings(&fs::read_to_string(unit_path(unit)).unwrap());
        let exec = value(&s, "ExecStart", unit);
        let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
        // `--help` last: clap prints help (exit 0) only if every word before it parses,
        // and starts nothing.
        let out = Command::new(skywire_binary())
            .args(&args)
            .arg("--help")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{unit}: `skywire {}` does not parse: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Whether `systemd-analyze` runs here.
fn have_systemd_analyze() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        println!(
            "every_unit_passes_systemd_analyze_verify: skipped: systemd-analyze is missing \
             (apt-get install systemd; scripts/test does)"
        );
        return;
    }
    let scratch = Scratch::new();
    let binary = skywire_binary();
    for unit in UNITS {
        let text = fs::read_to_string(unit_path(unit)).unwrap();
        assert!(text.contains(INSTALLED), "{unit}");
        // verify checks that ExecStart's program exists: the one just built stands in.
        let copy = scratch.write(unit, &text.replace(INSTALLED, path_arg(&binary)));
        // --man=no: the man pages the units name are installed with the package, not here.
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit}: verify failed:\n{stderr}");
        // An unknown key or a bad value is only a warning (exit 0): any line about our
        // unit fails the test.
        let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(unit)).collect();
        assert!(
            about_unit.is_empty(),
            "{unit}: verify warns:\n{}",
            about_unit.join("\n")
        );
    }
}

#[test]
fn verify_here_catches_a_bad_unit() {
    // The check above is only as good as its reading of verify's output: a misspelt key
    // and a missing program must be caught.
    if !have_systemd_analyze() {
        println!("verify_here_catches_a_bad_unit: skipped: systemd-analyze is missing");
        return;
    }
    let scratch = Scratch::new();
    let text = fs::read_to_string(unit_path("skywire-node.service")).unwrap();
    let built = text.replace(INSTALLED, path_arg(&skywire_binary()));
    let cases = [
        (
            "skywire-typo.service",
            built.replace("NotifyAccess=main", "NotifyAcess=main"),
        ),
        ("skywire-missing.service", text.clone()),
    ];
    for (name, text) in cases {
        let copy = scratch.write(name, &text);
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warned = stderr.lines().any(|l| l.contains(name));
        assert!(
            !out.status.success() || warned,
            "{name}: verify found nothing wrong"
        );
    }
}
