//! `skywire viscript`, run as the real binary with real apps: `sleep`, shell scripts, the
//! Python signal client of `docs/signal_client.py` and `skywire` itself. Headless viscript
//! is driven with `skywire viscript exec`; the console and the GUI are driven in tmux.
//!
//! Every test starts its own viscript on a scratch socket and a free signal port (port 0),
//! so tests run in parallel; every viscript is stopped on drop (SIGTERM, then SIGKILL), also
//! when a test fails, and the tests check that no app outlives it and no zombie is left.
//! No test needs root. Timing is only ever waited for with generous deadlines, never
//! asserted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

/// The attacks of issue 17 on signal and on the terminal, each tried for real.
#[path = "viscript/attacks.rs"]
mod attacks;

/// The SOCKS exit as the original's `meshnet-socks-server` app.
#[path = "viscript/socks.rs"]
mod socks;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Scratch, path_arg, skywire, skywire_binary, text};
use serde_json::Value;
use skywire_control::procfs;

/// How long any wait may take before the test fails (generous: CI machines are slow).
const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `f` until it returns `Some`, or fail after [`DEADLINE`] saying `what`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| procfs::parse_stat(&stat))
        .is_some_and(|(state, _)| state != Some('Z'))
}

fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// The example client, as shipped.
fn python_client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/signal_client.py")
}

/// A config with the test apps, written into `scratch`.
fn write_config(scratch: &Scratch) -> PathBuf {
    scratch.file(
        "ignore-term.sh",
        "#!/bin/sh\ntrap '' TERM\necho ignoring SIGTERM\nwhile :; do sleep 1; done\n",
        0o755,
    );
    scratch.file("crash.sh", "#!/bin/sh\necho crashing now\nexit 3\n", 0o755);
    scratch.file(
        "talker.sh",
        "#!/bin/sh\necho \"hello from talker: $*\"\necho \"in $(pwd)\"\nexec sleep 300\n",
        0o755,
    );
    // Output meant to take over a terminal: retitle it (OSC 2), clear it (CSI 2J), hide
    // text (SGR 8), overwrite the line (CR), and a C1 CSI (U+009B, as UTF-8).
    scratch.file(
        "escaper.sh",
        r"#!/bin/sh
printf 'plain \033]2;pwned\007 title \033[2J clear \033[8mhidden\033[0m cr\r c1 \302\233 end\n'
exec sleep 300
",
        0o755,
    );
    // The Python client, reporting a key and a value over signal that try to retitle the
    // terminal, hide text and start a C1 CSI.
    let source = std::fs::read_to_string(python_client()).unwrap();
    let evil = source.replace(
        r#""Ballast": len(ballast)}"#,
        r#""Ballast": len(ballast), "\x1b]2;pwned\x07": "\x1b[8mhidden\u009b"}"#,
    );
    assert_ne!(evil, source, "the Python client's Top reply changed shape");
    scratch.file("evil_client.py", &evil, 0o755);
    let config = format!(
        "apps:
  escaper:
    desc: prints escape sequences, then sleeps
    path: escaper.sh
  sleeper:
    desc: sleeps five minutes
    path: /bin/sleep
    default_args: [\"300\"]
    help: |
        [1] seconds to sleep
  stubborn:
    desc: ignores SIGTERM
    path: ignore-term.sh
  crasher:
    daemon: true
    desc: exits at once
    path: crash.sh
  talker:
    desc: says hello, then sleeps
    path: talker.sh
  pyclient:
    desc: the Python signal client
    path: {python}
  evilclient:
    desc: the Python signal client, reporting escape sequences
    path: evil_client.py
  skywire-self:
    desc: a nested headless viscript, as a Rust signal client
    outlives_viscript: true
    path: {skywire}
    default_args: [viscript, --headless, --config, {inner_config}, --socket, {inner_socket}, --signal-address, \"127.0.0.1:0\"]
  missing:
    path: bin/not-there
",
        python = python_client().display(),
        skywire = skywire_binary().display(),
        inner_config = scratch.write("inner.yaml", "apps: {}\n").display(),
        inner_socket = scratch.path("inner/v.sock").display(),
    );
    scratch.write("config.yaml", &config)
}

/// A headless viscript, stopped on drop.
struct Viscript {
    child: Child,
    socket: PathBuf,
    /// Every app pid seen, checked gone after viscript stops.
    pids: Vec<u64>,
}

impl Viscript {
    fn start(scratch: &Scratch, extra: &[&str]) -> Self {
        Self::start_at(scratch, "127.0.0.1:0", extra)
    }

    /// A viscript whose signal server listens on `signal` (the attack tests need to know
    /// where).
    fn start_at(scratch: &Scratch, signal: &str, extra: &[&str]) -> Self {
        let config = write_config(scratch);
        Self::start_with(scratch, &config, signal, extra, &[])
    }

    /// A viscript on `config`, with `env` added to its environment (and so its apps').
    fn start_with(
        scratch: &Scratch,
        config: &Path,
        signal: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Self {
        let socket = scratch.path("run/viscript.sock");
        let child = Command::new(skywire_binary())
            .args(["viscript", "--headless", "--config", path_arg(config)])
            .args(["--socket", path_arg(&socket), "--signal-address", signal])
            .args(["--grace", "1s"])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut viscript = Self {
            child,
            socket,
            pids: Vec::new(),
        };
        wait_for("the viscript socket", || {
            let (out, _, _) = viscript.exec(&["la"]);
            (out == Some(0)).then_some(())
        });
        viscript.pids.clear();
        viscript
    }

    /// `skywire viscript exec WORDS`: exit code, stdout, stderr.
    fn exec(&self, words: &[&str]) -> (Option<i32>, String, String) {
        let mut args = vec!["viscript", "exec", "--socket", path_arg(&self.socket)];
        args.extend_from_slice(words);
        let (out, stdout, stderr) = skywire(&args);
        (out.status.code(), stdout, stderr)
    }

    /// `exec --json WORDS`, which must succeed: the data.
    fn json(&mut self, words: &[&str]) -> Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(words);
        let (code, stdout, stderr) = self.exec(&args);
        assert_eq!(code, Some(0), "{words:?}: {stderr}");
        let value: Value = serde_json::from_str(&stdout).unwrap();
        if let Some(pid) = value.get("pid").and_then(Value::as_u64) {
            self.pids.push(pid);
        }
        value
    }

    /// The `la` row of `id`.
    fn row(&mut self, id: u64) -> Value {
        let rows = self.json(&["la"]);
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap();
        if let Some(pid) = row["pid"].as_u64() {
            self.pids.push(pid);
        }
        row
    }

    /// Wait until app `id` is in `state`; its row.
    fn wait_state(&mut self, id: u64, state: &str) -> Value {
        wait_for(&format!("app {id} to be {state}"), || {
            let row = self.row(id);
            (row["state"] == state).then_some(row)
        })
    }

    fn assert_no_zombies(&self) {
        wait_for("viscript to reap every child", || {
            procfs::zombie_children_of(self.child.id())
                .is_empty()
                .then_some(())
        });
    }

    /// Stop viscript with SIGTERM and check that it exits 0 and no app outlives it.
    fn stop(mut self) {
        send_signal(self.child.id(), "-TERM");
        let status = wait_for("viscript to exit", || self.child.try_wait().unwrap());
        assert!(status.success(), "{status:?}");
        for pid in &self.pids {
            assert!(!alive(*pid), "app pid {pid} outlived viscript");
        }
    }
}

impl Drop for Viscript {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            send_signal(self.child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Belt and braces after a failure: no app of ours may survive the test.
        for pid in &self.pids {
            if alive(*pid) {
                send_signal(u32::try_from(*pid).unwrap(), "-KILL");
            }
        }
    }
}

#[test]
fn ids_ping_ru_and_sd_on_a_plain_process() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);

    let first = v.json(&["s", "sleeper"]);
    assert_eq!(first["id"], 1);
    assert_eq!(first["args"], serde_json::json!(["300"]));
    // Arguments replace default_args and are kept as typed.
    let second = v.json(&["start", "sleeper", "299"]);
    assert_eq!(second["id"], 2);
    assert_eq!(second["args"], serde_json::json!(["299"]));
    let pid = first["pid"].as_u64().unwrap();
    assert!(alive(pid));
    let row = v.wait_state(1, "running");
    assert_eq!(row["pid"], pid);
    assert_eq!(row["signal"], false);

    let (code, _, stderr) = v.exec(&["ping", "1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not a signal client"), "{stderr}");

    let ru = v.json(&["ru", "1"]);
    assert_eq!(ru["pid"], pid);
    assert!(ru["rss_bytes"].as_u64().unwrap() > 0, "{ru}");
    assert_eq!(ru["threads"], 1);
    assert!(ru["open_files"].as_u64().unwrap() >= 3, "{ru}");
    assert!(ru["app_report"].is_null());
    let (code, text_ru, _) = v.exec(&["res_usage", "1"]);
    assert_eq!(code, Some(0));
    assert!(text_ru.contains("not a signal client"), "{text_ru}");

    let (code, stdout, stderr) = v.exec(&["sd", "1"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("pid {pid}")), "{stdout}");
    let row = v.wait_state(1, "stopped");
    assert_eq!(row["detail"], "killed by SIGTERM");
    assert!(!alive(pid));
    v.assert_no_zombies();
    // An app that ended is not running, whatever it was.
    let (code, _, stderr) = v.exec(&["ping", "1"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("app 1 is not running (it is stopped)"),
        "{stderr}"
    );

    // Ids are never reused; `help` and `apps` answer from the config.
    assert_eq!(v.json(&["s", "sleeper"])["id"], 3);
    let (code, help, _) = v.exec(&["help", "sleeper"]);
    assert_eq!((code, help.trim()), (Some(0), "[1] seconds to sleep"));
    let (_, apps, _) = v.exec(&["apps"]);
    assert!(apps.contains("sleeps five minutes"), "{apps}");
    assert!(apps.contains("bin/not-there does not exist"), "{apps}");

    // Errors: unknown app, missing executable, unknown id, not a command.
    let (code, _, stderr) = v.exec(&["s", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no app `nosuch`"), "{stderr}");
    let (code, _, stderr) = v.exec(&["s", "missing"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not-there does not exist"), "{stderr}");
    let (code, _, stderr) = v.exec(&["sd", "99"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no app with id 99"), "{stderr}");
    let (code, _, _) = v.exec(&["frobnicate"]);
    assert_eq!(code, Some(2));
    v.stop();
}

#[test]
fn the_python_signal_client_registers_answers_and_shuts_down() {
    const MIB: u64 = 256;
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    let started = v.json(&["s", "pyclient", &MIB.to_string()]);
    let id = started["id"].as_u64().unwrap();
    let pid = started["pid"].as_u64().unwrap();
    wait_for("the Python client to register", || {
        (v.row(id)["signal"] == true).then_some(())
    });

    let ping = v.json(&["ping", &id.to_string()]);
    assert!(ping["rtt_ms"].as_f64().unwrap() > 0.0, "{ping}");
    let (_, stdout, _) = v.exec(&["ping", &id.to_string()]);
    assert!(stdout.contains("round trip"), "{stdout}");

    // The ballast is touched memory: RSS is the ballast plus the interpreter, within 10 %.
    let ru = v.json(&["ru", &id.to_string()]);
    let rss = ru["rss_bytes"].as_u64().unwrap();
    let ballast = MIB << 20;
    assert!(
        rss >= ballast && rss <= ballast + ballast / 10,
        "rss {rss} for a ballast of {ballast}: {ru}"
    );
    assert_eq!(ru["app_report"]["Pid"], pid);
    assert_eq!(ru["app_report"]["Ballast"], ballast);
    let reported = ru["app_report"]["RssBytes"].as_u64().unwrap();
    assert!(reported.abs_diff(rss) <= ballast / 10, "{ru}");

    let sd = v.json(&["sd", &id.to_string()]);
    assert_eq!(
        (sd["pid"].as_u64(), sd["how"].as_str()),
        (Some(pid), Some("signal"))
    );
    let row = v.wait_state(id, "stopped");
    assert_eq!(row["detail"], "exit 0");
    let log = v.json(&["attach", &id.to_string()]);
    let lines: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(lines.contains(&"signal client shutting down"), "{lines:?}");
    v.assert_no_zombies();
    v.stop();
}

#[test]
fn skywire_itself_is_a_signal_client() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    let started = v.json(&["s", "skywire-self"]);
    let id = started["id"].as_u64().unwrap();
    wait_for("the nested viscript to register", || {
        (v.row(id)["signal"] == true).then_some(())
    });
    let ping = v.json(&["ping", &id.to_string()]);
    assert!(ping["rtt_ms"].as_f64().is_some());
    let ru = v.json(&["ru", &id.to_string()]);
    assert_eq!(ru["app_report"]["Pid"], started["pid"]);
    assert!(ru["app_report"]["Threads"].as_u64().unwrap() > 1, "{ru}");
    let sd = v.json(&["sd", &id.to_string()]);
    assert_eq!(sd["how"], "signal");
    // Shutdown over signal is a SIGTERM to itself: it stops cleanly, exit 0.
    let row = v.wait_state(id, "stopped");
    assert_eq!(row["detail"], "exit 0");
    assert!(!scratch.path("inner/v.sock").exists());
    v.stop();
}

#[test]
fn sd_kills_a_process_that_ignores_sigterm_after_the_grace_period() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    let started = v.json(&["s", "stubborn"]);
    let pid = started["pid"].as_u64().unwrap();
    wait_for("the script to ignore SIGTERM", || {
        let log = v.json(&["attach", "1"]);
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "ignoring SIGTERM")
            .then_some(())
    });
    let sd = v.json(&["shutdown", "1"]);
    assert_eq!(
        (sd["pid"].as_u64(), sd["how"].as_str()),
        (Some(pid), Some("SIGTERM"))
    );
    let again = v.json(&["sd", "1"]);
    assert_eq!(again["how"], "already");
    let row = v.wait_state(1, "stopped");
    assert_eq!(row["detail"], "killed by SIGKILL");
    assert!(!alive(pid));
    v.assert_no_zombies();
    v.stop();
}

#[test]
fn a_crashing_daemon_is_restarted_with_backoff_then_given_up() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(
        &scratch,
        &[
            "--restart-delay",
            "100ms",
            "--restart-max",
            "400ms",
            "--restart-limit",
            "3",
        ],
    );
    let started = v.json(&["s", "crasher"]);
    assert_eq!(started["id"], 1);
    let row = v.wait_state(1, "gave-up");
    assert_eq!(row["restarts"], 3);
    assert_eq!(row["detail"], "exit 3");
    assert_eq!(row["daemon"], true);
    let log = v.json(&["attach", "1"]);
    let lines = log["lines"].as_array().unwrap();
    let crashes = lines.iter().filter(|l| *l == "crashing now").count();
    assert_eq!(crashes, 4, "{lines:?}");
    v.assert_no_zombies();
    let (code, _, stderr) = v.exec(&["sd", "1"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not running"), "{stderr}");
    v.stop();
}

#[test]
fn viscript_stops_every_app_when_it_leaves() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    v.json(&["s", "sleeper"]);
    v.json(&["s", "stubborn"]);
    v.json(&["s", "talker", "a b"]);
    let log = wait_for("the talker to talk", || {
        let log = v.json(&["attach", "3"]);
        (log["lines"].as_array().unwrap().len() >= 3).then_some(log)
    });
    let lines = log["lines"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l == "hello from talker: a b"),
        "{lines:?}"
    );
    // Apps run in the config file's folder.
    let cwd = format!("in {}", scratch.dir().display());
    assert!(lines.iter().any(|l| *l == cwd), "{lines:?}");
    assert_eq!(v.pids.len(), 3);
    // `stop` asserts that every one of them is gone, the stubborn one by SIGKILL.
    v.stop();
}

#[test]
fn exec_attach_follows_the_output_until_the_app_ends() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    v.json(&["s", "talker", "followed"]);
    let mut follower = Command::new(skywire_binary())
        .args([
            "viscript",
            "exec",
            "--socket",
            path_arg(&v.socket),
            "attach",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut all).unwrap();
        all
    });
    wait_for("the talker to talk", || {
        let log = v.json(&["attach", "1"]);
        (log["lines"].as_array().unwrap().len() >= 3).then_some(())
    });
    v.json(&["sd", "1"]);
    let status = wait_for("`exec attach` to end with the app", || {
        follower.try_wait().unwrap()
    });
    assert!(status.success());
    let all = reader.join().unwrap();
    assert!(all.contains("hello from talker: followed"), "{all}");
    v.stop();
}

#[test]
fn exec_without_viscript_and_bad_configs_have_their_exit_codes() {
    let scratch = Scratch::new();
    let (out, _, stderr) = skywire(&[
        "viscript",
        "exec",
        "--socket",
        path_arg(&scratch.path("none.sock")),
        "la",
    ]);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("viscript --headless"), "{stderr}");

    let config = scratch.write(
        "bad.yaml",
        "apps:\n  ok:\n    path: /bin/true\n  typo:\n    path: /bin/true\n    deamon: true\n",
    );
    let (out, _, stderr) = skywire(&["viscript", "--headless", "--config", path_arg(&config)]);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let expected = format!("{}:6:5: apps.typo.deamon", config.display());
    assert!(stderr.contains(&expected), "{stderr}");
    let (out, _, _) = skywire(&["viscript", "--config", path_arg(&scratch.path("no.yaml"))]);
    assert_eq!(out.status.code(), Some(78));
    let (out, _, _) = skywire(&["viscript", "--headless"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A tmux server of our own (its own socket name), killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    /// A detached 120x40 session running `command`; `None` without tmux.
    fn start(command: &str) -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "skywire-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &name,
                "new-session",
                "-d",
                "-x",
                "120",
                "-y",
                "40",
                command,
            ])
            .env_remove("TMUX")
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { name }),
            Ok(s) => panic!("tmux new-session failed: {s}"),
            Err(_) => None,
        }
    }

    fn tmux(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout))
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"]).1
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).0);
    }

    fn type_line(&self, line: &str) {
        self.send(&["-l", line]);
        self.send(&["Enter"]);
    }

    /// Wait until the screen shows `needle`; the screen.
    fn wait_screen(&self, needle: &str) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            last = if screen.is_empty() { last } else { screen };
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?} on the screen:\n{last}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the session's program has exited (the session is gone).
    fn wait_exit(&self) {
        wait_for("the program in tmux to exit", || {
            (!self.tmux(&["has-session"]).0).then_some(())
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The pid in a `started NAME: id N, pid P` line on `screen`.
fn started_pid(screen: &str) -> u64 {
    let at = screen.rfind(", pid ").unwrap() + ", pid ".len();
    screen[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn viscript_command(scratch: &Scratch, mode: &str) -> String {
    let config = write_config(scratch);
    format!(
        "{} viscript {mode} --config {} --signal-address 127.0.0.1:0 --grace 1s 2>{}",
        skywire_binary().display(),
        config.display(),
        scratch.path("stderr").display()
    )
}

#[test]
fn the_interactive_console_in_tmux() {
    let scratch = Scratch::new();
    let Some(tmux) = Tmux::start(&viscript_command(&scratch, "")) else {
        eprintln!("skipped: tmux is not installed (scripts/test installs it)");
        return;
    };
    tmux.wait_screen("viscript>");
    tmux.type_line("s sleeper");
    let screen = tmux.wait_screen("started sleeper: id 1, pid");
    let pid = started_pid(&screen);
    let guard = KillOnDrop(pid);
    tmux.type_line("la");
    tmux.wait_screen("running");
    // History: Up recalls `la`, so its header shows twice.
    tmux.send(&["Up"]);
    tmux.send(&["Enter"]);
    wait_for("`la` twice", || {
        (tmux.screen().matches("SIGNAL").count() >= 2).then_some(())
    });
    tmux.type_line("ping 1");
    tmux.wait_screen("is not a signal client");
    tmux.type_line("ru 1");
    tmux.wait_screen("threads      1");
    tmux.type_line("s talker hi");
    tmux.wait_screen("started talker: id 2");
    tmux.type_line("attach 2");
    tmux.wait_screen("hello from talker: hi");
    tmux.send(&["Enter"]);
    tmux.wait_screen("[detached from 2]");
    tmux.type_line("quit");
    tmux.wait_exit();
    assert!(!alive(pid), "the app outlived the console");
    drop(guard);
}

#[test]
fn the_terminal_gui_in_tmux() {
    let scratch = Scratch::new();
    let Some(tmux) = Tmux::start(&viscript_command(&scratch, "--gui")) else {
        eprintln!("skipped: tmux is not installed (scripts/test installs it)");
        return;
    };
    tmux.wait_screen("viscript: apps");
    tmux.type_line("s talker from-the-gui");
    let screen = tmux.wait_screen("started talker: id 1, pid");
    let guard = KillOnDrop(started_pid(&screen));
    // The list with live figures, the selected app's output, the command line.
    tmux.wait_screen("hello from talker: from-the-gui");
    let screen = tmux.wait_screen("running");
    assert!(screen.contains("output of 1 (talker)"), "{screen}");
    assert!(screen.contains("CPU%"), "{screen}");
    wait_for("the RSS column to fill in", || {
        let screen = tmux.screen();
        (screen.contains("KiB") || screen.contains("MiB")).then_some(())
    });
    tmux.type_line("s sleeper");
    tmux.wait_screen("started sleeper: id 2");
    tmux.wait_screen("output of 2 (sleeper)");
    tmux.send(&["Up"]);
    tmux.wait_screen("output of 1 (talker)");
    tmux.type_line("la");
    tmux.wait_screen("ID   APP");
    tmux.send(&["Escape"]);
    tmux.wait_exit();
    assert!(!alive(guard.0), "the app outlived the GUI");
}

/// Kills a pid on drop if it is still alive (clean-up after a failed assertion).
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            send_signal(u32::try_from(self.0).unwrap(), "-KILL");
        }
    }
}

#[test]
fn exec_refuses_an_option_where_the_command_goes() {
    // `--config` is viscript's, not exec's: it used to be sent to viscript as the command.
    let (out, _, err) = skywire(&[
        "viscript",
        "exec",
        "--socket",
        "/nonexistent/viscript.sock",
        "--config",
        "config.yaml",
        "la",
    ]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--config: not an option of exec") && err.contains("--socket PATH"),
        "{err}"
    );
    // A command's own arguments may still start with `-`.
    let (out, _, err) = skywire(&[
        "viscript",
        "exec",
        "--socket",
        "/nonexistent/viscript.sock",
        "s",
        "app",
        "--flag",
    ]);
    assert_eq!(out.status.code(), Some(69), "{err}");
}

#[test]
fn a_killed_viscript_takes_its_apps_with_it_unless_told_otherwise() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "config.yaml",
        "apps:
  sleeper:
    path: /bin/sleep
    default_args: [\"300\"]
  keeper:
    path: /bin/sleep
    default_args: [\"301\"]
    outlives_viscript: true
",
    );
    let mut viscript = Viscript::start_with(&scratch, &config, "127.0.0.1:0", &[], &[]);
    // Started from short-lived threads (one per console connection): the parent-death
    // signal must follow viscript's process, not those threads.
    let sleeper = viscript.json(&["start", "sleeper"])["pid"]
        .as_u64()
        .unwrap();
    let keeper = viscript.json(&["start", "keeper"])["pid"].as_u64().unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(
        alive(sleeper) && alive(keeper),
        "an app ended with its console connection"
    );
    send_signal(viscript.child.id(), "-KILL");
    let _ = viscript.child.wait();
    let started = Instant::now();
    wait_for("the app to end with viscript", || {
        (!alive(sleeper)).then_some(())
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the app outlived viscript by {took:?}"
    );
    assert!(
        alive(keeper),
        "the app configured to outlive viscript ended"
    );
    send_signal(u32::try_from(keeper).unwrap(), "-KILL");
    viscript.pids.clear();
}

#[test]
fn apps_that_segfault_double_fork_or_flood_their_output_are_contained() {
    let scratch = Scratch::new();
    scratch.file(
        "segv.sh",
        "#!/bin/sh\necho about to crash\nkill -SEGV $$\n",
        0o755,
    );
    // Leaves a grandchild behind in its process group, and exits at once.
    scratch.file(
        "forker.sh",
        "#!/bin/sh\n(sleep 300 &)\necho forked\nexec sleep 300\n",
        0o755,
    );
    // 100 MB of output as fast as the pipe takes it (2 million lines).
    scratch.file(
        "flood.sh",
        "#!/bin/sh\nyes 'flood flood flood flood flood flood flood flood' | head -c 100000000\n",
        0o755,
    );
    let config = scratch.write(
        "config.yaml",
        "apps:
  segv:
    daemon: true
    path: segv.sh
  forker:
    path: forker.sh
  flood:
    path: flood.sh
",
    );
    let mut v = Viscript::start_with(
        &scratch,
        &config,
        "127.0.0.1:0",
        &["--restart-delay", "100ms", "--restart-limit", "2"],
        &[],
    );
    // SIGSEGV: seen as a signal, restarted with backoff, then given up.
    v.json(&["s", "segv"]);
    let row = v.wait_state(1, "gave-up");
    assert_eq!(row["detail"], "killed by signal 11", "{row}");
    assert_eq!(row["restarts"], 2, "{row}");

    // A double fork: `sd` stops the whole process group, grandchild included.
    let forker = v.json(&["s", "forker"])["pid"].as_u64().unwrap();
    wait_for("the forker to fork", || {
        let log = v.json(&["attach", "2"]);
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "forked")
            .then_some(())
    });
    let in_group = || {
        let out = Command::new("pgrep")
            .args(["-g", &forker.to_string()])
            .output()
            .unwrap();
        text(&out.stdout).lines().count()
    };
    assert!(in_group() >= 2, "no grandchild in the app's group");
    v.json(&["sd", "2"]);
    v.wait_state(2, "stopped");
    wait_for("the grandchild to go", || (in_group() == 0).then_some(()));

    // A flood of output: kept bounded (the last lines), viscript's memory too.
    let flooding = Instant::now();
    v.json(&["s", "flood"]);
    v.wait_state(3, "exited");
    println!("100 MB of output read in {:?}", flooding.elapsed());
    let log = v.json(&["attach", "3"]);
    let lines = log["lines"].as_array().unwrap().len();
    assert!((1..=2000).contains(&lines), "{lines} lines kept");
    let status = std::fs::read_to_string(format!("/proc/{}/status", v.child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!("viscript's RSS after the flood: {rss_kib} KiB; {lines} lines kept");
    assert!(
        rss_kib < 64 * 1024,
        "viscript holds {rss_kib} KiB after the flood"
    );
    v.assert_no_zombies();
    v.stop();
}
