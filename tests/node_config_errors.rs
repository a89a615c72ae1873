//! `skywire node --config F --check`, run as the real binary (no root needed): a good config
//! exits 0; each kind of bad config exits 78 with one error line naming the file, the line
//! and the key: a YAML syntax error, an unknown key, a bad prefix, a missing key file, a key
//! file others can read; and the reliability suite's table of 26 bad configs (issue 16,
//! row 11), a node started on one (creates nothing), and a config linked to a secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Scratch, chmod, path_arg, skywire, text};

/// Bad configuration (DESIGN.md, "User surface").
const EXIT_CONFIG: i32 = 78;

/// Node A of the three-hop topology, every key written; the line numbers below refer to
/// this text.
const GOOD: &str = "\
node:
  key: node.key
  listen: 198.18.1.1:6000
  control_socket: ctl/node.sock
  tun:
    name: sky0
    addresses: [10.77.0.1/24, fd77::1/64]
  routes:
    - name: to-c
      peer: c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0
      prefixes: [10.77.0.3/32, fd77::3/128]
      first_hop: 198.18.1.2:6000
      out_id: 100
      in_id: 201
      prev_hop: 198.18.1.2:6000
      persistent_keepalive: 25s
  relays:
    - { in_id: 300, prev_hop: 198.18.1.5:6000, out_id: 301, next_hop: 198.18.1.6:6000 }
";

/// `GOOD` with its first `from` replaced by `to` (which must be there).
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} is not in the good config");
    GOOD.replacen(from, to, 1)
}

/// `skywire node --config PATH --check`.
fn check(config: &Path) -> Output {
    skywire(&["node", "--config", path_arg(config), "--check"]).0
}

/// Exit 78, nothing on stdout, and exactly one line on stderr that starts with
/// `skywire: error: FILE:LINE:` and names `key` and `what`. Returns that line.
fn assert_bad_config(config: &Path, line: u32, key: &str, what: &[&str]) -> String {
    let out = check(config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "not one error line: {err}");
    let prefix = format!("skywire: error: {}:{line}:", config.display());
    assert!(err.starts_with(&prefix), "expected {prefix:?}, got: {err}");
    assert!(
        err.contains(&format!(" {key}: ")),
        "the key {key:?} is not named: {err}"
    );
    for fragment in what {
        assert!(err.contains(fragment), "{fragment:?} missing: {err}");
    }
    println!("{}", err.trim_end());
    err
}

#[test]
fn a_good_config_passes_the_check() {
    let dir = Scratch::new();
    let key = dir.keygen("node.key");
    let config = dir.write("good.yaml", GOOD);
    let out = check(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let said = text(&out.stdout);
    assert!(said.contains("ok"), "{said}");
    // The check starts nothing: no control socket folder appears.
    assert!(
        !dir.path("ctl").exists(),
        "--check created the socket folder"
    );
    // It names the node by its public key.
    let (_, public, _) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert!(said.contains(public.trim()), "{said}");
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    // `listen` indented one space deeper than `key`: not YAML.
    let config = dir.write(
        "syntax.yaml",
        &edit("  listen: 198.18.1.1:6000", "   listen: 198.18.1.1:6000"),
    );
    assert_bad_config(&config, 3, "node", &["mapping values are not allowed"]);
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let config = dir.write(
        "unknown.yaml",
        &edit("      in_id: 201\n", "      in_id: 201\n      inid: 3\n"),
    );
    assert_bad_config(
        &config,
        15,
        "node.routes[0].inid",
        &["unknown field", "inid"],
    );

    // In the tun section and at the top of the node section too.
    let config = dir.write(
        "unknown-tun.yaml",
        &edit("    name: sky0", "    nmae: sky0"),
    );
    assert_bad_config(&config, 6, "node.tun.nmae", &["unknown field"]);
    let config = dir.write(
        "unknown-node.yaml",
        &edit("  listen: 198.18.1.1:6000", "  listen_on: 198.18.1.1:6000"),
    );
    assert_bad_config(&config, 3, "node.listen_on", &["unknown field"]);
}

#[test]
fn a_bad_prefix_is_named_with_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let config = dir.write("prefix.yaml", &edit("10.77.0.3/32", "10.77.0.3/33"));
    assert_bad_config(&config, 11, "node.routes[0].prefixes[0]", &["prefix"]);
    let config = dir.write("prefix-addr.yaml", &edit("fd77::3/128", "fd77::g/128"));
    assert_bad_config(&config, 11, "node.routes[0].prefixes[1]", &["prefix"]);
    let config = dir.write("tun-addr.yaml", &edit("10.77.0.1/24", "10.77.0.1"));
    assert_bad_config(&config, 7, "node.tun.addresses[0]", &["ADDRESS/LENGTH"]);
}

#[test]
fn a_missing_key_file_is_named_with_the_key_line() {
    let dir = Scratch::new();
    let config = dir.write("nokey.yaml", GOOD);
    // It names the file it looked for, resolved against the config's folder.
    let looked_for = dir.path("node.key").display().to_string();
    assert_bad_config(&config, 2, "node.key", &[&looked_for]);
    let config = dir.write(
        "nokey2.yaml",
        &edit("key: node.key", "key: keys/absent.key"),
    );
    assert_bad_config(&config, 2, "node.key", &["absent.key"]);
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = Scratch::new();
    let key = dir.keygen("node.key");
    chmod(&key, 0o644);
    let config = dir.write("open.yaml", GOOD);
    assert_bad_config(&config, 2, "node.key", &["0644"]);

    // Back to 0600: good again.
    chmod(&key, 0o600);
    assert_eq!(check(&config).status.code(), Some(0));
}

/// The reliability suite's bad configs (issue 16, row 11): each one exits 78 with one error
/// line that names the file (and, where the YAML has them, the line and the key), starts
/// nothing, and prints nothing of an unrelated file. `(name, text, line, key, fragments)`;
/// a line of 0 means the error is about the whole file.
#[test]
fn every_kind_of_bad_config_is_one_located_line_and_starts_nothing() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let long_key = format!("node:\n  key: node.key\n  {}: 1\n", "k".repeat(100));
    let big = format!("# {}\n", "x".repeat(11 << 20));
    let cases: Vec<(&str, String, u32, &str, &[&str])> = vec![
        ("empty", String::new(), 0, "", &["no node: section"]),
        (
            "only-comments",
            "# nothing here\n".into(),
            0,
            "",
            &["no node: section"],
        ),
        (
            "managers",
            "manager:\n  key: m.key\n".into(),
            0,
            "",
            &["no node: section"],
        ),
        (
            "syntax",
            edit("listen: 198.18.1.1:6000", "listen: [198.18"),
            3,
            "node.listen",
            &[],
        ),
        (
            "tab",
            edit("  key: node.key", "\tkey: node.key"),
            2,
            "",
            &["tab"],
        ),
        (
            "wrong-type",
            edit("listen: 198.18.1.1:6000", "listen: 5"),
            3,
            "node.listen",
            &["IP:PORT"],
        ),
        (
            "port",
            edit("1.1:6000", "1.1:99999"),
            3,
            "node.listen",
            &["IP:PORT"],
        ),
        (
            "unknown-key",
            edit("  listen:", "  lisen: 1\n  listen:"),
            3,
            "node.lisen",
            &["unknown field `lisen`"],
        ),
        (
            "duplicate-key",
            edit("  listen:", "  key: node.key\n  listen:"),
            3,
            "node",
            &["duplicate"],
        ),
        (
            "two-documents",
            format!("{GOOD}---\n{GOOD}"),
            20,
            "",
            &["single YAML document"],
        ),
        ("a-list", "- node\n".into(), 1, "", &["mapping"]),
        ("a-scalar", "node\n".into(), 1, "", &["mapping"]),
        (
            "prefix-length",
            edit("10.77.0.1/24", "10.77.0.1/33"),
            7,
            "node.tun.addresses[0]",
            &["prefix length"],
        ),
        (
            "prefix-text",
            edit("10.77.0.1/24", "10.77.0.x/24"),
            7,
            "node.tun.addresses[0]",
            &[],
        ),
        (
            "tun-name",
            edit("name: sky0", "name: 'a b'"),
            6,
            "node.tun.name",
            &["interface name"],
        ),
        (
            "mtu",
            edit(
                "    addresses: [10.77",
                "    mtu: 70000\n    addresses: [10.77",
            ),
            7,
            "node.tun.mtu",
            &["576 to 9000"],
        ),
        (
            "peer-key",
            edit("peer: c0c0", "peer: zz"),
            10,
            "node.routes[0].peer",
            &[],
        ),
        (
            "route-id-zero",
            edit("out_id: 100", "out_id: 0"),
            13,
            "node.routes[0].out_id",
            &[],
        ),
        (
            "route-id-type",
            edit("out_id: 100", "out_id: [1]"),
            13,
            "node.routes[0].out_id",
            &[],
        ),
        (
            "keepalive",
            edit("persistent_keepalive: 25s", "persistent_keepalive: soon"),
            16,
            "node.routes[0].persistent_keepalive",
            &[],
        ),
        (
            "relay-id-twice",
            edit("in_id: 300", "in_id: 201"),
            18,
            "node.relays[0].in_id",
            &["unique", "line 14"],
        ),
        (
            "relay-loop",
            edit("next_hop: 198.18.1.6:6000", "next_hop: 198.18.1.5:6000"),
            18,
            "node.relays[0].next_hop",
            &["back and forth"],
        ),
        (
            "missing-key-file",
            edit("key: node.key", "key: absent.key"),
            2,
            "node.key",
            &["absent.key"],
        ),
        (
            "empty-key-path",
            edit("key: node.key", "key: ''"),
            2,
            "node.key",
            &[],
        ),
        (
            "long-key-name",
            long_key,
            3,
            "node.<100 characters not shown>",
            &["unknown field `<100 characters not shown>`"],
        ),
        (
            "nul-byte",
            "node:\n  key: \u{0}\n".into(),
            2,
            "node",
            &["unexpected character"],
        ),
        ("ten-megabytes", big, 0, "", &["too large"]),
    ];
    assert!(cases.len() >= 25);
    let mut wrong = Vec::new();
    for (name, yaml, line, key, fragments) in &cases {
        let config = dir.write(&format!("{name}.yaml"), yaml);
        let out = check(&config);
        let err = text_of(&out);
        let file = format!("skywire: error: {}", config.display());
        let checks = [
            (out.status.code() == Some(EXIT_CONFIG), "exit 78"),
            (out.stdout.is_empty(), "nothing on stdout"),
            (err.lines().count() == 1, "one line"),
            (err.starts_with(&file), "the file first"),
            (
                *line == 0 || err.starts_with(&format!("{file}:{line}:")),
                "the line",
            ),
            (
                key.is_empty() || err.contains(&format!(" {key}: ")),
                "the key",
            ),
            (fragments.iter().all(|f| err.contains(f)), "the words"),
        ];
        for (ok, what) in checks {
            if !ok {
                wrong.push(format!("{name}: {what}: {err}"));
            }
        }
        println!("{name}: {}", err.trim_end());
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Bytes that are not UTF-8 (an alias bomb is refused by the parser's budget: the
    // config module's unit tests).
    let binary = dir.path("binary.yaml");
    std::fs::write(&binary, b"node:\n  key: \xff\xfe\n").unwrap();
    let err = text_of(&check(&binary));
    assert!(
        err.starts_with(&format!("skywire: error: {}:2:", binary.display()))
            && err.contains("not UTF-8"),
        "{err}"
    );

    // Not just `--check`: a node started on a bad config exits 78 too, and creates
    // nothing (its control socket folder stays absent).
    let bad = dir.write(
        "start.yaml",
        &edit("10.77.0.1/24", "10.77.0.1/33").replace("ctl/node.sock", "run-here/node.sock"),
    );
    let (out, _, err) = skywire(&["node", "--config", path_arg(&bad)]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(
        !dir.path("run-here").exists(),
        "a bad config started something"
    );

    // A config that is a symlink to a file that is not YAML (another program's secrets):
    // its lines are not printed.
    let secret = dir.write(
        "secrets",
        "root:$y$j9T$SECRETSECRETSECRETSECRET$HASHHASHHASH:19000:0:99999:7:::\n",
    );
    let link = dir.path("linked.yaml");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let out = check(&link);
    let err = text_of(&out);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("root"), "{err}");
}

/// Standard error as text.
fn text_of(out: &Output) -> String {
    text(&out.stderr)
}
