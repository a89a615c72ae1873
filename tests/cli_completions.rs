//! `skywire completions` and `skywire man`: the bash script is accepted by `bash -n` and
//! completes in a real bash (subcommands, nested ones, no hidden ones); zsh's and fish's
//! pass their shells' syntax check where those shells are installed; the man pages render
//! with `man -l` (or `groff`; at least their roff header is checked), one per visible
//! subcommand. Any user.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};

use common::{Scratch, path_arg, skywire};

/// Whether `program` runs here (`program --version` exits 0).
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `skywire completions SHELL`, which must succeed: the script.
fn script(shell: &str) -> String {
    let (out, stdout, stderr) = skywire(&["completions", shell]);
    assert!(out.status.success(), "completions {shell}: {stderr}");
    assert!(stdout.len() > 1000, "completions {shell}: {stdout}");
    stdout
}

#[test]
fn the_bash_script_parses_and_completes_in_bash() {
    let scratch = Scratch::new();
    let path = scratch.write("skywire.bash", &script("bash"));
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // What bash offers after `skywire ro`, `skywire route a`, `skywire vpn ` and `skywire
    // la` (the hidden test tool `lab`: nothing).
    let complete = |words: &[&str]| -> Vec<String> {
        let line = words.join(" ");
        let program = format!(
            "source {path}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
             COMP_POINT=${{#COMP_LINE}}; _skywire skywire '{current}' '{previous}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path = path_arg(&path),
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            current = words[words.len() - 1],
            previous = words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(complete(&["skywire", "ro"]), ["route"]);
    assert_eq!(complete(&["skywire", "route", "a"]), ["add"]);
    let vpn = complete(&["skywire", "vpn", ""]);
    for sub in ["up", "down", "status", "exit"] {
        assert!(vpn.iter().any(|w| w == sub), "skywire vpn: {vpn:?}");
    }
    assert!(complete(&["skywire", "la"]).is_empty(), "lab is hidden");
    let log_levels = complete(&["skywire", "--log-level", ""]);
    assert!(log_levels.iter().any(|w| w == "debug"), "{log_levels:?}");
}

#[test]
fn the_zsh_and_fish_scripts_pass_their_shells_checks_where_installed() {
    let scratch = Scratch::new();
    for (shell, file, check) in [
        ("zsh", "_skywire", ["-n"]),
        ("fish", "skywire.fish", ["--no-execute"]),
    ] {
        let text = script(shell);
        assert!(text.contains("route"), "{shell}");
        if !have(shell) {
            println!("{shell}: syntax check skipped: {shell} is not installed");
            continue;
        }
        let path = scratch.write(file, &text);
        let out = Command::new(shell).args(check).arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{shell} {check:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let (out, _, stderr) = skywire(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bash"), "{stderr}");
}

#[test]
fn man_pages_are_written_one_per_subcommand_and_render() {
    let scratch = Scratch::new();
    let dir = scratch.path("man/man1");
    let (out, stdout, stderr) = skywire(&["man", "--dir", path_arg(&dir)]);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("wrote "), "{stdout}");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in [
        "skywire.1",
        "skywire-node.1",
        "skywire-manager.1",
        "skywire-viscript.1",
        "skywire-route-add.1",
        "skywire-vpn-up.1",
        "skywire-completions.1",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("lab")), "{names:?}");
    for name in &names {
        let text = fs::read_to_string(dir.join(name)).unwrap();
        let title = name.trim_end_matches(".1");
        assert!(
            text.contains(&format!(".TH {title} 1 ")),
            "{name}: no roff title"
        );
        assert!(text.contains(".SH NAME"), "{name}");
    }
    // Rendered as a person would read it.
    let page = dir.join("skywire-node.1");
    let rendered = if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man -l: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    } else if have("groff") {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8"])
            .arg(&page)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "groff");
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        println!("man page rendering skipped: neither man nor groff is installed");
        None
    };
    if let Some(text) = rendered {
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"] {
            assert!(text.contains(heading), "no {heading} in:\n{text}");
        }
        assert!(text.contains("--config"), "{text}");
        assert!(!text.contains(".SH"), "roff left unrendered:\n{text}");
    }
    // Again into the same folder: the pages are replaced.
    let (out, _, stderr) = skywire(&["man", "--dir", path_arg(&dir)]);
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn a_symlink_where_a_page_goes_is_refused_and_nothing_is_written() {
    let scratch = Scratch::new();
    let dir = scratch.path("man1");
    fs::create_dir(&dir).unwrap();
    let target = scratch.write("precious", "do not overwrite\n");
    symlink(&target, dir.join("skywire-node.1")).unwrap();
    let (out, _, stderr) = skywire(&["man", "--dir", path_arg(&dir)]);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("skywire-node.1"), "{stderr}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "do not overwrite\n");
    assert!(!dir.join("skywire.1").exists(), "written before the check");
}
